"""Readers (IDX, tfds, embedded asset, CIFAR batches, Tiny-ImageNet folders, npz, MNIST-1D,
synthetic), subset/validation selection and the errors bad input raises."""

import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import random
import sys
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from sdd_jax.config import DataConfig, NoiseConfig
from sdd_jax.data import embedded, load_dataset
from sdd_jax.data.cifar import load_cifar_python, restricted_load
from sdd_jax.data.errors import ChecksumError, DataError, DataNotFoundError, UnsafePickleError
from sdd_jax.data.idx import load_mnist_idx, parse_idx, read_idx
from sdd_jax.data.sources import IMAGENET_MEAN, IMAGENET_STD, parse_synthetic, read_source, resolve_source
from sdd_jax.data.tfds_source import load_tfds

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_dir(shared_dir):
    path = shared_dir / "data" / "mnist"
    if not path.is_dir():
        pytest.skip(f"real MNIST IDX files not found in {path}")
    return path


@pytest.fixture(scope="module")
def mnist_idx(mnist_dir):
    return load_mnist_idx(mnist_dir)


@pytest.fixture(scope="module")
def tfds_dir(shared_dir):
    path = shared_dir / "data" / "tfds"
    if not (path / "mnist").is_dir():
        pytest.skip(f"no prepared tfds mnist in {path}")
    return path


def row_multiset(x, y):
    return sorted(hashlib.sha1(img.tobytes() + bytes([lab])).hexdigest() for img, lab in zip(x, y))


# ---- IDX and the embedded subset --------------------------------------------------------


def test_idx_reader_real_mnist(mnist_idx):
    chex.assert_shape(mnist_idx["x_train"], (60000, 28, 28, 1))
    chex.assert_shape(mnist_idx["x_test"], (10000, 28, 28, 1))
    assert mnist_idx["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(mnist_idx["y_train"][:6], [5, 0, 4, 1, 9, 2])
    assert set(np.unique(mnist_idx["y_test"])) == set(range(10))
    assert mnist_idx["x_train"].max() == 255


def test_idx_gzip_and_plain_agree(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + np.array(arr.shape, ">u4").tobytes() + arr.tobytes()
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), arr)
    ints = np.array([1, -2, 300], ">i4")
    parsed = parse_idx(bytes([0, 0, 0x0C, 1]) + np.array([3], ">u4").tobytes() + ints.tobytes())
    np.testing.assert_array_equal(parsed, [1, -2, 300])
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="promises"):
        parse_idx(raw[:-1])
    with pytest.raises(DataNotFoundError):
        read_idx(tmp_path / "missing")
    with pytest.raises(DataNotFoundError, match="no MNIST IDX files"):
        load_mnist_idx(tmp_path)


def test_embedded_equals_idx_rows(mnist_idx):
    ds = load_dataset(DataConfig(), NoiseConfig())
    np.testing.assert_array_equal(ds.x_train, mnist_idx["x_train"][:10000])
    np.testing.assert_array_equal(ds.y_train, mnist_idx["y_train"][:10000])
    np.testing.assert_array_equal(ds.x_test, mnist_idx["x_test"])
    np.testing.assert_array_equal(ds.y_test, mnist_idx["y_test"])
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert ds.num_classes == 10 and ds.x_val is None


def test_embedded_asset_is_package_data_with_checked_hash():
    path = embedded.asset_path()
    data = path.read_bytes()
    assert len(data) < 5_000_000
    assert hashlib.sha256(data).hexdigest() == embedded.ASSET_SHA256
    with pytest.raises(ChecksumError, match="SHA-256"):
        embedded.load_embedded_mnist(expected_sha256="0" * 64)


def test_build_script_reproduces_asset(mnist_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("build_embedded_mnist", REPO / "scripts" / "build_embedded_mnist.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "mnist.npz"
    script.main(["--idx-dir", str(mnist_dir), "--out", str(out)])
    with np.load(out) as rebuilt, np.load(embedded.asset_path()) as shipped:
        assert sorted(rebuilt.files) == sorted(shipped.files)
        for key in rebuilt.files:
            np.testing.assert_array_equal(rebuilt[key], shipped[key])
    small = {"b": np.arange(5), "a": np.ones((2, 2), np.uint8)}
    first = script.write_npz(tmp_path / "one.npz", small)
    time.sleep(1.1)  # zip timestamps have 2 s resolution; the writer fixes them anyway
    assert script.write_npz(tmp_path / "two.npz", small) == first


def test_load_dataset_from_idx(mnist_dir, mnist_idx):
    ds = load_dataset(DataConfig(name="mnist", data_dir=str(mnist_dir), train_size=300, test_size=50), NoiseConfig())
    assert ds.metadata["source"]["reader"] == "idx"
    np.testing.assert_array_equal(ds.x_train, mnist_idx["x_train"][:300])
    np.testing.assert_array_equal(ds.y_test, mnist_idx["y_test"][:50])


# ---- tfds -------------------------------------------------------------------------------
# (a prepared real MNIST; tests/test_tfds_source.py covers the reader with tfds' mock_data)


def test_tfds_mnist_without_tensorflow(tfds_dir, mnist_idx):
    had_tf = "tensorflow" in sys.modules
    raw = read_source("mnist", "tfds", str(tfds_dir))
    assert raw.source["reader"] == "tfds"
    chex.assert_shape(raw.x_train, (60000, 28, 28, 1))
    chex.assert_shape(raw.x_test, (10000, 28, 28, 1))
    assert raw.x_train.dtype == np.uint8 and raw.num_classes == 10
    # tfds stores the examples in another order: compare (image, label) multisets
    assert row_multiset(raw.x_test, raw.y_test) == row_multiset(mnist_idx["x_test"], mnist_idx["y_test"])
    np.testing.assert_array_equal(np.bincount(raw.y_train), np.bincount(mnist_idx["y_train"]))
    assert had_tf or "tensorflow" not in sys.modules


def test_auto_source_picks_reader(tfds_dir, mnist_dir, tmp_path):
    assert resolve_source("mnist", "auto", str(tfds_dir)) == "tfds"
    assert resolve_source("mnist", "auto", str(mnist_dir)) == "idx"
    assert resolve_source("mnist", "auto", None) == "tfds"
    assert resolve_source("cifar10", "auto", str(tmp_path)) == "tfds"
    assert resolve_source("fashion_mnist", "auto", None) == "tfds"
    assert resolve_source("mnist_embedded", "auto", None) == "embedded"


def test_tfds_unprepared_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataNotFoundError, match="tfds build mnist"):
        load_tfds("mnist", tmp_path, download=False)
    with pytest.raises(DataNotFoundError, match="IDX"):
        read_source("mnist", "auto", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="no dataset"):
        load_tfds("no_such_dataset_xyz", tmp_path)
    assert time.monotonic() - start < 20


# ---- CIFAR python batches ----------------------------------------------------------------


def write_cifar_batch(path, images, labels, label_key, protocol=2):
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {
        b"batch_label": b"synthetic",
        b"data": rows,
        label_key.encode(): list(map(int, labels)),
        b"filenames": [b"x.png"] * len(images),
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def test_cifar10_reader(tmp_path):
    gen = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = gen.integers(0, 256, size=(6 * 4, 32, 32, 3), dtype=np.uint8)
    labels = gen.integers(0, 10, size=24)
    for i in range(5):
        write_cifar_batch(
            folder / f"data_batch_{i + 1}",
            images[4 * i : 4 * i + 4],
            labels[4 * i : 4 * i + 4],
            "labels",
            protocol=2 + i % 4,
        )
    write_cifar_batch(folder / "test_batch", images[20:], labels[20:], "labels")
    out = load_cifar_python("cifar10", tmp_path)
    np.testing.assert_array_equal(out["x_train"], images[:20])
    np.testing.assert_array_equal(out["y_train"], labels[:20])
    np.testing.assert_array_equal(out["x_test"], images[20:])
    ds = load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path)), NoiseConfig(kind="asymmetric", rate=0.5))
    assert ds.metadata["source"]["reader"] == "cifar_python"
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train, images[:20])


def test_cifar100_reader_fine_labels(tmp_path):
    gen = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = gen.integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)
    labels = gen.integers(0, 100, size=9)
    write_cifar_batch(folder / "train", images[:6], labels[:6], "fine_labels")
    write_cifar_batch(folder / "test", images[6:], labels[6:], "fine_labels")
    out = load_cifar_python("cifar100", folder)  # the batch folder itself also works
    np.testing.assert_array_equal(out["y_train"], labels[:6])
    np.testing.assert_array_equal(out["x_test"], images[6:])
    write_cifar_batch(folder / "test", images[6:], [100] * 3, "fine_labels")
    with pytest.raises(DataError, match="out of range"):
        load_cifar_python("cifar100", tmp_path)
    (folder / "train").unlink()
    with pytest.raises(DataNotFoundError, match="cifar100 python batches"):
        load_cifar_python("cifar100", tmp_path)


class _Exploit:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.remove, (self.path,))


def test_restricted_unpickler_refuses_os(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("alive")
    payload = pickle.dumps({"data": _Exploit(canary)})
    assert b"remove" in payload
    with pytest.raises(UnsafePickleError, match="refusing"):
        restricted_load(payload)
    assert canary.exists()
    with pytest.raises(UnsafePickleError):
        restricted_load(pickle.dumps(eval))
    assert isinstance(UnsafePickleError("x"), pickle.UnpicklingError)
    with pytest.raises(DataError, match="cannot read pickle"):
        restricted_load(pickle.dumps({"a": 1})[:-3])
    for protocol in (2, 3, 4, 5):
        value = {"arr": np.arange(6, dtype=np.int16).reshape(2, 3), "n": [1, 2.5, b"x", "y"]}
        loaded = restricted_load(pickle.dumps(value, protocol=protocol))
        np.testing.assert_array_equal(loaded["arr"], value["arr"])
        assert loaded["n"] == value["n"]


# ---- Tiny-ImageNet folder ------------------------------------------------------------------


def test_tiny_imagenet_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n03", "n01", "n02"]  # wnids.txt is not sorted; classes follow sorted wnids
    colours = {"n01": (250, 10, 10), "n02": (10, 250, 10), "n03": (10, 10, 250)}
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), colours[wnid]).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(["n02", "n03", "n01", "n02"]):
        Image.new("RGB", (64, 64), colours[wnid]).save(root / "val" / "images" / f"val_{i}.JPEG", quality=95)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")

    ds = load_dataset(DataConfig(name="tiny_imagenet", data_dir=str(tmp_path)), NoiseConfig())
    assert ds.metadata["source"]["reader"] == "tiny_imagenet_folder"
    chex.assert_shape(ds.x_train, (6, 32, 32, 3))
    chex.assert_shape(ds.x_test, (4, 32, 32, 3))
    assert ds.num_classes == 3 and ds.mean == IMAGENET_MEAN
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.y_test, [1, 2, 0, 1])
    for x, y in zip(ds.x_test, ds.y_test):
        np.testing.assert_allclose(x.reshape(-1, 3).mean(0), colours[["n01", "n02", "n03"][y]], atol=6)

    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="unknown or missing wnid"):
        load_dataset(DataConfig(name="tiny_imagenet", data_dir=str(tmp_path)), NoiseConfig())
    with pytest.raises(DataNotFoundError, match="Tiny-ImageNet"):
        load_dataset(DataConfig(name="tiny_imagenet", data_dir=str(tmp_path / "nowhere")), NoiseConfig())


# ---- npz, MNIST-1D, synthetic ----------------------------------------------------------------


def test_npz_source(tmp_path):
    gen = np.random.default_rng(2)
    arrays = dict(
        x_train=gen.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8),
        y_train=np.arange(20) % 4,
        x_test=gen.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8),
        y_test=np.arange(5) % 4,
    )
    np.savez(tmp_path / "toy.npz", **arrays)
    ds = load_dataset(DataConfig(name="npz", data_dir=str(tmp_path / "toy.npz"), validation_size=5), NoiseConfig())
    assert ds.num_classes == 4 and ds.x_train.shape == (15, 4, 4, 3) and ds.x_val.shape == (5, 4, 4, 3)
    expected_mean = arrays["x_train"].reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(ds.mean, expected_mean, atol=1e-6)
    np.savez(tmp_path / "bad.npz", **{**arrays, "y_test": np.arange(4)})
    with pytest.raises(DataError, match="5 test images but 4 labels"):
        load_dataset(DataConfig(name="npz", data_dir=str(tmp_path / "bad.npz")), NoiseConfig())
    np.savez(tmp_path / "short.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match="missing arrays"):
        load_dataset(DataConfig(name="npz", data_dir=str(tmp_path / "short.npz")), NoiseConfig())
    np.savez(tmp_path / "range.npz", **arrays, num_classes=3)
    with pytest.raises(DataError, match="out of range"):
        load_dataset(DataConfig(name="npz", data_dir=str(tmp_path / "range.npz")), NoiseConfig())
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="is not a valid .npz file"):
        load_dataset(DataConfig(name="npz", data_dir=str(tmp_path / "corrupt.npz")), NoiseConfig())
    with pytest.raises(DataNotFoundError):
        load_dataset(DataConfig(name="npz", data_dir=str(tmp_path / "absent.npz")), NoiseConfig())


@pytest.mark.parametrize("kind", ["text", "npy", "truncated", "object_array"])
def test_a_file_that_is_no_npz_is_named_without_pickle_advice(tmp_path, capsys, kind):
    from sdd_jax import cli

    path = tmp_path / "data.npz"
    arrays = dict(
        x_train=np.zeros((8, 4, 4, 1), np.uint8),
        y_train=np.arange(8) % 2,
        x_test=np.zeros((4, 4, 4, 1), np.uint8),
        y_test=np.arange(4) % 2,
    )
    if kind == "text":
        path.write_text("not an archive at all")
    elif kind == "npy":  # a lone .npy array under an .npz name
        with open(path, "wb") as handle:
            np.save(handle, arrays["x_train"])
    elif kind == "truncated":
        np.savez(tmp_path / "whole.npz", **arrays)
        path.write_bytes((tmp_path / "whole.npz").read_bytes()[:200])
    else:
        np.savez(path, **{**arrays, "y_train": np.array([object()] * 8, dtype=object)})
    before = sorted(p.name for p in tmp_path.iterdir())
    workdir = tmp_path / "runs"
    code = cli.main(
        [
            "run",
            "smoke",
            "--workdir",
            str(workdir),
            "--set",
            "data.name=npz",
            "--set",
            f"data.data_dir={path}",
            "--set",
            "data.train_size=None",
            "--set",
            "data.test_size=None",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert f"{path} is not a valid .npz file" in err
    assert "allow_pickle" not in err and "pickle.load" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory either


def test_mnist1d_procedural(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset(DataConfig(name="mnist1d"), NoiseConfig())
    assert np.random.random() == np_before and random.random() == py_before  # global state restored
    assert list(tmp_path.iterdir()) == []  # nothing written
    chex.assert_shape(ds.x_train, (4000, 40))
    chex.assert_shape(ds.x_test, (1000, 40))
    chex.assert_type(ds.x_train, np.float32)
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert abs(float(np.concatenate([ds.x_train, ds.x_test]).std()) - 1) < 1e-3
    again = load_dataset(DataConfig(name="mnist1d"), NoiseConfig())
    np.testing.assert_array_equal(ds.x_train, again.x_train)


def test_synthetic_sets():
    assert parse_synthetic("synthetic") == dict(height=32, width=32, channels=3, classes=10, train=512, test=128)
    assert parse_synthetic("synthetic_28x28x1_c5_n64_t16")["channels"] == 1
    a = load_dataset(DataConfig(name="synthetic_8x8x3_c4_n64_t16"), NoiseConfig())
    b = load_dataset(DataConfig(name="synthetic_8x8x3_c4_n64_t16"), NoiseConfig())
    c = load_dataset(DataConfig(name="synthetic_8x8x3_c4_n64_t16", subset_seed=1), NoiseConfig())
    chex.assert_shape(a.x_train, (64, 8, 8, 3))
    chex.assert_shape(a.x_test, (16, 8, 8, 3))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    # classes are learnable: nearest class mean separates the test set
    means = np.stack([a.x_train[a.y_train == k].reshape(-1, 192).mean(0) for k in range(4)])
    pred = np.argmin(((a.x_test.reshape(-1, 1, 192) - means) ** 2).sum(-1), axis=1)
    assert np.mean(pred == a.y_test) > 0.9
    with pytest.raises(DataError, match="bad synthetic"):
        load_dataset(DataConfig(name="synthetic_big"), NoiseConfig())


# ---- subset, validation, metadata, configuration errors ------------------------------------------


def test_subset_first_random_balanced():
    full = load_dataset(DataConfig(), NoiseConfig())
    first = load_dataset(DataConfig(train_size=100), NoiseConfig())
    np.testing.assert_array_equal(first.x_train, full.x_train[:100])
    r0 = load_dataset(DataConfig(train_size=100, subset_mode="random"), NoiseConfig())
    r1 = load_dataset(DataConfig(train_size=100, subset_mode="random", subset_seed=1), NoiseConfig())
    assert not np.array_equal(r0.y_train, first.y_train) and not np.array_equal(r0.y_train, r1.y_train)
    bal = load_dataset(DataConfig(train_size=105, class_balanced=True), NoiseConfig())
    np.testing.assert_array_equal(np.bincount(bal.y_train), [11] * 5 + [10] * 5)
    assert bal.metadata["train_class_counts"] == [11] * 5 + [10] * 5
    balr = load_dataset(DataConfig(train_size=50, class_balanced=True, subset_mode="random"), NoiseConfig())
    np.testing.assert_array_equal(np.bincount(balr.y_train), [5] * 10)


def test_validation_held_out_and_stable():
    a = load_dataset(
        DataConfig(validation_size=200, train_size=500, subset_mode="random"), NoiseConfig(kind="symmetric", rate=0.5)
    )
    b = load_dataset(DataConfig(validation_size=200, train_size=900, subset_mode="random"), NoiseConfig())
    assert a.x_val.shape == (200, 28, 28, 1) and a.x_train.shape[0] == 500
    np.testing.assert_array_equal(a.x_val, b.x_val)  # validation does not depend on train_size
    train_rows = {x.tobytes() for x in a.x_train}
    assert not any(x.tobytes() in train_rows for x in a.x_val)
    full = load_dataset(DataConfig(), NoiseConfig())
    rows = {x.tobytes(): y for x, y in zip(full.x_train, full.y_train)}
    assert all(rows[x.tobytes()] == y for x, y in zip(a.x_val, a.y_val))  # clean labels
    assert a.metadata["sizes"] == {"available_train": 10000, "train": 500, "validation": 200, "test": 10000}


def test_metadata_is_json_serialisable():
    ds = load_dataset(DataConfig(train_size=200), NoiseConfig(kind="pairflip", rate=0.25, seed=3))
    text = json.dumps(ds.metadata)
    back = json.loads(text)
    assert back["noise"] == {
        "kind": "pairflip",
        "rate": 0.25,
        "seed": 3,
        "exact": True,
        "asymmetric_mode": "superclass",
    }
    assert back["selected_fraction"] == 0.25 and back["realised_noise_rate"] == 0.25
    assert len(back["transition_matrix"]) == 10


@pytest.mark.parametrize(
    "data,error,match",
    [
        (DataConfig(source="ftp"), DataError, "unknown data source"),
        (DataConfig(source="idx"), DataError, "single reader"),
        (DataConfig(name="mnist", source="idx"), DataError, "needs data.data_dir"),
        (DataConfig(train_size=20000), DataError, "exceeds"),
        (DataConfig(train_size=0), DataError, "train_size"),
        (DataConfig(subset_mode="best", train_size=10), DataError, "unknown subset_mode"),
        (DataConfig(validation_size=10000), DataError, "leaves no training"),
        (DataConfig(test_size=20000), DataError, "exceeds"),
        (
            DataConfig(name="cifar10", source="cifar_python", data_dir="/nonexistent"),
            DataNotFoundError,
            "cifar10 python batches",
        ),
        (DataConfig(name="cifar10", source="idx", data_dir="/nonexistent"), DataNotFoundError, "IDX"),
    ],
)
def test_configuration_errors(data, error, match):
    with pytest.raises(error, match=match):
        load_dataset(data, NoiseConfig())
