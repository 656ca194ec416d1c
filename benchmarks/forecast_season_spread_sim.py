"""Simulate a seasonal (per horizon step) term in the linear forecaster's per-window spread (fcmon, issue 13).

fpp2_monthly's wQL is souvenirs' (94% of the panel's sum of |y|): a multiplicative seasonal series whose
December errors are ~3x its other months', while a window's spread is the same at every phase of the season
(``sigma_h * noise * scale * sqrt(a_h + b_h z)``, ``z`` one number per window). The candidates here add a z that
varies with the target step, so the line ``E[r^2 | z] = a_h + b_h z_w + c_h z_s`` (a 3 x 3 solve per step, the
fit a state's per-step z-weighted sums would give exactly) can make the spread follow the target's seasonal
level; ``r`` is the in-sample residual in noise units of the final coefficients, as in
:mod:`benchmarks.forecast_spread_sim`, whose recording and scoring this reuses. The candidate step features:

- ``s2``: ``(1 + s)^2`` (at most 25), ``s`` the window's seasonal index of the target's phase (the design's
  seasonal index column, its long history's shape);
- ``m2``: the square of the context's value one cycle before the target (scaled units, at most 25; 1 if missing):
  the last cycle's level of that phase.

A spec is ``[[z names], floor]``; ``w2`` is today's window feature. Today's spread (``w2`` at 0.25) is the base,
and each spec replaces it (the forecast mean does not move).

Usage::

    python -m benchmarks.forecast_season_spread_sim --origins 3 --results-name forecast_fcmon_season_sim \\
        --panels aus_arrivals,aus_accommodation,prisonLF,visnights,fpp2_quarterly,fpp2_monthly,fpp2_uschange,\\
usmacro_changes,us_employment,synthetic_monthly,synthetic_daily,elecdemand
"""

from __future__ import annotations

import threading
import time

import numpy as np

import daskstate
from benchmarks.bench_forecast import Q, origin_split
from benchmarks.forecast_spread_sim import residuals_in_noise_units, simulate
from daskstate.algorithms.forecast import estimator, linear
from daskstate.algorithms.forecast.local import cycle_index
from daskstate.algorithms.forecast.series import as_offset, default_prediction_length
from daskstate.algorithms.forecast.windows import noise_scale

DEFAULT_SPECS = [[["w2", "s2"], 0.25], [["w2", "m2"], 0.25], [["s2"], 0.25], [["m2"], 0.25]]

_LOCK = threading.Lock()
_MODE: dict = {"collect": None, "apply": None}
_fold_windows = linear.ForecastLinearState._fold_windows
_linear_forecast = estimator.linear_forecast


def step_features(w, H: int, season: int, long_season: int) -> dict[str, np.ndarray]:
    """Candidate z's (n, H) of windows ``w`` (see the module docstring); window features broadcast over steps."""
    n = len(w.noise)
    rw = noise_scale(w.context, season) / w.noise
    out = {"w2": np.broadcast_to(np.minimum(rw**2, 25.0)[:, None], (n, H))}
    m = long_season or season
    if m > 1:
        index = cycle_index(w.context, m)[:, np.arange(H) % m]
        out["s2"] = np.minimum((1.0 + np.nan_to_num(index)) ** 2, 25.0)
        L = w.context.shape[1]
        h = np.arange(1, H + 1)
        lag = m * -(-h // m) - h + 1
        last = w.context[:, L - lag] if lag.max() <= L else np.full((n, H), np.nan)
        out["m2"] = np.minimum(np.where(np.isnan(last), 1.0, last**2), 25.0)
    else:
        out["s2"] = out["m2"] = np.ones((n, H))
    return out


def _recording_fold(self, w, first_target, holdout_start, static=None):
    _fold_windows(self, w, first_target, holdout_start, static)
    record = _MODE["collect"]
    if record is None:
        return
    _, r2 = residuals_in_noise_units(self, w, static, record["coef"])
    z = step_features(w, self.horizon, self.season, self.long_season)
    with _LOCK:
        record["r2"].append(r2)
        for k, v in z.items():
            record["z"].setdefault(k, []).append(np.array(v))


def _scaled_forecast(model, w, lags, offset, harmonics, static=None):
    spread = _MODE["apply"]
    if spread is None:
        return _linear_forecast(model, w, lags, offset, harmonics, static)
    mean, std = _linear_forecast({**model, "spread_": None}, w, lags, offset, harmonics, static)
    z = step_features(w, mean.shape[1], spread["season"], spread["long_season"])
    var = spread["coef"][None, :, 0] + sum(spread["coef"][None, :, j + 1] * z[name]
                                           for j, name in enumerate(spread["z"]))
    return mean, std * np.sqrt(np.maximum(var, spread["floor"][None, :]) / spread["mean"][None, :])


def fit_step_variance(r2: np.ndarray, zs: list[np.ndarray]) -> np.ndarray:
    """(H, 1 + k): per step, least squares of ``r2`` (N, H; NaN: no pair) on ``[1, z_1[:, h], ...]``."""
    H = r2.shape[1]
    out = np.zeros((H, 1 + len(zs)))
    for h in range(H):
        ok = ~np.isnan(r2[:, h])
        D = np.column_stack([np.ones(ok.sum())] + [z[ok, h] for z in zs])
        out[h] = np.linalg.lstsq(D.T @ D, D.T @ r2[ok, h], rcond=None)[0]
    return out


def run_pair(name: str, df, freq: str, k: int, specs: list, ets: dict | None) -> list[dict]:
    H = default_prediction_length(as_offset(freq))
    train, full = origin_split(name, df, H, k)
    c0 = time.process_time()
    fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train).finalize(combine="convex")
    base, _ = fc.evaluate(full, quantiles=Q)
    record = {"coef": fc.coef_, "r2": [], "z": {}}
    _MODE["collect"] = record
    try:
        daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    finally:
        _MODE["collect"] = None
    st = fc.state_
    r2 = np.concatenate(record["r2"])
    zs = {key: np.concatenate(v) for key, v in record["z"].items()}
    sse = linear._sse(fc.coef_, (st.gram, st.xty, st.yty, st.pairs))
    check = float(np.max(np.abs(np.nansum(r2, axis=0) - sse) / np.maximum(sse, 1e-300)))
    mean_r2 = np.nanmean(r2, axis=0)
    scores = ("MASE", "wQL", "coverage_80")
    rows = [{"panel": name, "origin": -k, "spec": "base", **{m: base[m] for m in scores}, "sse_check": check,
             "fit_cpu_seconds": time.process_time() - c0}]
    for spec in specs:
        names, floor = spec[0], spec[1]
        coef = fit_step_variance(r2, [zs[z] for z in names])
        _MODE["apply"] = {"z": names, "coef": coef, "floor": floor * mean_r2, "mean": mean_r2,
                          "season": st.season, "long_season": st.long_season}
        try:
            res, _ = fc.evaluate(full, quantiles=Q)
        finally:
            _MODE["apply"] = None
        rows.append({"panel": name, "origin": -k, "spec": "+".join(names) + f"@{floor}",
                     **{m: res[m] for m in scores},
                     "wql_vs_base": res["wQL"] / base["wQL"], "mase_vs_base": res["MASE"] / base["MASE"],
                     "relative_coef_first_step": (coef[0] / mean_r2[0]).round(4).tolist(),
                     "relative_coef_last_step": (coef[-1] / mean_r2[-1]).round(4).tolist()})
    for r in rows:
        if ets:
            r["wql_vs_ets"], r["mase_vs_ets"] = r["wQL"] / ets["wQL"], r["MASE"] / ets["MASE"]
    return rows


def main() -> None:
    simulate(__doc__.splitlines()[0], "forecast_fcmon_season_sim", DEFAULT_SPECS, _recording_fold, _scaled_forecast,
             run_pair)


if __name__ == "__main__":
    main()
