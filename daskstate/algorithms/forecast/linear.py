"""The global linear forecaster: direct multi-horizon autoregression from normal equations.

For every horizon step ``h`` one linear model maps a window's scaled context
(the lags chosen from the frequency), the seasonal index of the target step averaged
over a longer history (when the series are long enough: see
:func:`~daskstate.algorithms.forecast.windows.seasonal_index`), the date features of the
target step and the known covariates to the scaled target ``y[t+h] / scale``. Windows are weighted by
``1 / noise^2`` (their relative noise scale), which makes the fit a weighted least
squares in the units MASE measures errors in.

State (all sums, so ``merge`` adds them and a fit is exact in one pass)::

    gram (H, p, p)   sum_i w_i x_ih x_ih^T   over the (window, h) pairs with an observed target
    xty  (H, p)      sum_i w_i x_ih y_ih
    yty  (H,)        sum_i w_i y_ih^2
    pairs (H,)       number of such pairs
    holdout_*        the same four sums over the pairs whose target is in the last tenth
                     (at least H points) of its series
    target_range (2,) smallest and largest target seen (non-negative data gives non-negative forecasts)
    spread_*         with ``params["spread_z"]`` (new fits: :data:`SPREAD_Z`): gram, xty, yty weighted by
                     ``w_i z_i`` too, and per step sum z, sum z^2 (see :meth:`ForecastLinearState.spread_model`)
    step_*           with ``params["spread_step"]`` (new fits: :data:`SPREAD_STEP`): gram, xty, yty weighted per
                     pair by ``w_i z_ih`` (:func:`step_spread_feature`), and per step sum z_s, sum z_s^2, sum z z_s

``finalize`` solves the ridge system ``(gram_h + s_h wd I) w_h = xty_h + s_h wd w0_h``
(``s_h`` the mean diagonal of ``gram_h``; ``w0`` zero or the seasonal naive forecast) for
any penalty without data. The weighted residual sum of squares of a solution on any
of the sums follows from them, ``yty - 2 w.xty + w.gram.w``; so ``wd`` and ``w0`` are
chosen by the holdout error of the model solved on ``sums - holdout`` (a backtest kept
in the state), and the in-sample spread per step is scaled by how much larger that
holdout error is than its in-sample error at that step. The predictive distribution at step ``h``
of a window is centred on its forecast with spread ``sigma_h * noise * scale``.

With ``params["local"]`` (new fits) one design column is each window's **local forecast**: exponential
smoothing of its own context (:mod:`~daskstate.algorithms.forecast.local`). Its sums with every other
column let ``finalize`` mix it in without data: by default ``(1 - a_h)`` times the global model plus
``a_h`` times the local forecast, ``a_h`` per step the least-squares weight on the holdout pairs
(:func:`convex_weights`); the global model carries the panel's dynamics, the local one each series' own
level and trend.

Training windows need half their context observed: a window at a series' very start
would get its noise scale from one or two differences and, weighted by ``1/noise^2``,
could dominate the fit.

Why direct and not recursive: the per-step models are fitted on exactly the errors
each step makes, so the residual statistics per step come out of the same one-pass
state, with no simulation and no compounding of one-step errors; the cost is a
``p x p`` matrix per step instead of one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, ClassVar

import numpy as np
from scipy import special, stats
from scipy.optimize import isotonic_regression

from daskstate.algorithms.forecast.base import SeriesBatch, SeriesStateMixin
from daskstate.algorithms.forecast.lstm import Workspace
from daskstate.algorithms.forecast.sampling import correlated_uniforms, marginal_ppf
from daskstate.algorithms.forecast.series import (
    SeriesBlock,
    as_offset,
    n_date_features,
    static_indicators,
)
from daskstate.algorithms.forecast.windows import (
    Windows,
    iter_windows,
    lag_design,
    lagged_values,
    noise_ratio,
    step_design,
)
from daskstate.errors import StateError
from daskstate.numerics import single_blas_thread
from daskstate.state import State, register

#: ridge penalties per training pair tried by ``finalize`` (chosen on the holdout pairs)
WD_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: what the ridge penalty shrinks the lag coefficients to
PRIORS = ("zero", "seasonal")
#: the holdout is the last 1/HOLDOUT_FRACTION of each series (at least prediction_length points)
HOLDOUT_FRACTION = 10
#: hashed indicator columns per static category column
STATIC_BUCKETS = 16
#: the ridge penalty when there is no holdout to choose it by
DEFAULT_WD = 1e-4
#: how the global model and the local forecast column combine (see ``ForecastLinearState.finalize``)
COMBINES = ("none", "convex", "feature")
DEFAULT_COMBINE = "convex"
#: which pairs choose the convex weight of the local forecast ("holdout" or "all")
WEIGHT_FROM = "holdout"
#: one convex weight for all horizon steps (True) or one per step
POOLED = False
#: whether the holdout's convex weight per step is shrunk toward equal weights (1/2) by its own sampling
#: uncertainty (fctrend): ``1/2 + (a - 1/2) t^2 / (1 + t^2)`` with ``t = (a - 1/2) / se(a)``, the standard error of the
#: least-squares weight from the same holdout sums (:func:`convex_weights`). A weight the holdout cannot tell from 1/2
#: (few series, a global and a local forecast of nearly the same holdout error) stays near 1/2 instead of following
#: its noise to 0 or 1; a weight estimated from many pairs is kept
SHRINK_WEIGHT = False
#: whether new fits add the local forecast column (``params["local"]``)
LOCAL_COLUMN = True
#: whether new fits make the intercept column each window's signed level (``params["signed_level"]``, see
#: :func:`~daskstate.algorithms.forecast.windows.step_design`; 1 for windows without negative values)
SIGNED_LEVEL = True
#: how ``finalize`` calibrates the spread per step: "overfit", the holdout error of the model solved without the
#: holdout over the final model's error on the same pairs (the holdout period's own volatility cancels: the
#: windows' noise scale already follows it); "holdout" (before fclin5), over its in-sample error on the other pairs
CALIBRATE = "overfit"
#: degrees of freedom of the "student_t" predictive distribution (its variance matched to the spread): the
#: residuals in noise units pool windows whose error-to-noise ratio differs (a scale mixture), so their
#: distribution is peaked with heavy tails; 4 measured against 3, 5 and 8 in docs/forecasting-linear.md
STUDENT_DF = 4.0
#: whether new fits keep the sums of a per-window spread (``params["spread_z"]``; see
#: :meth:`ForecastLinearState.spread_model`): the residual variance per step a linear function of the window's
#: :func:`spread_feature`, solved exactly at finalize. On since fcspread: wQL over 36 (panel, origin) pairs 1.3%
#: better, fpp2_uschange's 19% better, one pair 5.3% worse but still 0.60 of ETS's (docs/forecasting-linear.md)
SPREAD_Z = True
#: whether new fits (with :data:`SPREAD_Z`) also keep the sums of a per-step term of that spread
#: (``params["spread_step"]``): the residual variance a plane in the window's :func:`spread_feature` and the target
#: step's :func:`step_spread_feature`, so a multiplicative season's peak months get the wider spread (fcmon: wQL over
#: 36 pairs 1.0% better, fpp2_monthly's souvenirs; docs/forecasting-linear.md)
SPREAD_STEP = True
#: the largest value of the spread feature (the squared noise ratio), so a few windows cannot lever the fit
SPREAD_CAP = 25.0
#: the smallest relative variance a window's spread model may give (a share of the step's mean)
SPREAD_FLOOR = 0.25
#: whether the fold keeps its windows, design columns and products' temporaries in buffers reused from batch to batch
#: (the same numbers; False: every batch's arrays fresh, as before fcscale). Fresh arrays above glibc's mmap threshold
#: are faulted in page by page where freed memory goes back to the system at once (``MALLOC_TRIM_THRESHOLD_``, as
#: Dask's workers run): docs/forecasting-linear.md, "Scale and page faults (fcscale)"
FOLD_WORKSPACE = True


@register
class ForecastLinearState(SeriesStateMixin, State):
    """Normal equations of the direct multi-horizon linear forecaster.

    Parameters (``params``): ``freq``, ``lags``, ``prediction_length``,
    ``context_length``, ``harmonics``, ``weighting`` ("noise" or "none"), ``wd``.

    Examples
    --------
    >>> from daskstate.state import Schema
    >>> s = ForecastLinearState(Schema((), target="target"),
    ...     {"freq": "QS-JAN", "lags": [1, 2, 3, 4], "prediction_length": 2, "context_length": 4})
    >>> s.gram.shape
    (2, 8, 8)
    """

    algorithm: ClassVar[str] = "forecast_linear"
    array_names: ClassVar[tuple[str, ...]] = ("gram", "xty", "yty", "pairs", "holdout_gram", "holdout_xty",
                                              "holdout_yty", "holdout_pairs", "target_range", "spread_gram",
                                              "spread_xty", "spread_yty", "spread_moments", "step_gram", "step_xty",
                                              "step_yty", "step_moments")
    summed_arrays: ClassVar[tuple[str, ...]] = tuple(n for n in array_names if n != "target_range")
    #: the per-window spread's sums (with ``params["spread_z"]``; states without it neither keep nor save them)
    spread_arrays: ClassVar[tuple[str, ...]] = array_names[-8:-4]
    #: the per-step spread term's sums (with ``params["spread_step"]``)
    step_arrays: ClassVar[tuple[str, ...]] = array_names[-4:]

    blas_threads: ClassVar[int | None] = 1
    # the fit's products ((n, p) windows x (p, p) per step), finalize's solves and the forecasts are small: a second
    # BLAS thread on the main thread (in-memory fits) mostly spin-waits, and its CPU counts against the fit
    blas_on_main_thread: ClassVar[bool] = True

    # ---- hyperparameters (offset, lags, horizon, harmonics, season: SeriesStateMixin) -----
    @property
    def n_design(self) -> int:
        """Columns of a design row: lags, seasonal index (if any), date features, covariates, static
        category indicators, intercept."""
        return (len(self.lags) + bool(self.long_season) + bool(self.local_season)
                + _date_feature_count(self.params["freq"], self.harmonics) + self.n_features + self.n_static + 1)

    @property
    def local_season(self) -> int:
        """The season of the local forecast column (:func:`~daskstate.algorithms.forecast.local.local_forecast`
        of each window's own context; 0: no such column, as in states saved before it)."""
        return self.season if self.params.get("local") else 0

    @property
    def local_column(self) -> int | None:
        """Index of the local forecast column in a design row (None without it)."""
        return len(self.lags) + bool(self.long_season) if self.local_season else None

    @property
    def level_points(self) -> int:
        """The context points whose signed mean is the intercept column (0: the intercept is 1, as in states
        saved before it; see :func:`~daskstate.algorithms.forecast.windows.signed_level`)."""
        return self.scale_points if self.params.get("signed_level") else 0

    @property
    def long_season(self) -> int:
        """The season of the seasonal index column (:func:`~daskstate.algorithms.forecast.windows.seasonal_index`;
        0: none): the context then reaches past the lags, see :func:`~daskstate.algorithms.forecast.series.long_context`."""
        return int(self.params.get("long_season", 0))

    @property
    def spread_z(self) -> bool:
        """Whether the state keeps the sums of the per-window spread (:meth:`spread_model`)."""
        return bool(self.params.get("spread_z"))

    @property
    def spread_step(self) -> bool:
        """Whether the state keeps the sums of the per-step spread term too (:meth:`spread_model`; needs
        :attr:`spread_z`)."""
        return self.spread_z and bool(self.params.get("spread_step"))

    @property
    def n_static(self) -> int:
        """Indicator columns of the static categories: per-category intercepts (hashed, see
        :func:`~daskstate.algorithms.forecast.series.static_indicators`)."""
        return len(self.params.get("static", ())) * int(self.params.get("static_buckets", STATIC_BUCKETS))

    def static_codes(self, block: SeriesBlock) -> np.ndarray | None:
        """Per item of ``block``: its static category indicators (None without static columns)."""
        if not self.n_static:
            return None
        return static_indicators(block.static, self.params["static"],
                                 int(self.params.get("static_buckets", STATIC_BUCKETS)))

    @property
    def scale_points(self) -> int:
        """The last context values a window's scale and noise scale come from (default: the whole context)."""
        return int(self.params.get("scale_points") or self.params["context_length"])

    @property
    def min_observed(self) -> int:
        """Observed values among the last :attr:`scale_points` a training window needs: half of them
        (its scale and noise scale are estimated from them; a window at a series' very start would get
        a noise scale from one or two differences and, weighted by ``1/noise^2``, dominate the fit)."""
        return int(self.params.get("min_observed", -(-self.scale_points // 2)))

    # ---- arrays ------------------------------------------------------------------------
    def _init_arrays(self) -> None:
        H, p = self.horizon, self.n_design
        self.gram = np.zeros((H, p, p))
        self.xty = np.zeros((H, p))
        self.yty = np.zeros(H)
        self.pairs = np.zeros(H)
        self.holdout_gram = np.zeros((H, p, p))
        self.holdout_xty = np.zeros((H, p))
        self.holdout_yty = np.zeros(H)
        self.holdout_pairs = np.zeros(H)
        self.target_range = np.array([np.inf, -np.inf])
        # z-weighted copies of the normal equations and, per step, the sums of z and z^2 over the pairs
        Hz = H if self.spread_z else 0
        self.spread_gram = np.zeros((Hz, p, p))
        self.spread_xty = np.zeros((Hz, p))
        self.spread_yty = np.zeros(Hz)
        self.spread_moments = np.zeros((Hz, 2))
        # the same with the per-(window, step) feature; moments per step: sum z_s, sum z_s^2, sum z z_s
        Hs = H if self.spread_step else 0
        self.step_gram = np.zeros((Hs, p, p))
        self.step_xty = np.zeros((Hs, p))
        self.step_yty = np.zeros(Hs)
        self.step_moments = np.zeros((Hs, 3))

    def arrays(self) -> dict[str, np.ndarray]:
        """The state's arrays; without ``params["spread_z"]`` the same as a state saved before it (none of
        :attr:`spread_arrays`), without ``params["spread_step"]`` none of :attr:`step_arrays`."""
        out = super().arrays()
        absent = (() if self.spread_z else self.spread_arrays) + (() if self.spread_step else self.step_arrays)
        for name in absent:
            del out[name]
        return out

    # ---- update --------------------------------------------------------------------------
    def _update(self, X: SeriesBatch, y: Any, context: Any) -> None:
        """Fold a partition's windows (a :class:`SeriesBatch` from ``read_batch``)."""
        self.fold_block(X.block, X.first_target)

    def fold_block(self, block: SeriesBlock, first_target: np.ndarray | None = None) -> None:
        """Fold ``block``'s windows into ``self`` in place (private copies only).

        ``first_target`` (per item, a grid position) counts only the (window, h) pairs
        whose target lies at or after it: the new points of a known series.
        """
        origins, item, position = block.origins()
        observed = block.values[~np.isnan(block.values)]
        if len(observed):
            self.target_range = np.array([min(self.target_range[0], observed.min()),
                                          max(self.target_range[1], observed.max())])
        # the holdout: each series' last tenth, at least its last H points
        holdout_start = block.starts + block.lengths - np.maximum(self.horizon, block.lengths // HOLDOUT_FRACTION)
        codes = self.static_codes(block)
        work = Workspace()  # the products' step-by-step buffers, reused from batch to batch (fewer page faults)
        windows_work = work if FOLD_WORKSPACE else None  # and the windows' and design columns' buffers
        for w in iter_windows(block, origins, item, position, self.season, self.n_design, self.min_observed,
                              self.scale_points, work=windows_work):
            self._fold_windows(w, None if first_target is None else first_target[w.item], holdout_start[w.item],
                               None if codes is None else codes[w.item], work)

    def _fold_windows(self, w: Windows, first_target: np.ndarray | None, holdout_start: np.ndarray,
                      static: np.ndarray | None = None, work: Workspace | None = None) -> None:
        """Add the windows' weighted products to the normal equations of every horizon step,
        and those of the pairs whose target is at or after ``holdout_start`` (per window: the
        last tenth of its series, at least ``H`` points) to the holdout sums too. ``work``: the products'
        buffers, and with :data:`FOLD_WORKSPACE` the lags' and design columns' (the same numbers)."""
        buffers = work if FOLD_WORKSPACE else None
        lagged = lagged_values(w, self.lags, buffers)                      # (n, l)
        extra = step_design(w, self.offset, self.harmonics, static, self.long_season, self.local_season,
                            self.level_points, self.calendar_year, buffers)              # (n, H, e)
        mask = ~np.isnan(w.target) & ~np.isnan(extra).any(axis=2)          # (n, H)
        target_pos = w.position[:, None] + np.arange(1, self.horizon + 1)[None, :]
        if first_target is not None:
            mask &= target_pos >= first_target[:, None]
        weight = 1.0 / w.noise**2 if self.params.get("weighting", "noise") == "noise" else np.ones(len(w.noise))
        held = mask & (target_pos >= holdout_start[:, None])
        rows = held.any(axis=1)
        if rows.any():
            hold = (self.holdout_gram, self.holdout_xty, self.holdout_yty, self.holdout_pairs)
            _add_products([([hold], weight[rows], None)], lagged[rows], extra[rows], w.target[rows], held[rows], work)
        sets = [([(self.gram, self.xty, self.yty, self.pairs)], weight, None)]
        if self.spread_z:
            z = spread_feature(w, self.season, buffers)
            sets.append(([(self.spread_gram, self.spread_xty, self.spread_yty, np.zeros(self.horizon))], weight * z,
                         None))
            self.spread_moments += np.stack([mask.T @ z, mask.T @ (z * z)], axis=1)
            if self.spread_step:
                step = (self.step_gram, self.step_xty, self.step_yty, np.zeros(self.horizon))
                columns = step_spread_columns(w, self.long_season or self.season, self.horizon)
                if columns is None:  # z_s is 1 at every pair: the step sums get the main sums' products
                    sets[0][0].append(step)
                    zs = np.ones_like(w.target)
                else:
                    sets.append(([step], weight[:, None] * columns[0], columns[1]))
                    zs = columns[0][:, columns[1]]                                                # (n, H)
                on = np.where(mask, zs, 0.0)
                self.step_moments += np.stack([on.sum(axis=0), (on * zs).sum(axis=0), z @ on], axis=1)
        _add_products(sets, lagged, extra, w.target, mask, work)

    # ---- merge ---------------------------------------------------------------------------
    def _merge(self, other: ForecastLinearState) -> None:
        for name in self.summed_arrays:
            getattr(self, name).__iadd__(getattr(other, name))
        self.target_range = np.array([min(self.target_range[0], other.target_range[0]),
                                      max(self.target_range[1], other.target_range[1])])

    # ---- finalize ------------------------------------------------------------------------
    def finalize(self, wd: float | None = None, prior: str | None = None, combine: str | None = None,
                 local_weight: float | None = None, weight_from: str | None = None, pooled: bool | None = None,
                 calibrate: str | None = None, **_: Any) -> dict[str, Any]:
        """Coefficients and calibrated residual spread per horizon step.

        ``wd`` (the ridge penalty per training pair on every coefficient but the intercept)
        and ``prior`` (what the penalty shrinks the coefficients to: ``"zero"``, or
        ``"seasonal"``, the seasonal naive forecast: weight 1 on the lag that is one cycle
        before the target step) are chosen from the grids :data:`WD_GRID` x :data:`PRIORS`
        by the weighted squared error on the holdout pairs (targets among each series'
        last tenth, at least ``H`` points) of the model solved on the other pairs, unless given (here or
        as the state's ``wd`` parameter). Everything is solved from the state's sums: no data.

        ``combine`` (states with the local forecast column, see :attr:`local_column`; default the
        state's ``combine`` parameter, else :data:`DEFAULT_COMBINE`): ``"none"``, the global model
        without that column; ``"convex"``, ``(1 - a_h)`` times the global model plus ``a_h`` times the local
        forecast, ``a_h`` in [0, 1] per step the least-squares weight on the holdout pairs of the model
        solved without them (closed form from the sums: :func:`convex_weights`); ``"feature"``, the local
        forecast as one more column of the global regression. ``local_weight`` (with ``"convex"``): the
        weight ``a`` of every step given instead of chosen. ``weight_from`` (default :data:`WEIGHT_FROM`):
        ``"holdout"``, the weight of least error on the holdout pairs of the model solved without them;
        ``"all"``, on every pair with the final model (its in-sample errors: the local forecast is out of
        sample at every window, the global one is not, which leans the weight toward the global model).
        ``pooled`` (default :data:`POOLED`): one weight for all steps instead of one per step.

        The spread ``sigma_h`` is the in-sample residual spread of the final model times the
        ratio (``calibration_``, per step: see :func:`_calibration`) of the holdout error of the model
        solved without the holdout to, with ``calibrate="overfit"`` (default :data:`CALIBRATE`), the final
        model's error on the same holdout pairs, or with ``calibrate="holdout"`` its own in-sample error:
        in-sample residuals understate the error of a forecast, more so further ahead. Compared on the
        same pairs, a holdout period more volatile than the history (a crisis in the last tenth) does not
        widen every later forecast; each window's noise scale already follows its own context's volatility.

        The model is solved once per options and sums: ``finalize`` again with the same options (defaults filled
        in, see :meth:`finalize_options`) on a state whose arrays, parameters and schema are unchanged (a digest of
        them is kept with the model) returns a copy of the model solved before, the same numbers.
        """
        options = self.finalize_options(wd, prior, combine, local_weight, weight_from, pooled, calibrate)
        key = self._finalize_key(options)
        kept = self.__dict__.get("_finalized")
        if kept is None or kept[0] != key:
            # one BLAS thread over all of finalize's small solves: entered once, not once per solve (each change of
            # OpenBLAS's thread count costs as much as a solve)
            with single_blas_thread(main_thread=True):
                kept = (key, self._finalize(**options))
            self._finalized = kept
        return _copied(kept[1])

    def finalize_options(self, wd: float | None = None, prior: str | None = None, combine: str | None = None,
                         local_weight: float | None = None, weight_from: str | None = None, pooled: bool | None = None,
                         calibrate: str | None = None) -> dict[str, Any]:
        """The options :meth:`finalize` solves with: the given ones checked, the others from the state's parameters
        or the module's defaults (``wd`` and ``prior`` None: chosen on the holdout pairs)."""
        if not (self.pairs > 0).any():
            raise StateError(f"the linear forecaster's state has seen no training windows: a window needs "
                             f"{self.min_observed} observed context values (half of its last {self.scale_points} "
                             "points) and a target after them; are the series that short?")
        wd = self.params.get("wd") if wd is None else wd
        if wd is not None and not float(wd) >= 0:
            raise StateError(f"wd must be >= 0, got {wd}")
        if prior is not None and prior not in PRIORS:
            raise StateError(f"prior must be one of {PRIORS}, got {prior!r}")
        j = self.local_column
        combine = combine or self.params.get("combine") or (DEFAULT_COMBINE if j is not None else "none")
        if combine not in COMBINES:
            raise StateError(f"combine must be one of {COMBINES}, got {combine!r}")
        if local_weight is not None and not 0 <= float(local_weight) <= 1:
            raise StateError(f"local_weight must be in [0, 1], got {local_weight}")
        weight_from = weight_from or self.params.get("weight_from") or WEIGHT_FROM
        if weight_from not in ("holdout", "all"):
            raise StateError(f"weight_from must be 'holdout' or 'all', got {weight_from!r}")
        if j is None and combine != "none":
            raise StateError(f"combine={combine!r} needs the local forecast column, which this state has not got "
                             "(saved before it, or fitted with params['local'] False)")
        calibrate = calibrate or self.params.get("calibrate") or CALIBRATE
        if calibrate not in ("holdout", "overfit"):
            raise StateError(f"calibrate must be 'holdout' or 'overfit', got {calibrate!r}")
        return {"wd": None if wd is None else float(wd), "prior": prior, "combine": combine,
                "local_weight": None if local_weight is None else float(local_weight), "weight_from": weight_from,
                "pooled": POOLED if pooled is None else bool(pooled), "calibrate": calibrate}

    def _finalize_key(self, options: dict[str, Any]) -> tuple:
        """What a finalized model depends on: the options, this module's constants (the grids it chooses from, the
        switches; as patched at the time), the parameters, the schema and a digest of the arrays (so a state changed
        in place is solved again)."""
        digest = hashlib.blake2b(digest_size=16)
        for name, a in self.arrays().items():
            a = np.ascontiguousarray(a)
            digest.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
            digest.update(a.data)
        constants = tuple((k, repr(v)) for k, v in globals().items() if k.isupper())
        return (tuple(sorted(options.items())), constants, json.dumps(self.params, sort_keys=True, default=str),
                tuple(self.schema.features), digest.hexdigest())

    def _finalize(self, wd: float | None, prior: str | None, combine: str, local_weight: float | None,
                  weight_from: str, pooled: bool, calibrate: str) -> dict[str, Any]:
        j = self.local_column
        # the columns of the global linear part
        keep = None if combine == "feature" or j is None else np.delete(np.arange(self.n_design), j)
        candidates = [(float(w), pr) for w in ((wd,) if wd is not None else WD_GRID)
                      for pr in ((prior,) if prior is not None else PRIORS)]
        train = tuple(getattr(self, n) - getattr(self, "holdout_" + n) for n in ("gram", "xty", "yty", "pairs"))
        hold = (self.holdout_gram, self.holdout_xty, self.holdout_yty, self.holdout_pairs)
        everything = (self.gram, self.xty, self.yty, self.pairs)
        can_validate = (train[3] > 0).any() and (hold[3] > 0).any()
        scores = []
        if can_validate:
            solved = self._candidate_coefficients(train, candidates, keep)
            scores = [float(_sse(coef, hold).sum() / hold[3].sum()) for coef in solved]
            best = int(np.argmin(scores))
            wd_best, prior_best = candidates[best]
        else:  # no holdout to choose by (a partial fit's new points only, or series of under H points)
            wd_best, prior_best = (DEFAULT_WD if wd is None else float(wd)), prior or "zero"
        coef, sigma, _ = self._solve(everything, wd_best, prior_best, keep)
        dof = self.n_design - (0 if keep is None else 1)
        weight = np.zeros(self.horizon)
        calibration = np.ones(self.horizon)
        holdout_sse = np.full(self.horizon, np.nan)
        if can_validate:
            if combine == "convex":
                coef_t = solved[best]  # the chosen candidate, solved on the same sums (its spread is not needed)
                if local_weight is not None:
                    weight = np.full(self.horizon, float(local_weight))
                elif weight_from == "all":
                    weight = convex_weights(coef, j, everything)
                else:
                    pooled = POOLED if pooled is None else bool(pooled)
                    weight = convex_weights(coef_t, j, hold, pooled, shrink=SHRINK_WEIGHT)
                coef_t = _toward_local(coef_t, j, weight)
                sigma_t = _spread(coef_t, train, dof)
            else:
                coef_t, sigma_t, _ = self._solve(train, wd_best, prior_best, keep)
            holdout_sse = _sse(coef_t, hold)
            calibration = _calibration(holdout_sse, hold[3], sigma_t)
        if combine == "convex":
            if not can_validate and local_weight is not None:
                weight = np.full(self.horizon, float(local_weight))
            coef = _toward_local(coef, j, weight)
            sigma = _spread(coef, everything, dof)
        if can_validate and calibrate == "overfit":
            # the holdout error of the model solved without the holdout over that of the final model on the same
            # pairs: how much a forecast's error exceeds an in-sample one, without the holdout period's own volatility
            calibration = _calibration(holdout_sse, hold[3], np.sqrt(_sse(coef, hold) / np.maximum(hold[3], 1)))
        return {"coef_": coef, "sigma_": sigma * calibration, "wd_": wd_best, "prior_": prior_best,
                "spread_": self.spread_model(coef) if self.spread_z else None, "spread_season_": self.season,
                "calibration_": calibration, "combine_": combine, "local_weight_": weight,
                "selection_": [{"wd": w, "prior": pr, "holdout_mse": sc}
                               for (w, pr), sc in zip(candidates, scores, strict=False)],
                "holdout_sse_": holdout_sse, "holdout_pairs_": hold[3].copy(),
                "weighting_": self.params.get("weighting", "noise"), "long_season_": self.long_season,
                "local_season_": self.local_season, "level_points_": self.level_points, "nonnegative_": bool(self.target_range[0] >= 0)}

    def spread_model(self, coef: np.ndarray) -> np.ndarray:
        """(H, 2): per step ``(a, b)`` of the least-squares line ``r^2 ~ a + b z`` over the training pairs, ``r`` the
        residual of ``coef`` in noise units and ``z`` the window's :func:`spread_feature`, relative to the step's
        mean ``r^2`` (so ``a + b mean(z) = 1``); ``(1, 0)`` where ``z`` does not vary (no context beyond the noise
        scale's points) or there are no pairs.

        The sums of ``r^2`` and ``z r^2`` follow from the normal equations as :func:`_sse` (``yty - 2 c.xty +
        c.G.c`` on the plain and the z-weighted copies), so the line is solved without data for any ``coef``.
        With ``params["spread_step"]``: (H, 3), ``(a, b, c)`` of the plane ``r^2 ~ a + b z + c z_s`` the same way,
        ``z_s`` the pair's :func:`step_spread_feature` (its copy of the sums weighted per pair).
        """
        everything = (self.gram, self.xty, self.yty, self.pairs)
        weighted = (self.spread_gram, self.spread_xty, self.spread_yty, self.pairs)
        r2, zr2 = _sse(coef, everything), _sse(coef, weighted)
        n, sz, szz = self.pairs, self.spread_moments[:, 0], self.spread_moments[:, 1]
        det = n * szz - sz * sz
        out = np.tile([1.0, 0.0], (self.horizon, 1))
        ok = (n > 0) & (r2 > 0) & (det > 1e-9 * np.maximum(n * szz, 1e-300))
        mean = r2[ok] / n[ok]
        out[ok, 0] = (szz[ok] * r2[ok] - sz[ok] * zr2[ok]) / det[ok] / mean
        out[ok, 1] = (n[ok] * zr2[ok] - sz[ok] * r2[ok]) / det[ok] / mean
        if not self.spread_step:
            return out
        # with the per-step term: the plane r^2 ~ a + b z + c z_s, (H, 3), the minimum-norm solution where a
        # feature does not vary (z_s is 1 for a series without a season: c then shares a's part)
        sr2 = _sse(coef, (self.step_gram, self.step_xty, self.step_yty, self.pairs))
        ss, sss, szs = self.step_moments.T
        plane = np.tile([1.0, 0.0, 0.0], (self.horizon, 1))
        for h in np.flatnonzero((n > 0) & (r2 > 0)):
            moments = np.array([[n[h], sz[h], ss[h]], [sz[h], szz[h], szs[h]], [ss[h], szs[h], sss[h]]])
            solved = np.linalg.lstsq(moments, np.array([r2[h], zr2[h], sr2[h]]), rcond=None)[0]
            plane[h] = solved / (r2[h] / n[h])
        return plane

    def prior_coefficients(self, prior: str) -> np.ndarray:
        """(H, p): zero, or the seasonal naive forecast (weight 1 on the lag one cycle before step h)."""
        H, p = self.horizon, self.n_design
        out = np.zeros((H, p))
        if prior == "seasonal":
            lags = list(self.lags)
            m = self.season
            for h in range(1, H + 1):
                lag = m * -(-h // m) - h + 1
                if lag not in lags:  # the seasonal lag is not read: the last value (naive)
                    lag = 1 if 1 in lags else lags[0]
                out[h - 1, lags.index(lag)] = 1.0
        return out

    def _solve(self, sums: tuple[np.ndarray, ...], wd: float, prior: str, keep: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ridge solution per step of the normal equations ``sums``: (coef, in-sample sigma, sse).

        ``keep``: solve on these columns only (the others get coefficient 0).
        """
        if keep is not None:
            gram, xty, yty, pairs = sums
            sub = (gram[:, keep][:, :, keep], xty[:, keep], yty, pairs)
            coef_k, sigma, sse = self._solve_columns(sub, wd, self.prior_coefficients(prior)[:, keep])
            coef = np.zeros((self.horizon, self.n_design))
            coef[:, keep] = coef_k
            return coef, sigma, sse
        return self._solve_columns(sums, wd, self.prior_coefficients(prior))

    def _candidate_coefficients(self, sums: tuple[np.ndarray, ...], candidates: list[tuple[float, str]],
                                keep: np.ndarray | None = None) -> list[np.ndarray]:
        """The coefficients of :meth:`_solve` for every ``(wd, prior)`` of ``candidates``, the same numbers, from one
        batched solve (the ridge systems of all candidates stacked: one call instead of one per candidate, whose
        fixed cost is most of a small panel's finalize). Falls back to one :meth:`_solve` per candidate where a
        system is singular or a solution not finite."""
        gram, xty, _, pairs = sums
        if keep is not None:
            gram, xty = gram[:, keep][:, :, keep], xty[:, keep]
        H, p = xty.shape
        ok = pairs > 0
        if not ok.any():
            return [self._solve(sums, w, pr, keep)[0] for w, pr in candidates]
        priors = {pr: self.prior_coefficients(pr) if keep is None else self.prior_coefficients(pr)[:, keep]
                  for pr in dict.fromkeys(pr for _, pr in candidates)}
        penalty = np.ones(p)
        penalty[-1] = 0.0
        # as in _solve_columns, element by element, with a leading candidate axis
        diagonal = np.einsum("hpp->hp", gram)
        mean_diagonal = diagonal[:, :-1].mean(axis=1) if p > 1 else np.zeros(H)
        strength = np.stack([w * mean_diagonal for w, _ in candidates])                    # (C, H)
        A = gram[None] + (strength[:, :, None] * penalty)[:, :, :, None] * np.eye(p)[None, None]
        b = np.stack([xty + strength[c][:, None] * penalty * priors[pr] for c, (_, pr) in enumerate(candidates)])
        with single_blas_thread(main_thread=True):
            try:
                solved = np.linalg.solve(A[:, ok], b[:, ok][..., None])[..., 0]           # (C, ok, p)
            except np.linalg.LinAlgError:
                solved = None
        if solved is None or not np.isfinite(solved).all():
            return [self._solve(sums, w, pr, keep)[0] for w, pr in candidates]
        coef = np.zeros((len(candidates), H, p))
        coef[:, ok] = solved
        # steps without training pairs borrow from the nearest earlier step (then the first from the first solved)
        for h in range(1, H):
            if pairs[h] <= 0:
                coef[:, h] = coef[:, h - 1]
        if not ok[0]:
            first = int(np.flatnonzero(ok)[0])
            coef[:, :first] = coef[:, first : first + 1]
        if keep is None:
            return list(coef)
        full = np.zeros((len(candidates), H, self.n_design))
        full[:, :, keep] = coef
        return list(full)

    def _solve_columns(self, sums: tuple[np.ndarray, ...], wd: float, w0: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_solve` on the columns of ``sums`` with prior coefficients ``w0`` (the last column unpenalised)."""
        gram, xty, yty, pairs = sums
        H, p = xty.shape
        penalty = np.ones(p)
        penalty[-1] = 0.0
        coef = np.zeros((H, p))
        sigma = np.full(H, np.nan)
        ok = pairs > 0
        # relative to the mean diagonal of the Gram matrix, so that ``wd`` does not depend on the
        # windows' weights (1/noise^2) or on how many pairs there are
        diagonal = np.einsum("hpp->hp", gram)
        strength = wd * (diagonal[:, :-1].mean(axis=1) if p > 1 else np.zeros(H))       # (H,)
        A = gram + (strength[:, None] * penalty)[:, :, None] * np.eye(p)[None]
        b = xty + strength[:, None] * penalty * w0
        # one batched solve on one BLAS thread: many small systems gain nothing from BLAS threads,
        # which on a busy machine spin-wait (0.6 s instead of 1 ms per 175 x 175 system)
        with single_blas_thread(main_thread=True):
            try:
                coef[ok] = np.linalg.solve(A[ok], b[ok][:, :, None])[:, :, 0]
                bad = ok & ~np.isfinite(coef).all(axis=1)
            except np.linalg.LinAlgError:
                bad = ok
            for h in np.flatnonzero(bad):  # singular steps only
                coef[h] = np.linalg.lstsq(A[h], b[h], rcond=None)[0]
        sse = _sse(coef, sums)
        sigma[ok] = _spread(coef, sums, p)[ok]
        # steps without training pairs borrow from the nearest earlier step
        for h in range(1, H):
            if pairs[h] <= 0:
                coef[h], sigma[h] = coef[h - 1], sigma[h - 1]
        if np.isnan(sigma[0]) and ok.any():
            first = int(np.flatnonzero(ok)[0])
            coef[:first], sigma[:first] = coef[first], sigma[first]
        return coef, sigma, sse


def convex_weights(coef: np.ndarray, column: int, sums: tuple[np.ndarray, ...], pooled: bool = False,
                   shrink: bool = False) -> np.ndarray:
    """(H,): per step, the weight ``a`` in [0, 1] of least squared error on the normal equations ``sums`` of
    ``(1 - a)`` times the forecast of ``coef`` (H, p; zero at ``column``) plus ``a`` times design column ``column``.

    With ``d = e_column - coef`` the error is ``sse(coef) - 2 a (d.xty - coef.G.d) + a^2 d.G.d``, least at
    ``a = (d.xty - coef.G.d) / d.G.d`` (clipped to [0, 1]; 0 where ``d.G.d`` is 0). ``pooled``: one weight for
    every step, of least error summed over the steps. ``shrink``: the weight before clipping moved toward 1/2 by its
    standard error ``se^2 = sse(a) / (pairs - 1) / d.G.d`` (a regression of the global forecast's errors on ``d``;
    see :data:`SHRINK_WEIGHT`), as ``1/2 + (a - 1/2) t^2 / (1 + t^2)``, ``t = (a - 1/2) / se``, then clipped.
    """
    gram, xty = sums[0], sums[1]
    d = -coef.copy()
    d[:, column] += 1.0
    num = np.einsum("hp,hp->h", d, xty) - np.einsum("hp,hpq,hq->h", coef, gram, d)
    den = np.einsum("hp,hpq,hq->h", d, gram, d)
    if pooled:
        num, den = np.full_like(num, num.sum()), np.full_like(den, den.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(den > 0, num / den, 0.0)
        if shrink:
            pairs = sums[3] if not pooled else np.full(len(num), sums[3].sum())
            sse = _sse(coef, sums) if not pooled else np.full(len(num), _sse(coef, sums).sum())
            sse = np.maximum(sse - 2.0 * weight * num + weight * weight * den, 0.0)
            variance = np.where((den > 0) & (pairs > 1), sse / np.maximum(pairs - 1.0, 1.0) / den, np.inf)
            deviation = weight - 0.5
            kept = np.where(np.isfinite(variance), deviation ** 2 / (deviation ** 2 + variance), 0.0)
            weight = np.where(den > 0, 0.5 + deviation * np.nan_to_num(kept, nan=1.0), 0.0)
        return np.clip(weight, 0.0, 1.0)


def _toward_local(coef: np.ndarray, column: int, weight: np.ndarray) -> np.ndarray:
    """``(1 - a_h) coef_h + a_h e_column``: the convex combination as one coefficient vector per step."""
    out = coef * (1.0 - weight)[:, None]
    out[:, column] += weight
    return out


def _spread(coef: np.ndarray, sums: tuple[np.ndarray, ...], dof: int) -> np.ndarray:
    """(H,) in-sample residual spread of ``coef`` on ``sums``: ``sqrt(sse / max(pairs - dof, 1))``."""
    return np.sqrt(_sse(coef, sums) / np.maximum(sums[3] - dof, 1.0))


@functools.lru_cache(maxsize=64)
def _date_feature_count(freq: str, harmonics: int) -> int:
    """:func:`~daskstate.algorithms.forecast.series.n_date_features` of a frequency string, computed once (the
    design's width is asked for a dozen times a fit)."""
    return n_date_features(as_offset(freq), harmonics)


def _copied(model: dict[str, Any]) -> dict[str, Any]:
    """A copy of a finalized model: arrays copied, ``selection_``'s rows copied, numbers and strings as they are."""
    return {k: v.copy() if isinstance(v, np.ndarray) else [dict(row) for row in v] if isinstance(v, list) else v
            for k, v in model.items()}


def _calibration(holdout_sse: np.ndarray, holdout_pairs: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Factor per step (>= 1, non-decreasing in the step) by which the holdout error exceeds the in-sample spread.

    The ratio of squared errors per step, made non-decreasing by a weighted isotonic fit
    (the pairs per step as weights; a forecast further out does not get more certain
    than in-sample residuals say), never below 1.
    """
    ok = (holdout_pairs > 0) & (sigma > 0) & np.isfinite(sigma)
    out = np.ones(len(sigma))
    if not ok.any():
        return out
    ratio = holdout_sse[ok] / (holdout_pairs[ok] * sigma[ok] ** 2)
    steps = np.flatnonzero(ok)
    # scipy's pool-adjacent-violators; between the fitted steps linear, before the first and after the last
    # NaN unless one step is fitted (as scikit-learn's IsotonicRegression, at a fiftieth of its fixed cost)
    fitted = isotonic_regression(ratio, weights=holdout_pairs[ok], increasing=True).x
    at = (np.full(len(sigma), fitted[0]) if len(steps) == 1
          else np.interp(np.arange(len(sigma)), steps, fitted, left=np.nan, right=np.nan))
    out = np.sqrt(np.maximum(at, 1.0))
    return out


def _sse(coef: np.ndarray, sums: tuple[np.ndarray, ...]) -> np.ndarray:
    """Weighted residual sum of squares per step of ``coef`` (H, p) on the normal equations ``sums``."""
    gram, xty, yty, _ = sums
    return np.maximum(yty - 2.0 * np.einsum("hp,hp->h", coef, xty) + np.einsum("hp,hpq,hq->h", coef, gram, coef),
                      0.0)


def _add_products(sets: list[tuple], lagged: np.ndarray, extra: np.ndarray, target: np.ndarray,
                  mask: np.ndarray, work: Workspace | None = None) -> None:
    """Add the weighted products of the (window, step) pairs in ``mask`` to every set of sums in ``sets``.

    ``sets``: ``(targets, weight, column)``, ``targets`` a list of ``sums = (gram, xty, yty, pairs)`` that all get
    the same products, ``weight`` (non-negative) (n,), one per window (``column`` None), or (n, c) with ``column``
    (H,): step ``h``'s pairs weighted by ``weight[:, column[h]]``. The lag block of the Gram matrix is the same for
    every step that shares a weight column but for the pairs whose target is missing: it is formed once per column
    (a symmetric product) and those pairs are subtracted. The step-dependent columns are masked and laid out step by
    step once for all the sets (in ``work``'s buffers if given).
    """
    rows = mask.any(axis=1)
    if not rows.any():
        return
    if not rows.all():
        lagged, extra, target, mask = lagged[rows], extra[rows], target[rows], mask[rows]
        sets = [(targets, weight[rows], column) for targets, weight, column in sets]
    n, H, e = extra.shape
    k = lagged.shape[1]
    observed = mask.T                                                                    # (H, n)
    # (H, e, n) in this order in memory: each step's columns are one matrix for the products below
    work = work or Workspace()
    extra_t = work.empty("step_columns", (H, e, n))
    np.copyto(extra_t, extra.transpose(1, 2, 0))
    unobserved = ~observed
    np.copyto(extra_t, 0.0, where=unobserved[:, None, :])
    buffers = work if FOLD_WORKSPACE else None  # also the (H, n) and (n, k) temporaries below
    # (H, n) laid out as target (n, H), as np.where lays it out: the sums below add in the same order
    y_t = np.where(observed, target.T, 0.0) if buffers is None else _zero_where(
        target.T, unobserved, buffers.empty("step_targets", (n, H)).T)
    wextra = work.empty("weighted_step_columns", (H, e, n))
    for targets, weight, column in sets:
        if weight.ndim == 1:
            weight, column = weight[:, None], np.zeros(H, dtype=np.intp)
        root = np.sqrt(weight)
        for j in np.unique(column):
            steps = np.flatnonzero(column == j)
            seen = mask[:, steps].any(axis=1)
            block = _weighted_gram(lagged, root[:, j], seen, buffers)
            for gram, *_ in targets:
                gram[steps, :k, :k] += block
            for h in steps[~mask[seen][:, steps].all(axis=0)]:  # a loop over horizon steps, not rows
                block = _weighted_gram(lagged, root[:, j], seen & ~mask[:, h], buffers)
                for gram, *_ in targets:
                    gram[h, :k, :k] -= block
        if buffers is None:
            wm = np.where(observed, weight.T[column], 0.0)                               # (H, n)
        else:
            wm = _zero_where(np.take(weight.T, column, axis=0, out=buffers.empty("step_weights", (H, n))),
                             unobserved)
        np.multiply(extra_t, wm[:, None, :], out=wextra)
        cross = (wextra.reshape(H * e, n) @ lagged).reshape(H, e, k)
        square = wextra @ extra_t.transpose(0, 2, 1)
        wy = wm * y_t if buffers is None else np.multiply(wm, y_t, out=buffers.empty("weighted_step_targets", (H, n)))
        xl, xe = wy @ lagged, (extra_t @ wy[:, :, None])[:, :, 0]
        yy = np.einsum("hn,hn->h", wy, y_t)
        for gram, xty, yty, pairs in targets:
            gram[:, k:, :k] += cross
            gram[:, :k, k:] += cross.transpose(0, 2, 1)
            gram[:, k:, k:] += square
            xty[:, :k] += xl
            xty[:, k:] += xe
            yty += yy
            pairs += observed.sum(axis=1)


def _zero_where(values: np.ndarray, unobserved: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.where(unobserved, 0.0, values)`` in ``out`` (default: in place in ``values``)."""
    if out is not None:
        np.copyto(out, values)
        values = out
    np.copyto(values, 0.0, where=unobserved)
    return values


def _weighted_gram(values: np.ndarray, root: np.ndarray, rows: np.ndarray, work: Workspace | None = None
                   ) -> np.ndarray:
    """``sum_i root_i^2 v_i v_i^T`` over the ``rows`` of ``values``: the rows scaled by ``root`` times their own
    transpose, which numpy hands to BLAS's symmetric product (half a general product's work). ``work``: the
    scaled rows in its buffer (the same numbers)."""
    if work is None:
        scaled = values[rows] * root[rows, None] if not rows.all() else values * root[:, None]
    elif rows.all():
        scaled = np.multiply(values, root[:, None], out=work.empty("weighted_rows", values.shape))
    else:
        picked = np.compress(rows, values, axis=0, out=work.empty("weighted_rows", (int(rows.sum()), values.shape[1])))
        scaled = np.multiply(picked, root[rows, None], out=picked)
    return scaled.T @ scaled


def spread_feature(w: Windows, season: int, work: Workspace | None = None) -> np.ndarray:
    """(n,) ``z`` of the per-window spread: the squared :func:`~daskstate.algorithms.forecast.windows.noise_ratio`
    (at most :data:`SPREAD_CAP`), so ``a + b z`` mixes the variance of the recent noise scale (``a``) with that
    of the whole context's (``b``). ``work``: buffers of the noise ratio's differences."""
    return np.minimum(noise_ratio(w, season, work) ** 2, SPREAD_CAP)


def step_spread_feature(w: Windows, season: int, horizon: int) -> np.ndarray:
    """(n, H) ``z_s`` of the per-step spread term: the square of the window's scaled context value one ``season``
    before each target step (at most :data:`SPREAD_CAP`; 1 where it is missing or there is no season), so the
    spread can follow the level of the target's phase (a multiplicative season's errors grow with it)."""
    columns = step_spread_columns(w, season, horizon)
    return np.ones((len(w.context), horizon)) if columns is None else columns[0][:, columns[1]]


def step_spread_columns(w: Windows, season: int, horizon: int) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`step_spread_feature` as its distinct columns (n, c) and the column of each step (H,): steps in the same
    phase of the season (``h`` and ``h + season``) read the same context value. None where there is no season or
    the context does not reach a season back (``z_s`` is then 1 at every pair)."""
    L = w.context.shape[1]
    h = np.arange(1, horizon + 1)
    lag = season * -(-h // season) - h + 1
    if season <= 1 or lag.max() > L:
        return None
    lags, column = np.unique(lag, return_inverse=True)
    last = w.context[:, L - lags]
    return np.minimum(np.where(np.isnan(last), 1.0, last * last), SPREAD_CAP), column


def linear_forecast(model: dict[str, Any], w: Windows, lags: np.ndarray, offset, harmonics: int,
                    static: np.ndarray | None = None, calendar_year: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (n, H) in the data's units for windows ``w`` (``static``: their indicators).

    With a spread model (``model["spread_"]``, see :meth:`ForecastLinearState.spread_model`) a window's spread at
    step ``h`` is ``sigma_h`` times ``sqrt(max(a_h + b_h z, SPREAD_FLOOR))``, ``z`` its :func:`spread_feature`
    (with a per-step term, ``a_h + b_h z + c_h z_sh``, ``z_sh`` its :func:`step_spread_feature`).
    """
    X = lag_design(w, lags, offset, harmonics, static, int(model.get("long_season_", 0)),
                   int(model.get("local_season_", 0)), int(model.get("level_points_", 0)), calendar_year)
    mean = np.einsum("nhp,hp->nh", X, model["coef_"]) * w.scale[:, None]
    spread = w.noise if model.get("weighting_", "noise") == "noise" else 1.0
    std = model["sigma_"][None, :] * (spread * w.scale)[:, None]
    if model.get("spread_") is not None:
        ab = np.asarray(model["spread_"])
        relative = ab[None, :, 0] + ab[None, :, 1] * spread_feature(w, int(model.get("spread_season_", 1)))[:, None]
        if ab.shape[1] == 3:  # the per-step term (``params["spread_step"]``), in the seasonal index's season
            step_season = int(model.get("long_season_", 0)) or int(model.get("spread_season_", 1))
            relative = relative + ab[None, :, 2] * step_spread_feature(w, step_season, len(ab))
        std = std * np.sqrt(np.maximum(relative, SPREAD_FLOOR))
    return mean, std


def distribution_quantiles(mean: np.ndarray, std: np.ndarray, quantiles: np.ndarray, likelihood: str,
                           nonnegative: bool) -> np.ndarray:
    """Quantiles (n, H, q) of the predictive distribution with the given mean and spread.

    ``"gaussian"`` (and ``"student_t"`` with the same variance and :data:`STUDENT_DF` degrees of freedom)
    or ``"negative_binomial"`` matched to the mean and variance (counts).
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if likelihood == "negative_binomial":
        mu = np.maximum(mean, 1e-9)[..., None]
        var = np.maximum(std**2, 1.0001 * mu[..., 0])[..., None]
        r = mu**2 / (var - mu)
        out = stats.nbinom.ppf(q, r, r / (r + mu))
    elif likelihood == "student_t":  # scipy.special's quantile functions: stats.t.ppf's and stats.norm.ppf's numbers
        df = STUDENT_DF                # without their argument checks (90 us a call, as much as a small forecast)
        out = mean[..., None] + (std * np.sqrt((df - 2) / df))[..., None] * special.stdtrit(df, q)
    else:
        out = mean[..., None] + std[..., None] * special.ndtri(q)
    return np.maximum(out, 0.0) if nonnegative else out


def linear_sample_paths(mean: np.ndarray, std: np.ndarray, likelihood: str, nonnegative: bool, num_samples: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Paths (n, num_samples, H) from the per-step distributions ``mean, std`` (n, H) of :func:`linear_forecast`.

    The direct per-step models share each window's inputs, so their errors are correlated
    across steps: :func:`~daskstate.algorithms.forecast.sampling.correlated_uniforms` gives
    the correlation of the linear process with these error variances.
    """
    u = correlated_uniforms(std, num_samples, rng)
    return marginal_ppf(u, mean, std, likelihood, nonnegative, STUDENT_DF)
