"""The engine: fold any input into a state with one pass.

For a Dask input, :func:`fold` builds one task graph: the partitions (with
column projection pushed into the reader), one ``<algorithm>-update`` task per
partition starting from an empty state, and a tree of ``<algorithm>-merge``
tasks, ``split_every`` states at a time. The root is merged into the given
state locally, so ``partial_fit(new) == merge(old, fold(new))``. The input is
never persisted: memory is bounded by the partitions in flight.

With a checkpoint, partitions are folded in groups of ``checkpoint_every``; after
each group the running state (with the ids of the partitions it consumed) is
written atomically. Re-running the same call resumes from it.

Iterative (SGD) algorithms use :func:`fold_rounds` instead: partitions are
processed in rounds of ``sync_every``; every ``<algorithm>-update`` task of a
round starts from the round's synchronised state, ``<algorithm>-merge`` tasks
average the results (weighted by the rows each partition trained on), and an
``<algorithm>-round`` task folds the average into the next round's state.
Epochs repeat the rounds in a seeded, shuffled partition order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from dask.base import tokenize

from daskstate.data import Input, as_input, to_batch
from daskstate.errors import StateFileError
from daskstate.numerics import single_blas_thread
from daskstate.state import State, merge_all
from daskstate.store import checksum, locks_checkpoint, read_group, save_state, state_from_attrs


def _where(index: int, source: str | None, kind: str = "partition") -> str:
    return f"{kind} {index}" + (f" ({source})" if source else "")


def update_partition(
    empty: State, part: Any, index: int, source: str | None, on_invalid: str
) -> State:
    """Fold one partition into a fresh copy of ``empty`` (the per-partition task)."""
    X, y = (part if isinstance(part, tuple) else (part, None))
    X, y, dropped = to_batch(
        X, y, empty.schema, dtype=empty.input_dtype, on_invalid=on_invalid,
        where=_where(index, source), need_target=empty.supervised,
    )
    state = empty.copy()
    state.update_inplace(X, y, source=source)
    state.n_skipped += dropped
    return state


def merge_states(*states: State) -> State:
    """Merge a group of states (a tree-reduction task)."""
    return merge_all(states)


def tree_reduce(leaves: list, name: str, split_every: int, merge=merge_states) -> Any:
    """Combine Delayed ``leaves`` with ``merge`` in a tree of fan-in ``split_every``.

    Depth is ``ceil(log_{split_every}(len(leaves)))``, so 10,000 partitions need
    only a handful of levels.
    """
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    level, depth = list(leaves), 0
    merge_d = dask.delayed(merge, pure=True)
    while len(level) > 1:
        level = [
            merge_d(*level[i : i + split_every], dask_key_name=(name, depth, j))
            for j, i in enumerate(range(0, len(level), split_every))
        ]
        depth += 1
    return level[0]


def _compute(obj: Any, progress: bool) -> Any:
    """Compute one Delayed with the active scheduler, with Dask's own progress bar if asked."""
    client = _active_client()
    if client is not None:
        future = client.compute(obj)
        if progress:
            from distributed import progress as dprogress

            dprogress(future)
        return future.result()
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return dask.compute(obj)[0]
    return dask.compute(obj)[0]


def _active_client():
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def fold_partitions(
    inp: Input, state: State, indices: Sequence[int], *, split_every: int, on_invalid: str, progress: bool
) -> State:
    """One graph over ``inp.parts[indices]``: updates then a merge tree; returns the root state."""
    alg = state.algorithm
    empty = state.empty_like()
    token = tokenize(empty.metadata(), [inp.sources[i] for i in indices], on_invalid, [
        getattr(inp.parts[i], "key", None) or tokenize(inp.parts[i]) for i in indices[:1]
    ])
    empty_d = dask.delayed(empty, name=f"{alg}-empty-{token}")
    update_d = dask.delayed(update_partition, pure=True)
    leaves = [
        update_d(empty_d, inp.parts[i], inp.number(i), inp.sources[i], on_invalid,
                 dask_key_name=(f"{alg}-update-{token}", i))
        for i in indices
    ]
    root = tree_reduce(leaves, f"{alg}-merge-{token}", split_every)
    return _compute(root, progress)


@locks_checkpoint
def fold(
    data: Any,
    state: State,
    *,
    y: Any = None,
    split_every: int = 8,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    progress: bool = False,
    on_invalid: str = "raise",
) -> State:
    """Fold ``data`` into ``state`` in one pass and return the new state.

    Parameters
    ----------
    data : Dask DataFrame or Array, pandas DataFrame, numpy array, iterator of batches, or Input
        The rows to fold. Feature (and target) columns are the state's schema.
    state : State
        The state to continue from; it is not modified.
    y : array-like, optional
        Target, when it is not a column of ``data``.
    split_every : int
        Fan-in of the merge tree.
    checkpoint : path, optional
        Zarr path of a checkpoint: written every ``checkpoint_every`` partitions,
        resumed from when the same call runs again.
    checkpoint_every : int, optional
        Partitions between checkpoints (default ``8 * split_every``).
    progress : bool
        Show Dask's progress bar (local or distributed).
    on_invalid : {"raise", "skip"}
        What to do with rows holding NaN or inf.

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
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    inp = data if isinstance(data, Input) else as_input(
        data, y, features=list(state.schema.features), target=state.schema.target,
        need_target=state.supervised,
    )
    state.schema.check_same_features(inp.schema, "input")
    if not inp.is_dask:
        if checkpoint is not None:
            raise ValueError(
                "checkpoint needs a Dask input, whose partitions have ids to resume from; "
                "pandas, numpy and iterator inputs are folded in one go"
            )
        return _fold_local(inp, state, on_invalid)

    running = state.copy()
    base = checksum(*state.to_arrays())
    if checkpoint is not None:
        running = _resume(checkpoint, state, base) or running
    todo = [i for i, s in enumerate(inp.sources) if s not in running.consumed]
    if not todo:
        return running
    step = len(todo) if checkpoint is None else max(1, checkpoint_every or 8 * split_every)
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        root = fold_partitions(
            inp, running, chunk, split_every=split_every, on_invalid=on_invalid, progress=progress
        )
        running.merge_inplace(root)
        if checkpoint is not None:
            save_state(running, checkpoint, base=base)
    return running


def _fold_local(inp: Input, state: State, on_invalid: str) -> State:
    new = state.empty_like()
    for i, (X, y) in enumerate(inp.batches):
        Xb, yb, dropped = to_batch(
            X, y, state.schema, dtype=state.input_dtype, on_invalid=on_invalid,
            where=_where(i, None, "batch"), need_target=state.supervised,
        )
        new.update_inplace(Xb, yb)
        new.n_skipped += dropped
    return state.merge(new)


def _resume(path: str | os.PathLike, state: State, base: str) -> State | None:
    """The checkpointed state of this same call, or None if there is no checkpoint yet."""
    try:
        arrays, attrs = read_group(path)
    except FileNotFoundError:
        return None
    if attrs.get("algorithm") != state.algorithm:
        raise StateFileError(f"checkpoint {os.fspath(path)!r} holds a {attrs.get('algorithm')!r} state")
    saved = state_from_attrs(arrays, attrs, os.fspath(path))
    saved_base = attrs.get("extra_attrs", {}).get("base")
    if saved_base != base or saved.params != state.params:
        raise StateFileError(
            f"checkpoint {os.fspath(path)!r} belongs to another fit (other starting state, data or "
            "hyperparameters); delete it or choose another path"
        )
    state.schema.check_same_features(saved.schema, f"checkpoint {os.fspath(path)!r}")
    return saved


# ---------------------------------------------------------------------------- rounds
#
# A state that trains by rounds declares, by name, which of its arrays are
#
# - ``round_averaged``: parameters and optimiser statistics, replaced after each
#   round by the average of the round's partition results weighted by the rows
#   each partition trained on (``state.round_weight()`` if the state defines it,
#   else the rows folded);
# - ``round_summed``: accumulators (losses, counts, histograms), zeroed in every
#   partition task and summed into the round's starting value;
#
# every other array is constant within a round (normaliser, hyperparameters).
# Both may be properties that depend on the state's own phase. A partition task
# sees ``state.round_context`` (a :class:`RoundContext`) during ``_update``, so its
# randomness can be seeded by (seed, epoch, partition index), never by execution
# order.
_ROUNDS_KEY = "fold_rounds"


@dataclass(frozen=True)
class RoundContext:
    """Where a partition task of :func:`fold_rounds` runs: set as ``state.round_context``.

    Attributes
    ----------
    epoch, round : int
        Epoch and round within the epoch (from 0).
    index : int
        The partition's index in the input (stable across epochs and workers).
    source : str or None
        The partition's id.
    seed : int
        The fit's seed.
    """

    epoch: int
    round: int
    index: int
    source: str | None
    seed: int

    def rng(self, *salt: int) -> np.random.Generator:
        """A generator seeded by ``(seed, epoch, index, *salt)``: the same on any worker, any order."""
        return np.random.default_rng([self.seed, self.epoch, self.index, *salt])


@dataclass
class RoundResult:
    """A partition's (or a group of partitions') contribution to one round.

    ``averaged`` holds the weighted mean of the partitions' averaged arrays over
    ``weight`` rows; ``summed`` the sum of their accumulator increments. Rows and
    sources count only partitions not consumed before (first epoch).
    """

    weight: float
    averaged: dict[str, np.ndarray]
    summed: dict[str, np.ndarray]
    new_rows: int = 0
    new_skipped: int = 0
    sources: frozenset[str] = field(default_factory=frozenset)


def _round_names(state: State, kind: str) -> tuple[str, ...]:
    return tuple(getattr(state, f"round_{kind}", ()))


def round_update(
    start: State, part: Any, index: int, source: str | None, on_invalid: str, context: RoundContext
) -> RoundResult:
    """One partition of a round (the ``<algorithm>-update`` task): train a private copy of ``start``."""
    X, y = (part if isinstance(part, tuple) else (part, None))
    X, y, dropped = to_batch(
        X, y, start.schema, dtype=start.input_dtype, on_invalid=on_invalid,
        where=_where(index, source), need_target=start.supervised,
    )
    state = start.copy()
    for name in _round_names(state, "summed"):
        setattr(state, name, np.zeros_like(getattr(state, name)))
    state.round_context = context
    state.update_inplace(X, y)
    weight = float(state.round_weight()) if hasattr(state, "round_weight") else float(len(X))
    new = source is None or source not in start.consumed
    return RoundResult(
        weight=weight,
        averaged={n: getattr(state, n) for n in _round_names(state, "averaged")},
        summed={n: getattr(state, n) for n in _round_names(state, "summed")},
        new_rows=len(X) if new else 0,
        new_skipped=dropped if new else 0,
        sources=frozenset({source}) if source is not None else frozenset(),
    )


def merge_round_results(*results: RoundResult) -> RoundResult:
    """Combine partition results (a ``<algorithm>-merge`` task): weighted mean and sums.

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
        sources |= r.sources
    return RoundResult(weight, averaged, summed, rows, skipped, frozenset(sources))


def finish_round(start: State, result: RoundResult) -> State:
    """The next round's state (the ``<algorithm>-round`` task): ``start`` with the round folded in."""
    new = start.copy()
    if result.weight > 0:
        for k, v in result.averaged.items():
            setattr(new, k, np.array(v, copy=True))
    for k, v in result.summed.items():
        setattr(new, k, getattr(new, k) + v)
    new.n_rows += result.new_rows
    new.n_skipped += result.new_skipped
    new.consumed = new.consumed | result.sources
    return new


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


def _run_rounds(
    inp: Input, state: State, rounds: list[list[int]], epoch: int, first_round: int, *,
    seed: int, split_every: int, on_invalid: str, progress: bool,
) -> State:
    """One graph for consecutive rounds: each round's updates read the previous round's state."""
    alg = state.algorithm
    arrays, meta = state.to_arrays()
    token = tokenize(checksum(arrays, meta), seed, epoch, first_round, on_invalid,
                     [[inp.sources[i] for i in r] for r in rounds])
    update_d = dask.delayed(round_update, pure=True)
    finish_d = dask.delayed(finish_round, pure=True)
    current = dask.delayed(state, name=f"{alg}-start-{token}")
    for k, indices in enumerate(rounds):
        rnd = first_round + k
        leaves = [
            update_d(current, inp.parts[i], inp.number(i), inp.sources[i], on_invalid,
                     RoundContext(epoch, rnd, i, inp.sources[i], seed),
                     dask_key_name=(f"{alg}-update-{token}", rnd, i))
            for i in indices
        ]
        root = tree_reduce(leaves, f"{alg}-merge-{tokenize(token, rnd)}", split_every, merge=merge_round_results)
        current = finish_d(current, root, dask_key_name=(f"{alg}-round-{token}", rnd))
    return _compute(current, progress)


@locks_checkpoint
def fold_rounds(
    data: Any,
    state: State,
    *,
    y: Any = None,
    epochs: int = 1,
    sync_every: int = 8,
    seed: int = 0,
    shuffle: bool = True,
    split_every: int = 8,
    skip_sources: Collection[str] = (),
    epoch_end: Callable[[State, int], tuple[State, bool]] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    progress: bool = False,
    on_invalid: str = "raise",
) -> State:
    """Train ``state`` on ``data`` for ``epochs`` epochs of synchronised rounds.

    Every epoch visits the partitions in an order shuffled by ``(seed, epoch)``
    and cuts it into rounds of ``sync_every`` partitions. Every partition task of
    a round starts from the round's state; their results are averaged, weighted by
    the rows each trained on, into the next round's state (see ``RoundResult``).
    All rounds of an epoch form one Dask graph, so the next round's reads overlap
    the previous round's merge; the result does not depend on the scheduler.

    Parameters
    ----------
    data : Dask DataFrame or Array, pandas DataFrame, numpy array, iterator of batches, or Input
        The rows; Dask inputs can be read once per epoch. An iterator of batches
        is read once, so it allows one epoch only (each batch a partition).
    state : State
        Declares ``round_averaged`` and ``round_summed`` array names; not modified.
    y : array-like, optional
        Target, when it is not a column of ``data``.
    epochs : int
        Passes over the data (fewer if ``epoch_end`` stops early).
    sync_every : int
        Partitions per round: the synchronisation schedule. With 1, training is
        sequential; the result depends on it, never on the number of workers.
    seed : int
        Seeds the partition order of each epoch and each task's ``round_context``.
    shuffle : bool
        Shuffle the partition order of each epoch (else input order).
    split_every : int
        Fan-in of each round's merge tree.
    skip_sources : collection of str
        Partition ids to leave out (e.g. the ones a state was trained on before).
    epoch_end : callable, optional
        ``epoch_end(state, epoch) -> (state, stop)``, called after each epoch's last
        round (e.g. validation and early stopping); ``stop=True`` ends the fit.
    checkpoint : path, optional
        Zarr path: the running state and its position (epoch, round) are written
        atomically at round boundaries; re-running the same call resumes there.
    checkpoint_every : int, optional
        Partitions between checkpoints, rounded up to whole rounds (default: every round).
    progress : bool
        Show Dask's progress bar.
    on_invalid : {"raise", "skip"}
        Rows with NaN or inf: raise, or drop (counted once, in the first epoch).

    Returns
    -------
    State
        The trained state. ``n_rows`` and ``consumed`` count each partition once,
        however many epochs read it.

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> from daskstate.algorithms.linear import LinearState
    >>> from daskstate.engine import fold_rounds
    >>> X = np.random.default_rng(0).normal(size=(1000, 3))
    >>> est = daskstate.LinearLearner("regressor", num_models=2, epochs=1)
    >>> est = est.fit(X, X @ [1.0, 2.0, 3.0])      # uses fold_rounds for its epochs
    >>> est.state_.n_rows
    1000
    """
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    if int(sync_every) < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    sync_every, epochs = int(sync_every), int(epochs)
    inp = data if isinstance(data, Input) else as_input(
        data, y, features=list(state.schema.features), target=state.schema.target,
        need_target=state.supervised,
    )
    state.schema.check_same_features(inp.schema, "input")
    if not inp.is_dask:
        if checkpoint is not None:
            raise ValueError("checkpoint needs a Dask input, whose partitions have ids to resume from")
        if epochs > 1:
            raise ValueError(
                f"an iterator of batches can be read only once, so it allows 1 epoch, not {epochs}; "
                "pass a Dask collection or an in-memory array for several epochs"
            )
        return _fold_rounds_local(inp, state, epochs, sync_every, seed, split_every, epoch_end, on_invalid)

    skip = set(skip_sources)
    indices = [i for i, s in enumerate(inp.sources) if s not in skip]
    running = state.copy()
    running.extra_meta.pop(_ROUNDS_KEY, None)
    position = {"epoch": 0, "round": 0, "stopped": False}
    base = None
    if checkpoint is not None:
        arrays, meta = running.to_arrays()
        base = tokenize(checksum(arrays, meta), [inp.sources[i] for i in indices], sync_every, seed, shuffle)
        resumed = _resume(checkpoint, running, base)
        if resumed is not None:
            running = resumed
            position = dict(running.extra_meta.pop(_ROUNDS_KEY, position))
    per_compute = None
    if checkpoint is not None:
        per_compute = max(1, -(-(checkpoint_every or sync_every) // sync_every))

    def save(running: State, epoch: int, rnd: int, stopped: bool = False) -> None:
        if checkpoint is None:
            return
        snapshot = running.copy()
        snapshot.extra_meta[_ROUNDS_KEY] = {"epoch": epoch, "round": rnd, "stopped": stopped}
        save_state(snapshot, checkpoint, base=base)

    epoch, rnd = int(position["epoch"]), int(position["round"])
    stopped = bool(position.get("stopped", False))
    with _single_threaded_blas():
        return _epochs(inp, running, indices, epoch, rnd, stopped, epochs, sync_every, seed, shuffle,
                       per_compute, split_every, on_invalid, progress, epoch_end, save)


def _single_threaded_blas() -> single_blas_thread:
    """BLAS on one thread while partition tasks run in parallel.

    Each SGD step multiplies small matrices; a multi-threaded BLAS would spin up
    threads per call and oversubscribe the cores the scheduler already fills.
    Worker processes of ``distributed`` are single-threaded for BLAS already.
    """
    return single_blas_thread(main_thread=True)


def _epochs(inp, running, indices, epoch, rnd, stopped, epochs, sync_every, seed, shuffle, per_compute,
            split_every, on_invalid, progress, epoch_end, save) -> State:
    while epoch < epochs and not stopped and indices:
        rounds = epoch_rounds(indices, sync_every, seed, epoch, shuffle)
        step = per_compute or len(rounds)
        while rnd < len(rounds):
            chunk = rounds[rnd : rnd + step]
            running = _run_rounds(inp, running, chunk, epoch, rnd, seed=seed, split_every=split_every,
                                  on_invalid=on_invalid, progress=progress)
            rnd += len(chunk)
            if rnd < len(rounds):
                save(running, epoch, rnd)
        if epoch_end is not None:
            running, stopped = epoch_end(running, epoch)
            stopped = bool(stopped)
        epoch, rnd = epoch + 1, 0
        save(running, epoch, 0, stopped)
    return running


def _fold_rounds_local(inp: Input, state: State, epochs: int, sync_every: int, seed: int,
                       split_every: int, epoch_end, on_invalid: str) -> State:
    """One epoch over a one-shot iterator of batches, in rounds, without Dask."""
    running = state.copy()
    if epochs == 0:
        return running
    pending: list[RoundResult] = []
    rnd = 0
    for i, (X, y) in enumerate(inp.batches):
        ctx = RoundContext(0, rnd, i, None, seed)
        pending.append(round_update(running, (X, y), i, None, on_invalid, ctx))
        if len(pending) == sync_every:
            running = finish_round(running, merge_round_results(*pending))
            pending, rnd = [], rnd + 1
    if pending:
        running = finish_round(running, merge_round_results(*pending))
    if epoch_end is not None:
        running, _ = epoch_end(running, 0)
    return running
