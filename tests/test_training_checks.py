"""The engine's round_end hook, on which the SGD trainer's per-round validation checks stand."""

from __future__ import annotations

import dask.array as da
import numpy as np

from daskstate.engine import RoundContext, fold_rounds
from daskstate.state import Schema, State, register


@register
class MeanSGDState(State):
    """SGD towards the mean of the rows; ``seen`` counts the rows the rounds read."""

    algorithm = "test_training_checks_mean"
    array_names = ("w", "seen")
    round_averaged = ("w",)
    round_summed = ("seen",)

    def _init_arrays(self) -> None:
        self.w, self.seen = np.zeros(self.n_features), np.zeros(1)

    def _update(self, X: np.ndarray, y: np.ndarray | None, ctx: RoundContext | None) -> None:
        self.w = self.w + 0.5 * (X.mean(axis=0) - self.w)
        self.seen += len(X)

    def _merge(self, other: MeanSGDState) -> None:
        self.w = self.w + (other.w - self.w) * other.n_rows / (self.n_rows + other.n_rows)
        self.seen = self.seen + other.seen

    def finalize(self) -> dict:
        return {"w_": self.w}


SCHEMA = Schema(("a", "b"))


def _dask(parts: int = 10, rows: int = 5) -> da.Array:
    X = np.random.default_rng(0).normal(size=(parts * rows, 2))
    return da.from_array(X, chunks=(rows, 2))


def test_round_end_sees_every_round_and_can_stop_inside_an_epoch():
    calls = []

    def round_end(state, epoch, rnd, rounds):
        calls.append((epoch, rnd, rounds))
        return state, (epoch, rnd) == (1, 2)

    out = fold_rounds(_dask(), MeanSGDState(SCHEMA), epochs=5, sync_every=3, round_end=round_end)
    assert calls == [(0, 0, 4), (0, 1, 4), (0, 2, 4), (0, 3, 4), (1, 0, 4), (1, 1, 4), (1, 2, 4)]
    assert out.seen[0] == 5 * (10 + 3 * 3)  # epoch 0, then three rounds of three partitions: nothing beyond


def test_round_end_on_an_iterator_of_batches():
    X = np.arange(40.0).reshape(20, 2)
    calls = []

    def round_end(state, epoch, rnd, rounds):
        calls.append((epoch, rnd, rounds))
        return state, rnd == 1

    out = fold_rounds(iter(np.split(X, 5)), MeanSGDState(SCHEMA), sync_every=2, round_end=round_end)
    assert calls == [(0, 0, 0), (0, 1, 0)] and out.seen[0] == 16
    whole = fold_rounds(iter(np.split(X, 5)), MeanSGDState(SCHEMA), sync_every=2,
                        round_end=lambda s, *_: (s, False))
    assert whole.seen[0] == 20
