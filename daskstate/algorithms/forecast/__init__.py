"""Probabilistic forecasting of many time series with one global model (``daskstate.Forecaster``).

Modules, one per concern: ``series`` (long tables on the time grid, lags, date
features), ``windows`` (scaled windows and design rows), ``linear`` (the
normal-equation state of the linear model), ``metrics`` (MASE, sMAPE, RMSE,
weighted quantile loss, coverage), ``datasets`` (real and synthetic panels) and
``estimator`` (the Forecaster).
"""

from daskstate.algorithms.forecast.estimator import Forecaster, holdout_split
from daskstate.algorithms.forecast.linear import ForecastLinearState
from daskstate.algorithms.forecast.series import partition_by_series

__all__ = ["ForecastLinearState", "Forecaster", "holdout_split", "partition_by_series"]
