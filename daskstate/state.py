"""The model state: a fixed-size, mergeable summary of all data seen so far.

Every algorithm subclasses :class:`State` and implements four small pieces:

- ``_init_arrays()``: the empty summary's arrays, from hyperparameters and schema;
- ``_update(X, y, context)``: fold one batch into ``self`` (called on a private copy);
- ``_merge(other)``: fold another state of disjoint data into ``self`` (private copy);
- ``finalize(**overrides)``: the working model, without reading data.

The public ``update`` and ``merge`` are pure: they copy, mutate the copy, and
return it, so an exception leaves the original state untouched.

What the engine needs to know about a state is declared by class attributes,
never discovered:

``array_names``
    The arrays that make up the summary (saved, checksummed, sized by ``nbytes``).
``supervised``, ``input_dtype``
    Whether a batch carries a target; the float type of dense feature batches.
``read_batch(X, y, on_invalid=..., where=...)``
    A method: how one partition becomes the batch ``_update`` receives. The
    default is the dense, validated float matrix of :func:`daskstate.data.to_batch`;
    a text state may return a sparse CSR count matrix, a forecasting state a
    pandas DataFrame of whole series. It returns ``(X, y, n_dropped)``; called
    with ``weight=`` (the partition's sample weights) it returns
    ``(X, y, weight, n_dropped)``, the weights validated and aligned with the rows kept.
``accepts_weight``
    Whether ``_update`` takes ``weight=`` (one non-negative weight per row).
    A weighted state keeps its statistics so that an integer weight equals the
    row repeated; ``weight_sum`` (the rows' total weight, ``n_rows`` without
    weights) is kept by the base class. Only states that declare it receive weights.
``blas_threads``
    The execution policy: ``1`` makes the engine run BLAS on one thread while
    this state's partition tasks run in parallel (one task per core already;
    more BLAS threads only oversubscribe). ``None`` leaves BLAS alone.
    ``blas_on_main_thread`` extends the limit to the main thread. The base class
    applies the policy around ``_update``, ``_merge`` and (through the estimator)
    ``finalize``: an algorithm never enters it itself.

The rounds protocol (iterative algorithms, trained by SGD)
    :func:`daskstate.engine.fold_rounds` processes partitions in rounds: every
    partition task of a round trains a private copy of the round's state, and
    the round's results become the next round's state. How, is declared:

    ``round_averaged``
        Names of the arrays (parameters, optimiser statistics) replaced after
        each round by the average of the partition results, weighted by each
        partition's round weight.
    ``round_summed``
        Names of the accumulators (losses, counts) zeroed in every partition
        task; the partitions' increments are added to the round's start value.
    ``round_weight``
        Name of one ``round_summed`` array whose increment in a partition task
        is that partition's weight (rows trained on, windows, documents); None
        (the default) weighs a partition by the rows of its batch.

    Every other array is constant within a round. The partition task calls
    ``_update(X, y, context)`` with a :class:`RoundContext` (epoch, round,
    partition index, seed): all randomness comes from ``context.rng(...)``, so
    a fit does not depend on the workers or the order tasks run in. One-pass
    folds (:func:`daskstate.engine.fold`) pass ``context=None``. A state never
    needs a "phase" to know how to merge: a pass that only gathers statistics
    (the moments for a normaliser) is its own small state.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from daskstate.errors import MomentOverflowError, SchemaError, StateError
from daskstate.numerics import (
    batch_moments,
    merge_moments,
    mini_batches,
    rebase,
    single_blas_thread,
)

FORMAT_VERSION = 1

_REGISTRY: dict[str, type[State]] = {}


@dataclass(frozen=True)
class BlasPolicy:
    """A state's declared BLAS policy (``blas_threads``, ``blas_on_main_thread``), small enough
    to travel in a task: a ``predict`` or ``transform`` task carries it instead of the state.

    Examples
    --------
    >>> with BlasPolicy(threads=1, main_thread=True).limit():
    ...     pass
    """

    threads: int | None = None
    main_thread: bool = False

    def limit(self, main_thread: bool | None = None) -> contextlib.AbstractContextManager:
        """The policy as a context; ``main_thread`` overrides whether it holds on the main thread."""
        if self.threads != 1:
            return contextlib.nullcontext()
        return single_blas_thread(main_thread=self.main_thread if main_thread is None else main_thread)


def register(cls: type[State]) -> type[State]:
    """Class decorator: make a State loadable by its ``algorithm`` name."""
    if not cls.algorithm:
        raise TypeError(f"{cls.__name__} must set the class attribute 'algorithm'")
    if cls.algorithm in _REGISTRY and _REGISTRY[cls.algorithm] is not cls:
        raise TypeError(f"algorithm name {cls.algorithm!r} is already registered")
    _REGISTRY[cls.algorithm] = cls
    return cls


def state_class(algorithm: str) -> type[State]:
    """The registered State class for ``algorithm``."""
    try:
        return _REGISTRY[algorithm]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise StateError(f"unknown algorithm {algorithm!r} (known: {known})") from None


@dataclass(frozen=True)
class Schema:
    """Names and dtypes of the feature columns, and the target column if any."""

    features: tuple[str, ...]
    dtypes: tuple[str, ...] = ()
    target: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def to_json(self) -> dict:
        return {"features": list(self.features), "dtypes": list(self.dtypes), "target": self.target}

    @classmethod
    def from_json(cls, obj: Mapping) -> Schema:
        return cls(tuple(obj["features"]), tuple(obj.get("dtypes", ())), obj.get("target"))

    def check_same_features(self, other: Schema, where: str) -> None:
        """Raise a SchemaError that says how ``other``'s features differ from ours."""
        if self.features == other.features:
            return
        mine, theirs = list(self.features), list(other.features)
        missing = [c for c in mine if c not in theirs]
        extra = [c for c in theirs if c not in mine]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            detail = "; ".join(parts)
        else:
            detail = f"same columns in another order: expected {mine}, got {theirs}"
        raise SchemaError(
            f"{where}: features differ from the ones the state was fitted on "
            f"({len(mine)} expected, {len(theirs)} given): {detail}"
        )


@dataclass(frozen=True)
class RoundContext:
    """Where a partition task of a round runs; passed to ``State._update`` as ``context``.

    Attributes
    ----------
    epoch, round : int
        Epoch and round within the epoch (from 0).
    index : int
        The partition's index in the input (stable across epochs and workers).
    source : str or None
        The partition's id.
    seed : int
        The fit's seed.

    Examples
    --------
    >>> ctx = RoundContext(epoch=1, round=0, index=3, source=None, seed=7)
    >>> bool(ctx.rng().random() == RoundContext(1, 5, 3, "other", 7).rng().random())
    True
    """

    epoch: int
    round: int
    index: int
    source: str | None
    seed: int

    def rng(self, *salt: int) -> np.random.Generator:
        """A generator seeded by ``(seed, epoch, index, *salt)``: the same on any worker, any order."""
        return np.random.default_rng([self.seed, self.epoch, self.index, *salt])

    @property
    def where(self) -> str:
        """The partition, for error messages."""
        return f"partition {self.index}" + (f" ({self.source})" if self.source else "")


class State(abc.ABC):
    """Base class of every model state.

    Attributes
    ----------
    params : dict
        Hyperparameters that shape the state (JSON-serialisable).
    schema : Schema
        Features (names and dtypes) and target the state was built from.
    n_rows : int
        Rows folded in so far.
    n_skipped : int
        Rows dropped as invalid (NaN/inf) under ``on_invalid="skip"``.
    consumed : frozenset of str
        Ids of the input partitions folded in, so that re-running a fit on a
        grown dataset (or after a crash) reads only what is new.
    """

    algorithm: ClassVar[str] = ""
    #: dtype the engine converts feature batches to before ``_update``.
    input_dtype: ClassVar[type] = np.float64
    #: whether ``_update`` needs a target column.
    supervised: ClassVar[bool] = False
    #: names of the arrays that make up the summary (saved and checksummed).
    array_names: ClassVar[tuple[str, ...]] = ()
    #: the rounds protocol (see the module docstring): arrays averaged per round, weighted ...
    round_averaged: ClassVar[tuple[str, ...]] = ()
    #: ... accumulators summed per round ...
    round_summed: ClassVar[tuple[str, ...]] = ()
    #: ... and the ``round_summed`` array that counts a partition's weight (None: its batch's rows).
    round_weight: ClassVar[str | None] = None
    #: BLAS threads while this state's partition tasks run (1: one per task; None: BLAS's default).
    blas_threads: ClassVar[int | None] = None
    #: with ``blas_threads=1``: the limit holds on the main thread too (in-memory fits, merges, finalize),
    #: for states whose work is many small GEMMs that BLAS threads only slow down
    blas_on_main_thread: ClassVar[bool] = False
    #: whether ``_update`` takes ``weight=`` (sample weights, one per row of the batch)
    accepts_weight: ClassVar[bool] = False

    def __init__(self, schema: Schema, params: Mapping[str, Any] | None = None):
        self.schema = schema
        self.params = dict(params or {})
        self.n_rows = 0
        self.n_skipped = 0
        #: total weight of the rows folded in (``n_rows`` when no sample weights were given)
        self.weight_sum = 0.0
        self.consumed: frozenset[str] = frozenset()
        self.extra_meta: dict[str, Any] = {}
        self._init_arrays()

    # ---- to implement -------------------------------------------------------------
    @abc.abstractmethod
    def _init_arrays(self) -> None:
        """Set the empty summary's arrays on ``self``."""

    @abc.abstractmethod
    def _update(self, X: Any, y: np.ndarray | None, context: RoundContext | None) -> None:
        """Fold the batch ``X`` (from :meth:`read_batch`) into ``self`` in place.

        ``context`` is the round's :class:`RoundContext` in a round of
        :func:`daskstate.engine.fold_rounds`, None in a one-pass fold.
        """

    @abc.abstractmethod
    def _merge(self, other: State) -> None:
        """Fold ``other`` (disjoint data, same schema and params) into ``self`` in place.

        Called only when both states have seen rows.
        """

    @abc.abstractmethod
    def finalize(self, **overrides: Any) -> Any:
        """The working model from the summary alone."""

    # ---- the batch a partition becomes (override for sparse or frame batches) -------
    def read_batch(self, X: Any, y: Any, *, on_invalid: str = "raise", where: str = "batch",
                   weight: Any = None) -> tuple[Any, ...]:
        """One partition (``X`` and its target ``y``, or None) as ``(batch, target, n_dropped)``.

        The default is :func:`daskstate.data.to_batch`: the schema's feature
        columns as a dense ``input_dtype`` matrix, the target if ``supervised``,
        and rows with NaN or inf raised on or dropped (``on_invalid``), with errors
        naming ``where``. With ``weight`` (sample weights of a state that
        ``accepts_weight``): ``(batch, target, weight, n_dropped)``, the weights
        checked (finite, non-negative) and dropped with their rows.
        """
        from daskstate.data import to_batch

        return to_batch(X, y, self.schema, dtype=self.input_dtype, on_invalid=on_invalid, where=where,
                        need_target=self.supervised, weight=weight)

    def check_batch(self, X: Any, y: Any) -> int:
        """Raise if ``X`` cannot be this state's batch; return its number of rows."""
        if getattr(X, "ndim", None) != 2 or X.shape[1] != self.n_features:
            raise SchemaError(
                f"batch has shape {np.shape(X)}; expected 2 dimensions with {self.n_features} feature columns"
            )
        if self.supervised and y is None:
            raise SchemaError(f"{self.algorithm} needs a target, but the batch has none")
        return int(X.shape[0])

    # ---- public, pure operations -----------------------------------------------
    @property
    def n_features(self) -> int:
        return self.schema.n_features

    def empty_like(self) -> State:
        """An empty state with the same hyperparameters and schema."""
        return type(self)(self.schema, self.params)

    def copy(self) -> State:
        return copy.deepcopy(self)

    @property
    def blas_policy(self) -> BlasPolicy:
        """The declared BLAS policy (``blas_threads``, ``blas_on_main_thread``) as a value."""
        return BlasPolicy(self.blas_threads, self.blas_on_main_thread)

    def blas_limit(self, main_thread: bool | None = None) -> contextlib.AbstractContextManager:
        """The declared BLAS policy as a context (``main_thread=True``: also on the main thread)."""
        return self.blas_policy.limit(main_thread)

    def update(self, X: Any, y: np.ndarray | None = None, *, source: str | None = None,
               context: RoundContext | None = None, weight: np.ndarray | None = None) -> State:
        """Return a new state with the batch ``X`` (and ``y``, and sample weights ``weight``) folded in."""
        new = self.copy()
        new.update_inplace(X, y, source=source, context=context, weight=weight)
        return new

    def update_inplace(self, X: Any, y: np.ndarray | None = None, *, source: str | None = None,
                       context: RoundContext | None = None, weight: np.ndarray | None = None) -> None:
        """Fold a batch into ``self``; only for states the caller owns privately."""
        n = self.check_batch(X, y)
        if weight is not None:
            weight = self._check_weight(weight, n)
        if n:
            try:
                with self.blas_limit():
                    if weight is None:
                        self._update(X, y, context)
                    else:
                        self._update(X, y, context, weight=weight)
            except MomentOverflowError as exc:  # the shared numerics know indices, the state the names
                raise exc.naming(self.schema.features, self.schema.target) from None
            self.n_rows += n
            self.weight_sum += float(n if weight is None else weight.sum())
        if source is not None:
            self.consumed = self.consumed | {source}

    def _check_weight(self, weight: Any, n: int) -> np.ndarray:
        if not self.accepts_weight:
            raise StateError(f"{self.algorithm} states cannot weight rows (no sample_weight)")
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != (n,):
            raise SchemaError(f"sample weights of shape {w.shape} for a batch of {n} rows")
        return w

    @property
    def is_weighted(self) -> bool:
        """Whether the rows' total weight differs from their number (sample weights were given)."""
        return self.weight_sum != self.n_rows

    def merge(self, other: State) -> State:
        """Return the summary of the union of ``self``'s and ``other``'s data."""
        new = self.copy()
        new.merge_inplace(other)
        return new

    def merge_inplace(self, other: State) -> None:
        """Fold ``other`` into ``self``; only for states the caller owns privately."""
        self._check_mergeable(other)
        if other.n_rows and self.n_rows == 0:
            for name in self.array_names:
                setattr(self, name, np.array(getattr(other, name), copy=True))
            self.extra_meta = {**copy.deepcopy(other.extra_meta), **self.extra_meta}
        elif other.n_rows:
            try:
                with self.blas_limit():
                    self._merge(other)
            except MomentOverflowError as exc:
                raise exc.naming(self.schema.features, self.schema.target) from None
        self.n_rows += other.n_rows
        self.weight_sum += other.weight_sum
        self.n_skipped += other.n_skipped
        self.consumed = self.consumed | other.consumed

    def _check_mergeable(self, other: State) -> None:
        if type(other) is not type(self):
            raise StateError(f"cannot merge a {other.algorithm!r} state into a {self.algorithm!r} state")
        if other.params != self.params:
            diff = sorted(k for k in set(self.params) | set(other.params) if self.params.get(k) != other.params.get(k))
            raise StateError(f"cannot merge {self.algorithm} states with different hyperparameters: {diff}")
        self.schema.check_same_features(other.schema, "merge")
        overlap = self.consumed & other.consumed
        if overlap:
            sample = sorted(overlap)[:3]
            raise StateError(
                f"cannot merge states that both consumed the same {len(overlap)} input(s), e.g. {sample}: "
                "the same data would be counted twice"
            )

    @property
    def nbytes(self) -> int:
        """Bytes held by the summary's arrays (independent of the rows seen)."""
        return int(sum(np.asarray(a).nbytes for a in self.arrays().values()))

    # ---- serialisation ----------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The summary's arrays by name."""
        return {name: getattr(self, name) for name in self.array_names}

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description of the state (without the arrays)."""
        meta = {
            "algorithm": self.algorithm,
            "format_version": FORMAT_VERSION,
            "params": self.params,
            "schema": self.schema.to_json(),
            "n_rows": int(self.n_rows),
            "n_skipped": int(self.n_skipped),
            "consumed": sorted(self.consumed),
            "extra": self.extra_meta,
        }
        if self.is_weighted:  # states without sample weights keep the metadata they always had
            meta["weight_sum"] = float(self.weight_sum)
        return meta

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state as ``(arrays, metadata)``: numeric arrays plus JSON."""
        return {k: np.asarray(v) for k, v in self.arrays().items()}, self.metadata()

    @staticmethod
    def from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> State:
        """Rebuild a state from :meth:`to_arrays` output; validates names and shapes."""
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise StateError(
                f"state format version {version!r} is not supported (this daskstate reads version {FORMAT_VERSION})"
            )
        cls = state_class(meta.get("algorithm", ""))
        state = cls(Schema.from_json(meta["schema"]), meta["params"])
        expected = state.arrays()
        if set(arrays) != set(expected):
            raise StateError(
                f"{cls.algorithm} state arrays are {sorted(arrays)}; expected {sorted(expected)}"
            )
        for name, template in expected.items():
            arr = np.asarray(arrays[name])
            if not _shape_compatible(template, arr):
                raise StateError(
                    f"{cls.algorithm} state array {name!r} has shape {arr.shape}, dtype {arr.dtype}; "
                    f"expected shape {np.shape(template)}, dtype {np.asarray(template).dtype}"
                )
            setattr(state, name, arr.astype(np.asarray(template).dtype, copy=True))
        state.n_rows = int(meta["n_rows"])
        state.weight_sum = float(meta.get("weight_sum", state.n_rows))
        state.n_skipped = int(meta.get("n_skipped", 0))
        state.consumed = frozenset(meta.get("consumed", ()))
        state.extra_meta = dict(meta.get("extra", {}))
        state._after_load()
        return state

    def _after_load(self) -> None:
        """Hook for states whose array shapes are only fixed once data was seen."""
        return None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.algorithm}: {self.n_rows} rows, "
            f"{self.n_features} features, {self.nbytes} bytes>"
        )


def _shape_compatible(template: Any, arr: np.ndarray) -> bool:
    """Same number of dimensions and dtype kind; shapes may differ where the template has 0.

    States whose sizes are fixed only after the first batch (e.g. k-means' core set
    before seeding) declare such axes as length 0 in their empty arrays.
    """
    t = np.asarray(template)
    if t.ndim != arr.ndim or t.dtype.kind != arr.dtype.kind:
        return False
    return all(ts == 0 or ts == s for ts, s in zip(t.shape, arr.shape, strict=True))


def merge_all(states: Iterable[State]) -> State:
    """Merge a non-empty sequence of states left to right into a new state."""
    it = iter(states)
    try:
        acc = next(it).copy()
    except StopIteration:
        raise ValueError("merge_all needs at least one state") from None
    for s in it:
        acc.merge_inplace(s)
    return acc


@register
class MomentsState(State):
    """Count, mean and centred second moment of the columns of every batch: exact and mergeable.

    The statistics pass of any algorithm that needs a normaliser or a scatter
    matrix. The mean is kept as ``shift + offset`` (``shift`` is the first row
    seen) so that data with a large mean and a small spread loses no digits;
    batches and states combine with Chan's formulas
    (:func:`daskstate.numerics.batch_moments`, :func:`daskstate.numerics.merge_moments`),
    so ``merge(update(A), update(B)) == update(A ∪ B)`` to rounding.

    Subclasses choose the columns by overriding :meth:`_moment_columns` (e.g. the
    features and the label side by side) and set ``scatter = True`` to keep the
    full centred scatter matrix instead of per-column sums of squares.

    Examples
    --------
    >>> import numpy as np
    >>> m = MomentsState(Schema(("a", "b"))).update(np.array([[1.0, 10.0], [3.0, 30.0]]))
    >>> m.mean, m.variance
    (array([ 2., 20.]), array([  1., 100.]))
    """

    algorithm = "moments"
    array_names = ("shift", "offset", "m2")
    accepts_weight = True
    #: keep the centred scatter matrix (columns x columns) instead of per-column sums of squares
    scatter: ClassVar[bool] = False

    def _n_columns(self) -> int:
        return self.n_features

    def _init_arrays(self) -> None:
        p = self._n_columns()
        self.shift = np.zeros(p)
        self.offset = np.zeros(p)
        self.m2 = np.zeros((p, p)) if self.scatter else np.zeros(p)

    def _moment_columns(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> np.ndarray:
        """The matrix whose columns' moments are kept (default: the features)."""
        return X

    def _update(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None,
                weight: np.ndarray | None = None) -> None:
        if self.n_rows == 0:
            self.shift = self._moment_columns(X[:1], None if y is None else y[:1], context)[0].copy()
        n = self.weight_sum  # the count of Chan's formulas is the rows' total weight
        for rows in mini_batches(len(X)):
            A = self._moment_columns(X[rows], None if y is None else y[rows], context)
            nb, off_b, m2_b = batch_moments(A, self.shift, scatter=self.scatter,
                                            weights=None if weight is None else weight[rows])
            n, self.offset, self.m2 = merge_moments(n, self.offset, self.m2, nb, off_b, m2_b)

    def _merge(self, other: MomentsState) -> None:
        off_b = rebase(other.offset, other.shift, self.shift)
        _, self.offset, self.m2 = merge_moments(self.weight_sum, self.offset, self.m2, other.weight_sum, off_b,
                                                other.m2)

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.offset

    @property
    def variance(self) -> np.ndarray:
        """Population variance (ddof=0, weighted by the sample weights) of each column; NaN before any weight."""
        m2 = np.diagonal(self.m2) if self.scatter else self.m2
        return m2 / self.weight_sum if self.weight_sum else np.full(len(m2), np.nan)

    def finalize(self) -> dict[str, Any]:
        return {"mean_": self.mean, "var_": self.variance, "n_samples_seen_": self.n_rows}
