"""Where a one-pass KMeans fit spends its time: read, conversion, update, merges, finalize.

Usage::

    python -m benchmarks.profile_kmeans --ks 10 100 --repeat 3 --data /tmp/daskstate-bench

Runs the phases of ``KMeans(k).fit`` one after the other in this process, on one
thread (no Dask scheduler), on the benchmark's blobs dataset (``bench_kmeans``):

- ``read``: each partition read from Parquet into pandas (the Dask task's input);
- ``convert``: the state's ``read_batch`` (a float array, invalid rows checked);
- ``update``: one empty state per partition updated with its batch (core set, sample);
- ``merge``: the merge tree (``split_every=8``, as ``fit``);
- ``finalize``: the model for ``k`` from the merged state;

each the minimum over ``--repeat`` runs (CPU seconds of this process). The sum is
the CPU work of a fit; on two cores the scheduler overlaps reads and updates. With
``--cprofile`` the update, merge and finalize phases are also profiled.

``--threads`` adds where the time of a real fit's tasks goes, on the synchronous and
on the threaded scheduler (interleaved, ``--repeat`` rounds): for the read tasks and
the update tasks, the sums over tasks of their wall time, their thread's time on a
CPU, its time runnable but waiting for a CPU (other threads or processes: the run
queue) and the rest, time asleep (waiting for the GIL or another lock), from
Linux's ``/proc/self/task/<tid>/schedstat``, and how often it went to sleep. Load from other processes shows up as
run-queue wait, not as sleep, so the split holds on a busy machine too.
Writes ``benchmarks/results/<results-name>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

import numpy as np

from benchmarks.bench_kmeans import FEATURES, exact_sse, load_all
from benchmarks.common import make_dataset, write_results


def _cpu() -> float:
    return time.process_time()


def phases(folder: str, k: int, split_every: int = 8, profile: cProfile.Profile | None = None) -> dict:
    import dask

    import daskstate
    from daskstate.algorithms.kmeans import KMeans
    from daskstate.algorithms.kmeans.state import KMeansState
    from daskstate.numerics import single_blas_thread

    ddf = daskstate.read_parquet(folder)[FEATURES]
    km = KMeans(k, random_state=0, features=FEATURES)
    km._validate_params()
    inp = km._input(ddf)
    state = KMeansState(inp.schema, km._state_params(inp))
    t: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = _cpu()
        if profile is not None and name in ("update", "merge", "finalize"):
            profile.enable()
        out = fn(*args)
        if profile is not None:
            profile.disable()
        t[name] = t.get(name, 0.0) + _cpu() - t0
        return out

    with dask.config.set(scheduler="sync"), single_blas_thread(main_thread=True):  # as a fit holds it
        states = []
        for part in ddf.to_delayed():
            frame = timed("read", part.compute)
            X, _, _ = timed("convert", state.read_batch, frame, None)
            s = state.empty_like()
            timed("update", s.update_inplace, X)
            states.append(s)
        level = states
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level), split_every):
                group = level[i : i + split_every]
                head = group[0]
                for other in group[1:]:
                    timed("merge", head.merge_inplace, other)
                nxt.append(head)
            level = nxt
        model = timed("finalize", lambda: level[0].finalize(**km._finalize_overrides()))
    t["total"] = sum(t.values())
    return {"seconds": t, "centers": model["cluster_centers_"]}


def _thread_times() -> tuple[float, float, int]:
    """This thread's time on a CPU and waiting in the run queue (seconds, Linux schedstat), and
    how many times it went to sleep (voluntary context switches: GIL and lock waits)."""
    import threading

    task = f"/proc/self/task/{threading.get_native_id()}"
    with open(f"{task}/schedstat") as fh:
        on_cpu, run_queue, _ = fh.read().split()
    with open(f"{task}/status") as fh:
        sleeps = next(int(line.split()[1]) for line in fh if line.startswith("voluntary_ctxt_switches"))
    return int(on_cpu) / 1e9, int(run_queue) / 1e9, sleeps


def task_times(folder: str, k: int, scheduler: str) -> dict:
    """A ``KMeans(k).fit`` on ``scheduler``: per kind of task (read, update) the sums of wall,
    on-CPU, run-queue wait and sleep; the fit's wall and process CPU seconds."""
    import dask

    import daskstate
    from daskstate.algorithms.kmeans.state import KMeansState
    from daskstate.data import PieceReader

    sums: dict[str, list[float]] = {"read": [0.0] * 5, "update": [0.0] * 5}

    def timed(kind, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            c0, q0, n0 = _thread_times()
            out = fn(*args, **kwargs)
            c1, q1, n1 = _thread_times()
            wall = time.perf_counter() - t0
            for i, v in enumerate((wall, c1 - c0, q1 - q0, wall - (c1 - c0) - (q1 - q0), n1 - n0)):
                sums[kind][i] += v  # list items: one thread at a time adds (the GIL)
            return out
        return wrapper

    saved = PieceReader.__call__, KMeansState.update_inplace
    PieceReader.__call__, KMeansState.update_inplace = timed("read", saved[0]), timed("update", saved[1])
    try:
        cpu, t0 = _cpu(), time.perf_counter()
        with dask.config.set(scheduler=scheduler):
            daskstate.KMeans(k, random_state=0, features=FEATURES).fit(daskstate.read_parquet(folder))
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu
    finally:
        PieceReader.__call__, KMeansState.update_inplace = saved
    names = ("wall", "on_cpu", "run_queue", "sleep", "sleeps")
    return {"wall": wall, "cpu": cpu, **{kind: dict(zip(names, v, strict=True)) for kind, v in sums.items()}}


def thread_rounds(folder: str, k: int, repeat: int, switch_intervals: tuple[float, ...] = ()) -> dict:
    """:func:`task_times` on the synchronous and the threaded scheduler, interleaved; medians.

    ``threads-arrow1`` is the threaded fit with pyarrow's CPU pool cut to one thread
    (``pyarrow.set_cpu_count(1)``): a Parquet read decodes its columns on that pool
    while the task's own thread sleeps, so two reading tasks (or one read beside an
    update) put more runnable threads than cores on two cores. ``threads-si<s>`` is
    the threaded fit under ``sys.setswitchinterval(s)`` for each ``s`` in
    ``switch_intervals``: a thread that gives the GIL up for a numpy call waits, to
    take it back, until the thread holding it gives it up or for the switch
    interval (5 ms by default), so pure-Python stretches in one task (pandas, merges
    of small arrays) stall the other task's many short numpy calls.
    """
    import sys

    import pyarrow as pa

    arrow_threads, interval = pa.cpu_count(), sys.getswitchinterval()
    task_times(folder, k, "threads")  # imports, first-call costs
    runs: dict[str, list[dict]] = {"sync": [], "threads": [], "threads-arrow1": [],
                                   **{f"threads-si{s:g}": [] for s in switch_intervals}}
    try:
        for _ in range(repeat):
            for name in runs:
                pa.set_cpu_count(1 if name.endswith("arrow1") else arrow_threads)
                sys.setswitchinterval(float(name[len("threads-si"):]) if "-si" in name else interval)
                runs[name].append(task_times(folder, k, name.split("-")[0]))
    finally:
        pa.set_cpu_count(arrow_threads)
        sys.setswitchinterval(interval)
    out = {}
    for scheduler, rs in runs.items():
        med = {key: float(np.median([r[key] for r in rs])) for key in ("wall", "cpu")}
        for kind in ("read", "update"):
            med[kind] = {n: float(np.median([r[kind][n] for r in rs])) for n in rs[0][kind]}
        out[scheduler] = {"median": med, "runs": rs}
        print(f"k={k} {scheduler:17s} fit wall {med['wall']:.3f} CPU {med['cpu']:.3f}  " + "  ".join(
            f"{kind}: wall {m['wall']:.3f} on-cpu {m['on_cpu']:.3f} run-queue {m['run_queue']:.3f} "
            f"sleep {m['sleep']:.3f} ({m['sleeps']:.0f} times)" for kind, m in ((kind, med[kind]) for kind in ("read", "update"))), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--cprofile", type=int, default=0, help="print this many top functions (cumulative) per k")
    ap.add_argument("--threads", action="store_true",
                    help="also split the read and update tasks' time (on-CPU, run queue, sleep) on 1 and 2 threads")
    ap.add_argument("--switch-intervals", type=float, nargs="*", default=[],
                    help="with --threads: also the threaded fit under each of these sys.setswitchinterval values")
    ap.add_argument("--results-name", default="kmeans_profile")
    args = ap.parse_args()

    ds = make_dataset(os.path.join(args.data, f"blobs-{args.rows}"), args.rows, 16, args.files)
    X = load_all(ds["folder"])
    out = {"dataset": ds, "args": vars(args), "load": [os.getloadavg()[0]], "by_k": {}}
    for k in args.ks:
        runs = []
        for _ in range(args.repeat):
            runs.append(phases(ds["folder"], k))
        best = {name: min(r["seconds"][name] for r in runs) for name in runs[0]["seconds"]}
        sse = exact_sse(X, runs[0]["centers"])
        out["by_k"][str(k)] = {"cpu_seconds": best, "all": [r["seconds"] for r in runs], "sse": sse}
        print(f"k={k}: " + "  ".join(f"{n} {v:.3f}" for n, v in best.items()) + f"  (SSE {sse:.6g})", flush=True)
        if args.threads:
            out["by_k"][str(k)]["threads"] = thread_rounds(ds["folder"], k, args.repeat,
                                                              tuple(args.switch_intervals))
        if args.cprofile:
            prof = cProfile.Profile()
            phases(ds["folder"], k, profile=prof)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.cprofile)
            print(buf.getvalue())
    out["load"].append(os.getloadavg()[0])
    out["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"written to {write_results(args.results_name, out)}")


if __name__ == "__main__":
    main()
