"""``load_dataset``: read a source, hold out validation, keep a subset, corrupt labels.

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


def load_dataset(data: DataConfig, noise: NoiseConfig) -> Dataset:
    """The data set ``data`` describes, with the label noise ``noise`` describes (a validated
    setting: :func:`sdd_jax.validate.validate` checks the sizes, the noise kind and rate, and that
    asymmetric noise is defined for ``data.name`` before anything is read).

    Raises :class:`~sdd_jax.data.errors.DataError` for what only the data can tell (sizes above
    what the source holds, missing files, malformed contents).
    """
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
    x_train, y_clean = raw.x_train[train_idx], raw.y_train[train_idx]

    y_noisy, is_noisy = noise_lib.apply_noise(
        y_clean,
        raw.num_classes,
        noise.kind,
        noise.rate,
        rng_lib.numpy_rng(noise.seed, "noise"),
        dataset_name=data.name,
        exact=noise.exact,
        asymmetric_mode=noise.asymmetric_mode,
    )

    x_test, y_test = raw.x_test, raw.y_test
    if data.test_size is not None:
        if data.test_size > y_test.shape[0]:
            raise DataError(f"test_size {data.test_size} exceeds the {y_test.shape[0]} test examples")
        x_test, y_test = x_test[: data.test_size], y_test[: data.test_size]

    x_val = raw.x_train[val_idx] if val_idx.size else None
    y_val = raw.y_train[val_idx] if val_idx.size else None

    realised = float(np.mean(y_noisy != y_clean))
    metadata = {
        "name": data.name,
        "source": raw.source,
        "num_classes": raw.num_classes,
        "example_shape": list(raw.x_train.shape[1:]),
        "sizes": {
            "available_train": int(pool),
            "train": int(train_idx.size),
            "validation": int(val_idx.size),
            "test": int(y_test.shape[0]),
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
        "transition_matrix": np.round(noise_lib.transition_matrix(y_clean, y_noisy, raw.num_classes), 6).tolist(),
        "train_class_counts": np.bincount(y_clean, minlength=raw.num_classes).tolist(),
        "mean": list(raw.mean),
        "std": list(raw.std),
    }
    return Dataset(
        x_train=x_train,
        y_train=y_noisy,
        y_train_clean=y_clean.astype(np.int32),
        is_noisy=is_noisy,
        x_test=x_test,
        y_test=y_test,
        x_val=x_val,
        y_val=y_val,
        num_classes=raw.num_classes,
        mean=raw.mean,
        std=raw.std,
        metadata=metadata,
    )
