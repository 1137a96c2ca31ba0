"""The training engine: seeds under vmap, jit, masks through momentum and weight decay,
no retracing, the learning-rate schedule, determinism, bfloat16 compute over float32 state."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from thin_models import thin_resnet

from sdd_jax import rng as rng_streams
from sdd_jax import train
from sdd_jax.config import ModelConfig, OptimConfig
from sdd_jax.data.device import normalize
from sdd_jax.engine import Engine
from sdd_jax.models import build_model
from sdd_jax.train import DeviceData, TrainingDiverged, check_finite, learning_rate_schedule, steps_per_epoch

N_TRAIN, N_CLASSES = 200, 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(N_TRAIN, 6, 6, 1), dtype=np.uint8)
    y = (x.reshape(N_TRAIN, -1)[:, :4].argmax(1) % N_CLASSES).astype(np.int32)
    return DeviceData(jnp.asarray(x), jnp.asarray(y))


def make_engine(momentum=0.9, weight_decay=5e-3, batch_size=64, widths=(16,), **kw):
    optim = OptimConfig(
        lr=0.05,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        epochs=4,
        milestones=(2,),
        gamma=0.5,
    )
    model = build_model(ModelConfig(name="mlp", widths=widths), N_CLASSES)
    return Engine(model, optim, N_TRAIN, mean=(0.5,), std=(0.25,), **kw)


def init(engine, seeds):
    keys = jnp.stack([rng_streams.stream_key(s, "init") for s in seeds])
    return engine.init(keys, seeds, jnp.zeros((1, 6, 6, 1)))


def random_mask(params, density=0.3, seed=0):
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    out = []
    for leaf in leaves:
        if leaf.ndim >= 3:  # stacked kernels (seed, in, out): prune; biases stay dense
            out.append(jnp.asarray(rng.random(leaf.shape) < density, leaf.dtype))
        else:
            out.append(jnp.ones_like(leaf))
    return jax.tree.unflatten(treedef, out)


def test_steps_per_epoch_keeps_the_last_partial_batch():
    assert steps_per_epoch(200, 64) == 4
    assert steps_per_epoch(256, 64) == 4
    assert steps_per_epoch(257, 64) == 5


def test_schedule_values_at_milestones():
    optim = OptimConfig(lr=0.1, milestones=(80, 120), gamma=0.1)
    schedule = learning_rate_schedule(optim, steps_in_epoch=391)
    values = {it: float(schedule(it)) for it in (0, 80 * 391 - 1, 80 * 391, 120 * 391 - 1, 120 * 391)}
    np.testing.assert_allclose(list(values.values()), [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_schedule_warmup_is_linear():
    optim = OptimConfig(lr=0.2, warmup_epochs=1.0)
    schedule = learning_rate_schedule(optim, steps_in_epoch=10)
    np.testing.assert_allclose([float(schedule(i)) for i in (0, 5, 10, 50)], [0.0, 0.1, 0.2, 0.2], rtol=1e-6)


def test_vmap_over_seeds_equals_a_loop(data):
    engine = make_engine()
    seeds = [3, 7, 11]
    stacked = init(engine, seeds)
    mask = jax.tree.map(jnp.ones_like, stacked.params)
    for epoch in range(2):
        stacked, _, _ = engine.train_epoch(stacked, mask, data, epoch)
    for i, seed in enumerate(seeds):
        single = init(engine, [seed])
        single_mask = jax.tree.map(lambda m: m[i : i + 1], mask)
        for epoch in range(2):
            single, _, _ = engine.train_epoch(single, single_mask, data, epoch)
        chex.assert_trees_all_close(
            jax.tree.map(lambda leaf: leaf[i], stacked.params),
            jax.tree.map(lambda leaf: leaf[0], single.params),
            rtol=1e-5,
            atol=1e-6,
        )


def test_jit_equals_no_jit_for_a_step(data):
    engine = make_engine()
    state = jax.tree.map(lambda leaf: leaf[0], init(engine, [0]))
    mask = jax.tree.map(jnp.ones_like, state.params)
    images = normalize(data.x[:64], engine.spec.mean, engine.spec.std)
    args = (state, mask, images, data.y[:64], jnp.ones(64), jnp.bool_(True))
    step = functools.partial(train.train_step, engine.spec)
    jitted, _ = jax.jit(step)(*args)
    with jax.disable_jit():
        plain, _ = step(*args)
    chex.assert_trees_all_close(jitted.params, plain.params, rtol=1e-5, atol=1e-6)
    assert int(jitted.step) == int(plain.step) == 1


def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay(data):
    engine = make_engine(momentum=0.9, weight_decay=1e-2)
    state = init(engine, [0, 1])
    mask = random_mask(state.params)
    # Start from unmasked weights: the first update must already zero the pruned positions.
    for epoch in range(4):
        state, loss, _ = engine.train_epoch(state, mask, data, epoch)
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mask)):
        pruned = np.asarray(m) == 0
        assert np.all(np.asarray(p)[pruned] == 0.0)
        assert np.any(np.asarray(p)[~pruned] != 0.0)
    for t, m in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(mask)):
        if t.shape == m.shape:  # the momentum trace
            assert np.all(np.asarray(t)[np.asarray(m) == 0] == 0.0)


def test_an_epoch_does_not_retrace(data):
    engine = make_engine(max_traces=1)
    state = init(engine, [0, 1])
    mask = jax.tree.map(jnp.ones_like, state.params)
    for epoch in range(3):
        state, _, _ = engine.train_epoch(state, mask, data, epoch, start_iteration=epoch)
    state, _, _ = engine.train_epoch(state, mask, data, 3, 0, 13)  # partial epoch, same trace
    # epochs 0-2 run all 4 iterations each (their start points lie inside them); epoch 3 runs
    # iteration 12 only (stop at 13).
    assert int(state.step[0]) == 3 * 4 + 1


def test_same_seed_twice_gives_bit_identical_state(data):
    results = []
    for _ in range(2):
        engine = make_engine()
        state = init(engine, [5, 6])
        mask = jax.tree.map(jnp.ones_like, state.params)
        for epoch in range(2):
            state, _, _ = engine.train_epoch(state, mask, data, epoch)
        results.append(jax.device_get(state))
    chex.assert_trees_all_equal(results[0], results[1])


def test_different_seeds_differ_in_init_and_data_order(data):
    engine = make_engine()
    state = init(engine, [0, 1])
    assert not np.array_equal(
        np.asarray(state.params["fc1"]["kernel"][0]), np.asarray(state.params["fc1"]["kernel"][1])
    )
    assert not np.array_equal(np.asarray(state.rng[0]), np.asarray(state.rng[1]))


def test_partial_epochs_compose_to_a_full_epoch(data):
    """Rewinding mid-epoch: stop at iteration 2 then continue gives the uninterrupted epoch."""
    engine = make_engine()
    full = init(engine, [0])
    mask = jax.tree.map(jnp.ones_like, full.params)
    split = jax.tree.map(jnp.copy, full)
    full, _, _ = engine.train_epoch(full, mask, data, 0)
    split, _, _ = engine.train_epoch(split, mask, data, 0, 0, 2)
    assert int(split.step[0]) == 2
    split, _, _ = engine.train_epoch(split, mask, data, 0, 2)
    chex.assert_trees_all_close(full.params, split.params, rtol=1e-6, atol=1e-7)


def test_last_partial_batch_is_weighted_exactly():
    """With N=200, batch 64, the fourth batch holds 8 real examples: the epoch's mean loss
    counts every example exactly once."""
    engine = make_engine(momentum=0.0, weight_decay=0.0)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.integers(0, 256, size=(N_TRAIN, 6, 6, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, N_CLASSES, size=N_TRAIN), jnp.int32)
    state = init(engine, [0])
    mask = jax.tree.map(jnp.ones_like, state.params)
    # A zero learning rate keeps the weights fixed, so the epoch's mean loss is the full-set loss.
    frozen = Engine(engine.spec.model, OptimConfig(lr=0.0, batch_size=64), N_TRAIN, mean=(0.5,), std=(0.25,))
    loss_eval, acc_eval, _ = frozen.evaluate(state.params, state.batch_stats, mask, DeviceData(x, y))
    _, loss_epoch, acc_epoch = frozen.train_epoch(state, mask, DeviceData(x, y), 0)
    np.testing.assert_allclose(np.asarray(loss_epoch), np.asarray(loss_eval), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc_epoch), np.asarray(acc_eval), rtol=1e-6)


def test_evaluate_matches_a_direct_computation(data):
    engine = make_engine(eval_batch_size=64)  # 200 = 3*64 + 8: a padded last batch
    state = init(engine, [0, 1])
    mask = random_mask(state.params, seed=2)
    loss, acc, pred = engine.evaluate(state.params, state.batch_stats, mask, data)
    for i in range(2):
        params = jax.tree.map(lambda p, m: p[i] * m[i], state.params, mask)
        logits = engine.spec.model.apply(
            {"params": params}, normalize(data.x, engine.spec.mean, engine.spec.std), train=False
        )
        expected = np.asarray(jnp.argmax(logits, -1))
        np.testing.assert_array_equal(np.asarray(pred[i]), expected)
        np.testing.assert_allclose(float(acc[i]), np.mean(expected == np.asarray(data.y)), rtol=1e-6)


def test_non_finite_loss_is_one_clear_error():
    with pytest.raises(TrainingDiverged, match=r"seed\(s\) \[9\]"):
        check_finite(np.array([0.3, np.nan]), what="at level 0, epoch 1", seeds=[4, 9])
    check_finite(np.array([0.3, 0.2]), what="ok")


def test_seed_chunks_give_the_same_numbers(data):
    """seeds_per_chunk bounds memory; each seed's numbers do not depend on it."""
    whole = make_engine()
    chunked = make_engine(seeds_per_chunk=2)
    seeds = [0, 1, 2]
    a, b = init(whole, seeds), init(chunked, seeds)
    mask = random_mask(a.params, seed=4)
    for epoch in range(2):
        a, loss_a, _ = whole.train_epoch(a, mask, data, epoch)
        b, loss_b, _ = chunked.train_epoch(b, mask, data, epoch)
    assert isinstance(jax.tree.leaves(b.params)[0], np.ndarray)  # waiting chunks live on the host
    chex.assert_trees_all_close(jax.device_get(a.params), b.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(loss_a), np.asarray(loss_b), rtol=1e-5)
    ev_a = whole.evaluate(a.params, a.batch_stats, mask, data)
    ev_b = chunked.evaluate(b.params, b.batch_stats, mask, data)
    np.testing.assert_array_equal(np.asarray(ev_a[2]), np.asarray(ev_b[2]))


def test_python_step_loop_equals_the_scanned_epoch(data):
    """epoch_loop="steps" (conv nets on CPU) runs the same iterations as the scan, including
    partial epochs at rewind points and the weighted last batch."""
    scan, steps = make_engine(epoch_loop="scan"), make_engine(epoch_loop="steps")
    a, b = init(scan, [0, 1]), init(steps, [0, 1])
    mask = random_mask(a.params, seed=3)
    for epoch, start, stop in ((0, 0, 3), (0, 3, None), (1, 0, None)):
        a, loss_a, acc_a = scan.train_epoch(a, mask, data, epoch, start, stop)
        b, loss_b, acc_b = steps.train_epoch(b, mask, data, epoch, start, stop)
        np.testing.assert_allclose(np.asarray(loss_a), np.asarray(loss_b), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(acc_a), np.asarray(acc_b), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(a.step), np.asarray(b.step))
    chex.assert_trees_all_close(a.params, b.params, rtol=1e-5, atol=1e-6)


def test_epoch_loop_auto_picks_steps_for_conv_nets_on_cpu():
    conv = Engine(
        build_model(ModelConfig(name="vgg11", width_multiplier=0.125), 10),
        OptimConfig(batch_size=8),
        32,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    dense = make_engine()
    assert dense.epoch_loop == "scan"
    assert conv.epoch_loop == ("steps" if jax.default_backend() == "cpu" else "scan")
    with pytest.raises(ValueError, match="epoch_loop"):
        make_engine(epoch_loop="while")


# ----------------------------------------------------------------------------- bfloat16 compute


@pytest.fixture(scope="module")
def bf16_run(data):
    """A thin BatchNorm ResNet computing in bfloat16, pruned to 30% of its kernels, after 20 SGD
    steps with momentum and weight decay (batch 40: 5 steps per epoch, 4 epochs). The dtype rules
    of ``build_model(... dtype="bfloat16")`` are checked in tests/test_models.py."""
    model = thin_resnet(N_CLASSES, 8, dtype=jnp.bfloat16)
    optim = OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-2, batch_size=40, epochs=4)
    engine = Engine(model, optim, N_TRAIN, mean=(0.5,), std=(0.25,))
    start = init(engine, [0, 1])
    mask = random_mask(start.params)
    state = jax.tree.map(jnp.copy, start)
    for epoch in range(4):
        state, loss, _ = engine.train_epoch(state, mask, data, epoch)
    assert np.asarray(state.step).tolist() == [20, 20]
    check_finite(loss, what="after 20 bfloat16 steps")
    return engine, start, state, mask


def test_bfloat16_keeps_pruned_weights_exactly_zero(bf16_run):
    _, start, state, mask = bf16_run
    pruned_somewhere = False
    for p, p0, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(start.params), jax.tree.leaves(mask)):
        pruned = np.asarray(m) == 0
        pruned_somewhere |= bool(pruned.any())
        assert np.all(np.asarray(p)[pruned] == 0.0)
        assert np.any(np.asarray(p)[~pruned] != np.asarray(p0)[~pruned])  # the kept weights trained
    assert pruned_somewhere
    for t, m in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(mask)):
        if t.shape == m.shape:  # the momentum trace
            assert np.all(np.asarray(t)[np.asarray(m) == 0] == 0.0)


def test_bfloat16_keeps_parameters_optimiser_state_and_statistics_float32(bf16_run, data):
    engine, start, state, mask = bf16_run
    chex.assert_trees_all_equal_dtypes(state.params, start.params)
    chex.assert_type(jax.tree.leaves((state.params, state.opt_state, state.batch_stats)), jnp.float32)
    assert jax.tree.leaves(state.opt_state) and jax.tree.leaves(state.batch_stats)
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), state.batch_stats, start.batch_stats)
    assert all(jax.tree.leaves(moved))
    one_seed = {
        "params": jax.tree.map(lambda leaf: leaf[0], state.params),
        "batch_stats": jax.tree.map(lambda leaf: leaf[0], state.batch_stats),
    }
    images = normalize(data.x[:8], engine.spec.mean, engine.spec.std)
    eval_logits = jax.eval_shape(lambda v: engine.spec.model.apply(v, images, train=False), one_seed)
    train_logits, updates = jax.eval_shape(
        lambda v: engine.spec.model.apply(v, images, train=True, mutable=["batch_stats"]), one_seed
    )
    chex.assert_type([eval_logits, train_logits], jnp.float32)
    chex.assert_type(jax.tree.leaves(updates), jnp.float32)
    loss, acc, _ = engine.evaluate(state.params, state.batch_stats, mask, data)
    chex.assert_type([loss, acc], jnp.float32)
    chex.assert_tree_all_finite(loss)
