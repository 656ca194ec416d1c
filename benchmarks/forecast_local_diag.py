"""What per-series ETS does on a synthetic panel that the local smoother does not (fcsyn, issue 13; run by hand).

    python -m benchmarks.forecast_local_diag synthetic_monthly [--origin 0] [--patch MODULE:NAME=JSON ...]

The synthetic panels' generator (``datasets._series_block``) is replayed draw for draw to recover every series'
noise-free mean path, its kind (intermittent counts, a level shift, plain) and its noise level. Per series, at one
backtest origin, this scores against that mean path (and against the noisy actuals, MASE):

- per-series ETS (the benchmark's four variants, best AICc; fitted once per (panel, origin) and kept in
  ``results/forecast_ets_fcsyn_params.json``: chosen form, fitted alpha / beta / phi / gamma, mean forecast);
- the local smoother alone on the window the model forecasts from (``local.local_fit`` of the history's last
  ``context_length`` points), its chosen parameter set and seasonal index;
- the linear model (the convex combination), from a fit of the panel.

The log of each forecast over the true mean path, ``log(f / mu)`` per step, splits into a level error (its mean
over the horizon), a slope error (its least-squares line's slope times the horizon's spread) and a shape error (what
is left: the seasonal index's error); the local seasonal index is also compared with the true shape directly. Means
are printed per kind of series, with the plain series split at a noise of 8.5%.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import numpy as np
import pandas as pd

import daskstate
from benchmarks.bench_forecast import Q, origin_split, panels, series_arrays, set_constant
from daskstate.algorithms.forecast import local
from daskstate.algorithms.forecast.datasets import fixed_step, season_lengths
from daskstate.algorithms.forecast.estimator import _BacktestTask
from daskstate.algorithms.forecast.series import as_offset, default_prediction_length

RESULTS = os.path.join(os.path.dirname(__file__), "results")
ETS_CACHE = os.path.join(RESULTS, "forecast_ets_fcsyn_params.json")
#: (series, length, freq, seed) of the benchmark's synthetic panels (``bench_forecast.panels``)
SYNTHETIC = {"synthetic_monthly": (100, 144, "MS", 2), "synthetic_daily": (100, 400, "D", 1)}


def generator_truth(n_series: int, length: int, freq: str, seed: int) -> dict[str, np.ndarray]:
    """Replay ``datasets._series_block``'s draws (one block of ``n_series``): the noise-free ``mean`` (n, length),
    the observed ``y``, ``counts`` / ``shifted`` flags, ``noise``, the seasonal ``shape`` and ``amp`` (first cycle)."""
    rng = np.random.default_rng([seed, 0])
    offset = as_offset(freq)
    t = np.arange(length, dtype=np.float64)[None, :]
    k = n_series
    level = np.exp(rng.normal(3.0, 1.5, size=(k, 1)))
    trend = np.exp(rng.normal(0.0, 0.5 / length, size=(k, 1)) * t)
    shape = np.ones((k, length))
    cycles = [m for m in season_lengths(offset) if m >= 2]
    day, fixed = pd.Timedelta(days=1).value, fixed_step(offset)
    if fixed is not None and fixed % day == 0 and fixed // day <= 7:
        cycles.append(365.25 * day / fixed)
    amps = []
    for m in cycles:
        amp = rng.uniform(0.0, 0.4, size=(k, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(k, 1))
        amps.append(amp[:, 0])
        shape = shape + amp * np.sin(2 * np.pi * t / m + phase) + 0.5 * amp * np.sin(4 * np.pi * t / m + 2 * phase)
    shift_at = rng.integers(length // 4, length, size=(k, 1))
    shift = np.where(rng.random((k, 1)) < 0.3, rng.normal(0.0, 0.3, size=(k, 1)), 0.0)
    mean = level * trend * np.exp(shift * (t >= shift_at)) * np.maximum(shape, 0.05)
    noise = rng.uniform(0.02, 0.15, size=(k, 1))
    y = mean * (1.0 + noise * rng.standard_normal((k, length)))
    counts = rng.random(k) < 0.2
    if counts.any():
        rate = rng.uniform(0.2, 3.0, size=(int(counts.sum()), 1)) * (mean[counts] / level[counts])
        y[counts] = rng.poisson(rate)
        mean[counts] = rate
    return {"mean": mean, "y": y, "counts": counts, "shifted": shift[:, 0] != 0, "shift_at": shift_at[:, 0],
            "noise": noise[:, 0], "shape": np.maximum(shape, 0.05), "amp": amps[0] if amps else np.zeros(k),
            "growth": np.log(trend[:, 1]) if length > 1 else np.zeros(k)}


def ets_fit(y: np.ndarray, H: int, m: int) -> dict:
    """The benchmark's per-series ETS choice (``bench_forecast.ets_forecast``'s variants, best AICc), with the
    chosen form, its fitted smoothing parameters and its mean forecast."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = pd.Series(y).interpolate(limit_direction="both").to_numpy()
    seasonal = m if m > 1 and len(y) >= 2 * m + 2 else None
    forms = [("add", "add", True, "add"), ("add", None, False, "add")]
    if np.all(y > 0):
        forms += [("mul", "add", True, "mul"), ("mul", None, False, "mul")]
    out = {"form": "naive", "aicc": np.inf, "mean": np.repeat(y[-1], H).tolist()}
    for error, trend, damped, season in forms:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = ETSModel(y, error=error, trend=trend, damped_trend=damped,
                               seasonal=season if seasonal else None, seasonal_periods=seasonal).fit(disp=False)
        except Exception:
            continue
        if np.isfinite(res.aicc) and res.aicc < out["aicc"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean = np.asarray(res.forecast(H))
            out = {"form": f"{error[0].upper()},{'N' if trend is None else 'Ad'},{season[0].upper() if seasonal else 'N'}",
                   "aicc": float(res.aicc), "mean": mean.tolist(),
                   "alpha": float(res.smoothing_level),
                   "beta": float(res.smoothing_trend) if trend else None,
                   "phi": float(res.damping_trend) if damped else None,
                   "gamma": float(res.smoothing_seasonal) if seasonal else None}
    return out


def ets_fits(panel: str, origin: int, hist: list[np.ndarray], H: int, m: int, points: int = 0) -> list[dict]:
    """:func:`ets_fit` of every history (its last ``points`` values if given), cached per (panel, origin, points)."""
    cache = json.load(open(ETS_CACHE)) if os.path.exists(ETS_CACHE) else {}
    key = f"{panel}@{origin}" + (f"/last{points}" if points else "")
    if key not in cache:
        cache[key] = [ets_fit(h[-points:] if points else h, H, m) for h in hist]
        with open(ETS_CACHE, "w") as f:
            json.dump(cache, f, indent=0)
    return cache[key]


def log_error_parts(f: np.ndarray, mu: np.ndarray) -> dict[str, np.ndarray]:
    """Per row: RMS of ``log(f / mu)`` split into level (its mean), slope (its line over the steps) and shape
    (the rest); NaN where a forecast is not positive."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(f / mu)
    H = r.shape[1]
    h = np.arange(H) - (H - 1) / 2
    lev = r.mean(axis=1)
    slope = (r * h).sum(axis=1) / (h * h).sum()
    rest = r - lev[:, None] - slope[:, None] * h
    return {"total": np.sqrt((r ** 2).mean(axis=1)), "level": np.abs(lev),
            "slope": np.abs(slope) * np.sqrt((h * h).mean()), "shape": np.sqrt((rest ** 2).mean(axis=1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panel", nargs="?", default="synthetic_monthly")
    ap.add_argument("--origin", type=int, default=0, help="0, -1, ...: windows before the benchmark's own")
    ap.add_argument("--patch", action="append", default=[], help="MODULE:NAME=JSON, as bench_forecast's")
    ap.add_argument("--no-linear", action="store_true", help="skip the linear model's fit")
    ap.add_argument("--dump", default="", help="write the per-series table to this CSV")
    ap.add_argument("--ets-points", type=int, default=0, help="also ETS fitted on each history's last N points only "
                    "(e.g. the linear model's context length: the same information as its last window)")
    args = ap.parse_args()
    for spec in args.patch:
        print("patched", set_constant(spec))
    df, freq = panels([args.panel])[args.panel]
    off = as_offset(freq)
    H, m = default_prediction_length(off), (season_lengths(off) or [1])[0]
    truth = generator_truth(*SYNTHETIC[args.panel])
    order = np.argsort([f"s{i}" for i in range(len(truth["y"]))])            # the panel's items sorted by name
    assert np.allclose(truth["y"][order].ravel(), df.sort_values(["item_id", "timestamp"])["target"].to_numpy())
    train, full = origin_split(args.panel, df, H, -args.origin)
    items, hist, y = series_arrays(full, H)
    T = len(hist[0]) + H
    tr = {k: v[order] for k, v in truth.items()}
    mu = tr["mean"][:, T - H:T]
    scale = np.array([np.nanmean(np.abs(h[m:] - h[:-m])) for h in hist])
    ets = ets_fits(args.panel, args.origin, hist, H, m)
    forecasts = {"ets": np.array([e["mean"] for e in ets])}
    if args.ets_points:
        short = ets_fits(args.panel, args.origin, hist, H, m, args.ets_points)
        forecasts[f"ets{args.ets_points}"] = np.array([e["mean"] for e in short])
    L = 60 if args.panel == "synthetic_monthly" else None
    if not args.no_linear:
        fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
        L = fc.state_.params["context_length"]
        task = _BacktestTask(fc._model_parts(), fc._columns, fc.state_.params, np.asarray(Q), fc.duplicates)
        t_items, t_y, t_mean, _, _ = task(full[fc._columns.needed])
        assert list(t_items) == list(items)
        forecasts["linear"] = t_mean
    ctx = np.array([h[-L:] for h in hist])
    fit = local.local_fit(ctx, m)
    forecasts["local"] = local.local_forecast(ctx, H, m)
    forecasts["truth"] = mu
    mase = {k: np.abs(y - f).mean(axis=1) / scale for k, f in forecasts.items()}
    kind = np.where(tr["counts"], "counts", np.where(tr["shifted"], "shift", "plain"))
    low = (kind == "plain") & (tr["noise"] < 0.085)
    groups = {"all": np.ones(len(kind), bool), "counts": kind == "counts", "shift": kind == "shift",
              "plain": kind == "plain", "plain low noise": low, "plain high noise": (kind == "plain") & ~low}
    print(f"{args.panel} origin {args.origin} H {H} m {m} context {L}, load {os.getloadavg()}")
    print("mean MASE per kind (n):")
    for g, sel in groups.items():
        print(f"  {g:17s} n={sel.sum():3d} " + " ".join(f"{k} {mase[k][sel].mean():.4f}" for k in mase))
    parts = {k: log_error_parts(f, mu) for k, f in forecasts.items() if k != "truth"}
    print("plain series: RMS log error vs the true mean path (level / slope / shape / total):")
    for g in ("plain low noise", "plain high noise"):
        sel = groups[g]
        for k, p in parts.items():
            print(f"  {g:17s} {k:7s} " + " ".join(f"{c} {np.nanmean(p[c][sel]):.4f}" for c in p))
    # the local seasonal index against the true shape, on the phases of the test window
    true_rel = tr["shape"][:, T - H:T]
    true_rel = true_rel / tr["shape"][:, T - H - m:T - H].mean(axis=1, keepdims=True) - 1.0
    idx = fit["index"] if fit["index"] is not None else np.zeros((len(kind), m))
    local_rel = np.where(fit["seasonal"][:, None], idx[:, np.arange(H) % m], 0.0)
    idx_err = np.sqrt(((local_rel - true_rel) ** 2).mean(axis=1))
    grid = local.smoothing_grid()
    best = grid[fit["best"]]
    rows = pd.DataFrame({"item": items, "kind": kind, "noise": tr["noise"], "amp": tr["amp"], "growth": tr["growth"],
                         "ets_form": [e["form"] for e in ets], "ets_alpha": [e.get("alpha") for e in ets],
                         "ets_beta": [e.get("beta") for e in ets], "ets_phi": [e.get("phi") for e in ets],
                         "ets_gamma": [e.get("gamma") for e in ets],
                         "loc_alpha": best[:, 0], "loc_beta": best[:, 1], "loc_phi": best[:, 2],
                         "loc_seasonal": fit["seasonal"], "index_rms_err": idx_err,
                         **{f"mase_{k}": v for k, v in mase.items()},
                         **{f"{c}_{k}": p[c] for k, p in parts.items() for c in ("level", "slope", "shape")}})
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    sel = rows[low]
    print("plain low noise: local seasonal index RMS error vs truth", f"{sel.index_rms_err.mean():.4f}",
          "seasonal share", f"{sel.loc_seasonal.mean():.2f}")
    print("ETS forms:", sel.ets_form.value_counts().to_dict())
    print("ETS alpha / gamma (median):", f"{sel.ets_alpha.median():.3f} / {sel.ets_gamma.median():.4f}",
          "local alpha (median)", f"{sel.loc_alpha.median():.2f}", "local trend share", f"{(sel.loc_beta > 0).mean():.2f}",
          "ETS trend share", f"{sel.ets_beta.notna().mean():.2f}")
    print(sel.sort_values("noise").round(4).to_string())
    if args.dump:
        rows.to_csv(args.dump, index=False)


if __name__ == "__main__":
    main()
