"""The one engine: saving, outcomes, chunking, interruption, methods' declared orders."""

import signal
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from scipy.stats import linregress

import gdflow as gf
from gdflow._run import _engine


def _quadratic(lams=(1.0, 3.0)):
    H = jnp.diag(jnp.asarray(lams))
    return H, gf.problems.quadratic(H, params0=jnp.ones(len(lams)))


def test_gd_saves_the_closed_form_at_every_saved_step():
    H, problem = _quadratic()
    lr, steps, every = 0.1, 23, 5  # `every` does not divide `steps`: the last save is 23
    traj = gf.gd(problem, lr, steps, save_every=every)
    ks = [0, 5, 10, 15, 20, 23]
    np.testing.assert_allclose(np.asarray(traj.ts), lr * np.asarray(ks), rtol=1e-15)
    Hn = np.asarray(H)
    expect = [np.linalg.matrix_power(np.eye(2) - lr * Hn, k) @ np.ones(2) for k in ks]
    np.testing.assert_allclose(np.asarray(traj.params), expect, rtol=1e-13)
    assert traj.stats.steps == steps and traj.stats["grad_evals"] == steps


def test_chunk_size_and_block_splitting_do_not_change_the_run(monkeypatch):
    problem = gf.problems.random_least_squares(40, 6, noise=0.1, key=jax.random.key(0))
    batching = gf.Reshuffle(8, jax.random.key(3))
    reference = gf.sgd(problem, 0.05, 9, batching, save_every=7)
    # One block per chunk, and save intervals split into non-saving pieces of 3 steps:
    # the paths a run of more than 2**30 steps per save interval takes.
    monkeypatch.setattr(_engine, "_CHUNK_SECONDS", 0.0)
    monkeypatch.setattr(_engine, "_MAX_BLOCK", 3)
    again = gf.sgd(problem, 0.05, 9, batching, save_every=7)
    np.testing.assert_array_equal(np.asarray(reference.ts), np.asarray(again.ts))
    np.testing.assert_array_equal(np.asarray(reference.params), np.asarray(again.params))
    np.testing.assert_array_equal(np.asarray(reference.loss), np.asarray(again.loss))


def test_plan_covers_step_counts_beyond_int32():
    steps = every = 2**31 + 5
    segments = list(_engine._plan(steps, every))
    assert sum(b * n for b, n, _ in segments) == steps
    assert all(b <= _engine._MAX_BLOCK for b, _, _ in segments)
    assert [w for _, _, w in segments] == [False, True]  # one save, at the end
    steps, every = 3 * 2**31, 2**31
    segments = list(_engine._plan(steps, every))
    assert sum(b * n for b, n, _ in segments) == steps
    assert sum(n for _, n, w in segments if w) == 3


def test_huge_step_count_times_are_exact_python_integers(monkeypatch):
    # A run whose save points lie beyond 2**31 steps: simulate with a small block limit
    # and check the clock is computed from Python integers, not an int32 that wraps.
    _, problem = _quadratic((1e-12, 2e-12))
    monkeypatch.setattr(_engine, "_MAX_BLOCK", 4)
    traj = gf.gd(problem, 1.0, 10, save_every=10)
    assert traj.stats.steps == 10
    np.testing.assert_allclose(np.asarray(traj.ts), [0.0, 10.0])


def test_stochastic_epochs_beyond_int32_are_refused():
    problem = gf.problems.random_least_squares(40, 6, key=jax.random.key(0))
    with pytest.raises(ValueError, match="2\\*\\*31 epochs"):
        gf.sgd(problem, 0.01, 2**31, gf.Reshuffle(40, jax.random.key(0)))


def test_nonfinite_gradient_is_reported_as_such():
    loss = lambda th, b: jnp.sqrt(jnp.sum(th**2)) + 0.0 * jnp.sum(b["x"])  # noqa: E731
    problem = gf.Problem(loss, {"x": jnp.ones((3, 1))}, jnp.zeros(2))
    with pytest.warns(gf.DivergenceWarning, match="non-finite gradient.*check the data"):
        traj = gf.gd(problem, 0.1, 10)
    assert traj.diverged_at == 0 and traj.stats.outcome.startswith("non-finite gradient")
    assert len(traj) == 1 and np.all(np.asarray(traj.final) == 0.0)


def test_nonfinite_parameters_keep_the_last_finite_state():
    _, problem = _quadratic((10.0,))  # 1 - 1e308·10 overflows; the loss at 1 is finite
    with pytest.raises(gf.DivergenceError, match="non-finite parameters") as info:
        gf.gd(problem, 1e308, 5, on_divergence="raise")
    traj = info.value.trajectory
    assert traj.diverged_at == 0 and np.asarray(traj.final).tolist() == [1.0]
    assert info.value.result.startswith("non-finite parameters")


class _Recorder(gf.AbstractProgressMeter):
    log: list = eqx.field(static=True)
    interrupt_after: int = eqx.field(static=True, default=-1)

    def start(self, total, desc):
        self.log.append(("start", total, desc))
        return "handle"

    def update(self, handle, done):
        assert handle == "handle"
        self.log.append(("update", done))
        if len(self.log) - 1 == self.interrupt_after:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C

    def close(self, handle):
        self.log.append(("close",))


def _one_step_chunks(monkeypatch):
    monkeypatch.setattr(_engine, "_CHUNK_SECONDS", 0.0)  # every call: one method step
    monkeypatch.setattr(_engine, "_FIRST_PIECE", 1)


def test_progress_meter_sees_every_chunk_even_inside_a_save_interval(monkeypatch):
    _one_step_chunks(monkeypatch)
    H, problem = _quadratic()
    meter = _Recorder(log=[])
    traj = gf.gd(problem, 0.1, 30, save_every=30, progress=meter)  # one save, at the end
    done = [entry[1] for entry in meter.log if entry[0] == "update"]
    assert meter.log[0] == ("start", 30, "gd") and meter.log[-1] == ("close",)
    assert done == list(range(1, 31)) and len(traj) == 2
    expect = np.linalg.matrix_power(np.eye(2) - 0.1 * np.asarray(H), 30) @ np.ones(2)
    np.testing.assert_allclose(np.asarray(traj.final), expect, rtol=1e-13)


def test_default_chunks_save_the_same_points_as_one_step_chunks(monkeypatch):
    problem = gf.problems.random_least_squares(40, 6, noise=0.1, key=jax.random.key(0))
    batching = gf.Reshuffle(8, jax.random.key(3))
    reference = gf.sgd(problem, 0.05, 9, batching, save_every=7)
    _one_step_chunks(monkeypatch)
    again = gf.sgd(problem, 0.05, 9, batching, save_every=7)
    np.testing.assert_array_equal(np.asarray(reference.params), np.asarray(again.params))
    np.testing.assert_array_equal(np.asarray(reference.loss), np.asarray(again.loss))


def test_ctrl_c_stops_between_chunks_and_keeps_what_finished(monkeypatch):
    _one_step_chunks(monkeypatch)
    H, problem = _quadratic()
    meter = _Recorder(log=[], interrupt_after=12)
    # Python's own Ctrl-C handler, whatever this process inherited: a background job of a
    # non-interactive shell (`make test &` in a script) starts with SIGINT ignored, and
    # such a process keeps ignoring it (the next test).
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(gf.RunInterrupted, match="interrupted at batch step 12 of 50") as info:
            gf.gd(problem, 0.1, 50, save_every=10, progress=meter)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)
    traj = info.value.trajectory
    assert isinstance(info.value, KeyboardInterrupt) and traj.stats.outcome == "interrupted"
    # The saved points 0 and 10, and the state at step 12 where it stopped.
    np.testing.assert_allclose(np.asarray(traj.ts), [0.0, 1.0, 1.2])
    expect = [
        np.linalg.matrix_power(np.eye(2) - 0.1 * np.asarray(H), k) @ np.ones(2)
        for k in (0, 10, 12)
    ]
    np.testing.assert_allclose(np.asarray(traj.params), expect, rtol=1e-13)


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it(monkeypatch):
    _one_step_chunks(monkeypatch)
    _, problem = _quadratic()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        traj = gf.gd(
            problem, 0.1, 20, save_every=10, progress=_Recorder(log=[], interrupt_after=3)
        )
        assert traj.stats.outcome == "" and traj.stats.steps == 20
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_divergence_inside_a_save_block_keeps_the_last_finite_state():
    _, problem = _quadratic((4.0,))
    # |1 - 10·4|^k: the loss overflows at the same step whatever the save interval.
    every_step = gf.gd(problem, 10.0, 5000, on_divergence="ignore")
    k = every_step.diverged_at
    coarse = gf.gd(problem, 10.0, 5000, save_every=7, on_divergence="ignore")
    assert coarse.diverged_at == k and coarse.stats.grad_evals == k
    np.testing.assert_allclose(np.asarray(coarse.ts)[-1], 10.0 * k)
    np.testing.assert_allclose(np.asarray(coarse.final), [(-39.0) ** k], rtol=1e-10)
    assert len(coarse) == k // 7 + 2  # the saved points, then the state it stopped in


def _failing_at_theta_half(kind):
    """A loss on one parameter whose step from theta < 0.5 fails as `kind` says; GD from
    theta = 1 at lr 0.1 on theta**2 gives theta_k = 0.8**k, below 0.5 first at k = 4."""

    @jax.custom_jvp
    def f(th):
        value = jnp.sum(th**2)
        return jnp.where((kind == "loss") & (th[0] < 0.5), jnp.inf, value)

    @f.defjvp
    def f_jvp(primals, tangents):
        (th,), (dth,) = primals, tangents
        slope = jnp.where((kind == "gradient") & (th[0] < 0.5), jnp.nan, 2 * th)
        return f(th), jnp.sum(slope * dth)

    return gf.Problem(
        lambda th, b: f(th) + 0.0 * jnp.sum(b["x"]), {"x": jnp.ones((2, 1))}, jnp.ones(1)
    )


@pytest.mark.parametrize("one_step", [False, True])
@pytest.mark.parametrize(
    "kind, at, outcome",
    [
        ("loss", 4, "non-finite loss"),
        ("gradient", 4, "non-finite gradient"),
        ("params", 2, "non-finite parameters"),
    ],
)
def test_per_chunk_checks_find_the_same_failing_step_as_per_step_checks(
    monkeypatch, kind, at, outcome, one_step
):
    # SGD checks its parameters once per compiled chunk (`absorbing`) and runs a failed
    # chunk again with every step checked. Failures in the middle of a chunk, of each
    # kind, against the closed form and against every step checked.
    if one_step:
        _one_step_chunks(monkeypatch)
    if kind == "params":  # theta - k·lr: finite loss, then the parameter overflows
        problem = gf.Problem(
            lambda th, b: jnp.sum(th) + 0.0 * jnp.sum(b["x"]), {"x": jnp.ones((2, 1))}, jnp.ones(1)
        )
        lr = 0.6e308
    else:
        problem, lr = _failing_at_theta_half(kind), 0.1
    runs = []
    for absorbing in (True, False):
        monkeypatch.setattr(gf.SGD, "absorbing", absorbing)
        runs.append(gf.gd(problem, lr, 50, save_every=3, on_divergence="ignore"))
    fast, checked = runs
    for traj in runs:
        assert traj.diverged_at == at and traj.stats.outcome.startswith(outcome)
        assert traj.stats.grad_evals == at
    expect = 1.0 - at * lr if kind == "params" else 0.8**at
    np.testing.assert_allclose(np.asarray(fast.final), [expect], rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(fast.ts), np.asarray(checked.ts))
    np.testing.assert_array_equal(np.asarray(fast.params), np.asarray(checked.params))
    np.testing.assert_array_equal(np.asarray(fast.loss), np.asarray(checked.loss))


def test_a_subclass_that_overrides_step_is_checked_every_step_unless_it_declares_again():
    from gdflow._methods._base import declares_absorbing

    class Wrapped(gf.SGD):  # a step of its own, without `check=`: not declared absorbing
        def step(self, problem, batching, clock, params, state):
            return super().step(problem, batching, clock, params, state)

    class Declared(Wrapped):
        absorbing = True

        def step(self, problem, batching, clock, params, state, *, check=True):
            return gf.SGD.step(self, problem, batching, clock, params, state, check=check)

    class Undeclared(gf.SGD):
        absorbing = False

    assert declares_absorbing(gf.SGD(0.1)) and declares_absorbing(Declared(0.1))
    assert not declares_absorbing(Wrapped(0.1)) and not declares_absorbing(Undeclared(0.1))
    problem = _failing_at_theta_half("loss")
    want = gf.gd(problem, 0.1, 50, save_every=3, on_divergence="ignore")
    for cls in (Wrapped, Declared, Undeclared):
        got = gf.run(cls(0.1), problem, 50, save_every=3, on_divergence="ignore")
        assert got.diverged_at == want.diverged_at == 4
        np.testing.assert_array_equal(np.asarray(got.params), np.asarray(want.params))


def _tracing_sgd(traced: list):
    """A new subclass of gf.SGD (so a compile cache of its own) whose step appends to
    `traced` each time it is traced."""

    class Counted(gf.SGD):
        absorbing = True

        def step(self, problem, batching, clock, params, state, *, check=True):
            traced.append(1)
            return gf.SGD.step(self, problem, batching, clock, params, state, check=check)

    return Counted


def test_a_repeated_run_traces_its_step_only_once_and_a_new_shape_traces_again():
    # Each run needs the structure of a step's counters before its first chunk; tracing a
    # step again for every run cost a quarter of a second a call for the splitting
    # optimiser's ODE steps. Runs that differ only in array values reuse both the traced
    # structure and the compiled chunk; the results stay those of the closed form.
    traced = []
    Counted = _tracing_sgd(traced)

    H, problem = _quadratic((1.0, 3.0))
    lr = 0.1
    gf.run(Counted(lr), problem, 7)
    first = len(traced)
    assert first >= 1
    for start in ([2.0, -1.0], [0.5, 4.0]):
        p = problem.with_params0(jnp.asarray(start))
        traj = gf.run(Counted(lr), p, 7)
        want = np.linalg.matrix_power(np.eye(2) - lr * np.asarray(H), 7) @ np.asarray(start)
        np.testing.assert_allclose(np.asarray(traj.final), want, rtol=1e-13)
    assert len(traced) == first  # no new trace: neither the structure nor the chunk
    _, bigger = _quadratic((1.0, 2.0, 3.0))
    gf.run(Counted(lr), bigger, 7)
    assert len(traced) > first  # other shapes: traced (and compiled) again


def test_runs_of_other_lengths_share_the_compiled_chunk_and_save_every_point():
    # Saved-point buffers come in a few sizes: runs of 7, 12 and 30 steps (8, 13 and 31
    # points, or 5 for 10 steps saving every 3) trace the step no more after the first,
    # and every saved point is still (I - lr H)^k theta0.
    traced = []
    Counted = _tracing_sgd(traced)

    H, problem = _quadratic((1.0, 3.0))
    lr, th0 = 0.1, np.asarray(problem.params0)
    gf.run(Counted(lr), problem, 7)
    first = len(traced)
    for steps, every in ((12, 1), (30, 1), (10, 3)):
        traj = gf.run(Counted(lr), problem, steps, save_every=every)
        ks = [min(s * every, steps) for s in range(-(-steps // every) + 1)]
        assert len(traj) == len(ks)
        for k, got in zip(ks, np.asarray(traj.params)):
            want = np.linalg.matrix_power(np.eye(2) - lr * np.asarray(H), k) @ th0
            np.testing.assert_allclose(got, want, rtol=1e-13)
    assert len(traced) == first


def test_buffer_slots_are_few_sizes_at_most_an_eighth_or_8_mib_larger():
    from gdflow._run._engine import _MIN_SLOTS_BYTES, _buffer_slots

    small = jnp.zeros(50)  # 64 slots of 408 bytes fit in 8 MiB
    assert {_buffer_slots(n, small) for n in range(1, 65)} == {64}
    sizes = [_buffer_slots(n, small) for n in range(1, 5000)]
    assert all(s >= n for n, s in enumerate(sizes, 1))
    assert all(s <= max(64, -(-9 * n // 8)) for n, s in enumerate(sizes, 1))
    assert sizes == sorted(sizes) and len(set(sizes)) < 100
    big = {"w": jnp.zeros((500, 1000)), "b": jnp.zeros(1000, jnp.float32)}  # ~4 MB a point
    floor = _buffer_slots(1, big)
    per = 8 + 500 * 1000 * 8 + 1000 * 4
    assert floor == _MIN_SLOTS_BYTES // per == 2 and _buffer_slots(3, big) == 3


def test_trajectory_and_stats_pass_through_filter_jit():
    _, problem = _quadratic()
    traj = gf.gd(problem, 0.1, 20, save_every=5)

    @eqx.filter_jit
    def summary(t):
        return jnp.sum(t.flat()) + t.stats.grad_evals

    np.testing.assert_allclose(float(summary(traj)), float(jnp.sum(traj.flat())) + 20)
    assert isinstance(traj.stats, gf.RunStats) and traj.stats.as_dict()["steps"] == 20


def test_trajectory_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="len\\(ts\\)=3"):
        gf.Trajectory(ts=jnp.arange(3.0), params=jnp.ones((4, 2)), loss=jnp.ones(3), method="x")
    with pytest.raises(ValueError, match="`loss` must have shape \\(3,\\)"):
        gf.Trajectory(ts=jnp.arange(3.0), params=jnp.ones((3, 2)), loss=jnp.ones(2), method="x")


def test_descent_with_optax_sgd_equals_gd_bitwise():
    problem = gf.problems.random_least_squares(30, 4, noise=0.1, key=jax.random.key(2))
    a = gf.gd(problem, 0.07, 25, save_every=5)
    b = gf.descent(problem, optax.sgd(0.07), 25, lr=0.07, save_every=5)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    np.testing.assert_array_equal(np.asarray(a.ts), np.asarray(b.ts))


def test_run_with_a_method_object_is_gd():
    _, problem = _quadratic()
    a = gf.gd(problem, 0.1, 12, save_every=4)
    b = gf.run(gf.SGD(0.1), problem, 12, save_every=4)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    with pytest.raises(TypeError, match="`method`"):
        gf.run("gd", problem, 12)


# ---------------------------------------------------------------------------------------
# Declared orders, checked with fitted orders (as diffrax's order tests read solver.order)


def _least_squares_with_flow(n=12, p=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    y = rng.standard_normal(n)
    problem = gf.problems.least_squares(X, y, params0=rng.standard_normal(p))
    H = X.T @ X / n
    star = np.linalg.lstsq(X, y, rcond=None)[0]
    theta0 = np.asarray(problem.params0)

    def flow(t):
        return star + scipy.linalg.expm(-t * H) @ (theta0 - star)

    return problem, flow


def test_gd_declared_order_is_the_fitted_order():
    problem, flow = _least_squares_with_flow()
    T = 2.0
    lrs = np.array([0.04, 0.02, 0.01, 0.005])
    errors = []
    for lr in lrs:
        steps = int(round(T / lr))
        traj = gf.gd(problem, float(lr), steps, save_every=steps)
        errors.append(np.linalg.norm(np.asarray(traj.final) - flow(T)))
    slope = linregress(np.log(lrs), np.log(errors)).slope
    assert abs(slope - gf.SGD.order) < 0.1, slope


_PAIRS = [
    (gf.LieTrotter(), gf.Euler()),
    (gf.LieTrotter(), gf.Exact()),
    (gf.LieTrotter(), gf.LocalODE(rtol=1e-11, atol=1e-13)),
    (gf.Strang(), gf.Euler()),
    (gf.Strang(), gf.Exact()),
    (gf.Strang(), gf.LocalODE(rtol=1e-11, atol=1e-13)),
]


@pytest.mark.parametrize(
    "scheme,local", _PAIRS, ids=[f"{type(s).__name__}-{type(l).__name__}" for s, l in _PAIRS]
)
def test_every_scheme_and_local_solver_has_its_declared_order(scheme, local):
    problem, flow = _least_squares_with_flow()
    method = gf.Splitting(scheme, local, 0.1)
    expected = method.order
    # The published orders: Lie-Trotter 1, Strang 2, and Euler local solves cap both at 1.
    literal = {("LieTrotter", "Euler"): 1, ("LieTrotter", "Exact"): 1,
               ("LieTrotter", "LocalODE"): 1, ("Strang", "Euler"): 1,
               ("Strang", "Exact"): 2, ("Strang", "LocalODE"): 2}  # fmt: skip
    assert expected == literal[type(scheme).__name__, type(local).__name__]
    batching = gf.RoundRobin(3)  # m = 4 batches
    m = 4
    T = 1.6
    lrs = np.array([0.04, 0.02, 0.01])
    errors = []
    for lr in lrs:
        epochs = int(round(T / (m * lr)))
        traj = gf.split(problem, float(lr), epochs, batching, scheme, local, save_every=epochs)
        errors.append(np.linalg.norm(np.asarray(traj.final) - flow(T)))
    slope = linregress(np.log(lrs), np.log(errors)).slope
    assert abs(slope - expected) < 0.2, (slope, expected, errors)


def test_exact_dispatches_on_structure_and_refuses_other_losses():
    ls = gf.problems.least_squares(jnp.ones((4, 2)), jnp.arange(4.0))
    logcosh = lambda th, b: jnp.mean(jnp.log(jnp.cosh(b["X"] @ th - b["y"])))  # noqa: E731
    with pytest.raises(ValueError, match="defines its own loss"):
        gf.Problem(logcosh, ls.data, ls.params0, structure=gf.LeastSquares())
    generic = gf.Problem(logcosh, ls.data, ls.params0)
    with pytest.raises(ValueError, match="no structure"):
        gf.split(generic, 0.1, 2, gf.RoundRobin(2), local=gf.Exact())
    with pytest.raises(ValueError, match=r"keys \['X', 'y'\]"):
        gf.Problem(
            gf.LeastSquares.loss,
            {"A": ls.data["X"], "y": ls.data["y"]},
            ls.params0,
            structure=gf.LeastSquares(),
        )


def test_exact_closed_forms_of_quadratic_and_two_point_structures():
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    c = np.array([1.0, -1.0])
    bowl = gf.problems.quadratic(jnp.asarray(H), center=jnp.asarray(c), params0=jnp.zeros(2))
    traj = gf.split(bowl, 0.3, 4, gf.FullBatch(), local=gf.Exact())
    expect = c + scipy.linalg.expm(-1.2 * H) @ (np.zeros(2) - c)  # GF for t = 4 · 0.3
    np.testing.assert_allclose(np.asarray(traj.final), expect, rtol=1e-12)
    pts = gf.problems.two_points(jnp.array([1.0, 0.0]), jnp.array([-1.0, 2.0]), jnp.zeros(2))
    sw = gf.split(pts, 0.5, 3, gf.RoundRobin(1), local=gf.Exact())
    th = np.zeros(2)
    for _ in range(3):  # batch a then batch b, each theta -> x + (theta - x) e^{-lr}
        for x in (np.array([1.0, 0.0]), np.array([-1.0, 2.0])):
            th = x + (th - x) * np.exp(-0.5)
    np.testing.assert_allclose(np.asarray(sw.final), th, rtol=1e-13)
    with pytest.raises(ValueError, match="symmetric"):
        gf.Problem(gf.Quadratic.loss, {"H": jnp.array([[[1.0, 2.0], [0.0, 1.0]]]),
                   "c": jnp.array([[1.0, -1.0]])}, jnp.zeros(2), structure=gf.Quadratic())  # fmt: skip


def test_run_checks_the_local_solver_and_the_step_size():
    logcosh = lambda th, b: jnp.mean(jnp.log(jnp.cosh(b["x"] @ th)))  # noqa: E731
    generic = gf.Problem(logcosh, {"x": jnp.ones((4, 2))}, jnp.ones(2))
    with pytest.raises(ValueError, match="no structure"):
        gf.run(gf.Splitting(gf.LieTrotter(), gf.Exact(), 0.1), generic, 2, gf.RoundRobin(2))
    for bad in (-0.1, float("nan"), 0.0):
        with pytest.raises(ValueError, match="`lr`"):
            gf.SGD(bad)
        with pytest.raises(ValueError, match="`lr`"):
            gf.Splitting(gf.Strang(), gf.Euler(), bad)


def test_a_failing_local_ode_solve_rolls_back_the_epoch():
    # A local flow that blows up in finite time: theta' = 3 mean(x) theta^2.
    cubic = lambda th, b: -jnp.mean(b["x"]) * jnp.sum(th**3)  # noqa: E731
    problem = gf.Problem(cubic, {"x": jnp.ones((4, 1))}, jnp.array([0.5]))
    ode = gf.LocalODE(max_steps=64)
    with pytest.warns(gf.DivergenceWarning, match="non-finite parameters"):
        traj = gf.split(problem, 1.0, 5, gf.RoundRobin(2), local=ode)
    assert traj.diverged_at == 0 and np.asarray(traj.final).tolist() == [0.5]


def test_string_shortcuts_resolve_to_the_objects():
    problem, _ = _least_squares_with_flow()
    a = gf.split(problem, 0.05, 3, gf.RoundRobin(3), "strang", "euler")
    b = gf.split(problem, 0.05, 3, gf.RoundRobin(3), gf.Strang(), gf.Euler())
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    assert a.stats.method == "Splitting(Strang, Euler)" and a.stats.local_solves == 3 * 4 * 2
    with pytest.raises(ValueError, match="`scheme`"):
        gf.split(problem, 0.05, 3, gf.RoundRobin(3), "leapfrog")


class _OutOfRange(gf.AbstractBatching):
    deterministic: ClassVar[bool] = True

    def batch_size(self, n):
        return 2

    def num_batches(self, n):
        return n // 2

    def epoch(self, n, e):
        return jnp.arange(n).reshape(-1, 2) + 1  # the last index is n

    def batch(self, data, table, j):
        return jax.tree_util.tree_map(lambda x: x[table[j]], data)


def test_custom_batching_with_indices_out_of_range_is_refused():
    problem, _ = _least_squares_with_flow()
    with pytest.raises(ValueError, match="outside \\[0, n\\)"):
        gf.sgd(problem, 0.1, 1, _OutOfRange())


def test_trajectory_slices_keep_their_kind_and_evaluate_checks_times():
    _, problem = _quadratic()
    flow = gf.gradient_flow(problem, 1.0, ts=jnp.linspace(0.0, 1.0, 11))
    sub = flow[::5]
    assert len(sub) == 3 and sub.continuous and sub.stats is flow.stats
    np.testing.assert_array_equal(np.asarray(sub.ts), np.asarray(flow.ts)[::5])
    with pytest.raises(TypeError, match="traj.at\\(i\\)"):
        flow[3]
    with pytest.raises(TypeError, match="`ts`"):
        flow.evaluate(["a"])
    with pytest.raises(ValueError, match="`ts`"):
        flow.evaluate([float("nan")])


def test_new_arguments_refuse_bad_values_by_name():
    _, problem = _quadratic()
    with pytest.raises(TypeError, match="`progress`"):
        gf.gd(problem, 0.1, 5, progress="yes")
    with pytest.raises(TypeError, match="`structure`"):
        gf.Problem(gf.LeastSquares.loss, problem.data, problem.params0, structure="ls")
    with pytest.raises(TypeError, match="`scheme`"):
        gf.Splitting("strang", gf.Euler(), 0.1)
    with pytest.raises(TypeError, match="`local`"):
        gf.Splitting(gf.Strang(), "euler", 0.1)
    with pytest.raises(TypeError, match="`optimizer`"):
        gf.Optax("adam")


def test_float32_state_keeps_its_dtype_through_every_wrapper():
    H = jnp.diag(jnp.array([1.0, 3.0], jnp.float32))
    problem = gf.problems.quadratic(H, params0=jnp.ones(2, jnp.float32))
    for traj in (
        gf.gd(problem, 0.1, 4),
        gf.descent(problem, optax.sgd(0.1), 4, lr=0.1),
        gf.split(problem, 0.1, 4, gf.FullBatch(), local=gf.Euler()),
    ):
        assert traj.params.dtype == jnp.float32 and traj.ts.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(traj.final), [0.9**4, 0.7**4], rtol=1e-6)
