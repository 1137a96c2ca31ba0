"""The tfds reader (``sdd_jax.data.tfds_source.load_tfds``) against ``tfds.testing.mock_data``:
no prepared data set, no network, no TensorFlow.

A "prepared" build is only its metadata (``dataset_info.json``, ``features.json``) written by tfds
itself into ``<tmp>/<name>/<version>/``; ``mock_data(policy=USE_FILES, data_dir=<tmp>)`` then serves
``tfds.data_source`` from those files with records that are generated, not read. Downloads are
mocked (a no-op, or a fake that writes the metadata) so no test can reach the network.
"""

import importlib.util
import time
from unittest import mock

import numpy as np
import pytest

from sdd_jax.config import DataConfig, NoiseConfig
from sdd_jax.data import load_dataset, tfds_source
from sdd_jax.data.errors import DataError, DataNotFoundError
from sdd_jax.data.sources import IMAGENET_MEAN, read_source
from sdd_jax.data.tfds_source import load_tfds

tfds = pytest.importorskip("tensorflow_datasets")
from tensorflow_datasets.testing import mocking  # noqa: E402

USE_CODE = tfds.testing.MockPolicy.USE_CODE
USE_FILES = tfds.testing.MockPolicy.USE_FILES
SPLITS = ("train", "test", "validation")
IMAGE_SETS = [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)]


def write_metadata(data_dir, name, splits, file_format="array_record"):
    """What ``tfds build`` leaves besides the record files: the metadata of ``name`` with the split
    sizes ``splits`` ({split: num_examples}) in ``data_dir/name/version``."""
    with tfds.testing.mock_data(policy=USE_CODE):  # builder from code: no files, no GCS
        info = tfds.builder(name).info
    info.set_file_format(file_format, override=True)
    info.set_splits(
        tfds.core.SplitDict([tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in splits.items()])
    )
    variant = data_dir / name / str(info.version)
    variant.mkdir(parents=True, exist_ok=True)
    info.write_to_directory(variant)
    return variant


def fake_records(info, n, seed):
    """``n`` decoded records as ``tfds.data_source`` returns them (plus a feature the reader ignores)."""
    gen = np.random.default_rng(seed)
    shape = tuple(8 if d is None else d for d in info.features["image"].shape)  # variable sizes: one fixed
    k = info.features["label"].num_classes
    return [
        {"image": gen.integers(0, 256, shape, dtype=np.uint8), "label": np.int64(gen.integers(k)), "id": f"r{i}"}
        for i in range(n)
    ]


class BatchedSource:
    """A random-access source with ``__getitems__`` (as tfds' array_record sources have)."""

    def __init__(self, records):
        self.records, self.batches = records, []

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __getitems__(self, keys):
        self.batches.append(list(keys))
        return [self.records[k] for k in keys]


def data_source_fn(opened, batched=True):
    """An ``as_data_source_fn`` serving, per split, as many records as the metadata declares (the
    same ones on every call); ``opened[split]`` keeps the latest source of each split."""

    def as_data_source(builder, split, **kwargs):
        assert isinstance(split, list), split
        sources = []
        for s in split:
            records = fake_records(builder.info, builder.info.splits[s].num_examples, seed=SPLITS.index(s))
            opened[s] = BatchedSource(records) if batched else records
            sources.append(opened[s])
        return sources

    return as_data_source


def stacked(records):
    return np.stack([r["image"] for r in records]), np.array([r["label"] for r in records])


@pytest.fixture
def stock_getitems(monkeypatch):
    """tfds 4.9.10's mock sets ``__getitems__`` on a MagicMock as a plain attribute, so it is called
    without ``self`` and fails (``missing ... 'record_keys'``); the reader reads in batches through
    it. Serve batches from the mock's own generator, whichever way it is called."""

    def getitems(*args, generator, serialized=False):
        assert not serialized
        return [generator[k] for k in args[-1]]

    monkeypatch.setattr(mocking, "_getitems", getitems)


# ---- records served by tfds' stock mock ---------------------------------------------------------


@pytest.mark.parametrize("name,shape,k", IMAGE_SETS)
def test_stock_mock_arrays(tmp_path, stock_getitems, name, shape, k):
    variant = write_metadata(tmp_path, name, {"train": 60, "test": 10})
    with tfds.testing.mock_data(num_examples=9, policy=USE_FILES, data_dir=str(tmp_path)):
        out = load_tfds(name, tmp_path, download=False)
    assert out["x_train"].shape == (9, *shape) and out["x_test"].shape == (9, *shape)  # the mock's num_examples
    assert out["x_train"].dtype == np.uint8 and out["x_test"].dtype == np.uint8
    assert out["y_train"].shape == (9,) and out["y_train"].dtype == np.int32 and out["y_test"].dtype == np.int32
    assert out["num_classes"] == k
    for y in (out["y_train"], out["y_test"]):
        assert y.min() >= 0 and y.max() < k
    assert out["x_train"].std() > 0  # generated pixels, not a constant fill
    # the mock serves the same examples to every split
    np.testing.assert_array_equal(out["x_train"], out["x_test"])
    np.testing.assert_array_equal(out["y_train"], out["y_test"])
    assert out["location"] == str(variant)


# ---- records of our own through tfds.data_source ----------------------------------------------------


@pytest.mark.parametrize("batched", [True, False])
def test_reader_keeps_splits_order_and_chunks(tmp_path, monkeypatch, batched):
    write_metadata(tmp_path, "mnist", {"train": 11, "test": 5})
    monkeypatch.setattr(tfds_source, "_CHUNK", 4)
    opened = {}
    with tfds.testing.mock_data(
        policy=USE_FILES, data_dir=str(tmp_path), as_data_source_fn=data_source_fn(opened, batched)
    ):
        out = load_tfds("mnist", tmp_path)
    assert sorted(opened) == ["test", "train"]
    for split, n in (("train", 11), ("test", 5)):
        source = opened[split]
        x, y = stacked(source.records if batched else source)
        np.testing.assert_array_equal(out[f"x_{split}"], x)  # every record, in order
        np.testing.assert_array_equal(out[f"y_{split}"], y)
        assert out[f"x_{split}"].shape == (n, 28, 28, 1) and out[f"y_{split}"].dtype == np.int32
        if batched:
            assert source.batches == [list(range(i, min(i + 4, n))) for i in range(0, n, 4)]
    assert not np.array_equal(out["x_train"][:5], out["x_test"])


def test_read_source_and_load_dataset_dispatch_to_tfds(tmp_path):
    variant = write_metadata(tmp_path, "cifar10", {"train": 12, "test": 6})
    opened = {}
    with tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path), as_data_source_fn=data_source_fn(opened)):
        raw = read_source("cifar10", "tfds", str(tmp_path))
        ds = load_dataset(
            DataConfig(name="cifar10", source="auto", data_dir=str(tmp_path), validation_size=2),
            NoiseConfig(kind="asymmetric", rate=0.5),
        )
    x_train, y_train = stacked(opened["train"].records)
    np.testing.assert_array_equal(raw.x_train, x_train)
    np.testing.assert_array_equal(raw.y_train, y_train)
    assert raw.x_test.shape == (6, 32, 32, 3) and raw.num_classes == 10 and raw.mean == IMAGENET_MEAN
    assert raw.source == {"reader": "tfds", "tfds_name": "cifar10", "location": str(variant)}
    assert ds.metadata["source"]["reader"] == "tfds"
    assert ds.metadata["sizes"] == {"available_train": 12, "train": 10, "validation": 2, "test": 6}
    rows = {x.tobytes(): y for x, y in zip(x_train, y_train)}
    assert all(rows[x.tobytes()] == y for x, y in zip(ds.x_train, ds.y_train_clean))


def test_validation_split_stands_in_for_test(tmp_path):
    write_metadata(tmp_path, "fashion_mnist", {"train": 4, "validation": 3})
    opened = {}
    with tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path), as_data_source_fn=data_source_fn(opened)):
        out = load_tfds("fashion_mnist", tmp_path)
    assert sorted(opened) == ["train", "validation"]
    np.testing.assert_array_equal(out["x_test"], stacked(opened["validation"].records)[0])
    assert out["x_test"].shape == (3, 28, 28, 1)


@pytest.mark.parametrize(
    "name,splits,match",
    [
        ("mnist", {"train": 4}, "neither a 'test' nor a 'validation' split"),
        ("mnist", {"test": 4}, "no 'train' split"),
        ("cats_vs_dogs", {"train": 4, "test": 2}, r"variable shape \(None, None, 3\)"),
    ],
)
def test_unsupported_builds_raise(tmp_path, name, splits, match):
    write_metadata(tmp_path, name, splits)
    with tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path), as_data_source_fn=data_source_fn({})):
        with pytest.raises(DataError, match=match):
            load_tfds(name, tmp_path)


# ---- unprepared, downloads, other file formats ------------------------------------------------------


def test_unprepared_fails_fast_without_download(tmp_path):
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)  # an interrupted build: no dataset_info.json
    start = time.monotonic()
    with (
        tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path)),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as download,
        mock.patch.object(tfds, "data_source") as data_source,
    ):
        with pytest.raises(DataNotFoundError, match="not prepared") as err:
            load_tfds("mnist", tmp_path, download=False)
        with pytest.raises(DataNotFoundError, match="CIFAR-10|cifar-10-batches-py"):
            read_source("cifar10", "auto", str(tmp_path))
    assert str(tmp_path / "mnist" / "3.0.1") in str(err.value)
    assert f"tfds build mnist --data_dir={tmp_path} --file_format=array_record" in str(err.value)
    download.assert_not_called()
    data_source.assert_not_called()
    assert time.monotonic() - start < 10


def test_download_builds_array_record_then_reads(tmp_path):
    calls = []

    def fake_download(builder, **kwargs):  # what a successful `tfds build` leaves behind
        calls.append(kwargs)
        write_metadata(tmp_path, builder.name, {"train": 6, "test": 3})

    opened = {}
    with (
        tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path), as_data_source_fn=data_source_fn(opened)),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", autospec=True, side_effect=fake_download),
    ):
        out = load_tfds("mnist", tmp_path, download=True)
        again = load_tfds("mnist", tmp_path, download=True)  # prepared now: no second download
    assert calls == [{"file_format": "array_record"}]
    assert out["x_train"].shape == (6, 28, 28, 1) and again["x_test"].shape == (3, 28, 28, 1)


def test_failed_download_is_one_data_error(tmp_path):
    with (
        tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path)),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", side_effect=ConnectionError("offline")),
    ):
        with pytest.raises(DataError, match=r"download failed \(ConnectionError: offline\)"):
            load_tfds("mnist", tmp_path, download=True)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow reads tfrecord builds")
def test_tfrecord_build_without_tensorflow_is_refused(tmp_path):
    write_metadata(tmp_path, "mnist", {"train": 4, "test": 2}, file_format="tfrecord")
    with (
        tfds.testing.mock_data(policy=USE_FILES, data_dir=str(tmp_path)),
        mock.patch.object(tfds, "data_source") as data_source,
    ):
        with pytest.raises(DataError, match="stored as tfrecord, which needs TensorFlow"):
            load_tfds("mnist", tmp_path)
    data_source.assert_not_called()
