import chex
import flax.linen as nn
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


def test_prunable_tree_by_path_not_ndim():
    params = init_params()
    flags = masks.prunable_tree(params, is_kernel)
    assert flags["conv"]["kernel"] is True and flags["fc1"]["kernel"] is True
    assert flags["conv"]["bias"] is False and flags["bn"]["scale"] is False
    # With a seed axis a bias is 2-D, yet the path decides: flags are identical.
    assert masks.prunable_tree(stacked_params(), is_kernel) == flags
    assert masks.paths(params)[0][0] in {"bn", "conv", "fc1", "fc2"}
    assert masks.path_str(("fc1", "kernel")) == "fc1/kernel"


def test_ones_like_and_apply():
    params = init_params()
    ones = masks.ones_like(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(ones, params)
    chex.assert_trees_all_equal(masks.apply(params, ones), params)
    mask = random_mask(params, jax.random.key(1))
    applied = masks.apply(params, mask)
    for p, m, a in zip(*(jax.tree_util.tree_leaves(t) for t in (params, mask, applied))):
        np.testing.assert_array_equal(np.asarray(a)[np.asarray(m) == 0], 0.0)
        np.testing.assert_array_equal(np.asarray(a)[np.asarray(m) == 1], np.asarray(p)[np.asarray(m) == 1])


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
    # The bool tree gives the same answer as the predicate.
    assert int(masks.count(mask, masks.prunable_tree(params, is_kernel))[0]) == int(kept)


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


def test_is_nested():
    params = init_params()
    old = random_mask(params, jax.random.key(4))
    new = jax.tree_util.tree_map(lambda m, r: m * r, old, random_mask(params, jax.random.key(5)))
    assert bool(masks.is_nested(new, old))
    assert not bool(masks.is_nested(old, new))
    assert bool(jax.jit(masks.is_nested)(new, old))


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
        masks.apply(params, {"fc1": mask["fc1"]})
    bad_shape = jax.tree_util.tree_map(lambda x: x, mask)
    bad_shape["fc1"]["kernel"] = jnp.ones((2, 2))
    with pytest.raises(masks.MaskError, match="fc1/kernel"):
        masks.apply(params, bad_shape)
    with pytest.raises(masks.MaskError, match="no prunable"):
        masks.count(mask, lambda path: False)
    with pytest.raises(masks.MaskError, match="prunable tree structure"):
        masks.count(mask, {"fc1": True})
