"""Long-format time series: validation, the time grid, lags, date features and windows.

A panel is a long table with one row per item and timestamp (``id_col``,
``time_col``, ``target``, optional known covariates). Inside one task the rows of
each item are sorted, mapped to integer positions on the frequency's grid (gaps
become missing values) and laid out in one flat array, so that the windows of all
items of a partition come from one ``sliding_window_view``: no loop over items.

Layout of :class:`SeriesBlock` for ``L`` context and ``H`` horizon steps::

    [NaN * L | item 0's grid values | NaN * H | NaN * L | item 1's values | NaN * H | ...]

The window whose origin is an item's ``j``-th grid point reads the ``L`` values up
to and including it (the context, NaN-padded before the start) and the next ``H``
values (the targets, NaN past the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import (
    BusinessDay,
    DateOffset,
    Day,
    MonthBegin,
    MonthEnd,
    QuarterBegin,
    QuarterEnd,
    Tick,
    Week,
    YearBegin,
    YearEnd,
)

from daskstate.errors import DataError, SchemaError

_EPOCH = pd.Timestamp("1970-01-01")
#: the largest seasonal lag read from the context (longer cycles come from date features)
MAX_SEASONAL_LAG = 400
#: the most recent lags read from the context (sub-daily data: about two days)
MAX_RECENT_LAGS = 100
#: context points the default lags reach for when the series are long enough (see :func:`default_lags`)
CONTEXT_POINTS = 48
#: the share of the typical series length the linear model's long context reads (see :func:`long_context`)
LONG_CONTEXT_SHARE = 0.5
#: the recent lags of data without a season (yearly), see :func:`default_lags` (fcannual: 4 before; measured
#: 4, 6, 8, 12, 16, 24 over three yearly panels in docs/forecasting-linear.md)
NONSEASONAL_RECENT_LAGS = 12
#: whether data without a season (yearly) get the long context too: the local smoother then reads up to half the
#: typical series instead of only the lags' few points (fcannual; False: the model before it)
NONSEASONAL_LONG_CONTEXT = True
#: new weekly fits' date features follow the calendar year (:data:`YEAR_DAYS` / 7 = 52.18 weeks), not the 52 weeks
#: of their seasonal lags, against which the year drifts by a week every 5.6 years (see :func:`fourier_periods`);
#: a state records it as ``params["calendar_year"]``, so states saved before keep their 52-week features
CALENDAR_YEAR_FOURIER = True
#: when half the typical series is not a cycle past the lags (weekly data, whose lags span two years, in series of
#: under six years), the long context reads whole cycles of the whole typical series instead of none
LONG_CONTEXT_FALLBACK = True
YEAR_DAYS = 365.25


# ---------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Columns:
    """Which columns of the long table mean what."""

    id_col: str = "item_id"
    time_col: str = "timestamp"
    target: str = "target"
    covariates: tuple[str, ...] = ()
    static: tuple[str, ...] = ()

    @property
    def needed(self) -> list[str]:
        return [self.id_col, self.time_col, self.target, *self.covariates, *self.static]

    def check(self, columns: Sequence[Any], where: str, *, target: bool = True) -> None:
        """Raise a SchemaError naming the missing columns."""
        have = [str(c) for c in columns]
        need = [c for c in self.needed if target or c != self.target]
        missing = [c for c in need if c not in have]
        if missing:
            raise SchemaError(f"{where}: column(s) {missing} missing (columns: {have})")


# ---------------------------------------------------------------------------- frequency
def fixed_step(offset: DateOffset) -> int | None:
    """The step in nanoseconds of a fixed-length frequency (days, hours, minutes, ...), else None."""
    return int(offset.nanos) if isinstance(offset, Tick | Day) else None


def as_offset(freq: str | DateOffset, where: str = "freq") -> DateOffset:
    """A pandas offset from a frequency string such as "QS", "MS", "D", "h", "30min"."""
    try:
        return to_offset(freq)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {freq!r} is not a pandas frequency ({exc})") from None


def infer_freq(df: pd.DataFrame, cols: Columns) -> str:
    """The frequency of the first items with at least 3 distinct timestamps (``pd.infer_freq``).

    Raises a DataError when no item has 3 timestamps or the timestamps are irregular.
    """
    times = pd.to_datetime(df[cols.time_col])
    for _, ts in times.groupby(df[cols.id_col].to_numpy(), sort=False):
        uniq = pd.DatetimeIndex(ts.drop_duplicates()).sort_values()
        if len(uniq) < 3:
            continue
        # the most common step among the first points, so that gaps do not break inference
        for start in range(0, max(1, len(uniq) - 3), max(1, len(uniq) // 8)):
            with pd.option_context("future.infer_freq_returns_offset", True):
                freq = pd.infer_freq(uniq[start : start + 3])
            if freq is not None:
                return freq.freqstr
    raise DataError(
        f"cannot infer the frequency of column {cols.time_col!r}: no item has 3 regularly spaced "
        "timestamps; pass freq=... (e.g. 'D', 'MS', 'QS-JAN', 'h')"
    )


def season_lengths(offset: DateOffset) -> list[int]:
    """Seasonal cycle lengths in steps of ``offset`` (shortest first); [] for yearly data.

    Quarterly 4, monthly 12, weekly 52, daily 7, business-daily 5, sub-daily data the
    steps per day and per week.
    """
    n = max(1, int(getattr(offset, "n", 1)))
    if isinstance(offset, YearBegin | YearEnd):
        return []
    if isinstance(offset, QuarterBegin | QuarterEnd):
        return [4 // n] if 4 % n == 0 and n < 4 else []
    if isinstance(offset, MonthBegin | MonthEnd):
        return [12 // n] if 12 % n == 0 and n < 12 else []
    if isinstance(offset, Week):
        return [52 // n] if n < 52 else []
    if isinstance(offset, BusinessDay):
        return [5 // n] if n < 5 else []
    step = fixed_step(offset)
    if step is not None:
        day = pd.Timedelta("1D").value
        if step >= day:
            return [7 // (step // day)] if step % day == 0 and 7 % (step // day) == 0 and step < 7 * day else []
        if day % step:
            return []
        per_day = day // step
        return [per_day, 7 * per_day] if per_day > 1 else [7]
    return []


def default_prediction_length(offset: DateOffset) -> int:
    """The forecast horizon of the M4 competition for this frequency (yearly 6 ... hourly 48)."""
    seasons = season_lengths(offset)
    if fixed_step(offset) is not None and seasons and seasons[0] > 7:
        return seasons[0] * 2 if seasons[0] <= 24 else seasons[0]
    return {4: 8, 12: 18, 52: 13, 7: 14, 5: 10}.get(seasons[0] if seasons else 0, 6)


def default_lags(offset: DateOffset, prediction_length: int, series_length: int | None = None) -> list[int]:
    """Lags read from the context: the recent values over ``K`` cycles of the shortest season
    (at most :data:`MAX_RECENT_LAGS`) and, for every seasonal cycle ``m``, the lags
    ``k*m - h + 1`` (the value one, and for the shortest cycle two, cycles before each
    target step ``h``) with a neighbour each side, capped at :data:`MAX_SEASONAL_LAG`.

    ``K`` is three cycles, so that the window's scale (its context mean) and seasonal
    pattern average over more than one cycle's noise; more (up to :data:`CONTEXT_POINTS`
    points) when the typical ``series_length`` is at least eight such contexts: short
    seasons (daily data's week) then average over enough points, while short series
    keep most of their points as training targets.

    Data without a season (yearly) read :data:`NONSEASONAL_RECENT_LAGS` recent values: as many as quarterly
    data's three cycles, so the window's scale and noise scale (its weight in the fit and its spread) average
    over 11 differences, not 3; at most half the typical ``series_length`` (at least 4), so that short series
    still give training windows.

    Examples
    --------
    >>> default_lags(as_offset("QS"), 8)
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    >>> default_lags(as_offset("YS"), 6) == list(range(1, 13))
    True
    >>> max(default_lags(as_offset("YS"), 6, series_length=14))
    7
    >>> max(default_lags(as_offset("D"), 14, series_length=400))  # 6 weeks: 400 // 8 >= 42
    42
    """
    H = int(prediction_length)
    seasons = season_lengths(offset)
    recent = max(4, 3 * seasons[0]) if seasons else NONSEASONAL_RECENT_LAGS
    if not seasons and series_length is not None:  # at most half the typical series (at least 4): a window needs
        recent = max(4, min(recent, int(series_length) // 2))  # half its lags observed, and targets after them
    if seasons and series_length is not None:
        m = seasons[0]
        longest = min(CONTEXT_POINTS, int(series_length) // 8)
        recent = max(recent, m * (longest // m))
    lags = set(range(1, min(recent, MAX_RECENT_LAGS) + 1))
    for k, m in enumerate(seasons):
        for cycle in (m, 2 * m) if k == 0 else (m,):
            if cycle + 1 > MAX_SEASONAL_LAG:
                continue
            lags.update(x for x in range(cycle - H + 1, cycle + 2) if x >= 1)
    return sorted(lags)


def long_context(offset: DateOffset, context_length: int, series_length: int | None) -> int:
    """The history the linear model's long-memory columns average over: whole cycles of the
    shortest season up to half the typical ``series_length`` (so a window's context leaves
    half a series as targets) and :data:`MAX_SEASONAL_LAG`. When that is not at least one cycle
    longer than ``context_length`` (the lags read it all), whole cycles up to the whole typical
    series (:data:`LONG_CONTEXT_FALLBACK`, seasonal data), so that the local model and the spread still
    see more than the lags' cycles; 0 when neither is.

    Data without a season (yearly) count single steps as cycles (with :data:`NONSEASONAL_LONG_CONTEXT`): there
    the long context is what the local smoother of each window reads (its level and trend), which the lags'
    few points cannot estimate.

    Examples
    --------
    >>> long_context(as_offset("MS"), 36, series_length=144)
    72
    >>> long_context(as_offset("QS"), 12, series_length=40)
    20
    >>> long_context(as_offset("W-MON"), 105, series_length=270)  # half of it is 2.6 years: the whole, 5 years
    260
    >>> long_context(as_offset("QS"), 12, series_length=15)
    0
    >>> long_context(as_offset("YS"), 4, series_length=47)
    23
    """
    seasons = season_lengths(offset)
    if series_length is None or not (seasons or NONSEASONAL_LONG_CONTEXT):
        return 0
    m = seasons[0] if seasons else 1
    longest = m * (min(int(int(series_length) * LONG_CONTEXT_SHARE), MAX_SEASONAL_LAG) // m)
    if seasons and longest < int(context_length) + m and LONG_CONTEXT_FALLBACK:
        longest = m * (min(int(series_length), MAX_SEASONAL_LAG) // m)
    return longest if longest >= int(context_length) + m else 0


# ---------------------------------------------------------------------------- the time grid
def grid_positions(times: pd.Series | pd.DatetimeIndex, offset: DateOffset, where: str = "input") -> np.ndarray:
    """Integer positions of timestamps on the grid of ``offset`` (consecutive periods differ by 1).

    Raises a DataError naming a timestamp that is not on the grid (e.g. hourly
    timestamps with ``freq="D"``, or 15th-of-month dates with ``freq="MS"``).
    """
    ts = naive_times(pd.DatetimeIndex(times), offset).as_unit("ns")
    n = max(1, int(getattr(offset, "n", 1)))
    step = fixed_step(offset)
    if step is not None:  # elementwise: no sort of the timestamps (the same positions as below)
        pos, rem = np.divmod(ts.asi8 - _EPOCH.value, step)
        if not len(rem) or (rem == rem[0]).all():
            return pos
    uniq, inverse = np.unique(ts.asi8, return_inverse=True)
    u = pd.DatetimeIndex(uniq.astype("datetime64[ns]"))
    if step is not None:
        delta = uniq - _EPOCH.value
        pos, rem = np.divmod(delta, step)
        bad = rem != rem[0] if len(rem) else np.zeros(0, bool)
    else:
        bad = ~np.fromiter((offset.is_on_offset(t) for t in u), bool, len(u))
        if isinstance(offset, YearBegin | YearEnd):
            pos = u.year.to_numpy(np.int64)
        elif isinstance(offset, MonthBegin | MonthEnd | QuarterBegin | QuarterEnd):
            # year * 12 + month - 1, from numpy's months since 1970 (DatetimeIndex's fields cost 90 us a call)
            pos = uniq.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
            if isinstance(offset, QuarterBegin | QuarterEnd):
                pos = (pos - int(offset.startingMonth)) // 3
        elif isinstance(offset, Week):
            pos = (u.normalize().asi8 - _EPOCH.value) // pd.Timedelta("7D").value
        elif isinstance(offset, BusinessDay):
            days = (u.normalize().asi8 - _EPOCH.value) // pd.Timedelta("1D").value
            pos = np.busday_count(np.datetime64("1970-01-01", "D"), days.astype("datetime64[D]"))
        else:
            raise ValueError(f"frequency {offset.freqstr!r} is not supported (use Q/M/W/D/B or a fixed step)")
        pos = np.asarray(pos, np.int64)
    if bad.any():
        first = u[np.flatnonzero(bad)[0]]
        raise DataError(
            f"{where}: {int(bad.sum())} timestamp(s) do not match the frequency {offset.freqstr!r}, "
            f"e.g. {first} (pass the right freq=..., or resample the data first)"
        )
    pos = pos // n if n > 1 and step is None else pos
    return np.asarray(pos, np.int64)[inverse]


def naive_times(times: Any, offset: DateOffset) -> Any:
    """Time-zone-aware timestamps (a DatetimeIndex or Series) as naive ones on the grid of ``offset``: the wall
    clock for steps of a day or longer (a month starts at local midnight, whatever the UTC offset that day),
    UTC for shorter steps (hours stay evenly spaced across a daylight-saving change). Naive input is returned as is.
    """
    acc = times.dt if isinstance(times, pd.Series) else times
    if acc.tz is None:
        return times
    step = fixed_step(offset)
    if step is not None and step < pd.Timedelta("1D").value:
        return acc.tz_convert(None)
    return acc.tz_localize(None)


def aware_times(times: np.ndarray, tz: Any, offset: DateOffset) -> Any:
    """The inverse of :func:`naive_times` for timestamps computed on the grid: naive datetime64 -> ``tz``-aware
    (a wall-clock time that does not exist on a daylight-saving day moves forward; an ambiguous one is standard time).
    """
    ts = pd.DatetimeIndex(np.asarray(times).ravel())
    if tz is None:
        return ts
    step = fixed_step(offset)
    if step is not None and step < pd.Timedelta("1D").value:
        return ts.tz_localize("UTC").tz_convert(tz)
    return ts.tz_localize(tz, ambiguous=np.zeros(len(ts), bool), nonexistent="shift_forward")


def grid_timestamps(last: pd.Series | pd.DatetimeIndex, offset: DateOffset, steps: int) -> np.ndarray:
    """Timestamps ``1..steps`` grid steps after each of ``last``: shape (len(last), steps)."""
    last = pd.DatetimeIndex(last).as_unit("ns")
    out = np.empty((len(last), steps), dtype="datetime64[ns]")
    for h in range(steps):  # a loop over horizon steps, not rows
        out[:, h] = (last + (h + 1) * offset).to_numpy("datetime64[ns]")
    return out


def date_features(pos: np.ndarray, offset: DateOffset, harmonics: int = 3, calendar_year: bool = False) -> np.ndarray:
    """Fourier terms of the position in every seasonal cycle: sin/cos pairs, shape pos.shape + (F,).

    Harmonics whose sine vanishes on the grid (``2k == m``) keep only the cosine. ``calendar_year``: weekly
    data's cycle is the calendar year (see :func:`fourier_periods`; a state's ``params["calendar_year"]``).
    """
    seasons = fourier_periods(offset, calendar_year)
    longest = max(seasons, default=1)
    if seasons and all(float(m).is_integer() and longest % m == 0 for m in seasons) and np.size(pos) > longest:
        # one cycle of the longest season holds every distinct row: look them up
        return _fourier(np.arange(longest), seasons, harmonics)[np.asarray(pos) % int(longest)]
    return _fourier(np.asarray(pos), seasons, harmonics)


def fourier_periods(offset: DateOffset, calendar_year: bool = False) -> list[float]:
    """The cycle lengths (in steps) of the date features: the seasons of :func:`season_lengths`, but for weekly
    data with ``calendar_year`` the calendar year, ``365.25 / 7`` weeks.

    Examples
    --------
    >>> [round(m, 2) for m in fourier_periods(as_offset("W-MON"), calendar_year=True)]
    [52.18]
    >>> fourier_periods(as_offset("W-MON")), fourier_periods(as_offset("MS"), calendar_year=True)
    ([52], [12])
    """
    seasons = season_lengths(offset)
    if calendar_year and isinstance(offset, Week) and seasons:
        return [YEAR_DAYS / (7 * max(1, int(getattr(offset, "n", 1))))]
    return list(seasons)


def _fourier(pos: np.ndarray, seasons: list[float], harmonics: int) -> np.ndarray:
    cols = []
    for m in seasons:
        for k in range(1, min(harmonics, int(m // 2)) + 1):
            angle = (2.0 * np.pi * k / m) * (pos % m)
            if 2 * k != m:
                cols.append(np.sin(angle))
            cols.append(np.cos(angle))
    if not cols:
        return np.zeros(np.shape(pos) + (0,))
    return np.stack(cols, axis=-1)


def n_date_features(offset: DateOffset, harmonics: int = 3) -> int:
    return date_features(np.zeros(1, np.int64), offset, harmonics).shape[-1]


# ---------------------------------------------------------------------------- a partition as series
@dataclass
class SeriesBlock:
    """The items of one task on their grid, flattened with NaN padding (see module docstring)."""

    items: np.ndarray          # (k,) item ids, in order
    starts: np.ndarray         # (k,) grid position of each item's first point
    lengths: np.ndarray        # (k,) grid points per item (first to last timestamp)
    offsets: np.ndarray        # (k,) index in ``values`` of each item's first point
    values: np.ndarray         # (total,) target, NaN where missing
    covariates: np.ndarray     # (total, c) known covariates, NaN where missing
    last_time: np.ndarray      # (k,) each item's last timestamp
    static: pd.DataFrame | None
    context_length: int
    prediction_length: int
    tz: Any = None             # the input timestamps' time zone (``last_time`` is naive: see :func:`naive_times`)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def origins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every grid point as a window origin: (flat index, item number, grid position)."""
        item = np.repeat(np.arange(self.n_items), self.lengths)
        first = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        # per item a constant plus the running row number, added in place (fewer full-size temporaries)
        origins = np.repeat(self.offsets - first, self.lengths)
        origins += np.arange(len(origins), dtype=np.int64)
        position = np.repeat(self.starts - self.offsets, self.lengths)
        position += origins
        return origins, item, position

    def last_origins(self) -> np.ndarray:
        """Flat index of each item's last grid point (the origin of its forecast)."""
        return self.offsets + self.lengths - 1

    def windows(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context (n, L) and targets (n, H) of the windows at flat ``origins`` (copies)."""
        L, H = self.context_length, self.prediction_length
        view = sliding_window_view(self.values, L + H)
        w = view[origins - L + 1]
        return w[:, :L], w[:, L:]

    def future_covariates(self, origins: np.ndarray) -> np.ndarray:
        """Covariates at the ``H`` target steps of each window: (n, H, c)."""
        H = self.prediction_length
        idx = origins[:, None] + np.arange(1, H + 1)[None, :]
        return self.covariates[idx]


def to_series_block(
    df: pd.DataFrame,
    cols: Columns,
    offset: DateOffset,
    context_length: int,
    prediction_length: int,
    *,
    where: str = "partition",
    target: bool = True,
    duplicates: str = "raise",
) -> SeriesBlock:
    """Validate one task's rows and lay its items out on the grid (rows sorted per item here).

    Duplicate timestamps of an item raise a DataError naming the item and the
    timestamp (``duplicates="mean"`` averages them instead); NaN targets and gaps
    in the grid are missing values.
    """
    cols.check(df.columns, where, target=target)
    L, H = int(context_length), int(prediction_length)
    ids = df[cols.id_col]
    if ids.isna().any():
        raise DataError(f"{where}: {int(ids.isna().sum())} row(s) with a missing {cols.id_col!r}")
    # the column itself (an Arrow string column: no array of Python strings); a categorical's codes would
    # sort by its categories' order, not by value
    ids = ids.to_numpy() if isinstance(ids.dtype, pd.CategoricalDtype) else ids
    try:
        times = pd.to_datetime(df[cols.time_col])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: column {cols.time_col!r} is not a timestamp ({exc})") from None
    if times.isna().any():
        raise DataError(f"{where}: {int(times.isna().sum())} row(s) with a missing {cols.time_col!r}")
    tz = times.dt.tz
    times = naive_times(times, offset)
    pos = grid_positions(times, offset, where)
    y = _numeric(df, cols.target, where) if target and cols.target in df.columns else np.full(len(df), np.nan)
    cov = np.column_stack([_numeric(df, c, where) for c in cols.covariates]) if cols.covariates else (
        np.zeros((len(df), 0)))
    codes, items = pd.factorize(ids, sort=True)
    runs = _item_runs(codes, pos, len(items))
    if runs is None:
        codes, pos, y, cov, tvals = _sorted_rows(codes, pos, y, cov, times.to_numpy("datetime64[ns]"), items,
                                                 duplicates, where)
        first = np.searchsorted(codes, np.arange(len(items)), side="left")
        last = np.searchsorted(codes, np.arange(len(items)), side="right") - 1
        last_time = tvals[last]
    else:  # every item's rows in order already: rows are placed where they are (no sorted copies)
        first, last = runs
        last_time = times.to_numpy("datetime64[ns]")[last]  # not times.iloc[last]: a Series costs 0.3 ms
    starts, lengths = pos[first], pos[last] - pos[first] + 1
    seg = L + lengths + H
    seg_start = np.concatenate([[0], np.cumsum(seg)[:-1]]).astype(np.int64)
    offsets = seg_start + L
    values = np.full(int(seg.sum()), np.nan)
    flat = np.subtract(pos, starts[codes])
    flat += offsets[codes]
    values[flat] = y
    covariates = np.full((len(values), cov.shape[1]), np.nan)
    covariates[flat] = cov
    static = None
    if cols.static:
        static = df[[cols.id_col, *cols.static]].drop_duplicates(cols.id_col).set_index(cols.id_col).loc[items]
    return SeriesBlock(np.asarray(items), starts, lengths, offsets, values, covariates, last_time, static, L, H, tz)


def _item_runs(codes: np.ndarray, pos: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The first and last row of each of the ``k`` items when every item's rows are one run of rows
    in increasing grid position (the items in any order, as a table written series by series); else None."""
    if not len(codes):
        return None
    change = np.diff(codes) != 0
    bad = np.diff(pos) <= 0
    bad[change] = False
    if bad.any():
        return None
    start = np.flatnonzero(change) + 1
    if len(start) + 1 != k:  # an item in more than one run
        return None
    start = np.concatenate([[0], start])
    end = np.concatenate([start[1:] - 1, [len(codes) - 1]])
    first, last = np.empty(k, np.int64), np.empty(k, np.int64)
    first[codes[start]], last[codes[start]] = start, end
    return first, last


def _sorted_rows(codes: np.ndarray, pos: np.ndarray, y: np.ndarray, cov: np.ndarray, tvals: np.ndarray,
                 items: Any, duplicates: str, where: str) -> tuple[np.ndarray, ...]:
    """The rows sorted by (item, grid position), duplicate timestamps raised or averaged
    (see :func:`to_series_block`): ``codes, pos, y, cov, tvals``."""
    order = np.lexsort((pos, codes))
    codes, pos, y, cov, tvals = codes[order], pos[order], y[order], cov[order], tvals[order]
    same = (np.diff(codes) == 0) & (np.diff(pos) == 0)
    if same.any():
        if duplicates != "mean":
            k = int(np.flatnonzero(same)[0])
            raise DataError(
                f"{where}: {int(same.sum())} duplicate timestamp(s), e.g. item {items[codes[k]]!r} at "
                f"{pd.Timestamp(tvals[k])}; aggregate them first or pass duplicates='mean'"
            )
        keep = np.concatenate([[True], ~same])
        group = np.cumsum(keep) - 1
        n_group = int(group[-1]) + 1

        def mean_of(a: np.ndarray) -> np.ndarray:
            ok = ~np.isnan(a)
            s = np.bincount(group, np.where(ok, a, 0.0), n_group)
            c = np.bincount(group, ok.astype(float), n_group)
            with np.errstate(invalid="ignore", divide="ignore"):
                return s / c

        y = mean_of(y)
        cov = np.column_stack([mean_of(cov[:, j]) for j in range(cov.shape[1])]) if cov.shape[1] else cov[keep]
        codes, pos, tvals = codes[keep], pos[keep], tvals[keep]
    return codes, pos, y, cov, tvals


def static_indicators(static: pd.DataFrame | None, columns: Sequence[str], buckets: int) -> np.ndarray:
    """Hashed one-hot codes of each item's static categories: (items, len(columns) * buckets).

    Column ``c``'s value ``v`` sets entry ``c * buckets + hash("c=v") % buckets``: a fixed
    width whatever the number of categories (a state does not grow), the same code for
    the same value in every partition, and a code for a category first seen at predict.

    Examples
    --------
    >>> codes = static_indicators(pd.DataFrame({"state": ["NSW", "VIC", "NSW"]}), ["state"], 8)
    >>> codes.shape, bool((codes[0] == codes[2]).all()), codes.sum(axis=1).tolist()
    ((3, 8), True, [1.0, 1.0, 1.0])
    """
    if not columns:
        return np.zeros((0 if static is None else len(static), 0))
    out = np.zeros((len(static), len(columns) * buckets))
    rows = np.arange(len(static))
    for j, col in enumerate(columns):
        keys = np.asarray([f"{col}={v}" for v in static[col].to_numpy()], dtype=object)
        bucket = (pd.util.hash_array(keys) % np.uint64(buckets)).astype(np.int64)
        out[rows, j * buckets + bucket] = 1.0
    return out


def _numeric(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
        raise SchemaError(f"{where}: column {col!r} must be numeric, got dtype {s.dtype}")
    a = s.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(a)
    if inf.any():
        raise DataError(f"{where}: column {col!r} holds {int(inf.sum())} infinite value(s)")
    return a


# ---------------------------------------------------------------------------- partitioning
def partition_by_series(
    df: dd.DataFrame | pd.DataFrame, id_col: str = "item_id", npartitions: int | None = None
) -> dd.DataFrame:
    """Shuffle a long table so that every item's rows live in one partition.

    Parameters
    ----------
    df : Dask or pandas DataFrame
        The long table.
    id_col : str
        The item id column.
    npartitions : int, optional
        Partitions of the result (default: as many as the input).

    Returns
    -------
    dask.dataframe.DataFrame
        Rows hashed by item id (Dask's shuffle); order within an item is not
        guaranteed, a fit sorts each item's rows in its task.

    Examples
    --------
    >>> import pandas as pd, daskstate
    >>> df = pd.DataFrame({"item_id": list("aabb"), "timestamp": pd.date_range("2020", periods=4, freq="D"),
    ...                    "target": [1.0, 2.0, 3.0, 4.0]})
    >>> daskstate.partition_by_series(df, npartitions=2).npartitions
    2
    """
    if isinstance(df, pd.DataFrame):
        df = dd.from_pandas(df, npartitions=npartitions or 1, sort=False)
    if id_col not in df.columns:
        raise SchemaError(f"partition_by_series: column {id_col!r} missing (columns: {list(df.columns)})")
    return df.shuffle(on=id_col, npartitions=npartitions or df.npartitions)


def split_items(item_lists: Sequence[np.ndarray]) -> list[Any]:
    """Items that occur in more than one of the partitions' item lists."""
    if not item_lists:
        return []
    all_items = np.concatenate([np.asarray(a, dtype=object) for a in item_lists])
    counts = pd.Series(all_items).value_counts()
    return list(counts.index[counts.to_numpy() > 1])
