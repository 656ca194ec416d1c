"""A fresh user's checks of ``daskstate.Forecaster`` on data the benchmarks never used (R's quarterly and monthly
series through ``load_unseen_panel``): input variety from pandas and Parquet, scikit-learn conventions, a cluster
with worker processes, and the fan chart. Each test of a fix fails on the code before it (see the docstrings)."""

from __future__ import annotations

import pickle

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import daskstate
from daskstate.algorithms.forecast import holdout_split
from daskstate.algorithms.forecast.datasets import load_unseen_panel
from daskstate.errors import DataError, NotFittedError

H = 4
FAST_NEURAL = {"epochs": 1, "min_batches": 1, "num_cells": 4, "num_layers": 1}


@pytest.fixture(scope="module")
def quarterly():
    df, freq = load_unseen_panel("datasets_quarterly")  # 8 real quarterly series of 58 to 136 points
    return df, freq


@pytest.fixture(scope="module")
def fitted(quarterly):
    df, freq = quarterly
    return daskstate.Forecaster(freq=freq, prediction_length=H).fit(df)


def _write(df: pd.DataFrame, folder, n: int = 2, index: bool = False) -> dd.DataFrame:
    daskstate.partition_by_series(df.reset_index() if index else df, npartitions=n).to_parquet(str(folder))
    out = dd.read_parquet(str(folder))
    return out.set_index("timestamp", sort=False) if index else out


def _by_item(out: pd.DataFrame) -> pd.DataFrame:
    return out.assign(item_id=out["item_id"].astype(str)).sort_values(["item_id", "timestamp"]).reset_index(drop=True)


# ---- inputs ----------------------------------------------------------------------------------------------------
def test_a_local_time_zone_uses_the_wall_clock_and_forecasts_keep_the_zone(quarterly, fitted, tmp_path):
    """Quarter starts at midnight in Sydney are 13:00 or 14:00 UTC the day before: read in UTC they were off the
    quarterly grid (DataError before); forecasts came back naive, so merging them with the input failed."""
    df, freq = quarterly
    local = df.assign(timestamp=df["timestamp"].dt.tz_localize("Australia/Sydney"))
    fc = daskstate.Forecaster(prediction_length=H).fit(local)  # the frequency inferred from local times
    out, naive = fc.predict(local), fitted.predict(df)
    assert str(out["timestamp"].dt.tz) == "Australia/Sydney"
    np.testing.assert_allclose(out["mean"], naive["mean"], rtol=1e-9)
    assert (out["timestamp"].dt.tz_localize(None) == naive["timestamp"]).all()
    assert out.merge(local, on=["item_id", "timestamp"], how="left").shape[0] == len(out)
    lazy = fc.predict(_write(local, tmp_path / "local"))  # Parquet keeps the zone; the lazy meta says it too
    assert lazy.dtypes["timestamp"] == out["timestamp"].dtype
    pd.testing.assert_frame_equal(_by_item(lazy.compute()), _by_item(out), check_dtype=False)
    overall, _ = fc.evaluate(local)
    assert overall["MASE"] == pytest.approx(fitted.evaluate(df)[0]["MASE"])


def test_hourly_data_in_a_daylight_saving_zone_stays_evenly_spaced():
    """Sub-daily steps are read in UTC (a local hour repeats or vanishes at a change); the forecast hours come
    back in the input's zone, one hour apart in absolute time, across the change (naive UTC before)."""
    times = pd.date_range("2021-03-20", periods=24 * 7, freq="h", tz="Europe/Berlin")
    rng = np.random.default_rng(0)
    df = pd.concat([pd.DataFrame({"item_id": f"s{i}", "timestamp": times,
                                  "target": 10 + np.sin(np.arange(len(times)) * 2 * np.pi / 24) + rng.normal(0, .1, len(times))})
                    for i in range(3)], ignore_index=True)
    out = daskstate.Forecaster(freq="h", prediction_length=6).fit(df).predict(df)
    assert str(out["timestamp"].dt.tz) == "Europe/Berlin"
    first = out[out["item_id"] == "s0"]["timestamp"]
    assert (first.diff().dropna() == pd.Timedelta("1h")).all()
    assert first.iloc[0] == times[-1] + pd.Timedelta("1h")
    assert np.isfinite(out["mean"]).all()


@pytest.mark.parametrize("layout", ["time_index", "item_time_index", "parquet_time_index"])
def test_a_frame_indexed_by_its_timestamps_is_read_as_the_long_table(quarterly, fitted, layout, tmp_path):
    """``df.set_index("timestamp")`` (or by item and timestamp, as other forecasting libraries keep panels) and
    its Parquet read back: the index is the time column (a SchemaError 'timestamp missing' before)."""
    df, freq = quarterly
    if layout == "time_index":
        X = df.set_index("timestamp")
    elif layout == "item_time_index":
        X = df.set_index(["item_id", "timestamp"])
    else:
        X = _write(df.set_index("timestamp"), tmp_path / "indexed", index=True)
    fc = daskstate.Forecaster(freq=freq, prediction_length=H).fit(X)
    out = fc.predict(X)
    out = out.compute() if isinstance(out, dd.DataFrame) else out
    pd.testing.assert_frame_equal(_by_item(out), _by_item(fitted.predict(df)), check_dtype=False)
    assert fc.evaluate(X)[0]["MASE"] == pytest.approx(fitted.evaluate(df)[0]["MASE"])


@pytest.mark.parametrize("change", ["categorical_ids", "integer_ids", "timestamp_ms", "float32", "Int64_with_NA",
                                    "extra_columns", "own_column_names"])
def test_parquet_columns_of_every_kind(quarterly, fitted, change, tmp_path):
    """Column types a Parquet file written by someone else holds: the same forecasts as from the pandas frame
    where the values are the same, finite ones where some are missing. Before: a Dask fit read the typical series
    length (which shapes the lags and the long context) from its first partition only, so every Parquet fit here
    was another model than the pandas one; and categorical ids from Parquet came back NaN in the forecast."""
    df, freq = quarterly
    X, kw, names = df.copy(), {}, ("item_id", "timestamp", "target")
    if change == "categorical_ids":
        X["item_id"] = X["item_id"].astype("category")
    elif change == "integer_ids":
        X["item_id"] = X["item_id"].astype("category").cat.codes.astype("int64")
    elif change == "timestamp_ms":
        X["timestamp"] = X["timestamp"].astype("datetime64[ms]")
    elif change == "float32":
        X["target"] = X["target"].astype("float32")
    elif change == "Int64_with_NA":
        X["target"] = X["target"].round().astype("Int64")
        X.loc[X.index[::9], "target"] = pd.NA
    elif change == "extra_columns":
        X["note"], X["weight"] = "x", 1.5
    else:
        names = ("series", "date", "y")
        X = X.rename(columns=dict(zip(("item_id", "timestamp", "target"), names, strict=True)))
        kw = dict(zip(("id_col", "time_col", "target"), names, strict=True))
    daskstate.partition_by_series(X, id_col=names[0], npartitions=2).to_parquet(str(tmp_path / "p"))
    ddf = dd.read_parquet(str(tmp_path / "p"))
    fc = daskstate.Forecaster(freq=freq, prediction_length=H, **kw).fit(ddf)
    out = fc.predict(ddf).compute().rename(columns=dict(zip(names, ("item_id", "timestamp", "target"), strict=True)))
    assert len(out) == df["item_id"].nunique() * H and np.isfinite(out["mean"]).all()
    if change in ("categorical_ids", "timestamp_ms", "extra_columns", "own_column_names"):
        pd.testing.assert_frame_equal(_by_item(out), _by_item(fitted.predict(df)), check_dtype=False)
    if change == "float32":
        np.testing.assert_allclose(_by_item(out)["mean"], _by_item(fitted.predict(df))["mean"], rtol=1e-4)


def test_predicting_from_a_frame_whose_series_are_split_names_them(quarterly, fitted):
    """A frame not partitioned by series gave one forecast per piece of a split series (duplicated rows, each
    from half a history) without a word; now predict, sample_paths (when computed) and evaluate raise naming
    the items. A frame indexed by item id with known divisions needs no check."""
    df, _ = quarterly
    split = dd.from_pandas(df, npartitions=3)
    for call in (lambda: fitted.predict(split).compute(), lambda: fitted.sample_paths(split, 3).compute(),
                 lambda: fitted.evaluate(split)):
        with pytest.raises(DataError, match="more than one partition, e.g. .*partition_by_series"):
            call()
    whole = daskstate.partition_by_series(split, npartitions=3)
    assert len(fitted.predict(whole).compute()) == df["item_id"].nunique() * H
    indexed = dd.from_pandas(df.set_index("item_id").sort_index(), npartitions=3)
    assert indexed.known_divisions
    pd.testing.assert_frame_equal(_by_item(fitted.predict(indexed).compute()), _by_item(fitted.predict(df)),
                                  check_dtype=False)


# ---- scikit-learn conventions --------------------------------------------------------------------------------
def test_finalize_rejects_what_needs_a_new_fit(quarterly, fitted):
    """``finalize(prediction_length=2)`` returned a model that printed prediction_length=2 and forecast 4 steps;
    any unknown override was ignored the same way."""
    df, _ = quarterly
    with pytest.raises(ValueError, match=r"\['prediction_length'\] cannot change without fitting again.*'wd'"):
        fitted.finalize(prediction_length=2)
    with pytest.raises(ValueError, match="nope"):
        fitted.finalize(nope=1)
    assert len(fitted.finalize(wd=1.0).predict(df)) == df["item_id"].nunique() * H
    mlp = daskstate.Forecaster(model="mlp", prediction_length=H, **FAST_NEURAL).fit(df)
    with pytest.raises(ValueError, match="accepts no overrides"):
        mlp.finalize(wd=1.0)
    assert len(mlp.finalize().predict(df)) == df["item_id"].nunique() * H


def test_quantile_lists_a_user_may_pass(quarterly, fitted):
    """One number is one level (a TypeError 'float is not iterable' before); repeats give one column; the
    user's order is kept; anything outside (0, 1) is a clear error."""
    df, _ = quarterly
    one = fitted.predict(df, quantiles=0.5)
    assert list(one.columns) == ["item_id", "timestamp", "mean", "q0.5"]
    twice = fitted.predict(df, quantiles=[0.9, 0.1, 0.9])
    assert list(twice.columns)[2:] == ["mean", "q0.9", "q0.1"] and (twice["q0.1"] <= twice["q0.9"]).all()
    for bad in ([0.5, 1.5], [0.0], [], [np.nan], ["a"]):
        with pytest.raises(ValueError, match=r"quantiles must be numbers in \(0, 1\)"):
            fitted.predict(df, quantiles=bad)
    assert fitted.evaluate(df, quantiles=[0.9, 0.1])[0]["coverage_80"] == fitted.evaluate(df)[0]["coverage_80"]


@pytest.mark.parametrize("model", ["linear", "mlp", "deepar"])
def test_pickle_clone_and_refit(quarterly, model):
    """What a scikit-learn user does with any estimator: clone is unfitted, predict before fit is a
    NotFittedError, a pickled fitted forecaster predicts the same, fitting twice gives the same model."""
    df, freq = quarterly
    fc = daskstate.Forecaster(model=model, freq=freq, prediction_length=H, **({} if model == "linear" else FAST_NEURAL))
    with pytest.raises(NotFittedError):
        fc.predict(df)
    first = fc.fit(df).predict(df, seed=1)
    assert not hasattr(clone(fc), "state_") and clone(fc).get_params() == fc.get_params()
    pd.testing.assert_frame_equal(pickle.loads(pickle.dumps(fc)).predict(df, seed=1), first)
    pd.testing.assert_frame_equal(fc.fit(df).predict(df, seed=1), first)


def test_partial_fit_adds_new_points_and_new_series_exactly(quarterly):
    """The linear model's sums after fit(old) + partial_fit(new points, history) + partial_fit(new series) are one
    pass over everything, from a Parquet fit too."""
    df, freq = quarterly
    train, test = holdout_split(df, H)
    items = df["item_id"].unique()
    known, new_series = train[train["item_id"].isin(items[:5])], df[df["item_id"].isin(items[5:])]
    fc = daskstate.Forecaster(freq=freq, prediction_length=H).fit(dd.from_pandas(known, npartitions=1))
    empty = fc.state_.empty_like()
    fc.partial_fit(test[test["item_id"].isin(items[:5])], history=known).partial_fit(new_series)
    whole = empty.update(empty.read_batch(df, None, where="input")[0])
    for name in ("gram", "xty", "yty", "pairs"):
        np.testing.assert_allclose(getattr(fc.state_, name), getattr(whole, name), rtol=1e-9, atol=1e-9)


# ---- a cluster, the fan chart --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_fit_predict_evaluate_from_parquet_on_worker_processes(quarterly, cluster_client, model, tmp_path):
    """The same forecasts from a LocalCluster with worker processes as from the threaded scheduler."""
    df, freq = quarterly
    train, _ = holdout_split(df, H)
    ddf = _write(train, tmp_path / "train", n=3)
    kw = dict(model=model, freq=freq, prediction_length=H, **({} if model == "linear" else FAST_NEURAL))
    with cluster_client.as_current():
        fc = daskstate.Forecaster(**kw).fit(ddf)
        out = fc.predict(ddf).compute()
        overall, _ = fc.evaluate(_write(df, tmp_path / "all", n=3))
    with dask.config.set(scheduler="threads"):
        local = daskstate.Forecaster(**kw).fit(ddf)
        pd.testing.assert_frame_equal(_by_item(out), _by_item(local.predict(ddf).compute()), rtol=1e-6)
        assert overall["MASE"] == pytest.approx(local.evaluate(df)[0]["MASE"], rel=1e-6)


def test_plot_a_fan_chart_of_a_real_panel(tmp_path):
    """``Forecaster.plot`` (new): history, bands and actuals of chosen items, from pandas or Dask, saved."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    df, freq = load_unseen_panel("datasets_monthly")
    train, test = holdout_split(df, 12)
    fc = daskstate.Forecaster(freq=freq, prediction_length=12).fit(train)
    fig = fc.plot(train, ["AirPassengers", "nottem"], quantiles=(0.05, 0.1, 0.5, 0.9, 0.95), last=48, actual=test)
    fig.savefig(tmp_path / "fan.png")
    assert (tmp_path / "fan.png").stat().st_size > 1000 and len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:3] == ["history", "q0.05-q0.95", "q0.1-q0.9"]
    assert len(fc.plot(dd.from_pandas(train, npartitions=2)).axes) == 3  # the first three items
    with pytest.raises(ValueError, match="'nope' is in neither"):
        fc.plot(train, ["nope"])
