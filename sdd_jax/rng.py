"""Independent random key streams.

Every random choice in a run draws from its own stream, derived from an integer seed and a
stream name, so that changing how one choice is made never moves another:

* ``init``      parameter initialisation (per training seed, per re-initialisation level)
* ``data_order`` the per-epoch permutation of the training set (per training seed)
* ``augment``   random crop / flip (per training seed)
* ``mask``      random pruning scores (per training seed)
* ``subset``    which training examples are kept (data seed)
* ``split``     which examples are held out for validation (data seed)
* ``noise``     which labels are corrupted and to what (noise seed)
* ``analysis/<draw>`` the draws of ``sdd-jax analyze`` (:mod:`sdd_jax.analysis.pipeline`), folded
  into ``analysis.seed``: the fixed training batches of the Hessian (``hessian_batches``) and of
  the BatchNorm statistics along the interpolation (``bn_batches``), the Lanczos start vectors and
  Hutchinson probes (``hessian``), the 1-D loss-curve directions (``direction``)

The stream name is hashed with CRC32 (stable across Python processes, unlike ``hash``) and
folded into ``jax.random.key(seed)``.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

ANALYSIS_DRAWS = ("hessian_batches", "bn_batches", "hessian", "direction")
STREAMS = (
    "init",
    "data_order",
    "augment",
    "mask",
    "subset",
    "split",
    "noise",
    *(f"analysis/{draw}" for draw in ANALYSIS_DRAWS),
)


def stream_id(stream: str) -> int:
    """A stable 31-bit integer for a stream name."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    return zlib.crc32(stream.encode()) & 0x7FFFFFFF


def stream_key(seed: int, stream: str, *extra: int) -> jax.Array:
    """A typed JAX key for ``stream`` of ``seed``; ``extra`` integers (e.g. a level) are folded in."""
    key = jax.random.fold_in(jax.random.key(int(seed)), stream_id(stream))
    for value in extra:
        key = jax.random.fold_in(key, int(value))
    return key


def seed_keys(seeds, stream: str, *extra: int) -> jax.Array:
    """Stacked keys of one stream, one per training seed (leading axis = seed axis): the one way
    the seed-stacked code draws a key per seed."""
    return jnp.stack([stream_key(s, stream, *extra) for s in seeds])


def numpy_rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    """A NumPy generator for host-side choices (subset, split, noise), independent per stream."""
    return np.random.default_rng([int(seed), stream_id(stream), *[int(e) for e in extra]])
