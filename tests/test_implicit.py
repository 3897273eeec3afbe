"""Matrix-free stiff solvers: ROS2CG and EXPRB32 against Tsit5, expm and their orders."""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import gdflow as gf
from gdflow._solvers._exprb import EXPRB32, phi
from gdflow._solvers._ros2 import ROS2CG


def _mlp():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 3)))
    y = jnp.asarray(rng.normal(size=(32,)))
    p = {
        "W0": jnp.asarray(rng.normal(size=(3, 6)) / np.sqrt(3)),
        "W1": jnp.asarray(rng.normal(size=(6,)) / np.sqrt(6)),
    }

    def loss(p, batch):
        x, y = batch
        return 0.5 * jnp.mean((jnp.tanh(x @ p["W0"]) @ p["W1"] - y) ** 2)

    return gf.Problem(loss, (x, y), p)


def test_matches_tsit5_on_a_nonstiff_flow():
    prob = _mlp()
    ts = np.linspace(0.0, 5.0, 6)
    ref = gf.gradient_flow(prob, 5.0, ts=ts, solver="tsit5", rtol=1e-12, atol=1e-14)
    got = gf.gradient_flow(prob, 5.0, ts=ts, solver=ROS2CG(cg_rtol=1e-8), rtol=1e-8, atol=1e-10)
    err = np.max(np.abs(got.flat() - ref.flat())) / np.max(np.abs(ref.flat()))
    assert err <= 1e-6
    assert got.stats["grad_evals"] > 0


def test_matches_expm_on_a_stiff_quadratic():
    H = np.diag(np.geomspace(1e-2, 1e4, 8))
    p0 = np.linspace(1.0, -1.0, 8)
    prob = gf.problems.quadratic(jnp.asarray(H), params0=jnp.asarray(p0))
    ts = np.array([0.0, 0.5, 2.0, 10.0])
    flow = gf.gradient_flow(prob, 10.0, ts=ts, solver=ROS2CG(cg_rtol=1e-8), rtol=1e-6, atol=1e-9)
    exact = np.stack([scipy.linalg.expm(-t * H) @ p0 for t in ts])
    # Local tolerance 1e-6; the global error accumulates over the steps: allow 10x.
    np.testing.assert_allclose(flow.flat(), exact, atol=1e-5)
    # Steps well below an explicit solver's stability bound, about lambda_max t1 / 3.3 = 3e4
    # for Tsit5 (the step count is not limited by lambda_max = 1e4: L-stability).
    assert flow.stats["num_steps"] < 5000


def test_order_two_with_constant_steps():
    solver, order = ROS2CG(cg_rtol=1e-12), 2
    H = np.diag([0.5, 2.0, 50.0])
    p0 = np.array([1.0, 1.0, 1.0])
    prob = gf.problems.quadratic(jnp.asarray(H), params0=jnp.asarray(p0))
    exact = scipy.linalg.expm(-1.0 * H) @ p0
    hs, errs = [], []
    for n in (20, 40, 80, 160):
        flow = gf.gradient_flow(
            prob,
            1.0,
            ts=[0.0, 1.0],
            solver=solver,
            dt0=1.0 / n,
            controller=diffrax.ConstantStepSize(),
        )
        hs.append(1.0 / n)
        errs.append(float(np.linalg.norm(flow.flat()[-1] - exact)))
    slope = scipy.stats.linregress(np.log(hs), np.log(errs)).slope
    assert order - 0.2 <= slope <= order + 0.3, (slope, errs)


def test_deflated_cg_matches_expm():
    # Three outlying eigenvalues, as network Hessians have: deflating them by the tracked
    # eigenvectors must leave the answer unchanged.
    H = np.diag([1e-2, 0.1, 0.5, 1.0, 2.0, 1e3, 3e3, 1e4])
    p0 = np.linspace(1.0, -1.0, 8)
    prob = gf.problems.quadratic(jnp.asarray(H), params0=jnp.asarray(p0))
    ts = np.array([0.0, 1.0, 5.0])
    flow = gf.gradient_flow(
        prob, 5.0, ts=ts, solver=ROS2CG(cg_rtol=1e-8, deflate=3), rtol=1e-6, atol=1e-9
    )
    exact = np.stack([scipy.linalg.expm(-t * H) @ p0 for t in ts])
    np.testing.assert_allclose(flow.flat(), exact, atol=1e-5)


def test_checks_arguments():
    with pytest.raises(ValueError, match="cg_rtol"):
        ROS2CG(cg_rtol=2.0)
    with pytest.raises(ValueError, match="cg_max_iters"):
        ROS2CG(cg_max_iters=0)
    with pytest.raises(ValueError, match="deflate"):
        ROS2CG(deflate=-1)
    with pytest.raises(ValueError, match="estimate"):
        ROS2CG(estimate="richardson")


# EXPRB32: exponential Rosenbrock with Lanczos phi-products (issue 12 item 3).


def _phi_exact(k, z):
    """phi_k(z) = sum_j z^j/(j+k)!: exact rational series for |z| <= 1, closed form else."""
    from fractions import Fraction
    from math import factorial

    if abs(z) <= 1:
        zf = Fraction(z)
        return float(sum(zf**j / factorial(j + k) for j in range(60)))
    return (np.exp(z) - sum(z**j / factorial(j) for j in range(k))) / z**k


def test_phi_functions_against_series_and_closed_form():
    z = np.array([-1e3, -20.0, -5.0, -1.0, -0.999, -1e-3, 0.0, 1e-6, 0.5, 0.999, 3.0])
    for k in (0, 1, 2, 3, 4):
        want = np.array([_phi_exact(k, float(x)) for x in z])
        np.testing.assert_allclose(np.asarray(phi(k, jnp.asarray(z))), want, rtol=1e-13)


def test_exprb32_one_step_is_exact_on_a_linear_flow():
    # y' = -H y: exprb32 is exact on linear fields (D = 0), whatever the step; the only
    # error is the Lanczos tolerance. One step of h = 1 across lambda h in [1e-2, 1e4].
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    H = Q @ np.diag(np.geomspace(1e-2, 1e4, 12)) @ Q.T
    y0 = rng.standard_normal(12)
    term = diffrax.ODETerm(lambda t, y, A: -(A @ y))
    solver = EXPRB32(krylov_tol=1e-12)
    state = solver.init(term, 0.0, 1.0, jnp.asarray(y0), jnp.asarray(H))
    y1, err, _, state, _ = solver.step(
        term, 0.0, 1.0, jnp.asarray(y0), jnp.asarray(H), state, False
    )
    exact = scipy.linalg.expm(-H) @ y0
    np.testing.assert_allclose(np.asarray(y1), exact, atol=1e-10 * np.linalg.norm(y0))
    assert float(jnp.max(jnp.abs(err))) <= 1e-10
    # Counted: init 1, F(U) and F(y1) 2, 2 per Lanczos HVP.
    assert int(state.evals) == 1 + 2 + 2 * int(state.hvps)


def test_exprb32_matches_expm_on_a_stiff_quadratic():
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    H = Q @ np.diag(np.geomspace(1e-2, 1e4, 8)) @ Q.T
    p0 = np.linspace(1.0, -1.0, 8)
    prob = gf.problems.quadratic(jnp.asarray(H), params0=jnp.asarray(p0))
    ts = np.array([0.0, 0.5, 2.0, 10.0])
    # Steps land on the save times (`step_ts`): the cubic Hermite dense output is not
    # exponential, so values between steps of length h >> 1/lambda_max are not accurate.
    controller = diffrax.PIDController(rtol=1e-6, atol=1e-9, step_ts=jnp.asarray(ts))
    flow = gf.gradient_flow(prob, 10.0, ts=ts, solver=EXPRB32(), controller=controller)
    exact = np.stack([scipy.linalg.expm(-t * H) @ p0 for t in ts])
    np.testing.assert_allclose(flow.flat(), exact, atol=1e-7)
    # Exact on linear flows: steps grow by the controller's factor (10) each time, where
    # an explicit solver needs ~ lambda_max t1 / 3.3 = 3e4 steps.
    assert flow.stats["num_steps"] <= 20
    assert flow.stats["grad_evals_exact"]


def test_exprb32_matches_tsit5_on_a_nonstiff_flow():
    prob = _mlp()
    ts = np.linspace(0.0, 5.0, 6)
    ref = gf.gradient_flow(prob, 5.0, ts=ts, solver="tsit5", rtol=1e-12, atol=1e-14)
    controller = diffrax.PIDController(rtol=1e-8, atol=1e-11, step_ts=jnp.asarray(ts))
    got = gf.gradient_flow(
        prob, 5.0, ts=ts, solver=EXPRB32(krylov_tol=1e-10), controller=controller
    )
    err = np.max(np.abs(got.flat() - ref.flat())) / np.max(np.abs(ref.flat()))
    assert err <= 1e-7
    assert got.stats["grad_evals"] > 0


def test_exprb32_order_three_with_constant_steps():
    # On a nonlinear flow (on a linear one it is exact): fitted order against a tight Tsit5.
    solver, order = EXPRB32(krylov_tol=1e-14), 3
    prob = _mlp()
    ref = gf.gradient_flow(prob, 2.0, ts=[0.0, 2.0], solver="tsit5", rtol=1e-13, atol=1e-15)
    hs, errs = [], []
    for n in (10, 20, 40, 80):
        flow = gf.gradient_flow(
            prob,
            2.0,
            ts=[0.0, 2.0],
            solver=solver,
            dt0=2.0 / n,
            controller=diffrax.ConstantStepSize(),
        )
        hs.append(2.0 / n)
        errs.append(float(np.linalg.norm(flow.flat()[-1] - ref.flat()[-1])))
    slope = scipy.stats.linregress(np.log(hs), np.log(errs)).slope
    assert order - 0.2 <= slope <= order + 0.3, (slope, errs)
    assert solver.order(None) == order


def test_exprb32_checks_arguments():
    for bad in (0.0, 1.0, -1e-3, float("nan"), "1e-8", True):
        with pytest.raises(ValueError, match="krylov_tol"):
            EXPRB32(krylov_tol=bad)
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="m_max"):
            EXPRB32(m_max=bad)
