"""Shared numerics: stable moment merging, mini-batch slicing, BLAS threads, SGD losses and Adam, row hashing.

Only what several algorithms use; an algorithm's own numerics live in its module
(k-means: :mod:`daskstate.algorithms.kmeans.numerics`; Frequent Directions: :mod:`daskstate.algorithms.pca`).
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.linalg.blas

from daskstate.errors import MomentOverflowError

MINI_BATCH_ROWS = 65_536


def mini_batches(n: int, size: int = MINI_BATCH_ROWS) -> Iterator[slice]:
    """Slices of at most ``size`` rows covering ``range(n)``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def batch_moments(
    X: np.ndarray, shift: np.ndarray, *, scatter: bool = False, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Count, mean offset from ``shift``, and centred second moment of one batch.

    With ``weights`` (non-negative, one per row) the count is their sum and the
    mean and second moment are weighted: a row of weight 2 counts as the row
    repeated, exactly (up to rounding).

    The second moment is the per-column sum of squared deviations, or with
    ``scatter=True`` the centred scatter matrix ``(X - mean).T @ (X - mean)``.
    States keep their mean as ``shift + offset`` with ``shift`` a data point:
    offsets are small next to the data's magnitude, so the differences of means
    that :func:`merge_moments` needs do not lose digits when the mean is 1e9 and
    the spread is 1. With ``shift`` a data point, partial sums overflow only where
    the sum of squared deviations itself is beyond float64's range (its terms are
    non-negative); :func:`merge_moments` then raises :class:`MomentOverflowError`.
    """
    if weights is not None:
        return _weighted_batch_moments(X, shift, scatter, weights)
    with np.errstate(over="ignore", invalid="ignore"):  # checked by merge_moments
        D = X - shift
        offset = D.mean(axis=0)
        D -= offset
        m2 = D.T @ D if scatter else np.einsum("ij,ij->j", D, D)
    return len(X), offset, m2


def _weighted_batch_moments(
    X: np.ndarray, shift: np.ndarray, scatter: bool, w: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    p = X.shape[1]
    total = float(w.sum())
    if total == 0.0:  # rows of weight 0 carry nothing
        return 0.0, np.zeros(p), np.zeros((p, p)) if scatter else np.zeros(p)
    with np.errstate(over="ignore", invalid="ignore"):
        D = X - shift
        offset = np.einsum("i,ij->j", w, D) / total  # einsum: a BLAS gemv was several times slower here
        D -= offset
        if scatter:
            root = np.sqrt(w)[:, None] * D
            m2 = root.T @ root
        else:
            m2 = np.einsum("ij,ij,i->j", D, D, w)
    return total, offset, m2


def rebase(offset: np.ndarray, shift_from: np.ndarray, shift_to: np.ndarray) -> np.ndarray:
    """Express a mean offset relative to another shift (exact for nearby shifts)."""
    return (shift_from - shift_to) + offset


def merge_moments(
    n_a: float, mean_a: np.ndarray, m2_a: np.ndarray, n_b: float, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Chan et al.'s parallel update of count, mean (or mean offset) and centred second moment.

    Works for per-column second moments (vectors) and scatter matrices alike;
    never forms raw sums of squares, so it does not cancel when means are large.
    The cross term is formed as ``(sqrt(w) * delta)**2`` so that it overflows only
    when the merged moment does. A merged moment that float64 cannot represent
    raises :class:`MomentOverflowError` naming the column indices: no state
    silently holds inf or NaN.
    """
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        _check_moments(mean_b, m2_b)
        return n_b, mean_b, m2_b
    with np.errstate(over="ignore", invalid="ignore"):
        delta = mean_b - mean_a
        mean = mean_a + delta * (n_b / n)
        root_w_delta = np.sqrt(n_a * n_b / n) * delta
        if m2_a.ndim == 2:
            m2 = m2_a + m2_b + np.outer(root_w_delta, root_w_delta)
        else:
            m2 = m2_a + m2_b + root_w_delta * root_w_delta
    _check_moments(mean, m2)
    return n, mean, m2


def _check_moments(mean: np.ndarray, m2: np.ndarray) -> None:
    diag = np.diagonal(m2) if m2.ndim == 2 else m2
    bad = ~(np.isfinite(diag) & np.isfinite(mean))
    if bad.any():
        raise MomentOverflowError(np.flatnonzero(bad).tolist())


class single_blas_thread:
    """Context manager: BLAS on one thread while tasks run on a pool of threads.

    Dask's threaded scheduler runs one task per core; each BLAS call (``X.T @ X``)
    would start a BLAS thread per core too, and the oversubscribed, spin-waiting
    threads made a 512-feature PCA fit about 3x slower on 2 cores. OpenBLAS's
    thread count (pthreads build, as in numpy's and scipy's wheels) is one setting
    for the whole process, so the limit is reference-counted over all threads:
    the first context to enter sets it, the last to leave restores the limits
    seen before the first (concurrent tasks do not undo each other).

    The engine holds it from the calling thread around a whole pass
    (:meth:`State.blas_limit` with ``main_thread=True``), so the tasks' own
    entries only count; a task of a lazy result computed by the user (a
    ``predict`` output) sets it itself. Off the main thread it is always active;
    on the main thread (in-memory fits) only with ``main_thread=True``: BLAS keeps
    all its threads there otherwise. Dask's worker processes already start with
    one BLAS thread (``distributed.nanny.pre-spawn-environ``). Needs
    ``threadpoolctl`` (a scikit-learn dependency); a no-op without it.

    threadpoolctl (3.8) lets only one "controlling" thread change a process-wide
    OpenBLAS pool and silently ignores the others: a limit set from a pool thread
    after the main thread had set one did nothing, and a restore from another
    thread than the one that set the limit left BLAS on one thread. Every change
    here is made under this class's lock with that ownership cleared before and
    after, so it takes effect from whichever thread makes it and leaves no thread
    owning the pool.

    ``main_thread=True`` limits the main thread too: for many small GEMMs (k-means'
    distance blocks) BLAS threads cost more than they bring, wherever the call runs.
    """

    _lock = threading.Lock()
    _depth = 0
    _limiter: Any = None

    def __init__(self, main_thread: bool = False):
        self._main_thread = main_thread

    def __enter__(self) -> single_blas_thread:
        self._active = self._main_thread or threading.current_thread() is not threading.main_thread()
        if not self._active:
            return self
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                controller = cls._blas_controller()
                if controller is None:
                    self._active = False
                    return self
                cls._limiter = _as_owner(lambda: controller.limit(limits=1, user_api="blas"))
            cls._depth += 1
        return self

    _controller: Any = None
    _modules_seen = -1

    @classmethod
    def _blas_controller(cls) -> Any:
        """A cached ``ThreadpoolController``: building one scans the loaded libraries
        (a few ms, as much as a small task's work); rebuilt when modules were imported since."""
        if cls._controller is None or cls._modules_seen != len(sys.modules):
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                return None
            cls._controller = ThreadpoolController()
            cls._modules_seen = len(sys.modules)
        return cls._controller

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0 and cls._limiter is not None:
                _as_owner(cls._limiter.restore_original_limits)
                cls._limiter = None


def _as_owner(change: Callable[[], Any]) -> Any:
    """``change()`` (a threadpoolctl limit or restore) made from this thread whatever thread owned the pool."""
    release = _release_blas_owner()
    release()
    try:
        return change()
    finally:
        release()


def _release_blas_owner() -> Callable[[], None]:
    """threadpoolctl's ``OpenBLASController.clear_controlling_thread(force=True)``, or a no-op before 3.8."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:
        return lambda: None
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    return (lambda: clear(force=True)) if clear is not None else (lambda: None)


def blas_thread_count() -> int | None:
    """The largest thread count of the BLAS libraries loaded in this process (None without threadpoolctl).

    Examples
    --------
    >>> with single_blas_thread(main_thread=True):
    ...     blas_thread_count() in (None, 1)
    True
    """
    controller = single_blas_thread._blas_controller()
    if controller is None:
        return None
    counts = [lib.get_num_threads() for lib in controller.lib_controllers if lib.user_api == "blas"]
    return max(counts) if counts else None


# ---- stochastic gradient descent: link functions, losses, optimisers, row hashing ----
def sigmoid(S: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free (via ``tanh``), in ``S``'s float dtype.

    Examples
    --------
    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """
    return 0.5 * (1.0 + np.tanh(0.5 * S))


def softmax(S: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so it never overflows.

    Examples
    --------
    >>> softmax(np.array([[1000.0, 1000.0]]))
    array([[0.5, 0.5]])
    """
    E = np.exp(S - S.max(axis=axis, keepdims=True))
    E /= E.sum(axis=axis, keepdims=True)
    return E


def logsumexp(S: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(sum(exp(S)))`` along ``axis`` without overflow.

    Examples
    --------
    >>> round(float(logsumexp(np.array([1000.0, 1000.0]))) - 1000.0, 6)
    0.693147
    """
    top = S.max(axis=axis, keepdims=True)
    return (np.log(np.exp(S - top).sum(axis=axis, keepdims=True)) + top).squeeze(axis)


REGRESSION_LOSSES = ("squared", "absolute", "huber", "quantile")
BINARY_LOSSES = ("logistic", "hinge")
MULTICLASS_LOSSES = ("softmax",)


def loss_and_grad(
    loss: str,
    S: np.ndarray,
    T: np.ndarray,
    *,
    grad: bool = True,
    value: bool = False,
    huber_delta: float = 1.0,
    quantile: float = 0.5,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-row loss and its gradient for many models at once.

    Parameters
    ----------
    loss : str
        One of ``REGRESSION_LOSSES`` (targets real), ``BINARY_LOSSES`` (targets 0/1)
        or ``MULTICLASS_LOSSES`` (targets are class indices).
    S : ndarray of shape (rows, models, outputs)
        Scores; ``outputs`` is 1 except for softmax.
    T : ndarray of shape (rows,)
        Targets, shared by all models.
    grad, value : bool
        Which of the two to compute.

    Returns
    -------
    G : ndarray like ``S`` or None
        d loss / d score.
    L : ndarray of shape (rows, models) or None
        The loss of each row under each model.

    Examples
    --------
    >>> G, L = loss_and_grad("squared", np.array([[[2.0]]]), np.array([0.5]), value=True)
    >>> float(G[0, 0, 0]), float(L[0, 0])
    (1.5, 1.125)
    """
    G = L = None
    if loss in REGRESSION_LOSSES:
        R = S[..., 0] - T[:, None]
        if loss == "squared":
            G = R if grad else None
            L = 0.5 * R * R if value else None
        elif loss == "absolute":
            G = np.sign(R) if grad else None
            L = np.abs(R) if value else None
        elif loss == "huber":
            G = np.clip(R, -huber_delta, huber_delta) if grad else None
            if value:
                A = np.abs(R)
                L = np.where(A <= huber_delta, 0.5 * R * R, huber_delta * (A - 0.5 * huber_delta))
        else:  # quantile (pinball): under-prediction costs quantile, over-prediction 1 - quantile
            G = np.where(R > 0, 1.0 - quantile, -quantile).astype(S.dtype) if grad else None
            L = np.where(R > 0, (1.0 - quantile) * R, -quantile * R) if value else None
        return (G[..., None] if G is not None else None), L
    if loss == "logistic":
        s = S[..., 0]
        t = T[:, None]
        G = (sigmoid(s) - t)[..., None] if grad else None
        L = _softplus(s) - t * s if value else None
        return G, L
    if loss == "hinge":
        s = S[..., 0]
        u = (2.0 * T - 1.0).astype(S.dtype)[:, None]
        margin = u * s
        G = np.where(margin < 1.0, -u, 0.0).astype(S.dtype)[..., None] if grad else None
        L = np.maximum(0.0, 1.0 - margin) if value else None
        return G, L
    if loss == "softmax":
        idx = np.broadcast_to(T.astype(np.intp)[:, None, None], S.shape[:-1] + (1,))
        if grad:
            G = softmax(S)
            np.put_along_axis(G, idx, np.take_along_axis(G, idx, axis=-1) - 1.0, axis=-1)
        if value:
            L = logsumexp(S) - np.take_along_axis(S, idx, axis=-1)[..., 0]
        return G, L
    raise ValueError(f"unknown loss {loss!r}")


def _softplus(s: np.ndarray) -> np.ndarray:
    """``log(1 + exp(s))`` without overflow, in ``s``'s dtype (several times faster than ``np.logaddexp``)."""
    out = np.negative(np.abs(s))
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(s, 0.0)
    return out


def adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: float,
    lr: np.ndarray | float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One Adam step, in place on ``param``, ``m`` and ``v``; ``t`` counts steps from 1.

    ``lr`` broadcasts against ``param`` (one learning rate per packed model).
    Returns the per-coordinate step size applied to the first moment, which a
    proximal L1 step scales its threshold by. ``work``: two buffers shaped like
    ``param`` for the temporaries (the second becomes the returned step size).

    Examples
    --------
    >>> w, m, v = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    >>> _ = adam_step(w, np.array([0.5, -2.0]), m, v, t=1, lr=0.1)
    >>> w  # the first step moves every coordinate by about lr, whatever the gradient's size
    array([ 0.9, -0.9])
    """
    # in place, with two temporaries (each full-size temporary costs a pass over memory)
    tmp = np.multiply(grad, 1.0 - beta_1, out=None if work is None else work[0])
    m *= beta_1
    m += tmp
    np.multiply(grad, grad, out=tmp)
    tmp *= 1.0 - beta_2
    v *= beta_2
    v += tmp
    # a division, as before (a reciprocal's product rounds differently)
    step = np.divide(v, 1.0 - beta_2**t, out=None if work is None else work[1])
    np.sqrt(step, out=step)
    step += epsilon
    step = np.divide(lr / (1.0 - beta_1**t), step, out=step if np.ndim(lr) == 0 else None)
    np.multiply(step, m, out=tmp)
    param -= tmp
    return step


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: float,
    lr: float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One Adam step, in place, as :func:`adam_step` up to rounding, in 9 passes over memory instead of 13.

    For a caller that needs no per-coordinate step sizes and has one learning
    rate. The bias corrections fold into two scalars,
    ``param -= lr_t * m / (sqrt(v) + eps_t)`` with ``lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)``
    and ``eps_t = epsilon sqrt(1 - beta_2^t)`` (the same step: ``sqrt(v / (1 - beta_2^t)) + epsilon``
    is ``(sqrt(v) + eps_t) / sqrt(1 - beta_2^t)``), and the three ``y += a x`` are BLAS's axpy
    (one pass each, where numpy needs a product and a sum). A step over the topic
    model's 320k float32 parameters: 0.35 ms instead of 0.47. ``work``: two
    buffers shaped like ``param``.

    Examples
    --------
    >>> w, m, v = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    >>> adam_update(w, np.array([0.5, -2.0]), m, v, t=1, lr=0.1)
    >>> w
    array([ 0.9, -0.9])
    """
    tmp, den = work if work is not None else (np.empty_like(param), np.empty_like(param))
    axpy = _axpy(param, grad, m, v, tmp)
    # python floats: a numpy float64 scalar would make float32 arrays compute in float64 (and cast back)
    c2 = math.sqrt(1.0 - beta_2 ** float(t))
    m *= beta_1
    axpy(grad, m, a=1.0 - beta_1)
    np.multiply(grad, grad, out=tmp)
    v *= beta_2
    axpy(tmp, v, a=1.0 - beta_2)
    np.sqrt(v, out=den)
    den += float(epsilon) * c2
    np.divide(m, den, out=tmp)
    axpy(tmp, param, a=-float(lr) * c2 / (1.0 - beta_1 ** float(t)))


def _axpy(*arrays: np.ndarray) -> Callable[..., Any]:
    """``f(x, y, a=...)``: ``y += a * x`` in place; BLAS's axpy for contiguous 1-D float32 / float64 arrays."""
    first = arrays[0]
    if first.dtype in (np.float32, np.float64) and all(
            a.dtype == first.dtype and a.ndim == 1 and a.flags.c_contiguous for a in arrays):
        return _BLAS_AXPY[first.dtype.char]
    return _numpy_axpy


def _numpy_axpy(x: np.ndarray, y: np.ndarray, a: float) -> np.ndarray:
    y += a * x
    return y


_BLAS_AXPY = {"f": scipy.linalg.blas.saxpy, "d": scipy.linalg.blas.daxpy}


def soft_threshold(W: np.ndarray, threshold: np.ndarray | float) -> None:
    """Proximal step of an L1 penalty, in place: shrink towards 0 by ``threshold``, stop at 0.

    Examples
    --------
    >>> W = np.array([0.5, -0.05, -2.0])
    >>> soft_threshold(W, 0.1)
    >>> W
    array([ 0.4,  0. , -1.9])
    """
    np.copysign(np.maximum(np.abs(W) - threshold, 0.0), W, out=W)
    W += 0.0  # -0.0 -> 0.0


_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def row_hash(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded 64-bit hash of each row's values (uint64, one per row).

    It depends only on the row's values (``-0.0`` counts as ``0.0``), so a split
    made with it picks the same rows on every pass, worker and partitioning.
    Exact integer arithmetic: the same bits on every machine. Each column's bits
    are multiplied by an odd per-column salt, summed (wrapping, order-free) and mixed.

    Examples
    --------
    >>> X = np.array([[1.0, 2.0], [3.0, 4.0], [-0.0, 2.0]])
    >>> h = row_hash(X, seed=7)
    >>> bool(h[0] == row_hash(X[:1], seed=7)[0]), bool(h[0] != h[1])
    (True, True)
    >>> bool(row_hash(np.array([[0.0, 2.0]]), 7)[0] == h[2])   # -0.0 is 0.0
    True
    """
    X = np.add(X, 0.0, dtype=np.float64, order="F")  # -0.0 -> 0.0; columns contiguous for the loop below
    d = X.shape[1]
    seed_mix = _mix64(np.array([seed], dtype=np.uint64) * _GOLDEN + _GOLDEN)
    salt = _mix64(np.arange(1, d + 1, dtype=np.uint64) * _GOLDEN ^ seed_mix) | np.uint64(1)
    bits = X.view(np.uint64)
    acc = bits[:, 0] * salt[0]
    for j in range(1, d):  # column by column (exact, wrapping): several times faster than an integer matmul
        acc += bits[:, j] * salt[j]
    return _mix64(acc ^ seed_mix)


def hash_unit(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """:func:`row_hash` as floats uniform in [0, 1): ``hash_unit(X) < f`` keeps a fraction ``f``.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(100_000, 3))
    >>> round(float(np.mean(hash_unit(X, seed=1) < 0.1)), 2)
    0.1
    """
    return (row_hash(X, seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53
