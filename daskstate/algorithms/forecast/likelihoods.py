"""Predictive distributions of the neural forecasters: negative log-likelihood, its gradient, quantiles.

Each likelihood maps ``k`` raw network outputs per target to its parameters and
returns the NLL and the gradient with respect to the raw outputs (hand-written,
checked against finite differences in the tests). Targets are in scaled units for
``gaussian`` and ``student_t``; ``negative_binomial`` works on the counts
themselves, its mean being ``softplus(raw) * scale``.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

#: smallest spread (scaled units) and smallest extra degrees of freedom above 2
MIN_SIGMA = 1e-3
N_RAW = {"gaussian": 2, "student_t": 3, "negative_binomial": 2}


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return special.expit(x)


def parameters(raw: np.ndarray, likelihood: str, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Distribution parameters from raw outputs (..., k); ``scale`` broadcasts to raw[..., 0]."""
    if likelihood == "negative_binomial":
        return {"mu": softplus(raw[..., 0]) * scale + 1e-9, "r": softplus(raw[..., 1]) + 1e-3}
    out = {"mu": raw[..., 0], "sigma": softplus(raw[..., 1]) + MIN_SIGMA}
    if likelihood == "student_t":
        out["nu"] = 2.0 + softplus(raw[..., 2]) + 1e-2
    return out


def nll_and_grad(raw: np.ndarray, y: np.ndarray, mask: np.ndarray, likelihood: str, scale: np.ndarray,
                 gradient: bool = True) -> tuple[float, np.ndarray | None]:
    """Sum of the NLL over the observed targets and its gradient w.r.t. ``raw`` (same shape; None
    without ``gradient``, as a validation pass needs only the loss).

    ``y`` and ``mask`` have ``raw``'s shape without the last axis; masked targets add nothing.
    """
    y = np.where(mask, y, 0.0)
    p = parameters(raw, likelihood, scale)
    grad = np.zeros_like(raw) if gradient else None
    if likelihood == "negative_binomial":
        mu, r = p["mu"], p["r"]
        logpmf = (special.gammaln(y + r) - special.gammaln(r) - special.gammaln(y + 1.0)
                  + r * (np.log(r) - np.log(r + mu)) + y * (np.log(mu) - np.log(r + mu)))
        nll = -logpmf
        if grad is not None:
            d_mu = -(y / mu - (r + y) / (r + mu))
            d_r = -(special.digamma(y + r) - special.digamma(r) + np.log(r) - np.log(r + mu) + (mu - y) / (r + mu))
            grad[..., 0] = d_mu * sigmoid(raw[..., 0]) * scale
            grad[..., 1] = d_r * sigmoid(raw[..., 1])
    else:
        mu, sigma = p["mu"], p["sigma"]
        z = (y - mu) / sigma
        if likelihood == "gaussian":
            nll = np.log(sigma) + 0.5 * z * z + 0.5 * np.log(2 * np.pi)
            if grad is not None:
                grad[..., 0] = -z / sigma
                grad[..., 1] = (1.0 / sigma - z * z / sigma) * sigmoid(raw[..., 1])
        else:
            nu = p["nu"]
            nll = (-special.gammaln((nu + 1) / 2) + special.gammaln(nu / 2) + 0.5 * np.log(nu * np.pi)
                   + np.log(sigma) + (nu + 1) / 2 * np.log1p(z * z / nu))
            if grad is not None:
                q = nu + z * z
                d_mu = -(nu + 1) * z / (sigma * q)
                d_sigma = 1.0 / sigma - (nu + 1) * z * z / (sigma * q)
                d_nu = (-0.5 * special.digamma((nu + 1) / 2) + 0.5 * special.digamma(nu / 2) + 0.5 / nu
                        + 0.5 * np.log1p(z * z / nu) - (nu + 1) * z * z / (2 * nu * q))
                grad[..., 2] = d_nu * sigmoid(raw[..., 2])
                grad[..., 0] = d_mu
                grad[..., 1] = d_sigma * sigmoid(raw[..., 1])
    if grad is not None:
        grad *= mask[..., None]
    return float(np.sum(np.where(mask, nll, 0.0))), grad


def mean_and_quantiles(raw: np.ndarray, likelihood: str, scale: np.ndarray, quantiles: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mean (...) and quantiles (..., q) in the data's units."""
    p = parameters(raw, likelihood, scale)
    q = np.asarray(quantiles, dtype=np.float64)
    if likelihood == "negative_binomial":
        mu, r = p["mu"][..., None], p["r"][..., None]
        return p["mu"], stats.nbinom.ppf(q, r, r / (r + mu))
    s = scale
    if likelihood == "student_t":
        z = stats.t.ppf(q, p["nu"][..., None])
    else:
        z = stats.norm.ppf(q)
    return p["mu"] * s, (p["mu"][..., None] + p["sigma"][..., None] * z) * s[..., None]


def values_at(raw: np.ndarray, likelihood: str, scale: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Values at probabilities ``u`` (n, S, H) of the distributions of raw outputs (n, H, k), in the data's units.

    ``scale`` (n, 1) is the windows' scale; used with correlated ``u`` to draw sample paths.
    """
    p = {k: v[:, None, :] for k, v in parameters(raw, likelihood, scale).items()}
    if likelihood == "negative_binomial":
        mu, r = p["mu"], p["r"]
        return stats.nbinom.ppf(u, r, r / (r + mu))
    z = stats.t.ppf(u, p["nu"]) if likelihood == "student_t" else special.ndtri(u)
    return (p["mu"] + p["sigma"] * z) * scale[:, None, :]
