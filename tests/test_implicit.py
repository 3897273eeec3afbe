"""ROS2CG: the matrix-free Rosenbrock-W solver against Tsit5, expm and its order."""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import gdflow as gf
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
