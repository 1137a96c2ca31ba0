"""``sdd_jax.analysis.hessian``: Lanczos and power iteration find known top eigenvalues (a small
quadratic; a tiny MLP against ``jax.hessian`` restricted to the unpruned coordinates), and
Hutchinson's mean converges to the exact trace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from sdd_jax.analysis import hessian
from sdd_jax.models import mlp
from sdd_jax.train import Spec, loss_fn

EIGENVALUES = np.array([5.0, 3.0, 2.5, 1.0, 0.5, 0.1, -0.3, -1.0])


def quadratic(seed=0):
    """A symmetric 8x8 matrix with :data:`EIGENVALUES`, as a matvec over a two-leaf pytree."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(8, 8)))
    a = jnp.asarray(q @ np.diag(EIGENVALUES) @ q.T, jnp.float32)
    like = {"u": jnp.zeros(3), "v": jnp.zeros((5,))}
    flat, unravel = ravel_pytree(like)

    def matvec(tree):
        return unravel(a @ ravel_pytree(tree)[0])

    return a, like, matvec


@pytest.mark.parametrize("method,steps", [("lanczos", 8), ("lanczos", 6), ("power", 300)])
def test_top_eigenvalue_of_a_quadratic(method, steps):
    _, like, matvec = quadratic()
    v0 = hessian.gaussian_like(jax.random.key(1), like)
    top = hessian.top_eigenvalue(matvec, v0, steps, method)
    assert float(top) == pytest.approx(EIGENVALUES.max(), rel=1e-3)


def test_lanczos_ritz_values_are_the_spectrum_at_full_dimension():
    _, like, matvec = quadratic(3)
    alpha, beta = hessian.lanczos(matvec, hessian.gaussian_like(jax.random.key(2), like), 50)  # capped at 8
    chex.assert_shape(alpha, (8,))
    np.testing.assert_allclose(np.sort(hessian.tridiagonal_eigenvalues(alpha, beta)), np.sort(EIGENVALUES),
                               atol=1e-3)


def test_hutchinson_mean_converges_to_the_exact_trace():
    a, like, matvec = quadratic(5)
    mask = {"u": jnp.array([1.0, 0.0, 1.0]), "v": jnp.array([1.0, 1.0, 0.0, 1.0, 1.0])}
    masked = hessian.masked_hvp(lambda t: 0.5 * hessian.tree_vdot(t, matvec(t)), like, mask)
    keep = np.asarray(ravel_pytree(mask)[0]) > 0
    exact = float(np.trace(np.asarray(a)[keep][:, keep]))
    few = np.asarray(hessian.hutchinson_samples(masked, like, jax.random.key(0), 16, mask))
    many = np.asarray(hessian.hutchinson_samples(masked, like, jax.random.key(0), 8000, mask))
    se = many.std(ddof=1) / np.sqrt(many.size)
    assert abs(many.mean() - exact) < 4 * se
    assert se < few.std(ddof=1) / np.sqrt(few.size) / 10  # the error shrinks as 1/sqrt(probes)
    assert abs(many.mean() - exact) < 0.05 * abs(exact) + 4 * se


def tiny_mlp_problem():
    model = mlp((6,), num_classes=3)
    x = jax.random.normal(jax.random.key(0), (2, 16, 4))  # 2 batches of 16 examples, 4 features
    y = jax.random.randint(jax.random.key(1), (2, 16), 0, 3)
    params = model.init(jax.random.key(2), x[0], train=False)["params"]
    mask = jax.tree.map(jnp.ones_like, params)
    mask["fc1"]["kernel"] = (jax.random.uniform(jax.random.key(3), (4, 6)) > 0.4).astype(jnp.float32)
    spec = Spec(model=model, optimizer=optax.identity(), schedule=lambda s: 0.1, train_size=32,
                batch_size=16, mean=(0.0,), std=(1.0,))
    return spec, params, mask, x, y


def exact_restricted_hessian(spec, params, mask, x, y):
    flat, unravel = ravel_pytree(params)

    def mean_loss(f):
        p = unravel(f)
        return jnp.mean(jnp.stack([loss_fn(spec, p, {}, mask, x[b], y[b], jnp.ones(16), False)[0]
                                   for b in range(x.shape[0])]))

    h = np.asarray(jax.jit(jax.hessian(mean_loss))(flat), np.float64)
    keep = np.asarray(ravel_pytree(mask)[0]) > 0
    return h[keep][:, keep]


@pytest.mark.parametrize("method,steps,rel", [("lanczos", 60, 1e-3), ("power", 200, 2e-2)])
def test_top_eigenvalue_and_trace_of_a_tiny_mlp_match_jax_hessian_on_the_unpruned_coordinates(method, steps, rel):
    spec, params, mask, x, y = tiny_mlp_problem()
    restricted = exact_restricted_hessian(spec, params, mask, x, y)
    # train.loss_fn masks the parameters: the Hessian is already zero on the pruned coordinates
    lam, samples = jax.jit(lambda p, k: hessian.sharpness(spec, p, {}, mask, x, y, k, steps=steps, probes=4000,
                                                         method=method))(params, jax.random.key(7))
    assert float(lam) == pytest.approx(np.linalg.eigvalsh(restricted)[-1], rel=rel)
    samples = np.asarray(samples)
    se = samples.std(ddof=1) / np.sqrt(samples.size)
    assert abs(samples.mean() - np.trace(restricted)) < 4 * se


def test_masked_hvp_is_zero_on_pruned_coordinates_even_for_an_unmasked_loss():
    _, like, matvec = quadratic()
    mask = {"u": jnp.array([1.0, 0.0, 1.0]), "v": jnp.ones(5)}
    hvp = hessian.masked_hvp(lambda t: 0.5 * hessian.tree_vdot(t, matvec(t)), like, mask)
    out = hvp(jax.tree.map(jnp.ones_like, like))
    assert float(out["u"][1]) == 0.0
    assert float(jnp.abs(out["u"][0])) > 0
