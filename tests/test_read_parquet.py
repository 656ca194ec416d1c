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


def _parquet_file(table: pa.Table, row_group_size: int | None = None) -> pq.ParquetFile:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return pq.ParquetFile(pa.BufferReader(buf.getvalue()))


class _CountingFile:
    """A ParquetFile that records the columns of each ``read_row_group`` call."""

    def __init__(self, file: pq.ParquetFile):
        self.file, self.reads = file, []

    def __getattr__(self, name):
        return getattr(self.file, name)

    def read_row_group(self, i, columns=None, **kwargs):
        self.reads.append(None if columns is None else list(columns))
        return self.file.read_row_group(i, columns=columns, **kwargs)


@pytest.mark.parametrize("name", list(TABLES))
@pytest.mark.parametrize("columns", ["all", "reversed", "repeated"])
def test_read_row_group_frame_is_the_whole_read(name, columns, monkeypatch):
    monkeypatch.setattr(daskstate.data, "READ_GROUP_BYTES", 1)  # one column per read wherever it can
    table = TABLES[name]()
    names = {"all": None, "reversed": table.column_names[::-1],
             "repeated": table.column_names[:1] + table.column_names}[columns]
    for row_group_size in (None, 3):
        file = _parquet_file(table, row_group_size)
        for rg in range(file.metadata.num_row_groups):
            want = table_to_frame(file.read_row_group(rg, columns=names))
            counting = _CountingFile(file)
            got = daskstate.data.read_row_group_frame(counting, rg, names)
            pd.testing.assert_frame_equal(got, want, check_exact=True)
            assert got.attrs == want.attrs and type(got.index) is type(want.index)
            assert got.to_numpy().flags.f_contiguous == want.to_numpy().flags.f_contiguous


def test_read_row_group_frame_reads_columns_in_groups_of_the_read_size(monkeypatch):
    table = pa.table({f"c{j}": _rng.normal(size=1000) for j in range(10)})
    file = _parquet_file(table)
    # 3 columns of 1000 float64 values fit in 24,000 bytes: four reads of 3, 3, 3 and 1 columns
    monkeypatch.setattr(daskstate.data, "READ_GROUP_BYTES", 24_000)
    counting = _CountingFile(file)
    frame = daskstate.data.read_row_group_frame(counting, 0, table.column_names[::-1])
    assert counting.reads == [["c9", "c8", "c7"], ["c6", "c5", "c4"], ["c3", "c2", "c1"], ["c0"]]
    assert np.array_equal(frame.to_numpy(), table.to_pandas().to_numpy()[:, ::-1])
    assert frame.to_numpy().flags.f_contiguous
    # a row group that fits in one read, and columns of two types, are read whole
    for columns in (table.column_names[:3], None):
        counting = _CountingFile(_parquet_file(table.append_column("i", pa.array(np.arange(1000)))
                                                if columns is None else table))
        daskstate.data.read_row_group_frame(counting, 0, columns)
        assert counting.reads == [columns]
    # nulls: read again whole (integers with nulls become floats, as in to_pandas)
    with_nulls = pa.table({"a": pa.array([1, 2, None] * 100), "b": pa.array(range(300))})
    monkeypatch.setattr(daskstate.data, "READ_GROUP_BYTES", 1)
    counting = _CountingFile(_parquet_file(with_nulls))
    got = daskstate.data.read_row_group_frame(counting, 0, None)
    assert counting.reads == [["a"], None]
    pd.testing.assert_frame_equal(got, with_nulls.to_pandas(), check_exact=True)


def test_parquet_partitions_read_in_column_groups_are_one_block(tmp_path, monkeypatch):
    monkeypatch.setattr(daskstate.data, "READ_GROUP_BYTES", 1)
    frame = pd.DataFrame(_rng.normal(size=(50, 4)), columns=list("abcd"))
    frame.to_parquet(tmp_path / "x.parquet")
    part = daskstate.read_parquet(tmp_path / "x.parquet")[["b", "d"]].partitions[0].compute()  # reads b and d
    pd.testing.assert_frame_equal(part, frame[["b", "d"]], check_exact=True)
    X = to_features(part, Schema(("b", "d")), where="partition 0")
    assert X.flags.f_contiguous and np.shares_memory(X, part.to_numpy())
