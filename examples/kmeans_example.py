"""Cluster a Parquet dataset in one pass, pick k from the elbow without re-reading, keep it up to date.

Run: python examples/kmeans_example.py
"""

import tempfile

import numpy as np
import pandas as pd

import daskstate


def write(folder: str, name: str, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0, 6, size=(5, 4))  # 5 true clusters, 4 features
    X = centers[rng.integers(0, 5, rows)] + rng.normal(size=(rows, 4))
    pd.DataFrame(X, columns=["a", "b", "c", "d"]).to_parquet(f"{folder}/{name}.parquet", row_group_size=rows // 4)


with tempfile.TemporaryDirectory() as folder:
    write(folder, "day-1", 50_000, seed=1)
    ddf = daskstate.read_parquet(folder)

    # One pass; the state can answer for any k <= k_max.
    km = daskstate.KMeans(n_clusters=3, k_max=10, random_state=0).fit(ddf)
    print(f"core set: {km.state_.n_centers} weighted centres, {km.state_.nbytes:,} bytes")

    # The elbow from the state alone, then the model for the chosen k: no data read.
    curve = km.cost_curve(range(1, 11))
    print("estimated SSE by k:", (curve / 1e3).round(1).to_dict())
    km = km.finalize(n_clusters=5)
    print("centres for k=5:\n", km.cluster_centers_.round(2))

    # New data arrives: only its row groups are read.
    write(folder, "day-2", 50_000, seed=2)
    km.partial_fit(daskstate.read_parquet(folder))
    print("rows seen:", km.n_samples_seen_)

    labels = km.predict(daskstate.read_parquet(folder))  # lazy Dask Series
    print("cluster sizes:", labels.value_counts().compute().sort_index().to_dict())
    print("mean squared distance (msd):", round(km.msd(daskstate.read_parquet(folder)), 3))

    km.save(f"{folder}/kmeans.zarr")
    again = daskstate.load(f"{folder}/kmeans.zarr")
    print("same model after load:", np.allclose(again.cluster_centers_, km.cluster_centers_))
