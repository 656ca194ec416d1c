"""The linear model: many linear models trained at once by SGD in synchronised rounds.

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
    - :class:`~daskstate.algorithms.linear_exact.LinearExactState`,
      ``solver="exact"``: the centred scatter matrix of ``[X, y]`` (one pass,
      exact, mergeable), in its own module.

The estimators (:class:`~daskstate.algorithms.linear_models.LinearLearner`,
``LinearClassifier``, ``LinearRegressor``) are in ``linear_models``; ``LinearLearner`` and
``LinearExactState`` remain importable from here.

``update``
    Per partition of a round, the trainer scores the validation rows with the
    round's anchor (its synchronised start) and hands the other rows, shuffled, to :meth:`LinearState._train`:
    mini-batches, each one tensor operation for all packed models (``rows x
    features @ features x (models * outputs)``). Features are standardised per
    mini-batch; the normalisation is folded into the coefficients at finalize, so
    predictions take raw features.

``merge``
    Statistics: Chan's formulas. Training: count-weighted averaging of the
    parameters and optimiser statistics (the rounds protocol); accumulators are summed.

``finalize``
    The model selected by the validation criterion (or ``model=i``), with its
    decision threshold calibrated on validation for binary classification.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from daskstate.errors import DataError, StateError
from daskstate.numerics import (
    BINARY_LOSSES,
    MULTICLASS_LOSSES,
    REGRESSION_LOSSES,
    adam_step,
    loss_and_grad,
    mini_batches,
    sigmoid,
    soft_threshold,
)
from daskstate.state import MomentsState, RoundContext, register
from daskstate.training import (
    ClassCounts,
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
SCORE_BLOCK_FLOATS = 1 << 17


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

    def _training_batch(self, X: np.ndarray, where: str) -> np.ndarray:
        """The partition as read, in either memory order: the validation hash reads it column by column
        (twice as fast on the column-major frames Parquet gives), :meth:`_train` makes its own row-major copy."""
        return X

    def _train(self, X: np.ndarray, t: np.ndarray, order: np.ndarray, monitor: bool,
               rng: np.random.Generator | None = None) -> None:
        """Mini-batch SGD over the rows ``order``: every packed model in each matrix product.

        The loop works on a fused layout: weights and bias as one
        ``(features + 1) x (models * outputs)`` matrix ``W``, each mini-batch as
        ``rows x (features + 1)`` with a column of ones, so a step is two GEMMs
        (scores, gradient), the loss and one Adam update, whatever ``num_models``.
        The rows are standardised once, in ``order``, into a float32 copy (half the
        partition's float64 size), so each mini-batch is a contiguous slice.
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
        X = np.ascontiguousarray(X)  # gathering shuffled rows: row-major is several times faster
        Z_all = np.empty((len(order), d + 1), dtype=_F32)
        Z_all[:, d] = 1.0
        for rows in mini_batches(len(order), self._score_rows()):
            Xb = _rows(X, order[rows])
            Xb -= mean
            np.multiply(Xb, inv_scale, out=Z_all[rows, :d], casting="same_kind")
        t_all = np.take(t, order)
        for rows in mini_batches(len(order), B):
            Z, tb = Z_all[rows], t_all[rows]
            n = len(tb)
            S = Z @ W.astype(_F32)
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
            if self.predictor_type == "binary_classifier":  # cell (model, class, bin of sigmoid(score))
                cell = sigmoid(S[..., 0])
                cell *= HIST_BINS
                cell = cell.astype(np.intp)
                np.clip(cell, 0, HIST_BINS - 1, out=cell)
                cell += np.arange(M)[None, :] * (2 * HIST_BINS)
                cell += tb.astype(np.intp)[:, None] * HIST_BINS
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
                               "n_epochs_": int(self.progress[0]), "n_rounds_": int(self.progress[3]),
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
        table["best_epoch"] = self.best_epoch  # epochs its snapshot trained (a fraction: rounds into an epoch)
        table["best_round"] = self.best_round.astype(int)
        table["epochs"] = int(self.progress[0])  # epochs run, the last maybe in part (early stopping ends all)
        table["rounds"] = int(self.progress[3])
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


def __getattr__(name: str) -> Any:
    """``LinearLearner`` and ``LinearExactState`` where they used to be (their modules import this one)."""
    if name == "LinearLearner":
        from daskstate.algorithms.linear_models import LinearLearner

        return LinearLearner
    if name == "LinearExactState":
        from daskstate.algorithms.linear_exact import LinearExactState

        return LinearExactState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
