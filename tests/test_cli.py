"""The daskstate command: fit, partial-fit, predict, info; errors are one line with exit code 1."""

from __future__ import annotations

import json
import os
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


# ---------------------------------------------------------------------------- file safety (issue 16)
def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def test_fit_never_writes_a_model_into_its_input_or_over_other_files(parquet_dir, tmp_path, capsys):
    """Issue 16 item 1: ``fit --input datacopy --out datacopy`` deleted the input's Parquet files."""
    _, folder = parquet_dir
    before = _tree(folder)
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(folder)]) == 1
    assert "inside the input" in capsys.readouterr().err
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(folder / "m.zarr")]) == 1
    assert _tree(folder) == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(notes)]) == 1
    assert "does not hold a daskstate model" in capsys.readouterr().err
    assert (notes / "todo.txt").read_text() == "keep me"
    model = tmp_path / "m.zarr"
    assert main(["fit", "scaler", "--input", str(folder), "--out", f"{model}/"]) == 0  # trailing slash
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(model)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(model), "--force",
                 "--checkpoint", f"{tmp_path / 'ck.zarr'}/"]) == 0
    assert main(["partial-fit", f"{model}/", "--input", f"{folder}/"]) == 0  # over itself: no --force needed
    other = tmp_path / "other.zarr"
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(other)]) == 0
    assert main(["partial-fit", str(model), "--input", str(folder), "--out", str(other)]) == 1
    assert main(["partial-fit", str(model), "--input", str(folder), "--out", str(other), "--force"]) == 0


def test_predict_refuses_a_non_empty_output_and_force_replaces_it_whole(parquet_dir, tmp_path, capsys):
    """Issue 16 item 2: a prediction into an existing folder mixed old and new rows."""
    df, folder = parquet_dir
    model = tmp_path / "m.zarr"
    assert main(["fit", "scaler", "--input", str(folder), "--out", str(model)]) == 0
    out = tmp_path / "pred.parquet"
    pd.DataFrame({"f0": np.arange(5_000.0)}).to_parquet(out.with_suffix(".tmp.parquet"))
    out.mkdir()
    for i in range(16):
        pd.DataFrame({"f0": np.arange(250.0)}).to_parquet(out / f"part.{i}.parquet")
    assert main(["predict", str(model), "--input", str(folder), "--output", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert len(pd.read_parquet(out)) == 4_000
    assert main(["predict", str(model), "--input", str(folder), "--output", str(out), "--force"]) == 0
    assert len(pd.read_parquet(out)) == 2_000
    assert main(["predict", str(model), "--input", str(folder), "--output", str(folder), "--force"]) == 1
    assert main(["predict", str(model), "--input", str(folder), "--output", str(model), "--force"]) == 1
    assert daskstate.load(model).n_samples_seen_ == 2_000
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p] == []


def test_predict_output_format_follows_the_extension_with_the_api_column_names(tmp_path):
    """Issue 15 section 4: --output .csv / .parquet / .zarr; the same column names as the Python API."""
    X = np.random.default_rng(1).normal(size=(600, 4))
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("X", data=X, chunks=(128, 4))
    model = tmp_path / "pca.zarr"
    assert main(["fit", "pca", "--input", str(tmp_path / "d.zarr"), "--param", "n_components=2",
                 "--out", str(model)]) == 0
    pca = daskstate.load(model)
    expected = pca.transform(pd.DataFrame(X, columns=list(pca.state_.schema.features)))
    for ext in ("csv", "parquet", "zarr"):
        out = tmp_path / f"z.{ext}"
        assert main(["predict", str(model), "--input", str(tmp_path / "d.zarr"), "--output", str(out)]) == 0
        if ext == "csv":
            assert out.is_file()
            got = pd.read_csv(out)
        elif ext == "parquet":
            got = pd.read_parquet(out)
        else:
            arr = zarr.open_array(str(out), mode="r")
            got = pd.DataFrame(arr[...], columns=arr.attrs["columns"])
        assert list(got.columns) == list(expected.columns)
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert main(["predict", str(model), "--input", str(tmp_path / "d.zarr"), "--output",
                 str(tmp_path / "z.json")]) == 1


def test_small_cli_errors(parquet_dir, tmp_path, capsys):
    """Issue 16 item 12 and issue 15: --debug before the command, --method, repeated --param,
    fit linear without a predictor type, --workers out of range."""
    _, folder = parquet_dir
    with pytest.raises(Exception, match="unknown algorithm"):
        main(["--debug", "fit", "nope", "--input", str(folder), "--out", str(tmp_path / "x")])
    model = tmp_path / "km.zarr"
    assert main(["fit", "kmeans", "--input", str(folder), "--param", "n_clusters=2", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["predict", str(model), "--input", str(folder), "--output", str(tmp_path / "p.parquet"),
                 "--method", "fit"]) == 1
    assert "'fit' is not one of ['predict', 'transform'" in capsys.readouterr().err
    assert main(["fit", "kmeans", "--input", str(folder), "--param", "n_clusters=2", "--param", "n_clusters=3",
                 "--out", str(tmp_path / "y")]) == 1
    assert "n_clusters is given twice" in capsys.readouterr().err
    assert main(["fit", "linear", "--input", str(folder), "--target", "f3", "--out", str(tmp_path / "z")]) == 1
    err = capsys.readouterr().err
    assert "needs predictor_type: give it as --param predictor_type=" in err and "binary_classifier" in err
    for bad in ("-1", "0", "two"):
        with pytest.raises(SystemExit):
            main(["fit", "scaler", "--input", str(folder), "--out", str(tmp_path / "w"), "--workers", bad])
    assert "--workers" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "w")


def test_one_progress_line_for_a_multi_epoch_fit(parquet_dir, tmp_path, capsys):
    _, folder = parquet_dir
    assert main(["fit", "linear", "--input", str(folder), "--target", "f3", "--param", "predictor_type=regressor",
                 "--param", "epochs=3", "--param", "num_models=2", "--out", str(tmp_path / "l.zarr"),
                 "--progress"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.split("\n") if "[" in line]
    assert len(lines) == 1, err  # one line, redrawn in place with \r
    assert "100% of pass" in lines[0].split("\r")[-1]
    assert int(lines[0].split("\r")[-1].split("of pass ")[1].split()[0]) >= 3


def test_make_data_and_demo_keep_refuse_a_non_empty_folder(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["make-data", str(data), "--files", "2", "--rows-per-file", "100"]) == 0
    ddf = daskstate.read_parquet(data)
    assert len(ddf.compute()) == 200 and {"f0", "y", "label"} <= set(ddf.columns)
    assert main(["make-data", str(data)]) == 1
    assert main(["demo", "--keep", str(data)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert len(os.listdir(data)) == 2


# ---------------------------------------------------------------------------- distributed (issue 16 item 9)
def test_scheduler_at_a_port_that_never_answers_times_out_clearly(parquet_dir, tmp_path, capsys):
    """Issue 16 item 9: --scheduler at an HTTP port hung for 15+ minutes (the handshake never ends)."""
    import socket
    import threading
    import time

    _, folder = parquet_dir
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    try:
        t0 = time.monotonic()
        code = main(["fit", "scaler", "--input", str(folder), "--out", str(tmp_path / "m.zarr"),
                     "--scheduler", f"tcp://127.0.0.1:{listener.getsockname()[1]}", "--timeout", "2"])
        assert code == 1 and time.monotonic() - t0 < 15
        assert "could not connect to a Dask scheduler" in capsys.readouterr().err
    finally:
        for conn, _ in held:
            conn.close()
        listener.close()


@pytest.mark.distributed
def test_a_scheduler_without_workers_fails_clearly(parquet_dir, tmp_path, capsys):
    from distributed import LocalCluster

    _, folder = parquet_dir
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None) as empty:
        code = main(["fit", "scaler", "--input", str(folder), "--out", str(tmp_path / "m.zarr"),
                     "--scheduler", empty.scheduler_address, "--timeout", "1"])
    assert code == 1
    assert "has no workers (waited 1 s)" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m.zarr")


def test_killed_worker_is_explained_as_memory_and_partition_size(tmp_path, capsys, monkeypatch):
    from distributed.scheduler import KilledWorker

    X = np.random.default_rng(0).normal(size=(1_000, 3))
    zarr.open_group(str(tmp_path / "d.zarr"), mode="w").create_array("X", data=X, chunks=(250, 3))

    def dies(self, *args, **kwargs):
        import types

        raise KilledWorker(task="standard_scaler-update-3", allowed_failures=3,
                           last_worker=types.SimpleNamespace(address="tcp://127.0.0.1:1"))

    monkeypatch.setattr(daskstate.StandardScaler, "fit", dies)
    assert main(["fit", "scaler", "--input", str(tmp_path / "d.zarr"), "--out", str(tmp_path / "m.zarr")]) == 1
    err = capsys.readouterr().err
    assert "memory" in err and "250 rows x 3 columns" in err and "smaller partitions" in err


@pytest.mark.slow
@pytest.mark.distributed
def test_workers_dying_of_memory_are_reported_with_the_limit_and_partition_size(tmp_path):
    """Issue 16 item 9: with memory-starved workers a fit waited forever with no workers and no error."""
    from distributed import LocalCluster

    X = np.random.default_rng(0).normal(size=(400_000, 64))  # one 205 MB chunk per partition
    zarr.open_group(str(tmp_path / "d.zarr"), mode="w").create_array("X", data=X, chunks=(400_000, 64))
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="300MB", processes=True,
                      host="127.0.0.1", dashboard_address=None) as small:
        proc = subprocess.run(
            [sys.executable, "-m", "daskstate.cli", "fit", "pca", "--input", str(tmp_path / "d.zarr"),
             "--out", str(tmp_path / "m.zarr"), "--scheduler", small.scheduler_address, "--timeout", "20"],
            capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("daskstate: error:") and "memory" in last, proc.stderr[-2000:]
    assert "286.1 MiB" in last and "400,000 rows x 64 columns = 195.3 MiB" in last
    assert not os.path.exists(tmp_path / "m.zarr")
