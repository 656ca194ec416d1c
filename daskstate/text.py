"""Text to counts: a tokenizer, an English stop-word list, and per-batch count matrices.

Everything here works on one mini-batch of documents at a time: one tokenizing
pass over the batch's strings (the default pattern skips the regular expression
on words that are all letters), then array operations on the tokens (hashed
once, then counted), so a text column of any size is turned into counts a batch
at a time and never as one whole matrix.

- :func:`tokenize` -> a flat array of tokens and the document each came from;
- :func:`count_tokens` -> term and document frequencies of a batch;
- :func:`count_matrix` -> the batch's document-term counts as ``scipy.sparse`` CSR;
- :class:`FrequentTerms` -> a bounded, mergeable table of term counts: exact up
  to ``capacity`` distinct terms, a Misra-Gries heavy-hitters summary beyond.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from daskstate.data import Input
from daskstate.errors import DataError, SchemaError
from daskstate.state import Schema

#: alphabetic tokens of three letters or more (any script; no digits, no underscore)
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"

#: The default English stop words: function words (articles, pronouns, auxiliaries,
#: prepositions, conjunctions, determiners) and the most frequent adverbs, all of
#: three letters or more since shorter tokens never pass :data:`TOKEN_PATTERN`.
ENGLISH_STOP_WORDS: frozenset[str] = frozenset("""
about above across after afterwards again against all almost alone along already also although always
among amongst and another any anyhow anyone anything anyway anywhere are around became because become
becomes becoming been before beforehand behind being below beside besides between beyond both but can
cannot could did does doing done down during each either else elsewhere enough etc even ever every
everyone everything everywhere except few for former formerly from further had has have having hence
her here hereafter hereby herein hers herself him himself his how however into its itself just last
latter least less many may maybe meanwhile might mine more moreover most mostly much must myself namely
neither never nevertheless next nobody none noone nor not nothing now nowhere off often once one only
onto other others otherwise our ours ourselves out over own per perhaps please quite rather really same
seem seemed seeming seems several shall she should since some somehow someone something sometime
sometimes somewhere still such than that the their theirs them themselves then thence there thereafter
thereby therefore therein thereupon these they this those though through throughout thru thus together
too toward towards under until upon very via was well were what whatever when whence whenever where
whereafter whereas whereby wherein whereupon wherever whether which while whither who whoever whole whom
whose why will with within without would yet you your yours yourself yourselves
""".split())


@dataclass(frozen=True)
class Tokenizer:
    """Lowercase, find tokens with ``token_pattern``, drop ``stop_words``.

    Parameters
    ----------
    token_pattern : str
        Regular expression of one token (default: alphabetic, >= 3 letters).
    stop_words : "english", None or collection of str
        Tokens to drop: the shipped :data:`ENGLISH_STOP_WORDS`, none, or your own.
    lowercase : bool
        Lowercase before matching.

    Examples
    --------
    >>> tok = Tokenizer()
    >>> tokens, docs = tok.tokenize(["The cat sat on the mat", None, "Cats and 42 dogs"])
    >>> list(tokens), docs.tolist()
    (['cat', 'sat', 'mat', 'cats', 'dogs'], [0, 0, 0, 2, 2])
    """

    token_pattern: str = TOKEN_PATTERN
    stop_words: Any = "english"
    lowercase: bool = True

    def __post_init__(self) -> None:
        try:
            re.compile(self.token_pattern)
        except re.error as exc:
            raise ValueError(f"token_pattern {self.token_pattern!r} is not a valid regular expression: {exc}") from None
        stop_set(self.stop_words)

    def tokenize(self, documents: Any, where: str = "batch") -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, doc)``: every kept token of the batch and the position of its document.

        Missing documents (None, NaN) are empty; other non-string values raise a
        :class:`~daskstate.errors.DataError` naming the row.
        """
        docs = as_text_series(documents, where).tolist()
        if self.lowercase:
            docs = [d.lower() for d in docs]
        find = re.compile(self.token_pattern).findall
        stops = stop_set(self.stop_words)
        if self.token_pattern == TOKEN_PATTERN:
            per_doc = [default_tokens(d, find, stops) for d in docs]
        elif stops:
            per_doc = [[t for t in find(d) if t not in stops] for d in docs]
        else:
            per_doc = [find(d) for d in docs]
        lengths = np.fromiter(map(len, per_doc), np.int64, len(per_doc))
        tokens = np.fromiter(itertools.chain.from_iterable(per_doc), object, int(lengths.sum()))
        return tokens, np.repeat(np.arange(len(per_doc), dtype=np.int64), lengths)

    def to_params(self) -> dict[str, Any]:
        """JSON form (stored in states)."""
        stops = self.stop_words
        if stops is not None and not isinstance(stops, str):
            stops = sorted(stops)
        return {"token_pattern": self.token_pattern, "stop_words": stops, "lowercase": bool(self.lowercase)}


def default_tokens(doc: str, find: Any, stops: Collection[str]) -> list[str]:
    """The tokens of :data:`TOKEN_PATTERN` in ``doc``, found without running the regex on most words.

    A token of the default pattern is a maximal run of word characters made of
    letters only (no digit, no underscore), at least three long. Whitespace is
    never a word character, so a whitespace-separated chunk that is all letters
    (``str.isalpha``) is exactly one such run; any other chunk goes through the
    regex (``find``), whose word boundaries at the chunk's ends are those it
    has in the document. The result equals ``find(doc)`` minus ``stops``, at
    about half the cost on ordinary text.
    """
    out: list[str] = []
    for chunk in doc.split():
        if chunk.isalpha():
            if len(chunk) > 2 and chunk not in stops:
                out.append(chunk)
        else:
            out.extend(t for t in find(chunk) if t not in stops)
    return out


def stop_set(stop_words: Any) -> frozenset[str]:
    """The stop-word set for a ``stop_words`` argument ("english", None, or words)."""
    if stop_words is None:
        return frozenset()
    if isinstance(stop_words, str):
        if stop_words == "english":
            return ENGLISH_STOP_WORDS
        raise ValueError(f"stop_words must be 'english', None or a collection of words, got {stop_words!r}")
    words = list(stop_words)
    bad = [w for w in words if not isinstance(w, str)]
    if bad:
        raise ValueError(f"stop_words must be strings; got {bad[:3]}")
    return frozenset(words)


def as_text_series(documents: Any, where: str = "batch") -> pd.Series:
    """Documents as a string Series indexed 0..n-1; missing ones become empty strings."""
    return read_documents(documents, where)[0]


def read_documents(documents: Any, where: str = "batch", on_invalid: str = "raise") -> tuple[pd.Series, int]:
    """Documents as a string Series indexed 0..n-1, and how many were dropped.

    Missing documents (None, NaN) become empty strings (documents without words).
    A document that is neither a string nor missing raises, naming the partition
    and the first such row; with ``on_invalid="skip"`` such documents are
    dropped instead and counted.

    Examples
    --------
    >>> s, dropped = read_documents(["a text", None, 5, b"bytes"], on_invalid="skip")
    >>> s.tolist(), dropped
    (['a text', ''], 2)
    """
    if isinstance(documents, pd.DataFrame):
        if documents.shape[1] != 1:
            raise DataError(f"{where}: expected one text column, got columns {list(documents.columns)}")
        documents = documents.iloc[:, 0]
    if isinstance(documents, str):
        raise DataError(f"{where}: expected a sequence of documents, got a single string")
    s = pd.Series(documents, dtype=object) if not isinstance(documents, pd.Series) else documents
    s = s.reset_index(drop=True)
    if not (pd.api.types.is_string_dtype(s.dtype) and s.dtype != object):
        missing = s.isna().to_numpy()
        is_str = s.map(lambda v: isinstance(v, str), na_action="ignore").fillna(True).astype(bool).to_numpy()
        bad = np.flatnonzero(~is_str & ~missing)
        if len(bad) and on_invalid == "skip":
            s = s[is_str | missing].reset_index(drop=True)
        elif len(bad):
            first = int(bad[0])
            raise DataError(
                f"{where}: {len(bad)} document(s) are not strings (first at row {first}: "
                f"{type(s.iloc[first]).__name__} {s.iloc[first]!r}); a text column must hold str or null. "
                "Pass on_invalid='skip' to drop such documents (they are counted in the state)."
            )
        return s.fillna("").astype(str), len(bad)
    return s.fillna("").astype(str), 0


def count_tokens(tokens: np.ndarray, docs: np.ndarray, sort: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct terms of a batch with their term and document frequencies.

    Terms come sorted, or with ``sort=False`` in order of first appearance
    (for a caller that sorts anyway, e.g. :meth:`FrequentTerms.add`).

    Examples
    --------
    >>> terms, tf, df = count_tokens(np.array(["a", "b", "a", "a"], dtype=object), np.array([0, 0, 0, 1]))
    >>> list(terms), tf.tolist(), df.tolist()
    (['a', 'b'], [3, 1], [2, 1])
    """
    if not len(tokens):
        return np.array([], dtype=object), np.zeros(0, np.int64), np.zeros(0, np.int64)
    # hash the tokens, then sort only the distinct terms (far fewer than the tokens)
    codes, uniq = pd.factorize(np.asarray(tokens, dtype=object))
    uniq = np.asarray(uniq, dtype=object)
    n = len(uniq)
    if sort:
        order = np.argsort(uniq)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        codes, uniq = rank[codes], uniq[order]
    tf = np.bincount(codes, minlength=n).astype(np.int64)
    # each (document, term) pair once: the distinct entries of the batch's document-term matrix, which
    # scipy builds by counting, without hashing or sorting the pairs
    docs = np.asarray(docs, dtype=np.int64)
    pairs = sp.csr_matrix((np.ones(len(codes), np.int32), (docs, codes)), shape=(int(docs.max()) + 1, n))
    pairs.sum_duplicates()
    df = np.bincount(pairs.indices, minlength=n).astype(np.int64)
    return uniq, tf, df


def count_matrix(tokens: np.ndarray, docs: np.ndarray, vocabulary: pd.Index, n_docs: int) -> sp.csr_matrix:
    """The ``n_docs x len(vocabulary)`` CSR count matrix of a tokenized batch (unknown terms dropped).

    Examples
    --------
    >>> X = count_matrix(np.array(["b", "a", "b", "zzz"], dtype=object), np.array([0, 0, 0, 2]),
    ...                  pd.Index(["a", "b"]), 3)
    >>> X.toarray().tolist()
    [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
    """
    # hash the tokens once (far cheaper than an index lookup per token), then look up only the distinct ones
    codes, distinct = pd.factorize(np.asarray(tokens, dtype=object))
    codes = vocabulary.get_indexer(distinct)[codes] if len(distinct) else np.zeros(0, np.intp)
    keep = codes >= 0
    rows, cols = np.asarray(docs)[keep], codes[keep]
    X = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_docs, len(vocabulary)))
    X.sum_duplicates()
    return X


# ---------------------------------------------------------------------------- heavy hitters
def encode_strings(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as numeric arrays (UTF-8 bytes, end offsets), so states save without pickle."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.cumsum([len(b) for b in encoded], dtype=np.int64) if encoded else np.zeros(0, np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def decode_strings(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_strings`: an object array of str."""
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    ends = np.asarray(offsets, dtype=np.int64).tolist()
    starts = [0, *ends[:-1]] if ends else []
    return np.array([raw[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)], dtype=object)


@dataclass
class FrequentTerms:
    """Term and document frequencies in bounded memory: exact up to ``capacity`` terms.

    While at most ``capacity`` distinct terms have been seen, every count is exact.
    Beyond that the table is a Misra-Gries summary (the mergeable form of
    SpaceSaving; Agarwal et al., "Mergeable Summaries", PODS 2012): when it holds
    more than ``capacity`` terms, the ``capacity + 1``-th largest term frequency
    ``d`` is subtracted from every term frequency and the terms left at zero or
    below are dropped; ``deficit`` accumulates the ``d`` subtracted.

    Error bound. For every term ``w`` with true frequencies ``tf(w)``, ``df(w)``
    (0 if not stored)::

        tf(w) - deficit <= stored_tf(w) <= tf(w)
        df(w) - deficit <= stored_df(w) <= df(w)
        deficit <= (total_tokens - sum(stored_tf)) / (capacity + 1)

    The document frequency is never decremented; it loses at most the occurrences
    counted while the term was dropped, which are no more than its term frequency
    then, so the same bound holds. Merging adds the tables and the deficits and
    prunes once: the bound survives any tree of merges.

    Examples
    --------
    >>> t = FrequentTerms(capacity=2).add(np.array(["a", "b", "c"], dtype=object), np.array([5, 3, 1]),
    ...                                 np.array([2, 1, 1]), 9)
    >>> list(t.terms), t.tf.tolist(), t.deficit
    (['a', 'b'], [4, 2], 1)
    """

    capacity: int
    terms: np.ndarray = None  # type: ignore[assignment]
    tf: np.ndarray = None  # type: ignore[assignment]
    df: np.ndarray = None  # type: ignore[assignment]
    deficit: int = 0
    total_tokens: int = 0

    def __post_init__(self) -> None:
        if int(self.capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if self.terms is None:
            self.terms = np.array([], dtype=object)
            self.tf = np.zeros(0, np.int64)
            self.df = np.zeros(0, np.int64)

    @property
    def exact(self) -> bool:
        """Whether every stored count is exact (no term was ever dropped)."""
        return self.deficit == 0

    def add(self, terms: np.ndarray, tf: np.ndarray, df: np.ndarray, total_tokens: int,
            deficit: int = 0) -> FrequentTerms:
        """A new table with counts of disjoint data (another table's, or a batch's) added."""
        all_terms = np.concatenate([self.terms, np.asarray(terms, dtype=object)])
        codes, uniq = pd.factorize(all_terms, sort=True)
        n = len(uniq)
        new_tf = np.bincount(codes, weights=np.concatenate([self.tf, tf]), minlength=n).astype(np.int64)
        new_df = np.bincount(codes, weights=np.concatenate([self.df, df]), minlength=n).astype(np.int64)
        out = FrequentTerms(self.capacity, np.asarray(uniq, dtype=object), new_tf, new_df,
                            self.deficit + int(deficit), self.total_tokens + int(total_tokens))
        out._prune()
        return out

    def merge(self, other: FrequentTerms) -> FrequentTerms:
        """The table of the union of two tables' (disjoint) data."""
        return self.add(other.terms, other.tf, other.df, other.total_tokens, other.deficit)

    def _prune(self) -> None:
        if len(self.terms) <= self.capacity:
            return
        d = int(np.partition(self.tf, len(self.tf) - self.capacity - 1)[len(self.tf) - self.capacity - 1])
        tf = self.tf - d
        keep = tf > 0
        self.terms, self.tf, self.df = self.terms[keep], tf[keep], self.df[keep]
        self.deficit += d

    def bound(self) -> float:
        """The guaranteed bound on ``deficit``: ``(total_tokens - sum(stored tf)) / (capacity + 1)``."""
        return (self.total_tokens - int(self.tf.sum())) / (self.capacity + 1)


def check_terms(terms: Collection[str], what: str) -> None:
    """Raise if ``terms`` holds duplicates or non-strings."""
    bad = [t for t in terms if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{what}: terms must be strings, got {bad[:3]}")
    if len(set(terms)) != len(terms):
        raise ValueError(f"{what}: duplicate terms")


# ---------------------------------------------------------------------------- inputs
TEXT_PARTITION_ROWS = 20_000
COUNTS_PARTITION_ROWS = 20_000


def text_schema(text_column: str) -> Schema:
    """The schema of a text state: the one text column."""
    return Schema((str(text_column),), ("str",))


def text_input(X: Any, text_column: str | None, *, rows: int = TEXT_PARTITION_ROWS) -> Input:
    """An :class:`~daskstate.data.Input` of documents: each partition a Series of str or null.

    ``X`` is a Dask or pandas DataFrame (``text_column`` names the column), a Dask
    or pandas Series, or a sequence of strings. Only the text column is read
    (projection first). In-memory text is cut into partitions of ``rows``
    documents, so it can be read once per epoch like a Dask input.
    """
    import dask
    import dask.dataframe as dd
    from dask.base import tokenize

    from daskstate.data import partition_sources

    if isinstance(X, dd.DataFrame | pd.DataFrame):
        columns = [str(c) for c in X.columns]
        if text_column is None:
            if len(columns) != 1:
                raise SchemaError(f"input: name the text column with text_column= (columns: {columns})")
            text_column = columns[0]
        if str(text_column) not in columns:
            raise SchemaError(f"input: text column {text_column!r} is missing (columns: {columns})")
        X = X[text_column]
    elif text_column is None:
        text_column = str(getattr(X, "name", None) or "text")
    schema = text_schema(text_column)
    if isinstance(X, dd.Series):
        frame = X.to_frame()
        return Input(schema, parts=list(X.to_delayed(optimize_graph=True)), sources=partition_sources(frame),
                     collection=X)
    if isinstance(X, str | bytes) or not isinstance(X, Iterable):
        raise TypeError(
            f"unsupported text input of type {type(X).__name__}; pass a Dask or pandas DataFrame with "
            "text_column=..., a Series, or a list of strings"
        )
    s = X if isinstance(X, pd.Series) else pd.Series(list(X), dtype=object)
    name = f"text-{tokenize(s)}"
    parts = [dask.delayed(s.iloc[a : a + rows], pure=True) for a in range(0, len(s), rows)]
    return Input(schema, parts=parts, sources=[f"{name}:{i}" for i in range(len(parts))], n_rows=len(s))


def counts_input(X: Any, features: Sequence[str] | None = None, *, rows: int = COUNTS_PARTITION_ROWS) -> Input:
    """An Input of document-term counts: scipy.sparse or numpy in memory, or a Dask Array.

    Partitions stay as they come (sparse or dense blocks); the state's
    ``read_batch`` turns each into CSR and checks it.
    """
    import dask
    import dask.array as da
    from dask.base import tokenize

    from daskstate.data import _dask_array_input, array_schema

    if isinstance(X, da.Array):
        return _dask_array_input(X, None, list(features) if features is not None else None, False)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    elif isinstance(X, np.ndarray):
        if X.ndim != 2:
            raise SchemaError(f"input: a count matrix must be 2-dimensional, got shape {X.shape}")
        if X.dtype == object:  # numbers in an object array are counts; anything else raises, naming it
            from daskstate.data import as_array

            X = as_array(X)
    else:
        raise TypeError(
            f"unsupported count input of type {type(X).__name__}; pass scipy.sparse, numpy or a Dask Array"
        )
    if X.shape[1] == 0:
        raise SchemaError(f"input: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    schema = array_schema(X.shape[1], X.dtype, list(features) if features is not None else None)
    name = f"counts-{tokenize(X)}"
    parts = [dask.delayed(X[a : a + rows], pure=True) for a in range(0, X.shape[0], rows)]
    return Input(schema, parts=parts, sources=[f"{name}:{i}" for i in range(len(parts))], n_rows=X.shape[0])


def read_counts(part: Any, n_words: int, where: str, on_invalid: str = "raise") -> tuple[sp.csr_matrix, int]:
    """One partition of counts as float64 CSR, checked (2-D, ``n_words`` columns, finite, >= 0), and rows dropped.

    A negative, NaN or inf count raises, naming the partition; with
    ``on_invalid="skip"`` the rows holding one are dropped instead and counted.
    """
    X = sp.csr_matrix(part, dtype=np.float64) if sp.issparse(part) else None
    if X is None:
        A = np.asarray(part.to_numpy() if isinstance(part, pd.DataFrame) else part)
        if A.ndim != 2:
            raise SchemaError(f"{where}: counts must be 2-dimensional, got shape {A.shape}")
        if A.dtype == object:
            try:
                A = A.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise SchemaError(f"{where}: counts in an object array that are not numbers ({exc})") from None
        if not (np.issubdtype(A.dtype, np.number) or A.dtype == bool):
            raise SchemaError(f"{where}: counts have dtype {A.dtype}; expected numbers")
        X = sp.csr_matrix(A.astype(np.float64))
    if X.shape[1] != n_words:
        raise SchemaError(f"{where}: counts have {X.shape[1]} columns; the vocabulary has {n_words} terms")
    bad = ~np.isfinite(X.data) | (X.data < 0)
    dropped = 0
    if bad.any() and on_invalid == "skip":
        bad_rows = np.zeros(X.shape[0], dtype=bool)
        bad_rows[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[bad]] = True
        X, dropped = X[~bad_rows], int(bad_rows.sum())
    elif bad.any():
        negative = " (Negative values in data)" if (X.data < 0).any() else ""
        raise DataError(f"{where}: {int(bad.sum())} count(s) are negative, NaN or inf{negative}; counts must be >= 0. "
                        "Pass on_invalid='skip' to drop such rows (they are counted in the state).")
    X.sum_duplicates()
    X.eliminate_zeros()
    return X, dropped
