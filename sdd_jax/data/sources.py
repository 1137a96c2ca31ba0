"""Where the arrays come from: one reader per source, all returning a :class:`RawData`.

``DataConfig.name`` says *what* the data are (it fixes the class tables of asymmetric noise and
the normalisation constants); ``DataConfig.source`` says *how* to read them (``auto`` picks the
natural reader for the name and what ``data_dir`` holds).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import zipfile
from pathlib import Path

import numpy as np

from sdd_jax import rng as rng_lib
from sdd_jax.choices import SOURCES
from sdd_jax.data import cifar, embedded, idx, tfds_source, tiny_imagenet
from sdd_jax.data.errors import DataError, DataNotFoundError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# CIFAR and Tiny-ImageNet: the ImageNet constants, as the official code uses.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISATION = {
    "mnist": (MNIST_MEAN, MNIST_STD),
    "mnist_embedded": (MNIST_MEAN, MNIST_STD),
    "cifar10": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar100": (IMAGENET_MEAN, IMAGENET_STD),
    "tiny_imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "mnist1d": ((0.0,), (1.0,)),  # make_dataset already standardises the signals
}

SYNTHETIC_PATTERN = re.compile(r"synthetic(?:_(\d+)x(\d+)x(\d+))?(?:_c(\d+))?(?:_n(\d+))?(?:_t(\d+))?")
SYNTHETIC_DEFAULTS = dict(height=32, width=32, channels=3, classes=10, train=512, test=128)


@dataclasses.dataclass(frozen=True, eq=False)
class RawData:
    """A data set as read, before subsetting, splitting and noise."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict  # JSON-serialisable description: reader and location


def _check_arrays(name: str, x_train, y_train, x_test, y_test, num_classes: int) -> None:
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: {x.shape[0]} {split} images but {y.shape[0]} labels")
        if y.ndim != 1:
            raise DataError(f"{name}: {split} labels must be 1-D, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name}: {split} labels must be integers, got {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{name}: {split} labels out of range [0, {num_classes}): min {y.min()}, max {y.max()}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name}: train examples of shape {x_train.shape[1:]} but test examples of shape {x_test.shape[1:]}"
        )
    if x_train.shape[0] == 0:
        raise DataError(f"{name}: empty training set")
    if x_train.dtype == np.uint8:
        if x_train.ndim != 4:
            raise DataError(f"{name}: expected uint8 images (N, H, W, C), got shape {x_train.shape}")
    elif not np.issubdtype(x_train.dtype, np.floating):
        raise DataError(f"{name}: examples must be uint8 images or floats, got {x_train.dtype}")


def pixel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] pixel units (of floats as they are)."""
    x = images.reshape(-1, images.shape[-1]) if images.ndim == 4 else images.reshape(-1, 1)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    mean = x.mean(axis=0, dtype=np.float64) / scale
    std = x.std(axis=0, dtype=np.float64) / scale
    std = np.where(std > 0, std, 1.0)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _make(name: str, arrays: dict, num_classes: int | None, source: dict) -> RawData:
    x_train, x_test = np.asarray(arrays["x_train"]), np.asarray(arrays["x_test"])
    y_train, y_test = np.asarray(arrays["y_train"]), np.asarray(arrays["y_test"])
    if num_classes is None:
        if not (np.issubdtype(y_train.dtype, np.integer) and np.issubdtype(y_test.dtype, np.integer)):
            raise DataError(f"{name}: labels must be integers, got {y_train.dtype} / {y_test.dtype}")
        num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    _check_arrays(name, x_train, y_train, x_test, y_test, int(num_classes))
    if name in NORMALISATION:
        mean, std = NORMALISATION[name]
    else:
        mean, std = pixel_stats(x_train)
    channels = x_train.shape[-1] if x_train.ndim == 4 else 1
    if len(mean) != channels:
        raise DataError(f"{name}: normalisation constants have {len(mean)} channels, the images {channels}")
    if x_train.dtype != np.uint8:
        x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    return RawData(
        x_train=x_train,
        y_train=y_train.astype(np.int32),
        x_test=x_test,
        y_test=y_test.astype(np.int32),
        num_classes=int(num_classes),
        mean=tuple(mean),
        std=tuple(std),
        source=source,
    )


def load_npz(path: str | os.PathLike, name: str = "npz") -> dict:
    """An ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optional ``num_classes``).
    ``path`` is the file, or a folder holding ``<name>.npz``.

    Arrays are read with ``allow_pickle=False``. Raises :class:`DataNotFoundError` for a missing
    file and :class:`DataError` naming the file for anything else: not a zip archive (numpy would
    take it for a pickle), object arrays, missing arrays."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / f"{name}.npz"
    if not path.is_file():
        raise DataNotFoundError(f"npz file not found: {path}")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read the npz file ({err.strerror or err})") from None
    if not is_zip:
        raise DataError(f"{path} is not a valid .npz file (not a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing} (has {npz.files})")
            out = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            if "num_classes" in npz.files:
                out["num_classes"] = int(npz["num_classes"])
    except DataError:
        raise
    except ValueError as err:
        if "pickle" in str(err):  # an object array: refused, whatever numpy suggests
            raise DataError(
                f"{path} is not a valid .npz file for this reader: it holds object "
                f"(pickled) arrays, which are never loaded"
            ) from None
        raise DataError(f"{path} is not a valid .npz file ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a valid .npz file ({err})") from None
    out["location"] = str(path)
    return out


def load_mnist1d() -> dict:
    """MNIST-1D (Greydanus & Steinbach) generated procedurally with ``make_dataset``'s default
    arguments: 4000 train / 1000 test signals of length 40. ``get_dataset`` is avoided: it
    downloads by default and writes a pickle. ``make_dataset`` seeds NumPy's and Python's
    global generators; their states are restored afterwards."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise DataError(f"the mnist1d data set needs the mnist1d package ({err})") from None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": np.asarray(data["x"], dtype=np.float32),
        "y_train": np.asarray(data["y"]),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"]),
    }


def parse_synthetic(name: str) -> dict[str, int]:
    """``synthetic[_HxWxC][_cK][_nN][_tT]`` -> sizes (defaults 32x32x3, 10 classes, 512/128)."""
    match = SYNTHETIC_PATTERN.fullmatch(name)
    if match is None:
        raise DataError(
            f"bad synthetic data set name {name!r}; expected synthetic[_HxWxC][_cK][_nN][_tT], e.g. synthetic_28x28x1_c10_n256_t64"
        )
    h, w, c, k, n, t = match.groups()
    spec = dict(SYNTHETIC_DEFAULTS)
    if h is not None:
        spec.update(height=int(h), width=int(w), channels=int(c))
    for key, value in (("classes", k), ("train", n), ("test", t)):
        if value is not None:
            spec[key] = int(value)
    if min(spec["height"], spec["width"], spec["channels"], spec["train"], spec["test"]) < 1 or spec["classes"] < 2:
        raise DataError(f"synthetic data set {name!r}: sizes must be positive and classes >= 2")
    return spec


def make_synthetic(name: str, seed: int) -> dict:
    """Small random uint8 images with learnable classes: each class has a random prototype and
    an example mixes 60% of its class prototype with 40% uniform noise. Deterministic in
    ``seed`` (drawn from the ``subset`` stream with an extra index, apart from the subset draw)."""
    spec = parse_synthetic(name)
    gen = rng_lib.numpy_rng(seed, "subset", 1)
    shape = (spec["height"], spec["width"], spec["channels"])
    prototypes = gen.integers(0, 256, size=(spec["classes"], *shape)).astype(np.float32)
    out = {}
    for split in ("train", "test"):
        labels = gen.integers(0, spec["classes"], size=spec[split])
        noise = gen.integers(0, 256, size=(spec[split], *shape)).astype(np.float32)
        out[f"x_{split}"] = np.round(0.6 * prototypes[labels] + 0.4 * noise).astype(np.uint8)
        out[f"y_{split}"] = labels.astype(np.int32)
    out["num_classes"] = spec["classes"]
    return out


def resolve_source(name: str, source: str, data_dir: str | None) -> str:
    """The reader for ``name``: ``source`` itself unless it is ``auto``."""
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; known: {', '.join(SOURCES)}")
    special = {"mnist_embedded": "embedded", "mnist1d": "mnist1d"}
    if name in special or name.startswith("synthetic"):
        if source != "auto":
            raise DataError(f"data set {name!r} has a single reader; leave data.source=auto (got {source!r})")
        return special.get(name, "synthetic")
    if source != "auto":
        return source
    if name == "npz":
        return "npz"
    if name == "tiny_imagenet":
        return "tiny_imagenet_folder"
    if name == "mnist" and idx.find_mnist_dir(data_dir) is not None:
        return "idx"
    if name in cifar.CIFAR_LAYOUT and cifar.find_cifar_dir(name, data_dir) is not None:
        return "cifar_python"
    return "tfds"


def read_source(
    name: str, source: str = "auto", data_dir: str | None = None, download: bool = False, seed: int = 0
) -> RawData:
    """Read the data set ``name`` with the reader ``source`` picks (``seed``: synthetic only)."""
    if not isinstance(name, str) or not name:
        raise DataError(f"data set name must be a non-empty string, got {name!r}")
    reader = resolve_source(name, source, data_dir)
    if reader not in ("embedded", "mnist1d", "synthetic", "tfds") and data_dir is None:
        raise DataError(f"data set {name!r} with source {reader!r} needs data.data_dir")
    if reader == "embedded":
        arrays = embedded.load_embedded_mnist()
        return _make(
            name, arrays, 10, {"reader": "embedded", "asset": embedded.ASSET_NAME, "sha256": embedded.ASSET_SHA256}
        )
    if reader == "mnist1d":
        return _make(
            name,
            load_mnist1d(),
            10,
            {"reader": "mnist1d", "generator": "mnist1d.data.make_dataset(get_dataset_args())"},
        )
    if reader == "synthetic":
        arrays = make_synthetic(name, seed)
        return _make(name, arrays, arrays["num_classes"], {"reader": "synthetic", "seed": int(seed)})
    if reader == "idx":
        folder = idx.find_mnist_dir(data_dir)
        arrays = idx.load_mnist_idx(data_dir)
        return _make(name, arrays, 10 if name == "mnist" else None, {"reader": "idx", "location": str(folder)})
    if reader == "cifar_python":
        arrays = cifar.load_cifar_python(name, data_dir)
        return _make(
            name,
            arrays,
            cifar.CIFAR_LAYOUT[name][4],
            {"reader": "cifar_python", "location": str(cifar.find_cifar_dir(name, data_dir))},
        )
    if reader == "tiny_imagenet_folder":
        arrays = tiny_imagenet.load_tiny_imagenet(data_dir)
        where = tiny_imagenet.find_tiny_imagenet_dir(data_dir)
        return _make(
            name,
            arrays,
            arrays["num_classes"],
            {"reader": "tiny_imagenet_folder", "location": str(where), "image_size": tiny_imagenet.IMAGE_SIZE},
        )
    if reader == "npz":
        arrays = load_npz(data_dir, name)
        return _make(name, arrays, arrays.get("num_classes"), {"reader": "npz", "location": arrays["location"]})
    # tfds
    try:
        arrays = tfds_source.load_tfds(name, data_dir, download)
    except DataNotFoundError as err:
        if source == "auto" and name in ("mnist", "cifar10", "cifar100"):
            files = "the MNIST IDX files" if name == "mnist" else f"the {cifar.CIFAR_LAYOUT[name][0]} batches"
            raise DataNotFoundError(f"{err}; or put {files} in data.data_dir") from None
        raise
    return _make(
        name, arrays, arrays["num_classes"], {"reader": "tfds", "tfds_name": name, "location": arrays["location"]}
    )
