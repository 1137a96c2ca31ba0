"""The CIFAR code path on synthetic 32x32x3 data: thin ResNet-10 / VGG-11 with BatchNorm,
on-device augmentation, momentum + weight decay, a mid-epoch rewind point, one pruning level."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax import imp, masks, results, runopen, train
from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def cifar_like(tmp_path, model: str) -> Config:
    return Config(
        name=f"cifar_like_{model}",
        data=DataConfig(name="synthetic_32x32x3_c10_n256_t64", augment=True),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=1),
        model=ModelConfig(name=model, width_multiplier=0.125),
        optim=OptimConfig(
            lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=2, milestones=(1,), gamma=0.1
        ),
        pruning=PruningConfig(levels=1, rewind_iteration=3),  # inside the first epoch of 4 steps
        run=RunConfig(seeds=2, workdir=str(tmp_path), verbosity=0, eval_batch_size=64),
    )


@pytest.fixture(scope="module", params=["resnet10", "vgg11"])
def run(request, tmp_path_factory):
    config = cifar_like(tmp_path_factory.mktemp(request.param), request.param)
    run_dir = imp.run_imp(config)
    exp, run = runopen.open_run(config)
    levels = {k: run.level(k) for k in (0, 1)}
    return request.param, (exp, run), run_dir, levels


def _train_plainly(exp, weights, iterations: int):
    """The seeds' dense networks trained from stacked ``weights`` for exactly ``iterations``
    iterations by a plain loop over the package's pure per-seed functions (``train.epoch_order``,
    ``train.batch_step``; vmapped over seeds as the engine does, so that XLA rounds alike), with no
    engine, level runner or checkpoint. Returns the stacked weights on the host."""
    spec = exp.engine.spec
    params = jax.tree.map(jnp.asarray, weights.params)
    state = train.TrainState(
        params=params,
        batch_stats=jax.tree.map(jnp.asarray, weights.batch_stats),
        opt_state=jax.vmap(spec.optimizer.init)(params),
        step=jnp.zeros(len(exp.seeds), jnp.int32),
        rng=train.seeds_rng_data(exp.seeds),
    )
    mask = jax.tree.map(jnp.ones_like, params)
    order = jax.jit(jax.vmap(functools.partial(train.epoch_order, spec), in_axes=(0, None)))
    step = jax.jit(  # the state donated as the engine donates it: the same program, compiled once
        jax.vmap(functools.partial(train.batch_step, spec), in_axes=(0, 0, None, None, None, 0, 0, None, None)),
        donate_argnums=(0,),
    )
    x, y = exp.train.x, exp.train.y
    for it in range(iterations):
        epoch, i = divmod(it, spec.steps_per_epoch)
        index, w = order(state, jnp.int32(epoch))
        state, _ = step(state, mask, x, y, jnp.int32(it), index[:, i], w[:, i], jnp.int32(0), jnp.int32(iterations))
    return jax.device_get(state.weights)


def test_rewind_point_holds_weights_and_bn_statistics_from_iteration_k(run):
    """θk is the dense network after exactly k iterations: an independent k-step run from θ0
    reproduces its params and BatchNorm statistics, and k - 1 or k + 1 steps do not."""
    _, (exp, rundir), _, _ = run
    k = exp.config.pruning.rewind_iteration
    theta0, theta_k = rundir.theta0.load(), rundir.theta_rewind.load()
    assert jax.tree.leaves(theta_k.batch_stats)
    plain = _train_plainly(exp, theta0, k)
    chex.assert_trees_all_close(plain.params, theta_k.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(plain.batch_stats, theta_k.batch_stats, rtol=1e-5, atol=1e-6)
    for other in (k - 1, k + 1):  # the check tells neighbouring iterations apart, in each part
        off = _train_plainly(exp, theta0, other)
        for got, want in ((off.params, theta_k.params), (off.batch_stats, theta_k.batch_stats)):
            assert any(
                not np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))
            ), other
    # Each seed keeps its own running statistics.
    assert any(not np.allclose(leaf[0], leaf[1]) for leaf in jax.tree.leaves(theta_k.batch_stats))


def test_prunable_layers_and_exact_zeros(run):
    model, (exp, _), run_dir, levels = run
    mask, params = levels[1].mask, levels[1].params
    for path, m in zip(masks.paths(mask), jax.tree.leaves(mask)):
        p = np.asarray(jax.tree.leaves(params)[masks.paths(mask).index(path)])
        assert np.all(p[np.asarray(m) == 0] == 0)
        name = masks.path_str(path)
        if not exp.is_prunable(path):
            assert np.asarray(m).min() == 1.0, name
    classifier = np.asarray(mask["fc"]["kernel"])
    if model == "resnet10":  # the ResNets prune their classifier, VGG does not
        assert classifier.min() == 0.0
    else:
        assert classifier.min() == 1.0
    rows = results.read_results_csv(run_dir / "results.csv")
    assert [r["level"] for r in rows] == [0, 0, 1, 1]
    assert all(np.isfinite(r["test_loss"]) for r in rows)
    assert rows[2]["density"] == pytest.approx(0.8, abs=1e-4)
