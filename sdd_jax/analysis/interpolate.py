"""Linear interpolation between two solutions, ``w(α) = (1 - α)·w_a + α·w_b`` (Goodfellow,
Vinyals, Saxe, ICLR 2015), as the paper's Fig. 7 and 40-42: from a sparse solution (α = 0) to
its re-densed solution (α = 1).

For BatchNorm models the running statistics of ``w(α)`` are recomputed at every α on a fixed
set of training batches (:func:`sdd_jax.analysis.evaluation.recompute_batch_stats`): neither
endpoint's statistics describe the activations of an interpolated network, and interpolating the
statistics themselves is not what a network at ``w(α)`` computes. The endpoints are then
evaluated with recomputed statistics too, so that the curve is one consistent function of α.
Models without BatchNorm are evaluated exactly at every α (the endpoints equal the two
solutions' own evaluations).
"""

from __future__ import annotations

from typing import Any

import jax

from sdd_jax.analysis.evaluation import evaluate_labels, recompute_batch_stats

PyTree = Any


def lerp(a: PyTree, b: PyTree, alpha: jax.Array) -> PyTree:
    """``(1 - alpha)·a + alpha·b`` leaf by leaf (exactly ``a`` at 0 and ``b`` at 1)."""
    return jax.tree.map(lambda x, y: ((1.0 - alpha) * x + alpha * y).astype(x.dtype), a, b)


def curve(
    spec,
    a,
    b,
    mask: PyTree,
    alphas: jax.Array,
    x_train: jax.Array,
    y_train: tuple,
    x_test: jax.Array,
    y_test: jax.Array,
    bn_images: jax.Array,
    chunk: int = 1,
):
    """For one seed, the interpolation from :class:`~sdd_jax.train.Weights` ``a`` to ``b`` (both
    evaluated through ``mask``; all ones for a sparse-to-dense path) at each of ``alphas`` (P,):
    ``(train_loss, train_acc)`` each (P, len(y_train)) against every label array of ``y_train``
    (noisy, clean), and ``(test_loss, test_acc)`` each (P,). ``bn_images`` (batches, batch, ...)
    are the fixed training batches for BatchNorm statistics (unused without BatchNorm).
    ``chunk`` points are evaluated at once (``lax.map`` with ``batch_size``: memory vs speed)."""

    def at(alpha):
        params = lerp(a.params, b.params, alpha)
        stats = recompute_batch_stats(spec, params, a.batch_stats, mask, bn_images)
        tr = evaluate_labels(spec, params, stats, mask, x_train, y_train)
        te = evaluate_labels(spec, params, stats, mask, x_test, (y_test,))
        return tr[0], tr[1], te[0][0], te[1][0]

    return jax.lax.map(at, alphas, batch_size=max(1, min(int(chunk), alphas.shape[0])))
