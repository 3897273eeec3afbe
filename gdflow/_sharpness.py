r"""Sharpness $\lambda_{\max}(\nabla^2 L)$ along runs: GD, gradient flow, central flow.

The edge of stability (Cohen et al., ICLR 2021) is read off the sharpness: GD with step
$\eta$ is stable on a quadratic only while $\eta\lambda_{\max} < 2$; on neural nets the
sharpness rises (progressive sharpening) until $\eta\lambda_{\max} \approx 2$ and hovers
there. [`sharpness_gd`][gdflow._sharpness.sharpness_gd] runs GD and measures the top
eigenvalues every `every` steps inside one compiled loop, warm-starting each block
eigen-solve from the previous eigenvectors and storing no iterate;
[`sharpness_along`][gdflow._sharpness.sharpness_along] does the same at the saved
points of any trajectory (gradient flow, central flow, GD).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._central import _hvp, _track
from ._problem import Problem
from ._trajectory import Trajectory
from ._tree import tree_zeros
from ._validate import nonnegative_finite, positive_finite, positive_int

__all__ = ["SharpnessPath", "sharpness_along", "sharpness_gd"]


class SharpnessPath(eqx.Module):
    r"""Top Hessian eigenvalues at points of a run.

    **Attributes:**

    - `ts` `(T,)`: times of the points (clock $t = k\eta$ for GD).
    - `eigenvalues` `(T, k)`: the top `k` eigenvalues, descending.
    - `residuals` `(T, k)`: $\|Hx_i - \lambda_i x_i\|$ of each.
    - `loss` `(T,)`: the loss at the points.
    - `hvps`: Hessian-vector products spent in all; `grad_evals`: gradients of the run
      itself (GD steps; 0 for a given trajectory).
    - `lr`: the step size the edge $2/\eta$ refers to (or `None`).
    - `crossing_time`: the first time at which $\eta\lambda_{\max}$ reaches 2, linearly
      interpolated between the two points around it (`None` if it never does, or no
      `lr`); `crossing_index`: the first point with $\eta\lambda_{\max} \ge 2$.
    - `seconds`: wall time of the compiled run.
    - `step_loss` `(K + 1,)`: for a GD run, the loss before each of its `K` steps and
      at the end (`None` otherwise); `loss` is its every `every`-th entry.
    - `flat_params` `(T, P)`: the parameters at the points, flattened in
      `jax.flatten_util.ravel_pytree` order, where asked for (`save_params=True` of
      [`sharpness_gd`][gdflow._sharpness.sharpness_gd]); else `None`.
    """

    ts: np.ndarray
    eigenvalues: np.ndarray
    residuals: np.ndarray
    loss: np.ndarray
    hvps: int
    grad_evals: int
    lr: float | None
    crossing_time: float | None
    crossing_index: int | None
    seconds: float
    step_loss: np.ndarray | None = None
    flat_params: np.ndarray | None = None

    @property
    def sharpness(self) -> np.ndarray:
        r"""$\lambda_{\max}$, shape `(T,)`."""
        return self.eigenvalues[:, 0]


def _crossing(ts, lam, lr):
    if lr is None:
        return None, None
    s = lr * lam
    idx = np.nonzero(s >= 2.0)[0]
    if idx.size == 0:
        return None, None
    i = int(idx[0])
    if i == 0:
        return float(ts[0]), 0
    # Linear interpolation of lr*lambda between the last point below 2 and this one.
    a, b = s[i - 1], s[i]
    return float(ts[i - 1] + (2.0 - a) / (b - a) * (ts[i] - ts[i - 1])), i


# Blocks per compiled call of `_gd_blocks`: at most _CHUNK, fewer for a shorter run (a
# power of two) or where a call's outputs would pass _CHUNK_BYTES. The block count is
# traced, not static, so runs of any length (GD at several step sizes over one horizon)
# share one compilation; the unused blocks of the last call are skipped by a `lax.cond`.
_CHUNK = 32
_CHUNK_BYTES = 8 * 2**20


@eqx.filter_jit
def _gd_blocks(
    loss, unravel, data, x0, V0, n0, lr, every, chunk, todo, last, tol, max_iters, save_params
):
    """Up to `chunk` blocks from `(x0, V0)`: an eigen-solve, then `every` GD steps.

    The first `todo` blocks run, the rest are skipped (zeros); with `last`, the point
    after the final block is measured too. Returns the carry `(x, V, hvps)` to continue
    from, the per-block outputs and the final measurement.
    """

    def f(y):
        return loss(unravel(y), data)

    value_and_grad = jax.value_and_grad(f)

    def measure(x, V):
        e = _track(lambda v: _hvp(f, x, v), V, iters=1, tol=tol, max_iters=max_iters)
        return e.lam, e.X, e.res, e.hvps

    def gd_step(y, _):
        value, g = value_and_grad(y)
        return y - lr * g, value

    def run(carry):
        x, V, n = carry
        lam, X, res, h = measure(x, V)
        x_new, ls = jax.lax.scan(gd_step, x, None, length=every)  # ls[0] = L(x)
        return (x_new, X, n + h), (lam, res, ls, x if save_params else None)

    def block(carry, i):
        outputs = jax.eval_shape(run, carry)[1]
        return jax.lax.cond(i < todo, run, lambda c: (c, tree_zeros(outputs)), carry)

    (xT, VT, n), outs = jax.lax.scan(block, (x0, V0, n0), jnp.arange(chunk))

    def final(c):
        x, V, _ = c
        lam, _, res, h = measure(x, V)
        return lam, res, f(x), h

    fin_shapes = jax.eval_shape(final, (xT, VT, n))
    fin = jax.lax.cond(last, final, lambda c: tree_zeros(fin_shapes), (xT, VT, n))
    return (xT, VT, n), outs, fin


def _start(P, m, dtype, key):
    key = jax.random.PRNGKey(0) if key is None else key
    return jax.random.normal(key, (P, m), dtype)


def sharpness_gd(
    problem: Problem,
    lr: float,
    steps: int,
    *,
    every: int = 10,
    k: int = 1,
    guard: int = 1,
    tol: float = 1e-6,
    max_iters: int = 100,
    key: jax.Array | None = None,
    save_params: bool = False,
) -> SharpnessPath:
    r"""Full-batch GD with the top-`k` Hessian eigenvalues every `every` steps.

    A compiled loop of blocks, run in calls of up to 32 blocks whose count is traced (so
    that runs of other lengths and step sizes reuse the compilation): a block eigen-solve
    ([`gdflow._central.track_eigs`][]) at the current iterate, then `every` GD steps
    $\theta \leftarrow \theta - \eta\nabla L(\theta)$; the eigen-solve is
    warm-started from the previous eigenvectors (`k + guard` vectors; the guard vectors
    help an eigenvalue rising from below into the top `k` to be caught), to a relative
    residual `tol`. Points: steps $0, e, 2e, \dots$ and the last. The loss is kept at
    every step (`step_loss`, free: each step's gradient comes with its value); iterates
    are stored only at the points, and only with `save_params=True`.

    Cost: `steps` gradients plus $(k + g)$ HVPs per eigen-iteration (one Rayleigh–Ritz
    step and at least one refinement per point; `hvps` reports the total).

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][]; `lr`: the step size $\eta$; `steps`: GD steps
      (a multiple of `every`).
    - `every`: steps between measurements; `k`, `guard`: eigenvalues reported / extra
      tracked.
    - `tol`, `max_iters`: each eigen-solve's stopping rule.
    - `key`: PRNG key of the first (cold) start.
    - `save_params`: keep the (flattened) parameters at the points, `flat_params`.

    **Returns:** a [`SharpnessPath`][gdflow._sharpness.SharpnessPath] with the first
    crossing of $\eta\lambda_{\max} = 2$.

    **Raises:** `ValueError` for a bad `lr`, `steps` not a multiple of `every`, or
    `k + guard` above the parameter count.

    ```python
    >>> problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 30.0])), params0=jnp.ones(2))
    >>> path = sharpness_gd(problem, lr=0.1, steps=20, every=10, k=1, guard=1)
    >>> path.sharpness.round(6).tolist(), path.crossing_time
    ([30.0, 30.0, 30.0], 0.0)

    ```
    Reference: Cohen, Kaur, Li, Kolter, Talwalkar, "Gradient Descent on Neural Networks
    Typically Occurs at the Edge of Stability", ICLR 2021, §3.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    lr = positive_finite("lr", lr)
    steps = positive_int("steps", steps)
    every = positive_int("every", every)
    k = positive_int("k", k)
    guard = positive_int("guard", guard, allow_zero=True)
    tol = nonnegative_finite("tol", tol)
    max_iters = positive_int("max_iters", max_iters)
    if not isinstance(save_params, bool):
        raise TypeError(f"`save_params` must be True or False; got {save_params!r}.")
    if steps % every:
        raise ValueError(f"`steps`={steps} must be a multiple of `every`={every}.")
    x0, unravel = ravel_pytree(problem.params0)
    P = int(x0.shape[0])
    if k + guard > P:
        raise ValueError(f"`k + guard` = {k + guard} exceeds the {P} parameters.")
    V0 = _start(P, k + guard, x0.dtype, key)
    from ._run import run_compiled

    carry = (x0, V0, jnp.zeros((), jnp.int32))
    blocks, done, run_s, parts = steps // every, 0, 0.0, []
    per_block = 8 * (every + 2 * (k + guard)) + (x0.dtype.itemsize * P if save_params else 0)
    chunk = max(1, min(_CHUNK, _CHUNK_BYTES // per_block, 1 << (blocks - 1).bit_length()))
    while done < blocks:
        todo = blocks - done
        (carry, outs, fin), _, seconds = run_compiled(
            _gd_blocks,
            problem.loss,
            unravel,
            problem.data,
            *carry,
            jnp.asarray(lr, x0.dtype),
            every,
            chunk,
            jnp.asarray(todo, jnp.int32),
            jnp.asarray(todo <= chunk),
            jnp.asarray(tol, x0.dtype),
            max_iters,
            save_params,
        )
        run_s += seconds
        used = min(todo, chunk)
        parts.append(jax.tree_util.tree_map(lambda a, u=used: np.asarray(a)[:u], outs))
        done += used
    lam_f, res_f, loss_f, h_f = fin
    lam = np.concatenate([p[0] for p in parts] + [np.asarray(lam_f)[None]])
    res = np.concatenate([p[1] for p in parts] + [np.asarray(res_f)[None]])
    step_loss = np.concatenate([p[2].reshape(-1) for p in parts] + [np.asarray(loss_f)[None]])
    n = int(carry[2]) + int(h_f)
    xs = (
        np.concatenate([p[3] for p in parts] + [np.asarray(carry[0])[None]])
        if save_params
        else None
    )
    ts = lr * np.arange(0, steps + 1, every, dtype=np.float64)
    lam = np.asarray(lam)[:, :k]
    t_cross, i_cross = _crossing(ts, lam[:, 0], lr)
    return SharpnessPath(
        ts=ts,
        eigenvalues=lam,
        residuals=np.asarray(res)[:, :k],
        loss=step_loss[::every],
        hvps=int(n),
        grad_evals=steps,
        lr=lr,
        crossing_time=t_cross,
        crossing_index=i_cross,
        seconds=run_s,
        step_loss=step_loss,
        flat_params=xs,
    )


@eqx.filter_jit
def _along(loss, unravel, data, xs, V0, tol, max_iters):
    def one(carry, x):
        V, n = carry

        def f(y):
            return loss(unravel(y), data)

        e = _track(lambda v: _hvp(f, x, v), V, iters=1, tol=tol, max_iters=max_iters)
        return (e.X, n + e.hvps), (e.lam, e.res, f(x))

    (_, n), (lam, res, ls) = jax.lax.scan(one, (V0, jnp.zeros((), jnp.int32)), xs)
    return lam, res, ls, n


def sharpness_along(
    problem: Problem,
    traj: Trajectory,
    *,
    lr: float | None = None,
    k: int = 1,
    guard: int = 1,
    tol: float = 1e-6,
    max_iters: int = 100,
    key: jax.Array | None = None,
) -> SharpnessPath:
    r"""Top-`k` Hessian eigenvalues at every saved point of a trajectory, in one jitted scan.

    Each point's block eigen-solve is warm-started from the previous point's vectors
    (see [`sharpness_gd`][gdflow._sharpness.sharpness_gd]); for a gradient-flow or
    central-flow path this is the sharpness along it. `lr` (default: the trajectory's
    `stats["lr"]` if any) sets the edge $2/\eta$ for the crossing time.

    **Arguments:** `problem`, `traj` (a [`gdflow.Trajectory`][] of this problem's
    parameters), `lr`, `k`, `guard`, `tol`, `max_iters`, `key` as in
    [`sharpness_gd`][gdflow._sharpness.sharpness_gd].

    **Returns:** a [`SharpnessPath`][gdflow._sharpness.SharpnessPath].

    **Raises:** `TypeError` for a non-Trajectory; `ValueError` for an empty one or
    parameters of another size.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    if not isinstance(traj, Trajectory):
        raise TypeError(f"`traj` must be a gdflow.Trajectory; got {type(traj).__name__}.")
    if len(traj) == 0:
        raise ValueError("`traj` is empty.")
    k = positive_int("k", k)
    guard = positive_int("guard", guard, allow_zero=True)
    tol = nonnegative_finite("tol", tol)
    max_iters = positive_int("max_iters", max_iters)
    if lr is None:
        lr = traj.stats.get("lr")
    lr = None if lr is None else positive_finite("lr", lr)
    x0, unravel = ravel_pytree(problem.params0)
    xs = traj.flat()
    if xs.shape[1] != x0.shape[0]:
        raise ValueError(
            f"`traj` has {xs.shape[1]} parameters per point; the problem has {x0.shape[0]}."
        )
    P = int(x0.shape[0])
    if k + guard > P:
        raise ValueError(f"`k + guard` = {k + guard} exceeds the {P} parameters.")
    V0 = _start(P, k + guard, x0.dtype, key)
    from ._run import run_compiled

    (lam, res, ls, n), _, run_s = run_compiled(
        _along,
        problem.loss,
        unravel,
        problem.data,
        xs.astype(x0.dtype),
        V0,
        jnp.asarray(tol, x0.dtype),
        max_iters,
    )
    ts = np.asarray(traj.ts, np.float64)
    lam = np.asarray(lam)[:, :k]
    t_cross, i_cross = _crossing(ts, lam[:, 0], lr)
    return SharpnessPath(
        ts=ts,
        eigenvalues=lam,
        residuals=np.asarray(res)[:, :k],
        loss=np.asarray(ls),
        hvps=int(n),
        grad_evals=0,
        lr=lr,
        crossing_time=t_cross,
        crossing_index=i_cross,
        seconds=run_s,
    )
