"""One-pass fits of two source trees against each other: did a change slow StandardScaler, PCA or KMeans?

Each fit runs in a fresh Python process whose ``PYTHONPATH`` is one source tree
(``--before``: e.g. ``git worktree add /tmp/before <commit>``; ``--after``: this
repository by default). Rounds interleave the trees and the jobs, and every
round starts with a read-pass floor in the same tree, so each fit is judged as
its ratio to a floor measured seconds before it on the shared machine. The floor
reads and touches every value with plain Dask (no daskstate), so it is the
same work in both trees.

Usage::

    git worktree add /tmp/before 027e1cf
    python -m benchmarks.bench_before_after --before /tmp/before --repeat 5

writes ``benchmarks/results/before_after.json`` with wall and CPU seconds per
run, the ratio to the floor per round, and the median after/before ratio per job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.common import make_dataset, wait_quiet, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: what each job runs on ``ddf`` (the feature columns of the dataset); timed inside the child
JOBS = {
    "floor": "ddf.map_partitions(touch, meta=pd.DataFrame({j: pd.Series(dtype=float) for j in range(16)})).compute()",
    "scaler": "daskstate.StandardScaler().fit(ddf)",
    "pca": "daskstate.PCA(n_components=4).fit(ddf)",
    "kmeans": "daskstate.KMeans(n_clusters=10, random_state=0).fit(ddf)",
}

CHILD = """
import json, resource, sys, time
import dask, dask.dataframe as dd, distributed  # imports are not part of the measured time
import pandas as pd
import daskstate
def touch(d):  # what every fit does first: the partition as a float matrix, every value read
    return pd.DataFrame([d.to_numpy(dtype=float).sum(axis=0)])
files, job = json.loads(sys.argv[1]), sys.argv[2]
ddf = dd.read_parquet(files)[[f"f{j}" for j in range(16)]]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
with dask.config.set(scheduler="threads"):
    c0, t0 = cpu(), time.perf_counter()
    exec(sys.argv[3])
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "daskstate": daskstate.__file__}))
"""


def run_job(tree: str, files: list[str], job: str) -> dict:
    """One job in a fresh process importing daskstate from ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(files), job, JOBS[job]], env=env, cwd=tree,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"{job} in {tree} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["daskstate"].startswith(os.path.realpath(tree)) and not result["daskstate"].startswith(tree):
        raise SystemExit(f"{job}: imported daskstate from {result['daskstate']}, not from {tree}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="source tree of the earlier version")
    parser.add_argument("--after", default=ROOT, help="source tree of the later version (default: this one)")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=60.0)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "daskstate-bench-blobs"))
    parser.add_argument("--jobs", nargs="+", default=[j for j in JOBS if j != "floor"], choices=sorted(JOBS),
                        help="the fits to compare (the floor always runs)")
    parser.add_argument("--results-name", default="before_after")
    args = parser.parse_args(argv)

    desc = make_dataset(args.data, args.rows, 16, 20)
    files = sorted(os.path.join(args.data, f) for f in os.listdir(args.data) if f.endswith(".parquet"))
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    commits = {k: subprocess.run(["git", "-C", t, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip() for k, t in trees.items()}
    jobs = ["floor", *(j for j in args.jobs if j != "floor")]
    runs: dict[str, dict[str, list[dict]]] = {k: {j: [] for j in jobs} for k in trees}
    for rnd in range(args.repeat):
        order = list(trees) if rnd % 2 == 0 else list(trees)[::-1]  # neither tree always goes first
        for which in order:
            for job in jobs:  # the floor first: each fit's ratio compares runs seconds apart
                load = wait_quiet(args.max_load, args.max_wait)
                r = run_job(trees[which], files, job)
                r["load"] = load
                runs[which][job].append(r)
                print(f"round {rnd} {which:6s} {job:7s} {r['seconds']:.3f} s (cpu {r['cpu_seconds']:.3f}, "
                      f"load {load:.1f})", flush=True)
    summary: dict[str, dict] = {}
    for job in jobs[1:]:
        row: dict[str, float] = {}
        for which in trees:
            wall = [r["seconds"] / f["seconds"] for r, f in zip(runs[which][job], runs[which]["floor"], strict=True)]
            cpu = [r["cpu_seconds"] / f["cpu_seconds"]
                   for r, f in zip(runs[which][job], runs[which]["floor"], strict=True)]
            row[f"{which}_wall_x_floor"] = float(np.median(wall))
            row[f"{which}_cpu_x_floor"] = float(np.median(cpu))
        row["after_over_before_wall"] = row["after_wall_x_floor"] / row["before_wall_x_floor"]
        row["after_over_before_cpu"] = row["after_cpu_x_floor"] / row["before_cpu_x_floor"]
        summary[job] = row
        print(f"{job}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    path = write_results(args.results_name, {
        "what": "StandardScaler, PCA(n_components=4), KMeans(n_clusters=10) on 2M x 16 blobs (20 Parquet files), "
                "threads; each fit in a fresh process, trees and jobs interleaved round by round; ratio = fit "
                "seconds / read-pass floor of the same tree and round",
        "command": "python -m benchmarks.bench_before_after " + " ".join(sys.argv[1:] if argv is None else argv),
        "commits": commits, "dataset": desc, "summary": summary, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
