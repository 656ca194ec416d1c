"""The Parquet read path alone: daskstate's reader against the pandas floor, interleaved in fresh processes.

Usage::

    python -m benchmarks.bench_read --repeat 10
    python -m benchmarks.bench_read --repeat 10 --jobs pandas-floor floor floor-whole fit fit-whole --ks 10

On ``bench_kmeans``'s blobs dataset (20 files x 100,000 x 16 float64, Snappy), each job in a fresh
process, the jobs of a round one after another (their order reversed every other round):

- ``pandas-floor``: issue 14's floor, ``pd.read_parquet`` of each file in turn, touching every value;
- ``reader`` / ``reader-whole``: daskstate's partition reader (``read_parquet``'s ``PieceReader``) over
  every partition in one thread, no Dask, touching every value; ``-whole`` reads each row group whole
  (``READ_GROUP_BYTES`` set past any row group: the reader as it was at 5ea5daa);
- ``floor`` / ``floor-whole``: daskstate's floor (``read_pass_floor``: the fit's graph with a column-sum
  state, on Dask's threads);
- ``fit`` / ``fit-whole``: ``KMeans(k).fit`` in one pass (``bench_kmeans.daskstate_job``).

Per job: median wall time, CPU time (user + system, from ``getrusage``, to the microsecond), system time,
minor page faults, context switches, and the median over rounds of its wall and CPU time divided by the
same round's ``pandas-floor`` (when run). The machine is shared: compare ratios within rounds, and read the
load (``os.getloadavg()``, recorded before each round). Writes ``benchmarks/results/<results-name>.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from typing import Any

import numpy as np

from benchmarks.common import (
    make_dataset,
    parquet_files,
    read_pass_floor,
    run_measured,
    write_results,
)

FEATURES = [f"f{j}" for j in range(16)]
#: ``READ_GROUP_BYTES`` for the ``-whole`` jobs: every row group read whole, as before the column groups
WHOLE = sys.maxsize


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": r.ru_utime + r.ru_stime, "sys_seconds": r.ru_stime, "minor_faults": r.ru_minflt,
            "context_switches": r.ru_nvcsw + r.ru_nivcsw}


def _measured(run) -> dict[str, float]:
    before = _usage()
    extra = run()
    after = _usage()
    return {**{k: after[k] - before[k] for k in after}, **(extra or {})}


def _set_read_group_bytes(read_group_bytes: int | None) -> None:
    import daskstate.data

    if read_group_bytes is not None:
        daskstate.data.READ_GROUP_BYTES = read_group_bytes


def pandas_floor_job(folder: str) -> dict:
    import pandas as pd

    files = parquet_files(folder)
    return _measured(lambda: {"total": sum(float(pd.read_parquet(p, columns=FEATURES).to_numpy().sum())
                                           for p in files)})


def reader_job(folder: str, read_group_bytes: int | None = None) -> dict:
    import daskstate
    from daskstate.data import _find_piece_reader

    _set_read_group_bytes(read_group_bytes)
    reader = _find_piece_reader(daskstate.read_parquet(folder))
    return _measured(lambda: {"total": sum(float(reader(p, FEATURES).to_numpy().sum()) for p in reader.pieces)})


def floor_job(folder: str, read_group_bytes: int | None = None) -> dict:
    import dask

    import daskstate

    _set_read_group_bytes(read_group_bytes)

    def run() -> None:
        with dask.config.set(scheduler="threads"):
            read_pass_floor(daskstate.read_parquet(folder), FEATURES)

    return _measured(run)


def fit_job(folder: str, k: int, read_group_bytes: int | None = None) -> dict:
    from benchmarks.bench_kmeans import daskstate_job

    _set_read_group_bytes(read_group_bytes)
    return _measured(lambda: {"sse_centers": daskstate_job(folder, k)["centers"].tolist()})


def _job(name: str, folder: str, k: int) -> tuple[Any, dict]:
    base, _, whole = name.partition("-whole")
    kwargs: dict[str, Any] = {"folder": folder}
    if base != "pandas-floor":
        kwargs["read_group_bytes"] = WHOLE if name.endswith("-whole") else None
    if base == "fit":
        kwargs["k"] = k
    func = {"pandas-floor": pandas_floor_job, "reader": reader_job, "floor": floor_job, "fit": fit_job}[base]
    return func, kwargs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", nargs="+", default=["pandas-floor", "reader", "reader-whole", "floor", "floor-whole"],
                    choices=["pandas-floor", "reader", "reader-whole", "floor", "floor-whole", "fit", "fit-whole"])
    ap.add_argument("--ks", type=int, nargs="+", default=[10], help="k of the fit jobs (first one used)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--results-name", default="read")
    args = ap.parse_args()
    ds = make_dataset(os.path.join(args.data, f"blobs-{args.rows}"), args.rows, 16, 20)
    rounds = []
    for r in range(args.repeat):
        load = os.getloadavg()
        row: dict[str, Any] = {"load": load[0], "loadavg": load}
        for name in args.jobs if r % 2 == 0 else args.jobs[::-1]:
            func, kwargs = _job(name, ds["folder"], args.ks[0])
            out = run_measured(func, **kwargs)
            if not out["ok"]:
                raise SystemExit(f"{name} failed: {out['error']}")
            res = out["result"]
            row[name] = {"seconds": out["seconds"], "peak_rss_mb": out["peak_rss_mb"],
                         **{k: v for k, v in res.items() if k.endswith(("seconds", "faults", "switches"))}}
            if "sse_centers" in res:
                row[name]["centers"] = res["sse_centers"]
        rounds.append(row)
        print(r, f"load {load[0]:.1f}", {n: (round(row[n]["seconds"], 3), round(row[n]["cpu_seconds"], 3))
                                         for n in args.jobs}, flush=True)
    summary = {}
    for name in args.jobs:
        runs = [row[name] for row in rounds]
        s = {key: float(np.median([x[key] for x in runs]))
             for key in ("seconds", "cpu_seconds", "sys_seconds", "minor_faults", "context_switches", "peak_rss_mb")}
        if "pandas-floor" in args.jobs:
            for key, label in (("seconds", "wall"), ("cpu_seconds", "cpu")):
                s[f"{label}_ratio_to_pandas_floor"] = float(np.median([row[name][key] / row["pandas-floor"][key]
                                                                       for row in rounds]))
        if not name.endswith("-whole") and f"{name}-whole" in args.jobs:
            for key, label in (("seconds", "wall"), ("cpu_seconds", "cpu")):
                s[f"{label}_over_whole"] = float(np.median([row[name][key] / row[f"{name}-whole"][key]
                                                            for row in rounds]))
        summary[name] = s
        print(name, {k: round(v, 4) for k, v in s.items()}, flush=True)
    if "fit" in args.jobs and "fit-whole" in args.jobs:
        same = all(row["fit"]["centers"] == row["fit-whole"]["centers"] for row in rounds)
        summary["fit_centers_identical"] = same
        print("fit centres identical with and without column groups:", same)
    for row in rounds:
        for name in args.jobs:
            row[name].pop("centers", None)
    out = {"dataset": ds, "args": vars(args), "load_median": float(np.median([r["load"] for r in rounds])),
           "rounds": rounds, "summary": summary}
    print(f"written to {write_results(args.results_name, out)}")


if __name__ == "__main__":
    main()
