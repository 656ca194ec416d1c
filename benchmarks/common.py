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
    ``kind="separable"``: standard normal features and two nearly separable classes
    (``label`` is the sign of a linear score plus 5% noise), the easy binary problem
    a new user tries first; ``y`` is the score.
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
        if kind == "separable":
            X = frng.normal(size=(n, cols)).astype(dtype)
            score = X @ coef
            table = {f"f{j}": X[:, j] for j in range(cols)}
            table["y"] = score
            table["label"] = (score + frng.normal(scale=0.05 * np.linalg.norm(coef), size=n) > 0).astype("int64")
            pq.write_table(pa.table(table), os.path.join(folder, f"part-{i:05d}.parquet"),
                           row_group_size=row_group_rows or n)
            continue
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
        import distributed  # noqa: F401 - dask.compute imports it on first use (seconds on a busy machine)

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


def wait_quiet(max_load: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``max_load``; return it.

    The machine is shared: other processes' load skews timings, so each measured run
    starts on a quiet machine when possible, and the load it saw is recorded.
    """
    deadline = time.time() + max_wait
    while os.getloadavg()[0] > max_load and time.time() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def measure(jobs: dict[str, tuple[Callable, dict[str, Any]]], *, repeat: int = 3, floor: str | None = None,
            max_load: float = 1.5, max_wait: float = 0.0, timeout: float = 3600) -> dict[str, dict[str, Any]]:
    """Run every job ``repeat`` times, interleaved (round by round), each in a fresh process.

    Per job: the best time (a job's ``fit_seconds`` result if it reports one, else
    the whole call), every time, its peak RSS (MiB, the maximum over repeats), the
    load average each run started at, and with ``floor`` the median over rounds of
    the ratio to the floor job's time in the same round (the floor runs first in
    every round, so a ratio compares runs seconds apart on the shared machine).

    Raises SystemExit naming the job if a run fails.
    """
    names = list(jobs)
    if floor is not None:
        names.remove(floor)
        names.insert(0, floor)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(repeat):
        for name in names:
            func, kwargs = jobs[name]
            load = wait_quiet(max_load, max_wait)
            out = run_measured(func, timeout=timeout, **kwargs)
            if not out["ok"]:
                raise SystemExit(f"{name} failed: {out['error']}")
            out["seconds"] = (out.get("result") or {}).get("fit_seconds", out["seconds"]) \
                if isinstance(out.get("result"), dict) else out["seconds"]
            out["load"] = load
            runs[name].append(out)
            print(f"  {name}: {out['seconds']:.2f} s (load {load:.1f})", flush=True)
    rows = {}
    for name in names:
        rs = runs[name]
        best = min(rs, key=lambda r: r["seconds"])
        row = {"fit": name, **(best["result"] if isinstance(best["result"], dict) else {}),
               "seconds": best["seconds"], "all_seconds": [r["seconds"] for r in rs],
               "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "loads": [r["load"] for r in rs]}
        if all(isinstance(r.get("result"), dict) and "cpu_seconds" in r["result"] for r in rs):
            row["all_cpu_seconds"] = [r["result"]["cpu_seconds"] for r in rs]  # the job's own CPU time
        if floor is not None:
            ratios = [r["seconds"] / f["seconds"] for r, f in zip(rs, runs[floor], strict=True)]
            row["round_ratios"] = ratios
            row["ratio_to_floor"] = float(np.median(ratios))
        rows[name] = row
    return rows


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
