"""Where a panel's wQL against per-series ETS comes from (fcmon, issue 13): per series, per horizon step, and the
quantiles' shape and size, for the linear forecaster at one backtest origin (run by hand).

    python -m benchmarks.forecast_panel_breakdown fpp2_monthly [--origin 0] [--series souvenirs/Sales]
        [--patch daskstate.algorithms.forecast.estimator:SPREAD_STEP=false]

wQL sums every series' quantile loss over the panel's sum of ``|y|``, so a series' share of that sum is its
weight. Prints each series' share, its contribution to linear's and ETS's wQL, MASE, coverage and the spread
multiplier that would have minimised its loss; per step, both models' contributions and coverage; the panel's
wQL with the two models' means and quantile offsets swapped, with the offsets scaled, and with other shapes of
the same variance; for ``--series`` (default: the largest) its forecasts and 80% band widths per step.
ETS (``bench_forecast.ets_forecast``, per series) is fitted here: ~40 s for fpp2_monthly.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd
from scipy import stats

import daskstate
from benchmarks.bench_forecast import (
    Q,
    ets_forecast,
    panel_at_origin,
    series_arrays,
)
from daskstate.algorithms.forecast.estimator import _BacktestTask
from daskstate.algorithms.forecast.linear import STUDENT_DF
from daskstate.algorithms.forecast.metrics import quantile_loss

QS = np.asarray(Q)


def pinball(y: np.ndarray, qf: np.ndarray) -> np.ndarray:
    """(items, H, q) twice the pinball loss (NaN targets: 0)."""
    e = y[..., None] - qf
    return np.nan_to_num(2 * np.maximum(QS * e, (QS - 1) * e))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panel")
    ap.add_argument("--origin", type=int, default=0, help="0, -1, ...: windows before the benchmark's own")
    ap.add_argument("--series", default="")
    ap.add_argument("--patch", action="append", default=[], help="MODULE:NAME=JSON, as bench_forecast's")
    args = ap.parse_args()
    _, freq, H, m, train, full = panel_at_origin(args.panel, args.origin, args.patch)
    fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    task = _BacktestTask(fc._model_parts(), fc._columns, fc.state_.params, QS, fc.duplicates)
    items, y, mean, qf, scale = task(full[fc._columns.needed])
    ets_items, hist, ets_y = series_arrays(full, H)
    assert list(ets_items) == list(items) and np.allclose(ets_y, y, equal_nan=True)
    fits = [ets_forecast(h, H, m) for h in hist]
    emean, eqf = np.array([f[0] for f in fits]), np.array([f[1] for f in fits])
    absy = np.nansum(np.abs(y))

    def wql(q: np.ndarray) -> float:
        return float((quantile_loss(y, q, QS).sum(axis=0) / absy).mean())

    def coverage(q: np.ndarray, axis=None):
        return ((y >= q[..., 0]) & (y <= q[..., -1])).mean(axis=axis)

    print(f"{args.panel} at origin {args.origin}, load {os.getloadavg()}")
    print(f"wQL linear {wql(qf):.4f} ETS {wql(eqf):.4f} ratio {wql(qf) / wql(eqf):.4f}; "
          f"coverage {coverage(qf):.3f} / {coverage(eqf):.3f}")
    pl, pe = pinball(y, qf), pinball(y, eqf)
    offsets = qf - mean[..., None]
    std = (qf[..., -1] - qf[..., 0]) / (2 * stats.t.ppf(0.9, STUDENT_DF)) / np.sqrt((STUDENT_DF - 2) / STUDENT_DF)
    grid = np.linspace(0.3, 3.0, 55)
    best = [grid[int(np.argmin([pinball(y[i], mean[i][:, None] + c * offsets[i]).sum() for c in grid]))]
            for i in range(len(items))]
    per_series = pd.DataFrame({
        "item": items, "share_of_sum_abs_y": np.nansum(np.abs(y), 1) / absy,
        "linear_contrib": pl.sum((1, 2)) / len(QS) / absy, "ets_contrib": pe.sum((1, 2)) / len(QS) / absy,
        "MASE_linear": np.nanmean(np.abs(y - mean), 1) / scale, "MASE_ets": np.nanmean(np.abs(y - emean), 1) / scale,
        "coverage_linear": coverage(qf, 1), "coverage_ets": coverage(eqf, 1), "best_spread_x": best,
        "mean_error_in_spreads": np.nanmean((y - mean) / std, 1)})
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(per_series.sort_values("share_of_sum_abs_y", ascending=False).round(4).to_string(index=False))
        print(pd.DataFrame({"linear": pl.sum((0, 2)) / len(QS) / absy, "ets": pe.sum((0, 2)) / len(QS) / absy,
                            "coverage_linear": coverage(qf, 0), "coverage_ets": coverage(eqf, 0)}).round(4).to_string())
    print(f"linear mean + ETS offsets {wql(mean[..., None] + eqf - emean[..., None]):.4f}; "
          f"ETS mean + linear offsets {wql(emean[..., None] + offsets):.4f}")
    for c in (0.8, 1.25, 1.5):
        print(f"linear offsets x{c}: wQL {wql(mean[..., None] + c * offsets):.4f}, "
              f"coverage {coverage(mean[..., None] + c * offsets):.3f}")
    gauss = mean[..., None] + std[..., None] * stats.norm.ppf(QS)
    print(f"Gaussian of the same variance: wQL {wql(gauss):.4f}, coverage {coverage(gauss):.3f}")
    i = list(items).index(args.series) if args.series else int(np.argmax(np.nansum(np.abs(y), 1)))
    print(items[i])
    print(pd.DataFrame({"y": y[i], "linear": mean[i], "ets": emean[i], "linear_80_width": qf[i, :, -1] - qf[i, :, 0],
                        "ets_80_width": eqf[i, :, -1] - eqf[i, :, 0], "linear_loss": pl[i].mean(1),
                        "ets_loss": pe[i].mean(1)}).round(0).to_string())


if __name__ == "__main__":
    main()
