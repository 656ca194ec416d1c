"""Linear learner: many linear models trained at once by SGD in synchronised rounds, or solved exactly.

Hyperparameters
    ``predictor_type`` (regressor, binary or multiclass classifier), the loss, the
    number of packed models and their spreads of learning rate, L1, L2 (``wd``)
    and positive-example weight, the optimiser (Adam or SGD), epochs, rounds
    (``sync_every``), early stopping and the validation split.

The state's arrays
    - normaliser: feature (and, for regression, label) moments from a first pass
      (``shift``/``offset``/``m2`` as in the StandardScaler), frozen into
      ``norm_mean``/``norm_scale`` when training starts;
    - ``num_models`` packed models in standardised space: ``coef`` of shape
      (models, features, outputs) and ``bias``, with Adam's moments and step count;
    - per model: learning rate, ``l1``, ``wd``, positive weight; the epoch's
      *anchor* (the parameters the epoch started from, being validated), and the
      best validated snapshot (``best_coef``, ``best_bias``, ``best_loss``) with its
      validation metrics (``best_ev_*``);
    - accumulators (``ev_*``): validation loss, a histogram of validation scores per
      class for threshold calibration, correct counts, squared and absolute errors.
    With ``solver="exact"`` the state is the centred scatter matrix of
    ``[X, y]`` (X^T X, X^T y, y^T y about the mean; count): one pass, exact, mergeable.

``update``
    A first pass folds moments (and classes). Then, per partition of a round: the
    validation rows (a seeded hash of the row: the same rows on every pass and
    worker) are scored with the epoch's anchor, so at the epoch's end its
    validation metrics are exact, with no pass of their own; the other rows,
    shuffled with a seed from (seed, epoch, partition), are consumed in
    mini-batches, each one tensor operation for all packed models (``rows x
    features @ features x (models * outputs)``). Features are standardised per
    mini-batch; the normalisation is folded into the coefficients at finalize, so
    predictions take raw features.

``merge``
    First pass: Chan's formulas. Training: count-weighted averaging of the
    parameters and optimiser statistics (the engine's rounds,
    :func:`daskstate.engine.fold_rounds`); accumulators are summed.

``finalize``
    The model selected by the validation criterion (or ``model=i``), with its
    decision threshold calibrated on validation for binary classification; with the
    exact solver any ridge penalty ``wd`` from the state, without data.
"""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

from daskstate import engine
from daskstate.data import DEFAULT_BATCH_ROWS, Input, as_input
from daskstate.errors import DataError, StateError
from daskstate.estimator import StateEstimator
from daskstate.numerics import (
    BINARY_LOSSES,
    MULTICLASS_LOSSES,
    REGRESSION_LOSSES,
    adam_step,
    batch_moments,
    hash_unit,
    loss_and_grad,
    merge_moments,
    mini_batches,
    rebase,
    sigmoid,
    soft_threshold,
    softmax,
)
from daskstate.state import RoundContext, Schema, State, register

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


# ============================================================================ the state
@register
class LinearState(State):
    """Normaliser, packed linear models with their optimiser state, and validation metrics.

    Phases (``extra_meta["phase"]``): ``"stats"`` (first pass; the whole fit for
    ``solver="exact"``), ``"sgd"`` (epochs of rounds), ``"eval"`` (a scoring pass,
    only when the epochs ran out before early stopping, or without validation
    rows), ``"done"``. The arrays are listed in the module docstring; their shapes
    are ``M = num_models``, ``d`` features, ``K`` outputs (1, or the number of
    classes for multiclass).

    Examples
    --------
    >>> import numpy as np
    >>> from daskstate.state import Schema
    >>> params = {"predictor_type": "regressor", "solver": "exact", "num_models": 1}
    >>> s = LinearState(Schema(("a", "b")), params)
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> s = s.update(X, X @ [1.0, -2.0] + 3.0)
    >>> model = s.finalize()
    >>> np.round(model["coef_"], 6), round(model["intercept_"], 6)
    (array([ 1., -2.]), 3.0)
    """

    algorithm = "linear_learner"
    supervised = True
    array_names = (
        "shift", "offset", "m2", "class_counts", "norm_mean", "norm_scale",
        "coef", "bias", "coef_m", "coef_v", "bias_m", "bias_v", "step",
        "lr", "l1", "wd", "pos_weight",
        "anchor_coef", "anchor_bias", "best_coef", "best_bias", "best_loss", "best_epoch", "progress",
        "mon_loss", "mon_n", "trained",
        "ev_loss", "ev_n", "ev_hist", "ev_correct", "ev_sq", "ev_abs", "ev_t",
        "best_ev_loss", "best_ev_n", "best_ev_hist", "best_ev_correct", "best_ev_sq", "best_ev_abs", "best_ev_t",
    )
    #: validation accumulators: per packed model, except the row count and target sums (``_n``, ``_t``)
    EVAL_ARRAYS = ("ev_loss", "ev_n", "ev_hist", "ev_correct", "ev_sq", "ev_abs", "ev_t")

    # ---- hyperparameters --------------------------------------------------------
    @property
    def predictor_type(self) -> str:
        return self.params.get("predictor_type", "regressor")

    @property
    def regression(self) -> bool:
        return self.predictor_type == "regressor"

    @property
    def exact(self) -> bool:
        return self.params.get("solver", "sgd") == "exact"

    @property
    def loss(self) -> str:
        loss = self.params.get("loss", "auto")
        return DEFAULT_LOSS[self.predictor_type] if _is_auto(loss) else loss

    @property
    def phase(self) -> str:
        return self.extra_meta.get("phase", "stats")

    @property
    def classes(self) -> list:
        if self.predictor_type == "multiclass_classifier" and self.params.get("num_classes"):
            return [float(c) for c in range(int(self.params["num_classes"]))]
        return list(self.extra_meta.get("classes", []))

    def _n_outputs(self) -> int:
        if self.predictor_type != "multiclass_classifier":
            return 1
        if self.phase != "stats" or self.params.get("num_classes"):
            return len(self.classes)
        return 0

    # ---- the arrays -------------------------------------------------------------
    def _init_arrays(self) -> None:
        d = self.n_features
        M = int(self.params.get("num_models", 1))
        K = self._n_outputs()
        p = d + (1 if self.regression else 0)
        self.shift = np.zeros(p)
        self.offset = np.zeros(p)
        self.m2 = np.zeros((p, p)) if self.exact else np.zeros(p)
        self.class_counts = np.zeros(len(self.classes) if self.params.get("num_classes") else 0)
        self.norm_mean = np.zeros(p)
        self.norm_scale = np.ones(p)
        for name in ("coef", "coef_m", "coef_v", "anchor_coef", "best_coef"):
            setattr(self, name, np.zeros((M, d, K)))
        for name in ("bias", "bias_m", "bias_v", "anchor_bias", "best_bias"):
            setattr(self, name, np.zeros((M, K)))
        self.step = np.zeros(1)
        for name in ("lr", "l1", "wd", "pos_weight", "mon_loss"):
            setattr(self, name, np.zeros(M))
        self.best_loss = np.full(M, np.inf)
        self.best_epoch = np.full(M, -1.0)
        self.progress = np.array([0.0, np.inf, 0.0])  # epochs run, best monitored loss, epochs without gain
        self.mon_n = np.zeros(1)
        self.trained = np.zeros(1)
        hist = (M, 2, HIST_BINS) if self.predictor_type == "binary_classifier" else (M, 0, 0)
        for prefix in ("ev_", "best_ev_"):
            for name in ("loss", "correct", "sq", "abs"):
                setattr(self, prefix + name, np.zeros(M))
            setattr(self, prefix + "n", np.zeros(1))
            setattr(self, prefix + "hist", np.zeros(hist))
            setattr(self, prefix + "t", np.zeros(2))
        self.extra_meta.setdefault("phase", "stats")

    # rounds protocol (daskstate.engine.fold_rounds): the evaluation pass changes no averaged array
    # and trains no row (weight 0), so one declaration serves every pass
    round_averaged = ("coef", "bias", "coef_m", "coef_v", "bias_m", "bias_v", "step")
    round_summed = ("mon_loss", "mon_n", "ev_loss", "ev_n", "ev_hist", "ev_correct", "ev_sq", "ev_abs", "ev_t",
                    "trained")
    round_weight = "trained"
    blas_threads = 1

    # ---- update -----------------------------------------------------------------
    def _update(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> None:
        self._context = context  # for error messages and seeds of this call only
        try:
            self._update_phase(X, y)
        finally:
            self._context = None

    def _update_phase(self, X: np.ndarray, y: np.ndarray | None) -> None:
        phase = self.phase
        if phase == "stats":
            self._update_stats(X, y)
        elif phase == "sgd":
            with np.errstate(over="ignore", invalid="ignore"):
                self._update_sgd(X, y)
        elif phase == "eval":
            with np.errstate(over="ignore", invalid="ignore"):
                self._update_eval(X, y)
        else:
            raise StateError(
                "this linear-learner state has finished training; call resume_training() to train it on more data"
            )

    def _where(self) -> str:
        ctx = self._context
        return "batch" if ctx is None else ctx.where

    # first pass: moments and classes
    def _update_stats(self, X: np.ndarray, y: np.ndarray) -> None:
        yv = None
        if self.regression:  # the label is the last column of the moments
            yv = _numeric_target(y, self._where())
        else:
            self._count_classes(y)
        if self.n_rows == 0:
            self.shift = X[0].copy() if yv is None else np.append(X[0], yv[0])
        n = self.n_rows
        for rows in mini_batches(len(X)):
            A = X[rows] if yv is None else np.column_stack([X[rows], yv[rows]])
            nb, off, m2b = batch_moments(A, self.shift, scatter=self.exact)
            n, self.offset, self.m2 = merge_moments(n, self.offset, self.m2, nb, off, m2b)

    def _count_classes(self, y: np.ndarray) -> None:
        labels = _label_array(y, self._where())
        if self.params.get("num_classes"):
            C = int(self.params["num_classes"])
            if labels.dtype == object:
                raise DataError(f"{self._where()}: with num_classes={C} the labels must be class indices "
                                f"0..{C - 1}, got strings such as {labels[:3].tolist()}")
            bad = ~np.isin(labels, np.arange(C, dtype=np.float64))
            if bad.any():
                shown = pd.unique(labels[bad])[:5].tolist()
                raise DataError(
                    f"{self._where()}: {int(bad.sum())} label(s) are not class indices 0..{C - 1} "
                    f"(num_classes={C}), e.g. {shown}"
                )
            self.class_counts = self.class_counts + np.bincount(labels.astype(np.intp), minlength=C)
            return
        values, counts = np.unique(labels, return_counts=True)
        old = self.extra_meta.get("classes", [])
        merged = _sorted_union(old, _jsonable_classes(values), self._where())
        self.class_counts = _remap_counts(old, self.class_counts, merged) + _remap_counts(
            _jsonable_classes(values), counts.astype(np.float64), merged)
        self.extra_meta["classes"] = merged

    # targets as the loss wants them: standardised reals, 0/1, or class indices
    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        if self.regression:
            yv = _numeric_target(y, self._where())
            return ((yv - self.norm_mean[-1]) / self.norm_scale[-1]).astype(_F32)
        labels = _label_array(y, self._where())
        classes = np.asarray(self.classes, dtype=labels.dtype if labels.dtype == object else np.float64)
        if labels.dtype == object and classes.dtype != object or labels.dtype != object and classes.dtype == object:
            raise DataError(f"{self._where()}: labels of type {labels.dtype} but the classes are {self.classes[:5]}")
        codes = np.searchsorted(classes, labels)
        codes = np.minimum(codes, len(classes) - 1)
        unseen = classes[codes] != labels
        if unseen.any():
            shown = pd.unique(labels[unseen])[:5].tolist()
            raise DataError(
                f"{self._where()}: {int(unseen.sum())} row(s) with class(es) {shown} not seen when the model "
                f"was first fitted (classes: {_display_classes(self.classes).tolist()})"
            )
        if self.predictor_type == "binary_classifier":
            return codes.astype(_F32)
        return codes.astype(np.intp)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        d = self.n_features
        Z = np.empty(X.shape, dtype=_F32)
        np.multiply(X - self.norm_mean[:d], 1.0 / self.norm_scale[:d], out=Z, casting="same_kind")
        return Z

    def _validation_mask(self, X: np.ndarray) -> np.ndarray | None:
        """Which rows are validation rows: a seeded hash of each row's values, in bounded blocks."""
        frac = float(self.params.get("validation_fraction", 0.0))
        if frac <= 0:
            return None
        seed = int(self.params.get("seed", 0))
        mask = np.empty(len(X), dtype=bool)
        for rows in mini_batches(len(X)):
            mask[rows] = hash_unit(X[rows], seed) < frac
        return mask

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

    # training: one partition of a round
    def _update_sgd(self, X: np.ndarray, y: np.ndarray) -> None:
        ctx = self._context or RoundContext(0, 0, 0, None, int(self.params.get("seed", 0)))
        t = self._encode_target(y)
        val = self._validation_mask(X)
        if val is not None:
            held_out = np.flatnonzero(val)
            if len(held_out):  # exact validation metrics of the epoch's anchor (its start parameters)
                self._evaluate(X, t, held_out, self.anchor_coef, self.anchor_bias)
            train = np.flatnonzero(~val)
        else:
            train = np.arange(len(X))
        order = ctx.rng().permutation(train)
        self._train(X, t, order, monitor=self.params.get("validation", "split") == "none")
        self.trained += len(order)

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

    # the selection pass: validation metrics of chosen parameters of every packed model
    def _update_eval(self, X: np.ndarray, y: np.ndarray) -> None:
        how = self.extra_meta.get("eval", {})
        t = self._encode_target(y)
        val = self._validation_mask(X) if how.get("rows") == "validation" else None
        idx = np.flatnonzero(val) if val is not None else np.arange(len(X))
        which = how.get("params", "anchor")
        coef, bias = {"best": (self.best_coef, self.best_bias), "current": (self.coef, self.bias),
                      "anchor": (self.anchor_coef, self.anchor_bias)}[which]
        self._evaluate(X, t, idx, coef, bias)

    def _evaluate(self, X: np.ndarray, t: np.ndarray, idx: np.ndarray, coef: np.ndarray, bias: np.ndarray) -> None:
        """Add the rows ``idx``'s loss and metrics under ``coef``/``bias`` to the ``ev_`` accumulators."""
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

    # ---- merge ------------------------------------------------------------------
    def _merge(self, other: LinearState) -> None:
        if self.phase != other.phase:
            raise StateError(f"cannot merge a linear-learner state in phase {other.phase!r} into one in {self.phase!r}")
        if self.phase == "stats":
            off_b = rebase(other.offset, other.shift, self.shift)
            _, self.offset, self.m2 = merge_moments(self.n_rows, self.offset, self.m2, other.n_rows, off_b, other.m2)
            if not self.params.get("num_classes") and not self.regression:
                mine, theirs = self.extra_meta.get("classes", []), other.extra_meta.get("classes", [])
                merged = _sorted_union(mine, theirs, "merge")
                self.class_counts = (_remap_counts(mine, self.class_counts, merged)
                                     + _remap_counts(theirs, other.class_counts, merged))
                self.extra_meta["classes"] = merged
            else:
                self.class_counts = self.class_counts + other.class_counts
            return
        same = (np.array_equal(self.norm_mean, other.norm_mean) and np.array_equal(self.norm_scale, other.norm_scale)
                and self.classes == other.classes and np.array_equal(self.lr, other.lr)
                and np.array_equal(self.l1, other.l1) and np.array_equal(self.wd, other.wd))
        if not same:
            raise StateError(
                "cannot merge trained linear-learner states with different normalisers, classes or packed "
                "hyperparameters: only states trained from the same first pass average meaningfully"
            )
        frac = other.n_rows / (self.n_rows + other.n_rows)
        for name in self.round_averaged or ("coef", "bias", "coef_m", "coef_v", "bias_m", "bias_v", "step"):
            a = getattr(self, name)
            setattr(self, name, a + (getattr(other, name) - a) * frac)
        for name in self.round_summed:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    # ---- phases -----------------------------------------------------------------
    def start_training(self) -> LinearState:
        """A copy ready for SGD: normaliser frozen from the first pass, models initialised at 0."""
        if self.phase != "stats":
            raise StateError(f"start_training needs a first-pass state, this one is in phase {self.phase!r}")
        if self.exact:
            raise StateError("solver='exact' has no training phase: its first pass is the fit")
        if self.n_rows == 0:
            raise DataError("the linear learner needs rows to fit; the input had none")
        new = self.copy()
        classes = self.classes
        if self.predictor_type == "binary_classifier" and len(classes) != 2:
            raise DataError(
                f"binary_classifier needs exactly 2 classes in the target; found {len(classes)}: "
                f"{_display_classes(classes).tolist()[:10]}"
            )
        if self.predictor_type == "multiclass_classifier" and len(classes) < 2:
            raise DataError(f"multiclass_classifier needs at least 2 classes; found {classes}")
        var = self.m2 / self.n_rows
        scale = np.sqrt(np.maximum(var, 0.0))
        new.norm_mean = self.shift + self.offset
        new.norm_scale = np.where(scale > 0, scale, 1.0)
        new.extra_meta["phase"] = "sgd"
        new.extra_meta["history"] = []
        new._init_training()
        return new

    def _init_training(self) -> None:
        M, d, K = int(self.params["num_models"]), self.n_features, self._n_outputs()
        for name in ("coef", "coef_m", "coef_v", "anchor_coef", "best_coef"):
            setattr(self, name, np.zeros((M, d, K)))
        for name in ("bias", "bias_m", "bias_v", "anchor_bias", "best_bias"):
            setattr(self, name, np.zeros((M, K)))
        self.step = np.zeros(1)
        self.lr, self.l1, self.wd, self.pos_weight = self._spreads(M)
        self.progress = np.zeros(3)
        self._reset_selection()

    def _reset_selection(self) -> None:
        """Forget the best snapshots' scores and every accumulator (a new fit or partial_fit)."""
        self.best_loss = np.full_like(self.best_loss, np.inf)
        self.best_epoch = np.full_like(self.best_epoch, -1.0)
        self.progress = np.array([self.progress[0], np.inf, 0.0])
        for name in ("mon_loss", "mon_n", *self.EVAL_ARRAYS, *("best_" + n for n in self.EVAL_ARRAYS)):
            setattr(self, name, np.zeros_like(getattr(self, name)))
        self.extra_meta["early_stopped"] = False

    def _spreads(self, M: int) -> tuple[np.ndarray, ...]:
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
                counts = self.class_counts
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

    def end_epoch(self, patience: int | None, tolerance: float, evaluated_epochs: int | None = None) -> bool:
        """Close an epoch in place: keep each model's best snapshot, count epochs without gain.

        With validation rows, the ``ev_`` accumulators hold the exact validation
        metrics of the epoch's *anchor* (its parameters when the epoch started, or
        the ones a callback evaluated, trained ``evaluated_epochs`` epochs); a model
        whose anchor beats its best snapshot keeps the anchor and its metrics.
        Without validation rows, the running training loss of the epoch judges the
        current parameters. Then the current parameters become the next anchor.

        Returns True when the best loss over all models has not improved by a
        relative ``tolerance`` for ``patience`` epochs (early stopping).
        """
        epoch = int(self.progress[0])
        if self.ev_n[0] > 0:
            trained = epoch if evaluated_epochs is None else int(evaluated_epochs)
            loss = self._absorb(self.anchor_coef, self.anchor_bias, trained)
        elif self.mon_n[0] > 0:
            trained = epoch + 1
            loss = self.mon_loss / self.mon_n[0]
            self._keep_better(loss, self.coef, self.bias, trained)
        else:  # nothing to judge by: the latest parameters are the best we know
            trained, loss = epoch + 1, None
            self.best_coef, self.best_bias = self.coef.copy(), self.bias.copy()
            self.best_epoch[:] = trained
        entry: dict[str, Any] = {"epoch": epoch, "evaluated_epochs": trained, "loss": None, "model": None}
        if loss is not None:
            finite = np.isfinite(loss)
            overall = float(loss[finite].min()) if finite.any() else math.inf
            best = float(self.progress[1])
            if overall < best - tolerance * abs(best) if math.isfinite(best) else math.isfinite(overall):
                self.progress[1] = overall
                self.progress[2] = 0.0
            else:
                self.progress[2] += 1.0
            if finite.any():
                entry.update(loss=overall, model=int(np.argmin(np.where(finite, loss, np.inf))))
        self.extra_meta["history"] = [*self.extra_meta.get("history", []), entry]
        self.anchor_coef, self.anchor_bias = self.coef.copy(), self.bias.copy()
        for name in ("mon_loss", "mon_n", *self.EVAL_ARRAYS):
            getattr(self, name)[...] = 0.0
        self.progress[0] += 1.0
        stop = bool(patience) and bool(self.progress[2] >= int(patience))
        self.extra_meta["early_stopped"] = stop
        return stop

    def _keep_better(self, loss: np.ndarray, coef: np.ndarray, bias: np.ndarray, trained: int) -> np.ndarray:
        better = loss < self.best_loss
        self.best_coef[better] = coef[better]
        self.best_bias[better] = bias[better]
        self.best_loss[better] = loss[better]
        self.best_epoch[better] = trained
        return better

    def _absorb(self, coef: np.ndarray, bias: np.ndarray, trained: int) -> np.ndarray:
        """Per-model validation loss of ``coef``/``bias`` from ``ev_``; better models keep them and their metrics."""
        loss = self.ev_loss / self.ev_n[0]
        better = self._keep_better(loss, coef, bias, trained)
        for name in ("ev_loss", "ev_hist", "ev_correct", "ev_sq", "ev_abs"):
            getattr(self, "best_" + name)[better] = getattr(self, name)[better]
        self.best_ev_n, self.best_ev_t = self.ev_n.copy(), self.ev_t.copy()  # the same rows every time
        return loss

    def begin_eval(self, params: str = "anchor", rows: str = "validation") -> LinearState:
        """A copy that scores ``params`` ("anchor", "best" or "current") of every model on ``rows``.

        ``rows`` is "validation" (the hashed rows) or "all". Fold it with
        :func:`daskstate.engine.fold_rounds`, then :meth:`absorb_evaluation`.
        """
        if self.phase not in ("sgd", "eval", "done"):
            raise StateError(f"begin_eval needs a trained state, this one is in phase {self.phase!r}")
        if params not in ("anchor", "best", "current") or rows not in ("validation", "all"):
            raise ValueError(f"begin_eval: params={params!r}, rows={rows!r}")
        new = self.copy()
        for name in self.EVAL_ARRAYS:
            setattr(new, name, np.zeros_like(getattr(self, name)))
        new.extra_meta["phase"] = "eval"
        new.extra_meta["eval"] = {"params": params, "rows": rows}
        return new

    def absorb_evaluation(self) -> LinearState:
        """After an evaluation pass: the anchor competes for best snapshots; "best" gets its metrics."""
        new = self.copy()
        which = self.extra_meta.get("eval", {}).get("params")
        if self.ev_n[0] > 0:
            if which == "anchor":
                new._absorb(self.anchor_coef, self.anchor_bias, int(self.progress[0]))
            elif which == "best":
                for name in self.EVAL_ARRAYS:
                    setattr(new, "best_" + name, getattr(self, name).copy())
        for name in self.EVAL_ARRAYS:
            setattr(new, name, np.zeros_like(getattr(self, name)))
        new.extra_meta["phase"] = "sgd"
        return new

    def finish(self, selection_on: str) -> LinearState:
        """A finished copy; ``selection_on`` says which rows the selection metrics come from."""
        new = self.copy()
        new.extra_meta["phase"] = "done"
        new.extra_meta["selection_on"] = selection_on
        return new

    def resume_training(self) -> LinearState:
        """A trained copy that continues SGD (``partial_fit``) from its best snapshots."""
        if self.phase not in ("done", "sgd"):
            raise StateError(f"resume_training needs a trained state, this one is in phase {self.phase!r}")
        new = self.copy()
        if self.phase == "done":
            new.coef, new.bias = self.best_coef.copy(), self.best_bias.copy()
        new.anchor_coef, new.anchor_bias = new.coef.copy(), new.bias.copy()
        new._reset_selection()
        new.extra_meta["phase"] = "sgd"
        return new

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
        if self.exact:
            if model not in (None, "best", 0):
                raise StateError(f"model={model!r}: solver='exact' fits one model (model=0)")
            return self._finalize_exact(self._exact_wd(wd))
        if wd is not None and not _is_auto(wd):
            raise StateError(
                "wd can be changed without data only with solver='exact'; with SGD it shapes training"
            )
        if self.phase == "stats":
            raise StateError("this linear-learner state has not been trained yet (first pass only)")
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
        snapshot = self.best_epoch[chosen] >= 0  # else: mid-training, nothing validated yet
        W, b = (self.best_coef[chosen], self.best_bias[chosen]) if snapshot else (self.coef[chosen], self.bias[chosen])
        coef, intercept = self._raw_coefficients(W, b)
        out: dict[str, Any] = {"models_": table, "best_model_": int(selected), "model_": chosen,
                               "loss_": self.loss, "epochs_run_": int(self.progress[0]),
                               "history_": list(self.extra_meta.get("history", [])),
                               "selection_on_": self.extra_meta.get("selection_on", "none")}
        if self.regression:
            out.update(coef_=coef[:, 0], intercept_=float(intercept[0]))
        elif self.predictor_type == "binary_classifier":
            out.update(coef_=coef.T.copy(), intercept_=intercept.copy(), classes_=_display_classes(self.classes),
                       threshold_=float(thresholds[chosen]))
        else:
            out.update(coef_=coef.T.copy(), intercept_=intercept.copy(), classes_=_display_classes(self.classes))
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

    def _models_table(self, binary_criterion: str, multiclass_criterion: str, target_recall: float,
                      target_precision: float, f_beta: float) -> tuple[pd.DataFrame, int, np.ndarray]:
        M = self.coef.shape[0]
        table = pd.DataFrame({"learning_rate": self.lr, "l1": self.l1, "wd": self.wd})
        if self.predictor_type == "binary_classifier":
            table["positive_example_weight_mult"] = self.pos_weight
        table["best_epoch"] = self.best_epoch.astype(int)
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
            metrics = _threshold_metrics(self.best_ev_hist, binary_criterion, target_recall, target_precision,
                                         f_beta)
            thresholds = metrics["threshold"]
            for key, values in metrics.items():
                table[key] = values
            if binary_criterion != "loss_function":
                selected = _argbest(metrics["criterion"], rank_loss)
        elif self.predictor_type == "multiclass_classifier" and evaluated:
            if multiclass_criterion not in MULTICLASS_CRITERIA:
                raise StateError(f"multiclass_classifier_model_selection_criteria must be one of "
                                 f"{MULTICLASS_CRITERIA}, got {multiclass_criterion!r}")
            table["accuracy"] = self.best_ev_correct / n
            if multiclass_criterion == "accuracy":
                selected = _argbest(self.best_ev_correct / n, rank_loss)
        elif self.regression and evaluated:
            ys = self.norm_scale[-1]
            table["mse"] = self.best_ev_sq / n * ys**2
            table["mae"] = self.best_ev_abs / n * ys
            sst = self.best_ev_t[1] - self.best_ev_t[0] ** 2 / n
            table["r2"] = 1.0 - self.best_ev_sq / sst if sst > 0 else np.nan
        table.index.name = "model"
        return table, selected, thresholds

    # exact solver
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
                "loss_": "squared", "epochs_run_": 1, "history_": [], "selection_on_": "training"}


# ---- helpers of the state ---------------------------------------------------------------
def _rows(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``X[idx]`` as a new array: ``np.take`` (several times faster) when rows are contiguous."""
    return np.take(X, idx, axis=0) if X.flags.c_contiguous else X[idx]


def _numeric_target(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: the regression target must be numeric, got values of type {y.dtype}")
    return y.astype(np.float64, copy=False)


def _label_array(y: np.ndarray, where: str) -> np.ndarray:
    """Class labels as float64 (numbers) or an object array of str."""
    if y.dtype.kind in "biuf":
        return y.astype(np.float64, copy=False)
    kind = pd.api.types.infer_dtype(y, skipna=False)
    if kind in ("string",):
        return y.astype(object)
    if kind in ("integer", "floating", "mixed-integer-float", "boolean"):
        return y.astype(np.float64)
    raise DataError(f"{where}: class labels must be all numbers or all strings, got {kind!r} values")


def _jsonable_classes(values: np.ndarray) -> list:
    return [str(v) for v in values] if values.dtype == object else [float(v) for v in values]


def _sorted_union(a: list, b: list, where: str) -> list:
    if a and b and isinstance(a[0], str) != isinstance(b[0], str):
        raise DataError(f"{where}: class labels mix numbers and strings ({a[:3]} and {b[:3]})")
    return sorted(set(a) | set(b))


def _remap_counts(classes: list, counts: np.ndarray, merged: list) -> np.ndarray:
    out = np.zeros(len(merged))
    if classes:
        pos = {c: i for i, c in enumerate(merged)}
        out[[pos[c] for c in classes]] = counts
    return out


def _display_classes(classes: list) -> np.ndarray:
    """Classes as users expect them: int64 when all numbers are integers, else float or str."""
    if classes and isinstance(classes[0], str):
        return np.asarray(classes, dtype=object)
    arr = np.asarray(classes, dtype=np.float64)
    if len(arr) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2**53):
        return arr.astype(np.int64)
    return arr


def _argbest(score: np.ndarray, loss: np.ndarray) -> int:
    """Index of the highest ``score`` (NaN counts as lowest); ties go to the lower ``loss``."""
    score = np.where(np.isfinite(score), score, -np.inf)
    return int(np.lexsort((loss, -score))[0])


def _threshold_metrics(hist: np.ndarray, criterion: str, target_recall: float, target_precision: float,
                       beta: float) -> dict[str, np.ndarray]:
    """Per model: the probability threshold that best meets ``criterion`` on the validation histogram.

    ``hist`` (M, 2, bins) counts validation rows by class (negative, positive) and
    bin of sigmoid(score). Candidate thresholds are the bin edges ``j / bins``;
    a row is predicted positive when its probability is >= the threshold.
    """
    M, _, nb = hist.shape
    neg, pos = hist[:, 0, :], hist[:, 1, :]
    # rows at or above edge j, for j = 0..nb
    tp = np.concatenate([np.cumsum(pos[:, ::-1], axis=1)[:, ::-1], np.zeros((M, 1))], axis=1)
    fp = np.concatenate([np.cumsum(neg[:, ::-1], axis=1)[:, ::-1], np.zeros((M, 1))], axis=1)
    P, N = tp[:, :1], fp[:, :1]
    fn, tn = P - tp, N - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = (tp + tn) / np.maximum(P + N, 1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = np.where(P > 0, tp / np.maximum(P, 1), 0.0)
        b2 = beta * beta
        denom = (1 + b2) * tp + b2 * fn + fp
        fbeta = np.where(denom > 0, (1 + b2) * tp / np.where(denom > 0, denom, 1), 0.0)
    edges = np.arange(nb + 1) / nb
    middle = np.abs(edges - 0.5)  # ties: the threshold nearest 0.5
    if criterion == "accuracy":
        value = accuracy
    elif criterion == "f_beta":
        value = fbeta
    elif criterion == "precision_at_target_recall":
        value = np.where(recall >= target_recall, precision, -1.0 + recall)
    elif criterion == "recall_at_target_precision":
        value = np.where(precision >= target_precision, recall, -1.0 + precision)
    else:  # loss_function: the usual threshold
        value = np.where(np.arange(nb + 1) == nb // 2, 1.0, 0.0)[None, :].repeat(M, axis=0)
    order = np.lexsort((np.broadcast_to(middle, value.shape), -value), axis=1)
    j = order[:, 0]
    rows = np.arange(M)
    crit = value[rows, j] if criterion != "loss_function" else accuracy[rows, j]
    return {"threshold": edges[j], "accuracy": accuracy[rows, j], "precision": precision[rows, j],
            "recall": recall[rows, j], "f_beta": fbeta[rows, j], "criterion": crit}


# ============================================================================ the estimator
class LinearLearner(StateEstimator):
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
        ``early_stopping_tolerance`` in the best model's validation loss (None: never).
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
    epochs_run_ : int
    history_ : list of dict
        Per epoch, the best monitored loss and the model with it.
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
    def _validate_params(self) -> None:
        super()._validate_params()

        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        def number(v: Any) -> bool:
            return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) \
                and math.isfinite(float(v))

        def integer(v: Any) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        check("predictor_type", self.predictor_type in PREDICTOR_TYPES, f"one of {PREDICTOR_TYPES}")
        losses = LOSSES[self.predictor_type]
        check("loss", _is_auto(self.loss) or self.loss in losses, f"'auto' or one of {losses} for a "
              f"{self.predictor_type}")
        check("solver", self.solver in SOLVERS, f"one of {SOLVERS}")
        if self.solver == "exact":
            check("solver", self.predictor_type == "regressor" and (_is_auto(self.loss) or self.loss == "squared"),
                  "'sgd' unless predictor_type='regressor' with squared loss ('exact' solves least squares)")
        check("num_classes", self.num_classes is None or (integer(self.num_classes) and self.num_classes >= 2),
              "None or an integer >= 2")
        check("num_models", _is_auto(self.num_models) or (integer(self.num_models) and self.num_models >= 1),
              "'auto' or an integer >= 1")
        if self.solver == "exact":
            check("num_models", _is_auto(self.num_models) or self.num_models == 1, "'auto' or 1 with solver='exact'")
        check("learning_rate", _is_auto(self.learning_rate) or (number(self.learning_rate) and self.learning_rate > 0),
              "'auto' or a number > 0")
        for name in ("l1", "wd"):
            v = getattr(self, name)
            check(name, _is_auto(v) or (number(v) and v >= 0), "'auto' or a number >= 0")
        pw = self.positive_example_weight_mult
        check("positive_example_weight_mult", pw in ("auto", "balanced") or (number(pw) and pw > 0),
              "'auto', 'balanced' or a number > 0")
        check("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}")
        check("beta_1", number(self.beta_1) and 0 <= self.beta_1 < 1, "in [0, 1)")
        check("beta_2", number(self.beta_2) and 0 <= self.beta_2 < 1, "in [0, 1)")
        check("epsilon", number(self.epsilon) and self.epsilon > 0, "a number > 0")
        check("mini_batch_size", integer(self.mini_batch_size) and self.mini_batch_size >= 1, "an integer >= 1")
        check("epochs", integer(self.epochs) and self.epochs >= 1, "an integer >= 1")
        check("sync_every", integer(self.sync_every) and self.sync_every >= 1, "an integer >= 1")
        p = self.early_stopping_patience
        check("early_stopping_patience", p is None or (integer(p) and p >= 1), "None or an integer >= 1")
        check("early_stopping_tolerance", number(self.early_stopping_tolerance) and self.early_stopping_tolerance >= 0,
              "a number >= 0")
        check("normalization_rows", self.normalization_rows is None
              or (integer(self.normalization_rows) and self.normalization_rows >= 1), "None or an integer >= 1")
        check("validation_fraction", number(self.validation_fraction) and 0 <= self.validation_fraction < 1,
              "in [0, 1)")
        check("binary_classifier_model_selection_criteria",
              self.binary_classifier_model_selection_criteria in BINARY_CRITERIA, f"one of {BINARY_CRITERIA}")
        check("multiclass_classifier_model_selection_criteria",
              self.multiclass_classifier_model_selection_criteria in MULTICLASS_CRITERIA,
              f"one of {MULTICLASS_CRITERIA}")
        for name in ("target_recall", "target_precision"):
            check(name, number(getattr(self, name)) and 0 <= getattr(self, name) <= 1, "in [0, 1]")
        check("f_beta", number(self.f_beta) and self.f_beta > 0, "a number > 0")
        check("huber_delta", number(self.huber_delta) and self.huber_delta > 0, "a number > 0")
        check("quantile", number(self.quantile) and 0 < self.quantile < 1, "in (0, 1)")
        check("random_state", integer(self.random_state) and self.random_state >= 0, "an integer >= 0")

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
        out = {
            "binary_classifier_model_selection_criteria": self.binary_classifier_model_selection_criteria,
            "multiclass_classifier_model_selection_criteria": self.multiclass_classifier_model_selection_criteria,
            "target_recall": float(self.target_recall),
            "target_precision": float(self.target_precision),
            "f_beta": float(self.f_beta),
        }
        if self.solver == "exact":
            out["wd"] = 0.0 if _is_auto(self.wd) else float(self.wd)
        return out

    def _min_rows_needed(self) -> int:
        return 2

    # ---- inputs ---------------------------------------------------------------------
    def _input(self, X: Any, y: Any = None, schema: Schema | None = None) -> Input:
        """Like the base, but in-memory arrays become Dask collections so epochs can re-read them."""
        if self.solver != "exact":
            X, y = _as_dask(X, y)
        inp = super()._input(X, y, schema)
        if not inp.is_dask and self.solver != "exact":
            raise TypeError(
                "the SGD linear learner reads its data several times (a first pass, then epochs), so it "
                "cannot learn from a one-shot iterator of batches; pass a Dask DataFrame or Array, a pandas "
                "DataFrame or a numpy array, or use solver='exact' (one pass)"
            )
        return inp

    def _validation_input(self, validation_data: Any, schema: Schema) -> Input:
        if isinstance(validation_data, tuple):
            Xv, yv = validation_data
        else:
            Xv, yv = validation_data, None
        Xv, yv = _as_dask(Xv, yv)
        inp = as_input(Xv, yv, features=list(schema.features),
                       target=schema.target if yv is None else None, need_target=True)
        schema.check_same_features(inp.schema, "validation_data")
        return inp

    # ---- fitting ----------------------------------------------------------------------
    def _new_state(self, inp: Input, validation_data: Any = None) -> LinearState:
        """A fresh state; ``fit(X, y, validation_data=...)`` passes rows for early stopping and selection."""
        if validation_data is not None and self.solver == "exact":
            raise ValueError("validation_data is not used by solver='exact'; leave it out")
        mode = "external" if validation_data is not None else ("split" if self.validation_fraction > 0 else "none")
        return LinearState(inp.schema, self._state_params(inp, mode))

    def _fold(self, inp: Input, state: State, options: engine.FitOptions | None = None,
              validation_data: Any = None, **option_fields: Any) -> State:
        """A first pass (normaliser, classes), then epochs of rounds, then a selection pass.

        With SGD, ``partial_fit`` trains ``epochs`` more epochs over the new
        partitions only, from the selected snapshots, with the normaliser and
        classes of the first fit (a class not seen then raises ``DataError``
        naming it), then selects again on the new data's validation rows. With
        the exact solver the new rows are folded into the normal equations. A
        checkpoint is a folder with one group per pass.
        """
        options = options or self._fit_options(**option_fields)
        validation = None if validation_data is None else self._validation_input(validation_data, state.schema)
        if state.exact:
            return engine.fold(inp, state, options=options.at("exact"))
        if state.phase == "stats":  # a fresh fit: first pass, then train on everything
            first = self._first_pass(inp, state, options)
            self._check_enough_rows(first)
            running, skip = first.start_training(), frozenset()
        else:  # partial_fit: only partitions not trained on yet
            skip = frozenset(state.consumed)
            if all(s in skip for s in inp.sources):
                return state
            running = state.resume_training()
        patience, tolerance = self.early_stopping_patience, float(self.early_stopping_tolerance)
        plain = options.replace(checkpoint=None, progress=False)

        def one_round(data: Input, s: LinearState, skip_sources: frozenset = frozenset(),
                      run: engine.FitOptions = plain) -> LinearState:
            return engine.fold_rounds(data, s, sync_every=max(1, data.npartitions), shuffle=False,
                                      skip_sources=skip_sources, options=run)

        def epoch_end(s: LinearState, epoch: int) -> tuple[LinearState, bool]:
            s = s.copy()
            evaluated = None
            if validation is not None:  # score this epoch's result on the given validation rows
                s.anchor_coef, s.anchor_bias = s.coef.copy(), s.bias.copy()
                scored = one_round(validation, s.begin_eval("anchor", "all"))
                for name in LinearState.EVAL_ARRAYS:
                    setattr(s, name, getattr(scored, name).copy())
                evaluated = int(s.progress[0]) + 1
            stop = s.end_epoch(patience, tolerance, evaluated)
            return s, stop

        running = engine.fold_rounds(inp, running, epochs=int(self.epochs), sync_every=int(self.sync_every),
                                     skip_sources=skip, epoch_end=epoch_end,
                                     options=options.at("epochs").replace(seed=int(state.params["seed"])))
        if skip and running.n_rows == state.n_rows:  # partial_fit on empty partitions: nothing learned
            unchanged = state.copy()
            unchanged.consumed, unchanged.n_skipped = running.consumed, running.n_skipped
            return unchanged

        def evaluate(data: Input, params: str, rows: str) -> LinearState:
            run = plain.replace(progress=options.progress)
            return one_round(data, running.begin_eval(params, rows), skip if data is inp else frozenset(),
                             run).absorb_evaluation()

        selection_on = "validation"
        if running.params.get("validation") == "split" and not running.extra_meta.get("early_stopped"):
            # the epochs ran out: the last epoch's result has not been validated yet (one pass, validation rows)
            running = evaluate(inp, "anchor", "validation")
        if running.best_ev_n[0] == 0:
            # no validation rows (validation_fraction=0, or none fell out of the hash): score on training rows
            running = evaluate(inp, "best", "all")
            selection_on = "training"
        return running.finish(selection_on)

    def _first_pass(self, inp: Input, state: LinearState, options: engine.FitOptions) -> LinearState:
        """Moments and classes: from all partitions, or from a seeded sample of whole partitions."""
        full = (self.normalization_rows is None or not inp.is_dask
                or (state.predictor_type == "multiclass_classifier" and not state.params.get("num_classes")))
        if full:
            return engine.fold(inp, state, options=options.at("first-pass"))
        order = np.random.default_rng([int(state.params["seed"]), 0xF125]).permutation(inp.npartitions)
        running, taken, step = state, 0, 1
        sample = options.replace(checkpoint=None)
        while taken < len(order):
            chunk = [int(i) for i in order[taken : taken + step]]
            running = engine.fold(inp.subset(chunk), running, options=sample)
            taken, step = taken + len(chunk), step * 2
            enough = running.n_rows >= self.normalization_rows
            if state.predictor_type == "binary_classifier":
                enough = enough and len(running.classes) >= 2
            if enough:
                break
        return running

    # ---- applying the model -------------------------------------------------------------
    def decision_function(self, X: Any) -> Any:
        """Scores ``X @ coef_.T + intercept_`` (one column per class for multiclass); lazy for Dask input."""
        self._check_fitted()
        coef, intercept = np.asarray(self.coef_), np.asarray(self.intercept_)
        if coef.ndim == 1 or coef.shape[0] == 1:
            w, b = coef.reshape(-1), float(intercept.reshape(-1)[0])
            return self._map_rows(X, lambda A: A @ w + b, None, "decision-function")
        columns = [str(c) for c in self.classes_]
        return self._map_rows(X, lambda A: A @ coef.T + intercept, columns, "decision-function")

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (columns in ``classes_`` order); lazy for Dask input."""
        self._check_fitted()
        if self.predictor_type == "regressor":
            raise AttributeError("predict_proba is for classifiers; this LinearLearner is a regressor")
        if self.loss_ == "hinge":
            raise AttributeError("predict_proba needs a probabilistic loss; hinge loss gives only scores "
                                 "(use decision_function)")
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

    def score(self, X: Any, y: Any = None) -> float:
        """Accuracy (classifiers) or R^2 (regression) on ``X`` (target from ``y`` or the ``target`` column)."""
        self._check_fitted()
        target = self.state_.schema.target
        if y is None:
            if target is None or not isinstance(X, pd.DataFrame | dd.DataFrame) or target not in X.columns:
                raise ValueError("score needs y, or a DataFrame with the target column")
            y = X[target]
        pred = self.predict(X)
        if isinstance(pred, dd.Series | da.Array):
            import dask

            if isinstance(y, dd.Series) and isinstance(pred, dd.Series):
                y_true = y
            else:
                y_arr = y.to_dask_array(lengths=True) if isinstance(y, dd.Series) else da.asarray(y)
                pred = pred.to_dask_array(lengths=True) if isinstance(pred, dd.Series) else pred
                y_true = y_arr
            if self.predictor_type == "regressor":
                y_true = y_true.astype(np.float64)
                resid = ((y_true - pred) ** 2).sum()
                mean = y_true.mean()
                ssr, sst = dask.compute(resid, ((y_true - mean) ** 2).sum())
                return float(1.0 - ssr / sst)
            return float(dask.compute((pred == y_true).mean())[0])
        y_true = np.asarray(y)
        pred = np.asarray(pred)
        if self.predictor_type == "regressor":
            y_true = y_true.astype(np.float64)
            return float(1.0 - ((y_true - pred) ** 2).sum() / ((y_true - y_true.mean()) ** 2).sum())
        return float(np.mean(pred == y_true.astype(pred.dtype) if pred.dtype != object else pred == y_true))


# ---- in-memory inputs become Dask collections (several passes) --------------------------
def _as_dask(X: Any, y: Any) -> tuple[Any, Any]:
    rows = DEFAULT_BATCH_ROWS
    if isinstance(X, pd.DataFrame):
        nparts = max(1, -(-len(X) // rows))
        ddf = dd.from_pandas(X, npartitions=nparts, sort=False)
        if y is not None:
            ys = y if isinstance(y, pd.Series) else pd.Series(np.asarray(y), name="target")
            if len(ys) != len(X):
                raise DataError(f"input: {len(ys)} target values for {len(X)} rows")
            ys = pd.Series(ys.to_numpy(), index=X.index, name=ys.name or "target")
            y = dd.from_pandas(ys, npartitions=nparts, sort=False)
            if y.npartitions != ddf.npartitions:
                raise DataError("input: the target could not be partitioned like the features")
        return ddf, y
    if isinstance(X, np.ndarray) and X.ndim == 2:
        Xd = da.from_array(X, chunks=(rows, -1))
        if y is not None:
            ya = np.asarray(y)
            if len(ya) != len(X):
                raise DataError(f"input: {len(ya)} target values for {len(X)} rows")
            y = da.from_array(ya, chunks=(rows,) + ya.shape[1:])
        return Xd, y
    return X, y
