"""Run every benchmark in one go and write one JSON file plus one Markdown report.

Usage::

    python -m benchmarks --rows 2000000 --files 20            # the sizes the issues name
    python -m benchmarks --rows 200000 --files 20 --only kmeans pca
    python -m benchmarks --collect                             # only rebuild the report from results/

Each benchmark runs as its own process (``python -m benchmarks.bench_<name> ...``) and
writes ``benchmarks/results/<name>.json``; this collects them into
``benchmarks/results/suite.json`` and ``benchmarks/results/suite.md``: first one table of
every fit side by side (time, ratio to the read-pass floor, ratio to daskstate's time,
quality next to the peers', peak RSS), then each benchmark's own tables, exactly as it
measured them. Spark MLlib runs when ``pyspark`` and Java are installed (else the report
says why not). The out-of-core runs (``bench_out_of_core``, tens of GB) are run by hand;
their results are included when present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import RESULTS, machine, markdown_table

BENCHMARKS = ("scaler", "kmeans", "pca", "linear", "spark")
#: results of ``bench_out_of_core`` (run by hand: tens of GB, an hour) that the report includes when present
OUT_OF_CORE = ("out_of_core_stored", "out_of_core_stored_kmeans", "out_of_core_lazy", "out_of_core_lazy_kmeans")


def command(name: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", "--files", str(args.files), "--data", args.data]
    if name == "pca":
        cmd += ["--narrow-rows", str(args.rows), "--wide-rows", str(max(args.rows // 10, 1000))]
    elif name == "spark":
        cmd += ["--rows", str(args.rows), "--wide-rows", str(max(args.rows // 10, 1000))]
    else:
        cmd += ["--rows", str(args.rows)]
    return cmd


def _flatten(prefix: str, obj, out: dict) -> None:
    """Nested summaries as ``a.b.c -> value`` rows."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}{k}.", v, out)
    else:
        out[prefix.rstrip(".")] = obj


QUALITY = {
    "scaler": (None, None),
    "kmeans": ("sse_ratio", "SSE / scikit-learn KMeans(n_init=10)"),
    "pca": ("max_rel_ev_diff", "max rel. diff of explained variances from exact"),
    "linear": ("score", "held-out accuracy (binary) or R^2 (regression)"),
}
OURS = {"scaler": "StandardScaler", "kmeans": "daskstate KMeans", "pca": "daskstate regular",
        "linear": "LinearLearner"}


def _fit(r: dict, seconds_key: str = "seconds", quality_key: str | None = None) -> dict:
    return {"fit": r.get("fit"), "seconds": r.get(seconds_key), "ratio_to_floor": r.get("ratio_to_floor"),
            "quality": r.get(quality_key) if quality_key else None, "peak_rss_mb": r.get("peak_rss_mb"),
            "error": r.get("error")}


def _cases(name: str, res: dict) -> dict[str, dict]:
    """``case -> {floor, rows, fits}`` from one benchmark's own layout (its first size of each data kind)."""
    cases: dict[str, dict] = {}
    rows = res.get("rows") if isinstance(res.get("rows"), list) else []
    metric = QUALITY.get(name, (None, None))[0]
    if name in ("scaler", "pca"):
        first: dict = {}  # the smallest size of each data kind (the 10x runs only check RSS)
        for r in rows:
            first.setdefault(r.get("data", ""), r.get("rows"))
        for r in rows:
            key = r.get("data", "")
            if r.get("rows") != first[key]:
                continue
            case = f"{r['rows']:,} x {r.get('cols', 16)}" + (f" ({key})" if key else "")
            entry = cases.setdefault(case, {"floor": None, "rows": r["rows"], "fits": []})
            if r.get("fit") == "floor":
                entry["floor"] = r.get("seconds")
            else:
                entry["fits"].append(_fit(r, quality_key=metric))
    elif name == "kmeans":
        floor = next((r.get("seconds") for r in rows if r.get("fit") == "read-pass floor"), None)
        n = (res.get("dataset") or {}).get("rows")
        for r in rows:
            if r.get("k") is None or "rows)" in str(r.get("fit")):
                continue
            cases.setdefault(f"k={r['k']}", {"floor": floor, "rows": n, "fits": []})["fits"].append(
                _fit(r, quality_key=metric))
    elif name == "linear":
        floor = (res.get("floor") or {}).get("fit_seconds")
        n = (res.get("floor") or {}).get("rows")
        for case, group in (("binary", res.get("classification", []) + res.get("daskml", [])),
                            ("regression", res.get("regression", []))):
            for r in group:
                cases.setdefault(case, {"floor": floor, "rows": n, "fits": []})["fits"].append(
                    _fit(r, "fit_seconds", "score"))
    return cases


def _spark_case(row: dict, cases: dict) -> str | None:
    """The case of another benchmark that a Spark row belongs to (same case and number of rows)."""
    want = str(row.get("case", ""))
    for case, entry in cases.items():
        same = case == want or (row.get("algorithm") == "pca" and f"({want.split(' ')[0]})" in case)
        if same and entry["rows"] == row.get("rows"):
            return case
    return None


def comparisons(results: dict[str, dict]) -> list[dict]:
    """One normalised row per (algorithm, case, fit): time, x floor, x daskstate's time, quality, peak RSS.

    ``x_floor`` is the benchmark's own ratio where it measured one (interleaved with
    its own floor runs), else the time over the case's floor.
    """
    spark = [r for r in (results.get("spark") or {}).get("rows", []) if isinstance(r, dict)]
    out: list[dict] = []
    for name in ("scaler", "kmeans", "pca", "linear"):
        if name not in results:
            continue
        cases = _cases(name, results[name])
        for r in spark:
            if r.get("algorithm") == name and (case := _spark_case(r, cases)):
                quality = r.get(QUALITY[name][0]) if name != "linear" else r.get("accuracy", r.get("r2"))
                cases[case]["fits"].append({**_fit(r), "quality": quality})
        for case, entry in cases.items():
            floor, fits = entry["floor"], entry["fits"]
            ours = next((f for f in fits if str(f["fit"]).startswith(OURS[name]) and f.get("seconds")), None)
            for f in fits:
                sec = f.get("seconds")
                out.append({
                    "algorithm": name, "case": case, "fit": f["fit"], "seconds": sec,
                    "x_floor": f.get("ratio_to_floor") or (sec / floor if sec and floor else None),
                    "x_daskstate": sec / ours["seconds"] if sec and ours else None,
                    "quality": f.get("quality"), "peak_rss_mb": f.get("peak_rss_mb"), "error": f.get("error"),
                })
    return out


def report(results: dict[str, dict]) -> str:
    lines = ["# daskstate benchmark suite", "", f"Machine: `{json.dumps(machine())}`", ""]
    rows = comparisons(results)
    if rows:
        lines += [
            "## All fits side by side", "",
            "`x_floor`: time over the read-pass floor of the same data. `x_daskstate`: time over daskstate's "
            "fit of the same case (above 1: slower than daskstate). Quality: " + "; ".join(
                f"{n}: {q}" for n, (_, q) in QUALITY.items() if q) + ". Peak RSS in MiB (Spark: driver + JVM).",
            "",
            markdown_table(rows, ["algorithm", "case", "fit", "seconds", "x_floor", "x_daskstate", "quality",
                                  "peak_rss_mb", "error"]),
            "",
        ]
    if (results.get("spark") or {}).get("skipped"):
        lines += [f"Spark MLlib: skipped ({results['spark']['skipped']}).", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", f"Run at {res.get('when')} with `{json.dumps(res.get('args'))}`", ""]
        summary: dict = {}
        _flatten("", res.get("summary", {}), summary)
        if summary:
            lines += [markdown_table([{"measure": k, "value": v} for k, v in summary.items()],
                                     ["measure", "value"]), ""]
        rows = res.get("rows")
        if isinstance(rows, list) and rows:
            columns = [c for c in ("format", "data", "k", "algorithm", "case", "fit", "gb", "gb_features", "rows",
                                   "cols", "seconds", "gb_per_s", "rows_per_s", "ratio_to_floor",
                                   "floor_throughput_share", "sse_ratio", "sse_vs_daskstate", "max_rel_ev_diff",
                                   "accuracy", "r2", "peak_rss_mb", "state_bytes", "error")
                       if any(c in r for r in rows)]
            lines += [markdown_table(rows, columns), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--collect", action="store_true", help="do not run; rebuild the report from results/")
    args = ap.parse_args()
    failed = []
    if not args.collect:
        for name in args.only:
            cmd = command(name, args)
            print("$", " ".join(cmd), flush=True)
            t0 = time.perf_counter()
            if subprocess.run(cmd, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).returncode:
                failed.append(name)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = {}
    for name in BENCHMARKS + OUT_OF_CORE:
        path = os.path.join(RESULTS, f"{name}.json")
        if os.path.exists(path):
            with open(path) as fh:
                results[name] = json.load(fh)
    with open(os.path.join(RESULTS, "suite.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    with open(os.path.join(RESULTS, "suite.md"), "w") as fh:
        fh.write(report(results))
    print(f"wrote {RESULTS}/suite.json and suite.md" + (f"; failed: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
