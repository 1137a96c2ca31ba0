"""CIFAR VGG-11/13/16/19 with BatchNorm, as OpenLTH's ``cifar_vgg``.

Each number of the plan is a 3x3 conv (padding 1, *with* bias) -> BN -> ReLU, ``"M"`` a 2x2
max-pool; then a 2x2 average pool, flatten and a dense classifier (512 -> classes for 32x32
inputs). Layers are ``conv1..convN``/``bn1..bnN`` in plan order and ``fc``; the conv kernels are
prunable, the output layer ``fc`` is not (OpenLTH lists it in ``output_layer_names``). Registers
the ``vgg`` family (model names ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from sdd_jax.models.init import BatchNorm, conv, dense
from sdd_jax.models.registry import Family, register_family

OUTPUT_LAYER = "fc"

PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """``plan``: channel counts and ``"M"`` (max-pool) markers.

    ``bias_init`` (``"zeros"`` or ``"torch_default"``, see :mod:`sdd_jax.models.init`) applies
    to the conv biases and the classifier's. ``dtype``: the compute dtype (float32 parameters and
    BN statistics, float32 logits).
    """

    plan: Sequence[int | str]
    num_classes: int = 10
    bias_init: str = "zeros"
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"VGG expects NHWC inputs, got shape {x.shape}")
        height, width = x.shape[1:3]
        x = x.astype(self.dtype)
        index = 0
        for spec in self.plan:
            if spec == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                index += 1
                x = conv(
                    x, int(spec), 3, name=f"conv{index}", use_bias=True, bias_init=self.bias_init, dtype=self.dtype
                )
                x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"bn{index}")(x))
        if x.shape[1] < 2 or x.shape[2] < 2:
            pools = sum(1 for s in self.plan if s == "M") + 1
            raise ValueError(
                f"VGG input {height}x{width} is too small: {pools} 2x2 poolings need at least {2**pools}x{2**pools}"
            )
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        logits = dense(x, self.num_classes, name=OUTPUT_LAYER, bias_init=self.bias_init, dtype=self.dtype)
        return logits.astype(jnp.float32)


def vgg(
    depth: int,
    num_classes: int = 10,
    width_multiplier: float = 1,
    bias_init: str = "zeros",
    dtype: DTypeLike = jnp.float32,
) -> VGG:
    """The CIFAR VGG of ``depth`` (11, 13, 16, 19), channels scaled by ``width_multiplier``."""
    if depth not in PLANS:
        raise ValueError(f"unknown VGG depth {depth}; valid: {', '.join(map(str, PLANS))}")
    plan = tuple(s if s == "M" else max(1, int(round(s * width_multiplier))) for s in PLANS[depth])
    return VGG(plan, num_classes, bias_init, dtype)


def build(model_cfg: Any, num_classes: int, dtype: DTypeLike) -> VGG:
    """``vgg<depth>`` with channels scaled by ``model.width_multiplier``."""
    return vgg(int(model_cfg.name[len("vgg") :]), num_classes, model_cfg.width_multiplier, model_cfg.bias_init, dtype)


_CONV = re.compile(r"conv\d+")


def is_prunable(keys: tuple[str, ...]) -> bool:
    """The conv kernels ``conv1..convN/kernel``; never the classifier ``fc``, a bias or BatchNorm."""
    return len(keys) == 2 and keys[1] == "kernel" and bool(_CONV.fullmatch(keys[0]))


FAMILY = register_family(
    Family("vgg", tuple(f"vgg{d}" for d in PLANS), build, is_prunable, convolutional=True, modules=(VGG,))
)
