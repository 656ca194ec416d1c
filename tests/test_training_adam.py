"""The fused Adam step (``numerics.adam_update``): the same optimiser as ``adam_step``, in fewer passes."""

from __future__ import annotations

import numpy as np
import pytest

from daskstate.numerics import adam_step, adam_update


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_update_follows_adam_step(dtype):
    rng = np.random.default_rng(0)
    n = 1000
    ref = [rng.standard_normal(n).astype(dtype), np.zeros(n, dtype), np.zeros(n, dtype)]
    new = [a.copy() for a in ref]
    work = (np.empty(n, dtype), np.empty(n, dtype))
    for t in range(1, 60):
        grad = (rng.standard_normal(n) * rng.choice([0.0, 1e-3, 1.0], size=n)).astype(dtype)
        grad[:10] = 0.0  # coordinates that never get a gradient stay put (0 / (0 + eps))
        adam_step(*ref[:1], grad, *ref[1:], t, 0.01, 0.9, 0.999)
        adam_update(*new[:1], grad, *new[1:], t, 0.01, 0.9, 0.999, work=work if t % 2 else None)
    rtol = 1e-10 if dtype == np.float64 else 2e-5
    for a, b in zip(ref, new, strict=True):
        assert b.dtype == dtype
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())
    assert np.array_equal(new[0][:10], ref[0][:10])


def test_adam_update_in_place_on_views_and_without_blas():
    """Non-contiguous views (and other dtypes) take numpy's path, still in place."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((50, 4))
    param, m, v = base[:, 1], np.zeros(50), np.zeros(50)
    expected, em, ev = param.copy(), m.copy(), v.copy()
    grad = rng.standard_normal(50)
    adam_step(expected, grad, em, ev, 1, 0.1)
    adam_update(param, grad, m, v, 1, 0.1)
    np.testing.assert_allclose(base[:, 1], expected, rtol=1e-12)
    np.testing.assert_allclose(m, em, rtol=1e-12)
    np.testing.assert_allclose(v, ev, rtol=1e-12)
