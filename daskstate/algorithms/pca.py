"""Principal component analysis in one pass: an exact mode and a sketching mode for wide data.

Hyperparameters shape the state (``mode``, ``max_components``, the sketch size)
or only the model (``n_components``, ``whiten``, ``subtract_mean``): the latter
are finalize overrides, so one state answers any ``n_components <= max_components``
without reading data again.

State arrays
------------
Both modes keep the rows seen, the mean as ``shift + offset`` (``shift`` is a data
point, so differences of means do not lose digits when the mean is 1e9) and the
per-column centred sum of squares ``m2`` (exact; its sum is the total variance).

- ``mode="regular"``: the centred scatter matrix ``sum (x - mean)(x - mean)^T``
  (``d x d``), merged with Chan's parallel correction ``+ n_a n_b / n * delta
  delta^T``, never as a raw ``sum x x^T - n mean mean^T`` (which cancels badly
  when the mean is large). Exact: ``merge(update(A), update(B)) == update(A ∪ B)``
  to rounding. Finalize is an eigen-decomposition of the scatter matrix.
- ``mode="randomized"``: a Frequent Directions sketch ``B`` (``l x d`` with
  ``l = max_components + extra_components``) of the centred rows, with ``B^T B``
  approximating the scatter matrix from below, and the total shrinkage ``Delta``.
  Chan's correction enters as one extra row ``sqrt(n_a n_b / n) * delta`` per
  merge, so the sketch summarises the exactly centred data. Deterministic (no
  random numbers), mergeable in any order with the same guarantee.

Error bound of the sketch (``mode="randomized"``)
-------------------------------------------------
Let ``C`` be the exact centred scatter matrix with eigenvalues ``lam_1 >= lam_2 >= ...``
and ``tail_k = sum_{j > k} lam_j``. Frequent Directions (Liberty 2013; Ghashami,
Liberty, Phillips and Woodruff, SIAM J. Comput. 2016), with every shrink at
``delta = lam_{l+1}`` of the block, guarantees for any order of updates and merges:

- ``0 <= x^T C x - |B x|^2 <= Delta`` for every unit vector ``x``, and
  ``Delta <= tail_k / (l + 1 - k)`` for every ``k <= l``;
- so with ``mu_i = sigma_i(B)^2``, ``mu_i <= lam_i <= mu_i + Delta`` (Weyl). The
  estimate stays in that interval: ``mu_i + Delta`` (compensated by the known
  shrinkage) for directions held above ``Delta``, the mean unexplained variance
  (clipped to the interval) for weaker ones in the bulk of the spectrum; hence
  ``|lam_hat_i - lam_i| <= Delta``. ``explained_variance_interval_`` reports each
  ``[mu_i, mu_i + Delta] / (n - 1)`` and ``explained_variance_bound_`` the resulting
  relative error of the explained total, ``k Delta / sum_i lam_hat_i`` (``fit`` warns
  above 10%);
- the reconstruction error of the top ``k`` sketched components is at most
  ``|X_c - X_c V_k V_k^T|_F^2 <= tail_k + k * Delta <= (1 + k / (l + 1 - k)) tail_k``.

The bounds are worst cases. ``refine=True`` reads the data once more and measures the
exact scatter ``V C V^T`` inside the sketch's row space (``l x l``): its eigenvalues
``theta_i`` satisfy ``mu_i <= theta_i <= lam_i`` (Cauchy's interlacing), so the
variances become exact along the returned components and the interval shrinks to
``[theta_i, mu_i + Delta]``, the Rayleigh-Ritz step of an in-memory randomized SVD.

Measured at d = 2000, n = 4000, k = 10, l = 20 (before the default became
``l = k + max(30, 2k)``, see :func:`default_extra_components`): the
top-10 explained variances within 0.36 % of exact for singular values decaying as
1/i (8 partitions; 0.69 % from 30 partitions) and within 0.06 % for 1/i^1.5 (30
partitions), while ``Delta`` was 28 % and 13 % of the 10th; reconstruction errors
within 0.001 % of exact (tests/test_pca.py, ``-m slow``). On a flat spectrum no
sketch of ``l`` rows resolves the eigenvalues beyond the signal: there the bound is
what to rely on.
Cost: blocks of ``8 l`` rows per shrink, about ``12 l d + 900 l^2`` flops per row,
against ``d^2`` for the exact mode, and ``l x d`` memory whatever the rows.
"""

from __future__ import annotations

import numbers
import os
import warnings
from typing import Any, ClassVar

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.linalg
from dask.base import tokenize
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import StrOptions

from daskstate.data import Batches, Input
from daskstate.errors import DataError, StateError
from daskstate.estimator import Ints, StateEstimator, _array_likes, _fitted_attributes
from daskstate.numerics import (
    MINI_BATCH_ROWS,
    batch_moments,
    merge_moments,
    mini_batches,
    rebase,
)
from daskstate.state import Schema, State, register

MODES = ("regular", "randomized")
#: above this many features, regular mode's finalize computes only the top eigenpairs
WIDE_FEATURES = 2048
#: ``fit`` warns when ``explained_variance_bound_`` (a relative error) exceeds this
BOUND_WARNING = 0.10


#: ``fit`` in regular mode says what the state needs when it is at least this large (bytes)
REGULAR_WARN_BYTES = 256 << 20


class WideStateWarning(UserWarning):
    """A regular-mode state of at least :data:`REGULAR_WARN_BYTES`: what the fit will hold."""


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), or None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class SketchAccuracyWarning(UserWarning):
    """The randomized mode's certified error bound exceeds :data:`BOUND_WARNING`."""


def default_extra_components(max_components: int) -> int:
    """Sketch rows beyond ``max_components`` by default: ``max(30, 2 max_components)``.

    Frequent Directions misses each eigenvalue by at most ``tail_k / (l + 1 - k)``;
    on a spectrum decaying like ``1 / i`` the tail beyond ``k`` is about ``k`` times
    the ``k``-th eigenvalue, so the relative error stays put only when ``l - k`` grows
    with ``k``. Measured on real matrices (issue 14): top-10 explained variance of
    5,000 784-pixel digit images 12.1% low with ``l = 20``, 0.8% with 30, 0.14% with
    50; 5,000 contrast-normalised 12x12 colour patches of scikit-learn's sample
    images 2.4% low with ``l = 20``, 0.1% with 40; 120-month windows of the monthly
    sunspot numbers 0.9% with ``l = 20``, 0.3% with 40 (and at ``k = 20``, 1.5% with
    ``l = 30``, 0.1% with 60).
    """
    return int(max(30, 2 * int(max_components)))


# ---------------------------------------------------------------------------- numerics: batches, signs, sketch
#: up to this many features, a batch's ``d x d`` Gram matrix is a small temporary (BLAS computes it
#: faster than the in-place update, and its diagonal is the batch's sums of squares)
GRAM_TEMPORARY_MAX_FEATURES = 256


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


def weighted_centre_rows(X: np.ndarray, shift: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Total weight, weighted mean offset from ``shift``, and the rows centred on that mean scaled by ``sqrt(w)``.

    ``D^T D`` of the returned ``D`` is the weighted centred scatter ``sum w (x - mean)(x - mean)^T``.
    """
    total = float(w.sum())
    if total == 0.0:
        return 0.0, np.zeros(X.shape[1]), X[:0] - shift
    D = X - shift
    offset = np.einsum("i,ij->j", w, D) / total
    D -= offset
    D *= np.sqrt(w)[:, None]
    return total, offset, D


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


# ---------------------------------------------------------------------------- the state
@register
class PCAState(State):
    """Rows seen, mean, per-column ``m2``, and the centred scatter matrix or its sketch.

    ``params``: ``mode`` ("regular" or "randomized"), ``max_components`` and, for
    the randomized mode, ``sketch_rows`` (``l``). Arrays: ``shift``, ``offset``,
    ``m2`` (``d``), ``scatter`` (``d x d`` regular, ``0 x 0`` randomized),
    ``sketch`` (``l x d`` randomized, ``0 x 0`` regular) and ``shrinkage``
    (``Delta``, the summed Frequent Directions shrinkage, shape ``(1,)``).
    """

    algorithm = "pca"
    array_names = ("shift", "offset", "m2", "scatter", "sketch", "shrinkage", "refined_basis", "refined_scatter")
    #: one BLAS thread per task (and for the whole of a Dask pass): the engine's execution policy
    blas_threads = 1
    # sample weights: the weighted mean and scatter (rows scaled by sqrt(w) in the sketch), as frequency
    # weights (variances over ``weight_sum - 1``), so an integer weight equals the row repeated
    accepts_weight = True

    @property
    def mode(self) -> str:
        return self.params.get("mode", "regular")

    @property
    def sketch_rows(self) -> int:
        return int(self.params.get("sketch_rows", 0))

    def _init_arrays(self) -> None:
        d = self.n_features
        if self.mode not in MODES:
            raise StateError(f"PCA state mode must be one of {MODES}, got {self.mode!r}")
        self.shift = np.zeros(d)
        self.offset = np.zeros(d)
        self.m2 = np.zeros(d)
        self.shrinkage = np.zeros(1)
        self.refined_basis = np.zeros((0, 0))
        self.refined_scatter = np.zeros((0, 0))
        if self.mode == "regular":
            self.scatter = np.zeros((d, d))
            self.sketch = np.zeros((0, 0))
        else:
            if self.sketch_rows < 1:
                raise StateError(f"PCA randomized state needs sketch_rows >= 1, got {self.sketch_rows}")
            self.scatter = np.zeros((0, 0))
            self.sketch = np.zeros((self.sketch_rows, d))

    def _after_load(self) -> None:
        d, ell = self.n_features, self.sketch_rows
        want = {"scatter": (d, d), "sketch": (0, 0)} if self.mode == "regular" else {
            "scatter": (0, 0), "sketch": (ell, d)}
        if self.refined_basis.size or self.refined_scatter.size:
            if self.mode == "regular":
                want.update(refined_basis=(0, 0), refined_scatter=(0, 0))
            else:
                want.update(refined_basis=(ell, d), refined_scatter=(ell, ell))
        for name, shape in want.items():
            if getattr(self, name).shape != shape:
                raise StateError(
                    f"pca state ({self.mode}) array {name!r} has shape {getattr(self, name).shape}; expected {shape}"
                )

    # ---- update ------------------------------------------------------------------
    def _update(self, X: np.ndarray, y: np.ndarray | None, context: Any = None,
                weight: np.ndarray | None = None) -> None:
        if self.n_rows == 0:
            self.shift = X[0].copy()
        self.refined_basis, self.refined_scatter = np.zeros((0, 0)), np.zeros((0, 0))
        self._update_batches(X, weight)

    def _update_batches(self, X: np.ndarray, weight: np.ndarray | None = None) -> None:
        n = self.weight_sum  # the count of Chan's formulas: rows, or their total weight
        for rows in mini_batches(len(X), rows_per_batch(self.n_features)):
            if weight is None:
                off_b, D = centre_rows(X[rows], self.shift)
                nb = len(D)
            else:  # rows scaled by sqrt(w) after centring on the weighted mean: D^T D is the weighted scatter
                nb, off_b, D = weighted_centre_rows(X[rows], self.shift, weight[rows])
                if nb == 0:
                    continue
            # the moments first: they raise, naming the column, where values overflow (before the
            # sketch's SVD would fail on inf with a raw LinAlgError)
            gram = D.T @ D if self.mode == "regular" and self.n_features <= GRAM_TEMPORARY_MAX_FEATURES else None
            m2_b = np.einsum("ij,ij->j", D, D) if gram is None else np.diagonal(gram).copy()
            n_after, offset, m2 = merge_moments(n, self.offset, self.m2, nb, off_b, m2_b)
            if self.mode == "regular":
                self.scatter = _owned_c_array(self.scatter)
                if gram is not None:
                    self.scatter += gram
                else:  # in place: no d x d temporary (a wide state is most of the fit's memory)
                    _add_gram_lower(self.scatter, D)
                if n:
                    _add_outer(self.scatter, _chan_row(n, self.offset, nb, off_b)[0])
            else:
                block = D if n == 0 else np.vstack([D, _chan_row(n, self.offset, nb, off_b)])
                self.sketch, delta = fd_update(self.sketch, block, self._chunk_rows())
                self.shrinkage = self.shrinkage + delta
            n, self.offset, self.m2 = n_after, offset, m2
        if self.mode == "regular":
            _mirror_lower(self.scatter)

    def _chunk_rows(self) -> int:
        """Rows folded per Frequent Directions shrink.

        ``8 l``: fewer, larger shrinks make a more accurate sketch (on a 1/i spectrum,
        errors of the 10th eigenvalue are about 4x smaller than with ``2 l``, the
        cheapest per row) for at most twice the flops. A whole mini-batch when
        ``d <= 4 l``: then the ``d x d`` Gram matrix is the small one.
        """
        ell, d = self.sketch_rows, self.n_features
        return rows_per_batch(d) if d <= 4 * ell else 8 * ell

    # ---- merge -------------------------------------------------------------------
    def _merge(self, other: PCAState) -> None:
        # a refinement described the data before this merge: it no longer holds
        self.refined_basis, self.refined_scatter = np.zeros((0, 0)), np.zeros((0, 0))
        n_a, n_b = self.weight_sum, other.weight_sum
        if n_b == 0:  # rows of weight 0 only: nothing to add
            return
        off_b = rebase(other.offset, other.shift, self.shift)
        if self.mode == "regular":
            self.scatter = _owned_c_array(self.scatter)
            self.scatter += other.scatter
            _add_outer(self.scatter, _chan_row(n_a, self.offset, n_b, off_b)[0])
            _, self.offset, self.m2 = merge_moments(n_a, self.offset, self.m2, n_b, off_b, other.m2)
            return
        Z = np.vstack([self.sketch, other.sketch, _chan_row(n_a, self.offset, n_b, off_b)])
        self.sketch, delta = fd_shrink(Z, self.sketch_rows)
        self.shrinkage = self.shrinkage + other.shrinkage + delta
        _, self.offset, self.m2 = merge_moments(n_a, self.offset, self.m2, n_b, off_b, other.m2)

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.offset

    # ---- finalize ----------------------------------------------------------------
    def finalize(self, n_components: int | None = None, whiten: bool = False,
                 subtract_mean: bool = True) -> dict[str, Any]:
        """The fitted attributes for ``n_components`` (default: all the state answers for).

        Raises
        ------
        StateError
            fewer than 2 rows, or ``n_components`` above ``max_components`` or
            ``min(rows, features)``.
        """
        rows, d = self.n_rows, self.n_features
        if rows < 2:
            raise StateError(f"PCA needs at least 2 rows to estimate variances; the state has {rows}")
        # with sample weights, n is their total (frequency weights: variances over n - 1)
        n = self.weight_sum
        if n <= 1:
            raise StateError(
                f"PCA's variances divide by the total weight minus 1, but the sample weights sum to {n:g}; "
                "weights count rows (a weight of 2 is the row twice), so scale them to sum above 1"
            )
        k_max = int(self.params.get("max_components", d))
        rank = min(rows, d)
        k = min(k_max, rank) if n_components is None else n_components
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise StateError(f"n_components must be a positive integer, got {k!r}")
        k = int(k)
        if k > k_max:
            raise StateError(
                f"n_components={k} exceeds max_components={k_max}, the most this state answers for; "
                "refit with a larger max_components"
            )
        if k > rank:
            raise StateError(f"n_components={k} exceeds min(rows, features) = min({rows}, {d}) = {rank}")
        mean = self.mean
        if self.mode == "regular":
            C = self.scatter if subtract_mean else self.scatter + n * np.outer(mean, mean)
            if d > WIDE_FEATURES and 2 * k < d:
                # wide: only the top k eigenpairs (LAPACK's MRRR), d x k vectors instead of d x d
                lam_k, V = scipy.linalg.eigh(C, subset_by_index=[d - k, d - 1], driver="evr")
                lam_k, comps = np.clip(lam_k[::-1], 0.0, None), V[:, ::-1].T
                total = float(np.trace(C))
                noise = max(total - float(lam_k.sum()), 0.0) / (rank - k) / (n - 1) if k < rank else 0.0
            else:
                lam, V = np.linalg.eigh(C)
                lam, V = np.clip(lam[::-1], 0.0, None), V[:, ::-1]
                total = float(lam.sum())
                lam_k, comps = lam[:k], V[:, :k].T
                rest = lam[k:rank]
                noise = float(rest.mean()) / (n - 1) if k < rank else 0.0
            low = high = lam_k
        else:
            B = self.sketch if subtract_mean else np.vstack([self.sketch, np.sqrt(n) * mean])
            total = float(self.m2.sum()) + (0.0 if subtract_mean else n * float(mean @ mean))
            delta = float(self.shrinkage[0])
            _, s, Vt = np.linalg.svd(B, full_matrices=False)
            mu = s[:k] ** 2
            high = mu + delta  # Frequent Directions: mu_i <= lam_i <= mu_i + delta
            if subtract_mean and self.is_refined:
                # exact variances inside the sketch's row space (Rayleigh-Ritz): by Cauchy's
                # interlacing theta_i <= lam_i, and theta_i >= mu_i as B^T B <= C there
                theta, U = np.linalg.eigh(self.refined_scatter)
                theta, U = np.clip(theta[::-1][:k], 0.0, None), U[:, ::-1][:, :k]
                lam_k, comps = theta, U.T @ self.refined_basis
                low = np.maximum(theta, mu)
                high = np.maximum(high, low)
            else:
                lam_k = _sketch_eigenvalues(mu, delta, total, rank)
                comps = Vt[:k]
                low = mu
            noise = max(total - float(lam_k.sum()), 0.0) / (rank - k) / (n - 1) if k < rank else 0.0
        estimate = float(lam_k.sum())
        bound = float((high - np.minimum(low, lam_k)).sum() / estimate) if estimate > 0 else 0.0
        return {
            "components_": svd_flip_rows(comps),
            "explained_variance_": lam_k / (n - 1),
            "explained_variance_ratio_": lam_k / total if total > 0 else np.zeros(k),
            "singular_values_": np.sqrt(lam_k),
            "mean_": mean if subtract_mean else np.zeros(d),
            "noise_variance_": noise,
            "n_components_": k,
            "explained_variance_bound_": bound,
            "explained_variance_interval_": np.column_stack([low, high]) / (n - 1),
        }

    @property
    def is_refined(self) -> bool:
        """Whether a second pass measured the exact scatter inside the sketch's row space."""
        return self.mode == "randomized" and self.refined_basis.shape == (self.sketch_rows, self.n_features)

    def sketch_basis(self) -> np.ndarray:
        """Orthonormal rows spanning the sketch's row space (``l x d``), strongest first."""
        _, _, Vt = np.linalg.svd(self.sketch, full_matrices=False)
        return Vt

    def with_refinement(self, refinement: PCARefineState) -> PCAState:
        """A copy that keeps the exact centred scatter of the data inside ``refinement``'s basis.

        ``refinement`` must have folded exactly the rows this state has seen.
        """
        if self.mode != "randomized" or refinement.n_rows != self.n_rows:
            raise StateError(
                f"a refinement must cover the same rows as the sketch: {refinement.n_rows} rows "
                f"against {self.n_rows}"
            )
        new = self.copy()
        new.refined_basis = refinement.basis.copy()
        new.refined_scatter = refinement.scatter.copy()
        return new



@register
class PCARefineState(State):
    """Exact centred scatter of the rows projected on a fixed basis: the second pass of ``refine=True``.

    Arrays: ``basis`` (``l x d``, orthonormal rows, part of the state so that every
    partition's task projects on the same one), ``center`` (``d``, a point near the
    data), ``offset`` (``l``, the projected mean's offset from ``basis @ center``)
    and ``scatter`` (``l x l``). Exact and mergeable (Chan's formula on the
    projections): ``merge(update(A), update(B)) == update(A | B)`` to rounding, and
    ``scatter == V C V^T`` for the exact centred scatter ``C``.
    """

    algorithm = "pca_refine"
    array_names = ("basis", "center", "offset", "scatter")
    blas_threads = 1
    accepts_weight = True

    def _init_arrays(self) -> None:
        ell, d = int(self.params.get("basis_rows", 0)), self.n_features
        self.basis = np.zeros((ell, d))
        self.center = np.zeros(d)
        self.offset = np.zeros(ell)
        self.scatter = np.zeros((ell, ell))

    @classmethod
    def starting_from(cls, schema: Schema, basis: np.ndarray, center: np.ndarray) -> PCARefineState:
        """An empty state projecting on ``basis`` (``l x d``) around ``center``."""
        state = cls(schema, {"basis_rows": len(basis)})
        state.basis = np.array(basis, dtype=np.float64, copy=True)
        state.center = np.array(center, dtype=np.float64, copy=True)
        return state

    def empty_like(self) -> PCARefineState:
        return self.starting_from(self.schema, self.basis, self.center)

    def _update(self, X: np.ndarray, y: np.ndarray | None, context: Any = None,
                weight: np.ndarray | None = None) -> None:
        n = self.weight_sum
        for rows in mini_batches(len(X), rows_per_batch(self.n_features)):
            Z = (X[rows] - self.center) @ self.basis.T
            nb, off_b, scatter_b = batch_moments(Z, np.zeros(len(self.basis)), scatter=True,
                                                 weights=None if weight is None else weight[rows])
            n, self.offset, self.scatter = merge_moments(n, self.offset, self.scatter, nb, off_b, scatter_b)

    def _merge(self, other: PCARefineState) -> None:
        if not (np.array_equal(self.basis, other.basis) and np.array_equal(self.center, other.center)):
            raise StateError("cannot merge pca_refine states that project on different bases")
        _, self.offset, self.scatter = merge_moments(self.weight_sum, self.offset, self.scatter,
                                                     other.weight_sum, other.offset, other.scatter)

    def finalize(self) -> dict[str, Any]:
        return {"scatter": self.scatter.copy(), "n_rows": self.n_rows}


def _sketch_eigenvalues(mu: np.ndarray, delta: float, total: float, rank: int) -> np.ndarray:
    """Estimates of the top eigenvalues of the scatter matrix from the sketch's ``mu`` (descending).

    Each true eigenvalue lies in ``[mu_i, mu_i + delta]``. A direction the sketch
    holds above the total shrinkage (``mu_i >= delta``) lost about ``delta`` to the
    shrinks, so it gets ``mu_i + delta`` (compensated Frequent Directions). A weaker
    one sits in the bulk of the spectrum, where ``mu_i + delta`` overstates it (5x
    on a flat noise tail): it gets the mean variance the stronger ones leave
    unexplained, ``(total - sum_{j<i} lam_j) / (rank - i)``, clipped to its interval.
    """
    lam = mu + delta
    for i in np.flatnonzero(mu < delta):
        rest = (total - lam[:i].sum()) / (rank - i)
        lam[i] = min(max(rest, mu[i]), mu[i] + delta)
    return np.minimum.accumulate(lam)


def _owned_c_array(A: np.ndarray) -> np.ndarray:
    """``A`` itself when it is a writeable C-ordered float64 array owning its data, else such a copy."""
    if A.dtype == np.float64 and A.flags.c_contiguous and A.flags.writeable and A.flags.owndata:
        return A
    return np.array(A, dtype=np.float64, order="C", copy=True)


def _add_gram_lower(S: np.ndarray, D: np.ndarray) -> None:
    """``S += D^T D`` in place on the lower triangle of ``S`` (BLAS syrk; no ``d x d`` temporary).

    ``S`` is C-ordered, so its transpose is the Fortran-ordered matrix BLAS updates
    (its upper triangle is our lower one). Call :func:`_mirror_lower` after the last one.
    """
    syrk = scipy.linalg.blas.get_blas_funcs("syrk", (S,))
    if D.flags.f_contiguous:  # rows of a column-major partition: D^T D straight from D, no copy
        out = syrk(alpha=1.0, a=D, beta=1.0, c=S.T, trans=1, lower=0, overwrite_c=1)
    else:
        out = syrk(alpha=1.0, a=np.asfortranarray(D.T), beta=1.0, c=S.T, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, S):  # never expected: BLAS was handed a copy
        S[...] = out.T


def _add_outer(S: np.ndarray, x: np.ndarray) -> None:
    """``S += x x^T`` in place on all of ``S`` (BLAS ger; no ``d x d`` temporary)."""
    ger = scipy.linalg.blas.get_blas_funcs("ger", (S,))
    out = ger(alpha=1.0, x=x, y=x, a=S.T, overwrite_a=1)
    if not np.shares_memory(out, S):
        S[...] = out.T


def _mirror_lower(S: np.ndarray, block: int = 512) -> None:
    """Copy the lower triangle of the square ``S`` onto its upper one, in place, block by block."""
    d = len(S)
    for i0 in range(0, d, block):
        i1 = min(i0 + block, d)
        S[:i0, i0:i1] = S[i0:i1, :i0].T
        diag = S[i0:i1, i0:i1]
        upper = np.triu_indices(i1 - i0, 1)
        diag[upper] = diag.T[upper]


def _chan_row(n_a: float, off_a: np.ndarray, n_b: float, off_b: np.ndarray) -> np.ndarray:
    """The row whose outer product is Chan's correction ``n_a n_b / n * delta delta^T`` (counts or total weights)."""
    return (np.sqrt(n_a * n_b / (n_a + n_b)) * (off_b - off_a))[None, :]


# ---------------------------------------------------------------------------- the estimator
class PCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, StateEstimator):
    """Principal component analysis fitted in one pass from a fixed-size state.

    Parameters
    ----------
    n_components : int, optional
        Components of the model. Default: every component the state answers for
        (``min(max_components, rows, features)``). A finalize override:
        ``pca.finalize(n_components=k)`` gives any ``k <= max_components`` without data.
    max_components : int, optional
        Largest ``n_components`` the state must answer for. Default: the number of
        features (regular), ``n_components`` (randomized).
    mode : {"regular", "randomized"}
        ``"regular"``: exact, state ``d x d`` (for up to a few thousand features).
        ``"randomized"``: a Frequent Directions sketch of ``l x d`` for wide data,
        with the certified error bound in the module docstring.
    extra_components : int, optional
        Randomized: sketch rows beyond ``max_components``; ``l = max_components +
        extra_components`` (capped at the number of features, where the sketch is
        exact). Default ``max(30, 2 max_components)``, see :func:`default_extra_components`.
        Larger is more accurate: the bound shrinks as ``1 / (l + 1 - k)``.
    refine : bool
        Randomized: read the data a second time and compute the exact centred
        scatter inside the sketch's row space (``l x l``), then take the components
        and variances from it (Rayleigh-Ritz, as an in-memory randomized SVD does
        with its range finder). The variances become exact along the returned
        components, and the bound tightens. Needs an input that can be read again
        (Dask, pandas, numpy, or ``daskstate.batches(a list)``).
    subtract_mean : bool
        Centre the data (True, ordinary PCA). False: components of the uncentred
        second moment (like a truncated SVD); ``mean_`` is then zero. A finalize override.
    whiten : bool
        Scale the transformed components to unit variance. A finalize override.
    random_state : int, optional
        Accepted for scikit-learn compatibility. Both modes are deterministic
        (Frequent Directions uses no random numbers), so it has no effect.
    features : list of str, optional
        Columns to use (default: every numeric column).
    on_invalid : {"raise", "skip"}
        Rows with NaN or inf raise an error naming the partition and column, or are
        dropped and counted in ``state_.n_skipped``.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Principal axes, with scikit-learn's ``svd_flip`` sign convention (the
        largest-magnitude entry of each component is positive).
    explained_variance_ : ndarray of shape (n_components,)
        Variance along each component (``ddof=1``, as scikit-learn).
    explained_variance_ratio_ : ndarray of shape (n_components,)
        Fraction of the total variance (exact in both modes).
    singular_values_ : ndarray of shape (n_components,)
        Singular values of the centred data.
    mean_ : ndarray of shape (n_features,)
    noise_variance_ : float
        Mean variance of the discarded directions (probabilistic PCA).
    explained_variance_bound_ : float
        Certified bound on the relative error of ``explained_variance_.sum()``, the
        variance the components explain: 0.01 means "within 1%" (0 in regular mode).
        A warning is issued after ``fit`` when it exceeds ``BOUND_WARNING`` (10%).
    explained_variance_interval_ : ndarray of shape (n_components, 2)
        Certified ``[low, high]`` for each true explained variance (randomized:
        ``mu_i / (n - 1)`` and ``(mu_i + Delta) / (n - 1)``; with ``refine=True`` the
        low end is the exact variance along the component).
    n_components_ : int
    n_samples_seen_ : int
    state_ : PCAState

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 3)) * [3.0, 1.0, 0.1] + 1e6
    >>> pca = daskstate.PCA(n_components=2).fit(X)
    >>> np.round(pca.explained_variance_ratio_, 3)
    array([0.904, 0.095])
    >>> pca.transform(X).shape
    (1000, 2)
    >>> pca.finalize(n_components=1).components_.shape
    (1, 3)
    """

    state_class = PCAState

    def __init__(self, n_components: int | None = None, *, max_components: int | None = None,
                 mode: str = "regular", extra_components: int | None = None, refine: bool = False,
                 subtract_mean: bool = True, whiten: bool = False, random_state: int | None = None, features: list[str] | None = None,
                 on_invalid: str = "raise"):
        self.n_components = n_components
        self.max_components = max_components
        self.mode = mode
        self.extra_components = extra_components
        self.refine = refine
        self.subtract_mean = subtract_mean
        self.whiten = whiten
        self.random_state = random_state
        self.features = features
        self.on_invalid = on_invalid

    _parameter_constraints: ClassVar[dict] = {
        **StateEstimator._parameter_constraints,
        "n_components": [Ints(1), None],
        "max_components": [Ints(1), None],
        "mode": [StrOptions(set(MODES))],
        "extra_components": [Ints(1), None],
        "refine": ["boolean"],
        "subtract_mean": ["boolean"],
        "whiten": ["boolean"],
        "random_state": [Ints(0), None],
        "features": [list, tuple, None],
    }

    def _check_params_together(self) -> None:
        if self.n_components is not None and self.max_components is not None \
                and self.n_components > self.max_components:
            raise ValueError(
                f"n_components={self.n_components} is larger than max_components={self.max_components}"
            )
        if self.mode == "randomized" and self.n_components is None and self.max_components is None:
            raise ValueError(
                "mode='randomized' needs n_components or max_components: the sketch size is fixed before "
                "reading data"
            )

    def _state_params(self, inp: Input) -> dict[str, Any]:
        d = inp.schema.n_features
        for name in ("n_components", "max_components"):
            value = getattr(self, name)
            if value is not None and value > d:
                raise ValueError(f"{name}={value} exceeds the number of features ({d})")
        if self.mode == "regular":
            return {"mode": "regular", "max_components": int(self.max_components or d)}
        k_max = int(self.max_components or self.n_components)
        extra = self.extra_components if self.extra_components is not None else default_extra_components(k_max)
        return {"mode": "randomized", "max_components": k_max, "sketch_rows": int(min(k_max + extra, d))}

    def _finalize_overrides(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "whiten": bool(self.whiten),
                "subtract_mean": bool(self.subtract_mean)}

    def fit(self, X: Any, y: Any = None, *, sample_weight: Any = None, checkpoint: Any = None,
            checkpoint_every: int | None = None, progress: bool = False, split_every: int = 8) -> PCA:
        """Fit in one pass (two with ``refine=True`` in randomized mode).

        Parameters are those of :meth:`daskstate.StateEstimator.fit`; the refining
        pass checkpoints to ``<checkpoint>-refine``. ``sample_weight`` (an array-like
        for in-memory input, a column name or an aligned Dask Series / Array for Dask
        input) weights the mean and the scatter matrix (the sketch's rows are scaled
        by ``sqrt(w)``) as frequency weights: an integer weight is the row repeated,
        and variances divide by the total weight minus 1.
        """
        self._validate_params()
        refine = self.refine and self.mode == "randomized"
        rereadable = isinstance(X, Batches) and isinstance(X.iterable, list | tuple)
        if refine and not (rereadable or isinstance(X, da.Array | dd.DataFrame | np.ndarray | pd.DataFrame | list
                                                        | tuple)):
            raise ValueError(
                "refine=True reads the data a second time, but an iterator of batches is read once; "
                "pass a Dask, pandas or numpy input (or daskstate.batches(a list))"
            )
        X, y = _array_likes(X, y)
        inp = self._weighted_input(X, y, sample_weight=sample_weight)  # once: an iterator's first batch is read
        if self.mode == "regular":
            self._check_state_memory(inp, split_every)
        super().fit(inp, checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                    split_every=split_every)
        state = self.state_
        if refine and state.sketch_rows < state.n_features:
            start = PCARefineState.starting_from(state.schema, state.sketch_basis(), state.mean)
            path = None if checkpoint is None else f"{checkpoint}-refine"
            refinement = self._fold(self._weighted_input(X, sample_weight=sample_weight), start, checkpoint=path,
                                    checkpoint_every=checkpoint_every if path else None, progress=progress,
                                    split_every=split_every)
            self._set_state(state.with_refinement(refinement), self.finalize_overrides_)
        self._warn_if_inexact()
        return self

    def partial_fit(self, X: Any, y: Any = None, *, sample_weight: Any = None, **fold_kwargs: Any) -> PCA:
        """Fold more (optionally weighted) data into the state (one pass; a refinement is dropped, as it no longer holds)."""
        if not hasattr(self, "state_"):
            return self.fit(X, y, sample_weight=sample_weight, **fold_kwargs)
        super().partial_fit(X, y, sample_weight=sample_weight, **fold_kwargs)
        self._warn_if_inexact()
        return self

    def _check_state_memory(self, inp: Input, split_every: int) -> None:
        """Say before reading data what a wide regular state needs; refuse what memory cannot hold.

        Each partition's update holds its own ``d x d`` scatter matrix and the merge
        tree keeps up to ``split_every`` of them waiting per level, so a Dask fit
        holds about ``split_every + cores + 2`` states at its peak (measured: 12x the
        state with 8 partitions); an in-memory fit about 4 (its state, the update's,
        the merge's and finalize's eigen-decomposition).
        """
        d = inp.schema.n_features
        state_bytes = 8 * d * d
        if state_bytes < REGULAR_WARN_BYTES:
            return
        copies = int(split_every) + (os.cpu_count() or 1) + 2 if inp.is_dask else 4
        need = copies * state_bytes
        k = int(self.max_components or self.n_components or 10)
        ell = min(k + default_extra_components(k), d)
        what = (
            f"PCA(mode='regular') on {d:,} features keeps the {d:,} x {d:,} scatter matrix: "
            f"{_gb(state_bytes)} per state, and this fit holds up to about {copies} of them ({_gb(need)}). "
            f"mode='randomized' keeps a {ell} x {d:,} sketch ({_gb(8 * ell * d)}) with a certified error bound "
            f"(refine=True makes its variances exact along the components)"
        )
        available = _available_memory()
        if available is not None and need > available:
            raise MemoryError(f"{what}; only {_gb(available)} of memory are available")
        warnings.warn(what, WideStateWarning, stacklevel=3)

    def _warn_if_inexact(self) -> None:
        bound = self.explained_variance_bound_
        if bound > BOUND_WARNING:
            hint = "" if self.state_.is_refined else ", or refine=True (a second pass)"
            warnings.warn(
                f"the sketch certifies the explained variance of the {self.n_components_} components only "
                f"to within {bound:.0%} (explained_variance_bound_); on real data the error is usually far "
                f"smaller, but to be sure use a larger extra_components (now "
                f"{self.state_.sketch_rows - int(self.state_.params['max_components'])}){hint}",
                SketchAccuracyWarning, stacklevel=3,
            )

    def _min_rows_needed(self) -> int:
        return max(2, self.n_components or 1)

    def _check_enough_rows(self, state: State) -> None:
        self._check_total_weight(state)
        need = self._min_rows_needed()
        if state.n_rows < need:
            why = f"n_components={self.n_components}" if need > 2 else "variances (ddof=1)"
            skipped = f" ({state.n_skipped} invalid rows were skipped)" if state.n_skipped else ""
            raise DataError(
                f"PCA needs at least {need} valid row(s) for {why}; the input had {state.n_rows}{skipped} "
                f"(n_samples={state.n_rows})"
            )

    # ---- applying the model --------------------------------------------------------
    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the transformed columns: ``pca0, pca1, ...`` (as scikit-learn)."""
        self._check_fitted()
        return np.asarray([f"pca{i}" for i in range(self.n_components_)], dtype=object)

    def _whiten_scale(self) -> np.ndarray:
        scale = np.sqrt(self.explained_variance_)
        return np.maximum(scale, np.finfo(np.float64).eps)

    def transform(self, X: Any) -> Any:
        """Project onto the components (whitened if ``whiten``); lazy for Dask input.

        Returns a frame with columns ``pca0..`` for DataFrame input, an array otherwise.
        """
        self._check_fitted()
        mean, proj = self.mean_, self.components_.T
        scale = self._whiten_scale() if self.whiten else None

        def project(A: np.ndarray) -> np.ndarray:
            Z = (A - mean) @ proj
            if scale is not None:
                Z /= scale
            return Z

        return self._map_rows(X, project, list(self.get_feature_names_out()), "transform")

    def _back(self, Z: np.ndarray) -> np.ndarray:
        W = self.components_ if not self.whiten else self._whiten_scale()[:, None] * self.components_
        return Z @ W + self.mean_

    def inverse_transform(self, X: Any) -> Any:
        """Map component scores back to feature space; lazy for Dask input.

        ``X`` has ``n_components_`` columns (taken in order). Returns a frame with the
        fitted feature names for DataFrame input, an array otherwise.
        """
        self._check_fitted()
        k, features = self.n_components_, list(self.state_.schema.features)
        dtype_meta = pd.DataFrame({f: pd.Series([], dtype=np.float64) for f in features})

        def check(shape: tuple) -> None:
            if len(shape) != 2 or shape[1] != k:
                raise DataError(f"inverse_transform: input of shape {shape}; expected {k} component columns")

        def back(block: Any) -> np.ndarray:
            A = np.asarray(block, dtype=np.float64)
            check(A.shape)
            return self._back(A)

        if isinstance(X, dd.DataFrame):
            check((None, len(X.columns)))
            return X.map_partitions(lambda df: pd.DataFrame(back(df), index=df.index, columns=features),
                                    meta=dtype_meta, token="pca-inverse-transform")
        if isinstance(X, da.Array):
            check(X.shape)
            X = X.rechunk({1: -1})
            # map_blocks' name is the full key: it must be unique to these inputs and this model
            name = "pca-inverse-transform-" + tokenize(X.name, self.components_, self.mean_, self.whiten,
                                                       self.explained_variance_)
            return X.map_blocks(back, chunks=(X.chunks[0], (len(features),)), dtype=np.float64, name=name)
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(back(X), index=X.index, columns=features)
        return back(X)

    def reconstruction_error(self, X: Any) -> float:
        """Mean squared reconstruction error per row, ``mean |x - inverse_transform(transform(x))|^2``.

        Lower is better (:meth:`score` is scikit-learn's average log-likelihood). Computed
        (not lazy) for Dask input; rows skipped under ``on_invalid="skip"`` are ignored.
        """
        self._check_fitted()
        mean, V = self.mean_, self.components_

        def residual(A: np.ndarray) -> np.ndarray:
            D = A - mean
            R = D - (D @ V.T) @ V
            return np.einsum("ij,ij->i", R, R)

        errors = self._map_rows(X, residual, None, "reconstruction-error")
        if isinstance(errors, dd.Series | da.Array):
            average = errors.mean() if isinstance(errors, dd.Series) else da.nanmean(errors)
            return float(self._compute(average)[0])
        return float(np.nanmean(np.asarray(errors)))

    # ---- scikit-learn -------------------------------------------------------------------
    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    def _model_variances(self) -> np.ndarray:
        """Variances of the probabilistic PCA model along ``components_`` (scikit-learn's ``get_covariance``)."""
        ev, noise = self.explained_variance_, self.noise_variance_
        excess = np.where(ev > noise, ev - noise, 0.0) * (ev if self.whiten else 1.0)
        return excess + noise

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of each row under the probabilistic PCA model (Tipping and Bishop), as scikit-learn's.

        The model's covariance is ``noise_variance_`` in every direction but the
        components'; no ``d x d`` matrix is formed. Lazy for Dask input.
        """
        self._check_fitted()
        mean, V, d = self.mean_, self.components_, self.n_features_in_
        var, noise = self._model_variances(), self.noise_variance_
        rest = d - len(var)
        with np.errstate(divide="ignore"):
            logdet = float(np.log(var).sum() + (rest * np.log(noise) if rest else 0.0))

        def log_likelihood(A: np.ndarray) -> np.ndarray:
            D = A - mean
            Z = D @ V.T
            quad = (Z**2 / var).sum(axis=1)
            if rest:
                with np.errstate(divide="ignore", invalid="ignore"):
                    quad = quad + (np.einsum("ij,ij->i", D, D) - (Z**2).sum(axis=1)) / noise
            return -0.5 * (quad + d * np.log(2 * np.pi) + logdet)

        return self._map_rows(X, log_likelihood, None, "score-samples")

    def score(self, X: Any, y: Any = None) -> float:
        """Average log-likelihood of the rows (scikit-learn's ``PCA.score``: higher is better); computes Dask input.

        The reconstruction error is :meth:`reconstruction_error`.
        """
        values = self.score_samples(X)
        if isinstance(values, dd.Series | da.Array):
            average = values.mean() if isinstance(values, dd.Series) else da.nanmean(values)
            return float(self._compute(average)[0])
        return float(np.nanmean(np.asarray(values)))

    def to_sklearn(self) -> Any:
        """The equivalent fitted :class:`sklearn.decomposition.PCA` (same ``transform``, ``score``, ...)."""
        from sklearn.decomposition import PCA as SklearnPCA

        self._check_fitted()
        out = SklearnPCA(n_components=self.n_components_, whiten=self.whiten)
        for name in ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_",
                     "mean_", "noise_variance_", "n_components_"):
            value = getattr(self, name)
            setattr(out, name, value.copy() if isinstance(value, np.ndarray) else value)
        out.n_samples_ = self.n_samples_seen_
        return _fitted_attributes(self, out)

