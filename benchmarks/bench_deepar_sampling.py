"""deepar's ancestral sampling: the float32 sampler against the float64 one it replaced, interleaved.

The reference (:func:`float64_paths`) is the sampler as it was at 4335b28: every path's whole
step input (lags, date features, covariates) through the first layer's weights each step,
float64, 32,768 rows at a time, on :func:`daskstate.algorithms.forecast.lstm.step`. Both draw
from the same uniforms, so the paths agree to float32 rounding; the benchmark reports the
largest difference of the forecast quantiles beside the CPU seconds per series. Both run on
one BLAS thread (the reference ran on every BLAS thread, which on a busy machine cost more).

Usage::

    python -m benchmarks.bench_deepar_sampling [--series 1000] [--train-series 200] [--repeats 3]

Writes benchmarks/results/deepar_sampling.json (or --results-name).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

import daskstate
from benchmarks.common import write_results
from daskstate.algorithms.forecast import lstm
from daskstate.algorithms.forecast.datasets import synthetic_panel
from daskstate.algorithms.forecast.deepar import ForecastDeepARState, Sequences, path_uniforms
from daskstate.algorithms.forecast.likelihoods import values_at
from daskstate.algorithms.forecast.series import Columns, as_offset, to_series_block
from daskstate.numerics import single_blas_thread

QUANTILES = np.array([0.1, 0.5, 0.9])


def float64_paths(state: ForecastDeepARState, theta: np.ndarray, seq: Sequences, keys: np.ndarray, S: int,
                  seed: int) -> np.ndarray:
    """The sampler of 4335b28 (see the module docstring): paths (n, S, H)."""
    v = state.layout.views(theta)
    C, H, L, P = state.unroll_context, state.horizon, state.num_layers, state.max_lag
    n = len(seq.item)
    seq.values[:, P + C :] = np.nan
    filled = state.filled(seq, P + C)
    static_all = lstm.static_inputs(v, state.static_reals(seq), seq.codes)
    _, _, cells = lstm.forward(v, L, state.step_inputs(seq, filled, np.arange(C)), static_all)
    static_proj = np.repeat(static_all @ v["W0"][state.n_step :] + v["b0"], S, axis=0)
    cells = [(np.repeat(h, S, axis=0), np.repeat(c, S, axis=0)) for h, c in cells]
    paths = np.repeat(filled, S, axis=0)
    scale = np.repeat(seq.scale, S)
    like_scale = scale if state.likelihood == "negative_binomial" else np.ones_like(scale)
    rep = Sequences(np.repeat(seq.item, S), paths, scale, np.repeat(seq.first, S),
                    np.repeat(seq.covariates, S, axis=0), np.repeat(seq.codes, S, axis=0))
    for t in range(C, C + H):
        x = state.step_inputs(rep, paths, np.array([t]))[:, 0]
        raw, cells = lstm.step(v, L, x, static_proj, cells)
        u = path_uniforms(keys, S, t - C, seed).ravel()
        y = values_at(raw[:, None, :], state.likelihood, like_scale[:, None], u[:, None, None])[:, 0, 0]
        paths[:, P + t] = y / scale if state.likelihood == "negative_binomial" else y + state.center
    return (paths[:, P + C :] * scale[:, None]).reshape(n, S, H)


def sample(state: ForecastDeepARState, theta: np.ndarray, block, S: int, reference: bool) -> np.ndarray:
    """Paths (items, S, H) after each item's last point, by the current sampler or the reference."""
    origins = block.last_origins()
    if not reference:
        return state.sample_paths(theta, block, origins, S, seed=0)
    item = np.arange(len(origins))
    codes = state.block_codes(block)
    keys = pd.util.hash_array(np.asarray(block.items, dtype=object))
    position = block.starts + (origins - block.offsets)
    out = []
    chunk = max(1, (1 << 15) // S)
    with single_blas_thread(main_thread=True):
        for start in range(0, len(origins), chunk):
            sl = slice(start, start + chunk)
            seq = state.sequences(block, origins[sl], item[sl], position[sl], codes[sl])
            out.append(float64_paths(state, theta, seq, keys[seq.item], S, 0))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--train-series", type=int, default=200)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-name", default="deepar_sampling")
    args = parser.parse_args()
    load_before = os.getloadavg()
    train = synthetic_panel(args.train_series, 500, freq="D", seed=9)
    fc = daskstate.Forecaster(model="deepar", freq="D", prediction_length=14, epochs=1).fit(train)
    state = fc.state_
    df = synthetic_panel(args.series, 500, freq="D", seed=9)
    block = to_series_block(df, Columns("item_id", "timestamp", "target"), as_offset("D"),
                            int(state.params["context_length"]), 14)
    cpu: dict[str, list[float]] = {"float32": [], "float64_reference": []}
    paths = {}
    for _ in range(args.repeats):
        for name in cpu:
            c0 = time.process_time()
            paths[name] = sample(state, fc.theta_, block, args.samples, reference=name != "float32")
            cpu[name].append(time.process_time() - c0)
    q = {name: np.quantile(p, QUANTILES, axis=1) for name, p in paths.items()}
    spread = np.abs(q["float64_reference"]).mean()
    result = {
        "series": args.series, "samples": args.samples, "horizon": 14,
        "cpu_seconds": cpu, "cpu_ms_per_series": {k: 1e3 * min(v) / args.series for k, v in cpu.items()},
        "cpu_ratio_float32_vs_reference": min(cpu["float32"]) / min(cpu["float64_reference"]),
        "max_abs_path_difference_relative": float(np.nanmax(np.abs(paths["float32"] - paths["float64_reference"]))
                                                  / spread),
        "max_abs_quantile_difference_relative": float(np.nanmax(np.abs(q["float32"] - q["float64_reference"]))
                                                      / spread),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    print(result)
    print(f"wrote {write_results(args.results_name, result)}")


if __name__ == "__main__":
    main()
