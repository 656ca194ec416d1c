"""Shared numerics: stable moment merging, mini-batch slicing, squared distances."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from daskstate.errors import MomentOverflowError

MINI_BATCH_ROWS = 65_536


def mini_batches(n: int, size: int = MINI_BATCH_ROWS) -> Iterator[slice]:
    """Slices of at most ``size`` rows covering ``range(n)``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def batch_moments(
    X: np.ndarray, shift: np.ndarray, *, scatter: bool = False
) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean offset from ``shift``, and centred second moment of one batch.

    The second moment is the per-column sum of squared deviations, or with
    ``scatter=True`` the centred scatter matrix ``(X - mean).T @ (X - mean)``.
    States keep their mean as ``shift + offset`` with ``shift`` a data point:
    offsets are small next to the data's magnitude, so the differences of means
    that :func:`merge_moments` needs do not lose digits when the mean is 1e9 and
    the spread is 1. With ``shift`` a data point, partial sums overflow only where
    the sum of squared deviations itself is beyond float64's range (its terms are
    non-negative); :func:`merge_moments` then raises :class:`MomentOverflowError`.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # checked by merge_moments
        D = X - shift
        offset = D.mean(axis=0)
        D -= offset
        m2 = D.T @ D if scatter else np.einsum("ij,ij->j", D, D)
    return len(X), offset, m2


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


def squared_distances(X: np.ndarray, C: np.ndarray, C_sq: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances between rows of ``X`` and ``C`` with one GEMM, clipped at 0."""
    if C_sq is None:
        C_sq = np.einsum("ij,ij->i", C, C)
    X_sq = np.einsum("ij,ij->i", X, X)
    d = X @ C.T
    d *= -2.0
    d += X_sq[:, None]
    d += C_sq[None, :]
    np.maximum(d, 0.0, out=d)
    return d


# ---- PCA: mini-batch sizing, sign convention, Frequent Directions ------------------------
def rows_per_batch(n_features: int, max_bytes: int = 1 << 25) -> int:
    """Rows of a float64 mini-batch with ``n_features`` columns that fit in ``max_bytes``.

    At most :data:`MINI_BATCH_ROWS`; keeps the temporaries of wide data (a centred
    copy of the batch) bounded: 8,192 rows at 512 features with the 32 MiB default.
    """
    return int(max(1, min(MINI_BATCH_ROWS, max_bytes // (8 * max(1, n_features)))))


def centre_rows(X: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean offset of ``X`` from ``shift`` and the rows centred on the batch mean (a new array)."""
    D = X - shift
    offset = D.mean(axis=0)
    D -= offset
    return offset, D


def svd_flip_rows(V: np.ndarray) -> np.ndarray:
    """Flip rows so the entry of largest magnitude in each is positive.

    scikit-learn's ``svd_flip(u, v, u_based_decision=False)``, the sign
    convention of its ``PCA`` (ties: the first such entry).

    Examples
    --------
    >>> svd_flip_rows(np.array([[0.6, -0.8], [0.8, 0.6]]))
    array([[-0.6,  0.8],
           [ 0.8,  0.6]])
    """
    V = np.array(V, dtype=np.float64, copy=True)
    if V.size == 0:
        return V
    pick = np.abs(V).argmax(axis=1)
    signs = np.sign(V[np.arange(len(V)), pick])
    signs[signs == 0] = 1.0
    V *= signs[:, None]
    return V


def fd_shrink(Z: np.ndarray, ell: int) -> tuple[np.ndarray, float]:
    """One Frequent Directions shrink: an ``ell x d`` sketch of the rows of ``Z``, and its ``delta``.

    With ``Z^T Z = sum_i lam_i v_i v_i^T`` (``lam`` descending), ``delta =
    lam_{ell+1}`` (0 if the rank is at most ``ell``) and the sketch ``B`` has rows
    ``sqrt(lam_i - delta) v_i`` for ``i <= ell``. Hence ``0 <= Z^T Z - B^T B <=
    delta * I`` and the squared Frobenius norm drops by at least ``(ell + 1) *
    delta`` (Liberty 2013; Ghashami, Liberty, Phillips and Woodruff 2016).

    The eigen-decomposition is of the smaller Gram matrix: ``Z Z^T`` for short
    wide blocks (then ``B = diag(sqrt(1 - delta / lam)) U^T Z``), ``Z^T Z``
    otherwise. Rows beyond the rank are zero.
    """
    m, d = Z.shape
    B = np.zeros((ell, d))
    if m == 0:
        return B, 0.0
    if m <= d:
        lam, U = np.linalg.eigh(Z @ Z.T)
    else:
        lam, U = np.linalg.eigh(Z.T @ Z)
    lam, U = lam[::-1], U[:, ::-1]
    delta = max(float(lam[ell]), 0.0) if len(lam) > ell else 0.0
    keep = min(ell, len(lam))
    lam_k = lam[:keep]
    positive = lam_k > 0
    if m <= d:
        factor = np.sqrt(np.clip(1.0 - delta / np.where(positive, lam_k, 1.0), 0.0, None)) * positive
        B[:keep] = (U[:, :keep] * factor).T @ Z
    else:
        B[:keep] = np.sqrt(np.clip(lam_k - delta, 0.0, None))[:, None] * U[:, :keep].T
    return B, delta


def fd_update(sketch: np.ndarray, rows: np.ndarray, chunk_rows: int) -> tuple[np.ndarray, float]:
    """Fold ``rows`` into a Frequent Directions ``sketch``, ``chunk_rows`` at a time.

    Returns the new sketch (same shape) and the sum of the ``delta`` of each
    shrink: for every unit vector ``x``, ``0 <= |A x|^2 - |B x|^2 <= total delta``
    where ``A`` stacks the rows the old sketch summarised and ``rows``.
    """
    ell = len(sketch)
    total = 0.0
    step = max(1, int(chunk_rows))
    for start in range(0, len(rows), step):
        sketch, delta = fd_shrink(np.vstack([sketch, rows[start : start + step]]), ell)
        total += delta
    return sketch, total


class single_blas_thread:
    """Context manager: BLAS on one thread while tasks run on a pool of threads.

    Dask's threaded scheduler runs one task per core; each BLAS call (``X.T @ X``)
    would start a BLAS thread per core too, and the oversubscribed, spin-waiting
    threads made a 512-feature PCA fit about 3x slower on 2 cores. Off the main
    thread (pool workers), the limit is set when the first task enters and the
    original limits are restored when the last one leaves (reference-counted, so
    concurrent tasks do not undo each other). On the main thread (in-memory fits)
    BLAS keeps all its threads, and Dask's worker processes already run BLAS on
    one thread. Needs ``threadpoolctl`` (a scikit-learn dependency); a no-op without it.

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
                cls._limiter = controller.limit(limits=1, user_api="blas")
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
                cls._limiter.restore_original_limits()
                cls._limiter = None


# ---- clustering ---------------------------------------------------------------------
def row_norms_sq(X: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of each row."""
    return np.einsum("ij,ij->i", X, X)


def nearest_centers(
    X: np.ndarray,
    C: np.ndarray,
    *,
    shift: np.ndarray | None = None,
    dtype: type = np.float64,
    block_bytes: int = 1 << 22,
    work: dict | None = None,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Index of, and squared distance to, the nearest row of ``C`` for each row of ``X``.

    Distances come from one GEMM per block of rows on augmented matrices,
    ``[X - shift, 1] @ [-2 (C - shift)^T ; |C - shift|^2]``, so the ``argmin`` needs
    no further pass over the ``rows x k`` block. ``dtype=np.float32`` doubles the
    speed; ``shift`` (a point near the data, e.g. its mean) keeps float32's digits
    for the distances when the data's mean is large next to its spread. Temporary
    memory is bounded by ``block_bytes`` (the distance block), not by ``len(X)``;
    pass the same ``work`` dict to repeated calls to reuse the buffers. With
    ``groups=g``, ``C`` stacks ``g`` sets of centres of equal size and each row gets
    its nearest centre within each set (one GEMM for all of them).

    Returns
    -------
    labels : ndarray of intp, shape (n,), or (n, g) of indices within each set
    sq_dist : ndarray of float64, same shape, clipped at 0
    """
    n, d = X.shape
    k = len(C)
    dtype = np.dtype(dtype)
    shift = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64)
    Cs = np.asarray(C, dtype=np.float64) - shift
    C_aug = np.empty((d + 1, k), dtype=dtype)
    C_aug[:d] = -2.0 * Cs.T
    C_aug[d] = row_norms_sq(Cs)
    rows = int(min(max(n, 1), max(256, block_bytes // max(1, k * dtype.itemsize))))
    work = {} if work is None else work
    key = (rows, d, k, dtype.str)
    if work.get("key") != key:
        work.clear()
        work.update(key=key, Xa=np.empty((rows, d + 1), dtype=dtype), G=np.empty((rows, k), dtype=dtype))
    Xa, G = work["Xa"], work["G"]
    Xa[:, d] = 1.0
    shape = (n,) if groups == 1 else (n, groups)
    labels = np.empty(shape, dtype=np.intp)
    sq_dist = np.empty(shape, dtype=np.float64)
    for s in range(0, n, rows):
        m = min(rows, n - s)
        xa, g = Xa[:m], G[:m]
        np.subtract(X[s : s + m], shift, out=xa[:, :d], casting="same_kind")
        np.matmul(xa, C_aug, out=g)
        x_sq = row_norms_sq(xa[:, :d])
        if groups == 1:
            lab = labels[s : s + m]
            np.argmin(g, axis=1, out=lab)
            sq_dist[s : s + m] = np.take_along_axis(g, lab[:, None], axis=1)[:, 0]
            sq_dist[s : s + m] += x_sq
        else:
            g3 = g.reshape(m, groups, k // groups)
            lab = g3.argmin(axis=2)
            labels[s : s + m] = lab
            sq_dist[s : s + m] = np.take_along_axis(g3, lab[:, :, None], axis=2)[:, :, 0]
            sq_dist[s : s + m] += x_sq[:, None]
    np.maximum(sq_dist, 0.0, out=sq_dist)
    return labels, sq_dist


#: ``nearest_centers_packed`` handles up to this many centres (7 index bits); above it the
#: packing's extra passes over the distance block cost more than ``argmin`` saves
PACKED_MAX_CENTERS = 100


def nearest_centers_packed(
    X: np.ndarray, C: np.ndarray, *, shift: np.ndarray, work: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest of at most ``PACKED_MAX_CENTERS`` centres, 2x faster than :func:`nearest_centers` in float32.

    ``np.argmin`` along a row of a few dozen distances costs about 60 ns per row
    whatever the row's length; a minimum over the other axis is vectorised across
    rows. So the distances are computed transposed (``k x rows``, one float32 GEMM
    on ``[X - shift, 1, |X - shift|^2]``), the centre's index is written into the
    low ``ceil(log2 k)`` mantissa bits of each distance, and one integer minimum over
    the centres gives both the index and the distance. Non-negative floats order like
    their bit patterns, so the winner is the nearest centre except between centres
    whose distances agree to ``2^-(23 - bits)`` relatively (ties at float32
    precision); the returned squared distance is truncated by as much (at most
    ``1.5e-5`` relatively for 100 centres). For the assignment and cost estimate
    of streaming k-means, not for exact inertia.

    Returns
    -------
    labels : ndarray of intp (n,)
    sq_dist : ndarray of float64 (n,), clipped at 0
    """
    n, d = X.shape
    k = len(C)
    if not 1 <= k <= PACKED_MAX_CENTERS:
        raise ValueError(f"nearest_centers_packed handles 1 to {PACKED_MAX_CENTERS} centres, got {k}")
    low = np.int32((1 << max(1, (k - 1).bit_length())) - 1)
    shift = np.asarray(shift, dtype=np.float64)
    Cs = np.asarray(C, dtype=np.float64) - shift
    A = np.empty((k, d + 2), dtype=np.float32)
    A[:, :d] = -2.0 * Cs
    A[:, d] = row_norms_sq(Cs)
    A[:, d + 1] = 1.0
    cols = int(min(max(n, 1), max(256, (1 << 21) // (4 * k))))
    work = {} if work is None else work
    key = ("packed", cols, d, k)
    if work.get("key") != key:
        work.clear()
        B = np.empty((d + 2, cols), dtype=np.float32)
        B[d] = 1.0
        work.update(key=key, B=B, G=np.empty((k, cols), dtype=np.float32),
                    index=np.arange(k, dtype=np.int32)[:, None])
    B, G, index = work["B"], work["G"], work["index"]
    labels = np.empty(n, dtype=np.intp)
    sq_dist = np.empty(n, dtype=np.float32)
    for s in range(0, n, cols):
        m = min(cols, n - s)
        b, g = B[:, :m], G[:, :m]
        np.subtract(X[s : s + m].T, shift[:, None], out=b[:d], casting="same_kind")
        np.einsum("ij,ij->j", b[:d], b[:d], out=b[d + 1])
        np.matmul(A, b, out=g)
        bits = g.view(np.int32)
        np.bitwise_and(bits, ~low, out=bits)
        np.bitwise_or(bits, index, out=bits)
        best = bits.min(axis=0)
        labels[s : s + m] = best & low
        # a tiny negative distance (rounding, a row on its centre) is negative as an int
        # too, so it still wins; it is clipped to 0 below
        sq_dist[s : s + m] = (best & ~low).view(np.float32)
    return labels, np.maximum(sq_dist, 0.0).astype(np.float64)


def cluster_sums(labels: np.ndarray, X: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-cluster (weighted) sums of the rows of ``X``: a ``k x d`` float64 array.

    One flat ``bincount`` (no per-row Python loop, no ``k x n`` one-hot matrix), or
    one per column for a column-major ``X``.
    """
    n, d = X.shape
    vals = X if weights is None else X * weights[:, None]
    if vals.flags.f_contiguous and not vals.flags.c_contiguous:
        # column-major (what pandas' to_numpy gives): one bincount per contiguous column
        # is twice as fast as raveling (copying) the batch into row order
        out = np.empty((k, d))
        for j in range(d):
            out[:, j] = np.bincount(labels, weights=vals[:, j], minlength=k)
        return out
    idx = (labels[:, None] * d + np.arange(d)).ravel()
    return np.bincount(idx, weights=vals.ravel(), minlength=k * d).reshape(k, d)


def weighted_kmeans_pp(
    X: np.ndarray,
    weights: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    n_local_trials: int | None = None,
) -> np.ndarray:
    """Indices of ``k`` seeds chosen from the weighted points ``X`` by k-means++.

    A point is drawn with probability proportional to ``weight * D(x)^2`` (its
    squared distance to the nearest seed so far). With ``n_local_trials > 1`` each
    step draws that many candidates and keeps the one that lowers the weighted
    potential most (greedy k-means++; default ``2 + log(k)`` as in scikit-learn).
    When fewer than ``k`` distinct points exist, the rest are filled with unused
    indices (duplicates of chosen points).
    """
    n = len(X)
    if k > n:
        raise ValueError(f"cannot choose {k} seeds from {n} points")
    w = np.asarray(weights, dtype=np.float64)
    trials = max(1, int(2 + np.log(k)) if n_local_trials is None else int(n_local_trials))
    X_sq = row_norms_sq(X)
    cum = np.cumsum(w)
    first = int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), n - 1))
    chosen = [first]
    closest = row_norms_sq(X - X[first])
    for _ in range(1, k):
        wd = w * closest
        cum = np.cumsum(wd)
        pot = cum[-1]
        if not pot > 0:
            break
        cand = np.minimum(np.searchsorted(cum, rng.random(trials) * pot, side="right"), n - 1)
        Cc = X[cand]
        d = X @ Cc.T
        d *= -2.0
        d += X_sq[:, None]
        d += X_sq[cand][None, :]
        np.maximum(d, 0.0, out=d)
        np.minimum(d, closest[:, None], out=d)
        best = int(np.argmin(w @ d)) if trials > 1 else 0
        closest = d[:, best].copy()
        chosen.append(int(cand[best]))
    if len(chosen) < k:  # fewer distinct points than k
        rest = np.setdiff1d(np.arange(n), chosen)[: k - len(chosen)]
        chosen.extend(int(i) for i in rest)
    return np.asarray(chosen, dtype=np.intp)


def d2_sample_rounds(
    X: np.ndarray,
    weights: np.ndarray | None,
    k: int,
    rng: np.random.Generator,
    *,
    existing: np.ndarray | None = None,
    rounds: int = 16,
    dtype: type = np.float64,
) -> np.ndarray:
    """Indices of up to ``k`` rows of ``X`` drawn by (weighted) D^2 sampling in rounds.

    k-means++ draws one seed at a time; this draws ``ceil(remaining / rounds left)``
    seeds per round, without replacement, with probability proportional to
    ``weight * D(x)^2`` (distance to the nearest seed or ``existing`` centre), then
    updates the distances with one GEMM (the k-means|| idea with a fixed budget of
    ``k``). A few dozen numpy calls instead of ``k`` Python iterations, at nearly
    k-means++'s coverage. Stops early when every point coincides with a seed.
    """
    n = len(X)
    k = min(int(k), n)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    if existing is not None and len(existing):
        _, closest = nearest_centers(X, existing, dtype=dtype)
    else:
        first = int(min(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"), n - 1))
        chosen[first] = True
        closest = row_norms_sq(X - X[first])
    picked = int(chosen.sum())
    rounds = max(1, int(rounds))
    x_sq = row_norms_sq(X)
    for r in range(rounds):
        want = -(-(k - picked) // (rounds - r))
        if want <= 0:
            break
        p = w * closest
        p[chosen] = 0.0
        ok = np.flatnonzero(p > 0)
        if not len(ok):
            break
        # Efraimidis-Spirakis: the `want` smallest Exp(1) / p are a weighted sample without replacement
        keys = rng.exponential(size=len(ok)) / p[ok]
        take = ok[np.argpartition(keys, want - 1)[:want]] if want < len(ok) else ok
        chosen[take] = True
        picked += len(take)
        np.minimum(closest, _min_sq_dist_to_few(X, X[take], x_sq), out=closest)
    return np.flatnonzero(chosen)


def _min_sq_dist_to_few(X: np.ndarray, C: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """Squared distance of each row of ``X`` to the nearest of a few centres ``C``.

    Computed as a ``len(C) x n`` block reduced over its first axis: with few
    centres, that is much faster than an ``argmin`` along short rows.
    """
    D = C @ X.T
    D *= -2.0
    D += row_norms_sq(C)[:, None]
    out = D.min(axis=0)
    out += x_sq
    np.maximum(out, 0.0, out=out)
    return out


def weighted_lloyd(
    X: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Weighted Lloyd iterations on a small weighted point set, from ``centers``.

    Stops when the assignment no longer changes or when the total squared move of
    the centres falls below ``tol`` times the points' mean (weighted) per-feature
    variance, as scikit-learn does. An empty cluster is moved to the point with the
    largest weighted squared distance to its centre. The returned centres are the
    weighted means of the returned assignment (the weighted centroid condition
    holds exactly), so the cost is that of the returned pair.

    Returns
    -------
    centers : ndarray (k, d)
    labels : ndarray of intp (n,)
    cost : float
        ``sum(weights * squared distance to the assigned centre)``.
    n_iter : int
        Iterations run.
    """
    w = np.asarray(weights, dtype=np.float64)
    C = np.array(centers, dtype=np.float64, copy=True)
    wsum = w.sum()
    mean = (w @ X) / wsum
    tol_abs = tol * float(w @ row_norms_sq(X - mean)) / wsum / X.shape[1]
    labels = None
    n_iter = 0
    while n_iter < max(1, int(max_iter)):
        n_iter += 1
        new_labels, d2 = nearest_centers(X, C)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        C_new = _weighted_means(X, w, labels, C)
        _relocate_empty(X, w, labels, d2, C_new)
        move = float(((C_new - C) ** 2).sum())
        C = C_new
        if move <= tol_abs:
            break
    labels, _ = nearest_centers(X, C)
    C = _weighted_means(X, w, labels, C)
    d2 = row_norms_sq(X - C[labels])
    return C, labels, float(w @ d2), n_iter


def _weighted_means(X: np.ndarray, w: np.ndarray, labels: np.ndarray, C: np.ndarray) -> np.ndarray:
    k = len(C)
    W = np.bincount(labels, weights=w, minlength=k)
    S = cluster_sums(labels, X, k, w)
    out = C.copy()
    nz = W > 0
    out[nz] = S[nz] / W[nz, None]
    return out


def _relocate_empty(X: np.ndarray, w: np.ndarray, labels: np.ndarray, d2: np.ndarray, C: np.ndarray) -> None:
    """Move centres without points onto the points farthest (weighted) from their centre."""
    k = len(C)
    W = np.bincount(labels, weights=w, minlength=k)
    empty = np.flatnonzero(W <= 0)
    if not len(empty):
        return
    far = np.argsort(-(w * d2), kind="stable")[: len(empty)]
    C[empty[: len(far)]] = X[far]


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
        L = np.logaddexp(0.0, s) - t * s if value else None
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
) -> np.ndarray:
    """One Adam step, in place on ``param``, ``m`` and ``v``; ``t`` counts steps from 1.

    ``lr`` broadcasts against ``param`` (one learning rate per packed model).
    Returns the per-coordinate step size applied to the first moment, which a
    proximal L1 step scales its threshold by.

    Examples
    --------
    >>> w, m, v = np.array([1.0, -1.0]), np.zeros(2), np.zeros(2)
    >>> _ = adam_step(w, np.array([0.5, -2.0]), m, v, t=1, lr=0.1)
    >>> w  # the first step moves every coordinate by about lr, whatever the gradient's size
    array([ 0.9, -0.9])
    """
    m *= beta_1
    m += (1.0 - beta_1) * grad
    v *= beta_2
    v += (1.0 - beta_2) * (grad * grad)
    step = lr / (1.0 - beta_1**t) / (np.sqrt(v / (1.0 - beta_2**t)) + epsilon)
    param -= step * m
    return step


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
    X = np.add(X, 0.0, dtype=np.float64)
    d = X.shape[1]
    seed_mix = _mix64(np.array([seed], dtype=np.uint64) * _GOLDEN + _GOLDEN)
    salt = _mix64(np.arange(1, d + 1, dtype=np.uint64) * _GOLDEN ^ seed_mix) | np.uint64(1)
    return _mix64((X.view(np.uint64) @ salt) ^ seed_mix)  # integer matmul: exact, wrapping


def hash_unit(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """:func:`row_hash` as floats uniform in [0, 1): ``hash_unit(X) < f`` keeps a fraction ``f``.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(100_000, 3))
    >>> round(float(np.mean(hash_unit(X, seed=1) < 0.1)), 2)
    0.1
    """
    return (row_hash(X, seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53
