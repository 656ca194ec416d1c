"""Inputs to batches: schema discovery, partition ids, and validation of bad input.

Every input a user can pass to ``fit`` becomes an :class:`Input`: a schema plus
either a list of lazy Dask partitions (each with a source id) or a one-shot
iterator of in-memory batches. :func:`to_batch` turns one partition into the
numeric ``(X, y)`` arrays an update consumes, raising errors that name the
partition, the column and the count.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask.dataframe.dask_expr import new_collection

from daskstate.errors import DataError, SchemaError
from daskstate.state import Schema

ON_INVALID = ("raise", "skip")
DEFAULT_BATCH_ROWS = 65_536


# ---------------------------------------------------------------------------- schema
def _is_numeric(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def frame_schema(
    dtypes: pd.Series, features: Sequence[str] | None, target: str | None, where: str = "input"
) -> Schema:
    """Schema of a DataFrame-like input from its column dtypes.

    ``features=None`` means every numeric column but the target.
    """
    columns = [str(c) for c in dtypes.index]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        used = features is None or target in duplicated or any(str(f) in duplicated for f in features)
        if used:
            raise SchemaError(f"{where}: column name(s) {duplicated} appear more than once; rename them "
                              "(or name features= without them)")
        keep = [c not in duplicated for c in columns]
        dtypes, columns = dtypes[keep], [c for c, k in zip(columns, keep, strict=True) if k]
    dtypes = pd.Series(list(dtypes), index=columns)
    if target is not None and target not in columns:
        raise SchemaError(f"{where}: target column {target!r} is missing (columns: {columns})")
    if features is None:
        features = [c for c in columns if c != target and _is_numeric(dtypes[c])]
        if not features:
            raise SchemaError(f"{where}: no numeric feature columns (columns: {columns})")
    else:
        features = [str(f) for f in features]
        missing = [f for f in features if f not in columns]
        if missing:
            raise SchemaError(f"{where}: feature column(s) {missing} missing (columns: {columns})")
        if target is not None and target in features:
            raise SchemaError(f"{where}: column {target!r} is both a feature and the target")
    bad = [f"{f!r} ({dtypes[f]})" for f in features if not _is_numeric(dtypes[f])]
    if bad:
        raise SchemaError(
            f"{where}: feature column(s) {', '.join(bad)} are not numeric; "
            "features must be integer, float or boolean"
        )
    return Schema(tuple(features), tuple(str(dtypes[f]) for f in features), target)


def array_schema(n_features: int, dtype: Any, features: Sequence[str] | None, where: str = "input") -> Schema:
    """Schema of an array input; features are named ``x0, x1, ...`` unless given."""
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise SchemaError(f"{where}: array dtype {dtype} is not numeric")
    if np.issubdtype(dtype, np.complexfloating):
        raise SchemaError(f"{where}: Complex data not supported (dtype {dtype})")
    if features is None:
        features = [f"x{i}" for i in range(n_features)]
    elif len(features) != n_features:
        raise SchemaError(
            f"{where}: X has {n_features} features, but it is expecting {len(features)} features as input "
            f"(the array has {n_features} columns; {len(features)} features expected {list(features)})"
        )
    return Schema(tuple(str(f) for f in features), (str(np.dtype(dtype)),) * n_features, None)


# ---------------------------------------------------------------------------- batches
def to_features(part: Any, schema: Schema, *, dtype: type = np.float64, where: str = "batch") -> np.ndarray:
    """The feature matrix of one partition (DataFrame or array), with column checks."""
    if isinstance(part, pd.DataFrame):
        if not all(isinstance(c, str) for c in part.columns):
            part = part.rename(columns=str)
        columns = list(part.columns)
        missing = [c for c in schema.features if c not in columns]
        if missing:
            raise SchemaError(f"{where}: feature column(s) {missing} missing (columns: {columns})")
        # one dtype lookup for all columns (``part[c]`` builds a Series per column)
        dtypes = part.dtypes if part.columns.is_unique else {c: part[c].dtype for c in schema.features}
        bad = [f"{c!r} ({dtypes[c]})" for c in schema.features if not _is_numeric(dtypes[c])]
        if bad:
            raise SchemaError(f"{where}: feature column(s) {', '.join(bad)} are not numeric")
        if columns != list(schema.features):
            part = part[list(schema.features)]
        return part.to_numpy(dtype=dtype, na_value=np.nan)
    X = np.asarray(part)
    if X.ndim == 1:
        X = X.reshape(-1, 1) if schema.n_features == 1 else X.reshape(1, -1)
    if X.ndim != 2 or X.shape[1] != schema.n_features:
        raise SchemaError(f"{where}: array of shape {X.shape}; expected {schema.n_features} feature columns")
    if not (np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.bool_)):
        raise SchemaError(f"{where}: array dtype {X.dtype} is not numeric")
    return X.astype(dtype, copy=False)


def to_batch(
    part: Any,
    y: Any,
    schema: Schema,
    *,
    dtype: type = np.float64,
    on_invalid: str = "raise",
    where: str = "batch",
    need_target: bool = False,
    weight: Any = None,
) -> tuple[Any, ...]:
    """Turn one partition into ``(X, y, n_dropped)`` with validation.

    With ``weight`` (the partition's sample weights): ``(X, y, weight, n_dropped)``,
    the weights checked by :func:`to_weights` and dropped with their rows.

    Raises
    ------
    SchemaError
        missing or non-numeric columns, wrong number of columns.
    DataError
        NaN or inf values when ``on_invalid="raise"``; negative or non-finite weights.
    """
    X = to_features(part, schema, dtype=dtype, where=where)
    if need_target:
        if y is None and isinstance(part, pd.DataFrame) and schema.target is not None:
            if schema.target not in part.columns:
                raise SchemaError(f"{where}: target column {schema.target!r} missing (columns: {list(part.columns)})")
            y = part[schema.target]
        if y is None:
            raise _target_missing(where, "pass target=... or y")
        y = _target_array(y, len(X), where)
    else:
        y = None
    if weight is None:
        return _drop_invalid(X, y, schema, on_invalid, where)
    w = to_weights(weight, len(X), where)
    keep = _valid_rows(X, y, schema, on_invalid, where)
    if keep is None:
        return X, y, w, 0
    return X[keep], (y[keep] if y is not None else None), w[keep], int((~keep).sum())


#: the name sample weights are called by in error messages when they are not a column
WEIGHT_NAME = "sample_weight"


def to_weights(weight: Any, n: int, where: str = "batch") -> np.ndarray:
    """One partition's sample weights as float64, checked: ``n`` of them, finite and non-negative.

    Errors name the weights (their column, if they are one), the partition and
    the rows at fault, so a bad value in a large input can be found.

    Examples
    --------
    >>> to_weights(pd.Series([1, 2], name="w"), 2)
    array([1., 2.])
    >>> to_weights([1.0, -1.0], 2, where="partition 3")
    Traceback (most recent call last):
    ...
    daskstate.errors.DataError: partition 3: sample_weight has 1 negative value(s) (first at row 1 of rows 0-1, ...
    """
    name = WEIGHT_NAME
    if isinstance(weight, pd.Series):
        if weight.name is not None and weight.name != _WEIGHT_COLUMN:
            name = f"sample_weight column {weight.name!r}"
        if not _is_numeric(weight.dtype):
            raise DataError(f"{where}: {name} is not numeric (dtype {weight.dtype})")
        weight = weight.to_numpy(dtype=np.float64, na_value=np.nan)
    w = np.asarray(weight)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1 or len(w) != n:
        raise SchemaError(f"{where}: {name} has shape {w.shape}; expected ({n},), one weight per row")
    if not (np.issubdtype(w.dtype, np.number) or np.issubdtype(w.dtype, np.bool_)):
        raise DataError(f"{where}: {name} is not numeric (dtype {w.dtype})")
    w = w.astype(np.float64, copy=False)
    for bad, what in ((~np.isfinite(w), "NaN or inf"), (w < 0, "negative")):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: {name} has {int(bad.sum())} {what} value(s) (first at row {first} of rows 0-{n - 1}, "
                f"value {float(w[first])}); sample weights must be finite and >= 0"
            )
    return w


def _target_missing(where: str, how: str) -> SchemaError:
    return SchemaError(f"{where}: a target is needed ({how}): this estimator requires y to be passed, "
                       "but the target y is None")


def _target_array(y: Any, n: int, where: str) -> np.ndarray:
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise SchemaError(f"{where}: target must be one column, got {y.shape[1]}")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        y = y.to_numpy(dtype=np.float64, na_value=np.nan) if _is_numeric(y.dtype) else y.to_numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise SchemaError(f"{where}: target has shape {y.shape}; expected ({n},) to match the features")
    return y


def _drop_invalid(
    X: np.ndarray, y: np.ndarray | None, schema: Schema, on_invalid: str, where: str
) -> tuple[np.ndarray, np.ndarray | None, int]:
    keep = _valid_rows(X, y, schema, on_invalid, where)
    if keep is None:
        return X, y, 0
    return X[keep], (y[keep] if y is not None else None), int((~keep).sum())


def _valid_rows(X: np.ndarray, y: np.ndarray | None, schema: Schema, on_invalid: str, where: str
                ) -> np.ndarray | None:
    """The rows to keep (None: all), or raise naming the rows with NaN or inf under ``on_invalid="raise"``."""
    y_numeric = y is None or np.issubdtype(y.dtype, np.number)
    if y_numeric and np.isfinite(X.sum(axis=0)).all() and (y is None or np.isfinite(y.sum())):
        # a NaN or inf anywhere makes its column's sum NaN or inf: a finite sum (one pass,
        # no n x d mask) proves the batch clean; an overflowing sum takes the full check
        return None
    finite = np.isfinite(X)
    bad_rows = ~finite.all(axis=1)
    y_bad = None
    if y is not None:
        if np.issubdtype(y.dtype, np.number):
            y_bad = ~np.isfinite(y)
        else:
            y_bad = pd.isna(y)
        bad_rows |= y_bad
    n_bad = int(bad_rows.sum())
    if n_bad == 0:
        return None
    if on_invalid == "skip":
        return ~bad_rows
    per_column = (~finite).sum(axis=0)
    cols = [f"{schema.features[j]!r} ({int(per_column[j])})" for j in np.flatnonzero(per_column)]
    if y_bad is not None and y_bad.any():
        cols.append(f"target {schema.target or 'y'!r} ({int(y_bad.sum())})")
    first = int(np.flatnonzero(bad_rows)[0])
    raise DataError(
        f"{where}: {n_bad} row(s) with NaN or inf (first at row {first}); by column: {', '.join(cols)}. "
        "Pass on_invalid='skip' to drop such rows (they are counted in the state)."
    )


# ---------------------------------------------------------------------------- inputs
@dataclass
class Input:
    """An input ready to fold.

    Dask inputs have ``parts`` (one Delayed per partition, or a ``(X, y)`` pair of
    Delayed) and ``sources`` (an id per partition). Local inputs have ``batches``,
    a one-shot iterator of ``(X, y)`` in-memory batches.
    """

    schema: Schema
    parts: list[Any] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    batches: Iterator[tuple[Any, Any]] | None = None
    n_rows: int | None = None
    collection: Any = None
    #: each partition's number in the original input (for error messages), when a subset
    numbers: list[int] | None = None
    #: whether every part / batch is an ``(X, y, weight)`` triple (sample weights given)
    weighted: bool = False
    #: whether the parts are slices of data already in this process's memory (an in-memory input made Dask
    #: so that epochs can re-read it): without a client, the engine then runs its rounds without graphs
    in_memory: bool = False

    @property
    def is_dask(self) -> bool:
        return self.batches is None

    def number(self, i: int) -> int:
        """The original partition number of ``parts[i]``."""
        return self.numbers[i] if self.numbers is not None else i

    def subset(self, indices: Sequence[int]) -> Input:
        """The partitions at ``indices``; errors still name their numbers in the whole input."""
        return Input(self.schema, parts=[self.parts[i] for i in indices], sources=[self.sources[i] for i in indices],
                     collection=self.collection, numbers=[self.number(i) for i in indices], weighted=self.weighted,
                     in_memory=self.in_memory)

    @property
    def npartitions(self) -> int:
        return len(self.parts)


def is_dask_collection(obj: Any) -> bool:
    return isinstance(obj, dd.DataFrame | dd.Series | da.Array)


def as_input(
    X: Any,
    y: Any = None,
    *,
    features: Sequence[str] | None = None,
    target: str | None = None,
    need_target: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    sample_weight: Any = None,
) -> Input:
    """Wrap any supported input (Dask DataFrame or Array, pandas, numpy, iterator).

    ``sample_weight`` (one non-negative weight per row): an array-like for
    in-memory input, a column name of a (pandas or Dask) DataFrame, an aligned
    Dask Series for a Dask DataFrame or a Dask Array for a Dask Array. The
    weight column is not a feature. Parts and batches then carry ``(X, y, weight)``.
    """
    if isinstance(X, np.ndarray | pd.DataFrame):
        X = as_array(X)  # object arrays of numbers, column names that are not strings
    if sample_weight is not None:
        return _weighted_input(X, y, sample_weight, features, target, need_target, batch_rows)
    if isinstance(X, dd.DataFrame):
        return _dask_frame_input(X, y, features, target, need_target)
    if isinstance(X, da.Array):
        return _dask_array_input(X, y, features, need_target)
    if isinstance(X, pd.DataFrame):
        schema = frame_schema(X.dtypes, features, target if y is None else None)
        if need_target and y is None and schema.target is None:
            raise _target_missing("input", "pass target=... or y")
        return Input(schema, batches=_slices(X, y, batch_rows), n_rows=len(X))
    if isinstance(X, np.ndarray):
        if X.ndim != 2:
            raise SchemaError(f"input: array must be 2-dimensional (rows x features), got shape {X.shape}; "
                              "Reshape your data with X.reshape(-1, 1) for one feature")
        if X.shape[1] == 0:
            raise SchemaError(f"input: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
        if need_target and y is None:
            raise _target_missing("input", "pass y")
        schema = array_schema(X.shape[1], X.dtype, features)
        return Input(schema, batches=_slices(X, y, batch_rows), n_rows=len(X))
    if isinstance(X, Batches | Iterator):
        return _iterator_input(iter(X), features, target, need_target)
    arr = as_array(X)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"unsupported input of type {type(X).__name__}; pass a Dask DataFrame or Array, "
                        "a pandas DataFrame, an array-like, or daskstate.batches(iterable)")
    return as_input(arr, y, features=features, target=target, need_target=need_target, batch_rows=batch_rows)


def _weighted_input(X: Any, y: Any, weight: Any, features, target, need_target, batch_rows: int) -> Input:
    """:func:`as_input` with sample weights: each part or batch an ``(X, y, weight)`` triple."""
    if isinstance(X, dd.DataFrame):
        return _dask_frame_input(X, y, features, target, need_target, weight=weight)
    if isinstance(X, da.Array):
        return _dask_array_input(X, y, features, need_target, weight=weight)
    if isinstance(X, Batches | Iterator | Input):
        raise TypeError("sample_weight needs an input that is one array or frame (numpy, pandas or Dask), "
                        "not an iterator of batches")
    if is_dask_collection(weight):
        raise TypeError(f"sample_weight is a Dask {type(weight).__name__} but X is in memory; "
                        "pass an array-like of weights")
    if isinstance(weight, str):
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"sample_weight={weight!r} names a column, which needs a DataFrame X "
                            f"(got {type(X).__name__}); pass an array of weights")
        if weight not in X.columns:
            raise SchemaError(f"input: sample_weight column {weight!r} is missing (columns: {list(X.columns)})")
        if features is not None and weight in features or weight == target:
            raise SchemaError(f"input: column {weight!r} is the sample weight, so it cannot be a feature or the target")
        X, weight = X.drop(columns=weight), X[weight]
    if not isinstance(X, np.ndarray | pd.DataFrame):
        X = as_array(X)
        if not isinstance(X, np.ndarray):
            raise TypeError(f"unsupported input of type {type(X).__name__}")
    n = len(X)
    w = to_weights(weight, n, "input")  # the whole input at once: errors name its rows
    inp = as_input(X, y, features=features, target=target, need_target=need_target, batch_rows=batch_rows)
    inp.batches = _slices(X, y, batch_rows, w)
    inp.weighted = True
    return inp


class Batches:
    """An iterable of in-memory batches, read once: see :func:`batches`."""

    def __init__(self, iterable: Iterable):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)


def batches(iterable: Iterable) -> Batches:
    """Mark an iterable as batches to fold one after another (each an array, a DataFrame or an ``(X, y)`` pair).

    A list or any other array-like given to ``fit`` is one array (as in scikit-learn);
    wrap it in ``batches`` to fit from a stream of batches instead. A generator or
    other one-shot iterator is read as batches without it.

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> parts = [np.ones((3, 2)), np.zeros((3, 2))]
    >>> daskstate.StandardScaler().fit(daskstate.batches(parts)).mean_
    array([0.5, 0.5])
    """
    if isinstance(iterable, str | bytes | dict) or not isinstance(iterable, Iterable):
        raise TypeError(f"batches needs an iterable of batches, got {type(iterable).__name__}")
    return Batches(iterable)


def as_array(X: Any) -> Any:
    """Inputs ``as_input`` takes as they are; any other array-like (a list, ...) as a numpy array.

    Raises ``TypeError`` for sparse matrices and for values that are not array-like.
    """
    if X is None or isinstance(X, dd.DataFrame | dd.Series | da.Array | pd.DataFrame | pd.Series | np.ndarray
                               | Batches | Iterator | Input):
        if isinstance(X, pd.DataFrame) and not all(isinstance(c, str) for c in X.columns):
            return X.rename(columns=str)  # column names are strings in a schema
        if isinstance(X, np.ndarray) and X.dtype == object:
            try:
                return X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"input: an object array with values that are not numbers ({exc})") from None
        return X
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"sparse input ({type(X).__name__}) is not supported; pass dense arrays or DataFrames")
    arr = None if isinstance(X, str | bytes | dict) else np.asarray(X)
    if arr is None or arr.ndim == 0:
        raise TypeError(f"unsupported input of type {type(X).__name__}; pass a Dask DataFrame or Array, "
                        "a pandas DataFrame, an array-like, or daskstate.batches(iterable)")
    return as_array(arr) if arr.dtype == object else arr


def _slices(X: Any, y: Any, rows: int, weight: np.ndarray | None = None) -> Iterator[tuple[Any, ...]]:
    n = len(X)
    if y is not None and len(y) != n:
        raise SchemaError(f"input: {len(y)} target values for {n} rows")
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        xb = X.iloc[start:stop] if isinstance(X, pd.DataFrame) else X[start:stop]
        yb = None
        if y is not None:
            yb = y.iloc[start:stop] if isinstance(y, pd.Series | pd.DataFrame) else np.asarray(y)[start:stop]
        yield (xb, yb) if weight is None else (xb, yb, weight[start:stop])


def _iterator_input(it: Iterator, features, target, need_target) -> Input:
    try:
        first = next(it)
    except StopIteration:
        raise DataError("input: the iterator of batches is empty") from None
    fx, fy = first if isinstance(first, tuple) else (first, None)
    if isinstance(fx, pd.DataFrame):
        schema = frame_schema(fx.dtypes, features, target if fy is None else None, where="batch 0")
    else:
        fx = np.asarray(fx)
        if fx.ndim != 2:
            raise SchemaError(f"batch 0: array must be 2-dimensional, got shape {fx.shape}")
        schema = array_schema(fx.shape[1], fx.dtype, features, where="batch 0")

    def chain() -> Iterator[tuple[Any, Any]]:
        yield fx, fy
        for item in it:
            yield item if isinstance(item, tuple) else (item, None)

    return Input(schema, batches=chain())


#: the column under which a separately given Dask target travels with the features
_TARGET_COLUMN = "__daskstate_target__"
#: ... and the column of separately given Dask sample weights
_WEIGHT_COLUMN = "__daskstate_weight__"


def _dask_frame_input(ddf: dd.DataFrame, y, features, target, need_target, weight: Any = None) -> Input:
    if y is not None:
        y = _dask_target(y)
        target = None
    dtypes = ddf.dtypes
    if isinstance(weight, str):
        if weight not in ddf.columns:
            raise SchemaError(f"input: sample_weight column {weight!r} is missing (columns: {list(ddf.columns)})")
        if features is not None and weight in features or weight == target:
            raise SchemaError(f"input: column {weight!r} is the sample weight, so it cannot be a feature or the target")
        dtypes = dtypes.drop(weight)
    elif weight is not None and not isinstance(weight, dd.Series):
        raise TypeError(f"with a Dask DataFrame, sample_weight is a column name or a Dask Series aligned with it, "
                        f"not a {type(weight).__name__}")
    schema = frame_schema(dtypes, features, target)
    if need_target and y is None and schema.target is None:
        raise _target_missing("input", "pass target=... or y")
    columns = list(schema.features) + ([schema.target] if schema.target and need_target else [])
    weight_column = weight if isinstance(weight, str) else (_WEIGHT_COLUMN if weight is not None else None)
    frame = ddf[columns + ([weight] if isinstance(weight, str) else [])]
    if y is not None:
        frame = _with_target(frame, y)
    if isinstance(weight, dd.Series):
        frame = _with_column(frame, weight, _WEIGHT_COLUMN, "sample_weight")
    # The partition tasks come from the optimised expression itself: column projection is pushed
    # into the reader, and Dask may then fuse small partitions (read_parquet does), so only the
    # optimised collection knows how many partitions there are and what each one holds.
    physical = frame.expr.optimize(fuse=False)
    sources = _physical_sources(physical)
    parts = list(new_collection(physical.fuse()).to_delayed(optimize_graph=False))
    if len(parts) != len(sources):  # pragma: no cover - a Dask change; refuse rather than misattribute
        raise RuntimeError(f"{len(parts)} partition tasks but {len(sources)} partition ids")
    if y is not None or weight_column is not None:
        split = dask.delayed(_split_columns, pure=True)
        parts = [split(p, y is not None, weight_column, dask_key_name=f"split-target-{p.key[0]}-{p.key[1]}")
                 for p in parts]
    return Input(schema, parts=parts, sources=sources, collection=ddf, weighted=weight_column is not None)


def _dask_target(y: Any) -> dd.Series:
    if isinstance(y, dd.DataFrame):
        if len(y.columns) != 1:
            raise SchemaError(f"input: target must be one column, got {len(y.columns)} ({list(y.columns)})")
        y = y[y.columns[0]]
    if not isinstance(y, dd.Series):
        raise TypeError("with a Dask DataFrame, pass the target as target='column' or a Dask Series")
    return y


def _with_target(frame: dd.DataFrame, y: dd.Series) -> dd.DataFrame:
    """The features with the target as one more column, partitions aligned by Dask."""
    return _with_column(frame, y, _TARGET_COLUMN, "target")


def _with_column(frame: dd.DataFrame, column: dd.Series, name: str, what: str) -> dd.DataFrame:
    if column.npartitions != frame.npartitions and not (frame.known_divisions and column.known_divisions):
        letter = "y" if what == "target" else what
        raise SchemaError(
            f"input: {what} has {column.npartitions} partitions but the features have {frame.npartitions}; "
            f"without known divisions they are matched partition by partition, so partition {letter} like X"
        )
    return frame.assign(**{name: column})


def _split_columns(frame: pd.DataFrame, target: bool, weight: str | None) -> tuple:
    """A partition as ``(features, target)`` or ``(features, target, weight)``; the target None if in the frame.

    The weight column stays in the frame (no copy): the batch takes the features by name.
    """
    y = frame[_TARGET_COLUMN] if target else None
    w = frame[weight] if weight is not None else None
    if target:
        frame = frame.drop(columns=_TARGET_COLUMN)
    return (frame, y) if weight is None else (frame, y, w)


def warn_if_nothing_new(inp: Input, consumed: Collection[str], estimator: str) -> bool:
    """Warn when ``partial_fit`` finds every partition of a Dask input already in the state.

    Returns True when it warned (the fold will then read nothing).
    """
    if not inp.is_dask or not inp.sources or not all(s in consumed for s in inp.sources):
        return False
    warnings.warn(
        f"{estimator}.partial_fit found nothing new: all {len(inp.sources)} partitions of the input "
        "are already in the state, so nothing was read and the model is unchanged "
        "(call fit to train on the same data again)",
        UserWarning, stacklevel=3,
    )
    return True


def _dask_array_input(X: da.Array, y, features, need_target, weight: Any = None) -> Input:
    if X.ndim != 2:
        raise SchemaError(f"input: array must be 2-dimensional (rows x features), got shape {X.shape}")
    if any(np.isnan(c) for c in X.chunks[0]):
        X.compute_chunk_sizes()
    if X.shape[1] == 0:
        raise SchemaError(f"input: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    schema = array_schema(X.shape[1], X.dtype, features)
    if need_target and y is None:
        raise _target_missing("input", "pass y")
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    blocks = list(X.to_delayed(optimize_graph=True)[:, 0])
    if y is not None:
        y = da.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise SchemaError(f"input: {y.shape[0]} target values for {X.shape[0]} rows")
        y = y.rechunk({0: X.chunks[0]}) if y.chunks[0] != X.chunks[0] else y
        ys = y.to_delayed(optimize_graph=True)
        ys = list(ys[:, 0]) if ys.ndim == 2 else list(ys)
        blocks = list(zip(blocks, ys, strict=True))
    if weight is not None:
        if isinstance(weight, str | dd.Series | dd.DataFrame):
            raise TypeError("with a Dask Array, sample_weight is a Dask Array (or an array) of one weight per row")
        w = da.asarray(weight)
        if w.ndim != 1 or w.shape[0] != X.shape[0]:
            raise SchemaError(f"input: sample_weight has shape {w.shape}; expected ({X.shape[0]},), one per row")
        w = w.rechunk({0: X.chunks[0]}) if w.chunks[0] != X.chunks[0] else w
        ws = list(w.to_delayed(optimize_graph=True))
        blocks = [(*(b if isinstance(b, tuple) else (b, None)), wb) for b, wb in zip(blocks, ws, strict=True)]
    sources = [f"{X.name}:{i}" for i in range(len(blocks))]
    return Input(schema, parts=blocks, sources=sources, n_rows=int(X.shape[0]), collection=X,
                 weighted=weight is not None)


# ---------------------------------------------------------------------------- Parquet with ids
def partition_sources(ddf: dd.DataFrame) -> list[str]:
    """An id per partition of ``ddf`` as it will run (after Dask's optimisation).

    Partitions read by :func:`read_parquet` (also after projection, filters or
    other partition-wise steps) are named by file and row group. Other partitions
    get ``<optimised expression name>:<index>``, stable for the same inputs but
    changing when the data, the reading options or the selected columns do.
    """
    return _physical_sources(ddf.expr.optimize(fuse=False))


def _physical_sources(physical: Any) -> list[str]:
    pieces = _pieces_of(physical)
    if pieces is not None:
        return [p.id for p in pieces]
    return [f"{physical._name}:{i}" for i in range(physical.npartitions)]


def _pieces_of(physical: Any) -> list[Piece] | None:
    """The row group behind each partition of an optimised expression, when there is one.

    That holds when the expression reads one :func:`read_parquet` input and every
    step after the read works partition by partition (projection, filter, assign,
    map_partitions); a repartition or a fused read breaks the one-to-one mapping.
    """
    from dask.dataframe.dask_expr._expr import Blockwise
    from dask.dataframe.dask_expr.io.io import FromMap

    leaves, partitionwise = {}, True
    for e in physical.walk():
        if not e.dependencies():
            leaves[e._name] = e
        elif not isinstance(e, Blockwise):
            partitionwise = False
    if not partitionwise or len(leaves) != 1:
        return None
    (leaf,) = leaves.values()
    if not (isinstance(leaf, FromMap) and isinstance(leaf.operand("func"), PieceReader)):
        return None
    pieces = leaf.operand("func").pieces
    if leaf.operand("_partitions") is not None:
        pieces = [pieces[i] for i in leaf.operand("_partitions")]
    return pieces if len(pieces) == physical.npartitions else None


def _find_piece_reader(ddf: dd.DataFrame) -> PieceReader | None:
    """The reader of a :func:`read_parquet` frame whose partitions are its row groups, else None."""
    physical = ddf.expr.optimize(fuse=False)
    if _pieces_of(physical) is None:
        return None
    (leaf,) = {e._name: e for e in physical.walk() if not e.dependencies()}.values()
    return leaf.operand("func")


@dataclass(frozen=True)
class Piece:
    """One row group of one Parquet file: the unit of reading and of bookkeeping."""

    path: str
    row_group: int
    num_rows: int
    root: str = ""

    @property
    def id(self) -> str:
        rel = os.path.relpath(self.path, self.root) if self.root else self.path
        return f"{rel}#rg{self.row_group}"


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """``table.to_pandas()``: the same frame (index, columns, dtypes, one block per dtype), made faster.

    When every column converts to one numpy dtype (all float64, say), each Arrow
    column is copied once into the rows of one ``columns x rows`` block, which
    becomes the frame's single block (its ``to_numpy()`` is a column-major view, as
    after pandas' own consolidation). pyarrow builds the index and the column
    labels from the file's pandas metadata, through a zero-copy conversion
    (``split_blocks=True``). ``to_pandas()`` alone converts each column and then
    consolidates them, copying every value twice: 1.3-1.9 ms for a row group of
    100,000 x 16 float64 values against 0.8-1.0 ms here. Any other mix of types is
    left to ``to_pandas()``.

    Examples
    --------
    >>> table_to_frame(pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]})).to_numpy()
    array([[1., 3.],
           [2., 4.]])
    """
    types = set(table.schema.types)
    if table.num_columns < 2 or len(types) != 1 or not _one_numpy_type(types.pop(), table):
        return table.to_pandas()
    split = _split_frame(table)
    if split is None:
        return table.to_pandas()
    block = _new_block(table.num_columns, table.num_rows, split.dtypes.iloc[0])
    _copy_columns(block, table.columns)
    return _block_frame(block, split)


def _split_frame(table: pa.Table) -> pd.DataFrame | None:
    """``table.to_pandas(split_blocks=True)`` (zero-copy), or None unless its columns share one numpy number dtype.

    None when the pandas metadata asked for another dtype or made a column the index.
    """
    split = table.to_pandas(split_blocks=True)
    dtypes = set(split.dtypes)
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    if not (isinstance(dtype, np.dtype) and dtype.kind in "fiu") or split.shape[1] != table.num_columns:
        return None
    return split


def _new_block(n_columns: int, n_rows: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised ``columns x rows`` block from Arrow's memory pool, as ``to_pandas()``'s blocks.

    The pool keeps freed memory for the next partition, where a fresh numpy array of
    this size page-faults its way in (2-3x the copy).
    """
    buffer = pa.allocate_buffer(n_columns * n_rows * dtype.itemsize)
    return np.frombuffer(buffer, dtype=dtype).reshape(n_columns, n_rows)


def _copy_columns(rows: np.ndarray, columns: Sequence[pa.ChunkedArray]) -> None:
    """Each Arrow column into its row of ``rows`` (nulls of floats as NaN)."""
    for row, column in zip(rows, columns, strict=True):
        start = 0
        for chunk in column.chunks:
            row[start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)


def _block_frame(block: np.ndarray, split: pd.DataFrame) -> pd.DataFrame:
    """The frame over ``block.T`` with ``split``'s index, column labels and attrs."""
    frame = pd.DataFrame(block.T, index=split.index, columns=split.columns, copy=False)
    frame.attrs = split.attrs
    return frame


def _one_numpy_type(arrow_type: pa.DataType, table: pa.Table) -> bool:
    """Whether Arrow columns of this type convert to one plain numpy dtype (integers: without nulls)."""
    if pa.types.is_integer(arrow_type):
        return all(column.null_count == 0 for column in table.columns)
    return _number_type(arrow_type)


def _number_type(arrow_type: pa.DataType) -> bool:
    """Whether Arrow values of this type, without nulls, convert to a plain numpy number dtype (not float16)."""
    return pa.types.is_integer(arrow_type) or (pa.types.is_floating(arrow_type) and not pa.types.is_float16(arrow_type))


#: decoded bytes per read when :func:`read_row_group_frame` reads a row group a few columns at a time:
#: small enough for the decoded values to stay in a core's L2 cache (1-2 MiB on current server cores)
#: next to the decoder's own page buffers, large enough that the cost of a call stays small
READ_GROUP_BYTES = 512 * 1024


def read_row_group_frame(file: pq.ParquetFile, row_group: int, columns: Sequence[str] | None = None
                         ) -> pd.DataFrame:
    """``table_to_frame(file.read_row_group(row_group, columns))``, read a few columns at a time.

    When the columns share one float or integer type, they are decoded in groups of
    about :data:`READ_GROUP_BYTES`, and each group is copied into the frame's block
    while it is still in the CPU's cache: the row group is never decoded whole
    into a second, freshly allocated copy of its values. A row group of 100,000 x 16
    float64 values (Snappy) costs 9.3 ms of CPU instead of 11.8 ms, and in a fresh
    process far less, where that second copy page-faulted in each time. Values,
    dtypes, index and column labels are those of a whole read; anything else
    (other types, nulls, one group only) is read whole.

    Examples
    --------
    >>> with pq.ParquetFile("data/part-0.parquet", pre_buffer=False) as f:   # doctest: +SKIP
    ...     frame = read_row_group_frame(f, 0, ["x", "y"])
    """
    names = _unique(columns)
    plan = _column_groups(file, row_group, names)
    if plan is None:
        return table_to_frame(file.read_row_group(row_group, columns=names))
    groups, dtype = plan
    n_rows = file.metadata.row_group(row_group).num_rows
    block = _new_block(sum(map(len, groups)), n_rows, dtype)
    fields, metadata, start = [], None, 0
    for group in groups:
        part = file.read_row_group(row_group, columns=group, use_threads=False)
        if part.column_names != group or part.num_rows != n_rows or any(c.null_count for c in part.columns):
            # nulls may convert to something else than NaN (integers, nullable dtypes): read whole
            return table_to_frame(file.read_row_group(row_group, columns=names))
        _copy_columns(block[start : start + len(group)], part.columns)
        fields.extend(part.schema)
        metadata, start = part.schema.metadata, start + len(group)
    # the same table as a whole read, its columns zero-copy views of the block's rows
    table = pa.Table.from_arrays([pa.array(row) for row in block], schema=pa.schema(fields, metadata=metadata))
    split = _split_frame(table)
    return table.to_pandas() if split is None or split.dtypes.iloc[0] != dtype else _block_frame(block, split)


def _unique(columns: Sequence[str] | None) -> list[str] | None:
    """The column names, each once, in order (as pyarrow reads them)."""
    return list(dict.fromkeys(columns)) if columns is not None else None


def _column_groups(file: pq.ParquetFile, row_group: int, columns: Sequence[str] | None
                   ) -> tuple[list[list[str]], np.dtype] | None:
    """The groups of column names :func:`read_row_group_frame` reads at a time, and their numpy dtype.

    None when the row group is better read whole: a column that is not a plain
    top-level float or integer column, columns of different types, or one group.
    """
    schema = file.schema_arrow
    names = schema.names if columns is None else _unique(columns)
    if any(len(schema.get_all_field_indices(name)) != 1 for name in names):
        return None
    types = {schema.field(name).type for name in names}
    arrow_type = types.pop() if len(types) == 1 else None
    if arrow_type is None or not _number_type(arrow_type):
        return None
    dtype = np.dtype(arrow_type.to_pandas_dtype())
    n_rows = file.metadata.row_group(row_group).num_rows
    per_group = max(1, READ_GROUP_BYTES // max(1, n_rows * dtype.itemsize))
    if per_group >= len(names):
        return None
    return [names[i : i + per_group] for i in range(0, len(names), per_group)], dtype


class PieceReader:
    """Reads one :class:`Piece`; the callable behind :func:`read_parquet`'s partitions."""

    def __init__(self, pieces: Sequence[Piece], columns: Sequence[str] | None = None):
        self.pieces = list(pieces)
        self.columns = list(columns) if columns is not None else None

    def __call__(self, piece: Piece, columns: Sequence[str] | None = None) -> pd.DataFrame:
        # Dask passes a projection when it pushed one down; otherwise read what read_parquet exposed.
        columns = self.columns if columns is None else columns
        # in column groups: read page by page into buffers the allocator reuses; memory-mapped, with each
        # page faulted in, the same reads cost 14% more CPU one after another (0-3% more in a fit on Dask's
        # threads), and a file truncated during the read could end the process (SIGBUS)
        with pq.ParquetFile(piece.path, pre_buffer=False) as f:
            if _column_groups(f, piece.row_group, columns) is not None:
                return read_row_group_frame(f, piece.row_group, columns)
        # whole: memory-mapped, the decoder reads the pages where the page cache holds them, not from a
        # copy (9% less CPU for a row group of 100,000 x 16 float64 values in Snappy pages). The cost:
        # a file truncated by another process while it is read ends the process with SIGBUS, not an error.
        with pq.ParquetFile(piece.path, memory_map=True) as f:
            return table_to_frame(f.read_row_group(piece.row_group, columns=_unique(columns)))

    def __dask_tokenize__(self):
        return ("daskstate-piece-reader", tuple(self.pieces), self.columns)


def list_parquet_files(path: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[str], str]:
    """Parquet files under ``path`` (a file, a folder, a glob or a list), sorted, and their root."""
    import glob

    if isinstance(path, str | os.PathLike):
        path = os.fspath(path)
        if os.path.isdir(path):
            files = [
                os.path.join(d, f)
                for d, _, fs in os.walk(path)
                for f in fs
                if f.endswith((".parquet", ".parq", ".pq")) and not f.startswith(("_", "."))
            ]
            root = path
        else:
            files = glob.glob(path) if any(ch in path for ch in "*?[") else [path]
            root = os.path.dirname(path.split("*")[0]) if files else ""
    else:
        files = [os.fspath(p) for p in path]
        root = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
    files = sorted(files)
    if not files:
        raise DataError(f"no Parquet files found at {path!r}")
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise DataError(f"Parquet file(s) not found: {missing[:3]}")
    return files, root


def read_parquet(path: str | os.PathLike | Sequence[str], columns: Sequence[str] | None = None) -> dd.DataFrame:
    """Read Parquet into a Dask DataFrame with one partition per row group.

    Unlike :func:`dask.dataframe.read_parquet`, each partition carries a source id
    (file and row group), so a state records exactly what it consumed and
    ``partial_fit`` on the same folder after new files arrived reads only the new
    partitions. Column projection still happens before reading.

    Parameters
    ----------
    path : str, path, glob or list of paths
        A Parquet file, a folder of them (searched recursively), a glob, or a list.
    columns : list of str, optional
        Columns to expose (default: all).

    Examples
    --------
    >>> ddf = daskstate.read_parquet("data/")            # doctest: +SKIP
    >>> daskstate.StandardScaler().fit(ddf)              # doctest: +SKIP
    """
    files, root = list_parquet_files(path)
    pieces: list[Piece] = []
    schema = None
    for f in files:
        meta = pq.read_metadata(f)
        if schema is None:
            schema = pq.read_schema(f)
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            if n:
                pieces.append(Piece(f, rg, n, root))
    if not pieces:
        raise DataError(f"the Parquet data at {path!r} has no rows")
    empty = schema.empty_table().to_pandas()
    if columns is not None:
        empty = empty[list(columns)]
    reader = PieceReader(pieces, columns)
    ddf = dd.from_map(reader, pieces, meta=empty, enforce_metadata=False, label="read-parquet-piece")
    return ddf if columns is None else ddf[list(columns)]


# ---------------------------------------------------------------------------- any path
def _is_zarr(path: str) -> bool:
    return path.rstrip("/").endswith(".zarr") or os.path.exists(os.path.join(path, "zarr.json")) \
        or os.path.exists(os.path.join(path, ".zarray")) or os.path.exists(os.path.join(path, ".zgroup"))


def read_zarr(path: str | os.PathLike) -> tuple[da.Array, da.Array | None]:
    """Features (and target) from a Zarr array, or a group with arrays ``X`` (and ``y``).

    Dask chunks follow the store's shards (or chunks) along rows and span all
    columns, so every task reads whole stored chunks.
    """
    import zarr

    node = zarr.open(os.fspath(path), mode="r")
    if isinstance(node, zarr.Group):
        names = sorted(node.array_keys())
        if "X" not in names:
            raise DataError(f"Zarr group {os.fspath(path)!r} has arrays {names}; expected 'X' (and optionally 'y')")
        X, y = node["X"], node["y"] if "y" in names else None
    else:
        X, y = node, None

    def lazy(arr) -> da.Array:
        rows = (getattr(arr, "shards", None) or arr.chunks)[0]
        return da.from_zarr(arr, chunks=(rows,) + tuple(arr.shape[1:]))

    return lazy(X), (lazy(y) if y is not None else None)


def read_input(path: str | os.PathLike) -> tuple[Any, Any]:
    """``(X, y)`` for a path: Parquet (file, folder or glob), Zarr (array or group), or CSV.

    ``y`` is ``None`` except for a Zarr group holding a ``y`` array; for Parquet and
    CSV the target is a column named by the estimator's ``target=``.
    """
    path = os.fspath(path)
    if _is_zarr(path):
        return read_zarr(path)
    if path.endswith((".csv", ".csv.gz")) or (os.path.isdir(path) and any(
            f.endswith(".csv") for f in os.listdir(path))):
        pattern = os.path.join(path, "*.csv") if os.path.isdir(path) else path
        return dd.read_csv(pattern), None
    return read_parquet(path), None
