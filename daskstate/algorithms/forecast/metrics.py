"""Forecast accuracy: MASE, sMAPE, RMSE, weighted quantile loss and interval coverage.

All metrics take arrays of shape (items, horizon) (quantile forecasts one axis more)
with NaN where a point is missing; missing points are left out.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd


def seasonal_naive_scale(history: np.ndarray, season: int) -> np.ndarray:
    """In-sample MAE of the seasonal naive forecast per row (1-step naive if too short): MASE's scale.

    Examples
    --------
    >>> seasonal_naive_scale(np.array([[1.0, 2.0, 1.0, 2.0, 1.5]]), 2)
    array([0.25])
    """
    out = np.full(len(history), np.nan)
    for lag in dict.fromkeys((season, 1)):
        if lag >= history.shape[1]:
            continue
        d = np.abs(history[:, lag:] - history[:, :-lag])
        ok = ~np.isnan(d)
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = np.where(ok, d, 0.0).sum(axis=1) / ok.sum(axis=1)
        fill = np.isnan(out) & (ok.sum(axis=1) > 0)
        out[fill] = mae[fill]
    return out


def quantile_loss(y: np.ndarray, qf: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Pinball loss summed over the horizon per row and quantile: (items, q); NaN points left out."""
    diff = y[..., None] - qf
    loss = np.maximum(quantiles * diff, (quantiles - 1.0) * diff)
    return np.nansum(np.where(np.isnan(diff), np.nan, 2.0 * loss), axis=1)


def forecast_metrics(
    y: np.ndarray, mean: np.ndarray, qf: np.ndarray, quantiles: np.ndarray, scale: np.ndarray,
    leading: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-item and overall metrics of forecasts ``mean`` and quantiles ``qf`` against ``y``.

    MASE is the item's mean absolute error over its ``scale`` (seasonal naive in-sample
    MAE), averaged over items overall; sMAPE is ``200 * mean(|y - f| / (|y| + |f|))``;
    the weighted quantile loss is ``sum(2 * pinball) / sum(|y|)`` averaged over
    ``quantiles`` (overall: sums over all items); coverage is the share of points
    inside the [0.1, 0.9] quantiles when both were forecast. ``leading``: columns placed first in the per-item
    frame (e.g. the item ids; the frame is built once, as a column added later costs more than the metrics).
    """
    quantiles = np.asarray(quantiles, dtype=np.float64)
    err = y - mean
    observed = ~np.isnan(y)
    n = observed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # items without observed test points give NaN
        mae = np.nanmean(np.abs(err), axis=1)
        denom = np.abs(y) + np.abs(mean)
        ratio = np.where(denom > 0, np.abs(err) / denom, 0.0)
        smape = 200.0 * np.nanmean(np.where(observed, ratio, np.nan), axis=1)
        ql = quantile_loss(y, qf, quantiles)                 # (items, q)
        abs_sum = np.nansum(np.abs(y), axis=1)
        wql = (ql / abs_sum[:, None]).mean(axis=1)
        per_item = {
            **(leading or {}),
            "n_points": n,
            "MASE": mae / scale,
            "sMAPE": smape,
            "RMSE": np.sqrt(np.nanmean(err**2, axis=1)),
            "wQL": wql,
        }
        overall = {
            "n_items": int((n > 0).sum()),
            "n_points": int(n.sum()),
            "MASE": float(np.nanmean(np.where(np.isfinite(mae / scale), mae / scale, np.nan))),
            "sMAPE": float(np.nanmean(np.where(observed, 200.0 * ratio, np.nan))),
            "RMSE": float(np.sqrt(np.nanmean(err**2))),
            "wQL": float((ql.sum(axis=0) / abs_sum.sum()).mean()),
        }
    lo, hi = _index_of(quantiles, 0.1), _index_of(quantiles, 0.9)
    if lo is not None and hi is not None:
        inside = (y >= qf[..., lo]) & (y <= qf[..., hi])
        with np.errstate(invalid="ignore", divide="ignore"):
            per_item["coverage_80"] = np.where(observed, inside, 0).sum(axis=1) / n
        overall["coverage_80"] = float(inside[observed].mean()) if observed.any() else float("nan")
    return pd.DataFrame(per_item), overall


def _index_of(quantiles: np.ndarray, q: float) -> int | None:
    hit = np.flatnonzero(np.abs(quantiles - q) <= 1e-8 + 1e-5 * abs(q))  # np.isclose's test, without its overhead
    return int(hit[0]) if len(hit) else None
