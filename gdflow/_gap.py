r"""The gap between gradient descent and gradient flow: measured, and estimated.

GD with step $\eta$ is the explicit Euler method on gradient flow (GF)
$\dot\theta = -\nabla L(\theta)$, iterate $k$ sitting at $t = k\eta$.
[`gdflow.distance`][] measures $|\theta_a(t) - \theta_b(t)|$ between any two
trajectories on one clock; [`gdflow.error_estimate`][] predicts the GD–GF distance from a
solved GF path alone, following Theorem 1 of Elkabetz & Cohen (NeurIPS 2021;
`../shared/sources/gf-vs-gd-neural-networks.md`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._problem import Problem, as_problem
from ._spectrum import SpectrumPath, spectrum_along
from ._stats import FlowStats
from ._time import match_times, time_tolerance
from ._trajectory import Trajectory
from ._validate import positive_finite, positive_int


def _is_gradient_flow(traj: Trajectory) -> bool:
    """Whether `traj` is a solve of gradient flow $-\nabla L$ by gf.gradient_flow: decided
    by what the trajectory is (continuous, with the statistics of an ODE solve of the
    negative gradient), not by its label."""
    stats = traj.stats
    return traj.continuous and isinstance(stats, FlowStats) and stats.field == "gradient"


def _check_trajectory(name: str, traj) -> None:
    if not isinstance(traj, Trajectory):
        raise TypeError(f"`{name}` must be a gdflow.Trajectory; got {type(traj).__name__}.")
    if len(traj) == 0:
        raise ValueError(f"`{name}` is empty (no saved points).")


def _structure(params) -> tuple:
    """Tree structure and per-time leaf shapes of stacked parameters."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return treedef, tuple(tuple(np.shape(x)[1:]) for x in leaves)


def distance(a: Trajectory, b: Trajectory) -> jax.Array:
    r"""The Euclidean distance $|\theta_a(t) - \theta_b(t)|$ at `a`'s saved times.

    All parameters are raveled into one vector. `b` is evaluated at `a.ts`:

    - continuous `b` (a flow): by `b.evaluate(a.ts)`, an accurate re-solve of the
      ODE at exactly those times (no interpolation by hand);
    - discrete `b` (GD, SGD): at its own saved points, which must include every one of
      `a`'s times (to `1e-9` relative), e.g. GD at `lr` against GD at `lr / r`
      run with `save_every=r`.

    **Arguments:** `a`, `b`: [`gdflow.Trajectory`][] values of the same problem.

    **Returns:** a `(len(a),)` array.

    **Raises:** `ValueError` if the parameter structures or shapes differ, or if a
    discrete `b` lacks some of `a`'s times (saying which and how to fix it);
    `TypeError` if either is not a Trajectory.

    ```python
    gd = gf.gd(problem, lr, steps)
    flow = gf.gradient_flow(problem, steps * lr)
    gf.distance(gd, flow)  # |θ_k - θ(k·lr)|, k = 0..steps
    ```
    """
    _check_trajectory("a", a)
    _check_trajectory("b", b)
    sa, sb = _structure(a.params), _structure(b.params)
    if sa != sb:
        raise ValueError(
            "`a` and `b` have different parameter structures: "
            f"{sa[0]} with leaf shapes {sa[1]} vs {sb[0]} with leaf shapes {sb[1]}. "
            "Compare trajectories of the same problem (same network and parameter layout)."
        )
    a_ts = np.asarray(a.ts, np.float64)
    idx = match_times(np.asarray(a.ts), np.asarray(b.ts))
    if b.continuous and np.any(idx < 0):
        pb = b.evaluate(a.ts)
    else:
        # Saved points at the very times asked for are used as they are (for a flow they
        # are what evaluate() would re-solve to, at the cost of a new solve).
        if np.any(idx < 0):
            missing = a_ts[idx < 0]
            raise ValueError(
                f"`b` ({b.method}) is discrete and has no saved point at {missing.size} of "
                f"`a`'s times (first t={missing[0]:g}). Save both at the same times (for GD "
                "at lr/r against GD at lr, use save_every=r), or pass a continuous "
                "trajectory (a flow) as `b`."
            )
        pb = jax.tree_util.tree_map(lambda x: x[jnp.asarray(idx)], b.params)
    sq = jax.tree_util.tree_map(
        lambda x, y: jnp.sum(jnp.reshape((x - y) ** 2, (x.shape[0], -1)), axis=1), a.params, pb
    )
    return jnp.sqrt(sum(jax.tree_util.tree_leaves(sq)))


class ErrorEstimate(eqx.Module):
    r"""The GD–GF error estimate along a gradient-flow path and its ingredients.

    **Attributes:**

    - `ts`: the flow's saved times $t_0 + j s\eta$, shape `(T,)` (stride
      $s \ge 1$ steps; $s = 1$ is every GD step).
    - `estimate`: $E(t) = \sum_{k:\,t_{k+1}\le t} e_k \exp(-\int_{t_{k+1}}^{t}
      \lambda_{\min}\,ds)$ at `ts`, shape `(T,)` (`estimate[0] = 0`).
    - `local_errors`: $e = \frac{\eta^2}{2}|H(\theta(t))\nabla L(\theta(t))|$ at
      `ts` (the local error of a GD step taken from there), shape `(T,)`.
    - `lambda_min`: $\lambda_{\min}(H(\theta(t)))$ at `ts`, shape `(T,)`
      (linearly interpolated between Lanczos samples when `eig_every > 1`).
    - `integral`: $\int_{t_0}^{t}\lambda_{\min}\,ds$ at `ts` (trapezoid rule on
      the step grid), shape `(T,)`.
    - `spectrum`: the `gdflow._spectrum.SpectrumPath` of the Lanczos samples.
    - `lr`: the step $\eta$.
    """

    ts: jax.Array
    estimate: jax.Array
    local_errors: jax.Array
    lambda_min: jax.Array
    integral: jax.Array
    spectrum: SpectrumPath
    lr: float = eqx.field(static=True)


@eqx.filter_jit
def _hessian_gradient_norms(loss, params_stacked, data):
    r"""$|H(\theta)\nabla L(\theta)|$ at each stacked point (one gradient + one HVP)."""

    def one(params):
        grad = jax.grad(loss)
        g = grad(params, data)
        hg = jax.jvp(lambda p: grad(p, data), (params,), (g,))[1]
        return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(hg)))

    return jax.lax.map(one, params_stacked)


def error_estimate(
    problem: Problem,
    flow: Trajectory,
    lr: float,
    *,
    eig_every: int = 1,
    spectrum: SpectrumPath | None = None,
    progress: bool | None = None,
    **eig_kwargs,
) -> ErrorEstimate:
    r"""Estimate $|\theta_k - \theta(k\eta)|$ (GD vs GF) from a solved GF path.

    A computable form of Theorem 1 of Elkabetz & Cohen (NeurIPS 2021), which bounds the
    distance by $O(e^{-\int_0^t\lambda_{\min}(\nabla^2L(\theta(s)))ds}\,t\,\eta)$.
    One GD step from the flow point $\theta(t_k)$ misses $\theta(t_{k+1})$ by
    the local Euler error (Taylor, $\ddot\theta = H\nabla L$ along GF)

    $$
    e_k = \frac{\eta^2}{2}\,|H(\theta(t_k))\nabla L(\theta(t_k))|,
    $$

    and a perturbation made at $t_{k+1}$ is carried to $t$ by the linearised
    flow $\dot\delta = -H\delta$, which stretches it by at most
    $\exp(-\int_{t_{k+1}}^t \lambda_{\min}(H)\,ds)$. Summing the propagated local
    errors ("Lady Windermere's fan", Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.3):

    $$
    E(t_n) = \sum_{k<n} e_k\,\exp\Big(-\int_{t_{k+1}}^{t_n}\lambda_{\min}\,ds\Big),
    $$

    computed by the recursion $E_n = e^{-(I_n - I_{n-1})}E_{n-1} + e_{n-1}$ with
    $I_n = \int_{t_0}^{t_n}\lambda_{\min}$ (trapezoid rule on the samples).

    **Where this is an estimate and not a rigorous bound.**

    - $\lambda_{\min}$ is taken on the GF path $\theta(t)$. The rigorous
      argument needs it on every flow started from a GD iterate, i.e. on the segments
      between the GF path and the GD iterates; near the path the two agree to first
      order in the distance, but a non-convex loss can bend more off the path.
    - Terms of order $\eta^3$ in the local error are dropped, the integral of
      $\lambda_{\min}$ is a trapezoid rule, and with a save stride or
      `eig_every > 1` the ingredients are interpolated between samples.
    - $\lambda_{\min}$ comes from Lanczos ([`gdflow.hessian_eigs`][]) to a
      relative residual `tol` and, with warm starts, could miss an eigenvalue crossing.

    On a convex quadratic with $\eta\lambda_{\max}\le 1$ it *is* a bound: the error
    obeys $\delta_{k+1} = (I-\eta H)\delta_k + d_k$ with
    $|d_k| \le e_k$ (since $0 \le e^{-x} - 1 + x \le x^2/2$) and
    $\|I - \eta H\| = 1 - \eta\lambda_{\min} \le e^{-\eta\lambda_{\min}}$.

    **It is loose late in a run.** Every local error is propagated at the slowest rate
    $\lambda_{\min}$, but most of it lies along stiff directions (where
    $H\nabla L$ is large) and dies out there at rate $\lambda_{\max}$; the
    true distance then falls far below the estimate, which decays only at
    $\lambda_{\min}$ (and grows if $\lambda_{\min} < 0$).

    **Arguments:**

    - `problem`: the [`gdflow.Problem`][] (full-batch loss and data).
    - `flow`: a GF [`gdflow.Trajectory`][] saved at $t_k = t_0 + k\eta$
      (e.g. `gf.gradient_flow(problem, K * lr, ts=lr * jnp.arange(K + 1))`), or at every
      `s`-th of those times for long runs: the recursion still runs step by step, with
      $\lambda_{\min}$ interpolated linearly and $e_k$ geometrically between
      saved points (compare with GD saved with `save_every=s`).
    - `lr`: the GD step $\eta$.
    - `eig_every`: compute $\lambda_{\min}$ by Lanczos at every `eig_every`-th
      point only (and the last), interpolating linearly between (the local errors are
      always computed at every point: one gradient and one HVP each).
    - `spectrum`: a [`gdflow.SpectrumPath`][] of this flow already computed (with
      `which="smallest"` or `"both"`), to reuse instead of a new Lanczos sweep.
    - `progress`: progress bar of the Lanczos sweep (see [`gdflow.spectrum_along`][]).
    - `eig_kwargs`: passed on to [`gdflow.hessian_eigs`][] (`tol`, `max_iters`,
      `method`).

    **Returns:** an [`gdflow.ErrorEstimate`][].

    **Raises:** `ValueError` if `flow`'s saved times are not the grid
    $t_0 + js\eta$ (saying how to save them), or for a bad `lr`/`eig_every`.

    Cost: one gradient and one HVP per saved point, plus a warm-started Lanczos solve
    (tens of HVPs) per `eig_every` saved points.

    ```python
    flow = gf.gradient_flow(problem, K * lr, ts=lr * jnp.arange(K + 1))
    est = gf.error_estimate(problem, flow, lr)
    gap = gf.distance(gf.gd(problem, lr, K), flow)  # compare with est.estimate
    ```
    """
    problem = as_problem(problem)
    _check_trajectory("flow", flow)
    if not _is_gradient_flow(flow):
        what = "a discrete run" if not flow.continuous else "a flow of another vector field"
        raise ValueError(
            f"`flow` ({flow.method!r}) is {what}; error_estimate needs the gradient flow "
            "itself, solved by gf.gradient_flow(problem, K * lr, ts=lr * jnp.arange(K + 1)) "
            "without a `field`."
        )
    fixed = {"which", "every", "args", "progress", "k", "warm_start"} & set(eig_kwargs)
    if fixed:
        raise ValueError(
            f"error_estimate sets {sorted(fixed)} itself; pass only tol, max_iters, min_iters, "
            "method or key through `eig_kwargs` (use `eig_every` for the Lanczos stride)."
        )
    if spectrum is not None and (eig_every != 1 or eig_kwargs):
        raise ValueError(
            "`spectrum` is reused as it is: `eig_every` and Lanczos options have no effect "
            "with it. Pass either `spectrum` or those options."
        )
    lr = positive_finite("lr", lr)
    eig_every = positive_int("eig_every", eig_every)
    ts = np.asarray(flow.ts, np.float64)
    rel = time_tolerance(flow.ts)
    J = len(ts) - 1
    stride = int(round((ts[1] - ts[0]) / lr)) if J >= 1 else 0
    grid = ts[0] + stride * lr * np.arange(J + 1)
    if stride < 1 or not np.allclose(ts, grid, rtol=0.0, atol=rel * max(1.0, abs(grid[-1]))):
        raise ValueError(
            f"`flow` must be saved at t_j = t0 + j*s*lr for an integer stride s >= 1 "
            f"(lr={lr:g}), with at least two points; got {len(ts)} times from {ts[0]:g} to "
            f"{ts[-1]:g}. Solve it with ts = t0 + lr * jnp.arange(K + 1) (or every s-th of those)."
        )
    leaves0, treedef0 = jax.tree_util.tree_flatten(problem.params0)
    if _structure(flow.params) != (treedef0, tuple(tuple(np.shape(x)) for x in leaves0)):
        raise ValueError(
            "`flow`'s parameters do not match the structure and shapes of "
            "`problem.params0`; pass the flow of this problem."
        )

    if spectrum is None:
        spec = spectrum_along(
            problem.loss,
            flow,
            args=(problem.data,),
            which="smallest",
            every=eig_every,
            progress=progress,
            **eig_kwargs,
        )
    else:
        if not isinstance(spectrum, SpectrumPath) or spectrum.which == "largest":
            raise ValueError(
                "`spectrum` must be a SpectrumPath with the smallest eigenvalues "
                "(spectrum_along(..., which='smallest' or 'both')) of this flow."
            )
        st = np.asarray(spectrum.ts, np.float64)
        if np.any(match_times(st, ts) < 0) or st[0] != ts[0] or st[-1] != ts[-1]:
            raise ValueError(
                "`spectrum` must be computed at saved points of `flow`, including the "
                "first and the last (spectrum_along(loss, flow, ...))."
            )
        spec = spectrum
    lam_saved = np.interp(ts, np.asarray(spec.ts, np.float64), np.asarray(spec.lambda_min))
    hg = np.asarray(_hessian_gradient_norms(problem.loss, flow.params, problem.data), np.float64)
    local_saved = 0.5 * lr**2 * hg

    # The recursion runs on the step grid t0 + k*lr. With a stride s > 1, lambda_min is
    # interpolated linearly between saved points and the local errors geometrically
    # (linearly in log): they decay like exponentials along the flow, and a linear
    # interpolant would overstate them by a large factor when they fall fast.
    K = J * stride
    fine = ts[0] + lr * np.arange(K + 1)
    lam = np.interp(fine, ts, lam_saved)
    tiny = np.finfo(np.float64).tiny
    local = np.exp(np.interp(fine[:-1], ts, np.log(np.maximum(local_saved, tiny))))
    integral = np.concatenate([[0.0], np.cumsum(0.5 * lr * (lam[1:] + lam[:-1]))])
    est = np.zeros(K + 1)
    decay = np.exp(-np.diff(integral))
    for n in range(1, K + 1):
        est[n] = decay[n - 1] * est[n - 1] + local[n - 1]
    keep = np.arange(0, K + 1, stride)
    est, integral = est[keep], integral[keep]

    dtype = jnp.result_type(*jax.tree_util.tree_leaves(problem.params0))
    return ErrorEstimate(
        ts=jnp.asarray(ts, dtype),
        estimate=jnp.asarray(est, dtype),
        local_errors=jnp.asarray(local_saved, dtype),
        lambda_min=jnp.asarray(lam_saved, dtype),
        integral=jnp.asarray(integral, dtype),
        spectrum=spec,
        lr=lr,
    )
