"""On-device preprocessing used inside the train step: pure ``jnp``, jit and vmap friendly."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """float32 ``(x - mean) / std`` over the last (channel) axis.

    uint8 images are first scaled to [0, 1]; float inputs (MNIST-1D signals) are standardised
    as they are. ``mean``/``std`` are in [0, 1] pixel units, one value per channel.
    """
    x = jnp.asarray(images)
    mean = jnp.asarray(mean, dtype=jnp.float32)
    std = jnp.asarray(std, dtype=jnp.float32)
    if x.dtype == jnp.uint8:
        x = x.astype(jnp.float32) / 255.0
    else:
        x = x.astype(jnp.float32)
    return (x - mean) / std


def _crop_flip_one(key: jax.Array, padded: jax.Array, height: int, width: int, pad: int) -> jax.Array:
    k_y, k_x, k_flip = jax.random.split(key, 3)
    dy = jax.random.randint(k_y, (), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (), 0, 2 * pad + 1)
    crop = jax.lax.dynamic_slice(padded, (dy, dx, 0), (height, width, padded.shape[-1]))
    flip = jax.random.bernoulli(k_flip, 0.5)
    return jnp.where(flip, crop[:, ::-1, :], crop)


@functools.partial(jax.jit, static_argnames="pad")
def random_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Per-example pad-``pad`` zero-padded random crop and horizontal flip (probability 1/2) of
    NHWC images, as ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` in the official
    code. Shapes and dtype are kept; each example draws from its own split of ``key``."""
    if images.ndim != 4:
        raise ValueError(f"random_crop_flip expects NHWC images, got shape {images.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    keys = jax.random.split(key, n)
    return jax.vmap(_crop_flip_one, in_axes=(0, 0, None, None, None))(keys, padded, height, width, pad)
