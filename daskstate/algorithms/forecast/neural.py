"""What the neural forecasters share: windows as the trainer's examples, Adam on one flat parameter vector.

A neural forecasting state is an :class:`~daskstate.training.SGDState` without a
target column and without packed models: the shared trainer runs its epochs of
rounds, validation, early stopping, checkpoints and ``partial_fit``. Its
*examples* are the windows of a partition of whole series that have at least one
observed target (:class:`TrainingWindows`); validation windows are chosen by a
seeded hash of (item, origin), the same on every pass and worker.

A subclass declares its network: ``initial_theta(rng)`` (the flat parameter
vector), ``n_inputs`` (the width :func:`iter_windows` sizes mini-batches by) and
``loss_and_gradient(theta, w)`` (summed negative log-likelihood of the windows'
observed targets, its gradient w.r.t. ``theta`` and the number of targets), plus
``forecast``. See :mod:`daskstate.algorithms.forecast.mlp`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from daskstate.algorithms.forecast.base import SeriesBatch, SeriesStateMixin
from daskstate.algorithms.forecast.series import SeriesBlock
from daskstate.algorithms.forecast.windows import Windows, iter_windows
from daskstate.errors import StateError
from daskstate.numerics import adam_step
from daskstate.state import State
from daskstate.training import SGDState


@dataclass
class TrainingWindows:
    """The windows of a partition that have an observed target: the trainer's examples."""

    block: SeriesBlock
    origins: np.ndarray   # (n,) flat index of each window's origin in the block
    item: np.ndarray      # (n,) item number within the block
    position: np.ndarray  # (n,) grid position of the origin

    @classmethod
    def of(cls, block: SeriesBlock) -> TrainingWindows:
        origins, item, position = block.origins()
        has_target = np.zeros(len(origins), bool)
        observed = ~np.isnan(block.values)
        for h in range(1, block.prediction_length + 1):
            has_target |= observed[np.minimum(origins + h, len(observed) - 1)]
        keep = np.flatnonzero(has_target)
        return cls(block, origins[keep], item[keep], position[keep])

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, mask: np.ndarray) -> TrainingWindows:
        """The windows selected by ``mask`` (e.g. the validation windows of a scoring pass)."""
        return TrainingWindows(self.block, self.origins[mask], self.item[mask], self.position[mask])


def window_hash_unit(items: np.ndarray, item: np.ndarray, position: np.ndarray, seed: int) -> np.ndarray:
    """A seeded hash of each window's (item id, grid position) as floats uniform in [0, 1).

    Examples
    --------
    >>> u = window_hash_unit(np.array(["a", "b"], dtype=object), np.repeat([0, 1], 5000),
    ...                      np.tile(np.arange(5000), 2), seed=0)
    >>> round(float(np.mean(u < 0.1)), 2)
    0.1
    """
    per_item = pd.util.hash_array(np.asarray(items, dtype=object))
    mixed = per_item[item] ^ (position.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    mixed ^= np.uint64((seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF)
    return (pd.util.hash_array(mixed) >> np.uint64(11)).astype(np.float64) * 2.0**-53


#: the smallest share of ``learning_rate`` the halving reaches (GluonTS: 5e-5 of 1e-3)
MIN_LR_FACTOR = 0.05


class NeuralForecastState(SeriesStateMixin, SGDState):
    """Base of the neural forecasters' states: ``theta`` and Adam's moments, windows as examples."""

    supervised = False
    packed = False
    parameters: ClassVar[tuple[str, ...]] = ("theta",)
    optimizer_arrays: ClassVar[tuple[str, ...]] = ("adam_m", "adam_v", "adam_t")
    model_arrays: ClassVar[tuple[str, ...]] = ("theta", "adam_m", "adam_v", "adam_t")

    # ---- the network (to implement) -----------------------------------------------------------
    @property
    @abc.abstractmethod
    def n_inputs(self) -> int:
        """Input width of a window (sizes the mini-batches of :func:`iter_windows`)."""

    @abc.abstractmethod
    def initial_theta(self, rng: np.random.Generator) -> np.ndarray:
        """The flat parameter vector before training."""

    @abc.abstractmethod
    def loss_and_gradient(self, theta: np.ndarray, w: Windows) -> tuple[float, np.ndarray, int]:
        """Summed NLL of the windows' observed targets, its gradient w.r.t. ``theta``, the targets counted."""

    def window_loss(self, theta: np.ndarray, w: Windows) -> tuple[float, int]:
        """Summed NLL and targets counted (validation); override to skip the backward pass."""
        loss, _, count = self.loss_and_gradient(theta, w)
        return loss, count

    # ---- arrays -------------------------------------------------------------------------------
    def _init_model(self) -> None:
        self.theta = self.initial_theta(np.random.default_rng([int(self.params.get("seed", 0)), 0x3C9]))
        self.adam_m = np.zeros_like(self.theta)
        self.adam_v = np.zeros_like(self.theta)
        self.adam_t = np.zeros(1)

    def _start(self, statistics: State) -> None:
        """No statistics pass: the network starts from its seeded initial parameters."""

    # ---- the trainer's hooks: windows as examples ------------------------------------------------
    def _training_batch(self, X: SeriesBatch, where: str) -> TrainingWindows:
        return TrainingWindows.of(X.block)

    def _n_examples(self, X: TrainingWindows) -> int:
        return len(X)

    def _validation_mask(self, X: TrainingWindows) -> np.ndarray | None:
        frac = float(self.params.get("validation_fraction", 0.0))
        if frac <= 0:
            return None
        return window_hash_unit(X.block.items, X.item, X.position, int(self.params.get("seed", 0))) < frac

    def _windows(self, X: TrainingWindows, pick: np.ndarray):
        return iter_windows(X.block, X.origins[pick], X.item[pick], X.position[pick], self.season, self.n_inputs)

    def _train(self, X: TrainingWindows, t: None, order: np.ndarray, monitor: bool, rng: np.random.Generator) -> None:
        """Adam over mini-batches of the windows ``order``: one pass, but at least ``min_batches`` steps.

        Small panels need more steps than one pass gives: the windows then follow
        in further shuffled orders drawn from ``rng``.
        """
        if not len(order):
            return
        size = int(self.params.get("batch_size", 128))
        steps = max(-(-len(order) // size), int(self.params.get("min_batches", 50)))
        reps = -(-steps * size // len(order))
        order = np.concatenate([order, *(rng.permutation(order) for _ in range(reps - 1))])[: steps * size]
        lr = self.current_learning_rate()
        for start in range(0, len(order), size):
            for w in self._windows(X, order[start : start + size]):
                loss, grad, count = self.loss_and_gradient(self.theta, w)
                if count == 0:
                    continue
                self.adam_t += 1.0
                adam_step(self.theta, grad / count, self.adam_m, self.adam_v, float(self.adam_t[0]), lr)
                self.mon_loss += loss
                self.mon_n += count

    def current_learning_rate(self) -> float:
        """``learning_rate`` halved for every epoch since the validation loss last improved.

        Adam's noise floor at a constant step size hides a better optimum: once an
        epoch fails to improve, smaller steps settle into it before the patience runs
        out (GluonTS halves its rate after 10 such epochs; here early stopping ends the
        fit after ``early_stopping_patience`` of them, so the rate halves at each), down to
        :data:`MIN_LR_FACTOR` of it.
        """
        return float(self.params.get("learning_rate", 1e-3)) * max(0.5 ** float(self.progress[2]), MIN_LR_FACTOR)

    def _evaluate(self, X: TrainingWindows, t: None, rows: np.ndarray, params: dict[str, np.ndarray]) -> None:
        for w in self._windows(X, rows):
            loss, count = self.window_loss(params["theta"], w)
            self.ev_loss += loss
            self.ev_n += count

    # ---- finalize -------------------------------------------------------------------------------
    def finalize(self, **_: Any) -> dict[str, Any]:
        """The selected parameters (the best validated snapshot) and the losses per epoch."""
        theta = self.chosen_params(0)["theta"]
        if not np.all(np.isfinite(theta)):
            raise StateError(f"the {self.algorithm} forecaster's parameters are not finite "
                             "(training diverged: lower learning_rate)")
        losses = self.loss_history()
        return {"theta_": theta.copy(), "train_loss_": float(losses[-1, 1]) if len(losses) else float("nan"),
                "validation_loss_": losses[:, 2].copy(), "n_epochs_": int(self.progress[0]),
                "history_": list(self.extra_meta.get("history", []))}
