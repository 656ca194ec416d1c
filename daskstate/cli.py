"""The ``daskstate`` command: fit, partial-fit, predict, info, make-data, demo.

Examples
--------
::

    daskstate make-data data/                            # the quick start's dataset
    daskstate fit kmeans --input data/ --param n_clusters=10 --out km.zarr
    daskstate fit ntm --input docs/ --text-column body --param n_components=20 --out topics.zarr
    daskstate partial-fit km.zarr --input data/          # only files not seen before are read
    daskstate predict km.zarr --input data/ --output labels.parquet   # or .csv, .zarr
    daskstate info km.zarr
    daskstate demo

File safety: ``--out`` replaces only a daskstate model (with ``--force``), never data,
other files or the input; ``predict --output`` refuses an existing output unless
``--force``, and then replaces it whole. Every path is checked before any data is read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

#: methods ``predict --method`` may call
APPLY_METHODS = ("predict", "transform", "predict_proba", "decision_function")
#: ``predict --output`` formats by file extension
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".zarr": "zarr"}


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
    """``["k=10", "lr=0.5"]`` -> ``{"k": 10, "lr": 0.5}``; a key given twice is an error."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {pair!r}")
        if key in params:
            raise ValueError(f"--param {key} is given twice ({params[key]!r} and {value.strip()!r}); give it once")
        params[key] = _parse_value(value.strip())
    return params


def estimator_class(name: str):
    """The estimator class for a command-line algorithm name (e.g. ``kmeans``, ``pca``)."""
    import daskstate  # noqa: F401 - registers every estimator
    from daskstate.estimator import estimator_for

    return estimator_for(name)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


# ---------------------------------------------------------------------------- paths
def _real(path: str) -> str:
    from daskstate.store import clean_path

    return os.path.realpath(clean_path(path))


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _input_paths(text: str) -> list[str]:
    """The real paths an ``--input`` names (a glob's folder stands for its files)."""
    if any(ch in text for ch in "*?["):
        text = os.path.dirname(text) or "."
    return [_real(text)]


def check_output_path(out: str, inputs: list[str], what: str, also: dict[str, str] | None = None) -> str:
    """Refuse an output that is, holds or lies inside an input (or another named path)."""
    target = _real(out)
    named = {f"the input {p}": p for p in inputs}
    named.update({f"{k} {v}": _real(v) for k, v in (also or {}).items()})
    for label, other in named.items():
        if _inside(target, other) or _inside(other, target):
            raise ValueError(f"{what} {out} would overwrite or lie inside {label}; choose another path")
    return target


def check_model_out(out: str, inputs: list[str], force: bool, also: dict[str, str] | None = None) -> None:
    """Before a fit: ``out`` may only be new, an empty folder or (``--force``) a daskstate model."""
    from daskstate.store import check_writable

    check_output_path(out, inputs, "--out", also)
    check_writable(out, "model", overwrite=force)


# ---------------------------------------------------------------------------- distributed
@contextlib.contextmanager
def cluster(scheduler: str | None, workers: int | None, report: str | None,
            timeout: float = 30.0) -> Iterator[Any]:
    """Connect to ``scheduler``, or start a LocalCluster of ``workers`` processes (dashboard on 127.0.0.1).

    Yields the ``distributed.Client`` (or None for the local threaded scheduler).
    Connecting, and waiting for at least one worker, each time out after
    ``timeout`` seconds with a message that says what to check.
    """
    stack = contextlib.ExitStack()
    with stack:
        client = None
        if scheduler or workers:
            from distributed import Client, LocalCluster

            if scheduler:
                client = _connect(scheduler, timeout)
                stack.callback(client.close)
            else:
                local = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0"))
                client = stack.enter_context(Client(local))
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"the Dask scheduler at {client.scheduler.address} has no workers (waited {timeout:g} s); "
                    "start some (dask worker ADDRESS) or raise --timeout") from None
            _ACTIVE["memory_limit"] = _memory_limits(client)  # for messages once workers have died
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
            if report:
                try:
                    import bokeh  # noqa: F401
                except ImportError:
                    raise ValueError("--report needs bokeh: pip install 'daskstate[dashboard]'") from None
                from distributed import performance_report

                stack.enter_context(performance_report(filename=report))
            stack.enter_context(_no_workers_watchdog(client, timeout))
        elif report:
            raise ValueError("--report needs a distributed scheduler: add --workers N or --scheduler ADDRESS")
        yield client


def _connect(address: str, timeout: float) -> Any:
    """``Client(address)`` that gives up after ``timeout`` s even if the handshake hangs (an HTTP port)."""
    from distributed import Client

    box: dict[str, Any] = {}

    def connect() -> None:
        try:
            box["client"] = Client(address, timeout=timeout, set_as_default=True)
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=connect, name="daskstate-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if "client" in box:
        return box["client"]
    why = f" ({type(box['error']).__name__}: {box['error']})" if "error" in box else ""
    raise RuntimeError(
        f"could not connect to a Dask scheduler at {address} within {timeout:g} s{why}; check the address "
        "(the scheduler's port, e.g. tcp://host:8786, not the dashboard's) or raise --timeout")


class NoWorkersError(RuntimeError):
    """The cluster had no workers for longer than the timeout during a computation."""


@contextlib.contextmanager
def _no_workers_watchdog(client: Any, timeout: float) -> Iterator[None]:
    """Interrupt the command if the cluster has had no workers for ``timeout`` seconds."""
    stop = threading.Event()
    fired: dict[str, float] = {}

    def watch() -> None:
        empty_since = None
        while not stop.wait(1.0):
            try:
                n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            except Exception:
                n = 0
            if n:
                empty_since = None
                continue
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since > timeout:
                fired["after"] = timeout
                os.kill(os.getpid(), signal.SIGINT)
                return

    thread = threading.Thread(target=watch, name="daskstate-watchdog", daemon=True)
    thread.start()
    try:
        yield
    except KeyboardInterrupt:
        if "after" in fired:
            raise NoWorkersError(
                f"the cluster has had no workers for {timeout:g} s, so the computation cannot go on "
                "(workers that keep dying and are not restarted)") from None
        raise
    finally:
        stop.set()


def _memory_limits(client: Any) -> str:
    try:
        limits = {w.get("memory_limit") for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    except Exception:
        return "unknown"
    limits.discard(None)
    if not limits:
        return "unknown"
    return ", ".join(_bytes(v) for v in sorted(limits)) if all(limits) else "no limit"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def partition_size(X: Any, path: str | None = None) -> str:
    """A description of one partition's size, for messages: bytes per chunk or per Parquet file."""
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, da.Array):
        rows = max(X.chunks[0]) if X.chunks and X.chunks[0] else 0
        cols = X.shape[1] if X.ndim > 1 else 1
        return f"{rows:,} rows x {cols} columns = {_bytes(rows * cols * X.dtype.itemsize)} in memory"
    if isinstance(X, dd.DataFrame) and path:
        with contextlib.suppress(Exception):
            import pyarrow.parquet as pq

            from daskstate.data import list_parquet_files

            meta = pq.ParquetFile(list_parquet_files(path)[0][0]).metadata
            biggest = max(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            return f"a Parquet row group of up to {_bytes(biggest)} uncompressed ({X.npartitions} partitions)"
    if isinstance(X, dd.DataFrame):
        return f"1/{X.npartitions} of the input"
    return "unknown"


def explain_killed_worker(exc: BaseException, X: Any, client: Any, path: str | None = None) -> str:
    """What a KilledWorker means for the user: memory, and how large a partition is."""
    task = getattr(exc, "task", None) or "a task"
    tries = getattr(exc, "allowed_failures", None)
    died = f"the workers running {task} died {tries + 1 if isinstance(tries, int) else 'several'} times"
    return f"{died}; {_memory_advice(X, client, path)}"


def _memory_advice(X: Any, client: Any, path: str | None) -> str:
    limit = _ACTIVE.get("memory_limit") or (_memory_limits(client) if client is not None else "unknown")
    return (f"this is almost always memory: each worker may use {limit}, and a partition is "
            f"{partition_size(X, path)}. Give the workers more memory or fewer threads, or use smaller partitions "
            "(smaller Parquet row groups or Zarr chunks)")


# ---------------------------------------------------------------------------- progress
class ProgressLine:
    """One progress line for a whole command, however many computations (epochs) it runs.

    On the local scheduler it is a Dask callback; on a cluster it polls the scheduler.
    The line shows the current pass's share of finished tasks and the passes so far,
    and is redrawn in place (not one bar per epoch).
    """

    def __init__(self, client: Any = None, stream: Any = None, every: float = 0.5):
        self.client, self.stream, self.every = client, stream or sys.stderr, every
        self.passes, self.done, self.total = 0, 0, 0
        self.t0 = time.monotonic()
        self._last = 0.0
        self._stop = threading.Event()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        frac = self.done / self.total if self.total else 0.0
        bar = "#" * int(30 * frac)
        self.stream.write(f"\r[{bar:<30s}] {100 * frac:3.0f}% of pass {max(1, self.passes)} | "
                          f"{now - self.t0:6.1f} s")
        self.stream.flush()

    def __enter__(self) -> ProgressLine:
        if self.client is None:
            from dask.callbacks import Callback

            line = self

            class _Tasks(Callback):
                def _start_state(self, dsk, state):
                    line.passes += 1
                    line.done, line.total = 0, len(state["ready"]) + len(state["waiting"]) + len(state["finished"])
                    line.draw(force=True)

                def _posttask(self, key, result, dsk, state, worker_id):
                    line.done += 1
                    line.draw()

            self._callback = _Tasks()
            self._callback.__enter__()
        else:
            self._thread = threading.Thread(target=self._poll, name="daskstate-progress", daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        def counts(dask_scheduler: Any) -> tuple[int, int]:
            states = [ts.state for ts in dask_scheduler.tasks.values()]
            return sum(s in ("memory", "released", "erred", "forgotten") for s in states), len(states)

        while not self._stop.wait(self.every):
            try:
                done, total = self.client.run_on_scheduler(counts)
            except Exception:
                continue
            if total and (self.passes == 0 or done < self.done):  # a new graph: the next pass
                self.passes += 1
            self.done, self.total = done, total
            self.draw(force=True)

    def __exit__(self, *exc: object) -> None:
        if self.client is None:
            self._callback.__exit__(*exc)
        else:
            self._stop.set()
            self._thread.join(2 * self.every)
        if self.total:
            self.done = self.total if exc[0] is None else self.done
        self.draw(force=True)
        self.stream.write("\n")


# ---------------------------------------------------------------------------- commands
def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if args.checkpoint:
        kwargs["checkpoint"] = args.checkpoint
    if getattr(args, "sample_weight", None):
        kwargs["sample_weight"] = args.sample_weight
    return kwargs


def _check_checkpoint(args: argparse.Namespace, inputs: list[str], out: str) -> None:
    # what may be at a checkpoint path (a state, or a folder of one state per pass) is
    # checked by the store when the fit resumes from it or writes it
    if args.checkpoint:
        check_output_path(args.checkpoint, inputs, "--checkpoint", {"--out": out})


def _missing_required(cls: Any, params: dict[str, Any]) -> None:
    """A parameter without a default that was not given: say how to give it (and its choices)."""
    import inspect

    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in params:
            hint = ""
            try:
                probe = cls(**{**params, p.name: "?"})
                probe._validate_params()
            except Exception as exc:  # the estimator's own message lists the valid values
                hint = f" ({exc})"
            raise ValueError(f"{cls.__name__} needs {p.name}: give it as --param {p.name}=VALUE{hint}")


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
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {unknown}; valid: {cls._get_param_names()}")
    _missing_required(cls, params)
    inputs = _input_paths(args.input)
    check_model_out(args.out, inputs, args.force)
    _check_checkpoint(args, inputs, args.out)
    est = cls(**params)
    X, y = read_input(args.input)
    with _progress(args):
        est.fit(X, y, **_fit_kwargs(args))
    est.save(args.out)
    print(f"fitted {type(est).__name__} on {est.n_samples_seen_:,} rows; saved to {args.out}")


def cmd_partial_fit(args: argparse.Namespace) -> None:
    from daskstate.data import read_input
    from daskstate.estimator import load

    out = args.out or args.model
    inputs = _input_paths(args.input)
    same = args.out is None or _real(args.out) == _real(args.model)
    check_model_out(out, inputs, force=same or args.force)
    _check_checkpoint(args, inputs, out)
    est = load(args.model)
    before = est.n_samples_seen_
    X, y = read_input(args.input)
    with _progress(args):
        est.partial_fit(X, y, **_fit_kwargs(args))
    est.save(out)
    print(f"{type(est).__name__}: {est.n_samples_seen_ - before:,} new rows ({est.n_samples_seen_:,} in all); "
          f"saved to {out}")


def output_format(path: str) -> str:
    """``csv``, ``parquet`` or ``zarr`` from the extension of ``path`` (Parquet without one)."""
    from daskstate.store import clean_path

    base = clean_path(path).lower()
    for ext, fmt in OUTPUT_FORMATS.items():
        if base.endswith(ext) or base.endswith(ext + ".gz") and fmt == "csv":
            return fmt
    ext = os.path.splitext(base)[1]
    if ext:
        raise ValueError(f"--output {path}: unknown extension {ext!r}; use .csv, .parquet or .zarr")
    return "parquet"


def check_prediction_output(out: str, inputs: list[str], model: str, force: bool) -> None:
    """A new or empty output, or (``--force``) anything but the input, the model or their folders."""
    check_output_path(out, inputs, "--output", {"the model": model})
    target = _real(out)
    if target in (os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~"))):
        raise ValueError(f"--output {out} is a top-level folder; choose a new path")
    if os.path.lexists(target) and not (os.path.isdir(target) and not os.path.islink(target)
                                        and not os.listdir(target)):
        if not force:
            raise ValueError(f"--output {out} exists and is not empty; choose a new path, or add --force to "
                             "replace it whole (it is never merged with new output)")


def _named_frame(X: Any, est: Any) -> Any:
    """A Dask Array input as a DataFrame with the model's feature names: outputs get the API's names."""
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, da.Array) and X.ndim == 2 and X.shape[1] == est.n_features_in_:
        return dd.from_dask_array(X, columns=[str(c) for c in est.state_.schema.features])
    return X


def _output_names(est: Any, n: int) -> list[str]:
    """Column names of an array output: the estimator's own output names, else scikit-learn's prefix style."""
    try:
        names = [str(c) for c in est.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        names = []
    if len(names) == n:
        return names
    return [f"{type(est).__name__.lower()}{i}" for i in range(n)]


def cmd_predict(args: argparse.Namespace) -> None:
    import dask.array as da
    import dask.dataframe as dd

    from daskstate.data import read_input
    from daskstate.estimator import load

    fmt = output_format(args.output)
    inputs = _input_paths(args.input)
    check_prediction_output(args.output, inputs, args.model, args.force)
    est = load(args.model)
    method = args.method or ("predict" if hasattr(est, "predict") else "transform")
    if method not in APPLY_METHODS:
        raise ValueError(f"--method {method!r} is not one of {list(APPLY_METHODS)}")
    if not hasattr(est, method):
        available = [m for m in APPLY_METHODS if hasattr(est, m)]
        raise ValueError(f"{type(est).__name__} has no method {method!r}; it has {available}")
    X, _ = read_input(args.input)
    out = getattr(est, method)(_named_frame(X, est))
    if isinstance(out, dd.Series):
        out = out.to_frame(name=method)
    if isinstance(out, da.Array) and out.ndim == 2:
        out = dd.from_dask_array(out, columns=_output_names(est, int(out.shape[1])))
    if not isinstance(out, dd.DataFrame):
        raise ValueError(f"{type(est).__name__}.{method} gave {type(out).__name__}, which cannot be written")
    out.columns = [str(c) for c in out.columns]
    with _progress(args):
        write_output(out, args.output, fmt)
    print(f"wrote {method} of {type(est).__name__} for {args.input} to {args.output} ({fmt})")


def write_output(frame: Any, path: str, fmt: str) -> None:
    """Write a Dask DataFrame as ``fmt`` to a temporary sibling, then put it in place whole."""
    from daskstate.store import clean_path

    path = clean_path(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp, old = f"{path}.tmp-{tag}", f"{path}.old-{tag}"
    try:
        if fmt == "csv":
            frame.to_csv(tmp, single_file=True, index=False)
        elif fmt == "parquet":
            frame.to_parquet(tmp, write_index=False)
        else:
            import dask.array as da
            import zarr

            arr = frame.to_dask_array(lengths=True)
            da.to_zarr(arr.rechunk({1: -1}), tmp, overwrite=False)
            zarr.open_array(tmp, mode="r+").attrs["columns"] = [str(c) for c in frame.columns]
        moved = os.path.lexists(path)
        if moved:
            os.rename(path, old)
        os.rename(tmp, path)
        if moved:
            (shutil.rmtree if os.path.isdir(old) and not os.path.islink(old) else os.unlink)(old)
    finally:
        if os.path.lexists(tmp):
            (shutil.rmtree if os.path.isdir(tmp) else os.unlink)(tmp)


def cmd_info(args: argparse.Namespace) -> None:
    from daskstate.store import clean_path, read_attrs

    attrs = read_attrs(args.model)
    model = clean_path(args.model)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(model) for f in fs)
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


def cmd_make_data(args: argparse.Namespace) -> None:
    from daskstate.demo import make_demo_data

    folder = args.folder
    if os.path.lexists(folder) and not (os.path.isdir(folder) and not os.listdir(folder)):
        raise ValueError(f"{folder} exists and is not empty; make-data writes only into a new or empty folder")
    os.makedirs(folder, exist_ok=True)
    make_demo_data(folder, n_files=args.files, rows_per_file=args.rows_per_file, seed=args.seed)
    print(f"wrote {args.files} Parquet files of {args.rows_per_file:,} rows (f0..f15, y, label) to {folder}")


_ACTIVE: dict[str, Any] = {}


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[None]:
    if not getattr(args, "progress", False):
        yield
        return
    with ProgressLine(_ACTIVE.get("client")):
        yield


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daskstate", description="Train models from fixed-size states on Dask.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on error")
    sub = parser.add_subparsers(dest="command", required=True)

    def debug(p: argparse.ArgumentParser) -> None:
        # SUPPRESS: a subcommand's default must not undo ``daskstate --debug fit ...``
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scheduler", help="address of a running Dask scheduler to use (tcp://host:8786)")
        p.add_argument("--workers", type=_positive_int, help="start a local cluster with N worker processes")
        p.add_argument("--timeout", type=_positive_float, default=30.0,
                       help="seconds to wait for the scheduler, and for workers when there are none (default 30)")
        p.add_argument("--progress", action="store_true", help="show one progress line for the whole command")
        p.add_argument("--report", help="write Dask's performance report (HTML) here")
        debug(p)

    fit = sub.add_parser("fit", help="fit an algorithm and save the model")
    fit.add_argument("algorithm", help="standard_scaler, kmeans, pca, linear_learner, ntm, vocabulary, "
                     "forecast (a long table: --param id_col=, time_col=, target=, prediction_length=)")
    fit.add_argument("--input", required=True, help="Parquet file/folder/glob, Zarr array, or CSV")
    fit.add_argument("--features", nargs="+", help="feature columns (default: every numeric one)")
    fit.add_argument("--target", help="target column (supervised algorithms)")
    fit.add_argument("--text-column", help="text column (text algorithms: ntm, vocabulary)")
    fit.add_argument("--param", action="append", metavar="KEY=VALUE", help="a hyperparameter (repeatable)")
    fit.add_argument("--out", required=True, help="where to save the model (a new Zarr folder)")
    fit.add_argument("--force", action="store_true", help="replace a daskstate model already at --out")
    fit.add_argument("--checkpoint", help="checkpoint path: resume a killed fit from it")
    fit.add_argument("--sample-weight", metavar="COLUMN",
                     help="column of row weights (scaler, pca, kmeans, linear models); not a feature")
    common(fit)

    pfit = sub.add_parser("partial-fit", help="fold new data into a saved model (only unseen inputs are read)")
    pfit.add_argument("model")
    pfit.add_argument("--input", required=True)
    pfit.add_argument("--out", help="save here instead of over MODEL")
    pfit.add_argument("--force", action="store_true", help="replace a daskstate model already at --out")
    pfit.add_argument("--checkpoint")
    pfit.add_argument("--sample-weight", metavar="COLUMN", help="column of row weights, as for fit")
    common(pfit)

    pred = sub.add_parser("predict", help="apply a saved model; streamed to CSV, Parquet or Zarr by extension")
    pred.add_argument("model")
    pred.add_argument("--input", required=True)
    pred.add_argument("--output", required=True, help="out.csv (one file), out.parquet (a folder), out.zarr")
    pred.add_argument("--force", action="store_true", help="replace an existing output whole")
    pred.add_argument("--method", help=f"one of {', '.join(APPLY_METHODS)} (default: predict or transform)")
    common(pred)

    info = sub.add_parser("info", help="what a saved model is and what it has seen")
    info.add_argument("model")
    info.add_argument("--json", action="store_true")
    debug(info)

    make = sub.add_parser("make-data", help="write the demo's Parquet dataset into a new folder")
    make.add_argument("folder")
    make.add_argument("--files", type=_positive_int, default=8, help="Parquet files (default 8)")
    make.add_argument("--rows-per-file", type=_positive_int, default=25_000, help="rows per file (default 25,000)")
    make.add_argument("--seed", type=int, default=0)
    debug(make)

    demo = sub.add_parser("demo", help="fit every algorithm on generated data on a local cluster")
    demo.add_argument("--workers", type=_positive_int, default=2, help="worker processes (default 2)")
    demo.add_argument("--keep", metavar="DIR", help="write the generated data to DIR (new or empty) and keep it")
    demo.add_argument("--wait", action="store_true", help="keep the cluster (and dashboard) until Enter")
    debug(demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = None
    _ACTIVE.clear()
    try:
        if args.command == "demo":
            from daskstate.demo import run_demo

            if args.keep and os.path.lexists(args.keep) and not (os.path.isdir(args.keep) and not os.listdir(args.keep)):
                raise ValueError(f"--keep {args.keep} exists and is not empty; give a new or empty folder")
            run_demo(workers=args.workers, keep_cluster=args.wait, data_dir=args.keep)
        elif args.command == "info":
            cmd_info(args)
        elif args.command == "make-data":
            cmd_make_data(args)
        else:
            command = {"fit": cmd_fit, "partial-fit": cmd_partial_fit, "predict": cmd_predict}[args.command]
            with cluster(args.scheduler, args.workers, args.report, args.timeout) as client:
                _ACTIVE["client"] = client
                command(args)
        return 0
    except Exception as exc:  # one clear line, unless --debug
        if getattr(args, "debug", False):
            raise
        message = str(exc)
        if type(exc).__name__ == "KilledWorker" or isinstance(exc, NoWorkersError):
            X = None
            with contextlib.suppress(Exception):
                from daskstate.data import read_input

                X = read_input(args.input)[0]
            message = (explain_killed_worker(exc, X, client, args.input) if type(exc).__name__ == "KilledWorker"
                       else f"{exc}; {_memory_advice(X, client, args.input)}")
        print(f"daskstate: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
