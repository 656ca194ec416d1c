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
Writes ``benchmarks/results/<results-name>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--cprofile", type=int, default=0, help="print this many top functions (cumulative) per k")
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
