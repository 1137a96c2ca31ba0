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
    np.testing.assert_allclose(np.sort(hessian.tridiagonal_eigenvalues(alpha, beta)), np.sort(EIGENVALUES), atol=1e-3)


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
    spec = Spec(
        model=model,
        optimizer=optax.identity(),
        schedule=lambda s: 0.1,
        train_size=32,
        batch_size=16,
        mean=(0.0,),
        std=(1.0,),
    )
    return spec, params, mask, x, y


def exact_restricted_hessian(spec, params, mask, x, y):
    flat, unravel = ravel_pytree(params)

    def mean_loss(f):
        p = unravel(f)
        return jnp.mean(
            jnp.stack([loss_fn(spec, p, {}, mask, x[b], y[b], jnp.ones(16), False)[0] for b in range(x.shape[0])])
        )

    h = np.asarray(jax.jit(jax.hessian(mean_loss))(flat), np.float64)
    keep = np.asarray(ravel_pytree(mask)[0]) > 0
    return h[keep][:, keep]


@pytest.mark.parametrize("method,steps,rel", [("lanczos", 60, 1e-3), ("power", 200, 2e-2)])
def test_top_eigenvalue_and_trace_of_a_tiny_mlp_match_jax_hessian_on_the_unpruned_coordinates(method, steps, rel):
    spec, params, mask, x, y = tiny_mlp_problem()
    restricted = exact_restricted_hessian(spec, params, mask, x, y)
    # train.loss_fn masks the parameters: the Hessian is already zero on the pruned coordinates
    lam, samples = jax.jit(
        lambda p, k: hessian.sharpness(spec, p, {}, mask, x, y, k, steps=steps, probes=4000, method=method)
    )(params, jax.random.key(7))
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


def scaled_quadratic(eigenvalues, scale, seed=0):
    """``scale · Q diag(eigenvalues) Qᵀ`` (float32) as a matvec over a flat vector."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    a = jnp.asarray(scale * (q @ np.diag(eigenvalues) @ q.T), jnp.float32)
    return lambda v: a @ v


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e-6, 1e-8])
def test_lanczos_does_not_stop_early_on_an_operator_of_small_scale(scale):
    # A memorised network's Hessian has eigenvalues of order 1e-6 and below: the breakdown test must
    # be relative to the operator, not to 1. Full dimension: the Ritz values are the spectrum.
    matvec = scaled_quadratic(EIGENVALUES, scale)
    v0 = jax.random.normal(jax.random.key(1), (8,))
    alpha, beta = hessian.lanczos(matvec, v0, 8)
    assert bool(jnp.all(beta > 0)), np.asarray(beta)
    np.testing.assert_allclose(np.asarray(hessian.ritz_values(alpha, beta)) / scale, np.sort(EIGENVALUES), atol=1e-4)
    top = hessian.top_eigenvalue(matvec, v0, 8)
    assert float(top) / scale == pytest.approx(EIGENVALUES.max(), rel=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e-7])
def test_negative_definite_operator_with_an_invariant_start_reports_its_own_top_eigenvalue(scale):
    # -scale·I: the start vector spans an invariant subspace at once; the zero rows after the breakdown
    # are not Ritz values (λmax was reported as 0, the true value is -scale).
    def matvec(v):
        return -scale * v

    v0 = jax.random.normal(jax.random.key(4), (12,))
    alpha, beta = hessian.lanczos(matvec, v0, 6)
    chex.assert_trees_all_equal(beta, jnp.zeros(5))
    assert float(hessian.top_eigenvalue(matvec, v0, 6)) == pytest.approx(-scale, rel=1e-6)
    ritz = np.asarray(hessian.ritz_values(alpha, beta))
    assert ritz[0] == pytest.approx(-scale, rel=1e-6) and np.isnan(ritz[1:]).all()


def test_ritz_values_keep_only_the_leading_block_of_a_broken_down_tridiagonal():
    alpha = jnp.array([-1.0, -2.0, 0.0, 0.0], jnp.float32)
    beta = jnp.array([0.5, 0.0, 0.0], jnp.float32)
    ritz = np.asarray(hessian.ritz_values(alpha, beta))
    np.testing.assert_allclose(ritz[:2], np.linalg.eigvalsh(np.array([[-1.0, 0.5], [0.5, -2.0]])), rtol=1e-6)
    assert np.isnan(ritz[2:]).all()


def test_lanczos_on_an_operator_of_ordinary_scale_is_plain_lanczos():
    # No breakdown: the largest Ritz value is the top eigenvalue of the whole tridiagonal, bit for bit.
    matvec = scaled_quadratic(np.linspace(-2.0, 7.0, 40), 1.0, seed=2)
    v0 = jax.random.normal(jax.random.key(3), (40,))
    alpha, beta = hessian.lanczos(matvec, v0, 12)
    assert bool(jnp.all(beta > 0))
    plain = hessian.tridiagonal_eigenvalues(alpha, beta)
    chex.assert_trees_all_equal(hessian.ritz_values(alpha, beta), plain)
    chex.assert_trees_all_equal(hessian.top_eigenvalue(matvec, v0, 12), plain[-1])


@pytest.mark.parametrize("scale", [1.0, 1e-7])
def test_lanczos_on_a_masked_tiny_mlp_hessian_of_any_scale_matches_jax_hessian(scale):
    # The loss of a memorised network is near zero and so is its Hessian: scaling the loss scales it.
    spec, params, mask, x, y = tiny_mlp_problem()
    restricted = scale * exact_restricted_hessian(spec, params, mask, x, y)

    def loss(p):
        return scale * jnp.mean(
            jnp.stack([loss_fn(spec, p, {}, mask, x[b], y[b], jnp.ones(16), False)[0] for b in range(x.shape[0])])
        )

    hvp = hessian.masked_hvp(loss, params, mask)
    v0 = hessian.gaussian_like(jax.random.key(7), params, mask)
    alpha, beta = jax.jit(lambda v: hessian.lanczos(hvp, v, 30))(v0)
    assert bool(jnp.all(beta > 0))
    exact = np.linalg.eigvalsh(restricted)
    assert float(hessian.top_eigenvalue(hvp, v0, 30)) == pytest.approx(exact[-1], rel=1e-3)
    assert float(hessian.ritz_values(alpha, beta)[0]) == pytest.approx(exact[0], rel=1e-2, abs=1e-3 * scale)
