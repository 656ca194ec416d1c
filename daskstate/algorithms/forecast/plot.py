"""Fan charts of forecasts (needs the optional ``matplotlib``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def fan_chart(history: pd.DataFrame, forecast: pd.DataFrame, items: Sequence[Any], *, id_col: str = "item_id",
              time_col: str = "timestamp", target: str = "target", last: int | None = None, actual: Any = None):
    """History, forecast mean and quantile bands of chosen items, one panel each.

    Parameters
    ----------
    history : DataFrame
        Long table with the items' past values.
    forecast : DataFrame
        Output of :meth:`Forecaster.predict` (``mean`` and ``q...`` columns); bands join
        symmetric quantile pairs (q0.1 with q0.9, ...).
    items : sequence
        Item ids to draw.
    last : int, optional
        Show only each item's last ``last`` history points.
    actual : DataFrame, optional
        The realised values of the forecast period, drawn as points.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = fan_chart(df, fc.predict(df), ["item0"])   # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    qcols = sorted((c for c in forecast.columns if c.startswith("q")), key=lambda c: float(c[1:]))
    pairs = [(lo, hi) for lo in qcols for hi in qcols
             if float(lo[1:]) < 0.5 and np.isclose(float(lo[1:]) + float(hi[1:]), 1.0)]
    fig, axes = plt.subplots(len(items), 1, figsize=(8, 2.6 * len(items)), squeeze=False)
    for ax, item in zip(axes[:, 0], items, strict=True):
        h = history[history[id_col] == item].sort_values(time_col)
        if last is not None:
            h = h.tail(last)
        f = forecast[forecast[id_col] == item].sort_values(time_col)
        if h.empty and f.empty:
            raise ValueError(f"item {item!r} is in neither the history nor the forecast")
        ax.plot(h[time_col], h[target], color="black", lw=1, label="history")
        for k, (lo, hi) in enumerate(pairs):  # widest band first, lightest
            ax.fill_between(f[time_col], f[lo], f[hi], color="tab:blue", alpha=0.15 + 0.15 * k,
                            label=f"{lo}-{hi}", lw=0)
        ax.plot(f[time_col], f["mean"], color="tab:blue", lw=1.5, label="mean")
        if actual is not None:
            a = actual[actual[id_col] == item]
            ax.plot(a[time_col], a[target], "o", ms=3, color="tab:red", label="actual")
        ax.set_title(str(item), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
