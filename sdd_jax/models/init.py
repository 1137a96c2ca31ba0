"""Initialisers of the reference code (OpenLTH), and the three layers every model is built from.

* Conv and dense kernels: Kaiming-normal, fan-in, gain sqrt(2) (OpenLTH's ``kaiming_normal``,
  i.e. ``torch.nn.init.kaiming_normal_`` with its defaults). PyTorch draws an *untruncated*
  normal, hence ``variance_scaling(2.0, "fan_in", "normal")``, not ``"truncated_normal"``.
  JAX's fan-in of a ``(kh, kw, in, out)`` conv kernel is ``kh * kw * in``, as PyTorch's.
* BatchNorm: scale ~ U[0, 1), bias 0 (OpenLTH's ``--batchnorm_init=uniform``).
* Biases of conv/dense layers: ``bias_init="zeros"`` (default) follows the paper, which says
  biases start at zero. The official code only re-initialises weights, so its biases keep
  PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)); ``bias_init="torch_default"`` gives that.

Mixed precision: every layer takes a compute ``dtype`` (:data:`DTYPES`; ``float32`` by default,
which is the paper's arithmetic). Parameters are always created and stored in float32
(``param_dtype``) and cast to the compute dtype inside the layer, so initialisation is the same in
every dtype and masks applied to the float32 parameters keep pruned weights exactly zero.

:class:`BatchNorm` normalises exactly as ``torch.nn.BatchNorm2d`` in both modes (see its
docstring for the running-variance convention, where it differs from ``flax.linen.BatchNorm``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from sdd_jax import choices
from sdd_jax.choices import BIAS_INITS

# ``model.dtype`` -> compute dtype. Parameters, optimiser state and BN statistics stay float32.
DTYPES = {name: getattr(jnp, name) for name in choices.DTYPES}

# PyTorch BatchNorm defaults: running = (1 - 0.1) * running + 0.1 * batch, eps = 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
zeros = nn.initializers.zeros


def bn_scale_uniform(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """U[0, 1), as ``torch.rand`` in OpenLTH's uniform BatchNorm initialiser."""
    return jax.random.uniform(key, shape, dtype)


def torch_default_bias(fan_in: int) -> Callable:
    """PyTorch's default bias initialiser of Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def bias_initializer(kind: str, fan_in: int) -> Callable:
    """The bias initialiser named ``kind`` (one of :data:`BIAS_INITS`) for a layer with ``fan_in``."""
    if kind == "zeros":
        return zeros
    if kind == "torch_default":
        return torch_default_bias(fan_in)
    raise ValueError(f"unknown bias_init {kind!r}; valid: {', '.join(BIAS_INITS)}")


def compute_dtype(name: str) -> DTypeLike:
    """The compute dtype named by ``model.dtype`` (a key of :data:`DTYPES`)."""
    if name not in DTYPES:
        raise ValueError(f"unknown model.dtype {name!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[name]


def conv(
    x: jax.Array,
    features: int,
    kernel_size: int,
    *,
    name: str,
    strides: int = 1,
    padding: int | None = None,
    use_bias: bool = False,
    bias_init: str = "zeros",
    dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """A square conv with PyTorch's symmetric zero padding (default ``kernel_size // 2``).

    Explicit padding, not ``"SAME"``: for stride 2 on even inputs ``"SAME"`` pads (0, 1) where
    PyTorch's ``padding=1`` pads (1, 1), which shifts the sampling grid. ``dtype`` is the compute
    dtype; the kernel and bias are float32 parameters.
    """
    pad = kernel_size // 2 if padding is None else padding
    fan_in = kernel_size * kernel_size * x.shape[-1]
    layer = nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        kernel_init=kaiming_normal,
        bias_init=bias_initializer(bias_init, fan_in),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )
    return layer(x)


def dense(
    x: jax.Array, features: int, *, name: str, bias_init: str = "zeros", dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """A dense layer with bias, Kaiming-normal kernel, computing in ``dtype`` (float32 parameters)."""
    layer = nn.Dense(
        features,
        kernel_init=kaiming_normal,
        bias_init=bias_initializer(bias_init, x.shape[-1]),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )
    return layer(x)


class BatchNorm(nn.Module):
    """``torch.nn.BatchNorm2d`` over the last axis, as a small flax module.

    Same variable names as ``flax.linen.BatchNorm`` (params ``scale``/``bias``, collection
    ``batch_stats`` with ``mean``/``var``) and no ``axis_name``: under ``vmap`` over seeds every
    seed keeps its own statistics. ``momentum=0.9`` is PyTorch's ``momentum=0.1``.

    Training normalises with the biased batch variance (as both PyTorch and flax do). The running
    variance differs: PyTorch updates it with the *unbiased* batch variance ``var * n / (n - 1)``
    (``n`` = values per channel = batch x height x width); ``flax.linen.BatchNorm`` uses the biased
    one. ``unbiased_running_var=True`` (default) follows PyTorch; ``False`` reproduces flax's
    module exactly. As in flax, nothing is updated while initialising, and with ``n == 1`` the
    factor is taken as 1 (PyTorch refuses that case).

    ``dtype`` is the compute dtype of the output. Whatever it is, the parameters and the running
    statistics are float32, and the batch statistics and the normalisation are computed in
    float32 from the input cast to float32; only the result is cast to ``dtype``.
    """

    use_running_average: bool
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    unbiased_running_var: bool = True
    dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        features = x.shape[-1]
        scale = self.param("scale", bn_scale_uniform, (features,), jnp.float32)
        bias = self.param("bias", zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            if not self.is_initializing():
                n = x.size // features
                factor = n / (n - 1) if (self.unbiased_running_var and n > 1) else 1.0
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
                ra_var.value = m * ra_var.value + (1.0 - m) * (var * factor)
        y = (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
        return y.astype(self.dtype)
