"""``daskstate demo``: a local cluster, a generated Parquet dataset, one fit per algorithm.

Each algorithm adds a function to ``DEMOS``: it receives the Dask DataFrame of the
generated data (columns ``f0..f15``, a numeric target ``y`` and a class label
``label`` in 0..3) and returns a few lines describing what it learned.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable

import dask.dataframe as dd
import numpy as np
import pandas as pd

N_FEATURES = 16
N_CLASSES = 4


def make_demo_data(folder: str, n_files: int = 8, rows_per_file: int = 25_000, seed: int = 0) -> None:
    """Write Gaussian blobs with a linear target and a class label as Parquet files."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, size=(N_CLASSES, N_FEATURES))
    coef = rng.normal(size=N_FEATURES)
    for i in range(n_files):
        label = rng.integers(0, N_CLASSES, rows_per_file)
        X = centers[label] + rng.normal(size=(rows_per_file, N_FEATURES))
        df = pd.DataFrame(X, columns=[f"f{j}" for j in range(N_FEATURES)])
        df["y"] = X @ coef + rng.normal(scale=0.5, size=rows_per_file)
        df["label"] = label
        df.to_parquet(os.path.join(folder, f"part-{i:03d}.parquet"), row_group_size=rows_per_file // 2)


def demo_scaler(ddf: dd.DataFrame) -> list[str]:
    from daskstate import StandardScaler

    features = [f"f{j}" for j in range(N_FEATURES)]
    sc = StandardScaler(features=features).fit(ddf)
    return [
        f"rows seen {sc.n_samples_seen_:,} from {len(sc.state_.consumed)} row groups; state {sc.state_.nbytes} bytes",
        f"mean[:4] {np.round(sc.mean_[:4], 3)}  scale[:4] {np.round(sc.scale_[:4], 3)}",
    ]


def demo_pca(ddf: dd.DataFrame) -> list[str]:
    from daskstate import PCA

    features = [f"f{j}" for j in range(N_FEATURES)]
    pca = PCA(n_components=3, max_components=8, features=features).fit(ddf)
    two = pca.finalize(n_components=2)  # from the same state, no data read
    wide = PCA(n_components=3, mode="randomized", features=features).fit(ddf)
    return [
        f"regular: {pca.n_samples_seen_:,} rows; state {pca.state_.nbytes:,} bytes (16 x 16 scatter, whatever the rows)",
        f"explained variance ratio {np.round(pca.explained_variance_ratio_, 4)}",
        f"finalize(n_components=2) without data: ratio {np.round(two.explained_variance_ratio_, 4)}",
        f"randomized (Frequent Directions, {wide.state_.sketch.shape[0]} x 16 sketch): ratio "
        f"{np.round(wide.explained_variance_ratio_, 4)}",
    ]


def demo_kmeans(ddf: dd.DataFrame) -> list[str]:
    from daskstate import KMeans

    features = [f"f{j}" for j in range(N_FEATURES)]
    km = KMeans(n_clusters=N_CLASSES, k_max=8, random_state=0, features=features).fit(ddf)
    curve = km.cost_curve(range(1, 9))  # from the state alone: no data read
    three = km.finalize(n_clusters=3)
    both = dd.concat([km.predict(ddf).rename("cluster"), ddf["label"]], axis=1).compute()
    table = pd.crosstab(both["cluster"], both["label"])
    purity = table.max(axis=1).sum() / table.values.sum()
    return [
        f"{km.n_samples_seen_:,} rows -> core set of {km.state_.n_centers} weighted centres "
        f"({km.state_.nbytes:,} bytes, whatever the rows)",
        f"elbow (estimated SSE / 1e3, k = 1..8): {np.round(curve.to_numpy() / 1e3, 1)}",
        f"finalize(n_clusters=3) without data: centres {three.cluster_centers_.shape}",
        f"clusters vs the true blobs: purity {purity:.4f}",
    ]


def demo_linear(ddf: dd.DataFrame) -> list[str]:
    from daskstate import LinearLearner

    features = [f"f{j}" for j in range(N_FEATURES)]
    clf = LinearLearner("multiclass_classifier", features=features, target="label", epochs=5).fit(ddf)
    best = clf.models_.loc[clf.model_]
    ols = LinearLearner("regressor", solver="exact", features=features, target="y").fit(ddf)
    ridge = ols.finalize(wd=1e4)  # another ridge penalty from the same state: no data read
    return [
        f"{len(clf.models_)} softmax models packed in one pass per epoch, {clf.epochs_run_} epochs in rounds "
        f"of {clf.sync_every} partitions; state {clf.state_.nbytes:,} bytes",
        f"selected model {clf.model_} (learning rate {best['learning_rate']:.4f}, l1 {best['l1']:.1e}, "
        f"wd {best['wd']:.1e}): validation accuracy {best['accuracy']:.4f}",
        f"exact least squares: R^2 {ols.models_.loc[0, 'train_r2']:.5f}; finalize(wd=1e4) without data: "
        f"coef[:3] {np.round(ridge.coef_[:3], 4)} vs {np.round(ols.coef_[:3], 4)}",
    ]


def demo_ntm(ddf: dd.DataFrame) -> list[str]:
    """Topics of real text (the installed packages' descriptions); the numeric demo data are not used."""
    import importlib.metadata
    import re

    from daskstate import NeuralTopicModel

    docs = [p for d in importlib.metadata.distributions()
            for p in re.split(r"\n\s*\n", d.metadata.get_payload() or d.metadata.get("Description") or "")
            if len(p.split()) >= 20]
    # a small corpus: one partition, so every epoch is one sequential round of ~11 Adam steps
    text = dd.from_pandas(pd.DataFrame({"body": docs}), npartitions=1)
    ntm = NeuralTopicModel(8, text_column="body", epochs=30, max_features=1500, max_df=0.1, random_state=0).fit(text)
    lines = [f"{len(docs):,} paragraphs of package descriptions, {len(ntm.vocabulary_terms_):,} terms, "
             f"{ntm.n_iter_} epochs in rounds; state {ntm.state_.nbytes:,} bytes"]
    lines += [f"topic {k}: {' '.join(words)}" for k, words in enumerate(ntm.top_words(6))]
    lines.append(f"topic uniqueness {ntm.topic_uniqueness():.2f}; mean NPMI {ntm.coherence(text).mean():.3f}")
    return lines


def _without_last(part: pd.DataFrame, n: int) -> pd.DataFrame:
    from daskstate.algorithms.forecast import holdout_split

    return holdout_split(part, n)[0]


def demo_forecaster(ddf: dd.DataFrame) -> list[str]:
    """A generated monthly panel (the numeric demo data are not used): fit, backtest, sample paths."""
    from daskstate import Forecaster
    from daskstate.algorithms.forecast.datasets import synthetic_panel

    # generated lazily, 75 whole series per partition; the fit sees each series without its last year
    panel = synthetic_panel(300, 120, freq="MS", seed=0, series_per_partition=75)
    train = panel.map_partitions(_without_last, 12, meta=panel._meta)
    fc = Forecaster(prediction_length=12, freq="MS").fit(train)
    overall, _ = fc.evaluate(panel)
    naive = fc.finalize(wd=1e9, prior="seasonal").evaluate(panel)[0]
    paths = fc.sample_paths(train, num_samples=100).compute()
    return [
        f"300 monthly series x 120 points in {panel.npartitions} partitions; one exact pass; state "
        f"{fc.state_.nbytes:,} bytes; holdout chose wd {fc.wd_:g}, prior {fc.prior_!r}, "
        f"spread x{fc.calibration_.min():.2f}..{fc.calibration_.max():.2f} by step",
        f"backtest on the last 12 months: MASE {overall['MASE']:.3f} (seasonal-naive-like finalize(wd=1e9, "
        f"prior='seasonal'): {naive['MASE']:.3f}), wQL {overall['wQL']:.4f}, 80% coverage "
        f"{overall['coverage_80']:.2f}",
        f"sample paths: {paths.shape[0]} rows (item x month) x {paths.shape[1] - 2} paths",
    ]


DEMOS: list[tuple[str, Callable[[dd.DataFrame], list[str]]]] = [
    ("StandardScaler", demo_scaler),
    ("PCA", demo_pca),
    ("KMeans", demo_kmeans),
    ("LinearLearner", demo_linear),
    ("NeuralTopicModel", demo_ntm),
    ("Forecaster", demo_forecaster),
]


def run_demo(workers: int = 2, keep_cluster: bool = False, print_fn: Callable[[str], None] = print,
             data_dir: str | None = None) -> None:
    """Start a LocalCluster (dashboard on 127.0.0.1), write data, fit every algorithm.

    The data goes to a temporary folder, removed at the end, or to ``data_dir``
    (created if needed; it should be new or empty), where it is kept.
    """
    from distributed import Client, LocalCluster

    from daskstate import read_parquet

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, Client(cluster):
        try:
            import bokeh  # noqa: F401

            print_fn(f"dask dashboard: {cluster.dashboard_link}")
        except ImportError:
            print_fn("dask dashboard: not available (pip install 'daskstate[dashboard]' adds bokeh)")
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
        where = contextlib.nullcontext(data_dir) if data_dir else tempfile.TemporaryDirectory(prefix="daskstate-demo-")
        with where as folder:
            make_demo_data(folder)
            ddf = read_parquet(folder)
            kept = " (kept)" if data_dir else ""
            print_fn(f"generated {ddf.npartitions} Parquet row groups in {folder}{kept}")
            for name, demo in DEMOS:
                t0 = time.perf_counter()
                lines = demo(ddf)
                print_fn(f"\n== {name} ({time.perf_counter() - t0:.2f} s)")
                for line in lines:
                    print_fn(f"  {line}")
        if keep_cluster:
            input("press Enter to stop the cluster ")
