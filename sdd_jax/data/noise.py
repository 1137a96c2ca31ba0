"""Label noise on the training split: pure NumPy functions of the labels and a generator.

Kinds (``rate`` = eps, K classes, N examples):

* ``random_labels`` -- what the paper's published commands call "symmetric" and what the
  official code's ``randomize_labels`` does: ceil(eps*N) examples chosen at random get a label
  drawn uniformly from all K classes, so about eps/K of them keep their true label.
* ``symmetric`` -- true flips only: a chosen example moves to a uniformly random *other* class
  (transition 1-eps on the diagonal, eps/(K-1) elsewhere).
* ``asymmetric`` -- class-conditional flips: MNIST 2->7, 3->8, 5<->6; CIFAR-10 truck->automobile,
  bird->airplane, cat<->dog, deer->horse; CIFAR-100 each class -> the next class of its
  superclass (``asymmetric_mode="superclass"``) or of its block of five consecutive indices
  (``"reference_blocks"``, what the official code does).
* ``pairflip`` -- class i -> (i+1) mod K.

With ``exact=True`` (default) a kind corrupts exactly ceil(eps*N) examples (``asymmetric``:
ceil(eps*n_c) of each source class c, as the official CIFAR-10 code); with ``exact=False`` each
example is chosen independently with probability eps (the official code's transition-matrix
sampling for symmetric, pairflip and MNIST/CIFAR-100 asymmetric noise). Counts are
``ceil(round(eps*N, 9))`` so that 0.07*100 gives 7, not the 8 a plain float ceil gives.

``is_noisy`` marks the examples *selected* for corruption; for ``random_labels`` some of them
keep their label, so it is not ``noisy != clean``.

The functions trust a validated setting (:mod:`sdd_jax.validate` checks the kind, the rate in
[0, 1], a rate only with a kind and the asymmetric mode); they check the labels they are given.
:func:`asymmetric_flips` is where the data sets with asymmetric noise are defined (validation
asks it).
"""

from __future__ import annotations

import math

import numpy as np

from sdd_jax.choices import ASYMMETRIC_MODES, NOISE_KINDS
from sdd_jax.data import classes
from sdd_jax.data.errors import DataError


def corrupted_count(rate: float, n: int) -> int:
    """ceil(rate * n), robust to float round-off."""
    return int(math.ceil(round(rate * n, 9)))


def canonical_name(dataset_name: str) -> str:
    """``mnist_embedded`` -> ``mnist``; a tfds version suffix (``cifar10:3.0.2``) is dropped."""
    name = dataset_name.lower().split(":")[0].strip()
    return "mnist" if name == "mnist_embedded" else name


def asymmetric_flips(dataset_name: str, num_classes: int | None, asymmetric_mode: str = "superclass") -> dict[int, int]:
    """Source class -> target class for ``asymmetric`` noise on ``dataset_name`` (``num_classes``,
    unless ``None``, must match the data set's)."""
    name = canonical_name(dataset_name)
    assert asymmetric_mode in ASYMMETRIC_MODES, asymmetric_mode  # noise.asymmetric_mode is validated
    if name == "mnist":
        flips, expected_k = classes.MNIST_FLIPS, 10
    elif name == "cifar10":
        flips, expected_k = classes.CIFAR10_FLIPS, 10
    elif name == "cifar100":
        expected_k = 100
        if asymmetric_mode == "superclass":
            flips = classes.cifar100_superclass_flips()
        else:
            flips = classes.cifar100_block_flips()
    else:
        raise DataError(f"asymmetric noise is defined for mnist, cifar10 and cifar100, not for {dataset_name!r}")
    if num_classes is not None and num_classes != expected_k:
        raise DataError(f"asymmetric noise for {name} expects {expected_k} classes, got num_classes={num_classes}")
    return dict(flips)


def _check(labels: np.ndarray, num_classes: int, kind: str, rate: float) -> np.ndarray:
    assert kind in NOISE_KINDS and 0.0 <= float(rate) <= 1.0, (kind, rate)  # noise.kind, noise.rate are validated
    if int(num_classes) < 2:
        raise DataError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels out of range [0, {num_classes}): min {labels.min()}, max {labels.max()}")
    return labels.astype(np.int64)


def _select(n: int, rate: float, exact: bool, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of the examples chosen for corruption among ``n`` candidates."""
    if exact:
        return np.sort(rng.permutation(n)[: corrupted_count(rate, n)])
    return np.flatnonzero(rng.random(n) < rate)


def apply_noise(
    labels: np.ndarray,
    num_classes: int,
    kind: str,
    rate: float,
    rng: np.random.Generator,
    *,
    dataset_name: str = "",
    exact: bool = True,
    asymmetric_mode: str = "superclass",
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``labels``; returns ``(noisy_labels int32, is_noisy bool)``. ``labels`` is not modified.

    Random draws happen in a fixed order (which examples, then what label), and the choice of
    examples depends only on N (not on the labels) for every kind but ``asymmetric``.
    """
    clean = _check(labels, num_classes, kind, rate)
    n = clean.shape[0]
    noisy = clean.copy()
    is_noisy = np.zeros(n, dtype=bool)
    if kind == "none" or rate == 0 or n == 0:
        return noisy.astype(np.int32), is_noisy

    if kind == "asymmetric":
        flips = asymmetric_flips(dataset_name, num_classes, asymmetric_mode)
        for source in sorted(flips):
            members = np.flatnonzero(clean == source)
            chosen = members[_select(members.size, rate, exact, rng)]
            noisy[chosen] = flips[source]
            is_noisy[chosen] = True
        return noisy.astype(np.int32), is_noisy

    chosen = _select(n, rate, exact, rng)
    is_noisy[chosen] = True
    if kind == "random_labels":
        noisy[chosen] = rng.integers(0, num_classes, size=chosen.size)
    elif kind == "symmetric":
        noisy[chosen] = (clean[chosen] + rng.integers(1, num_classes, size=chosen.size)) % num_classes
    elif kind == "pairflip":
        noisy[chosen] = (clean[chosen] + 1) % num_classes
    return noisy.astype(np.int32), is_noisy


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Empirical ``(K, K)`` matrix: row i = distribution of noisy labels among examples of true
    class i (a row of zeros for a class with no examples)."""
    clean = np.asarray(clean)
    noisy = np.asarray(noisy)
    if clean.shape != noisy.shape or clean.ndim != 1:
        raise DataError(f"clean and noisy labels must be 1-D of equal shape, got {clean.shape} and {noisy.shape}")
    for name, arr in (("clean", clean), ("noisy", noisy)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise DataError(f"{name} labels out of range [0, {num_classes})")
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean.astype(np.int64), noisy.astype(np.int64)), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
