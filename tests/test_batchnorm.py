"""BatchNorm numerics of a thin ResNet (stem and two BasicBlocks, 8 and 16 channels): statistics recomputed on one batch differ from
that batch's train-mode normalisation only by PyTorch's unbiased running variance, and bfloat16
compute keeps the statistics reduced and stored in float32 (its departure is activation rounding)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from thin_models import thin_resnet as thin_resnet_module

from sdd_jax.analysis import evaluation
from sdd_jax.models.init import BN_MOMENTUM, BatchNorm
from sdd_jax.train import Spec

MEAN, STD = (0.5,), (0.25,)


def thin_resnet(dtype=jnp.float32, batches=2, batch=4):
    model = thin_resnet_module(10, 8, dtype=dtype)
    images = jax.random.uniform(jax.random.key(0), (batches, batch, 16, 16, 3))
    variables = jax.jit(lambda x: thin_resnet_module(10, 8).init(jax.random.key(1), x, train=False))(images[0])
    spec = Spec(
        model=model,
        optimizer=optax.identity(),
        schedule=lambda s: 0.1,
        train_size=batches * batch,
        batch_size=batch,
        mean=MEAN,
        std=STD,
    )
    return spec, variables["params"], variables["batch_stats"], images


def normalised(x):
    return (x - MEAN[0]) / STD[0]


def bn_sizes(spec, variables, x):
    """Per BatchNorm layer (a batch_stats path), the number of values per channel it normalises."""
    _, state = jax.eval_shape(
        lambda v: spec.model.apply(
            v,
            x,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda m, _: isinstance(m, BatchNorm),
        ),
        variables,
    )
    flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    return {tuple(k.key for k in path[:-2]): int(np.prod(out.shape[:-1])) for path, out in flat}


def batch_statistics(model, params, x):
    """Each BatchNorm layer's (mean, biased variance ...) as it stores them from zero running stats."""
    zeros = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(1), x, train=False)["batch_stats"])
    _, new = model.apply({"params": params, "batch_stats": zeros}, x, train=True, mutable=["batch_stats"])
    return jax.tree.map(lambda t: t / (1.0 - BN_MOMENTUM), new["batch_stats"])


def layers(stats):
    """``{layer path: {"mean", "var"}}`` (float64 numpy) of a ``batch_stats`` tree."""
    out = {}
    for path, t in jax.tree_util.tree_flatten_with_path(stats)[0]:
        out.setdefault(tuple(k.key for k in path[:-1]), {})[path[-1].key] = np.asarray(t, np.float64)
    return out


def test_one_batch_recomputed_statistics_reproduce_train_mode_up_to_the_unbiased_running_variance():
    spec, params, stats, images = thin_resnet(batches=1)
    ones = jax.tree.map(jnp.ones_like, params)
    x = normalised(images[0])
    new = jax.jit(lambda p: evaluation.recompute_batch_stats(spec, p, stats, ones, images))(params)
    train = jax.jit(lambda v: spec.model.apply(v, x, train=True, mutable=["batch_stats"])[0])(
        {"params": params, "batch_stats": stats}
    )
    evaluate = jax.jit(lambda s: spec.model.apply({"params": params, "batch_stats": s}, x, train=False))
    recomputed = evaluate(new)
    # Training normalises with the biased batch variance; the running variance stores the unbiased one
    # (torch.nn.BatchNorm2d, and torch.optim.swa_utils.update_bn). Undo the n/(n-1) layer by layer:
    sizes = bn_sizes(spec, {"params": params, "batch_stats": stats}, x)
    assert len(sizes) == 6 and min(sizes.values()) == 4 * 8 * 8  # stem, 2 + 3 in the blocks; 8x8 maps last
    biased = jax.tree_util.tree_map_with_path(
        lambda path, t: (
            t * (sizes[tuple(k.key for k in path[:-1])] - 1) / sizes[tuple(k.key for k in path[:-1])]
            if path[-1].key == "var"
            else t
        ),
        new,
    )
    exact = evaluate(biased)
    scale = float(jnp.max(jnp.abs(train)))
    rounding = float(jnp.max(jnp.abs(exact - train)))
    assert rounding < 1e-5 * scale
    # the convention alone moves the logits well beyond rounding, most in the layers with few values
    assert float(jnp.max(jnp.abs(recomputed - train))) > 100 * rounding


def test_recomputed_statistics_are_the_cumulative_average_of_each_batchs_statistics():
    spec, params, stats, images = thin_resnet(batches=2)
    ones = jax.tree.map(jnp.ones_like, params)
    recompute = jax.jit(lambda x: evaluation.recompute_batch_stats(spec, params, stats, ones, x))
    both = recompute(images)
    first, second = recompute(images[:1]), recompute(images[1:])
    # torch's update_bn (momentum=None): each batch is normalised by its own statistics in train mode,
    # and the stored statistics are averaged, not pooled (no between-batch variance of the means)
    chex.assert_trees_all_close(both, jax.tree.map(lambda a, b: (a + b) / 2, first, second), rtol=1e-5, atol=1e-6)


def test_batch_norm_reduces_and_stores_bfloat16_activations_in_float32():
    # 32768 values per channel around 50: a bfloat16 sum or a bfloat16 variance would be off by >1e-3
    x = (50.0 + jax.random.normal(jax.random.key(0), (32, 32, 32, 4)) * jnp.arange(1, 5)).astype(jnp.bfloat16)
    layer = BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(1), x)
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    y, new = layer.apply({"params": variables["params"], "batch_stats": zeros}, x, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    chex.assert_trees_all_equal_dtypes(new["batch_stats"], {"mean": jnp.zeros(4), "var": jnp.zeros(4)})
    values = np.asarray(x, np.float64).reshape(-1, 4)
    n = values.shape[0]
    np.testing.assert_allclose(np.asarray(new["batch_stats"]["mean"]) / (1 - BN_MOMENTUM), values.mean(0), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(new["batch_stats"]["var"]) / (1 - BN_MOMENTUM), values.var(0, ddof=1), rtol=1e-4
    )
    assert n > 1


def test_bfloat16_statistics_of_a_thin_resnet_depart_by_activation_rounding_only():
    spec32, params, _, images = thin_resnet(batches=1, batch=8)
    x = normalised(images[0])
    f32 = jax.jit(lambda p: batch_statistics(spec32.model, p, x))(params)
    b16 = jax.jit(lambda p: batch_statistics(thin_resnet_module(10, 8, dtype=jnp.bfloat16), p, x))(params)
    chex.assert_trees_all_equal_dtypes(f32, b16)
    assert all(t.dtype == jnp.float32 for t in jax.tree.leaves(b16))
    ulp = 2.0**-8  # bfloat16's relative rounding
    worst_relative = 0.0
    for layer, a in layers(f32).items():
        b = layers(b16)[layer]
        sd = np.sqrt(a["var"])
        shift = np.abs(b["mean"] - a["mean"]) / sd  # in the layer's own units
        ratio = b["var"] / a["var"]
        # 32 values per channel in the last stage: the variance ratio carries their rounding noise
        assert shift.max() < 4 * ulp and np.abs(ratio - 1).max() < 16 * ulp, (layer, shift.max(), ratio)
        worst_relative = max(worst_relative, float(np.max(np.abs(b["mean"] - a["mean"]) / np.abs(a["mean"]))))
    # a channel whose mean is near zero makes the plain relative difference of the means look large
    assert worst_relative > 10 * ulp
