"""StandardScaler vs the read-pass floor, and peak RSS as the data grows 10x.

Usage::

    python -m benchmarks.bench_scaler --rows 2000000 --files 20 --data /tmp/daskstate-bench

Writes benchmarks/results/scaler.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os

import dask

import daskstate
from benchmarks.common import (
    make_dataset,
    markdown_table,
    measure,
    read_pass_floor,
    write_results,
)

FEATURES = [f"f{j}" for j in range(16)]


def floor_job(folder: str) -> dict:
    with dask.config.set(scheduler="threads"):
        state = read_pass_floor(daskstate.read_parquet(folder), FEATURES)
    return {"rows": state.n_rows}


def scaler_job(folder: str) -> dict:
    with dask.config.set(scheduler="threads"):
        sc = daskstate.StandardScaler(features=FEATURES).fit(daskstate.read_parquet(folder))
    return {"rows": sc.n_samples_seen_, "state_bytes": sc.state_.nbytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--growth", type=int, default=10, help="the RSS check fits on rows x growth too")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default="/tmp/daskstate-bench")
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for the load average to fall below this")
    ap.add_argument("--max-wait", type=float, default=0.0, help="... at most this many seconds per run")
    args = ap.parse_args()

    rows_out = []
    for rows in (args.rows, args.rows * args.growth):
        files = args.files if rows == args.rows else args.files * args.growth
        ds = make_dataset(os.path.join(args.data, f"blobs-{rows}"), rows, 16, files)
        runs = measure({"floor": (floor_job, {"folder": ds["folder"]}),
                        "StandardScaler": (scaler_job, {"folder": ds["folder"]})},
                       repeat=args.repeat, floor="floor", max_load=args.max_load, max_wait=args.max_wait)
        for name, r in runs.items():
            rows_out.append({
                "rows": rows, "files": files, "fit": name, "seconds": r["seconds"],
                "ratio_to_floor": r["ratio_to_floor"], "rows_per_s": rows / r["seconds"],
                "peak_rss_mb": r["peak_rss_mb"], "gb_on_disk": ds["bytes_on_disk"] / 1e9, "loads": r["loads"],
            })
    small = next(r for r in rows_out if r["fit"] == "StandardScaler" and r["rows"] == args.rows)
    large = next(r for r in rows_out if r["fit"] == "StandardScaler" and r["rows"] != args.rows)
    summary = {
        "scaler_ratio_to_floor": small["ratio_to_floor"],
        "rss_growth_10x": large["peak_rss_mb"] / small["peak_rss_mb"] - 1,
    }
    path = write_results("scaler", {"rows": rows_out, "summary": summary, "args": vars(args)})
    print(markdown_table(rows_out, ["rows", "files", "fit", "seconds", "ratio_to_floor", "rows_per_s",
                                    "peak_rss_mb"]))
    print(summary)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
