"""Shared benchmark tools: generated Parquet datasets, the read-pass floor, measured runs.

Every measured run happens in a fresh subprocess so that its peak RSS
(``ru_maxrss``) belongs to that run alone.
"""

from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def make_dataset(
    folder: str,
    rows: int,
    cols: int = 16,
    files: int = 20,
    *,
    kind: str = "blobs",
    n_centers: int = 10,
    n_classes: int = 2,
    seed: int = 0,
    dtype: str = "float64",
    row_group_rows: int | None = None,
) -> dict[str, Any]:
    """Write ``rows x cols`` features (``f0..``) plus targets to ``files`` Parquet files.

    ``kind="blobs"``: Gaussian clusters around ``n_centers`` centres; targets ``y``
    (linear + noise) and ``label`` (``n_classes`` classes from a linear score).
    Returns a description (folder, rows, cols, files, bytes on disk).
    Files already there with the same description are reused.
    """
    desc = {"rows": rows, "cols": cols, "files": files, "kind": kind, "n_centers": n_centers,
            "n_classes": n_classes, "seed": seed, "dtype": dtype, "row_group_rows": row_group_rows}
    marker = os.path.join(folder, "_dataset.json")
    if os.path.exists(marker):
        with open(marker) as fh:
            if json.load(fh).get("desc") == desc:
                return _describe(folder, desc)
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        if f.endswith(".parquet"):
            os.remove(os.path.join(folder, f))
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, size=(n_centers, cols))
    coef = rng.normal(size=cols)
    W = rng.normal(size=(cols, n_classes))
    per_file = np.diff(np.linspace(0, rows, files + 1).astype(int))
    for i, n in enumerate(per_file):
        frng = np.random.default_rng([seed, i])
        which = frng.integers(0, n_centers, n)
        X = (centers[which] + frng.normal(size=(n, cols))).astype(dtype)
        table = {f"f{j}": X[:, j] for j in range(cols)}
        table["y"] = (X @ coef + frng.normal(scale=1.0, size=n)).astype(dtype)
        scores = (X - centers.mean(0)) @ W / np.sqrt(cols) + frng.gumbel(size=(n, n_classes))
        table["label"] = scores.argmax(axis=1).astype("int64")
        pq.write_table(pa.table(table), os.path.join(folder, f"part-{i:05d}.parquet"),
                       row_group_size=row_group_rows or n)
    with open(marker, "w") as fh:
        json.dump({"desc": desc}, fh)
    return _describe(folder, desc)


def _describe(folder: str, desc: dict) -> dict[str, Any]:
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".parquet"))
    return {"folder": folder, **desc, "bytes_on_disk": size}


def parquet_files(folder: str) -> list[str]:
    """The dataset's Parquet files, in order."""
    return sorted(glob.glob(os.path.join(folder, "*.parquet")))


def read_pass_floor(ddf, columns: list[str], split_every: int = 8) -> None:
    """The floor of one pass: read every partition and touch every value, same graph shape.

    It folds a trivial state (a column sum) through :func:`daskstate.fold`, so the
    graph (projection, one task per partition, merge tree) is the one fits use.
    """
    import daskstate
    from benchmarks.touch import TouchState

    state = TouchState(daskstate.Schema(tuple(columns)))
    return daskstate.fold(ddf, state, split_every=split_every)


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` from /proc (Linux), else ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec``: a spawned child starts with its parent's
    high-water mark, so a driver that generated data in memory would hide the
    child's own peak. ``VmHWM`` belongs to the new process image alone.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(conn, func: Callable, kwargs: dict) -> None:
    try:
        import dask.dataframe  # noqa: F401 - imports are not part of the measured time

        import daskstate  # noqa: F401

        t0 = time.perf_counter()
        out = func(**kwargs)
        seconds = time.perf_counter() - t0
        rss = own_peak_rss_mb()
        conn.send({"ok": True, "seconds": seconds, "peak_rss_mb": rss, "result": out})
    except BaseException as exc:  # report, never hang the parent
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def run_measured(func: Callable, timeout: float = 3600, **kwargs: Any) -> dict[str, Any]:
    """Run ``func(**kwargs)`` in a fresh process; return seconds, peak RSS (MiB) and its result.

    ``func`` must be importable (module level) and return something picklable
    (a dict of numbers is best). Time covers ``func`` only, not the process start.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, kwargs))
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.kill()
        return {"ok": False, "error": f"timeout after {timeout} s"}
    try:
        out = parent.recv()
    except EOFError:  # the child died without reporting (killed, out of memory)
        proc.join()
        return {"ok": False, "error": f"the measured process died (exit code {proc.exitcode})"}
    proc.join()
    return out


def machine() -> dict[str, Any]:
    import dask

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "dask": dask.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "platform": platform.platform()}


def write_results(name: str, payload: dict[str, Any]) -> str:
    """Write ``benchmarks/results/<name>.json``; returns the path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as fh:
        json.dump({"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}, fh, indent=2,
                  default=float)
    return path


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
