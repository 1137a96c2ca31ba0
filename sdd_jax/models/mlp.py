"""Fully connected ReLU networks: LeNet-300-100 (784-300-100-10) and any widths.

Layers are named ``fc1 .. fcK`` (hidden) and ``out`` (classifier). As in OpenLTH's
``mnist_lenet``, the hidden kernels are prunable and the output layer is not. Registers the
``mlp`` family (model names ``lenet_300_100``, ``mlp``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from sdd_jax.models.init import dense
from sdd_jax.models.registry import Family, register_family, scaled

OUTPUT_LAYER = "out"
LENET_300_100 = (300, 100)  # LeNet-300-100: 784-300-100-10 has 266,610 parameters


class MLP(nn.Module):
    """Flattens every input axis but the first (batch), then Dense+ReLU per width, then ``out``.

    ``bias_init``: ``"zeros"`` (the paper) or ``"torch_default"`` (what the official code
    leaves in place); ``dtype``: the compute dtype (float32 parameters, float32 logits); see
    :mod:`sdd_jax.models.init`.
    """

    widths: Sequence[int] = (300, 100)
    num_classes: int = 10
    bias_init: str = "zeros"
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        del train  # no BatchNorm or dropout
        if x.ndim < 2:
            raise ValueError(f"MLP expects a batch of inputs (ndim >= 2), got shape {x.shape}")
        x = jnp.reshape(x, (x.shape[0], -1)).astype(self.dtype)
        for i, width in enumerate(self.widths):
            x = nn.relu(dense(x, int(width), name=f"fc{i + 1}", bias_init=self.bias_init, dtype=self.dtype))
        logits = dense(x, self.num_classes, name=OUTPUT_LAYER, bias_init=self.bias_init, dtype=self.dtype)
        return logits.astype(jnp.float32)


def mlp(widths: Sequence[int], num_classes: int = 10, bias_init: str = "zeros", dtype: DTypeLike = jnp.float32) -> MLP:
    """A ReLU MLP with the given hidden widths (an empty tuple gives a linear classifier)."""
    return MLP(widths=tuple(int(w) for w in widths), num_classes=num_classes, bias_init=bias_init, dtype=dtype)


def build(model_cfg: Any, num_classes: int, dtype: DTypeLike) -> MLP:
    """``lenet_300_100`` (widths 300, 100) or ``mlp`` (``model.widths``), widths scaled by
    ``model.width_multiplier``."""
    widths = LENET_300_100 if model_cfg.name == "lenet_300_100" else tuple(model_cfg.widths)
    return mlp(tuple(scaled(w, model_cfg.width_multiplier) for w in widths), num_classes, model_cfg.bias_init, dtype)


_HIDDEN = re.compile(r"fc\d+")


def is_prunable(keys: tuple[str, ...]) -> bool:
    """The hidden kernels ``fc1..fcK/kernel``; never ``out`` (OpenLTH's output layer) or a bias."""
    return len(keys) == 2 and keys[1] == "kernel" and bool(_HIDDEN.fullmatch(keys[0]))


FAMILY = register_family(
    Family("mlp", ("lenet_300_100", "mlp"), build, is_prunable, convolutional=False, modules=(MLP,))
)
