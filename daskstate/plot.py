"""Pictures of fitted models (optional: ``pip install 'daskstate[plot]'`` for matplotlib).

Every function takes a fitted estimator, draws on ``ax`` (a new figure when none
is given) and returns the matplotlib ``Axes``. They read only what the fit
recorded (the state and fitted attributes), so they never read data again.

- :func:`elbow`: k-means cost per number of clusters, from the state's ``cost_curve``.
- :func:`scree`: PCA explained variance per component, with the sketch's certified
  error band in randomized mode.
- :func:`packed_models`: the linear learner's packed models, their validation metric
  side by side and the one in use marked.
- :func:`loss_curve`: the monitored loss per epoch of an SGD estimator.

Matplotlib is imported when a function is called, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from daskstate.errors import NotFittedError

__all__ = ["elbow", "loss_curve", "packed_models", "scree"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "daskstate.plot needs matplotlib; install it with: pip install 'daskstate[plot]'"
        ) from error
    return plt


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots()
    return ax


def _fitted(estimator: Any, name: str, default: Any = NotFittedError) -> Any:
    """A fitted attribute of ``estimator``, or ``default``; the one place plots read estimators.

    A missing attribute without a default is an error naming the estimator, the
    attribute and what to do.
    """
    value = getattr(estimator, name, None)
    if value is not None:
        return value
    if default is NotFittedError:
        if getattr(estimator, "state_", None) is None:
            raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit first")
        raise ValueError(f"{type(estimator).__name__} has no fitted attribute {name!r} to plot")
    return default


def _integer_ticks(ax: Any, values: Sequence[int]) -> None:
    """Ticks at whole numbers (at most about 20 of them)."""
    values = list(values)
    ax.set_xticks(values[:: max(1, -(-len(values) // 20))])


def _rows_judged(estimator: Any) -> str:
    """`` (validation)`` or `` (training)``: which rows the recorded metrics come from."""
    on = _fitted(estimator, "selection_on_", None)
    return f" ({on})" if on and on != "none" else ""


# ---------------------------------------------------------------------------- k-means
def elbow(kmeans: Any, ks: Sequence[int] | None = None, *, ax: Any = None) -> Any:
    """The k-means elbow: estimated sum of squared distances for each number of clusters.

    Computed from the fitted state (``state_.cost_curve``) without reading data.

    Parameters
    ----------
    kmeans : fitted :class:`daskstate.KMeans`
    ks : sequence of int, optional
        Numbers of clusters to draw (default ``1 .. k_max`` of the state).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np, daskstate, daskstate.plot
    >>> X = np.random.default_rng(0).normal(size=(2000, 3))
    >>> km = daskstate.KMeans(3, k_max=6, random_state=0).fit(X)
    >>> ax = daskstate.plot.elbow(km)                      # doctest: +SKIP
    """
    state = _fitted(kmeans, "state_")
    if ks is None:
        ks = range(1, int(state.params["k_max"]) + 1)
    ks = [int(k) for k in ks]
    costs = state.cost_curve(ks)
    ax = _axes(ax)
    ax.plot(ks, costs, marker="o", label="estimated inertia")
    chosen = _fitted(kmeans, "n_clusters", None)
    if chosen is not None and chosen in ks:
        ax.axvline(chosen, color="grey", linestyle=":", label=f"n_clusters = {chosen}")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("sum of squared distances (estimated)")
    ax.set_title("k-means elbow")
    _integer_ticks(ax, ks)
    ax.legend()
    return ax


# ---------------------------------------------------------------------------- PCA
def scree(pca: Any, n_components: int | None = None, *, ax: Any = None) -> Any:
    """PCA scree plot: the variance each component explains, with the sketch's error band.

    In ``mode="randomized"`` every exact eigenvalue lies in the sketch's certified
    ``explained_variance_interval_`` (Frequent Directions' guarantee), drawn as a
    band; ``mode="regular"`` is exact and has no band.

    Parameters
    ----------
    pca : fitted :class:`daskstate.PCA`
    n_components : int, optional
        Components to draw (default: the fitted ``n_components_``); more, up to the
        state's maximum, are finalized from the state without reading data.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np, daskstate, daskstate.plot
    >>> X = np.random.default_rng(0).normal(size=(2000, 8))
    >>> pca = daskstate.PCA(3, max_components=6, mode="randomized").fit(X)
    >>> ax = daskstate.plot.scree(pca, n_components=6)     # doctest: +SKIP
    """
    variance = _fitted(pca, "explained_variance_")
    if n_components is not None and int(n_components) != len(variance):
        pca = pca.finalize(n_components=int(n_components))
        variance = _fitted(pca, "explained_variance_")
    variance = np.asarray(variance, dtype=float)
    interval = _fitted(pca, "explained_variance_interval_", None)
    index = np.arange(1, len(variance) + 1)
    ax = _axes(ax)
    ax.plot(index, variance, marker="o", label="explained variance")
    relative = float(_fitted(pca, "explained_variance_bound_", 0.0))
    if interval is not None and relative > 0:  # regular mode is exact: no band
        interval = np.asarray(interval, dtype=float)
        ax.fill_between(index, interval[:, 0], interval[:, 1], alpha=0.25,
                        label=f"sketch's certified interval (total within {relative:.1%})")
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance")
    ax.set_title("PCA scree")
    _integer_ticks(ax, index)
    ax.legend()
    return ax


# ---------------------------------------------------------------------------- linear learner
#: the column of ``models_`` drawn by default, first present wins (higher or lower is better)
_MODEL_METRICS = (("criterion", "higher"), ("accuracy", "higher"), ("r2", "higher"),
                  ("val_loss", "lower"), ("train_r2", "higher"))


def packed_models(learner: Any, metric: str | None = None, *, ax: Any = None) -> Any:
    """The linear learner's packed models: each one's metric, the model in use highlighted.

    Parameters
    ----------
    learner : fitted :class:`daskstate.LinearLearner`
    metric : str, optional
        A column of ``learner.models_`` (default: the selection criterion's value,
        else accuracy, r2, or validation loss, whichever the table has).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np, daskstate, daskstate.plot
    >>> X = np.random.default_rng(0).normal(size=(3000, 4))
    >>> reg = daskstate.LinearLearner("regressor", num_models=6, epochs=3).fit(X, X @ [1.0, 2, 0, -1])
    >>> ax = daskstate.plot.packed_models(reg)             # doctest: +SKIP
    """
    table = _fitted(learner, "models_")
    if metric is None:
        metric = next((name for name, _ in _MODEL_METRICS if name in table.columns
                       and np.isfinite(np.asarray(table[name], dtype=float)).any()), None)
        if metric is None:
            raise ValueError(f"models_ has no metric to plot (columns: {list(table.columns)})")
    elif metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not a column of models_ (columns: {list(table.columns)})")
    values = np.asarray(table[metric], dtype=float)
    in_use = int(_fitted(learner, "model_", _fitted(learner, "best_model_", -1)))
    models = np.arange(len(values))
    ax = _axes(ax)
    colors = ["C1" if m == in_use else "C0" for m in models]
    ax.bar(models, values, color=colors)
    if 0 <= in_use < len(values):
        ax.annotate("in use", (in_use, values[in_use]), ha="center", va="bottom")
    label = metric
    if metric == "criterion":
        label = _fitted(learner, _criterion_param(learner), "criterion")
    ax.set_xlabel("packed model")
    ax.set_ylabel(label + _rows_judged(learner))
    _integer_ticks(ax, models)
    ax.set_title(f"{len(values)} packed models")
    return ax


def _criterion_param(learner: Any) -> str:
    kind = _fitted(learner, "predictor_type", "")
    return f"{kind}_model_selection_criteria" if kind.endswith("classifier") else "criterion"


def loss_curve(estimator: Any, *, ax: Any = None) -> Any:
    """The loss an SGD estimator monitored, per epoch (validation loss when it had validation rows).

    Draws ``history_``: per epoch the best loss over the packed models, and one line
    per model when the estimator recorded each model's loss (a ``"losses"`` list in
    the history entries).

    Parameters
    ----------
    estimator : fitted SGD estimator with ``history_`` (e.g. :class:`daskstate.LinearLearner`)
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np, daskstate, daskstate.plot
    >>> X = np.random.default_rng(0).normal(size=(3000, 4))
    >>> reg = daskstate.LinearLearner("regressor", epochs=5).fit(X, X @ [1.0, 2, 0, -1])
    >>> ax = daskstate.plot.loss_curve(reg)                # doctest: +SKIP
    """
    history = [h for h in _fitted(estimator, "history_") if h.get("loss") is not None]
    if not history:
        raise ValueError(
            f"{type(estimator).__name__} recorded no loss per epoch (history_ is empty: "
            "a one-pass solver, or no epoch finished)"
        )
    epochs = [int(h.get("evaluated_epochs", h.get("epoch", i))) for i, h in enumerate(history)]
    ax = _axes(ax)
    per_model = [h.get("losses") for h in history]
    if all(isinstance(p, list | tuple | np.ndarray) for p in per_model):
        for m, losses in enumerate(np.asarray(per_model, dtype=float).T):
            ax.plot(epochs, losses, alpha=0.35, linewidth=1, label="each packed model" if m == 0 else None)
    ax.plot(epochs, [float(h["loss"]) for h in history], marker="o", label="best model")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel(f"{_fitted(estimator, 'loss_', 'loss')} loss" + _rows_judged(estimator))
    ax.set_title("loss per epoch")
    ax.legend()
    return ax
