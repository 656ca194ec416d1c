"""Neural topic model side by side: daskstate NeuralTopicModel, scikit-learn online LDA, gensim LdaModel.

Real corpora: the Lee news background corpus bundled with gensim's tests, and the
long descriptions (READMEs) of the installed Python packages cut into paragraphs.
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
  the median reported, with the load average.

Peers' settings: scikit-learn ``LatentDirichletAllocation(learning_method="online",
max_iter=10)`` (its defaults otherwise); gensim ``LdaModel(passes=10)`` (defaults
otherwise: symmetric alpha 1/K, chunksize 2000). daskstate: defaults (ProdLDA:
Adam 0.002, beta_1 0.99, batch 64, early stopping on a 10% validation split, at
most 50 epochs). All on one thread of BLAS per process, threaded scheduler.

Usage::

    python -m benchmarks.bench_ntm                 # K = 20 and 50, 2 repeats
    python -m benchmarks.bench_ntm --ks 20 --repeats 1 --corpora lee

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


def package_paragraphs(min_words: int = 20) -> list[str]:
    docs = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata.get("Name") or ""):
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        docs += [p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= min_words]
    return docs


def synthetic_counts(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    from daskstate.algorithms.ntm import synthetic_lda_corpus

    X, topics, _ = synthetic_lda_corpus(20_000, 1000, 20, doc_length=100, alpha=0.1, seed=seed)
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
def fit_daskstate(X: sp.csr_matrix, K: int, seed: int) -> Any:
    import daskstate

    return daskstate.NeuralTopicModel(K, random_state=seed).fit(X)


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
    return out


def run_corpus(label: str, X: sp.csr_matrix, ks: list[int], repeats: int, seed: int,
               truth: np.ndarray | None = None) -> list[dict[str, Any]]:
    parts = split_corpus(X, seed)
    rows = []
    for K in ks:
        times: dict[str, list[float]] = {n: [] for n in FITS}
        models: dict[str, Any] = {}
        for _ in range(repeats):
            for name, fit in FITS.items():  # interleaved
                t0 = time.perf_counter()
                models[name] = fit(parts["train"], K, seed)
                times[name].append(time.perf_counter() - t0)
        for name in FITS:
            row = {"corpus": label, "K": K, "fit": name, "train_docs": parts["train"].shape[0],
                   "vocabulary": X.shape[1], "seconds": statistics.median(times[name]), "all_seconds": times[name],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpora", nargs="+", default=["lee", "packages", "synthetic"])
    parser.add_argument("--max-features", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-name", default="ntm")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import dask

    import daskstate
    from benchmarks.common import markdown_table, write_results

    dask.config.set(scheduler="threads")
    rows: list[dict[str, Any]] = []
    texts = {"lee": lee_corpus, "packages": package_paragraphs}
    for label in args.corpora:
        if label == "synthetic":
            X, truth = synthetic_counts(args.seed)
            rows += run_corpus("synthetic LDA (K=20)", X, args.ks, args.repeats, args.seed, truth)
            continue
        docs = texts[label]()
        voc = daskstate.Vocabulary(args.max_features, min_df=2, max_df=0.5).fit(docs)
        X = voc.transform(docs)
        rows += run_corpus(f"{label} ({len(docs)} docs)", X, args.ks, args.repeats, args.seed)
    cols = ["corpus", "K", "fit", "seconds", "completion_perplexity", "completion_perplexity_own_decoder", "npmi",
            "topic_uniqueness", "planted_mean_cosine", "epochs"]
    path = write_results(args.results_name, {"rows": rows, "args": vars(args)})
    print(markdown_table(rows, cols))
    print("wrote", path)


if __name__ == "__main__":
    main()
