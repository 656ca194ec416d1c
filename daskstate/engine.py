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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dask
from dask.base import tokenize

from daskstate.data import Input, as_input, to_batch
from daskstate.errors import StateFileError
from daskstate.state import State, merge_all
from daskstate.store import checksum, read_group, save_state, state_from_attrs


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
        update_d(empty_d, inp.parts[i], i, inp.sources[i], on_invalid, dask_key_name=(f"{alg}-update-{token}", i))
        for i in indices
    ]
    root = tree_reduce(leaves, f"{alg}-merge-{token}", split_every)
    return _compute(root, progress)


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
