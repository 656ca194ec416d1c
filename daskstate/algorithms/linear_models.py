"""scikit-learn's shapes of the linear learner: ``LinearClassifier``, ``LinearRegressor``, and ``to_sklearn``.

Both estimators are :class:`~daskstate.algorithms.linear.LinearLearner` with the
``predictor_type`` fixed by the class and only the hyperparameters that apply to
it, so they train the same :class:`~daskstate.algorithms.linear.LinearState`.
``LinearClassifier`` is the softmax (multiclass) learner for any number of classes;
with two classes its ``decision_function`` and ``to_sklearn`` take scikit-learn's
binary shapes (``coef_`` keeps one row per class, as the softmax learns them). ``LinearLearner(predictor_type=...)`` keeps the
cloud-service vocabulary, with the binary learner's calibrated threshold and losses.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin

from daskstate.algorithms.linear import LinearLearner, LinearState
from daskstate.estimator import StateEstimator, _fitted_attributes

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
