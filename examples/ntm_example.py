"""Topics of a text column in Parquet: a streaming vocabulary, then a neural topic model trained in rounds.

The corpus is real text: the Lee news corpus bundled with gensim's tests and the
long descriptions of the installed Python packages, one paragraph per document.

Run: python examples/ntm_example.py
"""

import importlib.metadata
import os
import re
import tempfile

import numpy as np
import pandas as pd
from gensim.test.utils import datapath

import daskstate


def documents() -> list[str]:
    with open(datapath("lee_background.cor"), encoding="utf-8", errors="replace") as fh:
        docs = [line.strip() for line in fh if line.strip()]
    for dist in importlib.metadata.distributions():
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        docs += [p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 20]
    return docs


if __name__ == "__main__":
    docs = documents()
    rng = np.random.default_rng(0)
    rng.shuffle(docs)
    with tempfile.TemporaryDirectory() as folder:
        half = len(docs) // 2
        for name, part in [("first", docs[:half]), ("second", docs[half:])]:
            pd.DataFrame({"body": part, "n": np.arange(len(part))}).to_parquet(
                os.path.join(folder, f"{name}.parquet"), row_group_size=200)
        ddf = daskstate.read_parquet(folder)

        # one pass: term and document frequencies (bounded memory); any vocabulary from the same state
        voc = daskstate.Vocabulary(max_features=2000, min_df=3, max_df=0.5, text_column="body").fit(ddf)
        print(f"{voc.n_documents_} documents, {voc.n_tokens_} tokens -> {len(voc.vocabulary_)} terms "
              f"(exact counts: {voc.count_error_bound_ == 0})")
        print("500 most frequent, without reading the text again:", len(voc.finalize(max_features=500).vocabulary_))

        # ProdLDA: epochs of synchronised rounds, early stopping on a held-out 10% of the documents
        ntm = daskstate.NeuralTopicModel(10, vocabulary=voc, text_column="body", epochs=20, random_state=0)
        ntm.fit(ddf)
        print(f"trained {ntm.n_iter_} epochs; validation loss per word {ntm.validation_loss_[-1]:.3f}")
        for k, words in enumerate(ntm.top_words(8)):
            print(f"  topic {k:2d}: {' '.join(words)}")
        print("NPMI coherence per topic:", ntm.coherence(ddf).round(3))
        print(f"topic uniqueness {ntm.topic_uniqueness():.3f}; perplexity {ntm.perplexity(ddf):.1f}")

        theta = ntm.transform(ddf)  # lazy for Dask input: a Dask Array of topic proportions
        print("document-topic proportions:", type(theta).__name__, theta.shape, "first row",
              theta[:1].compute().round(2))

        ntm.save(os.path.join(folder, "ntm.zarr"))
        back = daskstate.load(os.path.join(folder, "ntm.zarr"))
        print("loaded model, same topics:", np.allclose(back.components_, ntm.components_))
