"""Epochs of synchronised rounds for the neural forecasters, on the engine's round primitives.

Each partition (whole series) becomes a :class:`SeriesBlock` inside its
``<algorithm>-update`` task, trains a private copy of the round's state with the
round context's seeded generator, and returns a :class:`daskstate.engine.RoundResult`;
the engine's ``merge_round_results`` and ``finish_round`` average the results into
the next round's state. (This is the engine's :func:`~daskstate.engine.fold_rounds`
loop with the series block as the batch: it moves there once a State can declare
how a partition becomes its batch.)
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd
from dask.base import tokenize

from daskstate import engine
from daskstate.algorithms.forecast.series import Columns, SeriesBlock, as_offset, to_series_block
from daskstate.data import partition_sources
from daskstate.engine import RoundContext, RoundResult
from daskstate.state import State


def round_task(start: State, part: pd.DataFrame, index: int, source: str | None, context: RoundContext,
               cols: Columns, duplicates: str, check: Any, count_rows: bool) -> RoundResult:
    """One partition of one round: train a copy of ``start`` on the partition's series."""
    p = start.params
    state = start.copy()
    for name in state.round_summed:
        setattr(state, name, np.zeros_like(getattr(state, name)))
    if len(part):
        block: SeriesBlock = to_series_block(part, cols, as_offset(p["freq"]), p["context_length"],
                                             p["prediction_length"], where=f"partition {index}", duplicates=duplicates)
        check(block, f"partition {index}")
        state.train_block(block, context.rng())
        rows = int(np.count_nonzero(~np.isnan(block.values)))
    else:
        rows = 0
    return RoundResult(
        weight=float(state.round_weight()),
        averaged={n: getattr(state, n) for n in state.round_averaged},
        summed={n: getattr(state, n) for n in state.round_summed},
        new_rows=rows if count_rows else 0,
        sources=frozenset({source}) if (source is not None and count_rows) else frozenset(),
    )


def local_parts(df: pd.DataFrame, id_col: str, rows_per_part: int = 200_000) -> list[pd.DataFrame]:
    """An in-memory table cut into groups of whole items of about ``rows_per_part`` rows.

    Small tables stay one part: training on them is then sequential, with no averaging.
    """
    codes, _ = pd.factorize(df[id_col], sort=True)
    n = max(1, min(-(-len(df) // rows_per_part), int(codes.max()) + 1 if len(codes) else 1))
    group = codes * n // max(1, int(codes.max()) + 1) if len(codes) else codes
    return [df[group == g] for g in range(n)]


def train_rounds(X: Any, state: State, cols: Columns, duplicates: str, check: Any, *, epochs: int,
                 sync_every: int, seed: int, split_every: int = 8) -> State:
    """``epochs`` passes of seeded, shuffled rounds of ``sync_every`` partitions over ``X``."""
    if isinstance(X, pd.DataFrame):
        parts: list[Any] = local_parts(X[cols.needed], cols.id_col)
        sources: list[str | None] = [None] * len(parts)
    else:
        parts = list(X[cols.needed].to_delayed(optimize_graph=True))
        sources = list(partition_sources(X))
    todo = [i for i, s in enumerate(sources) if s is None or s not in state.consumed]
    alg = state.algorithm
    running = state
    update = dask.delayed(round_task, pure=True)
    finish = dask.delayed(engine.finish_round, pure=True)
    for epoch in range(int(epochs)):
        token = tokenize(running.to_arrays()[0]["theta"].tobytes(), epoch, seed, sync_every, [sources[i] for i in todo])
        current = dask.delayed(running, name=f"{alg}-start-{token}")
        for rnd, indices in enumerate(engine.epoch_rounds(todo, sync_every, seed, epoch)):
            leaves = [update(current, parts[i], i, sources[i], RoundContext(epoch, rnd, i, sources[i], seed), cols,
                             duplicates, check, epoch == 0, dask_key_name=(f"{alg}-update-{token}", rnd, i))
                      for i in indices]
            root = engine.tree_reduce(leaves, f"{alg}-merge-{tokenize(token, rnd)}", split_every,
                                      merge=engine.merge_round_results)
            current = finish(current, root, dask_key_name=(f"{alg}-round-{token}", rnd))
        running = engine._compute(current, progress=False)
    return running
