"""Model zoo: build a flax module from a :class:`ModelConfig` and tell which weights are prunable.

Every model is called as ``model.apply(variables, x, train=...)`` on NHWC float32 inputs (MLPs
flatten any input shape) and returns logits; BN models also carry a ``batch_stats`` collection
(pass ``mutable=["batch_stats"]`` when ``train=True``). ``width_multiplier`` scales hidden widths
(MLPs) or channel counts (ResNets, VGGs). ``model.dtype`` is the compute dtype (``float32``, the
paper's, or ``bfloat16``): inputs are cast to it at the entry, parameters and BatchNorm statistics
are float32 whatever it is, and the logits are returned in float32.

Prunability is a name test on the parameter path (see :func:`prunable_predicate`): conv and dense
kernels, never biases or BatchNorm parameters, and never the output layer of LeNet/MLP and VGG
(OpenLTH excludes it there; its ResNets prune the classifier too).
"""

from __future__ import annotations

import re
from typing import Callable

import flax.linen as nn

from sdd_jax import masks
from sdd_jax.config import ModelConfig
from sdd_jax.models import resnet as _resnet
from sdd_jax.models import vgg as _vgg
from sdd_jax.models.init import BIAS_INITS, DTYPES, BatchNorm, compute_dtype
from sdd_jax.models.mlp import MLP, lenet_300_100, mlp
from sdd_jax.models.resnet import ResNet, resnet
from sdd_jax.models.vgg import VGG, vgg

MODEL_NAMES: tuple[str, ...] = (
    "lenet_300_100",
    "mlp",
    *(f"resnet{d}" for d in _resnet.DEPTHS),
    *(f"vgg{d}" for d in _vgg.PLANS),
)

__all__ = [
    "BIAS_INITS",
    "DTYPES",
    "MLP",
    "MODEL_NAMES",
    "VGG",
    "BatchNorm",
    "ResNet",
    "build_model",
    "lenet_300_100",
    "mlp",
    "prunable_predicate",
    "resnet",
    "vgg",
]


def _family(name: str) -> str:
    if name in ("lenet_300_100", "mlp"):
        return "mlp"
    if name in MODEL_NAMES:
        return "resnet" if name.startswith("resnet") else "vgg"
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")


def scaled(channels: int, multiplier: float) -> int:
    """``channels × multiplier``, rounded, at least 1 (fractional multipliers make thin test nets)."""
    return max(1, int(round(channels * multiplier)))


def build_model(model_cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The flax module named by ``model_cfg.name`` with ``num_classes`` outputs.

    ``model_cfg.bias_init`` and ``model_cfg.dtype`` are read when the config has them (defaults
    ``"zeros"`` and ``"float32"``).
    """
    family = _family(model_cfg.name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    mult = model_cfg.width_multiplier
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
        raise ValueError(f"model.width_multiplier must be a positive number, got {mult!r}")
    bias_init = getattr(model_cfg, "bias_init", "zeros")
    if bias_init not in BIAS_INITS:
        raise ValueError(f"unknown bias_init {bias_init!r}; valid: {', '.join(BIAS_INITS)}")
    dtype = compute_dtype(getattr(model_cfg, "dtype", "float32"))
    if family == "mlp":
        widths = (300, 100) if model_cfg.name == "lenet_300_100" else tuple(model_cfg.widths)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"model.widths must be positive integers, got {widths!r}")
        return mlp(tuple(scaled(w, mult) for w in widths), num_classes, bias_init, dtype)
    depth = int(model_cfg.name[len(family):])
    if family == "resnet":
        return resnet(depth, num_classes, mult, bias_init, dtype)
    return vgg(depth, num_classes, mult, bias_init, dtype)


# Which module names hold prunable kernels, per family (the output layer is excluded below).
_PRUNABLE_MODULE = {
    "mlp": re.compile(r"fc\d+"),
    "vgg": re.compile(r"conv\d+"),
    "resnet": re.compile(r"conv_stem|conv\d+|shortcut_conv|fc"),
}
_RESNET_BLOCK = re.compile(r"layer\d+_\d+")


def prunable_predicate(model_cfg: ModelConfig) -> Callable[[tuple[str, ...]], bool]:
    """A test on a parameter path, e.g. ``("layer1_0", "conv1", "kernel")`` -> True.

    The path indexes the unbatched ``params`` tree (a leading ``"params"`` key and
    ``jax.tree_util`` key objects are accepted too). True only for a ``kernel`` of a conv/dense
    module: ``fc1..fcK`` (LeNet/MLP), ``conv1..convN`` (VGG), ``conv_stem``, block
    ``conv1..3``/``shortcut_conv`` and ``fc`` (ResNet).
    """
    family = _family(model_cfg.name)
    module_re = _PRUNABLE_MODULE[family]

    def is_prunable(path: tuple) -> bool:
        keys = masks.leaf_path(path)
        if keys and keys[0] == "params":
            keys = keys[1:]
        if len(keys) < 2 or keys[-1] != "kernel" or not module_re.fullmatch(keys[-2]):
            return False
        if family == "resnet":
            # conv_stem/fc at top level; conv*/shortcut_conv inside a block.
            if len(keys) == 2:
                return keys[0] in ("conv_stem", "fc")
            in_block = len(keys) == 3 and bool(_RESNET_BLOCK.fullmatch(keys[0]))
            return in_block and keys[1] not in ("conv_stem", "fc")
        return len(keys) == 2

    return is_prunable

