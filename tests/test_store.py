"""Saving and loading: round trips, checksums, damaged and hostile files, no pickle."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import gaussian_frame

import daskstate
from daskstate.errors import StateFileError


@pytest.fixture
def fitted(tmp_path):
    sc = daskstate.StandardScaler().fit(gaussian_frame(500, 3, seed=1, mean=7.0))
    path = tmp_path / "model.zarr"
    sc.save(path)
    return sc, path


def _attrs_file(path) -> str:
    return os.path.join(path, "zarr.json")


def _edit_attrs(path, fn) -> None:
    with open(_attrs_file(path)) as fh:
        meta = json.load(fh)
    fn(meta["attributes"]["daskstate"])
    with open(_attrs_file(path), "w") as fh:
        json.dump(meta, fh)


def _resign(path) -> None:
    """Recompute the checksum, as a file written consistently by some other program would be."""
    import zarr

    from daskstate.store import checksum

    group = zarr.open_group(str(path), mode="r")["state"]
    with open(_attrs_file(path)) as fh:
        meta = json.load(fh)
    body = meta["attributes"]["daskstate"]
    arrays = {name: np.asarray(group[name][...]) for name in body["arrays"]}
    body["checksum"] = checksum(arrays, {k: v for k, v in body.items() if k != "checksum"})
    with open(_attrs_file(path), "w") as fh:
        json.dump(meta, fh)


def test_round_trip(fitted):
    sc, path = fitted
    loaded = daskstate.load(path)
    assert type(loaded) is daskstate.StandardScaler
    np.testing.assert_array_equal(loaded.var_, sc.var_)
    assert loaded.n_samples_seen_ == 500 and loaded.get_params() == sc.get_params()
    state = daskstate.load_state(path)
    np.testing.assert_array_equal(state.m2, sc.state_.m2)


def test_state_round_trip(tmp_path):
    state = daskstate.StandardScaler().fit(np.arange(12.0).reshape(4, 3)).state_
    daskstate.save_state(state, tmp_path / "s.zarr")
    back = daskstate.load_state(tmp_path / "s.zarr", algorithm="standard_scaler")
    assert back.n_rows == 4 and np.array_equal(back.m2, state.m2)
    with pytest.raises(StateFileError, match="not a saved model"):
        daskstate.load(tmp_path / "s.zarr")


def test_overwrite_is_atomic_and_leaves_no_temporaries(fitted):
    sc, path = fitted
    sc.partial_fit(np.ones((3, 3)))
    sc.save(path)
    assert daskstate.load(path).n_samples_seen_ == 503
    assert [p for p in os.listdir(os.path.dirname(path)) if ".tmp-" in p or ".old-" in p] == []


def test_crash_between_renames_recovers_old_copy(fitted):
    _, path = fitted
    os.rename(path, f"{path}.old-abc")
    assert daskstate.load(path).n_samples_seen_ == 500


def test_edited_metadata_fails_checksum(fitted):
    _, path = fitted
    _edit_attrs(path, lambda a: a.update(n_rows=12345))
    with pytest.raises(StateFileError, match="checksum mismatch"):
        daskstate.load(path)


def test_bit_flip_in_array_fails(fitted):
    _, path = fitted
    chunk = os.path.join(path, "state", "m2", "c", "0")
    data = bytearray(open(chunk, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(chunk, "wb").write(bytes(data))
    with pytest.raises(StateFileError, match="checksum mismatch|cannot read the arrays"):
        daskstate.load(path)


def test_truncated_files_fail(fitted):
    _, path = fitted
    chunk = os.path.join(path, "state", "offset", "c", "0")
    open(chunk, "wb").write(open(chunk, "rb").read()[:5])
    with pytest.raises(StateFileError):
        daskstate.load(path)
    with open(_attrs_file(path)) as fh:
        text = fh.read()
    with open(_attrs_file(path), "w") as fh:
        fh.write(text[: len(text) // 2])
    with pytest.raises(StateFileError, match="not valid JSON"):
        daskstate.load(path)


def test_missing_array_fails(fitted):
    _, path = fitted
    shutil.rmtree(os.path.join(path, "state", "m2"))
    with pytest.raises(StateFileError, match="zarr.json is missing"):
        daskstate.load(path)


def test_unknown_version_and_wrong_algorithm(fitted, tmp_path):
    _, path = fitted
    other = tmp_path / "other.zarr"
    shutil.copytree(path, other)
    _edit_attrs(path, lambda a: a.update(format_version=99))
    with pytest.raises(StateFileError, match="format version 99"):
        daskstate.load(path)
    _resign(path)
    with pytest.raises(StateFileError, match="format version 99"):
        daskstate.load(path)
    _edit_attrs(other, lambda a: a.update(algorithm="kmeans_nope"))
    _resign(other)
    with pytest.raises(StateFileError, match="does not fit together"):
        daskstate.load(other)
    with pytest.raises(StateFileError, match="unknown algorithm 'kmeans_nope'"):
        daskstate.load_state(other)
    with pytest.raises(StateFileError, match="not 'pca'"):
        daskstate.load_state(tmp_path / "other.zarr", algorithm="pca")


def test_load_of_wrong_estimator_class(fitted):
    _, path = fitted

    class Other(daskstate.StandardScaler):
        pass

    with pytest.raises(StateFileError, match="not a Other"):
        Other.load(path)


def test_hostile_object_array_and_pickle_codec_are_rejected_before_reading(fitted, monkeypatch):
    _, path = fitted
    import pickle

    ran = []

    class Boom:
        def __reduce__(self):
            return (ran.append, ("executed",))

    meta_path = os.path.join(path, "state", "m2", "zarr.json")
    meta = json.load(open(meta_path))
    meta["data_type"] = "object"
    meta["codecs"] = [{"name": "pickle", "configuration": {}}]
    json.dump(meta, open(meta_path, "w"))
    open(os.path.join(path, "state", "m2", "c", "0"), "wb").write(pickle.dumps(Boom()))
    with pytest.raises(StateFileError, match="only numeric arrays"):
        daskstate.load(path)
    meta["data_type"] = "float64"
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(StateFileError, match="codec"):
        daskstate.load(path)
    assert ran == []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: ran.append("pickle.loads"))
    with pytest.raises(StateFileError):
        daskstate.load(path)
    assert ran == []


def test_not_a_daskstate_group(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(StateFileError, match="no daskstate metadata"):
        daskstate.load(tmp_path / "g.zarr")
    with pytest.raises(FileNotFoundError):
        daskstate.load(tmp_path / "missing.zarr")
