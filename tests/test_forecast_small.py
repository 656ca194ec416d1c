"""The linear forecaster's fixed cost on small panels (fcsmall): each shortcut gives the numbers of the path it
replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import daskstate
from daskstate.algorithms.forecast import linear
from daskstate.algorithms.forecast.datasets import synthetic_panel
from daskstate.algorithms.forecast.estimator import holdout_split
from daskstate.algorithms.forecast.series import Columns, as_offset, grid_positions, to_series_block
from daskstate.errors import StateError


@pytest.fixture(scope="module")
def fitted():
    df = synthetic_panel(8, 60, freq="QS", seed=4)
    train, _ = holdout_split(df, 8)
    return daskstate.Forecaster(freq="QS", prediction_length=8).fit(train), df


def _one_by_one(state, sums, candidates, keep):
    return [state._solve(sums, w, pr, keep)[0] for w, pr in candidates]


@pytest.mark.parametrize("combine", ["convex", "feature"])
def test_candidates_solved_in_one_batch_equal_one_solve_each(fitted, combine):
    """The ridge candidates' coefficients from one stacked solve are the per-candidate solves' bit for bit, with and
    without the local column, and where steps have no training pairs (they borrow the nearest earlier step's)."""
    state = fitted[0].state_
    keep = None if combine == "feature" else np.delete(np.arange(state.n_design), state.local_column)
    candidates = [(w, pr) for w in linear.WD_GRID for pr in linear.PRIORS]
    sums = (state.gram, state.xty, state.yty, state.pairs)
    for batch, single in zip(state._candidate_coefficients(sums, candidates, keep),
                             _one_by_one(state, sums, candidates, keep), strict=True):
        np.testing.assert_array_equal(batch, single)
    gaps = (state.gram, state.xty, state.yty, state.pairs.copy())
    gaps[3][[0, 1, 5]] = 0.0
    got = state._candidate_coefficients(gaps, candidates, keep)
    for batch, single in zip(got, _one_by_one(state, gaps, candidates, keep), strict=True):
        np.testing.assert_array_equal(batch, single)
    np.testing.assert_array_equal(got[0][0], got[0][2])
    np.testing.assert_array_equal(got[0][5], got[0][4])


def test_a_singular_candidate_falls_back_to_one_solve_each(fitted):
    """A step whose normal equations are all zero (singular at every penalty): the batch raises inside, and the
    candidates come from the per-candidate path (least squares on that step), as before."""
    state = fitted[0].state_
    gram, xty = state.gram.copy(), state.xty.copy()
    gram[3], xty[3] = 0.0, 0.0
    sums = (gram, xty, state.yty, state.pairs)
    candidates = [(w, "zero") for w in linear.WD_GRID]
    for batch, single in zip(state._candidate_coefficients(sums, candidates, None),
                             _one_by_one(state, sums, candidates, None), strict=True):
        np.testing.assert_array_equal(batch, single)


def test_calibration_is_scikit_learns_isotonic_fit():
    """The calibration's isotonic fit (scipy's pool-adjacent-violators, linear between the fitted steps) gives
    scikit-learn's IsotonicRegression's numbers, NaN outside the fitted steps and a constant for one step."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    for trial in range(300):
        H = int(rng.integers(1, 30))
        pairs = np.where(rng.random(H) < 0.2, 0.0, rng.integers(1, 400, H).astype(float))
        sigma = rng.gamma(2.0, 1.0, H)
        sse = pairs * sigma**2 * rng.gamma(4.0, 0.3, H) * (1 + 0.05 * np.arange(H))
        ok = pairs > 0
        if trial % 7 == 0:
            sigma[rng.integers(0, H)] = 0.0
            ok = ok & (sigma > 0)
        got = linear._calibration(sse, pairs, sigma)
        if not ok.any():
            np.testing.assert_array_equal(got, 1.0)
            continue
        steps = np.flatnonzero(ok)
        ratio = sse[ok] / (pairs[ok] * sigma[ok] ** 2)
        fitted = IsotonicRegression(increasing=True).fit(steps, ratio, sample_weight=pairs[ok])
        np.testing.assert_allclose(got, np.sqrt(np.maximum(fitted.predict(np.arange(H)), 1.0)), rtol=1e-13)


def test_finalize_again_with_the_same_options_returns_a_copy_of_the_same_model(fitted, monkeypatch):
    """A second finalize with options that resolve to the last ones solved (``combine="convex"`` is the default, as
    at the fit) solves nothing and gives the same numbers in arrays of its own; other options, a state changed in
    place or another grid solve again."""
    fc, _ = fitted
    solves = []
    original = linear.ForecastLinearState._finalize

    def counted(self, *args, **kwargs):
        solves.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(linear.ForecastLinearState, "_finalize", counted)
    again = fc.finalize(combine="convex", calibrate="overfit", pooled=False)
    assert not solves
    for name in ("coef_", "sigma_", "spread_", "local_weight_", "calibration_", "holdout_sse_"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fc, name))
        assert not np.shares_memory(getattr(again, name), getattr(fc, name))
    assert again.selection_ == fc.selection_ and again.selection_ is not fc.selection_
    fc.finalize(combine="none")
    assert len(solves) == 1  # the state keeps the last model it solved: now this one
    state = fc.state_.copy()
    state.finalize(combine="none")
    assert len(solves) == 1
    state.xty[0, 0] += 1.0
    moved = state.finalize(combine="none")
    assert len(solves) == 2 and not np.array_equal(moved["coef_"], fc.finalize(combine="none").coef_)
    monkeypatch.setattr(linear, "WD_GRID", linear.WD_GRID[:2])
    state.finalize(combine="none")
    assert len(solves) == 3
    monkeypatch.setattr(linear, "POOLED", True)  # any of the module's switches, as bench_forecast --patch sets them
    state.finalize(combine="none")
    assert len(solves) == 4
    with pytest.raises(StateError, match="calibrate"):
        fc.state_.finalize(calibrate="sometimes")


@pytest.mark.parametrize("likelihood", ["student_t", "gaussian"])
def test_quantiles_from_scipy_special_equal_scipy_stats(likelihood):
    """The predictive quantiles take scipy.special's quantile functions directly: bit for bit those of
    ``stats.t.ppf`` (with :data:`~daskstate.algorithms.forecast.linear.STUDENT_DF` degrees of freedom, its variance
    matched to the spread) and ``stats.norm.ppf``, without their per-call argument checks."""
    from scipy import stats

    rng = np.random.default_rng(1)
    mean, std = rng.normal(10, 3, (5, 4)), rng.gamma(2.0, 1.0, (5, 4))
    q = np.array([0.01, 0.1, 0.25, 0.5, 0.8, 0.9, 0.99])
    got = linear.distribution_quantiles(mean, std, q, likelihood, nonnegative=False)
    if likelihood == "student_t":
        df = linear.STUDENT_DF
        expected = mean[..., None] + (std * np.sqrt((df - 2) / df))[..., None] * stats.t.ppf(q, df)
    else:
        expected = mean[..., None] + std[..., None] * stats.norm.ppf(q)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("freq", ["MS", "ME", "QS-JAN", "QS-FEB", "QE-DEC", "2MS", "3ME"])
def test_month_and_quarter_grid_positions_are_the_calendars(freq):
    """Monthly and quarterly grid positions come from numpy's months since 1970: ``year * 12 + month - 1`` of every
    timestamp (before 1970 too, at any time of day, as pandas' calendar fields give them), and a block's last
    timestamps are each item's last."""
    offset = as_offset(freq)
    times = pd.date_range("1677-12-01", "2262-01-01", freq=offset).as_unit("ns")
    times = times[np.random.default_rng(2).permutation(len(times))[:500]]
    n = max(1, offset.n)
    month = times.year.to_numpy(np.int64) * 12 + times.month.to_numpy(np.int64) - 1
    if freq.startswith("Q"):
        month = (month - offset.startingMonth) // 3
    np.testing.assert_array_equal(grid_positions(pd.Series(times), offset), month // n)
    np.testing.assert_array_equal(grid_positions(pd.Series(times + pd.Timedelta("6h")), offset), month // n)
    local = pd.Series(pd.date_range("1960-01-01", periods=30, freq=offset).as_unit("us"))
    df = pd.DataFrame({"item_id": np.repeat(["a", "b"], 15), "timestamp": local, "target": np.arange(30.0)})
    block = to_series_block(df, Columns(), offset, 4, 2)
    np.testing.assert_array_equal(block.last_time, local.iloc[[14, 29]].to_numpy("datetime64[ns]"))
    np.testing.assert_array_equal(block.starts[1] - block.starts[0], 15)


def test_typical_length_is_the_median_rows_per_item():
    """The typical series length (it shapes the default lags) by factorize + bincount: groupby's median of the rows
    per item, rows without an id left out."""
    from daskstate.algorithms.forecast.estimator import _typical_length

    ids = ["a"] * 5 + ["b"] * 8 + [None] * 30 + ["c"] * 2 + ["d"] * 9
    df = pd.DataFrame({"item_id": pd.Series(ids, dtype="str"), "timestamp": pd.Timestamp("2020-01-01"), "target": 1.0})
    expected = int(df.groupby("item_id", sort=False).size().median())
    assert _typical_length(df, Columns()) == expected == 6
