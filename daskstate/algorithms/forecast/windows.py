"""Windows of a :class:`SeriesBlock` as model inputs: mean scaling, noise scale, design rows.

Shared by every forecasting model: a window is the context (``L`` values up to the
origin) and the ``H`` targets after it. It is scaled by the mean absolute value of
its observed context (so one global model serves series of any magnitude) and
carries a noise scale, the context's mean absolute seasonal difference in scaled
units, which the linear model uses to weight windows and to spread its forecasts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pandas.tseries.offsets import DateOffset

from daskstate.algorithms.forecast.local import cycle_index, local_forecast
from daskstate.algorithms.forecast.series import SeriesBlock, date_features

if TYPE_CHECKING:
    from daskstate.algorithms.forecast.lstm import Workspace

#: floor of the relative noise scale, so a flat context cannot get an unbounded weight
NOISE_FLOOR = 0.02
#: measure the noise scale around the differences' own mean (fcunseen, off): a smoothly growing context's mean
#: absolute seasonal difference is its growth, not its noise (IncomeUK: 0.095 of the level against 0.007 centred)
NOISE_CENTRED = False
#: the per-window spread's noise ratio (:func:`noise_ratio`) with the whole context's noise measured around the
#: differences' mean (fcunseen, off): only the spread sees it; weights, means and noise scales stay as they are
SPREAD_NOISE_CENTRED = False
#: window x horizon x feature values per mini-batch (bounds temporary memory)
BATCH_VALUES = 1 << 22


@dataclass
class Windows:
    """A mini-batch of windows, scaled."""

    origins: np.ndarray     # (n,) flat index of each window's origin in the block
    item: np.ndarray        # (n,) item number within the block
    position: np.ndarray    # (n,) grid position of the origin
    context: np.ndarray     # (n, L) context / scale, NaN where missing
    target: np.ndarray      # (n, H) targets / scale, NaN where missing
    scale: np.ndarray       # (n,) mean |observed context|
    noise: np.ndarray | None  # (n,) relative noise scale (>= NOISE_FLOOR); None when not asked for
    covariates: np.ndarray  # (n, H, c) known covariates at the target steps


def context_scale(context: np.ndarray, work: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute observed value of each context row, and the observed counts (``work``: buffers for
    the full-size temporaries; the same values)."""
    if work is None:
        observed = ~np.isnan(context)
        n_obs = observed.sum(axis=1)
        total = np.where(observed, np.abs(context), 0.0).sum(axis=1)
    else:
        missing = np.isnan(context, out=work.empty("scale_missing", context.shape, bool))
        n_obs = context.shape[1] - missing.sum(axis=1)
        absolute = np.abs(context, out=work.empty("scale_abs", context.shape))
        np.copyto(absolute, 0.0, where=missing)
        total = absolute.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = total / n_obs
    return scale, n_obs


def noise_scale(scaled: np.ndarray, season: int, work: Workspace | None = None, centred: bool | None = None
                ) -> np.ndarray:
    """Mean absolute ``season``-step difference of each scaled context (1-step if too few pairs).

    ``sqrt(s^2 + NOISE_FLOOR^2)``, so it is never zero; 1.0 where no pair is observed. ``work``: the
    differences in its buffers (the same values). ``centred`` (default :data:`NOISE_CENTRED`): the differences
    measured around their mean.
    """
    centred = NOISE_CENTRED if centred is None else centred
    out = np.full(len(scaled), np.nan)
    for lag in dict.fromkeys((season, 1)):  # seasonal first, then one step where that is missing
        if lag >= scaled.shape[1]:
            continue
        if work is None or centred:
            d = scaled[:, lag:] - scaled[:, :-lag]
            if centred:
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a row with no pair: its mean is NaN, filled below
                    d = d - np.nanmean(d, axis=1, keepdims=True)
            d = np.abs(d)
            ok = ~np.isnan(d)
            cnt = ok.sum(axis=1)
            absent = None
        else:
            shape = (len(scaled), scaled.shape[1] - lag)
            d = np.subtract(scaled[:, lag:], scaled[:, :-lag], out=work.empty("noise_difference", shape))
            np.abs(d, out=d)
            absent = np.isnan(d, out=work.empty("noise_missing", shape, bool))
            cnt = shape[1] - absent.sum(axis=1)
            np.copyto(d, 0.0, where=absent)
        with np.errstate(invalid="ignore", divide="ignore"):
            mad = (np.where(ok, d, 0.0) if absent is None else d).sum(axis=1) / cnt
        fill = np.isnan(out) & (cnt > 0)
        out[fill] = mad[fill]
    out[np.isnan(out)] = 1.0
    return np.sqrt(out**2 + NOISE_FLOOR**2)


def noise_ratio(w: Windows, season: int, work: Workspace | None = None) -> np.ndarray:
    """(n,) the :func:`noise_scale` of each window's whole (long) context over its own noise scale (from the
    last ``scale_points`` values): above 1 where the recent values are calmer than the history, 1 where the
    context has no values before them (``work``: buffers of :func:`noise_scale`). With :data:`SPREAD_NOISE_CENTRED`
    the whole context's noise is measured around the differences' mean: below 1 where the recent noise scale is
    mostly steady growth."""
    return noise_scale(w.context, season, work, centred=True if SPREAD_NOISE_CENTRED else None) / w.noise


def iter_windows(block: SeriesBlock, origins: np.ndarray, item: np.ndarray, position: np.ndarray,
                 season: int, width: int, min_observed: int = 1, scale_points: int | None = None,
                 work: Workspace | None = None, noise_scales: bool = True) -> Iterator[Windows]:
    """Scaled windows at the given origins, in mini-batches of bounded size.

    The scale, noise scale and observed count come from the last ``scale_points`` context
    values (default: the whole context), so that a model that also reads a longer history
    scales and weights its windows as one that reads only the recent values. Windows with
    fewer than ``min_observed`` such observed values or a zero scale are dropped.
    ``work`` (a :class:`~daskstate.algorithms.forecast.lstm.Workspace`): the windows' context and
    targets live in its buffers, valid until the next window is drawn (the same values as without).
    ``noise_scales=False``: ``noise`` is None (the neural models do not read it).
    """
    H = block.prediction_length
    step = max(64, BATCH_VALUES // max(1, H * width))
    for start in range(0, len(origins), step):
        sl = slice(start, start + step)
        o = origins[sl]
        if work is None:
            context, target = block.windows(o)
        else:
            context, target = _windows_into(block, o, work)
        recent = context if scale_points is None else context[:, -int(scale_points):]
        scale, n_obs = context_scale(recent, work)
        keep = (n_obs >= max(1, min_observed)) & (scale > 0)
        if not keep.all():
            o, context, target, scale = o[keep], context[keep], target[keep], scale[keep]
        if not len(o):
            continue
        if work is None:
            context = context / scale[:, None]
            target = target / scale[:, None]
        else:
            context = np.divide(context, scale[:, None], out=work.empty("window_context", context.shape))
            target = np.divide(target, scale[:, None], out=work.empty("window_target", target.shape))
        noise = noise_scale(context if scale_points is None else context[:, -int(scale_points):], season, work) if (
            noise_scales) else None
        yield Windows(o, item[sl][keep], position[sl][keep], context, target, scale, noise,
                      block.future_covariates(o))


def _windows_into(block: SeriesBlock, origins: np.ndarray, work: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`SeriesBlock.windows` (unscaled context and targets) as views of one reused buffer.

    One ``take`` from the flat values at a reused (n, L + H) index (``np.take`` from the sliding
    window view would first copy the whole view: ``L + H`` times the block).
    """
    L, H = block.context_length, block.prediction_length
    at = work.empty("window_index", (len(origins), L + H), np.int64)
    np.add((origins - L + 1)[:, None], np.arange(L + H), out=at)
    rows = np.take(block.values, at, out=work.empty("window_values", at.shape), mode="clip")  # in range: padded
    return rows[:, :L], rows[:, L:]


def lagged_values(w: Windows, lags: np.ndarray, work: Workspace | None = None) -> np.ndarray:
    """The scaled context at ``lags`` (n, len(lags)); a missing value is the window's scaled level.

    So a short or gappy context still gives a full row. ``work``: the result and the
    temporaries in its buffers (valid until the next call; the same values).
    """
    L = w.context.shape[1]
    if work is not None:
        return _lagged_values_into(w.context, L - lags, work)
    lagged = w.context[:, L - lags]
    missing = np.isnan(lagged)
    if missing.any():
        level = np.nanmean(w.context, axis=1)
        lagged = np.where(missing, level[:, None], lagged)
    return lagged


def _lagged_values_into(context: np.ndarray, columns: np.ndarray, work: Workspace) -> np.ndarray:
    """:func:`lagged_values` in reused buffers; the level is ``np.nanmean``'s: the sum of the observed
    values (missing ones as 0) over their count."""
    n = len(context)
    lagged = np.take(context, columns, axis=1, out=work.empty("lagged_values", (n, len(columns))),
                     mode="clip")  # in range (lags 1 .. L): unbuffered
    missing = np.isnan(lagged, out=work.empty("lagged_missing", lagged.shape, bool))
    if missing.any():
        unobserved = np.isnan(context, out=work.empty("lagged_unobserved", context.shape, bool))
        count = context.shape[1] - unobserved.sum(axis=1)
        filled = work.empty("lagged_filled", context.shape)
        np.copyto(filled, context)
        np.copyto(filled, 0.0, where=unobserved)
        with np.errstate(invalid="ignore", divide="ignore"):
            level = filled.sum(axis=1) / count
        np.copyto(lagged, level[:, None], where=missing)
    return lagged


def seasonal_index(w: Windows, season: int) -> np.ndarray:
    """(n, H, 1): per target step, the seasonal index of its position in the ``season``: the mean over
    the context's whole cycles of the value's deviation from its cycle's mean, relative to that
    cycle's mean absolute value (``y / mean - 1`` for positive series).

    The seasonal shape averaged over a long history, as exponential smoothing keeps it, in one
    column instead of a coefficient per lag, and with no level in it: a window's level and trend
    come from its recent lags, not from how far the long history lies below them. The context
    is read as whole cycles ending at the origin (its width a multiple of ``season``); a cycle
    with no observed value, or a zero mean absolute value, is left out.
    """
    H = w.target.shape[1]
    index = cycle_index(w.context, season)
    # step h's value is in phase with position (h - 1) mod season of a cycle that ends at the origin
    return index[:, np.arange(H) % season][:, :, None]


def signed_level(w: Windows, points: int) -> np.ndarray:
    """(n,) the mean of each window's last ``points`` scaled context values: 1 where none is negative (the scale
    is their mean absolute value), in [-1, 1] for a window whose values cross zero."""
    recent = w.context[:, -int(points):]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmean(recent, axis=1)
        negative = np.nanmin(recent, axis=1) < 0
    return np.where(negative & np.isfinite(level), level, 1.0)


def step_design(w: Windows, offset: DateOffset, harmonics: int, static: np.ndarray | None = None,
                long_season: int = 0, local_season: int = 0, level_points: int = 0,
                calendar_year: bool = False, work: Workspace | None = None) -> np.ndarray:
    """The design columns that depend on the horizon step: (n, H, e) = [seasonal index, local forecast,
    date features, covariates, static, level] (``work``: the result in its buffer, valid until the next call).

    The last column, the intercept, is 1; with ``level_points`` it is the window's :func:`signed_level` over its
    last ``level_points`` values, which is 1 for a window without negative values: the intercept times the
    window's scale (a drift or mean the global model carries into every series) is then the intercept times its
    signed mean, so a series that swings around zero is not pulled toward its mean absolute value.

    ``static`` (n, s): the windows' static category indicators (the same at every step);
    ``long_season``: the season of the :func:`seasonal_index` column (0: none); ``local_season``: the season of
    the local exponential-smoothing forecast of each window's own context
    (:func:`~daskstate.algorithms.forecast.local.local_forecast`; 0: no such column, 1: not seasonal).
    """
    n, H = w.target.shape
    pos = w.position[:, None] + np.arange(1, H + 1)[None, :]
    static = np.zeros((n, 0)) if static is None else static
    memory = seasonal_index(w, long_season) if long_season else np.zeros((n, H, 0))
    local = (local_forecast(w.context, H, local_season)[:, :, None] if local_season else np.zeros((n, H, 0)))
    level = np.ones((n, H, 1)) if not level_points else np.broadcast_to(signed_level(w, level_points)[:, None, None],
                                                                        (n, H, 1))
    columns = [memory, local, date_features(pos, offset, harmonics, calendar_year), w.covariates,
               np.broadcast_to(static[:, None, :], (n, H, static.shape[1])), level]
    out = None if work is None else work.empty("step_design", (n, H, sum(c.shape[2] for c in columns)))
    return np.concatenate(columns, axis=2, out=out)


def lag_design(w: Windows, lags: np.ndarray, offset: DateOffset, harmonics: int, static: np.ndarray | None = None,
               long_season: int = 0, local_season: int = 0, level_points: int = 0,
               calendar_year: bool = False) -> np.ndarray:
    """Design rows per horizon step: (n, H, p) = [lagged values, seasonal index, local forecast, date features,
    covariates, static, level] (see :func:`step_design`)."""
    lagged = lagged_values(w, lags)
    n, H = w.target.shape
    return np.concatenate([np.broadcast_to(lagged[:, None, :], (n, H, len(lags))),
                           step_design(w, offset, harmonics, static, long_season, local_season, level_points,
                                       calendar_year)],
                          axis=2)
