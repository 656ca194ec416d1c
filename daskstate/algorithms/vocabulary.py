"""A streaming vocabulary: term and document frequencies of a text column in bounded memory.

The state is a :class:`~daskstate.text.FrequentTerms` table (exact up to
``capacity`` distinct terms, a mergeable heavy-hitters summary beyond) plus the
documents and tokens seen. ``finalize(max_features=, min_df=, max_df=)`` picks
the vocabulary from the table without reading the text again, with
scikit-learn's ``CountVectorizer`` rules; ``transform`` turns text into a
document-term count matrix (scipy.sparse CSR).
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from daskstate.data import Input
from daskstate.estimator import Floats, Ints, StateEstimator
from daskstate.state import State, register
from daskstate.text import (
    TOKEN_PATTERN,
    FrequentTerms,
    Tokenizer,
    as_text_series,
    count_matrix,
    count_tokens,
    decode_strings,
    encode_strings,
    read_documents,
    text_input,
)

#: documents tokenized at a time inside one partition (bounds temporary memory)
DOCS_PER_BATCH = 10_000
DEFAULT_CAPACITY = 200_000


def tokenizer_from(params: dict[str, Any]) -> Tokenizer:
    stops = params.get("stop_words", "english")
    return Tokenizer(params.get("token_pattern", TOKEN_PATTERN),
                     stops if stops is None or isinstance(stops, str) else frozenset(stops),
                     bool(params.get("lowercase", True)))


class TextState(State):
    """Base of states fed documents: a partition is a Series of strings (or null)."""

    def read_batch(self, X: Any, y: Any, *, on_invalid: str = "raise", where: str = "batch") -> tuple[Any, Any, int]:
        s, dropped = read_documents(X, where, on_invalid)
        return s, None, dropped

    def check_batch(self, X: Any, y: Any) -> int:
        return len(X)


@register
class VocabularyState(TextState):
    """Term frequencies, document frequencies and counts of documents and tokens.

    Parameters (``params``)
    -----------------------
    token_pattern, stop_words, lowercase
        The :class:`~daskstate.text.Tokenizer`.
    capacity : int
        Distinct terms kept exactly; beyond, the Misra-Gries bound of
        :class:`~daskstate.text.FrequentTerms` applies (``deficit`` in ``totals``).
    """

    algorithm = "vocabulary"
    array_names = ("term_bytes", "term_offsets", "tf", "df", "totals")

    def _init_arrays(self) -> None:
        self.term_bytes = np.zeros(0, np.uint8)
        self.term_offsets = np.zeros(0, np.int64)
        self.tf = np.zeros(0, np.int64)
        self.df = np.zeros(0, np.int64)
        self.totals = np.zeros(3, np.int64)  # tokens, deficit, empty documents

    @property
    def capacity(self) -> int:
        return int(self.params.get("capacity", DEFAULT_CAPACITY))

    def table(self) -> FrequentTerms:
        terms = decode_strings(self.term_bytes, self.term_offsets)
        return FrequentTerms(self.capacity, terms, self.tf, self.df, int(self.totals[1]), int(self.totals[0]))

    def _set_table(self, t: FrequentTerms, empty_docs: int) -> None:
        self.term_bytes, self.term_offsets = encode_strings(t.terms)
        self.tf, self.df = t.tf.astype(np.int64), t.df.astype(np.int64)
        self.totals = np.array([t.total_tokens, t.deficit, empty_docs], dtype=np.int64)

    def _update(self, X: pd.Series, y: Any, context: Any = None) -> None:
        tok = tokenizer_from(self.params)
        table, empty = self.table(), int(self.totals[2])
        for start in range(0, len(X), DOCS_PER_BATCH):
            docs = X.iloc[start : start + DOCS_PER_BATCH]
            tokens, where = tok.tokenize(docs)
            terms, tf, df = count_tokens(tokens, where, sort=False)  # the table sorts them
            table = table.add(terms, tf, df, len(tokens))
            # token positions come in document order, so distinct documents are where the position changes
            empty += len(docs) - (int(np.count_nonzero(np.diff(where))) + 1 if len(where) else 0)
        self._set_table(table, empty)

    def _merge(self, other: VocabularyState) -> None:
        self._set_table(self.table().merge(other.table()), int(self.totals[2] + other.totals[2]))

    def finalize(self, max_features: int | None = None, min_df: float = 1, max_df: float = 1.0) -> dict[str, Any]:
        """The vocabulary: terms with ``min_df <= df <= max_df``, the ``max_features`` most frequent, sorted.

        ``min_df``/``max_df`` are document counts (int) or fractions of the
        documents (float), as in scikit-learn's ``CountVectorizer``.
        """
        n_docs = self.n_rows
        lo, hi = _df_bound(min_df, n_docs, "min_df"), _df_bound(max_df, n_docs, "max_df")
        if max_features is not None and (not isinstance(max_features, numbers.Integral) or max_features < 1):
            raise ValueError(f"max_features must be a positive integer or None, got {max_features!r}")
        terms = decode_strings(self.term_bytes, self.term_offsets)
        keep = (self.df >= lo) & (self.df <= hi)
        idx = np.flatnonzero(keep)
        if max_features is not None and len(idx) > max_features:
            # most frequent first; ties by term (terms are stored sorted, so a stable sort keeps that order)
            idx = idx[np.argsort(-self.tf[idx], kind="stable")[:max_features]]
            idx.sort()
        chosen = terms[idx]
        return {
            "vocabulary_": {t: i for i, t in enumerate(chosen)},
            "terms_": chosen,
            "term_frequency_": self.tf[idx].copy(),
            "document_frequency_": self.df[idx].copy(),
            "n_documents_": n_docs,
            "n_tokens_": int(self.totals[0]),
            "count_error_bound_": int(self.totals[1]),
        }


def _df_bound(value: float, n_docs: int, name: str) -> float:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return float(value)
    if isinstance(value, numbers.Real) and 0.0 <= value <= 1.0:
        return value * n_docs if name == "max_df" else np.ceil(value * n_docs)
    raise ValueError(f"{name} must be a document count (int) or a fraction in [0, 1] (float), got {value!r}")


class Vocabulary(StateEstimator):
    """The vocabulary of a text column, learnt in one pass; text -> document-term counts.

    Parameters
    ----------
    max_features : int, optional
        Keep the most frequent terms only.
    min_df, max_df : int or float
        Keep terms in at least ``min_df`` / at most ``max_df`` documents (counts,
        or fractions of the documents if float). ``max_features``, ``min_df`` and
        ``max_df`` only shape the model: ``finalize(max_features=500)`` picks
        another vocabulary without reading the text again.
    text_column : str, optional
        The text column of a DataFrame input (default: its only column).
    token_pattern, stop_words, lowercase
        The tokenizer (default: lowercase alphabetic tokens of >= 3 letters, the
        shipped English stop words; see :mod:`daskstate.text`).
    capacity : int
        Distinct terms counted exactly; beyond, counts are those of a mergeable
        heavy-hitters summary, each low by at most ``count_error_bound_``.

    Attributes
    ----------
    vocabulary_ : dict of str -> int
    terms_ : ndarray of str
        Terms in column order (sorted).
    term_frequency_, document_frequency_ : ndarray of int
    n_documents_, n_tokens_ : int
    count_error_bound_ : int
        0 when every count is exact.

    Examples
    --------
    >>> import daskstate
    >>> voc = daskstate.Vocabulary().fit(["The cat sat on the mat", "A cat and a dog"])
    >>> voc.get_feature_names_out().tolist()
    ['cat', 'dog', 'mat', 'sat']
    >>> voc.transform(["cat cat dog"]).toarray().tolist()
    [[2.0, 1.0, 0.0, 0.0]]
    """

    state_class = VocabularyState
    aliases = ("vocabulary",)

    def __init__(self, max_features: int | None = None, *, min_df: float = 1, max_df: float = 1.0,
                 text_column: str | None = None, token_pattern: str = TOKEN_PATTERN, stop_words: Any = "english",
                 lowercase: bool = True, capacity: int = DEFAULT_CAPACITY):
        self.max_features = max_features
        self.min_df = min_df
        self.max_df = max_df
        self.text_column = text_column
        self.token_pattern = token_pattern
        self.stop_words = stop_words
        self.lowercase = lowercase
        self.capacity = capacity

    _parameter_constraints: ClassVar[dict] = {
        "max_features": [Ints(1), None],
        "min_df": [Floats(0)],
        "max_df": [Floats(0)],
        "text_column": [str, None],
        "token_pattern": [str],
        "stop_words": [str, list, tuple, set, frozenset, None],
        "lowercase": ["boolean"],
        "capacity": [Ints(1)],
    }

    def _check_params_together(self) -> None:
        _df_bound(self.min_df, 1, "min_df")  # a fraction of the documents (float) must be in [0, 1]
        _df_bound(self.max_df, 1, "max_df")
        self._tokenizer()  # the pattern compiles, the stop-word list is known

    def _tokenizer(self) -> Tokenizer:
        return Tokenizer(self.token_pattern, self.stop_words, self.lowercase)

    def _input(self, X: Any, y: Any = None, schema: Any = None) -> Input:
        if isinstance(X, Input):
            return X
        column = schema.features[0] if schema is not None and self.text_column is None else self.text_column
        return text_input(X, column)

    def _state_params(self, inp: Input) -> dict[str, Any]:
        return {**self._tokenizer().to_params(), "capacity": int(self.capacity)}

    def _finalize_overrides(self) -> dict[str, Any]:
        return {"max_features": self.max_features, "min_df": self.min_df, "max_df": self.max_df}

    def _apply_model(self, model: dict[str, Any]) -> None:
        super()._apply_model(model)
        self._index = pd.Index(self.terms_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The terms, in the column order of :meth:`transform`."""
        self._check_fitted()
        return np.asarray(self.terms_, dtype=object)

    def transform(self, X: Any) -> Any:
        """Document-term counts: CSR for in-memory text; a Dask Array of CSR blocks for Dask input."""
        self._check_fitted()
        return transform_text(X, self.text_column or self.state_.schema.features[0],
                              tokenizer_from(self.state_.params), self._index)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """``fit(X)`` then ``transform(X)``: the documents' term counts."""
        return self.fit(X, y, **fit_params).transform(X)

    def __sklearn_tags__(self) -> Any:
        """Documents in, as scikit-learn's ``CountVectorizer``: text, not a 2-D array of features.

        scikit-learn's estimator checks feed 2-D numeric arrays, so they skip an
        estimator tagged this way; ``tests/test_sklearn_compat.py`` runs the checks
        that need no data, and text versions of the others.
        """
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags


def counts_of(documents: Any, tokenizer: Tokenizer, index: pd.Index, where: str = "batch") -> sp.csr_matrix:
    """The CSR count matrix of a batch of documents over the terms ``index``, mini-batch by mini-batch."""
    s = as_text_series(documents, where)
    blocks = []
    for start in range(0, max(len(s), 1), DOCS_PER_BATCH):
        docs = s.iloc[start : start + DOCS_PER_BATCH]
        tokens, pos = tokenizer.tokenize(docs, where)
        blocks.append(count_matrix(tokens, pos, index, len(docs)))
    return blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")


def transform_text(X: Any, text_column: str, tokenizer: Tokenizer, index: pd.Index) -> Any:
    """Counts of any text input (lazy Dask Array of CSR blocks for Dask input)."""
    import dask
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, dd.DataFrame | dd.Series):
        inp = text_input(X, text_column)
        count_d = dask.delayed(counts_of, pure=True)
        blocks = [da.from_delayed(count_d(p, tokenizer, index, f"transform: partition {i}"),
                                  shape=(np.nan, len(index)), dtype=np.float64, meta=sp.csr_matrix((0, len(index))))
                  for i, p in enumerate(inp.parts)]
        return da.concatenate(blocks, axis=0)
    if isinstance(X, pd.DataFrame):
        X = X[text_column] if text_column in X.columns else X
    return counts_of(X, tokenizer, index, "transform")
