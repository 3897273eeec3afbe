"""Hessian eigenvalues by Lanczos against dense ``eigh(jax.hessian(...))``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdflow as gf
from gdflow._spectrum import hessian_eigs, spectrum_along


def _dense_hessian(loss, params, args):
    """The full Hessian by jax.hessian (jitted: eager jacfwd-of-jacrev takes seconds)."""
    x, unravel = ravel_pytree(params)
    hess = jax.jit(jax.hessian(lambda y, args: loss(unravel(y), *args)))
    return np.asarray(hess(x, args))


def _dense_eigs(loss, params, args):
    H = _dense_hessian(loss, params, args)
    assert np.allclose(H, H.T, atol=1e-12)
    return np.linalg.eigvalsh(H)


@pytest.fixture(scope="module")
def small_mlp():
    """A 8-12-12-3 tanh net (276 weights + 27 biases) at a point with indefinite Hessian."""
    kx, ky, kp = jax.random.split(jax.random.key(1), 3)
    X = jax.random.normal(kx, (40, 8))
    y = jax.random.randint(ky, (40,), 0, 3)
    return gf.problems.mlp(
        X, y, widths=(12, 12), activation="tanh", bias=True, key=kp, init_scale=1.5
    )


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - b) / np.abs(b))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_extremes_match_dense_eigh(activation):
    kx, ky, kp = jax.random.split(jax.random.key(2), 3)
    X = jax.random.normal(kx, (40, 8))
    y = jax.random.randint(ky, (40,), 0, 3)
    problem = gf.problems.mlp(X, y, widths=(12, 12), activation=activation, key=kp, init_scale=1.5)
    args = (problem.data,)
    ev = _dense_eigs(problem.loss, problem.params0, args)
    assert ev[0] < -1e-2 < 1e-2 < ev[-1]  # genuinely indefinite
    for k in (1, 3):
        res = hessian_eigs(problem.loss, problem.params0, k=k, args=args)
        assert res.converged
        assert res.eigenvalues.shape == (2 * k,)
        assert _rel(res.eigenvalues, np.concatenate([ev[:k], ev[-k:]])) < 1e-6
        assert res.hvps < ev.size  # far fewer HVPs than parameters
    lo = hessian_eigs(problem.loss, problem.params0, 2, "smallest", args=args)
    hi = hessian_eigs(problem.loss, problem.params0, 2, "largest", args=args)
    assert _rel(lo.eigenvalues, ev[:2]) < 1e-6 and _rel(hi.eigenvalues, ev[-2:]) < 1e-6
    assert float(lo.lambda_min) == pytest.approx(ev[0], rel=1e-6)
    assert float(hi.lambda_max) == pytest.approx(ev[-1], rel=1e-6)


def test_eigenvectors_residuals_and_pytrees(small_mlp):
    problem, args = small_mlp, (small_mlp.data,)
    res = hessian_eigs(problem.loss, problem.params0, k=2, args=args)
    H = _dense_hessian(problem.loss, problem.params0, args)
    Y = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(Y @ Y.T, np.eye(4), atol=1e-10)
    true_res = np.linalg.norm(H @ Y.T - Y.T * np.asarray(res.eigenvalues), axis=0)
    np.testing.assert_allclose(true_res, res.residuals, rtol=1e-3, atol=1e-12)
    assert np.all(true_res <= 1e-6 * np.max(np.abs(np.asarray(res.eigenvalues))))
    v = res.vector(0)  # a pytree shaped like the parameters (dicts with W and b)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(problem.params0)


def test_eigsh_agrees(small_mlp):
    problem, args = small_mlp, (small_mlp.data,)
    ev = _dense_eigs(problem.loss, problem.params0, args)
    res = hessian_eigs(problem.loss, problem.params0, args=args, method="eigsh")
    assert res.method == "eigsh" and res.hvps > 0
    assert _rel(res.eigenvalues, ev[[0, -1]]) < 1e-6


def test_warm_start_reduces_hvps(small_mlp):
    problem, args = small_mlp, (small_mlp.data,)
    p0 = problem.params0
    g = problem.grad(p0)
    p1 = jax.tree_util.tree_map(lambda p, d: p - 0.02 * d, p0, g)  # a nearby point
    first = hessian_eigs(problem.loss, p0, args=args)
    cold = hessian_eigs(problem.loss, p1, args=args)
    warm = hessian_eigs(problem.loss, p1, args=args, v0=first)
    ev = _dense_eigs(problem.loss, p1, args)
    assert _rel(warm.eigenvalues, ev[[0, -1]]) < 1e-6
    assert warm.hvps < cold.hvps


def test_quadratic_exact_and_warm_start_from_eigenvectors():
    d = jnp.concatenate(
        [jnp.array([-2.0, -1.5]), jnp.linspace(-1.0, 5.0, 56), jnp.array([6.5, 7.0])]
    )
    Q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(3), (60, 60)))
    A = Q @ jnp.diag(d) @ Q.T

    def loss(th, A):
        return 0.5 * th @ A @ th

    res = hessian_eigs(loss, jnp.zeros(60), k=2, args=(A,))
    np.testing.assert_allclose(res.eigenvalues, [-2.0, -1.5, 6.5, 7.0], rtol=1e-10)
    cold = hessian_eigs(loss, jnp.ones(60), args=(A,))
    # From the exact extreme eigenvectors (plus the 1e-3 random part mixed into every warm
    # start) far fewer steps are needed.
    warm = hessian_eigs(loss, jnp.ones(60), args=(A,), v0=res.eigenvectors[jnp.array([0, 3])])
    np.testing.assert_allclose(warm.eigenvalues, [-2.0, 7.0], rtol=1e-10)
    assert warm.hvps <= 0.6 * cold.hvps


def test_repeated_eigenvalues_and_tiny_problems():
    def loss(th, s):
        return 0.5 * s * jnp.sum(th**2)

    # H = 2 I: one Krylov sequence sees the eigenvalue once; the solver restarts to find k.
    res = hessian_eigs(loss, jnp.zeros(5), k=2, which="smallest", args=(2.0,))
    np.testing.assert_allclose(res.eigenvalues, [2.0, 2.0], rtol=1e-12)
    one = hessian_eigs(loss, jnp.zeros(1), args=(3.0,))
    np.testing.assert_allclose(one.eigenvalues, [3.0, 3.0], rtol=1e-12)


def test_spectrum_along_gd_path(small_mlp):
    problem, args = small_mlp, (small_mlp.data,)
    traj = gf.gd(problem, 0.05, 8)
    warm = spectrum_along(problem.loss, traj, args=args, progress=False)
    cold = spectrum_along(problem.loss, traj, args=args, progress=False, warm_start=False)
    assert warm.eigenvalues.shape == (9, 2) and warm.hvps.shape == (9,)
    for i in (0, 4, 8):
        ev = _dense_eigs(problem.loss, traj.at(i), args)
        assert _rel(warm.eigenvalues[i], ev[[0, -1]]) < 1e-6
        assert float(cold.lambda_min[i]) == pytest.approx(ev[0], rel=1e-6)
    assert warm.hvps[2:].sum() < cold.hvps[2:].sum()
    np.testing.assert_allclose(warm.ts, traj.ts)
    sub = spectrum_along(problem.loss, traj, args=args, which="smallest", every=3)
    np.testing.assert_allclose(sub.ts, traj.ts[jnp.array([0, 3, 6, 8])])


def test_bad_input(small_mlp):
    problem, args = small_mlp, (small_mlp.data,)
    with pytest.raises(ValueError, match="which"):
        hessian_eigs(problem.loss, problem.params0, which="middle", args=args)
    with pytest.raises(TypeError, match="k"):
        hessian_eigs(problem.loss, problem.params0, k=1.5, args=args)
    with pytest.raises(ValueError, match="v0"):
        hessian_eigs(problem.loss, problem.params0, args=args, v0=jnp.ones(7))
    with pytest.raises(ValueError, match="method"):
        hessian_eigs(problem.loss, problem.params0, args=args, method="power")
    res = hessian_eigs(problem.loss, problem.params0, which="largest", args=args)
    with pytest.raises(ValueError, match="both"):
        _ = res.lambda_min
    with pytest.warns(RuntimeWarning, match="max_iters"):
        bad = hessian_eigs(problem.loss, problem.params0, args=args, max_iters=4)
    assert not bad.converged and bad.hvps == 4
    with pytest.raises(TypeError, match="Trajectory"):
        spectrum_along(problem.loss, problem.params0, args=args)


@pytest.mark.parametrize(
    ("diag", "k", "which"),
    [
        ((1, 1, 1, 5, 5), 2, "smallest"),
        ((1, 1, 1, 5, 5), 2, "both"),
        ((1, 2, 3, 3, 3, 9), 3, "largest"),
    ],
)
def test_repeated_extreme_eigenvalue_is_not_hidden(diag, k, which):
    # From the all-ones start the Krylov space is invariant after len(set(diag)) steps and
    # every residual is zero; the repeated extreme eigenvalue lies outside it.
    H = jnp.diag(jnp.asarray(diag, jnp.float64))
    res = hessian_eigs(lambda th: 0.5 * th @ H @ th, jnp.ones(len(diag)), k=k, which=which)
    ev = np.sort(np.asarray(diag, float))
    want = {"smallest": ev[:k], "largest": ev[-k:], "both": np.concatenate([ev[:k], ev[-k:]])}
    np.testing.assert_allclose(res.eigenvalues, want[which], atol=1e-12)
    assert res.converged


def test_spectrum_functions_take_a_problem_like_every_entry_point():
    H = jnp.diag(jnp.array([-1.0, 0.5, 2.0]))
    problem = gf.problems.quadratic(H, params0=jnp.array([0.3, -0.2, 1.0]))
    direct = gf.hessian_eigs(problem.loss, problem.params0, args=(problem.data,))
    via = gf.hessian_eigs(problem)
    np.testing.assert_allclose(float(via.lambda_min), -1.0, atol=1e-8)
    np.testing.assert_allclose(float(via.lambda_max), 2.0, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(via.eigenvalues), np.asarray(direct.eigenvalues))
    traj = gf.gd(problem, 0.1, 4, save_every=2)
    path = gf.spectrum_along(problem, traj)
    np.testing.assert_allclose(np.asarray(path.lambda_max), [2.0, 2.0, 2.0], atol=1e-8)
    with pytest.raises(TypeError, match="pass the Problem itself"):
        gf.spectrum_along(problem.loss, traj)  # the data was forgotten
    with pytest.raises(ValueError, match="`args`: a Problem carries its data"):
        gf.hessian_eigs(problem, args=(problem.data,))
