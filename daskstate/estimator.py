"""scikit-learn-style estimators on top of states.

An estimator holds hyperparameters (``__init__`` arguments, stored as given),
and after ``fit`` a ``state_`` plus the fitted attributes its ``finalize``
produced. Every fitted attribute is derived from ``(hyperparameters, state_,
finalize overrides)``, so saving the state saves the model.
"""

from __future__ import annotations

import functools
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import tokenize
from sklearn.base import BaseEstimator
from sklearn.exceptions import DataConversionWarning
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils._set_output import _SetOutputMixin
from sklearn.utils.metaestimators import available_if

from daskstate import engine
from daskstate.data import (
    Input,
    as_array,
    as_input,
    is_dask_collection,
    to_batch,
    to_features,
    warn_if_nothing_new,
)
from daskstate.errors import DataError, NotFittedError, StateFileError
from daskstate.state import Schema, State
from daskstate.store import checksum, read_group, state_from_attrs, write_group

_ESTIMATORS: dict[str, type[StateEstimator]] = {}


class Ints(Interval):
    """The constraint "an int in ``[low, high]``" for ``_parameter_constraints``, refusing ``True``/``False``.

    scikit-learn's ``Interval(Integral, ...)``, except that a bool (an int to
    Python) is not taken for a count.

    Examples
    --------
    >>> Ints(1).is_satisfied_by(3), Ints(1).is_satisfied_by(True), Ints(1).is_satisfied_by(2.0)
    (True, False, False)
    """

    def __init__(self, low: int | None, high: int | None = None, *, closed: str = "left"):
        super().__init__(numbers.Integral, low, high, closed=closed)

    def is_satisfied_by(self, val: Any) -> bool:
        return not isinstance(val, bool | np.bool_) and super().is_satisfied_by(val)


class Floats(Interval):
    """The constraint "a real number in ``[low, high)``" (finite), refusing ``True``/``False``.

    Examples
    --------
    >>> Floats(0).is_satisfied_by(0.5), Floats(0, 1).is_satisfied_by(1.0), Floats(0).is_satisfied_by(True)
    (True, False, False)
    """

    def __init__(self, low: float | None, high: float | None = None, *, closed: str = "left"):
        super().__init__(numbers.Real, low, high, closed=closed)

    def is_satisfied_by(self, val: Any) -> bool:
        return not isinstance(val, bool | np.bool_) and super().is_satisfied_by(val)
#: the keywords of ``fit`` and ``partial_fit`` that say how to run (see :meth:`StateEstimator._fit_options`)
_RUN_OPTIONS = ("checkpoint", "checkpoint_every", "progress", "split_every")


class StateEstimator(_SetOutputMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Base class: ``fit``, ``partial_fit``, ``finalize``, ``save`` over a :class:`State`.

    A scikit-learn estimator (``get_params``, ``set_params``, ``clone``, ``repr``
    from :class:`sklearn.base.BaseEstimator`). Subclasses set ``state_class``,
    declare ``_parameter_constraints``, implement ``_state_params``
    (hyperparameters that shape the state), and may override ``_new_state`` and
    ``_fold`` (iterative algorithms: see :class:`daskstate.training.SGDEstimator`)
    and ``_apply_model``.
    """

    state_class: ClassVar[type[State]]
    #: other states a fitted model of this estimator may hold (e.g. an exact solver's)
    other_state_classes: ClassVar[tuple[type[State], ...]] = ()
    #: other names the command line accepts for this estimator
    aliases: ClassVar[tuple[str, ...]] = ()
    #: minimum rows a fit needs, as a function of the hyperparameters
    _min_rows: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)  # scikit-learn wraps transform and fit_transform for set_output
        for name in ("transform", "fit_transform"):
            method = getattr(cls, name, None)
            inner = getattr(method, "__wrapped__", None)
            if inner is not None and not getattr(method, "_keeps_dask_lazy", False):
                setattr(cls, name, _lazy_for_dask(method, inner))
        if "state_class" in cls.__dict__:  # a concrete estimator, not an intermediate base
            _ESTIMATORS[cls.__name__] = cls

    # ---- hyperparameters: scikit-learn's get_params / set_params / repr, and a table of constraints ----
    #: ``{name: [constraint, ...]}`` checked by ``_validate_params`` at fit (scikit-learn's machinery:
    #: ``Interval``, ``StrOptions``, ``"boolean"``, ``None``, ...); subclasses extend it
    _parameter_constraints: ClassVar[dict] = {"on_invalid": [StrOptions({"raise", "skip"})]}

    def _validate_params(self) -> None:
        """Check every hyperparameter against ``_parameter_constraints``, then ``_check_params_together``.

        Raises ``ValueError`` naming the parameter, the allowed values and the value given.
        """
        validate_parameter_constraints(self._parameter_constraints, self.get_params(deep=False),
                                       caller_name=type(self).__name__)
        self._check_params_together()

    def _check_params_together(self) -> None:
        """Rules that involve several hyperparameters (a constraint table checks each one alone)."""

    def _state_params(self, inp: Input) -> dict[str, Any]:
        """Hyperparameters stored in (and shaping) the state (none by default)."""
        return {}

    def _finalize_overrides(self) -> dict[str, Any]:
        """Overrides applied at finalize by default (hyperparameters that only shape the model)."""
        return {}

    def _apply_model(self, model: dict[str, Any]) -> None:
        """Set fitted attributes from ``state.finalize(...)``'s result."""
        for key, value in model.items():
            setattr(self, key, value)

    # ---- fitting -------------------------------------------------------------------
    @property
    def _supervised(self) -> bool:
        return self.state_class.supervised

    def _input(self, X: Any, y: Any = None, schema: Schema | None = None, sample_weight: Any = None) -> Input:
        features = list(schema.features) if schema is not None else getattr(self, "features", None)
        target = getattr(self, "target", None)
        if schema is not None and schema.target is not None and y is None:
            target = schema.target
        if isinstance(X, Input):
            return X
        return as_input(X, y, features=features, target=target if self._supervised else None,
                        need_target=self._supervised, sample_weight=sample_weight)

    # ---- sample weights -----------------------------------------------------------------
    @classmethod
    def _accepts_sample_weight(cls) -> bool:
        """Whether the estimator's state weights rows (then ``fit`` and ``partial_fit`` take ``sample_weight``)."""
        return cls.state_class.accepts_weight

    def _pop_sample_weight(self, fit_params: dict[str, Any], method: str = "fit") -> Any:
        """``sample_weight`` out of ``fit_params``; a TypeError for an estimator whose state cannot weight rows."""
        weight = fit_params.pop("sample_weight", None)
        if weight is not None and not self._accepts_sample_weight():
            raise TypeError(f"{type(self).__name__}.{method} got an unexpected keyword argument 'sample_weight' "
                            f"(a {self.state_class.algorithm} state cannot weight rows)")
        return weight

    def _weighted_input(self, X: Any, y: Any = None, schema: Schema | None = None, sample_weight: Any = None
                        ) -> Input:
        """:meth:`_input`, with ``sample_weight`` only when given (estimators that cannot weight never see it)."""
        if sample_weight is None:
            return self._input(X, y, schema) if schema is not None else self._input(X, y)
        return self._input(X, y, schema, sample_weight=sample_weight)

    def _fit_options(self, *, checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
                     progress: bool = False, split_every: int = 8) -> engine.FitOptions:
        """The fit's :class:`~daskstate.engine.FitOptions`, built once per ``fit``/``partial_fit`` call."""
        seed = getattr(self, "random_state", None)
        return engine.FitOptions(
            split_every=split_every, checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
            on_invalid=getattr(self, "on_invalid", "raise"), seed=int(seed) if isinstance(seed, int | np.integer) else 0,
        )

    def _new_state(self, inp: Input, **fit_params: Any) -> State:
        """The empty state a fresh fit starts from."""
        if fit_params:
            raise TypeError(f"{type(self).__name__}.fit got unexpected keyword argument(s) {sorted(fit_params)}")
        return self.state_class(inp.schema, self._state_params(inp))

    def _fold(self, inp: Input, state: State, options: engine.FitOptions | None = None, **fit_params: Any) -> State:
        """Fold an input into a state in one pass; iterative algorithms override this."""
        if options is None:  # called with the option keywords (checkpoint=..., split_every=...)
            options, fit_params = self._fit_options(**fit_params), {}
        if fit_params:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(fit_params)}")
        return engine.fold(inp, state, options=options)

    def _extra_pass(self, inp: Input, state: State, options: engine.FitOptions | None = None, **option_fields: Any
                    ) -> State:
        """One exact pass of a helper state beside the fit (a vocabulary, topic words, co-occurrences, ...).

        ``options`` are the fit's (e.g. ``options.at("topic_words")``) or built from
        ``option_fields`` (``progress=``, ``split_every=``, ...).
        """
        return engine.fold(inp, state, options=options or self._fit_options(**option_fields))

    def _fold_and_inspect(self, inp: Input, state: State, inspect: Callable[[Any], Any], options: engine.FitOptions
                          ) -> tuple[State, list[Any]]:
        """A one-pass fold that also returns ``inspect(partition)`` per partition, from the same reads."""
        return engine.fold_and_inspect(inp, state, inspect, options=options)

    def _inspect_partitions(self, inp: Input, inspect: Callable[[Any], Any], options: engine.FitOptions,
                            name: str = "inspect") -> list[Any]:
        """``inspect(partition)`` of every partition, computed before a fit trains on them (a check of the input)."""
        return engine.inspect_partitions(inp, inspect, options=options, name=name)

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        progress: bool = False,
        split_every: int = 8,
        **fit_params: Any,
    ) -> StateEstimator:
        """Fit from scratch in one pass (or ``epochs`` passes for iterative algorithms).

        Parameters
        ----------
        X : Dask DataFrame or Array, pandas DataFrame, array-like, or :func:`daskstate.batches`
            A list or other array-like is one array, as in scikit-learn; a stream of
            batches is ``daskstate.batches(iterable)`` (or a generator).
        y : array-like, optional
            Target when it is not a column named by ``target=``.
        checkpoint : path, optional
            Zarr path; the running state is saved there every ``checkpoint_every``
            partitions and a repeated call resumes from it.
        checkpoint_every : int, optional
            Partitions between checkpoints (default 64).
        progress : bool
            Show Dask's progress bar.
        split_every : int
            Fan-in of the merge tree.
        **fit_params
            Algorithm-specific (e.g. ``validation_data`` of iterative algorithms), and
            ``sample_weight`` for estimators whose state weights rows (they name it in
            their signature): an array-like for in-memory input, a column name (or an
            aligned Dask Series / Array) for Dask input.

        Returns
        -------
        self
        """
        sample_weight = self._pop_sample_weight(fit_params)
        self._validate_params()
        options = self._fit_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                                    split_every=split_every)
        X, y = _array_likes(X, y)
        self._check_target(y)
        inp = self._weighted_input(X, y, sample_weight=sample_weight)
        state = self._new_state(inp, **fit_params)
        state = self._fold(inp, state, options=options, **fit_params)
        self._check_enough_rows(state)
        self._set_state(state, self._finalize_overrides())
        return self

    def partial_fit(self, X: Any, y: Any = None, **fit_kwargs: Any) -> StateEstimator:
        """Fold more data into the fitted state (or fit, if there is none yet).

        Takes the keywords of :meth:`fit`. Partitions whose ids the state already
        consumed (a :func:`daskstate.read_parquet` folder that has grown) are
        skipped, so only new data is read. On error the previous state and model
        are kept unchanged.
        """
        run = {k: fit_kwargs.pop(k) for k in _RUN_OPTIONS if k in fit_kwargs}
        fit_params = fit_kwargs
        if not hasattr(self, "state_"):
            return self.fit(X, y, **run, **fit_params)
        sample_weight = self._pop_sample_weight(fit_params, "partial_fit")
        self._validate_params()
        X, y = _array_likes(X, y)
        self._check_target(y)
        inp = self._weighted_input(X, y, self.state_.schema, sample_weight)
        self.state_.schema.check_same_features(inp.schema, "partial_fit")
        warn_if_nothing_new(inp, self.state_.consumed, type(self).__name__)
        state = self._fold(inp, self.state_, options=self._fit_options(**run), **fit_params)
        self._set_state(state, getattr(self, "finalize_overrides_", {}))
        return self

    def _check_target(self, y: Any) -> None:
        """Reject an in-memory target the estimator cannot learn (e.g. a continuous one for a classifier)."""

    def _check_enough_rows(self, state: State) -> None:
        self._check_total_weight(state)
        need = self._min_rows_needed()
        if state.n_rows < need:
            skipped = f" ({state.n_skipped} invalid rows were skipped)" if state.n_skipped else ""
            raise DataError(
                f"{type(self).__name__} needs at least {need} valid row(s); the input had {state.n_rows}"
                f"{skipped} (n_samples={state.n_rows})"
            )

    def _min_rows_needed(self) -> int:
        return self._min_rows

    @staticmethod
    def _check_total_weight(state: State) -> None:
        """A fit whose rows all have sample weight zero has learned nothing: say so (scikit-learn's rule)."""
        if state.n_rows and state.weight_sum <= 0:
            raise DataError(f"every sample weight is zero ({state.n_rows} rows): a fit needs some weight above zero")

    def _set_state(self, state: State, overrides: dict[str, Any]) -> None:
        with state.blas_limit():
            model = state.finalize(**overrides)
        self.state_ = state
        self.finalize_overrides_ = dict(overrides)
        self.n_features_in_ = state.n_features
        if _has_feature_names(state.schema):
            self.feature_names_in_ = np.asarray(state.schema.features, dtype=object)
        elif "feature_names_in_" in self.__dict__:  # as scikit-learn: only after a fit on named columns
            del self.feature_names_in_
        self.n_samples_seen_ = state.n_rows
        self._apply_model(model)

    def finalize(self, **overrides: Any) -> StateEstimator:
        """A new fitted estimator from the same state with model-only hyperparameters changed.

        No data is read. Which overrides an algorithm accepts is listed in its
        docstring (e.g. ``n_clusters`` for k-means, ``n_components`` for PCA).
        """
        self._check_fitted()
        new = type(self)(**self.get_params())
        new.set_params(**{k: v for k, v in overrides.items() if k in new.get_params(deep=False)})
        new._set_state(self.state_, {**self.finalize_overrides_, **overrides})
        return new

    def _compute(self, *collections: Any) -> tuple:
        """Compute Dask collections of this model's results (a score, a backtest) under its state's BLAS
        policy (:func:`daskstate.engine.compute`): the one way an estimator computes what it returns eagerly."""
        return engine.compute(*collections, state=self.state_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "state_")

    # ---- applying the model ---------------------------------------------------------
    def _map_rows(
        self,
        X: Any,
        func: Callable[[np.ndarray], np.ndarray],
        columns: Sequence[str] | None,
        name: str,
        dtype: Any = np.float64,
    ) -> Any:
        """Apply ``func`` (rows -> rows) to any input; lazy for Dask input.

        ``columns=None`` means ``func`` returns one value per row (a Series or 1-D
        array); otherwise a frame/array with these columns.
        """
        self._check_fitted()
        X = as_array(X)
        schema = self.state_.schema
        on_invalid = getattr(self, "on_invalid", "raise")
        if on_invalid != "raise":
            dtype = np.float64  # invalid rows come out as NaN

        policy = self.state_.blas_policy  # the task carries the policy, not the state

        def apply(block: Any, where: str) -> np.ndarray:
            with policy.limit():
                return _apply(block, where)

        def _apply(block: Any, where: str) -> np.ndarray:
            if on_invalid == "raise":
                Xb, _, _ = to_batch(block, None, schema, where=where)
                return np.asarray(func(Xb))
            # on_invalid="skip": rows with NaN/inf get NaN outputs instead of an error
            Xb = to_features(block, schema, where=where)
            ok = np.isfinite(Xb).all(axis=1)
            if ok.all():
                return np.asarray(func(Xb))
            good = np.asarray(func(Xb[ok]), dtype=np.float64)
            out = np.full((len(Xb),) + good.shape[1:], np.nan)
            out[ok] = good
            return out

        if isinstance(X, dd.DataFrame):
            _check_frame_features(X.columns, schema, name)
            meta = _meta(columns, dtype)

            def part_func(df: pd.DataFrame, model: str = "", partition_info: dict | None = None) -> Any:
                # ``model`` only makes the task keys depend on the fitted model
                where = f"{name}: partition {partition_info['number']}" if partition_info else name
                return _wrap(apply(df, where), columns, df.index)

            return X[list(schema.features)].map_partitions(part_func, meta=meta, token=f"{self._prefix()}-{name}",
                                                           model=self._model_token())
        if isinstance(X, da.Array):
            if X.ndim != 2 or X.shape[1] != schema.n_features:
                raise _shape_error(X.shape, schema, f"{type(self).__name__}.{name}")
            X = X.rechunk({1: -1})
            # the key must depend on the model and the input: two models, one array, two results
            key = f"{self._prefix()}-{name}-{tokenize(X.name, self._model_token())}"
            if columns is None:
                return X.map_blocks(lambda b: apply(b, name), drop_axis=1, dtype=dtype,
                                    name=key)
            return X.map_blocks(lambda b: apply(b, name), chunks=(X.chunks[0], (len(columns),)), dtype=dtype,
                                name=key)
        if isinstance(X, pd.DataFrame):
            _check_frame_features(X.columns, schema, name)
            return _wrap(apply(X, name), columns, X.index)
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] != schema.n_features:
            raise _shape_error(arr.shape, schema, f"{type(self).__name__}.{name}")
        if _has_feature_names(schema):
            warnings.warn(f"X does not have valid feature names, but {type(self).__name__} was fitted with "
                          "feature names", UserWarning, stacklevel=3)
        return apply(arr, name)

    @available_if(lambda self: self._score_kind() is not None)
    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (classifiers) or R^2 (regressors) of ``predict(X)``; lazy inputs are computed.

        The target comes from ``y`` or the fitted ``target`` column of a DataFrame ``X``.
        ``sample_weight`` (in-memory inputs) weights the rows, as in scikit-learn.
        """
        self._check_fitted()
        X, y = _array_likes(X, y)
        if sample_weight is not None:
            return self._weighted_score(X, y, sample_weight)
        target = self.state_.schema.target
        if y is None:
            if target is None or not isinstance(X, pd.DataFrame | dd.DataFrame) or target not in X.columns:
                raise ValueError("score needs y, or a DataFrame with the target column")
            y = X[target]
        pred = self.predict(X)
        if isinstance(pred, dd.Series | da.Array):
            if isinstance(y, dd.Series) and isinstance(pred, dd.Series):
                y_true = y
            else:
                y_arr = y.to_dask_array(lengths=True) if isinstance(y, dd.Series) else da.asarray(y)
                pred = pred.to_dask_array(lengths=True) if isinstance(pred, dd.Series) else pred
                y_true = y_arr
            if self._score_kind() == "r2":
                y_true = y_true.astype(np.float64)
                resid = ((y_true - pred) ** 2).sum()
                mean = y_true.mean()
                ssr, sst = self._compute(resid, ((y_true - mean) ** 2).sum())
                return float(1.0 - ssr / sst)
            return float(self._compute((pred == y_true).mean())[0])
        y_true = np.asarray(y)
        pred = np.asarray(pred)
        if self._score_kind() == "r2":
            y_true = y_true.astype(np.float64)
            return float(1.0 - ((y_true - pred) ** 2).sum() / ((y_true - y_true.mean()) ** 2).sum())
        return float(np.mean(pred == y_true.astype(pred.dtype) if pred.dtype != object else pred == y_true))

    def _weighted_score(self, X: Any, y: Any, sample_weight: Any) -> float:
        from sklearn.metrics import accuracy_score, r2_score

        if is_dask_collection(X) or is_dask_collection(y) or is_dask_collection(sample_weight):
            raise TypeError("score with sample_weight takes in-memory inputs (pandas or numpy)")
        if y is None:
            y = X[self.state_.schema.target]
        metric = r2_score if self._score_kind() == "r2" else accuracy_score
        return float(metric(np.asarray(y), np.asarray(self.predict(X)), sample_weight=np.asarray(sample_weight)))

    def _score_kind(self) -> str | None:
        """What :meth:`score` measures: "accuracy", "r2", or None (no score: ``score`` is then absent)."""
        return None

    def _prefix(self) -> str:
        return self.state_class.algorithm

    def _model_token(self) -> str:
        """A token of what the fitted model computes: its state and finalize overrides."""
        arrays, meta = self.state_.to_arrays()
        return tokenize(checksum(arrays, meta), sorted(map(str, self.finalize_overrides_.items())),
                        sorted(map(str, self.get_params().items())))

    # ---- saving ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> None:
        """Save the fitted model (its state and hyperparameters) as a Zarr group, atomically.

        Only a new path, an empty folder or a daskstate model already at ``path``
        (with ``overwrite=True``, the default) is written; anything else there (data,
        other files, another kind of daskstate object) raises ``StateFileError``
        and is left untouched.
        """
        self._check_fitted()
        arrays, meta = self.state_.to_arrays()
        attrs = {
            "kind": "model",
            "estimator": type(self).__name__,
            "estimator_params": _jsonable(self.get_params()),
            "overrides": _jsonable(self.finalize_overrides_),
            **meta,
        }
        write_group(path, arrays, attrs, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> StateEstimator:
        """Load a model saved by :meth:`save`; it must be of this class."""
        est = load(path)
        if cls is not StateEstimator and not isinstance(est, cls):
            raise StateFileError(f"{os.fspath(path)}: holds a {type(est).__name__} model, not a {cls.__name__}")
        return est


class available_when:  # noqa: N801 - used as a decorator, like scikit-learn's available_if
    """Decorator: the method exists only when ``why_not(estimator)`` returns None.

    Like :func:`sklearn.utils.metaestimators.available_if` (``hasattr`` is False
    otherwise, so scikit-learn's meta-estimators and scorers see only methods that
    work), but the ``AttributeError`` says why the method is missing.
    """

    def __init__(self, why_not: Callable[[Any], str | None]):
        self.why_not = why_not

    def __call__(self, fn: Callable) -> available_when:
        self.fn = fn
        self.__doc__ = fn.__doc__
        return self

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self.fn
        reason = self.why_not(obj)
        if reason is not None:
            raise AttributeError(f"this {type(obj).__name__} has no {self.name}: {reason}")
        return self.fn.__get__(obj, owner)


def estimators() -> dict[str, type[StateEstimator]]:
    """Every estimator class by name (the registry the command line and :func:`load` use).

    Examples
    --------
    >>> import daskstate
    >>> sorted(daskstate.estimator.estimators())[:3]
    ['KMeans', 'LinearClassifier', 'LinearLearner']
    """
    return dict(_ESTIMATORS)


def estimator_for(name: str) -> type[StateEstimator]:
    """The estimator for a class name, an algorithm name or an alias (``kmeans``, ``linear``, ``PCA``)."""
    wanted = name.lower().replace("-", "_")
    for cls_name, cls in _ESTIMATORS.items():
        names = {cls_name.lower(), cls.state_class.algorithm, *cls.aliases}
        if wanted in names or wanted == cls_name.lower().replace("_", ""):
            return cls
    known = sorted(c.state_class.algorithm for c in _ESTIMATORS.values() if c.__module__.startswith("daskstate"))
    raise ValueError(f"unknown algorithm {name!r}; choose one of {known}")


def load(path: str | os.PathLike) -> StateEstimator:
    """Load a fitted estimator saved with ``est.save(path)``; no pickle is involved.

    Examples
    --------
    >>> est = daskstate.load("model.zarr")   # doctest: +SKIP
    """
    arrays, attrs = read_group(path)
    if attrs.get("kind") != "model":
        raise StateFileError(f"{os.fspath(path)}: holds a {attrs.get('kind')!r}, not a saved model")
    name = attrs.get("estimator")
    cls = _ESTIMATORS.get(name)
    if cls is None:
        raise StateFileError(f"{os.fspath(path)}: unknown estimator {name!r}")
    if attrs.get("algorithm") not in {c.algorithm for c in (cls.state_class, *cls.other_state_classes)}:
        raise StateFileError(
            f"{os.fspath(path)}: estimator {name} with a {attrs.get('algorithm')!r} state does not fit together"
        )
    state = state_from_attrs(arrays, attrs, os.fspath(path))
    try:
        est = cls(**attrs.get("estimator_params", {}))
    except TypeError as exc:
        raise StateFileError(f"{os.fspath(path)}: bad hyperparameters for {name} ({exc})") from None
    est._set_state(state, dict(attrs.get("overrides", {})))
    return est


# ---- helpers ------------------------------------------------------------------------
def _lazy_for_dask(wrapped: Callable, inner: Callable) -> Callable:
    """``set_output``'s wrapper for in-memory input; Dask input gets the lazy output unchanged.

    scikit-learn would turn a Dask result into a pandas or polars frame, computing it.
    """

    @functools.wraps(inner)
    def method(self: StateEstimator, X: Any, *args: Any, **kwargs: Any) -> Any:
        if is_dask_collection(X):
            return inner(self, X, *args, **kwargs)
        return wrapped(self, X, *args, **kwargs)

    method._keeps_dask_lazy = True
    return method


def _fitted_attributes(est: StateEstimator, out: Any) -> Any:
    """Copy what every fitted scikit-learn estimator has (the feature count and names) onto ``out``."""
    out.n_features_in_ = est.n_features_in_
    if hasattr(est, "feature_names_in_"):
        out.feature_names_in_ = est.feature_names_in_.copy()
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise StateFileError(f"hyperparameter value {obj!r} of type {type(obj).__name__} cannot be saved as JSON")


def _meta(columns: Sequence[str] | None, dtype: Any) -> Any:
    if columns is None:
        return pd.Series([], dtype=dtype)
    return pd.DataFrame({c: pd.Series([], dtype=dtype) for c in columns})


def _wrap(out: np.ndarray, columns: Sequence[str] | None, index: pd.Index) -> Any:
    if columns is None:
        return pd.Series(out, index=index)
    return pd.DataFrame(out, index=index, columns=list(columns))


def _check_frame_features(columns: Any, schema: Schema, where: str) -> None:
    cols = [str(c) for c in columns]
    missing = [f for f in schema.features if f not in cols]
    if missing:
        raise DataError(
            f"{where}: feature column(s) {missing} the model was fitted on are missing (columns: {cols})"
        )


def _shape_error(shape: tuple, schema: Schema, where: str) -> DataError:
    if len(shape) != 2:
        return DataError(f"{where}: input of shape {shape}; expected a 2-D array of {schema.n_features} features "
                         "(Reshape your data with X.reshape(1, -1) for a single sample)")
    owner = where.split(".")[0].split(":")[0]
    return DataError(f"{where}: X has {shape[1]} features, but {owner} is expecting {schema.n_features} "
                     f"features as input (the model was fitted on {schema.n_features} features)")


def _has_feature_names(schema: Schema) -> bool:
    """Whether the features were named by the input (a DataFrame), not numbered ``x0, x1, ...`` for an array."""
    return schema.features != tuple(f"x{i}" for i in range(schema.n_features))


_NUMBERS = ("integer", "floating", "mixed-integer-float", "boolean")


def _array_likes(X: Any, y: Any) -> tuple[Any, Any]:
    """Lists and other array-likes as numpy arrays; a one-column 2-D ``y`` raveled with scikit-learn's warning."""
    X = as_array(X)
    if y is None or isinstance(y, dd.Series | dd.DataFrame | da.Array | pd.Series):
        return X, y
    if isinstance(y, pd.DataFrame):
        return X, y
    y = np.asarray(y)
    if y.dtype == object and pd.api.types.infer_dtype(y.ravel(), skipna=False) in _NUMBERS:
        y = y.astype(np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is raveled",
                      DataConversionWarning, stacklevel=3)
        y = y.ravel()
    return X, y
