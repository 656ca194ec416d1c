"""k-means numerics: nearest centres by one GEMM per block, cluster sums, seeding, weighted Lloyd.

Pure functions on numpy arrays, used by the streaming state (:mod:`.state`) for its
per-mini-batch assignment and by every reduction of a weighted core set.
"""

from __future__ import annotations

import numpy as np

# scipy.sparse's compiled CSC x dense-block product, without building a sparse matrix
# object (its construction checks cost as much as the product at mini-batch size)
from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs


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
            np.add(g[np.arange(m), lab], x_sq, out=sq_dist[s : s + m])
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
#: the packed assignment's float32 distance block is at most this large (rows per block = this / 4k)
PACKED_BLOCK_BYTES = 1 << 21


def nearest_centers_packed(
    X: np.ndarray, C: np.ndarray, *, shift: np.ndarray, work: dict | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
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
    of streaming k-means, not for exact inertia. ``out``: arrays of ``n`` labels
    (intp) and squared distances (float64) to write into.

    Returns
    -------
    labels : ndarray of intp (n,)
    sq_dist : ndarray of float64 (n,), clipped at 0
    """
    n, d = X.shape
    k = len(C)
    if not 1 <= k <= PACKED_MAX_CENTERS:
        raise ValueError(f"nearest_centers_packed handles 1 to {PACKED_MAX_CENTERS} centres, got {k}")
    shift = np.asarray(shift, dtype=np.float64)
    cols = int(min(max(n, 1), max(256, PACKED_BLOCK_BYTES // (4 * k))))
    work = {} if work is None else work
    key = ("packed", cols, d, k)
    if work.get("key") != key:
        # buffers, the constant rows and columns and the index column are made once per
        # partition: a mini-batch step is a few dozen numpy calls, each of which counts
        work.clear()
        A = np.empty((k, d + 2), dtype=np.float32)
        A[:, d + 1] = 1.0
        B = np.empty((d + 2, cols), dtype=np.float32)
        B[d] = 1.0
        work.update(key=key, A=A, Cs=np.empty((k, d)), B=B, G=np.empty((k, cols), dtype=np.float32),
                    best=np.empty(cols, dtype=np.int32), index=np.arange(k, dtype=np.int32)[:, None],
                    low=np.int32((1 << max(1, (k - 1).bit_length())) - 1))
    A, Cs, B, G, best, index, low = (work[name] for name in ("A", "Cs", "B", "G", "best", "index", "low"))
    np.subtract(C, shift, out=Cs)
    np.multiply(Cs, -2.0, out=A[:, :d], casting="same_kind")
    np.einsum("ij,ij->i", Cs, Cs, out=A[:, d], casting="same_kind")
    if out is None:
        labels, sq_dist = np.empty(n, dtype=np.intp), np.empty(n)
    else:
        labels, sq_dist = out
    for s in range(0, n, cols):
        m = min(cols, n - s)
        b, g = B[:, :m], G[:, :m]
        np.subtract(X[s : s + m].T, shift[:, None], out=b[:d], casting="same_kind")
        np.einsum("ij,ij->j", b[:d], b[:d], out=b[d + 1])
        np.matmul(A, b, out=g)
        bits = g.view(np.int32)
        np.bitwise_and(bits, ~low, out=bits)
        np.bitwise_or(bits, index, out=bits)
        top = np.minimum.reduce(bits, axis=0, out=best[:m])
        np.bitwise_and(top, low, out=labels[s : s + m], casting="unsafe")
        # a tiny negative distance (rounding, a row on its centre) is negative as an int
        # too, so it still wins; it is clipped to 0
        np.bitwise_and(top, ~low, out=top)
        np.maximum(top.view(np.float32), 0.0, out=sq_dist[s : s + m])
    return labels, sq_dist


def cluster_sums(labels: np.ndarray, X: np.ndarray, k: int, weights: np.ndarray | None = None, *,
                 work: dict | None = None) -> np.ndarray:
    """Per-cluster (weighted) sums of the rows of ``X``: a ``k x d`` float64 array.

    The product of the ``k x n`` one-hot matrix of ``labels`` (in CSC form, which
    needs no sorting: one entry per column, the weight in row ``labels[i]``) with
    ``X``: one pass over the rows for all columns, in compiled code that releases
    the GIL. One ``np.bincount`` per column costs 2-4x as much single-threaded and
    holds the GIL, so two threads updating partitions could not overlap it. Pass
    the same ``work`` dict to repeated calls (one per mini-batch) to reuse the
    row-major copy of ``X`` and the one-hot matrix's constant arrays.

    Examples
    --------
    >>> cluster_sums(np.array([0, 1, 0]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), 2)
    array([[6., 8.],
           [3., 4.]])
    """
    n, d = X.shape
    labels = _checked_labels(labels, n, k)
    work = {} if work is None else work
    if X.dtype == np.float64 and X.flags.c_contiguous:
        rows = X
        _one_hot_constants(work, n, d)
    else:  # row-major: one row is one entry's vector
        rows = _one_hot_constants(work, n, d)[:n]
        np.copyto(rows, X, casting="unsafe")
    return _one_hot_product(labels, rows, k, weights, work)


def cluster_stats(labels: np.ndarray, X: np.ndarray, sq_dist: np.ndarray | None, k: int,
                  weights: np.ndarray | None = None, *, work: dict | None = None,
                  check: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cluster (weighted) sums of the rows, row counts and sums of ``sq_dist``, in one pass.

    :func:`cluster_sums` of the rows with two more columns, ones and ``sq_dist``:
    one compiled call that releases the GIL instead of that call and two
    ``np.bincount`` (which hold it), with the same sums in the same order
    (``bincount``'s). ``sq_dist=None``: the distances are already in the
    buffer's last column (``stats_rows(work, n, d)[:, d + 1]``, where an
    assignment can write them). ``check=False`` skips the range check of
    ``labels``, for labels an assignment just computed. Returns ``(sums (k, d),
    counts (k,), dist_sums (k,))``, float64.

    Examples
    --------
    >>> s, c, e = cluster_stats(np.array([0, 1, 0]), np.array([[1.0], [3.0], [5.0]]), np.array([1.0, 0.0, 2.0]), 2)
    >>> s.ravel().tolist(), c.tolist(), e.tolist()
    ([6.0, 3.0], [2.0, 1.0], [3.0, 0.0])
    """
    n, d = X.shape
    labels = _checked_labels(labels, n, k) if check else np.asarray(labels, dtype=np.int64)
    work = {} if work is None else work
    rows = stats_rows(work, n, d)
    np.copyto(rows[:, :d], X, casting="unsafe")
    if sq_dist is not None:
        rows[:, d + 1] = sq_dist
    out = _one_hot_product(labels, rows, k, weights, work)
    return out[:, :d], out[:, d], out[:, d + 1]


def stats_rows(work: dict, n: int, d: int) -> np.ndarray:
    """:func:`cluster_stats`' row buffer for ``n`` rows of ``d`` features: ``n x (d + 2)``, column ``d`` ones."""
    if len(work.get("indptr", ())) <= n or work["rows"].shape[1] != d + 2:
        _one_hot_constants(work, n, d + 2)
        work["rows"][:, d] = 1.0
    return work["rows"][:n]


def _checked_labels(labels: np.ndarray, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if n and not (0 <= labels.min() and labels.max() < k):  # compiled code does not check
        raise ValueError(f"labels must lie in [0, {k}), got {labels.min()}..{labels.max()}")
    return labels


def _one_hot_constants(work: dict, n: int, width: int) -> np.ndarray:
    """The one-hot matrix's column pointers and unit weights for ``n`` rows, and a row buffer ``n x width``."""
    if len(work.get("indptr", ())) <= n or work["rows"].shape[1] != width:
        # made once for the largest n
        work.update(indptr=np.arange(n + 1, dtype=np.int64), ones=np.ones(n), rows=np.empty((n, width)))
    return work["rows"]


def _one_hot_product(labels: np.ndarray, rows: np.ndarray, k: int, weights: np.ndarray | None,
                     work: dict) -> np.ndarray:
    n, d = rows.shape
    data = work["ones"][:n] if weights is None else np.asarray(weights, dtype=np.float64)
    out = np.zeros((k, d))
    _csc_matvecs(k, n, d, work["indptr"][: n + 1], labels, data, rows.ravel(), out.ravel())
    return out


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
    seeds per round with probability proportional to ``weight * D(x)^2`` (distance
    to the nearest seed or ``existing`` centre), then updates the distances with one
    GEMM (the k-means|| idea with a fixed budget of ``k``). A few dozen numpy calls
    instead of ``k`` Python iterations, at nearly k-means++'s coverage. A round's
    draws are independent (one ``cumsum`` and ``searchsorted``, no random key per
    row); a row drawn twice counts once and later rounds draw the shortfall, in
    extra rounds if need be. Stops early when every point coincides with a seed.
    """
    n = len(X)
    k = min(int(k), n)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    if existing is not None and len(existing):
        _, closest = nearest_centers(X, existing, dtype=dtype)
    else:
        first = int(rng.integers(n)) if w is None else int(
            min(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"), n - 1))
        chosen[first] = True
        closest = row_norms_sq(X - X[first])
        closest[first] = 0.0
    picked = int(chosen.sum())
    rounds = max(1, int(rounds))
    x_sq = row_norms_sq(X)
    r = 0
    while picked < k:
        want = -(-(k - picked) // max(1, rounds - r))
        r += 1
        cum = np.cumsum(closest if w is None else w * closest)
        total = cum[-1]
        if not total > 0:
            break
        # side="right": a row of zero probability (its cum equals its predecessor's) is never hit
        take = np.unique(np.minimum(np.searchsorted(cum, rng.random(want) * total, side="right"), n - 1))
        take = take[~chosen[take]]
        chosen[take] = True
        picked += len(take)
        np.minimum(closest, _min_sq_dist_to_few(X, X[take], x_sq), out=closest)
        closest[take] = 0.0  # a seed's own distance may round to a tiny positive value
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


#: :func:`weighted_ward` keeps an ``n x n`` cost matrix: above this many points it is not run
WARD_MAX_POINTS = 2048


def weighted_ward(X: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Centres of Ward's agglomerative clustering of the weighted points ``X`` into ``k`` clusters.

    Starting from every point as a cluster, repeatedly merge the two clusters
    whose union raises the weighted sum of squares least, ``w_a w_b / (w_a + w_b)
    |c_a - c_b|^2``, until ``k`` remain; returns their weighted means. A seeding
    for weighted Lloyd that is blind to the luck of a draw: where ``k`` is below
    the number of natural groups, k-means++ restarts keep landing in pairings of
    the groups that Lloyd cannot undo (on 10 Gaussian blobs with ``k = 6``, the best
    of 100 restarts on a 50-centre core set was 2% above the best pairing, which
    Ward finds). Each step updates only the merged row of an ``n x n`` cost matrix
    and the nearest-neighbour entries that pointed at the pair: ``O(n^2)`` memory,
    about ``O(n^2)`` time. scipy's ``linkage`` does not take weights.

    Examples
    --------
    >>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
    >>> weighted_ward(X, np.array([1.0, 1.0, 1.0, 3.0]), 2)
    array([[ 0.5 ],
           [10.75]])
    """
    n = len(X)
    C = np.array(X, dtype=np.float64, copy=True)
    if k >= n:
        return C
    W = np.array(weights, dtype=np.float64, copy=True)
    sq = row_norms_sq(C)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (C @ C.T), 0.0)
    cost = d2 * (W[:, None] * W[None, :] / (W[:, None] + W[None, :]))
    np.fill_diagonal(cost, np.inf)
    alive = np.ones(n, dtype=bool)
    nn = cost.argmin(axis=1)
    nn_cost = cost[np.arange(n), nn]
    for _ in range(n - k):
        a = int(np.argmin(nn_cost))
        b = int(nn[a])
        w_ab = W[a] + W[b]
        C[a] = (W[a] * C[a] + W[b] * C[b]) / w_ab
        W[a] = w_ab
        alive[b] = False
        nn_cost[b] = np.inf
        cost[b, :] = np.inf
        cost[:, b] = np.inf
        row = W[a] * W / (W[a] + W) * row_norms_sq(C - C[a])
        row[~alive] = np.inf
        row[a] = np.inf
        cost[a, :] = row
        cost[:, a] = row
        # rows whose nearest cluster was a or b look again; the others only compare with the new a
        stale = np.flatnonzero(alive & ((nn == a) | (nn == b)))
        nn[stale] = cost[stale].argmin(axis=1)
        nn_cost[stale] = cost[stale, nn[stale]]
        closer = alive & (row < nn_cost)
        nn[closer] = a
        nn_cost[closer] = row[closer]
        nn[a] = int(np.argmin(row))
        nn_cost[a] = row[nn[a]]
    return C[alive]


def weighted_lloyd(
    X: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    relocate_empty: bool = True,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Weighted Lloyd iterations on a small weighted point set, from ``centers``.

    Stops when the assignment no longer changes or when the total squared move of
    the centres falls below ``tol`` times the points' mean (weighted) per-feature
    variance, as scikit-learn does. An empty cluster is moved to the point with the
    largest weighted squared distance to its centre (or, with ``relocate_empty=False``,
    keeps its centre: for points that sample the data, where a centre without
    points may stand for rows the sample missed). The returned centres are the
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
        if relocate_empty:
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


def cell_lloyd(
    P: np.ndarray,
    w: np.ndarray,
    inner: np.ndarray,
    rows: np.ndarray,
    v: np.ndarray,
    cell: np.ndarray,
    centers: np.ndarray,
    *,
    max_iter: int = 10,
    tol: float = 1e-4,
) -> tuple[np.ndarray, float, int]:
    """Weighted Lloyd on cells: weighted centroids ``P`` whose rows are known by a few members.

    Cell ``i`` stands for weight ``w[i]`` at mean ``P[i]`` with ``inner[i]`` the
    weighted sum of squared distances of its rows to ``P[i]``; ``rows`` (weights
    ``v``) are members of the cells ``cell``, and a cell's members must have its
    weight and mean (as :meth:`KMeansState.stratified_rows` makes them). Each
    iteration is a Lloyd step on all members, but a cell whose members all lie
    nearer to one centre than to any other (by the triangle inequality: the gap
    between its two nearest centres' distances exceeds twice its radius) moves as
    its centroid, the same sums for far less work: only cells cut by a boundary
    between clusters look at their rows. A centre without rows keeps its place.

    Returns ``(centers, cost, n_iter)``, the cost that of the returned centres'
    assignment of cells and members (which are also their weighted means' cells).
    """
    k, m = len(centers), len(P)
    C = np.array(centers, dtype=np.float64, copy=True)
    dev_sq = row_norms_sq(rows - P[cell])
    radius = np.zeros(m)
    np.maximum.at(radius, cell, np.sqrt(dev_sq))
    has_members = np.bincount(cell, minlength=m) > 0
    total = w.sum()
    mean = (w @ P) / total
    tol_abs = tol * float(w @ row_norms_sq(P - mean) + inner.sum()) / total / P.shape[1]

    def assign(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        d2 = np.maximum(row_norms_sq(P)[:, None] - 2.0 * P @ C.T + row_norms_sq(C)[None, :], 0.0)
        two = np.partition(d2, 1, axis=1)[:, :2] if k > 1 else np.concatenate([d2, np.full((m, 1), np.inf)], 1)
        cut = has_members & (np.sqrt(two[:, 1]) - np.sqrt(two[:, 0]) <= 2.0 * radius * (1 + 1e-9) + 1e-12)
        member = cut[cell]
        lab, d2r = nearest_centers(rows[member], C)
        return d2.argmin(axis=1), two[:, 0], cut, member, (lab, d2r)

    n_iter = 0
    while n_iter < max(1, int(max_iter)):
        n_iter += 1
        lab_p, _, cut, member, (lab_r, _) = assign(C)
        keep = ~cut
        W = np.bincount(lab_p[keep], weights=w[keep], minlength=k) + np.bincount(lab_r, weights=v[member],
                                                                                  minlength=k)
        S = cluster_sums(lab_p[keep], P[keep], k, w[keep]) + cluster_sums(lab_r, rows[member], k, v[member])
        C_new = C.copy()
        nz = W > 0
        C_new[nz] = S[nz] / W[nz, None]
        move = float(((C_new - C) ** 2).sum())
        C = C_new
        if move <= tol_abs:
            break
    _, d1, cut, member, (_, d2r) = assign(C)
    cost = float(w[~cut] @ d1[~cut] + inner[~cut].sum() + v[member] @ d2r)
    return C, cost, n_iter
