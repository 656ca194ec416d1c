"""Forecast Australia's prison population (fpp2 prisonLF, 32 quarterly series) with one global model.

Backtests the last 8 quarters, writes the panel to Parquet partitioned by series, fits
from Parquet, adds the last quarters incrementally, and forecasts the next two years.

Run: python examples/forecast_example.py
"""

import tempfile

import dask.dataframe as dd

import daskstate
from daskstate.algorithms.forecast import holdout_split
from daskstate.algorithms.forecast.datasets import load_panel

df, freq = load_panel("prisonLF")  # item_id, timestamp, target
print(f"prisonLF: {df['item_id'].nunique()} series, {len(df)} rows, frequency {freq}")

# 1. backtest: fit without each series' last 8 quarters, score the forecasts of them
train, test = holdout_split(df, 8)
fc = daskstate.Forecaster(freq=freq, prediction_length=8).fit(train)
overall, per_item = fc.evaluate(df)
print("backtest:", {k: round(v, 3) for k, v in overall.items()})
print(per_item.sort_values("MASE").tail(3).round(3).to_string(index=False))

# 2. the same model from Parquet, each series in one partition, then the new quarters added exactly
with tempfile.TemporaryDirectory() as folder:
    daskstate.partition_by_series(train, npartitions=4).to_parquet(f"{folder}/prison")
    lazy = daskstate.Forecaster(freq=freq, prediction_length=8).fit(dd.read_parquet(f"{folder}/prison"))
    # one pass of the same (empty) state over all the data, to compare with: a new fit would choose its
    # context from the longer series, and each series' holdout (its last tenth) moves with its end
    empty = lazy.state_.empty_like()
    whole = empty.update(empty.read_batch(df, None, where="input")[0])
    lazy.partial_fit(test, history=train)  # only the windows that end in the new quarters are added
    same = all(abs(getattr(lazy.state_, k) - getattr(whole, k)).max() <= 1e-9 * abs(getattr(whole, k)).max()
               for k in ("gram", "xty", "yty", "pairs"))
    print("incremental normal equations == one pass over all data (to rounding):", same)
    full = daskstate.Forecaster(freq=freq, prediction_length=8).fit(df)

# 3. forecast the next two years with 80% intervals; a ridge penalty tuned without reading data again
forecast = full.finalize(wd=0.01).predict(df, quantiles=(0.1, 0.5, 0.9))
print(forecast[forecast["item_id"] == "NSW/Male/Sentenced"].round({"mean": 1, "q0.1": 1, "q0.5": 1, "q0.9": 1})
      .to_string(index=False))
