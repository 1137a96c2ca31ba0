"""Model zoo: parameter counts, prunable sets, BatchNorm semantics, initialisation, vmap over seeds,
mixed precision (bfloat16 compute over float32 parameters and statistics)."""

from __future__ import annotations

import dataclasses
import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax.config import ModelConfig
from sdd_jax.engine import has_convolutions
from sdd_jax.models import (
    FAMILIES,
    MLP,
    MODEL_NAMES,
    VGG,
    BatchNorm,
    Family,
    ResNet,
    build_model,
    family_of,
    family_of_module,
    is_convolutional,
    model_names,
    prunable_predicate,
    register_family,
)
from sdd_jax.models.init import bias_initializer
from sdd_jax.rng import seed_keys, stream_key


def _input(name: str, batch: int = 2) -> jax.Array:
    shape = (batch, 28, 28, 1) if name in ("lenet_300_100", "mlp") else (batch, 32, 32, 3)
    return jnp.zeros(shape, jnp.float32)


@functools.cache
def _abstract_params(name: str, num_classes: int = 10, **cfg) -> dict:
    """Parameter shapes only (``jax.eval_shape``): nothing is allocated or compiled."""
    model = build_model(ModelConfig(name=name, **cfg), num_classes)
    variables = jax.eval_shape(lambda k: model.init(k, _input(name), train=False), jax.random.key(0))
    return variables["params"]


def _leaves(params) -> list[tuple[tuple[str, ...], jax.ShapeDtypeStruct]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [(tuple(k.key for k in path), leaf) for path, leaf in flat]


def _size(leaves) -> int:
    return int(sum(math.prod(leaf.shape) for _, leaf in leaves))


def _prunable_paths(name: str, params) -> set[tuple[str, ...]]:
    predicate = prunable_predicate(ModelConfig(name=name))
    return {path for path, _ in _leaves(params) if predicate(path)}


# ----------------------------------------------------------------------------- parameter counts


def test_lenet_300_100_count():
    params = _abstract_params("lenet_300_100")
    assert _size(_leaves(params)) == 266_610
    assert set(params) == {"fc1", "fc2", "out"}
    chex.assert_shape(params["fc1"]["kernel"], (784, 300))


def test_mlp_widths_and_multiplier():
    params = _abstract_params("mlp", widths=(50, 20), width_multiplier=2)
    widths = [784, 100, 40, 10]
    expected = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    assert _size(_leaves(params)) == expected
    assert set(params) == {"fc1", "fc2", "out"}


def test_resnet18_count():
    leaves = _leaves(_abstract_params("resnet18"))
    assert _size(leaves) == 11_173_962
    assert _size([(p, x) for p, x in leaves if p[-1] == "kernel" and len(x.shape) == 4]) == 11_159_232


def test_resnet10_count():
    """One BasicBlock per stage: ResNet-18 less the second block of each stage, counted by hand
    (3x3 convolutions, two BatchNorm parameters a channel)."""
    second_blocks = sum(2 * (9 * c * c + 2 * c) for c in (64, 128, 256, 512))
    leaves = _leaves(_abstract_params("resnet10"))
    assert _size(leaves) == 11_173_962 - second_blocks == 4_903_242
    kernels = [(p, x) for p, x in leaves if p[-1] == "kernel" and len(x.shape) == 4]
    assert _size(kernels) == 11_159_232 - sum(2 * 9 * c * c for c in (64, 128, 256, 512))


# torchvision's ImageNet counts (resnet34 21,797,672; resnet50 25,557,032; resnet101 44,549,160;
# resnet152 60,192,808) minus the 7x7 stem (9,408) and 1000-way fc, plus the 3x3 stem (1,728)
# and the classes-way fc.
@pytest.mark.parametrize(
    "name, classes, torchvision_count, features",
    [
        ("resnet34", 10, 21_797_672, 512),
        ("resnet50", 10, 25_557_032, 2048),
        ("resnet101", 200, 44_549_160, 2048),
        ("resnet152", 10, 60_192_808, 2048),
    ],
)
def test_deeper_resnet_counts(name, classes, torchvision_count, features):
    expected = torchvision_count - 9_408 + 1_728 - (features * 1000 + 1000) + features * classes + classes
    assert _size(_leaves(_abstract_params(name, classes))) == expected


def test_resnet_width_multiplier_scales_channels():
    base = _leaves(_abstract_params("resnet18"))
    wide = _leaves(_abstract_params("resnet18", width_multiplier=2))
    conv = lambda leaves, stem: _size(  # noqa: E731
        [(p, x) for p, x in leaves if len(x.shape) == 4 and (p[0] == "conv_stem") == stem]
    )
    assert conv(wide, stem=True) == 2 * conv(base, stem=True)  # 3 input channels stay 3
    assert conv(wide, stem=False) == 4 * conv(base, stem=False)


def test_vgg16_count():
    params = _abstract_params("vgg16")
    leaves = _leaves(params)
    conv_kernels = [(p, x) for p, x in leaves if len(x.shape) == 4]
    assert _size(conv_kernels) == 14_710_464
    assert len(conv_kernels) == 13
    chex.assert_shape(params["fc"]["kernel"], (512, 10))
    channels = sum(x.shape[-1] for _, x in conv_kernels)
    # + conv biases + BN scale/bias + classifier
    assert _size(leaves) == 14_710_464 + 3 * channels + 512 * 10 + 10


# ----------------------------------------------------------------------------- prunable sets


def test_prunable_sets_lenet_and_mlp():
    assert _prunable_paths("lenet_300_100", _abstract_params("lenet_300_100")) == {
        ("fc1", "kernel"),
        ("fc2", "kernel"),
    }
    params = _abstract_params("mlp", widths=(20, 10, 5))
    assert _prunable_paths("mlp", params) == {("fc1", "kernel"), ("fc2", "kernel"), ("fc3", "kernel")}


def test_prunable_set_resnet18():
    params = _abstract_params("resnet18")
    prunable = _prunable_paths("resnet18", params)
    expected = {("conv_stem", "kernel"), ("fc", "kernel")}
    for stage in range(1, 5):
        for index in range(2):
            expected |= {(f"layer{stage}_{index}", f"conv{i}", "kernel") for i in (1, 2)}
        if stage > 1:
            expected.add((f"layer{stage}_0", "shortcut_conv", "kernel"))
    assert prunable == expected
    leaves = dict(_leaves(params))
    assert _size([(p, leaves[p]) for p in prunable]) == 11_159_232 + 512 * 10


def test_prunable_set_vgg16():
    prunable = _prunable_paths("vgg16", _abstract_params("vgg16"))
    assert prunable == {(f"conv{i}", "kernel") for i in range(1, 14)}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_prunable_rule_every_model(name):
    params = _abstract_params(name)
    out = "out" if name in ("lenet_300_100", "mlp") else "fc"  # the classifier's module name
    assert out in params
    prunable = _prunable_paths(name, params)
    for path, leaf in _leaves(params):
        is_kernel = path[-1] == "kernel"
        in_output = path[0] == out
        expected = is_kernel and (not in_output or name.startswith("resnet"))
        assert (path in prunable) == expected, path
        if path in prunable:
            assert len(leaf.shape) in (2, 4)


def test_predicate_path_forms_and_batched_tree():
    cfg = ModelConfig(name="resnet18")
    predicate = prunable_predicate(cfg)
    assert predicate(("layer2_0", "shortcut_conv", "kernel"))
    assert predicate(("params", "layer2_0", "shortcut_conv", "kernel"))
    for path in [
        ("layer2_0", "shortcut_bn", "scale"),
        ("layer1_0", "bn1", "bias"),
        ("fc", "bias"),
        ("bn_stem", "scale"),
        ("mystery", "kernel"),
        ("layer1_0", "conv_stem", "kernel"),
        ("kernel",),
        (),
    ]:
        assert not predicate(path), path
    assert not prunable_predicate(ModelConfig(name="vgg11"))(("fc", "kernel"))
    assert not prunable_predicate(ModelConfig(name="lenet_300_100"))(("out", "kernel"))

    model = MLP(widths=(8,), num_classes=3)
    x = jnp.zeros((2, 5))
    unbatched = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
    batched = jax.eval_shape(jax.vmap(lambda k: model.init(k, x, train=False)), seed_keys([0, 1], "init"))
    assert batched["params"]["fc1"]["kernel"].shape == (2, 5, 8)
    mlp_cfg = ModelConfig(name="mlp")
    mlp_predicate = prunable_predicate(mlp_cfg)

    def flags(tree):  # the predicate on jax key paths, as the tree gives them
        return jax.tree_util.tree_map_with_path(lambda keypath, _: mlp_predicate(keypath), tree)

    expected = {"fc1": {"kernel": True, "bias": False}, "out": {"kernel": False, "bias": False}}
    assert flags(unbatched["params"]) == expected
    assert flags(batched["params"]) == expected
    assert flags({"params": batched["params"]}) == {"params": expected}


# ----------------------------------------------------------------------------- errors


def test_unknown_model_lists_valid_names():
    for call in (
        lambda: build_model(ModelConfig(name="resnet20"), 10),
        lambda: prunable_predicate(ModelConfig(name="resnet20")),
    ):
        with pytest.raises(ValueError, match="resnet20") as info:
            call()
        assert all(name in str(info.value) for name in MODEL_NAMES)


def test_bad_arguments_raise():
    # Model options (widths, width_multiplier, bias_init, dtype names) are the rules of
    # sdd_jax.validate (tests/test_config.py); the builders check what no config holds.
    with pytest.raises(ValueError, match="num_classes"):
        build_model(ModelConfig(name="vgg11"), 0)
    with pytest.raises(ValueError, match="bias_init"):
        MLP(widths=(4,), bias_init="ones").init(jax.random.key(0), jnp.zeros((1, 3)), train=False)
    with pytest.raises(ValueError, match="too small"):
        jax.eval_shape(
            lambda: build_model(ModelConfig(name="vgg11"), 10).init(
                jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False
            )
        )
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(
            lambda: build_model(ModelConfig(name="resnet18"), 10).init(
                jax.random.key(0), jnp.zeros((1, 32, 32)), train=False
            )
        )


# ----------------------------------------------------------------------------- registry


def test_registry_holds_the_built_in_families():
    assert MODEL_NAMES[:12] == (
        "lenet_300_100",
        "mlp",
        "resnet10",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
    )
    assert model_names() == MODEL_NAMES and list(FAMILIES)[:3] == ["mlp", "resnet", "vgg"]
    for name in MODEL_NAMES[:12]:
        family = family_of(name)
        model = build_model(ModelConfig(name=name, width_multiplier=0.125), 10)
        assert isinstance(model, family.modules) and family_of_module(model) is family
        conv = not name.startswith(("lenet", "mlp"))
        assert family.convolutional is conv and is_convolutional(ModelConfig(name=name)) is conv
        assert has_convolutions(model) is conv  # the engine's auto choices read the family's flag


def test_register_family_refuses_taken_names_and_unknown_modules_have_no_family():
    mlp_family = family_of("mlp")
    with pytest.raises(ValueError, match="already registered"):
        register_family(mlp_family)
    with pytest.raises(ValueError, match="needs new model names"):
        register_family(dataclasses.replace(mlp_family, name="mlp_again"))
    assert "mlp_again" not in FAMILIES

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return nn.Dense(2)(x)

    assert family_of_module(Linear()) is None
    with pytest.raises(ValueError, match="no registered model family"):
        has_convolutions(Linear())
    assert isinstance(mlp_family, Family)


# ----------------------------------------------------------------------------- output shapes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_abstract(name):
    classes = 200 if name == "resnet101" else 7
    model = build_model(ModelConfig(name=name), classes)
    x = _input(name, batch=3)

    def run(key):
        variables = model.init(key, x, train=False)
        train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return variables, train_out, updates, model.apply(variables, x, train=False)

    variables, train_out, updates, eval_out = jax.eval_shape(run, jax.random.key(0))
    chex.assert_shape([train_out, eval_out], (3, classes))
    chex.assert_type([train_out, eval_out], jnp.float32)
    has_bn = name not in ("lenet_300_100", "mlp")
    assert ("batch_stats" in variables) == has_bn
    if has_bn:
        chex.assert_trees_all_equal_shapes(updates["batch_stats"], variables["batch_stats"])


# Concrete runs use small stand-ins and share compiled functions (compiling random
# initialisers dominates the cost on CPU); the full-size models are checked abstractly above.
# The small ResNet has a block without (layer1_0) and one with (layer2_0) a projection shortcut.
SMALL_RESNET = ResNet("basic", (1, 1), num_classes=5, width=8)
RESNET_BATCH = (4, 8, 8, 3)
# One wide conv layer: 27,648 kernel weights, 1,024 BN scales and conv biases; 32 -> 2 -> 1.
WIDE_VGG = VGG(plan=(1024, "M", "M", "M", "M"), num_classes=10, bias_init="torch_default")
LENET = build_model(ModelConfig(name="lenet_300_100"), 10)

resnet_init = jax.jit(lambda key: SMALL_RESNET.init(key, jnp.zeros(RESNET_BATCH), train=False))
resnet_train = jax.jit(lambda v, x: SMALL_RESNET.apply(v, x, train=True, mutable=["batch_stats"]))
resnet_eval = jax.jit(lambda v, x: SMALL_RESNET.apply(v, x, train=False))
lenet_init = jax.jit(lambda key: LENET.init(key, jnp.zeros((1, 28, 28, 1)), train=False))


@functools.cache
def wide_vgg_variables():
    init = jax.jit(lambda key: WIDE_VGG.init(key, jnp.zeros((1, 32, 32, 3)), train=False))
    return init(stream_key(0, "init"))


def normal(seed: int, shape, loc: float = 0.0, scale: float = 1.0) -> jax.Array:
    """Test inputs from NumPy (no extra compiled random programs)."""
    return jnp.asarray(np.random.default_rng(seed).normal(loc, scale, shape), jnp.float32)


def test_concrete_outputs_small_batches():
    x = normal(1, RESNET_BATCH)
    variables = resnet_init(jax.random.key(0))
    logits, updates = resnet_train(variables, x)
    chex.assert_shape(logits, (4, 5))
    chex.assert_tree_all_finite((logits, updates, resnet_eval(variables, x)))

    images = normal(2, (4, 28, 28, 1))
    out = LENET.apply(lenet_init(jax.random.key(0)), images, train=True)
    chex.assert_shape(out, (4, 10))
    chex.assert_tree_all_finite(out)

    vgg_vars = wide_vgg_variables()
    chex.assert_shape(vgg_vars["params"]["fc"]["kernel"], (1024, 10))  # 32 -> 2 -> avg pool -> 1
    out, _ = jax.jit(lambda v, x: WIDE_VGG.apply(v, x, train=True, mutable=["batch_stats"]))(
        vgg_vars, normal(4, (2, 32, 32, 3))
    )
    chex.assert_shape(out, (2, 10))
    chex.assert_tree_all_finite(out)

    signals = jnp.zeros((4, 40))  # MNIST-1D shaped inputs are flattened as they come
    mlp = build_model(ModelConfig(name="mlp", widths=(32,)), 10)
    out = jax.eval_shape(lambda k: mlp.init_with_output(k, signals, train=False)[0], jax.random.key(0))
    chex.assert_shape(out, (4, 10))


# ----------------------------------------------------------------------------- initialisation


def _assert_kaiming_normal(kernel, fan_in):
    w = np.asarray(kernel, np.float64).ravel()
    target = math.sqrt(2.0 / fan_in)
    assert abs(w.std() / target - 1.0) < 0.02
    assert abs(w.mean()) < 0.03 * target
    # untruncated normal: ~4.55% of draws lie beyond 2 std (a truncated normal has none)
    assert 0.040 < np.mean(np.abs(w) > 2 * target) < 0.051


def test_kernel_init_statistics():
    lenet_params = lenet_init(jax.random.key(5))["params"]
    _assert_kaiming_normal(lenet_params["fc1"]["kernel"], 784)  # 235,200 weights
    _assert_kaiming_normal(wide_vgg_variables()["params"]["conv1"]["kernel"], 3 * 3 * 3)


def test_batchnorm_and_bias_init():
    variables = resnet_init(jax.random.key(3))
    leaves = _leaves(variables["params"])
    biases = [x for p, x in leaves if p[-1] == "bias"]
    assert len(biases) == 7  # 6 BatchNorms + fc
    lenet_params = lenet_init(jax.random.key(5))["params"]
    for bias in biases + [lenet_params[name]["bias"] for name in ("fc1", "fc2", "out")]:
        chex.assert_trees_all_equal(bias, jnp.zeros_like(bias))
    assert np.all(np.asarray(bias_initializer("zeros", 27)(jax.random.key(0), (5,))) == 0)
    stats = _leaves(variables["batch_stats"])
    assert {p[-1] for p, _ in stats} == {"mean", "var"} and len(stats) == 2 * 6
    for path, value in stats:
        chex.assert_trees_all_equal(value, jnp.full_like(value, 0.0 if path[-1] == "mean" else 1.0))

    vgg_params = wide_vgg_variables()["params"]
    scales = np.asarray(vgg_params["bn1"]["scale"])
    assert scales.min() >= 0.0 and scales.max() < 1.0
    assert abs(scales.mean() - 0.5) < 0.04 and abs(scales.std() - math.sqrt(1 / 12)) < 0.03
    chex.assert_trees_all_equal(vgg_params["bn1"]["bias"], jnp.zeros(1024))  # BN bias stays 0

    # bias_init="torch_default": U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std bound/sqrt(3)
    conv_bias = np.asarray(vgg_params["conv1"]["bias"])
    assert np.all(np.abs(conv_bias) <= 1 / math.sqrt(27))
    assert abs(conv_bias.std() * math.sqrt(27) - 1 / math.sqrt(3)) < 0.05
    fc_bias = np.asarray(vgg_params["fc"]["bias"])
    assert np.all(np.abs(fc_bias) <= 1 / math.sqrt(1024)) and np.any(fc_bias != 0)


def test_init_is_a_function_of_the_key():
    a, b, c = (lenet_init(stream_key(seed, "init")) for seed in (0, 0, 1))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a["params"]["fc1"]["kernel"], c["params"]["fc1"]["kernel"])


# ----------------------------------------------------------------------------- BatchNorm


BN_SHAPE = (8, 4, 4, 3)


def _bn_apply(use_running_average: bool, unbiased: bool = True, flax_module: bool = False):
    if flax_module:
        module = nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, epsilon=1e-5)
    else:
        module = BatchNorm(use_running_average=use_running_average, unbiased_running_var=unbiased)
    return jax.jit(lambda v, x: module.apply(v, x, mutable=["batch_stats"]))


def _bn_variables(x):
    return jax.jit(BatchNorm(use_running_average=False).init)(jax.random.key(0), x)


def test_batchnorm_follows_pytorch():
    x = normal(7, BN_SHAPE, loc=3.0, scale=2.0)
    variables = _bn_variables(x)
    # initialising does not move the running averages
    chex.assert_trees_all_equal(variables["batch_stats"], {"mean": jnp.zeros(3), "var": jnp.ones(3)})
    old_mean = jnp.array([0.5, -1.0, 2.0])
    old_var = jnp.array([1.5, 0.25, 4.0])
    variables = {"params": variables["params"], "batch_stats": {"mean": old_mean, "var": old_var}}
    y, updates = _bn_apply(False)(variables, x)

    xs = np.asarray(x, np.float64).reshape(-1, 3)
    scale = np.asarray(variables["params"]["scale"], np.float64)
    mean, var = xs.mean(0), xs.var(0)
    expected_y = (np.asarray(x, np.float64) - mean) / np.sqrt(var + 1e-5) * scale
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    n = xs.shape[0]
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.9 * old_mean + 0.1 * mean, rtol=1e-5)
    expected_var = 0.9 * old_var + 0.1 * var * n / (n - 1)  # unbiased batch variance
    np.testing.assert_allclose(updates["batch_stats"]["var"], expected_var, rtol=1e-5)

    new = {"params": variables["params"], **updates}
    y_eval, unchanged = _bn_apply(True)(new, x)
    chex.assert_trees_all_equal(unchanged, updates)
    ra_mean = np.asarray(updates["batch_stats"]["mean"], np.float64)
    ra_var = np.asarray(updates["batch_stats"]["var"], np.float64)
    np.testing.assert_allclose(
        y_eval, (np.asarray(x, np.float64) - ra_mean) / np.sqrt(ra_var + 1e-5) * scale, rtol=1e-5, atol=1e-5
    )


def test_batchnorm_biased_option_matches_flax():
    x = normal(7, BN_SHAPE, loc=3.0, scale=2.0)
    variables = _bn_variables(x)
    y_ours, up_ours = _bn_apply(False, unbiased=False)(variables, x)
    y_flax, up_flax = _bn_apply(False, flax_module=True)(variables, x)
    chex.assert_trees_all_close((y_ours, up_ours), (y_flax, up_flax), rtol=1e-5, atol=1e-5)
    new = {"params": variables["params"], **up_ours}
    chex.assert_trees_all_close(
        _bn_apply(True)(new, x)[0], _bn_apply(True, flax_module=True)(new, x)[0], rtol=1e-5, atol=1e-5
    )
    # the default differs from flax exactly by the n/(n-1) factor on the variance update
    _, up_torch = _bn_apply(False)(variables, x)
    n = x.size // 3
    np.testing.assert_allclose(
        np.asarray(up_torch["batch_stats"]["var"]) - 0.9,
        (np.asarray(up_flax["batch_stats"]["var"]) - 0.9) * n / (n - 1),
        rtol=1e-5,
    )


def test_batchnorm_train_vs_eval_in_a_model():
    x = normal(8, RESNET_BATCH, loc=1.0)
    variables = resnet_init(jax.random.key(0))
    logits, updates = resnet_train(variables, x)
    stats = updates["batch_stats"]

    # bn_stem sees the stem conv output (3x3, padding 1, no bias), computed here independently
    stem = jax.lax.conv_general_dilated(
        x,
        variables["params"]["conv_stem"]["kernel"],
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    stem = np.asarray(stem, np.float64).reshape(-1, 8)
    n = stem.shape[0]
    np.testing.assert_allclose(stats["bn_stem"]["mean"], 0.1 * stem.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["bn_stem"]["var"], 0.9 + 0.1 * stem.var(0) * n / (n - 1), rtol=1e-4)
    # every BatchNorm (stem, 2 + 2 in the blocks, 1 shortcut) moved both running averages
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), stats, variables["batch_stats"])
    assert len(jax.tree.leaves(moved)) == 2 * 6 and all(jax.tree.leaves(moved))

    # train mode normalises with batch statistics: an example's output depends on its batch
    other = x.at[2:].set(5.0 * x[2:] - 2.0)
    assert not np.allclose(resnet_train(variables, other)[0][:2], logits[:2], atol=1e-4)
    # eval mode uses the running averages: per example, independent of the rest of the batch
    eval_out = resnet_eval(variables, x)
    chex.assert_trees_all_close(resnet_eval(variables, other)[:2], eval_out[:2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(eval_out, logits, atol=1e-4)
    updated = {"params": variables["params"], "batch_stats": stats}
    assert not np.allclose(resnet_eval(updated, x), eval_out, atol=1e-4)


# ----------------------------------------------------------------------------- vmap over seeds


def test_vmap_over_seeds_matches_loop():
    keys = seed_keys([0, 1], "init")
    xs = normal(9, (2, *RESNET_BATCH))

    batched_vars = jax.jit(jax.vmap(resnet_init))(keys)
    batched_out, batched_updates = jax.jit(jax.vmap(resnet_train))(batched_vars, xs)
    for i in range(2):
        variables = resnet_init(keys[i])
        out, updates = resnet_train(variables, xs[i])
        pick = lambda tree: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
        chex.assert_trees_all_close(pick(batched_vars), variables, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(pick(batched_out), out, rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(pick(batched_updates), updates, rtol=1e-4, atol=1e-5)
    # each seed keeps its own statistics
    differs = jax.tree.map(lambda a: not np.allclose(a[0], a[1]), batched_updates["batch_stats"])
    assert all(jax.tree.leaves(differs))


# ----------------------------------------------------------------------------- mixed precision

# Thin stand-ins of each family built through the config, as the runner builds them.
THIN = {
    "mlp": (ModelConfig(name="mlp", widths=(16,)), (4, 6, 6, 1)),
    "resnet10": (ModelConfig(name="resnet10", width_multiplier=0.125), (4, 8, 8, 3)),
    "vgg11": (ModelConfig(name="vgg11", width_multiplier=0.0625), (2, 32, 32, 3)),
}


def _with_dtype(cfg: ModelConfig, dtype: str | None) -> ModelConfig:
    return cfg if dtype is None else dataclasses.replace(cfg, dtype=dtype)


def _matmul_dtypes(jaxpr) -> set[str]:
    """Operand dtypes of every dot/conv in ``jaxpr`` and the jaxprs nested in its equations."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found |= {str(v.aval.dtype) for v in eqn.invars}
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found |= _matmul_dtypes(inner)
    return found


def test_unknown_dtype_names_the_setting_and_the_choices():
    assert ModelConfig().dtype == "float32"
    with pytest.raises(ValueError, match=r"model\.dtype 'float16'; valid: float32, bfloat16"):
        build_model(ModelConfig(dtype="float16"), 10)


@pytest.mark.parametrize("name", list(THIN))
def test_initialisation_is_the_same_in_every_dtype(name):
    """Same init key -> the same float32 parameters and statistics, whatever the compute dtype;
    the default is float32."""
    cfg, shape = THIN[name]
    x = normal(10, shape)
    variables = {  # jitted: one compile per dtype instead of hundreds of op-by-op dispatches
        dtype: jax.jit(functools.partial(build_model(_with_dtype(cfg, dtype), 10).init, train=False))(
            stream_key(0, "init"), x
        )
        for dtype in (None, "float32", "bfloat16")
    }
    chex.assert_type(jax.tree.leaves(variables[None]), jnp.float32)
    chex.assert_trees_all_equal(variables[None], variables["float32"])
    chex.assert_trees_all_equal(variables[None], variables["bfloat16"])


def test_float32_default_is_the_plain_float32_network():
    """The default LeNet forward is, bit for bit, the float32 matmul chain (no cast anywhere)."""
    params = lenet_init(stream_key(0, "init"))["params"]
    x = normal(11, (5, 28, 28, 1))
    h = x.reshape(5, -1)
    for layer in ("fc1", "fc2"):
        h = jax.nn.relu(jnp.dot(h, params[layer]["kernel"]) + params[layer]["bias"])
    expected = jnp.dot(h, params["out"]["kernel"]) + params["out"]["bias"]
    with jax.disable_jit():
        got = LENET.apply({"params": params}, x, train=False)
    chex.assert_trees_all_equal(got, expected)


@pytest.mark.parametrize("name", list(THIN))
def test_bfloat16_computes_in_bfloat16_and_returns_float32_logits(name):
    cfg, shape = THIN[name]
    x = normal(12, shape)
    fp32, bf16 = (build_model(_with_dtype(cfg, d), 10) for d in ("float32", "bfloat16"))
    variables = jax.jit(functools.partial(fp32.init, train=False))(stream_key(1, "init"), x)
    forward = {m: jax.jit(lambda v, x, m=m: m.apply(v, x, train=False)) for m in (fp32, bf16)}

    assert _matmul_dtypes(jax.make_jaxpr(forward[bf16])(variables, x).jaxpr) == {"bfloat16"}
    assert _matmul_dtypes(jax.make_jaxpr(forward[fp32])(variables, x).jaxpr) == {"float32"}
    logits_32, logits_16 = forward[fp32](variables, x), forward[bf16](variables, x)
    chex.assert_type([logits_32, logits_16], jnp.float32)
    assert np.any(np.asarray(logits_16) != np.asarray(logits_32))  # rounded somewhere ...
    scale = float(jnp.max(jnp.abs(logits_32)))
    chex.assert_trees_all_close(logits_16, logits_32, rtol=0.05, atol=0.05 * scale)  # ... to bf16 precision
    if name != "mlp":
        _, updates = jax.jit(lambda v, x: bf16.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
        chex.assert_type(jax.tree.leaves(updates), jnp.float32)


def test_batchnorm_statistics_are_float32_under_bfloat16():
    """bfloat16 in and out, but mean/variance (and the running averages) from the float32 values
    of the input: bfloat16 reductions would be off by about 2**-8 relative."""
    x16 = normal(13, BN_SHAPE, loc=3.0, scale=2.0).astype(jnp.bfloat16)
    x32 = x16.astype(jnp.float32)  # the same numbers
    variables = _bn_variables(x32)
    y16, up16 = jax.jit(
        lambda v, x: BatchNorm(use_running_average=False, dtype=jnp.bfloat16).apply(v, x, mutable=["batch_stats"])
    )(variables, x16)
    y32, up32 = _bn_apply(False)(variables, x32)
    chex.assert_type(y16, jnp.bfloat16)
    chex.assert_type(jax.tree.leaves(up16), jnp.float32)
    chex.assert_trees_all_close(up16, up32, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(y16, y32.astype(jnp.bfloat16))
