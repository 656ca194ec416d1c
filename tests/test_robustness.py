"""Prove it survives: bad input through fit, partial_fit and predict for every estimator,
dead workers, many partitions. Nothing already learned is lost on error.

Every estimator joins through ``CASES``: how to build it, how to apply it, what it needs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import spy_reads

import daskstate
from daskstate.errors import DataError, SchemaError

FEATURES = ["f0", "f1", "f2", "f3"]


@dataclass
class Case:
    name: str
    make: Any  # (**overrides) -> estimator
    apply: str  # method that maps rows to outputs
    target: str | None = None  # target column for supervised estimators
    min_rows_param: tuple[str, int] | None = None  # (hyperparameter, value) that needs that many rows
    bad_params: list[tuple[dict, str]] = field(default_factory=list)  # (params, name in the message)
    classifier: bool = False


def _scaler(**kw):
    return daskstate.StandardScaler(features=FEATURES, **kw)


CASES = [
    Case("StandardScaler", _scaler, "transform", bad_params=[({"on_invalid": "drop"}, "on_invalid")]),
]


def _maybe_add_algorithms() -> None:
    """Join every estimator the package exports (each added when its issue lands)."""
    if hasattr(daskstate, "KMeans"):
        CASES.append(Case(
            "KMeans", lambda **kw: daskstate.KMeans(**{"n_clusters": 3, "features": FEATURES, "random_state": 0, **kw}),
            "predict", min_rows_param=("n_clusters", 10_000),
            bad_params=[({"n_clusters": 0}, "n_clusters"), ({"init": "bogus"}, "init")],
        ))
    if hasattr(daskstate, "PCA"):
        CASES.append(Case(
            "PCA", lambda **kw: daskstate.PCA(**{"n_components": 2, "features": FEATURES, **kw}),
            "transform", min_rows_param=("n_components", 3),
            bad_params=[({"n_components": 0}, "n_components"), ({"mode": "bogus"}, "mode")],
        ))
    if hasattr(daskstate, "LinearLearner"):
        CASES.append(Case(
            "LinearLearner-regressor",
            lambda **kw: daskstate.LinearLearner(**{
                "predictor_type": "regressor", "features": FEATURES, "target": "y", "epochs": 2,
                "random_state": 0, **kw}),
            "predict", target="y",
            bad_params=[({"epochs": 0}, "epochs"), ({"predictor_type": "bogus"}, "predictor_type")],
        ))
        CASES.append(Case(
            "LinearLearner-multiclass",
            lambda **kw: daskstate.LinearLearner(**{
                "predictor_type": "multiclass_classifier", "features": FEATURES, "target": "label",
                "epochs": 2, "random_state": 0, **kw}),
            "predict", target="label", classifier=True,
        ))


_maybe_add_algorithms()
IDS = [c.name for c in CASES]


def frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0, 0, 0], [6, 6, 0, 0], [0, 6, 6, 6]], dtype=float)
    which = rng.integers(0, 3, n)
    X = centers[which] + rng.normal(size=(n, 4))
    df = pd.DataFrame(X, columns=FEATURES)
    df["y"] = X @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=n)
    df["label"] = which
    return df


def ddf_of(df: pd.DataFrame, n: int = 4) -> dd.DataFrame:
    return dd.from_pandas(df, npartitions=n, sort=False)


def snapshot(est) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = est.state_.to_arrays()
    return {k: v.copy() for k, v in arrays.items()}, meta


def assert_unchanged(est, before, X, *, ignore_consumed: bool = False) -> None:
    arrays, meta = snapshot(est)
    expected = dict(before[0][1])
    if ignore_consumed:  # empty partitions are recorded as consumed, nothing else changes
        meta = {k: v for k, v in meta.items() if k != "consumed"}
        expected.pop("consumed")
    assert meta == expected
    for name, value in before[0][0].items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)
    np.testing.assert_array_equal(np.asarray(getattr(est, est._case.apply)(X)), before[1])


@pytest.fixture(params=CASES, ids=IDS)
def case(request) -> Case:
    return request.param


@pytest.fixture
def fitted(case):
    df = frame()
    est = case.make().fit(ddf_of(df))
    est._case = case
    X = df[FEATURES].iloc[:50]
    return est, (snapshot(est), np.asarray(getattr(est, case.apply)(X))), X


def _with(df: pd.DataFrame, **cols) -> pd.DataFrame:
    out = df.copy()
    for k, v in cols.items():
        out[k] = v
    return out


def test_non_numeric_feature(case, fitted):
    est, before, X = fitted
    bad = _with(frame(seed=1), f2="text")
    with pytest.raises(SchemaError, match=r"'f2'.*not numeric"):
        case.make().fit(ddf_of(bad))
    with pytest.raises(SchemaError, match=r"'f2'.*not numeric"):
        est.partial_fit(ddf_of(bad))
    with pytest.raises(SchemaError, match=r"'f2'.*not numeric"):
        getattr(est, case.apply)(bad[FEATURES])
    assert_unchanged(est, before, X)


def test_missing_feature_and_target(case, fitted):
    est, before, X = fitted
    df = frame(seed=2)
    with pytest.raises(SchemaError, match=r"\['f1'\] missing"):
        case.make().fit(ddf_of(df.drop(columns="f1")))
    with pytest.raises(SchemaError, match=r"\['f1'\] missing"):
        est.partial_fit(ddf_of(df.drop(columns="f1")))
    with pytest.raises(DataError, match=r"\['f1'\].*missing"):
        getattr(est, case.apply)(df[FEATURES].drop(columns="f1"))
    if case.target:
        with pytest.raises(SchemaError, match=rf"target column '{case.target}' is missing"):
            case.make().fit(ddf_of(df.drop(columns=case.target)))
        with pytest.raises(SchemaError, match=rf"'{case.target}'.*missing"):
            est.partial_fit(ddf_of(df.drop(columns=case.target)))
    assert_unchanged(est, before, X)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_in_features(case, fitted, value):
    est, before, X = fitted
    df = frame(seed=3)
    df.iloc[[170, 171], 1] = value  # partition 1 of 4
    with pytest.raises(DataError, match=r"partition 1.*2 row\(s\) with NaN or inf.*'f1' \(2\)"):
        case.make().fit(ddf_of(df))
    with pytest.raises(DataError, match=r"partition 1.*'f1' \(2\)"):
        est.partial_fit(ddf_of(df))
    with pytest.raises(DataError, match=r"'f1' \(2\)"):
        getattr(est, case.apply)(df[FEATURES].iloc[160:180])
    assert_unchanged(est, before, X)
    skipping = case.make(on_invalid="skip").fit(ddf_of(df))
    assert skipping.state_.n_skipped >= 2


def test_nan_in_target(case, fitted):
    if not case.target:
        pytest.skip("unsupervised")
    est, before, X = fitted
    df = frame(seed=4)
    df[case.target] = df[case.target].astype("float64")
    df.iloc[400, df.columns.get_loc(case.target)] = np.nan
    with pytest.raises(DataError, match=rf"partition 2.*target '{case.target}' \(1\)"):
        case.make().fit(ddf_of(df))
    with pytest.raises(DataError, match=rf"target '{case.target}' \(1\)"):
        est.partial_fit(ddf_of(df))
    assert_unchanged(est, before, X)


def test_partition_whose_schema_differs(case, fitted):
    est, before, X = fitted
    good, odd = frame(seed=5), _with(frame(seed=6), f3="x")
    ddf = dd.from_delayed([dask.delayed(good), dask.delayed(odd)], meta=good.iloc[:0], verify_meta=False)
    with pytest.raises(SchemaError, match=r"partition 1.*'f3'.*not numeric"):
        case.make().fit(ddf)
    with pytest.raises(SchemaError, match=r"partition 1.*'f3'.*not numeric"):
        est.partial_fit(ddf)
    assert_unchanged(est, before, X)


def test_features_differ_from_state(case, fitted):
    est, before, X = fitted
    df = frame(seed=7)
    renamed = df.rename(columns={"f3": "g3"})
    with pytest.raises(SchemaError, match=r"\['f3'\] missing"):
        est.partial_fit(ddf_of(renamed))
    with pytest.raises(DataError, match=r"\['f3'\].*missing"):
        getattr(est, case.apply)(renamed[["f0", "f1", "f2", "g3"]])
    with pytest.raises(DataError, match="fitted on 4 features"):
        getattr(est, case.apply)(df[FEATURES].to_numpy()[:, :3])
    assert_unchanged(est, before, X)
    # another column order selects by name: the same outputs
    np.testing.assert_array_equal(
        np.asarray(getattr(est, case.apply)(X[FEATURES[::-1]])), before[1])


def test_empty_dataset_and_empty_partitions(case, fitted):
    est, before, X = fitted
    df = frame(seed=8)
    empty = ddf_of(df)
    empty = empty[empty.f0 > 1e9]
    with pytest.raises(DataError, match="needs at least"):
        case.make().fit(empty)
    est.partial_fit(empty)  # nothing to fold: the model is unchanged
    assert_unchanged(est, before, X, ignore_consumed=True)
    parts = [df.iloc[:0], df.iloc[:300], df.iloc[300:300], df.iloc[300:]]
    with_empty = dd.from_delayed([dask.delayed(p) for p in parts], meta=df.iloc[:0])
    assert case.make().fit(with_empty).n_samples_seen_ >= len(df) * (0.5 if case.target else 1)


def test_too_few_rows_for_the_hyperparameters(case):
    if case.min_rows_param is None:
        pytest.skip("no row requirement beyond one row")
    name, value = case.min_rows_param
    with pytest.raises((DataError, ValueError), match=name):
        case.make(**{name: value}).fit(frame(n=value - 1 if value < 100 else 50))


def test_integer_boolean_float32_columns_are_accepted(case):
    df = frame(seed=9)
    mixed = df.astype({"f0": "float32"})
    mixed["f1"] = (df["f1"] * 10).round().astype("int64")
    mixed["f2"] = df["f2"] > 0
    est = case.make().fit(ddf_of(mixed))
    assert est.n_samples_seen_ > 0
    out = np.asarray(getattr(est, case.apply)(mixed[FEATURES]))
    assert np.isfinite(out.astype(float)).all()


def test_hyperparameters_out_of_range_are_named(case):
    for params, name in case.bad_params:
        with pytest.raises(ValueError, match=name):
            case.make(**params).fit(frame(seed=10))


def test_unseen_class_at_partial_fit(case, fitted):
    if not case.classifier:
        pytest.skip("not a classifier")
    est, before, X = fitted
    df = frame(seed=11)
    df.loc[df.index[:5], case.target] = 7
    with pytest.raises(DataError, match="7"):
        est.partial_fit(ddf_of(df))
    assert_unchanged(est, before, X)


# ---- dead workers and load ----------------------------------------------------------------
def _slow_partition(i: int, n: int = 400) -> pd.DataFrame:
    time.sleep(0.3)
    return frame(n=n, seed=100 + i)


@pytest.fixture
def own_cluster():
    """A LocalCluster of 2 worker processes for this test alone (one of them will be killed)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster, set_as_default=False) as client:
        yield client


@pytest.mark.distributed
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_worker_killed_mid_fit_gives_the_undisturbed_result(case, own_cluster):
    ddf = dd.from_map(_slow_partition, list(range(16)), meta=frame(n=0))
    with own_cluster.as_current():
        undisturbed = case.make().fit(ddf)
        pids = own_cluster.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = threading.Event()

        def kill_one_worker() -> None:
            time.sleep(1.0)
            os.kill(victim, signal.SIGKILL)
            killed.set()

        threading.Thread(target=kill_one_worker, daemon=True).start()
        disturbed = case.make().fit(ddf)
        assert killed.wait(30)
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # it really died
    a, _ = undisturbed.state_.to_arrays()
    b, _ = disturbed.state_.to_arrays()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_ten_thousand_tiny_partitions():
    df = frame(n=20_000, seed=12)
    ddf = dd.from_pandas(df, npartitions=10_000, sort=False)
    assert ddf.npartitions == 10_000
    with dask.config.set(scheduler="threads"):
        sc = daskstate.StandardScaler(features=FEATURES).fit(ddf)
    assert sc.n_samples_seen_ == 20_000 and len(sc.state_.consumed) == 10_000
    np.testing.assert_allclose(sc.mean_, df[FEATURES].mean().to_numpy(), rtol=1e-10)


@pytest.mark.distributed
def test_five_hundred_partitions_on_two_worker_processes_with_steady_memory(cluster_client):
    ddf = dd.from_map(lambda i: frame(n=2_000, seed=i), list(range(500)), meta=frame(n=0))
    with cluster_client.as_current():
        before = {w: m["metrics"]["memory"] for w, m in cluster_client.scheduler_info()["workers"].items()}
        sc = daskstate.StandardScaler(features=FEATURES).fit(ddf)
        after = {w: m["metrics"]["memory"] for w, m in cluster_client.scheduler_info()["workers"].items()}
    assert sc.n_samples_seen_ == 1_000_000
    for w in before:
        if w in after:
            assert after[w] - before[w] < 300e6, (w, before[w], after[w])


# ---- killed processes and damaged files, for every estimator ---------------------------------
KILLED_FIT = """
import sys, time, dask
sys.path.insert(0, sys.argv[1])
import daskstate
from test_robustness import CASES
original = daskstate.data.PieceReader.__call__
def slow(self, piece, columns=None):
    time.sleep(0.02)
    with open(sys.argv[5], "a") as fh:  # one line per partition read, for the test to pick its moment
        fh.write(piece.id + "\\n")
    return original(self, piece, columns)
daskstate.data.PieceReader.__call__ = slow
case = next(c for c in CASES if c.name == sys.argv[2])
with dask.config.set(scheduler="synchronous"):
    case.make().fit(daskstate.read_parquet(sys.argv[3]), checkpoint=sys.argv[4], checkpoint_every=4)
"""


@pytest.fixture(scope="module")
def parquet_frame(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    df = frame(n=4_800, seed=33)
    for i in range(6):
        df.iloc[i * 800 : (i + 1) * 800].to_parquet(folder / f"part-{i}.parquet", row_group_size=200,
                                                    index=False)
    return folder  # 24 row groups


@pytest.mark.parametrize("fraction", [0.4, pytest.param(0.8, marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sigkilled_fit_resumes_to_the_uninterrupted_result(case, fraction, parquet_frame, tmp_path, monkeypatch):
    import pathlib
    import subprocess
    import sys

    reads = spy_reads(monkeypatch)
    with dask.config.set(scheduler="threads"):
        # uninterrupted, with the same checkpoint schedule (merge order shapes approximate states)
        whole = case.make().fit(daskstate.read_parquet(parquet_frame), checkpoint=tmp_path / "whole.zarr",
                                checkpoint_every=4)
    whole_reads = len(reads)

    ckpt, progress = tmp_path / "ckpt.zarr", tmp_path / "progress.txt"
    progress.touch()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_FIT, str(pathlib.Path(__file__).parent), case.name,
                             str(parquet_frame), str(ckpt), str(progress)])
    deadline = time.time() + 120
    while len(progress.read_text().splitlines()) < fraction * whole_reads and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the fit finished or failed before it was killed"
    assert ckpt.exists()

    reads.clear()
    with dask.config.set(scheduler="threads"):
        resumed = case.make().fit(daskstate.read_parquet(parquet_frame), checkpoint=ckpt, checkpoint_every=4)
    assert len(reads) < whole_reads  # what the checkpoint holds was not read again
    a, meta_a = whole.state_.to_arrays()
    b, meta_b = resumed.state_.to_arrays()
    assert meta_a["n_rows"] == meta_b["n_rows"]
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_damaged_model_files_fail_clearly_for_every_estimator(case, tmp_path):
    import json
    import shutil

    from daskstate.errors import StateFileError

    est = case.make().fit(frame(seed=40))
    path = tmp_path / "m.zarr"
    est.save(path)
    loaded = daskstate.load(path)
    X = frame(seed=41)[FEATURES]
    np.testing.assert_array_equal(np.asarray(getattr(loaded, case.apply)(X)),
                                  np.asarray(getattr(est, case.apply)(X)))
    array_dirs = sorted(p for p in (path / "state").iterdir() if p.is_dir())
    # a flipped bit in every array in turn
    for array_dir in array_dirs:
        damaged = tmp_path / f"flip-{array_dir.name}.zarr"
        shutil.copytree(path, damaged)
        chunks = sorted(p for p in (damaged / "state" / array_dir.name / "c").rglob("*") if p.is_file())
        if not chunks:
            continue
        data = bytearray(chunks[0].read_bytes())
        data[len(data) // 2] ^= 0x10
        chunks[0].write_bytes(bytes(data))
        with pytest.raises(StateFileError):
            daskstate.load(damaged)
    # edited hyperparameters
    edited = tmp_path / "edited.zarr"
    shutil.copytree(path, edited)
    meta = json.loads((edited / "zarr.json").read_text())
    meta["attributes"]["daskstate"]["n_rows"] += 1
    (edited / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StateFileError, match="checksum"):
        daskstate.load(edited)
    # truncated: an array's metadata gone
    truncated = tmp_path / "truncated.zarr"
    shutil.copytree(path, truncated)
    (truncated / "state" / array_dirs[0].name / "zarr.json").unlink()
    with pytest.raises(StateFileError, match="missing"):
        daskstate.load(truncated)


# ---------------------------------------------------------------------------- issue 16 items 3 and 4
def _wide_ranged(scale: float, n: int = 2_000) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(16)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    X["b"] *= scale
    return X, X["a"] * 2.0 + rng.normal(size=n)


MOMENT_ESTIMATORS = {
    "scaler": lambda: daskstate.StandardScaler(),
    "pca": lambda: daskstate.PCA(n_components=2),
    "pca-randomized": lambda: daskstate.PCA(n_components=2, mode="randomized"),
    "linear-exact": lambda: daskstate.LinearLearner("regressor", solver="exact"),
    "linear-sgd": lambda: daskstate.LinearLearner("regressor", num_models=2, epochs=1),
}


def _fitted_floats(est) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(est).items()
            if k.endswith("_") and isinstance(v, np.ndarray) and v.dtype.kind == "f"}


@pytest.mark.parametrize("name", sorted(MOMENT_ESTIMATORS))
def test_overflowing_column_fails_at_fit_naming_it(name):
    """Issue 16 item 3: a column of normal x 1e160 gave inf/NaN fitted attributes or raw LinAlgErrors."""
    from daskstate.errors import MomentOverflowError

    X, y = _wide_ranged(1e160)
    est = MOMENT_ESTIMATORS[name]()
    with pytest.raises(MomentOverflowError, match=r"column\(s\) \['b'\]"):
        est.fit(X, y)
    ok, y_ok = _wide_ranged(1e150)  # large but representable: works, every fitted array finite
    est.fit(ok, y_ok)
    assert {k: bool(np.isfinite(v).all()) for k, v in _fitted_floats(est).items()} == dict.fromkeys(
        _fitted_floats(est), True)
    if name == "linear-sgd":
        return  # its partial_fit keeps the first fit's normaliser: no moments of the new rows are summed
    before = {k: v.copy() for k, v in _fitted_floats(est).items()}
    with pytest.raises(MomentOverflowError, match="'b'"):
        est.partial_fit(X, y)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(est, k), v)


def test_overflow_in_a_merge_of_two_partitions_names_the_column():
    import pickle

    from daskstate.errors import MomentOverflowError

    base = np.random.default_rng(3).normal(size=(400, 2))
    X = pd.DataFrame(base, columns=["a", "b"])
    X.loc[:199, "b"] += 1e153  # each half is fine; the halves' means differ by 2e153
    X.loc[200:, "b"] -= 1e153
    with pytest.raises(MomentOverflowError, match=r"\['b'\]"):
        daskstate.StandardScaler().fit(dd.from_pandas(X, npartitions=2, sort=False))
    exc = pickle.loads(pickle.dumps(MomentOverflowError([1], ["b"])))  # travels from Dask workers
    assert exc.columns == [1] and exc.names == ["b"] and "'b'" in str(exc)


def test_duplicate_column_names_are_named():
    """Issue 16 item 4: columns a, a, b fitted on ['b'] only, or said 'a' is not numeric."""
    X = pd.DataFrame(np.random.default_rng(4).normal(size=(60, 3)), columns=["a", "a", "b"])
    for data in (X, dd.from_pandas(X, npartitions=2)):
        with pytest.raises(SchemaError, match=r"column name\(s\) \['a'\] appear more than once"):
            daskstate.StandardScaler().fit(data)
        with pytest.raises(SchemaError, match="more than once"):
            daskstate.StandardScaler(features=["a", "b"]).fit(data)
    assert list(daskstate.StandardScaler(features=["b"]).fit(X).feature_names_in_) == ["b"]
