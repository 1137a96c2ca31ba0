import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax import masks


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(8, name="fc1")(x)
        return nn.Dense(3, name="fc2")(x)


def is_kernel(path):
    return path[-1] == "kernel"


def init_params(seed=0):
    return TinyNet().init(jax.random.key(seed), jnp.zeros((1, 5, 5, 1)))["params"]


def stacked_params(seeds=3):
    return jax.vmap(lambda k: TinyNet().init(k, jnp.zeros((1, 5, 5, 1)))["params"])(
        jax.random.split(jax.random.key(0), seeds)
    )


def random_mask(params, key, keep=0.6):
    leaves, tree_def = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = [jax.random.bernoulli(k, keep, leaf.shape).astype(leaf.dtype) for k, leaf in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree_def, out)


def flags_by_path(tree, predicate):
    return dict(zip(masks.paths(tree), masks.prunable_flags(tree, predicate)))


def test_prunable_flags_by_path_not_ndim():
    params = init_params()
    flags = flags_by_path(params, is_kernel)
    assert flags[("conv", "kernel")] is True and flags[("fc1", "kernel")] is True
    assert flags[("conv", "bias")] is False and flags[("bn", "scale")] is False
    # With a seed axis a bias is 2-D, yet the path decides: flags are identical.
    assert flags_by_path(stacked_params(), is_kernel) == flags
    assert masks.paths(params)[0][0] in {"bn", "conv", "fc1", "fc2"}
    assert masks.path_str(("fc1", "kernel")) == "fc1/kernel"


@flax.struct.dataclass
class Holder:
    weights: dict
    extra: tuple


def test_path_names_from_jax_keypaths():
    holder = Holder(weights={"w": jnp.zeros(1)}, extra=(jnp.zeros(1),))
    tree = {"a": {"b": [jnp.zeros(2), jnp.ones(3)]}, "s": holder}
    keypaths = [kp for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    # DictKey, SequenceKey and GetAttrKey (flax struct dataclasses) entries all become names.
    expected = ["a/b/0", "a/b/1", "s/weights/w", "s/extra/0"]
    assert [masks.path_str(kp) for kp in keypaths] == expected
    assert [masks.path_str(p) for p in masks.paths(tree)] == expected
    assert masks.leaf_path(keypaths[2]) == ("s", "weights", "w")
    assert masks.leaf_path(("s", "weights", "w")) == ("s", "weights", "w")
    assert masks.path_str(("a", "b", 0)) == "a/b/0"
    assert masks.path_str(()) == ""
    assert [masks.path_str(kp) for kp in keypaths] == [
        jax.tree_util.keystr(kp, simple=True, separator="/") for kp in keypaths
    ]


def masked(params, mask):
    masks.check_like(mask, params)
    return masks.apply_mask(params, mask)


def test_ones_like_and_masking():
    params = init_params()
    ones = masks.ones_like(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(ones, params)
    chex.assert_trees_all_equal(masked(params, ones), params)
    mask = random_mask(params, jax.random.key(1))
    applied = masked(params, mask)
    for p, m, a in zip(*(jax.tree_util.tree_leaves(t) for t in (params, mask, applied))):
        np.testing.assert_array_equal(np.asarray(a)[np.asarray(m) == 0], 0.0)
        np.testing.assert_array_equal(np.asarray(a)[np.asarray(m) == 1], np.asarray(p)[np.asarray(m) == 1])
    # A bool or int mask is cast to each leaf's dtype; bf16 leaves stay bf16 with exact zeros.
    bf16 = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)
    bool_mask = jax.tree_util.tree_map(lambda m: np.asarray(m) != 0, mask)
    for a, m in zip(jax.tree_util.tree_leaves(masks.apply_mask(bf16, bool_mask)), jax.tree_util.tree_leaves(mask)):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32)[np.asarray(m) == 0], 0.0)
    jitted = jax.jit(masks.apply_mask)(params, mask)
    chex.assert_trees_all_equal(jitted, applied)


def test_count_and_densities_match_numpy():
    params = init_params()
    mask = random_mask(params, jax.random.key(2))
    kept, total = masks.count(mask, is_kernel)
    kernels = [np.asarray(mask[name]["kernel"]) for name in ("conv", "fc1", "fc2")]
    assert int(kept) == sum(int(k.sum()) for k in kernels)
    assert total == sum(k.size for k in kernels)
    np.testing.assert_allclose(float(masks.density(mask, is_kernel)), int(kept) / total, rtol=1e-6)
    layer = masks.layer_densities(mask, is_kernel)
    assert set(layer) == {"conv/kernel", "fc1/kernel", "fc2/kernel"}
    np.testing.assert_allclose(float(layer["fc1/kernel"]), kernels[1].mean(), rtol=1e-6)
    # The per-leaf flags give the same answer as the predicate.
    flagged = zip(jax.tree_util.tree_leaves(mask), masks.prunable_flags(mask, is_kernel))
    assert sum(int(np.sum(np.asarray(m) != 0)) for m, flag in flagged if flag) == int(kept)


def test_densities_per_seed():
    params = stacked_params(3)
    mask = random_mask(params, jax.random.key(3), keep=0.5)
    per_seed = masks.density(mask, is_kernel, seed_axis=True)
    chex.assert_shape(per_seed, (3,))
    via_vmap = jax.vmap(lambda m: masks.density(m, is_kernel))(mask)
    loop = [float(masks.density(jax.tree_util.tree_map(lambda x: x[s], mask), is_kernel)) for s in range(3)]
    np.testing.assert_allclose(per_seed, loop, rtol=1e-6)
    np.testing.assert_allclose(via_vmap, loop, rtol=1e-6)
    assert len(set(loop)) > 1  # different masks per seed really differ
    layer = masks.layer_densities(mask, is_kernel, seed_axis=True)
    chex.assert_shape(layer["fc2/kernel"], (3,))


def nested(new, old):
    """Every weight kept by ``new`` is kept by ``old`` (pruning never revives)."""
    pairs = zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old))
    return all(np.all((np.asarray(n) == 0) | (np.asarray(o) != 0)) for n, o in pairs)


def test_nested_masks_count_fewer_per_layer():
    params = init_params()
    old = random_mask(params, jax.random.key(4))
    new = jax.tree_util.tree_map(lambda m, r: m * r, old, random_mask(params, jax.random.key(5)))
    assert nested(new, old)
    assert not nested(old, new)
    masks.check_like(new, old, "new mask")
    old_counts, new_counts = masks.layer_counts(old, is_kernel), masks.layer_counts(new, is_kernel)
    assert all(int(new_counts[k][0]) <= int(c) for k, (c, _) in old_counts.items())
    assert int(masks.count(new, is_kernel)[0]) < int(masks.count(old, is_kernel)[0])


def test_exclude_regex():
    pred = masks.exclude(is_kernel, [r"^fc2/"])
    assert pred(("fc1", "kernel")) and not pred(("fc2", "kernel")) and not pred(("fc1", "bias"))
    params = init_params()
    mask = masks.ones_like(params)
    assert masks.count(mask, pred)[1] == params["conv"]["kernel"].size + params["fc1"]["kernel"].size
    with pytest.raises(masks.MaskError, match="bad ignore regex"):
        masks.exclude(is_kernel, ["("])


def test_bad_inputs_raise():
    params = init_params()
    mask = masks.ones_like(params)
    with pytest.raises(masks.MaskError, match="structure"):
        masked(params, {"fc1": mask["fc1"]})
    bad_shape = jax.tree_util.tree_map(lambda x: x, mask)
    bad_shape["fc1"]["kernel"] = jnp.ones((2, 2))
    with pytest.raises(masks.MaskError, match="fc1/kernel"):
        masked(params, bad_shape)
    with pytest.raises(masks.MaskError, match="no prunable"):
        masks.count(mask, lambda path: False)
    with pytest.raises(masks.MaskError, match="callable over path tuples"):
        masks.count(mask, {"fc1": True})
