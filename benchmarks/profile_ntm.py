"""Where a small topic-model fit spends its CPU time: the training steps against the trainer's fixed costs.

Fits :class:`daskstate.NeuralTopicModel` (defaults) on the training documents of
the gensim Lee corpus or the installed packages' descriptions (``--corpus``), as
``bench_ntm`` prepares them, and reports the process's
CPU seconds of the fit, the share spent inside the training steps
(``ntm_numerics.train_step``), the validation scoring and the state copies, and
how many Dask graphs of rounds the engine built (``engine.build_rounds``).
Repeats are interleaved with scikit-learn's online LDA on the same counts, so the
ratio of CPU seconds is measured in the same conditions; the load average is recorded.

Usage::

    python -m benchmarks.profile_ntm --repeats 3 [--ks 20 50] [--corpus packages] [--results-name ntm_profile]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import time
from typing import Any


def _instrument() -> tuple[collections.Counter, collections.Counter]:
    """Wrap the functions whose CPU time (this thread's) and calls are counted."""
    from daskstate import engine
    from daskstate.algorithms import ntm, ntm_numerics

    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    targets = [(ntm_numerics, "train_step", "training steps"), (ntm.NTMState, "_evaluate", "validation scoring"),
               (engine, "build_rounds", "graphs built"), (engine, "_compute", "graphs computed")]
    # the method every copy goes through (earlier versions: copy)
    targets.append((ntm.NTMState, "_copy" if hasattr(ntm.NTMState, "_copy") else "copy", "state copies"))
    for owner, name, label in targets:
        original = getattr(owner, name)

        def wrapped(*args: Any, _f=original, _label=label, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return _f(*args, **kwargs)
            finally:
                seconds[_label] += time.thread_time() - t0
                calls[_label] += 1

        setattr(owner, name, functools.wraps(original)(wrapped))
    return seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[20])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results-name", default="ntm_profile")
    parser.add_argument("--corpus", choices=["lee", "packages"], default="lee")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import dask

    import daskstate
    from benchmarks.bench_ntm import (
        fit_sklearn,
        lee_corpus,
        package_paragraphs,
        split_corpus,
        warm_up,
    )
    from benchmarks.common import write_results

    dask.config.set(scheduler="sync")  # every task on this thread, so thread CPU time sees them all
    docs = lee_corpus() if args.corpus == "lee" else package_paragraphs()
    X = daskstate.Vocabulary(2000, min_df=2, max_df=0.5).fit(docs).transform(docs)
    train = split_corpus(X, 0)["train"]
    warm_up(train, 0)
    seconds, calls = _instrument()
    rows = []
    for K in args.ks:
        runs: list[dict[str, Any]] = []
        sk = []
        for _ in range(args.repeats):  # interleaved
            seconds.clear()
            calls.clear()
            c0 = time.process_time()
            model = daskstate.NeuralTopicModel(K, random_state=0).fit(train)
            total = time.process_time() - c0
            runs.append({"cpu_seconds": total, "epochs": int(model.n_iter_),
                         **{f"{k} seconds": v for k, v in seconds.items()},
                         **{f"{k} calls": v for k, v in calls.items()}})
            c0 = time.process_time()
            fit_sklearn(train, K, 0)
            sk.append(time.process_time() - c0)
        best = min(runs, key=lambda r: r["cpu_seconds"])
        row = {"corpus": args.corpus, "K": K, "train_docs": train.shape[0], "vocabulary": train.shape[1], **best,
               "training_step_share": best.get("training steps seconds", 0.0) / best["cpu_seconds"],
               "graphs_per_epoch": best.get("graphs built calls", 0) / best["epochs"],
               "all_cpu_seconds": [r["cpu_seconds"] for r in runs], "sklearn_cpu_seconds": sk,
               "cpu_vs_sklearn": statistics.median(r["cpu_seconds"] for r in runs) / statistics.median(sk),
               "loadavg": os.getloadavg()[0]}
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    print("wrote", write_results(args.results_name, {"rows": rows, "args": vars(args)}))


if __name__ == "__main__":
    main()
