"""LinearLearner vs scikit-learn (in memory) and dask-ml, side by side on Parquet data.

The data: ``make_dataset`` blobs with ``rows + rows/10`` rows in ``files + files/10`` Parquet
files; the first ``files`` files (``rows`` rows) are the training set, the rest the test set
on which every accuracy / R^2 is measured. Every fit runs in a fresh subprocess (peak RSS is
that fit's own); LocalCluster fits start after a warm-up (worker imports, one read pass).
Times are the fit alone: for scikit-learn the data is already in memory (its load time is
reported apart); ours read Parquet on every pass.

dask-ml's LogisticRegression is far too slow for the full data on 2 cores, so it is timed
on a documented fraction (``--daskml-files`` files, one chunk each, persisted in memory) and
its full-size time is extrapolated linearly in rows; both numbers are reported. The
extrapolation is a lower bound: its default ADMM solver needs more iterations as the number
of chunks grows, so its time grows faster than the rows.

Before each measured run the script waits (``--max-load``, ``--max-wait``) for the machine's
1-minute load average to fall, and records the load each run started at. The ``--easy`` jobs
also report their own CPU time (``time.process_time``: every thread of the measuring process),
and its summary gives CPU ratios beside the wall-time ones: on a shared, loaded machine wall
time measures the share of the CPU a job got as much as the work it did.

Usage::

    python -m benchmarks.bench_linear --rows 2000000 --files 20 --data /tmp/daskstate-bench
    python -m benchmarks.bench_linear --easy --repeat 3     # the easy binary problem, interleaved

Writes benchmarks/results/linear.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import glob
import os
import time

import numpy as np

from benchmarks.common import (
    make_dataset,
    markdown_table,
    measure,
    read_pass_floor,
    write_results,
)

FEATURES = [f"f{j}" for j in range(16)]
MAX_LOAD, MAX_WAIT = 1.5, 0.0  # set from --max-load / --max-wait


def _load(files: list[str], columns: list[str]):
    import pandas as pd

    return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)


def floor_job(files: list[str]) -> dict:
    import dask

    import daskstate

    with dask.config.set(scheduler="threads"):
        t0, c0 = time.perf_counter(), time.process_time()
        state = read_pass_floor(daskstate.read_parquet(files), FEATURES + ["label"])
        fit_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return {"rows": state.n_rows, "fit_seconds": fit_seconds, "cpu_seconds": cpu_seconds}


def ours_job(files: list[str], test_files: list[str], predictor: str = "binary_classifier",
             workers: int = 0, **params) -> dict:
    """Fit LinearLearner on Parquet (threads, or a LocalCluster of ``workers`` processes); score on test."""
    import contextlib

    import dask

    import daskstate

    target = "y" if predictor == "regressor" else "label"
    test = _load(test_files, FEATURES + [target])
    with contextlib.ExitStack() as stack:
        if workers:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, host="127.0.0.1"))
            client = stack.enter_context(Client(cluster))
            # warm-up outside the timing: workers import daskstate, pyarrow, ... on their first tasks
            client.run(lambda: __import__("daskstate.algorithms.linear"))
            read_pass_floor(daskstate.read_parquet(files), FEATURES + [target])
        else:
            stack.enter_context(dask.config.set(scheduler="threads"))
        ddf = daskstate.read_parquet(files)
        est = daskstate.LinearLearner(predictor, features=FEATURES, target=target, **params)
        t0, c0 = time.perf_counter(), time.process_time()
        est.fit(ddf)
        fit_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    out = {"fit_seconds": fit_seconds, "cpu_seconds": cpu_seconds, "score": est.score(test[FEATURES], test[target]),
           "epochs_run": est.epochs_run_, "rounds_run": getattr(est, "n_rounds_", None),
           "num_models": len(est.models_), "rows": est.n_samples_seen_, "selected_model": est.model_}
    if params.get("solver") == "exact":
        out["coef"] = est.coef_.tolist()
        out["intercept"] = est.intercept_
    return out


def sklearn_job(files: list[str], test_files: list[str], model: str = "logistic") -> dict:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    target = "y" if model in ("ridge", "ols") else "label"
    t0 = time.perf_counter()
    train = _load(files, FEATURES + [target])
    X, y = train[FEATURES].to_numpy(), train[target].to_numpy()
    load_seconds = time.perf_counter() - t0
    test = _load(test_files, FEATURES + [target])
    est = {"logistic": LogisticRegression(), "ridge": Ridge(), "ols": LinearRegression()}[model]
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(X, y)
    fit_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    out = {"fit_seconds": fit_seconds, "cpu_seconds": cpu_seconds, "load_seconds": load_seconds,
           "score": est.score(test[FEATURES].to_numpy(), test[target].to_numpy()), "rows": len(y)}
    if model == "logistic":
        out["n_iter"] = int(est.n_iter_[0])
    else:
        out["coef"] = est.coef_.tolist()
        out["intercept"] = float(est.intercept_)
    return out


def daskml_job(files: list[str], test_files: list[str]) -> dict:
    import dask
    from dask_ml.linear_model import LogisticRegression

    import daskstate

    test = _load(test_files, FEATURES + ["label"])
    with dask.config.set(scheduler="threads"):
        ddf = daskstate.read_parquet(files)
        X = ddf[FEATURES].to_dask_array(lengths=True)
        y = ddf["label"].to_dask_array(lengths=True)
        X, y = dask.persist(X, y)  # in memory: the most favourable setting for dask-ml
        t0 = time.perf_counter()
        est = LogisticRegression().fit(X, y)
        fit_seconds = time.perf_counter() - t0
    acc = float((est.predict(test[FEATURES].to_numpy()) == test["label"].to_numpy()).mean())
    return {"fit_seconds": fit_seconds, "score": acc, "rows": int(X.shape[0])}


def _run(name: str, func, repeat: int = 1, **kwargs) -> dict:
    row = measure({name: (func, kwargs)}, repeat=repeat, max_load=MAX_LOAD, max_wait=MAX_WAIT, timeout=7200)[name]
    row["fit_seconds"] = row["seconds"]
    row["load_before"] = max(row["loads"])
    return row


def easy_suite(args: argparse.Namespace) -> None:
    """The easy binary problem (nearly separable, ``kind="separable"``) and the blobs data, interleaved.

    Per dataset, one interleaved run of: the read-pass floor, scikit-learn
    ``LogisticRegression`` (lbfgs, in memory), the default 32-model LinearLearner,
    and 1 vs 32 packed models at the same fixed epochs (no early stopping).
    """
    results = {}
    for kind in ("separable", "blobs"):
        test_n = max(1, args.files // 10)
        per_file = args.rows // args.files
        name = f"linear-{args.rows}-{args.files}" if kind == "blobs" else f"linear-{kind}-{args.rows}-{args.files}"
        folder = os.path.join(args.data, name)  # blobs: the full suite's data
        ds = make_dataset(folder, per_file * (args.files + test_n), 16, args.files + test_n, kind=kind,
                          n_classes=2, seed=0)
        all_files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
        common = {"files": all_files[: args.files], "test_files": all_files[args.files :]}
        fixed = {"epochs": args.fixed_epochs, "early_stopping_patience": None}
        print(f"{kind}: {per_file * args.files:,} training rows; load {os.getloadavg()}", flush=True)
        rows = measure({
            "read-pass floor": (floor_job, {"files": common["files"]}),
            "sklearn LogisticRegression (lbfgs, in memory)": (sklearn_job, {"model": "logistic", **common}),
            "LinearLearner binary, 32 models (defaults)": (ours_job, common),
            f"LinearLearner binary, 1 model, {args.fixed_epochs} epochs": (ours_job, {"num_models": 1, **fixed,
                                                                                      **common}),
            f"LinearLearner binary, 32 models, {args.fixed_epochs} epochs": (ours_job, {**fixed, **common}),
        }, repeat=args.repeat, floor="read-pass floor", max_load=MAX_LOAD, max_wait=MAX_WAIT, timeout=7200)
        floor_row, sk, ours, one, packed = rows.values()

        def median_ratio(a: dict, b: dict, key: str = "all_seconds") -> float:
            """Median over the interleaved rounds of a's time over b's (runs seconds apart)."""
            return float(np.median([x / y for x, y in zip(a[key], b[key], strict=True)]))

        summary = {
            "accuracy_gap_pp": 100 * (sk["score"] - ours["score"]),
            "epochs_run": ours["epochs_run"],
            "rounds_run": ours["rounds_run"],
            "sklearn_over_ours_median": median_ratio(sk, ours),
            "packed_32_over_1_same_epochs_median": median_ratio(packed, one),
            "cpu": {
                "sklearn_over_ours_median": median_ratio(sk, ours, "all_cpu_seconds"),
                "packed_32_over_1_same_epochs_median": median_ratio(packed, one, "all_cpu_seconds"),
                "ours_over_floor_median": median_ratio(ours, floor_row, "all_cpu_seconds"),
                "sklearn_over_floor_median": median_ratio(sk, floor_row, "all_cpu_seconds"),
            },
        }
        summary["targets"] = {
            "faster than sklearn LogisticRegression": summary["sklearn_over_ours_median"] > 1,
            "accuracy within 0.5 pp of sklearn": summary["accuracy_gap_pp"] <= 0.5,
            "32 packed models <= 2x the time of 1": summary["packed_32_over_1_same_epochs_median"] <= 2,
        }
        results[kind] = {"data": ds, "runs": list(rows.values()), "summary": summary}
        for row in rows.values():
            row["cpu_seconds"] = min(row.get("all_cpu_seconds", [np.nan]))
        print(markdown_table(list(rows.values()), ["fit", "seconds", "cpu_seconds", "ratio_to_floor", "score",
                                                   "epochs_run", "rounds_run", "peak_rss_mb"]))
        print(summary, flush=True)
    path = write_results(args.results_name or "linear_easy", {"results": results, "args": vars(args),
                                                              "load_average_after": os.getloadavg()})
    print(f"written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="training rows")
    ap.add_argument("--files", type=int, default=20, help="training Parquet files")
    ap.add_argument("--repeat", type=int, default=2, help="runs per fit (best time kept)")
    ap.add_argument("--daskml-files", type=int, nargs="+", default=[1, 2],
                    help="training files dask-ml is timed on (a fraction; extrapolated to all)")
    ap.add_argument("--fixed-epochs", type=int, default=5, help="epochs of the packing-cost comparison")
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="wait for the 1-minute load average to fall below this before each run")
    ap.add_argument("--max-wait", type=float, default=900, help="longest wait (s) for a quiet machine")
    ap.add_argument("--easy", action="store_true",
                    help="only the easy binary problem and the blobs data: ours vs scikit-learn, 1 vs 32 models, "
                         "interleaved (writes results/linear_easy.json)")
    ap.add_argument("--results-name", default=None, help="writes benchmarks/results/<name>.json")
    args = ap.parse_args()
    global MAX_LOAD, MAX_WAIT
    MAX_LOAD, MAX_WAIT = args.max_load, args.max_wait
    if args.easy:
        return easy_suite(args)

    test_files_n = max(1, args.files // 10)
    per_file = args.rows // args.files
    folder = os.path.join(args.data, f"linear-{args.rows}-{args.files}")
    ds = make_dataset(folder, per_file * (args.files + test_files_n), 16, args.files + test_files_n,
                      n_classes=2, seed=0)
    all_files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    files, test_files = all_files[: args.files], all_files[args.files :]
    rows = per_file * args.files
    load_before = os.getloadavg()
    print(f"data: {rows:,} training rows in {len(files)} files, {per_file * len(test_files):,} test rows; "
          f"load average {load_before}", flush=True)

    floor = _run("read-pass floor", floor_job, args.repeat, files=files)
    common = {"files": files, "test_files": test_files}
    fixed = {"epochs": args.fixed_epochs, "early_stopping_patience": None}
    clf = [
        _run("sklearn LogisticRegression (lbfgs, in memory)", sklearn_job, args.repeat, model="logistic", **common),
        _run("LinearLearner binary, 32 models (defaults)", ours_job, args.repeat, **common),
        _run("LinearLearner binary, 1 model", ours_job, args.repeat, num_models=1, **common),
        _run(f"LinearLearner binary, 32 models, {args.fixed_epochs} epochs", ours_job, args.repeat, **fixed,
             **common),
        _run(f"LinearLearner binary, 1 model, {args.fixed_epochs} epochs", ours_job, args.repeat, num_models=1,
             **fixed, **common),
        _run("LinearLearner binary, 32 models, LocalCluster 1 worker", ours_job, 1, workers=1, **common),
        _run("LinearLearner binary, 32 models, LocalCluster 2 workers", ours_job, 1, workers=2, **common),
    ]
    daskml = [
        _run(f"dask-ml LogisticRegression on {n} of {args.files} files (persisted)", daskml_job, 1,
             files=files[:n], test_files=test_files)
        for n in args.daskml_files
    ]
    for r in daskml:
        r["extrapolated_full_seconds"] = r["fit_seconds"] * rows / r["rows"]
    reg = [
        _run("sklearn Ridge (in memory)", sklearn_job, args.repeat, model="ridge", **common),
        _run("sklearn LinearRegression (in memory)", sklearn_job, 1, model="ols", **common),
        _run("LinearLearner regressor, 32 models (defaults)", ours_job, args.repeat, predictor="regressor",
             **common),
        _run("LinearLearner regressor, solver='exact'", ours_job, args.repeat, predictor="regressor",
             solver="exact", **common),
    ]
    for r in [floor, *clf, *daskml, *reg]:
        r["rows"] = r.get("rows", rows)
        r["ratio_to_floor"] = r["fit_seconds"] / floor["fit_seconds"]

    sk, ours = clf[0], clf[1]
    one_fixed, packed_fixed = clf[4], clf[3]
    daskml_full = max(r["extrapolated_full_seconds"] for r in daskml)
    ridge, ols, sgd_reg, exact = reg

    summary = {
        "binary_accuracy_gap_pp": 100 * (sk["score"] - ours["score"]),
        "speedup_vs_sklearn_logistic": sk["fit_seconds"] / ours["fit_seconds"],
        "speedup_vs_sklearn_logistic_incl_load": (sk["fit_seconds"] + sk["load_seconds"]) / ours["fit_seconds"],
        "speedup_vs_daskml_extrapolated": daskml_full / ours["fit_seconds"],
        "speedup_vs_daskml_measured_fraction": [
            {"rows": r["rows"], "daskml_seconds": r["fit_seconds"],
             "ratio_to_our_full_fit": r["fit_seconds"] / ours["fit_seconds"]} for r in daskml],
        "packed_32_over_1_fixed_epochs": packed_fixed["fit_seconds"] / one_fixed["fit_seconds"],
        "packed_32_over_1_defaults": ours["fit_seconds"] / clf[2]["fit_seconds"],
        "cluster_1_worker_seconds": clf[5]["fit_seconds"], "cluster_2_workers_seconds": clf[6]["fit_seconds"],
        "cluster_accuracy_gap_pp": [100 * (sk["score"] - clf[5]["score"]), 100 * (sk["score"] - clf[6]["score"])],
        "regression_r2_gap_vs_ridge": ridge["score"] - sgd_reg["score"],
        "exact_max_coef_diff_vs_ols": float(np.max(np.abs(np.subtract(exact["coef"], ols["coef"])))),
        "exact_intercept_diff_vs_ols": abs(exact["intercept"] - ols["intercept"]),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }
    for r in reg:
        r.pop("coef", None)
    targets = {
        "accuracy within 0.5 pp of sklearn": summary["binary_accuracy_gap_pp"] <= 0.5,
        "faster than sklearn LogisticRegression": summary["speedup_vs_sklearn_logistic"] > 1,
        ">= 20x faster than dask-ml": summary["speedup_vs_daskml_extrapolated"] >= 20,
        "32 packed models <= 2x the time of 1": summary["packed_32_over_1_fixed_epochs"] <= 2,
        "same accuracy on 2 worker processes": abs(clf[6]["score"] - ours["score"]) <= 0.001,
        "regression R^2 within 0.005 of Ridge": summary["regression_r2_gap_vs_ridge"] <= 0.005,
        "exact solver matches LinearRegression to 1e-8": summary["exact_max_coef_diff_vs_ols"] <= 1e-8,
    }
    path = write_results(args.results_name or "linear", {"data": ds, "classification": clf, "daskml": daskml, "regression": reg,
                                    "floor": floor, "summary": summary, "targets": targets, "args": vars(args)})
    cols = ["fit", "rows", "fit_seconds", "ratio_to_floor", "score", "epochs_run", "peak_rss_mb", "load_before"]
    print(markdown_table([floor, *clf], cols))
    print()
    print(markdown_table(daskml, ["fit", "rows", "fit_seconds", "extrapolated_full_seconds", "score", "peak_rss_mb",
                                  "load_before"]))
    print()
    print(markdown_table(reg, cols))
    print()
    for k, v in summary.items():
        print(f"{k}: {v}")
    for k, v in targets.items():
        print(f"[{'met' if v else 'MISSED'}] {k}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
