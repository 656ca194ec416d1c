"""A trivial state for the read-pass floor: the sum of every value (touches all of them)."""

from __future__ import annotations

import numpy as np

from daskstate.state import RoundContext, State, register


@register
class TouchState(State):
    algorithm = "touch"
    array_names = ("total",)

    def _init_arrays(self) -> None:
        self.total = np.zeros(self.n_features)

    def _update(self, X: np.ndarray, y: np.ndarray | None, context: RoundContext | None) -> None:
        self.total = self.total + X.sum(axis=0)

    def _merge(self, other: TouchState) -> None:
        self.total = self.total + other.total

    def finalize(self) -> dict:
        return {"total_": self.total}
