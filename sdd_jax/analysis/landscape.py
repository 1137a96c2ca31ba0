"""One-dimensional loss curves around a solution along a filter-normalised random direction
(Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS
2018), as the paper's Fig. 8 and 43.

A direction ``d`` is drawn Gaussian per seed, then every *filter* is rescaled to the norm of the
matching filter of the solution ``w``: ``d_f <- d_f / ||d_f|| · ||w_f||``. A filter is an output
channel of a convolution kernel (flax ``(kh, kw, in, out)``) or an output neuron of a dense
kernel (``(in, out)``): the slice at one index of the kernel's last axis. Biases and BatchNorm
parameters (every leaf not named ``kernel``) get a zero direction, as Li et al.'s
``ignore='biasbn'``. For a sparse solution the direction is first restricted to its unpruned
coordinates (``d ⊙ m``), so every point ``w + α·d`` of its curve keeps the pruned weights at
exactly zero. Along the curve BatchNorm keeps the solution's running statistics (Li et al.'s
code evaluates the perturbed network in ``eval()`` mode).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sdd_jax.analysis.evaluation import evaluate_labels
from sdd_jax.analysis.hessian import gaussian_like
from sdd_jax.masks import apply_mask, paths

PyTree = Any


def is_filter_leaf(path: tuple[str, ...]) -> bool:
    """Whether a parameter leaf holds filters (a conv or dense ``kernel``)."""
    return bool(path) and path[-1] == "kernel"


def filter_normalize(direction: PyTree, params: PyTree, mask: PyTree | None = None) -> PyTree:
    """``direction`` with each filter rescaled to the norm of ``params``' matching filter, zero on
    non-kernel leaves and (with ``mask``) on masked coordinates. A filter whose direction or
    solution is all zero (a fully pruned filter) gets a zero direction."""
    if mask is not None:
        direction = apply_mask(direction, mask)
        params = apply_mask(params, mask)
    out = []
    for p, d, w in zip(paths(params), jax.tree.leaves(direction), jax.tree.leaves(params)):
        if not is_filter_leaf(p):
            out.append(jnp.zeros_like(d))
            continue
        axes = tuple(range(d.ndim - 1))
        d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        w_norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=axes, keepdims=True))
        out.append(jnp.where(d_norm > 0, d / jnp.where(d_norm > 0, d_norm, 1.0) * w_norm, 0.0))
    return jax.tree.unflatten(jax.tree.structure(params), out)


def random_direction(key: jax.Array, params: PyTree, mask: PyTree | None = None) -> PyTree:
    """A Gaussian direction from ``key``, filter-normalised to ``params`` (restricted to ``mask``)."""
    return filter_normalize(gaussian_like(key, params), params, mask)


def along(params: PyTree, direction: PyTree, alpha: jax.Array) -> PyTree:
    """``params + alpha · direction`` (in the parameters' dtype)."""
    return jax.tree.map(lambda w, d: (w + alpha * d).astype(w.dtype), params, direction)


def curve(
    spec,
    weights,
    mask: PyTree,
    direction: PyTree,
    alphas: jax.Array,
    x_train: jax.Array,
    y_train: tuple,
    x_test: jax.Array,
    y_test: jax.Array,
    chunk: int = 1,
):
    """For one seed, the network ``weights.params + α·direction`` (through ``mask``, with the
    solution's BatchNorm statistics) at each of ``alphas`` (P,): ``(train_loss, train_acc)`` each
    (P, len(y_train)) against every label array of ``y_train``, and ``(test_loss, test_acc)``
    each (P,). ``chunk`` points are evaluated at once."""

    def at(alpha):
        params = along(weights.params, direction, alpha)
        tr = evaluate_labels(spec, params, weights.batch_stats, mask, x_train, y_train)
        te = evaluate_labels(spec, params, weights.batch_stats, mask, x_test, (y_test,))
        return tr[0], tr[1], te[0][0], te[1][0]

    return jax.lax.map(at, alphas, batch_size=max(1, min(int(chunk), alphas.shape[0])))
