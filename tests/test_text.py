"""Tokenizer, stop words, per-batch counts, and the bounded term-frequency table."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskstate.errors import DataError
from daskstate.text import (
    ENGLISH_STOP_WORDS,
    TOKEN_PATTERN,
    FrequentTerms,
    Tokenizer,
    count_matrix,
    count_tokens,
    decode_strings,
    encode_strings,
)


def test_tokenizer_lowercases_keeps_alphabetic_tokens_of_three_letters_and_drops_stop_words():
    tokens, docs = Tokenizer().tokenize(["The Cat's 3 cats ate 42 fish_sticks, naïvely!", "a an of", "Über alles"])
    assert list(tokens) == ["cat", "cats", "ate", "naïvely", "über", "alles"]
    assert docs.tolist() == [0, 0, 0, 0, 2, 2]


def test_tokenizer_overrides():
    tok = Tokenizer(token_pattern=r"\b\w+\b", stop_words=["b"], lowercase=False)
    tokens, docs = tok.tokenize(["A b c1", "the"])
    assert list(tokens) == ["A", "c1", "the"] and docs.tolist() == [0, 0, 1]
    assert Tokenizer(stop_words=None).tokenize(["the cat"])[0].tolist() == ["the", "cat"]
    with pytest.raises(ValueError, match="token_pattern"):
        Tokenizer(token_pattern="(")
    with pytest.raises(ValueError, match="stop_words"):
        Tokenizer(stop_words="french")


# letters of several scripts, digits (ASCII and not), non-decimal numerics, underscore, combining marks,
# punctuation and every kind of whitespace str.split() knows, so chunks of every shape occur
TRICKY = "abcxyzÉéßİıΣσςДжあ漢" + "019٣" + "²½Ⅷ" + "_" + "\u0301\u0308" + ".,'-!@(" + " \t\n\x0b\x1c\x1f\u00a0\u2003\u3000"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=TRICKY, max_size=40), max_size=6), st.booleans())
def test_default_pattern_fast_path_equals_the_regular_expression(docs, lowercase):
    # the default pattern skips the regex on all-letter chunks; the result must be the regex's own
    tok = Tokenizer(lowercase=lowercase)
    tokens, where = tok.tokenize(docs)
    expected = [(t, i) for i, d in enumerate(docs) for t in re.findall(TOKEN_PATTERN, d.lower() if lowercase else d)
                if t not in ENGLISH_STOP_WORDS]
    assert list(zip(tokens.tolist(), where.tolist(), strict=True)) == expected


def test_tokens_equal_the_regular_expression_on_real_text():
    from benchmarks.bench_ntm import lee_corpus, package_paragraphs

    for docs in (lee_corpus()[:100], package_paragraphs()[:300]):
        tokens, where = Tokenizer(stop_words=None).tokenize(docs)
        expected = [t for d in docs for t in re.findall(TOKEN_PATTERN, d.lower())]
        assert tokens.tolist() == expected and len(expected) > 1000
        assert np.all(np.diff(where) >= 0)


def test_stop_words_are_lowercase_words_the_default_pattern_can_match():
    assert len(ENGLISH_STOP_WORDS) > 200
    assert all(w.isalpha() and w.islower() and len(w) >= 3 for w in ENGLISH_STOP_WORDS)
    assert {"the", "and", "which", "would"} <= ENGLISH_STOP_WORDS
    assert not {"model", "data", "python"} & ENGLISH_STOP_WORDS


def test_missing_documents_are_empty_and_non_strings_raise_naming_the_row():
    tokens, docs = Tokenizer().tokenize(pd.Series([None, "hello world", np.nan, ""]))
    assert list(tokens) == ["hello", "world"] and docs.tolist() == [1, 1]
    with pytest.raises(DataError, match=r"partition 3: 1 document\(s\) are not strings \(first at row 1: int 7"):
        Tokenizer().tokenize(["fine text", 7, None], where="partition 3")
    with pytest.raises(DataError, match="single string"):
        Tokenizer().tokenize("one string")


def test_count_tokens_and_count_matrix_agree_with_scikit_learn():
    from sklearn.feature_extraction.text import CountVectorizer

    docs = ["the quick brown fox", "quick quick dog", "", "brown dogs and the fox fox"]
    tok = Tokenizer()
    tokens, where = tok.tokenize(docs)
    terms, tf, df = count_tokens(tokens, where)
    cv = CountVectorizer(token_pattern=r"(?u)\b[^\W\d_]{3,}\b", stop_words=sorted(ENGLISH_STOP_WORDS))
    ref = cv.fit_transform(docs)
    assert list(terms) == list(cv.get_feature_names_out())
    assert tf.tolist() == np.asarray(ref.sum(axis=0)).ravel().tolist()
    assert df.tolist() == np.asarray((ref > 0).sum(axis=0)).ravel().tolist()
    X = count_matrix(tokens, where, pd.Index(terms), len(docs))
    assert X.format == "csr" and X.shape == ref.shape
    assert (X != ref).nnz == 0


def test_strings_round_trip_through_numeric_arrays():
    words = ["ümlaut", "", "naïve", "x" * 300, "日本語"]
    data, offsets = encode_strings(words)
    assert data.dtype == np.uint8 and offsets.dtype == np.int64
    assert list(decode_strings(data, offsets)) == words
    assert list(decode_strings(*encode_strings([]))) == []


def _table_from(counts: dict[str, tuple[int, int]], capacity: int) -> FrequentTerms:
    terms = np.array(list(counts), dtype=object)
    tf = np.array([c[0] for c in counts.values()], dtype=np.int64)
    df = np.array([c[1] for c in counts.values()], dtype=np.int64)
    return FrequentTerms(capacity).add(terms, tf, df, int(tf.sum()))


def test_frequent_terms_are_exact_below_capacity():
    a = _table_from({"x": (5, 2), "y": (1, 1)}, capacity=3)
    b = _table_from({"y": (2, 2), "z": (7, 3)}, capacity=3)
    m = a.merge(b)
    assert m.exact and list(m.terms) == ["x", "y", "z"]
    assert m.tf.tolist() == [5, 3, 7] and m.df.tolist() == [2, 3, 3] and m.total_tokens == 15


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=60), min_size=1, max_size=6),
       st.integers(1, 12), st.floats(0.3, 3.0))
def test_frequent_terms_error_bound_holds_through_any_merge_tree(batches, capacity, skew):
    """Zipf-like streams split into batches: every stored count is within ``deficit`` of the truth."""
    rng = np.random.default_rng(len(batches) * 1000 + capacity)
    true_tf: dict[str, int] = {}
    true_df: dict[str, int] = {}
    tables = []
    for ids in batches:
        # several documents per batch; a document repeats words with a skewed distribution
        docs = np.array_split(np.array([int(i ** skew) % 41 for i in ids]), max(1, len(ids) // 5))
        tokens = np.concatenate([np.array([f"w{i}" for i in d], dtype=object) for d in docs])
        where = np.concatenate([np.full(len(d), j) for j, d in enumerate(docs)])
        terms, tf, df = count_tokens(tokens, where)
        for t, a, b in zip(terms, tf, df, strict=True):
            true_tf[t] = true_tf.get(t, 0) + int(a)
            true_df[t] = true_df.get(t, 0) + int(b)
        tables.append(FrequentTerms(capacity).add(terms, tf, df, len(tokens)))
    # a random merge tree
    while len(tables) > 1:
        i = int(rng.integers(len(tables) - 1))
        tables[i : i + 2] = [tables[i].merge(tables[i + 1])]
    t = tables[0]
    assert len(t.terms) <= capacity
    assert t.deficit <= t.bound() + 1e-9
    stored = dict(zip(t.terms, zip(t.tf.tolist(), t.df.tolist(), strict=True), strict=True))
    for term in true_tf:
        s_tf, s_df = stored.get(term, (0, 0))
        assert true_tf[term] - t.deficit <= s_tf <= true_tf[term]
        assert true_df[term] - t.deficit <= s_df <= true_df[term]
    if len(true_tf) <= capacity:
        assert t.exact and all(stored[k][0] == v for k, v in true_tf.items())
