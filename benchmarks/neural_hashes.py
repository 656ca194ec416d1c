"""Hashes of seeded neural forecaster fits, to check that a change leaves their results bit-identical.

Usage::

    python -m benchmarks.neural_hashes --base /path/to/old/checkout --results-name neural_hashes

For each panel (synthetic daily; the same with dropped rows, NaN targets, shuffled rows and a
covariate; fpp3 aus_arrivals; synthetic counts) and each of ``--models`` and likelihoods, one
``Forecaster(model=..., epochs=2, seed=5)`` fit on the local synchronous scheduler, then the
SHA-256 (first 16 hex digits) of its parameters, calibration and validation losses, its
training loss, ``predict`` and ``sample_paths``. With ``--base`` the same runs in a fresh process
with that checkout's daskstate and every hash is compared; the exit status is 1 if any differs.
Writes ``benchmarks/results/<results-name>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def panels() -> list[tuple[str, pd.DataFrame, str, dict]]:
    from daskstate.algorithms.forecast.datasets import load_panel, synthetic_panel

    syn = synthetic_panel(40, 160, freq="D", seed=3)
    rng = np.random.default_rng(0)
    gappy = syn.drop(index=rng.choice(len(syn), 400, replace=False)).sample(frac=1.0, random_state=1)
    gappy = gappy.reset_index(drop=True)
    gappy.loc[rng.choice(len(gappy), 200, replace=False), "target"] = np.nan
    gappy["promo"] = (pd.to_datetime(gappy["timestamp"]).dt.dayofweek == 4).astype(float)
    aus, freq = load_panel("aus_arrivals")
    counts = syn.assign(target=np.round(np.abs(syn["target"])))
    return [("synthetic", syn, "D", {}), ("gappy", gappy, "D", {"covariates": ["promo"]}), ("aus_arrivals", aus, freq, {}),
            ("counts", counts, "D", {"likelihood": "negative_binomial"})]


def future_promo(df: pd.DataFrame, steps: int) -> pd.DataFrame:
    last = df.groupby("item_id")["timestamp"].max()
    future = pd.DataFrame({"item_id": np.repeat(last.index.to_numpy(), steps),
                           "timestamp": np.repeat(last.to_numpy(), steps)
                           + np.tile(np.arange(1, steps + 1), len(last)) * np.timedelta64(1, "D")})
    return future.assign(promo=(pd.to_datetime(future["timestamp"]).dt.dayofweek == 4).astype(float))


def fit_hashes(models: list[str]) -> dict[str, dict[str, str]]:
    """``panel/model/likelihood`` -> the hashes of one seeded fit, its forecast and its sample paths."""
    import dask

    import daskstate

    warnings.filterwarnings("ignore")
    out = {}
    with dask.config.set(scheduler="sync"):
        for name, df, freq, kw in panels():
            likelihoods = [kw.pop("likelihood")] if "likelihood" in kw else ["student_t", "gaussian"]
            for model in models:
                for likelihood in likelihoods:
                    fc = daskstate.Forecaster(model=model, freq=freq, likelihood=likelihood, epochs=2, seed=5, **kw)
                    fc.fit(df)
                    future = future_promo(df, fc.prediction_length or 14) if kw.get("covariates") else None
                    pred = fc.predict(df, future=future).select_dtypes("number").to_numpy()
                    paths = fc.sample_paths(df, num_samples=20, future=future).select_dtypes("number").to_numpy()
                    out[f"{name}/{model}/{likelihood}"] = {
                        "theta": digest(fc.theta_), "calibration": digest(fc.calibration_),
                        "validation_loss": digest(fc.validation_loss_), "train_loss": repr(fc.train_loss_),
                        "predict": digest(pred), "paths": digest(paths)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,deepar")
    ap.add_argument("--base", default=None, help="a checkout of the daskstate version to compare against")
    ap.add_argument("--results-name", default="neural_hashes")
    ap.add_argument("--print-only", action="store_true", help=argparse.SUPPRESS)  # the base's side
    args = ap.parse_args()
    models = args.models.split(",")
    if args.print_only:
        print("RESULT" + json.dumps(fit_hashes(models)))
        return
    new = fit_hashes(models)
    result = {"models": models, "hashes": new}
    if args.base:
        base_tree = os.path.abspath(args.base)
        here = os.path.dirname(os.path.abspath(__file__))
        job = subprocess.run([sys.executable, os.path.join(here, "neural_hashes.py"), "--models", args.models,
                              "--print-only"], cwd=base_tree, env={**os.environ, "PYTHONPATH": base_tree},
                             capture_output=True, text=True, check=True)
        base = json.loads([s for s in job.stdout.splitlines() if s.startswith("RESULT")][-1][len("RESULT"):])
        differ = {k: [f for f in new[k] if new[k][f] != base.get(k, {}).get(f)] for k in new}
        differ = {k: v for k, v in differ.items() if v}
        result.update(base=base_tree, base_hashes=base, differ=differ, identical=not differ and base.keys() == new.keys())
        print("identical" if result["identical"] else f"DIFFER: {differ}")
    from benchmarks.common import write_results

    print("wrote", write_results(args.results_name, result))
    if args.base and not result["identical"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
