"""Where a small topic-model fit spends its CPU time: the training steps against the trainer's fixed costs.

Fits :class:`daskstate.NeuralTopicModel` (defaults) on the training documents of
the gensim Lee corpus or the installed packages' descriptions (``--corpus``), as
``bench_ntm`` prepares them, and reports the process's CPU seconds of the fit and,
per part, this thread's CPU seconds *exclusive* of the other parts it calls (so
the parts add up to the fit): the step's forward pass, backward pass and Adam
update, the noise draws, the batch norms' running statistics, the rest of each
epoch's training loop, the validation scoring, the validation check, the state
copies, reading and preparing each partition, the word-count and topic-word
passes, the estimator's finalize; ``rest of the fit`` is the engine and trainer
code around them. Also how many Dask graphs of rounds the engine built
(``engine.build_rounds``). Repeats are interleaved with scikit-learn's online LDA
on the same counts, so the ratio of CPU seconds is measured in the same
conditions; the load average is recorded.

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
    """Wrap the functions whose CPU time (this thread's, exclusive of wrapped callees) and calls are counted."""
    from daskstate import engine, estimator, training
    from daskstate.algorithms import ntm, ntm_numerics

    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    inner: list[float] = []  # the wrapped callees' time of each open wrapped call
    adam = "adam_update" if hasattr(ntm_numerics, "adam_update") else "adam_step"
    targets = [(ntm_numerics, "forward", "step: forward"), (ntm_numerics, "backward", "step: backward"),
               (ntm_numerics, adam, "step: Adam"), (ntm_numerics, "draw_noise", "step: noise"),
               (ntm_numerics, "update_running", "step: running statistics"),
               (ntm.NTMState, "_train", "epoch: rest of the training loop"),
               (ntm.NTMState, "_evaluate", "validation scoring"), (training.SGDState, "_check", "validation check"),
               (ntm.NTMState, "read_batch", "partition: read"),
               (ntm.NTMState, "_training_batch", "partition: documents"),
               (ntm.NTMState, "_validation_mask", "partition: validation hash"),
               (estimator.StateEstimator, "_extra_pass", "word-count and topic-word passes"),
               (ntm.NeuralTopicModel, "_set_state", "finalize"), (ntm.NeuralTopicModel, "fit", "rest of the fit"),
               (engine, "build_rounds", "graphs built"), (engine, "_compute", "graphs computed")]
    # the method every copy goes through (earlier versions: copy)
    targets.append((ntm.NTMState, "_copy" if hasattr(ntm.NTMState, "_copy") else "copy", "state copies"))
    for owner, name, label in targets:
        original = getattr(owner, name)

        def wrapped(*args: Any, _f=original, _label=label, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            inner.append(0.0)
            try:
                return _f(*args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                seconds[_label] += spent - inner.pop()
                calls[_label] += 1
                if inner:
                    inner[-1] += spent

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
               "training_step_share": sum(v for k, v in best.items() if k.startswith("step: ") and
                                          k.endswith(" seconds")) / best["cpu_seconds"],
               "graphs_per_epoch": best.get("graphs built calls", 0) / best["epochs"],
               "all_cpu_seconds": [r["cpu_seconds"] for r in runs], "sklearn_cpu_seconds": sk,
               "cpu_vs_sklearn": statistics.median(r["cpu_seconds"] for r in runs) / statistics.median(sk),
               "loadavg": os.getloadavg()[0]}
        rows.append(row)
        print(f"{args.corpus}, K={K}: fit {best['cpu_seconds'] * 1e3:.0f} ms CPU ({best['epochs']} epochs), "
              f"{row['cpu_vs_sklearn']:.2f} x scikit-learn's; load {row['loadavg']:.1f}", flush=True)
        parts = sorted(((k[: -len(" seconds")], v) for k, v in best.items() if k.endswith(" seconds")
                        and k != "cpu_seconds"), key=lambda kv: -kv[1])
        for label, v in parts:
            print(f"  {label:36s} {v * 1e3:8.1f} ms {100 * v / best['cpu_seconds']:5.1f}%  "
                  f"calls {best.get(label + ' calls', 0)}", flush=True)
    print("wrote", write_results(args.results_name, {"rows": rows, "args": vars(args)}))


if __name__ == "__main__":
    main()
