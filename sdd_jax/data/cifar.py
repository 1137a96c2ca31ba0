"""CIFAR-10/100 "python version" batches, read through a restricted unpickler.

The batches are Python 2 pickles of a dict with ``data`` (N, 3072) uint8 rows (1024 red, 1024
green, 1024 blue values, each row-major 32x32) and ``labels`` (CIFAR-10) or ``fine_labels``
(CIFAR-100). A pickle can run arbitrary code when loaded, so :class:`RestrictedUnpickler`
admits only what rebuilding numpy arrays needs and a few inert builtins.
"""

from __future__ import annotations

import builtins
import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np

from sdd_jax.data.errors import DataError, DataNotFoundError, UnsafePickleError

_np_core = getattr(np, "_core", None) or np.core  # numpy >= 2 renamed numpy.core


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = _np_core.multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = _np_core.multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = _np_core.numeric._frombuffer
    for name in (
        "list",
        "dict",
        "tuple",
        "set",
        "frozenset",
        "bytes",
        "bytearray",
        "str",
        "int",
        "float",
        "complex",
        "bool",
        "slice",
        "range",
    ):
        allowed[("builtins", name)] = getattr(builtins, name)
        allowed[("__builtin__", name)] = allowed[("builtins", name)]
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but numpy array reconstruction and plain builtins."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays and plain builtins are allowed"
            ) from None


def restricted_load(data: bytes, name: str = "<bytes>"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``latin1`` for Python 2 strings)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{name}: {err}") from None
    except Exception as err:  # truncated or garbled pickles raise many different types
        raise DataError(f"{name}: cannot read pickle ({type(err).__name__}: {err})") from None


def _str_keys(d) -> dict:
    if not isinstance(d, dict):
        raise DataError(f"expected a pickled dict, got {type(d).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> ``(images (N, 32, 32, 3) uint8, labels int32)``."""
    if not path.is_file():
        raise DataNotFoundError(f"CIFAR batch file not found: {path}")
    batch = _str_keys(restricted_load(path.read_bytes(), str(path)))
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def find_cifar_dir(name: str, data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir/cifar-10-batches-py`` (or ``cifar-100-python``), or ``data_dir`` itself when it
    holds the batch files; ``None`` when neither does."""
    if data_dir is None or name not in CIFAR_LAYOUT:
        return None
    folder, train_files, test_files, _, _ = CIFAR_LAYOUT[name]
    root = Path(data_dir).expanduser()
    for candidate in (root / folder, root):
        if all((candidate / f).is_file() for f in train_files + test_files):
            return candidate
    return None


def load_cifar_python(name: str, data_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``x_train (50000, 32, 32, 3) uint8``, ``y_train``, ``x_test``, ``y_test`` of CIFAR-10/100."""
    if name not in CIFAR_LAYOUT:
        raise DataError(f"the CIFAR python reader knows cifar10 and cifar100, not {name!r}")
    folder_name, train_files, test_files, label_key, num_classes = CIFAR_LAYOUT[name]
    folder = find_cifar_dir(name, data_dir)
    if folder is None:
        files = ", ".join(train_files + test_files)
        raise DataNotFoundError(f"no {name} python batches ({files}) in {data_dir!r} or its {folder_name}/")
    out = {}
    for split, files in (("train", train_files), ("test", test_files)):
        parts = [read_batch(folder / f, label_key) for f in files]
        out[f"x_{split}"] = np.concatenate([p[0] for p in parts])
        out[f"y_{split}"] = np.concatenate([p[1] for p in parts])
    for split in ("train", "test"):
        y = out[f"y_{split}"]
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{name} {split} labels out of range [0, {num_classes})")
    return out
