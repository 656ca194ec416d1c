"""Simulate a per-window spread for the linear forecaster before building it (fcspread, issue 13).

Today a window's spread at step ``h`` is ``sigma_h * noise * scale``: one residual variance per step in units of
each window's noise scale. The idea simulated here lets the data choose how the spread follows a window feature
``z``: ``E[r^2 | z] = a_h + b_h z`` (``r`` the in-sample residual in noise units, the fit's weights unchanged),
so the window's spread becomes ``sqrt(max(a_h + b_h z, floor) / mean_h r^2) * sigma_h * noise * scale`` (the
calibration on top, as today; the forecast mean does not move). In a state the least-squares ``(a_h, b_h)``
would come exactly from one z-weighted copy of the normal-equation sums; here, per (panel, origin):

1. the fit as today (``combine="convex"``), scored;
2. the same fit again with ``ForecastLinearState._fold_windows`` wrapped to record, per (window, step) pair, the
   final model's ``r^2 = w (y - x.coef)^2`` and the window's candidate z's (the sum of ``r^2`` per step is
   checked against the state's ``_sse``: ``sse_check``);
3. per spec, ``(a_h, b_h)`` fitted as a state would fit it, and the backtest scored again with the test windows'
   spreads scaled (``estimator.linear_forecast`` wrapped).

The z candidates (ratios clipped, in the window's noise units): ``l*`` the local smoother's one-step RMSE over
the noise scale, ``w*`` the noise scale over the whole context over the noise scale (its last ``scale_points``);
``*2`` squared, ``*1`` plain, ``*log`` the logarithm. A spec is ``[[z names], floor (share of the mean r^2),
option]``, option ``"pooled"`` (one relative slope for all steps), ``"held"`` (the slope from the holdout pairs)
or ``"full<share>"`` (the slope from windows whose context is at least that share observed).

Usage::

    python -m benchmarks.forecast_spread_sim --origins 3 --results-name forecast_fcspread_sim \\
        --panels aus_arrivals,aus_accommodation,prisonLF,visnights,fpp2_quarterly,fpp2_monthly,fpp2_uschange,\\
usmacro_changes,us_employment,synthetic_monthly,synthetic_daily,elecdemand \\
        --specs '[[["w2"], 0.25], [["l2", "w2"], 0.1]]'
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable

import numpy as np

import daskstate
from benchmarks.bench_forecast import Q, origin_split, panels
from benchmarks.common import write_results
from daskstate.algorithms.forecast import estimator, linear
from daskstate.algorithms.forecast.local import local_fit
from daskstate.algorithms.forecast.series import as_offset, default_prediction_length
from daskstate.algorithms.forecast.windows import (
    NOISE_FLOOR,
    lagged_values,
    noise_scale,
    step_design,
)

DEFAULT_SPECS = [[["l2"], 0.1], [["w2"], 0.1], [["llog"], 0.1], [["wlog"], 0.1], [["l2", "w2"], 0.1],
                 [["l1"], 0.1], [["w1"], 0.1], [["llog", "wlog"], 0.1], [["w2"], 0.25], [["w2"], 0.5],
                 [["w2c9"], 0.1], [["w2c4"], 0.1], [["w2c4", "l2c4"], 0.1], [["w2"], 0.25, "pooled"],
                 [["l2"], 0.25, "pooled"], [["w2"], 0.25, "held"], [["w2"], 0.25, "full0.5"],
                 [["w2"], 0.25, "full0.99"]]

_LOCK = threading.Lock()
_MODE: dict = {"collect": None, "apply": None}
_fold_windows = linear.ForecastLinearState._fold_windows
_linear_forecast = estimator.linear_forecast


def z_candidates(w, season: int, local_season: int) -> dict[str, np.ndarray]:
    """The candidate window features (n,) of windows ``w`` (see the module docstring)."""
    fit = local_fit(w.context, max(local_season, 1))
    rmse = np.sqrt(fit["sse"] / np.maximum(fit["count"], 1) + NOISE_FLOOR**2)
    rl, rw = rmse / w.noise, noise_scale(w.context, season) / w.noise
    return {"l2": np.minimum(rl**2, 25.0), "w2": np.minimum(rw**2, 25.0), "l1": np.minimum(rl, 5.0),
            "w1": np.minimum(rw, 5.0), "llog": np.clip(np.log(rl), -2, 2), "wlog": np.clip(np.log(rw), -2, 2),
            "w2c9": np.minimum(rw**2, 9.0), "w2c4": np.minimum(rw**2, 4.0), "l2c4": np.minimum(rl**2, 4.0),
            "observed": np.mean(~np.isnan(w.context), axis=1)}


def residuals_in_noise_units(state, w, static, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, r2), both (n, H): which (window, step) pairs of windows ``w`` the state fits, and the squared
    residual of ``coef`` on each in the window's noise units (NaN where there is no pair)."""
    lagged = lagged_values(w, state.lags)
    extra = step_design(w, state.offset, state.harmonics, static, state.long_season, state.local_season,
                        state.level_points)
    mask = ~np.isnan(w.target) & ~np.isnan(extra).any(axis=2)
    X = np.concatenate([np.broadcast_to(lagged[:, None, :], extra.shape[:2] + (lagged.shape[1],)), extra], axis=2)
    pred = np.einsum("nhp,hp->nh", np.where(mask[:, :, None], X, 0.0), coef)
    return mask, np.where(mask, (np.where(mask, w.target, 0.0) - pred) ** 2 / w.noise[:, None] ** 2, np.nan)


def _recording_fold(self, w, first_target, holdout_start, static=None):
    _fold_windows(self, w, first_target, holdout_start, static)
    record = _MODE["collect"]
    if record is None:
        return
    mask, r2 = residuals_in_noise_units(self, w, static, record["coef"])
    held = mask & (w.position[:, None] + np.arange(1, self.horizon + 1)[None, :] >= holdout_start[:, None])
    z = z_candidates(w, self.season, self.local_season)
    with _LOCK:
        record["r2"].append(r2)
        record["held"].append(held)
        for k, v in z.items():
            record["z"].setdefault(k, []).append(v)


def _scaled_forecast(model, w, lags, offset, harmonics, static=None):
    mean, std = _linear_forecast(model, w, lags, offset, harmonics, static)
    spread = _MODE["apply"]
    if spread is None:
        return mean, std
    design = np.column_stack([np.ones(len(mean))] + [f(w) for f in spread["z"]])
    var = design @ spread["coef"].T                                                       # (n, H)
    return mean, std * np.sqrt(np.maximum(var, spread["floor"][None, :]) / spread["mean"][None, :])


def fit_variance(r2: np.ndarray, Z: np.ndarray, pooled: bool = False) -> np.ndarray:
    """(H, 1 + k): per step, least squares of ``r2`` (N, H; NaN: no pair) on ``[1, Z]``, the fit a state's
    z-weighted sums give exactly; ``pooled`` (one z): one slope relative to each step's mean for all steps."""
    H = r2.shape[1]
    out = np.zeros((H, 1 + Z.shape[1]))
    ok = ~np.isnan(r2)
    if pooled:
        num = den = 0.0
        for h in range(H):
            y, z = r2[ok[:, h], h] / r2[ok[:, h], h].mean(), Z[ok[:, h], 0] - Z[ok[:, h], 0].mean()
            num, den = num + z @ (y - 1.0), den + z @ z
        slope = num / den if den > 0 else 0.0
        for h in range(H):
            m = r2[ok[:, h], h].mean()
            out[h] = [m * (1.0 - slope * Z[ok[:, h], 0].mean()), m * slope]
        return out
    for h in range(H):
        D = np.column_stack([np.ones(ok[:, h].sum()), Z[ok[:, h]]])
        out[h] = np.linalg.lstsq(D.T @ D, D.T @ r2[ok[:, h], h], rcond=None)[0]
    return out


def spec_variance(spec: list, r2: np.ndarray, zs: dict[str, np.ndarray], held: np.ndarray) -> tuple[np.ndarray, str]:
    """(a_h, b_h) of ``spec`` (see the module docstring) in units of all pairs' r^2, and its label."""
    names, floor = spec[0], spec[1]
    option = spec[2] if len(spec) > 2 else ""
    Z = np.column_stack([zs[z] for z in names])
    fitted = r2
    if option == "held":
        fitted = np.where(held, r2, np.nan)
    elif option.startswith("full"):
        fitted = np.where((zs["observed"] >= float(option[4:]))[:, None], r2, np.nan)
    empty = np.isnan(fitted).all(axis=0)
    fitted[:, empty] = r2[:, empty]
    coef = fit_variance(fitted, Z, option == "pooled")
    if fitted is not r2:  # the slope relative to the subset's mean r^2, the level of all pairs
        coef = coef / np.nanmean(fitted, axis=0)[:, None] * np.nanmean(r2, axis=0)[:, None]
    return coef, "+".join(names) + f"@{floor}" + (f"/{option}" if option else "")


def run_pair(name: str, df, freq: str, k: int, specs: list, ets: dict | None) -> list[dict]:
    """The base model and every spec at origin ``-k`` of panel ``name``."""
    H = default_prediction_length(as_offset(freq))
    train, full = origin_split(name, df, H, k)
    c0 = time.process_time()
    fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train).finalize(combine="convex")
    base, _ = fc.evaluate(full, quantiles=Q)
    record = {"coef": fc.coef_, "r2": [], "held": [], "z": {}}
    _MODE["collect"] = record
    try:
        daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    finally:
        _MODE["collect"] = None
    r2, held = np.concatenate(record["r2"]), np.concatenate(record["held"])
    zs = {key: np.concatenate(v) for key, v in record["z"].items()}
    st = fc.state_
    sse = linear._sse(fc.coef_, (st.gram, st.xty, st.yty, st.pairs))
    mean_r2 = np.nanmean(r2, axis=0)
    check = float(np.max(np.abs(np.nansum(r2, axis=0) - sse) / np.maximum(sse, 1e-300)))
    scores = ("MASE", "wQL", "coverage_80")
    rows = [{"panel": name, "origin": -k, "spec": "base", **{m: base[m] for m in scores}, "sse_check": check,
             "pairs": int(np.sum(~np.isnan(r2))), "fit_cpu_seconds": time.process_time() - c0}]
    for spec in specs:
        coef, label = spec_variance(spec, r2, zs, held)
        fns: list[Callable] = [lambda w, z=z: z_candidates(w, st.season, st.local_season)[z] for z in spec[0]]
        _MODE["apply"] = {"z": fns, "coef": coef, "floor": spec[1] * mean_r2, "mean": mean_r2}
        try:
            res, _ = fc.evaluate(full, quantiles=Q)
        finally:
            _MODE["apply"] = None
        var_in = np.column_stack([np.ones(len(r2))] + [zs[z] for z in spec[0]]) @ coef.T
        rows.append({"panel": name, "origin": -k, "spec": label, **{m: res[m] for m in scores},
                     "wql_vs_base": res["wQL"] / base["wQL"], "mase_vs_base": res["MASE"] / base["MASE"],
                     "relative_coef_first_step": (coef[0] / mean_r2[0]).round(4).tolist(),
                     "relative_coef_last_step": (coef[-1] / mean_r2[-1]).round(4).tolist(),
                     "floored_share": float(np.mean(var_in < spec[1] * mean_r2[None, :]))})
    for r in rows:
        if ets:
            r["wql_vs_ets"], r["mase_vs_ets"] = r["wQL"] / ets["wQL"], r["MASE"] / ets["MASE"]
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per spec: geometric mean, worst and best wQL relative to today over the pairs, the mean coverage and its
    mean distance from 0.8, and the geometric mean wQL relative to ETS over the pairs that have an ETS row."""
    out = []
    for label in dict.fromkeys(r["spec"] for r in rows):
        sel = [r for r in rows if r["spec"] == label]
        ratios = np.array([r.get("wql_vs_base", 1.0) for r in sel])
        worst = sel[int(np.argmax(ratios))]
        ets = [r["wql_vs_ets"] for r in sel if "wql_vs_ets" in r]
        out.append({"spec": label, "wql_vs_base": float(np.exp(np.log(ratios).mean())),
                    "worst_wql_vs_base": float(ratios.max()), "worst_pair": f"{worst['panel']}@{worst['origin']}",
                    "best_wql_vs_base": float(ratios.min()),
                    "max_mase_change": float(max(abs(r.get("mase_vs_base", 1.0) - 1.0) for r in sel)),
                    "mean_coverage": float(np.mean([r["coverage_80"] for r in sel])),
                    "mean_abs_coverage_gap": float(np.mean([abs(r["coverage_80"] - 0.8) for r in sel])),
                    "pairs_with_ets": len(ets), "wql_vs_ets": float(np.exp(np.mean(np.log(ets)))) if ets else None})
    return out


def simulate(description: str, default_name: str, default_specs: list, recording_fold: Callable,
             scaled_forecast: Callable, run_pair: Callable) -> None:
    """The command line shared by the spread simulations: every (panel, origin) through ``run_pair`` with the
    state's fold and the estimator's forecast replaced by the simulation's recording and scaling versions."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--panels", required=True)
    parser.add_argument("--origins", type=int, default=3)
    parser.add_argument("--ets-cache", default="benchmarks/results/forecast_ets_origins.json")
    parser.add_argument("--specs", default=json.dumps(default_specs))
    parser.add_argument("--results-name", default=default_name)
    args = parser.parse_args()
    specs = json.loads(args.specs)
    with open(args.ets_cache) as f:
        ets_cache = json.load(f)
    load_before = os.getloadavg()
    linear.ForecastLinearState._fold_windows = recording_fold
    estimator.linear_forecast = scaled_forecast
    rows: list[dict] = []
    for name, (df, freq) in panels(args.panels.split(",")).items():
        for k in range(args.origins):
            rows += run_pair(name, df, freq, k, specs, ets_cache.get(f"{name}@{-k}"))
            print(name, -k, {r["spec"]: round(r.get("wql_vs_base", r["wQL"]), 4) for r in rows[-len(specs) - 1:]},
                  {r["spec"]: round(r["coverage_80"], 3) for r in rows[-len(specs) - 1:]}, flush=True)
    summary = summarise(rows)
    for s in summary:
        print(s)
    path = write_results(args.results_name, {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                             "origins": args.origins, "specs": specs, "rows": rows,
                                             "summary": summary})
    print(f"wrote {path}")


def main() -> None:
    simulate(__doc__.splitlines()[0], "forecast_fcspread_sim", DEFAULT_SPECS, _recording_fold, _scaled_forecast,
             run_pair)


if __name__ == "__main__":
    main()
