"""The exceptions of the data package: every bad input raises one of these, naming the problem."""

from __future__ import annotations

import pickle


class DataError(ValueError):
    """Bad data configuration, malformed file contents or inconsistent arrays."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set, file or prepared tfds build that is not where the configuration says."""


class ChecksumError(DataError):
    """A shipped or downloaded file whose SHA-256 differs from the recorded one."""


class UnsafePickleError(DataError, pickle.UnpicklingError):
    """A pickle that asks for something other than numpy arrays and plain builtins."""
