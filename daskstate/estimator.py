"""scikit-learn-style estimators on top of states.

An estimator holds hyperparameters (``__init__`` arguments, stored as given),
and after ``fit`` a ``state_`` plus the fitted attributes its ``finalize``
produced. Every fitted attribute is derived from ``(hyperparameters, state_,
finalize overrides)``, so saving the state saves the model.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import tokenize

from daskstate import engine
from daskstate.data import Input, as_input, to_batch, to_features, warn_if_nothing_new
from daskstate.errors import DataError, NotFittedError, StateFileError
from daskstate.state import Schema, State
from daskstate.store import checksum, read_group, state_from_attrs, write_group

_ESTIMATORS: dict[str, type[StateEstimator]] = {}
#: the keywords of ``fit`` and ``partial_fit`` that say how to run (see :meth:`StateEstimator._fit_options`)
_RUN_OPTIONS = ("checkpoint", "checkpoint_every", "progress", "split_every")


class StateEstimator:
    """Base class: ``fit``, ``partial_fit``, ``finalize``, ``save`` over a :class:`State`.

    Subclasses set ``state_class``, implement ``_state_params`` (hyperparameters
    that shape the state) and ``_validate_params``, and may override
    ``_fold`` (iterative algorithms) and ``_apply_model``.
    """

    state_class: ClassVar[type[State]]
    #: other names the command line accepts for this estimator
    aliases: ClassVar[tuple[str, ...]] = ()
    #: minimum rows a fit needs, as a function of the hyperparameters
    _min_rows: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _ESTIMATORS[cls.__name__] = cls

    # ---- parameters (scikit-learn protocol) ---------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD
                or p.kind == p.KEYWORD_ONLY]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters by name, as given to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> StateEstimator:
        """Set hyperparameters; unknown names raise ``ValueError``."""
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(shown)})"

    # ---- to implement ------------------------------------------------------------
    def _validate_params(self) -> None:
        """Raise ``ValueError`` naming the parameter for out-of-range hyperparameters."""
        if getattr(self, "on_invalid", "raise") not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {self.on_invalid!r}")

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

    def _input(self, X: Any, y: Any = None, schema: Schema | None = None) -> Input:
        features = list(schema.features) if schema is not None else getattr(self, "features", None)
        target = getattr(self, "target", None)
        if schema is not None and schema.target is not None and y is None:
            target = schema.target
        if isinstance(X, Input):
            return X
        return as_input(X, y, features=features, target=target if self._supervised else None,
                        need_target=self._supervised)

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
        X : Dask DataFrame or Array, pandas DataFrame, numpy array, or iterator of batches
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
            Algorithm-specific (e.g. ``validation_data`` of iterative algorithms).

        Returns
        -------
        self
        """
        self._validate_params()
        options = self._fit_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                                    split_every=split_every)
        inp = self._input(X, y)
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
        self._validate_params()
        inp = self._input(X, y, schema=self.state_.schema)
        self.state_.schema.check_same_features(inp.schema, "partial_fit")
        warn_if_nothing_new(inp, self.state_.consumed, type(self).__name__)
        state = self._fold(inp, self.state_, options=self._fit_options(**run), **fit_params)
        self._set_state(state, getattr(self, "finalize_overrides_", {}))
        return self

    def _check_enough_rows(self, state: State) -> None:
        need = self._min_rows_needed()
        if state.n_rows < need:
            skipped = f" ({state.n_skipped} invalid rows were skipped)" if state.n_skipped else ""
            raise DataError(
                f"{type(self).__name__} needs at least {need} valid row(s); the input had {state.n_rows}{skipped}"
            )

    def _min_rows_needed(self) -> int:
        return self._min_rows

    def _set_state(self, state: State, overrides: dict[str, Any]) -> None:
        model = state.finalize(**overrides)
        self.state_ = state
        self.finalize_overrides_ = dict(overrides)
        self.n_features_in_ = state.n_features
        self.feature_names_in_ = np.asarray(state.schema.features, dtype=object)
        self.n_samples_seen_ = state.n_rows
        self._apply_model(model)

    def finalize(self, **overrides: Any) -> StateEstimator:
        """A new fitted estimator from the same state with model-only hyperparameters changed.

        No data is read. Which overrides an algorithm accepts is listed in its
        docstring (e.g. ``n_clusters`` for k-means, ``n_components`` for PCA).
        """
        self._check_fitted()
        new = type(self)(**self.get_params())
        for key, value in overrides.items():
            if key in new._param_names():
                setattr(new, key, value)
        new._set_state(self.state_, {**self.finalize_overrides_, **overrides})
        return new

    def _check_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

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
        schema = self.state_.schema
        on_invalid = getattr(self, "on_invalid", "raise")
        if on_invalid != "raise":
            dtype = np.float64  # invalid rows come out as NaN

        def apply(block: Any, where: str) -> np.ndarray:
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
                raise _shape_error(X.shape, schema, name)
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
            raise _shape_error(arr.shape, schema, name)
        return apply(arr, name)

    def _prefix(self) -> str:
        return self.state_class.algorithm

    def _model_token(self) -> str:
        """A token of what the fitted model computes: its state and finalize overrides."""
        arrays, meta = self.state_.to_arrays()
        return tokenize(checksum(arrays, meta), sorted(map(str, self.finalize_overrides_.items())),
                        sorted(map(str, self.get_params().items())))

    # ---- saving ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model (its state and hyperparameters) as a Zarr group, atomically."""
        self._check_fitted()
        arrays, meta = self.state_.to_arrays()
        attrs = {
            "kind": "model",
            "estimator": type(self).__name__,
            "estimator_params": _jsonable(self.get_params()),
            "overrides": _jsonable(self.finalize_overrides_),
            **meta,
        }
        write_group(path, arrays, attrs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> StateEstimator:
        """Load a model saved by :meth:`save`; it must be of this class."""
        est = load(path)
        if cls is not StateEstimator and not isinstance(est, cls):
            raise StateFileError(f"{os.fspath(path)}: holds a {type(est).__name__} model, not a {cls.__name__}")
        return est


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
    if attrs.get("algorithm") != cls.state_class.algorithm:
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
def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else False
    except Exception:
        return False


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
    return DataError(
        f"{where}: input of shape {shape}; the model was fitted on {schema.n_features} features"
    )
