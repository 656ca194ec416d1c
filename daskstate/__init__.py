"""daskstate: train models on data far larger than memory from fixed-size, mergeable states.

Each algorithm separates the model from its *state*, a summary of all data seen
so far whose size does not grow with the rows. ``update`` folds a batch in,
``merge`` combines states of disjoint data, ``finalize`` turns a state into a
working model at any time. :func:`fold` runs that over Dask partitions with a
tree reduction, so a fit is one pass, incremental, resumable and distributed.
"""

from daskstate.algorithms.kmeans import KMeans, KMeansState
from daskstate.algorithms.linear import LinearLearner, LinearState
from daskstate.algorithms.pca import PCA, PCAState
from daskstate.algorithms.scaler import ScalerState, StandardScaler
from daskstate.data import read_parquet
from daskstate.engine import FitOptions, fold, fold_rounds
from daskstate.errors import DataError, NotFittedError, SchemaError, StateError, StateFileError
from daskstate.estimator import StateEstimator, load
from daskstate.state import RoundContext, Schema, State
from daskstate.store import load_state, save_state

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "FitOptions",
    "KMeans",
    "KMeansState",
    "LinearLearner",
    "LinearState",
    "NotFittedError",
    "PCA",
    "PCAState",
    "RoundContext",
    "ScalerState",
    "Schema",
    "SchemaError",
    "StandardScaler",
    "State",
    "StateError",
    "StateEstimator",
    "StateFileError",
    "fold",
    "fold_rounds",
    "load",
    "load_state",
    "read_parquet",
    "save_state",
]
