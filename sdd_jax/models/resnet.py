"""CIFAR ResNets 10/18/34/50/101/152: torchvision's layout with a CIFAR stem.

Stem: 3x3 stride-1 conv (no bias) + BN + ReLU, no max-pool. Four stages of BasicBlocks (18, 34)
or Bottlenecks (50, 101, 152; stride on the 3x3 conv, torchvision v1.5) with ``width * 2**i``
planes; a 1x1 conv + BN projection shortcut wherever stride or channel count changes; global
average pool; dense classifier with bias. All convs are bias-free. ResNet-18 for 10 classes has
11,173,962 parameters. The same network serves Tiny-ImageNet at 32x32 (ResNet-101, 200 classes).

Names: ``conv_stem``/``bn_stem``, blocks ``layer{stage}_{index}`` (1-based stage, 0-based index
as torchvision's ``layer1.0``) holding ``conv1..3``/``bn1..3`` and ``shortcut_conv``/
``shortcut_bn``, classifier ``fc``. Every conv and dense kernel is prunable, ``fc`` included
(OpenLTH's ResNets prune their classifier). Registers the ``resnet`` family (model names
``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``).
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

# depth -> (block kind, blocks per stage). ResNet-10, one BasicBlock per stage, is the smallest
# network with every part of the CIFAR ResNets (stem, identity and projection shortcuts in every
# stage, the pruned classifier): a quick one for CPU checks of the ResNet code path.
DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


class BasicBlock(nn.Module):
    planes: int
    strides: int = 1
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: BatchNorm(use_running_average=not train, dtype=self.dtype, name=name)  # noqa: E731
        cv = lambda y, *a, **k: conv(y, *a, dtype=self.dtype, **k)  # noqa: E731
        out = nn.relu(bn("bn1")(cv(x, self.planes, 3, strides=self.strides, name="conv1")))
        out = bn("bn2")(cv(out, self.planes, 3, name="conv2"))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.planes:
            shortcut = bn("shortcut_bn")(cv(x, self.planes, 1, strides=self.strides, name="shortcut_conv"))
        return nn.relu(out + shortcut)


class Bottleneck(nn.Module):
    planes: int
    strides: int = 1
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: BatchNorm(use_running_average=not train, dtype=self.dtype, name=name)  # noqa: E731
        cv = lambda y, *a, **k: conv(y, *a, dtype=self.dtype, **k)  # noqa: E731
        width = self.planes * EXPANSION["bottleneck"]
        out = nn.relu(bn("bn1")(cv(x, self.planes, 1, name="conv1")))
        out = nn.relu(bn("bn2")(cv(out, self.planes, 3, strides=self.strides, name="conv2")))
        out = bn("bn3")(cv(out, width, 1, name="conv3"))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != width:
            shortcut = bn("shortcut_bn")(cv(x, width, 1, strides=self.strides, name="shortcut_conv"))
        return nn.relu(out + shortcut)


class ResNet(nn.Module):
    """``block``: ``"basic"`` or ``"bottleneck"``; ``width``: stem/first-stage channels (64).

    ``bias_init`` (``"zeros"`` or ``"torch_default"``, see :mod:`sdd_jax.models.init`) applies
    to the classifier, the only layer with a bias. ``dtype``: the compute dtype (float32
    parameters and BN statistics, float32 logits).
    """

    block: str
    stage_sizes: Sequence[int]
    num_classes: int = 10
    width: int = 64
    bias_init: str = "zeros"
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.block not in EXPANSION:
            raise ValueError(f"unknown ResNet block {self.block!r}; valid: {', '.join(EXPANSION)}")
        if x.ndim != 4:
            raise ValueError(f"ResNet expects NHWC inputs, got shape {x.shape}")
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        x = conv(x.astype(self.dtype), self.width, 3, name="conv_stem", dtype=self.dtype)
        x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn_stem")(x))
        for stage, blocks in enumerate(self.stage_sizes):
            planes = self.width * 2**stage
            for index in range(blocks):
                strides = 2 if (stage > 0 and index == 0) else 1
                x = block_cls(planes, strides, self.dtype, name=f"layer{stage + 1}_{index}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        logits = dense(x, self.num_classes, name=OUTPUT_LAYER, bias_init=self.bias_init, dtype=self.dtype)
        return logits.astype(jnp.float32)


def resnet(
    depth: int,
    num_classes: int = 10,
    width_multiplier: float = 1,
    bias_init: str = "zeros",
    dtype: DTypeLike = jnp.float32,
) -> ResNet:
    """The CIFAR ResNet of ``depth`` (18, 34, 50, 101, 152), channels scaled by ``width_multiplier``."""
    if depth not in DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth}; valid: {', '.join(map(str, DEPTHS))}")
    block, stages = DEPTHS[depth]
    return ResNet(block, stages, num_classes, max(1, int(round(64 * width_multiplier))), bias_init, dtype)


def build(model_cfg: Any, num_classes: int, dtype: DTypeLike) -> ResNet:
    """``resnet<depth>`` with channels scaled by ``model.width_multiplier``."""
    return resnet(
        int(model_cfg.name[len("resnet") :]), num_classes, model_cfg.width_multiplier, model_cfg.bias_init, dtype
    )


_IN_BLOCK = re.compile(r"conv\d+|shortcut_conv")
_BLOCK = re.compile(r"layer\d+_\d+")


def is_prunable(keys: tuple[str, ...]) -> bool:
    """Every conv and dense kernel: ``conv_stem`` and ``fc`` at the top level, ``conv1..3`` and
    ``shortcut_conv`` inside a block ``layer<stage>_<index>``; never a bias or BatchNorm."""
    if len(keys) == 2:
        return keys == ("conv_stem", "kernel") or keys == ("fc", "kernel")
    return (
        len(keys) == 3
        and keys[2] == "kernel"
        and bool(_BLOCK.fullmatch(keys[0]))
        and bool(_IN_BLOCK.fullmatch(keys[1]))
    )


FAMILY = register_family(
    Family("resnet", tuple(f"resnet{d}" for d in DEPTHS), build, is_prunable, convolutional=True, modules=(ResNet,))
)
