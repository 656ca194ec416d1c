"""Standardise a Parquet dataset in one pass, then keep the scaler up to date as files arrive.

Run: python examples/scaler_example.py
"""

import tempfile

import numpy as np
import pandas as pd

import daskstate


def write(folder: str, name: str, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"price": rng.normal(1e6, 10.0, rows), "qty": rng.poisson(3, rows)})
    df.to_parquet(f"{folder}/{name}.parquet", row_group_size=rows // 4)


with tempfile.TemporaryDirectory() as folder:
    write(folder, "day-1", 40_000, seed=1)
    scaler = daskstate.StandardScaler().fit(daskstate.read_parquet(folder))
    print("after day 1:", scaler.n_samples_seen_, "rows; mean", scaler.mean_.round(3))

    write(folder, "day-2", 40_000, seed=2)  # new data arrives
    scaler.partial_fit(daskstate.read_parquet(folder))  # reads only day-2's row groups
    print("after day 2:", scaler.n_samples_seen_, "rows; scale", scaler.scale_.round(4))

    scaler.save(f"{folder}/scaler.zarr")
    again = daskstate.load(f"{folder}/scaler.zarr")
    Z = again.transform(daskstate.read_parquet(folder))  # lazy Dask DataFrame
    print("standardised means ~0:", Z.mean().compute().round(6).to_dict())
