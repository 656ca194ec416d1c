"""Spark MLlib on the same Parquet data as the other benchmarks: KMeans, PCA, logistic and linear regression.

Usage::

    python -m benchmarks.bench_spark --rows 2000000 --files 20 --data /tmp/daskstate-bench

Needs ``pyspark`` and a Java runtime (``java`` on the PATH or ``JAVA_HOME``); without
them it writes ``results/spark.json`` with ``skipped`` and the reason, and exits 0.

Each fit runs in its own process with its own local Spark (``local[N]``, N = the
machine's cores, the same two cores daskstate uses): the JVM is started and has
read the data once (a ``count``) before the clock starts, so the time is the fit
alone, from Parquet, as Spark's documentation shows it (``VectorAssembler`` then
``Estimator.fit``; Spark caches the iterative algorithms' input itself). Peak RSS
is the high-water mark of the Python driver plus the JVM (``VmHWM`` of the process
tree). Quality is computed the way the matching daskstate benchmark computes it:

- KMeans (k = 10, 100; ``initMode="k-means||"``, Spark's defaults otherwise): the
  exact SSE of Spark's centres on every row, next to the SSE of scikit-learn's
  ``KMeans(n_init=10)`` from ``results/kmeans.json`` when that ran on this dataset,
  and of daskstate's one-pass KMeans fitted in this run;
- PCA (10 components; 16 and 512 features): the largest relative difference of the
  explained variances from daskstate's exact mode (which matches scikit-learn's
  exact PCA to ~1e-14);
- LogisticRegression / LinearRegression (no regularisation, Spark's defaults): accuracy
  and R^2 on the held-out files of ``bench_linear``'s dataset.

Writes ``benchmarks/results/spark.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    make_dataset,
    markdown_table,
    parquet_files,
    run_measured,
    write_results,
)

FEATURES = [f"f{j}" for j in range(16)]
N_COMPONENTS = 10


def spark_missing() -> str | None:
    """Why Spark cannot run here (``None`` when it can)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install pyspark)"
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else None
    if not (java and os.path.exists(java)) and not shutil.which("java"):
        return "no Java runtime (java not on PATH, JAVA_HOME not set)"
    return None


def tree_peak_rss_mb() -> float:
    """``VmHWM`` of this process plus all its descendants (the JVM Spark started), in MiB."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    total = 0.0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), 0) / 1024
        except OSError:
            continue
    return total


def _session():
    from pyspark.sql import SparkSession

    cores = os.cpu_count() or 2
    return (SparkSession.builder.master(f"local[{cores}]").appName("daskstate-bench")
            .config("spark.driver.memory", "6g").config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", str(2 * cores)).getOrCreate())


def _assembled(spark, paths: list[str], columns: list[str], extra: tuple[str, ...] = ()):
    from pyspark.ml.feature import VectorAssembler

    df = spark.read.parquet(*paths).select(*columns, *extra)
    return VectorAssembler(inputCols=columns, outputCol="features").transform(df).select("features", *extra)


def spark_job(task: str, paths: list[str], columns: list[str], test_paths: list[str] | None = None,
              **params: Any) -> dict:
    """One Spark fit: start Spark, read the data once, then time ``fit`` alone."""
    spark = _session()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        extra = ("label", "y") if task in ("logistic", "linear") else ()
        df = _assembled(spark, paths, columns, extra)
        rows = df.count()  # JVM, reader and planner warm before the clock starts
        t0 = time.perf_counter()
        if task == "kmeans":
            from pyspark.ml.clustering import KMeans

            model = KMeans(k=params["k"], seed=0, initMode="k-means||").fit(df)
            seconds = time.perf_counter() - t0
            out = {"centers": np.array([np.asarray(c) for c in model.clusterCenters()]),
                   "n_iter": int(model.summary.numIter)}
        elif task == "pca":
            from pyspark.ml.feature import PCA

            model = PCA(k=N_COMPONENTS, inputCol="features", outputCol="pca").fit(df)
            seconds = time.perf_counter() - t0
            out = {"explained_variance_ratio": np.asarray(model.explainedVariance.toArray())}
        elif task == "logistic":
            from pyspark.ml.classification import LogisticRegression

            model = LogisticRegression(labelCol="label").fit(df)
            seconds = time.perf_counter() - t0
            test = _assembled(spark, test_paths, columns, ("label",))
            pred = model.transform(test).select("label", "prediction").toPandas()
            out = {"score": float((pred["label"] == pred["prediction"]).mean()),
                   "n_iter": int(model.summary.totalIterations)}
        elif task == "linear":
            from pyspark.ml.regression import LinearRegression

            model = LinearRegression(labelCol="y").fit(df)
            seconds = time.perf_counter() - t0
            test = _assembled(spark, test_paths, columns, ("y",))
            out = {"score": float(model.evaluate(test).r2)}
        else:
            raise ValueError(task)
        out.update(fit_seconds=seconds, rows=rows, tree_peak_rss_mb=tree_peak_rss_mb())
        return out
    finally:
        spark.stop()


def daskstate_reference(task: str, folder: str, columns: list[str], **params: Any) -> dict:
    import dask

    import daskstate

    with dask.config.set(scheduler="threads"):
        if task == "kmeans":
            km = daskstate.KMeans(params["k"], random_state=0, features=columns).fit(daskstate.read_parquet(folder))
            return {"centers": km.cluster_centers_}
        pca = daskstate.PCA(n_components=N_COMPONENTS, features=columns).fit(daskstate.read_parquet(folder))
        ev, ratio = pca.explained_variance_, pca.explained_variance_ratio_
        return {"explained_variance": ev, "total_variance": float(ev[0] / ratio[0])}


def _sklearn_sse(folder: str, rows: int, k: int) -> float | None:
    """scikit-learn ``KMeans(n_init=10)``'s SSE from results/kmeans.json, if it ran on this dataset."""
    path = os.path.join(RESULTS, "kmeans.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        res = json.load(fh)
    if res.get("dataset", {}).get("folder") != folder or res["dataset"].get("rows") != rows:
        return None
    return next((r.get("sse") for r in res.get("rows", []) if r.get("k") == k
                 and str(r.get("fit", "")).startswith("sklearn KMeans")), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--wide-rows", type=int, default=200_000)
    ap.add_argument("--wide-cols", type=int, default=512)
    ap.add_argument("--only", nargs="+", default=["kmeans", "pca", "logistic", "linear"])
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    args = ap.parse_args()

    why = spark_missing()
    if why:
        write_results("spark", {"skipped": why, "rows": [], "args": vars(args)})
        print(f"Spark MLlib comparison skipped: {why}")
        return

    from benchmarks.bench_kmeans import exact_sse, load_all

    out: list[dict] = []

    def record(row: dict) -> None:
        out.append(row)
        print({k: v for k, v in row.items() if not isinstance(v, list)}, flush=True)
        write_results("spark", {"rows": out, "args": vars(args), "partial": True})

    def run(task: str, **kw: Any) -> dict:
        r = run_measured(spark_job, timeout=args.timeout, task=task, **kw)
        if not r["ok"]:
            return {"error": r["error"]}
        res = r["result"]
        return {"seconds": res.pop("fit_seconds"), "peak_rss_mb": res.pop("tree_peak_rss_mb"), **res}

    if "kmeans" in args.only:
        ds = make_dataset(os.path.join(args.data, f"blobs-{args.rows}"), args.rows, 16, args.files)
        X = load_all(ds["folder"])
        for k in args.ks:
            r = run("kmeans", paths=parquet_files(ds["folder"]), columns=FEATURES, k=k)
            ref = run_measured(daskstate_reference, task="kmeans", folder=ds["folder"], columns=FEATURES, k=k)
            ours_sse = exact_sse(X, np.asarray(ref["result"]["centers"])) if ref["ok"] else None
            sk_sse = _sklearn_sse(ds["folder"], args.rows, k)
            row = {"algorithm": "kmeans", "case": f"k={k}", "fit": "Spark MLlib KMeans", "rows": args.rows,
                   "error": r.get("error"), "seconds": r.get("seconds"), "peak_rss_mb": r.get("peak_rss_mb"),
                   "n_iter": r.get("n_iter")}
            if "centers" in r:
                sse = exact_sse(X, np.asarray(r["centers"]))
                row.update(sse=sse, sse_ratio=sse / sk_sse if sk_sse else None,
                           sse_vs_daskstate=sse / ours_sse if ours_sse else None)
            record(row)
        del X

    if "pca" in args.only:
        cases = [("narrow", args.rows, 16, os.path.join(args.data, f"blobs-{args.rows}")),
                 ("wide", args.wide_rows, args.wide_cols,
                  os.path.join(args.data, f"wide{args.wide_cols}-{args.wide_rows}"))]
        for name, rows, cols, folder in cases:
            make_dataset(folder, rows, cols, args.files, kind="blobs")
            columns = [f"f{j}" for j in range(cols)]
            r = run("pca", paths=parquet_files(folder), columns=columns)
            ref = run_measured(daskstate_reference, task="pca", folder=folder, columns=columns)
            row = {"algorithm": "pca", "case": f"{name} ({cols} cols)", "fit": "Spark MLlib PCA", "rows": rows,
                   "error": r.get("error") or (None if ref["ok"] else ref["error"]), "seconds": r.get("seconds"),
                   "peak_rss_mb": r.get("peak_rss_mb")}
            if "explained_variance_ratio" in r and ref["ok"]:
                exact = np.asarray(ref["result"]["explained_variance"])
                ev = np.asarray(r["explained_variance_ratio"]) * ref["result"]["total_variance"]
                row["max_rel_ev_diff"] = float(np.abs(ev / exact - 1).max())
            record(row)

    linear_folder = os.path.join(args.data, f"linear-{args.rows}-{args.files}")
    if {"logistic", "linear"} & set(args.only):
        test_n = max(1, args.files // 10)
        per_file = args.rows // args.files
        make_dataset(linear_folder, per_file * (args.files + test_n), 16, args.files + test_n, n_classes=2, seed=0)
        files = parquet_files(linear_folder)
        train, test = files[: args.files], files[args.files :]
        for task, name, metric in (("logistic", "Spark MLlib LogisticRegression", "accuracy"),
                                   ("linear", "Spark MLlib LinearRegression", "r2")):
            if task not in args.only:
                continue
            r = run(task, paths=train, columns=FEATURES, test_paths=test)
            record({"algorithm": "linear", "case": "binary" if task == "logistic" else "regression", "fit": name,
                    "rows": per_file * args.files, "error": r.get("error"), "seconds": r.get("seconds"),
                    metric: r.get("score"), "n_iter": r.get("n_iter"), "peak_rss_mb": r.get("peak_rss_mb")})

    import pyspark

    path = write_results("spark", {"rows": out, "args": vars(args), "pyspark": pyspark.__version__})
    print(markdown_table(out, ["algorithm", "case", "fit", "seconds", "sse_ratio", "sse_vs_daskstate",
                               "max_rel_ev_diff", "accuracy", "r2", "peak_rss_mb", "error"]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
