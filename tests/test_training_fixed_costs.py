"""The shared trainer's fixed costs and early stopping on small data (issue 12).

- In-memory inputs (numpy, pandas, scipy.sparse, lists of documents) run their
  rounds in this process: no Dask graph per round or epoch, and the same result
  as the same data given as a Dask collection.
- A round's task copies only the arrays the rounds protocol lets it change.
- A single model's early stopping does not fire while a noisy validation loss is
  still falling, and does fire once it has flattened; with ``plateau_share`` it
  fires once the last epochs brought a small share of the gain so far.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

import daskstate
from daskstate import engine, training
from daskstate.algorithms.ntm import NeuralTopicModel, synthetic_lda_corpus


def count_calls(monkeypatch, owner, name: str) -> list:
    """A list that grows by one at each call of ``owner.name`` (patched for the test)."""
    calls = []
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


@pytest.fixture
def graphs(monkeypatch):
    """Counts the Dask graphs of rounds the engine builds."""
    return count_calls(monkeypatch, engine, "build_rounds")


def test_linear_learner_in_memory_builds_no_graph_and_matches_dask(graphs, monkeypatch):
    """Several partitions per round (a thread pool), statistics pass and round checks: as with Dask, bit for bit."""
    monkeypatch.setattr(training, "DEFAULT_BATCH_ROWS", 250)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=1500)
    kw = dict(num_models=2, epochs=4, mini_batch_size=50, random_state=0)
    local = daskstate.LinearLearner("regressor", **kw).fit(X, y)
    assert graphs == []  # six partitions, sync_every rounds, four epochs: not one graph
    lazy = daskstate.LinearLearner("regressor", **kw).fit(da.from_array(X, chunks=(250, 3)),
                                                          da.from_array(y, chunks=250))
    assert len(graphs) >= 4
    np.testing.assert_array_equal(local.coef_, lazy.coef_)
    np.testing.assert_array_equal(local.state_.progress, lazy.state_.progress)
    assert local.state_.n_rows == lazy.state_.n_rows == 1500


def test_topic_model_graphs_per_epoch(graphs):
    """In-memory counts: no graph at all; a Dask Array: one per epoch (each epoch re-reads it)."""
    X, _, _ = synthetic_lda_corpus(300, 40, 3, seed=1)
    kw = dict(epochs=6, early_stopping_patience=0, random_state=0, encoder_layers=(16,))
    local = NeuralTopicModel(3, **kw).fit(X)
    assert graphs == []
    lazy = NeuralTopicModel(3, **kw).fit(da.from_array(X.toarray(), chunks=(300, 40)))
    assert len(graphs) >= 6
    np.testing.assert_allclose(local.components_, lazy.components_, rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(local.history_[:, 0], lazy.history_[:, 0])


def test_a_round_task_copies_only_what_it_may_change():
    X, _, _ = synthetic_lda_corpus(100, 30, 3, seed=2)
    state = NeuralTopicModel(3, epochs=1, random_state=0, encoder_layers=(8,)).fit(X).state_.resume_training()
    task = state.round_copy()
    for name in state.round_averaged:  # its own arrays
        assert not np.shares_memory(getattr(task, name), getattr(state, name))
        getattr(task, name)[...] = 0
    assert np.shares_memory(task.anchor_weights, state.anchor_weights)
    with pytest.raises(ValueError, match="read-only"):  # a task must not change the round's start
        task.best_weights[0] = 1.0
    assert task.params is state.params and task.schema is state.schema
    task.extra_meta["history"].append({"epoch": 99})
    assert state.extra_meta["history"][-1].get("epoch") != 99


def _checked_epochs(losses: np.ndarray, patience: int = 5, tol: float = 1e-3, steps_per_epoch: int = 10**6,
                    plateau_share: float = 0.0) -> int:
    """Epochs a topic model trains when its epochs' validation losses per word are ``losses``.

    ``plateau_share=0``: the patience rule on ``tol`` alone.
    """
    X = sp.csr_matrix(np.eye(6) * 3.0)
    state = NeuralTopicModel(2, epochs=1, random_state=0, encoder_layers=(4,), validation_fraction=0.0,
                             plateau_share=plateau_share).fit(X).state_.resume_training()
    for epoch, loss in enumerate(losses):
        state.adam_t[:] = steps_per_epoch * (epoch + 1)  # Adam's steps: the warm-up
        state.ev_loss[:], state.ev_n[:] = loss * 1000.0, 1000.0
        state.anchor_weights = state.weights + epoch  # a new model each epoch
        if state.end_epoch(patience, tol):
            return epoch + 1
    return len(losses)


def test_early_stopping_waits_while_a_noisy_loss_falls():
    """Validation losses per word falling as ``7.15 + 1.3 exp(-epoch / 15)``, each epoch's scattered by 0.3%.

    ``tol=1e-3`` and ``patience=5`` ask to stop once 5 more epochs would gain
    less than 0.1%: from epoch 62 on. The best single epoch, a lucky draw, was
    seldom beaten by ``tol`` within ``patience`` epochs, and training stopped
    early (here from epoch 37 on; package descriptions at K = 50: epoch 28 of 55).
    """
    epochs = []
    for seed in range(10):
        e = np.arange(120)
        losses = 7.15 + 1.3 * np.exp(-e / 15) + 0.02 * np.random.default_rng(seed).standard_normal(120)
        epochs.append(_checked_epochs(losses))
    assert min(epochs) >= 45 and np.median(epochs) >= 55, epochs
    assert max(epochs) <= 62 + 4 * 5, epochs  # and the plateau stops it


#: the validation loss per word of a topic model on package descriptions (K = 50), 60 epochs without stopping
PACKAGES_K50 = [8.4434, 8.9466, 8.5490, 8.4539, 8.3129, 8.1757, 8.0380, 7.9007, 7.7775, 7.7021, 7.5883, 7.5253,
                7.4760, 7.4651, 7.4250, 7.3876, 7.3500, 7.3520, 7.3635, 7.3442, 7.3563, 7.3063, 7.2836, 7.3715,
                7.3327, 7.3042, 7.3105, 7.3106, 7.2985, 7.2987, 7.2817, 7.2686, 7.2856, 7.2709, 7.2396, 7.2140,
                7.2203, 7.1991, 7.2102, 7.1927, 7.2017, 7.2196, 7.1993, 7.1972, 7.1952, 7.1894, 7.2072, 7.2319,
                7.2049, 7.2018, 7.1933, 7.2058, 7.1995, 7.1902, 7.1955, 7.1642, 7.1880, 7.1848, 7.1721, 7.1877]


def test_early_stopping_on_a_recorded_small_corpus_curve():
    """The curve that stopped at epoch 28 (NPMI 0.02; 0.12 at 40 epochs, 0.15 at 60): now past epoch 40."""
    assert _checked_epochs(np.array(PACKAGES_K50), steps_per_epoch=8) >= 40


def test_early_stopping_still_stops_a_clean_plateau_after_patience_epochs():
    losses = np.r_[np.linspace(8.0, 7.0, 10), np.full(30, 7.0)]
    assert _checked_epochs(losses, patience=3) <= 10 + 2 * 3


def test_plateau_share_stops_once_most_of_the_gain_is_made():
    """Diminishing returns (the topic model's ``plateau_share=0.05``) on ``7.15 + 1.3 exp(-epoch / 15)``.

    The mean of the last 5 epochs falls by less than 5% of the fall since the
    first epoch from epoch ~36 on, with 91% of the gain made (0.12 of 1.3 nats
    per word left); the patience rule on ``tol`` alone trains to epoch ~60 for it.
    """
    for seed in range(10):
        e = np.arange(120)
        losses = 7.15 + 1.3 * np.exp(-e / 15) + 0.02 * np.random.default_rng(seed).standard_normal(120)
        with_share, alone = _checked_epochs(losses, plateau_share=0.05), _checked_epochs(losses)
        assert 30 <= with_share <= 42 and with_share <= alone - 10, (seed, with_share, alone)
    # the loss first rises (the encoder starts to use the topics), then falls steadily: no stop while it falls
    rising = np.r_[np.linspace(8.4, 9.0, 3), 9.0 - 0.05 * np.arange(40)]
    assert _checked_epochs(rising, steps_per_epoch=8, plateau_share=0.05) == _checked_epochs(rising, steps_per_epoch=8)
    assert _checked_epochs(9.0 - 0.05 * np.arange(40), plateau_share=0.05) == 40
    # the recorded packages curve: the gain counts from the peak after the first epoch's bump
    assert 20 <= _checked_epochs(np.array(PACKAGES_K50), steps_per_epoch=8, plateau_share=0.05) <= 30
    # not before the warm-up's Adam steps (see NTMState._counts_staleness)
    assert _checked_epochs(np.array(PACKAGES_K50), steps_per_epoch=1, plateau_share=0.05) >= 50


#: the validation loss per word of a topic model on the Lee corpus (K = 50, seed 0), 60 epochs without stopping:
#: the first check scores the untrained model (its batch norms' running statistics make it the background
#: alone), the loss rises to a peak at epoch 3, falls, flattens at epochs 28-36, falls again to epoch 41
LEE_K50 = [7.5714, 7.7635, 7.9800, 8.0602, 8.0596, 7.9459, 7.7783, 7.6405, 7.5125, 7.4327, 7.3881, 7.3575, 7.3266,
           7.3032, 7.2830, 7.2616, 7.2449, 7.2241, 7.2089, 7.1899, 7.1779, 7.1658, 7.1580, 7.1430, 7.1310, 7.1171,
           7.1064, 7.1015, 7.0960, 7.0954, 7.0947, 7.0952, 7.0909, 7.0921, 7.0883, 7.0868, 7.0825, 7.0763, 7.0693,
           7.0581, 7.0490, 7.0433, 7.0453, 7.0452, 7.0442, 7.0450, 7.0440, 7.0456, 7.0445, 7.0426, 7.0434, 7.0499,
           7.0534, 7.0557, 7.0532, 7.0526, 7.0500, 7.0426, 7.0383, 7.0345]


def test_plateau_share_measures_the_gain_from_the_peak():
    """The topic model's default ``plateau_share=0.015`` stops the Lee curve at its plateau (epoch 36: the last
    5 epochs' mean fell by 0.8-1.0% of the fall from the peak); measured from the first check (the untrained
    model's, below the peak) it was 1.7-2%, and the fit ran to epoch 49 as on ``tol`` alone."""
    assert NeuralTopicModel().plateau_share == 0.015
    alone = _checked_epochs(np.array(LEE_K50), steps_per_epoch=3)
    assert alone >= 48
    assert 34 <= _checked_epochs(np.array(LEE_K50), steps_per_epoch=3, plateau_share=0.015) <= 38
    # the checks compared are those since the peak: a window over the rise does not look like a plateau
    rising = np.r_[np.linspace(8.4, 9.0, 3), 9.0 - 0.05 * np.arange(40)]
    assert _checked_epochs(rising, steps_per_epoch=8, plateau_share=0.05) == _checked_epochs(rising, steps_per_epoch=8)


def test_in_memory_rounds_without_a_checkpoint_hash_no_state(monkeypatch, tmp_path):
    """The fit's identity (a hash of the start state) names graphs and checkpoints; in-process rounds
    without a checkpoint need neither, and hashing cost milliseconds per pass of a small fit."""
    hashed = count_calls(monkeypatch, engine, "checksum")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 3))
    y = X @ [1.0, 0.5, -1.0]
    kw = dict(epochs=3, mini_batch_size=50, random_state=0)
    first = daskstate.LinearLearner("regressor", **kw).fit(X, y)
    assert hashed == []
    again = daskstate.LinearLearner("regressor", **kw).fit(X, y, checkpoint=tmp_path / "ckpt.zarr")
    assert hashed  # a checkpoint needs the identity: a resumed fit must be the same fit
    np.testing.assert_array_equal(first.coef_, again.coef_)


#: the validation loss per word of a topic model on package descriptions (K = 50, split and seed 4): the
#: untrained model's first check (the background word frequencies alone) is lower than any for 16 epochs
PACKAGES_K50_SEED4 = [7.418, 8.736, 11.27, 8.682, 8.284, 8.182, 7.98, 7.814, 7.672, 7.711, 7.689, 7.592, 7.522,
                      7.529, 7.532, 7.479, 7.384, 7.354, 7.342, 7.304, 7.263, 7.259, 7.406, 7.294, 7.253, 7.366,
                      7.359, 7.342, 7.305, 7.256, 7.175, 7.207, 7.289, 7.214, 7.231, 7.159, 7.173, 7.34, 7.417]


def test_the_untrained_model_is_neither_the_best_snapshot_nor_the_baseline():
    """From a fresh state (its first check scores the untrained model): compared with that check, the fit
    stopped at epoch 12 and returned the untrained model (every topic the background; perplexity 1110
    where 60 epochs reach 605)."""
    X = sp.csr_matrix(np.eye(6) * 3.0)
    state = NeuralTopicModel(2, epochs=1, random_state=0, encoder_layers=(4,), validation_fraction=0.0,
                             plateau_share=0.0).fit(X).state_.resume_training()
    state.progress[:] = [0.0, -np.inf, 0.0, 0.0]  # as a new fit's state: no epoch run, no check made
    state.best_loss[:], state.best_epoch[:], state.best_ev_n[:] = np.inf, -1.0, 0.0
    state.extra_meta.pop("recent_losses", None)
    untrained = state.anchor_weights.copy()
    stopped = len(PACKAGES_K50_SEED4)
    for epoch, loss in enumerate(PACKAGES_K50_SEED4):
        state.adam_t[:] = 7 * (epoch + 1)
        state.ev_loss[:], state.ev_n[:] = loss * 1000.0, 1000.0
        if state.end_epoch(5, 1e-3):
            stopped = epoch + 1
            break
        state.anchor_weights = state.weights + epoch + 1  # the next epoch's start: a trained model
    assert stopped >= 20
    assert state.best_epoch[0] > 0
    assert not np.array_equal(state.best_weights, untrained)
