import functools
import math
from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax import criteria, masks, pruning
from sdd_jax.config import Config, ConfigError, PruningConfig
from sdd_jax.validate import validate


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(12, name="fc1")(x))
        x = nn.relu(nn.Dense(7, name="fc2")(x))
        return nn.Dense(3, name="fc3")(x)


def is_kernel(path):
    return path[-1] == "kernel"


def init(key):
    return TinyMLP().init(key, jnp.zeros((1, 10)))["params"]


def init_params(seed=0):
    return init(jax.random.key(seed))


@functools.lru_cache
def stacked(seeds=3):
    return jax.vmap(init)(jax.random.split(jax.random.key(7), seeds))


def kernel_vector(tree):
    return np.concatenate([np.asarray(tree[n]["kernel"]).ravel() for n in ("fc1", "fc2", "fc3")])


def seed_slice(tree, s):
    return jax.tree_util.tree_map(lambda x: x[s], tree)


def nested(new, old):
    """Every weight kept by ``new`` is kept by ``old`` (pruning never revives)."""
    pairs = zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old))
    return all(np.all((np.asarray(n) == 0) | (np.asarray(o) != 0)) for n, o in pairs)


def oneshot(params, levels, fraction=0.2, scope="global"):
    """Prune dense ``params`` once to the count ``levels`` iterative levels reach."""
    kept = pruning.oneshot_targets(params, is_kernel, levels=levels, fraction=fraction, scope=scope)
    options = pruning.PruneOptions(scope=scope)
    return pruning.prune_to_count(params, masks.ones_like(params), is_kernel, kept=kept, options=options)


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("fraction", [0.2, 0.1, 0.25, 0.3, 0.5, 0.05, 1.0])
def test_num_to_prune_matches_float64_ceil(fraction):
    remaining = np.arange(0, 30_000)
    expected = np.ceil(fraction * remaining.astype(np.float64)).astype(np.int64)
    got_jax = np.asarray(pruning.num_to_prune(jnp.asarray(remaining, jnp.int32), fraction))
    np.testing.assert_array_equal(got_jax, expected)
    for r in (0, 1, 4, 5, 6, 266_200, 16_777_221, 2**31 - 1):
        assert pruning.num_to_prune(r, fraction) == math.ceil(fraction * r)
        assert int(pruning.num_to_prune(jnp.int32(r), fraction)) == math.ceil(fraction * r)


def test_kept_after_levels():
    assert pruning.kept_after_levels(1000, 0.2, 0) == 1000
    remaining = 266_610
    for k in range(1, 25):
        remaining -= math.ceil(0.2 * remaining)
        assert pruning.kept_after_levels(266_610, 0.2, k) == remaining
    assert abs(pruning.kept_after_levels(10**6, 0.2, 5) / 10**6 - 0.8**5) < 1e-5


def test_bad_fraction_raises():
    for bad in (-0.1, 1.5, "x", 0.123456789):
        with pytest.raises(pruning.PruningError, match="fraction"):
            pruning.num_to_prune(10, bad)


# ----------------------------------------------------------------------------- magnitude


def test_iterative_global_counts_exact_nested_and_match_numpy():
    params = init_params()
    mask = masks.ones_like(params)
    total = masks.count(mask, is_kernel)[1]
    w = np.abs(kernel_vector(params))
    for level in range(1, 9):
        new = pruning.prune(params, mask, is_kernel, fraction=0.2)
        kept = int(masks.count(new, is_kernel)[0])
        assert kept == pruning.kept_after_levels(total, 0.2, level)
        assert nested(new, mask) and not nested(mask, new)
        # Written differently: the live weights with the smallest |w| are the ones removed.
        alive = kernel_vector(mask) == 1
        n_remove = math.ceil(0.2 * alive.sum())
        live_idx = np.nonzero(alive)[0]
        removed = live_idx[np.argsort(w[live_idx], kind="stable")[:n_remove]]
        expected = alive.copy()
        expected[removed] = False
        np.testing.assert_array_equal(kernel_vector(new) == 1, expected)
        # Non-prunable leaves stay all ones; dtypes and shapes as params.
        chex.assert_trees_all_equal_shapes_and_dtypes(new, params)
        for name in ("fc1", "fc2", "fc3"):
            np.testing.assert_array_equal(new[name]["bias"], 1.0)
        mask = new
    np.testing.assert_allclose(float(masks.density(mask, is_kernel)), 0.8**8, atol=5 / total)


def test_ties_exact_count_and_deterministic():
    params = jax.tree_util.tree_map(jnp.ones_like, init_params())  # every weight ties
    mask = masks.ones_like(params)
    total = masks.count(mask, is_kernel)[1]
    for level in range(1, 5):
        mask = pruning.prune(params, mask, is_kernel, fraction=0.2)
        assert int(masks.count(mask, is_kernel)[0]) == pruning.kept_after_levels(total, 0.2, level)
    # Ties go by flat index of the concatenated kernels: the pruned weights are a prefix.
    vec = kernel_vector(mask)
    n_pruned = total - pruning.kept_after_levels(total, 0.2, 4)
    np.testing.assert_array_equal(vec[:n_pruned], 0.0)
    np.testing.assert_array_equal(vec[n_pruned:], 1.0)
    # Ties within a layer scope are exact too.
    layer_scope = pruning.PruneOptions(scope="layer")
    layer = pruning.prune(params, masks.ones_like(params), is_kernel, options=layer_scope, fraction=0.2)
    for name, (kept, tot) in masks.layer_counts(layer, is_kernel).items():
        assert int(kept) == tot - math.ceil(0.2 * tot), name


def test_layer_scope_counts_per_layer():
    params = init_params(1)
    # Scale one layer so that global and layer scope must disagree.
    params = {**params, "fc3": {**params["fc3"], "kernel": params["fc3"]["kernel"] * 100.0}}
    mask = masks.ones_like(params)
    totals = {k: t for k, (_, t) in masks.layer_counts(mask, is_kernel).items()}
    for level in range(1, 5):
        mask = pruning.prune(params, mask, is_kernel, fraction=0.2, options=pruning.PruneOptions(scope="layer"))
        for name, (kept, _) in masks.layer_counts(mask, is_kernel).items():
            assert int(kept) == pruning.kept_after_levels(totals[name], 0.2, level), name
    glob = oneshot(params, levels=4, fraction=0.2)
    assert int(masks.layer_counts(glob, is_kernel)["fc3/kernel"][0]) == totals["fc3/kernel"]  # never pruned
    assert int(masks.count(glob, is_kernel)[0]) == pruning.kept_after_levels(sum(totals.values()), 0.2, 4)


def test_ignore_list():
    params = init_params(2)
    mask = masks.ones_like(params)
    effective = masks.exclude(is_kernel, [r"^fc1/"])
    new = pruning.prune(params, mask, effective, fraction=0.5)
    np.testing.assert_array_equal(new["fc1"]["kernel"], 1.0)
    counted = params["fc2"]["kernel"].size + params["fc3"]["kernel"].size
    kept, total = masks.count(new, effective)
    assert total == counted and int(kept) == counted - math.ceil(0.5 * counted)
    with pytest.raises(pruning.PruningError, match="no prunable"):
        pruning.prune(params, mask, masks.exclude(is_kernel, ["kernel"]))
    with pytest.raises(pruning.PruningError, match="no prunable"):
        pruning.oneshot_targets(params, masks.exclude(is_kernel, ["kernel"]), levels=1)


def test_largest_first_prunes_largest():
    params = init_params(3)
    largest = pruning.PruneOptions(largest_first=True)
    new = pruning.prune(params, masks.ones_like(params), is_kernel, fraction=0.3, options=largest)
    w, keep = np.abs(kernel_vector(params)), kernel_vector(new) == 1
    assert keep.sum() == w.size - math.ceil(0.3 * w.size)
    assert w[~keep].min() >= w[keep].max()
    smallest = pruning.prune(params, masks.ones_like(params), is_kernel, fraction=0.3)
    assert w[kernel_vector(smallest) == 0].max() <= w[kernel_vector(smallest) == 1].min()


# ----------------------------------------------------------------------------- saliency, random


def test_saliency_uses_gradients():
    params = init_params(4)
    mask = masks.ones_like(params)
    const = jax.tree_util.tree_map(lambda p: jnp.full_like(p, -2.0), params)
    saliency = pruning.PruneOptions(criterion="saliency")
    same = pruning.prune(params, mask, is_kernel, options=saliency, grads=const)
    chex.assert_trees_all_equal(same, pruning.prune(params, mask, is_kernel))

    x = jax.random.normal(jax.random.key(5), (16, 10))
    y = jax.random.randint(jax.random.key(6), (16,), 0, 3)

    def loss(p):
        logits = TinyMLP().apply({"params": p}, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), y])

    grads = jax.grad(loss)(params)
    sal = pruning.prune(params, mask, is_kernel, options=saliency, grads=grads)
    assert int(masks.count(sal, is_kernel)[0]) == int(masks.count(same, is_kernel)[0])
    assert not np.array_equal(kernel_vector(sal), kernel_vector(same))
    score = np.abs(kernel_vector(params) * kernel_vector(grads))
    keep = kernel_vector(sal) == 1
    assert score[~keep].max() <= score[keep].min()
    with pytest.raises(pruning.PruningError, match="grads"):
        pruning.prune(params, mask, is_kernel, options=saliency)


def test_random_criterion_per_key():
    params = init_params(5)
    mask = masks.ones_like(params)
    rand = pruning.PruneOptions(criterion="random")
    a = pruning.prune(params, mask, is_kernel, options=rand, key=jax.random.key(1))
    b = pruning.prune(params, mask, is_kernel, options=rand, key=jax.random.key(1))
    c = pruning.prune(params, mask, is_kernel, options=rand, key=jax.random.key(2))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(kernel_vector(a), kernel_vector(c))
    assert int(masks.count(a, is_kernel)[0]) == int(masks.count(c, is_kernel)[0])
    with pytest.raises(pruning.PruningError, match="key"):
        pruning.prune(params, mask, is_kernel, options=rand)


def test_built_in_criteria_are_registry_entries_with_the_reference_scores():
    assert pruning.CRITERIA[:3] == ("magnitude", "saliency", "random")
    flags = {
        name: (criteria.CRITERIA[name].needs_grads, criteria.CRITERIA[name].needs_key)
        for name in ("magnitude", "saliency", "random")
    }
    assert flags == {"magnitude": (False, False), "saliency": (True, False), "random": (False, True)}
    params = init_params(8)
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p * 3.0), params)
    key = jax.random.key(3)
    w, g = kernel_vector(params), kernel_vector(grads)
    np.testing.assert_array_equal(kernel_vector(pruning.scores(params, "magnitude")), np.abs(w))
    np.testing.assert_array_equal(
        kernel_vector(pruning.scores(params, "saliency", grads=grads)), np.abs(w * g).astype(np.float32)
    )
    leaves = jax.tree_util.tree_leaves(params)
    draws = [
        np.asarray(jax.random.uniform(k, leaf.shape)) for k, leaf in zip(jax.random.split(key, len(leaves)), leaves)
    ]
    random_leaves = jax.tree_util.tree_leaves(pruning.scores(params, "random", key=key))
    for got, want in zip(random_leaves, draws):
        np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(kernel_vector(pruning.scores(params, "magnitude", largest_first=True)), -np.abs(w))


def test_a_registered_criterion_is_scored_validated_and_gets_only_what_it_needs():
    seen = {}

    def squared(params, key, grads):
        seen.update(key=key, grads=grads)
        return jax.tree_util.tree_map(jnp.square, params)

    entry = criteria.register(criteria.Criterion("squared_test", squared))
    try:
        with pytest.raises(ValueError, match="already registered"):
            criteria.register(entry)
        params = init_params(9)
        mask = masks.ones_like(params)
        options = pruning.PruneOptions(criterion="squared_test")
        got = pruning.prune(params, mask, is_kernel, options=options, key=jax.random.key(0), grads=params)
        assert seen == {"key": None, "grads": None}  # neither needed: neither passed
        chex.assert_trees_all_equal(got, pruning.prune(params, mask, is_kernel))  # w**2 ranks as |w|
        assert "squared_test" in pruning.CRITERIA
        validate(Config(pruning=PruningConfig(criterion="squared_test")))
    finally:
        del criteria.CRITERIA["squared_test"]
    with pytest.raises(ConfigError, match="pruning.criterion must be one of magnitude, saliency, random"):
        validate(Config(pruning=PruningConfig(criterion="squared_test")))


def test_random_mask_like_keeps_layer_counts():
    params = init_params(6)
    mask = oneshot(params, levels=3)
    r1 = pruning.random_mask_like(mask, is_kernel, jax.random.key(1))
    r2 = pruning.random_mask_like(mask, is_kernel, jax.random.key(2))
    for name, (kept, _) in masks.layer_counts(mask, is_kernel).items():
        assert int(masks.layer_counts(r1, is_kernel)[name][0]) == int(kept)
        assert int(masks.layer_counts(r2, is_kernel)[name][0]) == int(kept)
    assert not np.array_equal(kernel_vector(r1), kernel_vector(mask))
    assert not np.array_equal(kernel_vector(r1), kernel_vector(r2))
    chex.assert_trees_all_equal(r1, pruning.random_mask_like(mask, is_kernel, jax.random.key(1)))
    np.testing.assert_array_equal(r1["fc2"]["bias"], 1.0)
    # Per seed under vmap: each seed keeps its own counts with its own positions.
    rng = np.random.default_rng(0)
    mask3 = jax.tree_util.tree_map(lambda x: (rng.random(x.shape) < 0.5).astype(np.float32), stacked(3))
    keys = jax.random.split(jax.random.key(3), 3)
    rand3 = jax.jit(jax.vmap(lambda m, k: pruning.random_mask_like(m, is_kernel, k)))(mask3, keys)
    for name, (kept, _) in masks.layer_counts(mask3, is_kernel, seed_axis=True).items():
        np.testing.assert_array_equal(masks.layer_counts(rand3, is_kernel, seed_axis=True)[name][0], kept)
    assert not np.array_equal(rand3["fc1"]["kernel"][0], rand3["fc1"]["kernel"][1])


# ----------------------------------------------------------------------------- one-shot, seeds, jit


def test_oneshot_matches_iterative_counts():
    params = init_params(8)
    iterative = masks.ones_like(params)
    for level in range(1, 6):
        iterative = pruning.prune(params, iterative, is_kernel, fraction=0.2)
        once = oneshot(params, levels=level, fraction=0.2)
        assert int(masks.count(once, is_kernel)[0]) == int(masks.count(iterative, is_kernel)[0])
        lay_it = oneshot(params, levels=level, scope="layer")
        targets = pruning.oneshot_targets(params, is_kernel, levels=level, scope="layer")
        assert {k: int(c) for k, (c, _) in masks.layer_counts(lay_it, is_kernel).items()} == targets
    # With the same weights, pruning once at level 1 is pruning one level.
    level1 = oneshot(params, levels=1)
    chex.assert_trees_all_equal(level1, pruning.prune(params, masks.ones_like(params), is_kernel))


def test_prune_to_count_never_revives_and_checks_input():
    params = init_params(9)
    mask = pruning.prune(params, masks.ones_like(params), is_kernel, fraction=0.5)
    kept_now = int(masks.count(mask, is_kernel)[0])
    same = pruning.prune_to_count(params, mask, is_kernel, kept=kept_now + 10)
    chex.assert_trees_all_equal(same, mask)
    fewer = pruning.prune_to_count(params, mask, is_kernel, kept=kept_now - 10)
    assert int(masks.count(fewer, is_kernel)[0]) == kept_now - 10 and nested(fewer, mask)
    with pytest.raises(pruning.PruningError, match="missing"):
        layer_scope = pruning.PruneOptions(scope="layer")
        pruning.prune_to_count(params, mask, is_kernel, kept={"fc1/kernel": 3}, options=layer_scope)
    with pytest.raises(pruning.PruningError, match="outside"):
        pruning.prune_to_count(params, mask, is_kernel, kept=10**9)
    with pytest.raises(pruning.PruningError, match="scope"):
        pruning.prune(params, mask, is_kernel, options=pruning.PruneOptions(scope="channel"))
    with pytest.raises(pruning.PruningError, match="criterion"):
        pruning.prune(params, mask, is_kernel, options=pruning.PruneOptions(criterion="taylor"))


def test_jit_with_traced_count():
    params = init_params(10)
    mask = masks.ones_like(params)
    fn = jax.jit(lambda p, m, k: pruning.prune_to_count(p, m, is_kernel, kept=k))
    for k in (100, 57, 1):
        assert int(masks.count(fn(params, mask, jnp.int32(k)), is_kernel)[0]) == k


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_vmap_over_seeds_equals_loop(criterion):
    params = stacked(3)
    mask = masks.ones_like(params)
    keys = jax.random.split(jax.random.key(11), 3)
    options = pruning.PruneOptions(criterion=criterion)
    one = partial(pruning.prune, is_prunable=is_kernel, fraction=0.2, options=options)
    if criterion == "magnitude":
        batched = jax.jit(jax.vmap(one))(params, mask)
    else:
        batched = pruning.seed_pruner(is_kernel, fraction=0.2, options=options)(params, mask, keys)
    single = jax.jit(one)  # the same function, one seed at a time
    for s in range(3):
        expect = single(seed_slice(params, s), seed_slice(mask, s), key=keys[s] if criterion == "random" else None)
        chex.assert_trees_all_equal(seed_slice(batched, s), expect)
    # Per-seed rankings: the seeds' masks differ, their counts do not.
    assert not np.array_equal(kernel_vector(seed_slice(batched, 0)), kernel_vector(seed_slice(batched, 1)))
    counts = masks.count(batched, is_kernel, seed_axis=True)[0]
    np.testing.assert_array_equal(counts, counts[0])


def test_seed_pruner_compiles_once_and_takes_grads():
    params = stacked(2)
    mask = masks.ones_like(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.sin(7.0 * p), params)
    calls = []

    def counting_is_kernel(path):  # called only while tracing
        calls.append(path)
        return is_kernel(path)

    saliency = pruning.PruneOptions(criterion="saliency")
    pruner = pruning.seed_pruner(counting_is_kernel, options=saliency)
    one = jax.jit(partial(pruning.prune, is_prunable=is_kernel, options=saliency))
    first = pruner(params, mask, grads=grads)
    traced_calls = len(calls)
    second = pruner(params, first, grads=grads)
    assert traced_calls > 0 and len(calls) == traced_calls  # second call: no retrace
    for s in range(2):
        expect = one(seed_slice(params, s), seed_slice(first, s), grads=seed_slice(grads, s))
        chex.assert_trees_all_equal(seed_slice(second, s), expect)
    kept, total = masks.count(second, is_kernel, seed_axis=True)
    np.testing.assert_array_equal(kept, pruning.kept_after_levels(total, 0.2, 2))


def test_prune_options_from_config():
    from sdd_jax.config import PruningConfig

    config = PruningConfig(fraction=0.5, scope="layer", ignore=("fc3",))
    opts = pruning.PruneOptions.from_config(config)
    assert opts == pruning.PruneOptions(criterion="magnitude", scope="layer", largest_first=False)
    params = init_params(12)
    prunable = masks.exclude(is_kernel, config.ignore)
    new = pruning.prune(params, masks.ones_like(params), prunable, fraction=config.fraction, options=opts)
    np.testing.assert_array_equal(new["fc3"]["kernel"], 1.0)
    assert int(masks.layer_counts(new, is_kernel)["fc1/kernel"][0]) == params["fc1"]["kernel"].size // 2
