"""Neural topic model: gradients against finite differences, training, outputs, reliability."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from daskstate.algorithms import ntm_numerics as nn


# ---------------------------------------------------------------------------- numerics
def _numeric_grad(f, w: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(w)
    for i in range(len(w)):
        e = np.zeros_like(w)
        e[i] = h
        out[i] = (f(w + e) - f(w - e)) / (2 * h)
    return out


@pytest.mark.parametrize("batch_norm,background", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
def test_gradient_matches_finite_differences(batch_norm, background, activation):
    rng = np.random.default_rng(3)
    layout = nn.Layout(n_words=11, n_topics=3, encoder_layers=(6, 4), batch_norm=batch_norm, background=background)
    w = nn.init_weights(layout, rng) + 0.1 * rng.standard_normal(layout.size)
    if background:
        layout.views(w)["b_dec"][...] = nn.background_logits(rng.poisson(5.0, 11))
    X = sp.csr_matrix(rng.poisson(0.8, size=(7, 11)).astype(float))
    noise = nn.draw_noise(rng, 7, layout, dropout=0.3)
    prior = nn.laplace_prior(np.array([0.3, 1.0, 2.0]), 3)

    def loss(p):
        return nn.forward(p, X, noise, layout, activation=activation, prior=prior)[0]

    _, cache = nn.forward(w, X, noise, layout, activation=activation, prior=prior)
    grad = nn.backward(w, cache, layout)
    num = _numeric_grad(loss, w)
    assert np.abs(grad - num).max() <= 1e-6 * max(1.0, np.abs(num).max())
    # every parameter group receives gradient (none silently cut off)
    for name, g in layout.views(grad).items():
        assert np.abs(g).max() > 0, name


def test_pieces_match_closed_forms():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    mu0, var0 = nn.laplace_prior(0.5, 4)
    # KL of diagonal Gaussians against a Monte Carlo estimate
    z = mu[0] + np.exp(0.5 * logvar[0]) * rng.standard_normal((200_000, 4))
    logq = -0.5 * (((z - mu[0]) ** 2) / np.exp(logvar[0]) + logvar[0] + np.log(2 * np.pi)).sum(axis=1)
    logp = -0.5 * (((z - mu0) ** 2) / var0 + np.log(var0) + np.log(2 * np.pi)).sum(axis=1)
    assert nn.kl_to_prior(mu, logvar, mu0, var0)[0] == pytest.approx((logq - logp).mean(), abs=0.02)
    # Laplace approximation: symmetric alpha -> zero mean; variance formula
    m, v = nn.laplace_prior([1.0, 2.0, 4.0], 3)
    assert m.sum() == pytest.approx(0.0)
    assert v[0] == pytest.approx((1 - 2 / 3) / 1.0 + (1 + 0.5 + 0.25) / 9)
    Y, mean, var = nn.batch_norm(mu)
    assert np.allclose(Y.mean(axis=0), 0) and np.allclose(Y.std(axis=0), 1, atol=1e-4)
    assert nn.mini_batch_bounds(10, 4) == [(0, 4), (4, 10)]
    assert nn.mini_batch_bounds(3, 64) == [(0, 3)]
    assert nn.top_indices(np.array([[0.1, 0.5, 0.2], [3.0, 1.0, 2.0]]), 2).tolist() == [[1, 2], [0, 2]]


# ---------------------------------------------------------------------------- training
from daskstate.algorithms.ntm import (  # noqa: E402
    NeuralTopicModel,
    match_topics,
    synthetic_lda_corpus,
    topic_uniqueness,
)


def _fit_planted(K: int, V: int, D: int, seed: int, **kw):
    X, topics, _ = synthetic_lda_corpus(D, V, K, seed=seed)
    model = NeuralTopicModel(K, random_state=seed, **kw).fit(X)
    return model, X, topics


def test_finds_planted_topics_without_collapse():
    """A small real training run (default run): every planted topic is found."""
    model, X, topics = _fit_planted(5, 100, 1500, seed=0, epochs=20)
    sim = match_topics(model.components_, topics)
    assert sim.mean() >= 0.9, sim
    assert sim.min() >= 0.8, sim  # no collapsed (merged or empty) topic
    np.testing.assert_allclose(model.components_.sum(axis=1), 1.0)
    theta = model.transform(X)
    np.testing.assert_allclose(theta.sum(axis=1), 1.0)
    assert (theta.argmax(axis=0) != theta.argmax(axis=0)[0]).any()  # topics are used by different documents
    h = model.history_
    assert h.shape == (model.n_iter_, 4) and np.isfinite(h[:, 1:3]).all()
    assert h[-1, 2] < h[0, 2]  # the validation loss went down
    assert model.validation_loss_.shape == (model.n_iter_,)
    sharper = model.finalize(topic_word_prior=0.0)  # shapes only the model: no data read
    assert sharper.topic_word_prior == 0.0 and model.topic_word_prior is None
    assert (sharper.components_.max(axis=1) > model.components_.max(axis=1)).all()
    assert sharper.state_ is model.state_
    # the refined proportions of partial documents predict their other halves better than the encoder's alone
    rng = np.random.default_rng(0)
    half = X[:300].copy()
    half.data = rng.binomial(half.data.astype(int), 0.5).astype(float)
    rest = X[:300] - half
    encoder_only = NeuralTopicModel(**{**model.get_params(), "transform_steps": 0})
    encoder_only.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})

    def completion(est):
        return float(np.exp(-rest.multiply(np.log(est.transform(half) @ model.components_)).sum() / rest.sum()))

    assert completion(model) < 0.95 * completion(encoder_only)
    ppl = model.perplexity(X)
    assert ppl == pytest.approx(np.exp(-model.score(X) / X.sum()))
    assert 1 < ppl < 100  # uniform over 100 words would be 100


@pytest.mark.slow
@pytest.mark.parametrize("K,V,D", [(10, 200, 3000), (20, 500, 8000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_planted_topics_at_larger_sizes(K, V, D, seed):
    model, X, topics = _fit_planted(K, V, D, seed=seed, epochs=100)
    sim = match_topics(model.components_, topics)
    assert sim.mean() >= 0.9, sim
    assert sim.min() >= 0.5, sim


def _corpus_with_frequent_words(seed: int) -> sp.csr_matrix:
    """Planted LDA topics plus as many words again from one Zipf-shaped background distribution."""
    X, topics, _ = synthetic_lda_corpus(1500, 200, 5, seed=seed, doc_length=60)
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, 201)
    zipf = zipf[rng.permutation(200)] / zipf.sum()
    return sp.csr_matrix(X.toarray() + rng.multinomial(60, zipf, size=1500))


def test_background_frequencies_speed_up_training():
    """A learned per-word background, started at the words' frequencies: the validation loss falls much faster.

    Without it the decoder's batch-normalised logits give every word mean 0 and
    variance 1 over a batch, and the frequent words' mass has to be learned as
    the topics' shape (10 epochs: 5.06 nats per word against 4.32 with it).
    """
    X = _corpus_with_frequent_words(0)
    kw = dict(epochs=10, random_state=0)
    plain = NeuralTopicModel(5, background=False, **kw).fit(X)
    with_background = NeuralTopicModel(5, **kw).fit(X)
    assert with_background.validation_loss_[-1] < plain.validation_loss_[-1] - 0.3
    b_dec = with_background.state_.layout.views(with_background.state_.best_weights)["b_dec"]
    assert np.corrcoef(b_dec, np.log(np.asarray(X.sum(axis=0)).ravel()))[0, 1] > 0.95  # started there, kept
    assert "b_dec" not in plain.state_.layout.shapes
    # text input: the vocabulary pass's counts start it (no pass of its own)
    docs = ["apples pears apples", "pears plums", "rockets planets rockets stars"] * 20
    est = NeuralTopicModel(2, epochs=1, min_df=1, random_state=0)
    terms, word_counts = est._vocabulary_terms(est._input(docs), est._fit_options())
    X = daskstate.Vocabulary(min_df=1).fit(docs).transform(docs)
    np.testing.assert_array_equal(word_counts, np.asarray(X.sum(axis=0)).ravel())
    state = est.fit(docs).state_
    assert state.params["background"] and list(state.terms) == terms
    with pytest.raises(ValueError, match="word_counts has 3 entries for 6 words"):
        state.start_background(np.ones(3))


def test_without_batch_norm_and_with_plain_momentum_topics_are_worse():
    """The failure mode the defaults avoid: same budget, no batch norm, low momentum and learning rate."""
    good, X, topics = _fit_planted(5, 100, 1500, seed=1, epochs=10)
    bad = NeuralTopicModel(5, random_state=1, epochs=10, batch_norm=False, beta_1=0.9, learning_rate=2e-4).fit(X)
    assert match_topics(good.components_, topics).mean() > match_topics(bad.components_, topics).mean() + 0.05


# ---------------------------------------------------------------------------- text, Dask, outputs
import dask.array as da  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402

import daskstate  # noqa: E402
from daskstate.errors import DataError, SchemaError  # noqa: E402


def _lee() -> list[str]:
    from gensim.test.utils import datapath

    with open(datapath("lee_background.cor"), encoding="utf-8", errors="replace") as fh:
        return [line.strip() for line in fh if line.strip()]


@pytest.fixture(scope="module")
def lee_model():
    docs = _lee()
    ddf = dd.from_pandas(pd.DataFrame({"body": docs, "n": np.arange(len(docs))}), npartitions=3)
    model = NeuralTopicModel(8, epochs=15, max_features=800, min_df=3, text_column="body", sync_every=3,
                             batch_size=32, random_state=0).fit(ddf)
    return model, ddf, docs


def test_text_column_of_a_dask_frame(lee_model):
    model, ddf, docs = lee_model
    V = len(model.vocabulary_terms_)
    assert 100 < V <= 800 and model.components_.shape == (8, V)
    np.testing.assert_allclose(model.components_.sum(axis=1), 1.0)
    lazy = model.transform(ddf)
    assert isinstance(lazy, da.Array)
    theta = lazy.compute()
    assert theta.shape == (len(docs), 8)
    np.testing.assert_allclose(theta.sum(axis=1), 1.0)
    np.testing.assert_allclose(model.transform(docs), theta)
    top = model.top_words(10)
    assert len(top) == 8 and all(len(t) == 10 and set(t) <= set(model.vocabulary_terms_) for t in top)
    assert 1.0 / 8 <= model.topic_uniqueness() <= 1.0
    coh = model.coherence(ddf, top_n=10)
    assert coh.shape == (8,) and (coh >= -1).all() and (coh <= 1).all()
    assert np.isfinite(model.perplexity(ddf)) and model.perplexity(ddf) == pytest.approx(model.perplexity(docs))


def test_npmi_and_uniqueness_against_hand_counts():
    # 4 documents; words 0 and 1 always together, word 2 alone in half of them
    X = np.array([[1, 1, 0, 0], [2, 1, 0, 1], [0, 0, 3, 0], [0, 0, 1, 1]], dtype=float)
    model = NeuralTopicModel(2, epochs=1, batch_size=2, validation_fraction=0.0, random_state=0).fit(X)
    model.components_ = np.array([[0.5, 0.4, 0.05, 0.05], [0.05, 0.05, 0.5, 0.4]])
    coh = model.coherence(X, top_n=2)
    assert coh[0] == pytest.approx(1.0)  # p(0,1) = p(0) = p(1): perfectly coherent
    p2, p3, p23 = 0.5, 0.5, 0.25
    assert coh[1] == pytest.approx(np.log(p23 / (p2 * p3)) / -np.log(p23))
    assert topic_uniqueness(np.array([[0, 1], [0, 1]])).tolist() == [0.5, 0.5]


def test_save_load_partial_fit_and_mismatched_inputs(lee_model, tmp_path):
    model, ddf, docs = lee_model
    model.save(tmp_path / "ntm.zarr")
    back = daskstate.load(tmp_path / "ntm.zarr")
    np.testing.assert_allclose(back.components_, model.components_)
    np.testing.assert_allclose(back.transform(docs[:20]), model.transform(docs[:20]))
    assert list(back.vocabulary_terms_) == list(model.vocabulary_terms_)
    # a saved model given counts of another vocabulary, or counts when it read text
    with pytest.raises(SchemaError, match="fitted on text"):
        back.transform(np.ones((3, len(model.vocabulary_terms_))))
    before = back.components_.copy()
    grown = back.partial_fit(docs[:100])
    assert grown.n_iter_ > model.n_iter_ and grown.history_.shape[0] == grown.n_iter_
    assert not np.allclose(grown.components_, before)
    X, _, _ = synthetic_lda_corpus(200, 30, 3, seed=0)
    counts = NeuralTopicModel(3, epochs=2, random_state=0).fit(X)
    with pytest.raises(SchemaError, match="31 columns; the model's vocabulary has 30 terms"):
        counts.partial_fit(sp.hstack([X, X[:, :1]]).tocsr())
    with pytest.raises(SchemaError, match="31 columns; the model's vocabulary has 30 terms"):
        counts.transform(sp.hstack([X, X[:, :1]]).tocsr())
    with pytest.raises(SchemaError, match="fitted on a count matrix"):
        counts.transform(["some text"])
    fixed = NeuralTopicModel(3, epochs=1, vocabulary=["apple", "pear", "plum"], random_state=0).fit(
        ["apple pear", "pear plum", "plum apple apple"] * 10)
    fixed.set_params(vocabulary=["apple", "pear", "kiwi"])
    with pytest.raises(SchemaError, match=r"vocabulary= holds 3 terms .* new \['kiwi'\], missing \['plum'\]"):
        fixed.partial_fit(["kiwi pear"])


def test_bad_documents_and_counts_raise_naming_the_partition():
    docs = ["apples pears plums"] * 30 + [None, "", "   "] * 5 + ["rockets planets stars"] * 30
    model = NeuralTopicModel(2, epochs=2, min_df=1, random_state=0).fit(docs)  # null and empty documents are skipped
    assert model.state_.n_rows == len(docs)
    with pytest.raises(DataError, match=r"partition 0 .*not strings \(first at row 2: int 5"):
        NeuralTopicModel(2, epochs=1, min_df=1).fit(["apples pears", "plums pears", 5])
    X = da.from_array(np.ones((40, 5)), chunks=(20, 5))
    X[25, 2] = -1.0
    with pytest.raises(DataError, match=r"partition 1 .*1 count\(s\) are negative"):
        NeuralTopicModel(2, epochs=1).fit(X)
    with pytest.raises(DataError, match="needs at least 2"):
        NeuralTopicModel(2, epochs=1, min_df=5).fit(["one document only"])
    with pytest.raises(ValueError, match="n_components"):
        NeuralTopicModel(1).fit(np.ones((4, 4)))
    with pytest.raises(ValueError, match="activation"):
        NeuralTopicModel(2, activation="gelu").fit(np.ones((4, 4)))


def test_dask_array_of_counts_and_early_stopping():
    X, topics, _ = synthetic_lda_corpus(1200, 60, 4, seed=3)
    lazy = da.from_array(X.toarray(), chunks=(300, 60))
    model = NeuralTopicModel(4, epochs=200, early_stopping_patience=3, tol=0.0, plateau_share=0.0,
                             random_state=0, sync_every=2).fit(lazy)
    assert model.state_.extra_meta["stopped_by"] == "patience"
    assert model.n_iter_ < 200  # stopped early
    best = int(np.nanargmin(model.validation_loss_))
    assert model.n_iter_ - 1 - best >= 3  # ... after 3 epochs without a better validation loss
    theta = model.transform(lazy)
    assert isinstance(theta, da.Array)
    np.testing.assert_allclose(theta.compute(), model.transform(X))
    assert match_topics(model.components_, topics).mean() >= 0.9


# ---------------------------------------------------------------------------- command line, checkpoints, cluster
def _write_text_parquet(folder, docs, n_files: int, prefix: str = "part") -> None:
    os.makedirs(folder, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(docs)), n_files)):
        pd.DataFrame({"body": [docs[j] for j in chunk], "id": chunk}).to_parquet(
            os.path.join(folder, f"{prefix}-{i:03d}.parquet"), index=False)


def test_command_line_fit_predict_partial_fit(tmp_path, capsys):
    from daskstate.cli import main

    docs = _lee()
    _write_text_parquet(tmp_path / "docs", docs[:200], 2)
    out = str(tmp_path / "topics.zarr")
    assert main(["fit", "ntm", "--input", str(tmp_path / "docs"), "--text-column", "body", "--param",
                 "n_components=5", "--param", "epochs=3", "--param", "min_df=3", "--out", out]) == 0
    assert "fitted NeuralTopicModel on 200 rows" in capsys.readouterr().out
    assert main(["predict", out, "--input", str(tmp_path / "docs"), "--output", str(tmp_path / "theta")]) == 0
    theta = pd.read_parquet(tmp_path / "theta")
    assert theta.shape == (200, 5) and np.allclose(theta.sum(axis=1), 1.0)
    _write_text_parquet(tmp_path / "docs", docs[200:], 1, prefix="new")
    assert main(["partial-fit", out, "--input", str(tmp_path / "docs")]) == 0
    assert f"{len(docs) - 200} new rows ({len(docs)} in all)" in capsys.readouterr().out


def test_checkpointed_fit_resumes_each_pass(tmp_path):
    docs = _lee()
    _write_text_parquet(tmp_path / "docs", docs, 4)
    ddf = daskstate.read_parquet(tmp_path / "docs")
    kw = dict(n_components=4, epochs=4, min_df=3, text_column="body", random_state=0, sync_every=2)
    ckpt = tmp_path / "ckpt"
    first = NeuralTopicModel(**kw).fit(ddf, checkpoint=ckpt, checkpoint_every=2)
    assert sorted(os.listdir(ckpt)) == ["epochs", "topic_words", "vocabulary"]
    again = NeuralTopicModel(**kw).fit(ddf, checkpoint=ckpt, checkpoint_every=2)  # resumes: nothing left to do
    np.testing.assert_array_equal(again.components_, first.components_)
    plain = NeuralTopicModel(**kw).fit(ddf)
    np.testing.assert_allclose(plain.components_, first.components_)
    assert first.transform(ddf).shape == (len(docs), 4)  # row counts from the Parquet metadata: known chunks


@pytest.mark.distributed
def test_same_model_on_a_cluster_of_worker_processes(cluster_client):
    X, _, _ = synthetic_lda_corpus(800, 40, 3, seed=5)
    lazy = da.from_array(X.toarray(), chunks=(200, 40))
    local = NeuralTopicModel(3, epochs=3, random_state=0, sync_every=2).fit(lazy)
    with cluster_client.as_current():
        remote = NeuralTopicModel(3, epochs=3, random_state=0, sync_every=2).fit(lazy)
        theta = remote.transform(lazy).compute()
    np.testing.assert_allclose(remote.components_, local.components_, rtol=1e-6)
    np.testing.assert_allclose(theta, local.transform(X), rtol=1e-6)


def test_float32_step_stays_float32_and_matches_float64():
    """The training step computes in the parameters' float type (a float64 input must not upcast it)."""
    rng = np.random.default_rng(5)
    layout = nn.Layout(n_words=40, n_topics=4, encoder_layers=(8,), batch_norm=True)
    X = sp.csr_matrix(rng.poisson(0.5, size=(16, 40)).astype(np.float64))
    noise = nn.draw_noise(rng, 16, layout, dropout=0.2)
    prior = nn.laplace_prior(1.0, 4)
    steps = {}
    for dtype in (np.float64, np.float32):
        w = nn.init_weights(layout, np.random.default_rng(1)).astype(dtype)
        m, v = np.zeros_like(w), np.zeros_like(w)
        loss, cache = nn.train_step(w, m, v, 1.0, X, noise, layout, activation="softplus", prior=prior,
                                    learning_rate=0.01, beta_1=0.9, beta_2=0.999)
        assert w.dtype == m.dtype == v.dtype == cache["E"].dtype == dtype
        steps[dtype] = (loss, w)
    assert steps[np.float32][0] == pytest.approx(steps[np.float64][0], rel=1e-5)
    np.testing.assert_allclose(steps[np.float32][1], steps[np.float64][1], atol=1e-5)


def test_on_invalid_skip_drops_and_counts_bad_documents():
    docs = ["apples pears plums"] * 30 + [5, b"bytes", None] + ["rockets planets stars"] * 30
    model = NeuralTopicModel(2, epochs=2, min_df=1, on_invalid="skip", random_state=0).fit(docs)
    assert model.state_.n_skipped == 2 and model.state_.n_rows == len(docs) - 2  # the null one is an empty document
    assert len(model.vocabulary_terms_) == 6
    X = np.ones((40, 5))
    X[[3, 25], 2] = [-1.0, np.nan]
    counts = NeuralTopicModel(2, epochs=1, on_invalid="skip").fit(da.from_array(X, chunks=(20, 5)))
    assert counts.state_.n_skipped == 2 and counts.state_.n_rows == 38
    with pytest.raises(DataError, match="on_invalid='skip'"):
        NeuralTopicModel(2, epochs=1).fit(X)
    with pytest.raises(ValueError, match="on_invalid"):
        NeuralTopicModel(2, on_invalid="ignore").fit(X)
