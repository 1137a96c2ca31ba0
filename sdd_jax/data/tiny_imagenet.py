"""Tiny-ImageNet (``tiny-imagenet-200``) from its folder layout, resized to 32x32.

Layout as distributed: ``wnids.txt``; ``train/<wnid>/images/*.JPEG``; ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (file name, wnid, box). The reorganised layout that the official code
reads (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) is accepted too. The 10,000 ``val`` images
are the test set (the ``test`` labels are not public). Class indices follow the sorted wnids, as
the official code (``sorted(os.listdir(train))``) and torchvision's ImageFolder number them.

Images are resized from 64x64 to 32x32 with PIL's bilinear filter, as the paper states. (The
official code instead resizes to 45 and centre-crops 32 at evaluation time.)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sdd_jax.data.errors import DataError, DataNotFoundError

IMAGE_SIZE = 32
_EXTENSIONS = (".jpeg", ".jpg", ".png")


def find_tiny_imagenet_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir/tiny-imagenet-200`` or ``data_dir`` itself, whichever holds ``train/``."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    for candidate in (root / "tiny-imagenet-200", root):
        if (candidate / "train").is_dir() and (candidate / "val").is_dir():
            return candidate
    return None


def _images_in(folder: Path) -> list[Path]:
    if (folder / "images").is_dir():
        folder = folder / "images"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)


def _load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def _load_images(paths: list[Path], size: int, workers: int) -> np.ndarray:
    if not paths:
        return np.zeros((0, size, size, 3), np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        return np.stack(list(pool.map(lambda p: _load_image(p, size), paths, chunksize=64)))


def list_tiny_imagenet(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """``(wnids, train (path, label) pairs, val (path, label) pairs)`` of a Tiny-ImageNet folder."""
    train_dir, val_dir = root / "train", root / "val"
    if (root / "wnids.txt").is_file():
        wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()})
    else:
        wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not wnids:
        raise DataError(f"{root}: no classes (empty wnids.txt and no train/<wnid>/ folders)")
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for wnid in wnids:
        files = _images_in(train_dir / wnid)
        if not files:
            raise DataNotFoundError(f"{train_dir / wnid}: no training images for class {wnid}")
        train += [(p, index[wnid]) for p in files]
    val = []
    annotations = val_dir / "val_annotations.txt"
    if annotations.is_file():
        for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
            fields = line.split("\t") if "\t" in line else line.split()
            if not fields or not fields[0].strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(f"{annotations}:{line_no}: unknown or missing wnid in {line!r}")
            path = val_dir / "images" / fields[0]
            if not path.is_file():
                raise DataNotFoundError(f"{annotations}:{line_no}: image {path} not found")
            val.append((path, index[fields[1]]))
        val.sort()
    else:
        for wnid in wnids:
            val += [(p, index[wnid]) for p in _images_in(val_dir / wnid)]
    if not val:
        raise DataNotFoundError(f"{val_dir}: no validation images (neither val_annotations.txt nor val/<wnid>/)")
    return wnids, train, val


def load_tiny_imagenet(data_dir: str | os.PathLike, size: int = IMAGE_SIZE, workers: int = 4) -> dict:
    """``x_train (N, size, size, 3) uint8``, ``y_train``, ``x_test``, ``y_test``, ``num_classes``."""
    root = find_tiny_imagenet_dir(data_dir)
    if root is None:
        raise DataNotFoundError(f"no Tiny-ImageNet folder (train/ and val/) in {data_dir!r} or its tiny-imagenet-200/")
    wnids, train, val = list_tiny_imagenet(root)
    out = {"num_classes": len(wnids)}
    for split, pairs in (("train", train), ("test", val)):
        out[f"x_{split}"] = _load_images([p for p, _ in pairs], size, workers)
        out[f"y_{split}"] = np.array([y for _, y in pairs], dtype=np.int32)
    return out
