"""LinearLearner: quality against scikit-learn, the exact solver, packing, selection, rounds, I/O, errors."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import write_parquet
from sklearn.datasets import load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import train_test_split

import daskstate
from daskstate import LinearLearner, LinearState
from daskstate.errors import DataError, StateError
from daskstate.numerics import hash_unit

FEATURES = [f"f{j}" for j in range(6)]


def _frame(n: int, seed: int = 0, kind: str = "binary") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 3.0, 0.1, 10.0, 1.0, 100.0])
    X = rng.normal(size=(n, 6)) * scales + np.array([0, 5, -2, 100, 0, 1e3])
    z = ((X - [0, 5, -2, 100, 0, 1e3]) / scales) @ np.array([1.5, -1.0, 0.5, 0.0, 2.0, -0.7])
    df = pd.DataFrame(X, columns=FEATURES)
    df["y"] = 3.0 * z + 7.0 + rng.normal(scale=1.0, size=n)
    df["label"] = (z + rng.logistic(size=n) > 0).astype(np.int64)
    df["cls"] = np.digitize(z + rng.normal(scale=0.5, size=n), [-1.5, 0.0, 1.5])
    return df


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Train (parquet, 8 files) and test frames."""
    folder = tmp_path_factory.mktemp("linear")
    train, test = _frame(40_000, seed=1), _frame(20_000, seed=2)
    write_parquet(str(folder / "train"), train, 8)
    return {"folder": str(folder / "train"), "train": train, "test": test}


@pytest.fixture(scope="module")
def binary_model(data):
    ddf = daskstate.read_parquet(data["folder"])
    with dask.config.set(scheduler="threads"):
        return LinearLearner("binary_classifier", features=FEATURES, target="label", num_models=8,
                             epochs=6, random_state=3).fit(ddf)


# ---------------------------------------------------------------------------- quality
def test_binary_accuracy_within_half_a_point_of_sklearn(data, binary_model):
    test = data["test"]
    sk = LogisticRegression(max_iter=2000).fit(data["train"][FEATURES], data["train"]["label"])
    ours = binary_model.score(test[FEATURES], test["label"])
    theirs = sk.score(test[FEATURES], test["label"])
    assert ours >= theirs - 0.005, (ours, theirs)
    assert binary_model.coef_.shape == (1, 6) and binary_model.intercept_.shape == (1,)
    assert list(binary_model.classes_) == [0, 1]
    assert binary_model.classes_.dtype == np.int64


def test_multiclass_on_digits_within_half_a_point_of_sklearn():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    theirs = LogisticRegression(max_iter=5000).fit(Xtr, ytr).score(Xte, yte)
    est = LinearLearner("multiclass_classifier", mini_batch_size=16, epochs=40, validation_fraction=0.2).fit(Xtr, ytr)
    ours = est.score(Xte, yte)
    assert ours >= theirs - 0.005, (ours, theirs)
    assert est.coef_.shape == (10, 64) and list(est.classes_) == list(range(10))
    proba = est.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], est.predict(Xte))
    assert "accuracy" in est.models_.columns


def test_regression_r2_within_0005_of_ridge(data):
    train, test = data["train"], data["test"]
    ddf = daskstate.read_parquet(data["folder"])
    est = LinearLearner("regressor", features=FEATURES, target="y", num_models=8, epochs=6, sync_every=2).fit(ddf)
    theirs = Ridge().fit(train[FEATURES], train["y"]).score(test[FEATURES], test["y"])
    ours = est.score(test[FEATURES], test["y"])
    assert ours >= theirs - 0.005, (ours, theirs)
    assert est.coef_.shape == (6,) and isinstance(est.intercept_, float)
    assert {"mse", "mae", "r2", "val_loss"} <= set(est.models_.columns)


@pytest.mark.parametrize("loss", ["absolute", "huber", "quantile"])
def test_robust_regression_losses(data, loss):
    train, test = data["train"], data["test"]
    est = LinearLearner("regressor", target="y", features=FEATURES, loss=loss, quantile=0.9, num_models=4,
                        epochs=4).fit(train)
    pred = est.predict(test[FEATURES])
    if loss == "quantile":  # about 90% of the targets fall below the 0.9 quantile
        assert 0.86 < float(np.mean(test["y"] < pred)) < 0.94
    else:
        assert est.score(test[FEATURES], test["y"]) > 0.9


def test_hinge_loss_classifies_like_logistic(data, binary_model):
    train, test = data["train"], data["test"]
    est = LinearLearner("binary_classifier", target="label", features=FEATURES, loss="hinge", num_models=4,
                        epochs=4).fit(train)
    assert est.score(test[FEATURES], test["label"]) >= binary_model.score(test[FEATURES], test["label"]) - 0.01
    with pytest.raises(AttributeError, match="hinge"):
        est.predict_proba(test[FEATURES])


# ---------------------------------------------------------------------------- exact solver
def test_exact_solver_matches_sklearn_to_1e8(data, tmp_path):
    train = data["train"]
    ddf = daskstate.read_parquet(data["folder"])
    est = LinearLearner("regressor", solver="exact", features=FEATURES, target="y").fit(ddf)
    assert est.state_.n_rows == len(train) and len(est.state_.consumed) == 8
    lr = LinearRegression().fit(train[FEATURES], train["y"])
    np.testing.assert_allclose(est.coef_, lr.coef_, rtol=1e-8, atol=1e-8)
    assert abs(est.intercept_ - lr.intercept_) < 1e-8 * max(1.0, abs(lr.intercept_))
    for alpha in (0.1, 10.0, 1e4):
        ridge = Ridge(alpha=alpha).fit(train[FEATURES], train["y"])
        path = est.finalize(wd=alpha)  # a ridge path costs no pass over the data
        np.testing.assert_allclose(path.coef_, ridge.coef_, rtol=1e-8, atol=1e-8)
        assert abs(path.intercept_ - ridge.intercept_) < 1e-8 * max(1.0, abs(ridge.intercept_))
    assert est.models_.loc[0, "train_r2"] == pytest.approx(lr.score(train[FEATURES], train["y"]), abs=1e-10)
    # from the saved state alone (no data anywhere): the same ridge path
    est.save(tmp_path / "ols.zarr")
    loaded = daskstate.load(tmp_path / "ols.zarr")
    np.testing.assert_array_equal(loaded.finalize(wd=10.0).coef_, est.finalize(wd=10.0).coef_)
    # the same state from numpy in one go, and merged from halves
    whole = LinearLearner("regressor", solver="exact").fit(train[FEATURES].to_numpy(), train["y"].to_numpy())
    np.testing.assert_allclose(whole.coef_, est.coef_, rtol=1e-10)
    a = LinearLearner("regressor", solver="exact").fit(train[FEATURES].to_numpy()[:1000], train["y"][:1000])
    b = a.partial_fit(train[FEATURES].to_numpy()[1000:], train["y"].to_numpy()[1000:])
    np.testing.assert_allclose(b.coef_, est.coef_, rtol=1e-10)


def test_exact_solver_large_offset_and_ridge_on_constructor():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 3)) + 1e6
    y = X @ [1.0, -2.0, 0.5] + rng.normal(size=5000)
    est = LinearLearner("regressor", solver="exact", wd=5.0).fit(X, y)
    ridge = Ridge(alpha=5.0).fit(X, y)
    np.testing.assert_allclose(est.coef_, ridge.coef_, rtol=1e-8)
    assert est.finalize(wd=0.0).wd == 0.0


# ---------------------------------------------------------------------------- packing and selection
def test_models_table_and_finalize_model_without_data(data, binary_model):
    table = binary_model.models_
    assert len(table) == 8
    assert {"learning_rate", "l1", "wd", "positive_example_weight_mult", "val_loss", "accuracy", "threshold",
            "precision", "recall", "selected"} <= set(table.columns)
    assert table["selected"].sum() == 1 and table.index[table["selected"]][0] == binary_model.best_model_
    assert table["learning_rate"].nunique() == 8  # a spread
    assert table.loc[0, "learning_rate"] == 0.01 and table.loc[0, "l1"] == 0.0
    best = binary_model.best_model_
    best_acc = table["accuracy"].max()
    assert table.loc[best, "accuracy"] == best_acc
    other = (best + 1) % 8
    switched = binary_model.finalize(model=other)
    assert switched.model_ == other and switched.best_model_ == best
    assert not np.array_equal(switched.coef_, binary_model.coef_)
    assert switched.threshold_ == table.loc[other, "threshold"]
    np.testing.assert_array_equal(binary_model.finalize(model="best").coef_, binary_model.coef_)
    with pytest.raises(StateError, match="model"):
        binary_model.finalize(model=8)
    with pytest.raises(StateError, match="wd"):
        binary_model.finalize(wd=0.1)
    with pytest.raises(StateError, match="learning_rate"):
        binary_model.finalize(learning_rate=0.1)


def test_selection_criteria_and_threshold_calibration(data, binary_model):
    test = data["test"]
    recall = binary_model.finalize(binary_classifier_model_selection_criteria="precision_at_target_recall",
                                   target_recall=0.95)
    row = recall.models_.loc[recall.model_]
    assert row["recall"] >= 0.95
    assert recall.threshold_ < binary_model.threshold_ + 1e-12
    pred = recall.predict(test[FEATURES])
    true_pos = ((pred == 1) & (test["label"] == 1)).sum() / (test["label"] == 1).sum()
    assert true_pos > 0.93
    prec = binary_model.finalize(binary_classifier_model_selection_criteria="recall_at_target_precision",
                                 target_precision=0.95)
    assert prec.models_.loc[prec.model_, "precision"] >= 0.95
    by_loss = binary_model.finalize(binary_classifier_model_selection_criteria="loss_function")
    assert by_loss.threshold_ == 0.5
    assert by_loss.model_ == int(np.nanargmin(by_loss.models_["val_loss"]))
    proba = binary_model.predict_proba(test[FEATURES])
    assert list(proba.columns) == ["0", "1"]
    np.testing.assert_array_equal(binary_model.predict(test[FEATURES]),
                                  (proba["1"].to_numpy() >= binary_model.threshold_).astype(int))


def test_selection_metrics_are_exact_for_the_selected_snapshot(data, binary_model):
    """Validation metrics come from scoring the snapshot itself (the epoch's anchor), not a running estimate."""
    train = data["train"]
    val = hash_unit(train[FEATURES].to_numpy(), 3) < 0.1
    pred = binary_model.predict(train[FEATURES][val])
    acc = float(np.mean(pred == train["label"][val].to_numpy()))
    row = binary_model.models_.loc[binary_model.model_]
    assert row["accuracy"] == pytest.approx(acc, abs=2.5 / val.sum())  # float32 scores near the threshold
    assert binary_model.state_.best_ev_n[0] == val.sum()
    assert binary_model.epochs_run_ == len(binary_model.history_)
    assert all(h["evaluated_epochs"] == h["epoch"] for h in binary_model.history_)  # anchors lag one epoch


def test_packed_models_match_single_models():
    """A packed model trains exactly like the same model alone (models do not interact)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 4))
    y = (X @ [1.0, -1.0, 0.5, 0.2] + rng.logistic(size=3000) > 0).astype(int)
    packed = LinearLearner("binary_classifier", num_models=4, learning_rate=0.02, l1=0.0, wd=1e-3, epochs=2,
                           early_stopping_patience=None).fit(X, y)
    single = LinearLearner("binary_classifier", num_models=1, learning_rate=0.02, l1=0.0, wd=1e-3, epochs=2,
                           early_stopping_patience=None).fit(X, y)
    np.testing.assert_allclose(packed.state_.best_coef[0], single.state_.best_coef[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(packed.state_.best_coef[3], single.state_.best_coef[0], rtol=1e-5, atol=1e-7)


def test_l1_gives_exact_zeros_and_balanced_weights_raise_recall():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20_000, 10))
    z = X[:, 0] * 2 - X[:, 1]
    y = (z + rng.logistic(size=len(z)) > 3.0).astype(int)  # about 10% positives
    sparse = LinearLearner("binary_classifier", num_models=1, l1=0.02, epochs=3).fit(X, y)
    assert np.sum(sparse.coef_ == 0.0) >= 5
    plain = LinearLearner("binary_classifier", num_models=1, epochs=3,
                          binary_classifier_model_selection_criteria="loss_function").fit(X, y)
    balanced = LinearLearner("binary_classifier", num_models=1, epochs=3, positive_example_weight_mult="balanced",
                             binary_classifier_model_selection_criteria="loss_function").fit(X, y)
    assert balanced.state_.pos_weight[0] > 5
    recall = [float(np.mean(m.predict(X)[y == 1] == 1)) for m in (plain, balanced)]
    assert recall[1] > recall[0] + 0.1


# ---------------------------------------------------------------------------- rounds, reproducibility
@pytest.fixture(scope="module")
def reference_fit(data):
    ddf = daskstate.read_parquet(data["folder"])
    with dask.config.set(scheduler="threads"):
        return LinearLearner("multiclass_classifier", features=FEATURES, target="cls", num_models=3, epochs=2,
                             sync_every=3, random_state=11).fit(ddf)


def test_same_seed_same_coefficients_on_any_scheduler(data, reference_fit, scheduler):
    ddf = daskstate.read_parquet(data["folder"])
    again = LinearLearner("multiclass_classifier", features=FEATURES, target="cls", num_models=3, epochs=2,
                          sync_every=3, random_state=11).fit(ddf)
    np.testing.assert_array_equal(again.coef_, reference_fit.coef_)
    np.testing.assert_array_equal(again.intercept_, reference_fit.intercept_)
    assert again.models_.equals(reference_fit.models_)
    other = LinearLearner("multiclass_classifier", features=FEATURES, target="cls", num_models=3, epochs=2,
                          sync_every=3, random_state=12).fit(ddf)
    assert not np.array_equal(other.coef_, reference_fit.coef_)
    assert again.score(data["test"][FEATURES], data["test"]["cls"]) > 0.7


def test_validation_rows_come_from_a_seeded_hash_of_the_row(data):
    X = data["train"][FEATURES].to_numpy()
    mask = hash_unit(X, 3) < 0.1
    assert 0.09 < mask.mean() < 0.11
    np.testing.assert_array_equal(np.concatenate([hash_unit(X[:777], 3), hash_unit(X[777:], 3)]) < 0.1, mask)
    assert not np.array_equal(hash_unit(X, 4) < 0.1, mask)
    # the selection pass counts exactly the hashed rows
    est = LinearLearner("regressor", features=FEATURES, target="y", num_models=2, epochs=1, random_state=3)
    est.fit(data["train"])
    assert est.state_.best_ev_n[0] == mask.sum()
    assert est.selection_on_ == "validation"


def test_given_validation_data_and_early_stopping(data):
    train, test = data["train"], data["test"]
    est = LinearLearner("binary_classifier", target="label", features=FEATURES, num_models=4, epochs=15,
                        early_stopping_patience=1, early_stopping_tolerance=0.01)
    est.fit(train, validation_data=test)
    assert est.epochs_run_ < 15
    assert est.state_.best_ev_n[0] == len(test)
    assert len(est.history_) == est.epochs_run_
    assert est.models_.loc[est.model_, "accuracy"] == pytest.approx(est.score(test[FEATURES], test["label"]),
                                                                    abs=0.003)


def test_normaliser_from_a_sample_of_partitions(data):
    ddf = daskstate.read_parquet(data["folder"])
    kw = dict(features=FEATURES, target="label", num_models=2, epochs=2, random_state=1)
    sampled = LinearLearner("binary_classifier", normalization_rows=5000, **kw).fit(ddf)
    full = LinearLearner("binary_classifier", normalization_rows=None, **kw).fit(ddf)
    assert sampled.n_samples_seen_ == full.n_samples_seen_ == 40_000
    assert len(sampled.state_.consumed) == 8
    mean = data["train"][FEATURES].mean().to_numpy()
    np.testing.assert_allclose(full.state_.norm_mean, mean, rtol=1e-10)
    assert not np.allclose(sampled.state_.norm_mean, mean, rtol=1e-6)  # one partition's estimate...
    np.testing.assert_allclose(sampled.state_.norm_mean, mean, atol=0.1 * data["train"][FEATURES].std().max())
    test = data["test"]
    assert abs(sampled.score(test[FEATURES], test["label"]) - full.score(test[FEATURES], test["label"])) < 0.01


def test_no_validation_uses_training_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    est = LinearLearner("regressor", validation_fraction=0.0, num_models=2, epochs=2, mini_batch_size=20)
    est.fit(X, X @ [1.0, 2.0, 3.0])
    assert est.selection_on_ == "training" and est.state_.best_ev_n[0] == 2000
    assert est.score(X, X @ [1.0, 2.0, 3.0]) > 0.999


# ---------------------------------------------------------------------------- incremental, I/O, inputs
def test_partial_fit_reads_only_new_partitions_and_rejects_unseen_classes(tmp_path):
    df = _frame(8000, seed=4)
    df["word"] = np.where(df["label"] == 1, "yes", "no")
    write_parquet(str(tmp_path / "d"), df.iloc[:4000], 4, prefix="a")
    est = LinearLearner("binary_classifier", features=FEATURES, target="word", num_models=2, epochs=3,
                        mini_batch_size=100)
    est.fit(daskstate.read_parquet(str(tmp_path / "d")))
    assert list(est.classes_) == ["no", "yes"] and est.classes_.dtype == object
    assert set(est.predict(df[FEATURES].iloc[:50])) <= {"no", "yes"}
    write_parquet(str(tmp_path / "d"), df.iloc[4000:], 4, prefix="b")
    est.partial_fit(daskstate.read_parquet(str(tmp_path / "d")))
    assert est.n_samples_seen_ == 8000 and len(est.state_.consumed) == 8
    assert est.score(df[FEATURES], df["word"]) > 0.8
    bad = df.iloc[:100].copy()
    bad.loc[bad.index[:3], "word"] = "maybe"
    with pytest.raises(DataError, match="maybe"):
        est.partial_fit(bad)
    assert est.n_samples_seen_ == 8000  # unchanged after the error


def test_save_load_round_trip(tmp_path, binary_model, data):
    path = tmp_path / "model.zarr"
    binary_model.save(path)
    loaded = daskstate.load(path)
    assert isinstance(loaded, LinearLearner)
    test = data["test"][FEATURES]
    np.testing.assert_array_equal(loaded.predict(test), binary_model.predict(test))
    np.testing.assert_array_equal(loaded.coef_, binary_model.coef_)
    assert loaded.models_.equals(binary_model.models_)
    assert loaded.threshold_ == binary_model.threshold_
    switched = binary_model.finalize(model=2)
    switched.save(path)
    assert daskstate.load(path).model_ == 2
    # the state is fixed-size: saving more rows does not grow it
    assert binary_model.state_.nbytes < 300_000


def test_dask_inputs_give_lazy_outputs(data, binary_model):
    ddf = daskstate.read_parquet(data["folder"])
    pred = binary_model.predict(ddf)
    proba = binary_model.predict_proba(ddf)
    dec = binary_model.decision_function(ddf)
    assert isinstance(pred, dd.Series) and isinstance(proba, dd.DataFrame) and isinstance(dec, dd.Series)
    np.testing.assert_array_equal(pred.compute().to_numpy(), binary_model.predict(data["train"][FEATURES]))
    assert abs(binary_model.score(ddf) - binary_model.score(data["train"][FEATURES], data["train"]["label"])) < 1e-12
    arr = binary_model.predict(ddf[FEATURES].to_dask_array(lengths=True))
    assert arr.compute().shape == (len(data["train"]),)


def test_fit_checkpoint_resumes(tmp_path):
    df = _frame(6000, seed=9)
    write_parquet(str(tmp_path / "d"), df, 6)
    ddf = daskstate.read_parquet(str(tmp_path / "d"))
    kw = dict(features=FEATURES, target="y", num_models=2, epochs=3, sync_every=2, early_stopping_patience=None)
    plain = LinearLearner("regressor", **kw).fit(ddf)
    first = LinearLearner("regressor", **kw).fit(ddf, checkpoint=tmp_path / "ck", checkpoint_every=2)
    again = LinearLearner("regressor", **kw).fit(ddf, checkpoint=tmp_path / "ck", checkpoint_every=2)
    np.testing.assert_array_equal(again.coef_, first.coef_)  # resumed from the finished checkpoints
    # checkpoints cut the first pass into groups (another merge order): equal to rounding
    np.testing.assert_allclose(first.coef_, plain.coef_, rtol=1e-12)


def test_invalid_rows_skipped_and_counted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3))
    y = X @ [1.0, 1.0, 1.0]
    X[:10, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        LinearLearner("regressor", num_models=1, epochs=1).fit(X, y)
    est = LinearLearner("regressor", num_models=1, epochs=2, on_invalid="skip").fit(X, y)
    assert est.state_.n_skipped == 10 and est.n_samples_seen_ == 2990


def test_iterators_only_with_the_exact_solver():
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(100, 2)), rng.normal(size=100)) for _ in range(3)]
    est = LinearLearner("regressor", solver="exact").fit(iter(batches))
    assert est.n_samples_seen_ == 300
    with pytest.raises(TypeError, match="several times"):
        LinearLearner("regressor").fit(iter(batches))


def test_binary_needs_two_classes_and_multiclass_num_classes():
    X = np.random.default_rng(0).normal(size=(500, 2))
    with pytest.raises(DataError, match="exactly 2 classes"):
        LinearLearner("binary_classifier").fit(X, np.zeros(500))
    with pytest.raises(DataError, match="class indices"):
        LinearLearner("multiclass_classifier", num_classes=3).fit(X, np.arange(500) % 4)
    est = LinearLearner("multiclass_classifier", num_classes=4, num_models=1, epochs=1).fit(X, np.arange(500) % 3)
    assert list(est.classes_) == [0, 1, 2, 3]


def test_trained_states_merge_only_with_the_same_normaliser():
    X = np.random.default_rng(0).normal(size=(1000, 2))
    a = LinearLearner("regressor", num_models=2, epochs=1).fit(X, X[:, 0])
    b = LinearLearner("regressor", num_models=2, epochs=1).fit(X * 2, X[:, 0])
    with pytest.raises(StateError, match="normaliser"):
        a.state_.merge(b.state_)
    assert isinstance(a.state_, LinearState) and a.state_.phase == "done"


@pytest.mark.parametrize("param, value", [
    ("predictor_type", "ranker"), ("loss", "logistic"), ("solver", "lbfgs"), ("num_models", 0),
    ("learning_rate", -1.0), ("l1", -0.1), ("wd", "lots"), ("positive_example_weight_mult", 0),
    ("optimizer", "rmsprop"), ("beta_1", 1.0), ("mini_batch_size", 0), ("epochs", 0), ("sync_every", 0),
    ("early_stopping_patience", 0), ("validation_fraction", 1.0), ("num_classes", 1), ("normalization_rows", 0),
    ("binary_classifier_model_selection_criteria", "auc"), ("quantile", 1.5), ("random_state", -1),
    ("on_invalid", "ignore"),
])
def test_bad_hyperparameters_are_rejected_by_name(param, value):
    est = LinearLearner("regressor").set_params(**{param: value})
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match=param):
        est.fit(X, np.zeros(10))


def test_exact_solver_only_for_squared_regression():
    with pytest.raises(ValueError, match="solver"):
        LinearLearner("binary_classifier", solver="exact").fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="solver"):
        LinearLearner("regressor", solver="exact", loss="huber").fit(np.zeros((4, 2)), np.zeros(4))


def test_early_stopping_notices_a_converged_metric_on_separable_classes():
    """The logistic loss keeps falling on nearly separable classes; the selected model's accuracy does not."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(100_000, 6))
    w = np.array([1.0, -2.0, 0.5, 0.0, 1.5, -1.0])
    y = (X @ w + rng.normal(scale=0.05 * np.linalg.norm(w), size=len(X)) > 0).astype(int)
    est = LinearLearner("binary_classifier", num_models=4, epochs=15, mini_batch_size=50, random_state=1).fit(X, y)
    assert est.n_epochs_ < 8 and est.n_epochs_ == est.epochs_run_ == len(est.history_)
    assert (est.models_["epochs"] == est.n_epochs_).all()
    assert est.score(X, y) > 0.98
    losses = [h["loss"] for h in est.history_[1:]]
    assert losses[-1] < 0.9 * losses[0]  # the loss was still falling when the fit stopped


# ---------------------------------------------------------------------------- checks every round
@pytest.fixture(scope="module")
def ten_files(tmp_path_factory):
    """Nearly separable classes in 10 Parquet files: with sync_every=1, 10 rounds per epoch."""
    rng = np.random.default_rng(21)
    X = rng.normal(size=(30_000, 6))
    w = np.array([1.0, -2.0, 0.5, 0.0, 1.5, -1.0])
    df = pd.DataFrame(X, columns=FEATURES)
    df["label"] = (X @ w + rng.normal(scale=0.1 * np.linalg.norm(w), size=len(X)) > 0).astype(np.int64)
    folder = str(tmp_path_factory.mktemp("ten") / "d")
    write_parquet(folder, df, 10)
    return folder, df


def test_early_stopping_fires_inside_an_epoch_and_rescores_the_snapshots(ten_files, monkeypatch):
    """A check every round: the fit stops at a round boundary, not at an epoch's end, and reports it."""
    folder, df = ten_files
    monkeypatch.setattr(LinearState, "check_rows", 250)  # a round's ~300 validation rows make a check
    kw = dict(features=FEATURES, target="label", num_models=4, epochs=6, sync_every=1, mini_batch_size=100,
              random_state=2)
    with dask.config.set(scheduler="threads"):
        est = LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder))
    assert est.state_.extra_meta["early_stopped"]
    assert est.n_rounds_ < 6 * 10 and est.n_rounds_ % 10 != 0  # inside an epoch
    assert est.n_epochs_ == -(-est.n_rounds_ // 10) == len(est.history_)
    assert (est.models_["rounds"] == est.n_rounds_).all() and (est.models_["epochs"] == est.n_epochs_).all()
    assert sum(len(h["checks"]) for h in est.history_) == est.n_rounds_
    assert (est.models_["best_round"] < est.n_rounds_).all()
    # the kept snapshots were rescored on all validation rows: exact metrics, the same rows for every model
    val = hash_unit(df[FEATURES].to_numpy(), 2) < 0.1
    assert est.state_.best_ev_n[0] == val.sum()
    acc = float(np.mean(est.predict(df[FEATURES][val]) == df["label"][val].to_numpy()))
    assert est.models_.loc[est.model_, "accuracy"] == pytest.approx(acc, abs=2.5 / val.sum())
    assert est.score(df[FEATURES], df["label"]) > 0.95


def test_a_checkpoint_resumes_inside_an_epoch_and_records_an_early_stop(ten_files, tmp_path, monkeypatch):
    folder, _ = ten_files
    monkeypatch.setattr(LinearState, "check_rows", 250)
    kw = dict(features=FEATURES, target="label", num_models=2, epochs=6, sync_every=1, mini_batch_size=100,
              random_state=3)
    with dask.config.set(scheduler="threads"):
        whole = LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder))
        assert 13 < whole.n_rounds_ < 20  # stops in epoch 1, after the interruption below
        original = LinearState.end_round
        calls = {"n": 0}

        def crash_in_round_13(self, epoch, rnd, rounds, patience, tolerance):
            calls["n"] += 1
            if calls["n"] == 13:
                raise KeyboardInterrupt("interrupted in epoch 1, round 2")
            return original(self, epoch, rnd, rounds, patience, tolerance)

        ckpt = tmp_path / "ck"
        monkeypatch.setattr(LinearState, "end_round", crash_in_round_13)
        with pytest.raises(KeyboardInterrupt):
            LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder), checkpoint=ckpt,
                                                         checkpoint_every=1)
        monkeypatch.setattr(LinearState, "end_round", original)
        saved = daskstate.load_state(str(ckpt / "epochs"))
        assert saved.extra_meta["fold_rounds"] == {"epoch": 1, "round": 2, "stopped": False}
        resumed = LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder), checkpoint=ckpt,
                                                               checkpoint_every=1)
        np.testing.assert_array_equal(resumed.coef_, whole.coef_)
        assert resumed.n_rounds_ == whole.n_rounds_ and resumed.models_.equals(whole.models_)
        stopped = daskstate.load_state(str(ckpt / "epochs")).extra_meta["fold_rounds"]
        assert stopped == {"epoch": whole.n_epochs_ - 1, "round": whole.n_rounds_ % 10, "stopped": True}
        again = LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder), checkpoint=ckpt,
                                                             checkpoint_every=1)
        np.testing.assert_array_equal(again.coef_, whole.coef_)


def test_checks_gather_rounds_until_they_hold_enough_validation_rows(ten_files):
    """With ~300 validation rows a round, a check of 10,000 rows is the whole epoch: one check per epoch."""
    folder, df = ten_files
    with dask.config.set(scheduler="threads"):
        est = LinearLearner("binary_classifier", features=FEATURES, target="label", num_models=2, epochs=4,
                            sync_every=1, mini_batch_size=100, random_state=3).fit(daskstate.read_parquet(folder))
    assert est.n_rounds_ == 10 * est.n_epochs_
    assert all([c["round"] for c in h["checks"]] == [9] for h in est.history_)
    assert [h["evaluated_epochs"] for h in est.history_] == list(range(est.n_epochs_))  # each epoch's start
    val = hash_unit(df[FEATURES].to_numpy(), 3) < 0.1
    assert est.state_.best_ev_n[0] == val.sum()


def test_a_stop_inside_an_epoch_is_the_same_on_any_scheduler(ten_files, scheduler, monkeypatch):
    folder, _ = ten_files
    monkeypatch.setattr(LinearState, "check_rows", 250)  # checks run in the driver: no worker needs it
    kw = dict(features=FEATURES, target="label", num_models=2, epochs=6, sync_every=2, mini_batch_size=100,
              random_state=3)
    est = LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder))
    with dask.config.set(scheduler="sync"):
        reference = LinearLearner("binary_classifier", **kw).fit(daskstate.read_parquet(folder))
    assert est.n_rounds_ == reference.n_rounds_ and est.state_.extra_meta["early_stopped"]
    np.testing.assert_array_equal(est.coef_, reference.coef_)
    assert est.models_.equals(reference.models_)
