"""The Parquet reader's fast conversion: the same frames as ``pyarrow.Table.to_pandas()``."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import daskstate
from daskstate.data import table_to_frame, to_features
from daskstate.errors import SchemaError
from daskstate.state import Schema


def _through_parquet(frame: pd.DataFrame) -> pa.Table:
    """The table pyarrow reads back from ``frame`` written by pandas (with its pandas metadata)."""
    buf = io.BytesIO()
    frame.to_parquet(buf)
    buf.seek(0)
    return pq.read_table(buf)


_rng = np.random.default_rng(0)
_floats = pd.DataFrame(_rng.normal(size=(10, 3)), columns=list("abc"))


def _with(frame: pd.DataFrame, **changes) -> pd.DataFrame:
    frame = frame.copy()
    for name, value in changes.items():
        setattr(frame, name, value)
    return frame


TABLES = {
    "float64 with a range index": lambda: _through_parquet(_floats),
    "a slice (its range index starts at 3)": lambda: _through_parquet(_floats.iloc[3:]),
    "a column stored as the index": lambda: _through_parquet(_floats.set_index("a")),
    "an integer index": lambda: _through_parquet(_with(_floats, index=pd.Index([5, 1, 2, 3, 4, 8, 7, 6, 9, 0]))),
    "a datetime index": lambda: _through_parquet(_with(_floats, index=pd.date_range("2020", periods=10))),
    "integer column labels": lambda: _through_parquet(_with(_floats, columns=[0, 1, 2])),
    "named column labels": lambda: _through_parquet(_with(_floats, columns=pd.Index(list("abc"), name="cols"))),
    "two-level column labels": lambda: _through_parquet(pd.DataFrame(
        _rng.normal(size=(4, 4)), columns=pd.MultiIndex.from_product([["a", "b"], ["x", "y"]]))),
    "attrs": lambda: _through_parquet(_with(_floats, attrs={"source": "test"})),
    "float32": lambda: _through_parquet(_floats.astype("float32")),
    "int64": lambda: _through_parquet(pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})),
    "NaN": lambda: _through_parquet(_floats.mask(_floats > 1.0)),
    "nullable Int64": lambda: _through_parquet(pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"),
                                                             "b": pd.array([1, 2, 3], dtype="Int64")})),
    "nullable Float64": lambda: _through_parquet(pd.DataFrame({"a": pd.array([1.0, None, 3], dtype="Float64"),
                                                               "b": pd.array([1.0, 2, 3], dtype="Float64")})),
    "Arrow nulls in floats": lambda: pa.table({"a": pa.array([1.0, None]), "b": pa.array([2.0, 3.0])}),
    "Arrow nulls in integers": lambda: pa.table({"a": pa.array([1, None]), "b": pa.array([2, 3])}),
    "several chunks": lambda: pa.table({"a": pa.chunked_array([[1.0], [2.0, 3.0]]),
                                        "b": pa.chunked_array([[1.0, 2.0], [3.0]])}),
    "int32": lambda: pa.table({"a": pa.array([1, 2], pa.int32()), "b": pa.array([2, 3], pa.int32())}),
    "uint8": lambda: pa.table({"a": pa.array([1, 2], pa.uint8()), "b": pa.array([2, 3], pa.uint8())}),
    "no rows": lambda: pa.table({"a": pa.array([], pa.float64()), "b": pa.array([], pa.float64())}),
    "mixed types": lambda: pa.table({"a": [1.0, 2.0], "b": [1, 2], "c": ["x", "y"]}),
    "one column": lambda: pa.table({"a": [1.0, 2.0]}),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_table_to_frame_is_to_pandas(name):
    table = TABLES[name]()
    want, got = table.to_pandas(), table_to_frame(table)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert type(got.index) is type(want.index) and got.columns.dtype == want.columns.dtype
    assert got.attrs == want.attrs
    # one block per dtype, as after pandas' consolidation: a column-major, writable block
    X = got.to_numpy()
    assert X.flags.f_contiguous == want.to_numpy().flags.f_contiguous
    got.iloc[0:1, 0:1] = 1  # writable (a copy-on-write frame may copy; it must not raise)


def test_parquet_partitions_are_one_column_major_block_and_errors_name_the_column(tmp_path):
    frame = pd.DataFrame(_rng.normal(size=(50, 4)), columns=list("abcd"))
    frame["e"] = frame["d"].astype(str)
    frame.to_parquet(tmp_path / "x.parquet")
    ddf = daskstate.read_parquet(tmp_path / "x.parquet")
    part = ddf[list("abcd")].partitions[0].compute()
    X = to_features(part, Schema(tuple("abcd")), where="partition 0")
    assert X.flags.f_contiguous and np.array_equal(X, frame[list("abcd")].to_numpy())
    assert np.shares_memory(X, part.to_numpy())  # no copy after the reader's
    # features in another order than the frame's columns
    assert np.array_equal(to_features(part, Schema(("c", "a"))), frame[["c", "a"]].to_numpy())
    with pytest.raises(SchemaError, match=r"partition 3: feature column\(s\) 'e' \(\w+\) are not numeric"):
        to_features(ddf.partitions[0].compute(), Schema(("a", "e")), where="partition 3")
