"""Fully connected ReLU networks: LeNet-300-100 (784-300-100-10) and any widths.

Layers are named ``fc1 .. fcK`` (hidden) and ``out`` (classifier). As in OpenLTH's
``mnist_lenet``, the hidden kernels are prunable and the output layer is not.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from sdd_jax.models.init import check_bias_init, dense

OUTPUT_LAYER = "out"


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
        check_bias_init(self.bias_init)
        if x.ndim < 2:
            raise ValueError(f"MLP expects a batch of inputs (ndim >= 2), got shape {x.shape}")
        x = jnp.reshape(x, (x.shape[0], -1)).astype(self.dtype)
        for i, width in enumerate(self.widths):
            x = nn.relu(dense(x, int(width), name=f"fc{i + 1}", bias_init=self.bias_init, dtype=self.dtype))
        logits = dense(x, self.num_classes, name=OUTPUT_LAYER, bias_init=self.bias_init, dtype=self.dtype)
        return logits.astype(jnp.float32)


def mlp(widths: Sequence[int], num_classes: int = 10, bias_init: str = "zeros",
        dtype: DTypeLike = jnp.float32) -> MLP:
    """A ReLU MLP with the given hidden widths (an empty tuple gives a linear classifier)."""
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise ValueError(f"MLP widths must be positive integers, got {widths}")
    return MLP(widths=widths, num_classes=num_classes, bias_init=bias_init, dtype=dtype)


def lenet_300_100(num_classes: int = 10, bias_init: str = "zeros", dtype: DTypeLike = jnp.float32) -> MLP:
    """LeNet-300-100: 784-300-100-10 has 266,610 parameters."""
    return mlp((300, 100), num_classes, bias_init, dtype)
