"""The feed-forward forecaster: an MLP over the scaled context that outputs every horizon step's distribution.

Inputs of a window: its scaled lagged values (as the linear model), the share of the
context observed, ``log(1 + scale)`` for counts, the date features of the first target step and the
known covariates of all steps. ``num_layers`` ReLU layers of ``num_cells`` units feed
one linear output of ``prediction_length x k`` raw distribution parameters
(:mod:`likelihoods`). The parameters are one flat vector; the shared trainer
(:class:`~daskstate.algorithms.forecast.neural.NeuralForecastState`) trains it by Adam
on mini-batches of windows in synchronised rounds, with validation windows and
early stopping.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from daskstate.algorithms.forecast.likelihoods import (
    N_RAW,
    mean_and_quantiles,
    nll_and_grad,
    values_at,
)
from daskstate.algorithms.forecast.lstm import Workspace
from daskstate.algorithms.forecast.neural import NeuralForecastState, widen
from daskstate.algorithms.forecast.sampling import correlated_uniforms
from daskstate.algorithms.forecast.series import date_features, n_date_features
from daskstate.algorithms.forecast.windows import Windows, lagged_values
from daskstate.state import register


def layer_shapes(n_inputs: int, num_layers: int, num_cells: int, n_outputs: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every dense layer, hidden ones first."""
    sizes = [n_inputs] + [num_cells] * num_layers + [n_outputs]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def unpack(theta: np.ndarray, shapes: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Views ``(W, b)`` of every layer into the flat parameter vector."""
    out, at = [], 0
    for fan_in, fan_out in shapes:
        W = theta[at : at + fan_in * fan_out].reshape(fan_in, fan_out)
        at += fan_in * fan_out
        out.append((W, theta[at : at + fan_out]))
        at += fan_out
    return out


def forward(theta: np.ndarray, shapes: list[tuple[int, int]], X: np.ndarray, work: Workspace | None = None
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Raw outputs of the network and the activations backprop needs (``work``: buffers they live in,
    valid until the next pass; see :class:`~daskstate.algorithms.forecast.lstm.Workspace`)."""
    work = Workspace() if work is None else work
    layers = unpack(theta, shapes)
    acts = [X]
    a = X
    for i, (W, b) in enumerate(layers[:-1]):
        a = np.matmul(a, W, out=work.empty(f"act{i + 1}", (len(X), W.shape[1])))
        a += b
        np.maximum(a, 0.0, out=a)
        acts.append(a)
    W, b = layers[-1]
    raw = np.matmul(a, W, out=work.empty("raw", (len(X), W.shape[1])))
    raw += b
    return raw, acts


def backward(theta: np.ndarray, shapes: list[tuple[int, int]], acts: list[np.ndarray], d_out: np.ndarray,
             work: Workspace | None = None) -> np.ndarray:
    """Gradient of the loss w.r.t. the flat ``theta``, from its gradient w.r.t. the raw outputs (``work``:
    buffers for the temporaries and the gradient, valid until the next call)."""
    work = Workspace() if work is None else work
    layers = unpack(theta, shapes)
    grad = work.zeros("grad", theta.shape)
    grads = unpack(grad, shapes)
    delta = d_out
    for i in range(len(layers) - 1, -1, -1):
        a = acts[i]
        gW, gb = grads[i]
        np.matmul(a.T, delta, out=gW)
        np.sum(delta, axis=0, out=gb)
        if i:
            W = layers[i][0]
            back = np.matmul(delta, W.T, out=work.empty(f"delta{i}", (len(delta), W.shape[0])))
            back *= a > 0
            delta = back
    return grad


@register
class ForecastMLPState(NeuralForecastState):
    """The MLP forecaster's network (see the module docstring); training: :class:`NeuralForecastState`."""

    algorithm: ClassVar[str] = "forecast_mlp"

    # ---- hyperparameters (offset, lags, horizon, harmonics, season: SeriesStateMixin) -------
    @property
    def likelihood(self) -> str:
        return self.params.get("likelihood", "student_t")

    @property
    def n_inputs(self) -> int:
        return (len(self.lags) + 2 + n_date_features(self.offset, self.harmonics)
                + self.horizon * self.n_features)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return layer_shapes(self.n_inputs, int(self.params.get("num_layers", 2)), int(self.params.get("num_cells", 40)),
                            self.horizon * N_RAW[self.likelihood])

    def initial_theta(self, rng: np.random.Generator) -> np.ndarray:
        parts = []
        for i, (fan_in, fan_out) in enumerate(self.shapes):
            last = i == len(self.shapes) - 1
            std = (0.1 if last else np.sqrt(2.0)) / np.sqrt(fan_in)
            parts += [rng.normal(0.0, std, fan_in * fan_out), np.zeros(fan_out)]
        return np.concatenate(parts)

    # ---- the network ----------------------------------------------------------------------------
    def inputs(self, w: Windows, work: Workspace | None = None) -> np.ndarray:
        """Network inputs of windows ``w``: (n, n_inputs) (``work``: in its buffer, valid until the next call)."""
        lags, n = self.lags, len(w.scale)
        dates = date_features(w.position + 1, self.offset, self.harmonics, self.calendar_year)
        cov = np.nan_to_num(w.covariates.reshape(n, -1))
        at = [len(lags), len(lags) + 1, len(lags) + 2, len(lags) + 2 + dates.shape[1]]
        shape = (n, at[-1] + cov.shape[1])
        X = np.empty(shape) if work is None else work.empty("inputs", shape)
        np.subtract(lagged_values(w, lags, work), self.center, out=X[:, : at[0]])
        X[:, at[0]] = (~np.isnan(w.context)).mean(axis=1)
        # the level matters to counts (their dispersion), not to real values, whose windows are scale-free
        X[:, at[1]] = np.log1p(w.scale) if self.likelihood == "negative_binomial" else 0.0
        X[:, at[2] : at[3]] = dates
        X[:, at[3] :] = cov
        return X

    @property
    def center(self) -> float:
        """What the lag inputs and the predicted mean are measured from, in scaled units (1 with ``centered``;
        see :attr:`ForecastDeepARState.center <daskstate.algorithms.forecast.deepar.ForecastDeepARState.center>`)."""
        return 1.0 if self.params.get("centered", False) and self.likelihood != "negative_binomial" else 0.0

    def raw_outputs(self, theta: np.ndarray, X: np.ndarray, work: Workspace | None = None
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Raw distribution parameters (n, H, k), the mean's measured from 0 again, and the activations."""
        raw, acts = forward(theta, self.shapes, X, work)
        raw = raw.reshape(len(X), self.horizon, -1)
        raw[..., 0] += self.center
        return raw, acts

    def targets(self, w: Windows) -> tuple[np.ndarray, np.ndarray]:
        y = w.target * w.scale[:, None] if self.likelihood == "negative_binomial" else w.target
        return y, ~np.isnan(y)

    def _nll(self, theta: np.ndarray, w: Windows, work: Workspace | None = None, gradient: bool = True
             ) -> tuple[float, np.ndarray | None, list[np.ndarray], int]:
        X = self.inputs(w, work)
        raw, acts = self.raw_outputs(theta, X, work)
        y, mask = self.targets(w)
        scale = w.scale[:, None] if self.likelihood == "negative_binomial" else np.ones((len(X), 1))
        loss, d_raw = nll_and_grad(raw, y, mask, self.likelihood, scale, gradient=gradient, work=work)
        return loss, None if d_raw is None else d_raw.reshape(len(X), -1), acts, int(mask.sum())

    def loss_and_gradient(self, theta: np.ndarray, w: Windows, work: Workspace | None = None
                          ) -> tuple[float, np.ndarray, int]:
        """Summed NLL of the windows' observed targets and its gradient w.r.t. ``theta`` (``work``: the
        training loop's buffers; the gradient lives in them until the next call)."""
        loss, d_raw, acts, count = self._nll(theta, w, work)
        return loss, backward(theta, self.shapes, acts, d_raw, work), count

    def window_loss(self, theta: np.ndarray, w: Windows, work: Workspace | None = None) -> tuple[float, int]:
        loss, _, _, count = self._nll(theta, w, work, gradient=False)
        return loss, count

    def forecast(self, theta: np.ndarray, w: Windows, quantiles: np.ndarray, spread: np.ndarray | None = None,
                 work: Workspace | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean (n, H) and quantiles (n, H, q) in the data's units; ``spread`` (H,): the quantiles' distances
        from the mean widened by these factors (``calibration_``, see :mod:`neural`); ``work``: buffers for
        the network's pass."""
        raw, _ = self.raw_outputs(theta, self.inputs(w, work), work)
        mean, q = mean_and_quantiles(raw, self.likelihood, w.scale[:, None], quantiles)
        return mean, widen(q, mean[..., None], spread, self.likelihood, step_axis=-2)

    def sample_paths(self, theta: np.ndarray, w: Windows, num_samples: int, rng: np.random.Generator,
                     spread: np.ndarray | None = None) -> np.ndarray:
        """Paths (n, num_samples, H) in the data's units: the per-step distributions joined by the
        step correlation of :func:`~daskstate.algorithms.forecast.sampling.correlated_uniforms`
        (``spread``: as in :meth:`forecast`)."""
        raw, _ = self.raw_outputs(theta, self.inputs(w))
        mean, interval = mean_and_quantiles(raw, self.likelihood, w.scale[:, None], np.array([0.1, 0.9]))
        u = correlated_uniforms(interval[..., 1] - interval[..., 0], num_samples, rng)
        return widen(values_at(raw, self.likelihood, w.scale[:, None], u), mean[:, None, :], spread, self.likelihood)
