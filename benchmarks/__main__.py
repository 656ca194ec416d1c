"""Run every benchmark in one go and write one JSON file plus one Markdown report.

Usage::

    python -m benchmarks --rows 2000000 --files 20            # the sizes the issues name
    python -m benchmarks --rows 200000 --files 20 --only kmeans pca
    python -m benchmarks --collect                             # only rebuild the report from results/

Each benchmark runs as its own process (``python -m benchmarks.bench_<name> ...``) and
writes ``benchmarks/results/<name>.json``; this collects them into
``benchmarks/results/suite.json`` and ``benchmarks/results/suite.md``: every fit's time,
ratio to the read-pass floor, ratio to each installed peer, quality next to the peer's,
and peak RSS, exactly as each benchmark measured them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import RESULTS, machine, markdown_table

BENCHMARKS = ("scaler", "kmeans", "pca", "linear")


def command(name: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", "--files", str(args.files), "--data", args.data]
    if name == "pca":
        cmd += ["--narrow-rows", str(args.rows), "--wide-rows", str(max(args.rows // 10, 1000))]
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


def report(results: dict[str, dict]) -> str:
    lines = ["# daskstate benchmark suite", "", f"Machine: `{json.dumps(machine())}`", ""]
    for name, res in results.items():
        lines += [f"## {name}", "", f"Run at {res.get('when')} with `{json.dumps(res.get('args'))}`", ""]
        summary: dict = {}
        _flatten("", res.get("summary", {}), summary)
        if summary:
            lines += [markdown_table([{"measure": k, "value": v} for k, v in summary.items()],
                                     ["measure", "value"]), ""]
        rows = res.get("rows")
        if isinstance(rows, list) and rows:
            columns = [c for c in ("data", "k", "rows", "cols", "fit", "seconds", "ratio_to_floor", "sse_ratio",
                                   "max_rel_ev_diff", "accuracy", "r2", "peak_rss_mb", "state_bytes")
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
    for name in BENCHMARKS:
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
