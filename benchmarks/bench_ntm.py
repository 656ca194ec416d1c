"""Neural topic model side by side: daskstate NeuralTopicModel, scikit-learn online LDA, gensim LdaModel.

Real corpora: the Lee news background corpus bundled with gensim's tests, the
long descriptions (READMEs) of the installed Python packages cut into paragraphs,
and (``--corpora wiki``) the 250 stemmed Wikipedia articles of gensim's test data
cut into 300-word pieces.
Plus a synthetic corpus drawn from LDA's generative model with known topics.

Every model sees the same document-term counts (daskstate's Vocabulary:
``max_features``, ``min_df=2``, ``max_df=0.5``, fitted on the training documents)
and the same K (20 and 50). 20% of the documents are held out; each held-out
document's words are split at random in two halves:

- **document-completion perplexity**: topic proportions inferred from the first
  half, the second half scored under the mixture ``theta @ components``
  (``components_`` normalised to word distributions; gensim: ``get_topics()``);
  daskstate's ProdLDA is also scored under its own decoder (``predict_words``);
- **NPMI coherence** of each topic's top 10 words over the training documents
  (one function, :func:`daskstate.algorithms.ntm.npmi_coherence`, for all models);
- **topic uniqueness** of the top 10 words;
- **fit time**: repeats interleaved (daskstate, sklearn, gensim, daskstate, ...),
  the median wall and CPU seconds (the process's CPU time: on a shared, loaded
  machine the ratio of CPU times is the fairer comparison), with the load average.
  Each model is first fitted once, untimed, on 100 documents of each corpus (the
  first fit in a process paid one-off imports).

Peers' settings: scikit-learn ``LatentDirichletAllocation(learning_method="online",
max_iter=10)`` (its defaults otherwise); gensim ``LdaModel(passes=10)`` (defaults
otherwise: symmetric alpha 1/K, chunksize 2000). daskstate: defaults (ProdLDA with
a background log-frequency per word: Adam 0.01, beta_1 0.9, batch 64, early
stopping on a 10% validation split (patience 5, ``plateau_share`` 0.015), at most 50
epochs), or ``--ntm-params`` (JSON of hyperparameters, e.g. ``'{"plateau_share": 0}'``
for early stopping on ``tol`` alone, ``'{"background": false, "plateau_share": 0}'``
for the model before issue 12's last changes). BLAS threads: each library's own (OpenBLAS
starts one per core; numpy is imported before ``OMP_NUM_THREADS`` could be set, so
scikit-learn's products use both cores; daskstate runs as its states declare).
Threaded scheduler. ``seconds`` is wall time, ``cpu_seconds`` the process's.

``--scale`` measures instead, on LDA-generated text (pseudo-words) in Parquet
(``--docs`` documents, and 10x as many for the memory and Vocabulary runs):
documents/s and documents per CPU second of a fit (vocabulary pass, ``--epochs``
epochs, the validation scoring pass, topic-word pass) on 1 and 2 worker
processes, with each worker's CPU seconds and peak RSS and the workers' compute
seconds per task prefix; the workers' peak RSS of a 1-epoch fit on 2 workers at
1x and 10x the corpus; the Vocabulary pass against a plain read-and-tokenize
pass (every run in its own process; ``--parts`` picks the measurements).

Usage::

    python -m benchmarks.bench_ntm                 # K = 20 and 50, 2 repeats
    python -m benchmarks.bench_ntm --ks 20 --repeats 1 --corpora lee
    # early-stopping rules replayed on 60-epoch validation curves (4 corpora, K = 20 and 50, seeds 0 and 1)
    python -m benchmarks.bench_ntm --stopping --corpora lee packages wiki synthetic --synthetic-docs 5000
    # many interleaved repeats of daskstate and scikit-learn alone (the fit-time ratios)
    python -m benchmarks.bench_ntm --corpora lee packages --ks 50 --repeats 8 --fits daskstate sklearn
    python -m benchmarks.bench_ntm --scale --ks 20 --docs 20000 --epochs 2
    # 100k and 1M documents: peak RSS of each worker
    python -m benchmarks.bench_ntm --scale --ks 20 --docs 100000 --files 10 --epochs 1 --parts memory

Writes benchmarks/results/ntm.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import statistics
import time
from typing import Any

import numpy as np
import scipy.sparse as sp


# ---------------------------------------------------------------------------- corpora
def lee_corpus() -> list[str]:
    from gensim.test.utils import datapath

    with open(datapath("lee_background.cor"), encoding="utf-8", errors="replace") as fh:
        return [line.strip() for line in fh if line.strip()]


def wiki_pieces(words: int = 300) -> list[str]:
    """The 250 Wikipedia articles of gensim's ``head500.noblanks.cor`` (stemmed), cut into pieces of ``words`` words."""
    from gensim.test.utils import datapath

    with open(datapath("head500.noblanks.cor"), encoding="utf-8", errors="replace") as fh:
        articles = [line.split() for line in fh if line.strip()]
    return [" ".join(a[i : i + words]) for a in articles for i in range(0, len(a), words) if len(a[i : i + words]) >= 50]


#: distributions left out of the packages corpus by default: daskstate's own description is
#: its README, which changes with every commit, and a run from the repository root finds it
#: twice (the checkout's ``daskstate.egg-info`` besides the installed metadata), so the corpus
#: (721 vs 751 paragraphs) and its held-out split depended on where the benchmark ran
PACKAGES_EXCLUDED = ("daskstate",)


def package_paragraphs(min_words: int = 20, exclude: tuple[str, ...] = PACKAGES_EXCLUDED) -> list[str]:
    """Paragraphs of the long descriptions of the installed distributions, each distribution once."""
    docs, seen = [], set(exclude)
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata.get("Name") or ""):
        name = re.sub(r"[-_.]+", "-", (dist.metadata.get("Name") or "").lower())
        if name in seen:
            continue
        seen.add(name)
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        docs += [p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= min_words]
    return docs


def _all_package_paragraphs() -> list[str]:
    """The packages corpus with daskstate's own README paragraphs (corpus ``packages_all``)."""
    return package_paragraphs(exclude=())


#: the real text corpora by name (``--corpora``); ``synthetic`` is drawn from an LDA model
TEXT_CORPORA = {"lee": lee_corpus, "packages": package_paragraphs, "packages_all": _all_package_paragraphs,
                "wiki": wiki_pieces}


def synthetic_counts(n_docs: int, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    from daskstate.algorithms.ntm import synthetic_lda_corpus

    X, topics, _ = synthetic_lda_corpus(n_docs, 1000, 20, doc_length=100, alpha=0.1, seed=seed)
    return X, topics


def split_corpus(X: sp.csr_matrix, seed: int = 0) -> dict[str, sp.csr_matrix]:
    """Train / held-out documents; held-out words split in two halves (each word of a document independently)."""
    rng = np.random.default_rng(seed)
    X = X[np.asarray(X.sum(axis=1)).ravel() >= 4]
    order = rng.permutation(X.shape[0])
    n_test = max(1, X.shape[0] // 5)
    test, train = X[order[:n_test]], X[order[n_test:]]
    first = test.copy()
    first.data = rng.binomial(test.data.astype(np.int64), 0.5).astype(np.float64)
    second = test - first
    first.eliminate_zeros()
    second.eliminate_zeros()
    return {"train": train.tocsr(), "first": first.tocsr(), "second": second.tocsr()}


# ---------------------------------------------------------------------------- models
#: hyperparameters of the daskstate fits beyond K and the seed (``--ntm-params``)
NTM_PARAMS: dict[str, Any] = {}


def fit_daskstate(X: sp.csr_matrix, K: int, seed: int) -> Any:
    import daskstate

    return daskstate.NeuralTopicModel(K, random_state=seed, **NTM_PARAMS).fit(X)


def fit_sklearn(X: sp.csr_matrix, K: int, seed: int) -> Any:
    from sklearn.decomposition import LatentDirichletAllocation

    return LatentDirichletAllocation(K, learning_method="online", max_iter=10, random_state=seed).fit(X)


def fit_gensim(X: sp.csr_matrix, K: int, seed: int) -> Any:
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaModel

    corpus = Sparse2Corpus(X, documents_columns=False)
    return LdaModel(corpus, num_topics=K, id2word={i: str(i) for i in range(X.shape[1])}, passes=10,
                    random_state=seed)


FITS = {"daskstate NeuralTopicModel": fit_daskstate, "sklearn LDA (online)": fit_sklearn,
        "gensim LdaModel": fit_gensim}


def topics_and_theta(name: str, model: Any, first: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Topic-word distributions (rows sum to 1) and the held-out first halves' topic proportions."""
    if name.startswith("gensim"):
        from gensim.matutils import Sparse2Corpus, corpus2dense

        phi = model.get_topics()
        bows = Sparse2Corpus(first, documents_columns=False)
        theta = corpus2dense((model.get_document_topics(b, minimum_probability=0.0) for b in bows),
                             num_terms=model.num_topics, num_docs=first.shape[0]).T
    else:
        phi = model.components_ / model.components_.sum(axis=1, keepdims=True)
        theta = np.asarray(model.transform(first))
    theta = theta / np.maximum(theta.sum(axis=1, keepdims=True), 1e-300)
    return phi, theta


def completion_perplexity(P: np.ndarray, second: sp.csr_matrix) -> float:
    """``exp(-sum x log p / sum x)`` of the second halves under predicted word distributions ``P``."""
    logp = np.log(np.maximum(P, 1e-300))
    return float(np.exp(-second.multiply(logp).sum() / second.sum()))


def evaluate(name: str, model: Any, parts: dict[str, sp.csr_matrix]) -> dict[str, float]:
    from daskstate.algorithms import ntm_numerics as nn
    from daskstate.algorithms.ntm import npmi_coherence, topic_uniqueness

    phi, theta = topics_and_theta(name, model, parts["first"])
    top = nn.top_indices(phi, 10)
    out = {
        "completion_perplexity": completion_perplexity(theta @ phi, parts["second"]),
        "npmi": float(npmi_coherence(top, parts["train"]).mean()),
        "topic_uniqueness": float(topic_uniqueness(top).mean()),
    }
    if name.startswith("daskstate"):
        out["completion_perplexity_own_decoder"] = completion_perplexity(model.predict_words(parts["first"]),
                                                                         parts["second"])
        out["epochs"] = int(model.n_iter_)
        out["steps"] = int(model.state_.adam_t[0])
        out["stopped_by"] = model.state_.extra_meta.get("stopped_by")
    return out


def warm_up(X: sp.csr_matrix, seed: int) -> None:
    """Fit every model once on a few documents, untimed: the first fit in a process pays one-off imports."""
    for fit in FITS.values():
        fit(X[:100], 2, seed)


def run_corpus(label: str, X: sp.csr_matrix, ks: list[int], repeats: int, seed: int,
               truth: np.ndarray | None = None) -> list[dict[str, Any]]:
    parts = split_corpus(X, seed)
    warm_up(parts["train"], seed)
    rows = []
    for K in ks:
        times: dict[str, list[float]] = {n: [] for n in FITS}
        cpu: dict[str, list[float]] = {n: [] for n in FITS}
        models: dict[str, Any] = {}
        for _ in range(repeats):
            for name, fit in FITS.items():  # interleaved
                t0, c0 = time.perf_counter(), time.process_time()
                models[name] = fit(parts["train"], K, seed)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        sk_cpu = statistics.median(cpu["sklearn LDA (online)"])
        for name in FITS:
            row = {"corpus": label, "K": K, "fit": name, "train_docs": parts["train"].shape[0],
                   "vocabulary": X.shape[1], "seconds": statistics.median(times[name]), "all_seconds": times[name],
                   "cpu_seconds": statistics.median(cpu[name]), "all_cpu_seconds": cpu[name],
                   "cpu_vs_sklearn": statistics.median(cpu[name]) / sk_cpu,
                   "wall_vs_sklearn": statistics.median(times[name]) / statistics.median(times["sklearn LDA (online)"]),
                   "loadavg": os.getloadavg()[0], **evaluate(name, models[name], parts)}
            if truth is not None and K == len(truth):
                from daskstate.algorithms.ntm import match_topics

                phi, _ = topics_and_theta(name, models[name], parts["first"])
                sim = match_topics(phi, truth)
                row["planted_mean_cosine"], row["planted_min_cosine"] = float(sim.mean()), float(sim.min())
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "all_seconds"},
                  flush=True)
    return rows


# ---------------------------------------------------------------------------- scale: throughput and memory
def letters(i: np.ndarray) -> np.ndarray:
    """Distinct alphabetic pseudo-words (>= 3 letters) for word ids: base-26 digits as letters."""
    out = np.full(len(i), "", dtype=object)
    rest = np.asarray(i) + 26 * 26  # at least three digits
    while (rest > 0).any():
        out = np.char.add(np.array([chr(97 + d) for d in rest % 26], dtype=object).astype(str), out.astype(str))
        rest //= 26
    return out.astype(object)


def write_text_corpus(folder: str, n_docs: int, files: int, seed: int = 0, n_words: int = 5000, n_topics: int = 50,
                      doc_length: int = 80) -> dict[str, Any]:
    """LDA-generated documents as text (pseudo-words) in ``files`` Parquet files; reused if already there."""
    import json

    import pandas as pd

    desc = {"n_docs": n_docs, "files": files, "seed": seed, "n_words": n_words, "n_topics": n_topics,
            "doc_length": doc_length}
    marker = os.path.join(folder, "_corpus.json")
    if os.path.exists(marker):
        with open(marker) as fh:
            if json.load(fh) == desc:
                return desc
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = letters(np.arange(n_words))
    topics = rng.dirichlet(np.full(n_words, 0.05), size=n_topics)
    cum = np.cumsum(topics, axis=1)
    per_file = n_docs // files
    for f in range(files):
        theta = rng.dirichlet(np.full(n_topics, 0.1), size=per_file)
        z = (rng.random((per_file, doc_length))[..., None] > np.cumsum(theta, axis=1)[:, None, :]).sum(axis=2)
        z = np.minimum(z, n_topics - 1)
        u = rng.random((per_file, doc_length))
        words = np.empty((per_file, doc_length), dtype=np.int64)
        for k in np.unique(z):  # one vectorised search per topic
            mask = z == k
            words[mask] = np.minimum(np.searchsorted(cum[k], u[mask]), n_words - 1)
        body = [" ".join(row) for row in vocab[words].tolist()]
        pd.DataFrame({"body": body}).to_parquet(os.path.join(folder, f"part-{f:04d}.parquet"),
                                                row_group_size=max(1, per_file // 2), index=False)
    with open(marker, "w") as fh:
        json.dump(desc, fh)
    return desc


def tokenize_floor_job(folder: str) -> dict:
    """Read the text column and tokenize it (the work any vocabulary pass must do), nothing else."""
    import dask

    import daskstate
    from daskstate.text import Tokenizer

    c0 = time.process_time()
    ddf = daskstate.read_parquet(folder, columns=["body"])
    tok = Tokenizer()

    def count(part) -> int:
        return len(tok.tokenize(part["body"])[0])

    with dask.config.set(scheduler="threads"):
        tokens = sum(dask.compute(*[dask.delayed(count)(p) for p in ddf.to_delayed()]))
    return {"tokens": int(tokens), "cpu_seconds": time.process_time() - c0}


def vocabulary_job(folder: str) -> dict:
    import dask

    import daskstate

    c0 = time.process_time()
    with dask.config.set(scheduler="threads"):
        voc = daskstate.Vocabulary(2000, min_df=5, max_df=0.5, text_column="body").fit(
            daskstate.read_parquet(folder))
    return {"tokens": voc.n_tokens_, "terms": len(voc.vocabulary_), "state_bytes": voc.state_.nbytes,
            "cpu_seconds": time.process_time() - c0}


def worker_usage() -> dict:
    """A worker process's CPU seconds so far and its peak RSS (run on the workers by ``Client.run``)."""
    from benchmarks.common import own_peak_rss_mb

    return {"cpu_seconds": time.process_time(), "peak_rss_mb": own_peak_rss_mb()}


def task_seconds(records: list[dict]) -> dict[str, float]:
    """Compute seconds the workers spent per task prefix (``ntm-update``, ``vocabulary-merge``, ...)."""
    from dask.utils import key_split

    out: dict[str, float] = {}
    for rec in records:
        busy = sum(s["stop"] - s["start"] for s in rec.get("startstops", ()) if s.get("action") == "compute")
        name = key_split(rec["key"])
        out[name] = out.get(name, 0.0) + busy
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def ntm_job(folder: str, workers: int, epochs: int, K: int) -> dict:
    """Vocabulary pass + ``epochs`` epochs + the topic-word pass, on ``workers`` processes (0: threads).

    On worker processes it also reports each worker's peak RSS and CPU seconds
    spent in the fit, and the workers' compute seconds per task prefix (Dask's
    task stream): which pass costs what.
    """
    import dask

    import daskstate

    def fit() -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        model = daskstate.NeuralTopicModel(K, epochs=epochs, early_stopping_patience=0, max_features=2000, min_df=5,
                                           text_column="body", random_state=0).fit(daskstate.read_parquet(folder))
        return {"fit_seconds": time.perf_counter() - t0, "driver_cpu_seconds": time.process_time() - c0,
                "docs": model.n_samples_seen_, "state_bytes": model.state_.nbytes}

    if workers == 0:
        with dask.config.set(scheduler="threads"):
            out = fit()
        out["cpu_seconds"] = out["driver_cpu_seconds"]
        return out
    from distributed import Client, LocalCluster, get_task_stream

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        before = client.run(worker_usage)
        with get_task_stream(client) as stream:
            out = fit()
        after = client.run(worker_usage)
        out["worker_cpu_seconds"] = [after[w]["cpu_seconds"] - before[w]["cpu_seconds"] for w in sorted(after)]
        out["worker_peak_rss_mb"] = [after[w]["peak_rss_mb"] for w in sorted(after)]
        out["cpu_seconds"] = out["driver_cpu_seconds"] + sum(out["worker_cpu_seconds"])
        out["task_seconds"] = task_seconds(stream.data)
    return out


def scale_row(name: str, docs: int, passes: int, r: dict[str, Any]) -> dict[str, Any]:
    """A result row: documents per second (wall) and per CPU second, per pass over the data."""
    res = r.get("result", {})
    secs = res.get("fit_seconds", r.get("seconds"))
    cpu = res.get("cpu_seconds")
    return {"run": name, "docs": docs, "passes": passes, "loadavg": list(os.getloadavg()),
            "docs_per_second_per_pass": docs * passes / secs if secs else None,
            "docs_per_cpu_second_per_pass": docs * passes / cpu if cpu else None, **r}


def run_scale(folder: str, n_docs: int, files: int, epochs: int, K: int, repeats: int,
              parts: tuple[str, ...] = ("throughput", "memory", "vocabulary"), vocabulary_size: str = "10x"
              ) -> dict[str, Any]:
    """Throughput on 1 and 2 worker processes (``n_docs``); peak RSS at ``n_docs`` and 10x; Vocabulary vs floor.

    A fit reads (and tokenizes) the data ``epochs + 3`` times: the vocabulary,
    the epochs, the final scoring of the validation documents, the topic words;
    ``docs_per_second_per_pass`` is ``docs * (epochs + 3) / seconds``. Every run
    is its own process; runs of a part are interleaved.
    """
    from benchmarks.common import run_measured

    small, large = os.path.join(folder, "1x"), os.path.join(folder, "10x")
    write_text_corpus(small, n_docs, files)
    if "memory" in parts or vocabulary_size == "10x":
        write_text_corpus(large, 10 * n_docs, 10 * files)
    out: dict[str, Any] = {"docs": n_docs, "files": files, "epochs": epochs, "K": K, "rows": []}

    def record(name: str, docs: int, passes: int, r: dict[str, Any]) -> None:
        out["rows"].append(scale_row(name, docs, passes, r))
        print({k: v for k, v in out["rows"][-1].items() if k != "result"}, out["rows"][-1].get("result"), flush=True)

    ntm_passes = epochs + 3
    for _ in range(repeats if "throughput" in parts else 0):  # interleaved: 1 and 2 processes
        for workers in (1, 2):
            r = run_measured(ntm_job, folder=small, workers=workers, epochs=epochs, K=K)
            record(f"NTM, {workers} worker process{'es' if workers > 1 else ''}", n_docs, ntm_passes, r)
    if "memory" in parts:  # peak RSS at 1x and 10x the corpus, 1 epoch on 2 worker processes
        for size, path in [(n_docs, small), (10 * n_docs, large)]:
            r = run_measured(ntm_job, folder=path, workers=2, epochs=1, K=K)
            record("NTM, 2 worker processes, 1 epoch (memory)", size, 4, r)
    if "vocabulary" in parts:
        size, path = (10 * n_docs, large) if vocabulary_size == "10x" else (n_docs, small)
        for _ in range(repeats):  # interleaved: floor, Vocabulary
            for name, job in [("read+tokenize floor", tokenize_floor_job), ("Vocabulary", vocabulary_job)]:
                record(name, size, 1, run_measured(job, folder=path))
    return out


# ---------------------------------------------------------------------------- early-stopping rules, replayed
def validation_curve(X: sp.csr_matrix, K: int, seed: int, epochs: int) -> dict[str, Any]:
    """The validation loss per word of each of ``epochs`` epochs (no early stopping) and Adam's steps per epoch."""
    import daskstate

    model = daskstate.NeuralTopicModel(K, random_state=seed, epochs=epochs, early_stopping_patience=0,
                                       plateau_share=0.0, **NTM_PARAMS).fit(X)
    losses = model.history_[:, 2]
    return {"validation_loss": losses.tolist(), "steps_per_epoch": float(model.state_.adam_t[0]) / len(losses)}


def epochs_under_rule(losses: list[float], steps_per_epoch: float, patience: int = 5, tol: float = 1e-3,
                      plateau_share: float = 0.0) -> tuple[int, int]:
    """Epochs a topic model trains, and its best epoch, when its epochs' validation losses are ``losses``.

    Replays the trainer's own checks (``SGDState.end_epoch``) on a tiny model.
    """
    import daskstate

    X = sp.csr_matrix(np.eye(6) * 3.0)
    state = daskstate.NeuralTopicModel(2, epochs=1, random_state=0, encoder_layers=(4,), validation_fraction=0.0,
                                       plateau_share=plateau_share).fit(X).state_.resume_training()
    for epoch, loss in enumerate(losses):
        state.adam_t[:] = steps_per_epoch * (epoch + 1)
        state.ev_loss[:], state.ev_n[:] = loss * 1000.0, 1000.0
        state.anchor_weights = state.weights + epoch
        if state.end_epoch(patience, tol):
            break
    return epoch + 1, int(np.argmin(losses[: epoch + 1]))


#: the early-stopping rules ``--stopping`` replays: name -> (tol, plateau_share)
STOPPING_RULES = {"tol 1e-3 alone": (1e-3, 0.0), "share 0.01": (1e-3, 0.01), "share 0.015": (1e-3, 0.015),
                  "share 0.02": (1e-3, 0.02), "share 0.05": (1e-3, 0.05), "tol 2e-3 alone": (2e-3, 0.0)}


def run_stopping(corpora: dict[str, sp.csr_matrix], ks: list[int], seeds: list[int], epochs: int
                 ) -> list[dict[str, Any]]:
    """Record each corpus / K / seed's validation curve once, then the epochs (and Adam steps) each rule trains."""
    rows = []
    for label, X in corpora.items():
        train = split_corpus(X, 0)["train"]
        for K in ks:
            for seed in seeds:
                curve = validation_curve(train, K, seed, epochs)
                row = {"corpus": label, "K": K, "seed": seed, **curve}
                for rule, (tol, share) in STOPPING_RULES.items():  # at most the default 50 epochs
                    run, best = epochs_under_rule(curve["validation_loss"][:50], curve["steps_per_epoch"], tol=tol,
                                                  plateau_share=share)
                    row[rule] = {"epochs": run, "best_epoch": best, "steps": run * curve["steps_per_epoch"]}
                rows.append(row)
                print(label, K, seed, {r: row[r]["epochs"] for r in STOPPING_RULES}, flush=True)
    totals = {rule: sum(r[rule]["steps"] for r in rows) for rule in STOPPING_RULES}
    print("Adam steps in all:", {k: round(v) for k, v in totals.items()}, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpora", nargs="+", default=["lee", "packages", "synthetic"])
    parser.add_argument("--max-features", type=int, default=2000)
    parser.add_argument("--synthetic-docs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-name", default="ntm")
    parser.add_argument("--ntm-params", default="{}", help="JSON: NeuralTopicModel hyperparameters for the daskstate fits")
    parser.add_argument("--stopping", action="store_true",
                        help="instead: record validation curves without early stopping and replay the rules on them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="--stopping: the fits' seeds")
    parser.add_argument("--stopping-epochs", type=int, default=60, help="--stopping: epochs per curve")
    parser.add_argument("--fits", nargs="+", default=["daskstate", "sklearn", "gensim"],
                        choices=["daskstate", "sklearn", "gensim"],
                        help="which models to fit (scikit-learn's always: the ratios are to it); without gensim, "
                             "more repeats of the interleaved daskstate / scikit-learn pair fit in the same time")
    parser.add_argument("--scale", action="store_true",
                        help="instead: throughput (1 and 2 worker processes), Vocabulary vs read+tokenize, RSS at 10x")
    parser.add_argument("--data", default="/tmp/daskstate-bench-ntm", help="folder for the --scale corpora")
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--parts", nargs="+", default=["throughput", "memory", "vocabulary"],
                        choices=["throughput", "memory", "vocabulary"], help="--scale: which measurements")
    parser.add_argument("--vocabulary-size", choices=["1x", "10x"], default="10x",
                        help="--scale: the corpus of the Vocabulary vs read+tokenize runs")
    args = parser.parse_args()
    import json

    NTM_PARAMS.update(json.loads(args.ntm_params))
    chosen = {*args.fits, "sklearn"}
    for name in [n for n in FITS if n.split()[0] not in chosen]:
        del FITS[name]
    if args.stopping:
        from benchmarks.common import write_results

        corpora = {}
        for label in args.corpora:
            if label == "synthetic":
                corpora[f"synthetic LDA (K=20, {args.synthetic_docs} docs)"] = synthetic_counts(args.synthetic_docs,
                                                                                                args.seed)[0]
            else:
                docs = TEXT_CORPORA[label]()
                import daskstate

                corpora[label] = daskstate.Vocabulary(args.max_features, min_df=2, max_df=0.5).fit(docs).transform(docs)
        rows = run_stopping(corpora, args.ks, args.seeds, args.stopping_epochs)
        print("wrote", write_results(args.results_name, {"rows": rows, "rules": STOPPING_RULES, "args": vars(args)}))
        return
    if args.scale:
        from benchmarks.common import write_results

        result = run_scale(args.data, args.docs, args.files, args.epochs, args.ks[0], args.repeats,
                           tuple(args.parts), args.vocabulary_size)
        print("wrote", write_results(args.results_name if args.results_name != "ntm" else "ntm_scale",
                                     {**result, "args": vars(args)}))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import dask

    import daskstate
    from benchmarks.common import markdown_table, write_results

    dask.config.set(scheduler="threads")
    rows: list[dict[str, Any]] = []
    texts = TEXT_CORPORA
    for label in args.corpora:
        if label == "synthetic":
            X, truth = synthetic_counts(args.synthetic_docs, args.seed)
            rows += run_corpus(f"synthetic LDA (K=20, {args.synthetic_docs} docs)", X, args.ks, args.repeats,
                               args.seed, truth)
            continue
        docs = texts[label]()
        voc = daskstate.Vocabulary(args.max_features, min_df=2, max_df=0.5).fit(docs)
        X = voc.transform(docs)
        rows += run_corpus(f"{label} ({len(docs)} docs)", X, args.ks, args.repeats, args.seed)
    cols = ["corpus", "K", "fit", "seconds", "cpu_seconds", "cpu_vs_sklearn", "wall_vs_sklearn", "completion_perplexity",
            "completion_perplexity_own_decoder", "npmi", "topic_uniqueness", "planted_mean_cosine", "epochs", "loadavg"]
    path = write_results(args.results_name, {"rows": rows, "args": vars(args)})
    print(markdown_table(rows, cols))
    print("wrote", path)


if __name__ == "__main__":
    main()
