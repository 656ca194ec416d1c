"""deepar (or mlp) fit and predict CPU, two versions of daskstate side by side, under chosen process environments.

Usage::

    python -m benchmarks.ab_deepar --base /path/to/old/checkout --series 2000 --repeat 3 \\
        --environs default,workers,MALLOC_TRIM_THRESHOLD_,OPENBLAS_NUM_THREADS

Each round runs, each in a fresh process and in an order that alternates between rounds, one
``Forecaster(model=<--model>, epochs=<--epochs>)`` fit and predict on ``bench_forecast``'s lazily generated
daily panel (``--series`` x 500 points, 1,000 series per partition, threaded scheduler, as its
scale run) for every (environment, checkout) pair. Environments: ``default`` (this one),
``workers`` (what Dask's nanny gives its workers, ``distributed.nanny.pre-spawn-environ``), or
the name of one of those variables alone. Reports per pair the median over rounds of the fit's
and the predict's CPU and wall seconds and the minor page faults of each; with the 1-minute load
average before every run. Writes ``benchmarks/results/<results-name>.json``.
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
import json, os, resource, time
import dask
import daskstate
from benchmarks.bench_forecast import synthetic_panel

def mark():
    return time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt

ddf = synthetic_panel({series}, 500, freq="D", seed=9, series_per_partition=1000)
with dask.config.set(scheduler="threads"):
    w0, c0, f0 = mark()
    fc = daskstate.Forecaster(freq="D", prediction_length=14, model="{model}", epochs={epochs}).fit(ddf)
    w1, c1, f1 = mark()
    out = fc.predict(ddf).compute()
    w2, c2, f2 = mark()
print("RESULT" + json.dumps({{"fit_seconds": w1 - w0, "fit_cpu_seconds": c1 - c0, "fit_minflt": f1 - f0,
                             "predict_seconds": w2 - w1, "predict_cpu_seconds": c2 - c1, "predict_minflt": f2 - f1,
                             "forecast_mean": float(out["mean"].mean())}}))
"""


def environ(name: str) -> dict[str, str]:
    """``default``: this process's environment; ``workers``: plus Dask's nanny's pre-spawn variables;
    a variable's name: plus that one of them alone."""
    from benchmarks.bench_forecast import worker_environ

    env = dict(os.environ)
    nanny = worker_environ()
    if name == "workers":
        env.update(nanny)
    elif name != "default":
        if name not in nanny:
            raise SystemExit(f"--environs: {name!r} is none of default, workers, {', '.join(nanny)}")
        env[name] = nanny[name]
    return env


def run_job(tree: str, series: int, env: dict[str, str], model: str = "deepar", epochs: int = 1) -> dict:
    """One fit and predict with ``tree``'s daskstate in a fresh process with environment ``env``."""
    out = subprocess.run([sys.executable, "-c", _JOB.format(series=series, model=model, epochs=epochs)], cwd=tree,
                         env={**env, "PYTHONPATH": tree}, capture_output=True, text=True, check=False)
    line = [s for s in out.stdout.splitlines() if s.startswith("RESULT")]
    if not line:
        return {"ok": False, "error": out.stderr[-2000:]}
    return {"ok": True, **json.loads(line[-1][len("RESULT"):])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a checkout of the daskstate version to compare against")
    ap.add_argument("--new", default=None, help="the checkout to measure (default: this one)")
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default="deepar", choices=("deepar", "mlp"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--environs", default="default,workers", help="comma-separated: default, workers, or one "
                    "variable of distributed.nanny.pre-spawn-environ alone")
    ap.add_argument("--results-name", default="deepar_ab")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"base": os.path.abspath(args.base), "new": os.path.abspath(args.new or here)}
    pairs = [(e, t) for e in args.environs.split(",") for t in trees]
    runs: dict[str, list[dict]] = {f"{e}/{t}": [] for e, t in pairs}
    load_before = os.getloadavg()
    for r in range(args.repeat):
        for e, t in pairs if r % 2 == 0 else pairs[::-1]:
            load = os.getloadavg()[0]
            res = run_job(trees[t], args.series, environ(e), args.model, args.epochs)
            res["loadavg"] = load
            runs[f"{e}/{t}"].append(res)
            print(r, e, t, res, flush=True)
    keys = ("fit_cpu_seconds", "fit_seconds", "fit_minflt", "predict_cpu_seconds", "predict_seconds", "predict_minflt")
    summary = {}
    for name, rs in runs.items():
        ok = [x for x in rs if x.get("ok")]
        summary[name] = {k: float(np.median([x[k] for x in ok])) for k in keys} if ok else {"ok": False}
    for e in args.environs.split(","):
        b, n = summary[f"{e}/base"], summary[f"{e}/new"]
        if "fit_cpu_seconds" in b and "fit_cpu_seconds" in n:
            summary[f"{e}/new_vs_base"] = {k: n[k] / b[k] for k in ("fit_cpu_seconds", "predict_cpu_seconds")}
    for name, s in summary.items():
        print(name, {k: round(v, 3) for k, v in s.items()})
    path = write_results(args.results_name, {"series": args.series, "repeat": args.repeat, "model": args.model,
                                             "epochs": args.epochs, "trees": trees,
                                             "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                                             "summary": summary, "runs": runs})
    print("wrote", path)


if __name__ == "__main__":
    main()
