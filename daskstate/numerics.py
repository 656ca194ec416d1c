"""Shared numerics: stable moment merging, mini-batch slicing, squared distances."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

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
    the spread is 1.
    """
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
    """
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    weight = n_a * n_b / n
    if m2_a.ndim == 2:
        m2 = m2_a + m2_b + weight * np.outer(delta, delta)
    else:
        m2 = m2_a + m2_b + weight * delta * delta
    return n, mean, m2


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
