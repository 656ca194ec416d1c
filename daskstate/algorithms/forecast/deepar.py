"""The DeepAR forecaster: an autoregressive LSTM over mean-scaled series, trained with teacher forcing.

A training window of an item is ``P + C + H`` grid points: ``P`` (the largest lag)
points the lags of the first step read, ``C`` context points and ``H`` future points.
It is scaled by the mean absolute observed value of its ``C`` context points (of the
whole window's history if none is observed). The network unrolls over the ``C + H``
steps; the input of step ``t`` is the scaled target at each lag before ``t``, the
date features and known covariates of step ``t``, and per sequence ``log(scale)``
and one embedding per static category. Its output at ``t`` parameterises the
likelihood of the target at ``t`` (:mod:`likelihoods`); the loss is the NLL of
every observed target of the ``C + H`` steps (teacher forcing: the observed values,
not the network's draws, feed the lags). Forecasts unroll the context, then draw
``num_samples`` paths step by step, each draw feeding the lags of the later steps
(ancestral sampling); mean and quantiles come from the paths.

Training runs on the shared trainer (:class:`~daskstate.algorithms.forecast.neural.NeuralForecastState`:
epochs of rounds, validation windows by a seeded hash of item and origin, each series' last tenth held out (:mod:`neural`), early
stopping, best-snapshot selection, checkpoints, ``partial_fit``). Its examples are
the forecast origins of each item; a step's sequences are drawn per item (an item
uniformly, then one of its training origins uniformly) with the round's seeded
generator, so short and long series weigh the same. ``theta`` holds all weights in
one flat vector (:mod:`lstm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from pandas.tseries.offsets import DateOffset

from daskstate.algorithms.forecast import lstm
from daskstate.algorithms.forecast.base import SeriesBatch
from daskstate.algorithms.forecast.likelihoods import N_RAW, nll_and_grad, values_at
from daskstate.algorithms.forecast.neural import (
    CALIBRATION_LEVELS,
    NeuralForecastState,
    TrainingWindows,
    widen,
)
from daskstate.algorithms.forecast.series import (
    MAX_SEASONAL_LAG,
    SeriesBlock,
    date_features,
    n_date_features,
    season_lengths,
)
from daskstate.algorithms.forecast.windows import context_scale
from daskstate.numerics import _mix64, adam_step, single_blas_thread
from daskstate.state import register

#: global norm above which a mini-batch's mean gradient is scaled down (recurrent nets can explode)
CLIP_NORM = 10.0
#: sequences x samples drawn at once when forecasting (bounds temporary memory)
SAMPLE_ROWS = 1 << 15
#: sample paths stepped at once when forecasting (their float32 gates stay in cache: 4x faster per path
#: than 32,768 float64 rows)
PATH_ROWS = 1 << 13
#: validation windows scored per partition and check, at most, evenly spread over its items and origins
#: (the same ones every pass). Every window of a long series is an example, and a panel of 1,000 series
#: x 500 points holds 45,000 validation windows: scoring them all cost 50x the CPU of the epoch's
#: training steps (one sequence per item), for a loss whose error was already far below what early
#: stopping tells apart (a check needs ``check_rows`` = 10,000 targets, about 250 windows).
VALIDATION_SEQUENCES = 4096
#: the holdout pass (see :mod:`neural`): at most this many holdout sequences per partition, evenly spread
#: over its items and their holdout origins, each forecast from this many paths
CALIBRATION_SEQUENCES = 256
CALIBRATION_PATHS = 50
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def recurrent_lags(offset: DateOffset) -> list[int]:
    """Lags of an autoregressive model, relative to the step being predicted.

    The recent values (up to the shortest season, at most 7) and, around each
    seasonal cycle ``m``, the lags ``m - 1, m, m + 1`` (the shortest cycle also two
    and three cycles back), capped at :data:`MAX_SEASONAL_LAG` -- the same pattern
    as GluonTS's lags per frequency.

    Examples
    --------
    >>> from daskstate.algorithms.forecast.series import as_offset
    >>> recurrent_lags(as_offset("QS"))
    [1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13]
    """
    seasons = season_lengths(offset)
    lags = set(range(1, min(seasons[0], 7) + 1 if seasons else 8))
    for k, m in enumerate(seasons):
        for cycle in (m, 2 * m, 3 * m) if k == 0 else (m,):
            lags.update(x for x in (cycle - 1, cycle, cycle + 1) if 1 <= x <= MAX_SEASONAL_LAG)
    return sorted(lags)


def embedding_dimension(cardinality: int) -> int:
    """GluonTS's default size of a category's embedding: ``min(50, (cardinality + 1) // 2)``."""
    return max(1, min(50, (cardinality + 1) // 2))


def static_codes(static: pd.DataFrame | None, k: int, names: list[str], categories: list[list[str]]) -> np.ndarray:
    """Embedding rows (k, n_categories) of the k items' static values; 0 is an unknown or missing value."""
    codes = np.zeros((k, len(names)), dtype=np.intp)
    for j, (name, cats) in enumerate(zip(names, categories, strict=True)):
        values = static[name]
        idx = pd.Index(cats).get_indexer(values.astype(str).to_numpy(object)) + 1
        codes[:, j] = np.where(values.isna().to_numpy(), 0, idx)
    return codes


@dataclass
class Sequences:
    """Windows of a block as the network reads them (scaled)."""

    item: np.ndarray        # (n,) item number within the block
    values: np.ndarray      # (n, P + C + H) target / scale, NaN where missing
    scale: np.ndarray       # (n,)
    first: np.ndarray       # (n,) grid position of the first unrolled step
    covariates: np.ndarray  # (n, C + H, c) known covariates of the unrolled steps (missing: 0)
    codes: np.ndarray       # (n, n_categories) embedding rows
    count_from: np.ndarray | None = None  # (n,) grid position of the first target the loss counts (None: all)


def path_uniforms(keys: np.ndarray, num_samples: int, step: int, seed: int) -> np.ndarray:
    """Uniforms in (0, 1), shape (len(keys), num_samples), from a hash of (item key, sample, step, seed).

    A path's draws depend on its item and the seed only, not on which items share a task.
    """
    salt = _mix64(np.array([seed], np.uint64) * _GOLDEN + np.array([step + 1], np.uint64))
    sub = _mix64((np.arange(1, num_samples + 1, dtype=np.uint64) * _GOLDEN) ^ salt)
    z = _mix64(_mix64(keys.astype(np.uint64))[:, None] ^ sub[None, :])
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


@register
class ForecastDeepARState(NeuralForecastState):
    """The DeepAR network (see the module docstring); training: :class:`NeuralForecastState`."""

    algorithm: ClassVar[str] = "forecast_deepar"

    # ---- hyperparameters ----------------------------------------------------------------
    @property
    def likelihood(self) -> str:
        return self.params.get("likelihood", "student_t")

    @property
    def unroll_context(self) -> int:
        """``C``: steps unrolled before the forecast origin."""
        return int(self.params["unroll_context"])

    @property
    def max_lag(self) -> int:
        return int(self.lags.max())

    @property
    def num_layers(self) -> int:
        return int(self.params.get("num_layers", 2))

    @property
    def static_names(self) -> list[str]:
        return list(self.params.get("static", []))

    @property
    def categories(self) -> list[list[str]]:
        return [list(c) for c in self.params.get("categories", [])]

    @property
    def n_features(self) -> int:
        return len(self.schema.features)

    @property
    def n_step(self) -> int:
        """Per-step inputs: the lags, the date features, the covariates."""
        return len(self.lags) + n_date_features(self.offset, self.harmonics) + self.n_features

    @property
    def layout(self) -> lstm.Layout:
        dims = self.params.get("embedding_dims") or [embedding_dimension(len(c) + 1) for c in self.categories]
        tables = [(len(c) + 1, int(d)) for c, d in zip(self.categories, dims, strict=True)]
        return lstm.lstm_layout(self.n_step, 1, self.num_layers, int(self.params.get("num_cells", 40)),
                                N_RAW[self.likelihood], tables)

    @property
    def n_inputs(self) -> int:
        return self.n_step

    def initial_theta(self, rng: np.random.Generator) -> np.ndarray:
        return lstm.init_theta(self.layout, self.num_layers, rng)

    # ---- windows -------------------------------------------------------------------------------
    def sequences(self, block: SeriesBlock, origins: np.ndarray, item: np.ndarray, position: np.ndarray,
                  codes: np.ndarray) -> Sequences:
        """The windows whose forecast origins (last context point) are the flat ``origins``, at grid
        ``position``, with embedding rows ``codes`` (n, n_categories); ``item`` labels them. Windows
        without any observed history are dropped."""
        C, H = self.unroll_context, self.horizon
        context, future = block.windows(origins)
        values = np.concatenate([context, future], axis=1)
        scale = context_scale(context[:, -C:])[0]
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, context_scale(context)[0])
        keep = np.isfinite(scale) & (scale > 0)
        if not keep.all():
            origins, item, position, values, scale, codes = (
                a[keep] for a in (origins, item, position, values, scale, codes))
        steps = origins[:, None] + np.arange(1 - C, H + 1)[None, :]
        covariates = np.nan_to_num(block.covariates[steps]) if self.n_features else np.zeros((len(item), C + H, 0))
        return Sequences(item, values / scale[:, None], scale, position - C + 1, covariates, codes)

    @property
    def center(self) -> float:
        """What the network's lag inputs and real-valued targets are measured from, in scaled units.

        1 (the window's scale, ``centered``): a smooth series' scaled values all sit
        near 1, and the steps of Adam on the weights that read them (``~lr`` each)
        move the predicted mean by ``lr`` times the number of lags, more than such a
        series changes in a step; measured from 1 the same weights read the small
        deviations, and their noise moves the mean by as little. Counts keep 0.
        """
        return 1.0 if self.params.get("centered", False) and self.likelihood != "negative_binomial" else 0.0

    def step_inputs(self, seq: Sequences, filled: np.ndarray, steps: np.ndarray,
                    work: lstm.Workspace | None = None) -> np.ndarray:
        """Inputs (n, len(steps), n_step) of unrolled steps ``steps`` (0 .. C + H - 1), lags from ``filled``
        (``work``: in its buffer, valid until the next call)."""
        P, nl = self.max_lag, len(self.lags)
        work = lstm.Workspace() if work is None else work
        out = work.empty("step_inputs", (len(filled), len(steps), self.n_step))
        lagged = np.take(filled, P + steps[:, None] - self.lags[None, :], axis=1, mode="clip",  # all in range
                         out=work.empty("lagged", (len(filled), len(steps), nl)))
        np.subtract(lagged, self.center, out=out[:, :, :nl])
        dates = date_features(seq.first[:, None] + steps[None, :], self.offset, self.harmonics, self.calendar_year)
        nd = dates.shape[2]
        out[:, :, nl : nl + nd] = dates
        out[:, :, nl + nd :] = seq.covariates[:, steps]
        return out

    def static_reals(self, seq: Sequences) -> np.ndarray:
        return np.log(seq.scale)[:, None]

    def filled(self, seq: Sequences, until: int) -> np.ndarray:
        """The scaled values with each missing one replaced by the window's mean over its first ``until``
        points (so lags are always defined)."""
        head = seq.values[:, :until]
        ok = ~np.isnan(head)
        level = np.where(ok, head, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
        return np.where(np.isnan(seq.values), level[:, None], seq.values)

    def targets(self, seq: Sequences) -> tuple[np.ndarray, np.ndarray]:
        y = seq.values[:, self.max_lag :]
        if self.likelihood == "negative_binomial":
            y = y * seq.scale[:, None]
        mask = ~np.isnan(y)
        if seq.count_from is not None:
            mask &= seq.first[:, None] + np.arange(y.shape[1])[None, :] >= seq.count_from[:, None]
        return y - self.center, mask

    def _likelihood_scale(self, seq: Sequences) -> np.ndarray:
        return seq.scale[:, None] if self.likelihood == "negative_binomial" else np.ones((len(seq.scale), 1))

    # ---- loss and gradient -----------------------------------------------------------------------
    def _nll(self, theta: np.ndarray, seq: Sequences, keep: list[np.ndarray] | None = None,
             work: lstm.Workspace | None = None) -> tuple[float, np.ndarray, lstm.Cache, int]:
        v = self.layout.views(theta)
        C, H = self.unroll_context, self.horizon
        filled = self.filled(seq, self.max_lag + C)
        X = self.step_inputs(seq, filled, np.arange(C + H), work=work)
        static_all = lstm.static_inputs(v, self.static_reals(seq), seq.codes)
        raw, cache, _ = lstm.forward(v, self.num_layers, X, static_all, keep=keep, work=work)
        y, mask = self.targets(seq)
        loss, d_raw = nll_and_grad(raw, y, mask, self.likelihood, self._likelihood_scale(seq), work=work)
        return loss, d_raw, cache, int(mask.sum())

    def loss_and_gradient(self, theta: np.ndarray, seq: Sequences, keep: list[np.ndarray] | None = None,
                          work: lstm.Workspace | None = None) -> tuple[float, np.ndarray, int]:
        """Summed NLL of the observed targets of all unrolled steps, and its gradient w.r.t. ``theta``
        (``keep``: dropout masks, see :func:`lstm.forward`; ``work``: the training loop's buffers,
        the gradient among them, valid until the next call)."""
        loss, d_raw, cache, count = self._nll(theta, seq, keep=keep, work=work)
        layout = self.layout
        grad = lstm.backward(layout, layout.views(theta), self.num_layers, cache, d_raw, seq.codes, 1, keep,
                             work=work)
        return loss, grad, count

    def dropout_masks(self, rng: np.random.Generator, n: int, work: lstm.Workspace | None = None
                      ) -> list[np.ndarray] | None:
        """Dropout masks (T, n, N) of the hidden states each layer but the last passes up, or None
        (``work``: in its buffers, valid until the next call)."""
        rate = float(self.params.get("dropout_rate", 0.0))
        if rate <= 0 or self.num_layers < 2:
            return None
        T, N = self.unroll_context + self.horizon, int(self.params.get("num_cells", 40))
        work = lstm.Workspace() if work is None else work
        masks = []
        for layer in range(self.num_layers - 1):
            u = rng.random(out=work.empty(f"keep{layer}", (T, n, N)))
            masks.append(np.divide(u >= rate, 1.0 - rate, out=u))
        return masks

    # ---- the trainer's hooks: sequences as examples ------------------------------------------------
    def block_codes(self, block: SeriesBlock) -> np.ndarray:
        return static_codes(block.static, block.n_items, self.static_names, self.categories)

    def _training_batch(self, X: SeriesBatch, where: str) -> TrainingWindows:
        """Every forecast origin of the partition: 0 .. ``len - 1 - H`` of each item (the whole future inside
        the series; up to ``len - 2`` for an item shorter than that, and for the holdout's origins)."""
        block = X.block
        whole = block.lengths - 1 - self.horizon
        last = np.where(whole >= 0, whole, block.lengths - 2)  # at most lengths - 2
        items, first = np.arange(block.n_items), np.zeros(block.n_items, np.int64)
        if not self.holds_out:
            return TrainingWindows.in_ranges(block, items, first, last)
        # as split_holdout: a window is the holdout's when its first target is (origin >= held - 1)
        held = self.holdout_position(block) - block.starts - 1
        if self.calibrating:
            return TrainingWindows.in_ranges(block, items, np.maximum(held, 0), block.lengths - 2)
        return TrainingWindows.in_ranges(block, items, first, np.minimum(last, held - 1))

    def _sequences_of(self, X: TrainingWindows, pick: np.ndarray, codes: np.ndarray, holdout: str = "none"
                      ) -> Sequences:
        """The sequences of windows ``pick``; ``holdout`` "mask": the holdout's values are missing (training
        never reads or counts them), "count": the loss counts only targets in the holdout (validation)."""
        seq = self.sequences(X.block, X.origins[pick], X.item[pick], X.position[pick], codes[X.item[pick]])
        if holdout == "none" or not self.holds_out:
            return seq
        start = self.holdout_position(X.block)[seq.item]
        if holdout == "count":
            seq.count_from = start
        else:
            grid = seq.first[:, None] - self.max_lag + np.arange(seq.values.shape[1])[None, :]
            seq.values[grid >= start[:, None]] = np.nan
        return seq

    def _train(self, X: TrainingWindows, t: None, order: np.ndarray, monitor: bool, rng: np.random.Generator) -> None:
        """Adam steps on sequences drawn per item from the training windows ``order``: an item uniformly,
        then one of its windows uniformly.

        An epoch draws one sequence per item on average (as GluonTS's training sampler,
        one expected instance per series and pass), and at least ``min_batches`` batches
        (GluonTS's 50 batches per epoch), so the budget is Adam steps whatever the panel's
        size: a 4-series panel trains as many steps per epoch as a 1,000-series one, and
        100,000 long series do not make an epoch a pass over every point.
        """
        if not len(order):
            return
        size = int(self.params.get("batch_size", 32))
        per_item = np.bincount(X.item[order], minlength=X.block.n_items)
        steps = max(-(-int(np.count_nonzero(per_item)) // size), int(self.params.get("min_batches", 50)))
        weight = 1.0 / per_item[X.item[order]]
        picks = rng.choice(order, size=(steps, size), p=weight / weight.sum())
        codes = self.block_codes(X.block)
        lr = self.current_learning_rate()
        work = lstm.Workspace()  # every step's arrays have the same shapes: reuse them (see lstm.Workspace)
        for pick in picks:
            seq = self._sequences_of(X, pick, codes, holdout="mask")
            if not len(seq.item):
                continue
            loss, grad, count = self.loss_and_gradient(self.theta, seq, self.dropout_masks(rng, len(seq.item), work),
                                                       work=work)
            if count == 0 or not np.isfinite(loss):
                continue
            grad /= count
            norm = float(np.sqrt(grad @ grad))
            if norm > CLIP_NORM:
                grad *= CLIP_NORM / norm
            self.adam_t += 1.0
            adam_step(self.theta, grad, self.adam_m, self.adam_v, float(self.adam_t[0]), lr,
                      work=(work.empty("adam0", grad.shape), work.empty("adam1", grad.shape)))
            self.mon_loss += loss
            self.mon_n += count

    def _evaluate(self, X: TrainingWindows, t: None, rows: np.ndarray, params: dict[str, np.ndarray]) -> None:
        """Teacher-forced NLL of the targets of windows ``rows`` (at most :data:`VALIDATION_SEQUENCES` of
        them) outside the holdout; in the holdout pass, of those in it, and the sums of multi-step forecasts (paths) of up to :data:`CALIBRATION_SEQUENCES` of
        the windows."""
        codes = self.block_codes(X.block)
        size = max(1, SAMPLE_ROWS // ((self.unroll_context + self.horizon) * 8))
        holdout = "count" if self.calibrating else "mask"
        scored = rows if len(rows) <= VALIDATION_SEQUENCES else rows[
            np.linspace(0, len(rows) - 1, VALIDATION_SEQUENCES).astype(np.int64)]
        work = lstm.Workspace()
        for start in range(0, len(scored), size):
            seq = self._sequences_of(X, scored[start : start + size], codes, holdout=holdout)
            if len(seq.item):
                loss, _, _, count = self._nll(params["theta"], seq, work=work)
                self.ev_loss += loss
                self.ev_n += count
        if not (self.calibrating and len(rows)):
            return
        pick = rows[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), CALIBRATION_SEQUENCES)).astype(np.int64))]
        S, P, C = CALIBRATION_PATHS, self.max_lag, self.unroll_context
        keys = pd.util.hash_array(np.asarray(X.block.items, dtype=object))
        for start in range(0, len(pick), max(1, PATH_ROWS // S)):
            seq = self._sequences_of(X, pick[start : start + max(1, PATH_ROWS // S)], codes)
            if not len(seq.item):
                continue
            y = seq.values[:, P + C :].copy()
            paths = self._draw_paths(params["theta"], seq, keys[seq.item], S, int(self.params.get("seed", 0)), work)
            paths /= seq.scale[:, None, None]
            quantiles = np.moveaxis(np.quantile(paths, CALIBRATION_LEVELS, axis=1), 0, -1)
            self.add_spread_sums(y, paths.mean(axis=1), quantiles, work)

    # ---- forecasting -------------------------------------------------------------------------------
    def sample_paths(self, theta: np.ndarray, block: SeriesBlock, origins: np.ndarray, num_samples: int,
                     seed: int, spread: np.ndarray | None = None) -> np.ndarray:
        """Paths (len(origins), num_samples, H) in the data's units drawn after each flat origin of
        ``block``; NaN where the history has no observed value. ``spread`` (H,): each step's draws
        moved away from their mean by these factors (``calibration_``, see :mod:`neural`).

        The draws after an origin are a function of its item's id, the seed and ``theta`` only.
        """
        H = self.horizon
        out = np.full((len(origins), num_samples, H), np.nan)
        item = np.searchsorted(block.offsets, origins, side="right") - 1
        codes = self.block_codes(block)[item]
        keys = pd.util.hash_array(np.asarray(block.items, dtype=object)[item])
        position = block.starts[item] + (origins - block.offsets[item])
        rows = np.arange(len(origins))
        chunk = max(1, PATH_ROWS // num_samples)
        work = lstm.Workspace()  # the chunks' buffers (see lstm.Workspace)
        # many small GEMMs: BLAS threads only spin-wait (on a busy machine, 50x the CPU of one thread)
        with single_blas_thread(main_thread=True):
            for start in range(0, len(origins), chunk):
                sl = slice(start, start + chunk)
                seq = self.sequences(block, origins[sl], rows[sl], position[sl], codes[sl])
                if len(seq.item):
                    paths = self._draw_paths(theta, seq, keys[seq.item], num_samples, seed, work)
                    out[seq.item] = widen(paths, paths.mean(axis=1, keepdims=True), spread, self.likelihood)
        return out

    def _draw_paths(self, theta: np.ndarray, seq: Sequences, keys: np.ndarray, S: int, seed: int,
                    work: lstm.Workspace | None = None) -> np.ndarray:
        """Paths (n, S, H) in the data's units: the context unrolled once per sequence (float64), then all
        ``n * S`` paths stepped together in float32.

        What does not depend on a path (the date features and covariates of each future step, the static
        inputs, the biases) is projected once per sequence and broadcast over its ``S`` paths; per step
        only the lags (read from the paths drawn so far) go through the input weights. ``work``: buffers
        reused from call to call (fresh ones fault every page in again, see :class:`lstm.Workspace`).
        """
        work = lstm.Workspace() if work is None else work
        v = self.layout.views(theta)
        C, H, L, P = self.unroll_context, self.horizon, self.num_layers, self.max_lag
        n, nl, d = len(seq.item), len(self.lags), self.n_step
        seq.values[:, P + C :] = np.nan  # the future is not read (evaluate passes the actual values)
        filled = self.filled(seq, P + C)
        static_all = lstm.static_inputs(v, self.static_reals(seq), seq.codes)
        # the context's pass in the buffers too: its final state is copied into the recurrence's below
        _, _, state = lstm.forward(v, L, self.step_inputs(seq, filled, np.arange(C), work), static_all, work=work)
        f32 = {k: a.astype(np.float32) for k, a in v.items()}
        known = self.step_inputs(seq, filled, np.arange(C, C + H), work)[:, :, nl:]  # (n, H, d - nl)
        z64 = np.matmul(known, v["W0"][nl:d], out=work.empty("known_z64", (n, H, v["W0"].shape[1])))
        z64 += (static_all @ v["W0"][d:] + v["b0"])[:, None, :]
        known_z = work.empty("known_z", z64.shape, np.float32)
        known_z[...] = z64
        known_out = (known @ v["W_skip"][nl:] + v["b_out"]).astype(np.float32)     # (n, H, k)
        W_lag, skip_lag = f32["W0"][:nl], f32["W_skip"][:nl]
        cells = lstm.Recurrence(f32, L, state, repeat=S, work=work)
        paths = work.empty("paths", (n * S, filled.shape[1]))  # float64: counts stay whole numbers
        paths.reshape(n, S, -1)[...] = filled[:, None, :]      # np.repeat(filled, S, axis=0)
        scale = np.repeat(seq.scale, S)
        like_scale = scale if self.likelihood == "negative_binomial" else np.ones_like(scale)
        lag_columns = P + C - self.lags
        lag64, lagged = work.empty("lag64", (n * S, nl)), work.empty("lagged", (n * S, nl), np.float32)
        z0 = work.empty("z0", (n * S, W_lag.shape[1]), np.float32)
        raw64 = work.empty("raw64", (n * S, f32["W_out"].shape[1]))
        for t in range(H):
            np.take(paths, lag_columns + t, axis=1, out=lag64, mode="clip")  # all in range
            lag64 -= self.center
            lagged[...] = lag64
            np.matmul(lagged, W_lag, out=z0)
            z0.reshape(n, S, -1)[...] += known_z[:, None, t]
            top = cells.step(z0)
            raw = top @ f32["W_out"]
            raw += lagged @ skip_lag
            raw.reshape(n, S, -1)[...] += known_out[:, None, t]
            u = path_uniforms(keys, S, t, seed).ravel()
            raw64[...] = raw
            y = values_at(raw64[:, None, :], self.likelihood, like_scale[:, None], u[:, None, None])[:, 0, 0]
            paths[:, P + C + t] = y / scale if self.likelihood == "negative_binomial" else y + self.center
        return (paths[:, P + C :] * scale[:, None]).reshape(n, S, H)
