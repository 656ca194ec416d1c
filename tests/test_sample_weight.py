"""Sample weights: one channel from the input to every state that weights rows.

Checked against scikit-learn's weighted estimators and numpy's weighted covariance on
scikit-learn's bundled datasets (wine, diabetes, breast cancer, iris, digits); integer
weights against repeated rows; bad weights against clear errors that lose nothing.
"""

from __future__ import annotations

import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine

import daskstate
from daskstate import PCA, KMeans, LinearClassifier, LinearLearner, LinearRegressor, StandardScaler
from daskstate.errors import DataError


def _weights(n: int, seed: int = 0, integer: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, n).astype(np.float64) if integer else rng.uniform(0.0, 3.0, n)


def _frame(X: np.ndarray, w: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    df["w"] = w
    return df


def _weighted_cov(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Frequency-weighted covariance (``ddof=1`` over the total weight), as numpy's ``fweights``."""
    mean = w @ X / w.sum()
    D = X - mean
    return (D * w[:, None]).T @ D / (w.sum() - 1.0)


# ---- StandardScaler: the weighted moments are scikit-learn's ---------------------------------------------
@pytest.mark.parametrize("load", [load_wine, load_diabetes, load_breast_cancer])
def test_scaler_weighted_moments_are_sklearns_on_every_input_kind(load):
    from sklearn.preprocessing import StandardScaler as SkScaler

    X, _ = load(return_X_y=True)
    w = _weights(len(X), seed=1)
    ref = SkScaler().fit(X, sample_weight=w)
    df = _frame(X, w)
    features = [c for c in df.columns if c != "w"]
    fits = {
        "numpy": StandardScaler().fit(X, sample_weight=w),
        "list": StandardScaler().fit(X, sample_weight=w.tolist()),
        "pandas column": StandardScaler().fit(df, sample_weight="w"),
        "dask column": StandardScaler().fit(dd.from_pandas(df, npartitions=5), sample_weight="w"),
        "dask series": StandardScaler().fit(dd.from_pandas(df[features], npartitions=5),
                                            sample_weight=dd.from_pandas(df["w"], npartitions=5)),
        "dask array": StandardScaler().fit(da.from_array(X, chunks=(97, -1)),
                                           sample_weight=da.from_array(w, chunks=61)),
    }
    for kind, est in fits.items():
        np.testing.assert_allclose(est.mean_, ref.mean_, rtol=1e-12, atol=1e-12 * np.abs(X).max(), err_msg=kind)
        np.testing.assert_allclose(est.var_, ref.var_, rtol=1e-10, err_msg=kind)
        assert est.n_samples_seen_ == pytest.approx(ref.n_samples_seen_), kind
        assert list(est.state_.schema.features) == (features if "column" in kind else list(est.state_.schema.features))


def test_scaler_integer_weights_equal_repeated_rows_and_zero_weights_removed_rows():
    X, _ = load_wine(return_X_y=True)
    w = _weights(len(X), seed=2, integer=True)
    weighted = StandardScaler().fit(X, sample_weight=w)
    repeated = StandardScaler().fit(np.repeat(X, w.astype(int), axis=0))
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-13)
    np.testing.assert_allclose(weighted.var_, repeated.var_, rtol=1e-12)
    assert weighted.n_samples_seen_ == repeated.n_samples_seen_ == w.sum()


def test_scaler_partial_fit_and_merge_of_weighted_parts_equal_one_weighted_fit():
    X, _ = load_breast_cancer(return_X_y=True)
    w = _weights(len(X), seed=3)
    whole = StandardScaler().fit(X, sample_weight=w)
    parts = StandardScaler()
    for rows in np.array_split(np.arange(len(X)), 4):
        parts.partial_fit(X[rows], sample_weight=w[rows])
    np.testing.assert_allclose(parts.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(parts.var_, whole.var_, rtol=1e-11)
    # a model without weights followed by weighted rows: unit weights count as before
    mixed = StandardScaler().fit(X[:300]).partial_fit(X[300:], sample_weight=np.ones(len(X) - 300))
    np.testing.assert_allclose(mixed.var_, StandardScaler().fit(X).var_, rtol=1e-12)


# ---- PCA: weighted mean and scatter, both modes ---------------------------------------------------------------
@pytest.mark.parametrize("load", [load_wine, load_diabetes, load_digits])
def test_pca_regular_is_the_weighted_covariance(load):
    X, _ = load(return_X_y=True)
    w = _weights(len(X), seed=4)
    lam, V = np.linalg.eigh(_weighted_cov(X, w))
    lam, V = lam[::-1][:5], V[:, ::-1][:, :5]
    pca = PCA(n_components=5).fit(da.from_array(X, chunks=(200, -1)), sample_weight=da.from_array(w, chunks=200))
    np.testing.assert_allclose(pca.explained_variance_, lam, rtol=1e-9)
    np.testing.assert_allclose(pca.mean_, w @ X / w.sum(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(pca.components_ * V.T, axis=1)), 1.0, atol=1e-6)


def test_pca_integer_weights_equal_repeated_rows_as_numpys_fweights():
    X, _ = load_wine(return_X_y=True)
    w = _weights(len(X), seed=5, integer=True)
    lam = np.sort(np.linalg.eigvalsh(np.cov(X.T, fweights=w.astype(int))))[::-1]
    weighted = PCA().fit(X, sample_weight=w)
    repeated = PCA().fit(np.repeat(X, w.astype(int), axis=0))
    np.testing.assert_allclose(weighted.explained_variance_, lam, rtol=1e-9)
    np.testing.assert_allclose(weighted.explained_variance_, repeated.explained_variance_, rtol=1e-11)
    np.testing.assert_allclose(weighted.components_, repeated.components_, atol=1e-9)


@pytest.mark.parametrize("load", [load_digits, load_breast_cancer])
def test_pca_sketch_of_sqrt_weighted_rows_within_its_bound(load):
    X, _ = load(return_X_y=True)
    w = _weights(len(X), seed=6)
    cov = _weighted_cov(X, w)
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1][:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pca = PCA(n_components=4, mode="randomized").fit(dd.from_pandas(_frame(X, w), npartitions=6),
                                                          sample_weight="w")
    low, high = pca.explained_variance_interval_.T
    assert np.all(low <= lam * (1 + 1e-9)) and np.all(lam <= high * (1 + 1e-9))
    assert abs(pca.explained_variance_.sum() / lam.sum() - 1) <= max(pca.explained_variance_bound_, 1e-9)
    refined = PCA(n_components=4, mode="randomized", extra_components=4, refine=True).fit(
        X, sample_weight=w)
    assert np.all(refined.explained_variance_ <= lam * (1 + 1e-9))
    # the refining pass is weighted too: its variances are the weighted ones along its components
    along = np.einsum("ij,jk,ik->i", refined.components_, cov, refined.components_)
    np.testing.assert_allclose(refined.explained_variance_, along, rtol=1e-8)


def test_pca_weights_summing_below_one_say_why():
    X, _ = load_iris(return_X_y=True)
    with pytest.raises(Exception, match="weights sum to 0.5"):
        PCA().fit(X, sample_weight=np.full(len(X), 0.5 / len(X)))


# ---- KMeans: weighted core set, Lloyd and inertia --------------------------------------------------------------
@pytest.mark.parametrize("load, k", [(load_iris, 3), (load_wine, 3), (load_digits, 10)])
def test_kmeans_weighted_cost_matches_sklearn(load, k):
    from sklearn.cluster import KMeans as SkKMeans

    X, _ = load(return_X_y=True)
    w = _weights(len(X), seed=7, integer=True)
    ref = SkKMeans(k, n_init=10, random_state=0).fit(X, sample_weight=w)
    km = KMeans(k, random_state=0).fit(X, sample_weight=w)
    d2 = ((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1).min(axis=1)
    assert km.inertia_ == pytest.approx(float(d2 @ w), rel=1e-9)  # inertia_ is weighted, as scikit-learn's
    assert km.inertia_ <= ref.inertia_ * 1.01
    repeated = KMeans(k, random_state=0).fit(np.repeat(X, w.astype(int), axis=0))
    assert km.inertia_ == pytest.approx(repeated.inertia_, rel=1e-9)


def test_kmeans_dask_weight_column_streaming_and_lloyd_passes():
    X, _ = load_digits(return_X_y=True)
    w = _weights(len(X), seed=8)
    ddf = dd.from_pandas(_frame(X, w), npartitions=6)
    km = KMeans(10, random_state=0, epochs=3, compute_inertia=True, sample_size=0).fit(ddf, sample_weight="w")
    d2 = ((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1).min(axis=1)
    assert km.inertia_ == pytest.approx(float(d2 @ w), rel=1e-9)
    assert km.state_.weights.sum() == pytest.approx(w.sum())  # the core set stands for the total weight
    lazy = KMeans(10, random_state=0).fit(ddf, sample_weight="w")
    d2 = ((X[:, None, :] - lazy.cluster_centers_[None]) ** 2).sum(-1).min(axis=1)
    assert float(lazy.inertia_.compute()) == pytest.approx(float(d2 @ w), rel=1e-9)


# ---- linear models: weighted normal equations, weighted loss -------------------------------------------------
@pytest.mark.parametrize("wd", [0.0, 3.0])
def test_exact_solver_is_sklearns_weighted_ridge(wd):
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    w = _weights(len(X), seed=9)
    ref = Ridge(alpha=wd).fit(X, y, sample_weight=w)
    df = _frame(X, w).assign(y=y)
    for fitted in (LinearRegressor(solver="exact", wd=wd).fit(X, y, sample_weight=w),
                   LinearRegressor(solver="exact", wd=wd, target="y").fit(dd.from_pandas(df, npartitions=4),
                                                                           sample_weight="w")):
        np.testing.assert_allclose(fitted.coef_, ref.coef_, rtol=1e-9, atol=1e-9 * np.abs(ref.coef_).max())
        assert fitted.intercept_ == pytest.approx(ref.intercept_, rel=1e-10)
    wi = _weights(len(X), seed=9, integer=True)
    weighted = LinearRegressor(solver="exact").fit(X, y, sample_weight=wi)
    repeated = LinearRegressor(solver="exact").fit(np.repeat(X, wi.astype(int), axis=0), np.repeat(y, wi.astype(int)))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-9)
    assert weighted.models_["train_mse"][0] == pytest.approx(repeated.models_["train_mse"][0], rel=1e-9)


def test_sgd_regressor_one_mini_batch_weighted_equals_repeated():
    """With every training row in one mini-batch, a weighted gradient is the repeated rows' gradient."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:120], y[:120]
    w = _weights(len(X), seed=10, integer=True)
    params = dict(num_models=2, mini_batch_size=10_000, epochs=4, validation_fraction=0.0,
                  early_stopping_patience=None, random_state=0)
    weighted = LinearRegressor(**params).fit(X, y, sample_weight=w)
    repeated = LinearRegressor(**params).fit(np.repeat(X, w.astype(int), axis=0), np.repeat(y, w.astype(int)))
    scale = np.abs(repeated.coef_).max()
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-3 * scale)  # float32 steps
    unweighted = LinearRegressor(**params).fit(X, y)
    assert np.abs(unweighted.coef_ - repeated.coef_).max() > 0.1 * scale


@pytest.mark.parametrize("load", [load_breast_cancer, load_iris, load_wine])
def test_sgd_classifier_weighted_equals_repeated_and_agrees_with_logistic_regression(load):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler as SkScaler

    X, y = load(return_X_y=True)
    X = SkScaler().fit_transform(X)
    w = np.where(y == 0, 3.0, 1.0)
    # one mini-batch of every row, fixed step: the weighted gradient is the repeated rows' gradient
    full = dict(num_models=1, mini_batch_size=10_000, epochs=5, optimizer="sgd", learning_rate=0.05, l1=0.0,
                wd=0.0, validation_fraction=0.0, early_stopping_patience=None, random_state=0)
    weighted = LinearClassifier(**full).fit(X, y, sample_weight=w)
    repeated = LinearClassifier(**full).fit(np.repeat(X, w.astype(int), axis=0), np.repeat(y, w.astype(int)))
    plain = LinearClassifier(**full).fit(X, y)
    scale = np.abs(repeated.coef_).max()
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-5 * scale)
    assert np.abs(plain.coef_ - repeated.coef_).max() > 0.01 * scale
    # the default learner with weights lands near scikit-learn's weighted logistic regression
    est = LinearClassifier(num_models=4, mini_batch_size=16, epochs=10, random_state=0).fit(X, y, sample_weight=w)
    ref = LogisticRegression(max_iter=2000).fit(X, y, sample_weight=w)
    assert np.mean(est.predict(X) == ref.predict(X)) > 0.85
    assert est.score(X, y, sample_weight=w) > 0.9


def test_binary_learner_validation_metrics_are_weighted():
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    w = np.where(y == 1, 0.0, 1.0)
    w[:5] = 1.0  # a few of the majority class keep some weight
    est = LinearLearner("binary_classifier", num_models=2, mini_batch_size=64, epochs=3, random_state=0)
    est.fit(X, y, sample_weight=w)
    state = est.state_
    assert state.weight_sum == pytest.approx(w.sum())
    # the validation histogram counts weight: rows of class 1 (weight 0) add nothing beyond the few kept
    assert state.best_ev_hist[:, 1, :].sum(axis=1).max() <= 5.0 + 1e-9


# ---- one channel: errors, estimators that cannot weight, checkpoints, clusters -------------------------------------
def test_bad_weights_name_column_partition_and_row_and_keep_the_state():
    X, _ = load_wine(return_X_y=True)
    w = _weights(len(X), seed=11)
    df = _frame(X, w)
    est = StandardScaler().fit(dd.from_pandas(df.iloc[:100], npartitions=2), sample_weight="w")
    before = (est.mean_.copy(), est.n_samples_seen_)
    bad = df.iloc[100:].copy()
    bad.iloc[37, bad.columns.get_loc("w")] = -2.0
    with pytest.raises(DataError, match=r"partition \d .*sample_weight column 'w' has 1 negative value\(s\) "
                                        r"\(first at row \d+ of rows 0-\d+, value -2.0\)"):
        est.partial_fit(dd.from_pandas(bad, npartitions=3), sample_weight="w")
    np.testing.assert_array_equal(est.mean_, before[0])
    assert est.n_samples_seen_ == before[1]
    nan = w.copy()
    nan[150] = np.nan
    with pytest.raises(DataError, match=r"input: sample_weight has 1 NaN or inf value.*row 150 of rows 0-177"):
        PCA().fit(X, sample_weight=nan)
    with pytest.raises(ValueError, match=r"expected \(178,\)"):
        KMeans(3).fit(X, sample_weight=w[:-1])
    with pytest.raises(TypeError, match="names a column"):
        StandardScaler().fit(X, sample_weight="w")
    with pytest.raises(Exception, match="sample_weight column 'nope' is missing"):
        StandardScaler().fit(dd.from_pandas(df, npartitions=2), sample_weight="nope")
    with pytest.raises(ValueError, match="weight.*zero"):
        StandardScaler().fit(X, sample_weight=np.zeros(len(X)))


def test_estimators_that_cannot_weight_do_not_take_the_argument():
    import inspect

    from daskstate import Forecaster, NeuralTopicModel, Vocabulary

    for cls in (Vocabulary, NeuralTopicModel, Forecaster):
        assert "sample_weight" not in inspect.signature(cls.fit).parameters
    for cls in (StandardScaler, PCA, KMeans, LinearLearner, LinearClassifier, LinearRegressor):
        assert "sample_weight" in inspect.signature(cls.fit).parameters
    with pytest.raises(TypeError, match="sample_weight"):
        Vocabulary().fit(["a cat", "a dog"], sample_weight=[1.0, 2.0])


def test_weighted_fit_checkpoints_resume_and_save(tmp_path):
    X, _ = load_digits(return_X_y=True)
    w = _weights(len(X), seed=12)
    ddf = dd.from_pandas(_frame(X, w), npartitions=8)
    ckpt = tmp_path / "fit.ckpt"
    first = PCA(n_components=3).fit(ddf, sample_weight="w", checkpoint=ckpt, checkpoint_every=3)
    again = PCA(n_components=3).fit(ddf, sample_weight="w", checkpoint=ckpt, checkpoint_every=3)  # resumes
    lam = np.sort(np.linalg.eigvalsh(_weighted_cov(X, w)))[::-1][:3]
    for est in (first, again):
        np.testing.assert_allclose(est.explained_variance_, lam, rtol=1e-9)
    first.save(tmp_path / "model.zarr")
    loaded = daskstate.load(tmp_path / "model.zarr")
    assert loaded.state_.weight_sum == pytest.approx(w.sum())
    np.testing.assert_allclose(loaded.finalize(n_components=2).explained_variance_, lam[:2], rtol=1e-9)


def test_weighted_fits_on_a_two_process_cluster(scheduler):
    from sklearn.preprocessing import StandardScaler as SkScaler

    X, y = load_diabetes(return_X_y=True)
    w = _weights(len(X), seed=13)
    df = _frame(X, w).assign(y=y)
    ddf = dd.from_pandas(df, npartitions=4)
    scaler = StandardScaler().fit(ddf.drop(columns="y"), sample_weight="w")
    np.testing.assert_allclose(scaler.var_, SkScaler().fit(X, sample_weight=w).var_, rtol=1e-10)
    from sklearn.linear_model import Ridge

    exact = LinearRegressor(solver="exact", wd=1.0, target="y").fit(ddf, sample_weight="w")
    np.testing.assert_allclose(exact.coef_, Ridge(alpha=1.0).fit(X, y, sample_weight=w).coef_, rtol=1e-9)
    sgd = LinearRegressor(num_models=2, epochs=1, mini_batch_size=64, target="y", random_state=0)
    assert sgd.fit(ddf, sample_weight="w").state_.weight_sum == pytest.approx(w.sum())


def test_rows_skipped_as_invalid_take_their_weights_with_them():
    X, _ = load_wine(return_X_y=True)
    w = _weights(len(X), seed=14)
    bad = X.copy()
    bad[[3, 70, 150], 2] = np.nan
    keep = np.isfinite(bad).all(axis=1)
    skipped = StandardScaler(on_invalid="skip").fit(dd.from_pandas(_frame(bad, w), npartitions=3), sample_weight="w")
    clean = StandardScaler().fit(X[keep], sample_weight=w[keep])
    np.testing.assert_allclose(skipped.var_, clean.var_, rtol=1e-12)
    assert skipped.state_.n_skipped == 3


def test_pca_and_kmeans_partial_fit_with_weights():
    X, _ = load_iris(return_X_y=True)
    w = _weights(len(X), seed=15)
    pca = PCA().partial_fit(X[:70], sample_weight=w[:70]).partial_fit(X[70:], sample_weight=w[70:])
    lam = np.sort(np.linalg.eigvalsh(_weighted_cov(X, w)))[::-1]
    np.testing.assert_allclose(pca.explained_variance_, lam, rtol=1e-9)
    km = KMeans(3, random_state=0).partial_fit(X[:70], sample_weight=w[:70]).partial_fit(X[70:], sample_weight=w[70:])
    assert km.state_.weights.sum() == pytest.approx(w.sum())


def test_weighted_sgd_checkpoint_resumes_to_the_same_model(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    w = _weights(len(X), seed=16)
    ddf = dd.from_pandas(_frame(X, w).assign(y=y), npartitions=4)

    def fit(checkpoint=None):
        est = LinearRegressor(num_models=2, epochs=2, sync_every=2, mini_batch_size=64, target="y", random_state=0)
        return est.fit(ddf, sample_weight="w", checkpoint=checkpoint, checkpoint_every=2)

    plain = fit()
    ckpt = tmp_path / "sgd.ckpt"
    fit(ckpt)
    resumed = fit(ckpt)  # the checkpoint holds the finished fit: nothing is trained twice
    np.testing.assert_array_equal(resumed.coef_, plain.coef_)
    assert resumed.state_.weight_sum == pytest.approx(w.sum())


def test_cli_fit_and_partial_fit_take_a_weight_column(tmp_path):
    from sklearn.preprocessing import StandardScaler as SkScaler

    from daskstate.cli import main

    X, _ = load_wine(return_X_y=True)
    w = _weights(len(X), seed=17)
    df = _frame(X, w)
    df.iloc[:100].to_parquet(tmp_path / "a.parquet")
    (tmp_path / "more").mkdir()
    df.iloc[100:].to_parquet(tmp_path / "more" / "b.parquet")
    model = tmp_path / "scaler.zarr"
    assert main(["fit", "scaler", "--input", str(tmp_path / "a.parquet"), "--sample-weight", "w",
                 "--out", str(model)]) == 0
    assert main(["partial-fit", str(model), "--input", str(tmp_path / "more"), "--sample-weight", "w"]) == 0
    est = daskstate.load(model)
    assert list(est.state_.schema.features) == [f"f{j}" for j in range(X.shape[1])]
    np.testing.assert_allclose(est.var_, SkScaler().fit(X, sample_weight=w).var_, rtol=1e-10)
    assert main(["fit", "vocabulary", "--input", str(tmp_path / "a.parquet"), "--text-column", "f0",
                 "--sample-weight", "w", "--out", str(tmp_path / "v.zarr")]) != 0
