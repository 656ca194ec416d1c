"""StandardScaler: exactness against pandas, every input kind, both schedulers."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import gaussian_frame, write_parquet

import daskstate
from daskstate.errors import NotFittedError


def test_matches_pandas_with_large_mean():
    df = gaussian_frame(200_000, 4, seed=1, mean=1e9, scale=1.0)
    sc = daskstate.StandardScaler().fit(dd.from_pandas(df, npartitions=9))
    np.testing.assert_allclose(sc.mean_, df.mean().to_numpy(), rtol=1e-10, atol=0)
    np.testing.assert_allclose(sc.var_, df.var(ddof=0).to_numpy(), rtol=1e-10, atol=0)
    np.testing.assert_allclose(sc.scale_, df.std(ddof=0).to_numpy(), rtol=1e-10, atol=0)
    assert sc.n_samples_seen_ == len(df)


def test_same_result_from_every_input_kind(scheduler):
    df = gaussian_frame(5_000, 3, seed=2, mean=5.0)
    X = df.to_numpy()
    fits = {
        "dask-frame": daskstate.StandardScaler().fit(dd.from_pandas(df, npartitions=6)),
        "dask-array": daskstate.StandardScaler().fit(da.from_array(X, chunks=(700, 2))),
        "pandas": daskstate.StandardScaler().fit(df),
        "numpy": daskstate.StandardScaler().fit(X),
        "iterator": daskstate.StandardScaler().fit(iter(np.array_split(X, 7))),
    }
    ref = fits["pandas"]
    for name, sc in fits.items():
        np.testing.assert_allclose(sc.mean_, ref.mean_, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(sc.var_, ref.var_, rtol=1e-12, err_msg=name)
        assert sc.n_samples_seen_ == len(df), name


def test_transform_is_lazy_for_dask_and_inverts(scheduler):
    df = gaussian_frame(3_000, 3, seed=3, mean=-2.0, scale=4.0)
    ddf = dd.from_pandas(df, npartitions=4)
    sc = daskstate.StandardScaler().fit(ddf)
    out = sc.transform(ddf)
    assert isinstance(out, dd.DataFrame)
    Z = out.compute()
    np.testing.assert_allclose(Z.mean().to_numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(ddof=0).to_numpy(), 1, rtol=1e-12)
    back = sc.inverse_transform(out).compute()
    np.testing.assert_allclose(back.to_numpy(), df.to_numpy(), rtol=1e-12)
    arr = sc.transform(da.from_array(df.to_numpy(), chunks=(1000, 3)))
    assert isinstance(arr, da.Array)
    np.testing.assert_allclose(arr.compute(), Z.to_numpy())


def test_integer_boolean_and_float32_columns_are_accepted():
    df = pd.DataFrame({
        "i": np.arange(10, dtype="int64"),
        "b": np.arange(10) % 2 == 0,
        "f": np.linspace(0, 1, 10, dtype="float32"),
        "n": pd.array(range(10), dtype="Int32"),
    })
    sc = daskstate.StandardScaler().fit(dd.from_pandas(df, npartitions=3))
    np.testing.assert_allclose(sc.mean_, df.astype("float64").mean().to_numpy(), rtol=1e-7)


def test_finalize_overrides_without_data():
    df = gaussian_frame(1_000, 2, seed=4, mean=3.0)
    sc = daskstate.StandardScaler().fit(df)
    plain = sc.finalize(with_mean=False)
    assert plain.with_mean is False and sc.with_mean is True
    np.testing.assert_allclose(plain.transform(df.to_numpy()), df.to_numpy() / sc.scale_)


def test_constant_column_scale_is_one():
    X = np.column_stack([np.ones(100), np.arange(100.0)])
    sc = daskstate.StandardScaler().fit(X)
    assert sc.var_[0] == 0 and sc.scale_[0] == 1


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        daskstate.StandardScaler().transform(np.ones((2, 2)))


def test_parquet_projection_reads_only_needed_columns(tmp_path, monkeypatch):
    df = gaussian_frame(2_000, 50, seed=5)
    write_parquet(tmp_path, df, n_files=4)
    seen = []
    original = daskstate.data.PieceReader.__call__

    def spy(self, piece, columns=None):
        seen.append(None if columns is None else tuple(columns))
        return original(self, piece, columns)

    monkeypatch.setattr(daskstate.data.PieceReader, "__call__", spy)
    import dask

    with dask.config.set(scheduler="threads"):
        sc = daskstate.StandardScaler(features=["f3", "f7", "f11"]).fit(daskstate.read_parquet(tmp_path))
    assert seen and all(c is not None and sorted(c) == ["f11", "f3", "f7"] for c in seen)
    np.testing.assert_allclose(sc.mean_, df[["f3", "f7", "f11"]].mean().to_numpy(), rtol=1e-12)


def test_scaler_state_is_the_shared_moments_state():
    from daskstate.state import MomentsState, Schema

    X = np.random.default_rng(4).normal(1e6, 2.0, size=(500, 3))
    schema = Schema(("a", "b", "c"))
    m = MomentsState(schema).update(X[:200]).merge(MomentsState(schema).update(X[200:]))
    np.testing.assert_allclose(m.mean, X.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(m.variance, X.var(axis=0), rtol=1e-9)
    sc = daskstate.StandardScaler().fit(X)
    assert isinstance(sc.state_, MomentsState)
    np.testing.assert_allclose(sc.var_, m.variance, rtol=1e-9)
