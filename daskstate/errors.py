"""Exceptions raised by daskstate. Each message names what is wrong and where."""

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
