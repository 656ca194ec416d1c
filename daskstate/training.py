"""The shared trainer of SGD estimators: statistics, epochs of rounds, validation, early stopping, selection.

A fit by SGD runs, for any algorithm built on :class:`SGDState`:

1. an optional **statistics pass** (e.g. the moments of a normaliser, the classes)
   over all partitions or a seeded sample of whole partitions, folded into the
   algorithm's own small statistics state (:meth:`SGDEstimator._statistics_state`);
2. **epochs of rounds** (:func:`daskstate.engine.fold_rounds`): each partition
   task scores its validation rows (a seeded hash of the row, the same on every
   pass and worker) with the round's *anchor* (the synchronised parameters all
   the round's tasks start from), then trains on its other rows in a seeded
   shuffled order;
3. **validation checks at round boundaries** (:meth:`SGDState.end_round`): a
   check's rounds score the previous check's result in the same pass as they
   train, so checks read nothing of their own; a check closes once it holds
   ``check_rows`` validation rows or at the epoch's end (big data: every round;
   small data: once per epoch); each packed model keeps its best snapshot. With
   ``validation_data=`` the check is per epoch, the given rows scored in one
   round;
4. **early stopping** when the selected model's validation metric has not
   improved by a relative ``tolerance`` for ``patience`` checks: at a round
   boundary, inside an epoch if need be;
5. **selection** among the packed models, and the ``models_`` table from
   ``finalize``. A check sees one round's validation rows; unless each saw all
   of them (one round per epoch), a last pass scores the kept snapshots (and
   the last round's result, when the epochs ran out) on all validation rows, so
   every model's metrics come from the same rows.

The engine owns checkpoints: a fit's checkpoint is a folder with one group per
pass (``statistics``, ``epochs``); a re-run resumes in the pass and at the
epoch and round it stopped (a fit stopped early inside an epoch is recorded as such). Seeds come from ``random_state`` only.

An algorithm supplies its arrays, a per-mini-batch gradient step
(:meth:`SGDState._train`), the scoring of rows (:meth:`SGDState._evaluate`) and
``finalize``; see ``docs/adding-an-algorithm.md``.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

from daskstate import engine
from daskstate.data import DEFAULT_BATCH_ROWS, Input, as_input, to_weights
from daskstate.errors import DataError, StateError
from daskstate.estimator import StateEstimator
from daskstate.numerics import hash_unit, mini_batches
from daskstate.state import RoundContext, Schema, State

#: accumulators of the running training loss (judge the epochs when there are no validation rows)
MONITOR_ARRAYS = ("mon_loss", "mon_n")


# ============================================================================ the state
class SGDState(State):
    """Base of states trained by SGD in rounds: packed models, snapshots, validation accumulators.

    A subclass declares

    - ``parameters``: the arrays of the packed models (first axis: the model),
      e.g. ``("coef", "bias")``; each gets an ``anchor_<name>`` (the round's start,
      being validated) and a ``best_<name>`` (best validated snapshot);
    - ``optimizer_arrays``: optimiser statistics averaged with the parameters;
    - ``model_metrics``: validation accumulators per model beyond the loss
      (``ev_<name>``, first axis the model), kept with the best snapshot;
      ``shared_metrics``: the same for every model (e.g. target sums);
    - ``frozen_arrays``: arrays fixed when training starts (a normaliser, the
      packed hyperparameters); only states with equal ones merge;
    - ``model_arrays``: all of its own arrays (``array_names`` adds the trainer's),

    and implements ``_init_model`` (parameters and optimiser arrays, from the
    statistics state in :meth:`_start`), ``_train`` (the gradient steps over some
    examples), ``_evaluate`` (add examples' loss and metrics to the ``ev_``
    accumulators) and ``finalize``. The rounds protocol follows from these
    declarations.

    The *examples* of a batch are its rows by default. A model whose batch is
    something else (CSR counts of documents, windows cut from whole series)
    overrides the optional hooks ``_training_batch`` (the partition's batch as
    the model trains on it), ``_n_examples`` and ``_validation_mask`` (which
    examples are held out, by a seeded hash that is the same on every pass).
    Unsupervised models (``supervised = False``) get ``t=None``; a model without
    packed models (``packed = False``) keeps its parameters without a model axis
    and ``num_models`` is 1.
    """

    supervised = True
    #: parameters carry the packed models on their first axis (False: one model, arrays as they are)
    packed: ClassVar[bool] = True
    blas_threads = 1
    parameters: ClassVar[tuple[str, ...]] = ()
    optimizer_arrays: ClassVar[tuple[str, ...]] = ()
    model_metrics: ClassVar[tuple[str, ...]] = ()
    shared_metrics: ClassVar[tuple[str, ...]] = ()
    frozen_arrays: ClassVar[tuple[str, ...]] = ()
    #: the subclass's own arrays (parameters, optimiser statistics, frozen arrays, ...)
    model_arrays: ClassVar[tuple[str, ...]] = ()
    round_weight = "trained"
    #: a validation check closes at the first round boundary where it holds this many validation rows (or at
    #: the epoch's end): on big data a check every round or few, on small data one per epoch. Below ~10,000
    #: rows a rate's standard error exceeds 0.5%, more than the changes early stopping has to tell apart.
    check_rows: ClassVar[int] = 10_000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.array_names = (*cls.model_arrays, *cls.training_arrays())
        cls.round_averaged = (*cls.parameters, *cls.optimizer_arrays)
        # the best snapshots' accumulators are summed too: a final pass may score the snapshots themselves
        cls.round_summed = (*MONITOR_ARRAYS, *cls.eval_arrays(), "trained",
                            *("best_" + n for n in cls.eval_arrays()))

    @classmethod
    def eval_arrays(cls) -> tuple[str, ...]:
        """The validation accumulators: loss and row count, then the declared metrics."""
        return ("ev_loss", "ev_n", *(f"ev_{m}" for m in (*cls.model_metrics, *cls.shared_metrics)))

    @classmethod
    def training_arrays(cls) -> tuple[str, ...]:
        """Every array the trainer manages (saved with the subclass's own ``array_names``)."""
        per_param = tuple(f"{prefix}_{p}" for prefix in ("anchor", "best") for p in cls.parameters)
        best_ev = tuple("best_" + name for name in cls.eval_arrays())
        return (*per_param, "best_loss", "best_epoch", "best_round", "progress", *MONITOR_ARRAYS, "trained",
                *cls.eval_arrays(), *best_ev)

    def copy(self) -> SGDState:
        """A deep copy whose training history shares its (never mutated) per-epoch entries.

        The history grows by one entry per epoch and a fit copies its state a few
        times per round: deep-copying it made a fit's copies cost quadratic in its epochs.
        """
        return self._copy({})

    def round_copy(self) -> SGDState:
        """The private copy a round's task trains (see :func:`daskstate.engine.update_task`).

        Only the arrays the rounds protocol lets a task change (``round_averaged``,
        ``round_summed``) are copied; the others (the anchor, the best snapshot,
        frozen arrays: most of a small model's state) are read-only views of the
        round's start, so a task that wrote to one would raise instead of changing it.
        """
        written = {*self.round_averaged, *self.round_summed}
        memo: dict[int, Any] = {}
        for name in self.array_names:
            if name not in written:
                array = getattr(self, name)
                view = array.view()
                view.flags.writeable = False
                memo[id(array)] = view
        return self._copy(memo)

    def _copy(self, memo: dict[int, Any]) -> SGDState:
        """``copy.deepcopy`` with ``memo`` (objects to share or replace), the history's entries and the
        (frozen) schema shared: a vocabulary's schema names thousands of terms."""
        return copy.deepcopy(self, {**memo, **history_memo(self.extra_meta), id(self.schema): self.schema})

    # ---- to implement ----------------------------------------------------------------
    @property
    def num_models(self) -> int:
        return int(self.params.get("num_models", 1))

    @abc.abstractmethod
    def _init_model(self) -> None:
        """Set the parameters, optimiser arrays and ``frozen_arrays`` of an untrained state."""

    def _metric_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the ``model_metrics`` and ``shared_metrics`` accumulators (without ``ev_``)."""
        return {}

    @abc.abstractmethod
    def _start(self, statistics: State) -> None:
        """Set ``frozen_arrays`` and initial parameters from the statistics pass's state."""

    def _encode_target(self, y: Any, where: str) -> Any:
        """The target as the loss wants it (unsupervised models: None, unchanged)."""
        return y

    @abc.abstractmethod
    def _train(self, X: Any, t: Any, order: np.ndarray, monitor: bool, rng: np.random.Generator) -> None:
        """Gradient steps over the examples ``order`` in mini-batches; with ``monitor``, add their loss to ``mon_``.

        ``rng`` is the partition task's seeded generator (it drew ``order``): any
        other randomness (dropout, noise, more passes) comes from it.
        """

    @abc.abstractmethod
    def _evaluate(self, X: Any, t: Any, rows: np.ndarray, params: dict[str, np.ndarray]) -> None:
        """Add the loss and metrics of the examples ``rows`` under ``params`` to the ``ev_`` accumulators."""

    # ---- optional hooks: what an example is ---------------------------------------------
    def _training_batch(self, X: Any, where: str) -> Any:
        """The partition's batch as the model trains on it (default: the dense matrix as read).

        ``_validation_mask``, ``_train`` and ``_evaluate`` index its examples
        (a model that wants row-major mini-batches makes that copy in ``_train``).
        """
        return X

    def _n_examples(self, X: Any) -> int:
        """The examples of a training batch (rows by default)."""
        return int(X.shape[0])

    def _counts_staleness(self) -> bool:
        """Whether an epoch without improvement counts towards the patience now (e.g. after a warm-up)."""
        return True

    # ---- arrays --------------------------------------------------------------------------
    def _init_arrays(self) -> None:
        self._init_model()
        M = self.num_models
        for p in self.parameters:  # the first round's anchor is the initial model
            start = getattr(self, p)
            setattr(self, "anchor_" + p, np.array(start, copy=True))
            setattr(self, "best_" + p, np.array(start, copy=True))
        self.best_loss = np.full(M, np.inf)
        self.best_epoch = np.full(M, -1.0)
        self.best_round = np.full(M, -1.0)
        # epochs run (the last one maybe in part), best selection metric, checks without gain, rounds run
        self.progress = np.array([0.0, -np.inf, 0.0, 0.0])
        self.mon_loss, self.mon_n, self.trained = np.zeros(M), np.zeros(1), np.zeros(1)
        shapes = {"loss": (M,), "n": (1,), **self._metric_shapes()}
        for prefix in ("ev_", "best_ev_"):
            for m in ("loss", "n", *self.model_metrics, *self.shared_metrics):
                setattr(self, prefix + m, np.zeros(shapes[m]))
        self.extra_meta.setdefault("phase", "sgd")

    @property
    def phase(self) -> str:
        """"sgd" (training), "eval" (a scoring pass) or "done"."""
        return self.extra_meta.get("phase", "sgd")

    def _params(self, which: str) -> dict[str, np.ndarray]:
        prefix = {"current": "", "anchor": "anchor_", "best": "best_"}[which]
        return {p: getattr(self, prefix + p) for p in self.parameters}

    def _set_params(self, which: str, values: dict[str, np.ndarray]) -> None:
        prefix = {"current": "", "anchor": "anchor_", "best": "best_"}[which]
        for p, v in values.items():
            setattr(self, prefix + p, v.copy())

    @classmethod
    def from_statistics(cls, statistics: State, params: dict[str, Any]) -> SGDState:
        """An untrained state with its normaliser (and whatever else) from the statistics pass.

        Rows and partitions the statistics pass read count as seen, so the
        epochs do not count them twice.
        """
        if statistics.n_rows == 0:
            raise DataError("the fit needs rows; the input had none")
        new = cls(statistics.schema, params)
        new.n_rows, new.n_skipped, new.consumed = statistics.n_rows, statistics.n_skipped, statistics.consumed
        new.weight_sum = statistics.weight_sum
        new.extra_meta.update({k: v for k, v in statistics.extra_meta.items() if k != "fold_rounds"})
        new._start(statistics)
        new.extra_meta["phase"] = "sgd"
        new.extra_meta["history"] = []
        return new

    # ---- update: train on a partition, or score it ------------------------------------------
    def _update(self, X: Any, y: Any, context: RoundContext | None, weight: np.ndarray | None = None) -> None:
        where = "batch" if context is None else context.where
        if self.phase not in ("sgd", "eval"):
            raise StateError(f"this {self.algorithm} state has finished training; "
                             "call resume_training() to train it on more data")
        X = self._training_batch(X, where)
        t = self._encode_target(y, where)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.phase == "sgd":
                self._update_sgd(X, t, context, weight)
            else:
                self._update_eval(X, t, weight)

    def _validation_mask(self, X: np.ndarray) -> np.ndarray | None:
        """Which rows are validation rows: a seeded hash of each row's values, in bounded blocks."""
        frac = float(self.params.get("validation_fraction", 0.0))
        if frac <= 0:
            return None
        seed = int(self.params.get("seed", 0))
        mask = np.empty(len(X), dtype=bool)
        for rows in mini_batches(len(X)):
            mask[rows] = hash_unit(X[rows], seed) < frac
        return mask

    def _update_sgd(self, X: Any, t: Any, context: RoundContext | None, weight: np.ndarray | None = None) -> None:
        ctx = context or RoundContext(0, 0, 0, None, int(self.params.get("seed", 0)))
        weighted = {} if weight is None else {"weight": weight}  # only states that accept_weight get weights
        val = self._validation_mask(X)
        if val is not None:
            held_out = np.flatnonzero(val)
            if len(held_out):  # exact validation metrics of the round's anchor (its synchronised start)
                self._evaluate(X, t, held_out, self._params("anchor"), **weighted)
            train = np.flatnonzero(~val)
        else:
            train = np.arange(self._n_examples(X))
        if weight is not None:
            train = train[weight[train] > 0]  # a row of weight 0 is not trained on
        rng = ctx.rng()
        order = rng.permutation(train)
        self._train(X, t, order, monitor=self.params.get("validation", "split") == "none", rng=rng, **weighted)
        self.trained += len(order) if weight is None else float(weight[order].sum())

    def _update_eval(self, X: Any, t: Any, weight: np.ndarray | None = None) -> None:
        """Score the examples (the validation ones, or all) with the parameters ``begin_eval`` named."""
        how = self.extra_meta.get("eval", {})
        val = self._validation_mask(X) if how.get("rows") == "validation" else None
        idx = np.flatnonzero(val) if val is not None else np.arange(self._n_examples(X))
        weighted = {} if weight is None else {"weight": weight}
        which = how.get("params", "anchor")
        if which == "anchor+best":  # the snapshots into best_ev_: swap the accumulators around _evaluate
            names = self.eval_arrays()
            mine = [getattr(self, n) for n in names]
            for n in names:
                setattr(self, n, getattr(self, "best_" + n))
            self._evaluate(X, t, idx, self._params("best"), **weighted)
            for n, a in zip(names, mine, strict=True):
                setattr(self, "best_" + n, getattr(self, n))
                setattr(self, n, a)
            which = "anchor"
        self._evaluate(X, t, idx, self._params(which), **weighted)

    # ---- merge: models trained from the same start average --------------------------------
    def _merge(self, other: SGDState) -> None:
        same = self.extra_meta.get("classes") == other.extra_meta.get("classes") and all(
            np.array_equal(getattr(self, n), getattr(other, n)) for n in self.frozen_arrays)
        if not same:
            raise StateError(
                f"cannot merge trained {self.algorithm} states with different normalisers, classes or packed "
                "hyperparameters: only states trained from the same statistics pass average meaningfully"
            )
        frac = other.n_rows / (self.n_rows + other.n_rows)
        for name in self.round_averaged:
            a = getattr(self, name)
            setattr(self, name, a + (getattr(other, name) - a) * frac)
        for name in (*MONITOR_ARRAYS, *self.eval_arrays(), "trained"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    # ---- epochs, snapshots and selection ------------------------------------------------------
    def _reset_selection(self) -> None:
        """Forget the best snapshots' scores and every accumulator (a new fit or partial_fit)."""
        self.best_loss = np.full_like(self.best_loss, np.inf)
        self.best_epoch = np.full_like(self.best_epoch, -1.0)
        self.best_round = np.full_like(self.best_round, -1.0)
        self.progress = np.array([self.progress[0], -np.inf, 0.0, self.progress[3]])
        for name in (*MONITOR_ARRAYS, *self.eval_arrays(), *("best_" + n for n in self.eval_arrays())):
            setattr(self, name, np.zeros_like(getattr(self, name)))
        self.extra_meta["early_stopped"] = False
        self.extra_meta.pop("stopped_by", None)
        self.extra_meta.pop("check_start", None)
        self.extra_meta.pop("recent_losses", None)
        self.extra_meta.pop("plateau_losses", None)
        self.extra_meta.pop("plateau_first", None)
        self.extra_meta.pop("plateau_peak", None)

    def _keep_better(self, loss: np.ndarray, params: dict[str, np.ndarray], trained: float,
                     rounds: float | None = None) -> np.ndarray:
        """Models whose ``loss`` beats their best keep ``params`` (trained ``trained`` epochs, ``rounds`` rounds)."""
        better = loss < self.best_loss
        for p, v in params.items():
            if self.packed:
                getattr(self, "best_" + p)[better] = v[better]
            elif better[0]:
                setattr(self, "best_" + p, np.array(v, copy=True))
        self.best_loss[better] = loss[better]
        self.best_epoch[better] = trained
        self.best_round[better] = self.progress[3] if rounds is None else rounds
        return better

    def _absorb(self, params: dict[str, np.ndarray], trained: float, rounds: float | None = None) -> np.ndarray:
        """Per-model validation loss of ``params`` from ``ev_``; better models keep them and their metrics."""
        loss = self.ev_loss / self.ev_n[0]
        better = self._keep_better(loss, params, trained, rounds)
        for name in ("loss", *self.model_metrics):
            getattr(self, "best_ev_" + name)[better] = getattr(self, "ev_" + name)[better]
        for name in ("n", *self.shared_metrics):  # the same rows every time
            setattr(self, "best_ev_" + name, getattr(self, "ev_" + name).copy())
        return loss

    def selected(self) -> tuple[int, float, float]:
        """The model the selection would pick now, its validation metric (higher is better) and loss.

        The default selects by validation loss (the metric is minus the loss);
        a state whose models are chosen by another criterion overrides this.
        """
        n = float(self.best_ev_n[0])
        loss = self.best_ev_loss / n if n > 0 else self.best_loss
        rank = np.where(np.isfinite(loss), loss, np.inf)
        model = int(np.argmin(rank))
        return model, -float(rank[model]), float(rank[model])

    def end_round(self, epoch: int, rnd: int, rounds: int, patience: int | None, tolerance: float) -> bool:
        """Close round ``rnd`` (of ``rounds``) of epoch ``epoch``, and with it a validation check if it is due.

        A check's rounds all score its *anchor* (the synchronised parameters
        the check started from) on their hashed validation rows. The check closes
        at the first round boundary where it holds at least :attr:`check_rows`
        validation rows (training rows, without validation), or at the epoch's
        end: then a model whose anchor beats its best snapshot keeps it, with its
        metrics (see :meth:`_check`). Without validation rows the running training
        loss judges the parameters after the check. ``rounds=0``: an iterator, the
        epoch's end unknown. Returns True to stop.
        """
        if rnd == 0:  # an epoch begins (counted on top of earlier fits' epochs, for partial_fit)
            self.progress[0] += 1.0
        per_epoch, epochs_before = max(int(rounds), 1), float(self.progress[0]) - 1.0
        start = self.extra_meta.setdefault("check_start", {"trained": epochs_before + rnd / per_epoch,
                                                           "round": rnd, "rounds": float(self.progress[3])})
        validated = self.ev_n[0] > 0
        seen = float(self.ev_n[0] if validated else self.mon_n[0])
        last = rounds > 0 and rnd == rounds - 1
        self.progress[3] += 1.0
        if not last and seen < self.check_rows:  # too few rows to judge by yet: the check goes on
            return False
        del self.extra_meta["check_start"]
        trained = start["trained"] if validated else epochs_before + (rnd + 1) / per_epoch
        partial = validated and not (start["round"] == 0 and last)  # not every validation row of the epoch
        rounds_trained = start["rounds"] if validated else float(self.progress[3])
        return self._check(trained, int(epochs_before), rnd, patience, tolerance, partial, rounds_trained)

    def end_epoch(self, patience: int | None, tolerance: float, evaluated_epochs: int | None = None) -> bool:
        """Close an epoch checked as a whole: one check.

        The ``ev_`` accumulators hold the metrics of the *anchor*, trained
        ``evaluated_epochs`` epochs: the epoch's result, scored by a callback on
        ``validation_data``; or (``evaluated_epochs=None``, ``Schedule.check_every="epoch"``)
        the epoch's start, scored by every round on its validation examples.
        See :meth:`_check`.
        """
        epoch = int(self.progress[0])
        trained = epoch if evaluated_epochs is None else int(evaluated_epochs)
        if self.ev_n[0] == 0:  # judged by the running training loss, or not at all: the epoch's result
            trained = epoch + 1
        self.progress[0] = epoch + 1.0
        return self._check(trained, epoch, None, patience, tolerance, False, float(self.progress[3]))

    def _check(self, trained: float, epoch: int, rnd: int | None, patience: int | None, tolerance: float,
               partial: bool, rounds: float) -> bool:
        """One validation check, in place: keep each model's best snapshot; stop when the selection has converged.

        With validation rows, the ``ev_`` accumulators hold the exact validation
        metrics of the *anchor* (trained ``trained`` epochs); a model whose anchor
        beats its best snapshot keeps the anchor and its metrics (``partial``: from
        only part of the validation rows, so the selection rescores the snapshots
        on all of them at the end). Without validation rows the running training
        loss judges the current parameters. Then the current parameters become the
        next anchor.

        Returns True (early stopping) when the selected model's validation
        metric (see :meth:`selected`: the selection criterion, e.g. accuracy, or
        minus the loss) has not improved by a relative ``tolerance`` for
        ``patience`` checks. A loss that keeps shrinking while the metric stays
        put (the logistic loss on separable classes falls for ever as the
        weights grow) does not keep the fit going.

        A single model (``packed = False``) is judged by the mean of its last
        ``patience`` checks' losses (see :meth:`_watched`): on a small validation
        set one check's loss scatters by more than ``tolerance`` while the model
        still improves by more than that every few checks, and the best single
        check was a lucky draw that later checks rarely beat: training stopped
        while the loss was still falling (package descriptions, K = 50: 28
        epochs where the validation loss fell for 55).
        """
        validated = self.ev_n[0] > 0
        # One model's untrained start is not a candidate: the topic model's scores the background word
        # frequencies alone, below where its loss goes while the encoder learns; as the best snapshot
        # and the baseline to beat it stopped fits at epoch 12 and returned the untrained model
        # (package descriptions, K = 50, seed 4: every topic the same, perplexity 1110 against 605)
        untrained = not self.packed and trained <= 0
        if validated and untrained:
            loss = self.ev_loss / self.ev_n[0]
        elif validated:
            kept = self.best_loss.copy()
            loss = self._absorb(self._params("anchor"), trained, rounds)
            if partial and np.any(self.best_loss != kept):  # a snapshot judged on part of the validation rows
                self.extra_meta["partial_best"] = True
        elif self.mon_n[0] > 0:
            loss = self.mon_loss / self.mon_n[0]
            self._keep_better(loss, self._params("current"), trained, rounds)
        else:  # nothing to judge by: the latest parameters are the best we know
            loss = None
            self._set_params("best", self._params("current"))
            self.best_epoch[:] = trained
            self.best_round[:] = rounds
        check: dict[str, Any] = {"round": rnd, "evaluated_epochs": trained, "loss": None, "model": None,
                                 "metric": None}
        if not self.packed:  # one model: its training and validation losses since the last check, and weights
            check.update(train_loss=float(self.mon_loss[0] / self.mon_n[0]) if self.mon_n[0] > 0 else None,
                         train_n=float(self.mon_n[0]), validation_loss=float(loss[0]) if validated else None,
                         validation_n=float(self.ev_n[0]), trained=float(self.trained[0]))
        flattened = False
        if loss is not None:
            model, metric, model_loss = self.selected()
            if not untrained:
                watched = self._watched(metric, float(loss[0]), patience)
                if _improved(-watched, -float(self.progress[1]), tolerance):
                    self.progress[1] = watched
                    self.progress[2] = 0.0
                elif self._counts_staleness():
                    self.progress[2] += 1.0
            flattened = self._flattened(float(loss[0]), patience)
            if math.isfinite(model_loss):
                check.update(loss=model_loss, model=model, metric=metric)
        history = list(self.extra_meta.get("history", []))
        if rnd is None or rnd == 0 or not history or history[-1]["epoch"] != epoch:
            # one entry per epoch: its first check (the model the epoch started from), then its rounds
            history.append({"epoch": epoch, **{k: v for k, v in check.items() if k != "round"}, "checks": []})
        entry = history[-1] = dict(history[-1])  # entries are shared by copies (see copy): a new one
        entry["checks"] = [*entry.get("checks", []), check]
        if not self.packed:  # the epoch's training loss over all its rounds so far, and the examples trained
            n = sum(c["train_n"] for c in entry["checks"] if c["train_loss"] is not None)
            if n > 0:
                entry["train_loss"] = sum(c["train_loss"] * c["train_n"] for c in entry["checks"]
                                          if c["train_loss"] is not None) / n
            entry["trained"] = check["trained"]
        self.extra_meta["history"] = history
        self._set_params("anchor", self._params("current"))
        for name in (*MONITOR_ARRAYS, *self.eval_arrays()):
            getattr(self, name)[...] = 0.0
        stop = bool(patience) and bool(self.progress[2] >= int(patience)) or flattened
        self.extra_meta["early_stopped"] = stop
        if stop:
            self.extra_meta["stopped_by"] = "plateau_share" if flattened else "patience"
        return stop

    def _watched(self, metric: float, loss: float, patience: int | None) -> float:
        """The value early stopping watches (higher is better) after a check.

        Packed models: the selection's ``metric`` (its best snapshots'). One model:
        minus the mean loss of the last ``patience`` checks (this one's is ``loss``),
        kept in ``extra_meta["recent_losses"]``.
        """
        if self.packed:
            return metric
        recent = [*self.extra_meta.get("recent_losses", []), loss][-max(int(patience or 1), 1):]
        self.extra_meta["recent_losses"] = recent
        return -float(np.mean(recent))

    def _flattened(self, loss: float, patience: int | None) -> bool:
        """Diminishing returns: the last ``patience`` checks' mean loss fell by less than ``params["plateau_share"]``
        of the fall from the fit's highest check (a single model that sets it; others: never).

        The curve of a noisy model keeps falling slowly long after most of the gain
        is made: a rule on a fixed ``tolerance`` waits for it to stop, which can be
        twice the epochs. This rule is scale-free (a share of the gain so far, the
        same for any corpus or loss), and compares means of ``patience`` checks, so
        one lucky or unlucky check does not decide it. It counts only once
        :meth:`_counts_staleness` allows.

        The gain is measured from the highest check, not the first, and the means
        compared are of checks since: a fresh model's first check can score far
        below where training starts (the topic model's untrained batch-norm
        statistics make its first check the background word frequencies alone; its
        loss then rises for a few epochs while the statistics catch up), and a gain
        measured from it was a small share of the real one, so the rule fired late
        or never (the Lee corpus at K = 50: about 1% of the fall from the peak in
        the last 5 epochs at epoch 36, 2% of the fall from the first check).
        """
        share = float(self.params.get("plateau_share") or 0.0)
        if share <= 0 or self.packed or not patience or not math.isfinite(loss):
            return False
        p = int(patience)
        peak, losses = self.extra_meta.get("plateau_peak"), self.extra_meta.get("plateau_losses", [])
        if peak is None or loss > peak:  # a new peak: the means compared are of checks since
            peak, losses = loss, []
        losses = [*losses, loss][-2 * p:]
        self.extra_meta["plateau_peak"], self.extra_meta["plateau_losses"] = float(peak), losses
        if len(losses) < 2 * p or not self._counts_staleness():
            return False
        before, now = float(np.mean(losses[:p])), float(np.mean(losses[p:]))
        return peak - now > 0 and before - now < share * (peak - now)

    def begin_eval(self, params: str = "anchor", rows: str = "validation") -> SGDState:
        """A copy that scores ``params`` ("anchor", "best", "current" or "anchor+best") of every model on ``rows``.

        ``rows`` is "validation" (the hashed rows) or "all". With "anchor+best" the
        best snapshots are scored too, on the same rows, into their own
        ``best_ev_`` accumulators. Fold it in one round, then :meth:`absorb_evaluation`.
        """
        if self.phase not in ("sgd", "eval", "done"):
            raise StateError(f"begin_eval needs a trained state, this one is in phase {self.phase!r}")
        if params not in ("anchor", "best", "current", "anchor+best") or rows not in ("validation", "all"):
            raise ValueError(f"begin_eval: params={params!r}, rows={rows!r}")
        new = self.copy()
        for name in self.eval_arrays():
            setattr(new, name, np.zeros_like(getattr(self, name)))
            if params == "anchor+best":
                setattr(new, "best_" + name, np.zeros_like(getattr(self, name)))
        new.extra_meta["phase"] = "eval"
        new.extra_meta["eval"] = {"params": params, "rows": rows}
        return new

    def absorb_evaluation(self) -> SGDState:
        """After an evaluation pass: the anchor competes for best snapshots; "best" gets its metrics."""
        new = self.copy()
        which = self.extra_meta.get("eval", {}).get("params")
        if self.ev_n[0] > 0:
            if which == "anchor+best":  # the snapshots' losses on the same rows as the anchor's
                n = new.best_ev_n[0]
                new.best_loss = np.where(new.best_epoch >= 0, new.best_ev_loss / max(n, 1.0), np.inf)
            if which in ("anchor", "anchor+best"):
                new._absorb(self._params("anchor"), float(self.progress[0]))
            elif which == "best":
                for name in self.eval_arrays():
                    setattr(new, "best_" + name, getattr(self, name).copy())
        for name in self.eval_arrays():
            setattr(new, name, np.zeros_like(getattr(self, name)))
        new.extra_meta["phase"] = "sgd"
        return new

    def finish(self, selection_on: str) -> SGDState:
        """A finished copy; ``selection_on`` says which rows the selection metrics come from."""
        new = self.copy()
        new.extra_meta["phase"] = "done"
        new.extra_meta["selection_on"] = selection_on
        return new

    def resume_training(self) -> SGDState:
        """A trained copy that continues SGD (``partial_fit``) from its best snapshots."""
        if self.phase not in ("done", "sgd"):
            raise StateError(f"resume_training needs a trained state, this one is in phase {self.phase!r}")
        new = self.copy()
        if self.phase == "done":
            new._set_params("current", self._params("best"))
        new._set_params("anchor", new._params("current"))
        new._reset_selection()
        new.extra_meta["phase"] = "sgd"
        return new

    def loss_history(self) -> np.ndarray:
        """A single model's losses per epoch: rows of (epoch, training loss, validation loss, examples trained).

        The losses are weighted means over the epoch's checks (NaN where there was
        none: no validation examples); examples trained count the epoch's alone.
        """
        rows, before = [], 0.0
        for entry in self.extra_meta.get("history", []):
            checks = entry.get("checks") or [entry]
            means = []
            for kind in ("train", "validation"):
                pairs = [(c[kind + "_loss"], c.get(kind + "_n", 1.0)) for c in checks if c.get(kind + "_loss") is not None]
                weight = sum(n for _, n in pairs)
                means.append(sum(v * n for v, n in pairs) / weight if weight > 0 else np.nan)
            trained = max((c.get("trained", before) for c in checks), default=before)
            rows.append([entry["epoch"], *means, trained - before])
            before = trained
        return np.array(rows, dtype=np.float64).reshape(len(rows), 4)

    def chosen_params(self, model: int) -> dict[str, np.ndarray]:
        """Model ``model``'s best validated snapshot (its current parameters if none was validated yet)."""
        which = "best" if self.best_epoch[model] >= 0 else "current"
        return {p: v[model] if self.packed else v for p, v in self._params(which).items()}


def history_memo(extra_meta: dict[str, Any]) -> dict[int, Any]:
    """A ``copy.deepcopy`` memo that copies ``extra_meta["history"]`` as a new list of the same entries.

    The trainer never mutates a history entry once a later one exists, nor the
    last one in place (it replaces it), so copies can share them.
    """
    history = extra_meta.get("history")
    return {} if history is None else {id(history): list(history)}


def _improved(value: float, best: float, tolerance: float) -> bool:
    """``value`` beats ``best`` by a relative ``tolerance`` (any finite value beats infinity)."""
    if not math.isfinite(best):
        return math.isfinite(value)
    return value < best - tolerance * abs(best)


# ============================================================================ the trainer
@dataclass(frozen=True)
class Schedule:
    """How long and how an SGD fit trains (from the estimator's hyperparameters)."""

    epochs: int
    sync_every: int
    patience: int | None
    tolerance: float
    statistics_rows: int | None = None
    #: the finalize overrides that choose among the packed models (what early stopping watches)
    selection: dict[str, Any] = field(default_factory=dict)
    #: "round": a validation check at every round (the round's validation rows score its start);
    #: "epoch": one check per epoch, every validation example scoring the epoch's start (small validation sets)
    check_every: str = "round"


def statistics_pass(inp: Input, state: State, options: engine.FitOptions, rows: int | None,
                    enough: Callable[[State], bool]) -> State:
    """Fold the statistics state over all partitions, or over a seeded sample of whole partitions.

    With ``rows``, partitions are taken in a seeded order 1, 2, 4, ... at a time
    until ``enough(state)`` (e.g. at least ``rows`` rows and both classes).
    """
    if rows is None or not inp.is_dask:
        return engine.fold(inp, state, options=options.at("statistics"))
    order = np.random.default_rng([options.seed, 0xF125]).permutation(inp.npartitions)
    running, taken, step = state, 0, 1
    sample = options.replace(checkpoint=None)
    while taken < len(order):
        chunk = [int(i) for i in order[taken : taken + step]]
        running = engine.fold(inp.subset(chunk), running, options=sample)
        taken, step = taken + len(chunk), step * 2
        if enough(running):
            break
    return running


def _one_round(data: Input, state: SGDState, options: engine.FitOptions, skip: frozenset = frozenset()) -> SGDState:
    """Every partition of ``data`` in one round (a scoring pass: no parameter changes)."""
    return engine.fold_rounds(data, state, sync_every=max(1, data.npartitions), shuffle=False,
                              skip_sources=skip, options=options)


def train_epochs(inp: Input, state: SGDState, options: engine.FitOptions, schedule: Schedule,
                 validation: Input | None = None) -> SGDState:
    """Epochs of rounds from a started (or resumed) state, then the selection; the trained state.

    ``state`` is fresh from :meth:`SGDState.from_statistics` (every partition is
    trained on) or a fitted state to continue (``partial_fit``: only partitions it
    has not consumed).
    """
    fresh = state.phase != "done"
    skip = frozenset() if fresh else frozenset(state.consumed)
    if skip and all(s in skip for s in inp.sources):
        return state
    running = (state if fresh else state.resume_training()).copy()
    running.extra_meta["selection"] = dict(schedule.selection)
    quiet = options.replace(checkpoint=None, progress=False)

    def epoch_end(s: SGDState, epoch: int) -> tuple[SGDState, bool]:
        # validation_data: score this epoch's result on the given rows (one round), one check per epoch
        s = s.copy()
        s._set_params("anchor", s._params("current"))
        scored = _one_round(validation, s.begin_eval("anchor", "all"), quiet)
        for name in s.eval_arrays():
            setattr(s, name, getattr(scored, name).copy())
        return s, s.end_epoch(schedule.patience, schedule.tolerance, int(s.progress[0]) + 1)

    # round_end and whole_epoch_end change the driver's running state in place: it is a round's fresh
    # result, which nothing else holds (a copy per round cost as much as a small model's round)
    def round_end(s: SGDState, epoch: int, rnd: int, rounds: int) -> tuple[SGDState, bool]:
        if validation is not None:  # checked per epoch; count the round
            s.progress[3] += 1.0
            return s, False
        return s, s.end_round(epoch, rnd, rounds, schedule.patience, schedule.tolerance)

    rounds_per_epoch = -(-sum(src not in skip for src in inp.sources) // schedule.sync_every)

    def whole_epoch_end(s: SGDState, epoch: int) -> tuple[SGDState, bool]:
        # every round of the epoch scored the epoch's anchor on its validation examples: one check
        stop = s.end_epoch(schedule.patience, schedule.tolerance)
        s.progress[3] += rounds_per_epoch
        return s, stop

    per_epoch = validation is None and schedule.check_every == "epoch"
    running = engine.fold_rounds(inp, running, epochs=schedule.epochs, sync_every=schedule.sync_every,
                                 skip_sources=skip,
                                 epoch_end=whole_epoch_end if per_epoch else None if validation is None else epoch_end,
                                 round_end=None if per_epoch else round_end, options=options.at("epochs"))
    if skip and running.n_rows == state.n_rows:  # partial_fit on empty partitions: nothing learned
        unchanged = state.copy()
        unchanged.consumed, unchanged.n_skipped = running.consumed, running.n_skipped
        return unchanged

    def evaluate(params: str, rows: str) -> SGDState:
        return _one_round(inp, running.begin_eval(params, rows), quiet.replace(progress=options.progress),
                          skip).absorb_evaluation()

    selection_on = "validation"
    if running.extra_meta.pop("check_start", None) is not None:  # a check left open (an iterator): judged below
        running._set_params("anchor", running._params("current"))
    if running.params.get("validation") == "split":
        # the last check judged the model before the last round; snapshots judged on one round's rows are
        # rescored on all validation rows, so every model's metrics (selection, threshold) come from the same rows
        partial = bool(running.extra_meta.pop("partial_best", False))
        if not running.extra_meta.get("early_stopped"):
            running = evaluate("anchor+best" if partial else "anchor", "validation")
        elif partial:
            running = evaluate("best", "validation")
    if running.best_ev_n[0] == 0 and running.packed:
        # no validation rows (validation_fraction=0, or none fell out of the hash): score on training rows
        running = evaluate("best", "all")
        selection_on = "training"
    return running.finish(selection_on)


# ============================================================================ the estimator side
class SGDEstimator(StateEstimator):
    """Base of estimators trained by :func:`train_epochs`: in-memory input becomes Dask, epochs re-read it.

    Subclasses set ``state_class`` (an :class:`SGDState`) and implement
    ``_statistics_state(inp)`` (the empty statistics state, or None for no
    statistics pass), ``_enough_statistics(state)``, ``_schedule()`` and
    ``_state_params(inp, validation)``. ``fit(X, y, validation_data=...)`` takes
    rows for early stopping and selection instead of hashed training rows.
    """

    def _trains_by_sgd(self) -> bool:
        """False when the hyperparameters ask for a one-pass fit of the statistics state alone."""
        return True

    def _one_pass_description(self) -> str:
        return "one pass"

    def _new_state(self, inp: Input, validation_data: Any = None) -> State:
        """The statistics state a fresh fit starts from (the whole fit when it does not train by SGD)."""
        if validation_data is not None and not self._trains_by_sgd():
            raise ValueError(f"validation_data is not used by this {type(self).__name__} "
                             f"({self._one_pass_description()}); leave it out")
        mode = "external" if validation_data is not None else (
            "split" if getattr(self, "validation_fraction", 0) > 0 else "none")
        return self._statistics_state(inp, self._state_params(inp, mode))

    def _fold(self, inp: Input, state: State, options: engine.FitOptions | None = None,
              validation_data: Any = None, **option_fields: Any) -> State:
        options = options or self._fit_options(**option_fields)
        if not self._trains_by_sgd():
            return super()._fold(inp, state, options=options.at("exact"))
        validation = None if validation_data is None else self._validation_input(validation_data, state.schema)
        schedule = self._schedule()
        options = options.replace(seed=int(state.params.get("seed", options.seed)))
        if not isinstance(state, SGDState):  # a fresh fit: the statistics pass first
            stats = statistics_pass(inp, state, options, schedule.statistics_rows, self._enough_statistics)
            self._check_enough_rows(stats)
            state = self.state_class.from_statistics(stats, dict(state.params))
        return train_epochs(inp, state, options, schedule, validation)

    # ---- to implement ---------------------------------------------------------------
    def _statistics_state(self, inp: Input, params: dict[str, Any]) -> State:
        raise NotImplementedError

    def _enough_statistics(self, state: State) -> bool:
        return True

    def _schedule(self) -> Schedule:
        raise NotImplementedError

    # ---- inputs: several passes need a Dask collection -------------------------------
    def _input(self, X: Any, y: Any = None, schema: Schema | None = None, sample_weight: Any = None) -> Input:
        """Like the base, but in-memory arrays (and weights) become Dask collections so epochs can re-read them."""
        in_memory = _in_memory(X, y, sample_weight)
        if self._trains_by_sgd():
            X, y, sample_weight = _as_dask(X, y, sample_weight)
        inp = super()._input(X, y, schema, sample_weight=sample_weight)
        inp.in_memory = in_memory and inp.is_dask
        if not inp.is_dask and self._trains_by_sgd():
            raise TypeError(
                f"{type(self).__name__} reads its data several times (a statistics pass, then epochs), so it "
                "cannot learn from a one-shot iterator of batches; pass a Dask DataFrame or Array, a pandas "
                "DataFrame or a numpy array"
            )
        return inp

    def _validation_input(self, validation_data: Any, schema: Schema) -> Input:
        Xv, yv = validation_data if isinstance(validation_data, tuple) else (validation_data, None)
        in_memory = _in_memory(Xv, yv)
        Xv, yv, _ = _as_dask(Xv, yv)
        inp = as_input(Xv, yv, features=list(schema.features),
                       target=schema.target if yv is None else None, need_target=True)
        inp.in_memory = in_memory
        schema.check_same_features(inp.schema, "validation_data")
        return inp


def _in_memory(X: Any, *others: Any) -> bool:
    """Whether :func:`_as_dask` makes Dask collections of data in memory (pandas, 2-D numpy; nothing lazy)."""
    lazy = (dd.DataFrame, dd.Series, da.Array)
    return (isinstance(X, pd.DataFrame) or isinstance(X, np.ndarray) and X.ndim == 2) and not any(
        isinstance(o, lazy) for o in others)


def _as_dask(X: Any, y: Any, weight: Any = None) -> tuple[Any, Any, Any]:
    """pandas and numpy inputs (and their sample weights) as Dask collections of ``DEFAULT_BATCH_ROWS`` rows."""
    rows = DEFAULT_BATCH_ROWS
    if isinstance(X, pd.DataFrame):
        nparts = max(1, -(-len(X) // rows))
        ddf = dd.from_pandas(X, npartitions=nparts, sort=False)

        def like_x(values: Any, name: str, what: str) -> dd.Series:
            vs = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values), name=name)
            if len(vs) != len(X):
                raise DataError(f"input: {len(vs)} {what} for {len(X)} rows")
            vs = pd.Series(vs.to_numpy(), index=X.index, name=vs.name or name)
            out = dd.from_pandas(vs, npartitions=nparts, sort=False)
            if out.npartitions != ddf.npartitions:
                raise DataError(f"input: the {what} could not be partitioned like the features")
            return out

        if y is not None:
            y = like_x(y, "target", "target values")
        if weight is not None and not isinstance(weight, str) and not isinstance(weight, dd.Series):
            weight = like_x(to_weights(weight, len(X), "input"), "sample_weight", "sample weights")
        return ddf, y, weight
    if isinstance(X, np.ndarray) and X.ndim == 2:
        Xd = da.from_array(X, chunks=(rows, -1))
        if y is not None:
            ya = np.asarray(y)
            if len(ya) != len(X):
                raise DataError(f"input: {len(ya)} target values for {len(X)} rows")
            y = da.from_array(ya, chunks=(rows,) + ya.shape[1:])
        if weight is not None and not isinstance(weight, da.Array):  # checked here: errors name the input's rows
            weight = da.from_array(to_weights(weight, len(X), "input"), chunks=(rows,))
        return Xd, y, weight
    return X, y, weight


# ============================================================================ classes and selection
class ClassCounts:
    """Mixin for the statistics state of a classifier: the classes seen and their counts.

    The classes are learned from the labels (sorted numbers or strings, in
    ``extra_meta["classes"]``) unless ``params["num_classes"]`` fixes them to
    ``0..num_classes-1``; counts are in the ``class_counts`` array.
    """

    params: dict[str, Any]
    extra_meta: dict[str, Any]
    class_counts: np.ndarray

    @property
    def classes(self) -> list:
        if self.params.get("num_classes"):
            return [float(c) for c in range(int(self.params["num_classes"]))]
        return list(self.extra_meta.get("classes", []))

    def _init_class_counts(self) -> None:
        self.class_counts = np.zeros(int(self.params["num_classes"]) if self.params.get("num_classes") else 0)

    def _count_classes(self, y: np.ndarray, where: str) -> None:
        labels = label_array(y, where)
        if self.params.get("num_classes"):
            C = int(self.params["num_classes"])
            if labels.dtype == object:
                raise DataError(f"{where}: with num_classes={C} the labels must be class indices "
                                f"0..{C - 1}, got strings such as {labels[:3].tolist()}")
            bad = ~np.isin(labels, np.arange(C, dtype=np.float64))
            if bad.any():
                shown = pd.unique(labels[bad])[:5].tolist()
                raise DataError(
                    f"{where}: {int(bad.sum())} label(s) are not class indices 0..{C - 1} "
                    f"(num_classes={C}), e.g. {shown}"
                )
            self.class_counts = self.class_counts + np.bincount(labels.astype(np.intp), minlength=C)
            return
        values, counts = np.unique(labels, return_counts=True)
        old = self.extra_meta.get("classes", [])
        merged = _sorted_union(old, _jsonable_classes(values), where)
        self.class_counts = _remap_counts(old, self.class_counts, merged) + _remap_counts(
            _jsonable_classes(values), counts.astype(np.float64), merged)
        self.extra_meta["classes"] = merged

    def _merge_class_counts(self, other: ClassCounts, exact: bool = False) -> None:
        """Add ``other``'s counts (``exact``: same fixed classes, or none counted, e.g. regression)."""
        if not self.params.get("num_classes") and not exact:
            mine, theirs = self.extra_meta.get("classes", []), other.extra_meta.get("classes", [])
            merged = _sorted_union(mine, theirs, "merge")
            self.class_counts = (_remap_counts(mine, self.class_counts, merged)
                                 + _remap_counts(theirs, other.class_counts, merged))
            self.extra_meta["classes"] = merged
        else:
            self.class_counts = self.class_counts + other.class_counts


def encode_labels(classes: list, y: np.ndarray, where: str) -> np.ndarray:
    """Class indices (``intp``) of the labels ``y``; a class not in ``classes`` raises, naming it."""
    labels = label_array(y, where)
    known = np.asarray(classes, dtype=labels.dtype if labels.dtype == object else np.float64)
    if labels.dtype == object and known.dtype != object or labels.dtype != object and known.dtype == object:
        raise DataError(f"{where}: labels of type {labels.dtype} but the classes are {classes[:5]}")
    codes = np.searchsorted(known, labels)
    codes = np.minimum(codes, len(known) - 1)
    unseen = known[codes] != labels
    if unseen.any():
        shown = pd.unique(labels[unseen])[:5].tolist()
        raise DataError(
            f"{where}: {int(unseen.sum())} row(s) with class(es) {shown} not seen when the model "
            f"was first fitted (classes: {display_classes(classes).tolist()})"
        )
    return codes.astype(np.intp)


def label_array(y: np.ndarray, where: str) -> np.ndarray:
    """Class labels as float64 (numbers) or an object array of str."""
    if y.dtype.kind in "biuf":
        return y.astype(np.float64, copy=False)
    kind = pd.api.types.infer_dtype(y, skipna=False)
    if kind in ("string",):
        return y.astype(object)
    if kind in ("integer", "floating", "mixed-integer-float", "boolean"):
        return y.astype(np.float64)
    raise DataError(f"{where}: class labels must be all numbers or all strings, got {kind!r} values")


def _jsonable_classes(values: np.ndarray) -> list:
    return [str(v) for v in values] if values.dtype == object else [float(v) for v in values]


def _sorted_union(a: list, b: list, where: str) -> list:
    if a and b and isinstance(a[0], str) != isinstance(b[0], str):
        raise DataError(f"{where}: class labels mix numbers and strings ({a[:3]} and {b[:3]})")
    return sorted(set(a) | set(b))


def _remap_counts(classes: list, counts: np.ndarray, merged: list) -> np.ndarray:
    out = np.zeros(len(merged))
    if classes:
        pos = {c: i for i, c in enumerate(merged)}
        out[[pos[c] for c in classes]] = counts
    return out


def display_classes(classes: list) -> np.ndarray:
    """Classes as users expect them: int64 when all numbers are integers, else float or str."""
    if classes and isinstance(classes[0], str):
        return np.asarray(classes, dtype=object)
    arr = np.asarray(classes, dtype=np.float64)
    if len(arr) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2**53):
        return arr.astype(np.int64)
    return arr


def argbest(score: np.ndarray, loss: np.ndarray) -> int:
    """Index of the highest ``score`` (NaN counts as lowest); ties go to the lower ``loss``."""
    score = np.where(np.isfinite(score), score, -np.inf)
    return int(np.lexsort((loss, -score))[0])


def threshold_metrics(hist: np.ndarray, criterion: str, target_recall: float, target_precision: float,
                       beta: float) -> dict[str, np.ndarray]:
    """Per model: the probability threshold that best meets ``criterion`` on the validation histogram.

    ``hist`` (M, 2, bins) counts validation rows by class (negative, positive) and
    bin of sigmoid(score). Candidate thresholds are the bin edges ``j / bins``;
    a row is predicted positive when its probability is >= the threshold.
    """
    M, _, nb = hist.shape
    neg, pos = hist[:, 0, :], hist[:, 1, :]
    # rows at or above edge j, for j = 0..nb
    tp = np.concatenate([np.cumsum(pos[:, ::-1], axis=1)[:, ::-1], np.zeros((M, 1))], axis=1)
    fp = np.concatenate([np.cumsum(neg[:, ::-1], axis=1)[:, ::-1], np.zeros((M, 1))], axis=1)
    P, N = tp[:, :1], fp[:, :1]
    fn, tn = P - tp, N - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = (tp + tn) / np.maximum(P + N, 1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = np.where(P > 0, tp / np.maximum(P, 1), 0.0)
        b2 = beta * beta
        denom = (1 + b2) * tp + b2 * fn + fp
        fbeta = np.where(denom > 0, (1 + b2) * tp / np.where(denom > 0, denom, 1), 0.0)
    edges = np.arange(nb + 1) / nb
    middle = np.abs(edges - 0.5)  # ties: the threshold nearest 0.5
    if criterion == "accuracy":
        value = accuracy
    elif criterion == "f_beta":
        value = fbeta
    elif criterion == "precision_at_target_recall":
        value = np.where(recall >= target_recall, precision, -1.0 + recall)
    elif criterion == "recall_at_target_precision":
        value = np.where(precision >= target_precision, recall, -1.0 + precision)
    else:  # loss_function: the usual threshold
        value = np.where(np.arange(nb + 1) == nb // 2, 1.0, 0.0)[None, :].repeat(M, axis=0)
    order = np.lexsort((np.broadcast_to(middle, value.shape), -value), axis=1)
    j = order[:, 0]
    rows = np.arange(M)
    crit = value[rows, j] if criterion != "loss_function" else accuracy[rows, j]
    return {"threshold": edges[j], "accuracy": accuracy[rows, j], "precision": precision[rows, j],
            "recall": recall[rows, j], "f_beta": fbeta[rows, j], "criterion": crit}
