"""Text at scale: a topic model's rounds over many partitions hold a bounded number of them in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import write_parquet
from distributed.diagnostics.plugin import SchedulerPlugin

import daskstate
from daskstate.engine import ROUND_PARTITIONS_PER_GRAPH


class HeldReads(SchedulerPlugin):
    """The partitions read and not yet released anywhere on the cluster (``read-*`` keys in memory), and the peak."""

    name = "held-reads"

    def __init__(self) -> None:
        self.held: set = set()
        self.peak = 0

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        from dask.utils import key_split

        if not key_split(key).startswith("read-"):
            return
        if finish == "memory":
            self.held.add(key)
            self.peak = max(self.peak, len(self.held))
        elif start == "memory":
            self.held.discard(key)


def peak_held(dask_scheduler) -> int:
    return dask_scheduler.plugins[HeldReads.name].peak


def test_rounds_on_workers_do_not_read_ahead_of_the_epoch(tmp_path, cluster_client):
    # before: one graph per epoch, and a worker idle at each round's barrier read later rounds' partitions:
    # 33 of 40 held at once, so memory grew with the corpus
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"], dtype=object)
    docs = [" ".join(rng.choice(words[: 4 + 4 * (i % 2)], 12)) for i in range(60 * 40)]
    write_parquet(tmp_path, pd.DataFrame({"body": docs}), 4, row_group_size=60)
    ddf = daskstate.read_parquet(tmp_path)
    assert ddf.npartitions == 40
    cluster_client.register_plugin(HeldReads())
    try:
        model = daskstate.NeuralTopicModel(2, epochs=2, early_stopping_patience=0, vocabulary=list(words),
                                           text_column="body", encoder_layers=(8,), random_state=0)
        with cluster_client.as_current():
            model.fit(ddf)
        peak = cluster_client.run_on_scheduler(peak_held)
    finally:
        cluster_client.unregister_scheduler_plugin(HeldReads.name)
    assert model.n_samples_seen_ == len(docs)
    assert 0 < peak <= ROUND_PARTITIONS_PER_GRAPH
