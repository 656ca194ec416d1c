"""Linear learner: many linear models trained at once by SGD in synchronised rounds, or solved exactly.

Hyperparameters
    ``predictor_type`` (regressor, binary or multiclass classifier), the loss, the
    number of packed models and their spreads of learning rate, L1, L2 (``wd``)
    and positive-example weight, the optimiser (Adam or SGD), epochs, rounds
    (``sync_every``), early stopping and the validation split.

The states
    - :class:`LinearStatsState`, the statistics pass: feature (and, for
      regression, label) moments (a :class:`~daskstate.state.MomentsState`) and
      the class counts;
    - :class:`LinearState`, SGD training (a :class:`~daskstate.training.SGDState`):
      the normaliser frozen from the statistics (``norm_mean``/``norm_scale``),
      ``num_models`` packed models in standardised space (``coef`` of shape
      (models, features, outputs) and ``bias``) with Adam's moments and step
      count, per model its learning rate, ``l1``, ``wd`` and positive weight; the
      trainer adds snapshots and validation accumulators (a histogram of
      validation scores per class for threshold calibration, correct counts,
      squared and absolute errors);
    - :class:`LinearExactState`, ``solver="exact"``: the centred scatter matrix of
      ``[X, y]`` (one pass, exact, mergeable).

``update``
    Per partition of a round, the trainer scores the validation rows with the
    epoch's anchor and hands the other rows, shuffled, to :meth:`LinearState._train`:
    mini-batches, each one tensor operation for all packed models (``rows x
    features @ features x (models * outputs)``). Features are standardised per
    mini-batch; the normalisation is folded into the coefficients at finalize, so
    predictions take raw features.

``merge``
    Statistics: Chan's formulas. Training: count-weighted averaging of the
    parameters and optimiser statistics (the rounds protocol); accumulators are summed.

``finalize``
    The model selected by the validation criterion (or ``model=i``), with its
    decision threshold calibrated on validation for binary classification; with the
    exact solver any ridge penalty ``wd`` from the state, without data.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets

from daskstate.data import Input
from daskstate.errors import DataError, StateError
from daskstate.estimator import available_when
from daskstate.numerics import (
    BINARY_LOSSES,
    MULTICLASS_LOSSES,
    REGRESSION_LOSSES,
    adam_step,
    loss_and_grad,
    mini_batches,
    sigmoid,
    soft_threshold,
    softmax,
)
from daskstate.state import MomentsState, RoundContext, State, register
from daskstate.training import (
    ClassCounts,
    Schedule,
    SGDEstimator,
    SGDState,
    argbest,
    display_classes,
    encode_labels,
    threshold_metrics,
)

PREDICTOR_TYPES = ("regressor", "binary_classifier", "multiclass_classifier")
LOSSES = {
    "regressor": REGRESSION_LOSSES,
    "binary_classifier": BINARY_LOSSES,
    "multiclass_classifier": MULTICLASS_LOSSES,
}
DEFAULT_LOSS = {"regressor": "squared", "binary_classifier": "logistic", "multiclass_classifier": "softmax"}
BINARY_CRITERIA = (
    "accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision", "loss_function",
)
MULTICLASS_CRITERIA = ("accuracy", "loss_function")
OPTIMIZERS = ("adam", "sgd")
SOLVERS = ("sgd", "exact")
DEFAULT_NUM_MODELS = 32
#: finalize overrides that only choose among the packed models (no data needed)
SELECTION_OVERRIDES = ("binary_classifier_model_selection_criteria", "multiclass_classifier_model_selection_criteria",
                       "target_recall", "target_precision", "f_beta")
SELECTION_DEFAULTS = dict(zip(SELECTION_OVERRIDES, ("accuracy", "accuracy", 0.8, 0.8, 1.0), strict=True))
#: bins of the validation-score histogram (uniform in sigmoid(score)) used to calibrate thresholds
HIST_BINS = 1024
#: hyperparameters of the first ("default") packed model when a spread is "auto"
DEFAULTS = {"learning_rate": {"adam": 0.01, "sgd": 0.1}, "l1": 0.0, "wd": 0.0, "positive_example_weight_mult": 1.0}
#: ranges of the "auto" spreads (log-uniform); regularisers are 0 for half of the models
SPREADS = {"learning_rate": {"adam": (1e-3, 0.1), "sgd": (1e-2, 1.0)}, "l1": (1e-7, 1e-3),
           "wd": (1e-7, 1e-2), "positive_example_weight_mult": (0.25, 4.0)}
_F32 = np.float32
#: floats per row block when only scoring: (rows x features) @ (features x models*outputs) in cache
SCORE_BLOCK_FLOATS = 1 << 15


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value == "auto"


# ============================================================================ the states
class _LinearParams:
    """The hyperparameters every linear state reads from ``params``."""

    params: dict[str, Any]

    @property
    def predictor_type(self) -> str:
        return self.params.get("predictor_type", "regressor")

    @property
    def regression(self) -> bool:
        return self.predictor_type == "regressor"

    @property
    def loss(self) -> str:
        loss = self.params.get("loss", "auto")
        return DEFAULT_LOSS[self.predictor_type] if _is_auto(loss) else loss


@register
class LinearStatsState(ClassCounts, _LinearParams, MomentsState):
    """The statistics pass: moments of the features (and the regression label) and the class counts."""

    algorithm = "linear_learner_stats"
    supervised = True
    array_names = ("shift", "offset", "m2", "class_counts")

    def _n_columns(self) -> int:
        return self.n_features + (1 if self.regression else 0)

    def _init_arrays(self) -> None:
        super()._init_arrays()
        self._init_class_counts()

    def _moment_columns(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> np.ndarray:
        if not self.regression:
            return X
        return np.column_stack([X, _numeric_target(y, "batch" if context is None else context.where)])

    def _update(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> None:
        if self.regression:  # the label is the last column of the moments
            _numeric_target(y, "batch" if context is None else context.where)
        else:
            self._count_classes(y, "batch" if context is None else context.where)
        super()._update(X, y, context)

    def _merge(self, other: LinearStatsState) -> None:
        super()._merge(other)
        self._merge_class_counts(other, exact=self.regression)

    def finalize(self) -> dict[str, Any]:
        return {"mean_": self.mean, "var_": self.variance, "classes_": display_classes(self.classes)}


@register
class LinearExactState(_LinearParams, MomentsState):
    """``solver="exact"``: the centred scatter matrix of ``[X, y]``; any ridge penalty at finalize.

    Examples
    --------
    >>> import numpy as np
    >>> from daskstate.state import Schema
    >>> s = LinearExactState(Schema(("a", "b")), {"predictor_type": "regressor", "solver": "exact"})
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> s = s.update(X, X @ [1.0, -2.0] + 3.0)
    >>> model = s.finalize()
    >>> np.round(model["coef_"], 6), round(model["intercept_"], 6)
    (array([ 1., -2.]), 3.0)
    """

    algorithm = "linear_learner_exact"
    supervised = True
    scatter = True

    def _n_columns(self) -> int:
        return self.n_features + 1

    def _moment_columns(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> np.ndarray:
        return np.column_stack([X, _numeric_target(y, "batch" if context is None else context.where)])

    def finalize(self, model: int | str | None = None, wd: float | None = None, **selection: Any) -> dict[str, Any]:
        """Ridge regression with penalty ``wd`` (default: the hyperparameter) from the scatter matrix."""
        unknown = sorted(set(selection) - set(SELECTION_OVERRIDES))
        if unknown:
            raise StateError(f"{unknown[0]} shapes training and cannot be changed without data; finalize accepts "
                             "model, wd (exact solver), the selection criteria, target_recall, target_precision "
                             "and f_beta")
        if model not in (None, "best", 0):
            raise StateError(f"model={model!r}: solver='exact' fits one model (model=0)")
        return self._finalize_exact(self._exact_wd(wd))

    def _exact_wd(self, wd: Any) -> float:
        if wd is None or _is_auto(wd):
            spec = self.params.get("wd", "auto")
            wd = 0.0 if _is_auto(spec) else spec
        try:
            wd = float(wd)
        except (TypeError, ValueError):
            raise StateError(f"wd must be a number >= 0, got {wd!r}") from None
        if not wd >= 0:
            raise StateError(f"wd must be >= 0, got {wd}")
        return wd

    def _finalize_exact(self, wd: float) -> dict[str, Any]:
        if self.n_rows == 0:
            raise StateError("the exact solver's state has seen no rows")
        d = self.n_features
        mean = self.shift + self.offset
        Sxx, Sxy, Syy = self.m2[:d, :d], self.m2[:d, d], float(self.m2[d, d])
        A = Sxx + wd * np.eye(d)
        try:
            w = np.linalg.solve(A, Sxy)
            if not np.all(np.isfinite(w)):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:  # singular (e.g. a constant or duplicated feature, wd=0)
            w = np.linalg.lstsq(A, Sxy, rcond=None)[0]
        intercept = float(mean[d] - mean[:d] @ w)
        sse = max(Syy - 2.0 * w @ Sxy + w @ Sxx @ w, 0.0)
        n = self.n_rows
        table = pd.DataFrame({"wd": [wd], "train_mse": [sse / n],
                              "train_r2": [1.0 - sse / Syy if Syy > 0 else np.nan], "selected": [True]})
        table.index.name = "model"
        return {"coef_": w, "intercept_": intercept, "models_": table, "best_model_": 0, "model_": 0,
                "loss_": "squared", "epochs_run_": 1, "n_epochs_": 1, "history_": [], "selection_on_": "training"}



@register
class LinearState(_LinearParams, SGDState):
    """Normaliser, packed linear models with their optimiser state; the trainer's snapshots and metrics.

    Shapes: ``M = num_models``, ``d`` features, ``K`` outputs (1, or the number
    of classes for multiclass).
    """

    algorithm = "linear_learner"
    parameters = ("coef", "bias")
    optimizer_arrays = ("coef_m", "coef_v", "bias_m", "bias_v", "step")
    model_metrics = ("hist", "correct", "sq", "abs")
    shared_metrics = ("t",)
    frozen_arrays = ("norm_mean", "norm_scale", "lr", "l1", "wd")
    model_arrays = ("norm_mean", "norm_scale", "coef", "bias", *optimizer_arrays, "lr", "l1", "wd", "pos_weight")

    @property
    def classes(self) -> list:
        if self.predictor_type == "multiclass_classifier" and self.params.get("num_classes"):
            return [float(c) for c in range(int(self.params["num_classes"]))]
        return list(self.extra_meta.get("classes", []))

    def _n_outputs(self) -> int:
        return len(self.classes) if self.predictor_type == "multiclass_classifier" else 1

    # ---- the arrays -------------------------------------------------------------
    def _init_model(self) -> None:
        d, M, K = self.n_features, self.num_models, self._n_outputs()
        p = d + (1 if self.regression else 0)
        self.norm_mean, self.norm_scale = np.zeros(p), np.ones(p)
        self.coef, self.coef_m, self.coef_v = (np.zeros((M, d, K)) for _ in range(3))
        self.bias, self.bias_m, self.bias_v = (np.zeros((M, K)) for _ in range(3))
        self.step = np.zeros(1)
        self.lr, self.l1, self.wd, self.pos_weight = (np.zeros(M) for _ in range(4))

    def _metric_shapes(self) -> dict[str, tuple[int, ...]]:
        M = self.num_models
        hist = (M, 2, HIST_BINS) if self.predictor_type == "binary_classifier" else (M, 0, 0)
        return {"hist": hist, "correct": (M,), "sq": (M,), "abs": (M,), "t": (2,)}

    def _start(self, statistics: LinearStatsState) -> None:
        """Freeze the normaliser from the statistics pass; spread the packed hyperparameters."""
        classes = self.classes
        if self.predictor_type == "binary_classifier" and len(classes) != 2:
            raise DataError(
                f"binary_classifier needs exactly 2 classes in the target; found {len(classes)}: "
                f"{display_classes(classes).tolist()[:10]}"
            )
        if self.predictor_type == "multiclass_classifier" and len(classes) < 2:
            raise DataError(f"multiclass_classifier needs at least 2 classes; found {classes}")
        self._init_arrays()  # shapes now that the classes are known
        scale = np.sqrt(np.maximum(statistics.m2 / statistics.n_rows, 0.0))
        self.norm_mean = statistics.shift + statistics.offset
        self.norm_scale = np.where(scale > 0, scale, 1.0)
        self.lr, self.l1, self.wd, self.pos_weight = self._spreads(self.num_models, statistics.class_counts)

    def _spreads(self, M: int, class_counts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-model hyperparameters: given values, or for "auto" a seeded log-uniform spread.

        Model 0 always gets the default value, so ``num_models=1`` is the default model.
        """
        rng = np.random.default_rng([int(self.params.get("seed", 0)), 0x11AE])
        opt = self.params.get("optimizer", "adam")
        out = []
        for name in ("learning_rate", "l1", "wd", "positive_example_weight_mult"):
            spec = self.params.get(name, "auto")
            lo_hi = SPREADS[name][opt] if name == "learning_rate" else SPREADS[name]
            draws = np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]), size=M))
            zeros = rng.random(M) < 0.5
            if name == "positive_example_weight_mult" and spec == "balanced":
                counts = class_counts
                values = np.full(M, counts[0] / max(counts[1], 1.0))
            elif _is_auto(spec):
                default = DEFAULTS[name][opt] if name == "learning_rate" else DEFAULTS[name]
                values = np.where(zeros, 0.0, draws) if name in ("l1", "wd") else draws
                values[0] = default
            else:
                values = np.full(M, float(spec))
            if name == "positive_example_weight_mult" and self.predictor_type != "binary_classifier":
                values = np.ones(M)
            out.append(values.astype(np.float64))
        return tuple(out)

    # ---- update: targets, scores, gradient steps ------------------------------------
    def _encode_target(self, y: np.ndarray, where: str) -> np.ndarray:
        """Targets as the loss wants them: standardised reals, 0/1, or class indices."""
        if self.regression:
            yv = _numeric_target(y, where)
            return ((yv - self.norm_mean[-1]) / self.norm_scale[-1]).astype(_F32)
        codes = encode_labels(self.classes, y, where)
        return codes.astype(_F32) if self.predictor_type == "binary_classifier" else codes

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        d = self.n_features
        Z = np.empty(X.shape, dtype=_F32)
        np.multiply(X - self.norm_mean[:d], 1.0 / self.norm_scale[:d], out=Z, casting="same_kind")
        return Z

    def _scores(self, Z: np.ndarray, coef: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Scores of every packed model for the rows ``Z``: one GEMM, shape (rows, M, K)."""
        M, d, K = coef.shape
        W = coef.transpose(1, 0, 2).reshape(d, M * K).astype(_F32)
        S = Z @ W
        S += bias.reshape(M * K).astype(_F32)
        return S.reshape(len(Z), M, K)

    def _score_rows(self) -> int:
        M, d, K = self.coef.shape
        return max(64, SCORE_BLOCK_FLOATS // (d + M * K))

    def _loss_kwargs(self) -> dict[str, float]:
        return {"huber_delta": float(self.params.get("huber_delta", 1.0)),
                "quantile": float(self.params.get("quantile", 0.5))}

    def _train(self, X: np.ndarray, t: np.ndarray, order: np.ndarray, monitor: bool) -> None:
        """Mini-batch SGD over the rows ``order``: every packed model in each matrix product.

        The loop works on a fused layout: weights and bias as one
        ``(features + 1) x (models * outputs)`` matrix ``W``, each mini-batch as
        ``rows x (features + 1)`` with a column of ones, so a step is two GEMMs
        (scores, gradient), the loss and one Adam update, whatever ``num_models``.
        Temporaries are bounded by a mini-batch.
        """
        M, d, K = self.coef.shape
        MK = M * K

        def fused(w: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([w.transpose(1, 0, 2).reshape(d, MK), b.reshape(1, MK)], axis=0)

        W, Wm, Wv = fused(self.coef, self.bias), fused(self.coef_m, self.bias_m), fused(self.coef_v, self.bias_v)
        lr, wd, l1 = (np.repeat(v, K)[None, :] for v in (self.lr, self.wd, self.l1))
        use_wd, use_l1 = bool(np.any(wd > 0)), bool(np.any(l1 > 0))
        pos_weight = None
        if self.predictor_type == "binary_classifier" and np.any(self.pos_weight != 1.0):
            pos_weight = self.pos_weight.astype(_F32)
        adam = self.params.get("optimizer", "adam") == "adam"
        b1, b2, eps = (float(self.params.get(k, v)) for k, v in (("beta_1", 0.9), ("beta_2", 0.999),
                                                                  ("epsilon", 1e-8)))
        loss, loss_kwargs = self.loss, self._loss_kwargs()
        mean, inv_scale = self.norm_mean[:d], 1.0 / self.norm_scale[:d]
        step = float(self.step[0])
        B = int(self.params.get("mini_batch_size", 1000))
        buf = np.empty((min(B, len(order)), d + 1), dtype=_F32)
        buf[:, d] = 1.0
        for rows in mini_batches(len(order), B):
            idx = order[rows]
            n = len(idx)
            Z = buf[:n]
            Xb = _rows(X, idx)
            Xb -= mean
            np.multiply(Xb, inv_scale, out=Z[:, :d], casting="same_kind")
            S = Z @ W.astype(_F32)
            tb = np.take(t, idx)
            G, L = loss_and_grad(loss, S.reshape(n, M, K), tb, value=monitor, **loss_kwargs)
            G = G.reshape(n, MK)
            if pos_weight is not None:
                G *= np.where(tb[:, None] == 1.0, pos_weight, _F32(1.0))
            g = (Z.T @ G).astype(np.float64)
            g *= 1.0 / n
            if use_wd:
                g[:d] += wd * W[:d]
            step += 1.0
            if adam:
                size = adam_step(W, g, Wm, Wv, step, lr, b1, b2, eps)
            else:
                W -= lr * g
                size = lr
            if use_l1:
                soft_threshold(W[:d], size[:d] * l1 if adam else lr * l1)
            if monitor:
                self.mon_loss += L.sum(axis=0, dtype=np.float64)
                self.mon_n += n

        def unfused(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return F[:d].reshape(d, M, K).transpose(1, 0, 2).copy(), F[d].reshape(M, K).copy()

        self.coef, self.bias = unfused(W)
        self.coef_m, self.bias_m = unfused(Wm)
        self.coef_v, self.bias_v = unfused(Wv)
        self.step = np.array([step])

    def _evaluate(self, X: np.ndarray, t: np.ndarray, idx: np.ndarray, params: dict[str, np.ndarray]) -> None:
        """Add the rows ``idx``'s loss and metrics under ``params`` (``coef``, ``bias``) to the ``ev_`` accumulators."""
        coef, bias = params["coef"], params["bias"]
        M = coef.shape[0]
        for rows in mini_batches(len(idx), self._score_rows()):
            sel = idx[rows]
            tb = np.take(t, sel)
            S = self._scores(self._standardise(_rows(X, sel)), coef, bias)
            _, L = loss_and_grad(self.loss, S, tb, grad=False, value=True, **self._loss_kwargs())
            self.ev_loss += L.sum(axis=0, dtype=np.float64)
            self.ev_n += len(tb)
            if self.predictor_type == "binary_classifier":
                p = sigmoid(S[..., 0])
                bins = np.minimum((p * HIST_BINS).astype(np.intp), HIST_BINS - 1)
                bins = np.maximum(bins, 0)
                cell = (np.arange(M)[None, :] * 2 + tb.astype(np.intp)[:, None]) * HIST_BINS + bins
                self.ev_hist += np.bincount(cell.ravel(), minlength=M * 2 * HIST_BINS).reshape(M, 2, HIST_BINS)
            elif self.predictor_type == "multiclass_classifier":
                self.ev_correct += (S.argmax(axis=-1) == tb[:, None]).sum(axis=0)
            else:
                R = S[..., 0].astype(np.float64) - tb[:, None]
                self.ev_sq += np.einsum("ij,ij->j", R, R)
                self.ev_abs += np.abs(R).sum(axis=0)
                tb64 = tb.astype(np.float64)
                self.ev_t += np.array([tb64.sum(), tb64 @ tb64])

    # ---- finalize ---------------------------------------------------------------
    def finalize(
        self,
        model: int | str | None = None,
        wd: float | None = None,
        binary_classifier_model_selection_criteria: str = "accuracy",
        multiclass_classifier_model_selection_criteria: str = "accuracy",
        target_recall: float = 0.8,
        target_precision: float = 0.8,
        f_beta: float = 1.0,
        **other: Any,
    ) -> dict[str, Any]:
        """The selected (or ``model=i``) packed model in raw feature units, and ``models_``.

        Parameters
        ----------
        model : int, "best" or None
            Which packed model; None/"best" picks by the selection criterion.
        wd : float, optional
            Ridge penalty; only with ``solver="exact"``, where any value is solved
            from the state without data.
        binary_classifier_model_selection_criteria, multiclass_classifier_model_selection_criteria : str
            Selection (and, for binary, threshold calibration) criterion.
        target_recall, target_precision, f_beta : float
            Parameters of the binary criteria.
        """
        if other:
            name = sorted(other)[0]
            raise StateError(
                f"{name} shapes training and cannot be changed without data; finalize accepts model, wd "
                "(exact solver), the selection criteria, target_recall, target_precision and f_beta"
            )
        if wd is not None and not _is_auto(wd):
            raise StateError(
                "wd can be changed without data only with solver='exact'; with SGD it shapes training"
            )
        M = self.coef.shape[0]
        table, selected, thresholds = self._models_table(
            binary_classifier_model_selection_criteria, multiclass_classifier_model_selection_criteria,
            target_recall, target_precision, f_beta,
        )
        if model is None or model == "best":
            chosen = selected
        else:
            if isinstance(model, bool) or not isinstance(model, int | np.integer) or not 0 <= int(model) < M:
                raise StateError(f"model must be 'best' or an index 0..{M - 1}, got {model!r}")
            chosen = int(model)
        table["selected"] = table.index == chosen
        params = self.chosen_params(chosen)
        coef, intercept = self._raw_coefficients(params["coef"], params["bias"])
        out: dict[str, Any] = {"models_": table, "best_model_": int(selected), "model_": chosen,
                               "loss_": self.loss, "epochs_run_": int(self.progress[0]),
                               "n_epochs_": int(self.progress[0]),
                               "history_": list(self.extra_meta.get("history", [])),
                               "selection_on_": self.extra_meta.get("selection_on", "none")}
        if self.regression:
            out.update(coef_=coef[:, 0], intercept_=float(intercept[0]))
        elif self.predictor_type == "binary_classifier":
            out.update(coef_=coef.T.copy(), intercept_=intercept.copy(), classes_=display_classes(self.classes),
                       threshold_=float(thresholds[chosen]))
        else:
            out.update(coef_=coef.T.copy(), intercept_=intercept.copy(), classes_=display_classes(self.classes))
        return out

    def _raw_coefficients(self, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fold the normaliser into ``W`` (d, K) and ``b`` (K,): coefficients of raw features."""
        d = self.n_features
        coef = W / self.norm_scale[:d, None]
        intercept = b - self.norm_mean[:d] @ coef
        if self.regression:
            coef = coef * self.norm_scale[-1]
            intercept = intercept * self.norm_scale[-1] + self.norm_mean[-1]
        return coef, intercept

    def selected(self) -> tuple[int, float, float]:
        """The model the fit's selection criterion picks now, its criterion value and validation loss.

        The criterion is the metric early stopping watches: accuracy (or another
        binary criterion) for classifiers, minus the loss for regression and
        ``loss_function``.
        """
        how = {**SELECTION_DEFAULTS, **self.extra_meta.get("selection", {})}
        table, model, _ = self._models_table(*(how[k] for k in SELECTION_OVERRIDES))
        loss = float(table["val_loss"].iloc[model]) if self.best_ev_n[0] > 0 else float(self.best_loss[model])
        column = {"binary_classifier": "criterion", "multiclass_classifier": "accuracy"}.get(self.predictor_type)
        by_loss = self.regression or how[SELECTION_OVERRIDES[0 if column == "criterion" else 1]] == "loss_function"
        if by_loss or column not in table:
            return model, -loss, loss
        return model, float(table[column].iloc[model]), loss

    def _models_table(self, binary_criterion: str, multiclass_criterion: str, target_recall: float,
                      target_precision: float, f_beta: float) -> tuple[pd.DataFrame, int, np.ndarray]:
        M = self.coef.shape[0]
        table = pd.DataFrame({"learning_rate": self.lr, "l1": self.l1, "wd": self.wd})
        if self.predictor_type == "binary_classifier":
            table["positive_example_weight_mult"] = self.pos_weight
        table["best_epoch"] = self.best_epoch.astype(int)
        table["epochs"] = int(self.progress[0])  # epochs trained (early stopping may end them all at once)
        thresholds = np.full(M, 0.5)
        n = float(self.best_ev_n[0])
        evaluated = n > 0
        val_loss = self.best_ev_loss / n if evaluated else np.full(M, np.nan)
        table["val_loss"] = val_loss
        rank_loss = np.where(np.isfinite(val_loss), val_loss, np.inf) if evaluated else \
            np.where(np.isfinite(self.best_loss), self.best_loss, np.inf)
        selected = int(np.argmin(rank_loss))
        if self.predictor_type == "binary_classifier" and evaluated:
            if binary_criterion not in BINARY_CRITERIA:
                raise StateError(f"binary_classifier_model_selection_criteria must be one of {BINARY_CRITERIA}, "
                                 f"got {binary_criterion!r}")
            metrics = threshold_metrics(self.best_ev_hist, binary_criterion, target_recall, target_precision,
                                         f_beta)
            thresholds = metrics["threshold"]
            for key, values in metrics.items():
                table[key] = values
            if binary_criterion != "loss_function":
                selected = argbest(metrics["criterion"], rank_loss)
        elif self.predictor_type == "multiclass_classifier" and evaluated:
            if multiclass_criterion not in MULTICLASS_CRITERIA:
                raise StateError(f"multiclass_classifier_model_selection_criteria must be one of "
                                 f"{MULTICLASS_CRITERIA}, got {multiclass_criterion!r}")
            table["accuracy"] = self.best_ev_correct / n
            if multiclass_criterion == "accuracy":
                selected = argbest(self.best_ev_correct / n, rank_loss)
        elif self.regression and evaluated:
            ys = self.norm_scale[-1]
            table["mse"] = self.best_ev_sq / n * ys**2
            table["mae"] = self.best_ev_abs / n * ys
            sst = self.best_ev_t[1] - self.best_ev_t[0] ** 2 / n
            table["r2"] = 1.0 - self.best_ev_sq / sst if sst > 0 else np.nan
        table.index.name = "model"
        return table, selected, thresholds

# ---- helpers of the state ---------------------------------------------------------------
def _rows(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``X[idx]`` as a new array: ``np.take`` (several times faster) when rows are contiguous."""
    return np.take(X, idx, axis=0) if X.flags.c_contiguous else X[idx]


def _numeric_target(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: the regression target must be numeric, got values of type {y.dtype}")
    return y.astype(np.float64, copy=False)



# ============================================================================ the estimator
class LinearLearner(SGDEstimator):
    """Linear regression and classification on data larger than memory, many models in one pass.

    ``num_models`` linear models, differing in learning rate, L1, L2 (``wd``) and
    (binary) positive-example weight, train at once by mini-batch SGD (Adam by
    default) on standardised features; partitions are processed in rounds of
    ``sync_every`` whose results are averaged (:func:`daskstate.engine.fold_rounds`).
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
        Stop after this many epochs without a relative gain of
        ``early_stopping_tolerance`` in the selected model's validation metric:
        the selection criterion (e.g. accuracy), or the loss for regression and
        ``loss_function`` (None: never stop early).
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
        Epochs actually trained (``epochs``, or fewer when early stopping saw the
        selected model's validation metric converge); also ``epochs_run_`` and the
        ``epochs`` column of ``models_``.
    history_ : list of dict
        Per epoch, the selected model, its validation loss and metric.
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
        from daskstate.algorithms.linear_models import linear_to_sklearn

        self._check_fitted()
        return linear_to_sklearn(self)


def _not_a_classifier(est: LinearLearner) -> str | None:
    return "it is a regressor" if est.predictor_type == "regressor" else None
