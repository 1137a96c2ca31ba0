"""The real-MNIST subset shipped inside the package: the first 10,000 training digits and the
full 10,000-digit test set of the original IDX files, as a compressed ``.npz``.

``scripts/build_embedded_mnist.py`` writes the file from the IDX files; its SHA-256 is recorded
here and checked on every load, so a truncated or altered asset fails loudly.
"""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import numpy as np

from sdd_jax.data.errors import ChecksumError, DataError, DataNotFoundError

ASSET_NAME = "mnist_train10k_test10k.npz"
ASSET_SHA256 = "fd6d0099560fe364af9a295137f67650602b417cc10b9e79b1d699020ba8d1ce"
TRAIN_ROWS = 10_000  # the first rows of train-images-idx3-ubyte
KEYS = ("x_train", "y_train", "x_test", "y_test")


def asset_path():
    """The shipped ``.npz`` as an ``importlib.resources`` traversable."""
    return resources.files("sdd_jax.data") / "assets" / ASSET_NAME


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_embedded_mnist(expected_sha256: str = ASSET_SHA256) -> dict[str, np.ndarray]:
    """``x_train (10000, 28, 28, 1) uint8``, ``y_train int32``, ``x_test (10000, 28, 28, 1)``,
    ``y_test``, after checking the file's SHA-256."""
    path = asset_path()
    try:
        data = path.read_bytes()
    except (FileNotFoundError, OSError):
        raise DataNotFoundError(
            f"the embedded MNIST subset {ASSET_NAME} is missing from sdd_jax/data/assets "
            "(rebuild it with scripts/build_embedded_mnist.py, and check the package data of the install)"
        ) from None
    digest = sha256_hex(data)
    if digest != expected_sha256:
        raise ChecksumError(
            f"embedded MNIST subset {ASSET_NAME}: SHA-256 {digest} differs from the recorded {expected_sha256}; "
            "the file is corrupt or was rebuilt without updating ASSET_SHA256 in sdd_jax/data/embedded.py"
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        missing = [k for k in KEYS if k not in npz.files]
        if missing:
            raise DataError(f"embedded MNIST subset {ASSET_NAME} lacks arrays {missing}")
        out = {k: npz[k] for k in KEYS}
    for split in ("train", "test"):
        out[f"x_{split}"] = out[f"x_{split}"][..., None]
        out[f"y_{split}"] = out[f"y_{split}"].astype(np.int32)
    return out
