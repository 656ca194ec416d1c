"""What fcaudit's two input checks cost a Dask fit and predict, interleaved in one process (run by hand).

    python -m benchmarks.ab_forecast_checks [--series 4000] [--length 500] [--rounds 3] [--results-name NAME]

- ``predict``: the whole-series check (one pass reading only the item id column, then the forecasts) against the
  forecasts alone (the check patched out), from Parquet and from the lazily generated panel of the scale run
  (``synthetic_panel(..., series_per_partition=1000)``, which regenerates every partition to read its ids).
- ``fit``: the typical series length over every partition (an id-only pass) against the first partition's, the
  linear model, both given the same ``context_length`` so the fits themselves are alike.

CPU seconds of this process (threaded scheduler), median of ``--rounds`` interleaved repeats, and their ratio;
``os.getloadavg()`` is recorded. Results: ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np

import daskstate
from daskstate.algorithms.forecast import estimator as E
from daskstate.algorithms.forecast.datasets import synthetic_panel


def _head_length(X, cols) -> int:
    """The typical length before fcaudit: the median rows per item of the first non-empty partition."""
    return int(E._head_partition(X).groupby(cols.id_col, sort=False).size().median())


def _cpu(fn) -> float:
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=4000)
    ap.add_argument("--length", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--results-name", default="forecast_fcaudit_checks")
    args = ap.parse_args()
    folder = tempfile.mkdtemp()
    generated = synthetic_panel(args.series, args.length, freq="D", seed=9, series_per_partition=1000)
    generated.to_parquet(folder)
    sources = {"parquet": dd.read_parquet(folder), "generated": generated}
    check, typical = E._whole_series_check, E._typical_length
    out: dict = {"series": args.series, "length": args.length, "load_before": os.getloadavg()}
    with dask.config.set(scheduler="threads"):
        fc = daskstate.Forecaster(freq="D", prediction_length=14, context_length=42).fit(sources["parquet"])
        for name, X in sources.items():
            cpu: dict = {"predict_checked": [], "predict_unchecked": [], "fit_all_partitions": [], "fit_head": []}
            for r in range(args.rounds):
                for variant in (("checked", "unchecked") if r % 2 == 0 else ("unchecked", "checked")):
                    E._whole_series_check = check if variant == "checked" else (lambda X, id_col: None)
                    cpu[f"predict_{variant}"].append(_cpu(lambda X=X: fc.predict(X).compute()))
                E._whole_series_check = check
                for variant in (("all_partitions", "head") if r % 2 == 0 else ("head", "all_partitions")):
                    E._typical_length = typical if variant == "all_partitions" else _head_length
                    cpu[f"fit_{variant}"].append(_cpu(lambda X=X: daskstate.Forecaster(
                        freq="D", prediction_length=14, context_length=42).fit(X)))
                E._typical_length = typical
            med = {k: float(np.median(v)) for k, v in cpu.items()}
            out[name] = {"cpu_seconds": cpu, "median": med,
                         "predict_ratio": med["predict_checked"] / med["predict_unchecked"],
                         "fit_ratio": med["fit_all_partitions"] / med["fit_head"]}
            print(name, json.dumps({k: round(v, 3) for k, v in out[name].items() if k.endswith("ratio")}), med)
    out["load_after"] = os.getloadavg()
    path = Path(__file__).parent / "results" / f"{args.results_name}.json"
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
