"""Evaluation of one seed's network on a whole split, in evaluation mode, against several label
arrays at once (one forward pass), and the logits behind calibration; and recomputing BatchNorm
running statistics on fixed training batches. Pure functions of one seed (vmap over seeds).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from sdd_jax.data.device import normalize
from sdd_jax.masks import apply_mask
from sdd_jax.models.init import BN_MOMENTUM
from sdd_jax.train import Spec, cross_entropy, loss_fn

PyTree = Any


def _batched(spec: Spec, arrays: tuple[jax.Array, ...]):
    """Arrays of the same length split into eval batches (the last padded), and the weights."""
    n = arrays[0].shape[0]
    eb = min(spec.eval_batch_size, n)
    nb = math.ceil(n / eb)
    pad = nb * eb - n
    out = []
    for a in arrays:
        a = jnp.concatenate([a, a[:pad]]) if pad else a
        out.append(a.reshape(nb, eb, *a.shape[1:]))
    w = (jnp.arange(nb * eb) < n).astype(jnp.float32).reshape(nb, eb)
    return out, w, n


def _logits(spec: Spec, params, batch_stats, mask, images):
    variables = {"params": apply_mask(params, mask)}
    if jax.tree.leaves(batch_stats):
        variables["batch_stats"] = batch_stats
    return spec.model.apply(variables, normalize(images, spec.mean, spec.std), train=False).astype(jnp.float32)


def evaluate_labels(
    spec: Spec, params: PyTree, batch_stats: PyTree, mask: PyTree, x: jax.Array, labels: tuple[jax.Array, ...]
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy of the masked network on ``x`` (n, ...) against each label
    array of ``labels`` (each (n,) int32): two arrays of shape (len(labels),). One forward pass
    per eval batch; evaluation-mode BatchNorm, no augmentation (as :func:`sdd_jax.train.evaluate`,
    which it equals for one label array)."""
    (xb, *ybs), w, n = _batched(spec, (x, *labels))

    def body(_, inputs):
        images, wb, *ys = inputs
        logits = _logits(spec, params, batch_stats, mask, images)
        pred = jnp.argmax(logits, -1)
        losses = jnp.stack([jnp.sum(cross_entropy(logits, y) * wb) for y in ys])
        correct = jnp.stack([jnp.sum((pred == y) * wb) for y in ys])
        return None, (losses, correct)

    _, (losses, correct) = jax.lax.scan(body, None, (xb, w, *ybs))
    return jnp.sum(losses, 0) / n, jnp.sum(correct, 0) / n


def logits(spec: Spec, params: PyTree, batch_stats: PyTree, mask: PyTree, x: jax.Array) -> jax.Array:
    """Evaluation-mode logits (n, classes), float32, of the masked network on ``x``."""
    (xb,), _, n = _batched(spec, (x,))
    _, out = jax.lax.scan(lambda _, images: (None, _logits(spec, params, batch_stats, mask, images)), None, xb)
    return out.reshape(-1, out.shape[-1])[:n]


def recompute_batch_stats(spec: Spec, params: PyTree, batch_stats: PyTree, mask: PyTree, images: jax.Array) -> PyTree:
    """BatchNorm running statistics recomputed for ``params`` on the fixed training batches
    ``images`` (batches, batch, ...): the plain average over the batches of the statistics each
    BatchNorm layer computes in training mode (mean, and the variance as the running statistic
    stores it), as ``torch.optim.swa_utils.update_bn`` (``momentum=None``: a cumulative average).
    ``batch_stats`` gives only the structure; models without BatchNorm return it unchanged.

    Eval-mode logits with these statistics do not reproduce train-mode logits even on a single
    batch, by design: training normalises with the *biased* batch variance, while the running
    variance stores the *unbiased* one (PyTorch's convention, :class:`sdd_jax.models.init.BatchNorm`),
    a factor ``n/(n-1)`` per layer (``n`` = batch × height × width), largest in the last stage
    (on the logits of a thin ResNet-18 with batches of a few images, about 1% of their scale). The
    statistics stay in the convention of the trained networks' own running statistics. With
    several batches each batch is normalised by its own statistics (train mode, every layer), and
    the per-batch statistics are averaged, not pooled: ``tests/test_batchnorm.py`` checks both."""
    if not jax.tree.leaves(batch_stats):
        return batch_stats
    zeros = jax.tree.map(jnp.zeros_like, batch_stats)
    labels = jnp.zeros(images.shape[1:2], jnp.int32)
    weights = jnp.ones(images.shape[1:2], jnp.float32)

    def one(total, imgs):
        x = normalize(imgs, spec.mean, spec.std)
        _, (_, new) = loss_fn(spec, params, zeros, mask, x, labels, weights, True)
        # The running update is m·old + (1 - m)·batch; from old = 0 the batch statistic is new/(1 - m).
        return jax.tree.map(lambda t, s: t + s / (1.0 - BN_MOMENTUM), total, new), None

    total, _ = jax.lax.scan(one, zeros, images)
    return jax.tree.map(lambda t: t / images.shape[0], total)
