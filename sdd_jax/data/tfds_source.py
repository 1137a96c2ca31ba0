"""Image-classification sets prepared by TensorFlow Datasets, read without TensorFlow.

``tfds.data_source`` reads ``array_record`` builds through random access, with no TensorFlow;
``tfds.load(..., batch_size=-1)`` is used only for builds in another file format, and only when
TensorFlow is importable. The network is never touched unless ``download=True``: the prepared
build is looked up first (``builder.is_prepared()``), and a missing one fails at once with the
command that prepares it (offline, tfds would otherwise retry its downloads for minutes).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from sdd_jax.data.errors import DataError, DataNotFoundError

_CHUNK = 4096


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(f"reading tfds data needs the tensorflow-datasets package ({err})") from None
    return tfds


def _prepare_hint(name: str, data_dir) -> str:
    where = f" --data_dir={data_dir}" if data_dir else ""
    return (
        f"prepare it once with `tfds build {name}{where} --file_format=array_record`, "
        f"set data.download=true, or point data.data_dir at a folder holding {name}/<version>/"
    )


def tfds_builder(name: str, data_dir: str | os.PathLike | None):
    """The tfds builder of ``name`` (``name:version`` allowed) under ``data_dir`` (tfds' default
    when ``None``); no download, no network."""
    tfds = _import_tfds()
    try:
        return tfds.builder(name, data_dir=None if data_dir is None else os.path.expanduser(os.fspath(data_dir)))
    except Exception as err:  # DatasetNotFoundError and friends
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataNotFoundError(f"tfds has no dataset {name!r}: {first}") from None


def _split_names(info) -> tuple[str, str]:
    splits = list(info.splits.keys())
    if "train" not in splits:
        raise DataError(f"tfds dataset {info.name!r} has no 'train' split (splits: {splits})")
    for test in ("test", "validation"):
        if test in splits:
            return "train", test
    raise DataError(f"tfds dataset {info.name!r} has neither a 'test' nor a 'validation' split (splits: {splits})")


def _keys(info) -> tuple[str, str]:
    keys = info.supervised_keys
    if isinstance(keys, (tuple, list)) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image_key, label_key = keys
    else:
        image_key, label_key = "image", "label"
    features = info.features
    if image_key not in features or label_key not in features:
        raise DataError(
            f"tfds dataset {info.name!r} has no ({image_key!r}, {label_key!r}) features; not an image-classification set"
        )
    shape = tuple(features[image_key].shape)
    if len(shape) != 3 or any(d is None for d in shape):
        raise DataError(
            f"tfds dataset {info.name!r} has images of variable shape {shape}; only fixed-size images are supported"
        )
    if not hasattr(features[label_key], "num_classes"):
        raise DataError(f"tfds dataset {info.name!r}: feature {label_key!r} is not a class label")
    return image_key, label_key


def _read_data_source(source, image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    images, labels = [], []
    batched = hasattr(source, "__getitems__")
    for start in range(0, n, _CHUNK):
        idx = list(range(start, min(start + _CHUNK, n)))
        records = source.__getitems__(idx) if batched else [source[i] for i in idx]
        images.append(np.stack([np.asarray(r[image_key]) for r in records]))
        labels.append(np.array([int(r[label_key]) for r in records], dtype=np.int32))
    return np.concatenate(images), np.concatenate(labels)


def load_tfds(name: str, data_dir: str | os.PathLike | None = None, download: bool = False) -> dict:
    """``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 NHWC, int32), ``num_classes`` and
    ``location`` of a tfds image-classification set."""
    tfds = _import_tfds()
    builder = tfds_builder(name, data_dir)
    prepared = builder.is_prepared()
    if not prepared and not download:
        raise DataNotFoundError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir}; " + _prepare_hint(name, data_dir)
        )
    data_dir = None if data_dir is None else os.path.expanduser(os.fspath(data_dir))
    if not prepared:  # download=True: the only place the network is ever used
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as err:
            raise DataError(f"tfds dataset {name!r}: download failed ({type(err).__name__}: {err})") from None
        builder = tfds_builder(name, data_dir)
    file_format = getattr(builder.info, "file_format", None)
    file_format = str(getattr(file_format, "value", file_format) or "")
    if file_format == "array_record":
        try:
            sources = tfds.data_source(name, split=list(_split_names(builder.info)), data_dir=data_dir, download=False)
        except Exception as err:
            raise DataError(
                f"tfds dataset {name!r}: cannot open its array_record files ({type(err).__name__}: {err})"
            ) from None
        image_key, label_key = _keys(builder.info)
        out = {}
        for split, source in zip(("train", "test"), sources):
            out[f"x_{split}"], out[f"y_{split}"] = _read_data_source(source, image_key, label_key)
    elif importlib.util.find_spec("tensorflow") is not None:
        image_key, label_key = _keys(builder.info)
        train, test = tfds.as_numpy(
            tfds.load(name, split=list(_split_names(builder.info)), data_dir=data_dir, batch_size=-1, download=False)
        )
        out = {}
        for split, arrays in (("train", train), ("test", test)):
            out[f"x_{split}"] = np.asarray(arrays[image_key], dtype=np.uint8)
            out[f"y_{split}"] = np.asarray(arrays[label_key]).astype(np.int32)
    else:
        raise DataError(
            f"tfds dataset {name!r} in {builder.data_dir} is stored as {file_format or 'tfrecord'}, which needs "
            f"TensorFlow to read; install tensorflow or rebuild it with `tfds build {name} --file_format=array_record`"
        )
    out["num_classes"] = int(builder.info.features[label_key].num_classes)
    out["location"] = os.fspath(builder.data_dir)
    if out["x_train"].dtype != np.uint8:
        raise DataError(f"tfds dataset {name!r}: expected uint8 images, got {out['x_train'].dtype}")
    return out
