"""Checkpoints: a SIGKILLed fit resumes, reads only unconsumed partitions, and equals an uninterrupted fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import dask
import numpy as np
import pytest
from conftest import gaussian_frame, spy_reads, write_parquet

import daskstate
from daskstate.errors import StateFileError

SLOW_FIT = textwrap.dedent(
    """
    import sys, time, dask, daskstate
    original = daskstate.data.PieceReader.__call__
    def slow(self, piece, columns=None):
        time.sleep(0.05)
        return original(self, piece, columns)
    daskstate.data.PieceReader.__call__ = slow
    with dask.config.set(scheduler="synchronous"):
        daskstate.StandardScaler().fit(daskstate.read_parquet(sys.argv[1]), checkpoint=sys.argv[2],
                                       checkpoint_every=3)
    """
)


@pytest.fixture
def dataset(tmp_path):
    df = gaussian_frame(6_000, 4, seed=3, mean=100.0)
    write_parquet(tmp_path / "data", df, n_files=6, row_group_size=250)  # 24 partitions
    return df, tmp_path / "data"


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_then_resume_equals_uninterrupted(dataset, tmp_path, monkeypatch, trial):
    df, folder = dataset
    ckpt = tmp_path / f"ckpt-{trial}.zarr"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FIT, str(folder), str(ckpt)])
    deadline = time.time() + 60
    while not os.path.exists(ckpt) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.1 * trial)  # a different point of the fit in each trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = daskstate.load_state(ckpt)
    assert 0 < len(saved.consumed) < 24 and saved.n_rows == 250 * len(saved.consumed)

    reads = spy_reads(monkeypatch)
    with dask.config.set(scheduler="threads"):
        resumed = daskstate.StandardScaler().fit(daskstate.read_parquet(folder), checkpoint=ckpt,
                                                 checkpoint_every=3)
        assert len(reads) == 24 - len(saved.consumed)
        assert not set(reads) & saved.consumed
        whole = daskstate.StandardScaler().fit(daskstate.read_parquet(folder))
    np.testing.assert_allclose(resumed.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(resumed.var_, whole.var_, rtol=1e-10)
    assert resumed.n_samples_seen_ == len(df)


def test_rerun_after_completion_reads_nothing(dataset, tmp_path, monkeypatch):
    _, folder = dataset
    ckpt = tmp_path / "c.zarr"
    first = daskstate.StandardScaler().fit(daskstate.read_parquet(folder), checkpoint=ckpt)
    reads = spy_reads(monkeypatch)
    again = daskstate.StandardScaler().fit(daskstate.read_parquet(folder), checkpoint=ckpt)
    assert reads == [] and np.array_equal(again.var_, first.var_)


def test_checkpoint_of_another_fit_is_refused(dataset, tmp_path):
    _, folder = dataset
    ckpt = tmp_path / "c.zarr"
    daskstate.StandardScaler().fit(daskstate.read_parquet(folder), checkpoint=ckpt)
    sc = daskstate.StandardScaler().fit(gaussian_frame(3, 4, seed=5))
    with pytest.raises(StateFileError, match="belongs to another fit"):
        sc.partial_fit(daskstate.read_parquet(folder), checkpoint=ckpt)


def test_failed_partition_keeps_checkpoint_and_state(dataset, tmp_path):
    df, folder = dataset
    ckpt = tmp_path / "c.zarr"
    bad = df.iloc[:100].copy()
    bad.iloc[5, 0] = np.nan
    bad.to_parquet(folder / "zz-bad.parquet", index=False)
    with pytest.raises(daskstate.DataError, match="zz-bad.parquet#rg0"):
        daskstate.StandardScaler().fit(daskstate.read_parquet(folder), checkpoint=ckpt, checkpoint_every=4)
    saved = daskstate.load_state(ckpt)
    assert saved.n_rows == 250 * len(saved.consumed) > 0


def test_checkpoint_needs_dask_input():
    with pytest.raises(ValueError, match="checkpoint needs a Dask input"):
        daskstate.StandardScaler().fit(np.ones((4, 2)), checkpoint="x.zarr")
