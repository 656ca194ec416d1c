"""Streaming k-means: a core set of weighted centres, reduced to k only at finalize.

The state is a *core set*: ``K = k_max x extra_center_factor`` weighted centres
that summarise every row seen, each with the (decayed) number of rows it stands
for and the sum of their squared distances to it (its *spread*, the running cost
estimate). The state's size depends on ``K`` and the number of features, never
on the rows.

- ``update`` (per mini-batch): seed the centres from the first mini-batch by
  k-means++'s D^2 sampling (drawn in a few rounds, k-means|| style, rather than
  one centre per Python step), then assign each row to the nearest of the ``K``
  centres (one float32 BLAS GEMM per cache-sized block of rows, on rows shifted
  to the data's first mean; for up to 100 centres the nearest one is found by an
  integer minimum over distances with the centre's index packed into their low
  bits, see :func:`daskstate.algorithms.kmeans.numerics.nearest_centers_packed`) and move every
  centre to the running mean of all the rows it received (float64 sums).
  Rows that arrive in an order (sorted by a column, drifting) would leave the seeds
  to stretch over everything after the first mini-batch: a mini-batch whose rows are
  on average twice as far (squared) from the core set as the rows it summarises
  opens up to ``K`` more centres on its rows (D^2 sampling again), and the core set
  is reduced back to ``K`` as a merge reduces it (``ggplot2``'s diamonds in their
  own order, one partition, ``k = 10``: 2.7x scikit-learn's SSE before, 1.01-1.03x).
- ``merge``: the union of both core sets, reduced back to ``K`` centres with
  weighted k-means++ seeding (again drawn in rounds) and a few weighted Lloyd
  steps. Weights add up; spreads add up exactly with the squared distance each
  merged centre moves (Chan's formula), so the total weight, the weighted mean
  and the total sum of squares of the rows are preserved by every merge.
- ``finalize(n_clusters=k)`` for any ``k <= k_max``: weighted Lloyd to convergence on
  the core set from ``local_lloyd_num_trials`` weighted greedy k-means++ seedings and
  one seeding by Ward's agglomeration of the core set, the best kept (restarts alone
  missed the best grouping of 10 blobs into 5 or 6 clusters by 1-4%), then a
  few Lloyd iterations (the *polish*) on the rows the state knows; no data read.
  The polish runs on the core set's cells *filled in* with the sampled rows nearest
  their centres, each cell's rows moved and scaled so that they have its weight,
  mean and spread exactly (post-stratification: the core set says how many rows lie
  where, the sample only how they lie within a cell; only cells that a boundary
  between clusters cuts look at their rows). A core set's centroids cannot tell
  where a cut cell's rows fall, and a sample alone is too noisy to say: on real
  tables no one tuned for (diamonds in price order, county murder counts, wages,
  credit balances) the SSE at ``k = 10`` was 1-4% above scikit-learn's before, at
  most 1% (median) after. The best of three polished local optima of the reduction
  is kept, by the cost on the filled-in cells. Where the cells are not strata of the
  rows (after merging many partitions their cells overlap: the sample's share of
  rows nearest each centre is far from the cells' weights), the polish runs on the
  sample instead, where a cross-fitted check (fit on one half of the sample, score
  on the other) says it helps. A centre that no sampled row comes to keeps its
  place: the core set put it on rows the sample missed (one far county among 37k
  rows: moved, the SSE was 16x).

The sample is an addition to the core-set design of the issue. A core set's
centres are cell centroids; where many cells make one final cluster (large ``k``,
and above all after merging the core sets of many partitions, whose cells come
from different tessellations), the weighted k-means of the centroids is not the
data's: with 20 partitions and ``k = 100`` on 16-dimensional blobs the merged core
set alone gave an SSE 5.8% above scikit-learn's ``KMeans(n_init=10)`` (the union of
all 20 unreduced core sets still 4.2%, so no better merge fixes it), while a
single partition's core set gave 1.3%. A priority sample of the rows (uniform, or
weighted by decay; 20,000 rows for 16 features, 2.6 MB) is exactly mergeable and
brings it to 0.6%; ``sample_size=0`` gives the pure core set.

``epochs > 1`` refines the ``n_clusters`` centres with exact Lloyd passes over the
data: :class:`KMeansLloydState` holds per-centre sums, counts and squared
distances, an exact mergeable state (``merge(update(A), update(B)) ==
update(A | B)`` to rounding). The refined centres are kept in the main state.

Randomness is seeded from ``random_state`` and the content of the rows or centres
at hand (never from task order), so a recomputed task gives the same state.

Modules: :mod:`.numerics` (distances, seeding, weighted Lloyd), :mod:`.state` (the
states), :mod:`.estimator` (``KMeans``).
"""

from daskstate.algorithms.kmeans.estimator import KMeans
from daskstate.algorithms.kmeans.state import (
    KMeansLloydState,
    KMeansState,
    auto_extra_center_factor,
    auto_sample_size,
    reduce_core_set,
)

__all__ = ["KMeans", "KMeansLloydState", "KMeansState", "auto_extra_center_factor", "auto_sample_size",
           "reduce_core_set"]
