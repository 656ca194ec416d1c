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


def _crash_between_renames(path, new_est, tag="999999-00000000-0123456789ab"):
    """What a write killed between its two renames leaves: the new copy complete, the old moved aside."""
    new_est.save(f"{path}.new")
    os.rename(f"{path}.new", f"{path}.tmp-{tag}")
    os.rename(path, f"{path}.old-{tag}")


def test_crash_between_renames_recovers_the_verified_copy(fitted):
    sc, path = fitted
    newer = daskstate.StandardScaler().fit(np.ones((7, 3)))
    _crash_between_renames(path, newer)
    assert daskstate.load(path).n_samples_seen_ == 7  # the complete new copy
    tmp = next(path.parent / p for p in os.listdir(path.parent) if ".tmp-" in p)
    _edit_attrs(tmp, lambda a: a.update(n_rows=8))
    assert daskstate.load(path).n_samples_seen_ == 500  # the new copy does not verify: the old one


def test_lone_leftovers_are_not_loaded_and_stale_ones_are_cleaned(fitted):
    """Issue 16 item 7: after rm -rf, a leftover sibling must not be picked up; dead writers' ones go."""
    sc, path = fitted
    dead = "999999-00000000-0123456789ab"  # pid 999999 does not run; host hash 00000000 is not ours
    from daskstate.store import _HOST

    mine_dead = f"999999-{_HOST}-0123456789ab"
    shutil.copytree(path, f"{path}.old-{dead}")
    shutil.copytree(path, f"{path}.tmp-{mine_dead}")
    shutil.rmtree(path)
    with pytest.raises(FileNotFoundError, match="no saved daskstate object"):
        daskstate.load(path)
    sc.save(path)
    left = sorted(p for p in os.listdir(path.parent) if ".tmp-" in p or ".old-" in p)
    assert left == [f"model.zarr.old-{dead}"]  # another host's leftover is not provably stale


def test_save_refuses_to_destroy_what_is_not_a_model(fitted, tmp_path):
    """Issue 16 item 1: save deleted data folders, notes and plain files at the target path."""
    sc, _ = fitted
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    with pytest.raises(StateFileError, match="does not hold a daskstate model"):
        sc.save(data)
    assert (data / "notes.txt").read_text() == "mine"
    plain = tmp_path / "plain.txt"
    plain.write_text("mine")
    with pytest.raises(StateFileError, match="existing file"):
        sc.save(plain)
    assert plain.read_text() == "mine"
    group = tmp_path / "other.zarr"  # a Zarr group of someone else's
    import zarr

    zarr.open_group(str(group), mode="w").create_array("x", data=np.arange(3))
    with pytest.raises(StateFileError, match="does not hold a daskstate model"):
        sc.save(group)
    assert os.path.exists(group / "x")
    ckpt = tmp_path / "state.zarr"
    daskstate.save_state(sc.state_, ckpt)
    with pytest.raises(StateFileError, match="holds a daskstate state, not a model"):
        sc.save(ckpt)
    (tmp_path / "empty").mkdir()
    sc.save(tmp_path / "empty")  # an empty folder is fine
    assert daskstate.load(tmp_path / "empty").n_samples_seen_ == 500


def test_trailing_slash_paths(fitted, tmp_path):
    """Issue 16 item 6: save("new.zarr/") failed with OSError: Invalid argument."""
    sc, path = fitted
    sc.save(f"{tmp_path / 'new.zarr'}/")
    assert daskstate.load(f"{tmp_path / 'new.zarr'}/").n_samples_seen_ == 500
    sc.save(f"{path}/")  # over an existing model too
    assert sorted(os.listdir(tmp_path)) == ["model.zarr", "new.zarr"]


def test_a_second_writer_of_a_checkpoint_is_refused(tmp_path):
    """Issue 16 item 8: two fits on one checkpoint path overwrote each other or failed raw."""
    import subprocess
    import sys

    from daskstate.store import writer_lock

    ckpt = tmp_path / "ck.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from daskstate.store import writer_lock\n"
         "with writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(ckpt)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateFileError, match=r"another fit is writing this checkpoint \(pid \d+ on host"):
            daskstate.StandardScaler().fit(daskstate.read_parquet(_tiny_parquet(tmp_path)), checkpoint=f"{ckpt}/")
        with pytest.raises(StateFileError, match="another fit"), writer_lock(ckpt):
            pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file is stale and taken over
    assert os.path.exists(f"{ckpt}.lock")
    sc = daskstate.StandardScaler().fit(daskstate.read_parquet(_tiny_parquet(tmp_path)), checkpoint=ckpt)
    assert sc.n_samples_seen_ == 40 and not os.path.exists(f"{ckpt}.lock")
    with writer_lock(ckpt), writer_lock(ckpt):  # re-entrant in one process
        pass


def _tiny_parquet(tmp_path):
    from conftest import write_parquet

    folder = tmp_path / "tiny"
    if not folder.exists():
        write_parquet(folder, gaussian_frame(40, 2, seed=5), n_files=2)
    return folder


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
    with pytest.raises(StateFileError, match="state/m2 is missing"):
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
    with pytest.raises(StateFileError, match="unknown algorithm 'kmeans_nope'"):
        daskstate.load(other)
    with pytest.raises(StateFileError, match="unknown algorithm 'kmeans_nope'"):
        daskstate.load_state(other)
    with pytest.raises(StateFileError, match="unknown algorithm|not 'pca'"):
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


def test_save_overwrite_false_keeps_an_existing_model(fitted, tmp_path):
    """``save(path, overwrite=False)`` refuses even a daskstate model, which stays loadable."""
    sc, path = fitted
    before = sorted(os.listdir(path))
    with pytest.raises(StateFileError):
        sc.save(path, overwrite=False)
    assert sorted(os.listdir(path)) == before
    assert daskstate.load(path).n_samples_seen_ == 500
