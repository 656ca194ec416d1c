"""Where the linear forecaster's fit spends its CPU, and whether another checkout computes the same numbers (by hand).

    python -m benchmarks.prof_linear_sums [PANELS] [--series 2000] [--reps 5] [--compare OTHER_CHECKOUT]

Per panel (the benchmark's origin 0; ``synthetic_daily`` with ``--series`` series): the CPU seconds of one fold of
the training panel into an empty state (its ``read_batch`` excluded), with the spread sums as configured, with the
per-step term off (``SPREAD_STEP``) and with both spread sums off (``SPREAD_Z``), interleaved ``--reps`` times; and
within the default fold the CPU of the calls of ``_add_products`` by the sums they add to (main, holdout, the
per-window spread's ``spread_z``, the per-step term's ``spread_step``; since fcblock one call adds several), and the
fold's minor page faults (run it with ``MALLOC_TRIM_THRESHOLD_=65536`` for the environment of Dask's workers). One BLAS thread, as the fit runs.

``--sums-against OTHER``: the CPU of this checkout's ``_add_products`` and of ``OTHER``'s (a checkout from before
fcblock, one call per set of sums) on the same recorded batches of a fit, interleaved, medians of ``--reps``.

``--compare OTHER``: the same fit in a fresh process of the checkout ``OTHER`` (its PYTHONPATH) and here; prints the
largest difference of every state array (relative to the largest magnitude of its step), of the finalized model's
``coef_``, ``sigma_``, ``spread_`` and of the backtest's mean, quantiles, MASE and wQL.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _panel(name: str, series: int):
    from benchmarks.bench_forecast import origin_split, panels
    from daskstate.algorithms.forecast.series import as_offset, default_prediction_length

    (df, freq), = panels([name], n_synthetic=series).values()
    H = default_prediction_length(as_offset(freq))
    train, full = origin_split(name, df, H, 0)
    return train, full, freq, H


def profile(name: str, series: int, reps: int) -> dict:
    """The CPU of a fold with the spread sums on / per-step off / both off, and of each kind of ``_add_products``."""
    from threadpoolctl import threadpool_limits

    import daskstate
    from daskstate.algorithms.forecast import estimator
    from daskstate.algorithms.forecast import linear as lin

    train, _, freq, H = _panel(name, series)
    configs = {"on": (True, True), "step_off": (True, False), "spread_off": (False, False)}
    states, batches = {}, {}
    for key, (z, step) in configs.items():
        estimator.SPREAD_Z, estimator.SPREAD_STEP = z, step
        fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
        states[key] = fc.state_.empty_like()
        batches[key] = states[key].read_batch(train, None, where="input")[0]
    estimator.SPREAD_Z, estimator.SPREAD_STEP = True, True
    cpu: dict[str, list[float]] = {key: [] for key in configs}
    faults: dict[str, list[int]] = {key: [] for key in configs}
    parts: dict[str, list[float]] = {}
    original = lin._add_products
    current: list = [None]

    def timed(sums, *args, **kwargs):
        s = current[0]
        names = {id(s.gram): "main", id(s.holdout_gram): "holdout", id(s.spread_gram): "spread_z",
                 id(s.step_gram): "spread_step"}
        if isinstance(sums, list):  # since fcblock: one call per batch adds several sets of sums
            kind = "+".join(names[id(t[0])] for targets, *_ in sums for t in targets)
        else:
            kind = names.get(id(sums[0]), "other")
        c0 = time.process_time()
        original(sums, *args, **kwargs)
        parts.setdefault(kind, [0.0] * (reps + 1))[-1] += time.process_time() - c0

    with threadpool_limits(1, user_api="blas"):
        for r in range(reps + 1):
            for key in (configs if r % 2 == 0 else list(configs)[::-1]):
                state = states[key].empty_like()
                if key == "on":
                    current[0] = state
                    lin._add_products = timed
                    for v in parts.values():
                        v.append(0.0)
                f0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
                state._update(batches[key], None, None)
                if r:
                    cpu[key].append(time.process_time() - c0)
                    faults[key].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
                lin._add_products = original
    shape = {"H": H, "lags": len(states["on"].lags), "p": states["on"].n_design, "season": states["on"].season,
             "long_season": states["on"].long_season}
    out = {"panel": name, "series": series if name.startswith("synthetic") else None, **shape,
           "fold_cpu_median": {k: float(np.median(v)) for k, v in cpu.items()},
           "fold_minor_faults_median": {k: float(np.median(v)) for k, v in faults.items()},
           "add_products_cpu_median": {k: float(np.median(v[-reps:])) for k, v in parts.items()},
           "loadavg": os.getloadavg()}
    out["on_vs_step_off"] = out["fold_cpu_median"]["on"] / out["fold_cpu_median"]["step_off"]
    return out


def sums_against(name: str, series: int, reps: int, other: str) -> dict:
    """Median CPU of ``_add_products`` here and in ``other`` (its function read from its source: one call per set of
    sums, ``(sums, lagged, extra, target, weight, mask)``) on the recorded batches of one fit of ``name``."""
    import ast

    from threadpoolctl import threadpool_limits

    import daskstate
    from daskstate.algorithms.forecast import linear as lin

    source = (Path(other) / "daskstate" / "algorithms" / "forecast" / "linear.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "_add_products")
    namespace: dict = {"np": np}
    exec(compile(ast.Module([node], []), "other", "exec"), namespace)
    theirs, ours = namespace["_add_products"], lin._add_products
    train, _, freq, H = _panel(name, series)
    calls: list = []

    def record(sets, *args):
        calls.append((sets, *args[:4]))
        return ours(sets, *args)

    lin._add_products = record
    try:
        fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    finally:
        lin._add_products = ours
    p = fc.state_.n_design

    def fresh():
        return np.zeros((H, p, p)), np.zeros((H, p)), np.zeros(H), np.zeros(H)

    def run_ours():
        for sets, *args in calls:
            ours([([fresh() for _ in targets], weight, column) for targets, weight, column in sets], *args)

    def run_theirs():
        for sets, lagged, extra, target, mask in calls:
            for targets, weight, column in sets:
                for _ in targets:
                    theirs(fresh(), lagged, extra, target, weight if column is None else weight[:, column], mask)

    cpu: dict[str, list[float]] = {"ours": [], "theirs": []}
    with threadpool_limits(1, user_api="blas"):
        for r in range(reps):
            for key, run in ((("ours", run_ours), ("theirs", run_theirs)) if r % 2 else
                             (("theirs", run_theirs), ("ours", run_ours))):
                c0 = time.process_time()
                run()
                cpu[key].append(time.process_time() - c0)
    med = {k: float(np.median(v)) for k, v in cpu.items()}
    return {"panel": name, "other": other, "add_products_cpu_median": med, "ours_vs_theirs": med["ours"] / med["theirs"],
            "loadavg": os.getloadavg()}


def numbers(name: str, series: int, path: str) -> None:
    """Fit, finalize and backtest ``name``; save every number to ``path`` (npz)."""
    import daskstate
    from benchmarks.bench_forecast import Q

    train, full, freq, H = _panel(name, series)
    fc = daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    out = {f"state.{k}": v for k, v in fc.state_.arrays().items()}
    model = fc.finalize(combine="convex")
    for attr in ("coef_", "sigma_", "spread_", "calibration_"):
        if getattr(model, attr, None) is not None:
            out[f"model.{attr}"] = np.asarray(getattr(model, attr))
    overall, _ = model.evaluate(full, quantiles=Q)
    out["eval.MASE"], out["eval.wQL"] = np.array(overall["MASE"]), np.array(overall["wQL"])
    pred = model.predict(train, quantiles=Q)
    for col in pred.columns:
        if col == "mean" or col.startswith("q"):
            out[f"predict.{col}"] = pred[col].to_numpy(np.float64)
    np.savez(path, **out)


def compare(name: str, series: int, other: str) -> dict:
    """The largest relative difference of every number between this checkout and ``other``."""
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for checkout in (other, str(here)):
            path = os.path.join(tmp, f"{len(files)}.npz")
            env = dict(os.environ, PYTHONPATH=str(Path(checkout).resolve()))
            code = f"from benchmarks.prof_linear_sums import numbers; numbers({name!r}, {series}, {path!r})"
            if not (Path(checkout) / "benchmarks" / "prof_linear_sums.py").exists():
                code = (f"import sys; sys.path.insert(0, {str(here)!r} + '/benchmarks'); import prof_linear_sums as m; "
                        f"m.numbers({name!r}, {series}, {path!r})")
            subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, check=True)
            files.append(dict(np.load(path)))
    base, new = files
    diffs = {}
    for key in sorted(set(base) | set(new)):
        if key not in base or key not in new or base[key].shape != new[key].shape:
            diffs[key] = "missing or reshaped"
            continue
        a, b = base[key], new[key]
        if key.startswith("state.") and a.ndim >= 2:  # per step, relative to the step's largest magnitude
            scale = np.abs(a).reshape(len(a), -1).max(axis=1).reshape((-1,) + (1,) * (a.ndim - 1))
        else:
            scale = np.abs(a).max() if a.size else 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(a == b, 0.0, np.abs(a - b) / np.maximum(scale, 1e-300))
        diffs[key] = float(np.nanmax(rel)) if rel.size else 0.0
    worst = max((v for v in diffs.values() if isinstance(v, float)), default=0.0)
    return {"panel": name, "other": other, "largest_relative_difference": worst, "per_array": diffs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("panels", nargs="?", default="usmacro_changes,fpp2_monthly,elecdemand,synthetic_daily")
    ap.add_argument("--series", type=int, default=2000, help="series of synthetic_daily / synthetic_monthly")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compare", default=None, help="another checkout: compare every number instead of timing")
    ap.add_argument("--sums-against", default=None, help="a checkout from before fcblock: time the two _add_products")
    ap.add_argument("--results-name", default=None)
    args = ap.parse_args(argv)
    rows = []
    for name in args.panels.split(","):
        if args.compare:
            row = compare(name, args.series, args.compare)
        elif args.sums_against:
            row = sums_against(name, args.series, args.reps, args.sums_against)
        else:
            row = profile(name, args.series, args.reps)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.results_name:
        path = Path(__file__).parent / "results" / f"{args.results_name}.json"
        path.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "rows": rows},
                                   indent=1))


if __name__ == "__main__":
    main()
