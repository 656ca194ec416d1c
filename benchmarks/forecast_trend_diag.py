"""Which part of the linear forecaster under-forecasts growing series (fctrend, issue 13; run by hand).

    python -m benchmarks.forecast_trend_diag fpp_annual,aus_accommodation [--origins 3] [--ets]
        [--patch MODULE:NAME=JSON ...] [--results-name forecast_fctrend_diag]

Per (panel, backtest origin) one fit of the linear model, finalized three ways from the same state: the convex
combination (the default), its global part alone (``local_weight=0``, the same ridge solution) and the local
exponential smoother alone (``local_weight=1``). Per series and forecaster: MASE and the signed bias
``mean(y - f) / scale`` over the horizon (positive: under-forecast). A series is "growing" when the last value of
its history is above its value ``H`` points earlier by more than one MASE scale times ``H / 2`` (a clear upward run
over one horizon). Also per series: the holdout's convex weights, the local smoother's chosen set (SES or trend,
and its phi) on the backtest window, and with ``--ets`` per-series statsmodels ETS (the benchmark's four variants).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import daskstate
from benchmarks.bench_forecast import Q, ets_forecast, panel_at_origin, series_arrays
from daskstate.algorithms.forecast import local
from daskstate.algorithms.forecast.estimator import _BacktestTask

RESULTS = os.path.join(os.path.dirname(__file__), "results")
QS = np.asarray(Q)


def backtest(fc, full):
    task = _BacktestTask(fc._model_parts(), fc._columns, fc.state_.params, QS, fc.duplicates)
    items, y, mean, _, scale = task(full[fc._columns.needed])
    return list(items), y, mean, scale


def rows_for(panel: str, origin: int, patches: list[str], with_ets: bool) -> list[dict]:
    _, freq, H, m, train, full = panel_at_origin(panel, origin, patches)
    fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    forecasts = {}
    for name, over in (("convex", {}), ("global", {"local_weight": 0.0}), ("local", {"local_weight": 1.0})):
        model = fc.finalize(**over) if over else fc
        items, y, mean, scale = backtest(model, full)
        forecasts[name] = mean
    weights = np.asarray(fc.local_weight_).round(3).tolist()
    _, hist, ety = series_arrays(full, H)
    if with_ets:
        forecasts["ets"] = np.array([ets_forecast(h, H, m)[0] for h in hist])
    # the local smoother's choice on each series' last context (what the backtest's window reads)
    context = fc.state_.params.get("context_length") or 0
    grid = local.smoothing_grid()
    out = []
    for i, item in enumerate(items):
        h = hist[i][~np.isnan(hist[i])]
        growing = len(h) > H and (h[-1] - h[-1 - H]) > scale[i] * H / 2
        row = {"panel": panel, "origin": origin, "item": str(item), "growing": bool(growing),
               "weights": weights}
        for name, f in forecasts.items():
            err = y[i] - f[i]
            row[f"MASE_{name}"] = float(np.nanmean(np.abs(err)) / scale[i])
            row[f"bias_{name}"] = float(np.nanmean(err) / scale[i])
        ctx = h[-context:] if context else h
        fit = local.local_fit(ctx[None, :] / np.nanmean(np.abs(ctx)), m)
        a, b, p = grid[int(fit["best"][0])]
        row["local_set"] = "SES" if b == 0 else f"trend phi {p}"
        out.append(row)
    return out


def summary(rows: list[dict]) -> None:
    names = [k[5:] for k in rows[0] if k.startswith("MASE_")]
    for panel in dict.fromkeys(r["panel"] for r in rows):
        for origin in dict.fromkeys(r["origin"] for r in rows if r["panel"] == panel):
            rs = [r for r in rows if r["panel"] == panel and r["origin"] == origin]
            print(f"{panel} @ {origin}: convex weights {rs[0]['weights']}")
            for label, sel in (("all", rs), ("growing", [r for r in rs if r["growing"]]),
                               ("other", [r for r in rs if not r["growing"]])):
                if not sel:
                    continue
                cells = "  ".join(f"{n} {np.mean([r['MASE_' + n] for r in sel]):.3f}/"
                                  f"{np.mean([r['bias_' + n] for r in sel]):+.3f}" for n in names)
                trended = sum(r["local_set"] != "SES" for r in sel)
                print(f"  {label:8s} n={len(sel):3d} local trended {trended:3d}  MASE/bias: {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panels")
    ap.add_argument("--origins", type=int, default=3)
    ap.add_argument("--ets", action="store_true")
    ap.add_argument("--patch", action="append", default=[])
    ap.add_argument("--results-name", default="")
    args = ap.parse_args()
    rows = []
    for panel in args.panels.split(","):
        for k in range(args.origins):
            rows += rows_for(panel, -k, args.patch if not rows else [], args.ets)
    summary(rows)
    if args.results_name:
        with open(os.path.join(RESULTS, f"{args.results_name}.json"), "w") as f:
            json.dump({"args": vars(args), "loadavg": os.getloadavg(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
