"""The benchmark suite's report: every benchmark's own layout normalised into one comparison table."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import comparisons, report
from benchmarks.bench_spark import spark_missing


def _results() -> dict:
    return {
        "kmeans": {
            "dataset": {"rows": 1000},
            "rows": [
                {"k": None, "fit": "read-pass floor", "seconds": 0.5},
                {"k": 10, "fit": "daskstate KMeans", "seconds": 1.0, "ratio_to_floor": 1.8, "sse_ratio": 1.001},
                {"k": 10, "fit": "MiniBatchKMeans partial_fit", "seconds": 1.5, "sse_ratio": 1.0},
                {"k": 10, "fit": "daskstate KMeans (10,000 rows)", "seconds": 9.0},
            ],
        },
        "pca": {"rows": [
            {"data": "narrow", "rows": 1000, "cols": 16, "fit": "floor", "seconds": 0.25},
            {"data": "narrow", "rows": 1000, "cols": 16, "fit": "daskstate regular", "seconds": 0.5,
             "max_rel_ev_diff": 0.0},
            {"data": "narrow", "rows": 10000, "cols": 16, "fit": "daskstate regular", "seconds": 5.0},
        ]},
        "linear": {
            "floor": {"fit_seconds": 0.5, "rows": 1000},
            "classification": [{"fit": "LinearLearner binary, 32 models", "fit_seconds": 2.0, "score": 0.8},
                               {"fit": "sklearn LogisticRegression", "fit_seconds": 3.0, "score": 0.81}],
            "regression": [],
        },
        "spark": {"rows": [
            {"algorithm": "kmeans", "case": "k=10", "rows": 1000, "fit": "Spark MLlib KMeans", "seconds": 20.0,
             "sse_ratio": 1.5, "peak_rss_mb": 1500.0},
            {"algorithm": "kmeans", "case": "k=10", "rows": 99, "fit": "Spark on other data", "seconds": 1.0},
            {"algorithm": "pca", "case": "narrow (16 cols)", "rows": 1000, "fit": "Spark MLlib PCA",
             "seconds": 5.0, "max_rel_ev_diff": 1e-14},
            {"algorithm": "linear", "case": "binary", "rows": 1000, "fit": "Spark MLlib LogisticRegression",
             "seconds": 4.0, "accuracy": 0.82},
        ]},
    }


def test_every_fit_gets_one_normalised_row():
    rows = {(r["algorithm"], r["fit"]): r for r in comparisons(_results())}
    ours = rows["kmeans", "daskstate KMeans"]
    assert ours["x_daskstate"] == 1.0 and ours["x_floor"] == 1.8  # the benchmark's own ratio wins
    mb = rows["kmeans", "MiniBatchKMeans partial_fit"]
    assert mb["x_daskstate"] == pytest.approx(1.5) and mb["x_floor"] == pytest.approx(3.0) and mb["quality"] == 1.0
    spark = rows["kmeans", "Spark MLlib KMeans"]
    assert spark["x_daskstate"] == pytest.approx(20.0) and spark["quality"] == 1.5 and spark["peak_rss_mb"] == 1500
    assert ("kmeans", "Spark on other data") not in rows  # another dataset's run is not compared
    assert ("kmeans", "daskstate KMeans (10,000 rows)") not in rows  # the RSS check is not a comparison
    assert rows["pca", "Spark MLlib PCA"]["x_daskstate"] == pytest.approx(10.0)
    assert rows["pca", "Spark MLlib PCA"]["case"] == "1,000 x 16 (narrow)"
    assert sum(r["fit"] == "daskstate regular" for r in comparisons(_results())) == 1  # first size only
    lr = rows["linear", "Spark MLlib LogisticRegression"]
    assert lr["x_daskstate"] == pytest.approx(2.0) and lr["quality"] == 0.82 and lr["x_floor"] == pytest.approx(8.0)


def test_report_has_the_side_by_side_table_and_says_why_spark_was_skipped():
    results = _results()
    results["spark"] = {"skipped": "no Java runtime", "rows": []}
    text = report(results)
    assert "## All fits side by side" in text and "| kmeans | k=10 | MiniBatchKMeans partial_fit |" in text
    assert "Spark MLlib: skipped (no Java runtime)." in text


def test_spark_missing_names_what_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name == "pyspark":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    assert "pyspark is not installed" in spark_missing()
