"""How far below seasonal naive any of several forecasters gets on a panel, even picked per series with hindsight.

Issue 13 asks for MASE 20% below seasonal naive on every panel. For each (panel, backtest origin) this scores
seasonal naive, naive, drift, per-series ETS (best AICc; not on elecdemand, whose ETS takes minutes) and the
linear model, and the *oracle*: for every series the method with the lowest test MASE, chosen on the test
itself. If even the oracle's MASE is not 20% below seasonal naive's, none of these methods, nor any choice among
them, reaches the target on that panel. All MASE values are relative to seasonal naive's.

    python -m benchmarks.forecast_oracle --panels aus_accommodation,visnights --origins 3
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import daskstate
from benchmarks.bench_forecast import (
    Q,
    ets_forecast,
    origin_split,
    pad_left,
    panels,
    seasonal_naive,
    series_arrays,
)
from daskstate.algorithms.forecast.metrics import seasonal_naive_scale
from daskstate.algorithms.forecast.series import (
    as_offset,
    default_prediction_length,
    season_lengths,
)

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def per_item_mase(y: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.nanmean(np.abs(y - mean), axis=1) / scale


def simple_forecasts(hist: list[np.ndarray], H: int) -> dict[str, np.ndarray]:
    """Naive (last value) and drift (the line through the first and last values) forecasts."""
    naive, drift = [], []
    for h in hist:
        h = h[~np.isnan(h)]
        slope = (h[-1] - h[0]) / max(len(h) - 1, 1)
        naive.append(np.repeat(h[-1], H))
        drift.append(h[-1] + slope * np.arange(1, H + 1))
    return {"naive": np.array(naive), "drift": np.array(drift)}


def oracle_rows(name: str, df, freq: str, origins: int) -> list[dict]:
    offset = as_offset(freq)
    H = default_prediction_length(offset)
    seasons = season_lengths(offset)
    m = seasons[0] if seasons else 1
    rows = []
    for k in range(origins):
        train, full = origin_split(name, df, H, k)
        items, hist, y = series_arrays(full[["item_id", "timestamp", "target"]], H)
        scale = seasonal_naive_scale(pad_left(hist), m)
        mase = {"seasonal naive": per_item_mase(y, seasonal_naive(hist, H, m)[0], scale)}
        mase.update({key: per_item_mase(y, f, scale) for key, f in simple_forecasts(hist, H).items()})
        if name != "elecdemand":
            mase["ets"] = per_item_mase(y, np.array([ets_forecast(h, H, m)[0] for h in hist]), scale)
        _, per_item = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train).evaluate(full, quantiles=Q)
        mase["linear"] = per_item.set_index("item_id")["MASE"].reindex(list(items)).to_numpy()
        base = np.nanmean(mase["seasonal naive"])
        row = {"panel": name, "origin": -k, "n_items": len(items),
               **{key: float(np.nanmean(v) / base) for key, v in mase.items()},
               "oracle_best_per_series": float(np.nanmean(np.nanmin(np.vstack(list(mase.values())), axis=0)) / base),
               "loadavg": os.getloadavg()[0]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panels", required=True, help="comma-separated panel names (see bench_forecast)")
    parser.add_argument("--origins", type=int, default=1, help="backtest origins: the benchmark's and those before")
    parser.add_argument("--results-name", default="forecast_oracle")
    args = parser.parse_args()
    rows = [r for name, (df, freq) in panels(args.panels.split(",")).items()
            for r in oracle_rows(name, df, freq, args.origins)]
    path = os.path.join(RESULTS, f"{args.results_name}.json")
    with open(path, "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    print("written to", path)


if __name__ == "__main__":
    main()
