"""The IDX format of the MNIST files (LeCun et al.), gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the data in row-major order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from sdd_jax.data.errors import DataError, DataNotFoundError

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# (split, kind) -> base file name; both the "-idx3-ubyte" and the ".idx3-ubyte" spellings exist.
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file (already un-gzipped)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{name}: not an IDX file (bad magic number {raw[:4]!r})")
    dtype = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{name}: IDX header promises {shape} ({expected} bytes) but the file holds {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file; gzip is recognised by its magic bytes, whatever the file name."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt gzip data ({err})") from None
    return parse_idx(raw, str(path))


def _candidates(base: str) -> list[str]:
    dotted = base.replace("-idx", ".idx")
    return [base, base + ".gz", dotted, dotted + ".gz"]


def find_mnist_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The folder holding the four MNIST IDX files: ``data_dir``, ``data_dir/mnist`` or
    ``data_dir/MNIST/raw`` (torchvision's layout); ``None`` when none of them does."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    for folder in (root, root / "mnist", root / "MNIST" / "raw"):
        if all(any((folder / c).is_file() for c in _candidates(b)) for b in MNIST_FILES.values()):
            return folder
    return None


def load_mnist_idx(data_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``x_train (60000, 28, 28, 1) uint8``, ``y_train``, ``x_test``, ``y_test`` from IDX files."""
    folder = find_mnist_dir(data_dir)
    if folder is None:
        names = ", ".join(b + "[.gz]" for b in MNIST_FILES.values())
        raise DataNotFoundError(f"no MNIST IDX files ({names}) in {data_dir!r} (nor in its mnist/ or MNIST/raw/)")
    out = {}
    for (split, kind), base in MNIST_FILES.items():
        path = next(folder / c for c in _candidates(base) if (folder / c).is_file())
        arr = read_idx(path)
        if kind == "images":
            if arr.ndim != 3 or arr.dtype != np.uint8:
                raise DataError(f"{path}: expected uint8 images (N, H, W), got {arr.dtype} {arr.shape}")
            out[f"x_{split}"] = arr[..., None]
        else:
            if arr.ndim != 1:
                raise DataError(f"{path}: expected 1-D labels, got shape {arr.shape}")
            out[f"y_{split}"] = arr.astype(np.int32)
    return out
