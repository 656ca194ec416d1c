"""Numerics of the neural topic model (ProdLDA): forward pass, loss and hand-written gradients.

A variational autoencoder over bag-of-words counts (Srivastava & Sutton,
"Autoencoding Variational Inference for Topic Models", ICLR 2017):

- encoder: an MLP over the counts, dropout on its last layer, two linear heads
  giving the mean and log-variance of a Gaussian over ``K`` logits, each batch-normalised;
- latent: ``z = mu + exp(logvar / 2) * eps``, topic proportions ``theta = softmax(z)``
  (logistic normal), dropout on ``theta``;
- decoder: word logits ``theta @ beta`` (``beta`` is the K x V topic-word matrix),
  batch-normalised, plus a background log-frequency per word (``b_dec``, with
  ``Layout.background``), then a softmax over the vocabulary: a product of experts;
- loss per document: ``-sum_w x_w log p_w`` plus the KL divergence from the
  logistic-normal Laplace approximation of a Dirichlet(``alpha``) prior.

Every function is pure: parameters live in one flat vector (so the optimiser and
the rounds averaging treat them as one array) viewed as named matrices through a
:class:`Layout`. The functions compute in the float type of that vector: a model
keeps float32 parameters (:data:`PARAMETER_DTYPE`; a training step is bound by
memory traffic over the B x V decoder arrays and the V x H first layer, so this
makes it ~1.7x faster), the gradient checks run in float64. Randomness (``eps`` and dropout masks) is an argument, so the
loss is a deterministic function of the parameters and the gradients can be
checked against finite differences.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from daskstate.numerics import adam_update, sigmoid, softmax

try:  # the compiled kernel behind scipy's sparse products (as k-means uses it)
    from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs
except ImportError:  # pragma: no cover - another scipy layout: the public product
    _csc_matvecs = None

BN_EPS = 1e-5
#: float type of a model's parameters and optimiser moments (the functions here work in any float type;
#: the gradient checks run in float64)
PARAMETER_DTYPE = np.float32
ACTIVATIONS = ("softplus", "relu", "tanh")


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Names and shapes of the parameters inside one flat vector.

    Parameters
    ----------
    n_words, n_topics : int
    encoder_layers : sequence of int
        Widths of the encoder's hidden layers.
    batch_norm : bool
        With batch norm the heads and decoder need no biases (the norm removes them).
    background : bool
        With batch norm: a per-word offset ``b_dec`` added after the decoder's norm
        (the norm's centre, as in ProdLDA's original batch norm; SCHOLAR's background
        log-frequencies). Without it, every word's normalised logit has mean 0 and
        variance 1 over a batch, so a word's overall frequency must be learned as the
        topics' shape; with it (started at the words' log-frequencies, see
        :func:`background_logits`) the topics model only the deviations from it.
        Without batch norm the decoder always has ``b_dec``.
    """

    n_words: int
    n_topics: int
    encoder_layers: tuple[int, ...]
    batch_norm: bool = True
    background: bool = False

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        V, K = self.n_words, self.n_topics
        out: dict[str, tuple[int, ...]] = {}
        d = V
        for i, h in enumerate(self.encoder_layers):
            out[f"W{i}"], out[f"b{i}"] = (d, h), (h,)
            d = h
        out["W_mu"], out["W_lv"] = (d, K), (d, K)
        if not self.batch_norm:
            out["b_mu"], out["b_lv"] = (K,), (K,)
        if not self.batch_norm or self.background:
            out["b_dec"] = (V,)
        out["beta"] = (K, V)
        return out

    @property
    def size(self) -> int:
        return _offsets(self)[-1][2]

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into ``flat`` (writing to a view writes to ``flat``)."""
        return {name: flat[a:b].reshape(shape) for name, a, b, shape in _offsets(self)}

    def flatten(self, named: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(named[name]) for name in self.shapes])

    @property
    def bn_shapes(self) -> dict[str, int]:
        """Lengths of the batch norms' running means (and variances)."""
        if not self.batch_norm:
            return {}
        return {"mu": self.n_topics, "lv": self.n_topics, "dec": self.n_words}

    @property
    def bn_size(self) -> int:
        return 2 * sum(self.bn_shapes.values())

    def bn_views(self, flat: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{name: (running_mean, running_var)}`` views into the flat running statistics."""
        out, start = {}, 0
        for name, n in self.bn_shapes.items():
            out[name] = (flat[start : start + n], flat[start + n : start + 2 * n])
            start += 2 * n
        return out


@functools.lru_cache(maxsize=64)
def _offsets(layout: Layout) -> tuple[tuple[str, int, int, tuple[int, ...]], ...]:
    """``(name, start, stop, shape)`` of each parameter in the flat vector (a step takes its views several times)."""
    out, start = [], 0
    for name, shape in layout.shapes.items():
        n = int(np.prod(shape))
        out.append((name, start, start + n, shape))
        start += n
    return tuple(out)


def init_weights(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Glorot-uniform weights, zero biases, zero log-variance head (so early posteriors are wide)."""
    flat = np.zeros(layout.size)
    for name, view in layout.views(flat).items():
        if name.startswith("W") and name != "W_lv" or name == "beta":
            fan_in, fan_out = view.shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            view[...] = rng.uniform(-limit, limit, size=view.shape)
    return flat


def background_logits(word_counts: np.ndarray) -> np.ndarray:
    """The decoder's starting background ``b_dec``: each word's log-frequency (centred; +0.5 for unseen words).

    Examples
    --------
    >>> background_logits(np.array([1.5, 0.0, 0.5])).round(3).tolist()
    [0.732, -0.366, -0.366]
    """
    log_f = np.log(np.asarray(word_counts, dtype=np.float64) + 0.5)
    return log_f - log_f.mean()


def init_bn_stats(layout: Layout) -> np.ndarray:
    flat = np.zeros(layout.bn_size)
    for _, var in layout.bn_views(flat).values():
        var[...] = 1.0
    return flat


def laplace_prior(alpha: np.ndarray | float, n_topics: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the logistic-normal (Laplace) approximation of Dirichlet(alpha).

    ``mu_k = log a_k - mean(log a)``, ``var_k = (1 - 2/K) / a_k + sum_j(1/a_j) / K^2``
    (MacKay 1998; Srivastava & Sutton 2017, eq. 4).

    Examples
    --------
    >>> mu, var = laplace_prior(1.0, 4)
    >>> mu.tolist(), var.tolist()
    ([0.0, 0.0, 0.0, 0.0], [0.75, 0.75, 0.75, 0.75])
    """
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_topics,))
    if not (a > 0).all():
        raise ValueError(f"prior_alpha must be > 0, got {alpha}")
    log_a = np.log(a)
    mu = log_a - log_a.mean()
    var = (1.0 - 2.0 / n_topics) / a + (1.0 / a).sum() / n_topics**2
    return mu, var


# ---------------------------------------------------------------------------- pieces
def activate(a: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softplus":  # log(1 + e^a), stable; np.logaddexp(0, a) took 4x as long
        out = np.abs(a)
        np.negative(out, out=out)
        np.exp(out, out=out)
        np.log1p(out, out=out)
        out += np.maximum(a, 0.0)
        return out
    if activation == "relu":
        return np.maximum(a, 0.0)
    if activation == "tanh":
        return np.tanh(a)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def activation_grad(a: np.ndarray, h: np.ndarray, activation: str) -> np.ndarray:
    """d activation / d a, from the pre-activation ``a`` and the output ``h``."""
    if activation == "softplus":
        return sigmoid(a)
    if activation == "relu":
        return (a > 0).astype(a.dtype)
    return 1.0 - h * h  # tanh


def batch_norm(A: np.ndarray, overwrite: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise each column by the batch's mean and variance (no affine part): ``(Y, mean, var)``.

    ``overwrite``: ``Y`` is ``A``, normalised in place.
    """
    mean = A.mean(axis=0)
    Y = np.subtract(A, mean, out=A if overwrite else None)
    var = np.einsum("ij,ij->j", Y, Y) / A.shape[0]
    Y *= 1.0 / np.sqrt(var + BN_EPS)
    return Y, mean, var


def batch_norm_grad(dY: np.ndarray, Y: np.ndarray, var: np.ndarray, overwrite: bool = False,
                    work: np.ndarray | None = None) -> np.ndarray:
    """Gradient through :func:`batch_norm` (the batch statistics depend on every row).

    ``overwrite``: reuse ``dY``; ``work``: a buffer shaped like ``Y`` for the temporary.
    """
    n = dY.shape[0]
    proj = np.einsum("ij,ij->j", dY, Y) / n
    out = dY if overwrite else dY.copy()
    out -= dY.mean(axis=0)
    out -= np.multiply(Y, proj, out=work)
    out *= 1.0 / np.sqrt(var + BN_EPS)
    return out


def normalise_running(A: np.ndarray, mean: np.ndarray, var: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """``(A - mean) / sqrt(var + eps)`` (``overwrite``: in ``A``'s memory)."""
    out = np.subtract(A, mean, out=A if overwrite else None)
    out /= np.sqrt(var + BN_EPS)
    return out


def kl_to_prior(mu: np.ndarray, logvar: np.ndarray, mu0: np.ndarray, var0: np.ndarray) -> np.ndarray:
    """KL( N(mu, exp(logvar)) || N(mu0, var0) ) per row (diagonal Gaussians)."""
    return 0.5 * (
        (np.exp(logvar) / var0).sum(axis=1)
        + ((mu - mu0) ** 2 / var0).sum(axis=1)
        - mu.shape[1]
        + np.log(var0).sum()
        - logvar.sum(axis=1)
    )


@dataclass
class Noise:
    """The random draws of one training step: ``eps`` (B x K) and scaled dropout masks (or None)."""

    eps: np.ndarray
    hidden_mask: np.ndarray | None = None
    theta_mask: np.ndarray | None = None


def draw_noise(rng: np.random.Generator, n_docs: int, layout: Layout, dropout: float,
               dtype: Any = np.float64) -> Noise:
    """Standard normal ``eps`` and inverted-dropout masks (kept units scaled by ``1/(1-p)``), drawn in ``dtype``
    (a float32 model's: no casts, and float32 draws take half the generator's work)."""
    eps = rng.standard_normal((n_docs, layout.n_topics), dtype=dtype)
    if dropout <= 0:
        return Noise(eps)
    keep = 1.0 - dropout
    width = layout.encoder_layers[-1] if layout.encoder_layers else layout.n_words

    def mask(shape: tuple[int, int]) -> np.ndarray:
        return np.multiply(rng.random(shape, dtype=dtype) < keep, 1.0 / keep, dtype=dtype)

    return Noise(eps, mask((n_docs, width)), mask((n_docs, layout.n_topics)))


# ---------------------------------------------------------------------------- forward / backward
def encode(W: dict[str, np.ndarray], X: Any, layout: Layout, activation: str,
           hidden_mask: np.ndarray | None = None, bn: dict | None = None, cache: dict | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and log-variance of the topic logits for the count rows ``X``.

    ``bn=None`` normalises with the batch's statistics (training); otherwise with
    the given running ``{name: (mean, var)}`` (inference).
    """
    h = X
    hs, acts = [X], []
    for i in range(len(layout.encoder_layers)):
        a = h @ W[f"W{i}"] + W[f"b{i}"]
        h = activate(a, activation)
        acts.append(a)
        hs.append(h)
    h_do = h * hidden_mask if hidden_mask is not None else h
    m = h_do @ W["W_mu"]
    lv = h_do @ W["W_lv"]
    if not layout.batch_norm:
        m, lv = m + W["b_mu"], lv + W["b_lv"]
        mu, logvar = m, lv
        stats = None
    elif bn is None:
        mu, m_mean, m_var = batch_norm(m)
        logvar, l_mean, l_var = batch_norm(lv)
        stats = {"mu": (m_mean, m_var), "lv": (l_mean, l_var)}
    else:
        mu, logvar = normalise_running(m, *bn["mu"]), normalise_running(lv, *bn["lv"])
        stats = None
    if cache is not None:
        cache.update(hs=hs, acts=acts, h_do=h_do, mu=mu, logvar=logvar, stats=stats or {})
    return mu, logvar


def decode_logits(W: dict[str, np.ndarray], theta: np.ndarray, layout: Layout, bn: dict | None = None,
                  cache: dict | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Word logits ``BN(theta @ beta) + b_dec`` (softmax gives the word distribution); ``out``: a B x V buffer.

    Training (``bn=None``) with batch norm returns ``BN(theta @ beta)`` alone:
    :func:`forward` adds the background ``b_dec`` (see :func:`background`) inside
    the softmax, since the gradient of the norm needs its output.
    """
    if layout.batch_norm and bn is None:
        return _decode_batch_norm(W, theta, cache, out)
    G = np.matmul(theta, W["beta"], out=out)
    if not layout.batch_norm:
        G += W["b_dec"]
        return G
    L = normalise_running(G, *bn["dec"], overwrite=True)
    if layout.background:
        L += W["b_dec"]
    return L


def _decode_batch_norm(W: dict[str, np.ndarray], theta: np.ndarray, cache: dict | None, out: np.ndarray | None
                       ) -> np.ndarray:
    """``BN(theta @ beta)`` with the batch's statistics, without a pass over the B x V logits for their means.

    The norm subtracts each column's mean, which is ``mean(theta) @ beta``: so
    the product of the centred ``theta`` is already centred. Its scale ``s``
    (1 / the columns' standard deviations) and the centred ``theta`` go to the
    cache for :func:`backward`.
    """
    mean_theta = theta.mean(axis=0)
    theta_c = theta - mean_theta
    G = np.matmul(theta_c, W["beta"], out=out)
    var = np.einsum("ij,ij->j", G, G) / G.shape[0]
    scale = 1.0 / np.sqrt(var + BN_EPS)
    G *= scale
    if cache is not None:
        cache["stats"]["dec"] = (mean_theta @ W["beta"], var)
        cache.update(theta_c=theta_c, dec_scale=scale)
    return G


def background(W: dict[str, np.ndarray], layout: Layout) -> np.ndarray | None:
    """The offset :func:`forward` adds to the normalised logits of :func:`decode_logits` (None: none)."""
    return W["b_dec"] if layout.batch_norm and layout.background else None


def forward(flat: np.ndarray, X: Any, noise: Noise, layout: Layout, *, activation: str,
            prior: tuple[np.ndarray, np.ndarray], work: Workspace | None = None) -> tuple[float, dict]:
    """Training loss (mean over the batch's documents of reconstruction + KL) and a cache for :func:`backward`.

    Batch norms use the batch's statistics (returned in ``cache["stats"]`` for the
    running averages). With a ``work`` space, the B x V arrays live in its buffers.
    """
    n, V = X.shape[0], layout.n_words
    buffer = (lambda name: work.get(name, (n, V), flat.dtype)) if work is not None else (lambda name: None)
    W = layout.views(flat)
    cache: dict[str, Any] = {"X": X, "noise": noise}
    mu, logvar = encode(W, X, layout, activation, noise.hidden_mask, cache=cache)
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * noise.eps
    theta = softmax(z)
    theta_do = theta * noise.theta_mask if noise.theta_mask is not None else theta
    L = decode_logits(W, theta_do, layout, cache=cache, out=buffer("L"))
    offset = background(W, layout)
    # a batch-normalised column of n values lies within +-sqrt(n - 1)
    bound = np.sqrt(max(n - 1, 0)) + (0.0 if offset is None else float(np.abs(offset).max())) if layout.batch_norm \
        else None
    E, total, lse = exp_and_logsumexp(L, out=buffer("E"), bound=bound, offset=offset)
    entries = csr_entries(X) if sp.issparse(X) else None
    counts, XL = counts_and_dot(X, L, entries)
    if offset is not None:
        XL += X @ offset if entries is None else np.bincount(entries[0], entries[2] * offset[entries[1]],
                                                             minlength=n).astype(XL.dtype, copy=False)
    rec = counts * lse - XL
    kl = kl_to_prior(mu, logvar, *prior)
    cache.update(sigma=sigma, theta=theta, theta_do=theta_do, L=L, E=E, total=total, lse=lse, counts=counts,
                 rec=rec, kl=kl, prior=prior, activation=activation, n=n, work=work, entries=entries)
    return float((rec + kl).sum() / n), cache


def exp_and_logsumexp(L: np.ndarray, out: np.ndarray | None = None, bound: float | None = None,
                      offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``E = exp(L + offset - shift)`` by rows (into ``out`` if given), the rows' sums and log-sum-exps.

    ``E / sums`` is the row softmax (left to the caller: the gradient scales ``E``
    anyway). ``bound``: a known bound on ``|L + offset|``; when ``exp`` cannot
    overflow under it the rows are not shifted by their maxima (``shift = 0``,
    two passes over ``L`` fewer). ``offset``: a row vector added to every row
    (``L`` is not changed).
    """
    if offset is not None:
        L = np.add(L, offset, out=out)
    safe = bound is not None and bound + math.log(L.shape[1]) < 0.9 * _log_max(L.dtype)
    top = 0.0 if safe else L.max(axis=1, keepdims=True)
    E = np.exp(L, out=out) if safe else np.exp(np.subtract(L, top, out=out), out=out)
    total = E @ np.ones(E.shape[1], dtype=E.dtype)  # row sums as BLAS's product (a third of numpy's sum)
    return E, total, np.log(total) + np.ravel(top)


def counts_and_dot(X: Any, L: np.ndarray, entries: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Words per row of the counts ``X`` and the rows' dot products ``sum_w x_w L_w`` (only nonzeros read).

    ``entries``: sparse ``X``'s :func:`csr_entries`, if already at hand.
    """
    if not sp.issparse(X):
        return X.sum(axis=1), (X * L).sum(axis=1)
    row, col, data = entries or csr_entries(X)
    n = X.shape[0]
    at = np.take(L.reshape(-1), flat_index(row, col, L)) if L.flags.c_contiguous else L[row, col]
    return (np.bincount(row, data, minlength=n).astype(L.dtype, copy=False),
            np.bincount(row, data * at, minlength=n).astype(L.dtype, copy=False))


def flat_index(row: np.ndarray, col: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Positions of the entries ``(row, col)`` in C-ordered ``A.reshape(-1)`` (a 1-D gather or scatter is
    several times cheaper than numpy's 2-D fancy indexing)."""
    return row * A.shape[1] + col


@functools.lru_cache(maxsize=8)
def _log_max(dtype: np.dtype) -> float:
    return math.log(float(np.finfo(dtype).max))


def sparse_t_dot(X: Any, D: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``X.T @ D`` into ``out`` for CSR ``X`` (n x V) and a dense C-ordered ``D`` (n x H): the first layer's gradient.

    scipy's ``X.T @ D`` makes a CSC view, a new V x H result and, copied into
    the gradient buffer, one more pass over it: this writes the sums straight
    into ``out`` (zeroed, then scipy's compiled CSC kernel adds each stored count's row of ``D``).
    """
    X = X if sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array) else sp.csr_matrix(X)
    D = np.ascontiguousarray(D, dtype=out.dtype)
    if X.dtype != out.dtype or not out.flags.c_contiguous or _csc_matvecs is None:
        out[...] = X.T @ D
        return out
    out.fill(0.0)
    n, V = X.shape
    _csc_matvecs(V, n, D.shape[1], X.indptr, X.indices, X.data, D.ravel(), out.reshape(-1))
    return out


def csr_rows(X: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """The rows ``rows`` of CSR ``X`` (a mini-batch), gathered with a few numpy calls.

    scipy's ``X[rows]`` then slices cost a small fit's epoch about as much as
    its validation scoring (its indexing is Python-heavy); the result is the same matrix.
    """
    start, stop = X.indptr[rows], X.indptr[np.asarray(rows) + 1]
    lengths = stop - start
    indptr = np.zeros(len(lengths) + 1, dtype=X.indptr.dtype)
    np.cumsum(lengths, out=indptr[1:])
    take = np.arange(indptr[-1], dtype=X.indptr.dtype) + np.repeat(start - indptr[:-1], lengths)
    return sp.csr_matrix((X.data[take], X.indices[take], indptr), shape=(len(lengths), X.shape[1]))


def csr_entries(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and value of each stored entry of sparse ``X``, duplicates summed (without a COO copy)."""
    X = X if sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array) else sp.csr_matrix(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), X.indices, X.data


def backward(flat: np.ndarray, cache: dict, layout: Layout) -> np.ndarray:
    """Gradient of :func:`forward`'s loss with respect to the flat parameters.

    After a ``forward`` with a work space, the gradient is one of its buffers and
    the cache's B x V arrays are overwritten.
    """
    W = layout.views(flat)
    work = cache["work"]
    flat_grad = np.empty(layout.size, dtype=flat.dtype) if work is None else work.get("grad", (layout.size,),
                                                                                      flat.dtype)
    grads = layout.views(flat_grad)  # every view is written below
    X, noise, n = cache["X"], cache["noise"], cache["n"]
    mu0, var0 = cache["prior"]
    # reconstruction: d/dL of counts * logsumexp(L) - x.L = counts * softmax(L) - x
    weight = (cache["counts"] / (n * cache["total"]))[:, None]
    dL = np.multiply(cache["E"], weight, out=None if work is None else cache["E"])
    if sp.issparse(X):
        rows, cols, values = cache.get("entries") or csr_entries(X)
        flat = dL.reshape(-1)  # dL is C-ordered (E's buffer, or the product above)
        flat[flat_index(rows, cols, dL)] -= values / n  # canonical CSR: each (row, col) once
    else:
        dL -= X / n
    if layout.batch_norm:  # see _decode_batch_norm
        if layout.background:
            np.matmul(np.ones(n, dtype=dL.dtype), dL, out=grads["b_dec"])  # column sums as BLAS's product
        # through the norm, without its mean term: the centred theta_c is orthogonal to it, and the mean
        # term's share of dtheta is the same for every row, which the centring below removes
        Y = cache["L"]
        proj = np.einsum("ij,ij->j", dL, Y) / n
        dG = dL
        dG -= np.multiply(Y, proj, out=None if work is None else Y)
        dG *= cache["dec_scale"]
        np.matmul(cache["theta_c"].T, dG, out=grads["beta"])
        dtheta = dG @ W["beta"].T
        dtheta -= dtheta.mean(axis=0)
    else:
        grads["b_dec"][...] = dL.sum(axis=0)
        np.matmul(cache["theta_do"].T, dL, out=grads["beta"])
        dtheta = dL @ W["beta"].T
    if noise.theta_mask is not None:
        dtheta *= noise.theta_mask
    theta = cache["theta"]
    dz = theta * (dtheta - (dtheta * theta).sum(axis=1, keepdims=True))
    mu, logvar, sigma = cache["mu"], cache["logvar"], cache["sigma"]
    dmu = dz + (mu - mu0) / var0 / n
    dlogvar = dz * noise.eps * sigma * 0.5 + 0.5 * (np.exp(logvar) / var0 - 1.0) / n
    if layout.batch_norm:
        dm = batch_norm_grad(dmu, mu, cache["stats"]["mu"][1])
        dlv = batch_norm_grad(dlogvar, logvar, cache["stats"]["lv"][1])
    else:
        dm, dlv = dmu, dlogvar
        grads["b_mu"][...], grads["b_lv"][...] = dm.sum(axis=0), dlv.sum(axis=0)
    h_do = cache["h_do"]
    grads["W_mu"][...] = h_do.T @ dm
    grads["W_lv"][...] = h_do.T @ dlv
    dh = dm @ W["W_mu"].T + dlv @ W["W_lv"].T
    if noise.hidden_mask is not None:
        dh *= noise.hidden_mask
    hs, acts = cache["hs"], cache["acts"]
    for i in reversed(range(len(layout.encoder_layers))):
        da = dh * activation_grad(acts[i], hs[i + 1], cache["activation"])
        prev = hs[i]
        if sp.issparse(prev):
            sparse_t_dot(prev, da, out=grads[f"W{i}"])
        else:
            np.matmul(prev.T, da, out=grads[f"W{i}"])
        grads[f"b{i}"][...] = da.sum(axis=0)
        if i:
            dh = da @ W[f"W{i}"].T
    return flat_grad


def as_dtype(dtype: np.dtype, X: Any, noise: Noise, prior: tuple[np.ndarray, np.ndarray]
             ) -> tuple[Any, Noise, tuple[np.ndarray, np.ndarray]]:
    """The step's inputs in the parameters' float type (float32 parameters would otherwise compute in float64)."""
    def cast(a: Any) -> Any:
        return None if a is None else a.astype(dtype, copy=False)

    return cast(X), Noise(cast(noise.eps), cast(noise.hidden_mask), cast(noise.theta_mask)), (
        cast(prior[0]), cast(prior[1]))


def train_step(flat: np.ndarray, adam_m: np.ndarray, adam_v: np.ndarray, t: float, X: sp.csr_matrix, noise: Noise,
               layout: Layout, *, activation: str, prior: tuple[np.ndarray, np.ndarray], learning_rate: float,
               beta_1: float, beta_2: float) -> tuple[float, dict]:
    """One Adam step on the mini-batch ``X``, in place on ``flat``, ``adam_m`` and ``adam_v``; returns :func:`forward`'s.

    Computes in the parameters' float type (``X``, the noise and the prior are
    cast to it). Every parameter takes a dense Adam step, the first layer's V x H
    weights included: a lazy (row-sparse) Adam step over only the words of the
    batch was measured slower at V = 2000 and no faster at V = 10000, since a
    batch of 64 documents touches 30-75% of the vocabulary and the gather and
    scatter of the touched rows cost what they save.
    """
    X, noise, prior = as_dtype(flat.dtype, X, noise, prior)
    work = step_workspace()
    loss, cache = forward(flat, X, noise, layout, activation=activation, prior=prior, work=work)
    grad = backward(flat, cache, layout)
    adam_update(flat, grad, adam_m, adam_v, t, learning_rate, beta_1, beta_2,
                work=(work.get("adam", grad.shape, grad.dtype), work.get("adam_step", grad.shape, grad.dtype)))
    return loss, cache


class Workspace:
    """Buffers reused by the training steps of one thread (see :func:`step_workspace`).

    A step's temporaries (B x V decoder arrays, a parameter-sized gradient and
    Adam's two) are each a few hundred kB to MBs: allocated afresh per step, the
    memory allocator hands them back to the system between steps and every
    step paid the page faults of touching new memory, more than the arithmetic
    (a step at V = 2000, B = 64 took 5.2 ms instead of 2.4 ms).
    """

    #: buffers beyond this many bytes in all are not kept (a step that big is not bound by page faults)
    max_bytes = 64 << 20

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (contents undefined), the same memory on each call."""
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            kept = sum(b.nbytes for k, b in self._buffers.items() if k != name)
            if kept + buf.nbytes <= self.max_bytes:
                self._buffers[name] = buf
            else:
                self._buffers.pop(name, None)
        return buf[:size].reshape(shape)


_THREAD = threading.local()


def step_workspace() -> Workspace:
    """This thread's :class:`Workspace` (a thread runs one step at a time)."""
    work = getattr(_THREAD, "work", None)
    if work is None:
        work = _THREAD.work = Workspace()
    return work


# ---------------------------------------------------------------------------- inference
def doc_topics(flat: np.ndarray, bn_flat: np.ndarray, X: Any, layout: Layout, activation: str) -> np.ndarray:
    """Document-topic proportions ``softmax(mu)`` at the posterior mean (rows sum to 1)."""
    W = layout.views(flat)
    mu, _ = encode(W, X, layout, activation, bn=layout.bn_views(bn_flat) if layout.batch_norm else None)
    return softmax(mu)


def refine_topics(theta: np.ndarray, X: Any, phi: np.ndarray, alpha: np.ndarray, steps: int) -> np.ndarray:
    """Fixed-point iterations of a document's topic proportions under mixture topics ``phi`` (K x V).

    ``gamma_k = alpha_k + sum_w x_w theta_k phi_kw / sum_j theta_j phi_jw``,
    ``theta = gamma / sum(gamma)``: LDA's variational E-step with ``log theta`` in
    place of its digamma terms, started from the encoder's ``theta``. Rows sum to 1.
    """
    X = sp.csr_matrix(X)
    C = X.tocoo()
    for _ in range(int(steps)):
        # x_w / (theta @ phi)_w at the nonzero counts only
        q = np.einsum("ij,ij->i", theta[C.row], phi[:, C.col].T)
        R = sp.csr_matrix((C.data / np.maximum(q, 1e-300), (C.row, C.col)), shape=X.shape)
        gamma = theta * np.asarray(R @ phi.T) + alpha
        theta = gamma / gamma.sum(axis=1, keepdims=True)
    return theta


def word_distributions(flat: np.ndarray, bn_flat: np.ndarray, theta: np.ndarray, layout: Layout) -> np.ndarray:
    """The decoder's word distribution (rows sum to 1) for topic proportions ``theta``."""
    W = layout.views(flat)
    L = decode_logits(W, theta, layout, bn=layout.bn_views(bn_flat) if layout.batch_norm else None)
    return softmax(L)


def elbo_terms(flat: np.ndarray, bn_flat: np.ndarray, X: Any, layout: Layout, activation: str,
               prior: tuple[np.ndarray, np.ndarray], eps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-document reconstruction loss (averaged over the ``eps`` samples, S x B x K) and KL, in inference mode.

    ``eps=None``: the reconstruction at the posterior mean (the validation loss), one decoder pass.
    """
    W = layout.views(flat)
    bn = layout.bn_views(bn_flat) if layout.batch_norm else None
    mu, logvar = encode(W, X, layout, activation, bn=bn)
    entries = csr_entries(X) if sp.issparse(X) else None
    if eps is None:
        rec = _reconstruction(W, softmax(mu), X, layout, bn, entries)
    else:
        sigma = np.exp(0.5 * logvar)
        rec = np.zeros(X.shape[0])
        for e in eps:
            rec += _reconstruction(W, softmax(mu + sigma * e), X, layout, bn, entries)
        rec /= len(eps)
    return rec, kl_to_prior(mu, logvar, *prior)


def _reconstruction(W: dict[str, np.ndarray], theta: np.ndarray, X: Any, layout: Layout, bn: dict | None,
                    entries: tuple | None) -> np.ndarray:
    """``-sum_w x_w log p_w`` per document of ``X`` for topic proportions ``theta`` (inference mode)."""
    L = decode_logits(W, theta, layout, bn=bn)
    counts, XL = counts_and_dot(X, L, entries)
    top = L.max(axis=1, keepdims=True)
    E = np.exp(np.subtract(L, top, out=L), out=L)  # L is this call's own array
    lse = np.log(E.sum(axis=1, keepdims=True)) + top
    return counts * lse.squeeze(1) - XL


def update_running(bn_flat: np.ndarray, stats: dict[str, tuple[np.ndarray, np.ndarray]], layout: Layout,
                   momentum: float, n: int) -> None:
    """Exponential averages of the batch norms' statistics, in place (unbiased variance).

    One update of the whole flat vector (laid out as :meth:`Layout.bn_views`), not six small ones.
    """
    unbiased = n / max(n - 1, 1)
    target = np.concatenate([part for name in layout.bn_shapes
                             for part in (stats[name][0], stats[name][1] * unbiased)]).astype(bn_flat.dtype, copy=False)
    target -= bn_flat
    target *= momentum
    bn_flat += target


def mini_batch_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """Mini-batches of ``size`` rows; the remainder joins the last batch (batch norm needs >= 2 rows)."""
    size = max(2, int(size))
    if n <= size:
        return [(0, n)]
    starts = list(range(0, n, size))
    if n - starts[-1] < size:
        starts.pop()
    bounds = [(s, s + size) for s in starts]
    bounds[-1] = (bounds[-1][0], n)
    return bounds


def top_indices(rows: np.ndarray, n: int) -> np.ndarray:
    """Column indices of each row's ``n`` largest values, largest first."""
    n = min(n, rows.shape[1])
    part = np.argpartition(-rows, n - 1, axis=1)[:, :n]
    order = np.argsort(-np.take_along_axis(rows, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def as_layers(encoder_layers: Sequence[int] | int) -> tuple[int, ...]:
    layers = (int(encoder_layers),) if np.ndim(encoder_layers) == 0 else tuple(int(h) for h in encoder_layers)
    if not layers or any(h < 1 for h in layers):
        raise ValueError(f"encoder_layers must be one or more positive widths, got {encoder_layers!r}")
    return layers
