"""The linear learner's exact solver (``solver="exact"``): least squares from one pass, any ridge penalty later.

The state is the centred scatter matrix of ``[X, y]`` (a
:class:`~daskstate.state.MomentsState` with ``scatter = True``): exact and
mergeable by Chan's formulas. ``finalize`` solves the normal equations with the
ridge penalty ``wd`` (the hyperparameter, or any value given to ``finalize``)
without reading the data again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from daskstate.algorithms.linear import (
    SELECTION_OVERRIDES,
    _is_auto,
    _LinearParams,
    _numeric_target,
)
from daskstate.errors import StateError
from daskstate.state import MomentsState, RoundContext, register


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
        w = _solve_psd(Sxx + wd * np.eye(d), Sxy)
        intercept = float(mean[d] - mean[:d] @ w)
        sse = max(Syy - 2.0 * w @ Sxy + w @ Sxx @ w, 0.0)
        n = self.weight_sum  # the rows, or their total sample weight
        table = pd.DataFrame({"wd": [wd], "train_mse": [sse / n],
                              "train_r2": [1.0 - sse / Syy if Syy > 0 else np.nan], "selected": [True]})
        table.index.name = "model"
        return {"coef_": w, "intercept_": intercept, "models_": table, "best_model_": 0, "model_": 0,
                "loss_": "squared", "epochs_run_": 1, "n_epochs_": 1, "history_": [], "selection_on_": "training"}


def _solve_psd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The minimum-norm solution of ``A w = b`` for a symmetric positive semi-definite ``A`` (``d x d``).

    Eigenvalues below ``d * eps * max`` are rounding, not signal (a constant or
    duplicated feature, fewer rows than features at ``wd=0``): they are left out,
    as ``lstsq`` would, so two scatter matrices equal up to rounding (weighted
    rows and repeated rows) give the same model instead of two different blow-ups
    of the same noise.
    """
    lam, V = np.linalg.eigh(A)
    top = float(lam[-1]) if len(lam) else 0.0
    keep = lam > max(top, 0.0) * len(A) * np.finfo(np.float64).eps
    return V[:, keep] @ ((V[:, keep].T @ b) / lam[keep])
