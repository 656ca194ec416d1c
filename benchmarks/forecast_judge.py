"""Judge a change of the linear forecaster against a base run, pair by pair (fctrend, issue 13; run by hand).

    python -m benchmarks.forecast_judge forecast_quiet_final8,forecast_quiet_final8_yearly,forecast_quiet_final8_weekly \
        forecast_fctrend_line,forecast_fctrend_line_yearly,forecast_fctrend_line_weekly

Both arguments name ``bench_forecast`` results files (comma-separated, in ``results/``; the same panels and origins,
variant 0 of each). Prints, per group of files, the geometric means over (panel, origin) of the candidate's MASE and
wQL relative to the base, the candidate's and the base's MASE / ETS and wQL / ETS (statsmodels, where the run has an
ETS row) and against statsforecast's AutoETS (``forecast_autoets_origins_quiet.json``, ``forecast_autoets_unseen.json``),
and every pair that moved by more than 1%. The brief's rule: adopt only if the geometric means over all pairs do not
get worse and no pair gets worse by more than ~3%.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")
AUTOETS = ("forecast_autoets_origins_quiet.json", "forecast_autoets_unseen.json")


def load_rows(name: str) -> dict[tuple[str, int], dict]:
    with open(os.path.join(RESULTS, f"{name}.json")) as f:
        rows = json.load(f)["rows"]
    return {(r["panel"], r["origin"]): r for r in rows if r.get("variant", 0) == 0 and "MASE" in r}


def autoets_rows() -> dict[tuple[str, int], dict]:
    out = {}
    for path in AUTOETS:
        with open(os.path.join(RESULTS, path)) as f:
            for key, row in json.load(f).items():
                panel, origin = key.split("@")
                out[(panel, int(origin))] = row
    return out


def geo(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def judge(base: dict, cand: dict, auto: dict, label: str) -> tuple[list[float], list[float]]:
    keys = [k for k in base if k in cand]
    mase = [cand[k]["MASE"] / base[k]["MASE"] for k in keys]
    wql = [cand[k]["wQL"] / base[k]["wQL"] for k in keys]
    ets = [k for k in keys if cand[k].get("mase_vs_ets") is not None]
    aut = [k for k in keys if k in auto]
    print(f"{label}: {len(keys)} pairs; candidate / base MASE {geo(mase):.4f} wQL {geo(wql):.4f}; worst MASE "
          f"{max(mase):.3f} wQL {max(wql):.3f}")
    for who, rows in (("candidate", cand), ("base", base)):
        print(f"  {who:9s} vs ETS ({len(ets)}) MASE {geo([rows[k]['mase_vs_ets'] for k in ets]):.4f} wQL "
              f"{geo([rows[k]['wql_vs_ets'] for k in ets]):.4f}; vs AutoETS ({len(aut)}) MASE "
              f"{geo([rows[k]['MASE'] / auto[k]['MASE'] for k in aut]):.4f} wQL "
              f"{geo([rows[k]['wQL'] / auto[k]['wQL'] for k in aut]):.4f}")
    for k, m, w in zip(keys, mase, wql, strict=True):
        if abs(m - 1) > 0.01 or abs(w - 1) > 0.01:
            flag = "  <-- worse > 3%" if max(m, w) > 1.03 else ""
            print(f"    {k[0]:18s} {k[1]:3d}  MASE x{m:.3f}  wQL x{w:.3f}{flag}")
    return mase, wql


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="comma-separated results names (without .json)")
    ap.add_argument("candidate", help="comma-separated results names, in the same order")
    args = ap.parse_args()
    auto = autoets_rows()
    allm, allw = [], []
    for b, c in zip(args.base.split(","), args.candidate.split(","), strict=True):
        m, w = judge(load_rows(b), load_rows(c), auto, f"{c} against {b}")
        allm += m
        allw += w
    print(f"ALL {len(allm)} pairs: MASE {geo(allm):.4f} wQL {geo(allw):.4f}; worst MASE {max(allm):.3f} "
          f"wQL {max(allw):.3f}; pairs worse by > 3%: {sum(max(m, w) > 1.03 for m, w in zip(allm, allw, strict=True))}")


if __name__ == "__main__":
    main()
