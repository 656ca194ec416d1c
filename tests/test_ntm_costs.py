"""The topic model's cheaper step and validation pieces compute what the plain expressions compute (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from daskstate.algorithms import ntm_numerics as nn


def counts(n: int = 40, V: int = 30, seed: int = 0, dtype=np.float32) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.poisson(0.3, size=(n, V)).astype(dtype)
    dense[3] = 0  # an empty document
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("rows", [[5, 3, 0, 39, 3], [], list(range(39, -1, -1))])
def test_csr_rows_is_scipy_row_indexing(rows):
    X = counts()
    got, want = nn.csr_rows(X, np.array(rows, dtype=np.intp)), X[np.array(rows, dtype=np.intp)]
    assert got.shape == want.shape and got.dtype == want.dtype and got.has_canonical_format
    assert np.array_equal(got.toarray(), want.toarray())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_t_dot_writes_the_first_layer_gradient(dtype):
    X = counts(dtype=dtype)
    D = np.random.default_rng(1).standard_normal((X.shape[0], 7)).astype(dtype)
    out = np.full((X.shape[1], 7), np.nan, dtype=dtype)  # whatever the buffer held before
    nn.sparse_t_dot(X, D, out=out)
    np.testing.assert_allclose(out, X.T @ D, rtol=1e-6)


def test_posterior_mean_elbo_is_the_zero_noise_elbo():
    layout = nn.Layout(30, 4, (8,), batch_norm=True, background=True)
    rng = np.random.default_rng(2)
    flat = nn.init_weights(layout, rng)
    bn = nn.init_bn_stats(layout)
    bn[: layout.bn_size // 2] += rng.random(layout.bn_size // 2)  # running statistics other than (0, 1)
    X = counts(dtype=np.float64)
    X = X[np.asarray(X.sum(axis=1)).ravel() > 0]
    prior = nn.laplace_prior(1.0, 4)
    rec, kl = nn.elbo_terms(flat, bn, X, layout, "softplus", prior)
    rec0, kl0 = nn.elbo_terms(flat, bn, X, layout, "softplus", prior, np.zeros((1, X.shape[0], 4)))
    np.testing.assert_allclose(rec, rec0, rtol=1e-12)
    np.testing.assert_array_equal(kl, kl0)
