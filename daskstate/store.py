"""Save and load states and models as Zarr groups: numeric arrays plus JSON, never pickle.

Layout of a saved object at ``path`` (a Zarr v3 group)::

    path/zarr.json              attributes["daskstate"] = {kind, state metadata, ..., checksum}
    path/state/<array>/...      one Zarr array per state array

Loading first reads every ``zarr.json`` as plain JSON and rejects anything but
numeric arrays with the standard codecs *before* Zarr touches the data, so a
crafted file (object arrays, a pickle codec, a Zarr v2 store) executes nothing.
Then the arrays are read and the SHA-256 checksum over metadata and array bytes
is verified. Writes go to a temporary sibling that is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from daskstate.errors import StateFileError
from daskstate.state import FORMAT_VERSION, State

SAFE_DATA_TYPES = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64",
}
SAFE_CODECS = {"bytes", "zstd", "gzip", "blosc", "crc32c", "transpose"}
_ATTR = "daskstate"


def checksum(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """SHA-256 over canonical JSON of ``meta`` and each array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                os.fsync(fh.fileno())


def write_group(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
    """Atomically write ``arrays`` (under ``state/``) and ``attrs`` as a Zarr group at ``path``.

    The checksum covers ``attrs`` and the arrays. A crash at any point leaves
    either the old group or the new one loadable, never a partial one.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        root = zarr.open_group(store=tmp, mode="w", zarr_format=3)
        sub = root.create_group("state")
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.name not in SAFE_DATA_TYPES:
                raise StateFileError(f"cannot save array {name!r} of dtype {arr.dtype}: only numeric arrays")
            chunks = tuple(max(1, s) for s in arr.shape)
            sub.create_array(name, data=arr, chunks=chunks)
        body = {**attrs, "arrays": {k: [np.asarray(v).dtype.name, list(np.shape(v))] for k, v in arrays.items()}}
        body["checksum"] = checksum(arrays, body)
        root.attrs[_ATTR] = body
        _fsync_tree(tmp)
        old = None
        if os.path.exists(path):
            old = f"{path}.old-{uuid.uuid4().hex[:12]}"
            os.rename(path, old)
        os.rename(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _recover(path: str) -> str:
    """If a crash fell between the two renames of :func:`write_group`, use the old copy."""
    if os.path.exists(path):
        return path
    parent, base = os.path.split(os.path.abspath(path))
    olds = sorted(
        (os.path.join(parent, f) for f in os.listdir(parent or ".") if f.startswith(base + ".old-")),
        key=os.path.getmtime,
    ) if os.path.isdir(parent or ".") else []
    if olds:
        return olds[-1]
    raise FileNotFoundError(f"no saved daskstate object at {path!r}")


def _read_json(file: str, what: str) -> dict:
    try:
        with open(file, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise StateFileError(f"{what}: {os.path.basename(file)} is missing (not a Zarr v3 group, or truncated)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFileError(f"{what}: {os.path.basename(file)} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise StateFileError(f"{what}: {os.path.basename(file)} does not hold a JSON object")
    return obj


def _check_array_metadata(path: str, name: str, expected: list) -> None:
    """Reject non-numeric arrays and unknown codecs from the raw JSON, before Zarr reads them."""
    meta = _read_json(os.path.join(path, "state", name, "zarr.json"), f"{path}: array {name!r}")
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise StateFileError(f"{path}: array {name!r} is not a Zarr v3 array")
    dtype = meta.get("data_type")
    if dtype not in SAFE_DATA_TYPES:
        raise StateFileError(f"{path}: array {name!r} has data type {dtype!r}; only numeric arrays are loaded")
    codecs = [c.get("name") if isinstance(c, dict) else c for c in meta.get("codecs", [])]
    unknown = [c for c in codecs if c not in SAFE_CODECS]
    if unknown:
        raise StateFileError(f"{path}: array {name!r} uses codec(s) {unknown}, which are not loaded")
    if meta.get("storage_transformers"):
        raise StateFileError(f"{path}: array {name!r} uses storage transformers, which are not loaded")
    if [dtype, list(meta.get("shape", []))] != list(expected):
        raise StateFileError(
            f"{path}: array {name!r} is {dtype} {meta.get('shape')}, but the metadata records {expected}"
        )


def read_group(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a group written by :func:`write_group`: ``(arrays, attrs)``."""
    path = _recover(os.fspath(path))
    root_meta = _read_json(os.path.join(path, "zarr.json"), path)
    if root_meta.get("zarr_format") != 3 or root_meta.get("node_type") != "group":
        raise StateFileError(f"{path}: not a Zarr v3 group")
    body = root_meta.get("attributes", {}).get(_ATTR)
    if not isinstance(body, dict):
        raise StateFileError(f"{path}: no daskstate metadata (not saved by daskstate?)")
    version = body.get("format_version")
    if version != FORMAT_VERSION:
        raise StateFileError(
            f"{path}: format version {version!r} is not supported (this daskstate reads version {FORMAT_VERSION})"
        )
    expected = body.get("arrays")
    if not isinstance(expected, dict):
        raise StateFileError(f"{path}: the metadata lists no arrays")
    for name, spec in expected.items():
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise StateFileError(f"{path}: bad array name {name!r}")
        _check_array_metadata(path, name, spec)
    try:
        group = zarr.open_group(store=path, mode="r", zarr_format=3)["state"]
        arrays = {name: np.asarray(group[name][...]) for name in expected}
    except StateFileError:
        raise
    except Exception as exc:  # truncated chunks, bad compression, ...
        raise StateFileError(f"{path}: cannot read the arrays ({type(exc).__name__}: {exc})") from None
    stored = body.get("checksum")
    unsigned = {k: v for k, v in body.items() if k != "checksum"}
    if stored != checksum(arrays, unsigned):
        raise StateFileError(f"{path}: checksum mismatch: the file was edited or damaged")
    return arrays, unsigned


# ---------------------------------------------------------------------------- states
def save_state(state: State, path: str | os.PathLike, **extra: Any) -> None:
    """Save a state (and JSON-serialisable ``extra`` attributes) atomically at ``path``."""
    arrays, meta = state.to_arrays()
    write_group(path, arrays, {"kind": "state", **meta, **({"extra_attrs": extra} if extra else {})})


def state_from_attrs(arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], path: str = "") -> State:
    meta = {k: attrs[k] for k in ("algorithm", "format_version", "params", "schema", "n_rows") if k in attrs}
    meta.update({k: attrs.get(k) for k in ("n_skipped", "consumed", "extra") if k in attrs})
    try:
        return State.from_arrays(arrays, meta)
    except StateFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFileError(f"{path}: the state cannot be rebuilt ({type(exc).__name__}: {exc})") from None


def load_state(path: str | os.PathLike, algorithm: str | None = None) -> State:
    """Load a state saved by :func:`save_state` (or the state inside a saved model)."""
    arrays, attrs = read_group(path)
    if algorithm is not None and attrs.get("algorithm") != algorithm:
        raise StateFileError(f"{os.fspath(path)}: holds a {attrs.get('algorithm')!r} state, not {algorithm!r}")
    return state_from_attrs(arrays, attrs, os.fspath(path))


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The verified metadata of a saved state or model (reads the arrays to check the checksum)."""
    return read_group(path)[1]
