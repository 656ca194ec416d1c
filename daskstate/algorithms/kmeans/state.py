"""The streaming k-means state (a weighted core set plus a row sample) and the exact Lloyd-pass state.

See the package docstring (:mod:`daskstate.algorithms.kmeans`) for the design.
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any

import numpy as np

from daskstate.algorithms.kmeans.numerics import (
    PACKED_MAX_CENTERS,
    WARD_MAX_POINTS,
    cell_lloyd,
    cluster_stats,
    cluster_sums,
    d2_sample_rounds,
    nearest_centers,
    nearest_centers_packed,
    row_norms_sq,
    stats_rows,
    weighted_kmeans_pp,
    weighted_lloyd,
    weighted_ward,
)
from daskstate.errors import StateError
from daskstate.numerics import mini_batches, single_blas_thread
from daskstate.state import Schema, State, register

#: weighted Lloyd iterations when a merge reduces the union of two core sets to K
MERGE_LLOYD_ITER = 10
#: rounds of D^2 sampling that seed the core set from the first mini-batch
SEED_ROUNDS = 4
#: Lloyd iterations on the seeding mini-batch when it is all of an update's rows
SEED_LLOYD_ITER = 3
#: a mini-batch whose rows are on average this many times farther (squared distance) from the
#: core set than the rows it summarises opens new centres: the data drifted (sorted rows)
DRIFT_COST_RATIO = 2.0
#: rounds of weighted D^2 sampling when a merge reduces the union (0: sequential k-means++)
MERGE_SEED_ROUNDS = 16
#: candidate models (best distinct reductions of the core set) scored on the data by the
#: first refining pass of ``epochs > 1`` (at most ``K / (2 k)``, so the pass stays cheap)
REFINE_CANDIDATES = 4
#: distinct local optima of the core set's reduction that finalize polishes, keeping the best
#: by the polish's cost, while (sample rows) x k is at most ``FINALIZE_CANDIDATE_WORK`` (each
#: polish is a few Lloyd steps on the sample: with k = 100 and 20,000 rows, 0.1 s CPU, 12% of
#: a 2M-row fit, where k = 10 and 4,000 rows take 2 ms)
FINALIZE_CANDIDATES = 3
FINALIZE_CANDIDATE_WORK = 500_000
#: the most a cell's sampled rows are spread out about their mean to match the cell's spread
MAX_CELL_SCALE = 2.0
#: the core set's cells are strata of the rows when the sample's shares of the rows nearest each
#: centre differ from the cells' weights by at most this many times the sample's own noise
#: (total variation distance; see :meth:`KMeansState.strata`)
STRATA_MAX_NOISE = 6.0
#: the sample polishes finalize's centres when it holds at least this many rows per cluster
SAMPLE_ROWS_PER_CLUSTER = 50
#: Lloyd iterations of that polish when the sample is a strict sample of the rows
POLISH_MAX_ITER = 10
#: number of trials of finalize's local k-means when ``local_lloyd_num_trials="auto"``
AUTO_NUM_TRIALS = 10
#: on data the sample holds whole, ``"auto"`` runs more trials while they are this cheap in all
#: (rows x k x trials), at most ``SMALL_DATA_MAX_TRIALS``
SMALL_DATA_TRIAL_WORK = 20_000
SMALL_DATA_MAX_TRIALS = 100


_TINY = np.finfo(np.float64).tiny


def auto_extra_center_factor(k_max: int) -> int:
    """The ``extra_center_factor`` used for ``"auto"``: ``K = min(max(50, 5 k), max(200, 2 k))`` centres.

    That is ``ceil(K / k_max)`` clipped to ``[2, 20]``: 5 centres per cluster from
    ``k = 10`` (at least 50 centres in all) up to ``K = 200`` at ``k = 40``, then
    ``2 k``. The update's cost grows with ``K`` (a GEMM and an ``argmin`` over ``K``
    columns per row), while the final quality comes mostly from the reduction's
    seeding and the sample's polish: on 2M rows of 16-dimensional blobs with
    ``k = 10`` the one-pass SSE is the same for ``K = 50``, 100 and 200; with
    ``k = 100`` it is the same for ``K = 200`` and ``K = 2000``. Three centres per
    cluster were tried for speed (``K = 30`` at ``k = 10``: 18% less update time, the
    same SSE on those blobs) and dropped: with 20 clusters on 5 blobs in 8 partitions
    (``K = 60``) the SSE was 2.4% above scikit-learn's, 1-2% with five.
    """
    k = max(1, int(k_max))
    centres = min(max(50, 5 * k), max(200, 2 * k))
    return int(min(20, max(2, math.ceil(centres / k))))


def auto_sample_size(n_features: int, k_max: int) -> int:
    """The ``sample_size`` used for ``"auto"``: ``400 k_max`` rows, at most 20,000 rows or 4 MiB, at least 1,000.

    The polish's own noise costs about ``k / sample_size`` of the SSE, so the sample
    grows with ``k``: on 16-dimensional blobs with ``k = 100`` a 10,000-row sample gave
    0.9% above scikit-learn, 20,000 rows 0.6%. Small ``k`` needs fewer rows (the
    polish is rarely needed there, see :meth:`KMeansState.polish`), and a smaller
    state keeps the merge tree's memory small: up to ``split_every - 1`` states wait
    at each of its levels (18 states alive at once were counted with 200 partitions).
    """
    by_k = 400 * max(1, int(k_max))
    by_bytes = (1 << 22) // (8 * max(1, n_features))
    return int(max(1_000, min(20_000, by_bytes, by_k)))


def _seed(*parts: Any) -> np.random.Generator:
    """A generator seeded from hyperparameters and data content (never execution order)."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _array_hash(a: np.ndarray) -> str:
    """A short fingerprint of an array's values (to key what is known about a model)."""
    return f"{zlib.crc32(np.ascontiguousarray(a, dtype=np.float64).tobytes()):08x}-{np.shape(a)}"


def _content_hash(a: np.ndarray, max_bytes: int = 1 << 20) -> int:
    b = np.ascontiguousarray(a).view(np.uint8).ravel()
    return zlib.crc32(b[:max_bytes].tobytes()) ^ (len(a) * 0x9E3779B1 & 0xFFFFFFFF)


def _batch_hash(X: np.ndarray, rows: int = 128) -> int:
    """A content hash of a batch from its first and last ``rows`` rows and its length.

    Hashing all of a mini-batch copied it (a column-major slice is not contiguous) for
    as long as the rest of a partition's seeding took.
    """
    return _content_hash(np.concatenate([X[:rows], X[-rows:]])) ^ (len(X) * 0x85EBCA6B & 0xFFFFFFFF)


def _smallest_log_uniforms(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which rows hold the ``m`` smallest of ``n`` iid uniforms, and their logs, in O(m).

    Rather than drawing ``n`` uniforms and keeping the ``m`` smallest, draw those
    order statistics directly (Renyi's representation: ``-log(1 - U_(i))`` is a
    cumulative sum of ``E_j / (n - j + 1)`` with ``E_j`` standard exponential) and
    give them to a uniformly random set of ``m`` rows in random order: the same joint
    distribution of (rows, keys), for ``m / n`` of the random numbers. The rows come
    in increasing order (gathering them from a column-major batch is 4x faster).
    """
    m = min(int(m), int(n))
    if m == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0)
    spacings = rng.standard_exponential(m) / (n - np.arange(m))
    keys = np.log(-np.expm1(-np.cumsum(spacings)))  # log U_(i), accurate for tiny U
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=m, replace=False, shuffle=False)] = True
    rng.shuffle(keys)
    return np.flatnonzero(chosen), keys


# ----------------------------------------------------------------------------- the state
@register
class KMeansState(State):
    """Core set of at most ``K`` weighted centres (plus refined centres after ``epochs > 1``).

    Arrays
    ------
    shift : (d,)
        A point near the data (the first mini-batch's mean); distances are computed
        on ``X - shift`` so float32 arithmetic keeps its digits when the data's mean
        is large next to its spread.
    centers : (m, d), m <= K
        The core set's centres.
    weights : (m,)
        Rows each centre stands for (decayed with ``half_life_time_size``).
    spread : (m,)
        Sum of squared distances of those rows to the centre (the cost estimate).
    sample : (s, d), s <= sample_size + 1
        A priority sample of the rows (uniform; with decay, in proportion to the
        rows' weights), exactly mergeable and seeded like the rest, so it is
        reproducible. ``finalize`` polishes the core set's reduction with Lloyd
        iterations on it: the core set's cells are centroids, and where many of
        them make one cluster (large ``k``, or after merges of partitions' core
        sets) their k-means is not the data's.
    sample_key, sample_logw : (s,)
        Each sampled row's ``log(u / w)`` (smaller is better) and ``log(w)``.
    refined_centers : (k, d) or (0, d)
        Centres for ``n_clusters = k`` refined by exact Lloyd passes over the data
        (``epochs > 1``); dropped when new data is merged in, as is the exact
        inertia of a model (``extra_meta["inertia"]``, keyed by its centres).
    """

    algorithm = "kmeans"
    # every update multiplies cache-sized blocks, where BLAS threads cost more than they
    # bring; taken per task, the limit was switched back and forth between tasks, and on a
    # busy machine a threaded fit took 10x longer (2M rows, k = 10: 11 s against 0.85 s)
    blas_threads = 1
    blas_on_main_thread = True  # many small GEMMs: BLAS threads only slow them, wherever they run
    array_names = ("shift", "centers", "weights", "spread", "sample", "sample_key", "sample_logw",
                   "refined_centers")
    # sample weights multiply a row's count and cost in the core set and its priority in the sample
    accepts_weight = True

    def _init_arrays(self) -> None:
        d = self.n_features
        self.shift = np.zeros(d)
        self.centers = np.zeros((0, d))
        self.weights = np.zeros(0)
        self.spread = np.zeros(0)
        self.sample = np.zeros((0, d))
        self.sample_key = np.zeros(0)
        self.sample_logw = np.zeros(0)
        self.refined_centers = np.zeros((0, d))

    def _after_load(self) -> None:
        # a loaded file must keep the bounds documented above (issue 16: a re-signed file
        # with 2,550 centres where n_centers says 51 loaded and predicted differently)
        m, s = len(self.centers), len(self.sample)
        sizes = {"centers": (m, self.max_centers), "sample": (s, self.sample_size + 1),
                 "refined_centers": (len(self.refined_centers), int(self.params.get("k_max", 0)))}
        for name, (n, bound) in sizes.items():
            if n > bound:
                raise StateError(f"kmeans state array {name!r} has {n} rows; the hyperparameters allow {bound}")
        for name, n in (("weights", m), ("spread", m), ("sample_key", s), ("sample_logw", s)):
            if len(getattr(self, name)) != n:
                raise StateError(f"kmeans state array {name!r} has {len(getattr(self, name))} entries, not {n}")
        if not (np.isfinite(self.weights).all() and (self.weights >= 0).all()):
            raise StateError("kmeans state array 'weights' holds negative or non-finite values")

    @property
    def max_centers(self) -> int:
        return int(self.params["n_centers"])

    @property
    def n_centers(self) -> int:
        return len(self.centers)

    @property
    def estimated_cost(self) -> float:
        """Running estimate of the sum of squared distances of the rows to the core set."""
        return float(self.spread.sum())

    @property
    def half_life(self) -> float:
        return float(self.params.get("half_life_time_size", 0) or 0)

    def _decay(self, n_new: float) -> None:
        half_life = self.half_life
        if half_life > 0 and n_new > 0 and len(self.weights):
            f = 0.5 ** (n_new / half_life)
            self.weights = self.weights * f
            self.spread = self.spread * f

    # ---- the sample -------------------------------------------------------------------
    # Priority sampling (Duffield, Lund & Thorup): row r of weight w_r (1, or 2^(-age /
    # half_life) with decay) gets the priority w_r / u_r, u_r ~ U(0, 1); the state keeps
    # the sample_size + 1 highest (as keys log(u_r / w_r), smallest first). With tau the
    # lowest kept priority, each of the other rows stands for max(w_r, tau) rows: an
    # unbiased weighted sample of any size, exactly mergeable (keep the best of the
    # union), and a row's key and weight age together as newer rows arrive.
    @property
    def sample_size(self) -> int:
        return int(self.params.get("sample_size", 0) or 0)

    def _age_sample(self, n_new: int) -> None:
        if self.half_life > 0 and n_new:
            shift = n_new * math.log(2.0) / self.half_life
            self.sample_key = self.sample_key + shift
            self.sample_logw = self.sample_logw - shift

    def _sample_choice(self, n: int, rng: np.random.Generator,
                       weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Which of ``n`` new rows (of sample weights ``weight``) are offered to the sample.

        Returns their indices (increasing), keys and log-weights, or None without a
        sample. Ages the sample by the ``n`` rows; :meth:`_sample_offer` adds the rows.
        """
        size = self.sample_size
        if not size:
            return None
        self._age_sample(n)
        if self.half_life > 0 or weight is not None:
            key = np.log(rng.random(n) + 1e-300)
            logw = -(n - 1 - np.arange(n)) * (math.log(2.0) / self.half_life) if self.half_life > 0 else np.zeros(n)
            if weight is not None:
                logw += np.log(weight)
            key -= logw
            take = np.sort(np.argpartition(key, size)[: size + 1]) if n > size + 1 else np.arange(n)
            return take, key[take], logw[take]
        take, key = _smallest_log_uniforms(n, size + 1, rng)
        return take, key, np.zeros(len(take))

    def _sample_offer(self, rows: np.ndarray, key: np.ndarray, logw: np.ndarray) -> None:
        """Offer ``rows`` (with their keys and log-weights) to the sample; the best are kept."""
        if len(self.sample_key):
            key, rows, logw = (np.concatenate([self.sample_key, key]), np.concatenate([self.sample, rows]),
                               np.concatenate([self.sample_logw, logw]))
        self._keep_best(key, rows, logw)

    def _keep_best(self, key: np.ndarray, rows: np.ndarray, logw: np.ndarray) -> None:
        size = self.sample_size
        if len(key) > size + 1:
            keep = np.sort(np.argpartition(key, size)[: size + 1])
            key, rows, logw = key[keep], rows[keep], logw[keep]
        self.sample_key, self.sample, self.sample_logw = key, rows, logw

    @property
    def sample_is_complete(self) -> bool:
        """Whether the sample holds every row seen (small data)."""
        return 0 < len(self.sample_key) <= self.sample_size

    def sample_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled rows and the (decayed) number of rows each stands for."""
        if self.sample_is_complete:  # every row offered so far
            return self.sample, np.exp(self.sample_logw)
        last = int(np.argmax(self.sample_key))  # the threshold row
        keep = np.arange(len(self.sample_key)) != last
        return self.sample[keep], np.exp(np.maximum(self.sample_logw[keep], -self.sample_key[last]))

    # ---- update ---------------------------------------------------------------------
    def _update(self, X: np.ndarray, y: np.ndarray | None, context: Any = None,
                weight: np.ndarray | None = None) -> None:
        if weight is not None and not (weight > 0).all():  # a row of weight 0 is a row not seen
            X, weight = X[weight > 0], weight[weight > 0]
            if not len(X):
                return
        size = int(self.params["mini_batch_size"])
        content = _batch_hash(X)
        rng = _seed(self.params["seed"], self.n_rows, content)
        if not len(self.centers):
            self.shift = X[:size].mean(axis=0)
        # buffers reused by every mini-batch of the partition (assignment, sums, labels and distances)
        work: dict = {"assign": {}, "sums": {}, "labels": np.empty(min(size, len(X)), dtype=np.intp)}
        # A small batch has few mini-batches to move the seeds: a few Lloyd steps on the
        # first one place them (cheap at that size; big partitions do not need it).
        polish = len(X) <= 4 * size
        offer = self._sample_choice(len(X), _seed(self.params["seed"], self.n_rows, content, 1), weight)
        if offer is not None:
            take = offer[0]
            picked = np.empty((len(take), X.shape[1]), dtype=X.dtype)
            # where each mini-batch's sampled rows start and end in ``take``
            bounds = np.searchsorted(take, np.arange(0, len(X) + size, size)).tolist()
        for i, rows in enumerate(mini_batches(len(X), size)):
            batch = X[rows]
            self._update_batch(batch, rng, work, polish, None if weight is None else weight[rows])
            if offer is not None:
                # the sample's rows are copied while their mini-batch is in the cache: gathered
                # from the whole partition afterwards, they cost 3x as much (cache misses)
                lo, hi = bounds[i], bounds[i + 1]
                picked[lo:hi] = batch[take[lo:hi] - rows.start]
        if offer is not None:
            self._sample_offer(picked, offer[1], offer[2])

    def _update_batch(self, X: np.ndarray, rng: np.random.Generator, work: dict, polish: bool = False,
                      weight: np.ndarray | None = None) -> None:
        if self.n_centers < self.max_centers:
            self._grow(X, rng, polish, weight)
        sums, counts, dist_sum = self._assign_and_sum(X, work, weight)
        if self._drifted(counts, dist_sum):
            # rows far from every centre (sorted data: diamonds by price, 2.7x scikit-learn's SSE
            # when the centres seeded on the cheapest stones had to stretch over all of them): open
            # up to K centres on them by D^2 sampling, absorb the rows, then reduce to K as a merge does
            self._grow(X, rng, weight=weight, need=self.max_centers)
            sums, counts, dist_sum = self._assign_and_sum(X, work, weight)
        self._decay(len(X))
        # every centre moves to the running mean of its rows; no masks of the centres that got
        # rows (each a copy): a centre without rows has share 0 and a zero move
        w_new = self.weights + counts
        share = counts / np.maximum(w_new, _TINY)
        delta = sums / np.maximum(counts, _TINY)[:, None]
        delta -= self.centers
        delta[counts == 0] = 0.0
        self.centers += delta * share[:, None]
        # Chan: spread += (sum of d2 to the old centre) - n_b^2 / w_new * |mean_b - old|^2
        gain = dist_sum - counts * share * row_norms_sq(delta)
        self.spread += np.maximum(gain, 0.0)
        self.weights = w_new
        if self.n_centers > self.max_centers:
            C, self.weights, self.spread = reduce_core_set(self.centers - self.shift, self.weights, self.spread,
                                                           self.max_centers, rng, tol=self.params["local_lloyd_tol"])
            self.centers = C + self.shift

    def _assign_and_sum(self, X: np.ndarray, work: dict,
                        weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per centre: the (weighted) sums of its nearest rows (float64, exact), their number
        (summed weights) and their summed (weighted) squared distances to it."""
        n, d = X.shape
        m = len(self.centers)
        if m <= PACKED_MAX_CENTERS:
            # the distances go straight into the sums' buffer
            labels = work["labels"][:n]
            nearest_centers_packed(X, self.centers, shift=self.shift, work=work["assign"],
                                   out=(labels, stats_rows(work["sums"], n, d)[:, d + 1]))
            return cluster_stats(labels, X, None, m, weight, work=work["sums"], check=False)
        labels, d2 = nearest_centers(X, self.centers, shift=self.shift, dtype=np.float32, work=work["assign"])
        return cluster_stats(labels, X, d2, m, weight, work=work["sums"], check=False)

    def _drifted(self, counts: np.ndarray, dist_sum: np.ndarray) -> bool:
        """Whether a mini-batch's rows (``counts`` per centre, at summed squared distances ``dist_sum``)
        are ``DRIFT_COST_RATIO`` times farther on average than the rows the core set summarises."""
        seen, cost = self.weights.sum(), self.estimated_cost
        if not (seen > 0 and cost > 0):  # nothing summarised yet, or every row on its centre
            return False
        return bool(dist_sum.sum() > DRIFT_COST_RATIO * cost / seen * counts.sum())

    def _grow(self, X: np.ndarray, rng: np.random.Generator, polish: bool = False,
              weight: np.ndarray | None = None, need: int | None = None) -> None:
        """Add up to ``need`` (default ``K - m``) centres from this mini-batch (k-means++ continued,
        or at random)."""
        need = self.max_centers - self.n_centers if need is None else int(need)
        n = len(X)
        Xs = X - self.shift
        if self.params["init"] == "random" or need >= n:
            p = None if weight is None or need >= n else weight / weight.sum()
            pick = np.sort(rng.choice(n, size=min(need, n), replace=False, p=p))
        else:
            pick = d2_sample_rounds(Xs, weight, need, rng, existing=self.centers - self.shift,
                                    rounds=SEED_ROUNDS, dtype=np.float32)
        if not len(pick):
            return
        new = X[pick]
        if polish and SEED_LLOYD_ITER and not self.n_centers and len(pick) < n:
            new = weighted_lloyd(Xs, np.ones(n) if weight is None else weight, Xs[pick], max_iter=SEED_LLOYD_ITER,
                                 tol=0.0)[0] + self.shift
        d = self.n_features
        self.centers = np.concatenate([self.centers.reshape(-1, d), new])
        self.weights = np.concatenate([self.weights, np.zeros(len(pick))])
        self.spread = np.concatenate([self.spread, np.zeros(len(pick))])

    # ---- merge ----------------------------------------------------------------------
    def _merge(self, other: KMeansState) -> None:
        # ``other`` holds newer rows: with decay, ours age by its row count.
        self._decay(other.n_rows)
        C = np.concatenate([self.centers, other.centers])
        w = np.concatenate([self.weights, other.weights])
        s = np.concatenate([self.spread, other.spread])
        if len(C) > self.max_centers:
            rng = _seed(self.params["seed"], self.n_rows + other.n_rows, _content_hash(C))
            C, w, s = reduce_core_set(C - self.shift, w, s, self.max_centers, rng,
                                      tol=self.params["local_lloyd_tol"])
            C = C + self.shift
        self.centers, self.weights, self.spread = C, w, s
        if self.sample_size:
            self._age_sample(other.n_rows)
            self._keep_best(np.concatenate([self.sample_key, other.sample_key]),
                            np.concatenate([self.sample, other.sample]),
                            np.concatenate([self.sample_logw, other.sample_logw]))
        # Refined centres described the data before this merge: they no longer hold.
        self.refined_centers = np.zeros((0, self.n_features))
        self.extra_meta.pop("refined", None)
        self.extra_meta.pop("inertia", None)

    # ---- finalize -------------------------------------------------------------------
    def finalize(
        self,
        n_clusters: int | None = None,
        init: str = "k-means++",
        local_lloyd_max_iter: int = 300,
        local_lloyd_tol: float = 1e-4,
        local_lloyd_num_trials: int | str = "auto",
    ) -> dict[str, Any]:
        """The k-means model for ``n_clusters <= k_max`` from the state alone (no data read).

        Weighted k-means of the core set (best of ``local_lloyd_num_trials``; of the
        rows themselves when the sample holds every row seen), then
        Lloyd iterations on the state's sample when it holds at least
        ``SAMPLE_ROWS_PER_CLUSTER`` rows per cluster. Returns ``cluster_centers_``,
        ``n_iter_``, ``n_passes_``, ``estimated_inertia_`` (see
        :meth:`estimate_cost`) and ``inertia`` (exact, when a pass over the data
        computed it for these centres, else ``None``). For the ``k`` that
        ``epochs > 1`` refined, the refined centres are returned.
        """
        k = int(self.params["k_max"] if n_clusters is None else n_clusters)
        refined = self.extra_meta.get("refined")
        if refined and refined.get("n_clusters") == k and len(self.refined_centers) == k:
            centers = self.refined_centers.copy()
            n_iter, passes = int(refined.get("n_iter", 0)), int(refined.get("passes", 0))
        else:
            cells = self.strata() if len(self.sample) >= SAMPLE_ROWS_PER_CLUSTER * k else None
            # more local optima where the polish on the filled-in cells ranks them (on the sample alone,
            # its own fit biases the ranking) and is cheap
            n = FINALIZE_CANDIDATES if cells is not None and len(self.sample) * k <= FINALIZE_CANDIDATE_WORK else 1
            centers, n_iter = self.candidates(
                k, n, init=init, max_iter=local_lloyd_max_iter, tol=local_lloyd_tol,
                num_trials=local_lloyd_num_trials, cells=cells,
            )[0]
            passes = 0
        memo = self.extra_meta.get("inertia") or {}
        known = memo.get("centers") == _array_hash(centers)
        return {
            "cluster_centers_": centers,
            "n_iter_": n_iter,
            "n_passes_": passes,
            "estimated_inertia_": self.estimate_cost(centers),
            "inertia": float(memo["value"]) if known else None,
        }

    def estimate_cost(self, centers: np.ndarray) -> float:
        """Estimated sum of squared distances of the rows to ``centers``, from the state alone.

        From the sample when there is one (its mean squared distance times the
        rows' total weight: exact when the sample holds every row, unbiased for
        centres that were not fitted to it, a little low for those that were), else
        from the core set (each centre's rows at its distance to the nearest of
        ``centers``, plus their spread: usually a little high).
        """
        if len(self.sample):
            rows, v = self.sample_rows()
            _, d2 = nearest_centers(rows, centers, shift=self.shift)
            return float((v @ d2) / v.sum() * self.weights.sum())
        if not len(self.centers):
            return math.nan
        _, d2 = nearest_centers(self.centers, centers, shift=self.shift)
        return float(self.weights @ d2) + self.estimated_cost

    def polish(self, centers: np.ndarray, *, max_iter: int = 300, tol: float = 1e-4) -> tuple[np.ndarray, int]:
        """Lloyd iterations from ``centers`` on the rows the state knows: ``(centers, n_iter)``.

        See :meth:`polish_with_cost`.
        """
        return self.polish_with_cost(centers, max_iter=max_iter, tol=tol)[:2]

    def polish_with_cost(self, centers: np.ndarray, *, max_iter: int = 300, tol: float = 1e-4,
                         cells: Any = "auto", with_cost: bool = True) -> tuple[np.ndarray, int, float | None]:
        """Lloyd iterations from ``centers`` on the rows the state knows: ``(centers, n_iter, cost)``.

        Only when the sample has at least ``SAMPLE_ROWS_PER_CLUSTER`` rows per
        cluster (fewer would fit the sample rather than the data); else unchanged,
        with cost None. When the sample holds every row, Lloyd runs on the rows to
        convergence (exact). When it is a strict sample, at most ``POLISH_MAX_ITER``
        iterations:

        - on the core set's cells filled in with their sampled rows
          (:meth:`stratified_rows`, :func:`cell_lloyd`) when the cells are strata of
          the rows: the core set's centroids cannot say where a cell's rows fall
          when a boundary between clusters cuts through it, and the sample alone is
          too noisy to place the boundaries (diamonds, k = 10, one partition: the
          SSE 1.6-3.0% above scikit-learn's with Lloyd on a 4,000-row sample, 0.1-1%
          on the filled-in cells);
        - else on the sample, if a cross-fitted check says it helps (a polish
          fitted on each half of the sample must beat ``centers`` on the other
          half): the cells of many merged partitions overlap (20 partitions of
          blobs, ``k = 100``: 2.6% above scikit-learn's on the cells, 0.9% on the
          sample).

        The cost is the weighted sum of squared distances of the rows the polish
        ran on (an estimate of the SSE, to rank local optima; ``with_cost=False``
        skips it where it costs a pass over the sample). ``cells``: what
        :meth:`strata` gives, when the caller already has it.
        """
        if len(self.sample) < SAMPLE_ROWS_PER_CLUSTER * len(centers):
            return centers, 0, None
        C0 = centers - self.shift
        rows, v = self.sample_rows()
        rows = rows - self.shift
        with single_blas_thread(main_thread=True):
            if self.sample_is_complete:
                C, _, cost, n_iter = weighted_lloyd(rows, v, C0, max_iter=max_iter, tol=tol)
                return C + self.shift, n_iter, cost
            max_iter = min(max_iter, POLISH_MAX_ITER)
            cells = self.strata() if isinstance(cells, str) else cells
            if cells is not None:
                C, cost, n_iter = cell_lloyd(*cells, C0, max_iter=max_iter, tol=tol)
                return C + self.shift, n_iter, cost
            C, n_iter = C0, 0
            if self._polish_helps(rows, v, C0, max_iter=max_iter, tol=tol):
                # a centre that no sampled row comes to stays: the core set put it on rows the sample
                # missed (one far county of 37k: moved to a sampled row, the SSE was 16x scikit-learn's)
                C, _, _, n_iter = weighted_lloyd(rows, v, C0, max_iter=max_iter, tol=tol, relocate_empty=False)
            return C + self.shift, n_iter, (float(v @ nearest_centers(rows, C)[1]) if with_cost else None)

    @staticmethod
    def _polish_helps(rows: np.ndarray, v: np.ndarray, C0: np.ndarray, *, max_iter: int, tol: float) -> bool:
        """Whether Lloyd on one half of the sample beats ``C0`` on the other half (both ways).

        The gain must be significant: the summed per-row change of squared distance
        below minus twice its standard error, so that the sample's noise alone (say,
        ``k = 1``, where the core set's mean is exact and any polish only moves it to
        the sample's mean) is not taken for an improvement.
        """
        halves = np.arange(len(rows)) % 2 == 0
        change = np.empty(len(rows))
        for fit, test in ((halves, ~halves), (~halves, halves)):
            C = weighted_lloyd(rows[fit], v[fit], C0, max_iter=max_iter, tol=tol, relocate_empty=False)[0]
            change[test] = v[test] * (nearest_centers(rows[test], C)[1] - nearest_centers(rows[test], C0)[1])
        return bool(change.sum() < -2.0 * math.sqrt(len(change)) * change.std())

    def strata(self) -> tuple[np.ndarray, ...] | None:
        """:meth:`stratified_rows` when the core set's cells are strata of the rows, else None.

        Filling in a cell with the sampled rows nearest its centre assumes that its
        rows are those nearest its centre. A core set that one stream built keeps to
        that; merged core sets of many partitions need not (their cells are unions of
        cells of different tessellations, which overlap). The check: the sample's
        share of rows nearest each centre against the cells' share of the weight,
        whose total variation distance must stay within ``STRATA_MAX_NOISE`` times
        what the sample's own noise gives. Measured, in units of that noise: 0.9-3.5
        on nine real tables (one partition or 20), 1.1-1.2 on one partition of
        blobs, 12-16 on 20 partitions of blobs.
        """
        if self.sample_is_complete or not len(self.sample):
            return None
        valid = self.weights > 0
        rows, v = self.sample_rows()
        with single_blas_thread(main_thread=True):
            # float32 is enough to pick a cell (any choice keeps the filled-in cells' weights and means)
            cell, _ = nearest_centers(rows, self.centers[valid], shift=self.shift, dtype=np.float32)
        w = self.weights[valid]
        share, p = np.bincount(cell, weights=v, minlength=len(w)), w / w.sum()
        distance = 0.5 * np.abs(share / share.sum() - p).sum()
        noise = 0.5 * np.sqrt(2.0 / math.pi * p * (1.0 - p) / len(rows)).sum()
        return self.stratified_rows(cell) if distance <= STRATA_MAX_NOISE * noise else None

    def stratified_rows(self, cell: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """The core set's cells filled in with the sampled rows nearest their centres (shifted).

        Returns ``(P, w, inner, rows, v, cell)``: the cells' centres, weights and
        sums of squared distances of their members to the centre; the members and
        their weights; the cell of each member. A cell's sampled rows are moved and
        scaled about their mean so that they have the cell's weight, mean and
        spread exactly (each an equal share of the cell's weight); a cell without
        sampled rows is its centre alone. The core set decides how many rows lie
        where and the sample only how they lie within a cell (post-stratification:
        the noise is that of the rows near a boundary, not of all of them).
        ``cell``: each sampled row's cell (index among the centres of positive
        weight), when the caller already has it.
        """
        valid = self.weights > 0
        P, w, spread = self.centers[valid] - self.shift, self.weights[valid], self.spread[valid]
        rows, v = self.sample_rows()
        rows = rows - self.shift
        if cell is None:
            with single_blas_thread(main_thread=True):
                cell, _ = nearest_centers(rows, P)
        m, tiny = len(P), np.finfo(np.float64).tiny
        n = np.bincount(cell, weights=v, minlength=m)
        dev = rows - (cluster_sums(cell, rows, m, weights=v) / np.maximum(n, tiny)[:, None])[cell]
        msd = np.bincount(cell, weights=v * row_norms_sq(dev), minlength=m) / np.maximum(n, tiny)
        # at most MAX_CELL_SCALE: sampled rows much closer together than the cell's spread say
        # little about where its other rows lie (a cell of near-equal rows and one far row)
        scale = np.sqrt(np.minimum(spread / w, MAX_CELL_SCALE**2 * msd) / np.maximum(msd, tiny))
        scale[msd <= 0] = 1.0
        dev *= scale[cell, None]
        v = v * w[cell] / n[cell]
        inner = np.bincount(cell, weights=v * row_norms_sq(dev), minlength=m)
        return P, w, inner, P[cell] + dev, v, cell

    def with_model(self, centers: np.ndarray, *, n_iter: int = 0, passes: int = 0,
                   inertia: float | None = None) -> KMeansState:
        """A copy that remembers ``centers`` (refined by ``passes`` exact passes) and/or their exact inertia."""
        new = self.copy()
        centers = np.array(centers, dtype=np.float64)
        if passes:
            new.refined_centers = centers
            new.extra_meta["refined"] = {"n_clusters": len(centers), "n_iter": int(n_iter), "passes": int(passes)}
        if inertia is not None:
            new.extra_meta["inertia"] = {"centers": _array_hash(centers), "value": float(inertia)}
        return new

    def reduce(
        self,
        k: int,
        *,
        init: str = "k-means++",
        max_iter: int = 300,
        tol: float = 1e-4,
        num_trials: int | str = "auto",
    ) -> tuple[np.ndarray, float, int]:
        """Weighted k-means of the core set to ``k`` centres: ``(centers, weighted cost, n_iter)``.

        The best (lowest weighted cost) of ``num_trials`` seedings and one start from
        Ward's agglomeration of the core set (:func:`weighted_ward`), each followed by
        weighted Lloyd to convergence. Deterministic for a given state and ``k``.
        """
        return self._core_set_kmeans(k, 1, init=init, max_iter=max_iter, tol=tol, num_trials=num_trials)[0]

    def candidates(
        self,
        k: int,
        n: int,
        *,
        init: str = "k-means++",
        max_iter: int = 300,
        tol: float = 1e-4,
        num_trials: int | str = "auto",
        cells: Any = "auto",
    ) -> list[tuple[np.ndarray, int]]:
        """Up to ``n`` distinct models ``(centers, n_iter)``, best first: the best distinct
        results of :meth:`reduce`'s trials, each polished on the sample (:meth:`polish_with_cost`,
        ``cells`` passed on), ranked by the polish's cost.

        ``epochs > 1`` scores them on the data in its first refining pass: the
        state ranks local optima well, but not perfectly.
        """
        found = []
        if isinstance(cells, str):
            cells = self.strata() if len(self.sample) >= SAMPLE_ROWS_PER_CLUSTER * k else None
        for rank, (C, core_cost, n_iter) in enumerate(self._core_set_kmeans(k, n, init=init, max_iter=max_iter,
                                                                            tol=tol, num_trials=num_trials)):
            C, more, cost = self.polish_with_cost(C, max_iter=max_iter, tol=tol, cells=cells, with_cost=n > 1)
            found.append((core_cost if cost is None else cost, rank, C, n_iter + more))
        # ranked by their cost on the polish's rows (which rank local optima better than the core
        # set's centroids can: countymurders, the core set's best was 2-3% above another it ranked lower)
        return [(C, n_iter) for _, _, C, n_iter in _by_cost_then_trial(found)]

    def _core_set_kmeans(
        self,
        k: int,
        n: int,
        *,
        init: str = "k-means++",
        max_iter: int = 300,
        tol: float = 1e-4,
        num_trials: int | str = "auto",
    ) -> list[tuple[np.ndarray, float, int]]:
        """The ``n`` best distinct results ``(centers, weighted cost, n_iter)`` of the trials, best first."""
        k_max = int(self.params["k_max"])
        if not 1 <= k <= k_max:
            raise StateError(
                f"n_clusters={k} is out of range: this state answers for 1 <= n_clusters <= k_max={k_max} "
                "(refit with a larger k_max)"
            )
        if self.n_rows < k:
            raise StateError(f"n_clusters={k} needs at least {k} rows; the state has seen {self.n_rows}")
        valid = self.weights > 0
        origin = self.shift
        P = core = self.centers[valid] - origin
        w = core_w = self.weights[valid]
        seed_rows = P
        if self.sample_is_complete and len(np.unique(self.sample, axis=0)) >= k:
            # the sample holds every row seen: the trials run on the rows themselves (exact
            # k-means with restarts, as scikit-learn's n_init), not on their summary; equal rows
            # as one of their summed weight, so a row of weight 2 and the row twice seed alike
            rows, v = self.sample_rows()
            seed_rows, inverse = np.unique(rows, axis=0, return_inverse=True)
            origin = seed_rows.mean(axis=0)  # of the distinct rows: the same for weighted and repeated rows
            P, w = seed_rows - origin, np.bincount(inverse.ravel(), weights=v, minlength=len(seed_rows))
            core = self.centers[valid] - origin
        if len(P) < k:
            warnings.warn(
                f"the data has {len(P)} distinct points, fewer than n_clusters={k}: "
                "some centres are duplicates", UserWarning, stacklevel=4,
            )
            extra = np.argsort(-w, kind="stable")[np.arange(k - len(P)) % len(P)]
            return [(np.concatenate([P, P[extra]]) + origin, 0.0, 0)]
        trials = AUTO_NUM_TRIALS if num_trials == "auto" else int(num_trials)
        if num_trials == "auto" and P is not core:
            # exact k-means on a few rows: restarts cost next to nothing, and 10 of them miss
            # the best optimum of 30 rows of 5 small integers (k = 3) about one time in 20
            trials = max(trials, min(SMALL_DATA_MAX_TRIALS, SMALL_DATA_TRIAL_WORK // (len(P) * k)))
        rng = _seed(self.params["seed"], k, _content_hash(seed_rows))
        found: list[tuple[float, int, np.ndarray, int]] = []  # (cost, trial, centres, n_iter)
        with single_blas_thread(main_thread=True):
            for trial in range(max(1, trials)):
                if init == "random":
                    idx = rng.choice(len(P), size=k, replace=False, p=w / w.sum())
                else:
                    idx = weighted_kmeans_pp(P, w, k, rng)
                C, _, cost, n_iter = weighted_lloyd(P, w, P[idx], max_iter=max_iter, tol=tol)
                found.append((cost, trial, C, n_iter))
            ward_points, ward_w = (P, w) if P is not core and k < len(P) <= WARD_MAX_POINTS else (core, core_w)
            if k < len(ward_points) <= WARD_MAX_POINTS:
                # one more start, from Ward's agglomeration of the core set (of the rows, when they
                # are all known): restarts alone miss the best grouping of natural clusters when k
                # is below their number
                start = weighted_ward(ward_points, ward_w, k)
                C, _, cost, n_iter = weighted_lloyd(P, w, start, max_iter=max_iter, tol=tol)
                found.append((cost, trials, C, n_iter))
        found = _by_cost_then_trial(found)
        out: list[tuple[np.ndarray, float, int]] = []
        for cost, _, C, n_iter in found:
            # the same local optimum reached from several seedings counts once
            if out and any(abs(cost - c) <= 1e-9 * max(cost, 1e-300) for _, c, _ in out):
                continue
            out.append((C + origin, float(cost), int(n_iter)))
            if len(out) == n:
                break
        return out

    def cost_curve(self, ks: Any, **options: Any) -> np.ndarray:
        """Estimated sum of squared distances of :meth:`finalize`'s model for each ``k`` in ``ks``."""
        return np.array([self.finalize(n_clusters=int(k), **options)["estimated_inertia_"] for k in ks])


def _by_cost_then_trial(found: list[tuple]) -> list[tuple]:
    """``(cost, trial, ...)`` results by cost, costs equal up to rounding (1e-9 relative) by trial.

    The same local optimum reached by two trials differs in its cost by rounding
    only, which would otherwise pick its label order by the rounding of the input
    (repeated rows against weighted ones, another shift).
    """
    ordered = sorted(found, key=lambda t: (t[0], t[1]))
    out: list[tuple] = []
    while ordered:
        head = ordered[0][0]
        tied = [t for t in ordered if t[0] - head <= 1e-9 * max(abs(head), 1e-300)]
        out.extend(sorted(tied, key=lambda t: t[1]))
        ordered = ordered[len(tied):]
    return out


def reduce_core_set(
    P: np.ndarray, w: np.ndarray, spread: np.ndarray, K: int, rng: np.random.Generator, *, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce weighted centres ``P`` (with spreads) to at most ``K``: k-means++ and a few Lloyd steps.

    Each new centre is the weighted mean of the centres it absorbs; its weight is
    their total and its spread is theirs plus ``w_i |p_i - c|^2`` each, so the
    spread stays the exact sum of squared distances of the summarised rows (for
    rows that were summarised exactly).
    """
    keep = w > 0
    P, w, spread = P[keep], w[keep], spread[keep]
    if len(P) <= K:
        return P, w, spread
    if MERGE_SEED_ROUNDS:
        idx = d2_sample_rounds(P, w, K, rng, rounds=MERGE_SEED_ROUNDS)
    else:
        idx = weighted_kmeans_pp(P, w, K, rng, n_local_trials=1)
    C, labels, _, _ = weighted_lloyd(P, w, P[idx], max_iter=MERGE_LLOYD_ITER, tol=tol)
    # D^2 sampling stops early when every point coincides with a seed (repeated rows):
    # then there are fewer than K centres
    W = np.bincount(labels, weights=w, minlength=len(C))
    S = np.bincount(labels, weights=spread + w * row_norms_sq(P - C[labels]), minlength=len(C))
    nz = W > 0
    return C[nz], W[nz], S[nz]


# ----------------------------------------------------------------------------- exact Lloyd passes
@register
class KMeansLloydState(State):
    """Exact Lloyd statistics for fixed centres: per-centre sums, counts and squared distances.

    One pass of this state is one Lloyd iteration over all the data, and gives the
    exact SSE of the centres it started from. It can carry several candidate
    models of ``k`` centres at once (``centers`` stacks them), each row being
    assigned within each model. Exact and mergeable: ``merge(update(A),
    update(B)) == update(A | B)`` to rounding (the assignment uses a float32 GEMM
    on shifted rows; the sums, counts and squared distances of that assignment are
    float64). The centres are part of the state (``empty_like`` keeps them), so
    every partition's task starts from the same ones.
    """

    algorithm = "kmeans_lloyd"
    blas_threads = 1
    blas_on_main_thread = True
    array_names = ("centers", "sums", "counts", "sse")
    accepts_weight = True

    def _init_arrays(self) -> None:
        d = self.n_features
        self.centers = np.zeros((0, d))
        self.sums = np.zeros((0, d))
        self.counts = np.zeros(0)
        self.sse = np.zeros(0)

    @classmethod
    def starting_from(cls, schema: Schema, *models: np.ndarray) -> KMeansLloydState:
        """A state for one or more models, each a ``k x d`` array of centres."""
        k = len(models[0])
        if any(np.shape(m) != (k, schema.n_features) for m in models):
            raise StateError(f"every model needs {k} centres of {schema.n_features} features")
        state = cls(schema, {"n_clusters": k, "n_models": len(models)})
        state._set_centers(np.concatenate(models))
        return state

    @property
    def n_clusters(self) -> int:
        return int(self.params["n_clusters"])

    @property
    def n_models(self) -> int:
        return int(self.params.get("n_models", 1))

    def _set_centers(self, centers: np.ndarray) -> None:
        m, d = centers.shape
        self.centers = np.array(centers, dtype=np.float64, copy=True)
        self.sums = np.zeros((m, d))
        self.counts = np.zeros(m)
        self.sse = np.zeros(m)

    def empty_like(self) -> KMeansLloydState:
        new = super().empty_like()
        new._set_centers(self.centers)
        return new

    def _update(self, X: np.ndarray, y: np.ndarray | None, context: Any = None,
                weight: np.ndarray | None = None) -> None:
        if not len(self.centers):
            raise StateError("a kmeans_lloyd state needs centres to start from")
        k, m = self.n_clusters, len(self.centers)
        shift = self.centers.mean(axis=0)
        Cs = self.centers - shift
        work: dict = {}
        t = self.n_models
        offsets = np.arange(t) * k
        for rows in mini_batches(len(X), 16_384):
            Xs = X[rows] - shift
            # one float64 GEMM for every model's assignment and squared distances
            labels, d2 = nearest_centers(Xs, Cs, work=work, groups=t)
            if t > 1:
                labels, d2 = (labels + offsets).T, d2.T
            else:
                labels, d2 = labels[None], d2[None]
            wb = None if weight is None else weight[rows]
            for lab, dist in zip(labels, d2, strict=True):
                self.counts += np.bincount(lab, weights=wb, minlength=m)
                self.sums += cluster_sums(lab, Xs, m, weights=wb)
                self.sse += np.bincount(lab, weights=dist if wb is None else dist * wb, minlength=m)

    def _merge(self, other: KMeansLloydState) -> None:
        if not np.array_equal(self.centers, other.centers):
            raise StateError("cannot merge kmeans_lloyd states that started from different centres")
        self.sums = self.sums + other.sums
        self.counts = self.counts + other.counts
        self.sse = self.sse + other.sse

    def finalize(self) -> dict[str, Any]:
        """Per model: the new centres (means of the assigned rows; an empty cluster keeps
        its centre), the starting centres' exact SSE, and the cluster sizes.

        Returns ``centers`` (n_models, k, d), ``inertia`` (n_models,), ``counts`` (n_models, k).
        """
        shift = self.centers.mean(axis=0)
        new = self.centers.copy()
        hit = self.counts > 0
        new[hit] = self.sums[hit] / self.counts[hit, None] + shift
        t, k = self.n_models, self.n_clusters
        return {
            "centers": new.reshape(t, k, -1),
            "inertia": self.sse.reshape(t, k).sum(axis=1),
            "counts": self.counts.reshape(t, k).copy(),
        }
