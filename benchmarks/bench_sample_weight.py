"""What sample weights cost: each estimator's fit with a weight column against the same fit without.

One generated Dask DataFrame (``--rows`` rows of ``--features`` Gaussian features in
``--partitions`` partitions, plus a weight column that the unweighted fit also reads,
so both read the same bytes); per estimator the weighted and the unweighted fit run
interleaved, ``--repeat`` times, and the result is the median over rounds of the
ratio weighted / unweighted (runs seconds apart on the shared machine).

Usage::

    python -m benchmarks.bench_sample_weight [--rows 1000000] [--features 16] [--partitions 8] [--repeat 3]

Writes benchmarks/results/sample_weight.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

import daskstate
from benchmarks.common import markdown_table, write_results

ESTIMATORS = {
    "StandardScaler": lambda: daskstate.StandardScaler(),
    "PCA regular": lambda: daskstate.PCA(n_components=5),
    "PCA randomized": lambda: daskstate.PCA(n_components=5, mode="randomized"),
    "KMeans k=10": lambda: daskstate.KMeans(10, random_state=0),
    "LinearRegressor exact": lambda: daskstate.LinearRegressor(solver="exact", target="y"),
    "LinearRegressor sgd (2 epochs)": lambda: daskstate.LinearRegressor(epochs=2, num_models=8, target="y",
                                                                         random_state=0),
}
SUPERVISED = {"LinearRegressor exact", "LinearRegressor sgd (2 epochs)"}


def make_frame(rows: int, features: int, partitions: int, seed: int = 0) -> dd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    df = pd.DataFrame(X, columns=[f"f{j}" for j in range(features)])
    df["y"] = X @ rng.normal(size=features) + rng.normal(size=rows)
    df["w"] = rng.uniform(0.0, 3.0, rows)
    return dd.from_pandas(df, npartitions=partitions).persist()


def timed(name: str, ddf: dd.DataFrame, weighted: bool) -> float:
    est = ESTIMATORS[name]()
    features = [c for c in ddf.columns if c.startswith("f")]
    data = ddf[features + (["y"] if name in SUPERVISED else []) + ["w"]]
    if not weighted:  # the same columns read; the weight column is simply not a feature
        est.set_params(features=features)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(data, sample_weight="w" if weighted else None)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated estimator names")
    args = parser.parse_args(argv)
    names = [n for n in ESTIMATORS if not args.only or n in args.only.split(",")]
    ddf = make_frame(args.rows, args.features, args.partitions)
    rows = []
    with dask.config.set(scheduler="threads"):
        for name in names:
            timed(name, ddf, True)  # warm up (imports, first-call costs)
            plain, weighted, loads = [], [], []
            for _ in range(args.repeat):
                loads.append(os.getloadavg()[0])
                plain.append(timed(name, ddf, False))
                weighted.append(timed(name, ddf, True))
            ratios = [w / p for w, p in zip(weighted, plain, strict=True)]
            rows.append({"estimator": name, "unweighted_s": min(plain), "weighted_s": min(weighted),
                         "ratio_median": float(np.median(ratios)), "ratios": ratios, "loadavg": loads})
            print(f"{name}: ratio {np.median(ratios):.3f} (load {loads[0]:.1f})", flush=True)
    path = write_results("sample_weight", {"args": vars(args), "rows": rows})
    print(markdown_table(rows, ["estimator", "unweighted_s", "weighted_s", "ratio_median"]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
