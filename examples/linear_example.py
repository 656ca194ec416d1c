"""Train 32 logistic regressions in one pass over Parquet, pick the best on validation, keep learning.

Also: an exact least-squares fit whose ridge path costs no pass over the data.

Run: python examples/linear_example.py
"""

import tempfile

import numpy as np
import pandas as pd

import daskstate

FEATURES = [f"x{j}" for j in range(8)]
rng = np.random.default_rng(0)
true_w = rng.normal(size=8)


def write(folder: str, name: str, rows: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    X = r.normal(size=(rows, 8)) * [1, 2, 5, 10, 1, 1, 100, 0.1] + 50.0  # raw, unscaled features
    z = ((X - 50.0) / [1, 2, 5, 10, 1, 1, 100, 0.1]) @ true_w
    df = pd.DataFrame(X, columns=FEATURES)
    df["clicked"] = np.where(z + r.logistic(size=rows) > 1.0, "yes", "no")  # imbalanced string labels
    df["spend"] = 3.0 * z + 20.0 + r.normal(size=rows)
    df.to_parquet(f"{folder}/{name}.parquet", row_group_size=rows // 4)


with tempfile.TemporaryDirectory() as folder:
    write(folder, "day-1", 100_000, seed=1)
    data = daskstate.read_parquet(folder)

    clf = daskstate.LinearLearner(
        "binary_classifier", features=FEATURES, target="clicked", epochs=10,
        binary_classifier_model_selection_criteria="f_beta",  # threshold calibrated for F1 on validation
    ).fit(data)
    print(f"{len(clf.models_)} models in {clf.epochs_run_} epochs; selected model {clf.model_}, "
          f"threshold {clf.threshold_:.3f}")
    print(clf.models_.sort_values("f_beta", ascending=False).head(3)[["learning_rate", "l1", "wd", "f_beta"]])
    print("coefficients on raw features:", clf.coef_.round(3))

    # another packed model, or another criterion: no pass over the data
    recall = clf.finalize(binary_classifier_model_selection_criteria="precision_at_target_recall",
                          target_recall=0.9)
    print(f"for recall >= 0.9: model {recall.model_}, threshold {recall.threshold_:.3f}, "
          f"validation precision {recall.models_.loc[recall.model_, 'precision']:.3f}")

    write(folder, "day-2", 100_000, seed=2)  # new data arrives
    clf.partial_fit(daskstate.read_parquet(folder))  # trains on day-2's row groups only
    test = pd.read_parquet(f"{folder}/day-2.parquet")
    print(f"after day 2: {clf.n_samples_seen_:,} rows; accuracy {clf.score(test[FEATURES], test['clicked']):.4f}")
    labels = clf.predict(daskstate.read_parquet(folder))  # lazy Dask Series of "yes"/"no"
    print("predicted 'yes' share:", round(float((labels == "yes").mean().compute()), 4))

    # exact least squares from one pass; ridge penalties from the state alone
    ols = daskstate.LinearLearner("regressor", solver="exact", features=FEATURES, target="spend").fit(data)
    for wd in (0.0, 1e3, 1e6):
        print(f"wd={wd:g}: coef[:3] {ols.finalize(wd=wd).coef_[:3].round(4)}")
    ols.save(f"{folder}/ols.zarr")
    print("reloaded R^2:", round(daskstate.load(f"{folder}/ols.zarr").score(test[FEATURES], test["spend"]), 5))
