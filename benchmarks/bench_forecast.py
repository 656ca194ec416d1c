"""Forecaster (model="linear") vs seasonal naive and per-series ETS on real and synthetic panels.

Every method forecasts the last ``prediction_length`` points of every series from the
points before them; all are scored by the same code (MASE with the seasonal naive
in-sample scale, sMAPE, RMSE, mean weighted quantile loss over the quantiles
0.1..0.9, 80% interval coverage). ETS is statsmodels' ``ETSModel`` fitted per series
in the variants (error, trend, seasonal) = (A, Ad, A), (A, N, A), (M, Ad, M),
(M, N, M) (multiplicative ones only for positive series), the best by AICc; its
quantiles come from 200 simulated paths. The single-series ``elecdemand`` panel is
backtested from several daily origins (one pseudo-item per origin, the model fitted
on the data before the first origin; ETS refitted per origin on the last 4 weeks).

Usage::

    python -m benchmarks.bench_forecast [--panels aus_arrivals,prisonLF,...] [--repeats 3] [--mlp-epochs default]
        [--deepar-epochs default] [--time-fit aus_arrivals]
    python -m benchmarks.bench_forecast --reuse-ets benchmarks/results/forecast.json   # ETS rows of an earlier run
    python -m benchmarks.bench_forecast --scale 10000,100000 --results-name forecast_scale
    python -m benchmarks.bench_forecast --scale 10000,100000 --scale-models mlp,deepar --scale-epochs 1 \
        --results-name forecast_scale_neural
    python -m benchmarks.bench_forecast --scale 10000,100000 --scale-models deepar --scale-epochs 1 --worker-environ \
        --results-name forecast_scale_deepar_workerenv    # the measured processes run as Dask's workers do
    python -m benchmarks.bench_forecast --elec-drop-days 0,14,42,98 --results-name forecast_elec_weeks
    python -m benchmarks.bench_forecast --finalize-variants '[{}, {"wd": 0.01}]' --origins 3   # linear only
    python -m benchmarks.bench_forecast --finalize-variants '[{}]' --origins 3 \
        --patch daskstate.algorithms.forecast.linear:STUDENT_DF=5.0    # a module constant set for the run
    python -m benchmarks.bench_forecast --choose-by-holdout benchmarks/results/a.json,benchmarks/results/b.json \
        --results-name forecast_choice    # per pair the run whose state's holdout error is lowest

Writes benchmarks/results/forecast.json (or the --results-name) and prints a Markdown table.
The scale run fits and predicts a lazily generated daily panel in a fresh process per size
(peak RSS of that process).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import warnings

import numpy as np
import pandas as pd

import daskstate
from benchmarks.common import markdown_table, write_results
from daskstate.algorithms.forecast.datasets import (
    REAL_PANELS,
    UNSEEN_PANELS,
    load_panel,
    load_unseen_panel,
    synthetic_panel,
)
from daskstate.algorithms.forecast.estimator import EVAL_QUANTILES, holdout_split
from daskstate.algorithms.forecast.metrics import forecast_metrics, seasonal_naive_scale
from daskstate.algorithms.forecast.series import (
    as_offset,
    default_prediction_length,
    season_lengths,
)

Q = np.asarray(EVAL_QUANTILES)
#: known future covariates of a panel: an extra "daskstate linear (+covariates)" row uses them
KNOWN_COVARIATES = {"elecdemand": ["workday"]}
ELEC_ORIGINS = 7
ETS_ELEC_HISTORY = 4 * 7 * 48


def panels(names: list[str], n_synthetic: int = 100) -> dict[str, tuple[pd.DataFrame, str]]:
    out = {}
    for name in names:
        if name in REAL_PANELS:
            df, freq = load_panel(name)
            out[name] = (df[["item_id", "timestamp", "target", *KNOWN_COVARIATES.get(name, [])]], freq)
        elif name in UNSEEN_PANELS:  # not in the defaults: a check on series the model was not tuned on
            out[name] = load_unseen_panel(name)
        elif name == "synthetic_daily":
            out[name] = (synthetic_panel(n_synthetic, 400, freq="D", seed=1), "D")
        elif name == "synthetic_monthly":
            out[name] = (synthetic_panel(n_synthetic, 144, freq="MS", seed=2), "MS")
        elif name == "synthetic_yearly":  # not in the defaults: trend, level shifts, noise and counts, no season
            out[name] = (synthetic_panel(n_synthetic, 40, freq="YS-JAN", seed=3, start="1980-01-01"), "YS-JAN")
        elif name == "synthetic_weekly":  # five years of weeks: half a series is not a cycle past the lags (fcweekly)
            out[name] = (synthetic_panel(n_synthetic, 260, freq="W-MON", seed=3), "W-MON")
        else:
            raise ValueError(f"unknown panel {name!r}")
    return out


def rolling_origins(df: pd.DataFrame, H: int, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One pseudo-item per origin for a single long series: (training rows before the first origin, eval rows)."""
    df = df.sort_values("timestamp").reset_index(drop=True)
    cut0 = len(df) - n * H
    train = df.iloc[:cut0]
    pieces = [df.iloc[: cut0 + (k + 1) * H].assign(item_id=f"{df['item_id'].iloc[0]}@{k}") for k in range(n)]
    return train, pd.concat(pieces, ignore_index=True)


def series_arrays(full: pd.DataFrame, H: int) -> tuple[list, list[np.ndarray], np.ndarray]:
    """Per item: history (all but the last H points) and the last H actuals, on a regular grid."""
    items, hist, actual = [], [], []
    for item, g in full.sort_values(["item_id", "timestamp"]).groupby("item_id", sort=True):
        y = g["target"].to_numpy(np.float64)
        if len(y) <= H:
            continue
        items.append(item)
        hist.append(y[:-H])
        actual.append(y[-H:])
    return items, hist, np.asarray(actual)


def pad_left(rows: list[np.ndarray]) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, width - len(r):] = r
    return out


def seasonal_naive(hist: list[np.ndarray], H: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Forecast y[T - m + (h mod m)] and Gaussian quantiles from the in-sample seasonal residuals."""
    from scipy import stats

    mean = np.empty((len(hist), H))
    qf = np.empty((len(hist), H, len(Q)))
    for i, y in enumerate(hist):
        mm = m if len(y) > m else 1
        last = y[-mm:]
        mean[i] = last[np.arange(H) % mm]
        resid = y[mm:] - y[:-mm]
        sd = np.nanstd(resid) if np.isfinite(resid).sum() > 1 else 0.0
        k = np.arange(H) // mm + 1
        qf[i] = mean[i][:, None] + (sd * np.sqrt(k))[:, None] * stats.norm.ppf(Q)[None, :]
    return mean, qf


#: the per-series ETS peer: "statsmodels" (``ETSModel``, four variants by AICc) or "autoets" (statsforecast's
#: ``AutoETS``, every ETS form by AICc; it needs pandas < 3, so it runs in an environment of its own: see
#: benchmarks/README.md); set by ``--ets-peer``
ETS_PEER = "statsmodels"
ETS_METHOD = {"statsmodels": "statsmodels ETS (best AICc)", "autoets": "statsforecast AutoETS"}


def autoets_forecast(y: np.ndarray, H: int, m: int) -> tuple[np.ndarray, np.ndarray, str]:
    """statsforecast's ``AutoETS`` (model "ZZZ": error, trend, damping and season chosen by AICc) on one series;
    its quantiles from the Gaussian prediction intervals of the chosen model (levels 20, 40, 60, 80 give the
    quantiles 0.1 .. 0.9, the mean the median)."""
    from statsforecast.models import AutoETS

    y = pd.Series(y).interpolate(limit_direction="both").to_numpy()
    levels = sorted({int(round(100 * abs(1 - 2 * q))) for q in Q if q != 0.5})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoETS(season_length=max(m, 1)).fit(y)
            out = model.predict(H, level=levels)
    except Exception:  # a series AutoETS cannot fit is forecast by its last value, as ets_forecast does
        mean = np.repeat(y[-1], H)
        return mean, np.repeat(mean[:, None], len(Q), axis=1), "naive"
    mean = np.asarray(out["mean"], dtype=np.float64)
    cols = []
    for q in Q:
        level = int(round(100 * abs(1 - 2 * q)))
        cols.append(mean if level == 0 else np.asarray(out[f"{'lo' if q < 0.5 else 'hi'}-{level}"], dtype=np.float64))
    return mean, np.stack(cols, axis=1), model.model_["method"]


def ets_forecast(y: np.ndarray, H: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    if ETS_PEER == "autoets":
        return autoets_forecast(y, H, m)
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = pd.Series(y).interpolate(limit_direction="both").to_numpy()
    seasonal = m if m > 1 and len(y) >= 2 * m + 2 else None
    variants = [("add", "add", True, "add"), ("add", None, False, "add")]
    if np.all(y > 0):
        variants += [("mul", "add", True, "mul"), ("mul", None, False, "mul")]
    best, best_aicc, name = None, np.inf, ""
    for error, trend, damped, season in variants:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = ETSModel(y, error=error, trend=trend, damped_trend=damped,
                               seasonal=season if seasonal else None, seasonal_periods=seasonal).fit(disp=False)
        except Exception:  # a variant that cannot be fitted to this series is skipped, as in auto-ETS
            continue
        if np.isfinite(res.aicc) and res.aicc < best_aicc:
            best, best_aicc = res, res.aicc
            name = f"{error[0].upper()},{'N' if trend is None else 'Ad'},{season[0].upper() if seasonal else 'N'}"
    if best is None:
        mean = np.repeat(y[-1], H)
        return mean, np.repeat(mean[:, None], len(Q), axis=1), "naive"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = np.asarray(best.forecast(H))
        sims = np.asarray(best.simulate(H, anchor="end", repetitions=200, rng=np.random.default_rng(seed)))
    sims = sims.reshape(H, -1)
    return mean, np.quantile(sims, Q, axis=1).T, name


def ets_row(name: str, hist: list[np.ndarray], y: np.ndarray, scale: np.ndarray, H: int, m: int) -> dict:
    """Per-series ETS (best AICc) on every history of ``hist``, scored against ``y``: the benchmark's ETS row."""
    t0, c0 = time.perf_counter(), time.process_time()
    means, qfs, chosen = [], [], []
    for h in hist:
        h = h[-ETS_ELEC_HISTORY:] if name == "elecdemand" else h
        mu, q, kind = ets_forecast(h, H, m)
        means.append(mu)
        qfs.append(q)
        chosen.append(kind)
    return {"method": ETS_METHOD[ETS_PEER], "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            **score(y, np.asarray(means), np.asarray(qfs), scale),
            "variants": pd.Series(chosen).value_counts().to_dict()}


def score(y: np.ndarray, mean: np.ndarray, qf: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    _, overall = forecast_metrics(y, mean, qf, Q, scale)
    return overall


def run_panel(name: str, df: pd.DataFrame, freq: str, repeats: int, ets: bool, mlp_epochs: int | None,
              recorded_ets: dict | None = None, deepar_epochs: int | None = 0) -> list[dict]:
    offset = as_offset(freq)
    H = default_prediction_length(offset)
    seasons = season_lengths(offset)
    m = seasons[0] if seasons else 1
    if name == "elecdemand":
        train, full = rolling_origins(df, H, ELEC_ORIGINS)
    else:
        full = df
        train, _ = holdout_split(df, H)
    with_covariates = (train, full)
    train, full = train[["item_id", "timestamp", "target"]], full[["item_id", "timestamp", "target"]]
    items, hist, y = series_arrays(full, H)
    scale = seasonal_naive_scale(pad_left(hist), m)
    rows = []

    times, fit_cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
        fit_cpu.append(time.process_time() - c0)
        overall, per_item = fc.evaluate(full, quantiles=Q)
        times.append(time.perf_counter() - t0)
    rows.append({"panel": name, "method": "daskstate linear", "seconds": float(np.median(times)),
                 "fit_cpu_seconds": float(np.median(fit_cpu)), **overall,
                 "chosen": {"wd": fc.wd_, "prior": fc.prior_, "calibration": np.round(fc.calibration_, 3).tolist(),
                            "lags": len(fc.state_.lags), "context_length": fc.state_.params["context_length"]}
                 if hasattr(fc, "prior_") else None})

    if KNOWN_COVARIATES.get(name):
        cov = KNOWN_COVARIATES[name]
        t0 = time.perf_counter()
        fc = daskstate.Forecaster(prediction_length=H, freq=freq, covariates=cov).fit(with_covariates[0])
        overall, _ = fc.evaluate(with_covariates[1], quantiles=Q)
        rows.append({"panel": name, "method": f"daskstate linear (+{','.join(cov)})",
                     "seconds": time.perf_counter() - t0, **overall})

    for model, epochs in (("deepar", deepar_epochs), ("mlp", mlp_epochs)):
        if epochs == 0:
            continue
        rows.append(neural_row(name, model, epochs, train, full, H, freq))

    mean, qf = seasonal_naive(hist, H, m)
    rows.append({"panel": name, "method": "seasonal naive", **score(y, mean, qf, scale)})

    if ets and recorded_ets is not None:
        # ETS does not depend on this package's code: its row from an earlier run on the same panel
        rows.append(recorded_ets)
    elif ets:
        rows.append({"panel": name, **ets_row(name, hist, y, scale, H, m)})
    base = {r["method"]: r for r in rows}
    lin = base["daskstate linear"]
    lin["mase_vs_snaive"] = lin["MASE"] / base["seasonal naive"]["MASE"]
    if ets:
        e = base["statsmodels ETS (best AICc)"]
        lin["mase_vs_ets"] = lin["MASE"] / e["MASE"]
        lin["wql_vs_ets"] = lin["wQL"] / e["wQL"]
        lin["time_vs_ets"] = lin["seconds"] / e["seconds"]
    for r in rows:
        r.update({"series": len(items), "horizon": H, "freq": freq})
        if r["method"].startswith(("daskstate mlp", "daskstate deepar", "daskstate linear (+")):
            if "fit_cpu_seconds" in r and lin.get("fit_cpu_seconds"):
                r["fit_cpu_vs_linear"] = r["fit_cpu_seconds"] / lin["fit_cpu_seconds"]
            r["mase_vs_snaive"] = r["MASE"] / base["seasonal naive"]["MASE"]
            if ets:
                r["mase_vs_ets"] = r["MASE"] / base["statsmodels ETS (best AICc)"]["MASE"]
                r["wql_vs_ets"] = r["wQL"] / base["statsmodels ETS (best AICc)"]["wQL"]
                r["time_vs_ets"] = r["seconds"] / base["statsmodels ETS (best AICc)"]["seconds"]
    return rows


def earlier_origin(name: str, df: pd.DataFrame, H: int, k: int) -> pd.DataFrame:
    """The panel with the last ``k`` backtest windows dropped (``k * H`` points of every series; elecdemand:
    ``k`` times its daily origins), so that its backtest falls ``k`` windows earlier."""
    if k == 0:
        return df
    if name == "elecdemand":
        return df.iloc[: len(df) - k * ELEC_ORIGINS * H]
    rank = df.groupby("item_id")["timestamp"].rank(method="dense", ascending=False)
    return df[rank > k * H]


def compare_finalize(name: str, df: pd.DataFrame, freq: str, variants: list[dict], origins: int,
                     ets_cache: dict | None = None) -> list[dict]:
    """The linear model's backtest with each of ``variants`` (finalize overrides, solved from one state without
    data) at ``origins`` origins: the benchmark's own and the ones 1 .. origins-1 windows before it, so that a
    change is judged on more than one test window. ``ets_cache`` (see :func:`ets_at_origins`): ETS rows per
    (panel, origin), the variants' MASE / wQL / CPU time relative to them where there is one."""
    offset = as_offset(freq)
    H = default_prediction_length(offset)
    rows = []
    for k in range(origins):
        train, full = origin_split(name, df, H, k)
        gc.collect()  # a full collection of what the run holds (every panel) is not charged to the pair it falls in
        t0 = time.process_time()
        fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
        fit_cpu = time.process_time() - t0
        ets = (ets_cache or {}).get(f"{name}@{-k}")
        snaive = snaive_row(full, H, offset)
        for j, overrides in enumerate(variants):
            t0 = time.process_time()
            tuned = fc.finalize(**overrides)
            overall, _ = tuned.evaluate(full, quantiles=Q)
            row = {"panel": name, "origin": -k, "variant": j, "overrides": json.dumps(overrides),
                   **{m: overall[m] for m in ("MASE", "wQL", "coverage_80")},
                   "cpu_seconds": fit_cpu + time.process_time() - t0}
            if hasattr(tuned, "local_weight_"):
                row["local_weight"] = np.round(tuned.local_weight_, 3).tolist()
            if hasattr(tuned, "holdout_sse_"):  # the state's own backtest: what a choice at finalize could go by
                row.update(holdout_mse=float(np.sum(tuned.holdout_sse_) / max(np.sum(tuned.holdout_pairs_), 1)),
                           holdout_sse=np.asarray(tuned.holdout_sse_).tolist(),
                           holdout_pairs=np.asarray(tuned.holdout_pairs_).tolist())
            row.update(mase_vs_snaive=overall["MASE"] / snaive["MASE"], wql_vs_snaive=overall["wQL"] / snaive["wQL"])
            if ets is not None:
                row.update(mase_vs_ets=overall["MASE"] / ets["MASE"], wql_vs_ets=overall["wQL"] / ets["wQL"],
                           time_vs_ets=row["cpu_seconds"] / ets.get("cpu_seconds", ets["seconds"]))
            rows.append(row)
    return rows


def snaive_row(full: pd.DataFrame, H: int, offset) -> dict[str, float]:
    """The seasonal naive forecast's scores on the last ``H`` points of ``full`` (the benchmark's own row, at any
    origin; elecdemand's pseudo-items as they come)."""
    seasons = season_lengths(offset)
    m = seasons[0] if seasons else 1
    _, hist, y = series_arrays(full, H)
    mean, qf = seasonal_naive(hist, H, m)
    return score(y, mean, qf, seasonal_naive_scale(pad_left(hist), m))


def origin_split(name: str, df: pd.DataFrame, H: int, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, full) of the backtest ``k`` windows before the benchmark's own (see :func:`earlier_origin`)."""
    part = earlier_origin(name, df[["item_id", "timestamp", "target"]], H, k)
    if name == "elecdemand":
        return rolling_origins(part, H, ELEC_ORIGINS)
    return holdout_split(part, H)[0], part


def ets_at_origins(name: str, df: pd.DataFrame, freq: str, origins: int, cache: dict, cache_path: str,
                   recorded: dict | None = None) -> None:
    """Fill ``cache`` ("panel@-k" -> ETS row) with per-series ETS at the benchmark's origin and the ``origins - 1``
    before it (``recorded``: the origin-0 row of an earlier run, reused), writing ``cache_path`` after each: ETS does
    not depend on this package's code, so the finalize variants of any later commit are compared with it."""
    offset = as_offset(freq)
    H = default_prediction_length(offset)
    seasons = season_lengths(offset)
    m = seasons[0] if seasons else 1
    for k in range(origins):
        key = f"{name}@{-k}"
        if key in cache:
            continue
        if k == 0 and recorded is not None:
            cache[key] = {**recorded, "origin": 0}
        else:
            _, full = origin_split(name, df, H, k)
            _, hist, y = series_arrays(full, H)
            load = os.getloadavg()[0]
            cache[key] = {"panel": name, "origin": -k, **ets_row(name, hist, y, seasonal_naive_scale(pad_left(hist), m),
                                                                H, m), "loadavg": load}
        print(key, {c: cache[key][c] for c in ("MASE", "wQL", "seconds")}, flush=True)
        with open(cache_path, "w") as f:
            json.dump(cache, f, indent=1, default=str)


def variant_summary(rows: list[dict], n_variants: int) -> list[dict]:
    """Per variant: geometric means over (panel, origin) of its MASE and wQL relative to variant 0, and the
    worst of those ratios."""
    out = []
    base = {(r["panel"], r["origin"]): r for r in rows if r["variant"] == 0}
    for j in range(n_variants):
        ratios = np.array([[r["MASE"] / base[(r["panel"], r["origin"])]["MASE"],
                            r["wQL"] / base[(r["panel"], r["origin"])]["wQL"]] for r in rows if r["variant"] == j])
        out.append({"variant": j, "overrides": next(r["overrides"] for r in rows if r["variant"] == j),
                    "mase_vs_variant0": float(np.exp(np.log(ratios[:, 0]).mean())),
                    "wql_vs_variant0": float(np.exp(np.log(ratios[:, 1]).mean())),
                    "worst_mase_vs_variant0": float(ratios[:, 0].max()),
                    **_geo_vs_ets([r for r in rows if r["variant"] == j]),
                    "mean_abs_coverage_gap": float(np.mean([abs(r["coverage_80"] - 0.8) for r in rows
                                                            if r["variant"] == j]))})
    return out


def _geo_vs_ets(rows: list[dict]) -> dict:
    """Geometric means of MASE and wQL relative to ETS over the rows that have an ETS row, and their count."""
    with_ets = [r for r in rows if "mase_vs_ets" in r]
    if not with_ets:
        return {}
    return {"pairs_with_ets": len(with_ets),
            "mase_vs_ets": float(np.exp(np.mean([np.log(r["mase_vs_ets"]) for r in with_ets]))),
            "wql_vs_ets": float(np.exp(np.mean([np.log(r["wql_vs_ets"]) for r in with_ets]))),
            "worst_mase_vs_ets": float(max(r["mase_vs_ets"] for r in with_ets)),
            "max_time_vs_ets": float(max(r["time_vs_ets"] for r in with_ets))}


def choose_by_holdout(paths: list[str]) -> dict:
    """Simulate a choice at finalize between the designs of several ``--finalize-variants`` runs (e.g. one
    per ``--patch``): per (panel, origin, variant) the run whose model has the lowest holdout error (the
    state's ``holdout_mse``, the weighted squared error of the model solved without each series' last tenth),
    scored as that run scored it. Also the choice by the test error (the best any choice could do). Each
    relative to the first run (today's design) and to ETS."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append({(r["panel"], r["origin"], r["variant"]): r for r in json.load(f)["rows"]})
    rows = []
    for key, first in runs[0].items():
        alts = [run[key] for run in runs if key in run]
        by_holdout = int(np.argmin([r.get("holdout_mse", np.inf) for r in alts]))
        by_test = int(np.argmin([r["MASE"] for r in alts]))
        for how, j in (("holdout", by_holdout), ("test", by_test)):
            r = alts[j]
            row = {"panel": key[0], "origin": key[1], "variant": key[2], "choice": how, "run": j,
                   "overrides": r["overrides"], "MASE": r["MASE"], "wQL": r["wQL"], "coverage_80": r["coverage_80"],
                   "mase_vs_today": r["MASE"] / first["MASE"], "wql_vs_today": r["wQL"] / first["wQL"],
                   "holdout_mse": [a.get("holdout_mse") for a in alts], "MASE_runs": [a["MASE"] for a in alts],
                   "cpu_seconds": r["cpu_seconds"]}
            for m in ("mase_vs_ets", "wql_vs_ets", "time_vs_ets"):
                if m in r:
                    row[m] = r[m]
            rows.append(row)
    summary = []
    for how in ("holdout", "test"):
        for v in sorted({k[2] for k in runs[0]}):
            sel = [r for r in rows if r["choice"] == how and r["variant"] == v]
            summary.append({"choice": how, "variant": v, "overrides": sel[0]["overrides"],
                            "runs_chosen": np.bincount([r["run"] for r in sel], minlength=len(runs)).tolist(),
                            **_geo_relative(sel, "today"), **_geo_vs_ets(sel)})
    return {"runs": paths, "rows": rows, "summary": summary}


def _geo_relative(rows: list[dict], to: str) -> dict:
    """Geometric means and worst of the rows' ``mase_vs_<to>`` and ``wql_vs_<to>``."""
    ratios = np.array([[r[f"mase_vs_{to}"], r[f"wql_vs_{to}"]] for r in rows])
    return {f"mase_vs_{to}": float(np.exp(np.log(ratios[:, 0]).mean())),
            f"wql_vs_{to}": float(np.exp(np.log(ratios[:, 1]).mean())),
            f"worst_mase_vs_{to}": float(ratios[:, 0].max()), f"worst_wql_vs_{to}": float(ratios[:, 1].max())}


def choose_per_step(name: str, df: pd.DataFrame, freq: str, shares: list[float], origins: int,
                    ets_cache: dict | None = None) -> list[dict]:
    """Simulate a choice at finalize between designs that differ in the long context's share of the series
    (:data:`~daskstate.algorithms.forecast.series.LONG_CONTEXT_SHARE`, one fit each): per horizon step, the
    forecast of the design whose state's holdout error at that step is lowest ("step"), or of the one whose
    holdout error over all steps is lowest ("overall"); "first" is ``shares[0]`` alone (today's design)."""
    from daskstate.algorithms.forecast import series
    from daskstate.algorithms.forecast.estimator import _BacktestTask

    H = default_prediction_length(as_offset(freq))
    before = series.LONG_CONTEXT_SHARE
    rows = []
    for k in range(origins):
        train, full = origin_split(name, df, H, k)
        outs, sse, pairs, cpu = [], [], [], []
        for share in shares:
            series.LONG_CONTEXT_SHARE = share
            t0 = time.process_time()
            fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
            outs.append(_BacktestTask(fc._model_parts(), fc._columns, fc.state_.params, Q, fc.duplicates)(full))
            cpu.append(time.process_time() - t0)
            sse.append(np.asarray(fc.holdout_sse_))
            pairs.append(np.asarray(fc.holdout_pairs_))
        series.LONG_CONTEXT_SHARE = before
        step_mse = np.array(sse) / np.maximum(np.array(pairs), 1)                      # (designs, H)
        overall_mse = np.array(sse).sum(axis=1) / np.maximum(np.array(pairs).sum(axis=1), 1)
        _, y, _, _, scale = outs[0]
        choices = {"first": np.zeros(H, dtype=int), "overall": np.full(H, int(np.argmin(overall_mse))),
                   "step": np.argmin(np.where(np.isfinite(step_mse), step_mse, np.inf), axis=0)}
        ets = (ets_cache or {}).get(f"{name}@{-k}")
        for how, chosen in choices.items():
            mean = np.stack([outs[d][2][:, h] for h, d in enumerate(chosen)], axis=1)
            qf = np.stack([outs[d][3][:, h] for h, d in enumerate(chosen)], axis=1)
            _, overall = forecast_metrics(y, mean, qf, Q, scale)
            row = {"panel": name, "origin": -k, "choice": how, "chosen": chosen.tolist(),
                   **{m: overall[m] for m in ("MASE", "wQL", "coverage_80")},
                   "holdout_mse": overall_mse.tolist(), "cpu_seconds": float(sum(cpu)),
                   "cpu_seconds_first": cpu[0]}
            if ets is not None:
                row.update(mase_vs_ets=overall["MASE"] / ets["MASE"], wql_vs_ets=overall["wQL"] / ets["wQL"],
                           time_vs_ets=row["cpu_seconds"] / ets.get("cpu_seconds", ets["seconds"]))
            rows.append(row)
    first = {(r["panel"], r["origin"]): r for r in rows if r["choice"] == "first"}
    for r in rows:
        r.update(mase_vs_first=r["MASE"] / first[(r["panel"], r["origin"])]["MASE"],
                 wql_vs_first=r["wQL"] / first[(r["panel"], r["origin"])]["wQL"])
    return rows


def neural_row(name: str, model: str, epochs: int | None, train: pd.DataFrame, full: pd.DataFrame, H: int,
               freq: str) -> dict:
    """Fit ``model`` ("deepar", "mlp"; ``epochs`` None: the defaults) and backtest it: metrics, wall and CPU
    seconds of the fit (CPU: this process, the fit runs on the local threaded scheduler), epochs run."""
    t0, c0 = time.perf_counter(), time.process_time()
    fc = daskstate.Forecaster(model=model, prediction_length=H, freq=freq, epochs=epochs).fit(train)
    fit_seconds, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    overall, _ = fc.evaluate(full, quantiles=Q)
    seconds = time.perf_counter() - t0
    # the same network without its calibrated spread (calibration_ all ones): the calibration's own effect
    calibration = fc.calibration_
    fc.calibration_ = np.ones_like(calibration)
    uncalibrated, _ = fc.evaluate(full, quantiles=Q)
    fc.calibration_ = calibration
    label = "defaults" if epochs is None else f"{epochs} epochs"
    return {"panel": name, "method": f"daskstate {model} ({label})", "seconds": seconds,
            "fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu, "epochs_run": int(fc.n_epochs_),
            "best_epoch": int(np.nanargmin(fc.validation_loss_)) if np.isfinite(fc.validation_loss_).any() else None,
            "loadavg": os.getloadavg()[0], **overall, "calibration": np.round(calibration, 3).tolist(),
            **fc.calibration_summary_, "uncalibrated": {k: uncalibrated[k] for k in ("MASE", "wQL", "coverage_80")}}


def epochs_arg(value: str) -> int | None:
    """``--deepar-epochs`` / ``--mlp-epochs``: "default" (None: the estimator's default budget) or an int."""
    return None if value == "default" else int(value)


def time_fits(panel: str, repeats: int, epochs: int | None) -> dict:
    """Fit times of deepar, mlp and linear on one real panel (default settings, ``epochs``: None the
    default budget), interleaved."""
    df, freq = load_panel(panel)
    H = default_prediction_length(as_offset(freq))
    train, _ = holdout_split(df[["item_id", "timestamp", "target"]], H)
    models = ("deepar", "mlp", "linear")
    wall: dict[str, list] = {m: [] for m in models}
    cpu: dict[str, list] = {m: [] for m in models}
    epochs_run: dict[str, list] = {m: [] for m in models[:2]}
    for _ in range(repeats):
        for model in models:
            kw = {} if model == "linear" else {"epochs": epochs}
            t0, c0 = time.perf_counter(), time.process_time()
            fc = daskstate.Forecaster(model=model, prediction_length=H, freq=freq, **kw).fit(train)
            wall[model].append(time.perf_counter() - t0)
            cpu[model].append(time.process_time() - c0)
            if model in epochs_run:
                epochs_run[model].append(fc.n_epochs_)
    med = {m: float(np.median(v)) for m, v in wall.items()}
    return {"panel": panel, "epochs": epochs, "wall_seconds": wall, "cpu_seconds": cpu, "epochs_run": epochs_run,
            "median_wall": med, "deepar_vs_mlp_wall": med["deepar"] / med["mlp"], "loadavg": os.getloadavg()}


def scale_job(n_series: int, length: int, folder: str, model: str = "linear", epochs: int | None = None) -> dict:
    """Fit and predict on a lazily generated panel (1,000 series per partition); forecasts go to Parquet.

    ``model`` "mlp" / "deepar" train ``epochs`` epochs at most (None: the default budget, ended by
    early stopping); the fit and the forecast run on the threaded scheduler of this one process, so
    its peak RSS is the driver's and the workers' together.
    """
    import dask

    ddf = synthetic_panel(n_series, length, freq="D", seed=9, series_per_partition=1000)
    kw = {} if model == "linear" else {"model": model, "epochs": epochs}
    with dask.config.set(scheduler="threads"):
        t0, c0 = time.perf_counter(), time.process_time()
        fc = daskstate.Forecaster(freq="D", prediction_length=14, **kw).fit(ddf)
        fit_seconds, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        rss_after_fit, rss_live = live_rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        fc.predict(ddf).to_parquet(os.path.join(folder, f"forecast-{model}-{n_series}"))
        predict_seconds, predict_cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu, "predict_seconds": predict_seconds,
           "predict_cpu_seconds": predict_cpu, "points": n_series * length, "state_bytes": fc.state_.nbytes,
           "rss_after_fit_mb": rss_after_fit, "rss_after_fit_trimmed_mb": rss_live,
           "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    if model != "linear":
        out.update(epochs_run=int(fc.n_epochs_), validation_loss=[float(v) for v in fc.validation_loss_])
    return out


def ets_scale_sample(n_sample: int, length: int) -> dict:
    """Per-series ETS (best AICc) on the first ``n_sample`` series of the scale run's panel (the same generator,
    seed and block size): CPU seconds per series, so the ETS time of any size is that many series times it."""
    ddf = synthetic_panel(n_sample, length, freq="D", seed=9, series_per_partition=1000)
    full = ddf.compute()
    _, hist, _ = series_arrays(full, 14)
    c0 = time.process_time()
    for h in hist:
        ets_forecast(h, 14, 7)
    cpu = time.process_time() - c0
    return {"ets_sample_series": len(hist), "ets_cpu_seconds": cpu, "ets_cpu_per_series": cpu / len(hist),
            "loadavg": os.getloadavg()[0]}


def live_rss_mb() -> tuple[float, float]:
    """This process's RSS (MiB), and again after ``gc.collect()`` and glibc's ``malloc_trim(0)``: what is
    still in use, without the freed heap the allocator keeps (the second equals the first without glibc)."""
    import ctypes
    import gc

    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss / 2**20
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return before, proc.memory_info().rss / 2**20


def worker_environ() -> dict[str, str]:
    """The environment Dask's nanny gives every worker process it starts (``distributed.nanny.pre-spawn-environ``:
    ``MALLOC_TRIM_THRESHOLD_=65536``, one BLAS / OpenMP thread), or {} without ``distributed``."""
    try:
        import dask
        import distributed  # noqa: F401  (registers the distributed config)
    except ImportError:
        return {}
    return {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()}


def run_scale(sizes: list[int], length: int, models: tuple[str, ...] = ("linear",), epochs: int | None = None,
              results_name: str | None = None, load_before: tuple | None = None) -> list[dict]:
    """Every model at every size, each in a fresh process (its peak RSS); ``results_name``: the rows so far
    are written after every run, so a long run that is stopped keeps what it measured."""
    import tempfile

    from benchmarks.common import run_measured

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n, model in ((n, m) for n in sizes for m in models):
            load = os.getloadavg()
            out = run_measured(scale_job, timeout=6 * 3600, n_series=n, length=length, folder=folder, model=model,
                               epochs=epochs)
            row = {"model": model, "series": n, "length": length, "epochs": None if model == "linear" else epochs,
                   "ok": out["ok"], "peak_rss_mb": out.get("peak_rss_mb"), "loadavg_start": load,
                   "loadavg": os.getloadavg()[0]}
            row.update(out.get("result", {}) if out["ok"] else {"error": out.get("error")})
            print(row, flush=True)
            rows.append(row)
            if results_name:
                write_results(results_name, {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                             "scale": rows})
    return rows


def set_constant(spec: str) -> str:
    """``--patch MODULE:NAME=JSON``: set the module constant (it must exist) and return the spec."""
    import importlib

    target, _, value = spec.partition("=")
    module, _, name = target.partition(":")
    mod = importlib.import_module(module)
    if not name or not hasattr(mod, name):
        raise SystemExit(f"--patch {spec!r}: {module} has no constant {name!r}")
    setattr(mod, name, json.loads(value))
    return spec


def panel_at_origin(panel: str, origin: int, patches: list[str]
                    ) -> tuple[pd.DataFrame, str, int, int, pd.DataFrame, pd.DataFrame]:
    """For the diagnosis scripts: each ``--patch`` constant set, then ``panel``'s (frame, freq, horizon, season,
    train, full) at ``origin`` (0, -1, ...: windows before the benchmark's own)."""
    for spec in patches:
        print("patched", set_constant(spec))
    df, freq = panels([panel])[panel]
    offset = as_offset(freq)
    H, m = default_prediction_length(offset), (season_lengths(offset) or [1])[0]
    train, full = origin_split(panel, df, H, -origin)
    return df, freq, H, m, train, full


def recorded_ets_rows(paths: str, synthetic_series: int) -> dict[str, dict]:
    """Panel -> the ETS row of the results files ``paths`` (comma-separated), marked 'reused_from'."""
    recorded = {}
    for path in filter(None, paths.split(",")):
        with open(path) as f:
            old = json.load(f)
        for r in old["rows"]:
            if r["method"].startswith("statsmodels ETS") and old.get("synthetic_series", 100) == synthetic_series:
                recorded[r["panel"]] = {**r, "reused_from": {"file": os.path.basename(path), "when": old.get("when"),
                                                             "loadavg_before": old.get("loadavg_before")}}
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panels", default="aus_arrivals,aus_accommodation,prisonLF,elecdemand,"
                        "synthetic_daily,synthetic_monthly,us_employment,visnights")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ets", action="store_true")
    parser.add_argument("--mlp-epochs", type=epochs_arg, default=None,
                        help="0: no mlp rows; 'default' (the default): the estimator's default budget")
    parser.add_argument("--deepar-epochs", type=epochs_arg, default=0,
                        help="0 (the default): no deepar rows; 'default': the estimator's default budget")
    parser.add_argument("--synthetic-series", type=int, default=100)
    parser.add_argument("--scale", default="", help="comma-separated series counts for the scale run "
                        "(synthetic daily, --length points each); skips the accuracy panels")
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--scale-ets-sample", type=int, default=0, help="with --scale: also time per-series ETS on "
                        "this many of the panel's series (CPU seconds per series; the linear fit + predict CPU time "
                        "relative to that times the series count)")
    parser.add_argument("--scale-models", default="linear", help="comma-separated models of the scale run "
                        "(linear, mlp, deepar)")
    parser.add_argument("--scale-epochs", type=epochs_arg, default="default", help="epochs at most of the neural "
                        "models in the scale run ('default': the estimator's budget, ended by early stopping)")
    parser.add_argument("--worker-environ", action="store_true", help="scale run: the measured processes get "
                        "the environment Dask's nanny gives its workers (MALLOC_TRIM_THRESHOLD_=65536, one BLAS "
                        "thread), as on a distributed cluster; without it, glibc keeps freed heap and a process's "
                        "peak RSS creeps up with the partitions it has run")
    parser.add_argument("--results-name", default="forecast")
    parser.add_argument("--time-fit", default="", help="a real panel: only time the fits of deepar, mlp, linear")
    parser.add_argument("--reuse-ets", default="", help="results files (comma-separated) whose ETS rows are reused for the panels "
                        "it has (marked 'reused_from' with that run's date and load); the others are fitted")
    parser.add_argument("--elec-drop-days", default="", help="comma-separated day counts: backtest elecdemand "
                        "(linear and seasonal naive, no ETS) with its last N days dropped, so that its 7 daily "
                        "origins fall in other weeks than Christmas (0: the default backtest)")
    parser.add_argument("--finalize-variants", default="", help="JSON list of finalize overrides of the linear "
                        "model (e.g. '[{}, {\"wd\": 0.01}]'): compare them, solved from one state per panel and "
                        "origin, at --origins origins (linear only, no ETS)")
    parser.add_argument("--ets-cache", default="", help="JSON file of ETS rows per (panel, origin) (see "
                        "ets_at_origins): with --finalize-variants, the variants relative to ETS where it has a row")
    parser.add_argument("--ets-peer", choices=sorted(ETS_METHOD), default="statsmodels",
                        help="the per-series ETS fitted by this run (autoets: statsforecast, in an environment "
                        "with pandas < 3)")
    parser.add_argument("--fit-ets-origins", action="store_true", help="fit per-series ETS at --origins origins of "
                        "--panels into --ets-cache (origin 0 from --reuse-ets where it has the panel), and stop")
    parser.add_argument("--origins", type=int, default=1, help="with --finalize-variants: backtest origins, "
                        "the benchmark's own and the ones 1 .. N-1 windows before it")
    parser.add_argument("--choose-by-holdout", default="", help="comma-separated results files of "
                        "--finalize-variants runs (the first: today's design): per (panel, origin, variant) the "
                        "run of lowest holdout error, as a choice at finalize would make it (see choose_by_holdout)")
    parser.add_argument("--choose-per-step", default="", help="comma-separated shares of the series the long "
                        "context reads (the first: today's design): fit each at --origins origins and choose per "
                        "horizon step / overall by the state's holdout error (see choose_per_step)")
    parser.add_argument("--keep-last", type=int, default=0, help="with --finalize-variants: keep only each series' "
                        "last N points (shorter series, where e.g. the long context's fallback applies)")
    parser.add_argument("--patch", action="append", default=[], help="MODULE:NAME=JSON: set a module constant "
                        "before the run (e.g. daskstate.algorithms.forecast.linear:STUDENT_DF=5.0), to compare a "
                        "model change with the model before it from one commit; repeatable")
    args = parser.parse_args()
    global ETS_PEER
    ETS_PEER = args.ets_peer
    args.patched = [set_constant(p) for p in args.patch]
    load_before = os.getloadavg()
    ets_cache: dict = {}
    if args.ets_cache and os.path.exists(args.ets_cache):
        with open(args.ets_cache) as f:
            ets_cache = json.load(f)
    if args.choose_by_holdout:
        chosen = choose_by_holdout(args.choose_by_holdout.split(","))
        print(markdown_table([r for r in chosen["rows"] if r["origin"] == 0 and r["choice"] == "holdout"],
                             ["panel", "variant", "run", "mase_vs_today", "wql_vs_today", "mase_vs_ets", "wql_vs_ets",
                              "holdout_mse", "MASE_runs"]))
        print(markdown_table(chosen["summary"], list(chosen["summary"][0])))
        path = write_results(args.results_name, {"loadavg": os.getloadavg(), **chosen})
        print(f"wrote {path}")
        return
    if args.choose_per_step:
        shares = [float(v) for v in args.choose_per_step.split(",")]
        rows = []
        for name, (df, freq) in panels(args.panels.split(","), args.synthetic_series).items():
            rows += choose_per_step(name, df, freq, shares, args.origins, ets_cache)
            print(markdown_table([r for r in rows if r["panel"] == name],
                                 ["panel", "origin", "choice", "chosen", "MASE", "wQL", "mase_vs_first",
                                  "wql_vs_first", "mase_vs_ets", "wql_vs_ets"]), flush=True)
        summary = []
        for how in ("first", "overall", "step"):
            sel = [r for r in rows if r["choice"] == how]
            summary.append({"choice": how, **_geo_relative(sel, "first"), **_geo_vs_ets(sel)})
        print(markdown_table(summary, list(summary[0])))
        path = write_results(args.results_name, {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                                 "shares": shares, "rows": rows, "summary": summary,
                                                 "origins": args.origins})
        print(f"wrote {path}")
        return
    if args.fit_ets_origins:
        recorded = recorded_ets_rows(args.reuse_ets, args.synthetic_series)
        for name, (df, freq) in panels(args.panels.split(","), args.synthetic_series).items():
            ets_at_origins(name, df, freq, args.origins, ets_cache, args.ets_cache, recorded.get(name))
        return
    if args.finalize_variants:
        variants = json.loads(args.finalize_variants)
        rows = []
        for name, (df, freq) in panels(args.panels.split(","), args.synthetic_series).items():
            if args.keep_last:
                df = df.groupby("item_id", sort=False).tail(args.keep_last)
            rows += compare_finalize(name, df, freq, variants, args.origins, ets_cache)
            print(markdown_table([r for r in rows if r["panel"] == name],
                                 ["panel", "origin", "overrides", "MASE", "wQL", "coverage_80", "mase_vs_ets",
                                  "wql_vs_ets", "mase_vs_snaive"]), flush=True)
        summary = variant_summary(rows, len(variants))
        print(markdown_table(summary, list(summary[0])))
        path = write_results(args.results_name, {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                                 "rows": rows, "summary": summary, "origins": args.origins,
                                                 "patched": args.patched})
        print(f"wrote {path}")
        return
    if args.elec_drop_days:
        (df, freq), = panels(["elecdemand"]).values()
        rows = []
        for days in (int(v) for v in args.elec_drop_days.split(",")):
            part = df.iloc[: len(df) - days * 48]
            first = str(part["timestamp"].iloc[-ELEC_ORIGINS * 48])[:10]
            for r in run_panel("elecdemand", part, freq, args.repeats, False, 0):
                rows.append({**r, "dropped_days": days, "first_origin_day": first})
        print(markdown_table(rows, ["dropped_days", "first_origin_day", "method", "MASE", "wQL", "coverage_80",
                                    "mase_vs_snaive"]))
        path = write_results(args.results_name, {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                                 "rows": rows})
        print(f"wrote {path}")
        return
    if args.time_fit:
        result = time_fits(args.time_fit, args.repeats, args.deepar_epochs or None)
        print(result)
        print(f"wrote {write_results(args.results_name, {'loadavg_before': load_before, 'fit_timing': result})}")
        return
    if args.scale:
        if args.worker_environ:
            os.environ.update(worker_environ())  # inherited by the measured (spawned) processes
        rows = run_scale([int(v) for v in args.scale.split(",")], args.length, tuple(args.scale_models.split(",")),
                         args.scale_epochs, args.results_name, load_before)
        if args.scale_ets_sample:
            ets = ets_scale_sample(args.scale_ets_sample, args.length)
            print(ets)
            for r in rows:
                if r.get("ok") and r.get("fit_cpu_seconds") is not None:
                    r["time_vs_ets"] = ((r["fit_cpu_seconds"] + r["predict_cpu_seconds"])
                                        / (ets["ets_cpu_per_series"] * r["series"]))
                    r["ets"] = ets
        path = write_results(args.results_name, {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                                 "scale": rows})
        print(f"wrote {path}")
        return
    rows = []
    names = args.panels.split(",")
    recorded = recorded_ets_rows(args.reuse_ets, args.synthetic_series)
    for name, (df, freq) in panels(names, args.synthetic_series).items():
        # --no-ets with --reuse-ets: the recorded ETS rows where there are some, no new ETS fits
        rows += run_panel(name, df, freq, args.repeats, not args.no_ets or name in recorded, args.mlp_epochs,
                          recorded.get(name), args.deepar_epochs)
        print(markdown_table([r for r in rows if r["panel"] == name],
                             ["panel", "method", "MASE", "wQL", "sMAPE", "coverage_80", "seconds"]), flush=True)
        # written after every panel, so an interrupted run keeps what it measured
        path = write_results(args.results_name, {
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "rows": rows,
            "complete": name == names[-1], "synthetic_series": args.synthetic_series})
    cols = ["panel", "method", "series", "MASE", "wQL", "sMAPE", "RMSE", "coverage_80", "seconds",
            "fit_cpu_seconds", "epochs_run", "mase_vs_snaive", "mase_vs_ets", "wql_vs_ets", "time_vs_ets"]
    print(markdown_table(rows, cols))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
