"""scikit-learn compatibility: scikit-learn's own estimator checks, meta-estimators, and ``to_sklearn``.

Real data: scikit-learn's bundled breast cancer, diabetes, iris, wine and digits sets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import daskstate
from daskstate import (
    PCA,
    Forecaster,
    KMeans,
    LinearClassifier,
    LinearLearner,
    LinearRegressor,
    NeuralTopicModel,
    StandardScaler,
    Vocabulary,
)

# ---- scikit-learn's estimator checks -----------------------------------------------------------
#: checks an estimator fails by design, each with the reason (scikit-learn reports them as xfail)
BINARY_THRESHOLD = ("predict uses threshold_, calibrated on validation rows for the selection criterion, "
                    "not decision_function > 0 (LinearClassifier follows scikit-learn's rule)")
SGD_WEIGHTS = ("SGD takes one step per mini-batch: repeated rows make more, and differently composed, "
               "mini-batches than weighted rows, so the two agree in expectation, not exactly")
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "LinearLearner(predictor_type='binary_classifier')": {"check_classifiers_train": BINARY_THRESHOLD,
                                                           "check_sample_weight_equivalence_on_dense_data":
                                                           SGD_WEIGHTS},
    "LinearLearner(predictor_type='multiclass_classifier')": {"check_sample_weight_equivalence_on_dense_data":
                                                               SGD_WEIGHTS},
    "LinearLearner(predictor_type='regressor')": {"check_sample_weight_equivalence_on_dense_data": SGD_WEIGHTS},
    "LinearClassifier": {"check_sample_weight_equivalence_on_dense_data": SGD_WEIGHTS},
    "LinearRegressor(solver='sgd')": {"check_sample_weight_equivalence_on_dense_data": SGD_WEIGHTS},
    "NeuralTopicModel": {
        **dict.fromkeys(("check_dont_overwrite_parameters", "check_methods_sample_order_invariance",
                         "check_methods_subset_invariance", "check_fit2d_1sample", "check_fit2d_1feature",
                         "check_fit2d_predict1d"),
                        "the check sets n_components=1, and ProdLDA's Laplace approximation of the Dirichlet "
                        "prior needs two topics (its variance is 0 for one)"),
        "check_transformer_data_not_an_array": "text or counts is told from the input's type: an unknown "
                                               "array-like is read as documents",
    },
}

ESTIMATORS = [
    StandardScaler(),
    KMeans(3, random_state=0),
    PCA(n_components=2),
    PCA(n_components=1, mode="randomized"),
    LinearClassifier(num_models=4, mini_batch_size=32, epochs=5),
    LinearRegressor(num_models=4, mini_batch_size=32, epochs=5),
    LinearRegressor(solver="exact"),
    LinearLearner("binary_classifier", num_models=4, mini_batch_size=32, epochs=5),
    LinearLearner("multiclass_classifier", num_models=4, mini_batch_size=32, epochs=5),
    LinearLearner("regressor", num_models=4, mini_batch_size=32, epochs=5),
    # counts in (positive_only, sparse, or text), as scikit-learn's LDA: the checks run on count matrices
    NeuralTopicModel(2, encoder_layers=(8,), epochs=2, batch_size=8, random_state=0),
    # documents and long tables in: their tags say so, and scikit-learn skips the 2-D array checks
    # (test_text_and_long_table_estimators_* below run the rest)
    Vocabulary(),
    Forecaster(prediction_length=4),
]


def _expected_failures(estimator) -> dict[str, str]:
    key = type(estimator).__name__
    if type(estimator) is LinearLearner:
        key += f"(predictor_type={estimator.predictor_type!r})"
    elif type(estimator) is LinearRegressor:
        key += f"(solver={estimator.solver!r})"
    return EXPECTED_FAILURES.get(key, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- estimators of documents and long tables: the checks that apply ---------------------------------------
def _documents() -> list[str]:
    """Long descriptions of the installed packages: real text."""
    import importlib.metadata

    docs = [d.metadata.get_payload() or d.metadata.get("Description") or "" for d in importlib.metadata.distributions()]
    return sorted(d for d in docs if len(d) >= 300)[:80]


def _panel() -> pd.DataFrame:
    from daskstate.algorithms.forecast.datasets import load_panel

    return load_panel("aus_arrivals")[0]


NOT_ARRAYS = [Vocabulary(max_features=300), Forecaster(prediction_length=4)]
DATA_FREE_CHECKS = [getattr(__import__("sklearn.utils.estimator_checks", fromlist=["x"]), name) for name in (
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_estimator_tags_renamed", "check_valid_tag_types", "check_mixin_order")]


@pytest.mark.parametrize("estimator", NOT_ARRAYS, ids=lambda e: type(e).__name__)
def test_text_and_long_table_estimators_declare_their_input(estimator):
    from sklearn.utils import get_tags

    tags = get_tags(estimator)
    assert not tags.input_tags.two_d_array  # scikit-learn's 2-D array checks do not apply
    assert tags.input_tags.string


@pytest.mark.parametrize("check", DATA_FREE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("estimator", NOT_ARRAYS, ids=lambda e: type(e).__name__)
def test_text_and_long_table_estimators_pass_the_checks_that_need_no_data(estimator, check):
    check(type(estimator).__name__, estimator)


def test_text_and_long_table_estimators_follow_the_fit_contract():
    """scikit-learn's fit checks on the inputs these estimators take: real documents and a real panel."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    docs, panel = _documents(), _panel()
    cases = [
        (Vocabulary(max_features=300), docs, lambda e, X: e.transform(X).toarray()),
        (NeuralTopicModel(3, encoder_layers=(16,), epochs=2, random_state=0, max_features=300), docs,
         lambda e, X: e.transform(X)),
        (Forecaster(prediction_length=4), panel, lambda e, X: e.predict(X)),
    ]
    for est, X, apply in cases:
        with pytest.raises(NotFittedError):  # check_estimators_unfitted
            apply(clone(est), X)
        params = clone(est).get_params()
        assert est.fit(X) is est  # check_estimators_fit_returns_self
        assert est.get_params().keys() == params.keys() and all(  # check_dont_overwrite_parameters
            repr(est.get_params()[k]) == repr(v) for k, v in params.items())
        first = apply(est, X)
        again = apply(clone(est).fit(X), X)  # check_fit_idempotent: a fresh fit gives the same model
        if isinstance(first, pd.DataFrame):
            pd.testing.assert_frame_equal(first, again)
        else:
            np.testing.assert_allclose(first, again, rtol=1e-9, atol=1e-12)
        if hasattr(est, "fit_transform"):
            out = clone(est).fit_transform(X)
            out = out.toarray() if hasattr(out, "toarray") else out
            np.testing.assert_allclose(out, first, rtol=1e-9, atol=1e-12)


# ---- errors, inputs ----------------------------------------------------------------------------------
def test_not_fitted_error_is_sklearns():
    from sklearn.exceptions import NotFittedError

    assert issubclass(daskstate.NotFittedError, NotFittedError)
    with pytest.raises(NotFittedError, match="not fitted"):
        StandardScaler().transform(np.ones((2, 2)))


def test_lists_are_arrays_and_batches_are_named():
    rows = [[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]]
    np.testing.assert_allclose(StandardScaler().fit(rows).mean_, [3.0, 30.0])
    np.testing.assert_allclose(StandardScaler().fit(tuple(map(tuple, rows))).mean_, [3.0, 30.0])
    streamed = StandardScaler().fit(daskstate.batches([np.array(rows[:2]), np.array(rows[2:])]))
    np.testing.assert_allclose(streamed.mean_, [3.0, 30.0])
    assert streamed.n_samples_seen_ == 3
    reg = LinearRegressor(solver="exact").fit(rows, [1.0, 2.0, 4.0])
    assert reg.predict(rows).shape == (3,)
    with pytest.raises(TypeError, match="sparse"):
        import scipy.sparse

        StandardScaler().fit(scipy.sparse.csr_matrix(np.eye(3)))


def test_feature_names_only_after_named_columns():
    X, _ = load_iris(return_X_y=True, as_frame=True)
    named = StandardScaler().fit(X)
    assert list(named.feature_names_in_) == list(X.columns)
    assert not hasattr(StandardScaler().fit(X.to_numpy()), "feature_names_in_")
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        named.transform(X.to_numpy())


# ---- transformers: fit_transform, set_output, get_feature_names_out -----------------------------------
def test_scaler_fit_transform_set_output_and_feature_names():
    X, _ = load_wine(return_X_y=True, as_frame=True)
    sc = StandardScaler()
    Z = sc.fit_transform(X)
    pd.testing.assert_frame_equal(Z, StandardScaler().fit(X).transform(X))
    assert list(sc.get_feature_names_out()) == list(X.columns)
    out = StandardScaler().set_output(transform="pandas").fit(X.to_numpy()).transform(X.to_numpy())
    assert isinstance(out, pd.DataFrame) and list(out.columns) == [f"x{i}" for i in range(X.shape[1])]
    np.testing.assert_allclose(out.to_numpy(), Z.to_numpy())


def test_set_output_leaves_dask_outputs_lazy():
    import dask.dataframe as dd

    X, _ = load_wine(return_X_y=True, as_frame=True)
    ddf = dd.from_pandas(X, npartitions=3)
    for est in (StandardScaler(), PCA(n_components=3), KMeans(3, random_state=0)):
        est.set_output(transform="pandas")
        assert isinstance(est.fit_transform(ddf), dd.DataFrame)  # not computed into pandas
        out = est.transform(X.to_numpy())
        assert isinstance(out, pd.DataFrame) and list(out.columns) == list(est.get_feature_names_out())


# ---- meta-estimators: Pipeline, GridSearchCV, cross_val_score -------------------------------------------
def test_pipeline_search_and_cross_validation_score_finitely():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LinearClassifier(num_models=4, mini_batch_size=32, epochs=5))
    pipe.fit(X, y)
    assert pipe.predict(X).shape == y.shape
    assert pipe.score(X, y) > 0.95
    scores = cross_val_score(pipe, X, y, cv=3, error_score="raise")
    assert np.all(np.isfinite(scores)) and scores.min() > 0.9
    search = GridSearchCV(pipe, {"linearclassifier__learning_rate": [0.003, 0.03]}, cv=3,
                          error_score="raise").fit(X, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"])) and search.best_score_ > 0.9

    Xd, yd = load_diabetes(return_X_y=True)
    r2 = cross_val_score(make_pipeline(StandardScaler(), LinearRegressor(solver="exact")), Xd, yd, cv=3,
                         error_score="raise")
    assert np.all(np.isfinite(r2)) and r2.mean() > 0.4
    search = GridSearchCV(LinearRegressor(solver="exact"), {"wd": [0.0, 1.0, 100.0]}, cv=3,
                          scoring="neg_mean_squared_error", error_score="raise").fit(Xd, yd)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


# ---- linear estimators: methods that exist only where they work ------------------------------------
def test_predict_proba_and_decision_function_only_where_they_work():
    X, y = load_diabetes(return_X_y=True)
    reg = LinearRegressor(solver="exact").fit(X, y)
    assert not hasattr(reg, "predict_proba") and not hasattr(reg, "decision_function")
    with pytest.raises(AttributeError, match="regressor"):
        reg.predict_proba(X)
    hinge = LinearLearner("binary_classifier", loss="hinge")
    assert not hasattr(hinge, "predict_proba") and hasattr(hinge, "decision_function")
    assert hasattr(LinearClassifier(), "predict_proba")


def test_two_class_multiclass_decision_function_has_sklearns_shape():
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    est = LinearLearner("multiclass_classifier", num_models=2, mini_batch_size=32, epochs=3).fit(X, y)
    dec = est.decision_function(X)
    assert dec.shape == (len(X),)
    np.testing.assert_array_equal(est.classes_[(dec > 0).astype(int)], est.predict(X))
    wine_X, wine_y = load_wine(return_X_y=True)
    assert LinearClassifier(num_models=2, epochs=2).fit(wine_X, wine_y).decision_function(wine_X).shape == (178, 3)


def test_partial_fit_classes_declares_classes_missing_from_the_first_batch():
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    first = y < 2
    clf = LinearClassifier(num_models=2, mini_batch_size=16, epochs=2, random_state=0)
    clf.partial_fit(X[first], y[first], classes=[0, 1, 2])
    assert clf.classes_.tolist() == [0, 1, 2]
    clf.partial_fit(X, y, classes=[0, 1, 2])
    assert clf.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="not declared"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="regressor"):
        LinearRegressor().partial_fit(X, y.astype(float), classes=[0, 1])


def test_score_with_sample_weight_is_sklearns_weighted_metric():
    from sklearn.metrics import r2_score

    X, y = load_diabetes(return_X_y=True)
    reg = LinearRegressor(solver="exact").fit(X, y)
    w = np.random.default_rng(0).uniform(0.1, 2.0, size=len(y))
    assert reg.score(X, y, sample_weight=w) == pytest.approx(r2_score(y, reg.predict(X), sample_weight=w))


# ---- to_sklearn: the same predictions from plain scikit-learn ------------------------------------------
def test_scaler_to_sklearn_transforms_the_same():
    X, _ = load_wine(return_X_y=True)
    ours = StandardScaler().fit(X)
    theirs = ours.to_sklearn()
    assert isinstance(theirs, sklearn.preprocessing.StandardScaler)
    np.testing.assert_allclose(theirs.transform(X), ours.transform(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(theirs.transform(X), sklearn.preprocessing.StandardScaler().fit_transform(X),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(theirs.inverse_transform(ours.transform(X)), X, rtol=1e-9)


@pytest.mark.parametrize("make, expected", [
    (lambda: LinearRegressor(solver="exact"), "LinearRegression"),
    (lambda: LinearRegressor(solver="exact", wd=10.0), "Ridge"),
    (lambda: LinearRegressor(num_models=2, epochs=3), "LinearRegression"),
    (lambda: LinearRegressor(loss="huber", num_models=2, epochs=3), "HuberRegressor"),
    (lambda: LinearRegressor(loss="quantile", quantile=0.8, num_models=2, epochs=3), "QuantileRegressor"),
])
def test_linear_regressors_to_sklearn_predict_the_same(make, expected):
    X, y = load_diabetes(return_X_y=True)
    ours = make().fit(X, y)
    theirs = ours.to_sklearn()
    assert type(theirs).__name__ == expected
    np.testing.assert_allclose(theirs.predict(X), ours.predict(X), rtol=1e-10, atol=1e-8)
    if expected == "Ridge":
        ridge = sklearn.linear_model.Ridge(alpha=10.0).fit(X, y)
        np.testing.assert_allclose(theirs.predict(X), ridge.predict(X), rtol=1e-6)


@pytest.mark.parametrize("make, load", [
    (lambda: LinearClassifier(num_models=2, mini_batch_size=32, epochs=3), load_breast_cancer),
    (lambda: LinearClassifier(num_models=2, mini_batch_size=16, epochs=3), load_wine),
    (lambda: LinearLearner("binary_classifier", num_models=2, mini_batch_size=32, epochs=3), load_breast_cancer),
    (lambda: LinearLearner("binary_classifier", loss="hinge", num_models=2, epochs=3), load_breast_cancer),
    (lambda: LinearLearner("multiclass_classifier", num_models=2, mini_batch_size=16, epochs=3), load_iris),
])
def test_linear_classifiers_to_sklearn_predict_the_same(make, load):
    X, y = load(return_X_y=True)
    ours = make().fit(X, y)
    theirs = ours.to_sklearn()
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X))
    np.testing.assert_array_equal(theirs.classes_, ours.classes_)
    if hasattr(ours, "predict_proba"):
        np.testing.assert_allclose(theirs.predict_proba(X), ours.predict_proba(X), rtol=1e-9, atol=1e-12)
    if getattr(ours, "threshold_", 0.5) != 0.5:
        assert type(theirs).__name__ == "FixedThresholdClassifier"


def test_kmeans_to_sklearn_predicts_the_same():
    X = load_digits().data
    ours = KMeans(10, random_state=0).fit(X)
    theirs = ours.to_sklearn()
    assert isinstance(theirs, sklearn.cluster.KMeans)
    np.testing.assert_array_equal(theirs.cluster_centers_, ours.cluster_centers_)
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X))
    np.testing.assert_allclose(theirs.transform(X), ours.transform(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(theirs.labels_, ours.labels_)
    assert theirs.inertia_ == pytest.approx(ours.inertia_, rel=1e-12)
    assert theirs.score(X) == pytest.approx(ours.score(X), rel=1e-9)


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_pca_to_sklearn_and_score_are_sklearns(mode, whiten):
    X = load_digits().data
    ours = PCA(n_components=10, mode=mode, whiten=whiten).fit(X)
    theirs = ours.to_sklearn()
    assert isinstance(theirs, sklearn.decomposition.PCA)
    np.testing.assert_allclose(theirs.transform(X), ours.transform(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(theirs.inverse_transform(ours.transform(X)), ours.inverse_transform(ours.transform(X)),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=1e-9)
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-9)
    if mode == "regular":  # the exact state: scikit-learn's own fit gives the same log-likelihood
        fitted = sklearn.decomposition.PCA(n_components=10, whiten=whiten).fit(X)
        assert ours.score(X) == pytest.approx(fitted.score(X), rel=1e-8)
    assert ours.reconstruction_error(X) == pytest.approx(
        ((X - ours.inverse_transform(ours.transform(X))) ** 2).sum(axis=1).mean(), rel=1e-9)


def test_kmeans_after_a_dask_fit_has_lazy_labels_and_inertia():
    import dask
    import dask.dataframe as dd

    X = load_digits().data
    ddf = dd.from_pandas(pd.DataFrame(X, columns=[f"p{i}" for i in range(64)]), npartitions=4)
    km = KMeans(10, random_state=0).fit(ddf)
    assert isinstance(km.labels_, dd.Series) and dask.is_dask_collection(km.inertia_)
    labels = km.labels_.compute().to_numpy()
    np.testing.assert_array_equal(labels, km.predict(ddf).compute().to_numpy())
    centres = km.cluster_centers_
    assert float(km.inertia_.compute()) == pytest.approx(((X - centres[labels]) ** 2).sum(), rel=1e-9)
    exact = KMeans(10, random_state=0, compute_inertia=True).fit(ddf)
    assert isinstance(exact.inertia_, float)
    assert not hasattr(km.to_sklearn(), "labels_")  # only known lazily: left out, not wrong


def test_linear_classifier_and_regressor_save_load_and_clone(tmp_path):
    X, y = load_iris(return_X_y=True)
    clf = LinearClassifier(num_models=2, epochs=2, random_state=3).fit(X, y)
    assert sklearn.base.clone(clf).get_params() == clf.get_params()
    assert "predictor_type" not in clf.get_params() and "positive_example_weight_mult" not in clf.get_params()
    clf.save(tmp_path / "clf.zarr")
    back = daskstate.load(tmp_path / "clf.zarr")
    assert type(back) is LinearClassifier and back.get_params() == clf.get_params()
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    reg = LinearRegressor(solver="exact", wd=1.0).fit(X, y.astype(float))
    reg.save(tmp_path / "reg.zarr")
    np.testing.assert_allclose(daskstate.load(tmp_path / "reg.zarr").predict(X), reg.predict(X))
    with pytest.raises(TypeError, match="predictor_type"):
        LinearRegressor(predictor_type="regressor")
