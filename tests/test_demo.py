"""``daskstate demo`` runs every algorithm on a local cluster and prints what it learned."""

from __future__ import annotations

import pytest

from daskstate.demo import DEMOS, run_demo


@pytest.mark.distributed
def test_demo_runs_every_algorithm():
    lines: list[str] = []
    run_demo(workers=2, print_fn=lines.append)
    text = "\n".join(lines)
    assert "dask dashboard: http://127.0.0.1:" in text or "dashboard: not available" in text
    for name, _ in DEMOS:
        assert f"== {name} (" in text
    assert {"StandardScaler", "KMeans", "PCA", "LinearLearner", "Forecaster"} <= {name for name, _ in DEMOS}
    assert "backtest on the last 12 months: MASE" in text and "x 100 paths" in text
