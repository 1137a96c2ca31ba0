"""Label noise: counts, rates, transition structure, determinism and stream independence."""

import math

import chex
import numpy as np
import pytest

from sdd_jax.config import Config, ConfigError, DataConfig, NoiseConfig
from sdd_jax.data import classes, load_dataset
from sdd_jax.data.errors import DataError
from sdd_jax.data.noise import (
    apply_noise,
    asymmetric_flips,
    corrupted_count,
    transition_matrix,
)
from sdd_jax.validate import validate

# The usual CIFAR-100 fine -> coarse table, transcribed independently of the name lists.
CIFAR100_COARSE = [
    4,
    1,
    14,
    8,
    0,
    6,
    7,
    7,
    18,
    3,
    3,
    14,
    9,
    18,
    7,
    11,
    3,
    9,
    7,
    11,
    6,
    11,
    5,
    10,
    7,
    6,
    13,
    15,
    3,
    15,
    0,
    11,
    1,
    10,
    12,
    14,
    16,
    9,
    11,
    5,
    5,
    19,
    8,
    8,
    15,
    13,
    14,
    17,
    18,
    10,
    16,
    4,
    17,
    4,
    2,
    0,
    17,
    4,
    18,
    17,
    10,
    3,
    2,
    12,
    12,
    16,
    12,
    1,
    9,
    19,
    2,
    10,
    0,
    1,
    16,
    12,
    9,
    13,
    15,
    13,
    16,
    19,
    2,
    4,
    6,
    19,
    5,
    5,
    8,
    19,
    18,
    1,
    2,
    15,
    6,
    0,
    17,
    8,
    14,
    13,
]


def balanced_labels(k, per_class, seed=0):
    labels = np.repeat(np.arange(k), per_class)
    return np.random.default_rng(seed).permutation(labels)


def rng(seed=0):
    return np.random.default_rng(seed)


def expected_transition_matrix(kind, rate, k, *, dataset_name="", asymmetric_mode="superclass"):
    """The ``(K, K)`` transition matrix a noise kind aims at (rows = true class)."""
    eye = np.eye(k)
    if kind == "random_labels":
        return (1 - rate) * eye + rate / k
    if kind == "symmetric":
        return (1 - rate) * eye + rate / (k - 1) * (1 - eye)
    if kind == "pairflip":
        return (1 - rate) * eye + rate * np.roll(eye, 1, axis=1)
    assert kind == "asymmetric", kind
    t = eye.copy()
    for source, target in asymmetric_flips(dataset_name, k, asymmetric_mode).items():
        t[source, source] = 1 - rate
        t[source, target] = rate
    return t


@pytest.mark.parametrize("kind", ["random_labels", "symmetric", "pairflip"])
@pytest.mark.parametrize("rate,n", [(0.2, 1000), (0.7, 100), (0.33, 997), (1.0, 50)])
def test_exact_counts(kind, rate, n):
    labels = balanced_labels(10, n // 10 + 1)[:n]
    noisy, is_noisy = apply_noise(labels, 10, kind, rate, rng(), exact=True)
    assert is_noisy.sum() == math.ceil(round(rate * n, 9))
    assert not np.any(noisy[~is_noisy] != labels[~is_noisy])
    if kind in ("symmetric", "pairflip"):
        np.testing.assert_array_equal(noisy != labels, is_noisy)
    chex.assert_type(noisy, np.int32)
    assert is_noisy.dtype == bool


def test_ceil_is_robust_to_float_roundoff():
    assert 0.07 * 100 > 7  # the float product is 7.000000000000001
    assert corrupted_count(0.07, 100) == 7
    assert corrupted_count(0.07, 50000) == 3500
    assert corrupted_count(0.2, 1001) == 201
    assert corrupted_count(0.0, 10) == 0


def test_random_labels_can_keep_the_true_label():
    k, n, rate = 10, 20000, 0.5
    labels = balanced_labels(k, n // k)
    noisy, is_noisy = apply_noise(labels, k, "random_labels", rate, rng(1))
    kept = np.mean(noisy[is_noisy] == labels[is_noisy])
    assert abs(kept - 1 / k) < 4 * math.sqrt(0.1 * 0.9 / is_noisy.sum())
    realised = np.mean(noisy != labels)
    assert abs(realised - rate * (1 - 1 / k)) < 0.01
    # the new labels are uniform over all classes
    counts = np.bincount(noisy[is_noisy], minlength=k) / is_noisy.sum()
    assert np.all(np.abs(counts - 1 / k) < 0.02)


def test_symmetric_flips_to_uniform_other_class():
    k, n, rate = 10, 50000, 0.4
    labels = balanced_labels(k, n // k)
    noisy, is_noisy = apply_noise(labels, k, "symmetric", rate, rng(2))
    t = transition_matrix(labels, noisy, k)
    np.testing.assert_allclose(np.diag(t), 1 - rate, atol=0.02)
    off = t[~np.eye(k, dtype=bool)]
    np.testing.assert_allclose(off, rate / (k - 1), atol=0.01)
    np.testing.assert_allclose(t, expected_transition_matrix("symmetric", rate, k), atol=0.02)


def test_pairflip_structure():
    k, n, rate = 7, 7000, 0.3
    labels = balanced_labels(k, n // k)
    noisy, is_noisy = apply_noise(labels, k, "pairflip", rate, rng(3))
    np.testing.assert_array_equal(noisy[is_noisy], (labels[is_noisy] + 1) % k)
    t = transition_matrix(labels, noisy, k)
    support = (t > 0).astype(int)
    np.testing.assert_array_equal(support, np.eye(k, dtype=int) + np.roll(np.eye(k, dtype=int), 1, axis=1))
    np.testing.assert_allclose(t, expected_transition_matrix("pairflip", rate, k), atol=0.05)


@pytest.mark.parametrize(
    "name,flips",
    [
        ("mnist", {2: 7, 3: 8, 5: 6, 6: 5}),
        ("mnist_embedded", {2: 7, 3: 8, 5: 6, 6: 5}),
        ("cifar10", {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}),
    ],
)
def test_asymmetric_ten_class_tables(name, flips):
    k, rate = 10, 0.35
    labels = balanced_labels(k, 301, seed=4)
    noisy, is_noisy = apply_noise(labels, k, "asymmetric", rate, rng(4), dataset_name=name)
    t = transition_matrix(labels, noisy, k)
    for c in range(k):
        n_c = np.sum(labels == c)
        if c in flips:
            m = math.ceil(round(rate * n_c, 9))
            assert np.sum(is_noisy & (labels == c)) == m
            assert t[c, flips[c]] == pytest.approx(m / n_c)
            assert t[c, c] == pytest.approx(1 - m / n_c)
            assert np.count_nonzero(t[c]) == 2
        else:
            np.testing.assert_array_equal(t[c], np.eye(k)[c])
    # swaps use the clean labels: a cat relabelled dog is not relabelled back
    np.testing.assert_array_equal(noisy[is_noisy], [flips[c] for c in labels[is_noisy]])


def test_cifar100_superclass_table():
    coarse = classes.cifar100_coarse_of_fine()
    np.testing.assert_array_equal(coarse, CIFAR100_COARSE)
    assert np.all(np.bincount(coarse, minlength=20) == 5)
    assert len(set(classes.CIFAR100_FINE_NAMES)) == 100
    assert sorted(classes.CIFAR100_FINE_NAMES) == list(classes.CIFAR100_FINE_NAMES)


@pytest.mark.parametrize("mode", ["superclass", "reference_blocks"])
def test_cifar100_asymmetric(mode):
    k, rate = 100, 0.4
    flips = asymmetric_flips("cifar100", k, mode)
    group = np.array(CIFAR100_COARSE) if mode == "superclass" else np.arange(k) // 5
    # a permutation made of 5-cycles inside each group
    assert sorted(flips) == list(range(k)) and sorted(flips.values()) == list(range(k))
    for i, j in flips.items():
        assert i != j and group[i] == group[j]
        members = np.flatnonzero(group == group[i])
        cycle, c = [i], flips[i]
        while c != i:
            cycle.append(c)
            c = flips[c]
        assert sorted(cycle) == list(members)
    labels = balanced_labels(k, 50, seed=5)
    noisy, is_noisy = apply_noise(labels, k, "asymmetric", rate, rng(5), dataset_name="cifar100", asymmetric_mode=mode)
    t = transition_matrix(labels, noisy, k)
    np.testing.assert_allclose(np.diag(t), 1 - 20 / 50)
    for i in range(k):
        assert t[i, flips[i]] == pytest.approx(20 / 50)
    np.testing.assert_allclose(
        t, expected_transition_matrix("asymmetric", rate, k, dataset_name="cifar100", asymmetric_mode=mode)
    )
    if mode == "reference_blocks":
        assert flips[4] == 0 and flips[9] == 5 and flips[0] == 1
    else:
        assert flips[4] == 30  # beaver -> dolphin (aquatic mammals: 4, 30, 55, 72, 95)
        assert flips[95] == 4


@pytest.mark.parametrize("kind", ["random_labels", "symmetric", "pairflip", "asymmetric"])
def test_probabilistic_mode_matches_expected_transition(kind):
    k, rate = 10, 0.3
    labels = balanced_labels(k, 4000, seed=6)
    noisy, is_noisy = apply_noise(labels, k, kind, rate, rng(6), dataset_name="cifar10", exact=False)
    expected = expected_transition_matrix(kind, rate, k, dataset_name="cifar10")
    np.testing.assert_allclose(transition_matrix(labels, noisy, k), expected, atol=0.03)
    if kind != "asymmetric":
        assert abs(is_noisy.mean() - rate) < 0.02


@pytest.mark.parametrize("kind", ["random_labels", "symmetric", "asymmetric", "pairflip"])
def test_determinism_and_input_untouched(kind):
    labels = balanced_labels(10, 100, seed=7)
    before = labels.copy()
    a = apply_noise(labels, 10, kind, 0.3, np.random.default_rng(11), dataset_name="mnist")
    b = apply_noise(labels, 10, kind, 0.3, np.random.default_rng(11), dataset_name="mnist")
    c = apply_noise(labels, 10, kind, 0.3, np.random.default_rng(12), dataset_name="mnist")
    np.testing.assert_array_equal(labels, before)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_zero_rate_and_none():
    labels = balanced_labels(10, 10)
    for kind in ("none", "symmetric", "asymmetric"):
        noisy, is_noisy = apply_noise(labels, 10, kind, 0.0, rng(), dataset_name="mnist")
        np.testing.assert_array_equal(noisy, labels)
        assert not is_noisy.any()


@pytest.mark.parametrize(
    "labels,k,kind,rate,kwargs,match",
    [
        (np.array([0, 10]), 10, "symmetric", 0.1, {}, "out of range"),
        (np.array([-1, 0]), 10, "symmetric", 0.1, {}, "out of range"),
        (np.zeros((2, 2), int), 10, "symmetric", 0.1, {}, "1-D"),
        (np.zeros(5), 10, "symmetric", 0.1, {}, "integers"),
        (np.zeros(5, int), 10, "asymmetric", 0.2, {"dataset_name": "svhn"}, "asymmetric noise is defined"),
        (np.zeros(5, int), 100, "asymmetric", 0.2, {"dataset_name": "mnist"}, "expects 10 classes"),
    ],
)
def test_bad_input_raises(labels, k, kind, rate, kwargs, match):
    with pytest.raises(DataError, match=match):
        apply_noise(labels, k, kind, rate, rng(), **kwargs)


def test_transition_matrix_checks_shapes():
    with pytest.raises(DataError, match="equal shape"):
        transition_matrix(np.zeros(3, int), np.zeros(4, int), 10)
    t = transition_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    np.testing.assert_allclose(t, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])


# ---- through load_dataset: the kept subset, the streams -------------------------------------


def test_realised_rate_on_random_subset():
    """A subset no larger than the noise fraction still gets exactly the requested rate."""
    data = DataConfig(name="mnist_embedded", train_size=500, subset_mode="random", subset_seed=3)
    ds = load_dataset(data, NoiseConfig(kind="symmetric", rate=0.8, seed=1))
    assert ds.metadata["realised_noise_rate"] == pytest.approx(0.8)
    assert np.mean(ds.y_train != ds.y_train_clean) == pytest.approx(0.8)
    ds = load_dataset(data, NoiseConfig(kind="random_labels", rate=0.8, seed=1))
    assert ds.is_noisy.sum() == 400
    assert ds.metadata["selected_fraction"] == pytest.approx(0.8)
    realised = np.mean(ds.y_train != ds.y_train_clean)
    assert ds.metadata["realised_noise_rate"] == pytest.approx(realised, abs=1e-6)
    assert 0.64 < realised < 0.80  # about 0.8 * 9/10, not 1.0


def test_clean_labels_untouched_and_transition_in_metadata():
    clean = load_dataset(DataConfig(train_size=2000), NoiseConfig())
    noisy = load_dataset(DataConfig(train_size=2000), NoiseConfig(kind="asymmetric", rate=0.4, seed=2))
    np.testing.assert_array_equal(noisy.y_train_clean, clean.y_train)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)
    t = np.array(noisy.metadata["transition_matrix"])
    chex.assert_shape(t, (10, 10))
    np.testing.assert_allclose(t, transition_matrix(noisy.y_train_clean, noisy.y_train, 10), atol=1e-6)
    assert t[2, 7] > 0.39 and t[0, 0] == 1.0
    assert not noisy.is_noisy[np.isin(noisy.y_train_clean, [0, 1, 4, 7, 8, 9])].any()


def test_noise_stream_independent_of_subset_seed():
    noise = NoiseConfig(kind="symmetric", rate=0.3, seed=5)
    a = load_dataset(DataConfig(train_size=1000, subset_mode="random", subset_seed=0), noise)
    b = load_dataset(DataConfig(train_size=1000, subset_mode="random", subset_seed=1), noise)
    assert not np.array_equal(a.y_train_clean, b.y_train_clean)  # different examples kept
    np.testing.assert_array_equal(a.is_noisy, b.is_noisy)  # same noise draws
    np.testing.assert_array_equal((a.y_train - a.y_train_clean) % 10, (b.y_train - b.y_train_clean) % 10)
    c = load_dataset(
        DataConfig(train_size=1000, subset_mode="random", subset_seed=0),
        NoiseConfig(kind="symmetric", rate=0.3, seed=6),
    )
    np.testing.assert_array_equal(a.y_train_clean, c.y_train_clean)  # noise seed keeps the subset
    assert not np.array_equal(a.is_noisy, c.is_noisy)


@pytest.mark.parametrize(
    "data,noise,match",
    [
        (
            DataConfig(name="synthetic"),
            NoiseConfig(kind="asymmetric", rate=0.2),
            "noise.kind asymmetric: asymmetric noise is defined for mnist, cifar10 and cifar100, not for 'synthetic'",
        ),
        (DataConfig(), NoiseConfig(kind="flip", rate=0.2), "noise.kind must be one of none, random_labels"),
        (DataConfig(), NoiseConfig(kind="none", rate=0.2), "noise.rate=0.2 given with noise.kind none"),
        (DataConfig(), NoiseConfig(kind="symmetric", rate=-0.1), r"noise.rate must be in \[0, 1\], got -0.1"),
        (DataConfig(), NoiseConfig(kind="symmetric", rate=float("nan")), r"noise.rate must be in \[0, 1\]"),
        (
            DataConfig(name="cifar100"),
            NoiseConfig(kind="asymmetric", rate=0.2, asymmetric_mode="x"),
            "noise.asymmetric_mode must be one of superclass, reference_blocks",
        ),
    ],
)
def test_bad_noise_settings_are_refused_once_by_validation(data, noise, match):
    """Each noise rule lives in :mod:`sdd_jax.validate` alone (``apply_noise`` trusts it)."""
    with pytest.raises(ConfigError, match=match):
        validate(Config(data=data, noise=noise))
