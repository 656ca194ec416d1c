"""What every forecasting state shares: its window hyperparameters and the batch a partition becomes.

A partition (a pandas DataFrame of whole series) becomes a :class:`SeriesBatch` in the
state's ``read_batch`` (the hook of the rounds protocol, :mod:`daskstate.state`): the
rows validated, sorted per item and laid out on the time grid. Partial fits with new
points of known series pass those items' earlier points as the partition's second
element (the engine's ``(X, y)`` pair): they give the new windows their contexts, and
only (window, step) pairs whose target is a new point are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.offsets import DateOffset

from daskstate.algorithms.forecast.series import (
    Columns,
    SeriesBlock,
    as_offset,
    grid_positions,
    to_series_block,
)
from daskstate.errors import DataError, SchemaError


@dataclass
class SeriesBatch:
    """One partition as series: the block, and per item the first grid position whose pairs count."""

    block: SeriesBlock
    first_target: np.ndarray | None
    new_points: int


class SeriesStateMixin:
    """Window hyperparameters read from ``params`` and the protocol's ``read_batch`` / ``check_batch``."""

    params: dict
    schema: Any

    @property
    def offset(self) -> DateOffset:
        return as_offset(self.params["freq"])

    @property
    def lags(self) -> np.ndarray:
        return np.asarray(self.params["lags"], dtype=np.int64)

    @property
    def horizon(self) -> int:
        return int(self.params["prediction_length"])

    @property
    def harmonics(self) -> int:
        return int(self.params.get("harmonics", 3))

    @property
    def season(self) -> int:
        return int(self.params.get("season", 1))

    @property
    def calendar_year(self) -> bool:
        """Whether weekly date features follow the calendar year (:func:`~.series.fourier_periods`); False for
        states saved before it."""
        return bool(self.params.get("calendar_year", False))

    @property
    def columns(self) -> Columns:
        id_col, time_col, target = self.params.get("columns", ("item_id", "timestamp", "target"))
        return Columns(id_col, time_col, target, tuple(self.schema.features), tuple(self.params.get("static", ())))

    def read_batch(self, X: Any, y: Any, *, on_invalid: str = "raise", where: str = "batch"
                   ) -> tuple[SeriesBatch, None, int]:
        """A partition of whole series (and, as ``y``, earlier points of its items) as a :class:`SeriesBatch`."""
        cols, history = self.columns, y
        if not isinstance(X, pd.DataFrame):
            raise SchemaError(f"{where}: a forecasting state reads a long pandas DataFrame, not {type(X).__name__}")
        frame = X
        if history is not None:
            hist = history[history[cols.id_col].isin(pd.unique(X[cols.id_col].to_numpy()))]
            frame = pd.concat([hist[cols.needed], X[cols.needed]], ignore_index=True)
        block = to_series_block(frame, cols, self.offset, int(self.params["context_length"]), self.horizon,
                                where=where, duplicates=self.params.get("duplicates", "raise"))
        check_likelihood(block, where, self.params.get("likelihood", "student_t"), cols)
        first_target = None
        if history is not None and len(X):
            pos = grid_positions(X[cols.time_col], self.offset, where)
            first = pd.Series(pos).groupby(X[cols.id_col].to_numpy()).min()
            first_target = first.reindex(block.items).to_numpy(np.int64)
        new_points = int(X[cols.target].notna().sum()) if cols.target in X.columns else 0
        return SeriesBatch(block, first_target, new_points), None, 0

    def check_batch(self, X: Any, y: Any) -> int:
        """The new observed points of a :class:`SeriesBatch` (the rows it adds)."""
        if not isinstance(X, SeriesBatch):
            raise SchemaError(f"a forecasting state updates from a SeriesBatch (see read_batch), not {type(X).__name__}")
        return X.new_points


def check_likelihood(block: SeriesBlock, where: str, likelihood: str, cols: Columns) -> None:
    """Counts (``negative_binomial``) must not be negative: raise naming the items."""
    if likelihood != "negative_binomial":
        return
    neg = block.values < 0
    if neg.any():
        item_of = np.searchsorted(block.offsets, np.flatnonzero(neg), side="right") - 1
        bad = list(pd.unique(block.items[item_of]))
        raise DataError(f"{where}: likelihood='negative_binomial' needs non-negative counts, but column "
                        f"{cols.target!r} has {int(neg.sum())} negative value(s) in item(s) {bad[:5]}")
