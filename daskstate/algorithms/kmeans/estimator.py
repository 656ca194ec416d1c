"""The scikit-learn estimator on top of :class:`KMeansState`: fit, refining passes, predict, cost curve."""

from __future__ import annotations

import math
import os
import zlib
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils._param_validation import StrOptions

from daskstate.algorithms.kmeans.numerics import nearest_centers, row_norms_sq
from daskstate.algorithms.kmeans.state import (
    REFINE_CANDIDATES,
    KMeansLloydState,
    KMeansState,
    auto_extra_center_factor,
    auto_sample_size,
)
from daskstate.data import Input, as_array
from daskstate.errors import DataError
from daskstate.estimator import Floats, Ints, StateEstimator, _fitted_attributes
from daskstate.numerics import single_blas_thread
from daskstate.state import State


# ----------------------------------------------------------------------------- the estimator
class KMeans(ClusterMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, StateEstimator):
    """Streaming k-means in one pass: a core set that answers for any ``k <= k_max``.

    The state is a weighted core set of ``K = k_max x extra_center_factor``
    centres, updated per mini-batch and merged across partitions; ``fit`` reduces
    it to ``n_clusters`` centres with a weighted k-means on the core set alone, so
    :meth:`finalize` gives the model for another ``k`` and :meth:`cost_curve` the
    elbow curve without reading data again.

    Parameters
    ----------
    n_clusters : int, default 8
        Number of clusters of the fitted model (``k``).
    k_max : int, optional
        Largest ``k`` the state must answer for (default ``n_clusters``).
    extra_center_factor : int or "auto"
        The core set holds ``K = k_max * extra_center_factor`` centres. ``"auto"``:
        see :func:`auto_extra_center_factor` (``K = min(max(50, 5 k_max), max(200, 2 k_max))``).
    init : {"k-means++", "random"}
        Seeding of the core set (from the first mini-batch) and of the final
        reduction.
    epochs : int, default 1
        Passes over the data. Passes after the first refine the ``n_clusters``
        centres with exact Lloyd iterations over all rows, starting from the best
        few distinct reductions of the core set and keeping the one with the lowest
        exact SSE; they stop early once the centres move by less than
        ``local_lloyd_tol``. Needs an input that can be read again (Dask, pandas or
        numpy; not an iterator). ``partial_fit`` always makes one streaming pass.
    mini_batch_size : int, default 5000
        Rows per update step (rows are assigned to the centres of the previous step).
    local_lloyd_max_iter : int, default 300
        Weighted Lloyd iterations of the final reduction on the core set.
    local_lloyd_tol : float, default 1e-4
        Relative tolerance on the centres' move (scikit-learn's ``tol``).
    local_lloyd_num_trials : int or "auto"
        k-means++ seedings of the final reduction, plus one from Ward's agglomeration of
        the core set; the best after Lloyd is kept. ``"auto"``: 10 (up to 100 on small data that the
        state's sample holds whole, while the restarts stay cheap).
    half_life_time_size : int, default 0
        0: every row counts the same. Otherwise the weight of old rows halves every
        that many rows (for drifting streams; applied per mini-batch and on merge,
        where the merged-in state holds the newer rows).
    sample_size : int or "auto"
        Rows of the state's uniform sample (0: none), with which ``finalize`` polishes
        the core set's reduction with Lloyd iterations (on the core set's cells filled
        in with their sampled rows, see :mod:`daskstate.algorithms.kmeans`). ``"auto"``: see
        :func:`auto_sample_size` (``400 k_max`` rows, at most 20,000 rows or 4 MiB).
        Not in the original core-set design: one pass with 20 partitions and
        ``k = 100`` on 16-dimensional blobs is 5.8% above scikit-learn's SSE from
        the merged core set alone, 0.6% with the sample.
    compute_inertia : bool, default False
        Compute the exact ``inertia_`` with one more pass over Dask input (for
        in-memory input it is always computed, along with ``labels_``).
    random_state : int, optional
        Seed. Randomness is derived from it and from the data's content, never from
        the order tasks run in, so a recomputed task gives the same state.
        ``None`` draws a seed once per ``fit`` (stored in the state); with a
        ``checkpoint``, the seed comes from its path, so that a re-run resumes.
    features : list of str, optional
        Columns to use (default: every numeric column).
    on_invalid : {"raise", "skip"}
        Rows with NaN or inf raise an error, or are skipped and counted.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features)
    labels_ : ndarray (n_rows,)
        Only after ``fit`` on in-memory (pandas / numpy) input; ``predict`` otherwise.
    inertia_ : float
        Exact sum of squared distances of the training rows to their nearest centre.
        Only when it was computed (in-memory input, or ``compute_inertia=True``).
    estimated_inertia_ : float
        The state's own estimate of ``inertia_`` (no data read).
    n_iter_ : int
        Lloyd iterations behind ``cluster_centers_``: weighted ones on the core set
        and on the state's sample, plus the exact passes over the data of ``epochs > 1``.
    n_passes_ : int
        Exact Lloyd passes over the data (``epochs - 1`` unless converged earlier).
    state_ : KMeansState

    Notes
    -----
    Methods: :meth:`predict` (nearest centre), :meth:`transform` (distances to the
    centres), :meth:`ssd` and :meth:`msd` (sum and mean of squared distances to the
    nearest centre), :meth:`score` (``-ssd``), :meth:`finalize` (the model for
    other ``n_clusters``, ``init`` or ``local_lloyd_*`` settings, no data read) and
    :meth:`cost_curve` (estimated SSE for each ``k``, no data read).

    Measured against scikit-learn's ``KMeans(n_init=10)`` SSE: one pass is within
    0.5% on digits (k = 10) and exact on separated blobs; with 20 partitions and
    ``k = 100`` on 10 blobs in 16 dimensions (many clusters per natural group), one
    pass is 0.6% above it (5.8% with ``sample_size=0``). The polish's own noise is
    about ``k / sample_size`` of the SSE; ``epochs=2`` removes it. On real tables in
    their own row order (``benchmarks/bench_kmeans.py --real-data``; diamonds sorted by
    price, county murder counts, flights), the median over seeds at ``k = 10`` and 30
    is within 1.5% of scikit-learn's ``KMeans(n_init=3, random_state=0)``, which its
    own other seeds miss by as much on data with several near-equal local optima.

    Examples
    --------
    >>> import numpy as np, daskstate
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.1, size=(100, 2)) for c in (0.0, 5.0, 10.0)])
    >>> km = daskstate.KMeans(n_clusters=3, k_max=5, random_state=0).fit(X)
    >>> np.sort(km.cluster_centers_[:, 0]).round(1)
    array([-0.,  5., 10.])
    >>> km.predict(np.array([[5.1, 4.9]])) == km.predict(np.array([[5.0, 5.0]]))
    array([ True])
    >>> km.finalize(n_clusters=2).cluster_centers_.shape
    (2, 2)
    """

    state_class = KMeansState

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        k_max: int | None = None,
        extra_center_factor: int | str = "auto",
        init: str = "k-means++",
        epochs: int = 1,
        mini_batch_size: int = 5000,
        local_lloyd_max_iter: int = 300,
        local_lloyd_tol: float = 1e-4,
        local_lloyd_num_trials: int | str = "auto",
        half_life_time_size: int = 0,
        sample_size: int | str = "auto",
        compute_inertia: bool = False,
        random_state: int | None = None,
        features: list[str] | None = None,
        on_invalid: str = "raise",
    ):
        self.n_clusters = n_clusters
        self.k_max = k_max
        self.extra_center_factor = extra_center_factor
        self.init = init
        self.epochs = epochs
        self.mini_batch_size = mini_batch_size
        self.local_lloyd_max_iter = local_lloyd_max_iter
        self.local_lloyd_tol = local_lloyd_tol
        self.local_lloyd_num_trials = local_lloyd_num_trials
        self.half_life_time_size = half_life_time_size
        self.sample_size = sample_size
        self.compute_inertia = compute_inertia
        self.random_state = random_state
        self.features = features
        self.on_invalid = on_invalid

    # ---- hyperparameters --------------------------------------------------------------
    _parameter_constraints: ClassVar[dict] = {
        **StateEstimator._parameter_constraints,
        "n_clusters": [Ints(1)],
        "k_max": [Ints(1), None],
        "extra_center_factor": [Ints(1), StrOptions({"auto"})],
        "init": [StrOptions({"k-means++", "random"})],
        "epochs": [Ints(1)],
        "mini_batch_size": [Ints(1)],
        "local_lloyd_max_iter": [Ints(1)],
        "local_lloyd_tol": [Floats(0)],
        "local_lloyd_num_trials": [Ints(1), StrOptions({"auto"})],
        "half_life_time_size": [Floats(0)],
        "sample_size": [Ints(0), StrOptions({"auto"})],
        "compute_inertia": ["boolean"],
        "random_state": [Ints(0), None],
        "features": [list, tuple, None],
    }

    def _check_params_together(self) -> None:
        if self.k_max is not None and self.k_max < self.n_clusters:
            raise ValueError(f"k_max must be >= n_clusters={self.n_clusters}, got {self.k_max}")
        if self.half_life_time_size and self.epochs > 1:
            raise ValueError(
                f"epochs={self.epochs} refines on all rows alike, which contradicts "
                f"half_life_time_size={self.half_life_time_size}; use epochs=1 with decay"
            )

    @property
    def _k_max(self) -> int:
        return int(self.k_max if self.k_max is not None else self.n_clusters)

    def _state_params(self, inp: Input) -> dict[str, Any]:
        factor = self.extra_center_factor
        if factor == "auto":
            factor = auto_extra_center_factor(self._k_max)
        seed = self.random_state
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        return {
            "k_max": self._k_max,
            "n_centers": self._k_max * int(factor),
            "init": self.init,
            "mini_batch_size": int(self.mini_batch_size),
            "local_lloyd_tol": float(self.local_lloyd_tol),
            "half_life_time_size": float(self.half_life_time_size),
            "sample_size": auto_sample_size(inp.schema.n_features, self._k_max) if self.sample_size == "auto"
            else int(self.sample_size),
            "seed": int(seed),
        }

    def _finalize_overrides(self) -> dict[str, Any]:
        return {
            "n_clusters": int(self.n_clusters),
            "init": self.init,
            "local_lloyd_max_iter": int(self.local_lloyd_max_iter),
            "local_lloyd_tol": float(self.local_lloyd_tol),
            "local_lloyd_num_trials": self.local_lloyd_num_trials,
        }

    def _min_rows_needed(self) -> int:
        return int(self.n_clusters)

    def _check_enough_rows(self, state: State) -> None:
        self._check_total_weight(state)
        if state.n_rows < self._min_rows_needed():
            skipped = f" ({state.n_skipped} invalid rows were skipped)" if state.n_skipped else ""
            raise DataError(
                f"KMeans with n_clusters={self.n_clusters} needs at least {self.n_clusters} rows; "
                f"the input had {state.n_rows}{skipped}"
            )

    # ---- fitting ------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        sample_weight: Any = None,
        checkpoint: Any = None,
        checkpoint_every: int | None = None,
        progress: bool = False,
        split_every: int = 8,
    ) -> KMeans:
        """Fit in one streaming pass, plus ``epochs - 1`` exact Lloyd passes.

        Parameters
        ----------
        X : Dask DataFrame or Array, pandas DataFrame, numpy array, or iterator of batches
        y : ignored
        sample_weight : array-like, column name, Dask Series or Array, optional
            Weight of each row (an array-like for in-memory input, a column name or an
            aligned Dask Series / Array for Dask input): it multiplies the row's count
            and cost in the core set, the Lloyd passes and ``inertia_``, as scikit-learn's
            ``KMeans.fit(sample_weight=)``.
        checkpoint : path, optional
            Zarr path of the first pass's checkpoint (see :func:`daskstate.fold`);
            refining passes checkpoint to ``<checkpoint>-epoch<e>``.
        checkpoint_every, progress, split_every
            As in :func:`daskstate.fold`.

        Returns
        -------
        self
        """
        self._validate_params()
        X = as_array(X)
        inp = self._weighted_input(X, sample_weight=sample_weight)
        in_memory = isinstance(X, np.ndarray | pd.DataFrame)
        if not (inp.is_dask or in_memory) and (self.epochs > 1 or self.compute_inertia):
            raise ValueError(
                f"epochs={self.epochs}, compute_inertia={self.compute_inertia} need to read the data again, "
                "but an iterator of batches is read once; pass a Dask, pandas or numpy input"
            )
        fold_kwargs = {"progress": progress, "split_every": split_every}
        params = self._state_params(inp)
        if self.random_state is None and checkpoint is not None:
            # a re-run of the same call must find the same hyperparameters to resume
            params["seed"] = zlib.crc32(os.fspath(checkpoint).encode())
        state = KMeansState(inp.schema, params)
        state = self._fold(inp, state, checkpoint=checkpoint, checkpoint_every=checkpoint_every, **fold_kwargs)
        self._check_enough_rows(state)
        overrides = self._finalize_overrides()
        if self.epochs > 1 or (self.compute_inertia and not in_memory):
            state = self._refine(X, inp, state, overrides, checkpoint, checkpoint_every, fold_kwargs,
                                 sample_weight)
        self._set_state(state, overrides)
        if in_memory:
            # labels_ and the exact inertia_ in one pass over the rows in memory; the inertia
            # is kept in the state (keyed by the centres), so it survives save / load
            labels, inertia = self._labels_and_inertia(X, sample_weight)
            self.state_ = self.state_.with_model(self.cluster_centers_, inertia=inertia)
            self._labels, self._inertia = labels, inertia
        elif inp.is_dask:
            self._lazy_fit_outputs(X, sample_weight)
        return self

    def _refine(self, X: Any, inp: Input, state: KMeansState, overrides: dict, checkpoint: Any,
                checkpoint_every: int | None, fold_kwargs: dict, sample_weight: Any = None) -> KMeansState:
        """Exact Lloyd passes (``epochs - 1``) and, if asked, an inertia pass; kept in the state.

        The first pass scores the best few distinct models of
        :meth:`KMeansState.candidates` on the data (exact SSE, one GEMM for all) and
        continues with the best: the state ranks local optima well, but not perfectly.
        """
        k = int(overrides["n_clusters"])
        n_models = max(1, min(REFINE_CANDIDATES, state.max_centers // (2 * k))) if self.epochs > 1 else 1
        found = state.candidates(
            k, n_models, init=overrides["init"], max_iter=overrides["local_lloyd_max_iter"],
            tol=overrides["local_lloyd_tol"], num_trials=overrides["local_lloyd_num_trials"],
        )
        models = [C for C, _ in found]
        n_iter = found[0][1]
        inertia = None
        passes = 0
        tol = self.local_lloyd_tol * _mean_variance(state)

        def one_pass(models: list[np.ndarray], e: int) -> dict[str, Any]:
            again = inp if inp.is_dask else self._weighted_input(X, sample_weight=sample_weight)
            start = KMeansLloydState.starting_from(state.schema, *models)
            path = None if checkpoint is None else f"{checkpoint}-epoch{e}"
            options = self._fit_options(checkpoint=path, checkpoint_every=checkpoint_every if path else None,
                                        **fold_kwargs)
            out = self._extra_pass(again, start, options)
            return out.finalize()

        centers = models[0]
        for e in range(2, self.epochs + 1):
            res = one_pass(models, e)
            best = int(np.argmin(res["inertia"]))  # by the exact SSE of each model this pass started from
            moved = float(((res["centers"][best] - models[best]) ** 2).sum())
            passes += 1
            n_iter = found[best][1] + passes
            if moved <= tol:
                # converged: keep the centres this pass scored, whose SSE is now known exactly
                centers, inertia = models[best], float(res["inertia"][best])
                break
            centers = res["centers"][best]
            models = [centers]  # the first pass chose; later passes refine that model alone
        if self.compute_inertia and inertia is None:
            inertia = float(one_pass([centers], self.epochs + 1)["inertia"][0])
        return state.with_model(centers, n_iter=n_iter, passes=passes, inertia=inertia)

    def _set_state(self, state: State, overrides: dict[str, Any]) -> None:
        self.__dict__.pop("_labels", None)
        self.__dict__.pop("_lazy_inertia", None)
        self.__dict__.pop("_lazy_input", None)
        super()._set_state(state, overrides)

    def _apply_model(self, model: dict[str, Any]) -> None:
        model = dict(model)
        self._inertia = model.pop("inertia", None)
        super()._apply_model(model)

    def _labels_and_inertia(self, X: Any, sample_weight: Any = None) -> tuple[np.ndarray, float]:
        """Nearest centre of each in-memory row (-1 for skipped rows) and the exact (weighted) inertia."""
        out = self._map_rows(X, lambda A: np.column_stack(self._nearest(A)), ["label", "d2"], "labels")
        out = np.asarray(out, dtype=np.float64)
        ok = ~np.isnan(out[:, 1])
        labels = np.full(len(out), -1, dtype=np.int64)
        labels[ok] = out[ok, 0].astype(np.int64)
        if sample_weight is None:
            return labels, float(out[ok, 1].sum())
        w = np.asarray(X[sample_weight] if isinstance(sample_weight, str) else sample_weight, dtype=np.float64)
        return labels, float(out[ok, 1] @ w.reshape(-1)[ok])

    @property
    def labels_(self) -> np.ndarray:
        """Cluster of each training row (-1 for skipped rows); lazy (a Dask Series or Array) after a Dask fit."""
        self._build_lazy_outputs()
        if "_labels" not in self.__dict__:
            raise AttributeError(
                "labels_ is kept after fit (lazy for Dask input), not after load, finalize or partial_fit; "
                "use predict(X)"
            )
        return self._labels

    @property
    def inertia_(self) -> float:
        """Exact sum of squared distances of the training rows to their nearest centre.

        After a Dask fit without ``compute_inertia=True``, a lazy Dask scalar (``.compute()``
        reads the data once), like ``labels_``: nothing is read behind an attribute access.
        """
        self._build_lazy_outputs()
        value = self.__dict__.get("_inertia")
        if value is None and "_lazy_inertia" in self.__dict__:
            return self._lazy_inertia
        if value is None:
            raise AttributeError(
                "inertia_ needs a pass over the data: fit with compute_inertia=True, call ssd(X), "
                "or use estimated_inertia_ (from the state, no data read)"
            )
        return float(value)

    # ---- using the model -----------------------------------------------------------------
    def _nearest(self, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        C = self.cluster_centers_
        with single_blas_thread(main_thread=True):
            return nearest_centers(A, C, shift=C.mean(axis=0))

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre for each row; lazy for Dask input."""
        self._check_fitted()
        return self._map_rows(X, lambda A: self._nearest(A)[0].astype(np.int64), None, "predict", dtype=np.int64)

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """``fit(X)`` then ``predict(X)``."""
        return self.fit(X).predict(X)

    def transform(self, X: Any) -> Any:
        """Euclidean distance of each row to each centre (columns ``d0..``); lazy for Dask input."""
        self._check_fitted()
        C = self.cluster_centers_
        shift = C.mean(axis=0)
        Cs = C - shift
        C_sq = row_norms_sq(Cs)

        def dist(A: np.ndarray) -> np.ndarray:
            As = A - shift
            D = As @ (-2.0 * Cs.T)
            D += row_norms_sq(As)[:, None]
            D += C_sq
            return np.sqrt(np.maximum(D, 0.0))

        return self._map_rows(X, dist, [f"d{j}" for j in range(len(C))], "transform")

    def _min_sq_distances(self, X: Any) -> tuple[float, int]:
        import dask.array as da

        d2 = self._map_rows(X, lambda A: self._nearest(A)[1], None, "min-sq-distance")
        if isinstance(d2, da.Array):
            total, count = self._compute(da.nansum(d2), (~da.isnan(d2)).sum())
        elif hasattr(d2, "dask"):
            total, count = self._compute(d2.sum(), d2.count())
        else:
            d2 = np.asarray(d2, dtype=np.float64)
            total, count = np.nansum(d2), int((~np.isnan(d2)).sum())
        return float(total), int(count)

    def ssd(self, X: Any) -> float:
        """Sum of squared distances of the rows of ``X`` to their nearest centre (computes Dask input)."""
        self._check_fitted()
        return self._min_sq_distances(X)[0]

    def msd(self, X: Any) -> float:
        """Mean squared distance of the rows of ``X`` to their nearest centre (computes Dask input)."""
        self._check_fitted()
        total, count = self._min_sq_distances(X)
        return total / count if count else math.nan

    def score(self, X: Any, y: Any = None) -> float:
        """Negative sum of squared distances (scikit-learn's convention: higher is better)."""
        return -self.ssd(X)

    def cost_curve(self, ks: Any) -> pd.Series:
        """Estimated sum of squared distances for each ``k`` in ``ks``, from the state alone.

        An elbow plot without reading data: each value is the ``estimated_inertia_``
        of ``finalize(n_clusters=k)`` (from the state's sample, or its core set).
        Every ``k`` must be ``<= k_max``.

        Examples
        --------
        >>> km.cost_curve(range(1, 11)).plot()   # doctest: +SKIP
        """
        self._check_fitted()
        ks = [int(k) for k in ks]
        o = self.finalize_overrides_
        costs = self.state_.cost_curve(ks, **{key: v for key, v in o.items() if key != "n_clusters"})
        return pd.Series(costs, index=pd.Index(ks, name="n_clusters"), name="estimated_ssd")


    # ---- scikit-learn ---------------------------------------------------------------------
    def _lazy_fit_outputs(self, X: Any, sample_weight: Any = None) -> None:
        """``labels_`` and ``inertia_`` (weighted by ``sample_weight``) of a Dask fit, lazy, over the training input.

        Their graphs are built on first access (:meth:`_build_lazy_outputs`): building
        them costs as much as the last merges of a small fit, and most fits never ask.
        """
        self._lazy_input = (X, sample_weight)

    def _build_lazy_outputs(self) -> None:
        import dask.array as da

        lazy = self.__dict__.pop("_lazy_input", None)
        if lazy is None:
            return
        X, sample_weight = lazy
        self._labels = self.predict(X)
        if self.__dict__.get("_inertia") is None:
            d2 = self._map_rows(X, lambda A: self._nearest(A)[1], None, "min-sq-distance")
            if sample_weight is not None:
                d2 = d2 * (X[sample_weight] if isinstance(sample_weight, str) else sample_weight)
            self._lazy_inertia = da.nansum(d2) if isinstance(d2, da.Array) else d2.sum()

    @property
    def _n_features_out(self) -> int:
        return self.cluster_centers_.shape[0]

    def to_sklearn(self) -> Any:
        """The equivalent fitted :class:`sklearn.cluster.KMeans`: the same ``cluster_centers_`` and ``predict``.

        Built by scikit-learn's own ``fit`` started at (and stopping on) these centres, so
        every internal attribute is scikit-learn's; ``labels_`` and ``inertia_`` are ours
        when they are known in memory.
        """
        import warnings

        from sklearn.cluster import KMeans as SklearnKMeans
        from sklearn.exceptions import ConvergenceWarning

        self._check_fitted()
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        out = SklearnKMeans(n_clusters=len(C), init=C, n_init=1, max_iter=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate centres are ours to keep
            out.fit(C)
        out.cluster_centers_ = C.copy()
        out.n_iter_ = self.n_iter_
        for name in ("labels_", "inertia_"):
            value = self.__dict__.get("_labels" if name == "labels_" else "_inertia")
            if isinstance(value, np.ndarray | float):
                setattr(out, name, value)
            else:
                delattr(out, name)  # not known in memory: better absent than describing the centres
        return _fitted_attributes(self, out)


def _mean_variance(state: KMeansState) -> float:
    """Mean per-feature variance of the data, estimated from the core set."""
    w = state.weights
    if not len(w) or w.sum() <= 0:
        return 0.0
    mean = (w @ state.centers) / w.sum()
    between = float(w @ row_norms_sq(state.centers - mean))
    return (between + state.estimated_cost) / w.sum() / state.n_features
