"""The global linear forecaster: direct multi-horizon autoregression from normal equations.

For every horizon step ``h`` one linear model maps a window's scaled context
(the lags chosen from the frequency), the date features of the target step and the
known covariates to the scaled target ``y[t+h] / scale``. Windows are weighted by
``1 / noise^2`` (their relative noise scale), which makes the fit a weighted least
squares in the units MASE measures errors in.

State (all sums, so ``merge`` adds them and a fit is exact in one pass)::

    gram (H, p, p)   sum_i w_i x_ih x_ih^T   over the (window, h) pairs with an observed target
    xty  (H, p)      sum_i w_i x_ih y_ih
    yty  (H,)        sum_i w_i y_ih^2
    pairs (H,)       number of such pairs
    target_range (2,) smallest and largest target seen (non-negative data gives non-negative forecasts)

``finalize(wd=...)`` solves ``(gram_h + wd * pairs_h * I) w_h = xty_h`` for any ridge
penalty without data. The weighted residual sum of squares of that solution follows
from the same sums, ``yty - 2 w.xty + w.gram.w``: it is the variance of the
noise-normalised residual at step ``h``, so the predictive distribution at step ``h``
of a window is centred on its forecast with spread ``sigma_h * noise * scale``.

Why direct and not recursive: the per-step models are fitted on exactly the errors
each step makes, so the residual statistics per step come out of the same one-pass
state, with no simulation and no compounding of one-step errors; the cost is a
``p x p`` matrix per step instead of one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import stats

from daskstate.algorithms.forecast.base import SeriesBatch, SeriesStateMixin
from daskstate.algorithms.forecast.sampling import correlated_uniforms, marginal_ppf
from daskstate.algorithms.forecast.series import SeriesBlock, n_date_features
from daskstate.algorithms.forecast.windows import (
    Windows,
    iter_windows,
    lag_design,
    lagged_values,
    step_design,
)
from daskstate.errors import StateError
from daskstate.state import State, register


@register
class ForecastLinearState(SeriesStateMixin, State):
    """Normal equations of the direct multi-horizon linear forecaster.

    Parameters (``params``): ``freq``, ``lags``, ``prediction_length``,
    ``context_length``, ``harmonics``, ``weighting`` ("noise" or "none"), ``wd``.

    Examples
    --------
    >>> from daskstate.state import Schema
    >>> s = ForecastLinearState(Schema((), target="target"),
    ...     {"freq": "QS-JAN", "lags": [1, 2, 3, 4], "prediction_length": 2, "context_length": 4})
    >>> s.gram.shape
    (2, 12, 12)
    """

    algorithm: ClassVar[str] = "forecast_linear"
    array_names: ClassVar[tuple[str, ...]] = ("gram", "xty", "yty", "pairs", "target_range")

    blas_threads: ClassVar[int | None] = 1

    # ---- hyperparameters (offset, lags, horizon, harmonics, season: SeriesStateMixin) -----
    @property
    def n_design(self) -> int:
        """Columns of a design row: lags, date features, covariates, intercept."""
        return len(self.lags) + n_date_features(self.offset, self.harmonics) + self.n_features + 1

    # ---- arrays ------------------------------------------------------------------------
    def _init_arrays(self) -> None:
        H, p = self.horizon, self.n_design
        self.gram = np.zeros((H, p, p))
        self.xty = np.zeros((H, p))
        self.yty = np.zeros(H)
        self.pairs = np.zeros(H)
        self.target_range = np.array([np.inf, -np.inf])

    # ---- update --------------------------------------------------------------------------
    def _update(self, X: SeriesBatch, y: Any, context: Any) -> None:
        """Fold a partition's windows (a :class:`SeriesBatch` from ``read_batch``)."""
        self.fold_block(X.block, X.first_target)

    def fold_block(self, block: SeriesBlock, first_target: np.ndarray | None = None) -> None:
        """Fold ``block``'s windows into ``self`` in place (private copies only).

        ``first_target`` (per item, a grid position) counts only the (window, h) pairs
        whose target lies at or after it: the new points of a known series.
        """
        origins, item, position = block.origins()
        observed = block.values[~np.isnan(block.values)]
        if len(observed):
            self.target_range = np.array([min(self.target_range[0], observed.min()),
                                          max(self.target_range[1], observed.max())])
        for w in iter_windows(block, origins, item, position, self.season, self.n_design):
            self._fold_windows(w, None if first_target is None else first_target[w.item])

    def _fold_windows(self, w: Windows, first_target: np.ndarray | None) -> None:
        """Add the windows' weighted products to the normal equations of every horizon step.

        The lag block of the Gram matrix is the same for every step but for the pairs
        whose target is missing: it is formed once and those pairs are subtracted.
        """
        lagged = lagged_values(w, self.lags)                               # (n, l)
        extra = step_design(w, self.offset, self.harmonics)                # (n, H, e)
        mask = ~np.isnan(w.target) & ~np.isnan(extra).any(axis=2)          # (n, H)
        if first_target is not None:
            target_pos = w.position[:, None] + np.arange(1, self.horizon + 1)[None, :]
            mask &= target_pos >= first_target[:, None]
        rows = mask.any(axis=1)
        if not rows.all():
            lagged, extra, mask, w_target, noise = lagged[rows], extra[rows], mask[rows], w.target[rows], w.noise[rows]
        else:
            w_target, noise = w.target, w.noise
        if not len(lagged):
            return
        weight = 1.0 / noise**2 if self.params.get("weighting", "noise") == "noise" else np.ones(len(noise))
        wm = np.where(mask, weight[:, None], 0.0)                           # (n, H)
        y = np.where(mask, w_target, 0.0)
        extra = np.where(mask[:, :, None], extra, 0.0)
        n, H, e = extra.shape
        k = lagged.shape[1]
        self.gram[:, :k, :k] += (lagged * weight[:, None]).T @ lagged
        for h in np.flatnonzero(~mask.all(axis=0)):  # a loop over horizon steps, not rows
            miss = ~mask[:, h]
            self.gram[h, :k, :k] -= (lagged[miss] * weight[miss, None]).T @ lagged[miss]
        wextra = extra * wm[:, :, None]
        # (long inner dimension on the left: OpenBLAS is many times slower on ``lagged.T @ wide``)
        cross = (wextra.reshape(n, H * e).T @ lagged).reshape(H, e, k)                   # (H, e, k)
        self.gram[:, k:, :k] += cross
        self.gram[:, :k, k:] += cross.transpose(0, 2, 1)
        self.gram[:, k:, k:] += np.einsum("nhe,nhf->hef", wextra, extra, optimize=True)
        wy = wm * y
        self.xty[:, :k] += wy.T @ lagged
        self.xty[:, k:] += np.einsum("nhe,nh->he", extra, wy)
        self.yty += np.einsum("nh,nh->h", wm, y * y)
        self.pairs += mask.sum(axis=0)

    # ---- merge ---------------------------------------------------------------------------
    def _merge(self, other: ForecastLinearState) -> None:
        self.gram += other.gram
        self.xty += other.xty
        self.yty += other.yty
        self.pairs += other.pairs
        self.target_range = np.array([min(self.target_range[0], other.target_range[0]),
                                      max(self.target_range[1], other.target_range[1])])

    # ---- finalize ------------------------------------------------------------------------
    def finalize(self, wd: float | None = None, **_: Any) -> dict[str, Any]:
        """Coefficients and residual spread per horizon step, for ridge penalty ``wd``.

        ``wd`` (default: the fitted one) is the penalty per training pair on every
        coefficient but the intercept; any value is solved from the state alone.
        """
        if not (self.pairs > 0).any():
            raise StateError("the linear forecaster's state has seen no training windows "
                             "(every series shorter than 2 observed points?)")
        wd = float(self.params.get("wd", 1e-3) if wd is None else wd)
        if not wd >= 0:
            raise StateError(f"wd must be >= 0, got {wd}")
        H, p = self.horizon, self.n_design
        penalty = np.eye(p)
        penalty[-1, -1] = 0.0
        coef = np.zeros((H, p))
        sigma = np.full(H, np.nan)
        for h in range(H):  # one small solve per horizon step
            n = self.pairs[h]
            if n == 0:
                continue
            A = self.gram[h] + wd * n * penalty
            try:
                w = np.linalg.solve(A, self.xty[h])
                if not np.all(np.isfinite(w)):
                    raise np.linalg.LinAlgError
            except np.linalg.LinAlgError:
                w = np.linalg.lstsq(A, self.xty[h], rcond=None)[0]
            sse = max(self.yty[h] - 2.0 * w @ self.xty[h] + w @ self.gram[h] @ w, 0.0)
            coef[h] = w
            sigma[h] = np.sqrt(sse / max(n - p, 1.0))
        # steps without training pairs borrow from the nearest earlier step
        for h in range(1, H):
            if self.pairs[h] == 0:
                coef[h], sigma[h] = coef[h - 1], sigma[h - 1]
        if np.isnan(sigma[0]):
            first = int(np.flatnonzero(self.pairs > 0)[0])
            coef[: first], sigma[: first] = coef[first], sigma[first]
        return {"coef_": coef, "sigma_": sigma, "wd_": wd, "weighting_": self.params.get("weighting", "noise"),
                "nonnegative_": bool(self.target_range[0] >= 0)}


def linear_forecast(model: dict[str, Any], w: Windows, lags: np.ndarray, offset, harmonics: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (n, H) in the data's units for windows ``w``."""
    X = lag_design(w, lags, offset, harmonics)
    mean = np.einsum("nhp,hp->nh", X, model["coef_"]) * w.scale[:, None]
    spread = w.noise if model.get("weighting_", "noise") == "noise" else 1.0
    std = model["sigma_"][None, :] * (spread * w.scale)[:, None]
    return mean, std


def distribution_quantiles(mean: np.ndarray, std: np.ndarray, quantiles: np.ndarray, likelihood: str,
                           nonnegative: bool) -> np.ndarray:
    """Quantiles (n, H, q) of the predictive distribution with the given mean and spread.

    ``"gaussian"`` (and ``"student_t"`` with the same variance and 5 degrees of freedom)
    or ``"negative_binomial"`` matched to the mean and variance (counts).
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if likelihood == "negative_binomial":
        mu = np.maximum(mean, 1e-9)[..., None]
        var = np.maximum(std**2, 1.0001 * mu[..., 0])[..., None]
        r = mu**2 / (var - mu)
        out = stats.nbinom.ppf(q, r, r / (r + mu))
    elif likelihood == "student_t":
        df = 5.0
        out = mean[..., None] + (std * np.sqrt((df - 2) / df))[..., None] * stats.t.ppf(q, df)
    else:
        out = mean[..., None] + std[..., None] * stats.norm.ppf(q)
    return np.maximum(out, 0.0) if nonnegative else out


def linear_sample_paths(mean: np.ndarray, std: np.ndarray, likelihood: str, nonnegative: bool, num_samples: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Paths (n, num_samples, H) from the per-step distributions ``mean, std`` (n, H) of :func:`linear_forecast`.

    The direct per-step models share each window's inputs, so their errors are correlated
    across steps: :func:`~daskstate.algorithms.forecast.sampling.correlated_uniforms` gives
    the correlation of the linear process with these error variances.
    """
    u = correlated_uniforms(std, num_samples, rng)
    return marginal_ppf(u, mean, std, likelihood, nonnegative)
