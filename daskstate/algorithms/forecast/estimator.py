"""``daskstate.Forecaster``: probabilistic forecasts of many series from one global model.

Fitting folds every partition (each holding whole series, see
:func:`daskstate.partition_by_series`) into the model's state with one
``forecast_<model>-update`` task per partition and a tree of merges; the same
tasks return each partition's item ids, and a fit whose items are split across
partitions fails naming them, leaving the previous state as it was.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import tokenize
from pandas.tseries.offsets import Week
from sklearn.utils._param_validation import StrOptions

from daskstate.algorithms.forecast import series as _series
from daskstate.algorithms.forecast.deepar import (
    ForecastDeepARState,
    embedding_dimension,
    recurrent_lags,
)
from daskstate.algorithms.forecast.linear import (
    LOCAL_COLUMN,
    SIGNED_LEVEL,
    SPREAD_STEP,
    SPREAD_Z,
    STATIC_BUCKETS,
    ForecastLinearState,
    distribution_quantiles,
    linear_forecast,
    linear_sample_paths,
)
from daskstate.algorithms.forecast.metrics import forecast_metrics
from daskstate.algorithms.forecast.mlp import ForecastMLPState
from daskstate.algorithms.forecast.neural import NeuralForecastState, train_calibrated
from daskstate.algorithms.forecast.rounds import series_input
from daskstate.algorithms.forecast.sampling import partition_rng, sample_column
from daskstate.algorithms.forecast.series import (
    Columns,
    SeriesBlock,
    as_offset,
    aware_times,
    default_lags,
    default_prediction_length,
    grid_positions,
    grid_timestamps,
    infer_freq,
    long_context,
    season_lengths,
    split_items,
    static_indicators,
    to_series_block,
)
from daskstate.algorithms.forecast.windows import context_scale, iter_windows
from daskstate.data import Input
from daskstate.engine import FitOptions
from daskstate.errors import DataError, SchemaError
from daskstate.estimator import Floats, Ints, StateEstimator
from daskstate.state import BlasPolicy, Schema, State
from daskstate.training import Schedule, train_epochs

MODELS = ("linear", "mlp", "deepar")
STATE_CLASSES = {"linear": ForecastLinearState, "mlp": ForecastMLPState, "deepar": ForecastDeepARState}
LIKELIHOODS = ("student_t", "gaussian", "negative_binomial")
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
#: windows per Adam step when ``batch_size`` is None (deepar: GluonTS's 32 sequences of C + H steps)
DEFAULT_BATCH = {"linear": 128, "mlp": 128, "deepar": 32}
#: "mlp", "deepar": epochs at most when ``epochs`` is None (GluonTS's max_epochs)
DEFAULT_EPOCHS = 100
#: sample paths behind the mean and quantiles of a model that only samples ("deepar") when not given
DEFAULT_PATHS = 100
EVAL_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def quantile_column(q: float) -> str:
    """Column name of quantile ``q`` in a forecast: ``q0.1``, ``q0.5``, ..."""
    return f"q{float(q):g}"


class Forecaster(StateEstimator):
    """Probabilistic forecasts for many time series from one global model.

    Parameters
    ----------
    model : {"linear", "mlp", "deepar"}
        "linear": a direct multi-horizon autoregression over each window scaled by
        its context mean, fitted exactly in one pass from normal equations (see
        :mod:`daskstate.algorithms.forecast.linear`). "mlp": a feed-forward network
        over the same scaled window that outputs the distribution of every horizon
        step, trained by Adam in synchronised rounds (:mod:`~daskstate.algorithms.forecast.mlp`).
        "deepar": an autoregressive LSTM over mean-scaled series with teacher forcing, forecasting
        by ancestral sampling (:mod:`~daskstate.algorithms.forecast.deepar`).
    prediction_length : int, optional
        Forecast horizon in steps (default: the M4 horizon of the frequency, e.g. 8
        quarters, 18 months, 14 days, 48 hours).
    freq : str, optional
        pandas frequency of the timestamps ("QS", "MS", "D", "h", "30min", ...);
        inferred from the data if not given.
    context_length : int, optional
        Steps of history each window reads (default: the largest lag; "linear": up to half the
        typical series length, whole cycles, when that reaches a cycle past the lags: the seasonal
        index column averages the seasonal shape over it and the local smoother reads it, also for
        yearly data, see :func:`long_context`). "deepar": the
        steps the network unrolls before the forecast origin (default: ``prediction_length``);
        the lags reach further back.
    lags : list of int, optional
        Lags of the target used as inputs (default: recent and seasonal lags of the
        frequency, :func:`default_lags`; "deepar": relative to each step, :func:`recurrent_lags`).
    id_col, time_col, target : str
        Columns of the long table.
    covariates : list of str
        Known dynamic covariates (their future values are needed at predict).
    static : list of str
        Static categories per item ("linear": an intercept per category, hashed into a fixed
        number of indicator columns per static column; "mlp" ignores them; "deepar": one
        embedding per column, its categories the values seen by ``fit``, a value seen first
        later, or missing, sharing one "unknown" row).
    embedding_dimension : int or list of int, optional
        "deepar": size of each static category's embedding (default
        ``min(50, (categories + 1) // 2)`` per column).
    likelihood : {"student_t", "gaussian", "negative_binomial"}
        Shape of the predictive distribution ("negative_binomial" for counts: targets
        must be non-negative).
    wd : float, optional
        "linear": ridge penalty relative to the mean diagonal of the normal equations;
        default: chosen, together with what the penalty shrinks to (zero or the
        seasonal naive forecast), by the error on each series' last tenth of the model
        fitted on the rest, from the state alone (``finalize(wd=..., prior=...)`` re-solves
        without data; ``selection_`` lists the scores).
    weighting : {"noise", "none"}
        "noise": windows weighted by ``1 / noise^2``, their relative noise scale.
    harmonics : int
        Fourier harmonics of each seasonal cycle in the date features.
    duplicates : {"raise", "mean"}
        Duplicate timestamps of an item: raise naming them, or average them.
    num_layers, num_cells : int
        "mlp": hidden ReLU layers and their width; "deepar": stacked LSTM layers and their cells.
    epochs, learning_rate, batch_size, sync_every, seed : int or float
        "mlp", "deepar": epochs at most (None: :data:`DEFAULT_EPOCHS`, GluonTS's 100; early
        stopping usually ends the fit sooner), Adam's step size (halved for every epoch
        without improvement), windows per step, partitions per synchronised round, and the
        seed of initialisation and window order. An epoch is at least ``min_batches`` Adam
        steps per partition: "mlp" one pass over the windows, "deepar" one sequence per item
        on average (GluonTS's sampling), so small and large panels get the same budget of steps.
        ``batch_size`` None: 128 windows ("mlp"), 32 sequences ("deepar", as GluonTS).
    min_batches : int
        "mlp", "deepar": Adam steps per partition and epoch at least (GluonTS's 50 batches per epoch).
    validation_fraction : float
        "mlp", "deepar": share of the training windows held out (by a seeded hash of item and
        origin, the same on every pass) to validate each epoch's parameters; the
        best validated ones are kept. 0: judge epochs by the training loss. Above 0 the predictive
        spread is calibrated too: a twin network trained the same way but without each series' last
        ``validation_fraction`` of points (at least ``prediction_length``) forecasts them, and
        ``calibration_`` widens the spread of every horizon step by the factor of least quantile loss
        there (:mod:`~daskstate.algorithms.forecast.neural`; the fit trains twice).
    early_stopping_patience : int or None
        "mlp", "deepar": stop after this many epochs without a relative improvement of
        ``early_stopping_tolerance`` in the validation loss (None: run every epoch).
    dropout_rate : float
        "deepar": share of the hidden states passed between stacked LSTM layers that training
        drops (GluonTS's default 0.1; no effect with ``num_layers=1``).

    Attributes
    ----------
    state_ : ForecastLinearState
    coef_ : ndarray (prediction_length, p)
    sigma_ : ndarray (prediction_length,)
        Spread of the noise-normalised residual per horizon step.
    combine_, local_weight_ : str, ndarray (prediction_length,)
        "linear": how each window's local exponential-smoothing forecast is combined with the global
        model, and its weight per horizon step (chosen on the holdout sums; see
        :mod:`~daskstate.algorithms.forecast.local`).
    holdout_sse_, holdout_pairs_ : ndarray (prediction_length,)
        "linear": per horizon step, the weighted squared error on the holdout pairs (each series' last
        tenth) of the final design solved without them, and the number of those pairs.
    theta_, n_epochs_, validation_loss_, train_loss_, history_
        Neural models: the selected (best validated) parameters, the epochs run,
        the validation and training loss per epoch, the last epoch's training loss
        and the trainer's per-epoch record (:mod:`daskstate.training`).
    calibration_ : ndarray (prediction_length,)
        Neural models: the factor by which each horizon step's quantiles and sample paths are
        moved away from the forecast mean (see ``validation_fraction``); ``calibration_summary_``
        holds the holdout's 80% coverage before and after it.

    Examples
    --------
    >>> import daskstate
    >>> from daskstate.algorithms.forecast.datasets import synthetic_panel
    >>> df = synthetic_panel(20, 120, freq="MS", seed=0)
    >>> fc = daskstate.Forecaster(prediction_length=6).fit(df)
    >>> out = fc.predict(df)
    >>> list(out.columns)
    ['item_id', 'timestamp', 'mean', 'q0.1', 'q0.5', 'q0.9']
    >>> len(out)
    120
    """

    state_class = ForecastLinearState
    other_state_classes = (ForecastMLPState, ForecastDeepARState)
    aliases = ("forecast",)

    def __init__(
        self,
        model: str = "linear",
        prediction_length: int | None = None,
        freq: str | None = None,
        context_length: int | None = None,
        lags: Sequence[int] | None = None,
        id_col: str = "item_id",
        time_col: str = "timestamp",
        target: str = "target",
        covariates: Sequence[str] = (),
        static: Sequence[str] = (),
        likelihood: str = "student_t",
        wd: float | None = None,
        weighting: str = "noise",
        harmonics: int = 3,
        duplicates: str = "raise",
        num_layers: int = 2,
        num_cells: int = 40,
        epochs: int | None = None,
        learning_rate: float = 1e-3,
        batch_size: int | None = None,
        sync_every: int = 4,
        seed: int = 0,
        min_batches: int = 50,
        embedding_dimension: int | Sequence[int] | None = None,
        validation_fraction: float = 0.1,
        early_stopping_patience: int | None = 3,
        early_stopping_tolerance: float = 1e-3,
        dropout_rate: float = 0.1,
    ):
        self.model = model
        self.prediction_length = prediction_length
        self.freq = freq
        self.context_length = context_length
        self.lags = lags
        self.id_col = id_col
        self.time_col = time_col
        self.target = target
        self.covariates = covariates
        self.static = static
        self.likelihood = likelihood
        self.wd = wd
        self.weighting = weighting
        self.harmonics = harmonics
        self.duplicates = duplicates
        self.num_layers = num_layers
        self.num_cells = num_cells
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.sync_every = sync_every
        self.seed = seed
        self.min_batches = min_batches
        self.embedding_dimension = embedding_dimension
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_tolerance = early_stopping_tolerance
        self.dropout_rate = dropout_rate

    # ---- parameters -------------------------------------------------------------------
    _parameter_constraints: ClassVar[dict] = {
        "model": [StrOptions(set(MODELS))],
        "prediction_length": [Ints(1), None],
        "freq": [str, None],
        "context_length": [Ints(1), None],
        "lags": [list, tuple, np.ndarray, None],
        "id_col": [str],
        "time_col": [str],
        "target": [str],
        "covariates": [list, tuple],
        "static": [list, tuple],
        "likelihood": [StrOptions(set(LIKELIHOODS))],
        "wd": [Floats(0), None],
        "weighting": [StrOptions({"noise", "none"})],
        "harmonics": [Ints(0)],
        "duplicates": [StrOptions({"raise", "mean"})],
        "num_layers": [Ints(1)],
        "num_cells": [Ints(1)],
        "epochs": [Ints(0), None],
        "learning_rate": [Floats(0, closed="neither")],
        "batch_size": [Ints(1), None],
        "sync_every": [Ints(1)],
        "seed": [Ints(0)],
        "min_batches": [Ints(1)],
        "validation_fraction": [Floats(0, 1)],
        "early_stopping_patience": [Ints(1), None],
        "early_stopping_tolerance": [Floats(0)],
        "dropout_rate": [Floats(0, 1)],
        "embedding_dimension": [Ints(1), list, tuple, None],
    }

    def _check_params_together(self) -> None:
        if self.lags is not None and not (len(self.lags) > 0 and all(
                isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in self.lags)):
            raise ValueError(f"lags must be a non-empty list of ints >= 1, got {self.lags!r}")
        dims = self.embedding_dimension
        if dims is not None and not isinstance(dims, int | np.integer):
            if not all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in dims):
                raise ValueError(f"embedding_dimension must be None, an int >= 1 or a list of them, got {dims!r}")
            if len(dims) != len(self.static):
                raise ValueError(f"embedding_dimension has {len(dims)} entries for {len(self.static)} static "
                                 f"column(s) {list(self.static)}")

    @property
    def _columns(self) -> Columns:
        return Columns(self.id_col, self.time_col, self.target, tuple(self.covariates), tuple(self.static))

    def _state_params(self, freq: str, series_length: int | None = None) -> dict[str, Any]:
        offset = as_offset(freq)
        H = int(self.prediction_length or default_prediction_length(offset))
        if self.model == "deepar":
            lags = sorted({int(v) for v in self.lags}) if self.lags is not None else recurrent_lags(offset)
            C = int(self.context_length or H)
            L = C + max(lags)  # the lags of the first unrolled step reach back max(lags) further
        else:
            lags = (sorted({int(v) for v in self.lags}) if self.lags is not None
                    else default_lags(offset, H, series_length))
            L = int(self.context_length or max(lags))
            lags = [v for v in lags if v <= L]
        if not lags:
            raise ValueError(f"context_length={L} is shorter than every lag {self.lags}")
        seasons = season_lengths(offset)
        params = {"model": self.model, "freq": offset.freqstr, "prediction_length": H, "context_length": L,
                  "lags": lags, "season": seasons[0] if seasons else 1, "harmonics": int(self.harmonics),
                  "likelihood": self.likelihood, "columns": [self.id_col, self.time_col, self.target],
                  "duplicates": self.duplicates, "static": [str(c) for c in self.static]}
        if _series.CALENDAR_YEAR_FOURIER and isinstance(offset, Week):  # read at fit time (--patch)
            params["calendar_year"] = True
        if self.model == "linear":
            params.update(weighting=self.weighting, wd=None if self.wd is None else float(self.wd), local=LOCAL_COLUMN,
                          signed_level=SIGNED_LEVEL, **({"spread_z": True} if SPREAD_Z else {}),
                          **({"spread_step": True} if SPREAD_Z and SPREAD_STEP else {}))
            longest = long_context(offset, L, series_length) if self.context_length is None else 0
            if longest:
                # the seasonal index column (seasonal data) and the local smoother read a longer history; windows are
                # still scaled by the lags' context
                params.update(context_length=longest, scale_points=L, **({"long_season": seasons[0]} if seasons else {}))
        else:
            params.update(num_layers=int(self.num_layers), num_cells=int(self.num_cells), seed=int(self.seed),
                          learning_rate=float(self.learning_rate),
                          batch_size=int(self.batch_size or DEFAULT_BATCH[self.model]),
                          min_batches=int(self.min_batches), validation_fraction=float(self.validation_fraction),
                          validation="split" if self.validation_fraction > 0 else "none", centered=True)
        if self.model == "deepar":
            params.update(unroll_context=C, dropout_rate=float(self.dropout_rate))
        return params

    def _static_categories(self, X: Any) -> dict[str, Any]:
        """"deepar": the sorted values of every static column (one extra read of those columns for Dask)."""
        if not self.static:
            return {"categories": [], "embedding_dims": []}
        cats = []
        for col in self.static:
            values = X[col].dropna().astype(str)
            uniq = values.unique() if isinstance(X, pd.DataFrame) else values.unique().compute()
            cats.append(sorted(map(str, uniq)))
        dims = self.embedding_dimension
        if dims is None:
            dims = [embedding_dimension(len(c) + 1) for c in cats]
        elif isinstance(dims, int | np.integer):
            dims = [int(dims)] * len(cats)
        return {"categories": cats, "embedding_dims": [int(d) for d in dims]}

    def _finalize_overrides(self) -> dict[str, Any]:
        return {}

    # ---- fitting ----------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, progress: bool = False, split_every: int = 8,
            checkpoint: str | None = None, checkpoint_every: int | None = None) -> Forecaster:
        """Fit from a long table (pandas, or Dask with each item in one partition).

        ``checkpoint`` (Dask input, ``model="mlp"`` or ``"deepar"``): where the running state is saved
        at round boundaries, so that a repeated call resumes (the twin trained without each series'
        holdout to measure ``calibration_``, at ``checkpoint + "-holdout"``).

        Returns
        -------
        self
        """
        self._validate_params()
        cols = self._columns
        X = _check_frame(X, cols)
        head = _head_partition(X)
        freq = self.freq or infer_freq(head, cols)
        params = self._state_params(freq, _typical_length(X, cols))
        if self.model == "deepar":
            params.update(self._static_categories(X))
        state = STATE_CLASSES[self.model](Schema(tuple(cols.covariates), target=cols.target), params)
        options = self._run_options(progress, split_every, checkpoint, checkpoint_every)
        self._set_state(self._fold_series(X, state, None, options), {})
        return self

    def partial_fit(self, X: Any, y: Any = None, *, history: pd.DataFrame | None = None, progress: bool = False,
                    split_every: int = 8, checkpoint: str | None = None, checkpoint_every: int | None = None
                    ) -> Forecaster:
        """Add new observations of known series, and new series.

        ``model="linear"``: exactly. ``X`` holds only the new rows; ``history`` (pandas)
        holds, for each known item, at least its last ``context_length +
        prediction_length - 1`` points before them, from which the windows that end in
        the new points read their contexts. Only (window, step) pairs whose target is
        one of the new points are added, so the normal equations equal those of a fit on
        all the data at once (the holdout sums, which choose ``wd`` and calibrate the
        spread, gain the new points' last tenth of each item). ``model="mlp"`` and ``"deepar"``: ``epochs`` more
        epochs on ``X`` (Dask partitions the state
        consumed before are skipped). On error the state is unchanged.
        """
        if not hasattr(self, "state_"):
            return self.fit(X, progress=progress, split_every=split_every, checkpoint=checkpoint,
                            checkpoint_every=checkpoint_every)
        self._validate_params()
        X = _check_frame(X, self._columns)
        options = self._run_options(progress, split_every, checkpoint, checkpoint_every)
        self._set_state(self._fold_series(X, self.state_, history, options), self.finalize_overrides_)
        return self

    def _run_options(self, progress: bool, split_every: int, checkpoint: Any, checkpoint_every: Any
                     ) -> FitOptions:
        return FitOptions(split_every=split_every, progress=progress, seed=int(self.seed),
                                 checkpoint=checkpoint, checkpoint_every=checkpoint_every)

    def _fold_series(self, X: Any, state: State, history: pd.DataFrame | None, options: FitOptions
                     ) -> State:
        cols = self._columns
        if isinstance(state, NeuralForecastState):
            if isinstance(X, dd.DataFrame):
                self._check_whole_series(X, cols.id_col, options)
            epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
            schedule = Schedule(epochs=int(epochs), sync_every=int(self.sync_every),
                                patience=self.early_stopping_patience, tolerance=float(self.early_stopping_tolerance),
                                check_every="epoch")
            inp = series_input(X, state.schema, cols)
            if state.phase == "done":  # partial_fit: more epochs on the new partitions
                return train_epochs(inp, state, options, schedule)
            return train_calibrated(inp, state, options, schedule)
        if options.checkpoint is not None:
            raise ValueError("model='linear' is one exact pass with no checkpoint (it merges per-partition sums)")
        if history is not None:
            history = _check_frame(history, cols)
            if not isinstance(history, pd.DataFrame):
                raise TypeError("history must be a pandas DataFrame (the last points of each known item)")
        if isinstance(X, pd.DataFrame):
            batch, _, _ = state.read_batch(X, history, where="input")
            return state.update(batch)
        return self._fold_partitions(X, state, history, options)

    def _fold_partitions(self, X: dd.DataFrame, state: State, history: pd.DataFrame | None,
                         options: FitOptions) -> State:
        """One pass over the partitions (each with ``history`` as its earlier points); the same graph
        returns each partition's items, and a fit whose items are split across partitions fails."""
        cols = self._columns
        inp = series_input(X, state.schema, cols)
        if history is not None:
            hist = dask.delayed(history, name=f"{state.algorithm}-history-{tokenize(history)}")
            inp.parts = [(part, hist) for part in inp.parts]
        merged, lists = self._fold_and_inspect(inp, state, functools.partial(_item_ids, id_col=cols.id_col), options)
        _raise_if_split(lists)
        return merged

    def _check_whole_series(self, X: dd.DataFrame, id_col: str, options: FitOptions) -> None:
        """Raise naming the items with rows in more than one partition (a pass reading only ``id_col``).

        The neural models train in rounds whose windows are cut from each partition's series:
        a split series would give windows across its cut no context and be trained twice over.
        """
        inp = Input(Schema((id_col,)), parts=list(X[[id_col]].to_delayed(optimize_graph=True)))
        _raise_if_split(self._inspect_partitions(inp, functools.partial(_item_ids, id_col=id_col), options,
                                                 name="forecast-items"))

    # ---- finalize -------------------------------------------------------------------------
    def finalize(self, **overrides: Any) -> Forecaster:
        """A new fitted forecaster from the same state; ``wd=`` re-solves the ridge without data ("linear": also
        ``combine=``, ``local_weight=``: how the local exponential-smoothing forecast is mixed in, see
        :meth:`ForecastLinearState.finalize`).

        Anything else (``prediction_length``, ``lags``, ``model``, ...) shapes the state and needs a new ``fit``:
        it raises a ValueError naming it, rather than returning a model that silently keeps the fitted value.
        """
        self._check_fitted()
        accepted = finalize_options(self.state_)
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            raise ValueError(f"finalize: {unknown} cannot change without fitting again (the state was fitted with "
                             f"prediction_length={self.state_.params['prediction_length']}); model={self.model!r} "
                             f"accepts {sorted(accepted) if accepted else 'no overrides'}")
        return super().finalize(**overrides)

    # ---- forecasting ----------------------------------------------------------------------
    def predict(self, X: Any, quantiles: Sequence[float] = DEFAULT_QUANTILES, *,
                future: pd.DataFrame | None = None, num_samples: int | None = None, seed: int = 0) -> Any:
        """Forecast the ``prediction_length`` steps after each item's last timestamp.

        Parameters
        ----------
        X : pandas or Dask DataFrame
            Long table with each item's history (the last ``context_length`` points are read).
            An item the model never saw is forecast from its own history (the model is global).
        quantiles : sequence of float in (0, 1)
        future : pandas DataFrame, optional
            Known covariates for the forecast steps (``id_col``, ``time_col`` and the covariate
            columns); needed when the model has covariates.
        num_samples : int, optional
            Estimate the mean and quantiles from this many sample paths (see
            :meth:`sample_paths`) instead of the model's per-step distributions.
            ``model="deepar"`` always samples (ancestral sampling; default
            :data:`DEFAULT_PATHS` paths).
        seed : int
            Seed of the sample paths (with the partition's item ids).

        Returns
        -------
        DataFrame
            One row per item and future timestamp: ``id_col``, ``time_col``, ``mean`` and one
            column per quantile (``q0.1``, ...); NaN for items without any observed value in
            their context. Lazy (Dask) for Dask input.
        """
        return self._forecast_frame(X, _PredictTask, future, quantiles=_check_quantiles(quantiles),
                                    num_samples=_check_num_samples(num_samples, optional=True), seed=seed)

    def sample_paths(self, X: Any, num_samples: int = 100, *, future: pd.DataFrame | None = None,
                     seed: int = 0) -> Any:
        """Joint draws of each item's next ``prediction_length`` values.

        Parameters
        ----------
        X, future
            As in :meth:`predict`.
        num_samples : int
            Paths per item.
        seed : int
            Seed; with the item ids of a partition it fixes the draws (the same call gives the
            same paths, whatever the scheduler).

        Returns
        -------
        DataFrame
            One row per item and future timestamp: ``id_col``, ``time_col`` and the columns
            ``sample_0`` ... ``sample_{num_samples-1}`` (column ``sample_i`` read down an
            item's rows is path ``i``). A path's value at a step follows the model's predictive
            distribution at that step; the steps of a path are correlated as the errors of a
            linear process with the model's per-step spreads
            (:mod:`daskstate.algorithms.forecast.sampling`). Lazy (Dask) for Dask input.

        Examples
        --------
        >>> import daskstate
        >>> from daskstate.algorithms.forecast.datasets import synthetic_panel
        >>> df = synthetic_panel(5, 60, freq="MS", seed=0)
        >>> paths = daskstate.Forecaster(prediction_length=3).fit(df).sample_paths(df, num_samples=4)
        >>> paths.shape
        (15, 6)
        """
        return self._forecast_frame(X, _SampleTask, future, quantiles=np.zeros(0),
                                    num_samples=_check_num_samples(num_samples), seed=seed)

    def _forecast_frame(self, X: Any, task: type, future: pd.DataFrame | None, **options: Any) -> Any:
        self._check_fitted()
        cols = self._columns
        # a Dask frame indexed by the item id with known divisions holds whole series: no check needed
        indexed = isinstance(X, dd.DataFrame) and X.index.name == cols.id_col and X.known_divisions
        X = _check_frame(X, cols)
        fut = self._check_future(future)
        fn = task(self._model_parts(), cols, self.state_.params, options.pop("quantiles"), self.duplicates,
                  **options)
        fn.id_dtype = X.dtypes[cols.id_col]
        if isinstance(X.dtypes[cols.time_col], pd.DatetimeTZDtype):  # forecasts in the input's time zone
            fn.time_dtype = pd.DatetimeTZDtype("ns", X.dtypes[cols.time_col].tz)
        fn.blas_policy = self.state_.blas_policy
        if isinstance(X, pd.DataFrame):
            return fn(X, fut)
        meta = fn.empty()
        return X[cols.needed].map_partitions(fn, fut, None if indexed else _whole_series_check(X, cols.id_col), meta=meta,
                                             token=f"forecast-{task.kind}-{self._model_token()}-{tokenize(options)}")

    def evaluate(self, X: Any, quantiles: Sequence[float] = EVAL_QUANTILES) -> tuple[dict[str, float], pd.DataFrame]:
        """Backtest on the last ``prediction_length`` grid points of every item.

        The forecast from each item's history without those points is compared with
        them (the model should not have been fitted on them: see :func:`holdout_split`).

        Returns
        -------
        overall : dict
            MASE (seasonal naive scale, mean over items), sMAPE, RMSE, mean weighted
            quantile loss (``wQL``), 80% interval coverage, items and points counted.
        per_item : DataFrame
            The same metrics per item.
        """
        self._check_fitted()
        q = _check_quantiles(quantiles)
        cols = self._columns
        X = _check_frame(X, cols)
        fn = _BacktestTask(self._model_parts(), cols, self.state_.params, q, self.duplicates)
        fn.blas_policy = self.state_.blas_policy
        if isinstance(X, pd.DataFrame):
            pieces = [fn(X)]
        else:
            parts = X[cols.needed].to_delayed(optimize_graph=True)
            pieces = list(self._compute(*[dask.delayed(fn, pure=True)(p) for p in parts]))
            _raise_if_split([p[5] for p in pieces])  # a series cut in two would be backtested twice, on its halves
        items = np.concatenate([p[0] for p in pieces])
        y, mean, qf, scale = (np.concatenate([p[k] for p in pieces]) for k in range(1, 5))
        per_item, overall = forecast_metrics(y, mean, qf, q, scale, leading={cols.id_col: items})
        return overall, per_item

    def plot(self, X: Any, items: Sequence[Any] | None = None, *, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
             last: int | None = None, actual: pd.DataFrame | None = None, future: pd.DataFrame | None = None) -> Any:
        """A fan chart of chosen items (needs the ``plot`` extra, matplotlib): history, forecast mean and bands.

        Parameters
        ----------
        X : pandas or Dask DataFrame
            The long table the forecasts start from (only ``items``' rows are read into memory).
        items : sequence, optional
            Item ids to draw, one panel each (default: the first three items of ``X``).
        quantiles, future
            As in :meth:`predict`; symmetric pairs of quantiles become bands.
        last : int, optional
            Show only each item's last ``last`` history points.
        actual : DataFrame, optional
            Realised values of the forecast period, drawn as points.

        Returns
        -------
        matplotlib.figure.Figure
            (``fig.savefig("forecast.png")`` saves it.)

        Examples
        --------
        >>> fig = fc.plot(df, ["item0"], last=48)  # doctest: +SKIP
        """
        from daskstate.algorithms.forecast.plot import fan_chart
        from daskstate.plot import _pyplot

        _pyplot()  # a clear ImportError naming the extra when matplotlib is missing
        self._check_fitted()
        cols = self._columns
        X = _check_frame(X, cols)
        if items is None:
            items = list(pd.unique(_head_partition(X)[cols.id_col].to_numpy()))[:3]
        items = list(items)
        history = X[X[cols.id_col].isin(items)]
        if isinstance(history, dd.DataFrame):
            history = history.compute()
        forecast = self.predict(history, quantiles, future=future)
        return fan_chart(history, forecast, items, id_col=cols.id_col, time_col=cols.time_col, target=cols.target,
                         last=last, actual=actual)

    def __sklearn_tags__(self) -> Any:
        """A long table in (item id, timestamp, value and covariate columns), not a 2-D array of features.

        scikit-learn's estimator checks feed 2-D numeric arrays whose rows are
        samples, so they skip an estimator tagged this way; ``tests/test_sklearn_compat.py``
        runs the checks that need no data, and long-table versions of the others.
        """
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags

    def _model_parts(self) -> dict[str, Any]:
        if isinstance(self.state_, NeuralForecastState):
            return {"theta_": self.theta_, "network": self.state_.empty_like(),
                    "calibration_": getattr(self, "calibration_", None)}
        return {"coef_": self.coef_, "sigma_": self.sigma_, "nonnegative_": self.nonnegative_,
                "weighting_": self.weighting_, "long_season_": getattr(self, "long_season_", 0),
                "local_season_": getattr(self, "local_season_", 0), "level_points_": getattr(self, "level_points_", 0),
                "spread_": getattr(self, "spread_", None), "spread_season_": getattr(self, "spread_season_", 1)}

    def _check_future(self, future: pd.DataFrame | None) -> pd.DataFrame | None:
        cols = self._columns
        if not cols.covariates:
            return None
        if future is None:
            raise DataError(f"the model uses covariates {list(cols.covariates)}: pass their values for the "
                            "forecast steps as future=<DataFrame with id, time and covariate columns>")
        future = _index_as_columns(future, (cols.id_col, cols.time_col))
        missing = [c for c in (cols.id_col, cols.time_col, *cols.covariates) if c not in future.columns]
        if missing:
            raise SchemaError(f"future: column(s) {missing} missing (columns: {list(future.columns)})")
        return future


# ---- tasks (picklable callables, one per partition) --------------------------------------
def _item_ids(part: pd.DataFrame, id_col: str) -> np.ndarray:
    # unique first, then an array: an Arrow string column is not turned into Python strings row by row
    return np.asarray(part[id_col].unique())


def _whole_series_check(X: dd.DataFrame, id_col: str) -> Any:
    """A delayed check (reading only ``id_col``) that raises naming the items with rows in more than one partition
    of ``X``: a forecast of a split series would silently give one forecast per piece."""
    ids = [dask.delayed(_item_ids, pure=True)(p, id_col) for p in X[[id_col]].to_delayed(optimize_graph=True)]
    return dask.delayed(_raise_if_split, pure=True, name=f"forecast-items-{tokenize(X, id_col)}")(ids)


def _raise_if_split(item_lists: Sequence[np.ndarray]) -> None:
    split = split_items(item_lists)
    if split:
        raise DataError(
            f"{len(split)} item(s) have rows in more than one partition, e.g. {split[:5]}; every series "
            "must live in one partition: use daskstate.partition_by_series(df) first"
        )


class _ModelTask:
    #: the model state's BLAS policy, held around the forecast (set by the estimator)
    blas_policy: BlasPolicy = BlasPolicy()

    def __init__(self, model: dict, cols: Columns, params: dict, quantiles: np.ndarray, duplicates: str,
                 num_samples: int | None = None, seed: int = 0):
        self.model, self.cols, self.params, self.quantiles, self.duplicates = model, cols, params, quantiles, duplicates
        self.num_samples, self.seed = num_samples, int(seed)
        self.offset = as_offset(params["freq"])
        self.lags = np.asarray(params["lags"], dtype=np.int64)

    def _block(self, part: pd.DataFrame, where: str) -> SeriesBlock:
        p = self.params
        return to_series_block(part, self.cols, self.offset, p["context_length"], p["prediction_length"],
                               where=where, duplicates=self.duplicates)

    def _windows(self, block: SeriesBlock, origins: np.ndarray, width: int):
        item = np.arange(len(origins))
        position = block.starts + (origins - block.offsets)
        return iter_windows(block, origins, item, position, int(self.params.get("season", 1)), width,
                            scale_points=self.params.get("scale_points"))

    def _static_codes(self, block: SeriesBlock) -> np.ndarray | None:
        """The linear model's static category indicators per item of ``block`` (origins are one per item)."""
        static = self.params.get("static", ())
        if not static:
            return None
        return static_indicators(block.static, static, int(self.params.get("static_buckets", STATIC_BUCKETS)))

    def _zero_contexts(self, block: SeriesBlock, origins: np.ndarray) -> np.ndarray:
        """(k,) whether each origin's scale window (its last ``scale_points`` context values) is observed and all
        zero. Every model forecasts a window in units of that window's mean absolute value, so such a window has
        no window of its own; the models' forecasts shrink to 0 with that scale, and so do their spreads: a
        series that has been exactly 0 there (an intermittent count series gone quiet) is forecast 0, not NaN."""
        context, _ = block.windows(origins)
        points = self.params.get("scale_points")
        scale, n_obs = context_scale(context if points is None else context[:, -int(points):])
        return (n_obs > 0) & (scale == 0)

    def _sample(self, block: SeriesBlock, origins: np.ndarray) -> np.ndarray:
        """Sample paths (k, S, H) at the given origins (one per item); NaN where no context, 0 where the context
        is all zero (see :meth:`_zero_contexts`)."""
        paths = self._sample_windows(block, origins)
        quiet = np.isnan(paths).all(axis=(1, 2))
        if quiet.any():
            paths[quiet & self._zero_contexts(block, origins)] = 0.0
        return paths

    def _sample_windows(self, block: SeriesBlock, origins: np.ndarray) -> np.ndarray:
        H, S = block.prediction_length, int(self.num_samples or DEFAULT_PATHS)
        if isinstance(self.model.get("network"), ForecastDeepARState):  # ancestral sampling, seeded per item
            return self.model["network"].sample_paths(self.model["theta_"], block, origins, S, self.seed,
                                                      self.model["calibration_"])
        paths = np.full((len(origins), S, H), np.nan)
        rng = partition_rng(self.seed, block.items)
        if "network" in self.model:
            net = self.model["network"]
            for w in self._windows(block, origins, net.n_inputs):
                paths[w.item] = net.sample_paths(self.model["theta_"], w, S, rng, self.model["calibration_"])
            return paths
        codes = self._static_codes(block)
        for w in self._windows(block, origins, len(self.model["coef_"][0])):
            m, s = linear_forecast(self.model, w, self.lags, self.offset, int(self.params.get("harmonics", 3)),
                                   None if codes is None else codes[w.item], bool(self.params.get("calendar_year")))
            paths[w.item] = linear_sample_paths(m, s, self.params.get("likelihood", "student_t"),
                                                self.model["nonnegative_"], S, rng)
        return paths

    def _forecast(self, block: SeriesBlock, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean (k, H) and quantiles (k, H, q) at the given origins (one per item); NaN where no context, 0 where
        the context is all zero (see :meth:`_zero_contexts`).

        With ``num_samples``: estimated from that many sample paths.
        """
        if self.num_samples or isinstance(self.model.get("network"), ForecastDeepARState):
            paths = self._sample(block, origins)
            with np.errstate(invalid="ignore"):
                return paths.mean(axis=1), np.moveaxis(np.quantile(paths, self.quantiles, axis=1), 0, -1)
        H, k = block.prediction_length, len(origins)
        mean = np.full((k, H), np.nan)
        qf = np.full((k, H, len(self.quantiles)), np.nan)
        item = np.arange(k)
        position = block.starts + (origins - block.offsets)
        if "network" in self.model:
            net = self.model["network"]
            for w in iter_windows(block, origins, item, position, int(self.params.get("season", 1)), net.n_inputs,
                                  noise_scales=False):
                mean[w.item], qf[w.item] = net.forecast(self.model["theta_"], w, self.quantiles,
                                                        self.model["calibration_"])
            return self._quiet_zero(block, origins, mean, qf)
        width = len(self.model["coef_"][0])
        codes = self._static_codes(block)
        for w in iter_windows(block, origins, item, position, int(self.params.get("season", 1)), width,
                              scale_points=self.params.get("scale_points")):
            m, s = linear_forecast(self.model, w, self.lags, self.offset, int(self.params.get("harmonics", 3)),
                                   None if codes is None else codes[w.item], bool(self.params.get("calendar_year")))
            nonneg = self.model["nonnegative_"]
            mean[w.item] = np.maximum(m, 0.0) if nonneg else m
            qf[w.item] = distribution_quantiles(m, s, self.quantiles, self.params.get("likelihood", "student_t"),
                                                nonneg)
        return self._quiet_zero(block, origins, mean, qf)

    def _quiet_zero(self, block: SeriesBlock, origins: np.ndarray, mean: np.ndarray, qf: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        quiet = np.isnan(mean).all(axis=1)
        if quiet.any():
            quiet &= self._zero_contexts(block, origins)
            mean[quiet], qf[quiet] = 0.0, 0.0
        return mean, qf


class _PredictTask(_ModelTask):
    """One partition of history -> its forecast frame."""

    id_dtype: Any = object
    time_dtype: Any = "datetime64[ns]"
    kind = "predict"

    def value_columns(self) -> list[str]:
        return ["mean", *(quantile_column(q) for q in self.quantiles)]

    def values(self, block: SeriesBlock) -> np.ndarray:
        """(k, H, columns) in the order of :meth:`value_columns`."""
        mean, qf = self._forecast(block, block.last_origins())
        return np.concatenate([mean[..., None], qf], axis=2)

    def empty(self) -> pd.DataFrame:
        cols = self.cols
        frame = {cols.id_col: pd.Series([], dtype=self.id_dtype), cols.time_col: pd.Series([], dtype=self.time_dtype)}
        frame.update({c: pd.Series([], dtype=np.float64) for c in self.value_columns()})
        return pd.DataFrame(frame)

    def __call__(self, part: pd.DataFrame, future: pd.DataFrame | None = None, whole_series: Any = None
                 ) -> pd.DataFrame:
        # ``whole_series``: the result of :func:`_whole_series_check` (Dask input), a dependency that raises first
        if len(part) == 0:
            return self.empty()
        block = self._block(part, self.kind)
        if self.cols.covariates:
            self._fill_future(block, future)
        with self.blas_policy.limit():
            values = self.values(block)
        k, H, _ = values.shape
        times = aware_times(grid_timestamps(block.last_time, self.offset, H), block.tz, self.offset)
        # a categorical id takes the partition's own categories (a Dask frame's meta may list none: its ids were NaN)
        id_dtype = part[self.cols.id_col].dtype if isinstance(self.id_dtype, pd.CategoricalDtype) else self.id_dtype
        out = {self.cols.id_col: pd.Series(np.repeat(block.items, H), dtype=id_dtype),
               self.cols.time_col: times}
        for j, c in enumerate(self.value_columns()):
            out[c] = values[:, :, j].ravel()
        return pd.DataFrame(out)

    def _fill_future(self, block: SeriesBlock, future: pd.DataFrame) -> None:
        cols, H = self.cols, block.prediction_length
        unknown = set(pd.unique(future[cols.id_col])) - set(block.items)
        fut = future[future[cols.id_col].isin(block.items)]
        code = pd.Index(block.items).get_indexer(fut[cols.id_col].to_numpy())
        pos = grid_positions(fut[cols.time_col], self.offset, "future")
        step = pos - block.starts[code] - block.lengths[code]          # 0 .. H-1 for the forecast steps
        ok = (step >= 0) & (step < H)
        flat = block.offsets[code[ok]] + block.lengths[code[ok]] + step[ok]
        block.covariates[flat] = fut[list(cols.covariates)].to_numpy(np.float64)[ok]
        idx = (block.offsets + block.lengths)[:, None] + np.arange(H)[None, :]
        missing = np.isnan(block.covariates[idx]).any(axis=(1, 2))
        if missing.any():
            raise DataError(f"future: covariates {list(cols.covariates)} are missing for some of the "
                            f"{H} forecast steps of {int(missing.sum())} item(s), e.g. "
                            f"{list(block.items[missing][:5])}")
        del unknown  # items only in ``future`` have no history here (maybe in another partition)


class _SampleTask(_PredictTask):
    """One partition of history -> its sample paths, one column per path."""

    kind = "sample"

    def value_columns(self) -> list[str]:
        return [sample_column(i) for i in range(int(self.num_samples))]

    def values(self, block: SeriesBlock) -> np.ndarray:
        return self._sample(block, block.last_origins()).transpose(0, 2, 1)


class _BacktestTask(_ModelTask):
    """One partition -> (items, actuals, mean, quantiles, MASE scale) of its last-H backtest."""

    def __call__(self, part: pd.DataFrame):
        H, q = int(self.params["prediction_length"]), len(self.quantiles)
        if len(part) == 0:
            return (np.array([], dtype=object), np.zeros((0, H)), np.zeros((0, H)), np.zeros((0, H, q)), np.zeros(0),
                    np.array([], dtype=object))
        block = self._block(part, "evaluate")
        ok = block.lengths > H
        origins = (block.offsets + block.lengths - 1 - H)[ok]
        sub = np.flatnonzero(ok)
        with self.blas_policy.limit():
            mean, qf = self._forecast(block, origins)
        y = block.values[origins[:, None] + np.arange(1, H + 1)[None, :]]
        season = int(self.params.get("season", 1))
        scale = _history_scale(block, sub, H, season)
        return block.items[sub], y, mean, qf, scale, block.items


def _history_scale(block: SeriesBlock, sub: np.ndarray, H: int, season: int) -> np.ndarray:
    """MASE scale of each item in ``sub``: in-sample seasonal naive MAE of all but its last H points."""
    out = np.full(len(sub), np.nan)
    hist_len = block.lengths[sub] - H
    for lag in dict.fromkeys((season, 1)):
        item = np.repeat(np.arange(len(sub)), hist_len)
        start = np.concatenate([[0], np.cumsum(hist_len)[:-1]]).astype(np.int64)
        j = np.arange(int(hist_len.sum())) - start[item]
        flat = block.offsets[sub][item] + j
        valid = j >= lag
        d = np.abs(block.values[flat[valid]] - block.values[flat[valid] - lag])
        ok = ~np.isnan(d)
        s = np.bincount(item[valid][ok], d[ok], len(sub))
        c = np.bincount(item[valid][ok], minlength=len(sub))
        fill = np.isnan(out) & (c > 0)
        out[fill] = s[fill] / c[fill]
    return out


# ---- helpers ---------------------------------------------------------------------------
def holdout_split(df: pd.DataFrame, prediction_length: int, id_col: str = "item_id",
                  time_col: str = "timestamp") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)``: each item's rows without / with only its last ``prediction_length`` timestamps.

    Examples
    --------
    >>> df = pd.DataFrame({"item_id": ["a"] * 5, "timestamp": pd.date_range("2020", periods=5), "target": range(5)})
    >>> [len(p) for p in holdout_split(df, 2)]
    [3, 2]
    """
    rank = df.groupby(id_col)[time_col].rank(method="dense", ascending=False)
    test = rank <= prediction_length
    return df[~test], df[test]


def _check_quantiles(quantiles: float | Sequence[float]) -> np.ndarray:
    """The requested quantile levels as a 1-d array: a single number is one level; repeats are dropped (one
    column each), the order is kept."""
    try:
        q = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"quantiles must be numbers in (0, 1), got {quantiles!r}") from None
    if q.ndim != 1 or not len(q) or not ((q > 0) & (q < 1)).all():
        raise ValueError(f"quantiles must be numbers in (0, 1), got {q.tolist()}")
    return pd.unique(q)


def finalize_options(state: State) -> set[str]:
    """The overrides the state's ``finalize`` takes by name (none for the neural models)."""
    params = inspect.signature(type(state).finalize).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_num_samples(num_samples: Any, optional: bool = False) -> int | None:
    if num_samples is None and optional:
        return None
    if not (isinstance(num_samples, int | np.integer) and num_samples >= 1):
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return int(num_samples)


def _check_frame(X: Any, cols: Columns) -> Any:
    """``X`` as a long table with the needed columns (an index named as the id or time column becomes a column),
    or a TypeError / SchemaError naming what is missing."""
    if not isinstance(X, pd.DataFrame | dd.DataFrame):
        raise TypeError(f"a Forecaster takes a long pandas or Dask DataFrame ({cols.needed}), "
                        f"not {type(X).__name__}")
    X = _index_as_columns(X, (cols.id_col, cols.time_col))
    cols.check(X.columns, "input")
    return X


def _index_as_columns(X: Any, names: Sequence[str]) -> Any:
    """``X`` with the index levels named as one of ``names`` (and not also a column) moved to columns: a frame
    indexed by its timestamps (``set_index(time_col)``, ``dd.read_parquet`` of such a frame) or by (item, time)."""
    index_names = X.index.names if isinstance(X, pd.DataFrame) else [X.index.name]
    levels = [n for n in index_names if n in names and n not in X.columns]
    if not levels:
        return X
    if isinstance(X, dd.DataFrame):
        return X.reset_index()
    return X.reset_index(level=levels)


def _typical_length(X: Any, cols: Columns) -> int:
    """Median number of rows per item (it shapes the default lags and the linear model's long context).

    For Dask input a pass over ``id_col`` alone: read from the first partition only, the same data gave another
    model from Parquet than from pandas, and another for every partitioning."""
    if isinstance(X, dd.DataFrame):
        sizes = X[cols.id_col].value_counts().compute()
        return int(sizes[sizes > 0].median())
    codes, _ = pd.factorize(X[cols.id_col])
    codes = codes[codes >= 0]  # as groupby: rows without an id are not an item
    if not len(codes):
        return int(X.groupby(cols.id_col, sort=False).size().median())
    return int(np.median(np.bincount(codes)))


def _head_partition(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    for i in range(X.npartitions):
        part = X.get_partition(i).compute()
        if len(part):
            return part
    raise DataError("input: every partition is empty")
