"""A local forecaster per window: exponential smoothing of the window's own context, all windows at once.

The global linear model (:mod:`~daskstate.algorithms.forecast.linear`) carries one set of
dynamics across every series; a local model follows each series' own level and trend. This
module forecasts every window of a mini-batch from its own (scaled) context only, so the
forecast of a window is the same at fit and at predict and does not depend on points before
its context (partial fits stay exact):

1. seasonal adjustment, where the context is seasonal (the autocorrelation at the seasonal lag of the
   context minus its centred moving average passes the 90% test of the M4 competition's benchmarks;
   :data:`TEST_EXTENDED_ENDS`, off, extends that average over the context's ends): the relative seasonal index of
   :func:`~daskstate.algorithms.forecast.windows.seasonal_index` times each cycle's mean absolute
   value is subtracted, and added back to the forecast relative to its level;
2. exponential smoothing of the adjusted context with every smoothing parameter set of a small
   grid (:data:`SES_ALPHAS` without trend; :data:`HOLT_GRID` with a damped additive trend), one
   Python loop over the context's time steps, vectorised over windows x grid;
3. per window, the set of least AIC on its one-step errors (``n log(sse / n) + 2 k``).

The recursion starts at a window's first observed point (a context longer than its series leads with missing
values; :data:`START_AT_FIRST_OBSERVED`), from the first observed value and the mean step after it
(:data:`TREND_START`).

The recursion is the error-correction form of Holt's damped trend (statsmodels ``Holt(damped_trend=True)``
with ``smoothing_level=alpha``, ``smoothing_trend=beta``, ``damping_trend=phi``; simple exponential
smoothing is ``beta = 0`` with no initial trend)::

    yhat_t = l_{t-1} + phi b_{t-1};  e_t = y_t - yhat_t  (0 where y_t is missing)
    l_t = yhat_t + alpha e_t;        b_t = phi b_{t-1} + alpha beta e_t
    forecast_h = l_T + (phi + ... + phi^h) b_T
"""

from __future__ import annotations

import numpy as np

#: smoothing levels of simple exponential smoothing (no trend)
SES_ALPHAS = (0.1, 0.2, 0.3, 0.5, 0.8, 1.0)
#: (alpha, beta, phi) of the damped-trend models
HOLT_GRID = tuple((a, b, p) for a in (0.2, 0.5, 0.8) for b in (0.1, 0.3) for p in (0.9, 0.98))
#: the context points the smoother reads at most (the last ones): an exponential smoother with the smallest
#: level weight forgets its start within them, and the cost stays bounded for long contexts
LOCAL_POINTS = 96
#: :func:`moving_average` sums the observed weight of windows of up to this many points as a product with the
#: weights, of longer windows from running counts (the same numbers; the product is cheaper for short windows only)
MASS_PRODUCT_POINTS = 13
#: one-sided critical value of the seasonality test (90%, as the M4 benchmarks' deseasonalisation)
SEASONALITY_Z = 1.645
#: whether the seasonality test reads the context detrended by a moving average extended over its ends
#: (:func:`extended_moving_average`: every cycle of the context counts, so a context of three cycles can pass)
#: rather than by the centred moving average alone, which leaves one cycle fewer. Off: judged on the 36 benchmark
#: pairs it helped (0.9998 / 0.9984), but on the unseen weekly panels it cost wQL 1.087 (synthetic_weekly's
#: intervals too wide, +33-49% at two origins) and fpp_weekly's MASE up to +7% (docs/forecasting-linear.md, fcsyn)
TEST_EXTENDED_ENDS = False
#: whether the seasonal index too reads the context minus the extended moving average (every cycle)
INDEX_EXTENDED_ENDS = False
#: the seasonal index's discounts tried per window: with discount ``g`` the cycle ``k`` cycles before the last weighs
#: ``(1 - g)^k`` (as the seasonal state of Holt-Winters smoothing with seasonal gain ``g`` weighs them; 0: every cycle
#: alike, classical decomposition); each window takes the one whose index of the cycles before each cycle predicted
#: that cycle best (:func:`discount_choice`)
SEASONAL_DISCOUNTS = (0.0,)
#: a discount is chosen only from at least this many predicted cycles (otherwise the first of the grid)
DISCOUNT_MIN_CYCLES = 2
#: how the smoother's initial level and trend are set: ``"steps"``, the first observed value and the mean step over
#: the next ``max(2, min(season, T // 4))`` points (2 points without a season); ``"line"``, the least-squares line
#: through the first ``min(max(10, 2 season), T)`` observed points (the heuristic start of Hyndman et al. 2008, as
#: R's ``forecast::ets``), so that a small trend gain does not carry the noise of two points as the trend;
#: ``"line_without_season"``: ``"line"`` where the smoother has no season (``season`` 1: yearly data), ``"steps"``
#: (a whole cycle's step) where it has one
TREND_START = "steps"
#: the points of ``"line"``'s start: ``max(LINE_START_POINTS, 2 season)``
LINE_START_POINTS = 10
#: whether the initial level and trend (set from the first observed points) are the state just before the first
#: observed point (True), or, as before fctrend, the state before the context's first point, which the recursion then
#: moved along the initial trend over the missing lead of a context longer than its series: a trended set reached
#: its first observation ``first`` trend steps off, its one-step errors grew with the lead, and AIC chose simple
#: smoothing for such windows, a straight line included (docs/forecasting-linear.md, "Growing series (fctrend)")
START_AT_FIRST_OBSERVED = True


def cycle_index(context: np.ndarray, season: int) -> np.ndarray:
    """(n, season): the relative seasonal index of :func:`~daskstate.algorithms.forecast.windows.seasonal_index` per position of a cycle that ends at
    the origin (position ``j``: the last cycle's ``j``-th point); 0 where no cycle observes it."""
    n, L = context.shape
    cycles = context[:, L - season * (L // season):].reshape(n, L // season, season)
    flat = cycles.reshape(-1, season)
    ok = ~np.isnan(flat)
    count = _count_rows(ok)
    divisor = np.maximum(count, 1)
    values = np.where(ok, flat, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # each cycle's mean and mean absolute value (the same missing values: one mask, one count for both)
        mean = np.where(count > 0, _row_sums(values) / divisor, np.nan).reshape(n, -1, 1)
        size = np.where(count > 0, _row_sums(np.abs(values, out=values)) / divisor, np.nan).reshape(n, -1, 1)
        relative = np.where(size > 0, (cycles - mean) / size, np.nan)
    index = _nanmean_rows(relative.transpose(0, 2, 1).reshape(n * season, -1)).reshape(n, season)
    return np.where(np.isnan(index), 0.0, index)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(a)
    cnt = _count_rows(ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, _row_sums(np.where(ok, a, 0.0)) / np.maximum(cnt, 1), np.nan)


def _count_rows(ok: np.ndarray) -> np.ndarray:
    """(N,) float: the True values per row of ``ok`` (N, m), one column added at a time (whole numbers: exact in any
    order), where numpy's reduction over a short last axis costs several times as much."""
    if ok.shape[1] == 0:
        return np.zeros(len(ok))
    out = ok[:, 0].astype(np.float64)
    for j in range(1, ok.shape[1]):
        out += ok[:, j]
    return out


def _row_sums(a: np.ndarray) -> np.ndarray:
    """(N,): ``a.sum(axis=1)`` of ``a`` (N, m), the same bits: numpy adds a row of fewer than 8 values one after the
    other from the first, which the column additions here repeat without the reduction's per-row cost."""
    m = a.shape[1]
    if m >= 8 or m == 0:
        return a.sum(axis=1)
    out = a[:, 0].copy()
    for j in range(1, m):
        out += a[:, j]
    return out


def smoothing_grid() -> np.ndarray:
    """(G, 3): the (alpha, beta, phi) sets tried per window, SES first (beta 0, phi 1)."""
    ses = [(a, 0.0, 1.0) for a in SES_ALPHAS]
    return np.asarray(ses + list(HOLT_GRID), dtype=np.float64)


def smooth(y: np.ndarray, params: np.ndarray, level0: np.ndarray, trend0: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the damped-trend recursion over ``y`` (n, T) for every parameter set (G, 3).

    ``level0``, ``trend0`` (n,): the states before the first point (a model with ``beta == 0`` starts without
    trend). Returns the final level and trend (n, G), the one-step squared error sums (n, G) and
    the number of observed points (n,).

    Rows whose missing values all lead (a context longer than its series) take :func:`_smooth_gapless`;
    rows with a gap take :func:`_smooth_masked`.
    """
    n, T = y.shape
    observed = ~np.isnan(y)
    count = observed.sum(axis=1)
    first = np.argmax(observed, axis=1)
    gapless = (count > 0) & (count == T - first)
    if gapless.all():
        return (*_smooth_gapless(y, params, level0, trend0, first), count)
    level, trend, sse = (np.zeros((n, len(params))) for _ in range(3))
    for rows, run in ((np.flatnonzero(gapless), _smooth_gapless), (np.flatnonzero(~gapless), _smooth_masked)):
        if len(rows):
            level[rows], trend[rows], sse[rows] = run(y[rows], params, level0[rows], trend0[rows], first[rows])
    return level, trend, sse, count


def _smooth_masked(y: np.ndarray, params: np.ndarray, level0: np.ndarray, trend0: np.ndarray,
                   first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`smooth`'s recursion for any pattern of missing values: level, trend, sse (n, G). With
    :data:`START_AT_FIRST_OBSERVED` a row's state stays at its start until ``first`` (n,; default: each row's first
    observed step)."""
    alpha, beta, phi = (params[:, k][None, :] for k in range(3))
    level = np.repeat(level0[:, None], len(params), axis=1)
    trend = np.where(beta > 0, trend0[:, None], 0.0)
    sse = np.zeros_like(level)
    observed = ~np.isnan(y)
    first = np.argmax(observed, axis=1) if first is None else first
    waiting = first if START_AT_FIRST_OBSERVED else np.zeros_like(first)
    for t in range(y.shape[1]):  # a loop over time steps, vectorised over windows x parameter sets
        fitted = level + phi * trend
        e = np.where(observed[:, t, None], y[:, t, None] - fitted, 0.0)
        sse += e * e
        moving = (t >= waiting)[:, None]
        level = np.where(moving, fitted + alpha * e, level)
        trend = np.where(moving, phi * trend + (alpha * beta) * e, trend)
    return level, trend, sse


def _smooth_gapless(y: np.ndarray, params: np.ndarray, level0: np.ndarray, trend0: np.ndarray, first: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`smooth` for rows observed from ``first`` (n,) to the end: level, trend, sse (n, G).

    The same recursion with less work per step: before its first point a row's state does not move
    (:data:`START_AT_FIRST_OBSERVED`; otherwise it moves along its damped trend, ``first`` steps in closed form), so the rows, sorted by ``first``, that have
    started form a prefix, the only rows a step touches; the state kept is the one-step forecast
    ``f = l + phi b`` (``f <- f + alpha e + phi b`` after ``b <- phi b + alpha beta e``), and the sets
    without trend (simple exponential smoothing) carry no trend at all.
    """
    n, T = y.shape
    order = np.argsort(first, kind="stable")
    values = np.ascontiguousarray(y[order].T)                               # (T, n): a step's rows are contiguous
    started = np.searchsorted(first[order], np.arange(T), side="right")     # rows started by each step
    trended = params[:, 1] > 0
    alpha, beta, phi = params[~trended, 0], params[trended, 1], params[trended, 2]
    holt_alpha = params[trended, 0]
    steps = np.zeros((n, 1)) if START_AT_FIRST_OBSERVED else first[order][:, None].astype(np.float64)
    # SES: the level is the forecast; damped trend: the state after `first` steps without error
    ses = np.repeat(level0[order][:, None], len(alpha), axis=1)
    ses_sse = np.zeros_like(ses)
    powers = phi[None, :] ** steps
    trend = trend0[order][:, None] * powers
    forecast = level0[order][:, None] + trend0[order][:, None] * (phi * (1.0 - powers) / (1.0 - phi)) + phi * trend
    holt_sse = np.zeros_like(forecast)
    gain_trend = holt_alpha * beta
    # the coefficients as whole (n, G) arrays: every operation but the error's then runs over contiguous memory (numpy's
    # fast path), where a broadcast (G,) row made each window's 6 or 12 values a loop of their own (0.7-0.8x the CPU)
    alpha, phi, holt_alpha, gain_trend = (np.repeat(c[None, :], n, axis=0) for c in (alpha, phi, holt_alpha, gain_trend))
    # every step's temporaries in buffers allocated once: fresh (k, G) arrays are mapped and faulted in at every step
    # where glibc returns freed memory at once (MALLOC_TRIM_THRESHOLD_, as Dask's workers run: 60% of a fold's faults)
    ses_error, ses_term = np.empty_like(ses), np.empty_like(ses)
    error, square = np.empty_like(forecast), np.empty_like(forecast)
    for t in range(T):
        k = started[t]
        if k == 0:
            continue
        e, term = np.subtract(values[t, :k, None], ses[:k], out=ses_error[:k]), ses_term[:k]
        ses_sse[:k] += np.multiply(e, e, out=term)
        ses[:k] += np.multiply(alpha[:k], e, out=term)
        e, term = np.subtract(values[t, :k, None], forecast[:k], out=error[:k]), square[:k]
        holt_sse[:k] += np.multiply(e, e, out=term)
        trend[:k] *= phi[:k]
        trend[:k] += np.multiply(gain_trend[:k], e, out=term)
        forecast[:k] += np.multiply(holt_alpha[:k], e, out=term)
        forecast[:k] += np.multiply(phi[:k], trend[:k], out=term)
    level_out, trend_out, sse_out = (np.empty((n, len(params))) for _ in range(3))
    level_out[order[:, None], np.flatnonzero(~trended)[None, :]] = ses
    trend_out[order[:, None], np.flatnonzero(~trended)[None, :]] = 0.0
    sse_out[order[:, None], np.flatnonzero(~trended)[None, :]] = ses_sse
    holt = np.flatnonzero(trended)[None, :]
    level_out[order[:, None], holt] = forecast - phi * trend
    trend_out[order[:, None], holt] = trend
    sse_out[order[:, None], holt] = holt_sse
    return level_out, trend_out, sse_out


def damped_sum(phi: np.ndarray, H: int) -> np.ndarray:
    """(G, H): phi + phi^2 + ... + phi^h for h = 1..H."""
    return np.cumsum(phi[:, None] ** np.arange(1, H + 1)[None, :], axis=1)


def is_seasonal(context: np.ndarray, season: int) -> np.ndarray:
    """(n,) whether each context's autocorrelation at lag ``season`` passes the 90% test
    ``|r_m| > z sqrt((1 + 2 sum_{k<m} r_k^2) / n)`` (missing values left out of the sums)."""
    n, T = context.shape
    if season <= 1 or T < 3 * season:
        return np.zeros(n, dtype=bool)
    observed = ~np.isnan(context)
    count = observed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(observed, context, 0.0).sum(axis=1) / np.maximum(count, 1)
        x = np.where(observed, context - mean[:, None], 0.0)
        denom = (x * x).sum(axis=1)
        # einsum: no (n, T) product array per lag (6x less time than multiply-then-sum on 20,000 windows)
        r = np.stack([np.einsum("ij,ij->i", x[:, k:], x[:, :T - k]) / denom for k in range(1, season + 1)], axis=1)
        limit = SEASONALITY_Z * np.sqrt((1.0 + 2.0 * (r[:, :-1] ** 2).sum(axis=1)) / count)
    return (np.abs(r[:, -1]) > limit) & (denom > 0) & (count >= 3 * season)


def moving_average(context: np.ndarray, season: int) -> np.ndarray:
    """(n, T) centred moving average over one cycle (``2 x season`` for an even season, as classical
    decomposition); NaN where the window is not whole or not half observed (missing values left out)."""
    n, T = context.shape
    half = season // 2
    weights = np.ones(2 * half + 1)
    if season % 2 == 0:
        weights[[0, -1]] = 0.5
    observed = ~np.isnan(context)
    values = np.where(observed, context, 0.0)
    out = np.full((n, T), np.nan)
    if T < len(weights):
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    total = sliding_window_view(values, len(weights), axis=1) @ weights
    w = len(weights)
    if w <= MASS_PRODUCT_POINTS:
        mass = sliding_window_view(observed.astype(np.float64), w, axis=1) @ weights
    else:
        # the observed weight of each window from running counts: whole and half numbers, exact in any order, so the
        # same as the product with the weights, which costs a multiply-add per point and weight (elecdemand's 49
        # weights: 40% of its local fit)
        counted = np.zeros((n, T + 1))
        np.cumsum(observed, axis=1, dtype=np.float64, out=counted[:, 1:])
        mass = counted[:, w:] - counted[:, :T - w + 1]
        if season % 2 == 0:
            mass -= 0.5 * observed[:, :T - w + 1]
            mass -= 0.5 * observed[:, w - 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, half:T - half] = np.where(mass >= 0.5 * weights.sum(), total / mass, np.nan)
    return out


def extended_moving_average(context: np.ndarray, season: int, average: np.ndarray | None = None) -> np.ndarray:
    """(n, T) :func:`moving_average` (``average`` if known) with its missing ends filled by its line over the
    last (first) cycle of defined values, where the context is observed."""
    average = moving_average(context, season) if average is None else average
    n, T = average.shape
    defined = ~np.isnan(average)
    t = np.arange(T)[None, :]
    rows = np.arange(n)
    out = average.copy()
    last = T - 1 - np.argmax(defined[:, ::-1], axis=1)
    first = np.argmax(defined, axis=1)
    for end, other, beyond in ((last, np.maximum(last - season, 0), t > last[:, None]),
                               (first, np.minimum(first + season, T - 1), t < first[:, None])):
        with np.errstate(invalid="ignore"):
            slope = (average[rows, end] - average[rows, other]) / np.where(end != other, end - other, 1)
        line = average[rows, end][:, None] + np.where(np.isfinite(slope), slope, 0.0)[:, None] * (t - end[:, None])
        out = np.where(beyond, line, out)
    return np.where(np.isnan(context), np.nan, out)


def detrended_index(context: np.ndarray, detrended: np.ndarray, season: int, size: np.ndarray | None = None,
                    choose: np.ndarray | None = None) -> np.ndarray:
    """(n, season): per position of a cycle that ends at the origin, the mean of ``detrended`` (the context
    minus its :func:`moving_average`) relative to its cycle's mean absolute value, centred on 0 (classical
    decomposition: the trend inside a cycle stays out of the index), each earlier cycle discounted by the row's
    discount of :data:`SEASONAL_DISCOUNTS` (:func:`discount_choice`). ``size``: :func:`_cycle_sizes` of ``context``
    if known; ``choose`` (n,): the rows whose discount is chosen (default all; the others take the grid's first)."""
    size = _cycle_sizes(context, season) if size is None else size
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(size > 0, detrended / size, np.nan)
    cycles = _as_cycles(relative, season)                                   # (n, cycles, season)
    ok = ~np.isnan(cycles)
    discounts = np.asarray(SEASONAL_DISCOUNTS, dtype=np.float64)
    if discounts.any():  # some cycles weigh less than 1 (with the default grid (0,) every cycle weighs 1)
        values = np.where(ok, cycles, 0.0)
        discount = np.full(len(cycles), discounts[0])
        rows = slice(None) if choose is None else np.flatnonzero(choose)
        discount[rows] = discount_choice(cycles[rows], discounts)
        weight = (1.0 - discount[:, None]) ** np.arange(cycles.shape[1])[None, ::-1]   # (n, cycles): the last weighs 1
        counts, totals = (ok * weight[:, :, None]).sum(axis=1), (values * weight[:, :, None]).sum(axis=1)
    else:  # the missing values zeroed in place (``cycles`` is this call's own array): one (n, T) pass fewer
        values = cycles
        np.copyto(values, 0.0, where=~ok)
        counts, totals = _cycle_sums(ok), _cycle_sums(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(counts > 0, totals / counts, np.nan)
    index = np.where(np.isfinite(index), index, 0.0)
    return index - index.mean(axis=1, keepdims=True)


def discount_choice(cycles: np.ndarray, discounts: np.ndarray) -> np.ndarray:
    """(n,) per row of ``cycles`` (n, C, season; NaN where not observed) the discount of ``discounts`` whose
    discounted mean of the cycles before each cycle predicts that cycle with the least squared error (summed over
    every observed phase of cycles that have a prediction): a one-cycle-ahead backtest of the seasonal index.
    Rows with fewer than :data:`DISCOUNT_MIN_CYCLES` predicted cycles take ``discounts[0]``."""
    n, C, m = cycles.shape
    if len(discounts) == 1 or C < 2:
        return np.full(n, discounts[0])
    ok = ~np.isnan(cycles)
    values = np.where(ok, cycles, 0.0)
    keep = 1.0 - discounts[None, None, :]                                   # (1, 1, D)
    total = np.zeros((n, m, len(discounts)))
    mass = np.zeros_like(total)
    sse = np.zeros((n, len(discounts)))
    predicted = np.zeros(n)
    for c in range(C):
        seen = ok[:, c, :, None] & (mass > 0)                               # (n, m, 1|D)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.where(seen, values[:, c, :, None] - total / np.where(mass > 0, mass, 1.0), 0.0)
        sse += (error * error).sum(axis=1)
        predicted += seen[:, :, 0].any(axis=1)
        total = keep * total + values[:, c, :, None]
        mass = keep * mass + ok[:, c, :, None]
    best = discounts[np.argmin(sse, axis=1)]
    return np.where(predicted >= DISCOUNT_MIN_CYCLES, best, discounts[0])


def _cycle_sums(a: np.ndarray) -> np.ndarray:
    """(n, season): ``a.sum(axis=1)`` of ``a`` (n, cycles, season), the same bits (numpy sums a middle axis one cycle
    after the other from the first), in ``cycles`` additions of (n, season) rather than numpy's short inner loops (a
    boolean ``a``: its counts, as floats)."""
    if a.shape[1] == 0:
        return np.zeros((len(a), a.shape[2]))
    out = a[:, 0].astype(np.float64)
    for c in range(1, a.shape[1]):
        out += a[:, c]
    return out


def _as_cycles(a: np.ndarray, season: int) -> np.ndarray:
    """(n, T) -> (n, ceil(T / season), season): whole cycles ending at the last point, NaN-padded at the start."""
    n, T = a.shape
    pad = -T % season
    if pad:
        a = np.concatenate([np.full((n, pad), np.nan), a], axis=1)
    return a.reshape(n, -1, season)


def _cycle_sizes(context: np.ndarray, season: int) -> np.ndarray:
    """(n, T): the mean absolute observed value of the cycle (ending at the origin, in whole cycles) of each point."""
    n, T = context.shape
    cycles = np.abs(_as_cycles(context, season)).reshape(-1, season)
    ok = ~np.isnan(cycles)
    counts = _count_rows(ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.where(counts > 0, _row_sums(np.where(ok, cycles, 0.0)) / counts, 0.0).reshape(n, -1, 1)
    return np.broadcast_to(size, (n, size.shape[1], season)).reshape(n, -1)[:, -T:]


def seasonal_adjustment(context: np.ndarray, index: np.ndarray, season: int, size: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Subtract ``index`` (n, season; phase ``j`` is the last cycle's ``j``-th point) times each cycle's mean
    absolute value (``size``: :func:`_cycle_sizes` of ``context`` if known): (adjusted context (n, T), the phase
    of every context point (T,))."""
    T = context.shape[1]
    phase = (np.arange(T) - T) % season
    return context - index[:, phase] * (_cycle_sizes(context, season) if size is None else size), phase


def local_forecast(context: np.ndarray, H: int, season: int = 1, index: np.ndarray | None = None) -> np.ndarray:
    """(n, H) forecasts of each context row (n, T) from exponential smoothing of its last :data:`LOCAL_POINTS`
    points with the parameter set of least AIC per row (see the module docstring).

    ``index`` (n, season): the rows' relative seasonal index (phase ``j`` the last cycle's ``j``-th point;
    default: computed from ``context``); a row is seasonally adjusted only where :func:`is_seasonal` says so.
    Rows without an observed value give NaN.

    Examples
    --------
    >>> y = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    >>> bool(local_forecast(y, 2)[0, 1] > 8.5)  # a damped trend continues the line
    True
    """
    fit = local_fit(context, season, index)
    steps = damped_sum(smoothing_grid()[:, 2], H)                          # (G, H)
    out = fit["level"][:, None] + fit["trend"][:, None] * steps[fit["best"]]
    seasonal = fit["seasonal"]
    if seasonal.any():
        phase = np.arange(H) % season
        out = np.where(seasonal[:, None], out + fit["index"][:, phase] * np.abs(out), out)
    out[fit["count"] == 0] = np.nan
    return out


def line_start(y: np.ndarray, first: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(level0, trend0) (n,): per row of ``y`` (n, T), the least-squares line through its observed values among the
    ``points`` steps from ``first`` (n,), its first observed step: the line's value one step before ``first`` (the
    state before the first point) and its slope (0 with fewer than two observed values; NaN for a row without any).

    >>> level0, trend0 = line_start(np.array([[np.nan, 1.0, 2.5, 3.0, 4.5]]), np.array([1]), 10)
    >>> float(np.round(trend0[0], 6)), float(np.round(level0[0], 6))
    (1.1, 0.0)
    """
    n, T = y.shape
    steps = np.arange(T)[None, :] - first[:, None]                          # steps from the first observed point
    inside = (steps >= 0) & (steps < points) & ~np.isnan(y)
    x = np.where(inside, steps, 0.0)
    v = np.where(inside, y, 0.0)
    count = inside.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, mv = x.sum(axis=1) / count, v.sum(axis=1) / count
        sxx = (np.where(inside, x - mx[:, None], 0.0) ** 2).sum(axis=1)
        sxv = (np.where(inside, (x - mx[:, None]) * (v - mv[:, None]), 0.0)).sum(axis=1)
        slope = np.where(sxx > 0, sxv / np.where(sxx > 0, sxx, 1.0), 0.0)
    return mv + slope * (-1.0 - mx), slope


def local_fit(context: np.ndarray, season: int = 1, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The smoothing behind :func:`local_forecast`, per context row (n, T): the chosen parameter set's
    final ``level`` and ``trend``, its index ``best`` in :func:`smoothing_grid`, its one-step squared error
    sum ``sse`` over ``count`` observed points, whether the row was ``seasonal`` and its seasonal ``index``
    (n, season; None when no row can be seasonal)."""
    context = np.asarray(context, dtype=np.float64)
    n, T = context.shape
    y = context
    seasonal = np.zeros(n, dtype=bool)
    idx = None
    if season > 1 and T >= 3 * season:
        average = moving_average(context, season)
        detrended = context - average
        extended = (context - extended_moving_average(context, season, average)
                    if TEST_EXTENDED_ENDS or INDEX_EXTENDED_ENDS else None)
        seasonal = is_seasonal(extended if TEST_EXTENDED_ENDS else detrended, season)
        detrended = extended if INDEX_EXTENDED_ENDS else detrended
        size = _cycle_sizes(context, season)
        idx = detrended_index(context, detrended, season, size, choose=seasonal) if index is None else index
        # only the points the smoother reads are adjusted (their phases and cycle sizes are the whole context's)
        tail = context[:, -LOCAL_POINTS:]
        adjusted, _ = seasonal_adjustment(tail, idx, season, size[:, -LOCAL_POINTS:])
        y = np.where(seasonal[:, None], adjusted, tail)
    y = y[:, -LOCAL_POINTS:]
    observed = ~np.isnan(y)
    first = np.argmax(observed, axis=1)
    rows = np.arange(n)
    if TREND_START == "line" or (TREND_START == "line_without_season" and season <= 1):
        level0, trend0 = line_start(y, first, max(LINE_START_POINTS, 2 * season))
    else:
        level0 = y[rows, first]
        # initial trend: the mean step over the first observed points (at most a cycle, at least 2 steps)
        span = max(2, min(season, y.shape[1] // 4))
        later = np.minimum(first + span, y.shape[1] - 1)
        with np.errstate(invalid="ignore"):
            trend0 = np.where(later > first, (y[rows, later] - level0) / np.maximum(later - first, 1), 0.0)
    trend0 = np.where(np.isfinite(trend0), trend0, 0.0)
    level0 = np.where(np.isfinite(level0), level0, 0.0)
    params = smoothing_grid()
    level, trend, sse, count = smooth(y, params, level0, trend0)
    k = np.where(params[:, 1] > 0, 3.0, 1.0)[None, :]
    nobs = np.maximum(count, 1)[:, None]
    with np.errstate(divide="ignore"):
        aic = nobs * np.log(np.maximum(sse / nobs, 1e-12)) + 2.0 * k
    best = np.argmin(aic, axis=1)
    return {"level": level[rows, best], "trend": trend[rows, best], "best": best, "sse": sse[rows, best],
            "count": count, "seasonal": seasonal, "index": idx}
