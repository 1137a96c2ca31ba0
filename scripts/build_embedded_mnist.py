"""Build the MNIST subset shipped in the package from the standard IDX files.

    python scripts/build_embedded_mnist.py --idx-dir PATH/TO/mnist [--out FILE]

Writes the first 10,000 training digits and the full test set (uint8 images (N, 28, 28) and
uint8 labels) as a compressed ``.npz``. The zip entries get a fixed timestamp so that the same
IDX files and zlib give the same bytes; the script prints the SHA-256 to record as
``ASSET_SHA256`` in ``sdd_jax/data/embedded.py``.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdd_jax.data import embedded, idx  # noqa: E402


def subset_arrays(idx_dir: str | Path, train_rows: int = embedded.TRAIN_ROWS) -> dict[str, np.ndarray]:
    mnist = idx.load_mnist_idx(idx_dir)
    return {
        "x_train": mnist["x_train"][:train_rows, ..., 0],
        "y_train": mnist["y_train"][:train_rows].astype(np.uint8),
        "x_test": mnist["x_test"][..., 0],
        "y_test": mnist["y_test"].astype(np.uint8),
    }


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> bytes:
    """A ``np.load``-compatible compressed ``.npz`` with deterministic bytes; returns them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    data = buffer.getvalue()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx-dir", required=True, help="folder with the four MNIST IDX files (.gz or not)")
    parser.add_argument("--out", default=str(ROOT / "sdd_jax" / "data" / "assets" / embedded.ASSET_NAME))
    args = parser.parse_args(argv)
    data = write_npz(args.out, subset_arrays(args.idx_dir))
    digest = embedded.sha256_hex(data)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB)")
    print(f"sha256 {digest}")
    if digest != embedded.ASSET_SHA256:
        print("this differs from ASSET_SHA256 in sdd_jax/data/embedded.py: update it if the new file is intended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
