"""daskstate.plot, headless (Agg): each picture draws what the fit recorded, nothing else."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

import daskstate
from daskstate import plot

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cancer():
    return load_breast_cancer(return_X_y=True)


def test_elbow_draws_the_state_cost_curve(cancer):
    X, _ = cancer
    km = daskstate.KMeans(3, k_max=7, random_state=0).fit(X)
    ax = plot.elbow(km)
    curve = ax.get_lines()[0]
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(1, 8))
    np.testing.assert_allclose(curve.get_ydata(), km.state_.cost_curve(range(1, 8)))
    assert np.all(np.diff(curve.get_ydata()) < 0)  # more clusters, less cost: the picture has an elbow
    assert ax.get_lines()[1].get_xdata()[0] == 3  # n_clusters marked
    assert plot.elbow(km, ks=[2, 4], ax=ax) is ax


@pytest.mark.parametrize("dataset", [load_breast_cancer, load_digits])
def test_scree_band_only_for_the_sketch(dataset):
    X, _ = dataset(return_X_y=True)  # 30 and 64 features: more than the sketch's 8 rows, so it shrinks
    randomized = daskstate.PCA(3, max_components=6, extra_components=2, mode="randomized").fit(X)
    regular = daskstate.PCA(3).fit(X)
    ax = plot.scree(randomized, n_components=6)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                               randomized.finalize(n_components=6).explained_variance_)
    (band,) = ax.collections
    interval = randomized.finalize(n_components=6).explained_variance_interval_
    assert (interval[:, 1] > interval[:, 0]).all()
    heights = band.get_paths()[0].vertices[:, 1]
    assert heights.max() == pytest.approx(interval[:, 1].max())
    assert heights.min() == pytest.approx(interval[:, 0].min())
    ax = plot.scree(regular, ax=plt.subplots()[1])
    assert len(ax.collections) == 0 and len(ax.get_lines()[0].get_ydata()) == 3


def test_packed_models_bars_are_the_models_table(cancer):
    X, y = cancer
    clf = daskstate.LinearLearner("binary_classifier", num_models=5, epochs=3, random_state=0).fit(X, y)
    ax = plot.packed_models(clf)
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, clf.models_["criterion"].to_numpy(dtype=float))
    colours = [bar.get_facecolor() for bar in ax.patches]
    assert sum(c != colours[(clf.model_ + 1) % 5] for c in colours) == 1  # only the model in use stands out
    assert "accuracy" in ax.get_ylabel() and "validation" in ax.get_ylabel()
    ax = plot.packed_models(clf, "val_loss", ax=plt.subplots()[1])
    np.testing.assert_allclose([b.get_height() for b in ax.patches], clf.models_["val_loss"].to_numpy(float))
    with pytest.raises(ValueError, match="not a column of models_"):
        plot.packed_models(clf, "nonsense")


def test_packed_models_of_a_regressor_and_of_the_exact_solver():
    X, y = load_diabetes(return_X_y=True)
    reg = daskstate.LinearLearner("regressor", num_models=4, epochs=3, random_state=0).fit(X, y)
    ax = plot.packed_models(reg)
    np.testing.assert_allclose([b.get_height() for b in ax.patches], reg.models_["r2"].to_numpy(float))
    exact = daskstate.LinearLearner("regressor", solver="exact").fit(X, y)
    ax = plot.packed_models(exact, ax=plt.subplots()[1])
    assert [b.get_height() for b in ax.patches] == pytest.approx(list(exact.models_["train_r2"]))


def test_loss_curve_is_the_history(cancer):
    X, y = cancer
    clf = daskstate.LinearLearner("binary_classifier", num_models=3, epochs=5, random_state=0).fit(X, y)
    ax = plot.loss_curve(clf)
    line = ax.get_lines()[-1]
    recorded = [h for h in clf.history_ if h["loss"] is not None]
    np.testing.assert_allclose(line.get_ydata(), [h["loss"] for h in recorded])
    np.testing.assert_array_equal(line.get_xdata(), [h["evaluated_epochs"] for h in recorded])
    assert line.get_ydata()[-1] < line.get_ydata()[0]
    exact = daskstate.LinearLearner("regressor", solver="exact").fit(*load_diabetes(return_X_y=True))
    with pytest.raises(ValueError, match="no loss per epoch"):
        plot.loss_curve(exact)


def test_loss_curve_draws_each_model_when_recorded():
    """An estimator whose history carries every model's loss gets one faint line per model."""

    class Recorded:
        loss_ = "squared"
        history_ = [{"epoch": e, "evaluated_epochs": e + 1, "loss": 1.0 / (e + 1),
                     "losses": [1.0 / (e + 1), 2.0 / (e + 1)]} for e in range(4)]

    ax = plot.loss_curve(Recorded())
    assert len(ax.get_lines()) == 3
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [2.0, 1.0, 2.0 / 3, 0.5])


def test_unfitted_and_missing_matplotlib(monkeypatch):
    with pytest.raises(daskstate.NotFittedError, match="not fitted"):
        plot.elbow(daskstate.KMeans(3))
    with pytest.raises(daskstate.NotFittedError):
        plot.loss_curve(daskstate.LinearLearner("regressor"))
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    km = daskstate.KMeans(2, random_state=0).fit(np.random.default_rng(0).normal(size=(200, 2)))
    with pytest.raises(ImportError, match=r"pip install 'daskstate\[plot\]'"):
        plot.elbow(km)
