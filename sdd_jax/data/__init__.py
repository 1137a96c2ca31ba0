"""Data: sources -> numpy arrays and metadata (:func:`load_dataset`), label noise
(:mod:`~sdd_jax.data.noise`) and on-device preprocessing (:mod:`~sdd_jax.data.device`)."""

from sdd_jax.data.dataset import CleanSplits, Dataset, add_noise, load_dataset, read_clean
from sdd_jax.data.device import normalize, random_crop_flip
from sdd_jax.data.errors import ChecksumError, DataError, DataNotFoundError, UnsafePickleError
from sdd_jax.data.noise import apply_noise, transition_matrix

__all__ = [
    "ChecksumError",
    "CleanSplits",
    "DataError",
    "DataNotFoundError",
    "Dataset",
    "add_noise",
    "UnsafePickleError",
    "apply_noise",
    "load_dataset",
    "read_clean",
    "normalize",
    "random_crop_flip",
    "transition_matrix",
]
