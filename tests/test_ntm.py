"""Neural topic model: gradients against finite differences, training, outputs, reliability."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from daskstate.algorithms import ntm_numerics as nn


# ---------------------------------------------------------------------------- numerics
def _numeric_grad(f, w: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(w)
    for i in range(len(w)):
        e = np.zeros_like(w)
        e[i] = h
        out[i] = (f(w + e) - f(w - e)) / (2 * h)
    return out


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("activation", nn.ACTIVATIONS)
def test_gradient_matches_finite_differences(batch_norm, activation):
    rng = np.random.default_rng(3)
    layout = nn.Layout(n_words=11, n_topics=3, encoder_layers=(6, 4), batch_norm=batch_norm)
    w = nn.init_weights(layout, rng) + 0.1 * rng.standard_normal(layout.size)
    X = sp.csr_matrix(rng.poisson(0.8, size=(7, 11)).astype(float))
    noise = nn.draw_noise(rng, 7, layout, dropout=0.3)
    prior = nn.laplace_prior(np.array([0.3, 1.0, 2.0]), 3)

    def loss(p):
        return nn.forward(p, X, noise, layout, activation=activation, prior=prior)[0]

    _, cache = nn.forward(w, X, noise, layout, activation=activation, prior=prior)
    grad = nn.backward(w, cache, layout)
    num = _numeric_grad(loss, w)
    assert np.abs(grad - num).max() <= 1e-6 * max(1.0, np.abs(num).max())
    # every parameter group receives gradient (none silently cut off)
    for name, g in layout.views(grad).items():
        assert np.abs(g).max() > 0, name


def test_pieces_match_closed_forms():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    mu0, var0 = nn.laplace_prior(0.5, 4)
    # KL of diagonal Gaussians against a Monte Carlo estimate
    z = mu[0] + np.exp(0.5 * logvar[0]) * rng.standard_normal((200_000, 4))
    logq = -0.5 * (((z - mu[0]) ** 2) / np.exp(logvar[0]) + logvar[0] + np.log(2 * np.pi)).sum(axis=1)
    logp = -0.5 * (((z - mu0) ** 2) / var0 + np.log(var0) + np.log(2 * np.pi)).sum(axis=1)
    assert nn.kl_to_prior(mu, logvar, mu0, var0)[0] == pytest.approx((logq - logp).mean(), abs=0.02)
    # Laplace approximation: symmetric alpha -> zero mean; variance formula
    m, v = nn.laplace_prior([1.0, 2.0, 4.0], 3)
    assert m.sum() == pytest.approx(0.0)
    assert v[0] == pytest.approx((1 - 2 / 3) / 1.0 + (1 + 0.5 + 0.25) / 9)
    Y, mean, var = nn.batch_norm(mu)
    assert np.allclose(Y.mean(axis=0), 0) and np.allclose(Y.std(axis=0), 1, atol=1e-4)
    assert nn.mini_batch_bounds(10, 4) == [(0, 4), (4, 10)]
    assert nn.mini_batch_bounds(3, 64) == [(0, 3)]
    assert nn.top_indices(np.array([[0.1, 0.5, 0.2], [3.0, 1.0, 2.0]]), 2).tolist() == [[1, 2], [0, 2]]
