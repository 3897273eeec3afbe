r"""Gradient flow $\dot\theta = -\nabla L(\theta)$ (or any replacement field) by diffrax."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._problem import Problem, float_dtype
from ._run import run_compiled
from ._solvers import EXPRB32, RKC2, ROS2CG
from ._stats import FlowStats
from ._trajectory import Trajectory
from ._validate import (
    check_finite,
    check_scalar_loss,
    positive_finite,
    positive_int,
    real_array,
    real_scalar,
)

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
    "ros2": ROS2CG,
    "exprb": EXPRB32,
}


class FlowError(RuntimeError):
    """The ODE solver gave up; `.trajectory` holds the part solved before it did."""

    def __init__(self, message: str, trajectory: Trajectory | None):
        super().__init__(message)
        self.trajectory = trajectory


def _number(x):
    """A controller's tolerance as a Python float (or None)."""
    return None if x is None else float(x)


def resolve_solver(solver) -> diffrax.AbstractSolver:
    """A diffrax solver from a name (`"tsit5"`, `"implicit"`, …) or an instance."""
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

    `num_stages` less one when the first stage reuses the last (FSAL). `None` for
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
    """Field evaluations of `solves` solves taking `steps` attempted steps in all.

    Each attempted step (accepted or rejected) costs `evals_per_step`; each solve
    starts with one evaluation when its first stage reuses the last (FSAL: the field at
    the initial point), none otherwise. Diffrax's automatic first step size (`dt0=None`)
    costs no evaluations. Exact when no step is rejected; otherwise a lower bound short by
    at most the number of rejections, as an FSAL solver re-evaluates its first stage on
    every attempt before the first accepted step (measured with a counting field,
    `tests/test_flow.py`). `None` for implicit solvers.
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
def _solve(
    problem, field, params0, t0, t1, ts, pick, solver, controller, dt0, max_steps, progress
):
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
    ys = jax.tree_util.tree_map(lambda x: x[pick], sol.ys)
    losses = jax.lax.map(lambda p: problem.loss(p, data), ys)
    stats = {k: sol.stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    if counter is not None:
        stats["solver_evals"] = counter(sol.solver_state)
    return ys, losses, sol.result, stats, sol.ys


# Steps below this many ulps of the largest time cannot advance it: the default
# controller stops there (`dt_min_reached`) rather than spin on to `max_steps`.
_DTMIN_ULPS = 4.0
# Save points of the probe grid that locates a blow-up (see `gradient_flow`).
_PROBES = 64
# A failed solve whose saved state grew by this factor over max(1, |theta0|_inf) is
# reported as a blow-up.
_GROWTH = 1e3


def _finite_time(name: str, value, bad_value=ValueError) -> float:
    v = real_scalar(name, value, fix=" Give times as floats, e.g. 1.0.")
    if not math.isfinite(v):
        raise bad_value(f"`{name}` must be a finite time; got {value!r}.")
    return v


def _leaf_paths(tree):
    return [jax.tree_util.keystr(k) or "" for k, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _check_params0(problem: Problem, params0):
    """`params0` (default `problem.params0`) checked against `problem.params0`: same
    structure and shapes, floating point, finite."""
    ref = problem.params0
    name = "problem.params0" if params0 is None else "params0"
    if params0 is None:
        params0 = ref
    ref_def = jax.tree_util.tree_structure(ref)
    if (
        jax.tree_util.tree_structure(params0) != ref_def
        and ref_def == jax.tree_util.tree_structure(0.0)
        and not isinstance(params0, dict)
    ):
        params0 = real_array(name, params0, finite=False)  # e.g. a list for one array
    if jax.tree_util.tree_structure(params0) != ref_def:
        raise ValueError(
            f"`{name}` must have the pytree structure of problem.params0, {ref_def}; got "
            f"{jax.tree_util.tree_structure(params0)}. To start another shape, build the "
            "problem for it (problem.with_params0(...))."
        )
    leaves = []
    for path, leaf, r in zip(
        _leaf_paths(ref), jax.tree_util.tree_leaves(params0), jax.tree_util.tree_leaves(ref)
    ):
        arr = (
            leaf
            if isinstance(leaf, jax.Array)
            else real_array(f"{name}{path}", leaf, finite=False)
        )
        if np.shape(arr) != np.shape(r):
            raise ValueError(
                f"`{name}{path}` must have the shape of problem.params0{path}, "
                f"{np.shape(r)}; got {np.shape(arr)}. To start another shape, build the "
                "problem for it (problem.with_params0(...))."
            )
        if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
            raise TypeError(
                f"`{name}{path}` must be floating point; got dtype {jnp.result_type(arr)}. "
                "Convert with jnp.asarray(x, dtype=float)."
            )
        check_finite(f"{name}{path}", arr)
        leaves.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(ref_def, leaves)


def _check_ts(ts, t0: float, t1: float) -> np.ndarray:
    ts_np = real_array("ts", ts, finite=False).astype(np.float64)
    if ts_np.ndim > 1:
        raise ValueError(f"`ts` must be a 1-d array of save times; got shape {ts_np.shape}.")
    ts_np = ts_np.reshape(-1)
    if ts_np.size == 0:
        raise ValueError("`ts` is empty; give at least one save time.")
    if not np.all(np.isfinite(ts_np)):
        raise ValueError("`ts` must be finite.")
    if np.any(np.diff(ts_np) < 0):
        raise ValueError("`ts` must be non-decreasing; sort it first.")
    slack = 1e-12 * max(1.0, abs(t1))
    if ts_np[0] < t0 - slack or ts_np[-1] > t1 + slack:
        raise ValueError(
            f"`ts` must lie in [t0, t1] = [{t0:g}, {t1:g}]; got [{ts_np[0]:g}, {ts_np[-1]:g}]."
        )
    return np.clip(ts_np, t0, t1)


def _check_field(field, params0, data) -> None:
    """`field(params0, data)` must run and return floating arrays shaped like params0
    (checked abstractly, by `jax.eval_shape`: no compute)."""
    if not callable(field):
        raise TypeError(f"`field` must be callable as field(params, data); got {field!r}.")
    try:
        out = jax.eval_shape(field, params0, data)
    except Exception as e:
        raise ValueError(
            f"`field` failed when called as field(params0, data): {type(e).__name__}: {e}\n"
            "It must take the parameters and problem.data and return d(params)/dt."
        ) from None
    want = jax.tree_util.tree_structure(params0)
    if jax.tree_util.tree_structure(out) != want:
        raise ValueError(
            f"`field` must return a tangent with the pytree structure of the parameters, "
            f"{want}; got {jax.tree_util.tree_structure(out)}."
        )
    for path, o, p in zip(
        _leaf_paths(params0), jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(params0)
    ):
        if o.shape != np.shape(p):
            raise ValueError(
                f"`field` must return arrays shaped like the parameters: params{path} has "
                f"shape {np.shape(p)}, field(params, data){path} has shape {o.shape}."
            )
        if not jnp.issubdtype(o.dtype, jnp.floating):
            raise TypeError(
                f"`field` must return floating-point arrays; field(params, data){path} has "
                f"dtype {o.dtype}."
            )


def _reachable_rtol(rtol: float, dtype, caller: str = "gradient_flow") -> float:
    """`rtol` raised to the state dtype's machine epsilon, with a warning if it was lower.

    Below it the controller asks for accuracy that rounding forbids: measured on
    `quadratic(diag(1, 10))` to t=2 in float32, rtol=1e-12 took 215,026 steps (74,477
    rejected) and ended 3.1e-7 off, rtol=eps 101 steps (none rejected), the default
    (1e-6) 45 steps and 2.8e-8 off. `atol` needs no floor: the rounding error of a step
    scales with the state, which `rtol >= eps` covers (rtol=eps with atol=1e-30 took
    105 steps, none rejected).
    """
    eps = float(jnp.finfo(dtype).eps)
    if rtol < eps:
        warnings.warn(
            f"{caller}: rtol={rtol:g} is below the machine epsilon {eps:.3g} of the "
            f"{jnp.dtype(dtype).name} state and cannot be reached (the solve would take "
            f"~1e5 steps and end less accurate); using rtol={eps:.3g} instead. Enable "
            "float64 (jax.config.update('jax_enable_x64', True)) with float64 parameters "
            "for tighter tolerances.",
            RuntimeWarning,
            stacklevel=3,
        )
        return eps
    return rtol


def _finite_rows(ys) -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(ys)
    return np.all(
        np.stack(
            [
                np.all(np.isfinite(np.reshape(np.asarray(x), (x.shape[0], -1))), axis=1)
                for x in leaves
            ]
        ),
        axis=0,
    )


def _row_norms(ys) -> np.ndarray:
    """Max-abs norm of each saved state; `inf` where it is not finite."""
    leaves = jax.tree_util.tree_leaves(ys)
    rows = [np.reshape(np.abs(np.asarray(x, dtype=np.float64)), (x.shape[0], -1)) for x in leaves]
    norms = np.max(np.concatenate(rows, axis=1), axis=1, initial=0.0)
    return np.where(np.isfinite(norms), norms, np.inf)


def _blowup(times, norms, ref: float, result):
    """`(t_bad, t_ok, norm_ok)` if the saved states show a blow-up, else `None`.

    `t_bad` is the first save time whose state is exploding (its norm above `_GROWTH`
    times `ref`) or, when the solver stopped for a non-finite state or a step-size
    collapse, non-finite after having grown (at least doubled); `t_ok` the save time
    before it. States after a `max_steps` stop are unsaved (infinite), not evidence.
    """
    R = diffrax.RESULTS
    grown = np.isfinite(norms) & (norms > _GROWTH * ref)
    if result != R.max_steps_reached:
        nonfinite = ~np.isfinite(norms)
        if nonfinite.any():
            i = int(np.argmax(nonfinite))
            if i > 0 and norms[i - 1] >= 2.0 * max(norms[0], np.finfo(float).tiny):
                grown[i] = True
    if not grown.any():
        return None
    i = int(np.argmax(grown))
    if i == 0:
        return float(times[0]), float(times[0]), float(norms[0])
    return float(times[i]), float(times[i - 1]), float(norms[i - 1])


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
            "the step size fell to a few ulps of the time and could not advance it: the "
            "field is not finite there (NaN or inf from a log, sqrt or division), or the "
            "flow is extremely stiff (then use solver='implicit')"
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
    if result == R.successful:
        return (
            "the state became non-finite with a fixed step: the step `dt0` is too large "
            "for this flow or the field is not finite there. Use a smaller `dt0` or an "
            "adaptive solver such as 'tsit5'"
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
    r"""Solve gradient flow $\dot\theta = -\nabla L(\theta)$ from `t0` to `t1`.

    GD with step $\eta$ is explicit Euler on this flow: GD iterate `k` sits at
    $t = k\eta$, so pass `ts = lr * arange(K + 1)` to compare them point by point.
    A `field` replaces $-\nabla L$, e.g. a modified (backward-error) field from
    [`gdflow.modified_field`][].

    By default the solve is adaptive and explicit: `Tsit5` (order 5) with diffrax's
    integral step-size controller (on the digits MLP of `benchmarks/gf_cost.py` it took
    14% fewer steps than a PI controller and rejected none). Pass `controller=` for
    another, or `solver="implicit"` (Kvaerno5) for stiff flows.

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][]; the full-data loss is the potential.
    - `t1`: end time (> `t0`).
    - `ts`: save times in `[t0, t1]` (default 101 evenly spaced points).
    - `field`: `field(params, data) -> tangent` with the structure of `params`;
      called with `problem.data` (pass data this way, not in a closure, so that it is a
      traced argument and not a compile-time constant). Default $-\nabla L$.
    - `solver`: a diffrax solver or one of `"tsit5"`, `"dopri5"`, `"dopri8"`,
      `"bosh3"`, `"implicit"`/`"kvaerno5"`, `"kvaerno3"`, `"rkc"`
      ([`gdflow.RKC2`][], Runge–Kutta–Chebyshev: explicit with a real stability
      interval growing like the square of its stage count, for stiff gradient flows),
      `"ros2"` ([`gdflow.ROS2CG`][], a matrix-free L-stable Rosenbrock-W method whose
      linear solves are conjugate gradients on Hessian-vector products), `"exprb"`
      ([`gdflow.EXPRB32`][], a matrix-free third-order exponential Rosenbrock method
      whose φ-function products are Lanczos on Hessian-vector products).
    - `rtol`, `atol`: tolerances of the step-size controller. An `rtol` below the
      machine epsilon of the state's dtype cannot be met (rounding alone exceeds it) and
      is raised to that epsilon with a `RuntimeWarning` (float32: 1.19e-7).
    - `t0`, `params0`: start (default `0` and `problem.params0`); `params0` must
      have the pytree structure and shapes of `problem.params0` (floating, finite).
    - `dt0`: initial step (default: diffrax's choice, which the controller then
      adapts; required for fixed-step solvers such as `diffrax.Euler()`, which then
      take constant steps).
    - `max_steps`: cap on solver steps. Memory does not grow with it.
    - `controller`: a diffrax step-size controller, overriding `rtol`/`atol`.
    - `progress`: show a progress bar.

    **Returns:** a continuous [`gdflow.Trajectory`][] (`method="gradient_flow"`)
    whose [`gdflow.Trajectory.evaluate`][] re-solves to any times. `stats` holds the
    solver's step counts and `grad_evals`: field evaluations counted from the steps
    (stages per attempted step, less one for FSAL, plus one at the start for FSAL
    solvers: exact without rejected steps, else possibly short by up to their number,
    see `count_evals`; `None` for implicit solvers; for solvers that count their
    own, as `"rkc"`, their count, with rejected attempts estimated at the mean accepted
    cost). `grad_evals_exact` says whether the count is exact.

    **Raises:** `TypeError` for non-numeric times, tolerances or `params0`, a
    non-callable `field` or a `controller` that is not a diffrax controller;
    `ValueError` for `t1 <= t0`, non-finite times or tolerances, save times outside
    `[t0, t1]` or unsorted, a `params0` whose structure or shapes differ from
    `problem.params0` or that is not finite, and a `field` that fails on `params0`
    or returns another structure or shape (checked abstractly with `jax.eval_shape`,
    before any solve). [`gdflow.FlowError`][] (carrying the solved part as `.trajectory`)
    when the solver gives up, saying why: a finite-time blow-up (the state is non-finite
    or has grown a thousandfold over `max(1, |theta0|)`, located to within
    `(t1 - t0)/64` by a probe grid of save points, states from the blow-up on
    dropped), `max_steps`, a step size below four ulps of the time (the default
    controller's floor: a non-finite field, or extreme stiffness), or a non-finite state.

    ```python
    problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 10.0])), params0=jnp.ones(2))
    flow = gf.gradient_flow(problem, t1=2.0, ts=0.05 * jnp.arange(41))
    ```
    """
    if not isinstance(problem, Problem):
        raise TypeError(
            f"`problem` must be a gdflow.Problem; got {type(problem).__name__}. Build one "
            "with gf.Problem(loss, data, params0)."
        )
    t0 = _finite_time("t0", t0)
    t1f = _finite_time("t1", t1, ValueError)
    if t1f <= t0:
        raise ValueError(f"`t1` must be a finite time > t0={t0:g}; got {t1!r}.")
    max_steps = positive_int("max_steps", max_steps)
    params0 = _check_params0(problem, params0)
    dtype = float_dtype(params0)
    if ts is None:
        ts_np = np.linspace(t0, t1f, 101)
    else:
        ts_np = _check_ts(ts, t0, t1f)
    solver_ = resolve_solver(solver)
    if controller is not None and not isinstance(controller, diffrax.AbstractStepSizeController):
        raise TypeError(
            "`controller` must be a diffrax step-size controller (e.g. "
            f"diffrax.PIDController(rtol=1e-6, atol=1e-9)) or None; got {controller!r}."
        )
    if controller is None:
        rtol = _reachable_rtol(positive_finite("rtol", rtol), dtype)
        atol = positive_finite("atol", atol)
        if isinstance(solver_, diffrax.AbstractAdaptiveSolver) or hasattr(solver_, "tableau"):
            # A step below a few ulps of the time cannot advance it: stop there (a
            # finite-time blow-up, a non-finite field or extreme stiffness) instead of
            # spinning on to `max_steps`. The floor and the tolerances are traced, so
            # `evaluate` and a solve at another rtol, atol or horizon reuse the compilation.
            dtmin = _DTMIN_ULPS * float(jnp.finfo(dtype).eps) * max(abs(t0), abs(t1f))
            controller = diffrax.PIDController(
                rtol=jnp.asarray(rtol, dtype),
                atol=jnp.asarray(atol, dtype),
                dtmin=jnp.asarray(dtmin, dtype),
                force_dtmin=False,
            )
        else:
            if dt0 is None:
                raise ValueError(
                    f"`solver` {type(solver_).__name__} has no error estimate: pass a fixed "
                    "step `dt0`, or use an adaptive solver such as 'tsit5'."
                )
            controller = diffrax.ConstantStepSize()
    if dt0 is not None:
        dt0 = jnp.asarray(positive_finite("dt0", dt0), dtype=dtype)
    if field is None:
        check_scalar_loss(
            problem.loss,
            params0,
            (problem.data,),
            name="problem.loss",
            call="problem.loss(params0, data)",
        )
        field_ = _negative_gradient(problem.loss)
    else:
        _check_field(field, params0, problem.data)
        field_ = field

    # The state is also saved on a probe grid of _PROBES points, so that a solve that
    # fails can say where the state blew up (to (t1 - t0)/_PROBES) whatever `ts` is.
    # Interpolation costs no field evaluations; losses are computed at `ts` only.
    probe = np.linspace(t0, t1f, _PROBES + 1)
    all_ts = np.concatenate([ts_np, probe])
    order = np.argsort(all_ts, kind="stable")
    where_ts = np.argsort(order, kind="stable")[: ts_np.size]
    # With x64 on, times in the state's dtype: a float32 state must not be promoted.
    args = (
        problem,
        field_,
        params0,
        jnp.asarray(t0, dtype),
        jnp.asarray(t1f, dtype),
        jnp.asarray(all_ts[order], dtype),
        jnp.asarray(where_ts),
        solver_,
        controller,
        dt0,
        max_steps,
        bool(progress),
    )
    (ys, losses, result, sstats, probe_ys), compile_s, run_s = run_compiled(_solve, *args)
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
        when = real_array("ts", when).astype(np.float64).reshape(-1)
        if when.size == 0:
            raise ValueError("`ts` is empty; give at least one time to evaluate at.")
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
    finite = _finite_rows(ys)
    if result != diffrax.RESULTS.successful or not finite.all():
        norms = _row_norms(probe_ys)
        n0 = float(_row_norms(jax.tree_util.tree_map(lambda x: x[None], params0))[0])
        ref = max(1.0, n0)
        blowup = _blowup(all_ts[order], norms, ref, result)
        keep = finite.copy()
        if blowup is not None:
            # Saved states at or after the blow-up are not solutions (a step can cross
            # the singularity before the controller notices); drop them.
            keep &= ts_np <= blowup[1]
        good = int(np.argmin(keep)) if not keep.all() else len(keep)
        partial = Trajectory(
            ts=jnp.asarray(ts_np[:good], dtype),
            params=jax.tree_util.tree_map(lambda x: x[:good], ys),
            loss=losses[:good],
            method=method,
            stats=stats,
        )
        reached = f"t={ts_np[good - 1]:g}" if good else f"t0={t0:g} (none)"
        if blowup is not None:
            t_bad, t_ok, n_ok = blowup
            reason = (
                f"the flow blows up in finite time, between t={t_ok:.4g} and t={t_bad:.4g}: "
                f"the state is non-finite or exploding at t={t_bad:.4g} (|theta|_inf grew "
                f"from {n0:.3g} at t0 to {n_ok:.3g} at t={t_ok:.4g}). No solver or "
                "`max_steps` can pass a blow-up: check that the loss is bounded below and "
                "that the field grows at most linearly in theta, or stop before it with a "
                "smaller `t1`"
            )
        else:
            reason = _failure_reason(result, max_steps)
        raise FlowError(
            f"gradient_flow stopped: {reason}. "
            f"Saved up to save time {reached} of t1={t1f:g} "
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
