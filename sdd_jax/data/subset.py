"""Which training examples are kept and which are held out, each from its own random stream.

The validation examples are drawn first, from the whole training set (``split`` stream), so the
validation set does not change with ``train_size``; the ``train_size`` training examples are then
chosen among the rest (``subset`` stream). Label noise comes afterwards, on the kept examples,
from the ``noise`` stream. (The official code draws noise and subsample from one permutation,
so a subsample no larger than the noise fraction keeps only relabelled examples.)
"""

from __future__ import annotations

import numpy as np

from sdd_jax.choices import SUBSET_MODES
from sdd_jax.data.errors import DataError


def split_validation(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, validation)`` sorted index arrays; ``size`` examples drawn at random."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
        raise DataError(f"validation_size must be an integer >= 0, got {size!r}")
    if size >= n:
        raise DataError(f"validation_size {size} leaves no training examples out of {n}")
    if size == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    held = np.zeros(n, dtype=bool)
    held[rng.permutation(n)[:size]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _quotas(size: int, num_classes: int) -> np.ndarray:
    """``size`` split over the classes as evenly as possible (the lower indices get the remainder)."""
    quotas = np.full(num_classes, size // num_classes)
    quotas[: size % num_classes] += 1
    return quotas


def choose_subset(
    labels: np.ndarray,
    size: int | None,
    mode: str,
    class_balanced: bool,
    num_classes: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sorted positions (into ``labels``) of the kept examples.

    ``mode="first"`` keeps the first ``size`` in data-set order, ``"random"`` a uniformly random
    ``size``; ``class_balanced`` takes the same way ``size // K`` of each class (the first
    ``size % K`` classes one more).
    """
    if mode not in SUBSET_MODES:
        raise DataError(f"unknown subset_mode {mode!r}; known: {', '.join(SUBSET_MODES)}")
    n = labels.shape[0]
    if size is None:
        return np.arange(n)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise DataError(f"train_size must be a positive integer or None, got {size!r}")
    if size > n:
        raise DataError(f"train_size {size} exceeds the {n} available training examples")
    order = np.arange(n) if mode == "first" else rng.permutation(n)
    if not class_balanced:
        return np.sort(order[:size])
    quotas = _quotas(size, num_classes)
    ordered_labels = labels[order]
    kept = []
    for c in range(num_classes):
        members = order[ordered_labels == c]
        if members.size < quotas[c]:
            raise DataError(
                f"class-balanced train_size {size} needs {quotas[c]} examples of class {c}, only {members.size} available"
            )
        kept.append(members[: quotas[c]])
    return np.sort(np.concatenate(kept))
