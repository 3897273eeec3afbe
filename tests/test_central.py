"""Central flow, its SDCP and third-derivative products, against independent oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.stats

import gdflow as gf
from gdflow._central import _Cfg, _Counts, _d3, _field, central_flow, sdcp, third_derivative

# --- SDCP ------------------------------------------------------------------------------


def _random_instance(rng, k, rank=None):
    """alpha symmetric indefinite; beta a Gram operator of `rank` random symmetric g's."""
    n = k * (k + 1) // 2 if rank is None else rank
    P = n + 3
    g = rng.normal(size=(k, k, P))
    g = 0.5 * (g + g.transpose(1, 0, 2))
    if rank is not None:
        # Rank-deficient Gram: the g_ij span only `rank` directions.
        basis = np.linalg.qr(rng.normal(size=(P, rank)))[0]
        g = g @ basis @ basis.T
    gg = g.reshape(k * k, P)
    beta = (gg @ gg.T).reshape(k, k, k, k)
    M = rng.normal(size=(k, k))
    alpha = 0.5 * (M + M.T) - 0.5 * np.eye(k)
    return alpha, beta


def _reference(alpha, beta):
    """Independent solve: Burer–Monteiro Y = R R^T, L-BFGS on the smooth objective."""
    k = alpha.shape[0]
    Bm = beta.reshape(k * k, k * k)

    def fun(r):
        R = r.reshape(k, k)
        Y = R @ R.T
        BY = (Bm @ Y.ravel()).reshape(k, k)
        val = 0.5 * np.sum(Y * BY) + np.sum(alpha * Y)
        G = BY + alpha
        return val, (2 * G @ R).ravel()

    best = None
    for seed in range(3):
        r0 = np.random.default_rng(seed).normal(size=k * k)
        res = scipy.optimize.minimize(
            fun,
            r0,
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-14, "ftol": 1e-16, "maxiter": 20000},
        )
        if best is None or res.fun < best.fun:
            best = res
    R = best.x.reshape(k, k)
    return R @ R.T, best.fun


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_sdcp_random_complementarity_and_reference(k):
    rng = np.random.default_rng(k)
    for _ in range(6):
        alpha, beta = _random_instance(rng, k)
        sol = sdcp(alpha, beta)
        Y = np.asarray(sol.Y)
        A = alpha + np.einsum("ijkl,kl->ij", beta, Y)
        scale = 1 + np.linalg.norm(alpha)
        assert bool(sol.converged)
        assert np.linalg.eigvalsh(Y)[0] >= -1e-10
        assert np.linalg.eigvalsh(A)[0] >= -1e-10 * scale
        assert abs(np.sum(Y * A)) <= 1e-10 * scale
        Yref, fref = _reference(alpha, beta)
        f = 0.5 * np.sum(Y * np.einsum("ijkl,kl->ij", beta, Y)) + np.sum(alpha * Y)
        assert f <= fref + 1e-9 * (1 + abs(fref))
        # beta positive definite on symmetric matrices: the solution is unique.
        np.testing.assert_allclose(Y, Yref, atol=1e-5 * (1 + np.linalg.norm(Yref)))


def test_sdcp_k1_closed_form():
    rng = np.random.default_rng(0)
    for a, b in zip(rng.normal(size=20), rng.uniform(0.1, 5, size=20)):
        sol = sdcp(np.array([[a]]), np.array([[[[b]]]]))
        assert float(sol.Y[0, 0]) == pytest.approx(max(0.0, -a / b), rel=1e-14, abs=1e-300)


def test_sdcp_decoupled_k2_matches_closed_form():
    # A block-diagonal operator decouples the diagonal entries: each obeys the k = 1 form
    # and the off-diagonal vanishes. Here the accelerated projected gradient does the work.
    beta = np.zeros((2, 2, 2, 2))
    beta[0, 0, 0, 0], beta[1, 1, 1, 1], beta[0, 1, 0, 1], beta[1, 0, 1, 0] = 3.0, 2.0, 1.0, 1.0
    alpha = np.diag([-0.6, 0.4])
    Y = np.asarray(sdcp(alpha, beta).Y)
    np.testing.assert_allclose(Y, np.diag([0.2, 0.0]), atol=1e-12)


def test_sdcp_singular_operator_guard():
    rng = np.random.default_rng(5)
    alpha, beta = _random_instance(rng, 3, rank=2)
    sol = sdcp(alpha, beta)
    Y = np.asarray(sol.Y)
    A = alpha + np.einsum("ijkl,kl->ij", beta, Y)
    if bool(sol.converged):
        assert np.linalg.eigvalsh(Y)[0] >= -1e-10
        assert np.linalg.eigvalsh(A)[0] >= -1e-9
        assert abs(np.sum(Y * A)) <= 1e-9
    # The zero operator: bounded only for alpha >= 0.
    zero = np.zeros((2, 2, 2, 2))
    ok = sdcp(np.eye(2), zero)
    assert bool(ok.converged) and np.all(np.asarray(ok.Y) == 0)
    assert not bool(sdcp(-np.eye(2), zero).converged)


def test_sdcp_checks_shapes():
    with pytest.raises(ValueError, match="beta"):
        sdcp(np.eye(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="alpha"):
        sdcp(np.ones(3), np.zeros((3, 3, 3, 3)))


# --- third derivatives ------------------------------------------------------------------


def _mlp_problem(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, 3)))
    y = jnp.asarray(rng.normal(size=(n,)))
    p = {
        "W0": jnp.asarray(rng.normal(size=(3, 5)) / np.sqrt(3)),
        "b0": jnp.zeros(5),
        "W1": jnp.asarray(rng.normal(size=(5, 1)) / np.sqrt(5)),
    }

    def loss(p, batch):
        x, y = batch
        f = (jax.nn.swish(x @ p["W0"] + p["b0"]) @ p["W1"])[:, 0]
        return jnp.mean((f - y) ** 2)

    return gf.Problem(loss, (x, y), p)


def test_third_derivative_matches_finite_differences_of_hvps():
    prob = _mlp_problem()
    x, unravel = jax.flatten_util.ravel_pytree(prob.params0)
    rng = np.random.default_rng(1)
    u, v = (jnp.asarray(rng.normal(size=x.shape)) for _ in range(2))

    def hvp(y, w):
        return jax.jvp(jax.grad(lambda z: prob.loss(unravel(z), prob.data)), (y,), (w,))[1]

    eps = 1e-4
    fd = (hvp(x + eps * v, u) - hvp(x - eps * v, u)) / (2 * eps)
    g = third_derivative(prob.loss, prob.params0, unravel(u), unravel(v), prob.data)
    g = jax.flatten_util.ravel_pytree(g)[0]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8 * float(jnp.linalg.norm(fd)))
    # Symmetric in u, v (a third derivative is a symmetric tensor).
    f = lambda z: prob.loss(unravel(z), prob.data)  # noqa: E731
    np.testing.assert_allclose(_d3(f, x, u, v), _d3(f, x, v, u), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="structure"):
        third_derivative(prob.loss, prob.params0, jnp.ones(3), jnp.ones(3), prob.data)


# --- the flow ---------------------------------------------------------------------------


def test_central_flow_below_edge_is_gradient_flow():
    H = np.diag([1.0, 3.0, 5.0, 2.0])
    p0 = np.array([1.0, -0.5, 0.3, 0.8])
    prob = gf.problems.quadratic(jnp.asarray(H), params0=jnp.asarray(p0))
    lr, t1 = 0.1, 1.0  # lr * lambda_max = 0.5 < 2
    cf = central_flow(prob, lr, t1, k=2, guard=1, dt=0.01)
    res = cf.stats["results"]
    exact = np.stack([scipy.linalg.expm(-t * H) @ p0 for t in np.asarray(cf.ts)])
    np.testing.assert_allclose(cf.flat(), exact, atol=1e-9)
    assert np.all(res.Y == 0) and res.costs["third_derivatives"] == 0
    np.testing.assert_allclose(res.sharpness, 5.0, rtol=1e-10)
    np.testing.assert_allclose(res.predicted_loss, res.loss, rtol=0, atol=0)


def _xy_problem(p0):
    """L(x, y) = ½ (x y - 1)²: GF conserves x² - y², so its sharpness at the minimum is
    fixed by the start; the central flow must instead balance x and y to stay at 2/lr."""

    def loss(p, batch):
        del batch
        return 0.5 * (p[0] * p[1] - 1.0) ** 2

    return gf.Problem(loss, jnp.zeros((1,)), jnp.asarray(p0))


def test_field_k1_equals_closed_form_sigma():
    # The note's one-eigenvalue formula, from a dense Hessian and an autodiff gradient of
    # its top eigenvalue: sigma² = max(0, 2[(lr S - 2)/(lr tau) + <-grad L, grad S>]/|grad S|²).
    prob = _xy_problem([2.3, 0.2])
    lr, tau = 0.45, 0.05
    f = lambda z: prob.loss(z, prob.data)  # noqa: E731
    x = prob.params0

    def S(z):
        return jnp.linalg.eigvalsh(jax.hessian(f)(z))[-1]

    gS, gL = jax.grad(S)(x), jax.grad(f)(x)
    s = float(S(x))
    assert lr * s > 2  # above the edge here, so sigma² > 0
    want = max(
        0.0, 2 * ((lr * s - 2) / (lr * tau) + float(jnp.vdot(-gL, gS))) / float(jnp.vdot(gS, gS))
    )
    cfg = _Cfg(lr=lr, tau=tau, k=1, threshold=0.0, eig_iters=2, sdcp_tol=1e-12, sdcp_max_iters=100)
    zero = jnp.zeros((), jnp.int32)
    V = jnp.eye(2)
    out = _field(f, x, V, jnp.zeros((1, 1)), cfg, _Counts(*(zero,) * 6))
    Y = out[2]
    assert float(Y[0, 0]) == pytest.approx(want, rel=1e-9)
    # The field: -grad L - ½ sigma² grad S.
    np.testing.assert_allclose(out[0], -gL - 0.5 * want * gS, rtol=1e-9)


def test_central_flow_holds_the_edge_and_loss_decreases():
    prob = _xy_problem([2.0, 0.05])  # sharpness ~4 rising to ~4.5 along GF
    lr = 2 / 4.3
    gfl = gf.gradient_flow(prob, 12 * lr, ts=lr * np.arange(13))
    gf_sharp = [
        np.linalg.eigvalsh(jax.hessian(lambda z: prob.loss(z, None))(p))[-1] for p in gfl.params
    ]
    assert lr * max(gf_sharp) > 2.03  # GF crosses the edge
    overs = []
    for dt in (lr / 2, lr / 4, lr / 8):
        cf = central_flow(prob, lr, 12 * lr, k=1, guard=1, dt=dt, method="rk4")
        res = cf.stats["results"]
        overs.append(max(0.0, float(np.max(lr * res.sharpness)) - 2))
        assert np.all(np.diff(np.asarray(cf.loss)) <= 1e-12)
        assert np.any(res.at_edge)
    assert overs[-1] <= 1e-3
    assert overs[-1] <= overs[0] + 1e-12


def test_central_flow_order_of_convergence():
    # Start above the edge so that the constraint is active throughout (fixed active set):
    # the field is smooth there and RK4 must converge at order 4, Heun at order 2.
    prob = _xy_problem([2.3, 0.2])
    lr, tau, t1 = 0.45, 0.5, 2.0
    for method, order in (("heun", 2), ("rk4", 4)):
        ref = central_flow(
            prob, lr, t1, ts=[0.0, t1], k=1, guard=1, dt=t1 / 512, tau=tau, method=method
        )
        assert np.all(ref.stats["results"].at_edge)
        hs, errs = [], []
        for n in (16, 32, 64, 128):
            cf = central_flow(
                prob, lr, t1, ts=[0.0, t1], k=1, guard=1, dt=t1 / n, tau=tau, method=method
            )
            hs.append(t1 / n)
            errs.append(float(np.linalg.norm(cf.flat()[-1] - ref.flat()[-1])))
        slope = scipy.stats.linregress(np.log(hs), np.log(errs)).slope
        assert order - 0.3 <= slope <= order + 0.5, (method, slope, errs)


def test_central_flow_checks_input():
    prob = _xy_problem([2.0, 0.05])
    with pytest.raises(ValueError, match="lr"):
        central_flow(prob, -1.0, 1.0)
    with pytest.raises(ValueError, match="guard"):
        central_flow(prob, 0.1, 1.0, k=2, guard=1)
    with pytest.raises(ValueError, match="method"):
        central_flow(prob, 0.1, 1.0, k=1, method="rk45")
    with pytest.raises(ValueError, match="multiple"):
        central_flow(prob, 0.1, 1.05, k=1, dt=0.1)
    with pytest.raises(TypeError, match="Problem"):
        central_flow("p", 0.1, 1.0)
