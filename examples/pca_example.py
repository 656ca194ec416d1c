"""PCA in one pass over Parquet: exact for tens of features, a Frequent Directions sketch for wide data.

Run: python examples/pca_example.py
"""

import functools
import os
import tempfile

import numpy as np
import pandas as pd

import daskstate


@functools.cache
def hidden_axes(cols: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(0).normal(size=(cols, cols)))[0]


def write(folder: str, name: str, rows: int, cols: int, seed: int) -> None:
    """Rows around a mean of 1e6 whose variance decays along hidden directions."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(rows, cols)) / np.arange(1, cols + 1)) @ hidden_axes(cols).T + 1e6
    pd.DataFrame(X, columns=[f"f{j}" for j in range(cols)]).to_parquet(
        f"{folder}/{name}.parquet", row_group_size=rows // 4)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        # ---- exact mode: the state is the 20 x 20 centred scatter matrix, whatever the rows
        write(folder, "day-1", 50_000, 20, seed=1)
        pca = daskstate.PCA(n_components=3, max_components=10).fit(daskstate.read_parquet(folder))
        print("explained variance ratio:", pca.explained_variance_ratio_.round(4))
        print("state:", pca.state_.nbytes, "bytes for", pca.n_samples_seen_, "rows")

        # any n_components <= max_components from the same state, without reading data
        five = pca.finalize(n_components=5)
        print("with 5 components:", five.explained_variance_ratio_.round(4),
              "mean reconstruction error", round(five.reconstruction_error(daskstate.read_parquet(folder)), 5))

        # new data arrives: only the new file's row groups are read
        write(folder, "day-2", 50_000, 20, seed=2)
        pca.partial_fit(daskstate.read_parquet(folder))
        print("after day 2:", pca.n_samples_seen_, "rows")

        # lazy transform of a Dask DataFrame, save and load without pickle
        Z = pca.transform(daskstate.read_parquet(folder))
        print("scores (lazy):", type(Z).__name__, list(Z.columns), "std", Z.std().compute().round(4).to_list())
        pca.save(f"{folder}/pca.zarr")
        again = daskstate.load(f"{folder}/pca.zarr")
        print("loaded model, same components:", np.array_equal(again.components_, pca.components_))

        # ---- randomized mode: a (k + extra) x d sketch instead of d x d, for wide data
        wide = f"{folder}/wide"
        os.makedirs(wide)
        write(wide, "part-0", 3_000, 600, seed=3)
        write(wide, "part-1", 3_000, 600, seed=4)
        ddf = daskstate.read_parquet(wide)
        sketch = daskstate.PCA(n_components=5, mode="randomized").fit(ddf)
        exact = daskstate.PCA(n_components=5).fit(ddf)
        print("sketch", sketch.state_.sketch.shape, f"({sketch.state_.nbytes:,} bytes) vs exact scatter",
              exact.state_.scatter.shape, f"({exact.state_.nbytes:,} bytes)")
        print("explained variance, sketch / exact:", (sketch.explained_variance_ / exact.explained_variance_).round(5))
        print("certified bound on each explained variance:", f"{sketch.explained_variance_bound_:.3g}",
              "(each estimate is within this of the exact value)")
