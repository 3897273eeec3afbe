r"""Gradient flow :math:`\dot\theta = -\nabla L(\theta)` (or any replacement field) by diffrax."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._problem import Problem, float_dtype
from ._rkc import RKC2
from ._run import run_compiled
from ._stats import FlowStats
from ._trajectory import Trajectory
from ._validate import positive_finite, positive_int

PyTree = Any

_SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "implicit": diffrax.Kvaerno5,
    "kvaerno5": diffrax.Kvaerno5,
    "kvaerno3": diffrax.Kvaerno3,
    "rkc": RKC2,
}


class FlowError(RuntimeError):
    """The ODE solver gave up; ``.trajectory`` holds the part solved before it did."""

    def __init__(self, message: str, trajectory: Trajectory | None):
        super().__init__(message)
        self.trajectory = trajectory


def _number(x):
    """A controller's tolerance as a Python float (or None)."""
    return None if x is None else float(x)


def resolve_solver(solver) -> diffrax.AbstractSolver:
    """A diffrax solver from a name (``"tsit5"``, ``"implicit"``, …) or an instance."""
    if solver is None:
        return diffrax.Tsit5()
    if isinstance(solver, str):
        key = solver.lower()
        if key not in _SOLVERS:
            raise ValueError(
                f"`solver` must be a diffrax solver or one of {sorted(_SOLVERS)}; got {solver!r}."
            )
        return _SOLVERS[key]()
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    raise TypeError(f"`solver` must be a diffrax solver or a name; got {solver!r}.")


def evals_per_step(solver: diffrax.AbstractSolver) -> int | None:
    """Vector-field evaluations per attempted step of an explicit Runge–Kutta solver.

    ``num_stages`` less one when the first stage reuses the last (FSAL). ``None`` for
    implicit solvers, whose count depends on the nonlinear solves.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None:
        return {diffrax.Euler: 1, diffrax.Heun: 2, diffrax.Midpoint: 2, diffrax.Ralston: 2}.get(
            type(solver)
        )
    if getattr(tableau, "implicit", False) or np.any(np.asarray(tableau.a_diagonal or 0) != 0):
        return None
    return int(tableau.num_stages) - (1 if tableau.fsal else 0)


def count_evals(solver: diffrax.AbstractSolver, steps: int, solves: int = 1) -> int | None:
    """Field evaluations of ``solves`` solves taking ``steps`` attempted steps in all.

    Each attempted step (accepted or rejected) costs :func:`evals_per_step`; each solve
    starts with one evaluation when its first stage reuses the last (FSAL: the field at
    the initial point), none otherwise. Diffrax's automatic first step size (``dt0=None``)
    costs no evaluations. Exact when no step is rejected; otherwise a lower bound short by
    at most the number of rejections, as an FSAL solver re-evaluates its first stage on
    every attempt before the first accepted step (measured with a counting field,
    ``tests/test_flow.py``). ``None`` for implicit solvers.
    """
    per = evals_per_step(solver)
    if per is None:
        return None
    tableau = getattr(solver, "tableau", None)
    fsal = bool(getattr(tableau, "fsal", False))
    return per * steps + (solves if fsal else 0)


# Cached per loss so that repeated solves of one problem (and Trajectory.evaluate) reuse
# one compiled solve instead of tracing a fresh closure each time.
@functools.lru_cache(maxsize=256)
def _negative_gradient(loss):
    def field(params, data):
        grads = jax.grad(loss)(params, data)
        return jax.tree_util.tree_map(jnp.negative, grads)

    return field


@eqx.filter_jit
def _solve(problem, field, params0, t0, t1, ts, solver, controller, dt0, max_steps, progress):
    data = problem.data
    # Solvers that count their own evaluations (RKC2: the stage count varies per step)
    # expose `num_evaluations(solver_state)`; only then is the final state requested.
    counter = getattr(solver, "num_evaluations", None)

    def vf(t, y, args):
        del t
        return field(y, args)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        solver,
        t0=t0,
        t1=t1,
        dt0=dt0,
        y0=params0,
        args=data,
        saveat=diffrax.SaveAt(ts=ts, solver_state=counter is not None),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
        progress_meter=diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter(),
    )
    ys = sol.ys
    losses = jax.lax.map(lambda p: problem.loss(p, data), ys)
    stats = {k: sol.stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    if counter is not None:
        stats["solver_evals"] = counter(sol.solver_state)
    return ys, losses, sol.result, stats


def _failure_reason(result, max_steps: int) -> str:
    R = diffrax.RESULTS
    if result == R.max_steps_reached:
        return (
            f"the solver reached max_steps={max_steps} before t1. Increase `max_steps`, "
            "loosen `rtol`/`atol`, or, if the flow is stiff (large Hessian eigenvalues times "
            "t1), use solver='implicit'"
        )
    if result == R.dt_min_reached:
        return (
            "the step size underflowed (the flow is stiff or blows up). Use "
            "solver='implicit', or check that the loss is bounded below"
        )
    if result in (R.nonlinear_divergence, R.nonlinear_max_steps_reached):
        return (
            "the implicit solver's nonlinear iteration failed repeatedly (step-size "
            "underflow). Loosen `rtol`/`atol` or try an explicit solver"
        )
    if result == R.nonfinite:
        return (
            "the state became non-finite (the flow blows up, or the vector field is not "
            "finite there). Check the loss and the field"
        )
    return f"diffrax reported: {result}"


def gradient_flow(
    problem: Problem,
    t1: float,
    ts=None,
    *,
    field: Callable[[PyTree, PyTree], PyTree] | None = None,
    solver: diffrax.AbstractSolver | str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    t0: float = 0.0,
    params0: PyTree | None = None,
    dt0: float | None = None,
    max_steps: int = 1_000_000,
    controller: diffrax.AbstractStepSizeController | None = None,
    progress: bool = False,
) -> Trajectory:
    r"""Solve gradient flow :math:`\dot\theta = -\nabla L(\theta)` from ``t0`` to ``t1``.

    GD with step :math:`\eta` is explicit Euler on this flow: GD iterate ``k`` sits at
    :math:`t = k\eta`, so pass ``ts = lr * arange(K + 1)`` to compare them point by point.
    A ``field`` replaces :math:`-\nabla L`, e.g. a modified (backward-error) field from
    :func:`gdflow.modified_field`.

    By default the solve is adaptive and explicit: ``Tsit5`` (order 5) with diffrax's
    integral step-size controller (on the digits MLP of ``benchmarks/gf_cost.py`` it took
    14% fewer steps than a PI controller and rejected none). Pass ``controller=`` for
    another, or ``solver="implicit"`` (Kvaerno5) for stiff flows.

    **Arguments:**

    - ``problem``: a :class:`gdflow.Problem`; the full-data loss is the potential.
    - ``t1``: end time (> ``t0``).
    - ``ts``: save times in ``[t0, t1]`` (default 101 evenly spaced points).
    - ``field``: ``field(params, data) -> tangent`` with the structure of ``params``;
      called with ``problem.data`` (pass data this way, not in a closure, so that it is a
      traced argument and not a compile-time constant). Default :math:`-\nabla L`.
    - ``solver``: a diffrax solver or one of ``"tsit5"``, ``"dopri5"``, ``"dopri8"``,
      ``"bosh3"``, ``"implicit"``/``"kvaerno5"``, ``"kvaerno3"``, ``"rkc"``
      (:class:`gdflow.RKC2`, Runge–Kutta–Chebyshev: explicit with a real stability
      interval growing like the square of its stage count, for stiff gradient flows).
    - ``rtol``, ``atol``: tolerances of the step-size controller.
    - ``t0``, ``params0``: start (default ``0`` and ``problem.params0``).
    - ``dt0``: initial step (default: diffrax's choice, which the controller then
      adapts; required for fixed-step solvers such as ``diffrax.Euler()``, which then
      take constant steps).
    - ``max_steps``: cap on solver steps. Memory does not grow with it.
    - ``controller``: a diffrax step-size controller, overriding ``rtol``/``atol``.
    - ``progress``: show a progress bar.

    **Returns:** a continuous :class:`gdflow.Trajectory` (``method="gradient_flow"``)
    whose :meth:`~gdflow.Trajectory.evaluate` re-solves to any times. ``stats`` holds the
    solver's step counts and ``grad_evals``: field evaluations counted from the steps
    (stages per attempted step, less one for FSAL, plus one at the start for FSAL
    solvers: exact without rejected steps, else possibly short by up to their number,
    see :func:`count_evals`; ``None`` for implicit solvers; for solvers that count their
    own, as ``"rkc"``, their count, with rejected attempts estimated at the mean accepted
    cost). ``grad_evals_exact`` says whether the count is exact.

    **Raises:** ``ValueError`` for ``t1 <= t0``, non-finite times or tolerances, or save
    times outside ``[t0, t1]``; :class:`FlowError` (carrying the solved part as
    ``.trajectory``) when the solver gives up, saying why (``max_steps``, step-size
    underflow, non-finite state).

    ```python
    problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 10.0])), params0=jnp.ones(2))
    flow = gf.gradient_flow(problem, t1=2.0, ts=0.05 * jnp.arange(41))
    ```
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    t0 = float(np.asarray(t0))
    if not np.isfinite(t0):
        raise ValueError(f"`t0` must be finite, got {t0!r}.")
    t1f = float(np.asarray(t1)) if np.ndim(t1) == 0 else np.nan
    if not np.isfinite(t1f) or t1f <= t0:
        raise ValueError(f"`t1` must be a finite time > t0={t0:g}; got {t1!r}.")
    max_steps = positive_int("max_steps", max_steps)
    params0 = problem.params0 if params0 is None else params0
    dtype = float_dtype(params0)
    if ts is None:
        ts_np = np.linspace(t0, t1f, 101)
    else:
        ts_np = np.asarray(ts, dtype=np.float64).reshape(-1)
        if ts_np.size == 0:
            raise ValueError("`ts` is empty; give at least one save time.")
        if not np.all(np.isfinite(ts_np)):
            raise ValueError("`ts` must be finite.")
        if np.any(np.diff(ts_np) < 0):
            raise ValueError("`ts` must be non-decreasing; sort it first.")
        slack = 1e-12 * max(1.0, abs(t1f))
        if ts_np[0] < t0 - slack or ts_np[-1] > t1f + slack:
            raise ValueError(
                f"`ts` must lie in [t0, t1] = [{t0:g}, {t1f:g}]; got [{ts_np[0]:g}, {ts_np[-1]:g}]."
            )
        ts_np = np.clip(ts_np, t0, t1f)
    solver_ = resolve_solver(solver)
    if controller is None:
        rtol = positive_finite("rtol", rtol)
        atol = positive_finite("atol", atol)
        if isinstance(solver_, diffrax.AbstractAdaptiveSolver) or hasattr(solver_, "tableau"):
            controller = diffrax.PIDController(rtol=rtol, atol=atol)
        else:
            if dt0 is None:
                raise ValueError(
                    f"`solver` {type(solver_).__name__} has no error estimate: pass a fixed "
                    "step `dt0`, or use an adaptive solver such as 'tsit5'."
                )
            controller = diffrax.ConstantStepSize()
    if dt0 is not None:
        dt0 = jnp.asarray(positive_finite("dt0", dt0), dtype=dtype)
    field_ = _negative_gradient(problem.loss) if field is None else field
    if not callable(field_):
        raise TypeError("`field` must be callable as field(params, data).")

    # With x64 on, times in the state's dtype: a float32 state must not be promoted.
    args = (
        problem,
        field_,
        params0,
        jnp.asarray(t0, dtype),
        jnp.asarray(t1f, dtype),
        jnp.asarray(ts_np, dtype),
        solver_,
        controller,
        dt0,
        max_steps,
        bool(progress),
    )
    (ys, losses, result, sstats), compile_s, run_s = run_compiled(_solve, *args)
    steps = {k: int(v) for k, v in sstats.items()}
    counted = steps.pop("solver_evals", None)
    evals = count_evals(solver_, steps["num_steps"])
    exact = None if evals is None else steps["num_rejected_steps"] == 0
    if counted is not None:
        # The solver's own count covers init and accepted steps (diffrax restores the
        # solver state after a rejection); each rejected attempt is estimated at the mean
        # cost of an accepted one.
        rejected = steps["num_rejected_steps"]
        mean = counted / max(steps["num_accepted_steps"], 1)
        evals = counted + round(rejected * mean)
        exact = rejected == 0
    stats = FlowStats(
        **steps,
        grad_evals=evals,
        grad_evals_exact=exact,
        solver_evals=counted,
        seconds=run_s,
        compile_seconds=compile_s,
        rtol=None if controller is None else _number(getattr(controller, "rtol", None)),
        atol=None if controller is None else _number(getattr(controller, "atol", None)),
        solver=type(solver_).__name__,
        field="gradient" if field is None else "custom",
    )

    def evaluator(when):
        when = np.asarray(when, dtype=np.float64).reshape(-1)
        order = np.argsort(when, kind="stable")
        sorted_ = when[order]
        if sorted_[0] < t0 - 1e-12 * max(1.0, abs(t1f)) or sorted_[-1] > t1f * (1 + 1e-12):
            raise ValueError(
                f"Can only evaluate this flow on [{t0:g}, {t1f:g}]; asked for "
                f"[{sorted_[0]:g}, {sorted_[-1]:g}]."
            )
        end = max(float(sorted_[-1]), t0 + 1e-12 * max(1.0, abs(t1f)))
        again = gradient_flow(
            problem,
            end,
            np.clip(sorted_, t0, end),
            field=field,
            solver=solver_,
            t0=t0,
            params0=params0,
            dt0=None if dt0 is None else float(dt0),
            max_steps=max_steps,
            controller=controller,
        )
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return jax.tree_util.tree_map(lambda x: x[inverse], again.params)

    method = "gradient_flow" if field is None else "flow"
    if result != diffrax.RESULTS.successful:
        leaves = jax.tree_util.tree_leaves(ys)
        finite = np.all(
            np.stack(
                [
                    np.all(np.isfinite(np.reshape(np.asarray(x), (x.shape[0], -1))), axis=1)
                    for x in leaves
                ]
            ),
            axis=0,
        )
        good = int(np.argmin(finite)) if not finite.all() else len(finite)
        partial = Trajectory(
            ts=jnp.asarray(ts_np[:good], dtype),
            params=jax.tree_util.tree_map(lambda x: x[:good], ys),
            loss=losses[:good],
            method=method,
            stats=stats,
        )
        reached = f"t={ts_np[good - 1]:g}" if good else f"t0={t0:g}"
        raise FlowError(
            f"gradient_flow stopped: {_failure_reason(result, max_steps)}. "
            f"Solved up to save time {reached} of t1={t1f:g} "
            f"({steps['num_steps']} steps); the partial result is on `.trajectory`.",
            partial,
        )
    return Trajectory(
        ts=jnp.asarray(ts_np, dtype),
        params=ys,
        loss=losses,
        method=method,
        stats=stats,
        evaluator=evaluator,
    )
