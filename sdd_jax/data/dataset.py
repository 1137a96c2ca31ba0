"""``load_dataset``: read a source, hold out validation, keep a subset (:func:`read_clean`), corrupt
labels (:func:`add_noise`).

Each random choice has its own stream (``sdd_jax.rng``): ``split`` (validation examples) and
``subset`` (kept training examples) from ``DataConfig.subset_seed``, ``noise`` from
``NoiseConfig.seed``. The test set is never subsampled at random (``test_size`` keeps its first
examples) and never corrupted; validation labels stay clean.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdd_jax import rng as rng_lib
from sdd_jax.config import DataConfig, NoiseConfig
from sdd_jax.data import noise as noise_lib
from sdd_jax.data import sources, subset
from sdd_jax.data.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays ready for training. Images are uint8 NHWC (float32 ``(N, 40)`` for mnist1d);
    labels int32. ``y_train`` holds the noisy labels training sees, ``y_train_clean`` the true
    ones; ``is_noisy`` marks the examples *selected* for corruption (with ``random_labels`` some
    keep their label). ``mean``/``std`` are per channel in [0, 1] pixel units."""

    x_train: np.ndarray
    y_train: np.ndarray
    y_train_clean: np.ndarray
    is_noisy: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    metadata: dict


@dataclasses.dataclass(frozen=True, eq=False)
class CleanSplits:
    """A data set read, split and subset as ``data`` describes, before any label noise: what every
    noise setting of the same ``data`` shares (a study reads it once and noises it per replica,
    :func:`add_noise`). ``y_train`` holds the true labels; ``available_train`` the training
    examples of the source before the validation split and the subset."""

    data: DataConfig
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    available_train: int


def load_dataset(data: DataConfig, noise: NoiseConfig) -> Dataset:
    """The data set ``data`` describes, with the label noise ``noise`` describes (a validated
    setting: :func:`sdd_jax.validate.validate` checks the sizes, the noise kind and rate, and that
    asymmetric noise is defined for ``data.name`` before anything is read):
    :func:`add_noise` of :func:`read_clean`.

    Raises :class:`~sdd_jax.data.errors.DataError` for what only the data can tell (sizes above
    what the source holds, missing files, malformed contents).
    """
    return add_noise(read_clean(data), noise)


def read_clean(data: DataConfig) -> CleanSplits:
    """Read the source of ``data``, hold out the validation split, keep the training subset and
    the first ``test_size`` test examples (no label noise yet). Raises
    :class:`~sdd_jax.data.errors.DataError` as :func:`load_dataset`."""
    raw = sources.read_source(data.name, data.source, data.data_dir, data.download, data.subset_seed)
    pool = raw.y_train.shape[0]

    rest, val_idx = subset.split_validation(pool, data.validation_size, rng_lib.numpy_rng(data.subset_seed, "split"))
    keep = subset.choose_subset(
        raw.y_train[rest],
        data.train_size,
        data.subset_mode,
        data.class_balanced,
        raw.num_classes,
        rng_lib.numpy_rng(data.subset_seed, "subset"),
    )
    train_idx = rest[keep]

    x_test, y_test = raw.x_test, raw.y_test
    if data.test_size is not None:
        if data.test_size > y_test.shape[0]:
            raise DataError(f"test_size {data.test_size} exceeds the {y_test.shape[0]} test examples")
        x_test, y_test = x_test[: data.test_size], y_test[: data.test_size]
    return CleanSplits(
        data=data,
        x_train=raw.x_train[train_idx],
        y_train=raw.y_train[train_idx],
        x_test=x_test,
        y_test=y_test,
        x_val=raw.x_train[val_idx] if val_idx.size else None,
        y_val=raw.y_train[val_idx] if val_idx.size else None,
        num_classes=raw.num_classes,
        mean=raw.mean,
        std=raw.std,
        source=raw.source,
        available_train=int(pool),
    )


def add_noise(clean: CleanSplits, noise: NoiseConfig) -> Dataset:
    """``clean`` with the label noise ``noise`` describes (the ``noise`` stream of ``noise.seed``):
    the :class:`Dataset` a run of ``clean.data`` and ``noise`` trains on, metadata included. The
    images are shared with ``clean``, not copied."""
    data, y_clean = clean.data, clean.y_train
    y_noisy, is_noisy = noise_lib.apply_noise(
        y_clean,
        clean.num_classes,
        noise.kind,
        noise.rate,
        rng_lib.numpy_rng(noise.seed, "noise"),
        dataset_name=data.name,
        exact=noise.exact,
        asymmetric_mode=noise.asymmetric_mode,
    )
    realised = float(np.mean(y_noisy != y_clean))
    metadata = {
        "name": data.name,
        "source": clean.source,
        "num_classes": clean.num_classes,
        "example_shape": list(clean.x_train.shape[1:]),
        "sizes": {
            "available_train": clean.available_train,
            "train": int(y_clean.shape[0]),
            "validation": 0 if clean.y_val is None else int(clean.y_val.shape[0]),
            "test": int(clean.y_test.shape[0]),
        },
        "subset": {
            "train_size": data.train_size,
            "subset_mode": data.subset_mode,
            "class_balanced": data.class_balanced,
            "subset_seed": data.subset_seed,
        },
        "noise": {
            "kind": noise.kind,
            "rate": float(noise.rate),
            "seed": noise.seed,
            "exact": noise.exact,
            "asymmetric_mode": noise.asymmetric_mode,
        },
        "realised_noise_rate": round(realised, 6),
        "selected_fraction": round(float(np.mean(is_noisy)), 6),
        "num_selected": int(is_noisy.sum()),
        "num_changed": int(np.sum(y_noisy != y_clean)),
        "transition_matrix": np.round(noise_lib.transition_matrix(y_clean, y_noisy, clean.num_classes), 6).tolist(),
        "train_class_counts": np.bincount(y_clean, minlength=clean.num_classes).tolist(),
        "mean": list(clean.mean),
        "std": list(clean.std),
    }
    return Dataset(
        x_train=clean.x_train,
        y_train=y_noisy,
        y_train_clean=y_clean.astype(np.int32),
        is_noisy=is_noisy,
        x_test=clean.x_test,
        y_test=clean.y_test,
        x_val=clean.x_val,
        y_val=clean.y_val,
        num_classes=clean.num_classes,
        mean=clean.mean,
        std=clean.std,
        metadata=metadata,
    )
