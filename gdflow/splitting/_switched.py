r"""Switched minibatch flows: gradient flow whose batch changes at fixed times."""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._batching import AbstractBatching, resolve_batching
from .._flow import FlowError, _reachable_rtol, count_evals, resolve_solver
from .._problem import Problem, float_dtype
from .._run import run_compiled
from .._stats import SwitchedStats
from .._trajectory import Trajectory
from .._validate import positive_finite, positive_int, real_array

PyTree = Any

__all__ = ["switched_flow"]


def _bucket(size: int, least: int = 8) -> int:
    """The next power of two >= `size`: padded shapes let runs of different lengths
    share one compilation (compiling an adaptive solve inside a scan takes seconds)."""
    return max(least, 1 << max(0, int(size) - 1).bit_length())


def _segment_batches(batching: AbstractBatching, n: int, segments: int) -> jax.Array:
    """Index table `(segments, b)`: the batch active on each dwell interval."""
    m = batching.num_batches(n)
    if batching.deterministic:
        table = batching.epoch(n, 0)
        return table[jnp.arange(segments) % m]
    epochs = -(-segments // m)
    tables = jax.vmap(lambda e: batching.epoch(n, e))(jnp.arange(epochs))
    return tables.reshape(epochs * m, -1)[:segments]


class _Solver(eqx.Module):
    """One adaptive solve of $\\dot\\theta = -r\\nabla L_B(\\theta)$ over `[0, s]`."""

    loss: Any = eqx.field(static=True)
    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    max_steps: int = eqx.field(static=True)

    def __call__(self, y0, batch, rate, s):
        loss = self.loss

        def vf(t, y, args):
            del t
            batch, rate = args
            g = jax.grad(loss)(y, batch)
            return jax.tree_util.tree_map(lambda x: -rate * x, g)

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            self.solver,
            t0=jnp.zeros((), s.dtype),
            t1=s,
            dt0=None,
            y0=y0,
            args=(batch, rate),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=self.controller,
            max_steps=self.max_steps,
            throw=False,
        )
        y1 = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
        return y1, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful


@eqx.filter_jit
def _pieces(problem, seg, rate, chain, y0s, table, lengths):
    """Solve `N` pieces of the switched flow in one `lax.scan`.

    Piece `i` solves on batch `table[i]` for time `lengths[i]`, starting from
    `y0s[i]`, or, when `chain` is true and `i > 0`, from the end of piece `i - 1`.
    Chained, the pieces are the dwell intervals (states at the switching times); not
    chained, they are independent restarts from the last switch before each requested
    time (dense evaluation). One function serves both so that they share a compilation.
    """
    data = problem.data

    def body(carry, x):
        y, bad, steps = carry
        i, y0, idx, s = x
        start = jax.tree_util.tree_map(lambda a, b: jnp.where(chain & (i > 0), a, b), y, y0)
        batch = jax.tree_util.tree_map(lambda a: a[idx], data)
        y1, ns, ok = seg(start, batch, rate, s)
        bad = jnp.where((bad < 0) & ~ok, i, bad)
        return (y1, bad, steps + ns), y1

    N = lengths.shape[0]
    init = (
        jax.tree_util.tree_map(lambda a: a[0], y0s),
        jnp.int32(-1),
        jnp.zeros((), jnp.int32),
    )
    (_, bad, steps), ys = jax.lax.scan(
        body, init, (jnp.arange(N, dtype=jnp.int32), y0s, table, lengths)
    )
    losses = jax.vmap(lambda p: problem.loss(p, data))(ys)
    return ys, losses, bad, steps


def switched_flow(
    problem: Problem,
    dwell: float,
    t1: float,
    batching: AbstractBatching,
    rate: float = 1.0,
    ts=None,
    *,
    solver: diffrax.AbstractSolver | str | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 4096,
) -> Trajectory:
    r"""The switched minibatch flow $\dot\theta = -r\,\nabla L_{j(t)}(\theta)$.

    The batch in force switches every `dwell` time units,
    $j(t) = \lfloor t/\mathrm{dwell}\rfloor \bmod m$ within an epoch of `m`
    batches (epoch $\lfloor t/(m\,\mathrm{dwell})\rfloor$ takes its partition and
    order from `batching`, so `Reshuffle` reorders every epoch as in
    [`gdflow.sgd`][]). This is minibatch SGD with every step replaced by the exact
    local flow:

    - `rate=1, dwell=lr`: the splitting optimiser with exact local solves;
      sampled at $t = k\cdot\mathrm{lr}$ it equals
      `gf.split(problem, lr, ..., local=gf.Exact())` (Lie–Trotter) and SGD is its
      Euler discretisation.
    - `rate=eta, dwell=eta` with `RoundRobin(1)` on
      [`gdflow.problems.two_points`][]: the minibatch text's model
      $\dot\theta = \eta[g_{2\eta}(t)(\mathbf a-\theta) + (1-g_{2\eta}(t))(\mathbf
      b-\theta)]$, solved in closed form by [`gdflow.two_point_flow`][]. (Each dwell
      then moves $\theta$ as far as an SGD step of $\eta^2$ would, with text
      time $t$ = step × $\eta$.)

    It is solved piecewise: one adaptive diffrax solve per dwell interval, in a
    `lax.scan` from switching time to switching time (the field is discontinuous in
    time only there, so no step straddles a jump). The states at all switching times are
    kept (memory: one parameter vector per switch); [`gdflow.Trajectory.evaluate`][] at any
    $t\in[0, t_1]$ restarts from the last switch before $t$ and solves to it.

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][], started at `problem.params0`.
    - `dwell`: time per batch, $> 0$.
    - `t1`: end time, $> 0$.
    - `batching`: `RoundRobin(b)`, `Reshuffle(b, key)`, `Replacement(b, key)`
      or `FullBatch()` (then this is gradient flow).
    - `rate`: the factor $r > 0$ in front of the gradient (default 1).
    - `ts`: save times in $[0, t_1]$ (default: the switching times
      $k\cdot\mathrm{dwell} < t_1$ and $t_1$).
    - `solver`, `rtol`, `atol`: the diffrax solver (default Tsit5) and the
      tolerances of every piece (defaults `1e-8`, `1e-10`).
    - `max_steps`: cap on solver steps per dwell interval.

    **Returns:** a continuous [`gdflow.Trajectory`][] (`method="switched_flow"`);
    `stats`: `"num_steps"`, `"grad_evals"`, `"segments"`, `"dwell"`, `"rate"`,
    `"num_batches"`, `"batch_size"`, `"seconds"`, `"compile_seconds"`. With the
    default `ts` the saved points are exactly the states at the switching times.

    **Raises:** `ValueError` for non-positive or non-finite `dwell`, `t1`, `rate`
    or tolerances, save times outside $[0, t_1]$, or a `batching` that cannot
    batch `n`; [`gdflow.FlowError`][] if a piece fails (e.g. `max_steps`).

    ```python
    two = gf.problems.two_points(jnp.array([1.0]), jnp.array([-1.0]), jnp.array([3.0]))
    flow = gf.switched_flow(two, dwell=0.5, t1=10.0, batching=gf.RoundRobin(1), rate=0.5)
    flow.evaluate(jnp.array([0.25, 3.3]))   # == gf.two_point_flow(..., eta=0.5)
    ```

    Reference: `../shared/sources/minibatch-gradient-flow.md` (the square-wave flow);
    `../shared/sources/sgd-as-ode-splitting.md` (exact local flows).
    """
    if not isinstance(problem, Problem):
        raise TypeError(
            f"`problem` must be a gdflow.Problem; got {type(problem).__name__}. Build one "
            "with gf.Problem(loss, data, params0)."
        )
    dwell = positive_finite("dwell", dwell)
    t1 = positive_finite("t1", t1)
    rate = positive_finite("rate", rate)
    rtol = positive_finite("rtol", rtol)
    atol = positive_finite("atol", atol)
    max_steps = positive_int("max_steps", max_steps)
    batching = resolve_batching(batching)
    n = problem.n
    batching.check(n)
    solver_ = resolve_solver(solver)
    dtype = float_dtype(problem.params0)
    rtol = _reachable_rtol(rtol, dtype, "switched_flow")
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    if ts is not None:
        # Checked before any solve, so that a bad `ts` costs nothing.
        ts_np = real_array("ts", ts, finite=False).astype(np.float64)
        if ts_np.ndim > 1:
            raise ValueError(f"`ts` must be a 1-d array of save times; got shape {ts_np.shape}.")
        ts_np = ts_np.reshape(-1)
        if ts_np.size and np.any(np.diff(ts_np) < 0):
            raise ValueError("`ts` must be non-decreasing; sort it first.")

    # Dwell intervals [k·dwell, min((k+1)·dwell, t1)], k < K. A t1 within rounding of a
    # multiple of dwell does not open a last, empty interval.
    K = max(1, int(np.ceil(t1 / dwell * (1 - 1e-12))))
    starts_t = dwell * np.arange(K)
    lengths = np.minimum(dwell, t1 - starts_t)
    switch_ts = np.append(starts_t, t1)
    Kp = _bucket(K)
    table = _segment_batches(batching, n, Kp)
    seg = _Solver(problem.loss, solver_, controller, max_steps)
    rate_arr = jnp.asarray(rate, dtype)

    # Padding intervals have length 0: the solver takes no step on them.
    padded = np.zeros(Kp)
    padded[:K] = lengths
    theta0 = problem.params0
    y0s = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (Kp, *jnp.shape(a))), theta0)
    (ends, end_losses, bad, steps), compile_s, run_s = run_compiled(
        _pieces, problem, seg, rate_arr, jnp.asarray(True), y0s, table, jnp.asarray(padded, dtype)
    )
    ys = jax.tree_util.tree_map(
        lambda a, e: jnp.concatenate([jnp.asarray(a)[None], e[:K]]), theta0, ends
    )
    losses = jnp.concatenate([jnp.asarray(problem.full_loss(theta0))[None], end_losses[:K]])
    bad, steps = int(bad), int(steps)
    if bad >= 0:
        partial = Trajectory(
            ts=jnp.asarray(switch_ts[: bad + 1], dtype),
            params=jax.tree_util.tree_map(lambda x: x[: bad + 1], ys),
            loss=losses[: bad + 1],
            method="switched_flow",
        )
        raise FlowError(
            f"switched_flow: the solve on dwell interval {bad} (t in [{starts_t[bad]:g}, "
            f"{starts_t[bad] + lengths[bad]:g}]) failed; increase `max_steps` or loosen "
            f"`rtol`/`atol`. The part before it is on `.trajectory`.",
            partial,
        )

    def dense(when):
        """States at the times `when` (clipped to [0, t1]) and the solver steps spent."""
        when = np.clip(when, 0.0, t1)
        k = np.clip(np.floor(when / dwell).astype(np.int64), 0, K - 1)
        s = np.clip(when - starts_t[k], 0.0, lengths[k])
        outs, losses, spent = [], [], 0
        # Chunks of Kp restarts reuse the compilation of the chained solve.
        for lo in range(0, when.size, Kp):
            kc = np.zeros(Kp, np.int64)
            sc = np.zeros(Kp)
            hi = min(lo + Kp, when.size)
            kc[: hi - lo], sc[: hi - lo] = k[lo:hi], s[lo:hi]
            kj = jnp.asarray(kc, jnp.int32)
            starts = jax.tree_util.tree_map(lambda a: a[kj], ys)
            out, loss, bad, more = _pieces(
                problem,
                seg,
                rate_arr,
                jnp.asarray(False),
                starts,
                table[kj],
                jnp.asarray(sc, dtype),
            )
            if int(bad) >= 0:
                raise FlowError(
                    "switched_flow: a solve to the requested times failed; increase "
                    "`max_steps` or loosen `rtol`/`atol`.",
                    None,
                )
            outs.append(jax.tree_util.tree_map(lambda a: a[: hi - lo], out))
            losses.append(loss[: hi - lo])
            spent += int(more)
        params = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs)
        return params, jnp.concatenate(losses), spent

    def evaluator(when):
        when = np.asarray(when, dtype=np.float64).reshape(-1)
        slack = 1e-12 * max(1.0, t1)
        if when.size and (when.min() < -slack or when.max() > t1 + slack):
            raise ValueError(
                f"Can only evaluate this switched flow on [0, {t1:g}]; asked for "
                f"[{when.min():g}, {when.max():g}]."
            )
        return dense(when)[0]

    if ts is None:
        ts_np, params, loss = switch_ts, ys, losses
    else:
        if ts_np.size == 0 or not np.all(np.isfinite(ts_np)):
            raise ValueError("`ts` must be a non-empty array of finite times.")
        if ts_np.min() < -1e-12 * max(1.0, t1) or ts_np.max() > t1 * (1 + 1e-12):
            raise ValueError(
                f"`ts` must lie in [0, t1] = [0, {t1:g}]; got [{ts_np.min():g}, {ts_np.max():g}]."
            )
        params, loss, more = dense(ts_np)
        steps += more

    stats = SwitchedStats(
        num_steps=steps,
        grad_evals=count_evals(solver_, steps, solves=K),
        segments=K,
        dwell=dwell,
        rate=rate,
        num_batches=batching.num_batches(n),
        batch_size=batching.batch_size(n),
        seconds=run_s,
        compile_seconds=compile_s,
        rtol=rtol,
        atol=atol,
        solver=type(solver_).__name__,
    )
    return Trajectory(
        ts=jnp.asarray(ts_np, dtype),
        params=params,
        loss=loss,
        method="switched_flow",
        stats=stats,
        evaluator=evaluator,
    )
