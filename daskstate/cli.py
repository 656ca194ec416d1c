"""The ``daskstate`` command: fit, partial-fit, predict, info, demo.

Examples
--------
::

    daskstate fit kmeans --input data/ --param n_clusters=10 --out km.zarr
    daskstate fit ntm --input docs/ --text-column body --param n_components=20 --out topics.zarr
    daskstate partial-fit km.zarr --input data/          # only files not seen before are read
    daskstate predict km.zarr --input data/ --output labels.parquet
    daskstate info km.zarr
    daskstate demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any


def _parse_value(text: str) -> Any:
    """``10`` -> 10, ``0.5`` -> 0.5, ``true`` -> True, ``[1,2]`` -> [1, 2], anything else a string."""
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {pair!r}")
        params[key.strip()] = _parse_value(value.strip())
    return params


def estimator_class(name: str):
    """The estimator class for a command-line algorithm name (e.g. ``kmeans``, ``pca``)."""
    import daskstate  # noqa: F401 - registers every estimator
    from daskstate.estimator import _ESTIMATORS

    wanted = name.lower().replace("-", "_")
    for cls_name, cls in _ESTIMATORS.items():
        aliases = {cls_name.lower(), cls.state_class.algorithm, *cls.aliases}
        if wanted in aliases or wanted == cls_name.lower().replace("_", ""):
            return cls
    known = sorted(c.state_class.algorithm for c in _ESTIMATORS.values() if c.__module__.startswith("daskstate"))
    raise ValueError(f"unknown algorithm {name!r}; choose one of {known}")


@contextlib.contextmanager
def cluster(scheduler: str | None, workers: int | None, report: str | None) -> Iterator[None]:
    """Connect to ``scheduler``, or start a LocalCluster of ``workers`` processes (dashboard on 127.0.0.1)."""
    stack = contextlib.ExitStack()
    with stack:
        if scheduler or workers:
            from distributed import Client, LocalCluster

            if scheduler:
                client = stack.enter_context(Client(scheduler))
            else:
                local = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0"))
                client = stack.enter_context(Client(local))
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
            if report:
                try:
                    import bokeh  # noqa: F401
                except ImportError:
                    raise ValueError("--report needs bokeh: pip install 'daskstate[dashboard]'") from None
                from distributed import performance_report

                stack.enter_context(performance_report(filename=report))
        elif report:
            raise ValueError("--report needs a distributed scheduler: add --workers N or --scheduler ADDRESS")
        yield


def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"progress": args.progress}
    if args.checkpoint:
        kwargs["checkpoint"] = args.checkpoint
    return kwargs


def cmd_fit(args: argparse.Namespace) -> None:
    from daskstate.data import read_input

    cls = estimator_class(args.algorithm)
    params = parse_params(args.param or [])
    if args.features:
        params["features"] = args.features
    if args.target:
        params["target"] = args.target
    if args.text_column:
        params["text_column"] = args.text_column
    unknown = sorted(set(params) - set(cls._param_names()))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {unknown}; valid: {cls._param_names()}")
    est = cls(**params)
    X, y = read_input(args.input)
    est.fit(X, y, **_fit_kwargs(args))
    est.save(args.out)
    print(f"fitted {type(est).__name__} on {est.n_samples_seen_:,} rows; saved to {args.out}")


def cmd_partial_fit(args: argparse.Namespace) -> None:
    from daskstate.data import read_input
    from daskstate.estimator import load

    est = load(args.model)
    before = est.n_samples_seen_
    X, y = read_input(args.input)
    est.partial_fit(X, y, **_fit_kwargs(args))
    est.save(args.out or args.model)
    print(f"{type(est).__name__}: {est.n_samples_seen_ - before:,} new rows ({est.n_samples_seen_:,} in all); "
          f"saved to {args.out or args.model}")


def cmd_predict(args: argparse.Namespace) -> None:
    import dask.array as da
    import dask.dataframe as dd

    from daskstate.data import read_input
    from daskstate.estimator import load

    est = load(args.model)
    X, _ = read_input(args.input)
    method = args.method or ("predict" if hasattr(est, "predict") else "transform")
    if not hasattr(est, method):
        raise ValueError(f"{type(est).__name__} has no method {method!r}")
    out = getattr(est, method)(X)
    if isinstance(out, da.Array):
        arr = out if out.ndim == 2 else out[:, None]
        names = [method] if out.ndim == 1 else [f"{method}_{j}" for j in range(arr.shape[1])]
        out = dd.from_dask_array(arr, columns=names)
    if isinstance(out, dd.Series):
        out = out.to_frame(name=method)
    out.columns = [str(c) for c in out.columns]
    out.to_parquet(args.output, write_index=False)
    print(f"wrote {method} of {type(est).__name__} for {args.input} to {args.output}")


def cmd_info(args: argparse.Namespace) -> None:
    from daskstate.store import read_attrs

    attrs = read_attrs(args.model)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.model) for f in fs)
    info = {
        "estimator": attrs.get("estimator"),
        "algorithm": attrs.get("algorithm"),
        "hyperparameters": attrs.get("estimator_params", attrs.get("params")),
        "features": attrs.get("schema", {}).get("features"),
        "target": attrs.get("schema", {}).get("target"),
        "rows_seen": attrs.get("n_rows"),
        "rows_skipped": attrs.get("n_skipped"),
        "inputs_consumed": len(attrs.get("consumed", [])),
        "state_arrays": attrs.get("arrays"),
        "bytes_on_disk": size,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        print(f"{key:16s} {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daskstate", description="Train models from fixed-size states on Dask.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on error")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scheduler", help="address of a running Dask scheduler to use")
        p.add_argument("--workers", type=int, help="start a local cluster with N worker processes")
        p.add_argument("--progress", action="store_true", help="show Dask's progress bar")
        p.add_argument("--report", help="write Dask's performance report (HTML) here")
        p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    fit = sub.add_parser("fit", help="fit an algorithm and save the model")
    fit.add_argument("algorithm", help="standard_scaler, kmeans, pca, linear_learner, ntm, vocabulary")
    fit.add_argument("--input", required=True, help="Parquet file/folder/glob, Zarr array, or CSV")
    fit.add_argument("--features", nargs="+", help="feature columns (default: every numeric one)")
    fit.add_argument("--target", help="target column (supervised algorithms)")
    fit.add_argument("--text-column", help="text column (text algorithms: ntm, vocabulary)")
    fit.add_argument("--param", action="append", metavar="KEY=VALUE", help="a hyperparameter (repeatable)")
    fit.add_argument("--out", required=True, help="where to save the model (Zarr)")
    fit.add_argument("--checkpoint", help="checkpoint path: resume a killed fit from it")
    common(fit)

    pfit = sub.add_parser("partial-fit", help="fold new data into a saved model (only unseen inputs are read)")
    pfit.add_argument("model")
    pfit.add_argument("--input", required=True)
    pfit.add_argument("--out", help="save here instead of over MODEL")
    pfit.add_argument("--checkpoint")
    common(pfit)

    pred = sub.add_parser("predict", help="apply a saved model; writes Parquet, streamed")
    pred.add_argument("model")
    pred.add_argument("--input", required=True)
    pred.add_argument("--output", required=True)
    pred.add_argument("--method", help="predict, transform, predict_proba, ... (default: predict or transform)")
    common(pred)

    info = sub.add_parser("info", help="what a saved model is and what it has seen")
    info.add_argument("model")
    info.add_argument("--json", action="store_true")
    info.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    demo = sub.add_parser("demo", help="fit every algorithm on generated data on a local cluster")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument("--keep", action="store_true", help="keep the cluster (and dashboard) until Enter")
    demo.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from daskstate.demo import run_demo

            run_demo(workers=args.workers, keep_cluster=args.keep)
        elif args.command == "info":
            cmd_info(args)
        else:
            command = {"fit": cmd_fit, "partial-fit": cmd_partial_fit, "predict": cmd_predict}[args.command]
            with cluster(args.scheduler, args.workers, args.report):
                command(args)
        return 0
    except Exception as exc:  # one clear line, unless --debug
        if args.debug:
            raise
        print(f"daskstate: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
