"""Hostile model files (issue 16 item 5): each fails with a StateFileError naming the file,
in well under a second, in a process whose address space is capped.

The files are built here; a subprocess with ``RLIMIT_AS`` set a little above its own
footprint after imports loads each in turn and reports what happened, so a file that
makes loading allocate gigabytes fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import gaussian_frame

import daskstate
from daskstate.store import checksum

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /dev/zero: Linux")

LOADER = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, daskstate
    from daskstate.errors import StateFileError

    def vm_bytes():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    headroom = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + headroom, resource.RLIM_INFINITY))
    results = {}
    for name, path in json.loads(sys.argv[1]).items():
        t0 = time.perf_counter()
        try:
            daskstate.load(path)
            outcome = ["loaded", ""]
        except StateFileError as exc:
            outcome = ["StateFileError", str(exc)]
        except BaseException as exc:
            outcome = [type(exc).__name__, str(exc)[:300]]
        results[name] = outcome + [time.perf_counter() - t0]
    print(json.dumps(results))
    """
)
HEADROOM = 400 << 20  # the legitimate models below are a few KB


def _meta_file(path) -> str:
    return os.path.join(path, "zarr.json")


def _edit(path, fn, resign_arrays=None) -> None:
    """Edit the daskstate metadata; with ``resign_arrays``, sign it as a consistent writer would."""
    with open(_meta_file(path)) as fh:
        meta = json.load(fh)
    body = meta["attributes"]["daskstate"]
    fn(body)
    if resign_arrays is not None:
        body["arrays"] = {k: [v.dtype.name, list(v.shape)] for k, v in resign_arrays.items()}
        body["checksum"] = checksum(resign_arrays, {k: v for k, v in body.items() if k != "checksum"})
    with open(_meta_file(path), "w") as fh:
        json.dump(meta, fh)


def _rewrite_array(path, name, arr) -> None:
    """Replace one stored array by ``arr`` (metadata and chunk), as a consistent writer would."""
    folder = os.path.join(path, "state", name)
    meta = json.load(open(os.path.join(folder, "zarr.json")))
    meta["shape"] = list(arr.shape)
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [max(1, s) for s in arr.shape]
    json.dump(meta, open(os.path.join(folder, "zarr.json"), "w"))
    shutil.rmtree(os.path.join(folder, "c"), ignore_errors=True)
    chunk = os.path.join(folder, "c", *(["0"] * arr.ndim))
    os.makedirs(os.path.dirname(chunk), exist_ok=True)
    open(chunk, "wb").write(np.ascontiguousarray(arr, dtype="<f8").tobytes())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    X = gaussian_frame(400, 3, seed=2, mean=3.0)
    y = (X["f0"] > 3.0).astype(int)
    fitted = {
        "scaler": daskstate.StandardScaler().fit(X),
        "kmeans": daskstate.KMeans(n_clusters=3, k_max=3, random_state=0).fit(X),
        "linear": daskstate.LinearLearner("binary_classifier", num_models=2, epochs=1).fit(X, y),
    }
    paths = {}
    for name, est in fitted.items():
        est.save(root / f"{name}.zarr")
        paths[name] = root / f"{name}.zarr"
    return root, fitted, paths


def _copy(models, name, new):
    root, _, paths = models
    target = root / new
    shutil.copytree(paths[name], target, symlinks=True)
    return target


def _arrays(path):
    return {k: np.asarray(v) for k, v in daskstate.load_state(path).to_arrays()[0].items()}


def build_hostile_files(models) -> dict[str, str]:
    root, fitted, paths = models
    out = {}

    p = _copy(models, "scaler", "huge-declared.zarr")  # 5e8 elements declared, chunks deleted
    _edit(p, lambda b: b["arrays"].__setitem__("m2", ["float64", [500_000_000]]))
    m = json.load(open(p / "state" / "m2" / "zarr.json"))
    m["shape"], m["chunk_grid"]["configuration"]["chunk_shape"] = [500_000_000], [500_000_000]
    json.dump(m, open(p / "state" / "m2" / "zarr.json", "w"))
    shutil.rmtree(p / "state" / "m2" / "c")
    out["5e8 elements declared, no chunks"] = p

    p = _copy(models, "kmeans", "tiny-chunks.zarr")  # 1e6 elements in chunks of 1
    sample = np.zeros((333_334, 3))
    arrays = {**_arrays(p), "sample": sample}
    _rewrite_array(p, "sample", sample)
    m = json.load(open(p / "state" / "sample" / "zarr.json"))
    m["chunk_grid"]["configuration"]["chunk_shape"] = [1, 1]
    json.dump(m, open(p / "state" / "sample" / "zarr.json", "w"))
    _edit(p, lambda b: None, resign_arrays=arrays)
    out["chunk_shape [1] with 1e6 elements"] = p

    p = _copy(models, "linear", "num-models.zarr")  # correctly signed, num_models=2e8
    arrays = _arrays(p)

    def many_models(body):
        body["params"]["num_models"] = 200_000_000
        body["estimator_params"]["num_models"] = 200_000_000

    _edit(p, many_models, resign_arrays=arrays)
    out["signed num_models=2e8"] = p

    p = _copy(models, "scaler", "chunk-dev-zero.zarr")
    chunk = p / "state" / "m2" / "c" / "0"
    chunk.unlink()
    chunk.symlink_to("/dev/zero")
    out["chunk symlinked to /dev/zero"] = p

    p = _copy(models, "scaler", "json-dev-zero.zarr")
    (p / "zarr.json").unlink()
    (p / "zarr.json").symlink_to("/dev/zero")
    out["zarr.json symlinked to /dev/zero"] = p

    p = _copy(models, "scaler", "array-json-dev-zero.zarr")
    (p / "state" / "m2" / "zarr.json").unlink()
    (p / "state" / "m2" / "zarr.json").symlink_to("/dev/zero")
    out["array zarr.json symlinked to /dev/zero"] = p

    p = _copy(models, "scaler", "state-symlink.zarr")
    shutil.move(p / "state", root / "elsewhere")
    (p / "state").symlink_to(root / "elsewhere")
    out["state folder is a symlink"] = p

    p = _copy(models, "scaler", "fifo.zarr")
    (p / "zarr.json").unlink()
    os.mkfifo(p / "zarr.json")
    out["FIFO as zarr.json"] = p

    p = _copy(models, "scaler", "fifo-chunk.zarr")
    (p / "state" / "m2" / "c" / "0").unlink()
    os.mkfifo(p / "state" / "m2" / "c" / "0")
    out["FIFO as a chunk"] = p

    p = _copy(models, "kmeans", "many-centres.zarr")  # 2,550 centres where n_centers says less
    arrays = _arrays(p)
    n_centers = fitted["kmeans"].state_.params["n_centers"]
    reps = -(-2_550 // len(arrays["centers"]))
    for name in ("centers", "weights", "spread"):
        arrays[name] = np.repeat(arrays[name], reps, axis=0)[:2_550]
        _rewrite_array(p, name, arrays[name])
    assert len(arrays["centers"]) > n_centers
    _edit(p, lambda b: None, resign_arrays=arrays)
    out["2,550 centres, n_centers smaller"] = p

    p = _copy(models, "scaler", "negative-rows.zarr")
    _edit(p, lambda b: b.update(n_rows=-5), resign_arrays=_arrays(p))
    out["n_rows -5, signed"] = p

    p = _copy(models, "scaler", "negative-m2.zarr")
    arrays = _arrays(p)
    arrays["m2"] = -arrays["m2"]
    _rewrite_array(p, "m2", arrays["m2"])
    _edit(p, lambda b: None, resign_arrays=arrays)
    out["negative m2, signed"] = p

    p = _copy(models, "scaler", "infinite-rows.zarr")
    text = (p / "zarr.json").read_text()
    n_rows = fitted["scaler"].n_samples_seen_
    (p / "zarr.json").write_text(text.replace(f'"n_rows": {n_rows}', '"n_rows": Infinity'))
    assert "Infinity" in (p / "zarr.json").read_text()
    out["n_rows: Infinity"] = p

    p = _copy(models, "scaler", "deep.zarr")
    meta = (p / "zarr.json").read_text()
    (p / "zarr.json").write_text(meta[:-1] + ', "deep": ' + "[" * 10_000 + "]" * 10_000 + "}")
    out["10,000-deep JSON"] = p

    p = _copy(models, "scaler", "huge-json.zarr")
    with open(p / "zarr.json", "r+") as fh:
        fh.seek(0, 2)
        fh.truncate(300 << 20)  # sparse: 300 MB of NULs after the JSON
    out["300 MB zarr.json"] = p

    p = _copy(models, "scaler", "nul-name.zarr")

    def nul_name(body):
        body["arrays"]["m\u00002"] = body["arrays"].pop("m2")

    _edit(p, nul_name)
    out["NUL in an array name"] = p

    p = root / "a-file.zarr"
    p.write_bytes(b"not a folder")
    out["a file instead of a folder"] = p

    p = _copy(models, "scaler", "folder-json.zarr")
    (p / "zarr.json").unlink()
    (p / "zarr.json").mkdir()
    out["a folder as zarr.json"] = p

    p = _copy(models, "scaler", "array-folder-json.zarr")
    (p / "state" / "m2" / "zarr.json").unlink()
    (p / "state" / "m2" / "zarr.json").mkdir()
    out["a folder as an array's zarr.json"] = p
    return {k: str(v) for k, v in out.items()}


def test_legitimate_models_load_under_the_memory_cap(models):
    _, fitted, paths = models
    results = _load_capped({k: str(v) for k, v in paths.items()})
    assert {k: v[0] for k, v in results.items()} == dict.fromkeys(paths, "loaded"), results


def test_hostile_files_fail_fast_with_a_clear_error_under_a_memory_cap(models):
    files = build_hostile_files(models)
    results = _load_capped(files)
    problems = {}
    for case, (kind, message, seconds) in results.items():
        path = files[case]
        if kind != "StateFileError" or path not in message or seconds > 1.0:
            problems[case] = (kind, message[:200], round(seconds, 3))
    assert problems == {}


def _load_capped(files: dict[str, str]) -> dict[str, list]:
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(files), str(HEADROOM)],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
