"""The local exponential-smoothing forecast of each window and its combination with the global linear model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import daskstate
from daskstate.algorithms.forecast import local
from daskstate.algorithms.forecast.estimator import holdout_split
from daskstate.algorithms.forecast.linear import _sse, _toward_local, convex_weights
from daskstate.algorithms.forecast.local import (
    _smooth_masked,
    damped_sum,
    discount_choice,
    is_seasonal,
    local_forecast,
    smooth,
    smoothing_grid,
)
from daskstate.errors import StateError


def _walk(n: int = 60, seed: int = 0) -> np.ndarray:
    return 50.0 + np.cumsum(np.random.default_rng(seed).normal(0.2, 1.0, n))


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_simple_smoothing_matches_statsmodels(alpha):
    from statsmodels.tsa.holtwinters import SimpleExpSmoothing

    ys = [_walk(seed=s) for s in range(3)]
    ref = [SimpleExpSmoothing(y, initialization_method="known", initial_level=y[0])
           .fit(smoothing_level=alpha, optimized=False) for y in ys]
    level, trend, sse, count = smooth(np.stack(ys), np.array([[alpha, 0.0, 1.0]]), np.array([y[0] for y in ys]),
                                      np.zeros(3))
    for i, r in enumerate(ref):
        np.testing.assert_allclose(np.repeat(level[i, 0], 4), r.forecast(4), rtol=1e-12)
        np.testing.assert_allclose(sse[i, 0], r.sse, rtol=1e-10)
    assert (trend == 0).all() and (count == 60).all()


@pytest.mark.parametrize(("alpha", "beta", "phi"), [(0.3, 0.1, 0.9), (0.8, 0.3, 0.98)])
def test_damped_trend_matches_statsmodels_holt(alpha, beta, phi):
    from statsmodels.tsa.holtwinters import Holt

    ys = [_walk(seed=s) for s in range(3)]
    trend0 = np.array([0.5, -0.2, 0.0])
    params = np.array([[alpha, beta, phi]])
    level, trend, sse, _ = smooth(np.stack(ys), params, np.array([y[0] for y in ys]), trend0)
    forecast = level + trend * damped_sum(params[:, 2], 6)
    for i, y in enumerate(ys):
        r = Holt(y, damped_trend=True, initialization_method="known", initial_level=y[0],
                 initial_trend=trend0[i]).fit(smoothing_level=alpha, smoothing_trend=beta, damping_trend=phi,
                                              optimized=False)
        np.testing.assert_allclose(forecast[i], r.forecast(6), rtol=1e-12)
        np.testing.assert_allclose(sse[i, 0], r.sse, rtol=1e-10)


def test_gapless_rows_match_the_step_by_step_recursion():
    """Rows whose missing values all lead take the prefix recursion: the same state and errors as the
    masked step-by-step recursion over every parameter set; rows with gaps and empty rows mixed in."""
    rng = np.random.default_rng(3)
    y = np.stack([_walk(48, seed=s) for s in range(40)])
    first = rng.integers(0, 40, size=40)
    y[np.arange(48)[None, :] < first[:, None]] = np.nan
    y[5, 30] = y[6, 44:46] = np.nan                                       # gaps
    y[7] = np.nan                                                         # nothing observed
    params = smoothing_grid()
    level0 = np.nan_to_num(y[np.arange(40), first])
    trend0 = rng.normal(0.0, 0.5, 40)
    level, trend, sse, count = smooth(y, params, level0, trend0)
    ref = _smooth_masked(y, params, level0, trend0)
    forecast = level[:, :, None] + trend[:, :, None] * damped_sum(params[:, 2], 8)[None]
    forecast_ref = ref[0][:, :, None] + ref[1][:, :, None] * damped_sum(params[:, 2], 8)[None]
    np.testing.assert_allclose(forecast, forecast_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sse, ref[2], rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(count, (~np.isnan(y)).sum(axis=1))


def test_missing_values_carry_the_forecast_forward():
    """A missing point adds no error and moves the state as if the point had been forecast exactly."""
    y = _walk(20)
    gappy = y.copy()
    gappy[7] = np.nan
    filled = y.copy()
    params = np.array([[0.5, 0.0, 1.0]])
    level_gap, _, _, count = smooth(gappy[None], params, y[:1], np.zeros(1))
    # the SES state after point 6 is the forecast of point 7: put it there and no error arises
    lv, _, _, _ = smooth(y[None, :7], params, y[:1], np.zeros(1))
    filled[7] = lv[0, 0]
    level_filled, _, _, _ = smooth(filled[None], params, y[:1], np.zeros(1))
    np.testing.assert_allclose(level_gap, level_filled, rtol=1e-12)
    assert count[0] == 19


def test_local_forecast_follows_each_series_and_its_season():
    """A line is continued (damped), a flat series stays flat, a seasonal one keeps its pattern: every row
    from its own context only."""
    t = np.arange(48, dtype=np.float64)
    pattern = np.array([0.3, -0.1, -0.3, 0.1])
    rows = np.stack([10.0 + 0.5 * t, np.full(48, 7.0), 20.0 * (1.0 + pattern[t.astype(int) % 4])])
    out = local_forecast(rows, 8, season=4)
    assert (np.diff(out[0]) > 0).all() and out[0, 0] > rows[0, -1]
    np.testing.assert_allclose(out[1], 7.0)
    np.testing.assert_allclose(out[2], 20.0 * (1.0 + pattern[np.arange(8) % 4]), rtol=1e-6)
    assert is_seasonal(rows[2:], 4).all() and not is_seasonal(np.random.default_rng(0).normal(size=(1, 48)), 4)[0]
    # each row alone gives the same forecast
    np.testing.assert_allclose(local_forecast(rows[2:], 8, season=4), out[2:])


def test_convex_weight_is_the_least_squares_weight():
    """The closed form from the normal equations equals a direct fit of ``y - g = a (l - g)`` on the pairs."""
    rng = np.random.default_rng(1)
    n, H, p, j = 400, 3, 5, 2
    X = rng.normal(size=(n, H, p))
    y = 0.6 * X[:, :, j] + 0.4 * X[:, :, 0] + 0.1 * rng.normal(size=(n, H))
    w = rng.uniform(0.5, 2.0, n)
    sums = (np.einsum("n,nhp,nhq->hpq", w, X, X), np.einsum("n,nhp,nh->hp", w, X, y),
            np.einsum("n,nh->h", w, y * y), np.full(H, float(n)))
    coef = np.zeros((H, p))
    coef[:, 0] = 1.0  # the "global" forecast: column 0
    a = convex_weights(coef, j, sums)
    g, loc = X[:, :, 0], X[:, :, j]
    direct = np.einsum("n,nh,nh->h", w, y - g, loc - g) / np.einsum("n,nh->h", w, (loc - g) ** 2)
    np.testing.assert_allclose(a, direct, rtol=1e-10)
    # it is the least squared error among convex weights, and the combined coefficients give that error
    combined = _toward_local(coef, j, a)
    for delta in (-0.05, 0.05):
        assert (_sse(combined, sums) <= _sse(_toward_local(coef, j, np.clip(a + delta, 0, 1)), sums) + 1e-9).all()
    np.testing.assert_allclose(_sse(combined, sums), np.einsum("n,nh->h", w, (y - (1 - a) * g - a * loc) ** 2),
                               rtol=1e-9)


def _panel(n_series: int = 6, length: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for k in range(n_series):
        y = (10 + k) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) + np.cumsum(rng.normal(0, 0.5, length))
        frames.append(pd.DataFrame({"item_id": f"s{k}", "timestamp": pd.date_range("2000-01-01", periods=length,
                                                                                   freq="MS"), "target": y}))
    return pd.concat(frames, ignore_index=True)


def test_local_column_sums_merge_exactly_and_partial_fit_is_exact():
    """The state's sums with the local column: two halves merged equal one fit, and new points folded by
    partial_fit equal a fit on everything (each window's local forecast reads only its own context; the holdout
    sums differ by design: a partial fit's holdout is its new points' last tenth)."""
    df = _panel()
    # a fixed context: the long context follows the typical series length, shorter in the partial fit's first part
    kw = dict(freq="MS", prediction_length=6, context_length=36)
    whole = daskstate.Forecaster(**kw).fit(df)
    assert whole.state_.local_column is not None and whole.local_season_ == 12
    items = df["item_id"].unique()
    a = daskstate.Forecaster(**kw).fit(df[df["item_id"].isin(items[:3])]).state_
    b = daskstate.Forecaster(**kw).fit(df[df["item_id"].isin(items[3:])]).state_
    merged = a.merge(b)
    for name in whole.state_.array_names:
        np.testing.assert_allclose(getattr(merged, name), getattr(whole.state_, name), rtol=1e-10, atol=1e-9,
                                   err_msg=name)
    old, new = holdout_split(df, 10)
    inc = daskstate.Forecaster(**kw).fit(old).partial_fit(new, history=old)
    for name in ("gram", "xty", "yty", "pairs"):
        np.testing.assert_allclose(getattr(inc.state_, name), getattr(whole.state_, name), rtol=1e-9, atol=1e-8,
                                   err_msg=name)


def test_combinations_from_one_state():
    """"none" is the global model without the local column, "convex" mixes in the local forecast with the
    weight per step from the holdout sums, "local_weight" fixes it; all without data."""
    df = _panel()
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(df)
    j = fc.state_.local_column
    none = fc.finalize(combine="none")
    assert (none.coef_[:, j] == 0).all() and (none.local_weight_ == 0).all()
    convex = fc.finalize(combine="convex")
    assert ((convex.local_weight_ >= 0) & (convex.local_weight_ <= 1)).all()
    np.testing.assert_allclose(convex.coef_[:, j], convex.local_weight_)
    half = fc.finalize(combine="convex", local_weight=0.5)
    np.testing.assert_allclose(half.coef_[:, j], 0.5)
    np.testing.assert_allclose(np.delete(half.coef_, j, axis=1), 0.5 * np.delete(none.coef_, j, axis=1))
    feature = fc.finalize(combine="feature")
    assert (feature.coef_[:, j] != 0).all()
    with pytest.raises(StateError, match="combine"):
        fc.finalize(combine="average")
    with pytest.raises(StateError, match="local_weight"):
        fc.finalize(local_weight=1.5)


def test_local_forecast_of_sparse_and_short_contexts():
    """No observed value gives NaN, one gives that value, a constant seasonal-length context stays constant."""
    rows = np.full((3, 24), np.nan)
    rows[1, 5] = 3.0
    rows[2] = 2.0
    rows[2, ::5] = np.nan
    out = local_forecast(rows, 4, season=4)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1:], [[3.0] * 4, [2.0] * 4])


def test_seasonal_discount_is_chosen_by_predicting_each_cycle_from_the_ones_before():
    """One phase, three cycles: each discount's backtest error by hand; too few predicted cycles keep the first."""
    cycles = np.array([[[1.0], [3.0], [2.0]], [[1.0], [np.nan], [2.0]]])
    # row 0, discount 0: cycle 1 from 1 (squared error 4), cycle 2 from the mean 2 (0); discount 0.5: cycle 1 the
    # same, cycle 2 from (0.5 * 1 + 3) / 1.5 = 7 / 3. Row 1: only cycle 2 has a prediction
    chosen = discount_choice(cycles, np.array([0.5, 0.0]))
    assert chosen[0] == 0.0                     # 4 + 0 < 4 + (2 - 7 / 3)^2
    assert chosen[1] == 0.5                     # one predicted cycle, fewer than DISCOUNT_MIN_CYCLES: the first
    assert (discount_choice(cycles, np.array([0.3])) == 0.3).all()


def test_seasonal_discount_follows_a_season_that_changed_and_keeps_a_fixed_one(monkeypatch):
    """A season whose shape turned over two cycles ago: the chosen discount weighs the recent cycles and the
    forecast keeps the new shape far better than every cycle alike; a fixed season keeps the equal weights."""
    rng = np.random.default_rng(0)
    t = np.arange(96)
    old, new = np.array([0.3, 0.1, -0.1, -0.3]), np.array([-0.3, 0.3, 0.1, -0.1])
    pattern = np.where(t[None, :] >= 72, new[t % 4], old[t % 4])
    changed = 50.0 * (1.0 + pattern) * (1.0 + 0.01 * rng.standard_normal((20, 96)))
    fixed = 50.0 * (1.0 + old[t % 4]) * (1.0 + 0.01 * rng.standard_normal((20, 96)))
    truth = 50.0 * (1.0 + new[np.arange(8) % 4])
    classical = local_forecast(changed, 8, season=4)
    monkeypatch.setattr(local, "SEASONAL_DISCOUNTS", (0.0, 0.1, 0.2, 0.35, 0.5))
    chosen = local_forecast(changed, 8, season=4)
    err = lambda f: np.abs(f - truth).mean()  # noqa: E731
    assert err(chosen) < 0.5 * err(classical)
    fit = local.local_fit(fixed, season=4)
    monkeypatch.setattr(local, "SEASONAL_DISCOUNTS", (0.0,))
    np.testing.assert_allclose(fit["index"], local.local_fit(fixed, season=4)["index"], atol=0.01)


def test_a_context_of_three_cycles_can_be_seasonal(monkeypatch):
    """The seasonality test reads every cycle (the moving average extended over the context's ends): a clearly
    seasonal context of exactly three cycles is adjusted and its season forecast; with the centred moving average
    alone the test has two cycles and never passes. Pure noise stays mostly non-seasonal."""
    rng = np.random.default_rng(1)
    t = np.arange(48)
    # a season of unlike months (a sine's lower lags correlate too much for the test to pass on three cycles)
    shape = 1.0 + np.array([0.4, -0.1, 0.2, -0.3, 0.0, 0.3, -0.2, 0.1, -0.4, 0.2, -0.1, -0.1])[t % 12]
    mean = 100.0 * (1.0 + 0.002 * t) * shape
    rows = mean[:36] * (1.0 + 0.03 * rng.standard_normal((20, 36)))
    noise = 100.0 + rng.standard_normal((200, 36))
    truth = mean[36:]
    monkeypatch.setattr(local, "TEST_EXTENDED_ENDS", True)
    fit = local.local_fit(rows, season=12)
    assert fit["seasonal"].mean() >= 0.9 and local.local_fit(noise, season=12)["seasonal"].mean() < 0.2
    err = np.abs(local_forecast(rows, 12, season=12) - truth).mean()
    monkeypatch.setattr(local, "TEST_EXTENDED_ENDS", False)
    assert not local.local_fit(rows, season=12)["seasonal"].any()
    assert err < 0.3 * np.abs(local_forecast(rows, 12, season=12) - truth).mean()


def test_extended_moving_average_continues_a_line_over_the_ends():
    """Inside, the centred moving average; over the ends, its line through the last (first) cycle of it."""
    t = np.arange(40, dtype=np.float64)
    rows = np.stack([3.0 + 0.5 * t + np.tile([1.0, -1.0, 2.0, -2.0], 10), np.r_[np.full(6, np.nan), t[6:]]])
    out = local.extended_moving_average(rows, 4)
    np.testing.assert_allclose(out[0], 3.0 + 0.5 * t, atol=1e-12)
    assert np.isnan(out[1, :6]).all()
    np.testing.assert_allclose(out[1, 8:], t[8:], atol=1e-12)  # 6, 7: the average of the observed part


@pytest.mark.parametrize("lead", [0, 20, 60])
def test_a_trend_is_forecast_the_same_whatever_missing_lead_the_context_has(lead, monkeypatch):
    """fctrend: a series shorter than its context (missing values leading) is smoothed from its first observed
    point. Before, the initial state was moved along the initial trend over the lead, the trended sets' errors grew
    with it and AIC chose simple smoothing: a straight line of 40 points in a 100-point context was forecast flat."""
    y = 100.0 * (1.0 + 0.03 * np.arange(40)) + np.random.default_rng(0).normal(0.0, 0.5, 40)
    context = np.concatenate([np.full(lead, np.nan), y])[None, :]
    gapped = context.copy()
    gapped[0, -5] = np.nan                                                 # the masked recursion's path
    line = 100.0 * (1.0 + 0.03 * np.arange(40, 46))
    for ctx in (context, gapped):
        forecast = local_forecast(ctx, 6)[0]
        np.testing.assert_allclose(forecast, local_forecast(ctx[:, lead:], 6)[0], rtol=1e-12)
        assert forecast[-1] - y[-1] > 0.6 * (line[-1] - y[-1])
    if lead:
        monkeypatch.setattr(local, "START_AT_FIRST_OBSERVED", False)
        assert local_forecast(context, 6)[0, -1] - y[-1] < 0.2 * (line[-1] - y[-1])


def test_line_start_is_the_least_squares_line_through_the_first_points():
    """``TREND_START="line"`` (off): the state before the first observed point on the line through the first ones."""
    y = np.array([[np.nan, np.nan, 3.0, 5.0, np.nan, 9.0, 11.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    level0, trend0 = local.line_start(y, np.array([2, 0]), 10)
    np.testing.assert_allclose(trend0, [2.0, 0.0])
    np.testing.assert_allclose(level0, [1.0, 1.0])


def _weight_sums(n: int, true_weight: float, noise: float, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    H, p, j = 2, 3, 1
    X = rng.normal(size=(n, H, p))
    y = true_weight * X[:, :, j] + (1 - true_weight) * X[:, :, 0] + noise * rng.normal(size=(n, H))
    w = rng.uniform(0.5, 2.0, n)
    sums = (np.einsum("n,nhp,nhq->hpq", w, X, X), np.einsum("n,nhp,nh->hp", w, X, y),
            np.einsum("n,nh->h", w, y * y), np.full(H, float(n)))
    coef = np.zeros((H, p))
    coef[:, 0] = 1.0
    return coef, j, sums, X, y, w


def test_shrunk_convex_weight_follows_its_standard_error():
    """fctrend: ``shrink`` moves the holdout's weight toward 1/2 by ``t^2 / (1 + t^2)``, with ``t`` the weight's
    distance from 1/2 over its least-squares standard error; a weight from many pairs is kept, one from a few noisy
    pairs comes out near 1/2."""
    coef, j, sums, X, y, w = _weight_sums(12, 0.9, 2.0, seed=4)
    g, loc = X[:, :, 0], X[:, :, j]
    a = np.einsum("n,nh,nh->h", w, y - g, loc - g) / np.einsum("n,nh->h", w, (loc - g) ** 2)   # before clipping
    shrunk = convex_weights(coef, j, sums, shrink=True)
    residual = y - (1 - a) * g - a * loc
    se2 = np.einsum("n,nh->h", w, residual ** 2) / (len(y) - 1) / np.einsum("n,nh->h", w, (loc - g) ** 2)
    t2 = (a - 0.5) ** 2 / se2
    np.testing.assert_allclose(shrunk, np.clip(0.5 + (a - 0.5) * t2 / (1 + t2), 0, 1), rtol=1e-10)
    assert (np.abs(shrunk - 0.5) <= np.abs(np.clip(a, 0, 1) - 0.5)).all()
    assert shrunk[1] < 0.7 < convex_weights(coef, j, sums)[1]
    coef, j, sums, *_ = _weight_sums(20000, 0.9, 0.3, seed=5)
    np.testing.assert_allclose(convex_weights(coef, j, sums, shrink=True), convex_weights(coef, j, sums), atol=1e-3)
    np.testing.assert_allclose(convex_weights(coef, j, sums, shrink=True), 0.9, atol=0.02)


def test_a_short_growing_series_is_forecast_along_its_growth(monkeypatch):
    """fctrend: yearly series shorter than the context (half the typical series) get the local smoother's trend; with
    the state moved along the trend over the missing lead (before), it chose simple smoothing and forecast flat."""
    rng = np.random.default_rng(7)
    frames = [pd.DataFrame({"item_id": f"w{k}", "timestamp": pd.date_range("1950", periods=60, freq="YS"),
                            "target": 100.0 + np.cumsum(rng.normal(0.0, 1.0, 60))}) for k in range(8)]
    short = 50.0 * (1.0 + 0.05 * np.arange(20)) + rng.normal(0.0, 0.3, 20)
    frames.append(pd.DataFrame({"item_id": "short", "timestamp": pd.date_range("1990", periods=20, freq="YS"),
                                "target": short}))
    df = pd.concat(frames, ignore_index=True)
    growth = {}
    for on in (True, False):
        monkeypatch.setattr(local, "START_AT_FIRST_OBSERVED", on)
        fc = daskstate.Forecaster(prediction_length=6, freq="YS").fit(df).finalize(local_weight=1.0)
        assert fc.state_.params["context_length"] > 20
        mean = fc.predict(df).query("item_id == 'short'")["mean"].to_numpy()
        growth[on] = (mean[-1] - short[-1]) / (2.5 * 6)                   # the line's own growth is 2.5 a year
    assert growth[True] > 0.6 and growth[False] < 0.3


def test_short_axis_sums_and_counts_have_numpys_bits():
    """fclocal: the seasonal statistics' sums written as column (cycle) additions give numpy's own reduction's bits,
    for every row length (numpy's order changes at 8 values) and values of very different sizes."""
    rng = np.random.default_rng(5)
    for m in range(1, 14):
        a = rng.normal(size=(3000, m)) * 10.0 ** rng.uniform(-8, 8, size=(3000, m))
        assert local._row_sums(a).tobytes() == a.sum(axis=1).tobytes(), m
        ok = rng.random((3000, m)) < 0.8
        np.testing.assert_array_equal(local._count_rows(ok), ok.sum(axis=1))
        cycles = a[:, None, :].repeat(7, axis=1) * rng.normal(size=(3000, 7, 1))
        assert local._cycle_sums(cycles).tobytes() == cycles.sum(axis=1).tobytes(), m
    # rows without values: nothing to count or add (a context shorter than its season has no whole cycle)
    assert local._count_rows(np.zeros((4, 0), dtype=bool)).tolist() == [0.0] * 4
    np.testing.assert_array_equal(local._cycle_sums(np.zeros((3, 0, 4))), np.zeros((3, 4)))
    np.testing.assert_array_equal(local.cycle_index(np.ones((5, 3)), 4), np.zeros((5, 4)))


@pytest.mark.parametrize("season", [4, 7, 12, 48])
def test_moving_average_weight_from_running_counts_is_the_product(season, monkeypatch):
    """The observed weight of long windows from running counts: bit for bit the product with the weights."""
    rng = np.random.default_rng(season)
    y = rng.normal(size=(60, 6 * season)) * 100.0
    y[rng.random(y.shape) < 0.15] = np.nan
    y[:10, :season * 2] = np.nan
    monkeypatch.setattr(local, "MASS_PRODUCT_POINTS", 10 ** 6)
    product = local.moving_average(y, season)
    monkeypatch.setattr(local, "MASS_PRODUCT_POINTS", 0)
    assert local.moving_average(y, season).tobytes() == product.tobytes()


def _smooth_gapless_reference(y, params, level0, trend0, first):
    """The prefix recursion as 074161d ran it, (k, G) steps with broadcast coefficients: the reference for the bits."""
    n, T = y.shape
    order = np.argsort(first, kind="stable")
    values = y[order].T
    started = np.searchsorted(first[order], np.arange(T), side="right")
    trended = params[:, 1] > 0
    alpha, beta, phi, holt_alpha = params[~trended, 0], params[trended, 1], params[trended, 2], params[trended, 0]
    ses = np.repeat(level0[order][:, None], len(alpha), axis=1)
    ses_sse = np.zeros_like(ses)
    trend = trend0[order][:, None] * np.ones((1, len(phi)))
    forecast = level0[order][:, None] + trend0[order][:, None] * 0.0 + phi * trend
    holt_sse = np.zeros_like(forecast)
    for t in range(T):
        k = started[t]
        e = values[t, :k, None] - ses[:k]
        ses_sse[:k] += e * e
        ses[:k] += alpha * e
        e = values[t, :k, None] - forecast[:k]
        holt_sse[:k] += e * e
        trend[:k] *= phi
        trend[:k] += (holt_alpha * beta) * e
        forecast[:k] += holt_alpha * e
        forecast[:k] += phi * trend[:k]
    out = [np.empty((n, len(params))) for _ in range(3)]
    for target, ses_part, holt_part in zip(out, (ses, 0.0, ses_sse), (forecast - phi * trend, trend, holt_sse), strict=True):
        target[order[:, None], np.flatnonzero(~trended)[None, :]] = ses_part
        target[order[:, None], np.flatnonzero(trended)[None, :]] = holt_part
    return out


def test_gapless_recursion_keeps_the_bits_of_the_broadcast_steps():
    """fclocal: the smoother's steps over whole coefficient arrays are the same operations in the same order as the
    steps with broadcast coefficients, so every level, trend and error sum keeps its bits."""
    rng = np.random.default_rng(11)
    y = np.stack([_walk(70, seed=s) for s in range(300)]) * rng.uniform(0.01, 100.0, (300, 1))
    first = rng.integers(0, 50, size=300)
    y[np.arange(70)[None, :] < first[:, None]] = np.nan
    params = smoothing_grid()
    level0 = y[np.arange(300), first]
    trend0 = rng.normal(0.0, 0.5, 300)
    got = local._smooth_gapless(y, params, level0, trend0, first)
    for a, b in zip(got, _smooth_gapless_reference(y, params, level0, trend0, first), strict=True):
        assert a.tobytes() == b.tobytes()
