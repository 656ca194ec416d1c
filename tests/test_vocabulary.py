"""The streaming vocabulary: one pass, mergeable, finalize without reading the text again."""

from __future__ import annotations

import importlib.metadata
import os

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import daskstate
from daskstate.algorithms.vocabulary import Vocabulary, VocabularyState
from daskstate.errors import DataError, SchemaError
from daskstate.text import ENGLISH_STOP_WORDS, TOKEN_PATTERN, text_input, text_schema


def _gensim_corpus(name: str) -> list[str]:
    from gensim.test.utils import datapath

    with open(datapath(name), encoding="utf-8", errors="replace") as fh:
        return [line.strip() for line in fh if line.strip()]


def _package_descriptions(min_chars: int = 300) -> list[str]:
    docs = []
    for dist in importlib.metadata.distributions():
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if len(text) >= min_chars:
            docs.append(text)
    return docs


CORPORA = {
    "lee_background": lambda: _gensim_corpus("lee_background.cor"),
    "pang_lee_polarity": lambda: _gensim_corpus("pang_lee_polarity.cor"),
    "package_descriptions": _package_descriptions,
}


def _sklearn_reference(docs, **kw):
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words=sorted(ENGLISH_STOP_WORDS), **kw)
    return cv, cv.fit_transform(docs)


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_matches_count_vectorizer_on_real_corpora(corpus):
    docs = CORPORA[corpus]()
    assert len(docs) >= 50
    ddf = dd.from_pandas(pd.DataFrame({"body": docs, "id": np.arange(len(docs))}), npartitions=4)
    voc = Vocabulary(max_features=300, min_df=2, max_df=0.5, text_column="body").fit(ddf)
    cv, ref = _sklearn_reference(docs, max_features=300, min_df=2, max_df=0.5)
    assert voc.state_.totals[1] == 0  # exact: capacity not reached
    # CountVectorizer breaks ties at the max_features cut differently; compare where counts differ
    ours, theirs = set(voc.get_feature_names_out()), set(cv.get_feature_names_out())
    tf = dict(zip(voc.state_.table().terms, voc.state_.tf, strict=True))
    cut = min(tf[t] for t in ours)
    assert {t for t in ours ^ theirs if tf[t] != cut} == set()
    # same vocabulary -> same counts
    cv2, ref2 = _sklearn_reference(docs, vocabulary=list(voc.get_feature_names_out()))
    X = voc.transform(docs)
    assert X.shape == ref2.shape and (X != ref2).nnz == 0
    lazy = voc.transform(ddf)
    assert (lazy.compute() != ref2).nnz == 0


def test_finalize_picks_another_vocabulary_without_reading_text():
    docs = CORPORA["lee_background"]()
    voc = Vocabulary().fit(iter_once(docs))  # an iterator: it cannot be read twice
    small = voc.finalize(max_features=50, min_df=3)
    _, ref = _sklearn_reference(docs, max_features=50, min_df=3)
    assert len(small.vocabulary_) == 50 and small.max_features == 50
    assert small.document_frequency_.min() >= 3
    assert len(voc.vocabulary_) > 1000  # the original is unchanged
    frac = voc.finalize(min_df=0.05, max_df=0.2)
    assert (frac.document_frequency_ >= np.ceil(0.05 * len(docs))).all()
    assert (frac.document_frequency_ <= 0.2 * len(docs)).all()


def iter_once(docs):
    def gen():
        yield from docs

    return pd.Series(list(gen()))


def test_merge_of_parts_equals_one_pass_and_partial_fit_grows(tmp_path):
    docs = CORPORA["package_descriptions"]()
    half = len(docs) // 2
    frame = pd.DataFrame({"text": docs})
    os.makedirs(tmp_path / "data")
    frame.iloc[:half].to_parquet(tmp_path / "data" / "a.parquet")
    whole = Vocabulary().fit(frame)
    first = Vocabulary().fit(daskstate.read_parquet(tmp_path / "data"))
    assert first.n_documents_ == half
    frame.iloc[half:].to_parquet(tmp_path / "data" / "b.parquet")
    grown = first.partial_fit(daskstate.read_parquet(tmp_path / "data"))  # reads only b.parquet
    assert grown.n_documents_ == len(docs)
    assert grown.vocabulary_ == whole.vocabulary_
    np.testing.assert_array_equal(grown.term_frequency_, whole.term_frequency_)
    np.testing.assert_array_equal(grown.document_frequency_, whole.document_frequency_)


def test_capacity_bounds_memory_and_the_error_bound_holds():
    docs = CORPORA["lee_background"]()
    exact = Vocabulary(min_df=1).fit(docs).state_
    bounded = daskstate.fold(text_input(docs, None, rows=40), VocabularyState(text_schema("text"), {
        **Vocabulary(capacity=500)._state_params(None)}))
    assert len(bounded.tf) <= 500 and bounded.nbytes < exact.nbytes / 5
    deficit = int(bounded.totals[1])
    assert 0 < deficit <= (bounded.totals[0] - bounded.tf.sum()) / 501
    truth = dict(zip(exact.table().terms, zip(exact.tf, exact.df, strict=True), strict=True))
    for term, tf, df in zip(bounded.table().terms, bounded.tf, bounded.df, strict=True):
        assert truth[term][0] - deficit <= tf <= truth[term][0]
        assert truth[term][1] - deficit <= df <= truth[term][1]
    # every term frequent enough to matter is kept
    heavy = [t for t, (tf, _) in truth.items() if tf > deficit]
    assert set(heavy) <= set(bounded.table().terms)


def test_bad_documents_and_columns_raise_naming_where():
    ddf = dd.from_pandas(pd.DataFrame({"body": ["fine words here", None, "", "more words"] * 3}), npartitions=2)
    voc = Vocabulary(text_column="body").fit(ddf)
    assert voc.n_documents_ == 12 and voc.state_.totals[2] == 6  # null and empty documents are empty
    # (Dask turns object columns into strings itself; pandas keeps what it was given)
    bad = pd.DataFrame({"body": ["text words", 3.5, "more words", b"bytes"]}, dtype=object)
    with pytest.raises(DataError, match=r"partition 0 \(text-.*\): 2 document\(s\) are not strings \(first at row 1"):
        Vocabulary(text_column="body").fit(bad)
    with pytest.raises(SchemaError, match="text column 'nope' is missing"):
        Vocabulary(text_column="nope").fit(ddf)
    with pytest.raises(ValueError, match="min_df"):
        Vocabulary(min_df=-1).fit(["x"])
    with pytest.raises(SchemaError, match="text column 'body' is missing"):
        voc.partial_fit(pd.DataFrame({"other": ["words words"]}))


def test_save_and_load_without_pickle(tmp_path):
    voc = Vocabulary(max_features=100).fit(CORPORA["pang_lee_polarity"]())
    voc.save(tmp_path / "voc.zarr")
    back = daskstate.load(tmp_path / "voc.zarr")
    assert back.vocabulary_ == voc.vocabulary_
    assert (back.transform(["a good film"]) != voc.transform(["a good film"])).nnz == 0
