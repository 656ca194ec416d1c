"""Standardisation: count, mean and variance per feature (the moments state), merged with Chan's formulas."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import OneToOneFeatureMixin, TransformerMixin

from daskstate.data import Input
from daskstate.estimator import StateEstimator, _fitted_attributes
from daskstate.state import MomentsState, register


@register
class ScalerState(MomentsState):
    """Per-feature count, mean and sum of squared deviations (``m2``): a :class:`~daskstate.state.MomentsState`.

    Exact and mergeable: ``merge(update(A), update(B)) == update(A ∪ B)`` to rounding.
    """

    algorithm = "standard_scaler"

    def finalize(self, with_mean: bool = True, with_std: bool = True) -> dict[str, Any]:
        var = self.variance
        scale = np.sqrt(var)
        scale = np.where(scale == 0.0, 1.0, scale)
        out = {
            "mean_": self.mean,
            "var_": var,
            "scale_": scale if with_std else None,
            "with_mean": with_mean,
            "with_std": with_std,
        }
        if self.is_weighted:  # as scikit-learn: the total weight of the rows seen
            out["n_samples_seen_"] = self.weight_sum
        return out


class StandardScaler(OneToOneFeatureMixin, TransformerMixin, StateEstimator):
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
    n_samples_seen_ : int or float
        Rows seen; with ``sample_weight``, their total weight (as scikit-learn).
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
    _parameter_constraints: ClassVar[dict] = {
        **StateEstimator._parameter_constraints,
        "features": [list, tuple, None],
        "with_mean": ["boolean"],
        "with_std": ["boolean"],
    }

    def __init__(self, features: list[str] | None = None, *, with_mean: bool = True,
                 with_std: bool = True, on_invalid: str = "raise"):
        self.features = features
        self.with_mean = with_mean
        self.with_std = with_std
        self.on_invalid = on_invalid

    def _state_params(self, inp: Input) -> dict[str, Any]:
        return {}

    def fit(self, X: Any, y: Any = None, *, sample_weight: Any = None, **fit_kwargs: Any) -> StandardScaler:
        """Fit in one pass; ``sample_weight`` gives weighted moments (as scikit-learn's ``StandardScaler``).

        ``sample_weight``: an array-like for in-memory input, a column name (or an
        aligned Dask Series / Array) for Dask input. The other keywords are
        :meth:`daskstate.StateEstimator.fit`'s (``checkpoint``, ``split_every``, ...).
        """
        return super().fit(X, y, sample_weight=sample_weight, **fit_kwargs)

    def partial_fit(self, X: Any, y: Any = None, *, sample_weight: Any = None, **fit_kwargs: Any) -> StandardScaler:
        """Fold more (optionally weighted) rows into the moments; see :meth:`fit`."""
        return super().partial_fit(X, y, sample_weight=sample_weight, **fit_kwargs)

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
        return self._map_rows(X, lambda A: (A - mean) / scale, list(self.state_.schema.features), "transform")

    def inverse_transform(self, X: Any) -> Any:
        """Back to the original units; lazy for Dask input."""
        self._check_fitted()
        mean, scale = self._centre_scale()
        return self._map_rows(X, lambda A: A * scale + mean, list(self.state_.schema.features), "inverse-transform")

    # ---- scikit-learn -------------------------------------------------------------------
    def to_sklearn(self) -> Any:
        """The equivalent fitted :class:`sklearn.preprocessing.StandardScaler` (same ``transform``)."""
        from sklearn.preprocessing import StandardScaler as SklearnScaler

        self._check_fitted()
        out = SklearnScaler(with_mean=self.with_mean, with_std=self.with_std)
        out.mean_ = self.mean_.copy()
        out.var_ = self.var_.copy()
        out.scale_ = self.scale_.copy() if self.with_std else None
        out.n_samples_seen_ = self.n_samples_seen_
        return _fitted_attributes(self, out)
