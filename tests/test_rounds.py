"""The engine's rounds (fold_rounds): averaging, seeding, epochs, early stop, checkpoints, task names."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from dask.utils import key_split

from daskstate.engine import (
    RoundContext,
    RoundResult,
    epoch_rounds,
    finish_round,
    fold_rounds,
    merge_round_results,
)
from daskstate.errors import StateFileError
from daskstate.numerics import mini_batches
from daskstate.state import Schema, State, register


@register
class ToySGDState(State):
    """Momentum SGD towards the mean of the rows; randomness only from the round context."""

    algorithm = "test_rounds_toy_sgd"
    array_names = ("w", "m", "seen", "loss")
    round_averaged = ("w", "m")
    round_summed = ("seen", "loss")

    def _init_arrays(self) -> None:
        d = self.n_features
        self.w, self.m = np.zeros(d), np.zeros(d)
        self.seen, self.loss = np.zeros(1), np.zeros(1)

    def _update(self, X: np.ndarray, y: np.ndarray | None, ctx: RoundContext | None) -> None:
        rng = ctx.rng() if ctx is not None else np.random.default_rng(0)
        Xs = X[rng.permutation(len(X))]
        for rows in mini_batches(len(Xs), 4):
            g = self.w - Xs[rows].mean(axis=0) + rng.normal(scale=0.01, size=self.n_features)
            self.m = 0.5 * self.m + g
            self.w = self.w - 0.1 * self.m
            self.loss += float(((Xs[rows] - self.w) ** 2).sum())
        self.seen += len(X)

    def _merge(self, other: ToySGDState) -> None:
        frac = other.n_rows / (self.n_rows + other.n_rows)
        self.w = self.w + (other.w - self.w) * frac
        self.m = self.m + (other.m - self.m) * frac
        self.seen, self.loss = self.seen + other.seen, self.loss + other.loss

    def finalize(self) -> dict:
        return {"w_": self.w}


SCHEMA = Schema(("a", "b", "c"))


def _data(sizes=(10, 7, 13, 5, 9), seed=0):
    X = np.random.default_rng(seed).normal(3.0, 1.0, size=(sum(sizes), 3))
    return X, da.from_array(X, chunks=(tuple(sizes), 3))


def _parts(X, sizes):
    return np.split(X, np.cumsum(sizes)[:-1])


def test_one_partition_per_round_is_sequential_sgd():
    sizes = (10, 7, 13)
    X, dX = _data(sizes)
    out = fold_rounds(dX, ToySGDState(SCHEMA), sync_every=1, shuffle=False, seed=5)
    seq = ToySGDState(SCHEMA)
    for i, part in enumerate(_parts(X, sizes)):
        seq.update_inplace(part, context=RoundContext(0, i, i, f"{dX.name}:{i}", 5))
    np.testing.assert_array_equal(out.w, seq.w)
    np.testing.assert_array_equal(out.m, seq.m)
    np.testing.assert_array_equal(out.seen, seq.seen)
    np.testing.assert_allclose(out.loss, seq.loss, rtol=1e-14)  # summed per partition, then added
    assert out.n_rows == sum(sizes)


def test_a_round_is_the_count_weighted_average_of_its_partitions():
    sizes = (10, 7, 13)
    X, dX = _data(sizes)
    start = ToySGDState(SCHEMA)
    start.w = np.array([1.0, -1.0, 0.5])
    out = fold_rounds(dX, start, sync_every=3, shuffle=False, seed=1)
    ws, ms, losses = [], [], []
    for i, part in enumerate(_parts(X, sizes)):
        s = start.copy()
        s.update_inplace(part, context=RoundContext(0, 0, i, f"{dX.name}:{i}", 1))
        ws.append(s.w)
        ms.append(s.m)
        losses.append(s.loss)
    n = np.asarray(sizes, dtype=float)[:, None]
    np.testing.assert_allclose(out.w, (n * ws).sum(0) / n.sum(), rtol=1e-13)
    np.testing.assert_allclose(out.m, (n * ms).sum(0) / n.sum(), rtol=1e-13)
    np.testing.assert_allclose(out.loss, np.sum(losses), rtol=1e-13)
    assert out.seen[0] == sum(sizes)


def test_merge_of_identical_parameters_is_exact_and_single_result_passes_through():
    a = np.random.default_rng(0).normal(size=5)
    r1 = RoundResult(3.0, {"w": a.copy()}, {"s": np.ones(1)})
    r2 = RoundResult(7.0, {"w": a.copy()}, {"s": np.ones(1)})
    m = merge_round_results(r1, r2)
    np.testing.assert_array_equal(m.averaged["w"], a)
    assert m.weight == 10.0 and m.summed["s"][0] == 2.0
    np.testing.assert_array_equal(merge_round_results(r1).averaged["w"], a)
    # weight 0 (a partition that trained on nothing) leaves the others' average untouched
    r0 = RoundResult(0.0, {"w": np.zeros(5)}, {"s": np.zeros(1)})
    np.testing.assert_array_equal(merge_round_results(r1, r0).averaged["w"], a)
    start = ToySGDState(Schema(tuple("abcde")))
    start.w = a.copy()
    empty = RoundResult(0.0, {"w": np.zeros(5)}, {"seen": np.ones(1)})
    nxt = finish_round(start, empty)
    np.testing.assert_array_equal(nxt.w, a)
    assert nxt.seen[0] == 1


def test_merge_is_associative_to_rounding():
    rng = np.random.default_rng(3)
    rs = [RoundResult(float(w), {"w": rng.normal(size=4)}, {"s": rng.normal(size=2)}) for w in (1, 5, 2, 9)]
    left = merge_round_results(merge_round_results(*rs[:2]), merge_round_results(*rs[2:]))
    flat = merge_round_results(*rs)
    np.testing.assert_allclose(left.averaged["w"], flat.averaged["w"], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(left.summed["s"], flat.summed["s"], rtol=1e-13)


def test_epoch_order_is_seeded_shuffled_and_complete():
    idx = list(range(20))
    a = epoch_rounds(idx, 8, seed=3, epoch=0)
    assert [len(r) for r in a] == [8, 8, 4]
    assert sorted(sum(a, [])) == idx
    assert a == epoch_rounds(idx, 8, seed=3, epoch=0)
    assert a != epoch_rounds(idx, 8, seed=3, epoch=1)
    assert a != epoch_rounds(idx, 8, seed=4, epoch=0)
    assert sum(epoch_rounds(idx, 8, seed=3, epoch=0, shuffle=False), []) == idx


def test_epochs_count_rows_once_and_same_result_on_any_local_scheduler():
    sizes = (10, 7, 13, 5, 9)
    X, dX = _data(sizes)
    results = []
    for scheduler in ("sync", "threads"):
        with dask.config.set(scheduler=scheduler):
            results.append(fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=2, seed=7))
    a, b = results
    np.testing.assert_array_equal(a.w, b.w)
    assert a.n_rows == sum(sizes)
    assert a.seen[0] == 3 * sum(sizes)
    assert a.consumed == {f"{dX.name}:{i}" for i in range(len(sizes))}
    # another sync schedule is another (valid) fit
    c = fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=5, seed=7)
    assert not np.array_equal(a.w, c.w)
    np.testing.assert_allclose(c.w, X.mean(axis=0), atol=0.5)


def test_epoch_end_can_stop_and_modify_the_state():
    _, dX = _data()
    calls = []

    def epoch_end(state, epoch):
        calls.append(epoch)
        state = state.copy()
        state.loss = state.loss * 0  # e.g. reset an accumulator
        return state, epoch == 1

    out = fold_rounds(dX, ToySGDState(SCHEMA), epochs=10, sync_every=2, epoch_end=epoch_end)
    assert calls == [0, 1]
    assert out.seen[0] == 2 * 44 and out.loss[0] == 0


def test_skip_sources_leaves_partitions_out():
    sizes = (10, 7, 13)
    X, dX = _data(sizes)
    out = fold_rounds(dX, ToySGDState(SCHEMA), skip_sources={f"{dX.name}:1"}, sync_every=1, shuffle=False)
    assert out.n_rows == 23 and out.seen[0] == 23
    assert f"{dX.name}:1" not in out.consumed


def test_iterator_input_allows_one_epoch_in_rounds():
    sizes = (10, 7, 13)
    X, _ = _data(sizes)
    out = fold_rounds(iter(_parts(X, sizes)), ToySGDState(SCHEMA), sync_every=2)
    assert out.n_rows == 30 and out.seen[0] == 30
    with pytest.raises(ValueError, match="1 epoch"):
        fold_rounds(iter(_parts(X, sizes)), ToySGDState(SCHEMA), epochs=2)
    with pytest.raises(ValueError, match="sync_every"):
        fold_rounds(iter(_parts(X, sizes)), ToySGDState(SCHEMA), sync_every=0)


def test_task_names_say_what_they_do():
    _, dX = _data()
    keys = []

    class Record(Callback):
        def _pretask(self, key, dsk, state):
            keys.append(key_split(key))

    with dask.config.set(scheduler="threads"), Record():
        fold_rounds(dX, ToySGDState(SCHEMA), sync_every=2, epochs=2)
    names = set(keys)
    alg = ToySGDState.algorithm
    assert {f"{alg}-update", f"{alg}-merge", f"{alg}-round"} <= names
    assert keys.count(f"{alg}-update") == 2 * 5
    assert keys.count(f"{alg}-round") == 2 * 3


class Crash(Exception):
    pass


def test_checkpoint_resumes_at_round_boundaries(tmp_path):
    _, dX = _data((6, 6, 6, 6, 6, 6))
    path = tmp_path / "ck.zarr"
    whole = fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=2, seed=2)
    # checkpointing every round (one graph per round) gives the same arithmetic
    stepwise = fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=2, seed=2,
                           checkpoint=tmp_path / "other.zarr", checkpoint_every=1)
    np.testing.assert_array_equal(whole.w, stepwise.w)

    crashed = {"n": 0}

    def crash_once(state, epoch):
        if epoch == 1 and not crashed["n"]:
            crashed["n"] += 1
            raise Crash("worker lost")
        return state, False

    with pytest.raises(Crash):
        fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=2, seed=2, epoch_end=crash_once,
                    checkpoint=path, checkpoint_every=2)
    seen = []

    def record(state, epoch):
        seen.append(epoch)
        return state, False

    resumed = fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=2, seed=2, epoch_end=record,
                          checkpoint=path, checkpoint_every=2)
    assert seen == [1, 2]  # epoch 0 was not redone
    np.testing.assert_array_equal(resumed.w, whole.w)
    np.testing.assert_array_equal(resumed.seen, whole.seen)
    assert "fold_rounds" not in resumed.extra_meta
    # the finished checkpoint returns at once; another starting state refuses it
    again = fold_rounds(dX, ToySGDState(SCHEMA), epochs=3, sync_every=2, seed=2, checkpoint=path)
    np.testing.assert_array_equal(again.w, whole.w)
    other = ToySGDState(SCHEMA)
    other.w = np.ones(3)
    with pytest.raises(StateFileError, match="another fit"):
        fold_rounds(dX, other, epochs=3, sync_every=2, seed=2, checkpoint=path)
