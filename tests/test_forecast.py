"""daskstate.Forecaster: the time grid, the exact normal-equation state, forecasts, backtests, bad input."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import daskstate
from daskstate.algorithms.forecast import holdout_split
from daskstate.algorithms.forecast.datasets import load_panel, synthetic_panel
from daskstate.algorithms.forecast.metrics import forecast_metrics, seasonal_naive_scale
from daskstate.algorithms.forecast.series import (
    Columns,
    as_offset,
    default_lags,
    grid_positions,
    infer_freq,
    season_lengths,
    to_series_block,
)
from daskstate.errors import DataError, SchemaError, StateError


def seasonal_panel(n_items: int = 6, length: int = 120, freq: str = "MS", seed: int = 0, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for k in range(n_items):
        level = np.exp(rng.normal(3, 1))
        y = level * (1 + 0.3 * np.sin(2 * np.pi * (t + k) / 12)) * (1 + noise * rng.standard_normal(length))
        frames.append(pd.DataFrame({"item_id": f"item{k}", "timestamp": pd.date_range("2000-01-01", periods=length,
                                                                                      freq=freq), "target": y}))
    return pd.concat(frames, ignore_index=True)


def state_arrays(fc):
    return fc.state_.arrays()


def assert_same_state(a, b, rtol=1e-9):
    for name, arr in state_arrays(a).items():
        np.testing.assert_allclose(arr, state_arrays(b)[name], rtol=rtol, atol=1e-9, err_msg=name)


# ---- the time grid ---------------------------------------------------------------------
def test_grid_positions_and_seasons():
    q = pd.Series(pd.to_datetime(["2000-01-01", "2000-04-01", "2001-01-01"]))
    assert list(np.diff(grid_positions(q, as_offset("QS")))) == [1, 3]
    h = pd.Series(pd.date_range("2020-01-01", periods=5, freq="30min"))
    assert list(np.diff(grid_positions(h, as_offset("30min")))) == [1, 1, 1, 1]
    assert season_lengths(as_offset("QS")) == [4]
    assert season_lengths(as_offset("MS")) == [12]
    assert season_lengths(as_offset("D")) == [7]
    assert season_lengths(as_offset("30min")) == [48, 336]
    assert default_lags(as_offset("QS"), 8) == list(range(1, 13))


def test_weekly_date_features_follow_the_calendar_year(monkeypatch, tmp_path):
    """The same date 26 years apart (the span of fpp3's us_gasoline) has the same weekly date features up to
    the weekday a date falls on (half a week at most); with a 52-week cycle they were 33 days apart. A new weekly
    fit records it in its state; a state without the record (saved before) keeps the 52-week features."""
    from daskstate.algorithms.forecast import series

    offset = as_offset("W-MON")
    mondays = pd.DatetimeIndex(["1991-02-04", "2017-02-06"])  # the Mondays of ISO week 6
    pos = grid_positions(pd.Series(mondays), offset)

    def phase_gap_days(features):  # the first harmonic's angle between the two dates, in days of a year
        angle = np.arctan2(features[:, 0], features[:, 1])
        return abs((angle[1] - angle[0] + np.pi) % (2 * np.pi) - np.pi) / (2 * np.pi) * series.YEAR_DAYS

    assert phase_gap_days(series.date_features(pos, offset, calendar_year=True)) <= 3.5
    assert phase_gap_days(series.date_features(pos, offset)) > 30
    assert series.fourier_periods(as_offset("D"), calendar_year=True) == [7] and series.n_date_features(offset) == 6

    df = seasonal_panel(4, 160, freq="W-MON")
    new = daskstate.Forecaster(freq="W-MON", prediction_length=4).fit(df)
    assert new.state_.params["calendar_year"] is True
    monkeypatch.setattr(series, "CALENDAR_YEAR_FOURIER", False)
    before = daskstate.Forecaster(freq="W-MON", prediction_length=4).fit(df)
    assert "calendar_year" not in before.state_.params
    expected = before.predict(df)
    monkeypatch.setattr(series, "CALENDAR_YEAR_FOURIER", True)
    before.save(tmp_path / "before")
    loaded = daskstate.load(tmp_path / "before")
    pd.testing.assert_frame_equal(loaded.predict(df), expected)
    assert not np.allclose(new.predict(df)["mean"], expected["mean"])


def test_frequency_that_does_not_match_the_timestamps():
    df = seasonal_panel(2, 30, freq="D")
    with pytest.raises(DataError, match="do not match the frequency 'MS'"):
        daskstate.Forecaster(freq="MS", prediction_length=3).fit(df)
    hourly = df.assign(timestamp=df["timestamp"] + pd.Timedelta("1h") * (np.arange(len(df)) % 2))
    with pytest.raises(DataError, match="do not match the frequency 'D'"):
        daskstate.Forecaster(freq="D", prediction_length=3).fit(hourly)


def test_freq_is_inferred():
    df = seasonal_panel(2, 30, freq="QS")
    assert infer_freq(df, Columns()) == "QS-OCT" or as_offset(infer_freq(df, Columns())).n == 1
    fc = daskstate.Forecaster(prediction_length=4).fit(df)
    out = fc.predict(df)
    last = df.groupby("item_id")["timestamp"].max().iloc[0]
    assert out["timestamp"].iloc[0] == last + pd.DateOffset(months=3)


def test_unsorted_rows_and_duplicates():
    df = seasonal_panel(3, 40)
    shuffled = df.sample(frac=1.0, random_state=0)
    a = daskstate.Forecaster(freq="MS", prediction_length=6).fit(df)
    b = daskstate.Forecaster(freq="MS", prediction_length=6).fit(shuffled)
    assert_same_state(a, b)
    dup = pd.concat([df, df.iloc[[5]]], ignore_index=True)
    with pytest.raises(DataError, match=r"duplicate timestamp.*item 'item0' at 2000-06-01"):
        daskstate.Forecaster(freq="MS", prediction_length=6).fit(dup)
    mean = daskstate.Forecaster(freq="MS", prediction_length=6, duplicates="mean").fit(dup)
    assert_same_state(a, mean)


def test_gaps_and_nan_targets_are_masked():
    df = seasonal_panel(3, 60)
    gappy = df.drop(index=[10, 11, 70])
    nan = df.copy()
    nan.loc[[10, 11, 70], "target"] = np.nan
    # a fixed context: the long context follows the typical series length, which counts rows (fewer in `gappy`)
    a = daskstate.Forecaster(freq="MS", prediction_length=6, context_length=36).fit(gappy)
    b = daskstate.Forecaster(freq="MS", prediction_length=6, context_length=36).fit(nan)
    assert_same_state(a, b)
    full = daskstate.Forecaster(freq="MS", prediction_length=6).fit(df)
    assert (full.state_.pairs > a.state_.pairs).all()
    block = to_series_block(gappy, Columns(), as_offset("MS"), 12, 6)
    assert list(block.lengths) == [60, 60, 60]
    assert np.isnan(block.values).sum() == 3 * (12 + 6) + 3


# ---- the state ------------------------------------------------------------------------------
def test_merge_of_disjoint_series_equals_one_fit():
    df = seasonal_panel(8, 50)
    left, right = df[df["item_id"] < "item4"], df[df["item_id"] >= "item4"]
    kw = dict(freq="MS", prediction_length=6)
    a, b = daskstate.Forecaster(**kw).fit(left), daskstate.Forecaster(**kw).fit(right)
    merged = a.state_.merge(b.state_)
    whole = daskstate.Forecaster(**kw).fit(df)
    for name, arr in whole.state_.arrays().items():
        np.testing.assert_allclose(merged.arrays()[name], arr, rtol=1e-9, atol=1e-9)
    assert merged.n_rows == whole.state_.n_rows == len(df)


def test_state_size_does_not_grow_with_series():
    kw = dict(freq="MS", prediction_length=6)
    small = daskstate.Forecaster(**kw).fit(seasonal_panel(2, 200))  # same length: the default lags depend on it
    big = daskstate.Forecaster(**kw).fit(seasonal_panel(20, 200))
    assert small.state_.nbytes == big.state_.nbytes


def test_ridge_penalty_from_the_state_without_data():
    df = seasonal_panel(5, 60)
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(df)
    refit = daskstate.Forecaster(freq="MS", prediction_length=6, wd=0.5).fit(df)
    tuned = fc.finalize(wd=0.5)
    np.testing.assert_allclose(tuned.coef_, refit.coef_, rtol=1e-10)
    assert not np.allclose(tuned.coef_, fc.coef_)
    assert tuned.wd == 0.5 and tuned.wd_ == 0.5 and fc.wd is None


def test_holdout_sums_are_the_normal_equations_of_the_last_points():
    """gram - holdout_gram (and the other sums) equal a fit without each series' last tenth (>= H points)."""
    df = seasonal_panel(5, 60)
    kw = dict(freq="MS", prediction_length=6, lags=list(range(1, 13)))
    fc = daskstate.Forecaster(**kw).fit(df)
    train, _ = holdout_split(df, 6)
    early = daskstate.Forecaster(**kw).fit(train).state_
    s = fc.state_
    for name in ("gram", "xty", "yty", "pairs"):
        np.testing.assert_allclose(getattr(s, name) - getattr(s, "holdout_" + name), getattr(early, name),
                                   rtol=1e-9, atol=1e-8, err_msg=name)
    # the chosen penalty and prior have the smallest holdout error, and an explicit one is used as given
    best = min(fc.selection_, key=lambda r: r["holdout_mse"])
    assert (fc.wd_, fc.prior_) == (best["wd"], best["prior"]) and len(fc.selection_) == 12
    assert (fc.calibration_ >= 1.0).all() and (np.diff(fc.calibration_) >= 0).all()
    fixed = fc.finalize(wd=0.01, prior="seasonal")
    assert (fixed.wd_, fixed.prior_) == (0.01, "seasonal") and len(fixed.selection_) == 1
    # a strong penalty towards the seasonal prior gives the seasonal naive forecast
    snaive = fc.finalize(wd=1e9, prior="seasonal", combine="none")  # the global model alone
    lag_coef = snaive.coef_[:, :12]
    for h in range(6):
        assert np.argmax(lag_coef[h]) == 12 - (h + 1)  # lag 12 - h: one cycle before step h + 1
        np.testing.assert_allclose(lag_coef[h].sum(), 1.0, atol=1e-6)


def test_incremental_new_points_and_new_series_are_exact():
    df = seasonal_panel(6, 80)
    kw = dict(freq="MS", prediction_length=6, context_length=36)  # one design for both (see the test above)
    whole = daskstate.Forecaster(**kw).fit(df)
    cut = pd.Timestamp("2005-01-01")
    known = df["item_id"] < "item4"
    old = df[known & (df["timestamp"] < cut)]
    new_points = df[known & (df["timestamp"] >= cut)]
    new_series = df[~known]
    fc = daskstate.Forecaster(**kw).fit(old)
    fc.partial_fit(new_points, history=old)
    fc.partial_fit(new_series)
    # the normal equations are exact; the holdout sums hold the last points of each fold (here the
    # old points' last tenth and then the new points' last tenth), not those of the whole series
    for name in ("gram", "xty", "yty", "pairs", "target_range"):
        np.testing.assert_allclose(getattr(fc.state_, name), getattr(whole.state_, name), rtol=1e-9, atol=1e-9)
    assert (fc.state_.holdout_pairs > whole.state_.holdout_pairs).all()
    assert fc.state_.n_rows == len(df)


def test_dask_fit_equals_pandas_fit_and_split_items_are_named(scheduler):
    df = seasonal_panel(6, 50)
    kw = dict(freq="MS", prediction_length=6)
    eager = daskstate.Forecaster(**kw).fit(df)
    ddf = daskstate.partition_by_series(dd.from_pandas(df, npartitions=3), npartitions=3)
    lazy = daskstate.Forecaster(**kw).fit(ddf)
    assert_same_state(eager, lazy)
    assert lazy.evaluate(ddf)[0] == pytest.approx(eager.evaluate(df)[0])
    split = dd.from_pandas(df, npartitions=4, sort=False)  # row blocks cut through items
    with pytest.raises(DataError, match=r"item\(s\) have rows in more than one partition.*partition_by_series"):
        daskstate.Forecaster(**kw).fit(split)


def test_failed_partial_fit_keeps_the_state():
    df = seasonal_panel(3, 40)
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(df)
    before = {k: v.copy() for k, v in fc.state_.arrays().items()}
    bad = df.assign(timestamp=df["timestamp"] + pd.Timedelta("3D"))
    with pytest.raises(DataError):
        fc.partial_fit(bad)
    for k, v in fc.state_.arrays().items():
        np.testing.assert_array_equal(v, before[k])


# ---- forecasts ------------------------------------------------------------------------------
def test_predict_frame_and_lazy_dask():
    df = seasonal_panel(4, 60)
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(df)
    out = fc.predict(df, quantiles=(0.1, 0.5, 0.9))
    assert list(out.columns) == ["item_id", "timestamp", "mean", "q0.1", "q0.5", "q0.9"]
    assert len(out) == 4 * 6
    assert (out["q0.1"] <= out["q0.5"]).all() and (out["q0.5"] <= out["q0.9"]).all()
    assert out.groupby("item_id")["timestamp"].min().eq(pd.Timestamp("2005-01-01")).all()
    ddf = daskstate.partition_by_series(df, npartitions=2)
    lazy = fc.predict(ddf)
    assert isinstance(lazy, dd.DataFrame)
    with dask.config.set(scheduler="threads"):
        got = lazy.compute().sort_values(["item_id", "timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, out.sort_values(["item_id", "timestamp"]).reset_index(drop=True),
                                  check_dtype=False)


def test_forecast_beats_seasonal_naive_on_a_seasonal_panel():
    df = seasonal_panel(10, 120, noise=0.05)
    train, _ = holdout_split(df, 6)
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(train)
    overall, per_item = fc.evaluate(df)
    assert overall["n_items"] == 10 and overall["n_points"] == 60
    assert overall["MASE"] < 0.9
    assert 0.5 <= overall["coverage_80"] <= 1.0
    assert set(per_item.columns) >= {"item_id", "MASE", "sMAPE", "RMSE", "wQL", "coverage_80"}


def test_metrics_by_hand():
    y = np.array([[1.0, 2.0, np.nan]])
    mean = np.array([[1.0, 4.0, 9.0]])
    q = np.array([0.1, 0.9])
    qf = np.stack([mean - 1, mean + 1], axis=2)
    per_item, overall = forecast_metrics(y, mean, qf, q, np.array([2.0]))
    assert overall["MASE"] == pytest.approx((0 + 2) / 2 / 2)
    assert overall["RMSE"] == pytest.approx(np.sqrt(2.0))
    assert overall["sMAPE"] == pytest.approx(200 * (0 + 2 / 6) / 2)
    assert overall["coverage_80"] == pytest.approx(0.5)
    # pinball at q0.1 / q0.9: point 1 (y=1 inside [0, 2]) 0.1 and 0.1; point 2 (y=2 below [3, 5]) 0.9 and 0.3
    assert overall["wQL"] == pytest.approx(np.mean([2 * (0.1 + 0.9) / 3, 2 * (0.1 + 0.3) / 3]))
    assert seasonal_naive_scale(np.array([[1.0, 3.0, 2.0]]), 1)[0] == pytest.approx(1.5)


def test_save_and_load_give_the_same_forecasts(tmp_path):
    df = seasonal_panel(3, 50)
    fc = daskstate.Forecaster(freq="MS", prediction_length=6, wd=0.01).fit(df)
    fc.save(tmp_path / "fc.zarr")
    back = daskstate.load(tmp_path / "fc.zarr")
    pd.testing.assert_frame_equal(back.predict(df), fc.predict(df))


def test_covariates_are_used_and_required_at_predict():
    rng = np.random.default_rng(1)
    n, T = 8, 100
    frames = []
    for k in range(n):
        promo = (rng.random(T) < 0.2).astype(float)
        y = 50 * (1 + 0.5 * promo) * (1 + 0.03 * rng.standard_normal(T))
        frames.append(pd.DataFrame({"item_id": f"i{k}", "timestamp": pd.date_range("2020", periods=T, freq="D"),
                                    "target": y, "promo": promo}))
    df = pd.concat(frames, ignore_index=True)
    train, test = holdout_split(df, 7)
    with_cov = daskstate.Forecaster(freq="D", prediction_length=7, covariates=["promo"]).fit(train)
    without = daskstate.Forecaster(freq="D", prediction_length=7).fit(train)
    assert with_cov.evaluate(df)[0]["MASE"] < 0.5 * without.evaluate(df)[0]["MASE"]
    with pytest.raises(DataError, match="future="):
        with_cov.predict(train)
    out = with_cov.predict(train, future=test[["item_id", "timestamp", "promo"]])
    assert out["mean"].notna().all()
    with pytest.raises(DataError, match="covariates .* missing"):
        with_cov.predict(train, future=test[["item_id", "timestamp", "promo"]].iloc[1:])


# ---- bad input ------------------------------------------------------------------------------
def test_all_nan_series_short_series_and_unknown_item():
    df = seasonal_panel(4, 60)
    df.loc[df["item_id"] == "item1", "target"] = np.nan
    short = pd.DataFrame({"item_id": "short", "timestamp": pd.date_range("2004-10-01", periods=3, freq="MS"),
                          "target": [5.0, 6.0, 7.0]})
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(pd.concat([df, short]))
    assert np.isfinite(fc.coef_).all()
    unknown = pd.DataFrame({"item_id": "never_seen", "timestamp": pd.date_range("2001-01-01", periods=30, freq="MS"),
                            "target": np.linspace(10, 20, 30)})
    out = fc.predict(pd.concat([df, short, unknown]))
    by_item = out.groupby("item_id")["mean"]
    assert by_item.apply(lambda s: s.isna().all())["item1"]              # no observed context: NaN
    assert by_item.apply(lambda s: s.notna().all()).drop("item1").all()  # short and unseen items: forecasts
    assert out.loc[out["item_id"] == "short", "mean"].between(3, 10).all()


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_a_series_whose_context_is_all_zero_is_forecast_zero(model):
    # an intermittent count series gone quiet: its windows have scale 0, so the models' scaled forecasts
    # shrink to 0; it was NaN, like a series without any observed value
    rng = np.random.default_rng(0)
    times = pd.date_range("1990-01-01", periods=30, freq="YS")
    frames = [pd.DataFrame({"item_id": f"s{i}", "timestamp": times, "target": rng.poisson(3.0, 30).astype(float)})
              for i in range(12)]
    frames[0].loc[18:, "target"] = 0.0
    frames[1].loc[:, "target"] = np.nan
    df = pd.concat(frames, ignore_index=True)
    kw = {"epochs": 2} if model == "mlp" else {}
    fc = daskstate.Forecaster(model=model, freq="YS", prediction_length=6, **kw).fit(df)
    for out in (fc.predict(df), fc.predict(df, num_samples=20)):
        values = out.set_index("item_id")[["mean", "q0.1", "q0.5", "q0.9"]]
        assert (values.loc["s0"].to_numpy() == 0.0).all()
        assert values.loc["s1"].isna().all().all()                       # nothing observed: still NaN
        assert values.drop(["s0", "s1"]).notna().all().all()


def test_negative_values_with_negative_binomial_name_the_item():
    df = seasonal_panel(3, 40)
    df.loc[5, "target"] = -1.0
    with pytest.raises(DataError, match=r"negative_binomial.*1 negative value.*'item0'"):
        daskstate.Forecaster(freq="MS", prediction_length=6, likelihood="negative_binomial").fit(df)


def test_negative_binomial_quantiles_are_counts():
    df = synthetic_panel(10, 100, freq="D", seed=3)
    df["target"] = np.round(np.abs(df["target"]))
    fc = daskstate.Forecaster(freq="D", prediction_length=7, likelihood="negative_binomial").fit(df)
    out = fc.predict(df)
    q = out[["q0.1", "q0.5", "q0.9"]].to_numpy()
    assert np.allclose(q, np.round(q)) and (q >= 0).all()


def test_bad_columns_and_parameters():
    df = seasonal_panel(2, 30)
    with pytest.raises(SchemaError, match=r"column\(s\) \['sales'\] missing"):
        daskstate.Forecaster(target="sales").fit(df)
    with pytest.raises(SchemaError, match="must be numeric"):
        daskstate.Forecaster(freq="MS").fit(df.assign(target="x"))
    with pytest.raises(ValueError, match="likelihood"):
        daskstate.Forecaster(likelihood="poisson").fit(df)
    with pytest.raises(ValueError, match="quantiles"):
        daskstate.Forecaster(freq="MS", prediction_length=3).fit(df).predict(df, quantiles=(0.0, 0.5))
    with pytest.raises(TypeError, match="long pandas or Dask DataFrame"):
        daskstate.Forecaster().fit(np.zeros((3, 3)))


# ---- real panels -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["aus_arrivals", "aus_accommodation", "prisonLF"])
def test_real_quarterly_panels(name):
    df, freq = load_panel(name)
    train, _ = holdout_split(df, 8)
    fc = daskstate.Forecaster(freq=freq, prediction_length=8).fit(train)
    overall, per_item = fc.evaluate(df)
    assert overall["n_items"] == df["item_id"].nunique()
    assert np.isfinite(overall["MASE"]) and overall["MASE"] < 5
    assert 0.3 <= overall["coverage_80"] <= 1.0
    out = fc.predict(df)
    assert len(out) == 8 * df["item_id"].nunique() and out["mean"].notna().all()


@pytest.mark.slow
def test_real_half_hourly_panel_with_covariates():
    df, freq = load_panel("elecdemand")
    df = df.iloc[-48 * 7 * 10:]
    train, test = holdout_split(df, 48)
    fc = daskstate.Forecaster(freq=freq, prediction_length=48, covariates=["temperature", "workday"]).fit(train)
    out = fc.predict(train, future=test[["item_id", "timestamp", "temperature", "workday"]])
    err = np.abs(out["mean"].to_numpy() - test["target"].to_numpy()).mean()
    naive = np.abs(train["target"].to_numpy()[-48:] - test["target"].to_numpy()).mean() * 3
    assert err < naive


def test_fan_chart(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from daskstate.algorithms.forecast.plot import fan_chart

    df = seasonal_panel(3, 60)
    train, test = holdout_split(df, 6)
    fc = daskstate.Forecaster(freq="MS", prediction_length=6).fit(train)
    fig = fan_chart(train, fc.predict(train, quantiles=(0.05, 0.1, 0.5, 0.9, 0.95)), ["item0", "item2"],
                    last=24, actual=test)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].collections) == 2  # two bands: 5-95% and 10-90%
    fig.savefig(tmp_path / "fan.png")
    with pytest.raises(ValueError, match="neither"):
        fan_chart(train, fc.predict(train), ["nope"])


def test_command_line_fit_and_predict(tmp_path):
    from daskstate.cli import main

    df = seasonal_panel(3, 40)
    df.to_parquet(tmp_path / "panel.parquet")
    assert main(["fit", "forecaster", "--input", str(tmp_path / "panel.parquet"), "--param", "freq=MS",
                 "--param", "prediction_length=4", "--out", str(tmp_path / "fc.zarr")]) in (0, None)
    assert main(["predict", str(tmp_path / "fc.zarr"), "--input", str(tmp_path / "panel.parquet"),
                 "--output", str(tmp_path / "out.parquet")]) in (0, None)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) == 12 and {"mean", "q0.1", "q0.9"} <= set(out.columns)


def test_static_categories_give_per_category_levels():
    """Two groups of series that move apart (one grows, one shrinks): the lags alone cannot tell them
    apart from a short context, a per-group intercept can."""
    rng = np.random.default_rng(5)
    t = np.arange(60)
    frames = []
    for k in range(16):
        growth = 0.03 if k % 2 else -0.03
        y = 100 * np.exp(growth * t + rng.normal(0, 0.02, t.size)) * (1 + 0.2 * np.sin(2 * np.pi * t / 12))
        frames.append(pd.DataFrame({"item_id": f"s{k}", "timestamp": pd.date_range("2000-01-01", periods=60, freq="MS"),
                                    "target": y, "group": "up" if k % 2 else "down"}))
    df = pd.concat(frames, ignore_index=True)
    train, _ = holdout_split(df, 6)
    kw = dict(freq="MS", prediction_length=6, lags=[1, 2, 3, 12])
    plain = daskstate.Forecaster(**kw).fit(train)
    grouped = daskstate.Forecaster(**kw, static=["group"]).fit(train)
    assert grouped.coef_.shape[1] == plain.coef_.shape[1] + 16
    assert grouped.evaluate(df)[0]["MASE"] < 0.7 * plain.evaluate(df)[0]["MASE"]
    # merge of disjoint series still equals one fit, and predict needs the static column
    a = daskstate.Forecaster(**kw, static=["group"]).fit(train[train["item_id"] < "s5"])
    b = daskstate.Forecaster(**kw, static=["group"]).fit(train[train["item_id"] >= "s5"])
    np.testing.assert_allclose(a.state_.merge(b.state_).gram, grouped.state_.gram, rtol=1e-9)
    with pytest.raises(SchemaError, match="'group'"):
        grouped.predict(train.drop(columns="group"))


def test_training_windows_need_half_their_context():
    """A window at a series' start (one or two observed context values) would get a noise scale at the
    floor and dominate the fit: training skips it; prediction still forecasts short series."""
    df = seasonal_panel(3, 40)
    kw = dict(freq="MS", prediction_length=6, lags=list(range(1, 13)))
    fc = daskstate.Forecaster(**kw).fit(df)
    # per series, origins with >= 6 of 12 context values observed and a target after them
    assert fc.state_.pairs[0] == 3 * (40 - 6 + 1 - 1)
    too_short = df.groupby("item_id").head(6)
    with pytest.raises(StateError, match="needs 6 observed context values"):
        daskstate.Forecaster(**kw).fit(too_short)
    out = fc.predict(too_short)
    assert out["mean"].notna().all()


def test_rows_already_grouped_per_item_give_the_block_sorted_rows_give():
    """Rows written item by item (in any item order, each item's rows in time order) are placed where they
    are, without sorted copies; the block is the one shuffled rows give, gaps, NaN and covariates included.
    Duplicates inside such a run still raise, and a fixed-step frequency's off-grid timestamp still does."""

    df = synthetic_panel(12, 40, freq="D", seed=2)
    df = df.drop(index=df.index[5::7]).reset_index(drop=True)  # gaps
    df.loc[df.index[::9], "target"] = np.nan
    df["promo"] = np.arange(len(df)) % 3
    cols = Columns(covariates=("promo",))
    grouped = pd.concat([g for _, g in df.groupby("item_id", sort=False)][::-1], ignore_index=True)  # items reversed
    shuffled = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    blocks = [to_series_block(x, cols, as_offset("D"), 14, 7) for x in (grouped, shuffled, df)]
    for block in blocks[1:]:
        for field in ("items", "starts", "lengths", "offsets", "values", "covariates", "last_time"):
            np.testing.assert_array_equal(getattr(block, field), getattr(blocks[0], field), err_msg=field)
    twice = pd.concat([grouped.iloc[:3], grouped.iloc[2:]], ignore_index=True)
    with pytest.raises(DataError, match="duplicate timestamp"):
        to_series_block(twice, cols, as_offset("D"), 14, 7)
    times = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-03", "2020-01-02"]))
    assert grid_positions(times, as_offset("D")).tolist() == [18262, 18264, 18263]
    with pytest.raises(DataError, match="1 timestamp"):
        grid_positions(pd.Series([pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-02 06:00")]), as_offset("D"))


def test_mlp_training_windows_are_those_with_an_observed_target():
    """The windows the mlp trains on: every origin with at least one observed target among its next
    ``prediction_length`` values (running counts of observed values, checked against a loop over steps)."""
    from daskstate.algorithms.forecast.neural import TrainingWindows

    df = synthetic_panel(5, 60, freq="D", seed=2)
    df.loc[(df["item_id"] == df["item_id"].iloc[0]) & (np.arange(len(df)) % 60 > 30), "target"] = np.nan
    df.loc[df.index[::4], "target"] = np.nan
    block = to_series_block(df, Columns(), as_offset("D"), 14, 7)
    got = TrainingWindows.of(block)
    origins, item, position = block.origins()
    observed = ~np.isnan(block.values)
    keep = np.zeros(len(origins), bool)
    for h in range(1, 8):
        keep |= observed[np.minimum(origins + h, len(observed) - 1)]
    assert keep.any() and not keep.all()
    np.testing.assert_array_equal(got.origins, origins[keep])
    np.testing.assert_array_equal(got.item, item[keep])
    np.testing.assert_array_equal(got.position, position[keep])
