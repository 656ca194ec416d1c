"""The input of the neural forecasters' rounds: partitions of whole series, one per task.

The shared trainer (:mod:`daskstate.training`) trains on them in rounds, and the
linear model folds them in one pass: each partition task turns its frame into a
series batch with the state's ``read_batch``.
"""

from __future__ import annotations

from typing import Any

import dask
import pandas as pd
from dask.base import tokenize

from daskstate.algorithms.forecast.series import Columns
from daskstate.data import Input, partition_sources
from daskstate.state import Schema


def local_parts(df: pd.DataFrame, id_col: str, rows_per_part: int = 200_000) -> list[pd.DataFrame]:
    """An in-memory table cut into groups of whole items of about ``rows_per_part`` rows.

    Small tables stay one part: training on them is then sequential, with no averaging.
    """
    codes, _ = pd.factorize(df[id_col], sort=True)
    n_items = int(codes.max()) + 1 if len(codes) else 1
    n = max(1, min(-(-len(df) // rows_per_part), n_items))
    group = codes * n // n_items
    return [df[group == g] for g in range(n)]


def series_input(X: Any, schema: Schema, cols: Columns) -> Input:
    """The engine's :class:`~daskstate.data.Input` over partitions of whole series (pandas: groups of items)."""
    if isinstance(X, pd.DataFrame):
        frames = local_parts(X[cols.needed], cols.id_col)
        sources = [f"frame-{tokenize(f)}" for f in frames]
        parts = [dask.delayed(f, name=s) for f, s in zip(frames, sources, strict=True)]
        return Input(schema, parts=parts, sources=sources)
    return Input(schema, parts=list(X[cols.needed].to_delayed(optimize_graph=True)),
                 sources=list(partition_sources(X)), collection=X)
