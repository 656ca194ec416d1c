"""Exceptions raised by daskstate. Each message names what is wrong and where."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class DaskStateError(Exception):
    """Base class of daskstate's own errors."""


class DataError(DaskStateError, ValueError):
    """The input data cannot be folded: bad values, too few rows, unseen classes."""


class SchemaError(DataError):
    """Columns are missing, non-numeric, or differ from the ones the state was fitted on."""


class StateError(DaskStateError, ValueError):
    """A state cannot be merged, loaded or finalized as asked."""


class StateFileError(StateError):
    """A saved state or model is damaged, of an unknown version, or of another algorithm."""


class NotFittedError(DaskStateError, _SklearnNotFittedError):
    """The estimator has no state yet: call fit first.

    Also scikit-learn's ``NotFittedError`` (so a ``ValueError`` and an ``AttributeError``).
    """


class MomentOverflowError(DataError):
    """A column's mean or sum of squared deviations is beyond float64's range.

    Raised by the shared moment numerics with column indices; a state that knows its
    schema re-raises it with the column names (:meth:`naming`).
    """

    def __init__(self, columns: list[int], names: list[str] | None = None):
        self.columns = list(columns)
        self.names = names
        shown = names if names is not None else [f"#{j}" for j in self.columns]
        super().__init__(
            f"column(s) {shown}: the sum of squared deviations from the mean exceeds float64's range "
            "(about 1.8e308), so the data cannot be summarised without inf or NaN; rescale the column(s) "
            "(e.g. divide by a power of ten)"
        )

    def __reduce__(self):  # pickles across Dask workers with its columns and names
        return (type(self), (self.columns, self.names))

    def naming(self, features: list[str] | tuple[str, ...], target: str | None = None) -> MomentOverflowError:
        """The same error with column names (index ``len(features)`` is the target, if any)."""
        names = list(features) + ([target] if target is not None else [])
        return MomentOverflowError(self.columns, [names[j] if j < len(names) else f"#{j}" for j in self.columns])
