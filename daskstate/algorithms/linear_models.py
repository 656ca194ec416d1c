"""The linear learner's estimators: ``LinearLearner``, scikit-learn's ``LinearClassifier`` and ``LinearRegressor``.

:class:`LinearLearner` holds the hyperparameters (one constraint table), the
trainer's hooks (:class:`~daskstate.training.SGDEstimator`) and prediction; it
trains :class:`~daskstate.algorithms.linear.LinearState` by SGD, or solves
:class:`~daskstate.algorithms.linear_exact.LinearExactState` with
``solver="exact"``. ``LinearClassifier`` and ``LinearRegressor`` are LinearLearner
with the ``predictor_type`` fixed by the class and only the hyperparameters that
apply to it, so they train the same states. ``LinearClassifier`` is the softmax
(multiclass) learner for any number of classes; with two classes its
``decision_function`` and ``to_sklearn`` take scikit-learn's binary shapes
(``coef_`` keeps one row per class, as the softmax learns them).
``LinearLearner(predictor_type=...)`` keeps the cloud-service vocabulary, with the
binary learner's calibrated threshold and losses.
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets

from daskstate.algorithms.linear import (
    BINARY_CRITERIA,
    DEFAULT_LOSS,
    DEFAULT_NUM_MODELS,
    LOSSES,
    MULTICLASS_CRITERIA,
    OPTIMIZERS,
    PREDICTOR_TYPES,
    SELECTION_OVERRIDES,
    SOLVERS,
    LinearState,
    LinearStatsState,
    _is_auto,
)
from daskstate.algorithms.linear_exact import LinearExactState
from daskstate.data import Input
from daskstate.errors import DataError
from daskstate.estimator import StateEstimator, _fitted_attributes, available_when
from daskstate.numerics import BINARY_LOSSES, MULTICLASS_LOSSES, REGRESSION_LOSSES, sigmoid, softmax
from daskstate.state import State
from daskstate.training import ClassCounts, Schedule, SGDEstimator


# ============================================================================ the estimator
class LinearLearner(SGDEstimator):
    """Linear regression and classification on data larger than memory, many models in one pass.

    ``num_models`` linear models, differing in learning rate, L1, L2 (``wd``) and
    (binary) positive-example weight, train at once by mini-batch SGD (Adam by
    default) on standardised features; partitions are processed in rounds of
    ``sync_every`` whose results are averaged (the shared trainer, :mod:`daskstate.training`).
    The model that does best on validation rows (a seeded hash of the row, or the
    ``validation_data`` given to ``fit``) is selected, and for binary
    classification its decision threshold is calibrated there. With
    ``solver="exact"`` squared-loss regression is solved from the normal equations
    in one pass, and any ridge penalty follows from the state without data.

    Parameters
    ----------
    predictor_type : {"regressor", "binary_classifier", "multiclass_classifier"}
    features : list of str, optional
        Feature columns (default: every numeric column but the target).
    target : str, optional
        Target column of a DataFrame input (or pass ``y`` to ``fit``).
    loss : str
        "auto" (squared / logistic / softmax), or "squared", "absolute", "huber",
        "quantile" (regression); "logistic", "hinge" (binary); "softmax" (multiclass).
    solver : {"sgd", "exact"}
        "exact": normal equations (squared-loss regression only; one pass).
    num_classes : int, optional
        Multiclass: labels are then 0..num_classes-1; by default the classes are
        learned in the first pass (any numbers or strings).
    num_models : int or "auto"
        Packed models ("auto": 32 with SGD, 1 with the exact solver).
    learning_rate, l1, wd : float or "auto"
        A value for all models, or "auto": model 0 gets the default (learning
        rate 0.01 for Adam, 0.1 for SGD; no penalty), the others a seeded
        log-uniform spread (L1 and L2 are 0 for about half of them). Penalties
        apply to standardised features. With the exact solver ``wd`` is the ridge
        penalty (on raw features, as scikit-learn's ``Ridge(alpha=wd)``; "auto" = 0).
    positive_example_weight_mult : float, "auto" or "balanced"
        Binary: weight of positive rows in the loss; "balanced" = negatives/positives.
    optimizer : {"adam", "sgd"}
    beta_1, beta_2, epsilon : float
        Adam's parameters.
    mini_batch_size : int
        Rows per SGD step (each step updates all packed models).
    epochs : int
        Maximum passes over the data.
    sync_every : int
        Partitions per round: the synchronisation schedule (1 = sequential). The
        result depends on it and on ``random_state``, never on the number of workers. Up
        to ``sync_every`` partitions train in parallel; each epoch makes about
        ``rows / (sync_every * mini_batch_size)`` steps' worth of progress, so
        small data split into many partitions wants a small value.
    early_stopping_patience : int or None
        Stop after this many validation checks without a relative gain of
        ``early_stopping_tolerance`` in the selected model's validation metric:
        the selection criterion (e.g. accuracy), or the loss for regression and
        ``loss_function`` (None: never stop early). A check's rounds score the
        model the previous check left on their validation rows, in the same pass
        as they train; it closes at the first round boundary where it holds
        10,000 validation rows, or at the epoch's end (big data: every round, so a
        fit can stop inside an epoch; small data: every epoch). With
        ``validation_data`` a check closes every epoch.
    early_stopping_tolerance : float
    validation_fraction : float
        Share of rows held out for validation, chosen by a seeded hash of the row's
        values (ignored when ``fit`` gets ``validation_data``). With 0 and no
        validation data, early stopping and selection use the training rows.
    normalization_rows : int or None
        The feature (and label) normaliser is estimated from at least this many
        rows: whole partitions in a seeded order, 1, 2, 4, ... at a time, before
        training (like SageMaker's ``num_point_for_scaler``). None: a full first
        pass. Binary classification reads on until both classes have appeared; a
        multiclass classifier without ``num_classes`` always makes a full first
        pass, to learn every class.
    binary_classifier_model_selection_criteria : str
        "accuracy", "f_beta", "precision_at_target_recall",
        "recall_at_target_precision" or "loss_function".
    multiclass_classifier_model_selection_criteria : {"accuracy", "loss_function"}
    target_recall, target_precision, f_beta : float
        Parameters of the binary criteria. All selection parameters can be changed
        by ``finalize`` without data.
    huber_delta, quantile : float
        Huber loss width (in standardised label units) and the quantile of the quantile loss.
    random_state : int
        Seeds the spreads, the validation hash, partition order and row shuffles.
    on_invalid : {"raise", "skip"}

    Attributes
    ----------
    coef_ : ndarray
        (n_features,) for regression, (1, n_features) binary, (n_classes, n_features) multiclass.
    intercept_ : float or ndarray
    classes_ : ndarray
        Class labels (classifiers).
    threshold_ : float
        Binary: predict the positive class when ``predict_proba >= threshold_`` (with
        hinge loss: when the sigmoid of ``decision_function`` is), calibrated on validation.
    models_ : pandas.DataFrame
        Every packed model's hyperparameters and validation metrics; ``selected`` marks the one in use.
    best_model_ : int
        The model the criterion picks; ``model_`` the one in use (``finalize(model=i)``).
    n_epochs_ : int
        Epochs actually trained, the last maybe in part (``epochs``, or fewer when
        early stopping saw the selected model's validation metric converge); also
        ``epochs_run_`` and the ``epochs`` column of ``models_``.
    n_rounds_ : int
        Rounds actually trained (``rounds`` in ``models_``; ``best_round`` and the
        fractional ``best_epoch`` say when each model's kept snapshot was taken).
    history_ : list of dict
        Per epoch, the selected model, its validation loss and metric at the
        epoch's first check, and under ``"checks"`` every check (one per round).
    state_ : LinearState

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(5000, 4))
    >>> y = (X @ [1.0, -1.0, 0.5, 0.0] > 0).astype(int)
    >>> clf = daskstate.LinearLearner("binary_classifier", num_models=4, mini_batch_size=100, epochs=5)
    >>> clf = clf.fit(X, y)
    >>> clf.score(X, y) > 0.98
    True
    >>> clf.models_.shape[0]
    4
    >>> exact = daskstate.LinearLearner("regressor", solver="exact").fit(X, X @ [1.0, 2.0, 3.0, 4.0])
    >>> np.round(exact.coef_, 6)
    array([1., 2., 3., 4.])
    >>> np.round(exact.finalize(wd=1e3).coef_, 2)          # a ridge penalty, without data
    array([0.85, 1.67, 2.5 , 3.33])
    """

    state_class = LinearState
    other_state_classes = (LinearExactState,)
    aliases = ("linear", "linear_learner", "linearlearner")

    def __init__(
        self,
        predictor_type: str,
        *,
        features: list[str] | None = None,
        target: str | None = None,
        loss: str = "auto",
        solver: str = "sgd",
        num_classes: int | None = None,
        num_models: int | str = "auto",
        learning_rate: float | str = "auto",
        l1: float | str = "auto",
        wd: float | str = "auto",
        positive_example_weight_mult: float | str = 1.0,
        optimizer: str = "adam",
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        mini_batch_size: int = 1000,
        epochs: int = 15,
        sync_every: int = 4,
        early_stopping_patience: int | None = 3,
        early_stopping_tolerance: float = 0.001,
        validation_fraction: float = 0.1,
        normalization_rows: int | None = 100_000,
        binary_classifier_model_selection_criteria: str = "accuracy",
        multiclass_classifier_model_selection_criteria: str = "accuracy",
        target_recall: float = 0.8,
        target_precision: float = 0.8,
        f_beta: float = 1.0,
        huber_delta: float = 1.0,
        quantile: float = 0.5,
        random_state: int = 0,
        on_invalid: str = "raise",
    ):
        self.predictor_type = predictor_type
        self.features = features
        self.target = target
        self.loss = loss
        self.solver = solver
        self.num_classes = num_classes
        self.num_models = num_models
        self.learning_rate = learning_rate
        self.l1 = l1
        self.wd = wd
        self.positive_example_weight_mult = positive_example_weight_mult
        self.optimizer = optimizer
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.mini_batch_size = mini_batch_size
        self.epochs = epochs
        self.sync_every = sync_every
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_tolerance = early_stopping_tolerance
        self.validation_fraction = validation_fraction
        self.normalization_rows = normalization_rows
        self.binary_classifier_model_selection_criteria = binary_classifier_model_selection_criteria
        self.multiclass_classifier_model_selection_criteria = multiclass_classifier_model_selection_criteria
        self.target_recall = target_recall
        self.target_precision = target_precision
        self.f_beta = f_beta
        self.huber_delta = huber_delta
        self.quantile = quantile
        self.random_state = random_state
        self.on_invalid = on_invalid

    # ---- hyperparameters ----------------------------------------------------------
    _parameter_constraints: ClassVar[dict] = {
        **SGDEstimator._parameter_constraints,
        "predictor_type": [StrOptions(set(PREDICTOR_TYPES))],
        "features": [list, tuple, None],
        "target": [str, None],
        "loss": [StrOptions({"auto", *REGRESSION_LOSSES, *BINARY_LOSSES, *MULTICLASS_LOSSES})],
        "solver": [StrOptions(set(SOLVERS))],
        "num_classes": [Interval(Integral, 2, None, closed="left"), None],
        "num_models": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "l1": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "wd": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "positive_example_weight_mult": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto", "balanced"})],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "mini_batch_size": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "sync_every": [Interval(Integral, 1, None, closed="left")],
        "early_stopping_patience": [Interval(Integral, 1, None, closed="left"), None],
        "early_stopping_tolerance": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "normalization_rows": [Interval(Integral, 1, None, closed="left"), None],
        "binary_classifier_model_selection_criteria": [StrOptions(set(BINARY_CRITERIA))],
        "multiclass_classifier_model_selection_criteria": [StrOptions(set(MULTICLASS_CRITERIA))],
        "target_recall": [Interval(Real, 0, 1, closed="both")],
        "target_precision": [Interval(Real, 0, 1, closed="both")],
        "f_beta": [Interval(Real, 0, None, closed="neither")],
        "huber_delta": [Interval(Real, 0, None, closed="neither")],
        "quantile": [Interval(Real, 0, 1, closed="neither")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def _check_params_together(self) -> None:
        losses = LOSSES[self.predictor_type]
        if not (_is_auto(self.loss) or self.loss in losses):
            raise ValueError(f"loss must be 'auto' or one of {losses} for a {self.predictor_type}, got {self.loss!r}")
        if self.solver == "exact":
            if not (self.predictor_type == "regressor" and (_is_auto(self.loss) or self.loss == "squared")):
                raise ValueError("solver must be 'sgd' unless predictor_type='regressor' with squared loss "
                                 f"('exact' solves least squares), got {self.solver!r}")
            if not (_is_auto(self.num_models) or self.num_models == 1):
                raise ValueError(f"num_models must be 'auto' or 1 with solver='exact', got {self.num_models!r}")
        for name in ("learning_rate", "l1", "wd", "beta_1", "beta_2", "epsilon", "early_stopping_tolerance",
                     "f_beta", "huber_delta"):
            value = getattr(self, name)
            if not isinstance(value, str) and not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}")

    def _state_params(self, inp: Input, validation: str = "split") -> dict[str, Any]:
        exact = self.solver == "exact"
        num_models = (1 if exact else DEFAULT_NUM_MODELS) if _is_auto(self.num_models) else int(self.num_models)

        def plain(v: Any) -> Any:
            return v.item() if isinstance(v, np.generic) else v

        return {
            "predictor_type": self.predictor_type,
            "loss": DEFAULT_LOSS[self.predictor_type] if _is_auto(self.loss) else self.loss,
            "solver": self.solver,
            "num_models": num_models,
            "num_classes": plain(self.num_classes) if self.predictor_type == "multiclass_classifier" else None,
            "learning_rate": plain(self.learning_rate),
            "l1": plain(self.l1),
            "wd": plain(self.wd),
            "positive_example_weight_mult": plain(self.positive_example_weight_mult),
            "optimizer": self.optimizer,
            "beta_1": float(self.beta_1),
            "beta_2": float(self.beta_2),
            "epsilon": float(self.epsilon),
            "mini_batch_size": int(self.mini_batch_size),
            "huber_delta": float(self.huber_delta),
            "quantile": float(self.quantile),
            "validation": validation,
            "validation_fraction": float(self.validation_fraction) if validation == "split" else 0.0,
            "seed": int(self.random_state),
        }

    def _finalize_overrides(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in SELECTION_OVERRIDES}
        for name in ("target_recall", "target_precision", "f_beta"):
            out[name] = float(out[name])
        if self.solver == "exact":
            out["wd"] = 0.0 if _is_auto(self.wd) else float(self.wd)
        return out

    # ---- the trainer's hooks ----------------------------------------------------------
    def _trains_by_sgd(self) -> bool:
        return self.solver != "exact"

    def _one_pass_description(self) -> str:
        return "solver='exact'"

    def _statistics_state(self, inp: Input, params: dict[str, Any]) -> State:
        cls = LinearStatsState if self._trains_by_sgd() else LinearExactState
        return cls(inp.schema, params)

    def _enough_statistics(self, state: LinearStatsState) -> bool:
        if self.predictor_type == "multiclass_classifier" and not self.num_classes:
            return False  # every class must be learned: a full pass
        enough = state.n_rows >= self.normalization_rows
        return enough and (self.predictor_type != "binary_classifier" or len(state.classes) >= 2)

    def _schedule(self) -> Schedule:
        rows = self.normalization_rows
        if self.predictor_type == "multiclass_classifier" and not self.num_classes:
            rows = None
        return Schedule(epochs=int(self.epochs), sync_every=int(self.sync_every),
                        patience=self.early_stopping_patience, tolerance=float(self.early_stopping_tolerance),
                        statistics_rows=rows, selection=self._finalize_overrides())

    def _min_rows_needed(self) -> int:
        return 2

    # ---- applying the model -------------------------------------------------------------
    @available_when(lambda self: _not_a_classifier(self))
    def decision_function(self, X: Any) -> Any:
        """Scores ``X @ coef_.T + intercept_``; lazy for Dask input.

        One column per class for three or more classes; for two classes (also
        of a multiclass model) one score, positive for ``classes_[1]``, as in scikit-learn.
        """
        self._check_fitted()
        coef, intercept = np.asarray(self.coef_), np.asarray(self.intercept_)
        if coef.ndim == 2 and coef.shape[0] == 2:  # a 2-class softmax: the score of the second class
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        if coef.ndim == 1 or coef.shape[0] == 1:
            w, b = coef.reshape(-1), float(intercept.reshape(-1)[0])
            return self._map_rows(X, lambda A: A @ w + b, None, "decision-function")
        columns = [str(c) for c in self.classes_]
        return self._map_rows(X, lambda A: A @ coef.T + intercept, columns, "decision-function")

    @available_when(lambda self: _not_a_classifier(self) or (
        "hinge loss gives only scores (use decision_function)" if self._loss() == "hinge" else None))
    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (columns in ``classes_`` order); lazy for Dask input."""
        self._check_fitted()
        coef, intercept = np.asarray(self.coef_), np.asarray(self.intercept_)
        columns = [str(c) for c in self.classes_]
        if self.predictor_type == "binary_classifier":
            w, b = coef.reshape(-1), float(intercept.reshape(-1)[0])

            def proba(A: np.ndarray) -> np.ndarray:
                p = sigmoid(A @ w + b)
                return np.column_stack([1.0 - p, p])
        else:
            def proba(A: np.ndarray) -> np.ndarray:
                return softmax(A @ coef.T + intercept)
        return self._map_rows(X, proba, columns, "predict-proba")

    def predict(self, X: Any) -> Any:
        """Predicted values (regression) or class labels; lazy for Dask input."""
        self._check_fitted()
        coef, intercept = np.asarray(self.coef_), np.asarray(self.intercept_)
        if self.predictor_type == "regressor":
            w, b = coef, float(intercept)
            return self._map_rows(X, lambda A: A @ w + b, None, "predict")
        classes = self.classes_
        dtype = classes.dtype
        if self.predictor_type == "binary_classifier":
            w, b = coef.reshape(-1), float(intercept.reshape(-1)[0])
            # p >= threshold  <=>  score >= logit(threshold)
            th = self.threshold_
            cut = -np.inf if th <= 0 else (np.inf if th >= 1 else math.log(th / (1.0 - th)))

            def label(A: np.ndarray) -> np.ndarray:
                return classes[(A @ w + b >= cut).astype(np.intp)]
        else:
            def label(A: np.ndarray) -> np.ndarray:
                return classes[np.argmax(A @ coef.T + intercept, axis=1)]
        return self._map_rows(X, label, None, "predict", dtype=dtype)

    def _score_kind(self) -> str:
        return "r2" if self.predictor_type == "regressor" else "accuracy"

    # ---- scikit-learn ---------------------------------------------------------------------
    def _loss(self) -> str:
        return DEFAULT_LOSS[self.predictor_type] if _is_auto(self.loss) else self.loss

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        if self.predictor_type == "regressor":
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=self.predictor_type == "multiclass_classifier")
        return tags

    def partial_fit(self, X: Any, y: Any = None, classes: Any = None, **fit_kwargs: Any) -> LinearLearner:
        """Continue training from ``state_`` (or fit, the first time); see :meth:`StateEstimator.partial_fit`.

        ``classes`` (classifiers): every class label, as scikit-learn's ``partial_fit``
        takes it; at the first call it declares classes the first batch may lack, later
        it must be a subset of ``classes_``.
        """
        if classes is None:
            return super().partial_fit(X, y, **fit_kwargs)
        if self.predictor_type == "regressor":
            raise ValueError("classes is for classifiers; this LinearLearner is a regressor")
        classes = np.unique(np.asarray(classes))
        if hasattr(self, "state_"):
            unknown = np.setdiff1d(classes, self.classes_)
            if len(unknown):
                raise ValueError(f"classes {unknown.tolist()[:5]} were not declared or seen at the first partial_fit "
                                 f"(classes_: {self.classes_.tolist()[:10]})")
            return super().partial_fit(X, y, **fit_kwargs)
        self._declared_classes = classes
        try:
            return super().partial_fit(X, y, **fit_kwargs)
        finally:
            self.__dict__.pop("_declared_classes", None)

    def _new_state(self, inp: Input, validation_data: Any = None) -> State:
        state = super()._new_state(inp, validation_data)
        classes = self.__dict__.get("_declared_classes")
        if classes is not None and isinstance(state, ClassCounts) and not state.params.get("num_classes"):
            state._count_classes(classes, "partial_fit(classes=...)")
            state.class_counts = np.zeros_like(state.class_counts)  # declared, not seen
        return state

    def _check_target(self, y: Any) -> None:
        if self.predictor_type != "regressor" and isinstance(y, np.ndarray | pd.Series):
            check_classification_targets(y)  # "Unknown label type: continuous" for real-valued labels
        if self.predictor_type == "binary_classifier" and isinstance(y, np.ndarray | pd.Series):
            found = pd.unique(np.asarray(y).ravel())
            if len(found) > 2:
                raise DataError(f"Only binary classification is supported: predictor_type='binary_classifier' "
                                f"got {len(found)} classes in y (use 'multiclass_classifier')")

    def to_sklearn(self) -> Any:
        """The equivalent fitted scikit-learn estimator, with the same ``predict`` (and ``predict_proba``).

        Squared-loss regression: ``LinearRegression``, or ``Ridge(alpha=wd)`` for the
        exact solver with a penalty; huber: ``HuberRegressor``; quantile and absolute:
        ``QuantileRegressor``; logistic and softmax classifiers: ``LogisticRegression``;
        hinge: ``LinearSVC``. A binary model whose calibrated ``threshold_`` is not 0.5
        comes wrapped in ``FixedThresholdClassifier`` with that threshold on its score.
        """
        self._check_fitted()
        return linear_to_sklearn(self)


def _not_a_classifier(est: LinearLearner) -> str | None:
    return "it is a regressor" if est.predictor_type == "regressor" else None


#: hyperparameters of only the binary learner, only the classifiers, only the regressor
_BINARY_ONLY = ("positive_example_weight_mult", "binary_classifier_model_selection_criteria", "target_recall",
                "target_precision", "f_beta")
_CLASSIFIER_ONLY = ("num_classes", "multiclass_classifier_model_selection_criteria")
_REGRESSOR_ONLY = ("solver", "huber_delta", "quantile")


class _FixedPredictor(LinearLearner):
    """A :class:`LinearLearner` whose ``predictor_type`` is the class's; ``_omitted`` parameters keep defaults.

    ``__init__``'s signature (what ``get_params``, ``clone`` and ``repr`` read) is
    LinearLearner's without ``predictor_type`` and the omitted parameters, which stay
    class attributes at LinearLearner's defaults.
    """

    predictor_type: ClassVar[str]
    _omitted: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        full = inspect.signature(LinearLearner.__init__)
        dropped = {"predictor_type", *cls._omitted}
        kept = [p for p in full.parameters.values() if p.name not in dropped]
        for name in cls._omitted:
            setattr(cls, name, full.parameters[name].default)
        names = [p.name for p in kept[1:]]

        def __init__(self: _FixedPredictor, **params: Any) -> None:
            unknown = sorted(set(params) - set(names))
            if unknown:
                raise TypeError(f"{type(self).__name__}.__init__ got unexpected keyword argument(s) {unknown}")
            for p in kept[1:]:
                setattr(self, p.name, params.get(p.name, p.default))

        __init__.__signature__ = full.replace(parameters=kept)
        __init__.__doc__ = f"Hyperparameters: {', '.join(names)} (see LinearLearner)."
        cls.__init__ = __init__
        cls._parameter_constraints = {k: v for k, v in LinearLearner._parameter_constraints.items() if k in names}

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (classifier) or R^2 (regressor) of ``predict(X)``; lazy inputs are computed."""
        return StateEstimator.score(self, X, y, sample_weight=sample_weight)


class LinearClassifier(ClassifierMixin, _FixedPredictor):
    """Linear (softmax) classification on data larger than memory: scikit-learn's face of :class:`LinearLearner`.

    Takes LinearLearner's hyperparameters except ``predictor_type`` (always the
    softmax learner, for two classes or more) and those of the binary learner
    alone (``positive_example_weight_mult``, the binary selection criteria) and the
    regressor (``solver``, ``huber_delta``, ``quantile``).

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 3))
    >>> y = np.where(X[:, 0] - X[:, 1] > 0, "yes", "no")
    >>> clf = daskstate.LinearClassifier(num_models=4, mini_batch_size=50, epochs=5).fit(X, y)
    >>> clf.classes_.tolist(), clf.coef_.shape, clf.decision_function(X[:4]).shape
    (['no', 'yes'], (2, 3), (4,))
    >>> clf.score(X, y) > 0.97
    True
    """

    state_class = LinearState
    predictor_type = "multiclass_classifier"
    aliases = ("linear_classifier",)
    _omitted = ("num_classes", *_BINARY_ONLY, *_REGRESSOR_ONLY)

    def _apply_model(self, model: dict[str, Any]) -> None:
        super()._apply_model(model)
        self.n_classes_ = len(self.classes_)


class LinearRegressor(RegressorMixin, _FixedPredictor):
    """Linear regression on data larger than memory: scikit-learn's face of :class:`LinearLearner`.

    Takes LinearLearner's hyperparameters except ``predictor_type`` and the
    classifiers' (``num_classes``, the selection criteria, ...). ``solver="exact"``
    solves least squares (a ridge penalty ``wd``) from the normal equations in one pass.

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> X = np.random.default_rng(0).normal(size=(1000, 3))
    >>> reg = daskstate.LinearRegressor(solver="exact").fit(X, X @ [1.0, 2.0, 3.0] + 4.0)
    >>> np.round(reg.coef_, 6).tolist(), round(reg.intercept_, 6)
    ([1.0, 2.0, 3.0], 4.0)
    """

    state_class = LinearState
    other_state_classes = LinearLearner.other_state_classes
    predictor_type = "regressor"
    aliases = ("linear_regressor",)
    _omitted = (*_CLASSIFIER_ONLY, *_BINARY_ONLY)


def linear_to_sklearn(est: LinearLearner) -> Any:
    """The fitted scikit-learn linear model that predicts as ``est`` does (see ``LinearLearner.to_sklearn``)."""
    from sklearn.linear_model import (
        HuberRegressor,
        LinearRegression,
        LogisticRegression,
        QuantileRegressor,
        Ridge,
    )
    from sklearn.model_selection import FixedThresholdClassifier
    from sklearn.svm import LinearSVC

    coef, intercept, loss = np.asarray(est.coef_, dtype=np.float64), np.asarray(est.intercept_), est.loss_
    if est.predictor_type == "regressor":
        wd = float(est.finalize_overrides_.get("wd", 0.0) or 0.0)
        if loss == "squared":
            model = Ridge(alpha=wd) if wd > 0 else LinearRegression()
        elif loss == "huber":
            model = HuberRegressor()
        else:  # quantile; absolute error is the median
            model = QuantileRegressor(quantile=float(est.quantile) if loss == "quantile" else 0.5, alpha=0.0)
        model.coef_, model.intercept_ = coef.copy(), float(intercept)
        return _fitted_attributes(est, model)
    classes = np.asarray(est.classes_)
    if len(classes) == 2 and coef.shape[0] == 2:  # a 2-class softmax as one logistic score
        coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
    model = LinearSVC() if loss == "hinge" else LogisticRegression()
    model.coef_, model.intercept_, model.classes_ = coef.copy(), np.asarray(intercept, np.float64).copy(), classes
    model = _fitted_attributes(est, model)
    threshold = getattr(est, "threshold_", 0.5)
    if len(classes) != 2 or threshold == 0.5:
        return model
    # the positive class when sigmoid(score) >= threshold_, i.e. score >= logit(threshold_)
    cut = -math.inf if threshold <= 0 else (math.inf if threshold >= 1 else math.log(threshold / (1 - threshold)))
    return FixedThresholdClassifier(model, threshold=cut, response_method="decision_function")
