"""The state engine: merge laws, split invariance, graph shape, task names, errors, incremental fits."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import gaussian_frame, spy_reads, write_parquet
from hypothesis import given, settings
from hypothesis import strategies as st

import daskstate
from daskstate.algorithms.scaler import ScalerState
from daskstate.engine import tree_reduce
from daskstate.errors import DataError, SchemaError, StateError
from daskstate.state import Schema

SCHEMA = Schema(("a", "b", "c"))


def _rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(50.0, 3.0, size=(n, 3))


def _fold_split(X: np.ndarray, cuts: list[int]) -> ScalerState:
    pieces = np.split(X, sorted(set(cuts)))
    state = ScalerState(SCHEMA)
    for piece in pieces:
        state = state.merge(ScalerState(SCHEMA).update(piece))
    return state


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), cuts=st.lists(st.integers(0, 300), max_size=8), seed=st.integers(0, 10_000))
def test_split_invariance(n, cuts, seed):
    X = _rows(seed, n)
    whole = ScalerState(SCHEMA).update(X)
    split = _fold_split(X, [c for c in cuts if c <= n])
    assert split.n_rows == whole.n_rows == n
    np.testing.assert_allclose(split.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(split.m2, whole.m2, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(sizes=st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)), seed=st.integers(0, 10_000))
def test_merge_is_associative(sizes, seed):
    a, b, c = (ScalerState(SCHEMA).update(_rows(seed + i, n)) for i, n in enumerate(sizes))
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    assert left.n_rows == right.n_rows
    np.testing.assert_allclose(left.mean, right.mean, rtol=1e-12)
    np.testing.assert_allclose(left.m2, right.m2, rtol=1e-10, atol=1e-10)


def test_nbytes_does_not_grow_with_rows():
    small = ScalerState(SCHEMA).update(_rows(0, 10_000))
    big = ScalerState(SCHEMA)
    for i in range(10):
        big = big.merge(ScalerState(SCHEMA).update(_rows(i, 100_000)))
    assert big.n_rows == 1_000_000
    assert small.nbytes == big.nbytes == ScalerState(SCHEMA).nbytes


def test_update_is_pure_and_failure_keeps_state():
    state = ScalerState(SCHEMA).update(_rows(1, 100))
    before = (state.n_rows, state.mean.copy(), state.m2.copy())
    new = state.update(_rows(2, 10))
    assert new.n_rows == 110 and state.n_rows == 100
    with pytest.raises(SchemaError, match="3 feature columns"):
        state.update(np.ones((5, 2)))
    assert state.n_rows == before[0]
    np.testing.assert_array_equal(state.mean, before[1])


def test_merge_rejects_mismatches():
    a = ScalerState(SCHEMA).update(_rows(0, 5), source="p0")
    with pytest.raises(SchemaError, match="features differ"):
        a.merge(ScalerState(Schema(("a", "b", "d"))).update(_rows(0, 5)))
    with pytest.raises(StateError, match="same 1 input"):
        a.merge(ScalerState(SCHEMA).update(_rows(1, 5), source="p0"))


def test_tree_reduction_depth_is_logarithmic():
    leaves = [dask.delayed(i) for i in range(10_000)]
    root = tree_reduce(leaves, "sum-merge", 8, merge=lambda *xs: sum(xs))
    levels = {k[1] for k in root.dask if isinstance(k, tuple) and k[0] == "sum-merge"}
    assert len(levels) == 5  # ceil(log8(10000))
    assert root.compute() == sum(range(10_000))


def test_task_names_read_as_algorithm_steps():
    ddf = dd.from_pandas(gaussian_frame(100, 3), npartitions=4)
    inp = daskstate.data.as_input(ddf)
    state = ScalerState(inp.schema)
    names = []

    class Recorder(dask.callbacks.Callback):
        def _start_state(self, dsk, state):
            names.extend(dask.utils.key_split(k) for k in dsk)

    with Recorder():
        daskstate.fold(inp, state, split_every=2)
    assert "standard_scaler-update" in names and "standard_scaler-merge" in names


def test_empty_partitions_are_skipped():
    df = gaussian_frame(100, 3)
    ddf = dd.from_pandas(df, npartitions=5)
    ddf = ddf[ddf.f0 > 100.0]  # every partition empty
    with pytest.raises(DataError, match="at least 1 valid row"):
        daskstate.StandardScaler().fit(ddf)
    parts = [df.iloc[:0], df.iloc[:40], df.iloc[40:40], df.iloc[40:]]
    sc = daskstate.StandardScaler().fit(dd.from_delayed([dask.delayed(p) for p in parts], meta=df.iloc[:0]))
    np.testing.assert_allclose(sc.mean_, df.mean().to_numpy(), rtol=1e-12)


def _bad_partitions() -> dd.DataFrame:
    good = gaussian_frame(30, 3)
    bad = good.copy()
    bad.iloc[[3, 7], 1] = np.nan
    bad.iloc[9, 2] = np.inf
    return dd.from_delayed([dask.delayed(good), dask.delayed(bad), dask.delayed(good)], meta=good.iloc[:0])


def test_nan_and_inf_raise_naming_partition_column_and_count():
    with pytest.raises(DataError) as info:
        daskstate.StandardScaler().fit(_bad_partitions())
    msg = str(info.value)
    assert "partition 1" in msg and "3 row(s)" in msg and "'f1' (2)" in msg and "'f2' (1)" in msg
    assert "on_invalid='skip'" in msg


def test_skip_invalid_rows_counts_them():
    sc = daskstate.StandardScaler(on_invalid="skip").fit(_bad_partitions())
    assert sc.n_samples_seen_ == 87 and sc.state_.n_skipped == 3


def test_non_numeric_and_missing_columns():
    df = gaussian_frame(20, 2).assign(name="x")
    with pytest.raises(SchemaError, match=r"'name' \((object|str|string)\).*not numeric"):
        daskstate.StandardScaler(features=["f0", "name"]).fit(dd.from_pandas(df, npartitions=2))
    with pytest.raises(SchemaError, match=r"\['nope'\] missing"):
        daskstate.StandardScaler(features=["f0", "nope"]).fit(df)


def test_partition_whose_schema_differs():
    good = gaussian_frame(10, 2)
    odd = good.assign(f1=["a"] * 10)
    ddf = dd.from_delayed([dask.delayed(good), dask.delayed(odd)], meta=good.iloc[:0], verify_meta=False)
    with pytest.raises(SchemaError, match=r"partition 1.*'f1'.*not numeric"):
        daskstate.StandardScaler().fit(ddf)


def test_partial_fit_with_other_features_keeps_state():
    df = gaussian_frame(100, 3)
    sc = daskstate.StandardScaler().fit(df)
    before = sc.state_
    with pytest.raises(SchemaError, match=r"\['f2'\] missing"):
        sc.partial_fit(df.rename(columns={"f2": "g2"}))
    with pytest.raises(SchemaError, match=r"has 2 columns; 3 features expected"):
        sc.partial_fit(df.to_numpy()[:, :2])
    assert sc.state_ is before


def test_partial_fit_equals_merge_of_folds():
    df = gaussian_frame(1_000, 3, seed=9)
    a, b = df.iloc[:400], df.iloc[400:]
    sc = daskstate.StandardScaler().fit(a).partial_fit(dd.from_pandas(b, npartitions=3))
    whole = daskstate.StandardScaler().fit(df)
    np.testing.assert_allclose(sc.var_, whole.var_, rtol=1e-12)
    assert sc.n_samples_seen_ == 1_000


def test_incremental_parquet_reads_only_new_partitions(tmp_path, monkeypatch):
    df = gaussian_frame(4_000, 3, seed=11)
    write_parquet(tmp_path, df.iloc[:2_000], n_files=4, row_group_size=250, prefix="a")
    reads = spy_reads(monkeypatch)
    with dask.config.set(scheduler="threads"):
        sc = daskstate.StandardScaler().fit(daskstate.read_parquet(tmp_path))
        assert len(reads) == 8 and len(sc.state_.consumed) == 8
        reads.clear()
        sc.partial_fit(daskstate.read_parquet(tmp_path))  # nothing new
        assert reads == [] and sc.n_samples_seen_ == 2_000
        write_parquet(tmp_path, df.iloc[2_000:], n_files=2, row_group_size=500, prefix="b")
        sc.partial_fit(daskstate.read_parquet(tmp_path))
    assert sorted(reads) == sorted(f"b-{i:04d}.parquet#rg{j}" for i in range(2) for j in range(2))
    np.testing.assert_allclose(sc.var_, df.var(ddof=0).to_numpy(), rtol=1e-12)


def test_progress_bar_local(capsys):
    ddf = dd.from_pandas(gaussian_frame(100, 2), npartitions=3)
    with dask.config.set(scheduler="threads"):
        daskstate.StandardScaler().fit(ddf, progress=True)
    assert "Completed" in capsys.readouterr().out


def test_unsupported_input_type():
    with pytest.raises(TypeError, match="unsupported input"):
        daskstate.StandardScaler().fit(42)


def test_iterator_of_batches_with_tuples():
    X = _rows(0, 60)
    sc = daskstate.StandardScaler().fit((X[i : i + 20], None) for i in range(0, 60, 20))
    np.testing.assert_allclose(sc.mean_, X.mean(0))
    with pytest.raises(DataError, match="empty"):
        daskstate.StandardScaler().fit(iter([]))


def test_pandas_with_strings_uses_numeric_columns_only():
    df = pd.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"]})
    sc = daskstate.StandardScaler().fit(df)
    assert list(sc.feature_names_in_) == ["a"]


@pytest.mark.distributed
def test_tasks_run_on_worker_processes_under_step_names(cluster_client):
    from distributed import get_task_stream

    df = gaussian_frame(2_000, 3, seed=12)
    with cluster_client.as_current(), get_task_stream(cluster_client) as ts:
        sc = daskstate.StandardScaler().fit(dd.from_pandas(df, npartitions=6))
    groups = {dask.utils.key_split(t["key"]) for t in ts.data}
    assert {"standard_scaler-update", "standard_scaler-merge"} <= groups
    assert len({t["worker"] for t in ts.data}) >= 1
    np.testing.assert_allclose(sc.var_, df.var(ddof=0).to_numpy(), rtol=1e-12)


@pytest.mark.distributed
def test_progress_bar_distributed(cluster_client, capsys):
    ddf = dd.from_pandas(gaussian_frame(100, 2), npartitions=3)
    with cluster_client.as_current():
        sc = daskstate.StandardScaler().fit(ddf, progress=True)
    assert sc.n_samples_seen_ == 100
    assert "100%" in capsys.readouterr().out


def test_lazy_outputs_of_two_models_on_one_input_do_not_share_keys():
    import dask.array as da

    X = np.random.default_rng(0).normal(5.0, 2.0, size=(500, 3))
    a = daskstate.StandardScaler().fit(X)
    b = a.finalize(with_mean=False)
    arr = da.from_array(X, chunks=(100, 3))
    ta, tb = a.transform(arr), b.transform(arr)
    assert ta.name != tb.name
    out_a, out_b = dask.compute(ta, tb)
    np.testing.assert_allclose(out_a, a.transform(X))
    np.testing.assert_allclose(out_b, b.transform(X))
    df = dd.from_array(X, columns=["x0", "x1", "x2"])
    fa, fb = dask.compute(a.transform(df), b.transform(df))
    np.testing.assert_allclose(fb.to_numpy(), b.transform(X))


def test_read_parquet_columns_are_what_partitions_hold(tmp_path):
    write_parquet(tmp_path, gaussian_frame(200, 5), n_files=2)
    ddf = daskstate.read_parquet(tmp_path, columns=["f1", "f3"])
    part = ddf.partitions[0].compute()
    assert list(part.columns) == ["f1", "f3"]
    assert ddf.to_dask_array(lengths=True).compute().shape == (200, 2)


def test_skip_mode_predictions_declare_float_output():
    df = gaussian_frame(300, 3, seed=3)
    km = daskstate.KMeans(n_clusters=2, random_state=0, on_invalid="skip").fit(df)
    bad = df.copy()
    bad.iloc[5, 0] = np.nan
    out = km.predict(dd.from_pandas(bad, npartitions=2))
    computed = out.compute()
    assert out.dtype == computed.dtype == np.float64 and np.isnan(computed.iloc[5])
