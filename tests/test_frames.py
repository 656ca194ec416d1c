"""Every Dask DataFrame works: any reader, any column selection, X and y apart, filtered, repartitioned.

Dask optimises a frame before it runs: column projection is pushed into the reader and
``dd.read_parquet`` then fuses small partitions, so the partitions that run can be fewer
than ``npartitions`` says. Each fit here is compared with the same estimator fitted on the
pandas rows the frame holds (exact statistics match to rounding; k-means and SGD are held to
the quality of an in-memory fit), on scikit-learn's bundled datasets.
"""

from __future__ import annotations

import glob
import os
import warnings

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import spy_reads
from sklearn.datasets import load_diabetes, load_wine

import daskstate
from daskstate.data import as_input
from daskstate.errors import SchemaError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning",
                                        "ignore:The inplace keyword")

N_FILES = 6


def _frames_on_disk(folder, df: pd.DataFrame) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, rows in enumerate(np.array_split(np.arange(len(df)), N_FILES)):
        df.iloc[rows].to_parquet(os.path.join(folder, f"part-{i}.parquet"), index=False, row_group_size=40)
        df.iloc[rows].to_csv(os.path.join(folder, f"part-{i}.csv"), index=False)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    df = load_diabetes(as_frame=True).frame.astype("float64")
    folder = str(tmp_path_factory.mktemp("diabetes"))
    _frames_on_disk(folder, df)
    return df, folder


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    df = load_wine(as_frame=True).frame
    df.columns = [c.replace("/", "_") for c in df.columns]
    df = df.astype({c: "float64" for c in df.columns if c != "target"})
    folder = str(tmp_path_factory.mktemp("wine"))
    _frames_on_disk(folder, df)
    return df, folder


def _parquet_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*.parquet")))


READERS = {
    "dd.read_parquet": lambda df, folder: dd.read_parquet(folder),
    "daskstate.read_parquet": lambda df, folder: daskstate.read_parquet(folder),
    "read_csv": lambda df, folder: dd.read_csv(os.path.join(folder, "*.csv")),
    "from_pandas": lambda df, folder: dd.from_pandas(df, npartitions=5),
    "from_map": lambda df, folder: dd.from_map(pd.read_parquet, _parquet_files(folder)),
}


def _selections(columns: list[str], n: int, seed: int) -> list[list[str]]:
    """Column selections of every size, in and out of the frame's order."""
    rng = np.random.default_rng(seed)
    picks = [columns[:1], columns[-1:], columns[:2], columns[::-1][:3], columns[1::2], list(columns)]
    while len(picks) < n:
        size = int(rng.integers(1, len(columns) + 1))
        picks.append([columns[j] for j in rng.permutation(len(columns))[:size]])
    return picks


# ---------------------------------------------------------------- the partitions that run
@pytest.mark.parametrize("reader", sorted(READERS))
def test_partitions_hold_exactly_the_rows(diabetes, reader):
    """However Dask fuses or projects, the partition tasks hold each row once, in the right columns."""
    df, folder = diabetes
    ddf = READERS[reader](df, folder)
    features = [c for c in df.columns if c != "target"]
    fused = 0
    with dask.config.set(scheduler="sync"):
        for columns in _selections(features, 14, seed=len(reader)):
            for frame, y in ((ddf, None), (ddf[columns], ddf["target"])):
                inp = as_input(frame, y, features=columns if y is None else None,
                               target="target" if y is None else None, need_target=True)
                assert len(inp.parts) == len(inp.sources) == len(set(inp.sources))
                pieces = dask.compute(*inp.parts)
                X = pd.concat([p[0] if isinstance(p, tuple) else p for p in pieces])
                target = np.concatenate([np.asarray(p[1] if isinstance(p, tuple) else p["target"])
                                         for p in pieces])
                np.testing.assert_array_equal(X[columns].to_numpy(), df[columns].to_numpy())
                np.testing.assert_array_equal(target, df["target"].to_numpy())
                fused += len(inp.parts) < ddf.npartitions
    if reader == "dd.read_parquet":
        assert fused > 0, "no selection made Dask fuse partitions: the test lost its point"


def test_read_parquet_keeps_row_group_ids_after_projection_and_filters(diabetes):
    df, folder = diabetes
    ddf = daskstate.read_parquet(folder)
    ids = as_input(ddf, features=["bmi"]).sources
    assert len(ids) == ddf.npartitions and all("#rg" in s for s in ids)
    assert as_input(ddf[["s3", "age"]], ddf["target"], need_target=True).sources == ids
    assert as_input(ddf[ddf.age > 0], features=["bmi", "s1"]).sources == ids
    assert as_input(ddf.partitions[[3, 1]], features=["bmi"]).sources == [ids[3], ids[1]]
    assert not any("#rg" in s for s in as_input(ddf.repartition(npartitions=2), features=["bmi"]).sources)


# ---------------------------------------------------------------- fits against pandas
def _estimators(features, target="target"):
    return {
        "StandardScaler": lambda: daskstate.StandardScaler(features=features),
        "PCA": lambda: daskstate.PCA(min(2, len(features or "xy")), features=features),
        "KMeans": lambda: daskstate.KMeans(3, features=features, random_state=0),
        "LinearLearner-exact": lambda: daskstate.LinearLearner(
            "regressor", features=features, target=target, solver="exact"),
        "LinearLearner-sgd": lambda: daskstate.LinearLearner(
            "regressor", features=features, target=target, epochs=4, num_models=2, random_state=0),
    }


def _sse(X: np.ndarray, centers: np.ndarray) -> float:
    return float((((X[:, None, :] - centers[None]) ** 2).sum(axis=2)).min(axis=1).sum())


def _r2(est, df: pd.DataFrame, features) -> float:
    pred = np.asarray(est.predict(df[features]), dtype=float)
    y = df["target"].to_numpy()
    return 1.0 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _assert_same_fit(name: str, got, ref, rows: pd.DataFrame, features: list[str]) -> None:
    """``got`` (fitted on a Dask frame) learned what ``ref`` (fitted on ``rows`` in pandas) did."""
    assert got.n_samples_seen_ == ref.n_samples_seen_ == len(rows)
    assert list(got.feature_names_in_) == list(features)
    if name == "StandardScaler":
        np.testing.assert_allclose(got.mean_, ref.mean_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.var_, ref.var_, rtol=1e-9)
    elif name == "PCA":
        np.testing.assert_allclose(got.explained_variance_, ref.explained_variance_, rtol=1e-8)
        np.testing.assert_allclose(np.abs(got.components_), np.abs(ref.components_), rtol=1e-6, atol=1e-9)
    elif name == "KMeans":
        X = rows[features].to_numpy()
        assert _sse(X, got.cluster_centers_) <= 1.15 * _sse(X, ref.cluster_centers_)
    elif name == "LinearLearner-exact":
        np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.intercept_, ref.intercept_, rtol=1e-6, atol=1e-9)
    else:  # SGD: partitions change the rounds, so hold it to the in-memory fit's quality
        assert _r2(got, rows, features) >= _r2(ref, rows, features) - 0.05


CASES = [
    # (reader, feature selection); out-of-order and partial selections make dd.read_parquet fuse
    ("dd.read_parquet", ["s3", "bmi"]),
    ("dd.read_parquet", ["bp", "s5", "s1", "age", "s6", "s2", "sex", "s4"]),
    ("dd.read_parquet", None),
    ("daskstate.read_parquet", ["s6", "bmi", "bp"]),
    ("read_csv", ["s5", "age"]),
    ("from_pandas", ["bmi", "s5", "bp"]),
    ("from_map", ["s4", "s1"]),
]


@pytest.mark.parametrize("name", list(_estimators(["x"])))
@pytest.mark.parametrize(("reader", "features"), CASES)
def test_fit_any_reader_any_selection(diabetes, name, reader, features):
    df, folder = diabetes
    ddf = READERS[reader](df, folder)
    # by default every numeric column but the target (unsupervised estimators have none)
    used = features or [c for c in df.columns if c != "target" or not name.startswith("Linear")]
    with dask.config.set(scheduler="threads"):
        got = _estimators(features)[name]().fit(ddf)
    ref = _estimators(features)[name]().fit(df)
    _assert_same_fit(name, got, ref, df, used)


@pytest.mark.parametrize("name", ["LinearLearner-exact", "LinearLearner-sgd"])
@pytest.mark.parametrize("reader", ["dd.read_parquet", "daskstate.read_parquet", "from_pandas"])
def test_fit_x_and_y_as_two_collections(diabetes, name, reader):
    df, folder = diabetes
    ddf = READERS[reader](df, folder)
    features = ["s3", "bmi", "s5"]
    with dask.config.set(scheduler="threads"):
        got = _estimators(None, target=None)[name]().fit(ddf[features], ddf["target"])
    ref = _estimators(None, target=None)[name]().fit(df[features], df["target"])
    _assert_same_fit(name, got, ref, df, features)


def test_fit_x_and_y_from_two_reads(diabetes):
    """``y`` read separately, partitioned like ``X`` (same files), still lines up row by row."""
    df, folder = diabetes
    X = dd.read_parquet(folder, columns=["s5", "bmi"])
    y = dd.read_parquet(folder, columns=["target"])  # a one-column frame is a target too
    with dask.config.set(scheduler="threads"):
        got = daskstate.LinearLearner("regressor", solver="exact").fit(X, y)
    ref = daskstate.LinearLearner("regressor", solver="exact").fit(df[["s5", "bmi"]], df["target"])
    _assert_same_fit("LinearLearner-exact", got, ref, df, ["s5", "bmi"])


def test_target_partitioned_differently_is_a_clear_error(diabetes):
    df, folder = diabetes
    ddf = dd.read_parquet(folder)
    y = ddf["target"].repartition(npartitions=2)
    with pytest.raises(SchemaError, match="target has 2 partitions but the features have 6"):
        daskstate.LinearLearner("regressor", solver="exact").fit(ddf[["bmi"]], y)
    with pytest.raises(SchemaError, match="target must be one column"):
        daskstate.LinearLearner("regressor", solver="exact").fit(ddf[["bmi"]], ddf[["target", "age"]])


@pytest.mark.parametrize("name", list(_estimators(["x"])))
@pytest.mark.parametrize("reader", ["dd.read_parquet", "daskstate.read_parquet", "read_csv"])
def test_fit_filtered_and_repartitioned(diabetes, name, reader):
    df, folder = diabetes
    ddf = READERS[reader](df, folder)
    features = ["s1", "bmi", "bp"]
    keep = df[df["age"] > -0.02].reset_index(drop=True)
    with dask.config.set(scheduler="threads"):
        filtered = _estimators(features)[name]().fit(ddf[ddf["age"] > -0.02])
        repartitioned = _estimators(features)[name]().fit(ddf.repartition(npartitions=4))
    _assert_same_fit(name, filtered, _estimators(features)[name]().fit(keep), keep, features)
    _assert_same_fit(name, repartitioned, _estimators(features)[name]().fit(df), df, features)


def test_classifier_on_a_second_dataset(wine):
    """A multiclass SGD fit from two collections of a fused read (wine: 13 features, 3 classes)."""
    df, folder = wine
    ddf = dd.read_parquet(folder)
    features = ["proline", "flavanoids", "color_intensity", "alcohol"]
    assert ddf[features].optimize().npartitions < ddf.npartitions  # Dask did fuse
    with dask.config.set(scheduler="threads"):
        est = daskstate.LinearLearner("multiclass_classifier", epochs=6, random_state=0)
        est.fit(ddf[features], ddf["target"])
    assert est.n_samples_seen_ == len(df)
    assert np.mean(np.asarray(est.predict(df[features])) == df["target"].to_numpy()) >= 0.85


# ---------------------------------------------------------------- incremental and distributed
def test_partial_fit_on_projection_reads_only_new_row_groups(tmp_path, monkeypatch, diabetes):
    df, _ = diabetes
    first, later = df.iloc[:300], df.iloc[300:]
    first.to_parquet(tmp_path / "a.parquet", index=False, row_group_size=100)
    reads = spy_reads(monkeypatch)
    features = ["s3", "bmi"]
    with dask.config.set(scheduler="threads"):
        est = daskstate.LinearLearner("regressor", solver="exact")
        ddf = daskstate.read_parquet(tmp_path)
        est.fit(ddf[features], ddf["target"])
        assert sorted(reads) == ["a.parquet#rg0", "a.parquet#rg1", "a.parquet#rg2"]
        later.to_parquet(tmp_path / "b.parquet", index=False, row_group_size=100)
        reads.clear()
        ddf = daskstate.read_parquet(tmp_path)
        est.partial_fit(ddf[features], ddf["target"])
    assert sorted(reads) == ["b.parquet#rg0", "b.parquet#rg1"]
    ref = daskstate.LinearLearner("regressor", solver="exact").fit(df[features], df["target"])
    _assert_same_fit("LinearLearner-exact", est, ref, df, features)


def test_fused_frame_on_a_cluster(diabetes, cluster_client):
    df, folder = diabetes
    ddf = dd.read_parquet(folder)
    features = ["s6", "bmi", "bp"]
    with cluster_client.as_current():
        got = daskstate.LinearLearner("regressor", solver="exact").fit(ddf[features], ddf["target"])
        scaler = daskstate.StandardScaler(features=features[::-1]).fit(ddf)
    ref = daskstate.LinearLearner("regressor", solver="exact").fit(df[features], df["target"])
    _assert_same_fit("LinearLearner-exact", got, ref, df, features)
    _assert_same_fit("StandardScaler", scaler, daskstate.StandardScaler(features=features[::-1]).fit(df),
                     df, features[::-1])


# ---------------------------------------------------------------- partial_fit with nothing new
@pytest.mark.parametrize("name", list(_estimators(["x"])))
def test_partial_fit_that_finds_nothing_new_says_so(tmp_path, diabetes, name):
    df, _ = diabetes
    df.iloc[:300].to_parquet(tmp_path / "a.parquet", index=False, row_group_size=100)
    features = ["s3", "bmi"]
    with dask.config.set(scheduler="threads"):
        est = _estimators(features)[name]().fit(daskstate.read_parquet(tmp_path))
        before = est.state_
        with pytest.warns(UserWarning, match=r"partial_fit found nothing new: all 3 partitions"):
            est.partial_fit(daskstate.read_parquet(tmp_path))
        assert est.state_.n_rows == before.n_rows == 300
        df.iloc[300:].to_parquet(tmp_path / "b.parquet", index=False, row_group_size=100)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*nothing new")
            est.partial_fit(daskstate.read_parquet(tmp_path))  # two new row groups: no warning
    assert est.n_samples_seen_ == len(df)


def test_partial_fit_nothing_new_on_a_plain_dask_frame(diabetes):
    df, folder = diabetes
    ddf = dd.read_parquet(folder)[["s6", "bp"]]  # fused by Dask: fewer partitions than files
    with dask.config.set(scheduler="threads"):
        sc = daskstate.StandardScaler().fit(ddf)
        n = len(sc.state_.consumed)
        assert n < N_FILES
        with pytest.warns(UserWarning, match=rf"all {n} partitions of the input are already in the state"):
            sc.partial_fit(ddf)
    assert sc.n_samples_seen_ == len(df)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*nothing new")
        sc.partial_fit(df[["s6", "bp"]])  # in-memory rows carry no ids: always folded
    assert sc.n_samples_seen_ == 2 * len(df)
