"""A stacked LSTM with a linear output, in numpy: forward, one-step, and backpropagation through time.

Pure numerics for the DeepAR forecaster (:mod:`~daskstate.algorithms.forecast.deepar`).
All parameters live in one flat vector ``theta`` (so a round averages them in one
step); :class:`Layout` gives named views into it. Each layer ``l`` has input
weights ``W{l}`` (inputs x 4N), recurrent weights ``U{l}`` (N x 4N) and a bias
``b{l}`` (4N); the gates are ordered ``[input, forget, output, cell]`` so that one
sigmoid covers the first three. The first layer's inputs are the per-step inputs
followed by the per-sequence (static) inputs, whose projection is computed once
per sequence. ``W_out``, ``b_out`` map the top layer's hidden state to the raw
distribution parameters of every step, and ``W_skip`` adds a linear map of the step's
own inputs (a linear autoregression beside the network: a smooth series whose
next value is almost its last one needs no precise memory in the cells).

Loops run over time steps and layers only; every step is vectorised over the
batch of sequences and the cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Layout:
    """Named arrays packed in one flat vector: ``views(theta)["U0"]`` is a view of ``theta``."""

    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]]):
        self.shapes = dict(shapes)
        self.offsets: dict[str, int] = {}
        at = 0
        for name, shape in shapes:
            self.offsets[name] = at
            at += int(np.prod(shape))
        self.size = at

    def views(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        return {name: theta[at : at + int(np.prod(shape))].reshape(shape)
                for (name, shape), at in zip(self.shapes.items(), self.offsets.values(), strict=True)}


def lstm_layout(n_step: int, n_static: int, num_layers: int, num_cells: int, n_out: int,
                embeddings: list[tuple[int, int]] = ()) -> Layout:
    """The layout of a network: step inputs ``n_step``, static inputs ``n_static`` (embeddings excluded),
    ``embeddings`` as (rows, dimension) tables whose rows join the static inputs."""
    N = num_cells
    n_in0 = n_step + n_static + sum(d for _, d in embeddings)
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for layer in range(num_layers):
        shapes += [(f"W{layer}", (n_in0 if layer == 0 else N, 4 * N)), (f"U{layer}", (N, 4 * N)),
                   (f"b{layer}", (4 * N,))]
    shapes += [("W_out", (N, n_out)), ("b_out", (n_out,)), ("W_skip", (n_step, n_out))]
    shapes += [(f"E{j}", (rows, dim)) for j, (rows, dim) in enumerate(embeddings)]
    return Layout(shapes)


def init_theta(layout: Layout, num_layers: int, rng: np.random.Generator) -> np.ndarray:
    """Weights ~ N(0, 1/fan_in), biases 0 except the forget gates' (1: remember by default), output 0.1x."""
    theta = np.zeros(layout.size)
    v = layout.views(theta)
    for layer in range(num_layers):
        W, U, b = v[f"W{layer}"], v[f"U{layer}"], v[f"b{layer}"]
        N = U.shape[0]
        W[...] = rng.normal(0.0, 1.0 / np.sqrt(W.shape[0] + N), W.shape)
        U[...] = rng.normal(0.0, 1.0 / np.sqrt(W.shape[0] + N), U.shape)
        b[N : 2 * N] = 1.0
    v["W_out"][...] = rng.normal(0.0, 0.1 / np.sqrt(v["W_out"].shape[0]), v["W_out"].shape)
    for name, E in v.items():
        if name.startswith("E"):
            E[...] = rng.normal(0.0, 0.1, E.shape)
    return theta


def static_inputs(v: dict[str, np.ndarray], static: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-sequence inputs: the static reals (B, s) followed by each category's embedding row."""
    parts = [static] + [v[f"E{j}"][codes[:, j]] for j in range(codes.shape[1])]
    return np.concatenate(parts, axis=1)


class Workspace:
    """Buffers that successive forward and backward passes of one training loop (or one validation pass)
    reuse instead of allocating their (T, B, ...) arrays afresh.

    A fresh array above glibc's mmap threshold is mapped on allocation and unmapped on free,
    and every page of it faults on first touch. glibc raises that threshold as it sees such
    arrays freed, unless ``MALLOC_TRIM_THRESHOLD_`` is set, as Dask's nanny sets it for its
    workers (``distributed.nanny.pre-spawn-environ``): there every step's temporaries were
    faulted in again, and deepar's fit took twice the CPU (2,000 series: 15x the page faults).
    A buffer named here is valid until the next request of the same name; the arrays of a
    :class:`Cache` filled from a workspace, until the next forward pass.
    """

    def __init__(self) -> None:
        self._flat: dict[tuple[str, np.dtype], np.ndarray] = {}

    def empty(self, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        """A C-contiguous array of ``shape`` (contents undefined), reusing the buffer ``name``."""
        n, key = int(np.prod(shape)), (name, np.dtype(dtype))
        flat = self._flat.get(key)
        if flat is None or flat.size < n:
            flat = self._flat[key] = np.empty(n, dtype=dtype)
        return flat[:n].reshape(shape)

    def zeros(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        out = self.empty(name, shape)
        out.fill(0.0)
        return out


@dataclass
class Cache:
    """What the backward pass needs from a teacher-forced forward pass (arrays time-major: (T, B, ...))."""

    inputs: list[np.ndarray]   # per layer: its per-step input (T, B, d)
    static: np.ndarray         # (B, s_all) static inputs of layer 0 (with embeddings)
    gates: list[np.ndarray]    # per layer: (T, B, 4N) activated gates [i, f, o, g]
    cells: list[np.ndarray]    # per layer: (T, B, N) cell states
    tanh_cells: list[np.ndarray]  # per layer: (T, B, N) tanh of the cell states
    hidden: list[np.ndarray]   # per layer: (T, B, N) hidden states


def _step(z: np.ndarray, h: np.ndarray, c: np.ndarray, U: np.ndarray, gates: np.ndarray, tanh_c: np.ndarray,
          c_out: np.ndarray | None = None, h_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step from the projected input ``z``, writing the activated gates into ``gates`` and
    ``tanh(c)`` into ``tanh_c``: (new c, new h), in ``c_out`` and ``h_out`` if given (neither ``c`` nor ``h``)."""
    N = h.shape[1]
    np.matmul(h, U, out=gates)
    gates += z
    sig = gates[:, : 3 * N]
    sig *= 0.5  # sigmoid(a) = (1 + tanh(a / 2)) / 2: numpy's tanh is several times faster than expit
    np.tanh(gates, out=gates)
    sig *= 0.5
    sig += 0.5
    c_out = np.multiply(gates[:, N : 2 * N], c, out=c_out)  # f * c + i * g
    c_out += np.multiply(gates[:, :N], gates[:, 3 * N :], out=h_out)
    np.tanh(c_out, out=tanh_c)
    return c_out, np.multiply(gates[:, 2 * N : 3 * N], tanh_c, out=h_out)


def forward(v: dict[str, np.ndarray], num_layers: int, step_inputs: np.ndarray, static_all: np.ndarray,
            state: list[tuple[np.ndarray, np.ndarray]] | None = None, keep: list[np.ndarray] | None = None,
            work: Workspace | None = None) -> tuple[np.ndarray, Cache, list[tuple[np.ndarray, np.ndarray]]]:
    """Teacher-forced pass over all steps: raw outputs (B, T, k), the cache, and the final (h, c) per layer.

    ``step_inputs`` (B, T, d). Layer by layer (each layer's input projection is one
    matmul over all steps); the recurrence loops over time. ``state`` is the initial
    (h, c) per layer (zeros if None). ``keep`` (training with dropout): per layer but
    the last, a (T, B, N) mask of 0 or ``1 / (1 - rate)`` multiplying the hidden
    states that layer passes up (as a stacked ``torch.nn.LSTM``'s ``dropout``).
    ``work``: the buffers to fill (the raw outputs and the cache live in them until the next pass).
    """
    work = Workspace() if work is None else work
    B, T, d = step_inputs.shape
    cache = Cache([], static_all, [], [], [], [])
    final = []
    x = work.empty("inputs0", (T, B, d))
    np.copyto(x, step_inputs.transpose(1, 0, 2))
    for layer in range(num_layers):
        U = v[f"U{layer}"]
        N = U.shape[0]
        W = v[f"W{layer}"]
        z = work.empty("z", (T, B, 4 * N))
        if layer == 0:
            np.matmul(x.reshape(T * B, d), W[:d], out=z.reshape(T * B, 4 * N))
            z += (static_all @ W[d:] + v["b0"])[None, :, :]
        else:
            np.matmul(x.reshape(T * B, -1), W, out=z.reshape(T * B, 4 * N))
            z += v[f"b{layer}"]
        h, c = state[layer] if state is not None else (np.zeros((B, N)), np.zeros((B, N)))
        gates, cells = work.empty(f"gates{layer}", (T, B, 4 * N)), work.empty(f"cells{layer}", (T, B, N))
        hidden, tanh_cells = work.empty(f"hidden{layer}", (T, B, N)), work.empty(f"tanh_cells{layer}", (T, B, N))
        for t in range(T):
            c, h = _step(z[t], h, c, U, gates[t], tanh_cells[t], cells[t], hidden[t])
        cache.inputs.append(x)
        cache.gates.append(gates)
        cache.cells.append(cells)
        cache.tanh_cells.append(tanh_cells)
        cache.hidden.append(hidden)
        final.append((h, c))
        if keep is not None and layer < num_layers - 1:
            x = np.multiply(hidden, keep[layer], out=work.empty(f"inputs{layer + 1}", hidden.shape))
        else:
            x = hidden
    k = v["W_out"].shape[1]
    raw, skip = work.empty("raw", (T, B, k)), work.empty("skip", (T, B, k))
    np.matmul(x.reshape(T * B, -1), v["W_out"], out=raw.reshape(T * B, k))
    raw += v["b_out"]
    np.matmul(cache.inputs[0].reshape(T * B, -1), v["W_skip"], out=skip.reshape(T * B, k))
    raw += skip
    return raw.transpose(1, 0, 2), cache, final


def step(v: dict[str, np.ndarray], num_layers: int, x: np.ndarray, static_proj: np.ndarray,
         state: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """One step of every layer from step input ``x`` (B, d); ``static_proj`` is layer 0's static
    projection plus bias (B, 4N). Returns raw outputs (B, k) and the new state."""
    new = []
    step_x = x
    for layer in range(num_layers):
        h, c = state[layer]
        if layer == 0:
            z = x @ v["W0"][: x.shape[1]] + static_proj
        else:
            z = x @ v[f"W{layer}"] + v[f"b{layer}"]
        c, h = _step(z, h, c, v[f"U{layer}"], np.empty_like(z), np.empty_like(c))
        new.append((h, c))
        x = h
    return x @ v["W_out"] + v["b_out"] + step_x @ v["W_skip"], new


class Recurrence:
    """Steps of every layer for a fixed batch of ``B`` rows, in place in preallocated buffers (the sampler's
    hot loop: thousands of steps of the same shape, where fresh arrays per step cost page faults).

    ``v``: the weights (views or copies, in the dtype to compute in); ``state``: the initial (h, c) per
    layer, copied, each row ``repeat`` times in a row (``np.repeat(h, repeat, axis=0)``). :meth:`step`
    takes layer 0's projected input and returns the top hidden state (a buffer overwritten by the
    next step). ``work``: where the buffers live (a sampler's chunks reuse them).
    """

    def __init__(self, v: dict[str, np.ndarray], num_layers: int, state: list[tuple[np.ndarray, np.ndarray]],
                 repeat: int = 1, work: Workspace | None = None):
        self.v, self.num_layers = v, num_layers
        work = Workspace() if work is None else work
        dtype = v["U0"].dtype
        n, N = state[0][0].shape
        B = n * repeat
        self.h, self.c = [], []
        for layer, (h, c) in enumerate(state):
            for name, a, into in (("h", h, self.h), ("c", c, self.c)):
                buf = work.empty(f"recurrence_{name}{layer}", (B, N), dtype)
                buf.reshape(n, repeat, N)[...] = a[:, None, :]
                into.append(buf)
        self.gates = work.empty("recurrence_gates", (B, 4 * N), dtype)
        self.z = work.empty("recurrence_z", (B, 4 * N), dtype)
        self.tmp = work.empty("recurrence_tmp", (B, N), dtype)

    def step(self, z0: np.ndarray) -> np.ndarray:
        """One step from layer 0's projected input ``z0`` (B, 4N: inputs @ W0, static projection, bias)."""
        gates, tmp = self.gates, self.tmp
        N = tmp.shape[1]
        z = z0
        for layer in range(self.num_layers):
            h, c = self.h[layer], self.c[layer]
            if layer > 0:
                np.matmul(self.h[layer - 1], self.v[f"W{layer}"], out=self.z)
                self.z += self.v[f"b{layer}"]
                z = self.z
            np.matmul(h, self.v[f"U{layer}"], out=gates)
            gates += z
            sig = gates[:, : 3 * N]
            sig *= 0.5  # sigmoid(a) = (1 + tanh(a / 2)) / 2, as in _step
            np.tanh(gates, out=gates)
            sig *= 0.5
            sig += 0.5
            c *= gates[:, N : 2 * N]
            np.multiply(gates[:, :N], gates[:, 3 * N :], out=tmp)
            c += tmp
            np.tanh(c, out=tmp)
            np.multiply(gates[:, 2 * N : 3 * N], tmp, out=h)
        return self.h[-1]


def backward(layout: Layout, v: dict[str, np.ndarray], num_layers: int, cache: Cache, d_raw: np.ndarray,
             codes: np.ndarray, n_static: int, keep: list[np.ndarray] | None = None,
             work: Workspace | None = None) -> np.ndarray:
    """Gradient w.r.t. the flat ``theta`` (views ``v``) from the gradient w.r.t. the raw outputs (B, T, k).

    ``codes`` (B, n_categories) are the embedding rows of each sequence, ``n_static``
    the number of static reals before the embeddings, ``keep`` the dropout masks of
    the forward pass. ``work``: buffers for the temporaries (and the gradient, valid
    until the next call with the same workspace).
    """
    work = Workspace() if work is None else work
    grad = work.zeros("grad", (layout.size,))
    g = layout.views(grad)
    top = cache.hidden[-1]
    T, B, N = top.shape
    d_raw = np.ascontiguousarray(d_raw.transpose(1, 0, 2)).reshape(T * B, -1)
    g["W_out"][...] = top.reshape(T * B, N).T @ d_raw
    g["b_out"][...] = d_raw.sum(axis=0)
    x0 = cache.inputs[0]
    g["W_skip"][...] = x0.reshape(T * B, -1).T @ d_raw
    dH = work.empty("dH", (T, B, N))
    np.matmul(d_raw, v["W_out"].T, out=dH.reshape(T * B, N))
    tmp = work.empty("tmp", (T, B, N))
    for layer in range(num_layers - 1, -1, -1):
        U = v[f"U{layer}"]
        UT = np.ascontiguousarray(U.T)
        gates, cells, hidden = cache.gates[layer], cache.cells[layer], cache.hidden[layer]
        tanh_c = cache.tanh_cells[layer]
        i, f, o, gg = (gates[..., k * N : (k + 1) * N] for k in range(4))
        c_prev = work.empty("c_prev", (T, B, N))
        c_prev[0] = 0.0
        c_prev[1:] = cells[:-1]
        # local derivatives, vectorised over all steps: dZ[t] = dc[t] * A[t] except the output gate (dh[t] * A_o[t]);
        # A[:, :, k] = [gg i (1 - i), c_prev f (1 - f), 0, i (1 - gg^2)], each product in the order written
        A = work.empty("A", (T, B, 4, N))
        np.multiply(gg, i, out=A[:, :, 0])
        A[:, :, 0] *= np.subtract(1.0, i, out=tmp)
        np.multiply(c_prev, f, out=A[:, :, 1])
        A[:, :, 1] *= np.subtract(1.0, f, out=tmp)
        A[:, :, 2] = 0.0
        np.multiply(gg, gg, out=tmp)
        np.multiply(i, np.subtract(1.0, tmp, out=tmp), out=A[:, :, 3])
        A_o = np.multiply(tanh_c, o, out=work.empty("A_o", (T, B, N)))
        A_o *= np.subtract(1.0, o, out=tmp)
        np.multiply(tanh_c, tanh_c, out=tmp)
        dc_dh = np.multiply(o, np.subtract(1.0, tmp, out=tmp), out=work.empty("dc_dh", (T, B, N)))
        dZ = work.empty("dZ", (T, B, 4, N))
        dh = np.zeros((B, N))
        dc = np.zeros((B, N))
        for t in range(T - 1, -1, -1):
            dh += dH[t]
            dc += dh * dc_dh[t]
            dz = dZ[t]
            np.multiply(A[t], dc[:, None, :], out=dz)
            np.multiply(dh, A_o[t], out=dz[:, 2])
            dc *= f[t]
            np.matmul(dz.reshape(B, 4 * N), UT, out=dh)
        dZ = dZ.reshape(T, B, 4 * N)
        if T > 1:
            g[f"U{layer}"][...] = hidden[:-1].reshape(-1, N).T @ dZ[1:].reshape(-1, 4 * N)
        flat_dZ = dZ.reshape(T * B, 4 * N)
        g[f"b{layer}"][...] = flat_dZ.sum(axis=0)
        x = cache.inputs[layer]
        d = x.shape[-1]
        W = v[f"W{layer}"]
        g[f"W{layer}"][:d] = x.reshape(T * B, d).T @ flat_dZ
        if layer == 0:
            dZ_seq = dZ.sum(axis=0)
            g["W0"][d:] = cache.static.T @ dZ_seq
            d_static = dZ_seq @ W[d:].T
            at = n_static
            for j in range(codes.shape[1]):
                E = g[f"E{j}"]
                dim = E.shape[1]
                np.add.at(E, codes[:, j], d_static[:, at : at + dim])
                at += dim
        else:
            np.matmul(flat_dZ, W.T, out=dH.reshape(T * B, N))
            if keep is not None:
                dH *= keep[layer - 1]
    return grad
