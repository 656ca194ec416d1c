"""The BLAS execution policy: one BLAS thread inside the tasks of a state that asks for it, restored after.

OpenBLAS (pthreads build, numpy's and scipy's wheels) has one thread count per
process. threadpoolctl 3.8 lets only one "controlling" thread change it and
silently ignores the others, so before ``single_blas_thread`` took that into
account a limit set from a Dask pool thread did nothing once the main thread had
set one (deepar's predict: 14.3 CPU s against 6.4 with ``OPENBLAS_NUM_THREADS=1``),
and a limit set by one pool thread and restored by another was never restored.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pytest

import daskstate
from daskstate.numerics import blas_thread_count, single_blas_thread

threadpoolctl = pytest.importorskip("threadpoolctl")

START = 2  # BLAS threads before each test: the limit must be seen to move from it and back


@pytest.fixture(autouse=True)
def two_blas_threads():
    """BLAS on 2 threads, set from the main thread as a user (or an earlier fit) would; restored after."""
    if blas_thread_count() is None:
        pytest.skip("no BLAS library that threadpoolctl controls")
    with threadpoolctl.threadpool_limits(limits=START, user_api="blas"):
        assert blas_thread_count() == START
        yield


def test_a_pool_thread_limit_holds_after_the_main_thread_set_one():
    with single_blas_thread(main_thread=True):  # the main thread sets (and restores) a limit first
        assert blas_thread_count() == 1
    assert blas_thread_count() == START

    def task(_: int) -> int:
        with single_blas_thread():
            np.ones((64, 64)) @ np.ones((64, 64))
            return blas_thread_count()

    with ThreadPoolExecutor(2) as pool:
        inside = list(pool.map(task, range(4)))
    assert inside == [1, 1, 1, 1]
    assert blas_thread_count() == START


def test_the_limit_is_restored_when_another_thread_leaves_last():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside = {}

    def first() -> None:
        with single_blas_thread():
            first_in.set()
            second_in.wait(5)
            inside["first"] = blas_thread_count()
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with single_blas_thread():
            second_in.set()
            first_out.wait(5)
            inside["second"] = blas_thread_count()  # the first thread, which set the limit, has left

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == {"first": 1, "second": 1}
    assert blas_thread_count() == START


def _probe(monkeypatch, owner, name: str, seen: list) -> None:
    real = getattr(owner, name)

    def probed(*args, **kwargs):
        seen.append(blas_thread_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, probed)


def test_fit_and_lazy_transform_on_the_threaded_scheduler_hold_one_blas_thread(monkeypatch):
    from daskstate.algorithms.pca import PCAState

    assert PCAState.blas_threads == 1 and not PCAState.blas_on_main_thread
    dX = da.from_array(np.random.default_rng(0).normal(size=(4000, 12)), chunks=(500, 12))
    in_update, in_transform = [], []
    _probe(monkeypatch, PCAState, "_update", in_update)
    with dask.config.set(scheduler="threads", num_workers=2):
        pca = daskstate.PCA(n_components=3).fit(dX)  # daskstate computes: the limit is held around it
        assert blas_thread_count() == START

        def probe(A: np.ndarray) -> np.ndarray:
            in_transform.append(blas_thread_count())
            return A

        lazy = pca._map_rows(dX, probe, [f"c{j}" for j in range(12)], "probe")  # transform's and predict's path
        lazy.compute()  # the user computes: each task sets the limit itself
        assert blas_thread_count() == START
        pca.score(dX)
    assert blas_thread_count() == START
    assert len(in_update) == 8 and set(in_update) == {1}
    assert len(in_transform) == 8 and set(in_transform) == {1}


def test_forecaster_predict_and_evaluate_tasks_hold_one_blas_thread(monkeypatch):
    from daskstate.algorithms.forecast import estimator as fe
    from daskstate.algorithms.forecast.datasets import synthetic_panel

    df = synthetic_panel(40, 80, freq="D", seed=3)
    ddf = daskstate.partition_by_series(dd.from_pandas(df, npartitions=4), npartitions=4)
    seen: list = []
    _probe(monkeypatch, fe, "linear_forecast", seen)
    with dask.config.set(scheduler="threads", num_workers=2):
        fc = daskstate.Forecaster(freq="D", prediction_length=7).fit(ddf)
        assert blas_thread_count() == START
        seen.clear()
        fc.predict(ddf).compute()
        assert seen and set(seen) == {1}
        assert blas_thread_count() == START
        seen.clear()
        fc.evaluate(ddf)
        assert seen and set(seen) == {1}
    assert blas_thread_count() == START


def test_the_main_thread_keeps_its_blas_threads_for_in_memory_work():
    # a state without blas_on_main_thread leaves the main thread's BLAS alone (in-memory fits use it)
    from daskstate.state import BlasPolicy

    with BlasPolicy(threads=1).limit():
        assert blas_thread_count() == START
    with BlasPolicy(threads=1).limit(main_thread=True):
        assert blas_thread_count() == 1
    with BlasPolicy(threads=None).limit(main_thread=True):
        assert blas_thread_count() == START
