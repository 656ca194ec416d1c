"""Predictive distributions of the neural forecasters: negative log-likelihood, its gradient, quantiles.

Each likelihood maps ``k`` raw network outputs per target to its parameters and
returns the NLL and the gradient with respect to the raw outputs (hand-written,
checked against finite differences in the tests). Targets are in scaled units for
``gaussian`` and ``student_t``; ``negative_binomial`` works on the counts
themselves, its mean being ``softplus(raw) * scale``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special, stats

from daskstate.algorithms.forecast.lstm import Workspace

#: smallest spread (scaled units) and smallest extra degrees of freedom above 2
MIN_SIGMA = 1e-3
N_RAW = {"gaussian": 2, "student_t": 3, "negative_binomial": 2}


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return special.expit(x, out=out)


def parameters(raw: np.ndarray, likelihood: str, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Distribution parameters from raw outputs (..., k); ``scale`` broadcasts to raw[..., 0]."""
    if likelihood == "negative_binomial":
        return {"mu": softplus(raw[..., 0]) * scale + 1e-9, "r": softplus(raw[..., 1]) + 1e-3}
    out = {"mu": raw[..., 0], "sigma": softplus(raw[..., 1]) + MIN_SIGMA}
    if likelihood == "student_t":
        out["nu"] = 2.0 + softplus(raw[..., 2]) + 1e-2
    return out


def nll_and_grad(raw: np.ndarray, y: np.ndarray, mask: np.ndarray, likelihood: str, scale: np.ndarray,
                 gradient: bool = True, work: Workspace | None = None) -> tuple[float, np.ndarray | None]:
    """Sum of the NLL over the observed targets and its gradient w.r.t. ``raw`` (same shape; None
    without ``gradient``, as a validation pass needs only the loss).

    ``y`` and ``mask`` have ``raw``'s shape without the last axis; masked targets add nothing.
    ``work``: buffers for the temporaries and the gradient (valid until the next call; see
    :class:`~daskstate.algorithms.forecast.lstm.Workspace`): a validation chunk's dozens of
    full-size temporaries would otherwise each fault in afresh under Dask's workers' allocator.
    Every value is computed by the same operations in the same order as written out in the
    comments (the results do not depend on ``work``).
    """
    work = Workspace() if work is None else work
    shape = mask.shape

    def buf(name: str) -> np.ndarray:
        return work.empty("nll_" + name, shape)

    y0 = buf("y")  # y where observed, else 0
    y0.fill(0.0)
    np.copyto(y0, y, where=mask)
    grad = work.zeros("nll_grad", raw.shape) if gradient else None
    t, u = buf("t"), buf("u")
    if likelihood == "negative_binomial":
        nll = _negative_binomial(raw, y0, scale, grad, buf, t, u)
    else:
        nll = _location_scale(raw, y0, likelihood, grad, buf, t, u)
    if grad is not None:
        grad *= mask[..., None]
    np.copyto(nll, 0.0, where=np.logical_not(mask, out=work.empty("nll_unobserved", shape, bool)))
    return float(np.sum(nll)), grad


def _location_scale(raw: np.ndarray, y: np.ndarray, likelihood: str, grad: np.ndarray | None, buf: Any,
                    t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The NLL (in a buffer) of ``gaussian`` / ``student_t`` and its gradient into ``grad``."""
    mu = raw[..., 0]
    sigma = np.logaddexp(0.0, raw[..., 1], out=buf("sigma"))  # softplus(raw1) + MIN_SIGMA
    sigma += MIN_SIGMA
    z = np.subtract(y, mu, out=buf("z"))  # (y - mu) / sigma
    z /= sigma
    nll = np.log(sigma, out=buf("nll"))
    if likelihood == "gaussian":
        # log(sigma) + 0.5 * z * z + 0.5 * log(2 pi)
        np.multiply(0.5, z, out=t)
        t *= z
        nll += t
        nll += 0.5 * np.log(2 * np.pi)
        if grad is not None:
            np.negative(z, out=t)  # -z / sigma
            np.divide(t, sigma, out=grad[..., 0])
            np.divide(1.0, sigma, out=t)  # (1 / sigma - z * z / sigma) * sigmoid(raw1)
            np.multiply(z, z, out=u)
            u /= sigma
            t -= u
            np.multiply(t, sigmoid(raw[..., 1], out=u), out=grad[..., 1])
        return nll
    nu = np.logaddexp(0.0, raw[..., 2], out=buf("nu"))  # 2 + softplus(raw2) + 1e-2
    np.add(2.0, nu, out=nu)
    nu += 1e-2
    nu1 = np.add(nu, 1, out=buf("nu1"))
    half1 = np.divide(nu1, 2, out=buf("half1"))  # (nu + 1) / 2
    zz = np.multiply(z, z, out=buf("zz"))
    log1p_zz = np.divide(zz, nu, out=buf("log1p_zz"))  # log1p(z * z / nu)
    np.log1p(log1p_zz, out=log1p_zz)
    # nll = -gammaln((nu + 1) / 2) + gammaln(nu / 2) + 0.5 * log(nu * pi) + log(sigma)
    #       + (nu + 1) / 2 * log1p(z * z / nu), summed left to right
    acc = special.gammaln(half1, out=buf("acc"))
    np.negative(acc, out=acc)
    special.gammaln(np.divide(nu, 2, out=t), out=t)
    acc += t
    np.multiply(nu, np.pi, out=t)
    np.log(t, out=t)
    t *= 0.5
    acc += t
    acc += nll  # log(sigma)
    np.multiply(half1, log1p_zz, out=t)
    acc += t
    nll, acc = acc, nll
    if grad is None:
        return nll
    q = np.add(nu, zz, out=buf("q"))  # nu + z * z
    sq = np.multiply(sigma, q, out=buf("sq"))  # sigma * q
    nzz = np.multiply(nu1, z, out=buf("nzz"))  # (nu + 1) * z * z
    nzz *= z
    np.negative(nu1, out=t)  # d_mu = -(nu + 1) * z / (sigma * q)
    t *= z
    np.divide(t, sq, out=grad[..., 0])
    np.divide(1.0, sigma, out=t)  # d_sigma = 1 / sigma - (nu + 1) * z * z / (sigma * q)
    np.divide(nzz, sq, out=u)
    t -= u
    np.multiply(t, sigmoid(raw[..., 1], out=u), out=grad[..., 1])
    # d_nu = -0.5 * digamma((nu + 1) / 2) + 0.5 * digamma(nu / 2) + 0.5 / nu + 0.5 * log1p(z * z / nu)
    #        - (nu + 1) * z * z / (2 * nu * q), summed left to right
    special.digamma(half1, out=acc)
    acc *= -0.5
    special.digamma(np.divide(nu, 2, out=t), out=t)
    t *= 0.5
    acc += t
    np.divide(0.5, nu, out=t)
    acc += t
    np.multiply(0.5, log1p_zz, out=t)
    acc += t
    np.multiply(2, nu, out=t)
    t *= q
    np.divide(nzz, t, out=u)
    acc -= u
    np.multiply(acc, sigmoid(raw[..., 2], out=u), out=grad[..., 2])
    return nll


def _negative_binomial(raw: np.ndarray, y: np.ndarray, scale: np.ndarray, grad: np.ndarray | None, buf: Any,
                       t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The NLL (in a buffer) of ``negative_binomial`` and its gradient into ``grad``."""
    mu = np.logaddexp(0.0, raw[..., 0], out=buf("mu"))  # softplus(raw0) * scale + 1e-9
    mu *= scale
    mu += 1e-9
    r = np.logaddexp(0.0, raw[..., 1], out=buf("r"))  # softplus(raw1) + 1e-3
    r += 1e-3
    rmu = np.add(r, mu, out=buf("rmu"))
    log_rmu = np.log(rmu, out=buf("log_rmu"))
    log_r = np.log(r, out=buf("log_r"))
    # logpmf = gammaln(y + r) - gammaln(r) - gammaln(y + 1) + r * (log r - log(r + mu))
    #          + y * (log mu - log(r + mu)), summed left to right; nll = -logpmf
    nll = special.gammaln(np.add(y, r, out=buf("nll")), out=buf("nll"))
    nll -= special.gammaln(r, out=t)
    nll -= special.gammaln(np.add(y, 1.0, out=t), out=t)
    np.subtract(log_r, log_rmu, out=t)
    t *= r
    nll += t
    np.log(mu, out=t)
    t -= log_rmu
    t *= y
    nll += t
    np.negative(nll, out=nll)
    if grad is None:
        return nll
    # d_mu = -(y / mu - (r + y) / (r + mu)); grad0 = d_mu * sigmoid(raw0) * scale
    np.divide(y, mu, out=t)
    np.add(r, y, out=u)
    u /= rmu
    t -= u
    np.negative(t, out=t)
    t *= sigmoid(raw[..., 0], out=u)
    np.multiply(t, scale, out=grad[..., 0])
    # d_r = -(digamma(y + r) - digamma(r) + log r - log(r + mu) + (mu - y) / (r + mu)); grad1 = d_r * sigmoid(raw1)
    special.digamma(np.add(y, r, out=t), out=t)
    t -= special.digamma(r, out=u)
    t += log_r
    t -= log_rmu
    np.subtract(mu, y, out=u)
    u /= rmu
    t += u
    np.negative(t, out=t)
    np.multiply(t, sigmoid(raw[..., 1], out=u), out=grad[..., 1])
    return nll


def mean_and_quantiles(raw: np.ndarray, likelihood: str, scale: np.ndarray, quantiles: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Mean (...) and quantiles (..., q) in the data's units."""
    p = parameters(raw, likelihood, scale)
    q = np.asarray(quantiles, dtype=np.float64)
    if likelihood == "negative_binomial":
        mu, r = p["mu"][..., None], p["r"][..., None]
        return p["mu"], stats.nbinom.ppf(q, r, r / (r + mu))
    s = scale
    # (mu + sigma * z) * s, in place in one (..., q) array
    if likelihood == "student_t":
        z = stats.t.ppf(q, p["nu"][..., None])
        z *= p["sigma"][..., None]
    else:
        z = p["sigma"][..., None] * stats.norm.ppf(q)
    z += p["mu"][..., None]
    z *= s[..., None]
    return p["mu"] * s, z


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
