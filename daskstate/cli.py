"""The ``daskstate`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daskstate", description="Train models from fixed-size states on Dask.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit every algorithm on generated data on a local cluster")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument("--keep", action="store_true", help="keep the cluster (and dashboard) until Enter")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from daskstate.demo import run_demo

            run_demo(workers=args.workers, keep_cluster=args.keep)
        return 0
    except Exception as exc:  # one clear line, unless --debug
        if args.debug:
            raise
        print(f"daskstate: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
