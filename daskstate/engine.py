"""The engine: one pipeline that folds any input into a state, in rounds.

A **round** is a set of partitions whose ``<algorithm>-update`` tasks all start
from the same state; a tree of ``<algorithm>-merge`` tasks (``split_every`` at a
time) combines their results, and an ``<algorithm>-round`` task folds the
combination into the state the next round starts from. Two kinds of pass use
that one graph builder, :func:`build_rounds`:

- :func:`fold`, one pass: a single round whose tasks start from *empty* states
  and whose results are merged exactly (``State.merge``); the root is merged into
  the given state, so ``partial_fit(new) == merge(old, fold(new))``. With a
  checkpoint, the partitions are folded in groups of ``checkpoint_every``, one
  round each, and the running state is written after each group.
- :func:`fold_rounds`, iterative (SGD) training: epochs visit the partitions in a
  seeded, shuffled order, ``sync_every`` per round; every task starts from the
  round's state, and the results are averaged as the state's rounds protocol
  declares (``round_averaged``, ``round_summed``, ``round_weight``; see
  :mod:`daskstate.state`).

For a Dask input, the partitions (with column projection pushed into the reader)
feed the update tasks directly: the input is never persisted and memory is
bounded by the partitions in flight. The same graph runs on the local threaded
scheduler or on the active ``distributed.Client``. pandas, numpy and iterators of
batches fold in this process without Dask; so do the rounds of in-memory data an
estimator wrapped as Dask to re-read it each epoch (``Input.in_memory``), unless a
client is active: a graph per round would cost more than a small round's work.

Fit options (``split_every``, ``checkpoint``, ``checkpoint_every``, ``progress``,
``on_invalid``, ``seed``) travel together as one :class:`FitOptions`. Checkpoints
hold the running state plus its position (epoch, round) and the ids of the
partitions it consumed, written atomically; re-running the same call resumes.
A state that declares ``blas_threads = 1`` has its tasks run with one BLAS
thread each: the engine applies that policy, the state's code does not. BLAS's
thread count is one setting per process, so :func:`compute` (every graph
daskstate computes) sets it from the calling thread around the whole compute;
the tasks' own entries then only count (see :class:`~daskstate.numerics.single_blas_thread`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from dask.base import tokenize
from dask.local import get_sync

from daskstate.data import ON_INVALID, Input, as_input
from daskstate.errors import StateFileError
from daskstate.state import RoundContext, State, merge_all
from daskstate.store import checksum, read_group, save_state, state_from_attrs, writer_lock

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY", "FitOptions", "RoundContext", "RoundResult", "build_rounds", "compute",
    "epoch_rounds", "finish_round", "fold", "fold_and_inspect", "fold_rounds", "inspect_partitions", "merge_round_results",
    "merge_states", "read_part", "tree_reduce", "update_task",
]

#: partitions between checkpoints unless ``checkpoint_every`` says otherwise
DEFAULT_CHECKPOINT_EVERY = 64
#: partitions of averaging rounds in one graph (without a checkpoint). Reads depend on nothing, so on
#: ``distributed`` a worker idle at a round's barrier reads partitions of the graph's later rounds and holds
#: them: with one graph per epoch up to all of them (33 of 40; NTM on 1M documents: a worker's peak RSS
#: 876 MB against 445 MB on 100k). A bounded graph bounds what the reads can run ahead.
ROUND_PARTITIONS_PER_GRAPH = 16
_POSITION_KEY = "fold_rounds"


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class FitOptions:
    """How a fit runs (not what it learns): built once, passed down unchanged.

    Parameters
    ----------
    split_every : int
        Fan-in of the merge trees (>= 2).
    checkpoint : path, optional
        Where the running state is written (a Zarr group; a folder of groups for
        fits with several passes, see :meth:`at`).
    checkpoint_every : int, optional
        Partitions between checkpoints (default :data:`DEFAULT_CHECKPOINT_EVERY`;
        rounded up to whole rounds when training in rounds).
    progress : bool
        Show Dask's progress bar.
    on_invalid : {"raise", "skip"}
        Rows holding NaN or inf: raise an error naming them, or drop and count them.
    seed : int
        Seeds partition orders and every task's :class:`RoundContext`.

    Examples
    --------
    >>> opts = FitOptions(checkpoint="fit.ckpt", on_invalid="skip")
    >>> opts.at("epochs").checkpoint
    'fit.ckpt/epochs'
    """

    split_every: int = 8
    checkpoint: str | None = None
    checkpoint_every: int | None = None
    progress: bool = False
    on_invalid: str = "raise"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {self.on_invalid!r}")
        if int(self.split_every) < 2:
            raise ValueError(f"split_every must be >= 2, got {self.split_every}")
        if self.checkpoint_every is not None and int(self.checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))
        object.__setattr__(self, "split_every", int(self.split_every))
        object.__setattr__(self, "seed", int(self.seed))

    def at(self, name: str) -> FitOptions:
        """The same options with the checkpoint at ``<checkpoint>/<name>`` (one group per pass)."""
        if self.checkpoint is None:
            return self
        return dataclasses.replace(self, checkpoint=os.path.join(self.checkpoint, name))

    def replace(self, **changes: Any) -> FitOptions:
        return dataclasses.replace(self, **changes)

    @property
    def partitions_per_checkpoint(self) -> int:
        return int(self.checkpoint_every or DEFAULT_CHECKPOINT_EVERY)


def _options(options: FitOptions | None, fields: dict[str, Any]) -> FitOptions:
    if options is None:
        return FitOptions(**fields)
    if fields:
        raise TypeError(f"pass either options= or the option keywords, not both (got {sorted(fields)})")
    return options


# ---------------------------------------------------------------------------- tasks
@dataclass
class RoundResult:
    """A partition's (or a group of partitions') contribution to one round.

    ``averaged`` holds the weighted mean of the partitions' averaged arrays over
    ``weight``; ``summed`` the sum of their accumulator increments. Rows and
    sources count only partitions not consumed before (first epoch).
    """

    weight: float
    averaged: dict[str, np.ndarray]
    summed: dict[str, np.ndarray]
    new_rows: int = 0
    new_skipped: int = 0
    sources: frozenset[str] = field(default_factory=frozenset)
    new_weight: float = 0.0


def _blas_policy(state: State, main_thread: bool = False) -> contextlib.AbstractContextManager:
    """The state's declared BLAS policy for a task (or, ``main_thread=True``, a whole pass)."""
    return state.blas_limit(main_thread=main_thread or state.blas_on_main_thread)


def update_task(
    start: State, part: Any, index: int, source: str | None, on_invalid: str, context: RoundContext | None
) -> State | RoundResult:
    """One partition (the ``<algorithm>-update`` task): train a private copy of ``start`` on it.

    In a one-pass fold (``context=None``) ``start`` is empty and the task returns
    the partition's state. In a round, the copy's ``round_summed`` accumulators
    start from zero and the task returns its :class:`RoundResult`.
    """
    where = f"partition {index}" + (f" ({source})" if source else "")
    X, y, weight, dropped = read_part(start, part, on_invalid, where)
    in_round = context is not None
    # in a round, a state may copy only the arrays the rounds protocol lets the task change
    state = start.round_copy() if in_round and hasattr(start, "round_copy") else start.copy()
    for name in state.round_summed if in_round else ():
        setattr(state, name, np.zeros_like(getattr(state, name)))
    with _blas_policy(state):
        state.update_inplace(X, y, source=None if in_round else source, context=context, weight=weight)
    if not in_round:
        state.n_skipped += dropped
        return state
    rows = state.n_rows - start.n_rows
    weight = float(rows if state.round_weight is None else np.sum(getattr(state, state.round_weight)))
    new = source is None or source not in start.consumed
    return RoundResult(
        weight=weight,
        averaged={n: getattr(state, n) for n in state.round_averaged},
        summed={n: getattr(state, n) for n in state.round_summed},
        new_rows=rows if new else 0,
        new_skipped=dropped if new else 0,
        sources=frozenset({source}) if source is not None else frozenset(),
        new_weight=state.weight_sum - start.weight_sum if new else 0.0,
    )


def read_part(state: State, part: Any, on_invalid: str, where: str) -> tuple[Any, Any, Any, int]:
    """A part (``X``, ``(X, y)`` or ``(X, y, weight)``) as the state's batch ``(X, y, weight or None, dropped)``.

    The one channel sample weights take: the data layer puts them in the part,
    the state's ``read_batch`` checks them, ``_update`` receives them. A state
    that does not declare ``accepts_weight`` never sees weights.
    """
    X, y, *rest = part if isinstance(part, tuple) else (part, None)
    weight = rest[0] if rest else None
    if weight is None:
        X, y, dropped = state.read_batch(X, y, on_invalid=on_invalid, where=where)
        return X, y, None, dropped
    if not state.accepts_weight:
        raise TypeError(f"{where}: {state.algorithm} states cannot weight rows; sample_weight is not supported")
    return state.read_batch(X, y, on_invalid=on_invalid, where=where, weight=weight)


def merge_states(*states: State) -> State:
    """Merge a group of states exactly (a ``<algorithm>-merge`` task of a one-pass fold)."""
    return merge_all(states)


def merge_into(running: State, root: State, in_place: bool = False) -> State:
    """``running`` with a fold's merged partitions added (the ``<algorithm>-round`` task of a fold).

    ``in_place``: change and return ``running`` itself (a driver's own state), not a copy.
    """
    new = running if in_place else running.copy()
    new.merge_inplace(root)
    return new


def merge_round_results(*results: RoundResult) -> RoundResult:
    """Combine partition results (a ``<algorithm>-merge`` task of a round): weighted mean and sums.

    Pairwise ``a + (b - a) * w_b / (w_a + w_b)``, so averaging identical arrays
    returns them bit for bit, and a single result passes through unchanged.

    Examples
    --------
    >>> a = RoundResult(1.0, {"w": np.array([0.0])}, {"loss": np.array([2.0])})
    >>> b = RoundResult(3.0, {"w": np.array([4.0])}, {"loss": np.array([5.0])})
    >>> m = merge_round_results(a, b)
    >>> m.weight, m.averaged["w"], m.summed["loss"]
    (4.0, array([3.]), array([7.]))
    """
    if not results:
        raise ValueError("merge_round_results needs at least one result")
    acc = results[0]
    averaged = {k: np.array(v, copy=True) for k, v in acc.averaged.items()}
    summed = {k: np.array(v, copy=True) for k, v in acc.summed.items()}
    weight, rows, skipped, sources = acc.weight, acc.new_rows, acc.new_skipped, set(acc.sources)
    new_weight = acc.new_weight
    for r in results[1:]:
        total = weight + r.weight
        if r.weight > 0:
            frac = r.weight / total
            for k, v in r.averaged.items():
                a = averaged[k]
                averaged[k] = a + (v - a) * frac if a.dtype.kind == "f" else v.copy()
        for k, v in r.summed.items():
            summed[k] = summed[k] + v
        weight, rows, skipped = total, rows + r.new_rows, skipped + r.new_skipped
        new_weight += r.new_weight
        sources |= r.sources
    return RoundResult(weight, averaged, summed, rows, skipped, frozenset(sources), new_weight)


def finish_round(start: State, result: RoundResult, in_place: bool = False) -> State:
    """The next round's state (the ``<algorithm>-round`` task): ``start`` with the round folded in.

    ``in_place``: change and return ``start`` itself (a driver's own state), taking
    over the result's arrays (nothing else holds them) instead of copying both.
    """
    new = start if in_place else start.copy()
    if result.weight > 0:
        for k, v in result.averaged.items():
            setattr(new, k, v if in_place else np.array(v, copy=True))
    for k, v in result.summed.items():
        setattr(new, k, getattr(new, k) + v)
    new.n_rows += result.new_rows
    new.weight_sum += result.new_weight
    new.n_skipped += result.new_skipped
    new.consumed = new.consumed | result.sources
    return new


# ---------------------------------------------------------------------------- the graph
def tree_reduce(leaves: list, name: str, split_every: int, merge: Callable = merge_states) -> Any:
    """Combine Delayed ``leaves`` with ``merge`` in a tree of fan-in ``split_every``.

    Depth is ``ceil(log_{split_every}(len(leaves)))``, so 10,000 partitions need
    only a handful of levels.
    """
    merge_d = dask.delayed(merge, pure=True)
    return reduce_in_groups(leaves, split_every,
                            lambda group, depth, j: merge_d(*group, dask_key_name=(name, depth, j)))


def reduce_in_groups(leaves: Sequence[Any], split_every: int, combine: Callable[[list, int, int], Any]) -> Any:
    """The merge tree's shape, shared by graphs and in-process rounds: ``combine(group, depth, j)``
    on consecutive groups of ``split_every`` items, level after level, until one is left."""
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    level, depth = list(leaves), 0
    while len(level) > 1:
        level = [combine(level[i : i + split_every], depth, j)
                 for j, i in enumerate(range(0, len(level), split_every))]
        depth += 1
    return level[0]


@dataclass(frozen=True)
class _Pass:
    """What kind of rounds a graph runs: exact one-pass merging, or averaging (SGD)."""

    averaging: bool
    epoch: int = 0

    @property
    def combine(self) -> Callable:
        return merge_round_results if self.averaging else merge_states

    @property
    def finish(self) -> Callable:
        return finish_round if self.averaging else merge_into


_ONE_PASS = _Pass(averaging=False)


def build_rounds(inp: Input, state: State, rounds: Sequence[Sequence[int]], first_round: int, kind: _Pass,
                 options: FitOptions, origin: str | None = None) -> Any:
    """One Delayed for consecutive rounds over ``inp.parts``: the state after the last one.

    Each round's update tasks start from the previous round's state (averaging)
    or from an empty state (one pass); a merge tree combines them; a round task
    folds the result into the running state. Keys derive from ``state``'s
    checksum, or from ``origin``: the checksum of the state a driver started
    from, which with the epoch and round determines ``state`` (hashing every
    round's state cost as much as a small model's round).
    """
    alg = state.algorithm
    if origin is None:
        origin = checksum(*state.to_arrays())
    token = tokenize(origin, kind, options.seed, first_round, options.on_invalid,
                     [[inp.sources[i] for i in r] for r in rounds],
                     [_part_key(inp.parts[r[0]]) for r in rounds[:1] if r])
    update_d = dask.delayed(update_task, pure=True)
    finish_d = dask.delayed(kind.finish, pure=True)
    current = dask.delayed(state, name=f"{alg}-start-{token}")
    empty = None if kind.averaging else dask.delayed(state.empty_like(), name=f"{alg}-empty-{token}")
    for k, indices in enumerate(rounds):
        rnd = first_round + k
        leaves = [
            update_d(current if kind.averaging else empty, inp.parts[i], inp.number(i), inp.sources[i],
                     options.on_invalid,
                     RoundContext(kind.epoch, rnd, i, inp.sources[i], options.seed) if kind.averaging else None,
                     dask_key_name=(f"{alg}-update-{token}", rnd, i))
            for i in indices
        ]
        root = tree_reduce(leaves, f"{alg}-merge-{tokenize(token, rnd)}", options.split_every, merge=kind.combine)
        current = finish_d(current, root, dask_key_name=(f"{alg}-round-{token}", rnd))
    return current


def _part_key(part: Any) -> Any:
    """The Dask key(s) of a partition (or of each element of an ``(X, y)`` pair)."""
    if isinstance(part, tuple):
        return tuple(_part_key(p) for p in part)
    return getattr(part, "key", None)


def compute(*collections: Any, state: State | None = None, progress: bool = False) -> tuple:
    """``dask.compute(*collections)`` on the active scheduler, under ``state``'s BLAS policy.

    The one way daskstate computes a graph (fits, predictions it reduces itself,
    scores, backtests). The policy is taken from this (the calling) thread
    around the whole compute: OpenBLAS's thread count is one setting per process,
    so this is where it holds for every pool thread of the local scheduler at
    once, and the tasks' own :meth:`State.blas_limit` entries only count. On a
    ``distributed`` cluster the workers start with one BLAS thread
    (``distributed.nanny.pre-spawn-environ``), and a task's entry sets it if a
    worker does not (the limit is process-wide and reference-counted, see
    :class:`daskstate.numerics.single_blas_thread`). ``progress``: Dask's own bar.
    """
    with contextlib.nullcontext() if state is None else _blas_policy(state, main_thread=True):
        client = _active_client()
        if client is not None:
            futures = client.compute(list(collections))
            if progress:
                from distributed import progress as dprogress

                dprogress(futures)
            return tuple(client.gather(futures))
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return dask.compute(*collections)
        return dask.compute(*collections)


def _compute(obj: Any, progress: bool) -> Any:
    """Compute one Delayed (the caller holds the BLAS policy)."""
    return compute(obj, progress=progress)[0]


def _active_client():
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


# ---------------------------------------------------------------------------- the driver
def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Positions ``0..n-1`` in the order epoch ``epoch`` visits them (seeded shuffle)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def epoch_rounds(indices: Sequence[int], sync_every: int, seed: int, epoch: int, shuffle: bool = True
                 ) -> list[list[int]]:
    """The rounds of one epoch: the partition indices in seeded shuffled order, ``sync_every`` at a time.

    Examples
    --------
    >>> [len(r) for r in epoch_rounds(range(10), 4, seed=0, epoch=0)]
    [4, 4, 2]
    >>> epoch_rounds(range(5), 2, seed=0, epoch=0, shuffle=False)
    [[0, 1], [2, 3], [4]]
    """
    order = [int(indices[j]) for j in epoch_order(len(indices), seed, epoch, shuffle)]
    return [order[i : i + sync_every] for i in range(0, len(order), sync_every)]


@dataclass(frozen=True)
class _Schedule:
    """Which partitions a pass visits, how many per round, for how many epochs."""

    averaging: bool
    epochs: int
    sync_every: int
    shuffle: bool

    def rounds(self, indices: Sequence[int], options: FitOptions, epoch: int) -> list[list[int]]:
        return epoch_rounds(indices, self.sync_every, options.seed, epoch, self.shuffle)

    def rounds_per_graph(self, n_rounds: int, options: FitOptions) -> int:
        if options.checkpoint is None:
            if self.averaging:
                return max(1, min(n_rounds, -(-ROUND_PARTITIONS_PER_GRAPH // self.sync_every)))
            return max(1, n_rounds)
        return max(1, -(-options.partitions_per_checkpoint // self.sync_every))


def _run(inp: Input, state: State, indices: list[int], schedule: _Schedule, options: FitOptions,
         epoch_end: Callable[[State, int], tuple[State, bool]] | None,
         round_end: Callable[[State, int, int, int], tuple[State, bool]] | None = None) -> State:
    """:func:`_run_unlocked`, holding the checkpoint's writer lock: one fit per checkpoint at a time."""
    with contextlib.nullcontext() if options.checkpoint is None else writer_lock(options.checkpoint):
        return _run_unlocked(inp, state, indices, schedule, options, epoch_end, round_end)


def _run_unlocked(inp: Input, state: State, indices: list[int], schedule: _Schedule, options: FitOptions,
                  epoch_end: Callable[[State, int], tuple[State, bool]] | None,
                  round_end: Callable[[State, int, int, int], tuple[State, bool]] | None = None) -> State:
    """The Dask driver shared by :func:`fold` and :func:`fold_rounds`: graphs of rounds, checkpoints, resume."""
    running = state.copy()
    running.extra_meta.pop(_POSITION_KEY, None)
    position = {"epoch": 0, "round": 0, "stopped": False}
    start, origin_cache = running, {}

    def origin() -> str:
        """The fit's identity: the checkpoint's base and the graphs' key prefix (hashing the
        state costs milliseconds per pass, so in-process rounds without a checkpoint skip it)."""
        if "base" not in origin_cache:
            arrays, meta = start.to_arrays()
            if schedule.averaging:  # a resumed fit must be this same fit: same start, partitions, schedule
                origin_cache["base"] = tokenize(checksum(arrays, meta), [inp.sources[i] for i in indices],
                                                schedule.sync_every, options.seed, schedule.shuffle)
            else:  # a one-pass fold resumes on any partitions: the state knows what it consumed
                origin_cache["base"] = checksum(arrays, meta)
        return origin_cache["base"]

    if options.checkpoint is not None:
        resumed = _resume(options.checkpoint, running, origin())
        if resumed is not None:
            running = resumed
            saved = dict(running.extra_meta.pop(_POSITION_KEY, position))
            position = saved if schedule.averaging else position
    if not schedule.averaging:
        indices = [i for i in indices if inp.sources[i] not in running.consumed]

    def save(s: State, epoch: int, rnd: int, stopped: bool = False) -> None:
        if options.checkpoint is None:
            return
        snapshot = s.copy()
        snapshot.extra_meta[_POSITION_KEY] = {"epoch": epoch, "round": rnd, "stopped": stopped}
        save_state(snapshot, options.checkpoint, base=origin())

    epoch, rnd, stopped = int(position["epoch"]), int(position["round"]), bool(position.get("stopped", False))
    local = _LocalParts.of(inp, indices, options) if epoch < schedule.epochs and not stopped else None
    if local is None:
        origin()  # from the start state, before any round changes it
    with _blas_policy(running, main_thread=True), local or contextlib.nullcontext():
        while epoch < schedule.epochs and not stopped and indices:
            rounds = schedule.rounds(indices, options, epoch)
            save_every = schedule.rounds_per_graph(len(rounds), options)
            step = 1 if round_end is not None else save_every  # a round_end may stop the fit: no read beyond
            kind = _Pass(schedule.averaging, epoch)
            while rnd < len(rounds) and not stopped:
                chunk = rounds[rnd : rnd + step]
                if local is not None:  # in-memory partitions: the rounds run here, without a graph
                    running = _local_rounds(local, running, chunk, rnd, kind, options)
                else:
                    running = _compute(build_rounds(inp, running, chunk, rnd, kind, options, origin=origin()),
                                       options.progress)
                rnd += len(chunk)
                if round_end is not None:
                    running, stopped = round_end(running, epoch, rnd - 1, len(rounds))
                    stopped = bool(stopped)
                if stopped or (rnd < len(rounds) or not schedule.averaging) and rnd % save_every == 0:
                    save(running, epoch, rnd, stopped)
            if stopped:  # stopped inside the epoch: its checkpoint says so
                break
            if epoch_end is not None:
                running, stopped = epoch_end(running, epoch)
                stopped = bool(stopped)
            epoch, rnd = epoch + 1, 0
            if schedule.averaging:
                save(running, epoch, 0, stopped)
    return running


class _LocalParts:
    """The partitions of an in-memory input, computed once, and a thread pool for rounds of several.

    A Dask graph per round (or epoch) costs milliseconds to build, tokenize and
    schedule; a small in-memory input's round trains in about as long, over tens
    of epochs. Data already in this process's memory gains nothing from Dask's
    scheduler when no ``distributed.Client`` is active, so its rounds run here,
    with the same tasks, merge tree and order, hence the same result. Use it as
    a context: the pool is shut down at the end.
    """

    #: schedulers under which the rounds of in-memory inputs run in this process
    LOCAL_SCHEDULERS = (None, "threads", "threading", "sync", "synchronous", "single-threaded")

    def __init__(self, inp: Input, values: dict[int, Any], workers: int):
        self.inp, self.values, self.workers = inp, values, workers
        self._pool: Any = None

    @classmethod
    def of(cls, inp: Input, indices: Sequence[int], options: FitOptions) -> _LocalParts | None:
        """The partitions ``indices`` of ``inp`` if it is in memory, runs without a client and without a bar."""
        scheduler = dask.config.get("scheduler", None)
        if not getattr(inp, "in_memory", False) or options.progress or scheduler not in cls.LOCAL_SCHEDULERS:
            return None
        # no client without distributed imported (importing it to look would cost a small fit's time)
        if scheduler is None and "distributed" in sys.modules and _active_client() is not None:
            return None
        todo = sorted(set(indices))
        values = dict(zip(todo, dask.compute(*[inp.parts[i] for i in todo], scheduler=get_sync), strict=True))
        threaded = scheduler in (None, "threads", "threading")
        workers = int(dask.config.get("num_workers", None) or os.cpu_count() or 1) if threaded else 1
        return cls(inp, values, workers)

    def map(self, func: Callable[[int], Any], indices: Sequence[int]) -> list[Any]:
        """``[func(i) for i in indices]``, on the pool's threads when there are several."""
        if len(indices) < 2 or self.workers < 2:
            return [func(i) for i in indices]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="daskstate-round")
        return list(self._pool.map(func, indices))

    def __enter__(self) -> _LocalParts:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _local_rounds(local: _LocalParts, state: State, rounds: Sequence[Sequence[int]], first_round: int, kind: _Pass,
                  options: FitOptions) -> State:
    """:func:`build_rounds` computed in this process: the same tasks, merge tree and order."""
    inp = local.inp
    current = state
    empty = None if kind.averaging else state.empty_like()
    for k, indices in enumerate(rounds):
        rnd = first_round + k
        start = current if kind.averaging else empty

        def task(i: int, start: State = start, rnd: int = rnd) -> Any:
            context = RoundContext(kind.epoch, rnd, i, inp.sources[i], options.seed) if kind.averaging else None
            return update_task(start, local.values[i], inp.number(i), inp.sources[i], options.on_invalid, context)

        root = reduce_in_groups(local.map(task, list(indices)), options.split_every,
                                lambda group, depth, j: kind.combine(*group))
        # the driver's running state (a copy of the fit's start, or a round's result) is its own, and the
        # tasks' results are fresh arrays: the round is folded in place (copying 2 x the state per round
        # cost a small model as much as its training)
        current = kind.finish(current, root, in_place=True)
    return current


def _resume(path: str, state: State, base: str) -> State | None:
    """The checkpointed state of this same call, or None if there is no checkpoint yet."""
    try:
        arrays, attrs = read_group(path)
    except FileNotFoundError:
        return None
    if attrs.get("algorithm") != state.algorithm:
        raise StateFileError(f"checkpoint {path!r} holds a {attrs.get('algorithm')!r} state")
    saved = state_from_attrs(arrays, attrs, path)
    saved_base = attrs.get("extra_attrs", {}).get("base")
    if saved_base != base or saved.params != state.params:
        raise StateFileError(
            f"checkpoint {path!r} belongs to another fit (other starting state, data or "
            "hyperparameters); delete it or choose another path"
        )
    state.schema.check_same_features(saved.schema, f"checkpoint {path!r}")
    return saved


def _as_input(data: Any, y: Any, state: State) -> Input:
    inp = data if isinstance(data, Input) else as_input(
        data, y, features=list(state.schema.features), target=state.schema.target,
        need_target=state.supervised,
    )
    state.schema.check_same_features(inp.schema, "input")
    return inp


# ---------------------------------------------------------------------------- public entry points
def fold(data: Any, state: State, *, y: Any = None, options: FitOptions | None = None, **option_fields: Any
         ) -> State:
    """Fold ``data`` into ``state`` in one pass and return the new state.

    One round whose update tasks start from empty states, merged exactly: see
    the module docstring.

    Parameters
    ----------
    data : Dask DataFrame or Array, pandas DataFrame, numpy array, iterator of batches, or Input
        The rows to fold. Feature (and target) columns are the state's schema.
    state : State
        The state to continue from; it is not modified.
    y : array-like, optional
        Target, when it is not a column of ``data``.
    options : FitOptions, optional
        How to run; or give its fields as keywords (``split_every=``,
        ``checkpoint=``, ``checkpoint_every=``, ``progress=``, ``on_invalid=``).
        A checkpoint needs a Dask input: it is written every ``checkpoint_every``
        partitions and resumed from when the same call runs again.

    Returns
    -------
    State
        ``state`` merged with the summary of ``data``. Partitions whose ids the
        state already consumed are skipped.

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> from daskstate.algorithms.scaler import ScalerState
    >>> from daskstate.state import Schema
    >>> s = ScalerState(Schema(("a", "b")))
    >>> s = daskstate.fold(np.arange(10.0).reshape(5, 2), s)
    >>> s.n_rows
    5
    """
    options = _options(options, option_fields)
    inp = _as_input(data, y, state)
    if not inp.is_dask:
        if options.checkpoint is not None:
            raise ValueError(
                "checkpoint needs a Dask input, whose partitions have ids to resume from; "
                "pandas, numpy and iterator inputs are folded in one go"
            )
        return _fold_local(inp, state, options)
    todo = list(range(inp.npartitions))
    size = len(todo) if options.checkpoint is None else options.partitions_per_checkpoint
    schedule = _Schedule(averaging=False, epochs=1, sync_every=max(1, size), shuffle=False)
    return _run(inp, state, todo, schedule, options, None)


def fold_and_inspect(inp: Input, state: State, inspect: Callable[[Any], Any], *, options: FitOptions
                     ) -> tuple[State, list[Any]]:
    """A one-pass :func:`fold` of a Dask input that also returns ``inspect(partition)`` of every partition folded.

    The ``<algorithm>-inspect`` tasks read the same partition tasks as the update
    tasks, in the same graph, so nothing is read twice; the caller checks what
    they return (e.g. that no series is split across partitions) before it keeps
    the state. Partitions the state consumed before are skipped. No checkpoint:
    the pass is one graph.
    """
    if options.checkpoint is not None:
        raise ValueError("fold_and_inspect runs one graph without a checkpoint")
    todo = [i for i, s in enumerate(inp.sources) if s not in state.consumed]
    if not todo:
        return state, []
    folded = build_rounds(inp, state, [todo], 0, _ONE_PASS, options)
    seen = _inspect_tasks(inp, todo, inspect, f"{state.algorithm}-inspect")
    new, found = compute(dask.delayed(tuple)([folded, seen]), state=state, progress=options.progress)[0]
    return new, list(found)


def inspect_partitions(inp: Input, inspect: Callable[[Any], Any], *, options: FitOptions, name: str = "inspect"
                       ) -> list[Any]:
    """``inspect(partition)`` of every partition of a Dask input (``<name>`` tasks, one graph), e.g. a check
    of the input that must pass before a fit reads it for training."""
    return list(_compute(dask.delayed(list)(_inspect_tasks(inp, range(inp.npartitions), inspect, name)),
                         options.progress))


def _inspect_tasks(inp: Input, indices: Sequence[int], inspect: Callable[[Any], Any], name: str) -> list:
    inspect_d = dask.delayed(inspect, pure=True)
    token = tokenize([_part_key(p) for p in inp.parts], inspect)
    return [inspect_d(inp.parts[i][0] if isinstance(inp.parts[i], tuple) else inp.parts[i],
                      dask_key_name=(f"{name}-{token}", i)) for i in indices]


def fold_rounds(
    data: Any,
    state: State,
    *,
    y: Any = None,
    epochs: int = 1,
    sync_every: int = 8,
    shuffle: bool = True,
    skip_sources: Collection[str] = (),
    epoch_end: Callable[[State, int], tuple[State, bool]] | None = None,
    round_end: Callable[[State, int, int, int], tuple[State, bool]] | None = None,
    options: FitOptions | None = None,
    **option_fields: Any,
) -> State:
    """Train ``state`` on ``data`` for ``epochs`` epochs of synchronised rounds.

    Every epoch visits the partitions in an order shuffled by ``(seed, epoch)``
    and cuts it into rounds of ``sync_every`` partitions. Every partition task of
    a round starts from the round's state; their results are averaged as the
    state declares (see :mod:`daskstate.state`) into the next round's state.
    Consecutive rounds form one Dask graph, so the next round's reads overlap the
    previous round's merge; the result does not depend on the scheduler. An
    in-memory input (``Input.in_memory``, e.g. a numpy array an estimator made
    Dask) without a ``distributed.Client`` runs the same tasks in this process,
    without graphs (see :class:`_LocalParts`).

    Parameters
    ----------
    data : Dask DataFrame or Array, pandas DataFrame, numpy array, iterator of batches, or Input
        The rows; Dask inputs can be read once per epoch. An iterator of batches
        is read once, so it allows one epoch only (each batch a partition).
    state : State
        Declares the rounds protocol; not modified.
    y : array-like, optional
        Target, when it is not a column of ``data``.
    epochs : int
        Passes over the data (fewer if ``epoch_end`` stops early).
    sync_every : int
        Partitions per round: the synchronisation schedule. With 1, training is
        sequential; the result depends on it, never on the number of workers.
    shuffle : bool
        Shuffle the partition order of each epoch (else input order).
    skip_sources : collection of str
        Partition ids to leave out (e.g. the ones a state was trained on before).
    epoch_end : callable, optional
        ``epoch_end(state, epoch) -> (state, stop)``, called after each epoch's last
        round (e.g. validation and early stopping); ``stop=True`` ends the fit.
    round_end : callable, optional
        ``round_end(state, epoch, round, rounds_in_epoch) -> (state, stop)``, called
        after every round; ``stop=True`` ends the fit there, inside the epoch. Each
        round is then its own graph, so no partition is read beyond a stop.
    options : FitOptions, optional
        How to run (or its fields as keywords: ``seed=``, ``split_every=``,
        ``checkpoint=``, ...). With a checkpoint the running state and its position
        (epoch, round) are written at round boundaries every ``checkpoint_every``
        partitions; re-running the same call resumes there. Rows with NaN or inf
        are counted once, in the first epoch, under ``on_invalid="skip"``.

    Returns
    -------
    State
        The trained state. ``n_rows`` and ``consumed`` count each partition once,
        however many epochs read it.

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> X = np.random.default_rng(0).normal(size=(1000, 3))
    >>> est = daskstate.LinearLearner("regressor", num_models=2, epochs=1)
    >>> est = est.fit(X, X @ [1.0, 2.0, 3.0])      # trains its epochs with fold_rounds
    >>> est.state_.n_rows
    1000
    """
    options = _options(options, option_fields)
    if int(sync_every) < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    schedule = _Schedule(averaging=True, epochs=int(epochs), sync_every=int(sync_every), shuffle=bool(shuffle))
    inp = _as_input(data, y, state)
    if not inp.is_dask:
        if options.checkpoint is not None:
            raise ValueError("checkpoint needs a Dask input, whose partitions have ids to resume from")
        if schedule.epochs > 1:
            raise ValueError(
                f"an iterator of batches can be read only once, so it allows 1 epoch, not {epochs}; "
                "pass a Dask collection or an in-memory array for several epochs"
            )
        return _fold_rounds_local(inp, state, schedule, options, epoch_end, round_end)
    skip = set(skip_sources)
    indices = [i for i, s in enumerate(inp.sources) if s not in skip]
    return _run(inp, state, indices, schedule, options, epoch_end, round_end)


# ---------------------------------------------------------------------------- without Dask
def _local_batches(inp: Input, state: State, options: FitOptions) -> Any:
    """``(index, X, y, dropped)`` for each in-memory batch, converted by the state's ``read_batch``."""
    for i, part in enumerate(inp.batches):
        Xb, yb, wb, dropped = read_part(state, part, options.on_invalid, f"batch {i}")
        yield i, Xb, yb, wb, dropped


def _fold_local(inp: Input, state: State, options: FitOptions) -> State:
    """One pass over in-memory batches, folded in order into one new state, then merged."""
    new = state.empty_like()
    for _, X, y, w, dropped in _local_batches(inp, state, options):
        new.update_inplace(X, y, weight=w)
        new.n_skipped += dropped
    return state.merge(new)


def _fold_rounds_local(inp: Input, state: State, schedule: _Schedule, options: FitOptions, epoch_end,
                       round_end=None) -> State:
    """One epoch over a one-shot iterator of batches, in rounds, without Dask.

    The number of rounds is not known in advance: ``round_end`` gets 0 for it.
    """
    running = state.copy()
    if schedule.epochs == 0:
        return running
    pending: list[RoundResult] = []
    rnd = 0

    def close_round() -> bool:
        nonlocal running, pending, rnd
        running = finish_round(running, merge_round_results(*pending))
        pending, rnd = [], rnd + 1
        if round_end is None:
            return False
        running, stop = round_end(running, 0, rnd - 1, 0)
        return bool(stop)

    for i, part in enumerate(inp.batches):
        ctx = RoundContext(0, rnd, i, None, options.seed)
        pending.append(update_task(running, part, i, None, options.on_invalid, ctx))
        if len(pending) == schedule.sync_every and close_round():
            return running
    if pending and close_round():
        return running
    if epoch_end is not None:
        running, _ = epoch_end(running, 0)
    return running
