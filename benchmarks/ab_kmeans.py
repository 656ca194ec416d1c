"""Two versions of daskstate side by side on the KMeans benchmark's one-pass fit.

Usage::

    python -m benchmarks.ab_kmeans --base /path/to/old/checkout --ks 10 100 --repeat 5

Each round runs, each in a fresh process, the read-pass floor, then ``KMeans(k).fit`` with
the ``--base`` checkout's daskstate, then with this checkout's (the order alternates between
rounds), on ``bench_kmeans``'s blobs dataset. ``--new-params '{"mini_batch_size": 10000}'``
passes more ``KMeans`` parameters to this checkout's fit only; ``--new-switch-interval 0.0005``
runs this checkout's fit under ``sys.setswitchinterval(0.0005)`` (the GIL's; Python's default
is 0.005 s). Reports per k the median over rounds of each
fit's wall time and CPU time divided by the floor of its round, and the exact SSE of each.
Writes ``benchmarks/results/<results-name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.common import write_results

_JOB = """
import json, sys
from benchmarks.bench_kmeans import {job}
from benchmarks.common import run_measured
r = run_measured({job}, folder={folder!r}{extra})
if r["ok"]:
    res = r["result"]
    r = {{"ok": True, "seconds": r["seconds"], "cpu_seconds": res["cpu_seconds"],
         "centers": None if "centers" not in res else res["centers"].tolist()}}
print("RESULT" + json.dumps(r))
"""


def run_job(tree: str, job: str, folder: str, **extra) -> dict:
    """Run ``benchmarks.bench_kmeans.<job>`` from ``tree`` (its daskstate and benchmarks)."""
    code = _JOB.format(job=job, folder=folder, extra="".join(f", {k}={v!r}" for k, v in extra.items()))
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False)
    line = [s for s in out.stdout.splitlines() if s.startswith("RESULT")]
    if not line:
        return {"ok": False, "error": out.stderr[-2000:]}
    return json.loads(line[-1][len("RESULT"):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a checkout of the daskstate version to compare against")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--results-name", default="kmeans_ab")
    ap.add_argument("--new-params", type=json.loads, default=None,
                    help="JSON object of more KMeans parameters for this checkout's fit")
    ap.add_argument("--new-switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for this checkout's fit (seconds)")
    args = ap.parse_args()
    from benchmarks.bench_kmeans import exact_sse, load_all
    from benchmarks.common import make_dataset

    ds = make_dataset(os.path.join(args.data, f"blobs-{args.rows}"), args.rows, 16, 20)
    folder = ds["folder"]
    X = load_all(folder)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"base": os.path.abspath(args.base), "new": here}
    out: dict = {"dataset": ds, "args": vars(args), "by_k": {}}
    for k in args.ks:
        rows = []
        for r in range(args.repeat):
            load = os.getloadavg()[0]
            floor = run_job(here, "floor_job", folder)
            order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
            new_extra = {**({"params": args.new_params} if args.new_params else {}),
                         **({"switch_interval": args.new_switch_interval} if args.new_switch_interval else {})}
            fits = {name: run_job(trees[name], "daskstate_job", folder, k=k, **(new_extra if name == "new" else {}))
                    for name in order}
            if not (floor["ok"] and all(f["ok"] for f in fits.values())):
                raise SystemExit(f"a run failed: {floor} {fits}")
            rows.append({"load": load, "floor": floor["seconds"], "floor_cpu": floor["cpu_seconds"],
                         **{f"{n}_seconds": f["seconds"] for n, f in fits.items()},
                         **{f"{n}_cpu": f["cpu_seconds"] for n, f in fits.items()},
                         **{f"{n}_sse": exact_sse(X, np.asarray(f["centers"])) for n, f in fits.items()}})
            print(k, {key: round(v, 4) if isinstance(v, float) else v for key, v in rows[-1].items()}, flush=True)
        summary = {}
        for n in trees:
            summary[f"{n}_ratio_to_floor"] = float(np.median([r[f"{n}_seconds"] / r["floor"] for r in rows]))
            summary[f"{n}_cpu_ratio_to_floor"] = float(np.median([r[f"{n}_cpu"] / r["floor_cpu"] for r in rows]))
        summary["new_over_base_seconds"] = float(np.median([r["new_seconds"] / r["base_seconds"] for r in rows]))
        summary["new_over_base_cpu"] = float(np.median([r["new_cpu"] / r["base_cpu"] for r in rows]))
        summary["new_over_base_sse"] = float(np.median([r["new_sse"] / r["base_sse"] for r in rows]))
        out["by_k"][str(k)] = {"rounds": rows, "summary": summary}
        print(k, {key: round(v, 4) for key, v in summary.items()}, flush=True)
    print(f"written to {write_results(args.results_name, out)}")


if __name__ == "__main__":
    main()
