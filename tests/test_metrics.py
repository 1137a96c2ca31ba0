import math

import jax
import numpy as np
import pytest

from sdd_jax import metrics


def is_kernel(path):
    return path[-1] == "kernel"


def make_tree(rng, seeds=None, dtype=np.float32):
    lead = () if seeds is None else (seeds,)

    def leaf(*shape):
        return rng.normal(size=lead + shape).astype(dtype)

    return {
        "conv": {"kernel": leaf(3, 3, 1, 4), "bias": leaf(4)},
        "fc1": {"kernel": leaf(36, 8), "bias": leaf(8)},
        "fc2": {"kernel": leaf(8, 3), "bias": leaf(3)},
    }


def make_mask(rng, tree, keep=0.3):
    return jax.tree_util.tree_map(lambda x: (rng.random(x.shape) < keep).astype(np.float32), tree)


def flat(tree, names=("conv", "fc1", "fc2")):
    return np.concatenate([np.asarray(tree[n]["kernel"], np.float64).ravel() for n in names])


def assert_close(a, b):
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    np.testing.assert_allclose([v for _, v in flat_a], [v for _, v in flat_b], rtol=1e-12)


def test_learning_distance_equals_direct_vector_formula():
    rng = np.random.default_rng(0)
    theta0, theta_t = make_tree(rng), make_tree(rng)
    mask = make_mask(rng, theta0)
    out = metrics.learning_distances(theta0, theta_t, mask, is_kernel)
    v0, vt, m = flat(theta0), flat(theta_t), flat(mask)
    assert out["learning_distance"] == pytest.approx(np.linalg.norm(v0 - m * vt), rel=1e-12)
    assert out["learning_distance_unpruned"] == pytest.approx(np.linalg.norm(m * (vt - v0)), rel=1e-12)
    # Each pruned coordinate contributes theta_0 squared.
    pruned = m == 0
    full_sq = np.sum(v0[pruned] ** 2) + np.sum((v0 - vt)[~pruned] ** 2)
    assert out["learning_distance"] ** 2 == pytest.approx(full_sq, rel=1e-12)
    assert set(out["per_layer"]) == {"conv/kernel", "fc1/kernel", "fc2/kernel"}
    layer = out["per_layer"]["fc1/kernel"]
    fc1 = [flat(tree, ["fc1"]) for tree in (theta0, theta_t, mask)]
    assert layer["full"] == pytest.approx(np.linalg.norm(fc1[0] - fc1[2] * fc1[1]), rel=1e-12)
    total_sq = sum(v["full"] ** 2 for v in out["per_layer"].values())
    assert total_sq == pytest.approx(out["learning_distance"] ** 2, rel=1e-12)


def test_extreme_masks_and_non_prunable_leaves():
    rng = np.random.default_rng(1)
    theta0, theta_t = make_tree(rng), make_tree(rng)
    empty = jax.tree_util.tree_map(np.zeros_like, theta0)
    out = metrics.learning_distances(theta0, theta_t, empty, is_kernel)
    assert out["learning_distance"] == pytest.approx(np.linalg.norm(flat(theta0)), rel=1e-12)
    assert out["learning_distance_unpruned"] == 0.0
    dense = metrics.learning_distances(theta0, theta_t, None, is_kernel)
    assert dense["learning_distance"] == pytest.approx(np.linalg.norm(flat(theta0) - flat(theta_t)), rel=1e-12)
    assert dense["learning_distance"] == pytest.approx(dense["learning_distance_unpruned"], rel=1e-12)
    moved_bias = {k: {**v, "bias": v["bias"] + 100.0} for k, v in theta_t.items()}
    assert metrics.learning_distances(theta0, moved_bias, None, is_kernel) == dense


def test_accumulates_in_float64():
    rng = np.random.default_rng(2)
    theta0 = {"w": {"kernel": np.full(300_001, 1.0 + 2.0**-12, np.float32)}}
    theta_t = {"w": {"kernel": (rng.normal(size=300_001) * 1e-4).astype(np.float32)}}
    out = metrics.learning_distances(theta0, theta_t, None, is_kernel)
    pairs = zip(theta0["w"]["kernel"].tolist(), theta_t["w"]["kernel"].tolist())
    exact = math.sqrt(math.fsum((a - b) ** 2 for a, b in pairs))
    assert out["learning_distance"] == pytest.approx(exact, rel=1e-12)
    assert isinstance(out["learning_distance"], float)


def test_seed_axis_matches_per_seed_calls():
    rng = np.random.default_rng(3)
    theta0, theta_t = make_tree(rng, seeds=3), make_tree(rng, seeds=3)
    mask = make_mask(rng, theta0)
    stacked = metrics.learning_distances(theta0, theta_t, mask, is_kernel, seed_axis=True)
    assert len(stacked) == 3
    for s in range(3):
        pick = lambda t: jax.tree_util.tree_map(lambda x: x[s], t)  # noqa: E731
        assert_close(stacked[s], metrics.learning_distances(pick(theta0), pick(theta_t), pick(mask), is_kernel))
    assert stacked[0]["learning_distance"] != stacked[1]["learning_distance"]
    # A shared (unstacked) reference is broadcast to every seed.
    shared = jax.tree_util.tree_map(lambda x: x[0], theta0)
    broadcast = metrics.learning_distances(shared, theta_t, mask, is_kernel, seed_axis=True)
    pick1 = lambda t: jax.tree_util.tree_map(lambda x: x[1], t)  # noqa: E731
    assert_close(broadcast[1], metrics.learning_distances(shared, pick1(theta_t), pick1(mask), is_kernel))


def test_learning_distance_bad_inputs():
    rng = np.random.default_rng(4)
    theta0, theta_t = make_tree(rng), make_tree(rng)
    with pytest.raises(metrics.MetricsError, match="structure"):
        metrics.learning_distances({"fc1": theta0["fc1"]}, theta_t, None, is_kernel)
    with pytest.raises(metrics.MetricsError, match="no prunable"):
        metrics.learning_distances(theta0, theta_t, None, lambda path: False)
    bad_ref = {**theta0, "fc1": {**theta0["fc1"], "kernel": np.zeros((2, 2), np.float32)}}
    with pytest.raises(metrics.MetricsError, match="fc1/kernel"):
        metrics.learning_distances(bad_ref, theta_t, None, is_kernel)


def test_accuracy_split():
    rng = np.random.default_rng(5)
    n = 1000
    y_clean = rng.integers(0, 10, n)
    is_noisy = rng.random(n) < 0.2
    y_noisy = np.where(is_noisy, (y_clean + rng.integers(1, 10, n)) % 10, y_clean)
    pred = np.where(rng.random(n) < 0.7, y_noisy, rng.integers(0, 10, n))
    out = metrics.accuracy_split(pred, y_noisy, y_clean, is_noisy)
    assert out["train_acc"] == sum(int(p == y) for p, y in zip(pred, y_noisy)) / n
    assert out["train_acc_clean"] == sum(int(p == y) for p, y in zip(pred, y_clean)) / n
    noisy_idx = [i for i in range(n) if is_noisy[i]]
    assert out["train_acc_noisy_subset"] == sum(int(pred[i] == y_noisy[i]) for i in noisy_idx) / len(noisy_idx)
    assert all(isinstance(v, float) for v in out.values())

    no_noise = metrics.accuracy_split(pred, y_clean, y_clean, np.zeros(n, bool))
    assert math.isnan(no_noise["train_acc_noisy_subset"])

    per_seed = metrics.accuracy_split(np.stack([pred, y_noisy]), y_noisy, y_clean, is_noisy)
    assert per_seed["train_acc"] == [out["train_acc"], 1.0]
    assert per_seed["train_acc_noisy_subset"][1] == 1.0
    assert per_seed["train_acc_clean"][1] == float(np.mean(~is_noisy))


def test_accuracy_split_bad_inputs():
    y = np.zeros(5, int)
    with pytest.raises(metrics.MetricsError, match="examples"):
        metrics.accuracy_split(np.zeros(4, int), y, y, np.zeros(5, bool))
    with pytest.raises(metrics.MetricsError, match="boolean"):
        metrics.accuracy_split(y, y, y, np.zeros(5, int))
    with pytest.raises(metrics.MetricsError, match="y_clean"):
        metrics.accuracy_split(y, y, np.zeros(6, int), np.zeros(5, bool))
