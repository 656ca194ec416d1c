"""The daskstate command: fit, partial-fit, predict, info; errors are one line with exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import gaussian_frame, write_parquet

import daskstate
from daskstate.cli import main, parse_params


@pytest.fixture
def parquet_dir(tmp_path):
    df = gaussian_frame(3_000, 4, seed=21, mean=2.0)
    write_parquet(tmp_path / "data", df.iloc[:2_000], n_files=2, prefix="a")
    return df, tmp_path / "data"


def test_parse_params():
    assert parse_params(["k=10", "lr=0.5", "flag=true", "init=k-means++", "xs=[1, 2]", "n=none"]) == {
        "k": 10, "lr": 0.5, "flag": True, "init": "k-means++", "xs": [1, 2], "n": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["oops"])


def test_fit_info_partial_fit_predict_parquet(parquet_dir, tmp_path, capsys):
    df, folder = parquet_dir
    model = tmp_path / "m.zarr"
    assert main(["fit", "scaler", "--input", str(folder), "--features", "f0", "f2", "--out", str(model)]) == 0
    assert daskstate.load(model).n_samples_seen_ == 2_000
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("saved to")[-1].split("\n", 1)[1])
    assert info["rows_seen"] == 2_000 and info["features"] == ["f0", "f2"] and info["inputs_consumed"] == 2

    write_parquet(folder, df.iloc[2_000:], n_files=1, prefix="b")
    assert main(["partial-fit", str(model), "--input", str(folder)]) == 0
    assert "1,000 new rows (3,000 in all)" in capsys.readouterr().out
    sc = daskstate.load(model)
    np.testing.assert_allclose(sc.mean_, df[["f0", "f2"]].mean().to_numpy(), rtol=1e-12)

    out = tmp_path / "pred.parquet"
    assert main(["predict", str(model), "--input", str(folder), "--output", str(out)]) == 0
    pred = pd.read_parquet(out)
    assert list(pred.columns) == ["f0", "f2"] and len(pred) == 3_000


def test_zarr_and_csv_inputs(tmp_path):
    X = np.random.default_rng(0).normal(size=(1_000, 3))
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(128, 3))
    assert main(["fit", "standard_scaler", "--input", str(tmp_path / "d.zarr"), "--out", str(tmp_path / "z.zarr")]) == 0
    np.testing.assert_allclose(daskstate.load(tmp_path / "z.zarr").mean_, X.mean(0), rtol=1e-12)
    assert main(["predict", str(tmp_path / "z.zarr"), "--input", str(tmp_path / "d.zarr"),
                 "--output", str(tmp_path / "zp.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "zp.parquet").shape == (1_000, 3)
    pd.DataFrame(X, columns=list("abc")).to_csv(tmp_path / "d.csv", index=False)
    assert main(["fit", "scaler", "--input", str(tmp_path / "d.csv"), "--out", str(tmp_path / "c.zarr")]) == 0
    np.testing.assert_allclose(daskstate.load(tmp_path / "c.zarr").var_, X.var(0), rtol=1e-9)


def test_errors_are_one_line_without_traceback(parquet_dir, tmp_path, capsys):
    _, folder = parquet_dir
    assert main(["fit", "nope", "--input", str(folder), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("daskstate: error: unknown algorithm 'nope'") and err.count("\n") == 1
    assert main(["fit", "scaler", "--input", str(folder), "--features", "zz", "--out", str(tmp_path / "x")]) == 1
    assert "['zz'] missing" in capsys.readouterr().err
    assert main(["fit", "scaler", "--input", str(folder), "--param", "bogus=1", "--out", str(tmp_path / "x")]) == 1
    assert "bogus" in capsys.readouterr().err
    with pytest.raises(Exception, match="unknown algorithm"):
        main(["fit", "nope", "--input", str(folder), "--out", str(tmp_path / "x"), "--debug"])


@pytest.mark.distributed
def test_local_cluster_prints_dashboard_on_loopback(parquet_dir, tmp_path):
    _, folder = parquet_dir
    proc = subprocess.run(
        [sys.executable, "-m", "daskstate.cli", "fit", "scaler", "--input", str(folder), "--workers", "2",
         "--out", str(tmp_path / "m.zarr"), "--report", str(tmp_path / "report.html")],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dask dashboard: http://127.0.0.1:" in proc.stderr
    assert (tmp_path / "report.html").stat().st_size > 0
