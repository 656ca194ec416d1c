"""Shared fixtures: a LocalCluster with worker processes, Parquet writers, schedulers."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def cluster_client():
    """A distributed Client on a LocalCluster with 2 worker processes (states really travel)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, host="127.0.0.1")
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request):
    """Run the test body once on the local threaded scheduler and once on the LocalCluster."""
    if request.param == "threads":
        import dask

        with dask.config.set(scheduler="threads"):
            yield "threads"
    else:
        client = request.getfixturevalue("cluster_client")
        with client.as_current():
            yield "distributed"


def write_parquet(folder, df: pd.DataFrame, n_files: int, row_group_size: int | None = None,
                  prefix: str = "part") -> list[str]:
    """Split ``df`` into ``n_files`` Parquet files in ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(df)), n_files)):
        path = os.path.join(folder, f"{prefix}-{i:04d}.parquet")
        df.iloc[chunk].to_parquet(path, row_group_size=row_group_size, index=False)
        paths.append(path)
    return paths


def gaussian_frame(n: int, d: int, seed: int = 0, mean: float = 0.0, scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(mean, scale, size=(n, d)), columns=[f"f{j}" for j in range(d)])


def spy_reads(monkeypatch) -> list[str]:
    """Record the id of every Parquet row group that ``daskstate.read_parquet`` partitions read."""
    import daskstate

    reads: list[str] = []
    original = daskstate.data.PieceReader.__call__

    def spy(self, piece, columns=None):
        reads.append(piece.id)
        return original(self, piece, columns)

    monkeypatch.setattr(daskstate.data.PieceReader, "__call__", spy)
    return reads
