"""Save and load states and models as Zarr groups: numeric arrays plus JSON, never pickle.

Layout of a saved object at ``path`` (a Zarr v3 group)::

    path/zarr.json              attributes["daskstate"] = {kind, state metadata, ..., checksum}
    path/state/<array>/...      one Zarr array per state array, one uncompressed chunk each

File-safety rules (the README's Guarantees repeat them):

- **Writing** replaces only a daskstate object of the same kind (a model by a model,
  a checkpoint by a checkpoint) or an empty folder; anything else at the path (a data
  folder, a plain file, a symbolic link, a folder holding other files) is refused with
  :class:`StateFileError` and left untouched. Writes go to a temporary sibling
  (``path.tmp-<pid>-<host>-<random>``) that is renamed into place; siblings left by a
  writer that provably died (same host, process gone) are removed afterwards.
- **Loading** checks before reading any array: every file is a regular file reached
  without symbolic links, metadata is bounded JSON (size, depth, no NaN/Infinity),
  array names are the algorithm's own, every declared shape agrees with the
  hyperparameters and with the bytes on disk, and hyperparameters cannot imply a
  larger state than the file holds. Then the SHA-256 checksum over metadata and array
  bytes is verified. Memory is bounded by the legitimate model's size.
- **Recovery**: if a crash fell between the two renames of a write, the path is missing
  and both siblings of that write remain; the newer one is used if it verifies, else the
  older one. A lone leftover is never loaded.
- **Concurrency**: :func:`writer_lock` (held by the engine around a checkpointed fit)
  lets one process at a time write a checkpoint; a second writer gets a clear error
  naming the owner's pid and host.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import zarr

from daskstate.errors import StateError, StateFileError
from daskstate.state import FORMAT_VERSION, Schema, State, state_class

SAFE_DATA_TYPES = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64",
}
#: codecs a loadable array may use: raw little/big-endian bytes, optionally zstd (files
#: written before daskstate stopped compressing states; the frame must declare its size)
SAFE_CODECS = {"bytes", "zstd"}
_ATTR = "daskstate"
_ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
MAX_GROUP_JSON_BYTES = 128 << 20   # the root metadata lists consumed partition ids
MAX_ARRAY_JSON_BYTES = 64 << 10
MAX_JSON_DEPTH = 32
MAX_ARRAY_NDIM = 8
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_SIBLING = re.compile(r"\.(tmp|old)-(\d+)-([0-9a-f]{8})-([0-9a-f]{12})\Z")


def checksum(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """SHA-256 over canonical JSON of ``meta`` and each array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def clean_path(path: str | os.PathLike) -> str:
    """``path`` as a string without trailing separators (``"m.zarr/"`` -> ``"m.zarr"``)."""
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if not text:
        raise ValueError("empty path")
    if "\0" in text:
        raise ValueError(f"path {text!r} contains a NUL character")
    stripped = text.rstrip("/" + (os.sep if os.sep != "/" else ""))
    return stripped or text[:1]


# ---------------------------------------------------------------------------- writing
def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                os.fsync(fh.fileno())


def _sibling_tag() -> str:
    return f"{os.getpid()}-{_HOST}-{uuid.uuid4().hex[:12]}"


def existing_kind(path: str | os.PathLike) -> str | None:
    """What is at ``path``: ``None`` (nothing), ``"empty"`` (an empty folder), or a daskstate kind.

    Raises :class:`StateFileError` for anything that is not a daskstate object (a
    plain file, a symbolic link, a folder with other content), which writers refuse.
    """
    path = clean_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise StateFileError(f"{path}: is a symbolic link; refusing to replace it (choose another path)")
    if not stat.S_ISDIR(st.st_mode):
        raise StateFileError(f"{path}: is an existing file, not a daskstate model; refusing to overwrite it")
    entries = set(os.listdir(path))
    if not entries:
        return "empty"
    foreign = sorted(entries - {"zarr.json", "state"})
    not_ours = f"{path}: is a folder that does not hold a daskstate model"
    if foreign:
        raise StateFileError(f"{not_ours} (it contains {foreign[:3]}); refusing to overwrite it")
    try:
        meta = json.loads(_read_file(os.path.join(path, "zarr.json"), path, MAX_GROUP_JSON_BYTES))
        kind = meta["attributes"][_ATTR]["kind"]
    except Exception:
        raise StateFileError(f"{not_ours} (no daskstate metadata); refusing to overwrite it") from None
    if not isinstance(kind, str):
        raise StateFileError(f"{not_ours} (no daskstate metadata); refusing to overwrite it")
    return kind


def check_writable(path: str | os.PathLike, kind: str, overwrite: bool = True) -> None:
    """Raise :class:`StateFileError` unless a ``kind`` object may be written at ``path``.

    Nothing, an empty folder, or (with ``overwrite``) a daskstate object of the same kind
    may be replaced; everything else is refused.
    """
    path = clean_path(path)
    found = existing_kind(path)
    if found is None or found == "empty":
        return
    if found != kind:
        raise StateFileError(f"{path}: holds a daskstate {found}, not a {kind}; refusing to replace it")
    if not overwrite:
        raise StateFileError(f"{path}: a daskstate {kind} exists there; pass overwrite=True (--force) to replace it")


def write_group(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = True,
) -> None:
    """Atomically write ``arrays`` (under ``state/``) and ``attrs`` as a Zarr group at ``path``.

    The checksum covers ``attrs`` and the arrays. A crash at any point leaves
    either the old group or the new one loadable, never a partial one. Only a
    daskstate object of the same ``attrs["kind"]`` (with ``overwrite``) or an empty
    folder is replaced; anything else raises :class:`StateFileError` before writing.
    """
    path = clean_path(path)
    kind = str(attrs.get("kind", "model"))
    check_writable(path, kind, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tag = _sibling_tag()
    tmp, old = f"{path}.tmp-{tag}", f"{path}.old-{tag}"
    try:
        root = zarr.open_group(store=tmp, mode="w", zarr_format=3)
        sub = root.create_group("state")
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.name not in SAFE_DATA_TYPES:
                raise StateFileError(f"cannot save array {name!r} of dtype {arr.dtype}: only numeric arrays")
            if not _ARRAY_NAME.match(name):
                raise StateFileError(f"cannot save array {name!r}: names are letters, digits and '_'")
            # one uncompressed chunk, written even when all zeros: the bytes on disk are the
            # array's, so a loader can check them against the declared shape before reading
            sub.create_array(name, data=arr, chunks=_chunk_shape(arr.shape), compressors=None,
                             config={"write_empty_chunks": True})
        body = {**attrs, "arrays": {k: [np.asarray(v).dtype.name, list(np.shape(v))] for k, v in arrays.items()}}
        body["checksum"] = checksum(arrays, body)
        root.attrs[_ATTR] = body
        _fsync_tree(tmp)
        check_writable(path, kind, overwrite)  # again: something may have appeared meanwhile
        moved = os.path.lexists(path)
        if moved:
            os.rename(path, old)
        os.rename(tmp, path)
        if moved:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    remove_stale_siblings(path)


def _chunk_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, int(s)) for s in shape)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _siblings(path: str) -> list[tuple[str, str, int, str, str]]:
    """``(file, 'tmp'|'old', pid, host, tag)`` for every write leftover next to ``path``."""
    parent, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    out = []
    for name in names:
        if not name.startswith(base + "."):
            continue
        m = _SIBLING.match(name[len(base):])
        if m:
            out.append((os.path.join(parent, name), m.group(1), int(m.group(2)), m.group(3),
                        f"{m.group(2)}-{m.group(3)}-{m.group(4)}"))
    return out


def remove_stale_siblings(path: str | os.PathLike) -> list[str]:
    """Remove ``.tmp-``/``.old-`` leftovers of writes to ``path`` whose writer died on this host.

    A leftover is provably stale when its name records this host and a process id that
    no longer runs; leftovers of live processes or of other hosts are left alone.
    Returns the removed paths.
    """
    removed = []
    for file, _, pid, host, _ in _siblings(clean_path(path)):
        if host == _HOST and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(file, ignore_errors=True)
            if not os.path.lexists(file):
                removed.append(file)
    return removed


# ---------------------------------------------------------------------------- reading files safely
def _read_file(file: str, what: str, limit: int) -> bytes:
    """The bytes of a regular file reached without following a final symlink, at most ``limit``."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    name = os.path.relpath(file, what) if os.path.isabs(file) == os.path.isabs(what) else file
    try:
        fd = os.open(file, flags)
    except FileNotFoundError:
        raise StateFileError(f"{what}: {name} is missing (not a daskstate Zarr group, or truncated)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError(f"{what}: {name} is a symbolic link, which is not loaded") from None
        raise StateFileError(f"{what}: cannot open {name} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateFileError(f"{what}: {name} is not a regular file")
        if st.st_size > limit:
            raise StateFileError(f"{what}: {name} has {st.st_size:,} bytes; at most {limit:,} are expected")
        chunks, left = [], limit + 1
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        data = b"".join(chunks)
        if len(data) > limit:
            raise StateFileError(f"{what}: {name} is larger than the {limit:,} bytes expected")
        return data
    except OSError as exc:
        raise StateFileError(f"{what}: cannot read {name} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number daskstate writes")


def _json_depth(obj: Any) -> int:
    depth, level = 0, [obj]
    while level:
        depth += 1
        nxt = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth - 1


def _read_json(file: str, what: str, limit: int = MAX_ARRAY_JSON_BYTES) -> dict:
    data = _read_file(file, what, limit)
    base = os.path.basename(file)
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise StateFileError(f"{what}: {base} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateFileError(f"{what}: {base} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise StateFileError(f"{what}: {base} does not hold a JSON object")
    if _json_depth(obj) > MAX_JSON_DEPTH:
        raise StateFileError(f"{what}: {base} is nested more than {MAX_JSON_DEPTH} levels deep")
    return obj


def _check_dir(folder: str, what: str) -> None:
    """``folder`` must be a real directory (not a symlink, not a file)."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        raise StateFileError(f"{what}: {os.path.relpath(folder, what)} is missing") from None
    except OSError as exc:
        raise StateFileError(f"{what}: cannot open {os.path.relpath(folder, what)} ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateFileError(f"{what}: {os.path.relpath(folder, what)} is a symbolic link, which is not loaded")
    if not stat.S_ISDIR(st.st_mode):
        raise StateFileError(f"{what}: {os.path.relpath(folder, what)} is not a folder")


# ---------------------------------------------------------------------------- validating metadata
def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_body(path: str, body: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Types and ranges of the daskstate metadata; returns the declared arrays."""
    for key in ("n_rows", "n_skipped"):
        if key in body and not _is_count(body[key]):
            raise StateFileError(f"{path}: {key} is {body[key]!r}; a count of rows (an integer >= 0) is expected")
    if "n_rows" not in body:
        raise StateFileError(f"{path}: the metadata records no n_rows")
    if not isinstance(body.get("algorithm"), str):
        raise StateFileError(f"{path}: the metadata names no algorithm")
    if not isinstance(body.get("params"), dict):
        raise StateFileError(f"{path}: the hyperparameters are not a JSON object")
    consumed = body.get("consumed", [])
    if not isinstance(consumed, list) or not all(isinstance(c, str) for c in consumed):
        raise StateFileError(f"{path}: 'consumed' is not a list of partition ids")
    schema = body.get("schema")
    ok = isinstance(schema, dict) and isinstance(schema.get("features"), list) and all(
        isinstance(f, str) for f in schema["features"]) and isinstance(schema.get("dtypes", []), list) and all(
        isinstance(t, str) for t in schema.get("dtypes", [])) and isinstance(schema.get("target"), str | None)
    if not ok:
        raise StateFileError(f"{path}: the schema is not a list of feature names (and dtypes, target)")
    if len(set(schema["features"])) != len(schema["features"]):
        raise StateFileError(f"{path}: the schema lists a feature name twice")
    declared = body.get("arrays")
    if not isinstance(declared, dict) or not declared:
        raise StateFileError(f"{path}: the metadata lists no arrays")
    out = {}
    for name, spec in declared.items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise StateFileError(f"{path}: bad array name {name!r}")
        good = (isinstance(spec, list) and len(spec) == 2 and spec[0] in SAFE_DATA_TYPES
                and isinstance(spec[1], list) and len(spec[1]) <= MAX_ARRAY_NDIM and all(map(_is_count, spec[1])))
        if not good:
            raise StateFileError(f"{path}: array {name!r} is declared as {spec!r}; expected [numeric dtype, shape]")
        out[name] = (spec[0], tuple(spec[1]))
    return out


def _state_size(state: State) -> int:
    return sum(np.asarray(a).size for a in state.arrays().values())


def _empty_state(path: str, body: dict, declared: dict[str, tuple[str, tuple[int, ...]]]) -> State:
    """The empty state the hyperparameters describe, built only if it is no larger than the file.

    A state never shrinks below its empty shape, so an integer hyperparameter that
    makes the empty state larger than the declared arrays contradicts the file.
    Each suspicious integer (larger than the declared elements) is first tried
    at 1 and 2 to see how the empty state grows with it, without allocating it.
    """
    try:
        cls = state_class(body["algorithm"])
        schema = Schema.from_json(body["schema"])
    except StateError as exc:
        raise StateFileError(f"{path}: {exc}") from None
    if not set(declared) <= set(cls.array_names):  # the exact set, which may depend on params: _check_shapes
        raise StateFileError(
            f"{path}: {cls.algorithm} state arrays are {sorted(declared)}; expected {sorted(cls.array_names)}")
    params = body["params"]
    declared_size = sum(math.prod(shape) for _, shape in declared.values())
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= max(declared_size, 2):
            continue
        try:
            one = _state_size(cls(schema, {**params, key: 1}))
            two = _state_size(cls(schema, {**params, key: 2}))
        except Exception:
            continue
        if two > one and one + (value - 1) * (two - one) > declared_size:
            raise StateFileError(
                f"{path}: hyperparameter {key}={value} implies a state of more than {declared_size:,} "
                "values, but the file holds only that many: the file contradicts its hyperparameters")
    try:
        return cls(schema, params)
    except MemoryError:
        raise StateFileError(f"{path}: the hyperparameters describe a state too large for memory") from None
    except (StateError, KeyError, TypeError, ValueError) as exc:
        raise StateFileError(f"{path}: bad hyperparameters for {cls.algorithm} ({type(exc).__name__}: {exc})") from None


def _check_shapes(path: str, empty: State, declared: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Declared arrays must be the empty state's, their shapes too, except along its zero-length (growing) axes."""
    if set(declared) != set(empty.arrays()):
        raise StateFileError(f"{path}: {empty.algorithm} state arrays are {sorted(declared)}; expected "
                             f"{sorted(empty.arrays())}")
    for name, template in empty.arrays().items():
        t = np.asarray(template)
        dtype, shape = declared[name]
        same = len(shape) == t.ndim and np.dtype(dtype).kind == t.dtype.kind and all(
            ts == 0 or ts == s for ts, s in zip(t.shape, shape, strict=True))
        if not same:
            raise StateFileError(
                f"{path}: array {name!r} is declared {dtype} {list(shape)}, but the hyperparameters and schema "
                f"imply {t.dtype} {list(t.shape)} (0 = any length)")


def _zstd_content_size(frame: bytes) -> int | None:
    """The decompressed size a zstd frame header declares (None if it declares none)."""
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    fhd = frame[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(frame) < pos + size:
        return None
    value = int.from_bytes(frame[pos:pos + size], "little")
    return value + 256 if size == 2 else value


def _check_array_metadata(path: str, name: str, dtype: str, shape: tuple[int, ...]) -> list[str]:
    """Check one array's ``zarr.json`` against its declaration; returns its codec names."""
    folder = os.path.join(path, "state", name)
    _check_dir(folder, path)
    meta = _read_json(os.path.join(folder, "zarr.json"), path)
    where = f"{path}: array {name!r}"
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise StateFileError(f"{where} is not a Zarr v3 array")
    if meta.get("data_type") not in SAFE_DATA_TYPES:
        raise StateFileError(f"{where} has data type {meta.get('data_type')!r}; only numeric arrays are loaded")
    codecs = meta.get("codecs", [])
    names = [c.get("name") if isinstance(c, dict) else c for c in codecs] if isinstance(codecs, list) else [codecs]
    unknown = [c for c in names if c not in SAFE_CODECS]
    if unknown:
        raise StateFileError(f"{where} uses codec(s) {unknown}, which are not loaded")
    if names not in (["bytes"], ["bytes", "zstd"]):
        raise StateFileError(f"{where} uses codecs {names}; daskstate reads ['bytes'] or ['bytes', 'zstd']")
    if meta.get("storage_transformers"):
        raise StateFileError(f"{where} uses storage transformers, which are not loaded")
    if [meta.get("data_type"), meta.get("shape")] != [dtype, list(shape)]:
        raise StateFileError(f"{where} is {meta.get('data_type')} {meta.get('shape')}, but the metadata "
                             f"records {[dtype, list(shape)]}")
    grid = meta.get("chunk_grid")
    chunk_shape = grid.get("configuration", {}).get("chunk_shape") if isinstance(grid, dict) else None
    if chunk_shape != list(_chunk_shape(shape)):
        raise StateFileError(f"{where} has chunks {chunk_shape}; daskstate arrays are one chunk of their shape")
    encoding = meta.get("chunk_key_encoding")
    if encoding != {"name": "default", "configuration": {"separator": "/"}}:
        raise StateFileError(f"{where} has chunk key encoding {encoding!r}; daskstate writes the default '/'")
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if endian not in ("little", "big"):
        raise StateFileError(f"{where} has byte order {endian!r}")
    return [*names, endian]


def _read_array(path: str, name: str, dtype: str, shape: tuple[int, ...], codecs: list[str],
                fixed_shape: bool) -> np.ndarray:
    """Read the array's single chunk, its size checked against the declared shape first."""
    dt = np.dtype(dtype).newbyteorder("<" if codecs[-1] == "little" else ">")
    nbytes = math.prod(shape) * dt.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype=dtype)
    folder = os.path.join(path, "state", name, "c")
    where = f"{path}: array {name!r}"
    compressed = "zstd" in codecs
    if not os.path.lexists(folder) and compressed and fixed_shape and nbytes <= 1 << 20:
        # written before daskstate stored all-zero chunks: Zarr's fill value
        return np.zeros(shape, dtype=dtype)
    _check_dir(folder, path)
    chunk = folder
    for _ in shape[:-1] if shape else ():
        chunk = os.path.join(chunk, "0")
        _check_dir(chunk, path)
    chunk = os.path.join(chunk, "0") if shape else chunk
    if compressed:
        data = _read_file(chunk, path, nbytes + nbytes // 128 + 1024)
        if _zstd_content_size(data) != nbytes:
            raise StateFileError(f"{where}: the compressed chunk does not declare the {nbytes:,} bytes of "
                                 f"shape {list(shape)}")
        from numcodecs import Zstd

        try:
            data = Zstd().decode(data)
        except Exception as exc:
            raise StateFileError(f"{where}: cannot decompress the chunk ({exc})") from None
    else:
        data = _read_file(chunk, path, nbytes)
    if len(data) != nbytes:
        raise StateFileError(f"{where}: the chunk holds {len(data):,} bytes; shape {list(shape)} of {dtype} "
                             f"needs {nbytes:,} (truncated or edited)")
    return np.frombuffer(data, dtype=dt).reshape(shape).astype(dtype, copy=True)


def _check_values(path: str, arrays: Mapping[str, np.ndarray], body: dict) -> None:
    """Values a correct writer cannot produce: negative or non-finite second moments, NaN means."""
    for name in ("m2",):
        m2 = arrays.get(name)
        if m2 is None:
            continue
        diag = np.diagonal(m2) if m2.ndim == 2 else m2
        if not np.all(np.isfinite(m2)) or np.any(diag < 0):
            raise StateFileError(f"{path}: array {name!r} (sums of squared deviations) holds negative or "
                                 "non-finite values; the file is damaged")
    for name in ("shift", "offset"):
        if name in arrays and not np.all(np.isfinite(arrays[name])):
            raise StateFileError(f"{path}: array {name!r} holds non-finite values; the file is damaged")


def _read_verified(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved daskstate object at {path!r}") from None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot open ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateFileError(f"{path}: is a file, not a saved daskstate model (a folder)")
    root_meta = _read_json(os.path.join(path, "zarr.json"), path, MAX_GROUP_JSON_BYTES)
    if root_meta.get("zarr_format") != 3 or root_meta.get("node_type") != "group":
        raise StateFileError(f"{path}: not a Zarr v3 group")
    attributes = root_meta.get("attributes")
    body = attributes.get(_ATTR) if isinstance(attributes, dict) else None
    if not isinstance(body, dict):
        raise StateFileError(f"{path}: no daskstate metadata (not saved by daskstate?)")
    version = body.get("format_version")
    if version != FORMAT_VERSION:
        raise StateFileError(
            f"{path}: format version {version!r} is not supported (this daskstate reads version {FORMAT_VERSION})"
        )
    declared = _check_body(path, body)
    empty = _empty_state(path, body, declared)
    _check_shapes(path, empty, declared)
    templates = empty.arrays()
    _check_dir(os.path.join(path, "state"), path)
    codecs = {name: _check_array_metadata(path, name, *spec) for name, spec in declared.items()}
    arrays = {}
    for name, (dtype, shape) in declared.items():
        fixed = 0 not in np.shape(templates[name])
        arrays[name] = _read_array(path, name, dtype, shape, codecs[name], fixed)
    stored = body.get("checksum")
    unsigned = {k: v for k, v in body.items() if k != "checksum"}
    if stored != checksum(arrays, unsigned):
        raise StateFileError(f"{path}: checksum mismatch: the file was edited or damaged")
    _check_values(path, arrays, body)
    return arrays, unsigned


def _recover(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``path`` is missing: if a crash fell between the two renames of one write, use its copies.

    Only a write's pair (``.tmp-T`` complete and ``.old-T`` moved aside, same tag T)
    proves that; the newer copy is used if it verifies, else the older one. A lone
    leftover is never loaded.
    """
    siblings = _siblings(path)
    tmps = {tag: f for f, kind, *_, tag in siblings if kind == "tmp"}
    olds = {tag: f for f, kind, *_, tag in siblings if kind == "old"}
    pairs = sorted(set(tmps) & set(olds), key=lambda t: os.path.getmtime(tmps[t]), reverse=True)
    for tag in pairs:
        for candidate in (tmps[tag], olds[tag]):
            try:
                return _read_verified(candidate)
            except (StateFileError, FileNotFoundError):
                continue
    raise FileNotFoundError(f"no saved daskstate object at {path!r}")


def read_group(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a group written by :func:`write_group`: ``(arrays, attrs)``.

    Raises ``FileNotFoundError`` if nothing is at ``path`` (and no interrupted write
    left a verified copy), :class:`StateFileError` for anything damaged or hostile.
    """
    try:
        path = clean_path(path)
    except ValueError as exc:
        raise StateFileError(f"{os.fspath(path)!r}: {exc}") from None
    if not os.path.lexists(path):
        return _recover(path)
    try:
        return _read_verified(path)
    except MemoryError:
        raise StateFileError(f"{path}: the file describes arrays too large for memory") from None


# ---------------------------------------------------------------------------- states
def save_state(state: State, path: str | os.PathLike, **extra: Any) -> None:
    """Save a state (and JSON-serialisable ``extra`` attributes) atomically at ``path``.

    Replaces only a state saved earlier (a checkpoint), never a model or other files.
    """
    arrays, meta = state.to_arrays()
    write_group(path, arrays, {"kind": "state", **meta, **({"extra_attrs": extra} if extra else {})})


def state_from_attrs(arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], path: str = "") -> State:
    meta = {k: attrs[k] for k in ("algorithm", "format_version", "params", "schema", "n_rows") if k in attrs}
    meta.update({k: attrs.get(k) for k in ("n_skipped", "consumed", "extra", "weight_sum") if k in attrs})
    try:
        return State.from_arrays(arrays, meta)
    except StateFileError:
        raise
    except (StateError, KeyError, TypeError, ValueError, OverflowError) as exc:
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


# ---------------------------------------------------------------------------- one writer at a time
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()


def _lock_owner(lock: str) -> str:
    try:
        owner = json.loads(_read_file(lock, os.path.dirname(lock) or ".", 4096))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("since", 0))))
        return f"pid {owner.get('pid')} on host {owner.get('host')!r}, since {since}"
    except Exception:
        return "another process"


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, what: str = "checkpoint") -> Iterator[None]:
    """Hold ``<path>.lock`` while writing ``path``; a second writer gets :class:`StateFileError`.

    The lock file records the owner's pid, host and start time. It is an advisory
    ``flock`` lock, so a writer that died (even by SIGKILL) releases it and its
    leftover file is taken over. Re-entrant within one process.

    Examples
    --------
    >>> with writer_lock("fit.ckpt.zarr"):      # doctest: +SKIP
    ...     ...  # fold with checkpoints
    """
    path = clean_path(path)
    lock = f"{path}.lock"
    key = os.path.abspath(lock)
    with _HELD_GUARD:
        if _HELD.get(key):
            _HELD[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the lock file's existence is the lock
        fcntl = None
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    fd = None
    for _ in range(10):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (0 if fcntl else os.O_EXCL)
        try:
            fd = os.open(lock, flags, 0o644)
        except FileExistsError:
            fd = None
        if fd is not None and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                fd = None
            else:
                try:
                    same = os.stat(lock).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the previous owner removed the file we locked: try again
                    os.close(fd)
                    fd = None
                    continue
        if fd is not None:
            break
        raise StateFileError(
            f"{path}: another fit is writing this {what} ({_lock_owner(lock)}); wait for it to finish or use "
            f"another {what} path (if that process is gone, delete {lock})")
    if fd is None:
        raise StateFileError(f"{path}: cannot take the lock {lock}")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
    with _HELD_GUARD:
        _HELD[key] = 1
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
