"""Neural topic model (ProdLDA): a variational autoencoder over bag-of-words counts, trained in rounds.

The state is the network's parameters (one flat vector, see
:mod:`daskstate.algorithms.ntm_numerics`), the batch norms' running statistics,
Adam's moments and the vocabulary; the shared trainer
(:class:`daskstate.training.SGDState`) adds the epoch's anchor, the best snapshot
and the loss accumulators. Its examples are documents: a partition becomes CSR
counts (``read_batch``), its validation documents (chosen by a hash of their
counts, so the same documents on every pass) are scored with the epoch's anchor
and Adam runs over mini-batches of the rest (``_train``). The rounds average the
partitions' parameters and optimiser moments, weighted by the documents each
trained on, so every partition of the next round starts from the same network and
topics stay aligned. After each epoch the best parameters are kept and training
stops when the validation loss no longer improves (see ``early_stopping_patience``).

Hyperparameters default to what makes ProdLDA work (Srivastava & Sutton 2017):
Adam with a high learning rate, small mini-batches, batch norm on the encoder
heads and the decoder, dropout 0.2; with plain SGD, no batch norm or a small
learning rate the model tends to collapse onto a few topics (the tests check the
planted topics are all found). The paper's momentum beta_1 = 0.99 (with learning
rate 0.002) averages over ~100 steps, which a corpus of a few hundred documents
(a few steps per epoch) does not give in 50 epochs: the topics were still forming
when the epochs ran out (negative NPMI on package descriptions). The defaults are
Adam's usual beta_1 = 0.9 with learning rate 0.01, which reach a lower validation
loss in 2-3x fewer steps on the gensim Lee corpus, package descriptions and
planted LDA corpora (see benchmarks/bench_ntm.py).

The decoder adds a learned log-frequency per word (``background``, started at the
corpus's word frequencies) to its batch-normalised logits, so the topics model
deviations from the background rather than frequent words (docs/topic-model.md).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils._param_validation import StrOptions

from daskstate.algorithms import ntm_numerics as nn
from daskstate.algorithms.vocabulary import Vocabulary, VocabularyState, counts_of, tokenizer_from
from daskstate.data import Input
from daskstate.engine import FitOptions
from daskstate.errors import DataError, SchemaError
from daskstate.estimator import Floats, Ints, StateEstimator
from daskstate.state import State, register
from daskstate.text import (
    TOKEN_PATTERN,
    Tokenizer,
    counts_input,
    read_counts,
    read_documents,
    text_input,
)
from daskstate.training import Schedule, SGDEstimator, SGDState

#: Early stopping counts epochs without improvement only after this many of Adam's momentum horizons
#: (``1 / (1 - beta_1)`` steps): while the encoder starts to use the latent topics, the validation
#: loss rises for a while before it falls again (a bump of ~5 horizons).
WARMUP_HORIZONS = 5

#: columns of ``history``: epoch, training loss per word, validation loss per word, documents trained
HISTORY_COLUMNS = ("epoch", "train_loss_per_word", "validation_loss_per_word", "documents")


class CountsReader(State):
    """A state fed document-term counts: text (tokenized with its vocabulary) or count matrices.

    ``params["input"]`` is ``"text"`` (the schema is the text column) or
    ``"counts"`` (the schema is one column per term); ``params["terms"]`` is the vocabulary.
    BLAS runs on one thread, on the main thread too: the products (a mini-batch or
    block of documents against the V x 100 and K x V matrices, the topics'
    K x K x V) are too small for a second thread to pay, and on a busy machine
    OpenBLAS's spinning threads made the topic-model passes and ``finalize`` up
    to 10x slower.
    """

    blas_threads = 1
    blas_on_main_thread = True

    @property
    def n_words(self) -> int:
        return int(self.params["n_words"])

    @property
    def terms(self) -> np.ndarray:
        """The vocabulary (kept in ``params["terms"]``, so it is saved with the metadata)."""
        cached = self.__dict__.get("_terms")
        if cached is None:
            cached = self.__dict__["_terms"] = np.array(self.params["terms"], dtype=object)
        return cached

    def read_batch(self, X: Any, y: Any, *, on_invalid: str = "raise", where: str = "batch") -> tuple[Any, Any, int]:
        if self.params.get("input") == "text":
            docs, dropped = read_documents(X, where, on_invalid)
            return counts_of(docs, tokenizer_from(self.params), pd.Index(self.terms), where), None, dropped
        X, dropped = read_counts(X, self.n_words, where, on_invalid)
        return X, None, dropped

    def check_batch(self, X: Any, y: Any) -> int:
        if not sp.issparse(X) or X.shape[1] != self.n_words:
            raise SchemaError(f"batch has shape {np.shape(X)}; expected CSR counts with {self.n_words} columns")
        return int(X.shape[0])

    def copy(self) -> State:
        """A deep copy that shares the parameters and schema (never mutated; they hold the whole vocabulary,
        whose deep copy cost a small fit more than a few epochs)."""
        return copy.deepcopy(self, {id(self.params): self.params, id(self.schema): self.schema})



@register
class NTMState(CountsReader, SGDState):
    """A ProdLDA model trained by the shared trainer (see the module docstring).

    Its own arrays: the network (``weights``, one flat vector, and the batch
    norms' running statistics ``bn_stats``: the parameters averaged per round),
    Adam's moments and the topic-word attributions of :class:`TopicWordState`.
    The trainer adds the epoch's anchor, the best snapshot and the loss
    accumulators (:class:`daskstate.training.SGDState`). The examples are
    documents: CSR counts without the empty ones, validation documents chosen
    by a hash of their counts.
    """

    algorithm = "ntm"
    copy = SGDState.copy  # not CountsReader's: the trainer's copy shares the history too (see _copy)
    supervised = False
    packed = False
    parameters = ("weights", "bn_stats")
    optimizer_arrays = ("adam_m", "adam_v", "adam_t")
    model_arrays = (*parameters, *optimizer_arrays, "topic_word")

    @property
    def layout(self) -> nn.Layout:
        p = self.params
        return nn.Layout(self.n_words, int(p["n_components"]), tuple(p["encoder_layers"]), bool(p["batch_norm"]),
                         bool(p.get("background", False)))

    @property
    def prior(self) -> tuple[np.ndarray, np.ndarray]:
        return _laplace_prior(tuple(np.ravel(self.params["prior_alpha"]).tolist()), int(self.params["n_components"]))

    def _init_model(self) -> None:
        layout = self.layout
        # float32 parameters: the steps are bound by memory traffic over B x V and V x H arrays, which this halves
        self.weights = nn.init_weights(layout, np.random.default_rng([int(self.params["seed"]), 0x1DA])).astype(
            nn.PARAMETER_DTYPE)
        self.adam_m = np.zeros_like(self.weights)
        self.adam_v = np.zeros_like(self.weights)
        self.adam_t = np.zeros(1)
        self.bn_stats = nn.init_bn_stats(layout).astype(nn.PARAMETER_DTYPE)
        self.topic_word = np.zeros((layout.n_topics, layout.n_words))  # from a pass after training

    def _start(self, statistics: State) -> None:
        """No statistics pass: the network starts from its seeded initial weights (see :meth:`start_background`)."""

    def start_background(self, word_counts: np.ndarray) -> None:
        """Start the decoder's background (``b_dec``) at the words' log-frequencies, before training.

        From zero, Adam's steps of about ``learning_rate`` each would take hundreds
        of steps to reach log-frequencies that span ~10; meanwhile the topics
        absorbed the frequent words.
        """
        if len(word_counts) != self.n_words:
            raise ValueError(f"word_counts has {len(word_counts)} entries for {self.n_words} words")
        start = nn.background_logits(word_counts).astype(self.weights.dtype)
        for params in (self.weights, self.anchor_weights, self.best_weights):
            self.layout.views(params)["b_dec"][...] = start

    # ---- the trainer's hooks: documents, validation, gradient steps ----------------------
    def _training_batch(self, X: sp.csr_matrix, where: str) -> sp.csr_matrix:
        """The partition's documents that hold a word of the vocabulary, in the parameters' float type.

        (Counts are whole numbers: float32 holds them exactly up to 2^24; the
        steps and the validation scoring would otherwise cast each subset.)
        """
        nonempty = np.asarray(X.sum(axis=1)).ravel() > 0
        return (X if nonempty.all() else X[nonempty]).astype(self.weights.dtype, copy=False)

    def _validation_mask(self, X: sp.csr_matrix) -> np.ndarray | None:
        """Documents held out for validation: a hash of their counts below ``validation_fraction``."""
        frac = float(self.params["validation_fraction"])
        if frac <= 0:
            return None
        salt = np.random.default_rng([int(self.params["seed"]), 0x7A1]).random(self.n_words) * 1e3 + 1.0
        return np.mod(X @ salt, 1.0) < frac

    def _train(self, X: sp.csr_matrix, t: None, order: np.ndarray, monitor: bool, rng: np.random.Generator) -> None:
        """Adam over mini-batches of the documents ``order``; their loss per word goes to the monitor."""
        p, layout, prior = self.params, self.layout, self.prior
        X = sp.csr_matrix(X) if not sp.isspmatrix_csr(X) else X
        X.sum_duplicates()  # canonical (nothing to do for counts read by read_batch)
        for a, b in nn.mini_batch_bounds(len(order), int(p["batch_size"])):
            if b - a < 2 and layout.batch_norm:
                continue
            Xb = nn.csr_rows(X, order[a:b])  # in the parameters' float type (see _training_batch)
            noise = nn.draw_noise(rng, b - a, layout, float(p["dropout"]), self.weights.dtype)
            self.adam_t += 1.0
            loss, cache = nn.train_step(self.weights, self.adam_m, self.adam_v, float(self.adam_t[0]), Xb, noise,
                                        layout, activation=p["activation"], prior=prior,
                                        learning_rate=float(p["learning_rate"]), beta_1=float(p["beta_1"]),
                                        beta_2=float(p["beta_2"]))
            if layout.batch_norm:
                nn.update_running(self.bn_stats, cache["stats"], layout, float(p["bn_momentum"]), b - a)
            self.mon_loss += loss * (b - a)
            self.mon_n += cache["counts"].sum()

    def _evaluate(self, X: sp.csr_matrix, t: None, rows: np.ndarray, params: dict[str, np.ndarray]) -> None:
        """Loss (reconstruction + KL, in inference mode) and words of the documents ``rows``."""
        docs = nn.csr_rows(X, rows).astype(params["weights"].dtype, copy=False)  # float64 counts would compute it
        # all in float64
        rec, kl = nn.elbo_terms(params["weights"], params["bn_stats"], docs, self.layout, self.params["activation"],
                                self.prior)
        self.ev_loss += float((rec + kl).sum())
        self.ev_n += float(docs.data.sum())

    def _counts_staleness(self) -> bool:
        return bool(self.adam_t[0] >= WARMUP_HORIZONS / (1.0 - float(self.params["beta_1"])))

    def document_losses(self, X: sp.csr_matrix, weights: np.ndarray | None = None, bn: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Per-document reconstruction loss at the posterior mean and KL, in inference mode."""
        model = self.chosen_params(0)
        weights = model["weights"] if weights is None else weights
        bn = model["bn_stats"] if bn is None else bn
        return nn.elbo_terms(weights, bn, X, self.layout, self.params["activation"], self.prior)

    def _copy(self, memo: dict[int, Any]) -> NTMState:
        """A copy that shares the parameters and the terms cached from them (never mutated; they hold the
        whole vocabulary, and a deep copy of an array of strings copies each string)."""
        shared = {id(self.params): self.params}
        if "_terms" in self.__dict__:
            shared[id(self._terms)] = self._terms
        return super()._copy({**memo, **shared})

    @property
    def history(self) -> np.ndarray:
        """One row per epoch: :data:`HISTORY_COLUMNS` (validation loss NaN without validation documents)."""
        return self.loss_history()

    def corner_topics(self) -> np.ndarray:
        """The decoder's word distribution for a document entirely about each topic (K x V)."""
        model = self.chosen_params(0)
        return nn.word_distributions(model["weights"], model["bn_stats"], np.eye(int(self.params["n_components"])),
                                     self.layout)

    # ---- finalize ------------------------------------------------------------------
    def finalize(self, topic_word_prior: float | None = None) -> dict[str, Any]:
        """Topics (``components_``) and training history from the best parameters.

        ``components_`` are the words the data attributes to each topic
        (``topic_word``, gathered by :class:`TopicWordState` after training) plus
        the pseudo-count ``topic_word_prior`` (default ``1/K``, LDA's usual
        ``eta``), normalised: mixture components comparable with LDA's. Before
        that pass, the decoder's single-topic outputs.
        """
        K = int(self.params["n_components"])
        eta = 1.0 / K if topic_word_prior is None else float(topic_word_prior)
        if not eta >= 0:
            raise ValueError(f"topic_word_prior must be >= 0, got {topic_word_prior!r}")
        tw, history = self.topic_word, self.history
        if (tw.sum(axis=1) > 0).all():
            comp = (tw + eta) / (tw + eta).sum(axis=1, keepdims=True)
        else:
            comp = self.corner_topics()
        return {
            "components_": comp,
            "decoder_topics_": self.corner_topics(),
            "history_": history,
            "validation_loss_": history[:, 2].copy(),
            "n_iter_": int(self.progress[0]),
            "vocabulary_terms_": self.terms,
        }


@register
class TopicWordState(CountsReader):
    """Words attributed to each topic under a trained model: ``sum_d x_dw theta_dk phi_kw / sum_j theta_dj phi_jw``.

    ``theta`` is the encoder's document-topic proportions and ``phi`` the
    decoder's single-topic word distributions; the sum is one E-step of LDA's
    word-topic assignments, which turns ProdLDA's product-of-experts topics into
    mixture components (each topic's word distribution, as in LDA). Sums: exact
    and mergeable. The model (``weights``, ``bn``) is constant.
    """

    algorithm = "ntm_topic_word"
    array_names = ("weights", "bn", "topic_word")
    #: documents per block (bounds the dense block x V temporary)
    block_docs = 1024

    def _init_arrays(self) -> None:
        layout = self.layout
        self.weights = np.zeros(layout.size)
        self.bn = np.zeros(layout.bn_size)
        self.topic_word = np.zeros((layout.n_topics, layout.n_words))

    layout = NTMState.layout

    def empty_like(self) -> TopicWordState:
        """Empty sums, the same model (it is not data, so every partition task needs it)."""
        new = super().empty_like()
        new.weights, new.bn = self.weights, self.bn
        return new

    def copy(self) -> TopicWordState:
        """A copy of the sums that shares the model (never changed by the pass: a fold copies its state a few
        times, and the weights are most of it)."""
        return copy.deepcopy(self, {id(self.params): self.params, id(self.schema): self.schema,
                                    id(self.weights): self.weights, id(self.bn): self.bn})

    def _update(self, X: sp.csr_matrix, y: Any, context: Any = None) -> None:
        """Add the block's attributions: computed in the model's float type, summed in float64.

        ``x_dw / (theta_d . phi_w)`` is needed at the stored counts only (read from
        the dense ``theta @ phi`` product), and its product with ``theta`` is the
        first layer's sparse kernel (:func:`ntm_numerics.sparse_t_dot`).
        """
        layout, act, dtype = self.layout, self.params["activation"], self.weights.dtype
        phi = nn.word_distributions(self.weights, self.bn, np.eye(layout.n_topics, dtype=dtype), layout)
        X = sp.csr_matrix(X, dtype=dtype)
        X.sum_duplicates()
        for a in range(0, X.shape[0], self.block_docs):
            Xb = X[a : a + self.block_docs]
            theta = nn.doc_topics(self.weights, self.bn, Xb, layout, act)
            rows, cols, counts = nn.csr_entries(Xb)
            mixture = theta @ phi  # each document's word distribution
            ratio = sp.csr_matrix((counts / np.take(mixture.reshape(-1), nn.flat_index(rows, cols, mixture)),
                                   Xb.indices, Xb.indptr), shape=Xb.shape)
            attributed = nn.sparse_t_dot(ratio, theta, out=np.empty((layout.n_words, layout.n_topics), dtype=dtype))
            self.topic_word += phi * attributed.T

    def _merge(self, other: TopicWordState) -> None:
        self.topic_word = self.topic_word + other.topic_word

    def finalize(self) -> np.ndarray:
        return self.topic_word


@register
class CooccurrenceState(CountsReader):
    """Document frequencies of a few words and of their pairs, over a reference corpus (sums: exact, mergeable)."""

    algorithm = "ntm_cooccurrence"
    array_names = ("doc_counts", "pair_counts")

    def _init_arrays(self) -> None:
        m = len(self.params["word_ids"])
        self.doc_counts = np.zeros(m)
        self.pair_counts = np.zeros((m, m))

    def _update(self, X: sp.csr_matrix, y: Any, context: Any = None) -> None:
        B = (X[:, self.params["word_ids"]] > 0).astype(np.float64)
        self.doc_counts += np.asarray(B.sum(axis=0)).ravel()
        self.pair_counts += (B.T @ B).toarray()

    def _merge(self, other: CooccurrenceState) -> None:
        self.doc_counts = self.doc_counts + other.doc_counts
        self.pair_counts = self.pair_counts + other.pair_counts

    def finalize(self) -> dict[str, Any]:
        """Normalised pointwise mutual information of every pair (-1 for pairs never seen together)."""
        n = max(self.n_rows, 1)
        p = self.doc_counts / n
        pij = self.pair_counts / n
        with np.errstate(divide="ignore", invalid="ignore"):
            npmi = np.log(pij / np.outer(p, p)) / -np.log(pij)
        npmi[pij <= 0] = -1.0
        npmi[(pij >= 1.0)] = 1.0
        return {"npmi": npmi}


@register
class WordCountState(CountsReader):
    """Each word's count over the corpus (a sum: exact, mergeable): the decoder's starting background."""

    algorithm = "ntm_word_counts"
    array_names = ("word_counts",)

    def _init_arrays(self) -> None:
        self.word_counts = np.zeros(self.n_words)

    def _update(self, X: sp.csr_matrix, y: Any, context: Any = None) -> None:
        self.word_counts = self.word_counts + np.asarray(X.sum(axis=0)).ravel()

    def _merge(self, other: WordCountState) -> None:
        self.word_counts = self.word_counts + other.word_counts

    def finalize(self) -> np.ndarray:
        return self.word_counts


@functools.lru_cache(maxsize=16)
def _laplace_prior(alpha: tuple[float, ...], n_topics: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ntm_numerics.laplace_prior`, once per prior (a fit asks for it every epoch); read-only arrays."""
    prior = nn.laplace_prior(np.asarray(alpha, dtype=np.float64).reshape(-1 if len(alpha) > 1 else ()), n_topics)
    for a in prior:
        a.flags.writeable = False
    return prior


def topic_uniqueness(top: np.ndarray) -> np.ndarray:
    """Topic uniqueness (Nan et al. 2019) of each topic's top words: mean of 1 / (topics sharing the word).

    1 when no topic shares a top word with another; 1/K when all K topics are the same.

    Examples
    --------
    >>> topic_uniqueness(np.array([[0, 1], [0, 2]])).tolist()
    [0.75, 0.75]
    """
    counts = np.bincount(top.ravel())
    return (1.0 / counts[top]).mean(axis=1)


# ---------------------------------------------------------------------------- estimator
class NeuralTopicModel(SGDEstimator):
    """Neural topic model (ProdLDA) on text or counts of any size, with scikit-learn LDA's outputs.

    Parameters
    ----------
    n_components : int
        Number of topics ``K``.
    encoder_layers : sequence of int
        Hidden widths of the encoder MLP.
    activation : {"softplus", "relu", "tanh"}
        Encoder activation.
    prior_alpha : float or sequence of K floats
        Dirichlet prior on topic proportions (approximated by a logistic normal).
    dropout : float
        Dropout rate on the encoder's last layer and on the topic proportions.
    batch_norm : bool
        Batch norm on the encoder heads and the decoder logits (prevents topic collapse).
    background : bool
        With batch norm, a learned log-frequency per word added to the decoder's
        normalised logits, started at the corpus's word frequencies (the counts of
        the vocabulary this fit learns from text; otherwise one more pass over the
        input: count matrices, or text with a given ``vocabulary``). The topics then
        model how documents deviate from it, and do not spend their top words on
        frequent words: on the benchmark corpora NPMI rose by 0.03-0.08 and the
        validation loss fell faster (see ``docs/topic-model.md``).
    learning_rate, beta_1, beta_2 : float
        Adam.
    batch_size : int
        Documents per gradient step.
    epochs : int
        Maximum passes over the data.
    sync_every : int
        Partitions trained in parallel per round before their parameters are averaged.
    validation_fraction : float
        Share of documents held out (chosen by a hash of their counts) for the
        validation loss per epoch and early stopping.
    early_stopping_patience : int
        Stop after this many epochs without a better validation loss (0: never),
        counted once ``5 / (1 - beta_1)`` Adam steps have been made. The loss
        compared is the mean of the last ``early_stopping_patience`` epochs' (on a
        small validation set one epoch's loss scatters more than ``tol``).
    tol : float
        Relative improvement that counts as better.
    plateau_share : float
        Also stop once the mean validation loss of the last
        ``early_stopping_patience`` epochs fell by less than this share of its fall
        from the highest epoch's (diminishing returns; 0: only the patience rule).
        The loss can keep falling slowly for many epochs after most of its fall,
        and the rule on ``tol`` waits for that (Lee corpus, K = 50: by 1.0% of the
        fall in the 5 epochs to epoch 36, 49 epochs in all). The default 0.015
        stops such plateaus and leaves curves that still fall alone: 16% fewer
        Adam steps over four corpora at K = 20 and 50, each perplexity still below
        scikit-learn's and gensim's online LDA (see ``docs/topic-model.md``); at
        0.05 it stopped before a merged planted topic split.
    transform_steps : int
        Fixed-point iterations that refine the encoder's topic proportions in
        ``transform`` against ``components_`` (LDA's E-step; 0: the encoder's
        amortised proportions). Matters most for short or partial documents.
    doc_topic_prior : float, optional
        Pseudo-count of each topic in those iterations (default ``1/n_components``,
        as scikit-learn's LDA).
    topic_word_prior : float, optional
        Pseudo-count added to each topic's attributed word counts in
        ``components_`` (default ``1/n_components``, as LDA's ``eta``). It only
        shapes the model: ``finalize(topic_word_prior=0.01)`` reads no data.
    max_features, min_df, max_df, token_pattern, stop_words, lowercase, text_column
        The vocabulary for text input (see :class:`~daskstate.Vocabulary`); a
        fitted ``vocabulary=`` (a :class:`~daskstate.Vocabulary` or a list of
        terms) is used as is.
    random_state : int
        Seeds the initial weights, the partition order, mini-batches, noise and dropout.
    on_invalid : {"raise", "skip"}
        Bad documents (neither a string nor null; count rows with a negative, NaN
        or inf count) raise errors naming the partition, or with ``"skip"`` are
        dropped from the fit and counted in ``state_.n_skipped`` (null documents
        are empty documents, not errors). ``transform`` and ``score`` always raise
        on them (their outputs are per document).

    Attributes
    ----------
    components_ : ndarray (K, V)
        Each topic's word distribution (rows sum to 1): the decoder's output for
        a document entirely about that topic.
    history_ : ndarray (epochs, 4)
        Epoch, training and validation loss per word, documents trained.
    validation_loss_ : ndarray (epochs,)
    vocabulary_terms_ : ndarray of str

    Examples
    --------
    >>> import daskstate
    >>> docs = ["apples and pears", "pears and plums", "rockets and planets", "planets and stars"] * 50
    >>> ntm = daskstate.NeuralTopicModel(2, epochs=5, random_state=0).fit(docs)
    >>> ntm.components_.shape, ntm.transform(docs[:2]).sum(axis=1).round(6).tolist()
    ((2, 6), [1.0, 1.0])
    """

    state_class = NTMState
    aliases = ("ntm", "topic_model")

    def __init__(self, n_components: int = 10, *, encoder_layers: Sequence[int] = (100, 100),
                 activation: str = "softplus", prior_alpha: float = 1.0, dropout: float = 0.2,
                 batch_norm: bool = True, background: bool = True, learning_rate: float = 0.01, beta_1: float = 0.9,
                 beta_2: float = 0.999, batch_size: int = 64, epochs: int = 50, sync_every: int = 4,
                 validation_fraction: float = 0.1, early_stopping_patience: int = 5, tol: float = 1e-3,
                 plateau_share: float = 0.015,
                 topic_word_prior: float | None = None, transform_steps: int = 50,
                 doc_topic_prior: float | None = None,
                 vocabulary: Any = None, max_features: int | None = 2000, min_df: float = 2,
                 max_df: float = 0.7, text_column: str | None = None, token_pattern: str = TOKEN_PATTERN,
                 stop_words: Any = "english", lowercase: bool = True, random_state: int = 0,
                 on_invalid: str = "raise"):
        self.n_components = n_components
        self.encoder_layers = encoder_layers
        self.activation = activation
        self.prior_alpha = prior_alpha
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.background = background
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.batch_size = batch_size
        self.epochs = epochs
        self.sync_every = sync_every
        self.validation_fraction = validation_fraction
        self.early_stopping_patience = early_stopping_patience
        self.tol = tol
        self.plateau_share = plateau_share
        self.topic_word_prior = topic_word_prior
        self.transform_steps = transform_steps
        self.doc_topic_prior = doc_topic_prior
        self.vocabulary = vocabulary
        self.max_features = max_features
        self.min_df = min_df
        self.max_df = max_df
        self.text_column = text_column
        self.token_pattern = token_pattern
        self.stop_words = stop_words
        self.lowercase = lowercase
        self.random_state = random_state
        self.on_invalid = on_invalid

    _parameter_constraints: ClassVar[dict] = {
        **Vocabulary._parameter_constraints,
        "n_components": [Ints(2)],
        "encoder_layers": [list, tuple],
        "activation": [StrOptions(set(nn.ACTIVATIONS))],
        "prior_alpha": [Floats(0, closed="neither"), list, tuple, np.ndarray],
        "dropout": [Floats(0, 1)],
        "batch_norm": ["boolean"],
        "background": ["boolean"],
        "learning_rate": [Floats(0, closed="neither")],
        "beta_1": [Floats(0, 1)],
        "beta_2": [Floats(0, 1)],
        "batch_size": [Ints(2)],
        "epochs": [Ints(1)],
        "sync_every": [Ints(1)],
        "validation_fraction": [Floats(0, 1)],
        "early_stopping_patience": [Ints(0)],
        "tol": [Floats(0)],
        "plateau_share": [Floats(0, 1)],
        "topic_word_prior": [Floats(0), None],
        "transform_steps": [Ints(0)],
        "doc_topic_prior": [Floats(0, closed="neither"), None],
        "vocabulary": "no_validation",
        "max_features": [Ints(1), None],
        "random_state": [Ints(0)],
        "on_invalid": [StrOptions({"raise", "skip"})],
    }

    def _check_params_together(self) -> None:
        nn.as_layers(self.encoder_layers)
        alpha = np.asarray(self.prior_alpha, dtype=float)
        if not ((alpha > 0).all() and alpha.ndim <= 1 and alpha.size in (1, self.n_components)):
            raise ValueError(f"prior_alpha must be a positive float or n_components={self.n_components} of them, "
                             f"got {self.prior_alpha!r}")

    # ---- inputs ------------------------------------------------------------------------
    def _is_text(self, X: Any) -> bool:
        import dask.array as da

        if isinstance(X, np.ndarray):  # lists of documents arrive as 1-D arrays of str
            return X.ndim == 1 and X.dtype.kind in "OUS"
        if sp.issparse(X) or isinstance(X, da.Array):
            return False
        if isinstance(X, Input):
            return X.schema.dtypes[:1] == ("str",)
        return True

    def _input(self, X: Any, y: Any = None, schema: Any = None) -> Input:
        import dask.array as da
        import dask.dataframe as dd

        if isinstance(X, Input):
            return X
        if self._is_text(X):
            column = self.text_column
            if column is None and schema is not None and schema.dtypes[:1] == ("str",):
                column = schema.features[0]
            inp = text_input(X, column)
        else:
            inp = counts_input(X, list(schema.features) if schema is not None and schema.dtypes[:1] != ("str",)
                               else None)
        # text or counts in this process's memory (cut into partitions to be read once per epoch)
        inp.in_memory = inp.is_dask and not isinstance(X, dd.DataFrame | dd.Series | da.Array)
        return inp

    def _vocabulary_terms(self, inp: Input, options: FitOptions) -> tuple[list[str], np.ndarray | None]:
        """The terms, and their counts in ``inp`` when the vocabulary pass counted them (else None)."""
        if self.vocabulary is not None:
            terms = self._given_terms()
            if not terms:
                raise DataError("the vocabulary given is empty")
            return terms, None
        if inp.schema.dtypes[:1] != ("str",):
            return list(inp.schema.features), None
        voc = Vocabulary(self.max_features, min_df=self.min_df, max_df=self.max_df, token_pattern=self.token_pattern,
                         stop_words=self.stop_words, lowercase=self.lowercase)
        voc._validate_params()
        state = VocabularyState(inp.schema, voc._state_params(inp))
        voc._set_state(voc._fold(inp, state, options=options.at("vocabulary")), voc._finalize_overrides())
        terms = list(voc.get_feature_names_out())
        if len(terms) < 2:
            raise DataError(
                f"the text has {len(terms)} term(s) with min_df={self.min_df!r}, max_df={self.max_df!r} "
                f"over {voc.n_documents_} documents; a topic model needs at least 2 (lower min_df?)"
            )
        return terms, np.asarray(voc.term_frequency_, dtype=np.float64)

    def _given_terms(self) -> list[str]:
        voc = self.vocabulary
        return [str(t) for t in (voc.get_feature_names_out() if hasattr(voc, "get_feature_names_out") else voc)]

    def _state_params(self, inp: Input, terms: list[str] | None = None) -> dict[str, Any]:
        text = inp.schema.dtypes[:1] == ("str",)
        alpha = np.asarray(self.prior_alpha, dtype=float)
        params = {
            "input": "text" if text else "counts",
            "n_words": len(terms), "terms": list(terms),
            "n_components": int(self.n_components), "encoder_layers": list(nn.as_layers(self.encoder_layers)),
            "activation": self.activation, "batch_norm": bool(self.batch_norm),
            "background": bool(self.batch_norm and self.background), "dropout": float(self.dropout),
            "prior_alpha": alpha.tolist(), "learning_rate": float(self.learning_rate),
            "beta_1": float(self.beta_1), "beta_2": float(self.beta_2), "batch_size": int(self.batch_size),
            "bn_momentum": 0.1, "validation_fraction": float(self.validation_fraction),
            "validation": "split" if self.validation_fraction > 0 else "none",
            "plateau_share": float(self.plateau_share),
            "seed": int(self.random_state),
        }
        if text:
            params.update(Tokenizer(self.token_pattern, self.stop_words, self.lowercase).to_params())
        return params

    # ---- fitting ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, checkpoint: Any = None, checkpoint_every: int | None = None,
            progress: bool = False, split_every: int = 8) -> NeuralTopicModel:
        """Learn the vocabulary (text input, one pass), train up to ``epochs`` epochs, attribute words to topics.

        With a ``checkpoint`` folder, each pass (vocabulary, epochs, topic words)
        checkpoints in its own group there, and a repeated call resumes.
        """
        self._validate_params()
        options = self._fit_options(checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                                    split_every=split_every)
        inp = self._input(X)
        terms, word_counts = self._vocabulary_terms(inp, options)
        state = NTMState(inp.schema, self._state_params(inp, terms))
        if state.layout.background:
            if word_counts is None:
                word_counts = self._extra_pass(inp, WordCountState(state.schema, state.params),
                                               options.at("word_counts")).finalize()
            state.start_background(word_counts)
        state = self._fold(inp, state, options=options)
        self._check_enough_rows(state)
        self._set_state(state, self._finalize_overrides())
        return self

    def _finalize_overrides(self) -> dict[str, Any]:
        return {"topic_word_prior": self.topic_word_prior}

    def partial_fit(self, X: Any, y: Any = None, **fit_kwargs: Any) -> NeuralTopicModel:
        """Train ``epochs`` more epochs on the partitions not seen before (the vocabulary stays the fitted one)."""
        if hasattr(self, "state_"):
            self._check_input_matches(X)
        return super().partial_fit(X, y, **fit_kwargs)

    def _check_input_matches(self, X: Any) -> None:
        if self.vocabulary is not None:
            given = self._given_terms()
            if given != list(self.state_.terms):
                extra = sorted(set(given) - set(self.state_.terms))[:3]
                missing = sorted(set(self.state_.terms) - set(given))[:3]
                raise SchemaError(
                    f"vocabulary= holds {len(given)} terms but the model was fitted on {self.state_.n_words} "
                    f"other ones (e.g. new {extra}, missing {missing}, or another order); fit a new model"
                )
        text = self.state_.params["input"] == "text"
        if self._is_text(X) != text:
            kind = "text" if text else "a count matrix"
            raise SchemaError(f"this model was fitted on {kind}; the input is {'counts' if text else 'text'}")
        if not text:
            width = X.shape[1] if hasattr(X, "shape") else None
            if width != self.state_.n_words:
                raise SchemaError(
                    f"X has {width} features, but NeuralTopicModel is expecting {self.state_.n_words} features as "
                    f"input (the count matrix has {width} columns; the model's vocabulary has "
                    f"{self.state_.n_words} terms)"
                )

    def _schedule(self) -> Schedule:
        return Schedule(epochs=int(self.epochs), sync_every=int(self.sync_every),
                        patience=int(self.early_stopping_patience), tolerance=float(self.tol), check_every="epoch")

    def _validation_input(self, validation_data: Any, schema: Any) -> Input:
        return self._input(validation_data, schema=schema)

    def _fold(self, inp: Input, state: State, options: FitOptions | None = None, validation_data: Any = None,
              **fit_params: Any) -> State:
        """The shared trainer's epochs (only on partitions not seen before), then the topic words of the new data."""
        if fit_params:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(fit_params)}")
        options = options or self._fit_options()
        new = [i for i, src in enumerate(inp.sources) if src not in state.consumed]
        if not new:
            return state
        trained = super()._fold(inp, state, options=options, validation_data=validation_data)
        return self._attribute_words(inp.subset(new), trained, options.at("topic_words"))

    def _attribute_words(self, inp: Input, state: NTMState, options: FitOptions) -> NTMState:
        """One more pass: the words the new data attributes to each topic (see :class:`TopicWordState`).

        They add to the attributions of earlier fits (made under the model of
        their time), so ``partial_fit`` reads only new data.
        """
        tw = TopicWordState(state.schema, state.params)
        model = state.chosen_params(0)
        tw.weights, tw.bn = model["weights"].copy(), model["bn_stats"].copy()
        tw = self._extra_pass(inp, tw, options)
        out = state.copy()
        out.topic_word = state.topic_word + tw.topic_word
        return out

    def save(self, path: Any) -> None:
        """Save as a Zarr group; a ``vocabulary=`` estimator is saved as its list of terms."""
        if self.vocabulary is None or isinstance(self.vocabulary, list | tuple):
            return super().save(path)
        plain = copy.copy(self)
        plain.vocabulary = [str(t) for t in self.state_.terms]
        return StateEstimator.save(plain, path)

    # ---- outputs ---------------------------------------------------------------------
    def _counts(self, X: Any, where: str) -> sp.csr_matrix:
        self._check_fitted()
        self._check_input_matches(X)
        return self.state_.read_batch(X, None, where=where)[0]

    def _map_docs(self, X: Any, func, width: int, name: str) -> Any:
        """``func(counts)`` for any input; a lazy Dask Array (rows x width) for Dask input."""
        import dask
        import dask.array as da
        import dask.dataframe as dd

        self._check_fitted()
        if isinstance(X, dd.DataFrame | dd.Series | da.Array):
            inp = self._input(X, schema=self.state_.schema)
            state = self.state_

            def block(part: Any, i: int) -> np.ndarray:
                counts = state.read_batch(part, None, where=f"{name}: partition {i}")[0]
                with state.blas_limit():
                    return func(counts)

            block_d = dask.delayed(block, pure=True)
            rows = partition_lengths(X, len(inp.parts)) if width != 2 or name != "score" else [np.nan] * len(inp.parts)
            parts = [da.from_delayed(block_d(p, i), shape=(n, width), dtype=np.float64)
                     for i, (p, n) in enumerate(zip(inp.parts, rows, strict=True))]
            return da.concatenate(parts, axis=0)
        return func(self._counts(X, name))

    def transform(self, X: Any) -> Any:
        """Document-topic proportions (rows sum to 1); lazy for Dask input.

        The encoder's proportions, refined by ``transform_steps`` fixed-point
        iterations against ``components_`` (see :func:`ntm_numerics.refine_topics`).
        """
        self._check_fitted()
        s = self.state_
        model = s.chosen_params(0)
        phi = self.components_
        alpha = np.full(phi.shape[0], 1.0 / phi.shape[0] if self.doc_topic_prior is None else self.doc_topic_prior)
        steps = int(self.transform_steps)

        def topics(C: sp.csr_matrix) -> np.ndarray:
            theta = nn.doc_topics(model["weights"], model["bn_stats"], C, s.layout, s.params["activation"])
            return nn.refine_topics(theta, C, phi, alpha, steps) if steps else theta

        return self._map_docs(X, topics, int(s.params["n_components"]), "transform")

    def _bound_and_words(self, X: Any) -> tuple[float, float]:
        def sums(C: sp.csr_matrix) -> np.ndarray:
            C = C[np.asarray(C.sum(axis=1)).ravel() > 0]
            rec, kl = self.state_.document_losses(C)
            return np.array([[-(rec + kl).sum(), C.sum()]])

        out = self._map_docs(X, sums, 2, "score")
        out = np.asarray(self._compute(out)[0] if hasattr(out, "compute") else out).sum(axis=0)
        return float(out[0]), float(out[1])

    def score(self, X: Any, y: Any = None) -> float:
        """The evidence lower bound of ``X`` (higher is better), as scikit-learn's LDA ``score``.

        The reconstruction term is evaluated at the posterior mean (no sampling,
        so the value is deterministic).
        """
        return self._bound_and_words(X)[0]

    def perplexity(self, X: Any) -> float:
        """``exp(-score(X) / number of words in X)``, as scikit-learn's LDA defines it."""
        bound, words = self._bound_and_words(X)
        if words <= 0:
            raise DataError("perplexity: the documents hold no word of the vocabulary")
        return float(np.exp(-bound / words))

    def predict_words(self, X: Any) -> np.ndarray:
        """Each document's predicted word distribution (the decoder at the document's topic proportions)."""
        s = self.state_
        theta = self.transform(X)
        model = s.chosen_params(0)
        return nn.word_distributions(model["weights"], model["bn_stats"], np.asarray(theta), s.layout)

    def top_words(self, n: int = 10) -> list[list[str]]:
        """The ``n`` most probable words of each topic."""
        self._check_fitted()
        return [list(self.vocabulary_terms_[row]) for row in nn.top_indices(self.components_, n)]

    def topic_uniqueness(self, top_n: int = 10) -> float:
        """Mean topic uniqueness of the top words (1: no topic shares a top word; 1/K: all alike)."""
        self._check_fitted()
        return float(topic_uniqueness(nn.top_indices(self.components_, top_n)).mean())

    def coherence(self, X: Any, top_n: int = 10, *, progress: bool = False, split_every: int = 8) -> np.ndarray:
        """NPMI coherence of each topic's top words over the reference corpus ``X`` (one pass).

        Document co-occurrence counts of the top words are a mergeable state
        folded over ``X``; each topic scores the mean NPMI of its word pairs.
        """
        self._check_fitted()
        s = self.state_
        params = {k: v for k, v in s.params.items() if k in ("input", "n_words", "terms", "token_pattern",
                                                              "stop_words", "lowercase")}
        top = nn.top_indices(self.components_, top_n)
        co = self._extra_pass(self._input(X, schema=s.schema), cooccurrence_state(top, s.schema, params),
                              progress=progress, split_every=split_every)
        return mean_npmi(co, top)

    # ---- scikit-learn -------------------------------------------------------------------
    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """``fit(X)`` then ``transform(X)``: the documents' topic proportions."""
        return self.fit(X, y, **fit_params).transform(X)

    def __sklearn_tags__(self) -> Any:
        """A transformer of documents: text, or non-negative (sparse) counts, as scikit-learn's LDA."""
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.input_tags.string = True
        return tags


def partition_lengths(X: Any, n_parts: int) -> list[float]:
    """Rows of each partition when known without reading (Dask Array chunks, :func:`daskstate.read_parquet`), else NaN."""
    import dask.array as da

    from daskstate.data import _find_piece_reader

    if isinstance(X, da.Array):
        return [float(n) for n in X.chunks[0]]
    frame = X.to_frame() if hasattr(X, "to_frame") and not hasattr(X, "columns") else X
    reader = _find_piece_reader(frame)
    if reader is not None and len(reader.pieces) == n_parts:
        return [float(p.num_rows) for p in reader.pieces]
    return [np.nan] * n_parts


def npmi_coherence(top: np.ndarray, counts: Any) -> np.ndarray:
    """Mean NPMI of each row's word pairs (``top``: topics x words, vocabulary indices) over an in-memory corpus.

    ``counts`` is a document-term count matrix (numpy or ``scipy.sparse``); the
    document co-occurrences of the words in ``top`` are a :class:`CooccurrenceState`
    (for a Dask or text corpus: :meth:`NeuralTopicModel.coherence`, one pass).

    Examples
    --------
    >>> X = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]])
    >>> npmi_coherence(np.array([[0, 1], [1, 2]]), X).round(3).tolist()
    [0.415, -1.0]
    """
    schema = counts_input(counts).schema
    params = {"input": "counts", "n_words": schema.n_features, "terms": list(schema.features)}
    co = cooccurrence_state(top, schema, params)
    return mean_npmi(co.update(co.read_batch(counts, None, where="counts")[0]), top)


def cooccurrence_state(top: np.ndarray, schema: Any, params: dict[str, Any]) -> CooccurrenceState:
    """The empty co-occurrence state of the words in ``top``, reading documents with the reader ``params``."""
    return CooccurrenceState(schema, {**params, "word_ids": np.unique(top).tolist()})


def mean_npmi(co: CooccurrenceState, top: np.ndarray) -> np.ndarray:
    """Each row of ``top``'s mean NPMI over its word pairs, from the folded co-occurrences."""
    local = np.searchsorted(np.asarray(co.params["word_ids"]), top)
    npmi = co.finalize()["npmi"]
    iu = np.triu_indices(top.shape[1], 1)
    return np.array([npmi[np.ix_(row, row)][iu].mean() for row in local])


def synthetic_lda_corpus(n_docs: int, n_words: int, n_topics: int, *, doc_length: int = 80,
                         alpha: float = 0.2, eta: float = 0.05, seed: int = 0
                         ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Counts drawn from LDA's generative model: ``(X, topics, proportions)``.

    Each topic is a Dirichlet(``eta``) distribution over ``n_words``; each document
    draws proportions from Dirichlet(``alpha``) and ``doc_length`` words.
    """
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.full(n_words, eta), size=n_topics)
    theta = rng.dirichlet(np.full(n_topics, alpha), size=n_docs)
    P = theta @ topics
    rows = [rng.multinomial(doc_length, p / p.sum()) for p in P]
    return sp.csr_matrix(np.vstack(rows).astype(np.float64)), topics, theta


def match_topics(fitted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Cosine similarity of each true topic with its fitted match (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment

    a = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    b = fitted / np.linalg.norm(fitted, axis=1, keepdims=True)
    S = a @ b.T
    rows, cols = linear_sum_assignment(-S)
    return S[rows, cols]


__all__ = ["CooccurrenceState", "NTMState", "NeuralTopicModel", "WordCountState", "match_topics", "npmi_coherence", "synthetic_lda_corpus",
           "topic_uniqueness"]
