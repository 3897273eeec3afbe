"""RKC2 against closed forms: its stability polynomial, expm on stiff quadratics, fitted order."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

import gdflow as gf
from gdflow._solvers._rkc import rkc2_stability_bound, rkc2_stability_polynomial


def _spd(d, low, high, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return Q @ np.diag(np.geomspace(low, high, d)) @ Q.T


def _linear_term():
    return diffrax.ODETerm(lambda t, y, A: -(A @ y))


def test_stability_bound_and_polynomial():
    # beta(s) = (1 + w0)/w1 >= 0.653 (s^2 - 1), the bound the stage choice relies on, and
    # ~ 0.6534 s^2 for large s (Sommeijer et al. 1997: 0.653 s^2).
    for s in (2, 3, 4, 7, 10, 31, 100, 200):
        beta = rkc2_stability_bound(s)
        assert 0.653 * (s * s - 1) <= beta <= 0.6545 * (s * s - 1)
        z = -np.linspace(0.0, beta, 20001)
        assert np.all(np.abs(rkc2_stability_polynomial(s, z)) <= 1 + 1e-12)
    # Beyond the bound it is unstable (for s >= 4, just beyond: by 2% of beta).
    for s in (4, 10, 50):
        assert np.abs(rkc2_stability_polynomial(s, -1.02 * rkc2_stability_bound(s))) > 1


@pytest.mark.parametrize("s", [2, 3, 8, 25])
def test_step_applies_the_stability_polynomial(s):
    # y' = -A y with A diagonal: one step multiplies mode k by R_s(-h a_k) exactly. This
    # checks the stage recurrences against the closed-form polynomial a_s + b_s T_s.
    a = np.array([0.0, 0.3, 2.0, 0.5 * rkc2_stability_bound(s), rkc2_stability_bound(s)])
    A = jnp.asarray(np.diag(a))
    y0 = jnp.ones(a.size)
    h = 1.0
    solver = gf.RKC2(num_stages=s)
    term = _linear_term()
    state = solver.init(term, 0.0, h, y0, A)
    y1, _, _, state, _ = solver.step(term, 0.0, h, y0, A, state, False)
    np.testing.assert_allclose(
        np.asarray(y1), rkc2_stability_polynomial(s, -h * a), rtol=1e-10, atol=1e-13
    )
    assert int(state.stages) == s and int(state.evals) == 1 + s


def test_stages_grow_like_sqrt_h_rho_and_stay_stable():
    a = np.geomspace(1e-2, 1e2, 6)
    A = jnp.asarray(np.diag(a))
    y0 = jnp.ones(a.size)
    term = _linear_term()
    solver = gf.RKC2(spectral_radius=float(a.max()))
    stages = []
    for hrho in (1.0, 1e2, 1e3, 1e4):
        h = hrho / a.max()
        state = solver.init(term, 0.0, h, y0, A)
        _, _, _, state, _ = solver.step(term, 0.0, h, y0, A, state, False)
        stages.append(int(state.stages))
        assert int(state.stages) == max(2, int(np.ceil(np.sqrt(1 + hrho / 0.653))))
    # s ~ sqrt(h rho / 0.653): stages / sqrt(h rho) -> 1.24 (the s^2 law of RKC).
    assert stages[0] == 2 and abs(stages[-1] / np.sqrt(1e4) - 1 / np.sqrt(0.653)) < 0.02
    # 100 fixed steps with h*rho = 1e4 (125 stages): every mode bounded, non-increasing.
    ys = diffrax.diffeqsolve(
        term,
        solver,
        0.0,
        1e4,
        100.0,
        y0,
        args=A,
        stepsize_controller=diffrax.ConstantStepSize(),
        saveat=diffrax.SaveAt(steps=True),
    ).ys
    ys = np.abs(np.asarray(ys)[:100])
    assert np.all(np.isfinite(ys)) and np.all(ys <= 1 + 1e-12)
    assert np.all(np.diff(ys[:, :2], axis=0) <= 1e-15)  # slow modes decay monotonically
    # The same step with too few stages (s = 10, beta ~ 65 << 1e4) blows up.
    bad = diffrax.diffeqsolve(
        term,
        gf.RKC2(num_stages=10),
        0.0,
        1000.0,
        100.0,
        y0,
        args=A,
        stepsize_controller=diffrax.ConstantStepSize(),
    ).ys
    assert not np.all(np.abs(np.asarray(bad)) < 1e3)


def test_power_iteration_estimates_spectral_radius():
    H = _spd(20, 1e-2, 50.0, seed=1)
    term = _linear_term()
    solver = gf.RKC2()
    state = solver.init(term, 0.0, 1.0, jnp.ones(20), jnp.asarray(H))
    # |Jv| <= rho from below; ten warm-up iterations get within a few percent here.
    assert 0.9 * 50.0 <= float(state.rho) <= 50.0 * (1 + 1e-12)
    assert int(state.evals) == 1 + 2 * 10  # F0 and ten JVPs at 2 evaluations each


def test_stiff_quadratic_matches_expm_with_fewer_evaluations():
    H = _spd(8, 1e-2, 1e3)
    c = np.linspace(-1, 1, 8)
    th0 = np.ones(8)
    problem = gf.problems.quadratic(H, center=c, params0=th0)
    ts = np.linspace(0.0, 5.0, 11)
    exact = np.stack([c + sl.expm(-t * H) @ (th0 - c) for t in ts])
    costs = {}
    for rtol in (1e-4, 1e-6):
        rkc = gf.gradient_flow(problem, 5.0, ts=ts, solver="rkc", rtol=rtol, atol=rtol * 1e-3)
        tsit = gf.gradient_flow(problem, 5.0, ts=ts, rtol=rtol, atol=rtol * 1e-3)
        # Global error a small multiple of rtol, at every save time (Hermite dense output).
        assert np.max(np.abs(np.asarray(rkc.params) - exact)) < 30 * rtol
        costs[rtol] = (rkc.stats["grad_evals"], tsit.stats["grad_evals"])
    # Tsit5 is stability-bound (h <~ 3.3/1000): the same ~1800 steps at both tolerances.
    # RKC2 pays ~sqrt(h rho) stages per step instead.
    assert costs[1e-4][0] < costs[1e-4][1] / 8
    assert costs[1e-6][0] < costs[1e-6][1] / 2.5


def test_grad_evals_are_counted_exactly():
    # Count the field's calls on the host. A JVP traces the field once, so it shows as
    # one call but is counted as 2 evaluations (the convention of RKC2).
    H = _spd(5, 1e-1, 1e2, seed=2)
    problem = gf.problems.quadratic(H, params0=np.ones(5))
    calls = []

    def field(params, data):
        jax.debug.callback(lambda: calls.append(1))
        return jax.tree_util.tree_map(jnp.negative, jax.grad(problem.loss)(params, data))

    def run(solver, **kwargs):
        calls.clear()
        flow = gf.gradient_flow(problem, 2.0, ts=[0.0, 2.0], field=field, solver=solver, **kwargs)
        return flow.stats, len(calls)

    fixed = dict(dt0=0.25, controller=diffrax.ConstantStepSize())
    # Given rho: 8 steps of s = ceil(sqrt(1 + 25/0.653)) = 7 stages, plus F0 at the start.
    stats, n = run(gf.RKC2(spectral_radius=100.0), **fixed)
    assert stats["grad_evals"] == n == 1 + 8 * 7 and stats["grad_evals_exact"]
    # Estimated rho: 10 JVPs in init and one at step 0 (every 10th step) on top.
    stats, n = run(gf.RKC2(), **fixed)
    assert stats["grad_evals"] == n + 11 and stats["grad_evals_exact"]
    # Adaptive: rejected attempts are lost to the solver state and estimated at the mean
    # cost of an accepted step (diffrax's first-step choice itself costs nothing).
    stats, n = run(gf.RKC2(spectral_radius=100.0), rtol=1e-4, atol=1e-7)
    assert stats["num_rejected_steps"] > 0 and stats["grad_evals_exact"] is False
    assert abs(stats["grad_evals"] - n) <= 0.05 * n


def test_fixed_step_order_two(nonquadratic):
    problem = nonquadratic
    T = 2.0
    ref = np.asarray(gf.gradient_flow(problem, T, ts=[0.0, T], rtol=1e-12, atol=1e-14).final)
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    errs = []
    for h in hs:
        flow = gf.gradient_flow(
            problem,
            T,
            ts=[0.0, T],
            solver=gf.RKC2(num_stages=5),
            dt0=h,
            controller=diffrax.ConstantStepSize(),
        )
        errs.append(np.linalg.norm(np.asarray(flow.final) - ref))
    assert abs(gf.fit_order(hs, errs) - 2) < 0.3


def test_time_dependent_field_order_two():
    # y' = -2(y - sin t) + cos t, y(0) = 1: y = sin t + e^{-2t}. A field that depends on
    # t exercises the internal stage times c_j (gradient flows never do).
    term = diffrax.ODETerm(lambda t, y, args: -2.0 * (y - jnp.sin(t)) + jnp.cos(t))
    exact = np.sin(1.0) + np.exp(-2.0)
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    errs = []
    for h in hs:
        sol = diffrax.diffeqsolve(
            term,
            gf.RKC2(num_stages=4),
            0.0,
            1.0,
            h,
            jnp.asarray(1.0),
            stepsize_controller=diffrax.ConstantStepSize(),
        )
        errs.append(abs(float(sol.ys[-1]) - exact))
    assert abs(gf.fit_order(hs, errs) - 2) < 0.3


def test_small_tanh_mlp_matches_tight_tsit5():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = rng.integers(0, 3, 40)
    problem = gf.problems.mlp(X, y, widths=(8,), activation="tanh", key=jax.random.key(1))
    ts = np.linspace(0.0, 20.0, 9)
    ref = gf.gradient_flow(problem, 20.0, ts=ts, rtol=1e-12, atol=1e-14).flat()
    rkc = gf.gradient_flow(problem, 20.0, ts=ts, solver="rkc", rtol=1e-8, atol=1e-11)
    rel = np.linalg.norm(np.asarray(rkc.flat() - ref), axis=1) / np.linalg.norm(ref, axis=1)
    assert np.max(rel) < 1e-6
    assert rkc.stats["solver"] == "RKC2" and rkc.stats["grad_evals"] > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_stages": 1},
        {"num_stages": 1},
        {"safety": 0.5},
        {"rho_every": 0},
        {"power_iterations": -1},
        {"spectral_radius": -1.0},
        {"spectral_radius": float("nan")},
        {"power_iterations": 0, "init_power_iterations": 0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        gf.RKC2(**kwargs)
