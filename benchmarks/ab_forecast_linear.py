"""A/B of the linear forecaster's CPU time between two checkouts, interleaved (run by hand).

    python -m benchmarks.ab_forecast_linear BASE_DIR NEW_DIR [--panels usmacro_changes,fpp2_quarterly]
        [--origins 3] [--rounds 5] [--results-name NAME] [--items 1,4]

Each round runs, per checkout in turn (a fresh process each, alternating which goes first), the
benchmark's measured unit per (panel, origin): fit + ``finalize(combine="convex")`` + ``evaluate``
(as ``bench_forecast --finalize-variants`` times it), repeated ``--reps`` times in the process after
one warm-up fit. Reports per pair the median CPU seconds of each checkout and their ratio, and
``os.getloadavg()``; checks that both give the same MASE / wQL.

    python -m benchmarks.ab_forecast_linear BASE_DIR NEW_DIR --scale-fold 1000 [--worker-environ] [--rounds 3]

``--scale-fold N``: instead, the fold alone (``ForecastLinearState._update``, one BLAS thread, ``--reps`` times
in the process) of N series of the scale run's daily panel (``bench_forecast --scale``: 500 points, seed 9, one
partition of up to 1,000 series) into an empty state: per checkout its CPU, user and system seconds and minor page
faults (``resource.getrusage``) and a hash of the state's arrays (the same numbers: equal hashes).
``--worker-environ``: the child processes get the environment Dask's nanny gives its workers
(``MALLOC_TRIM_THRESHOLD_=65536``, one BLAS thread; ``bench_forecast.worker_environ``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# fcsmall: each row also has the medians of the unit's three parts (``*_fit_cpu``, ``*_finalize_cpu``,
# ``*_evaluate_cpu``); ``--items 1,4`` runs the panels' first 1 and 4 items as panels of their own too (``name[:1]``):
# the unit's cost that does not grow with the series. The item counts travel after the panels' names (``a,b;1,4``).
_CHILD = r"""
import json, sys, time
import daskstate
from benchmarks.bench_forecast import Q, origin_split, panels
from daskstate.algorithms.forecast.series import as_offset, default_prediction_length
spec, _, counts = sys.argv[1].partition(";")
names, origins, reps = spec.split(","), int(sys.argv[2]), int(sys.argv[3])
items = [int(n) for n in counts.split(",") if n]
out = {}
for name, (df, freq) in panels(names).items():
    H = default_prediction_length(as_offset(freq))
    ids = df["item_id"].unique()
    for n in [None, *items]:
        part = df if n is None else df[df["item_id"].isin(ids[:n])]
        label = name if n is None else f"{name}[:{n}]"
        for k in range(origins):
            train, full = origin_split(name, part, H, k)
            daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)  # warm-up
            cpu, parts = [], []
            for _ in range(reps):
                c0 = time.process_time()
                fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
                c1 = time.process_time()
                tuned = fc.finalize(combine="convex")
                c2 = time.process_time()
                overall, _ = tuned.evaluate(full, quantiles=Q)
                cpu.append(time.process_time() - c0)
                parts.append((c1 - c0, c2 - c1, time.process_time() - c2))
            out[f"{label}@{-k}"] = {"cpu": cpu, "parts": parts, "MASE": overall["MASE"], "wQL": overall["wQL"]}
print(json.dumps(out))
"""

_FOLD_CHILD = r"""
import hashlib, json, resource, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
import daskstate
from daskstate.algorithms.forecast.datasets import synthetic_panel
n, reps = int(sys.argv[1]), int(sys.argv[2])
panel = synthetic_panel(n, 500, freq="D", seed=9, series_per_partition=1000).partitions[0].compute()
fitted = daskstate.Forecaster(freq="D", prediction_length=14).fit(panel[panel["item_id"].isin(panel["item_id"].unique()[:50])])
batch = fitted.state_.read_batch(panel, None, where="input")[0]
runs = []
with threadpool_limits(1, user_api="blas"):
    for _ in range(reps):
        state = fitted.state_.empty_like()
        r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        state._update(batch, None, None)
        r1, c1 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        runs.append({"cpu": c1 - c0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                     "minflt": r1.ru_minflt - r0.ru_minflt})
digest = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(state.arrays().items())))
print(json.dumps({"runs": runs, "state_sha256": digest.hexdigest(), "series": len(batch.block.items)}))
"""


def run(checkout: str, names: str, origins: int, reps: int, child: str = _CHILD, environ: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(checkout).resolve()), **(environ or {}))
    args = [names, str(origins), str(reps)] if child is _CHILD else [names, str(reps)]
    done = subprocess.run([sys.executable, "-c", child, *args], cwd=checkout, env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fold_ab(args: argparse.Namespace) -> dict:
    """``--scale-fold``: the fold's CPU and page faults per checkout, fresh processes alternating by round."""
    from benchmarks.bench_forecast import worker_environ

    environ = worker_environ() if args.worker_environ else {}
    load = [os.getloadavg()]
    runs: dict[str, list] = {"base": [], "new": []}
    digests: dict[str, set] = {"base": set(), "new": set()}
    for r in range(args.rounds):
        for which in (("base", "new") if r % 2 == 0 else ("new", "base")):
            got = run(getattr(args, which), str(args.scale_fold), 0, args.reps, _FOLD_CHILD, environ)
            runs[which].extend(got["runs"])
            digests[which].add(got["state_sha256"])
            print(which, json.dumps(got), flush=True)
        load.append(os.getloadavg())
    summary = {which: {key: float(np.median([x[key] for x in rows])) for key in ("cpu", "user", "sys", "minflt")}
               for which, rows in runs.items()}
    summary["new_vs_base"] = {key: summary["new"][key] / summary["base"][key] for key in summary["base"]}
    summary["same_state"] = len(digests["base"] | digests["new"]) == 1
    print(json.dumps(summary))
    return {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "environ": environ, "loadavg": load,
            "runs": runs, "state_sha256": {k: sorted(v) for k, v in digests.items()}, "summary": summary}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--panels", default="usmacro_changes,fpp2_quarterly")
    ap.add_argument("--origins", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--items", default="", help="also each panel's first N items, e.g. 1,4 (the fixed cost)")
    ap.add_argument("--results-name", default=None)
    ap.add_argument("--scale-fold", type=int, default=0, help="the fold of this many series of the scale panel "
                    "(CPU, page faults), instead of the panels' fit + backtest")
    ap.add_argument("--worker-environ", action="store_true", help="with --scale-fold: Dask's workers' environment")
    args = ap.parse_args(argv)
    if args.scale_fold:
        result = fold_ab(args)
        if args.results_name:
            (Path(__file__).parent / "results" / f"{args.results_name}.json").write_text(json.dumps(result, indent=1))
        return result
    load = [os.getloadavg()]
    cpu: dict[str, dict[str, list]] = {"base": {}, "new": {}}
    parts: dict[str, dict[str, list]] = {"base": {}, "new": {}}
    metrics: dict[str, dict] = {}
    for r in range(args.rounds):
        for which in (("base", "new") if r % 2 == 0 else ("new", "base")):
            got = run(getattr(args, which), f"{args.panels};{args.items}", args.origins, args.reps)
            for pair, row in got.items():
                cpu[which].setdefault(pair, []).extend(row["cpu"])
                parts[which].setdefault(pair, []).extend(row.get("parts", []))
                metrics.setdefault(pair, {})[which] = (row["MASE"], row["wQL"])
        load.append(os.getloadavg())
    rows = []
    for pair in cpu["base"]:
        b, n = np.median(cpu["base"][pair]), np.median(cpu["new"][pair])
        rows.append({"pair": pair, "base_cpu_median": float(b), "new_cpu_median": float(n), "new_vs_base": float(n / b),
                     "base_mase_wql": metrics[pair]["base"], "new_mase_wql": metrics[pair]["new"],
                     "same_accuracy": bool(np.allclose(metrics[pair]["base"], metrics[pair]["new"], rtol=1e-9))})
        for which in ("base", "new"):
            if parts[which].get(pair):
                med = np.median(np.asarray(parts[which][pair]), axis=0)
                rows[-1].update({f"{which}_{part}_cpu": float(v) for part, v in zip(("fit", "finalize", "evaluate"), med,
                                                                                    strict=True)})
        print(json.dumps(rows[-1]))
    result = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "loadavg": load, "rows": rows}
    if args.results_name:
        path = Path(__file__).parent / "results" / f"{args.results_name}.json"
        path.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
