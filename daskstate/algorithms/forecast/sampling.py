"""Sample paths: joint draws over the horizon from per-step predictive distributions.

A model that gives each horizon step ``h`` a marginal distribution (the linear model's
``mean_h, std_h``; the mlp's distribution parameters per step) is turned into paths by
a Gaussian copula whose step correlation is that of a linear process whose ``h``-step
forecast error variances are the model's ``std_h^2``: the error at step ``h`` is the sum
``e_h = psi_0 eps_h + psi_1 eps_{h-1} + ... + psi_{h-1} eps_1`` of independent
innovations, with ``psi_j^2 = var_{j+1} - var_j`` (variances made non-decreasing). This is
exact for AR/ARMA processes with non-negative impulse responses (a random walk gives
``corr(e_h, e_k) = sqrt(h / k)``), and gives independent steps where the spread does not
grow (noise around a predictable pattern). Each path's marginal at step ``h`` is exactly
the model's distribution at that step.

Every sampler returns an array ``(n, num_samples, H)`` in the data's units. A model
plugs into :meth:`daskstate.Forecaster.sample_paths` by returning such an array from
its windows (the linear model's :func:`linear_sample_paths`; a network model's
``sample_paths(theta, windows, num_samples, rng)`` method).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats


def innovation_factor(std: np.ndarray) -> np.ndarray:
    """Lower-triangular factor ``(n, H, H)`` whose rows have unit norm (a correlation's Cholesky-like factor).

    Row ``h`` holds ``psi_{h-j}`` at column ``j`` (see the module docstring), divided by its norm.

    Examples
    --------
    >>> f = innovation_factor(np.array([[1.0, np.sqrt(2.0)]]))   # a random walk's spread
    >>> np.round(f[0] @ f[0].T, 3)                               # corr(e1, e2) = sqrt(1/2)
    array([[1.   , 0.707],
           [0.707, 1.   ]])
    """
    std = np.asarray(std, dtype=np.float64)
    n, H = std.shape
    var = np.maximum.accumulate(np.nan_to_num(std, nan=0.0) ** 2, axis=1)
    psi = np.sqrt(np.diff(var, axis=1, prepend=0.0))                       # (n, H): psi_0 .. psi_{H-1}
    lag = np.arange(H)[:, None] - np.arange(H)[None, :]                     # h - j
    factor = np.where(lag >= 0, psi[:, np.clip(lag, 0, H - 1)], 0.0)        # (n, H, H)
    norm = np.sqrt((factor**2).sum(axis=2, keepdims=True))
    # a window with zero spread everywhere: independent steps (its draws are all the mean anyway)
    return np.where(norm > 0, factor / np.where(norm > 0, norm, 1.0), np.eye(H)[None])


def correlated_uniforms(std: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Uniforms ``(n, num_samples, H)`` with the step correlation of :func:`innovation_factor`."""
    factor = innovation_factor(std)
    n, H = np.shape(std)
    eps = rng.standard_normal((n, num_samples, H))
    z = np.einsum("nsj,nhj->nsh", eps, factor)
    return np.clip(special.ndtr(z), 1e-12, 1.0 - 1e-12)


def marginal_ppf(u: np.ndarray, mean: np.ndarray, std: np.ndarray, likelihood: str, nonnegative: bool,
                 df: float = 5.0) -> np.ndarray:
    """Values at probabilities ``u`` (n, S, H) of the linear model's per-step distributions (mean, std: (n, H)).

    The same shapes as :func:`daskstate.algorithms.forecast.linear.distribution_quantiles`:
    Gaussian, Student's t with ``df`` degrees of freedom and the same variance, or a negative
    binomial matched to the mean and variance.
    """
    m, s = mean[:, None, :], std[:, None, :]
    if likelihood == "negative_binomial":
        mu = np.maximum(m, 1e-9)
        var = np.maximum(s**2, 1.0001 * mu)
        r = mu**2 / (var - mu)
        out = stats.nbinom.ppf(u, r, r / (r + mu))
    elif likelihood == "student_t":
        out = m + s * np.sqrt((df - 2) / df) * stats.t.ppf(u, df)
    else:
        out = m + s * special.ndtri(u)
    return np.maximum(out, 0.0) if nonnegative else out


def partition_rng(seed: int, items: np.ndarray) -> np.random.Generator:
    """A generator seeded by ``seed`` and the partition's item ids (the same items give the same draws)."""
    digest = int(pd.util.hash_array(np.asarray(items, dtype=object)).sum(dtype=np.uint64))
    return np.random.default_rng([int(seed), digest])


def sample_column(i: int) -> str:
    """Column name of sample path ``i`` in :meth:`Forecaster.sample_paths`: ``sample_0``, ..."""
    return f"sample_{i}"
