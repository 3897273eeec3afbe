"""GD-vs-GF distances and the error estimate, against closed forms on quadratics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

import gdflow as gf
from gdflow._gap import distance, error_estimate


def _rotated(d, seed):
    d = jnp.asarray(d)
    Q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(seed), (d.size, d.size)))
    return Q @ jnp.diag(d) @ Q.T


def _closed_form_gap(H, theta0, lr, K):
    """|(I - lr H)^k θ0 - exp(-k lr H) θ0| for k = 0..K (NumPy oracle)."""
    H, theta0 = np.asarray(H), np.asarray(theta0)
    A, E = np.eye(len(H)) - lr * H, expm(-lr * H)
    gd, fl, out = theta0.copy(), theta0.copy(), []
    for _ in range(K + 1):
        out.append(np.linalg.norm(gd - fl))
        gd, fl = A @ gd, E @ fl
    return np.array(out)


@pytest.mark.parametrize(
    "d, lr, K",
    [
        ([1.0], 1.0, 15),  # lr * lambda = 1: GD jumps to the minimum at once
        ([2.0, 0.5, 0.05], 0.5, 40),
        ([4.0, 1.0, 0.3, 0.01], 0.25, 60),
        ([1.0, 0.0], 0.5, 30),  # convex but singular: lambda_min = 0
    ],
)
def test_estimate_bounds_gd_gf_distance_on_convex_quadratics(d, lr, K):
    H = _rotated(d, seed=len(d))
    problem = gf.problems.quadratic(H, center=0.3 * jnp.ones(len(d)), params0=jnp.ones(len(d)))
    gd = gf.gd(problem, lr, K)
    flow = gf.gradient_flow(problem, K * lr, ts=lr * jnp.arange(K + 1), rtol=1e-11, atol=1e-13)
    gap = np.asarray(distance(gd, flow))
    oracle = _closed_form_gap(H, 0.7 * np.ones(len(d)), lr, K)
    np.testing.assert_allclose(gap, oracle, atol=1e-9)
    est = error_estimate(problem, flow, lr)
    e = np.asarray(est.estimate)
    assert e.shape == (K + 1,) and e[0] == 0.0
    assert np.all(e >= gap - 1e-9)  # a bound here (lr * lambda_max <= 1, convex)
    assert e.max() <= 4 * gap.max()  # and not a loose one at its peak
    np.testing.assert_allclose(est.lambda_min, min(d), atol=1e-9)
    np.testing.assert_allclose(est.integral, min(d) * np.asarray(est.ts), atol=1e-9)
    # A flow saved every 5th step gives nearly the same estimate at its times (the local
    # errors are interpolated between saved points, an overestimate when they fall fast).
    sub = flow[::5]
    coarse = np.asarray(error_estimate(problem, sub, lr).estimate)
    np.testing.assert_allclose(coarse, e[::5], rtol=0.25)
    assert np.all(coarse >= gap[::5] - 1e-9)


def test_estimate_ingredients_on_a_small_network():
    kx, ky, kp = jax.random.split(jax.random.key(4), 3)
    X = jax.random.normal(kx, (30, 5))
    y = jax.random.randint(ky, (30,), 0, 3)
    problem = gf.problems.mlp(X, y, widths=(6, 6), activation="tanh", key=kp)
    lr, K = 0.1, 12
    flow = gf.gradient_flow(problem, K * lr, ts=lr * jnp.arange(K + 1), rtol=1e-9, atol=1e-11)
    est = error_estimate(problem, flow, lr, eig_every=4)
    assert est.spectrum.ts.shape == (4,)  # points 0, 4, 8, 12
    # Local error and lambda_min at one point from the dense Hessian.
    from jax.flatten_util import ravel_pytree

    x, unravel = ravel_pytree(flow.at(4))

    def f(y, data):
        return problem.loss(unravel(y), data)

    H = np.asarray(jax.jit(jax.hessian(f))(x, problem.data))
    g = np.asarray(jax.jit(jax.grad(f))(x, problem.data))
    assert float(est.local_errors[4]) == pytest.approx(0.5 * lr**2 * np.linalg.norm(H @ g), 1e-9)
    assert float(est.lambda_min[4]) == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-6)
    gap = np.asarray(distance(gf.gd(problem, lr, K), flow))
    assert np.all(np.asarray(est.estimate)[1:] > 0) and np.all(gap[1:] > 0)
    # Small step, short horizon: the estimate is of the right size.
    assert 0.25 < est.estimate[-1] / gap[-1] < 4


def test_distance_to_itself_is_zero():
    problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 3.0])), params0=jnp.ones(2))
    gd = gf.gd(problem, 0.1, 10)
    assert np.all(np.asarray(distance(gd, gd)) == 0.0)
    flow = gf.gradient_flow(problem, 1.0, ts=0.1 * jnp.arange(11), rtol=1e-10, atol=1e-12)
    assert np.max(np.asarray(distance(flow, flow))) < 1e-12


def test_distance_between_step_sizes_uses_matching_times():
    H = jnp.diag(jnp.array([1.0, 3.0]))
    problem = gf.problems.quadratic(H, params0=jnp.ones(2))
    coarse = gf.gd(problem, 0.1, 10)
    fine = gf.gd(problem, 0.05, 20, save_every=2)
    finer = gf.gd(problem, 0.05, 20)  # a superset of coarse's times also works
    k = np.arange(11)
    want = np.sqrt(
        ((1 - 0.1 * 1) ** k - (1 - 0.05 * 1) ** (2 * k)) ** 2
        + ((1 - 0.1 * 3) ** k - (1 - 0.05 * 3) ** (2 * k)) ** 2
    )
    np.testing.assert_allclose(distance(coarse, fine), want, atol=1e-12)
    np.testing.assert_allclose(distance(coarse, finer), want, atol=1e-12)
    with pytest.raises(ValueError, match="save_every"):
        distance(finer, coarse)  # coarse lacks the odd multiples of 0.05


def test_mismatched_structures_raise():
    a = gf.gd(gf.problems.quadratic(jnp.eye(2)), 0.1, 5)
    b = gf.gd(gf.problems.quadratic(jnp.eye(3)), 0.1, 5)
    with pytest.raises(ValueError, match="structure"):
        distance(a, b)
    X, y = jnp.ones((4, 3)), jnp.array([0, 1, 0, 1])
    n1 = gf.gd(gf.problems.mlp(X, y, widths=(4,)), 0.1, 3)
    n2 = gf.gd(gf.problems.mlp(X, y, widths=(4,), bias=True), 0.1, 3)
    with pytest.raises(ValueError, match="structure"):
        distance(n1, n2)
    with pytest.raises(TypeError, match="Trajectory"):
        distance(a, np.zeros((6, 2)))


def test_error_estimate_needs_the_step_grid():
    problem = gf.problems.quadratic(jnp.eye(2))
    flow = gf.gradient_flow(problem, 1.0, ts=jnp.linspace(0.0, 1.0, 7))
    with pytest.raises(ValueError, match="integer stride"):
        error_estimate(problem, flow, 0.1)
    with pytest.raises(ValueError, match="lr"):
        error_estimate(problem, flow, -0.1)


def test_float32_trajectories_match_times():
    # float32 times k*lr and (3k)*(lr/3) differ by ~1e-7 relative: still the same times.
    H = jnp.diag(jnp.array([1.0, 3.0], jnp.float32))
    problem = gf.problems.quadratic(H, params0=jnp.ones(2, jnp.float32))
    coarse = gf.gd(problem, 0.1, 100)
    fine = gf.gd(problem, 0.1 / 3, 300, save_every=3)
    assert coarse.ts.dtype == jnp.float32
    k = np.arange(101)
    want = np.hypot((0.9**k - (1 - 0.1 / 3) ** (3 * k)), (0.7**k - 0.9 ** (3 * k)))
    np.testing.assert_allclose(distance(coarse, fine), want, atol=1e-6)
    flow = gf.gradient_flow(problem, 10.0, ts=0.1 * jnp.arange(101, dtype=jnp.float32))
    est = error_estimate(problem, flow, 0.1)
    assert est.estimate.dtype == jnp.float32 and est.estimate.shape == (101,)


def test_error_estimate_reuses_a_spectrum_and_rejects_conflicts():
    H = _rotated(jnp.array([0.5, 1.0, 3.0]), 4)
    problem = gf.problems.quadratic(H, params0=jnp.ones(3))
    lr, K = 0.1, 30
    flow = gf.gradient_flow(problem, K * lr, ts=lr * jnp.arange(K + 1), rtol=1e-10, atol=1e-12)
    spec = gf.spectrum_along(problem.loss, flow, args=(problem.data,), progress=False)
    direct = error_estimate(problem, flow, lr)
    reused = error_estimate(problem, flow, lr, spectrum=spec)
    np.testing.assert_allclose(reused.estimate, direct.estimate, rtol=1e-9)
    np.testing.assert_allclose(direct.lambda_min, np.linalg.eigvalsh(np.asarray(H))[0], rtol=1e-9)
    with pytest.raises(ValueError, match="eig_every"):
        error_estimate(problem, flow, lr, spectrum=spec, eig_every=2)
    with pytest.raises(ValueError, match="which"):
        error_estimate(problem, flow, lr, which="largest")
    with pytest.raises(ValueError, match="gradient"):
        error_estimate(problem, gf.gd(problem, lr, K), lr)
