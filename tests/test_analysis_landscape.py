"""``sdd_jax.analysis.landscape``, ``.interpolate`` and ``.evaluation``: filter normalisation,
curve and interpolation endpoints, BatchNorm statistics recomputed on fixed batches."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sdd_jax.analysis import evaluation, interpolate, landscape
from sdd_jax.models import mlp
from sdd_jax.models.init import BatchNorm
from sdd_jax.train import Spec, Weights, evaluate


def tree():
    """Params with a conv kernel (3, 3, 2, 4), a dense kernel (6, 5), a bias and BN parameters."""
    k = jax.random.split(jax.random.key(0), 4)
    params = {
        "conv1": {"kernel": jax.random.normal(k[0], (3, 3, 2, 4))},
        "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
        "fc1": {"kernel": jax.random.normal(k[1], (6, 5)), "bias": jax.random.normal(k[2], (5,))},
    }
    mask = jax.tree.map(jnp.ones_like, params)
    mask["conv1"]["kernel"] = (jax.random.uniform(k[3], (3, 3, 2, 4)) > 0.5).astype(jnp.float32)
    mask["conv1"]["kernel"] = mask["conv1"]["kernel"].at[..., 2].set(0.0)  # a fully pruned filter
    mask["fc1"]["kernel"] = mask["fc1"]["kernel"].at[:3, 1].set(0.0)
    params = jax.tree.map(lambda p, m: p * m, params, mask)  # a sparse solution: pruned weights are 0
    return params, mask


def norms(x):
    return np.sqrt(np.sum(np.square(np.asarray(x)), axis=tuple(range(x.ndim - 1))))


def test_filter_normalisation_gives_each_filter_the_solutions_norm_and_keeps_pruned_coordinates_zero():
    params, mask = tree()
    d = landscape.random_direction(jax.random.key(5), params, mask)
    chex.assert_trees_all_equal_shapes(d, params)
    for name in ("conv1", "fc1"):
        np.testing.assert_allclose(norms(d[name]["kernel"]), norms(params[name]["kernel"]), rtol=1e-5)
        assert np.all(np.asarray(d[name]["kernel"])[np.asarray(mask[name]["kernel"]) == 0] == 0)
    assert np.all(np.asarray(d["conv1"]["kernel"][..., 2]) == 0)  # the pruned filter stays pruned
    for leaf in (d["fc1"]["bias"], d["bn"]["scale"], d["bn"]["bias"]):
        assert np.all(np.asarray(leaf) == 0)  # biases and BatchNorm parameters are left out
    for alpha in (-1.0, 0.37, 1.0):
        moved = landscape.along(params, d, alpha)
        for name in ("conv1", "fc1"):
            assert np.all(np.asarray(moved[name]["kernel"])[np.asarray(mask[name]["kernel"]) == 0] == 0)


def test_dense_filter_normalisation_uses_every_coordinate():
    params, _ = tree()
    d = landscape.random_direction(jax.random.key(6), params)
    assert np.all(np.asarray(d["fc1"]["kernel"]) != 0)
    np.testing.assert_allclose(norms(d["fc1"]["kernel"]), norms(params["fc1"]["kernel"]), rtol=1e-5)


def mlp_problem():
    model = mlp((7,), num_classes=3)
    x = jax.random.uniform(jax.random.key(0), (50, 4))
    y = jax.random.randint(jax.random.key(1), (50,), 0, 3)
    y2 = jax.random.randint(jax.random.key(2), (50,), 0, 3)
    a = model.init(jax.random.key(3), x, train=False)["params"]
    b = model.init(jax.random.key(4), x, train=False)["params"]
    spec = Spec(
        model=model,
        optimizer=optax.identity(),
        schedule=lambda s: 0.1,
        train_size=50,
        batch_size=10,
        mean=(0.0,),
        std=(1.0,),
        eval_batch_size=16,
    )  # 50 = 3 batches of 16 + a padded one
    return spec, Weights(a, {}), Weights(b, {}), x, y, y2


def test_interpolation_endpoints_equal_the_evaluations_of_the_two_solutions():
    spec, a, b, x, y, y2 = mlp_problem()
    ones = jax.tree.map(jnp.ones_like, a.params)
    bn_images = x[:20].reshape(2, 10, 4)
    out = jax.jit(
        lambda: interpolate.curve(
            spec, a, b, ones, jnp.array([0.0, 0.5, 1.0]), x, (y, y2), x[:30], y[:30], bn_images, chunk=2
        )
    )()
    train_loss, train_acc, test_loss, test_acc = (np.asarray(o) for o in out)
    chex.assert_shape(train_loss, (3, 2))
    for i, w in ((0, a), (2, b)):
        for j, labels in enumerate((y, y2)):
            loss, acc, _ = evaluate(spec, w.params, w.batch_stats, ones, x, labels)
            assert train_loss[i, j] == pytest.approx(float(loss), rel=1e-6)
            assert train_acc[i, j] == pytest.approx(float(acc), rel=1e-6)
        loss, acc, _ = evaluate(spec, w.params, w.batch_stats, ones, x[:30], y[:30])
        assert test_loss[i] == pytest.approx(float(loss), rel=1e-6)
        assert test_acc[i] == pytest.approx(float(acc), rel=1e-6)
    # the midpoint is another network (the test would pass trivially if a == b)
    assert abs(train_loss[1, 0] - train_loss[0, 0]) > 1e-3


def test_curve_at_zero_is_the_solution_and_moves_away_from_it():
    spec, a, _, x, y, y2 = mlp_problem()
    ones = jax.tree.map(jnp.ones_like, a.params)
    d = landscape.random_direction(jax.random.key(9), a.params)
    out = landscape.curve(spec, a, ones, d, jnp.array([-1.0, 0.0, 1.0]), x, (y,), x, y, chunk=3)
    loss, _, _ = evaluate(spec, a.params, a.batch_stats, ones, x, y)
    assert float(out[0][1, 0]) == pytest.approx(float(loss), rel=1e-6)
    assert float(out[0][0, 0]) != pytest.approx(float(loss), rel=1e-3)


class BNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(5, name="fc1")(x)
        h = BatchNorm(use_running_average=not train, name="bn")(h)
        return nn.Dense(3, name="out")(nn.relu(h))


def test_recomputed_batch_norm_statistics_average_the_batches_statistics():
    model = BNNet()
    x = jax.random.normal(jax.random.key(0), (3, 8, 4)) * 2 + 1  # 3 fixed batches of 8
    variables = model.init(jax.random.key(1), x[0], train=False)
    params, stats = variables["params"], variables["batch_stats"]
    spec = Spec(
        model=model,
        optimizer=optax.identity(),
        schedule=lambda s: 0.1,
        train_size=24,
        batch_size=8,
        mean=(0.0,),
        std=(1.0,),
    )
    ones = jax.tree.map(jnp.ones_like, params)
    new = evaluation.recompute_batch_stats(spec, params, stats, ones, x)
    h = np.asarray(x @ params["fc1"]["kernel"] + params["fc1"]["bias"], np.float64)  # (3, 8, 5)
    np.testing.assert_allclose(new["bn"]["mean"], h.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["bn"]["var"], h.var(axis=1, ddof=1).mean(axis=0), rtol=1e-4)
