"""Gradient flow against expm, order of GD as Euler, and the solver's failure modes."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import gdflow as gf


def _spd(d, low, high, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return Q @ np.diag(np.geomspace(low, high, d)) @ Q.T


def test_gradient_flow_matches_expm():
    H = _spd(5, 0.1, 4.0)
    c = np.linspace(-1, 1, 5)
    th0 = np.ones(5)
    problem = gf.problems.quadratic(H, center=c, params0=th0)
    ts = np.linspace(0, 3.0, 13)
    flow = gf.gradient_flow(problem, 3.0, ts=ts, rtol=1e-11, atol=1e-13)
    for t, th in zip(ts, np.asarray(flow.params)):
        np.testing.assert_allclose(th, c + sl.expm(-t * H) @ (th0 - c), atol=1e-8)
    # Dense evaluation at other times re-solves accurately (any order of times).
    want = np.array([2.2, 0.35, 1.1])
    got = np.asarray(flow.evaluate(want))
    for t, th in zip(want, got):
        np.testing.assert_allclose(th, c + sl.expm(-t * H) @ (th0 - c), atol=1e-8)
    assert flow.stats["grad_evals"] > 0 and flow.continuous


def test_implicit_solver_on_stiff_quadratic():
    H = _spd(4, 1e-2, 1e4, seed=3)
    problem = gf.problems.quadratic(H, params0=np.ones(4))
    flow = gf.gradient_flow(problem, 5.0, ts=[0.0, 5.0], solver="implicit", rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(flow.final), sl.expm(-5.0 * H) @ np.ones(4), atol=1e-7)
    assert flow.stats["grad_evals"] is None  # not counted for implicit solvers


def test_gd_is_first_order_euler_on_gradient_flow(nonquadratic):
    problem = nonquadratic
    T = 2.0
    ref = gf.gradient_flow(problem, T, ts=[0.0, T], rtol=1e-12, atol=1e-14).final
    lrs = np.array([0.1, 0.05, 0.025, 0.0125])
    errs = [
        float(jnp.linalg.norm(gf.gd(problem, lr, int(round(T / lr))).final - ref)) for lr in lrs
    ]
    assert abs(gf.fit_order(lrs, errs) - 1.0) < 0.1


def test_custom_field_and_float32_state():
    problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 2.0])), params0=jnp.ones(2))

    def twice(params, data):  # -2∇L: the same path at double speed
        return jax.tree_util.tree_map(lambda g: -2.0 * g, jax.grad(problem.loss)(params, data))

    fast = gf.gradient_flow(problem, 1.0, ts=[1.0], field=twice, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(fast.final), np.exp(-2.0 * np.array([1.0, 2.0])), atol=1e-8
    )
    # A float32 state with x64 on: times are cast to the state's dtype.
    p32 = gf.problems.quadratic(jnp.eye(2, dtype=jnp.float32), params0=jnp.ones(2, jnp.float32))
    flow = gf.gradient_flow(p32, 1.0)
    assert flow.final.dtype == jnp.float32 and flow.ts.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(flow.final), np.exp(-1.0) * np.ones(2), rtol=1e-5)


def test_another_tolerance_or_horizon_reuses_the_compiled_solve():
    # Tolerances and horizon are traced: a solve at another rtol/atol or t1 (a check
    # solve, a second step size's horizon) traces the field no more often than a repeated
    # identical solve does (which only validates it), and each result is still expm's.
    H = _spd(3, 0.5, 2.0, seed=1)
    th0 = np.ones(3)
    problem = gf.problems.quadratic(H, params0=th0)
    traced = []

    def field(params, data):
        traced.append(1)
        return jax.tree_util.tree_map(jnp.negative, jax.grad(problem.loss)(params, data))

    runs = [(1.0, 1e-8, 1e-10), (1.0, 1e-8, 1e-10), (1.0, 1e-10, 1e-12), (2.5, 1e-9, 1e-11)]
    counts = []
    for t1, rtol, atol in runs:
        flow = gf.gradient_flow(problem, t1, ts=[0.0, t1], field=field, rtol=rtol, atol=atol)
        want = sl.expm(-t1 * H) @ th0
        np.testing.assert_allclose(np.asarray(flow.final), want, atol=100 * rtol)
        counts.append(len(traced))
    repeat = counts[1] - counts[0]
    assert counts[0] > repeat  # the first solve traced the field inside the solver
    assert counts[2] - counts[1] == repeat and counts[3] - counts[2] == repeat


def test_pytree_params_flow_and_gd():
    def loss(p, batch):
        return jnp.mean(0.5 * jnp.sum(p["a"] ** 2) + 0.5 * 3.0 * p["b"] ** 2 + 0 * batch["x"])

    problem = gf.Problem(loss, {"x": jnp.zeros(2)}, {"a": jnp.ones(2), "b": jnp.asarray(1.0)})
    flow = gf.gradient_flow(problem, 1.0, ts=[0.0, 1.0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(flow.final["b"]), np.exp(-3.0), atol=1e-8)
    traj = gf.gd(problem, 0.1, 10)
    np.testing.assert_allclose(np.asarray(traj.final["a"]), 0.9**10 * np.ones(2), atol=1e-12)
    assert traj.flat().shape == (11, 3)


def test_bad_times_and_solver():
    problem = gf.problems.quadratic(jnp.eye(2), params0=jnp.ones(2))
    for t1 in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`t1`"):
            gf.gradient_flow(problem, t1)
    with pytest.raises(ValueError, match="`ts`"):
        gf.gradient_flow(problem, 1.0, ts=[0.0, 2.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        gf.gradient_flow(problem, 1.0, ts=[0.5, 0.2])
    with pytest.raises(ValueError, match="`solver`"):
        gf.gradient_flow(problem, 1.0, solver="rk99")
    with pytest.raises(ValueError, match="`rtol`"):
        gf.gradient_flow(problem, 1.0, rtol=-1.0)
    with pytest.raises(ValueError, match="dt0"):
        gf.gradient_flow(problem, 1.0, solver=diffrax.Euler())


def test_solver_giving_up_says_why_and_keeps_partial_result():
    H = np.diag([1.0, 1e5])
    problem = gf.problems.quadratic(H, params0=np.ones(2))
    with pytest.raises(gf.FlowError, match="max_steps=50") as info:
        gf.gradient_flow(problem, 10.0, ts=np.linspace(0, 10, 11), max_steps=50)
    partial = info.value.trajectory
    assert 1 <= len(partial) < 11 and np.all(np.isfinite(np.asarray(partial.loss)))
    assert "implicit" in str(info.value)


def test_discrete_trajectory_evaluates_only_at_its_times():
    problem = gf.problems.quadratic(jnp.eye(2), params0=jnp.ones(2))
    traj = gf.gd(problem, 0.1, 10)
    np.testing.assert_allclose(np.asarray(traj.evaluate([0.3])[0]), 0.9**3 * np.ones(2))
    with pytest.raises(ValueError, match="discrete"):
        traj.evaluate([0.25])


def test_fit_order_recovers_slopes_and_rejects_bad_input():
    hs = np.array([0.1, 0.05, 0.025])
    assert gf.fit_order(hs, 3 * hs**2) == pytest.approx(2.0, abs=1e-12)
    with pytest.raises(ValueError):
        gf.fit_order(hs, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        gf.fit_order([0.1], [1.0])
    with pytest.raises(ValueError):
        gf.fit_order([0.1, 0.1], [1.0, 2.0])


@pytest.mark.parametrize(
    ("solver", "kwargs"),
    [
        ("tsit5", {}),
        ("tsit5", {"dt0": 0.1}),
        ("tsit5", {"rtol": 1e-4, "atol": 1e-7}),
        ("tsit5", {"rtol": 1e-6, "atol": 1e-9, "diag": (1.0, 3.0)}),  # no rejection: exact
        ("dopri5", {"rtol": 1e-3, "atol": 1e-6}),
        (diffrax.Euler(), {"dt0": 0.25}),
        (diffrax.Heun(), {"dt0": 0.25}),
    ],
)
def test_grad_evals_count_the_field_calls(solver, kwargs):
    # The oracle: the field's own calls, counted on the host as the solve runs.
    kwargs = dict(kwargs)
    smooth = "diag" in kwargs  # a mild spectrum: no rejected step, so the exact branch
    diag = jnp.array(kwargs.pop("diag", (1.0, 3.0, 30.0)))
    problem = gf.problems.quadratic(jnp.diag(diag), params0=jnp.ones(diag.size))
    calls = []

    def field(params, data):
        jax.debug.callback(lambda: calls.append(1))
        return jax.tree_util.tree_map(jnp.negative, jax.grad(problem.loss)(params, data))

    opts = {"rtol": 1e-7, "atol": 1e-10, **kwargs}
    flow = gf.gradient_flow(problem, 2.0, ts=[0.0, 2.0], field=field, solver=solver, **opts)
    jax.effects_barrier()
    st = flow.stats
    assert st["num_rejected_steps"] == 0 or not smooth
    if st["num_rejected_steps"] == 0:
        assert st["grad_evals_exact"] and st["grad_evals"] == len(calls) > 0
    else:
        # an FSAL solver re-evaluates its first stage on each attempt before the first
        # accepted step, which the step counts cannot see: a lower bound, flagged inexact
        assert st["grad_evals_exact"] is False
        assert st["grad_evals"] <= len(calls) <= st["grad_evals"] + st["num_rejected_steps"]
