"""Standardisation: count, mean and variance per feature, merged with Chan's formulas."""

from __future__ import annotations

from typing import Any

import numpy as np

from daskstate.data import Input
from daskstate.estimator import StateEstimator
from daskstate.numerics import batch_moments, merge_moments, mini_batches, rebase
from daskstate.state import RoundContext, State, register


@register
class ScalerState(State):
    """Per-feature count, mean and sum of squared deviations (``m2``).

    The mean is kept as ``shift + offset`` (``shift`` is the first row seen) so that
    data with a large mean and a small spread loses no digits. Exact and mergeable:
    ``merge(update(A), update(B)) == update(A ∪ B)`` to rounding.
    """

    algorithm = "standard_scaler"
    array_names = ("shift", "offset", "m2")

    def _init_arrays(self) -> None:
        self.shift = np.zeros(self.n_features)
        self.offset = np.zeros(self.n_features)
        self.m2 = np.zeros(self.n_features)

    def _update(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> None:
        n = self.n_rows
        if n == 0:
            self.shift = X[0].copy()
        for rows in mini_batches(len(X)):
            nb, off_b, m2_b = batch_moments(X[rows], self.shift)
            n, self.offset, self.m2 = merge_moments(n, self.offset, self.m2, nb, off_b, m2_b)

    def _merge(self, other: ScalerState) -> None:
        off_b = rebase(other.offset, other.shift, self.shift)
        _, self.offset, self.m2 = merge_moments(self.n_rows, self.offset, self.m2, other.n_rows, off_b, other.m2)

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.offset

    def finalize(self, with_mean: bool = True, with_std: bool = True) -> dict[str, Any]:
        var = self.m2 / self.n_rows if self.n_rows else np.full(self.n_features, np.nan)
        scale = np.sqrt(var)
        scale = np.where(scale == 0.0, 1.0, scale)
        return {
            "mean_": self.mean,
            "var_": var,
            "scale_": scale if with_std else None,
            "with_mean": with_mean,
            "with_std": with_std,
        }


class StandardScaler(StateEstimator):
    """Standardise features to zero mean and unit variance, fitted in one pass.

    Parameters
    ----------
    features : list of str, optional
        Columns to use (default: every numeric column).
    with_mean, with_std : bool
        Centre / scale in ``transform``. They only shape the model, so
        ``finalize(with_mean=False)`` switches without reading data.
    on_invalid : {"raise", "skip"}
        Rows with NaN or inf raise an error naming the partition and column, or are
        dropped and counted in ``state_.n_skipped``.

    Attributes
    ----------
    mean_, var_, scale_ : ndarray of shape (n_features,)
        Mean, population variance (ddof=0), and standard deviation (1 where 0).
    n_samples_seen_ : int
    state_ : ScalerState

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> X = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> sc = daskstate.StandardScaler().fit(X)
    >>> sc.mean_
    array([ 2., 20.])
    >>> sc.transform(X)
    array([[-1., -1.],
           [ 1.,  1.]])
    """

    state_class = ScalerState
    aliases = ("scaler",)

    def __init__(self, features: list[str] | None = None, *, with_mean: bool = True,
                 with_std: bool = True, on_invalid: str = "raise"):
        self.features = features
        self.with_mean = with_mean
        self.with_std = with_std
        self.on_invalid = on_invalid

    def _state_params(self, inp: Input) -> dict[str, Any]:
        return {}

    def _finalize_overrides(self) -> dict[str, Any]:
        return {"with_mean": self.with_mean, "with_std": self.with_std}

    def _centre_scale(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.mean_ if self.with_mean else np.zeros_like(self.mean_)
        scale = self.scale_ if self.with_std else np.ones_like(self.mean_)
        return mean, scale

    def transform(self, X: Any) -> Any:
        """Standardised features; lazy for Dask input."""
        self._check_fitted()
        mean, scale = self._centre_scale()
        return self._map_rows(X, lambda A: (A - mean) / scale, list(self.feature_names_in_), "transform")

    def inverse_transform(self, X: Any) -> Any:
        """Back to the original units; lazy for Dask input."""
        self._check_fitted()
        mean, scale = self._centre_scale()
        return self._map_rows(X, lambda A: A * scale + mean, list(self.feature_names_in_), "inverse-transform")
