"""Sample paths of the Forecaster: shapes, marginals, step correlation, reproducibility."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pytest

import daskstate
from daskstate.algorithms.forecast.datasets import synthetic_panel
from daskstate.algorithms.forecast.sampling import correlated_uniforms, innovation_factor


def test_random_walk_spread_gives_random_walk_correlation():
    H = 6
    std = np.sqrt(np.arange(1, H + 1, dtype=float))[None, :]
    f = innovation_factor(std)[0]
    corr = f @ f.T
    h = np.arange(1, H + 1)
    np.testing.assert_allclose(corr, np.sqrt(np.minimum.outer(h, h) / np.maximum.outer(h, h)), atol=1e-12)
    # a flat spread: independent steps
    flat = innovation_factor(np.ones((1, H)))[0]
    np.testing.assert_allclose(flat @ flat.T, np.eye(H), atol=1e-12)


def test_correlated_uniforms_have_uniform_marginals_and_the_correlation():
    rng = np.random.default_rng(0)
    std = np.array([[1.0, 1.5, 2.0, 2.2]])
    u = correlated_uniforms(std, 20_000, rng)[0]
    assert np.allclose(np.quantile(u, [0.1, 0.5, 0.9], axis=0), [[0.1], [0.5], [0.9]], atol=0.015)
    from scipy.special import ndtri

    z = ndtri(u)
    f = innovation_factor(std)[0]
    np.testing.assert_allclose(np.corrcoef(z.T), f @ f.T, atol=0.03)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_sample_paths_match_the_predicted_quantiles(model):
    df = synthetic_panel(8, 80, freq="MS", seed=3)
    fc = daskstate.Forecaster(model=model, prediction_length=4, epochs=2, min_batches=5).fit(df)
    paths = fc.sample_paths(df, num_samples=4000, seed=1)
    cols = [f"sample_{i}" for i in range(4000)]
    assert list(paths.columns[:2]) == ["item_id", "timestamp"] and list(paths.columns[2:]) == cols
    closed = fc.predict(df, quantiles=(0.1, 0.5, 0.9))
    assert (paths[["item_id", "timestamp"]].to_numpy() == closed[["item_id", "timestamp"]].to_numpy()).all()
    emp = np.quantile(paths[cols].to_numpy(), [0.1, 0.5, 0.9], axis=1).T
    spread = (closed["q0.9"] - closed["q0.1"]).to_numpy()
    err = np.abs(emp - closed[["q0.1", "q0.5", "q0.9"]].to_numpy()) / spread[:, None]
    assert np.nanmax(err) < 0.1
    # predict from paths agrees with the closed form, and the same seed gives the same paths
    sampled = fc.predict(df, quantiles=(0.1, 0.5, 0.9), num_samples=4000, seed=1)
    np.testing.assert_allclose(sampled[["q0.1", "q0.5", "q0.9"]].to_numpy(), emp, rtol=1e-12)
    again = fc.sample_paths(df, num_samples=4000, seed=1)
    np.testing.assert_array_equal(again[cols].to_numpy(), paths[cols].to_numpy())
    assert not np.array_equal(fc.sample_paths(df, num_samples=5, seed=2)[cols[:5]].to_numpy(),
                              paths[cols[:5]].to_numpy())


def test_sample_paths_are_lazy_for_dask_and_checked():
    df = synthetic_panel(6, 60, freq="MS", seed=4)
    fc = daskstate.Forecaster(prediction_length=3).fit(df)
    ddf = daskstate.partition_by_series(dd.from_pandas(df, npartitions=2))
    lazy = fc.sample_paths(ddf, num_samples=7)
    assert isinstance(lazy, dd.DataFrame)
    out = lazy.compute()
    assert out.shape == (18, 9) and np.isfinite(out.iloc[:, 2:].to_numpy()).all()
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        fc.sample_paths(df, num_samples=0)
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        fc.predict(df, num_samples=2.5)
