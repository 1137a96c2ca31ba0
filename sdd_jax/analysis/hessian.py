"""Sharpness in the subspace of the unpruned weights: the top Hessian eigenvalue (Lanczos or power
iteration) and Hutchinson's estimate of the Hessian trace, from masked Hessian-vector products.

The paper argues that minima flatness does not explain sparse double descent but does not
measure it; these functions measure it. For a mask ``m`` (``M = diag(m)``) and the training
loss ``L``, the operator is ``v -> M H(θ) M v`` with ``H`` the Hessian of ``L`` at the solution
``θ``: the Hessian restricted to the unpruned coordinates (pruned coordinates are not free
parameters of the sparse network). Hessian-vector products are ``jax.jvp`` of ``jax.grad``
(forward-over-reverse, Pearlmutter's trick); no Hessian is ever formed. As PyHessian (Yao et al.,
2020), the loss is the mean cross-entropy in evaluation mode (BatchNorm uses its running
statistics) over a fixed set of training batches.

Everything here is a pure function of one seed's pytrees (``jax.vmap`` it over seeds); vectors
are pytrees shaped like the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sdd_jax.data.device import normalize
from sdd_jax.masks import apply_mask
from sdd_jax.train import Spec, loss_fn

PyTree = Any
MatVec = Callable[[PyTree], PyTree]


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """``Σ_leaves <a, b>`` in float32 (a scalar)."""
    return sum(
        jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def tree_normalize(v: PyTree) -> PyTree:
    norm = jnp.sqrt(tree_vdot(v, v))
    return jax.tree.map(lambda x: x / jnp.maximum(norm, 1e-30), v)


def masked_hvp(loss: Callable[[PyTree], jax.Array], params: PyTree, mask: PyTree) -> MatVec:
    """``v -> m ⊙ ∇²loss(params) (m ⊙ v)`` (shapes of ``params``); ``mask`` 0/1 like ``params``
    (all ones: the full Hessian)."""
    grad = jax.grad(loss)

    def hvp(v):
        tangent = apply_mask(v, mask)
        return apply_mask(jax.jvp(grad, (params,), (tangent,))[1], mask)

    return hvp


def dataset_hvp(
    spec: Spec, params: PyTree, batch_stats: PyTree, mask: PyTree, images: jax.Array, labels: jax.Array
) -> MatVec:
    """The masked HVP of the mean training loss over fixed batches: ``images`` (batches, batch,
    ...) normalised inside as in training, ``labels`` (batches, batch) int32. The batches are
    looped over with ``lax.scan`` (memory of one batch) and their HVPs averaged; evaluation-mode
    BatchNorm, no augmentation."""
    ones = jnp.ones(labels.shape[1:], jnp.float32)

    def hvp(v):
        def one(total, batch):
            imgs, labs = batch
            x = normalize(imgs, spec.mean, spec.std)
            loss = lambda p: loss_fn(spec, p, batch_stats, mask, x, labs, ones, False)[0]  # noqa: E731
            h = masked_hvp(loss, params, mask)(v)
            return jax.tree.map(jnp.add, total, h), None

        zero = jax.tree.map(jnp.zeros_like, params)
        total, _ = jax.lax.scan(one, zero, (images, labels))
        return jax.tree.map(lambda t: t / images.shape[0], total)

    return hvp


def power_iteration(matvec: MatVec, v0: PyTree, iters: int) -> tuple[jax.Array, PyTree]:
    """``iters`` steps of power iteration from ``v0``: (the Rayleigh quotient ``v·Av`` of the last
    unit vector, that vector). Converges to the eigenvalue of largest *magnitude* (for a Hessian
    near a minimum, the top one), at the rate ``|λ2/λ1|`` per step."""
    v = tree_normalize(v0)

    def body(v, _):
        w = matvec(v)
        return tree_normalize(w), tree_vdot(v, w)

    v, quotients = jax.lax.scan(body, v, None, length=int(iters))
    return quotients[-1], v


# Lanczos breakdown: ``beta <= BREAKDOWN_TOLERANCE · ‖T‖`` (the running estimate of the
# tridiagonal's norm, in the operator's own units) is an invariant subspace. After full
# reorthogonalisation an exact breakdown leaves a residual of a few ulps of ``‖A‖``; continuing past
# a missed one is harmless (the next vector is still orthogonal to the basis), stopping at a false
# one truncates the spectrum, so the tolerance is small: 4 ulps of float32 (≈ 4.8e-7).
BREAKDOWN_TOLERANCE = 4 * float(jnp.finfo(jnp.float32).eps)


def lanczos(matvec: MatVec, v0: PyTree, steps: int) -> tuple[jax.Array, jax.Array]:
    """``steps`` Lanczos iterations with full reorthogonalisation from ``v0``: the diagonal
    ``alpha`` (steps,) and off-diagonal ``beta`` (steps - 1,) of the tridiagonal matrix ``T``
    whose eigenvalues (Ritz values) approximate the extreme eigenvalues of the symmetric
    operator. ``steps`` is capped at the dimension. Memory: ``steps`` parameter-sized vectors.

    Breakdown (an invariant subspace) is ``beta_j <= BREAKDOWN_TOLERANCE · s_j`` with ``s_j`` the
    largest ``|alpha_i|`` (i ≤ j) and ``beta_i`` (i < j): relative to the operator's scale, so an
    operator ``c·A`` gives the same iterations for every ``c > 0`` (a Hessian with eigenvalues of
    1e-8 is not stopped after a few steps). After a breakdown ``beta_j = 0`` and the remaining rows
    are zero: they are not Ritz values (:func:`ritz_values` keeps the leading block). The vectors
    are float32 whatever the parameters' dtype. Without a breakdown this is plain Lanczos (Golub &
    Van Loan, Matrix Computations, §10.1; PyHessian's ``density``/``eigenvalues``)."""
    flat0, unravel = ravel_pytree(v0)
    n = flat0.size
    steps = max(1, min(int(steps), n))
    mv = lambda x: ravel_pytree(matvec(unravel(x)))[0].astype(jnp.float32)  # noqa: E731
    q0 = flat0.astype(jnp.float32) / jnp.maximum(jnp.linalg.norm(flat0), 1e-30)
    basis = jnp.zeros((steps, n), jnp.float32).at[0].set(q0)

    def body(carry, j):
        basis, scale = carry
        q = basis[j]
        w = mv(q)
        alpha = jnp.vdot(q, w)
        for _ in range(2):  # twice is enough (Giraud et al., 2005)
            w = w - basis.T @ (basis @ w)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(alpha))
        ok = beta > BREAKDOWN_TOLERANCE * scale
        beta = jnp.where(ok, beta, 0.0)
        nxt = jnp.where(ok, w / jnp.where(ok, beta, 1.0), 0.0)
        basis = jax.lax.cond(j + 1 < steps, lambda b: b.at[j + 1].set(nxt), lambda b: b, basis)
        return (basis, jnp.maximum(scale, beta)), (alpha, beta)

    _, (alpha, beta) = jax.lax.scan(body, (basis, jnp.zeros((), jnp.float32)), jnp.arange(steps))
    return alpha, beta[:-1]


def tridiagonal_eigenvalues(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """Eigenvalues (ascending) of the symmetric tridiagonal matrix with diagonal ``alpha`` and
    off-diagonal ``beta``."""
    t = jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)
    return jnp.linalg.eigvalsh(t)


def leading_block_size(beta: jax.Array) -> jax.Array:
    """The size of the leading block of a Lanczos tridiagonal: one more than the index of the first
    zero of ``beta`` (steps - 1,), or ``steps`` without a breakdown (an int32 scalar)."""
    zero = beta == 0
    return jnp.where(jnp.any(zero), jnp.argmax(zero) + 1, beta.shape[0] + 1).astype(jnp.int32)


def ritz_values(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """The Ritz values of :func:`lanczos`'s ``alpha``/``beta``: the eigenvalues (ascending) of the
    leading block of ``T`` (up to the first breakdown, :func:`leading_block_size` ``k``), then NaN
    (shape (steps,)). Without a breakdown, exactly :func:`tridiagonal_eigenvalues`. Computed with
    static shapes: the rows after the block get a diagonal above its Gershgorin bound, so the
    block's eigenvalues come first, in the block's own scale."""
    steps = alpha.shape[0]
    inside = jnp.arange(steps) < leading_block_size(beta)
    b = jnp.abs(beta)
    radius = jnp.concatenate([b, jnp.zeros(1, b.dtype)]) + jnp.concatenate([jnp.zeros(1, b.dtype), b])
    hi = jnp.max(jnp.where(inside, alpha + radius, -jnp.inf))
    lo = jnp.min(jnp.where(inside, alpha - radius, jnp.inf))
    pad = hi + (hi - lo) + jnp.abs(hi)  # > every eigenvalue of the block (all equal if it is zero)
    values = tridiagonal_eigenvalues(jnp.where(inside, alpha, pad), beta)
    return jnp.where(inside, values, jnp.nan)


def top_eigenvalue(matvec: MatVec, v0: PyTree, steps: int, method: str = "lanczos") -> jax.Array:
    """The largest eigenvalue of a symmetric operator: the largest Ritz value of ``steps`` Lanczos
    iterations (``method="lanczos"``; the leading block's after a breakdown, :func:`ritz_values`),
    or the Rayleigh quotient after ``steps`` power iterations (``"power"``: the eigenvalue of
    largest magnitude)."""
    if method == "lanczos":
        alpha, beta = lanczos(matvec, v0, steps)
        return ritz_values(alpha, beta)[leading_block_size(beta) - 1]
    if method == "power":
        return power_iteration(matvec, v0, steps)[0]
    raise ValueError(f"analysis.eigen_method must be 'lanczos' or 'power', got {method!r}")


def rademacher_like(key: jax.Array, tree: PyTree, mask: PyTree | None = None) -> PyTree:
    """±1 entries shaped like ``tree`` (float32), zero where ``mask`` is 0."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    z = [jax.random.rademacher(k, jnp.shape(x), jnp.float32) for k, x in zip(keys, leaves)]
    z = jax.tree.unflatten(treedef, z)
    return z if mask is None else apply_mask(z, mask)


def gaussian_like(key: jax.Array, tree: PyTree, mask: PyTree | None = None) -> PyTree:
    """Standard normal entries shaped like ``tree`` (float32), zero where ``mask`` is 0."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    z = jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(x), jnp.float32) for k, x in zip(keys, leaves)])
    return z if mask is None else apply_mask(z, mask)


def hutchinson_samples(
    matvec: MatVec, like: PyTree, key: jax.Array, probes: int, mask: PyTree | None = None
) -> jax.Array:
    """``probes`` Hutchinson samples ``zᵀAz`` with Rademacher ``z`` (zero where ``mask`` is 0):
    each is an unbiased estimate of ``tr(A)`` restricted to the unmasked coordinates (Hutchinson,
    1989); their mean is the estimate, their standard error ``std/√probes``. Shape (probes,)."""

    def one(k):
        z = rademacher_like(k, like, mask)
        return tree_vdot(z, matvec(z))

    return jax.lax.map(one, jax.random.split(key, int(probes)))


def sharpness(
    spec: Spec,
    params: PyTree,
    batch_stats: PyTree,
    mask: PyTree,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    steps: int,
    probes: int,
    method: str = "lanczos",
) -> tuple[jax.Array, jax.Array]:
    """For one seed: (top eigenvalue ``λmax`` of the Hessian restricted to the unpruned
    coordinates, ``probes`` Hutchinson samples of its trace) of the mean training loss over the
    fixed batches ``images``/``labels`` (see :func:`dataset_hvp`). ``key`` draws the Lanczos start
    vector (Gaussian, masked) and the probes."""
    hvp = dataset_hvp(spec, params, batch_stats, mask, images, labels)
    k_start, k_probes = jax.random.split(key)
    lam = top_eigenvalue(hvp, gaussian_like(k_start, params, mask), steps, method)
    return lam, hutchinson_samples(hvp, params, k_probes, probes, mask)
