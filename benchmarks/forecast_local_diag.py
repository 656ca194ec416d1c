"""What per-series ETS does on a synthetic panel that the local smoother does not (fcsyn, issue 13; run by hand).

    python -m benchmarks.forecast_local_diag synthetic_monthly [--origin 0] [--patch MODULE:NAME=JSON ...]

The synthetic panels' generator (``datasets._series_block``) is run again with its draws recorded and its noise
draws zeroed, to recover every series' noise-free mean path, its kind (intermittent counts, a level shift, plain)
and its noise level. Per series, at one backtest origin, this scores against that mean path (and against the noisy
actuals, MASE):

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
from benchmarks.bench_forecast import Q, panel_at_origin, series_arrays
from daskstate.algorithms.forecast import local
from daskstate.algorithms.forecast.estimator import _BacktestTask

RESULTS = os.path.join(os.path.dirname(__file__), "results")
ETS_CACHE = os.path.join(RESULTS, "forecast_ets_fcsyn_params.json")
#: (series, length, freq, seed) of the benchmark's synthetic panels (``bench_forecast.panels``)
SYNTHETIC = {"synthetic_monthly": (100, 144, "MS", 2), "synthetic_daily": (100, 400, "D", 1)}
#: the generator's draws are replayed as ``_series_block`` draws them (its docstring: "deterministic per series
#: block"); the benchmark's panels are one block of 100 series


class _RecordingGenerator:
    """A numpy Generator that records every draw (method, arguments, result); with ``noise_free`` its
    ``standard_normal`` returns zeros and its ``poisson`` returns the rate, after drawing as the real one does (so
    every later draw is the same)."""

    def __init__(self, rng: np.random.Generator, noise_free: bool) -> None:
        self.rng, self.noise_free, self.calls = rng, noise_free, []

    def __getattr__(self, name: str):
        method = getattr(self.rng, name)

        def draw(*args, **kwargs):
            out = method(*args, **kwargs)
            self.calls.append((name, args, kwargs, out))
            if self.noise_free and name == "standard_normal":
                return np.zeros_like(out)
            if self.noise_free and name == "poisson":
                return np.broadcast_to(np.asarray(args[0], dtype=np.float64), np.shape(out)).copy()
            return out
        return draw


def generator_truth(n_series: int, length: int, freq: str, seed: int) -> dict[str, np.ndarray]:
    """The synthetic panel's block of ``n_series`` generated twice by ``datasets._series_block`` itself, once as
    the benchmark has it (``y``) and once without its noise draws (the noise-free ``mean`` path; a count series' Poisson
    rate), with the draws recorded: ``counts`` / ``shifted`` flags, the ``noise`` level, the first cycle's
    amplitude ``amp``, the trend's ``growth`` per step and the seasonal ``shape`` (the mean over level and trend)."""
    from unittest import mock

    from daskstate.algorithms.forecast import datasets

    out, record, real = {}, None, np.random.default_rng
    for key, noise_free in (("y", False), ("mean", True)):

        def recording(seed_, noise_free=noise_free):
            nonlocal record
            record = _RecordingGenerator(real(seed_), noise_free)
            return record

        with mock.patch.object(datasets.np.random, "default_rng", recording):
            frame = datasets._series_block(0, n_series, length, freq, seed, "2020-01-01")
        out[key] = frame["target"].to_numpy(np.float64).reshape(n_series, length)
    draws = {}
    for name, args, kwargs, value in record.calls:
        draws.setdefault(name, []).append((args, kwargs, value))
    uniforms = [(a, v) for a, _, v in draws["uniform"]]
    noise = next(v for a, v in uniforms if a[:2] == (0.02, 0.15))[:, 0]
    amp = next((v for a, v in uniforms if a[:2] == (0.0, 0.4)), np.zeros((n_series, 1)))[:, 0]
    shifted = draws["random"][0][2][:, 0] < 0.3          # the first `random` draw decides the level shifts
    counts = draws["random"][1][2] < 0.2                 # the second, the count series
    level, growth = (draws["normal"][k][2][:, 0] for k in (0, 1))   # log level, trend growth per step
    trend = np.exp(level[:, None] + growth[:, None] * np.arange(length)[None, :])
    return {**out, "counts": counts, "shifted": shifted, "noise": noise, "amp": amp, "growth": growth,
            "shape": out["mean"] / trend}                # the seasonal shape (times any level shift)


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
    df, freq, H, m, train, full = panel_at_origin(args.panel, args.origin, args.patch)
    truth = generator_truth(*SYNTHETIC[args.panel])
    order = np.argsort([f"s{i}" for i in range(len(truth["y"]))])            # the panel's items sorted by name
    assert np.allclose(truth["y"][order].ravel(), df.sort_values(["item_id", "timestamp"])["target"].to_numpy())
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
