r"""The stochastic modified equation (SME) of minibatch SGD, solved by diffrax.

Minibatch SGD with sampling with replacement, $\theta_{k+1} = \theta_k -
\mathrm{lr}\,\frac1b\sum_{j=1}^b \nabla\ell_{I_{k,j}}(\theta_k)$ with i.i.d. uniform
indices $I_{k,j}$, is approximated in the weak sense (expectations of smooth test
functions, not paths) by the Itô SDE on the clock $t = k\,\mathrm{lr}$

$$
d\Theta = -\nabla\Big(L + \mathbb 1_{\mathrm{order}=2}\,\frac{\mathrm{lr}}{4}\|\nabla L\|^2
    \Big)(\Theta)\,dt + \sqrt{\mathrm{lr}\,\Sigma(\Theta)}\;dW,\qquad
\Sigma(\theta) = \frac{1}{b}\,\frac1n\sum_{i=1}^n
    (\nabla\ell_i - \nabla L)(\nabla\ell_i - \nabla L)^\top,
$$

$\Sigma$ the covariance of one step's minibatch gradient (Li, Tai and E, "Stochastic
modified equations and adaptive stochastic gradient algorithms", ICML 2017, and
"Stochastic modified equations and dynamics of stochastic gradient algorithms I:
mathematical foundations", JMLR 20, 2019: the first- and second-order SMEs).
"""

from __future__ import annotations

import numbers

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._batching import FullBatch, Replacement, Reshuffle, RoundRobin
from ._problem import Problem
from ._run import run_compiled
from ._validate import positive_finite, positive_int

__all__ = ["SDESolution", "sgd_sde"]


def _float_dtype(tree):
    """The floating dtype of the parameters (the state's dtype for diffrax)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def _check_key(key):
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    if dtype == jnp.uint32 and getattr(key, "shape", None) == (2,):
        return key
    raise TypeError(f"`key` must be a jax.random key (e.g. jax.random.key(0)); got {key!r}.")


def _sqnorm(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def _one(row):
    return jax.tree_util.tree_map(lambda x: x[None], row)


def _per_example_losses(loss, params, data) -> jax.Array:
    r"""$(\ell_1(\theta), \dots, \ell_n(\theta))$: the batch-mean loss on one example each."""
    return jax.vmap(lambda row: loss(params, _one(row)))(data)


class _Noise(eqx.Module):
    r"""$w \mapsto \sqrt{\mathrm{lr}/(nb)}\,\sum_i (w_i - \bar w)\nabla\ell_i(\theta)$.

    This is $\sqrt{\mathrm{lr}}\,G^\top w$ for the low-rank factor $G$ ($n \times P$,
    rows $(\nabla\ell_i - \nabla L)/\sqrt{nb}$, so that $G^\top G = \Sigma$), applied
    without forming $G$: since $\sum_i w_i\nabla L = \bar w\sum_i\nabla\ell_i$, centring
    the *weights* centres the gradients, and the sum is one vector-Jacobian product of the
    per-example loss vector (the cost of about one full gradient).
    """

    loss: object = eqx.field(static=True)
    scale: jax.Array  # sqrt(lr / (n b)), scalar of the state's dtype

    def __call__(self, params, data, w):
        _, vjp = jax.vjp(lambda p: _per_example_losses(self.loss, p, data), params)
        (out,) = vjp(self.scale * (w - jnp.mean(w)))
        return out


def _trace_sigma(loss, params, data, b: int) -> jax.Array:
    r"""$\operatorname{tr}\Sigma(\theta) = \frac{1}{nb}\sum_i\|\nabla\ell_i - \nabla L\|^2$."""
    grads = jax.vmap(lambda row: jax.grad(loss)(params, _one(row)))(data)
    mean = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads)
    dev = jax.tree_util.tree_map(lambda g, m: g - m[None], grads, mean)
    n = jax.tree_util.tree_leaves(grads)[0].shape[0]
    return _sqnorm(dev) / (n * b)


class SDESolution(eqx.Module):
    r"""Paths of the stochastic modified equation; returned by [`gdflow.sgd_sde`][].

    **Attributes** (`T = len(ts)`, `paths` independent paths):

    - `ts`: `(T,)` save times (clock $t = k\,\mathrm{lr}$).
    - `params`: pytree like `params0`, each leaf stacked `(paths, T, ...)`.
    - `loss`: `(paths, T)` full loss along every path.
    - `mean`: pytree, leaves `(T, ...)`: the Monte Carlo mean of $\Theta(t)$.
    - `mean_loss`: `(T,)` Monte Carlo mean of $L(\Theta(t))$; `sem_loss`: its standard
      error (sample standard deviation over $\sqrt{\text{paths}}$).
    - `order`, `lr`, `dt` (the solver step), `steps` (solver steps per path), `solver`
      (its class name), `compile_seconds`, `seconds` (the run, compile excluded).
    """

    ts: jax.Array
    params: object
    loss: jax.Array
    mean: object
    mean_loss: jax.Array
    sem_loss: jax.Array
    order: int = eqx.field(static=True)
    lr: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    compile_seconds: float = eqx.field(static=True)
    seconds: float = eqx.field(static=True)

    @property
    def paths(self) -> int:
        return int(self.loss.shape[0])

    def flat(self) -> jax.Array:
        """Parameters flattened: `(paths, T, P)`."""
        leaves = jax.tree_util.tree_leaves(self.params)
        p, t = self.loss.shape
        return jnp.concatenate([x.reshape(p, t, -1) for x in leaves], axis=-1)


@eqx.filter_jit
def _solve(problem, lr, keys, ts, t1, b, order, solver, steps, stratonovich):
    # Non-array arguments (b, order, solver, stratonovich) are static; the horizon `t1`
    # and the step count `steps` are traced, so runs at other step sizes and horizons
    # reuse the compilation.
    loss = problem.loss
    data = problem.data
    dtype = _float_dtype(problem.params0)
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    noise = _Noise(loss, jnp.sqrt(lr / (n * b)).astype(dtype))

    def potential(p, d):
        value, g = jax.value_and_grad(loss)(p, d)
        if order == 2:
            value = value + (lr / 4) * _sqnorm(g)
        if stratonovich:
            # Itô -> Stratonovich: the drift loses (1/2) sum_j (D sigma_j) sigma_j, which
            # for sigma_j = sqrt(lr/(nb)) (grad l_j - grad L) is (lr/4) grad tr Sigma.
            value = value + (lr / 4) * _trace_sigma(loss, p, d, b)
        return value

    def drift(t, y, d):
        return jax.tree_util.tree_map(jnp.negative, jax.grad(potential)(y, d))

    in_struct = jax.ShapeDtypeStruct((n,), dtype)

    def diffusion(t, y, d):
        return lx.FunctionLinearOperator(lambda w: noise(y, d, w), in_struct)

    t0 = jnp.zeros((), dtype)
    dt0 = t1 / steps.astype(dtype)

    def one(key):
        bm = diffrax.UnsafeBrownianPath(shape=in_struct, key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            t0,
            t1,
            dt0,
            problem.params0,
            args=data,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.ConstantStepSize(),
            # Fixed steps: the loop ends at t1 after `steps` of them; no bound to set
            # (a static one would make every step count a compilation of its own).
            max_steps=None,
            # No gradients through the solve are needed, and UnsafeBrownianPath (the
            # fast path for fixed steps) refuses the default checkpointed adjoint.
            adjoint=diffrax.ForwardMode(),
        )
        return sol.ys, sol.result

    ys, results = jax.vmap(one)(keys)
    full = jax.vmap(jax.vmap(lambda p: loss(p, data)))(ys)
    ok = jnp.all(results == diffrax.RESULTS.successful)
    return ys, full, ok


def _resolve_solver(solver, order: int):
    if solver is None:
        solver = diffrax.Euler() if order == 1 else diffrax.Heun()
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(
            "`solver` must be a diffrax SDE solver instance, e.g. diffrax.Euler() (order 1) "
            f"or diffrax.Heun() (order 2); got {solver!r}."
        )
    ito = isinstance(solver, diffrax.AbstractItoSolver)
    strat = isinstance(solver, diffrax.AbstractStratonovichSolver)
    if not (ito or strat):
        raise ValueError(
            f"`solver` {type(solver).__name__} is not an SDE solver (neither Itô nor "
            "Stratonovich); use diffrax.Euler() or diffrax.Heun()."
        )
    if order == 2:
        ode_order = solver.order(None)
        if ito or ode_order is None or ode_order < 2:
            raise ValueError(
                f"`solver` {type(solver).__name__} has weak order < 2 on the order-2 "
                "equation (diffrax's Itô solvers, Euler and ItoMilstein, are weak order 1; "
                "a Stratonovich solver needs deterministic order >= 2). Use diffrax.Heun() "
                "(the default), diffrax.Midpoint() or diffrax.Ralston()."
            )
    return solver, strat


def _check_batching(batching) -> int | None:
    if isinstance(batching, Replacement):
        return None
    if isinstance(batching, RoundRobin):
        why = (
            "RoundRobin visits a fixed partition in a fixed order: SGD is then "
            "deterministic, a Lie-Trotter splitting of gradient flow. Model it with "
            "gf.split / gf.switched_flow, or gf.sgd_modified_loss for its modified flow."
        )
    elif isinstance(batching, Reshuffle):
        why = (
            "Reshuffle samples without replacement: the steps of an epoch are not "
            "independent (the epoch's noise sums to zero), so the i.i.d.-noise SDE does "
            "not apply. Use gf.sgd_modified_loss(problem, lr, batching, expected=True) "
            "for its order-averaged modified flow, or Replacement(b, key) for the SDE."
        )
    elif isinstance(batching, FullBatch):
        why = (
            "FullBatch has no gradient noise: use gf.gradient_flow with "
            "gf.modified_field(problem.loss, lr, order)."
        )
    else:
        raise TypeError(f"`batching` must be gf.Replacement(b, key); got {batching!r}.")
    raise ValueError(
        f"`batching` must be gf.Replacement(b, key) (sampling with replacement, whose "
        f"gradient noise is i.i.d. across steps); got {type(batching).__name__}. {why}"
    )


def sgd_sde(
    problem: Problem,
    lr,
    t1,
    batching,
    *,
    order: int = 1,
    key,
    paths: int,
    ts=None,
    solver=None,
    dt=None,
) -> SDESolution:
    r"""Solve the stochastic modified equation of minibatch SGD, many paths under `vmap`.

    The model of `gf.sgd(problem, lr, epochs, gf.Replacement(b, key))` on the clock
    $t = k\,\mathrm{lr}$ (Li, Tai and E 2017; 2019), an Itô SDE:

    $$
    \text{order 1:}\quad d\Theta = -\nabla L\,dt + \sqrt{\mathrm{lr}\,\Sigma(\Theta)}\,dW,
    \qquad
    \text{order 2:}\quad d\Theta = -\nabla\Big(L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2\Big)dt
        + \sqrt{\mathrm{lr}\,\Sigma(\Theta)}\,dW,
    $$

    $\Sigma(\theta) = \frac1b\operatorname{Cov}_i\nabla\ell_i(\theta)$ (the covariance of
    the minibatch gradient of $b$ indices drawn uniformly with replacement; $\ell_i$ the
    loss of example $i$, `problem.loss` on a one-example batch).

    **Accuracy.** For smooth test functions $\varphi$ and a fixed horizon,
    $|\mathbb E\varphi(\theta_k) - \mathbb E\varphi(\Theta(k\,\mathrm{lr}))| =
    O(\mathrm{lr}^{\mathrm{order}})$ (weak order); plain gradient flow gets the mean to
    order 1 and misses the spread. **What order 2 implements, and why no noise
    correction:** weak order 2 needs the first two moments of one step to match SGD's to
    $O(\mathrm{lr}^3)$. SGD's step has mean $-\mathrm{lr}\,g$ and second moment
    $\mathrm{lr}^2(gg^\top + \Sigma)$. The SDE over time `lr` has mean
    $\mathrm{lr}\,\beta + \frac{\mathrm{lr}^2}{2}(\beta\cdot\nabla)\beta + O(\mathrm{lr}^3)$,
    with drift $\beta = -g - \frac{\mathrm{lr}}{2}Hg$ this is $-\mathrm{lr}\,g +
    O(\mathrm{lr}^3)$; its second moment is $\mathrm{lr}^2\beta\beta^\top +
    \mathrm{lr}\cdot\mathrm{lr}\Sigma + O(\mathrm{lr}^3)$, already matching. So the
    diffusion of the order-2 equation is the order-1 one, $\sqrt{\mathrm{lr}\Sigma}$, and
    only the drift changes; this is the second-order SME of Li, Tai and E.

    **Noise, matrix-free.** The diffusion is $\sqrt{\mathrm{lr}}\,G^\top$ with
    $G = [(\nabla\ell_i - \nabla L)/\sqrt{nb}]_{i=1}^n$ ($n\times P$, $G^\top G = \Sigma$)
    driven by an $n$-dimensional Brownian motion; $G^\top w$ is computed as one
    vector-Jacobian product of the per-example losses with centred weights
    $w - \bar w$ (a `lineax.FunctionLinearOperator`). No $P\times P$ matrix, and not even
    $G$, is formed.

    **Solvers and their weak orders** (diffrax 0.7 declares strong orders only; the weak
    orders here are the standard ones). diffrax's Itô solvers are `Euler`
    (Euler–Maruyama, weak order 1) and `ItoMilstein` (weak order 1): the default for
    order 1 is `Euler()`. No diffrax solver has weak order 2 for Itô SDEs with general
    multiplicative noise, so for order 2 the equation is rewritten *exactly* in
    Stratonovich form, whose drift is the gradient of
    $L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2 + \frac{\mathrm{lr}}{4}\operatorname{tr}\Sigma$
    (the Itô–Stratonovich correction $\frac12\sum_j(D\sigma_j)\sigma_j$ for
    $\sigma_j = \sqrt{\mathrm{lr}/(nb)}(\nabla\ell_j - \nabla L)$ is
    $\frac{\mathrm{lr}}{4}\nabla\operatorname{tr}\Sigma$), and solved by `Heun()` (the
    default; any Stratonovich solver of deterministic order $\ge 2$ is accepted). Why that
    is weak order 2 here: the noise is small, $\varepsilon^2 = \mathrm{lr}$, and a scheme
    that is order 2 on the drift and weak order 1 on the noise has weak error
    $O(dt^2 + \varepsilon^2 dt)$ (Milstein and Tretyakov, *Stochastic Numerics for
    Mathematical Physics*, the chapter on systems with small noise), i.e. $O(\mathrm{lr}^2)$ for
    $dt \le \mathrm{lr}$. Stratonovich solvers are also accepted for order 1 (the same
    correction is applied). Itô solvers are refused for order 2.

    **Batching.** Only `gf.Replacement(b, key)` (its `key` is not used: the SDE draws its
    own noise from `key`). `RoundRobin` (deterministic) and `Reshuffle` (noise
    anti-correlated within an epoch) have no i.i.d.-noise SME and are refused with the
    model that applies instead; so is `FullBatch` (no noise).

    **Cost** per path and step: order 1 with `Euler`, one full gradient (drift) and one
    VJP of the $n$ per-example losses (noise), about two full gradients; order 2 with
    `Heun`, two drift evaluations (each a gradient of the modified potential, with
    $n$ per-example gradients for $\operatorname{tr}\Sigma$, differentiated once more)
    and two noise VJPs. Memory: `paths` $\times$ `len(ts)` parameter vectors, plus the
    per-example gradients ($n\times P$) per path for order 2.

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][]; `loss(params, batch)` must be the batch mean.
    - `lr`: SGD's step size, finite and `> 0` (it sets the noise and the clock).
    - `t1`: the horizon, finite and `> 0` (SGD step `k` at `t = k·lr`).
    - `batching`: `gf.Replacement(b, key)`.
    - `order`: `1` or `2` (keyword).
    - `key`: a `jax.random` key for the Brownian paths (keyword, required).
    - `paths`: number of independent paths (keyword, required).
    - `ts`: save times in $[0, t_1]$, increasing (default: 101 equally spaced, 0 and
      `t1` included).
    - `solver`: a diffrax SDE solver (default `Euler()` for order 1, `Heun()` for 2).
    - `dt`: the fixed solver step (default `lr`: one solver step per SGD step). It is
      shrunk to `t1 / ceil(t1 / dt)` so the grid ends at `t1`. Keep `dt <= lr`.

    **Returns:** an [`gdflow.SDESolution`][] (`ts`, `params` stacked `(paths, T, ...)`,
    `loss`, Monte Carlo `mean`, `mean_loss`, `sem_loss`, timings).

    **Raises:** `ValueError` for a bad `lr`, `t1`, `dt`, `ts`, `order` or `paths`, a
    batching other than `Replacement`, or a solver below the model's weak order;
    `TypeError` for a wrong type of `problem`, `key` or `solver`; `RuntimeError` if a
    solve fails (non-finite state).

    ```python
    >>> problem = gf.problems.least_squares(jnp.eye(4), jnp.ones(4), params0=jnp.zeros(4))
    >>> sol = gf.sgd_sde(problem, 0.1, 1.0, gf.Replacement(1, jax.random.key(0)),
    ...                  key=jax.random.key(1), paths=64)
    >>> sol.params.shape
    (64, 101, 4)
    ```

    References: Li, Tai and E, ICML 2017 (the SME); JMLR 20, 2019
    (first- and second-order weak approximations). Departure: the Stratonovich rewrite
    for order 2 is ours (the paper analyses the equation, not a solver).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    lr = positive_finite("lr", lr)
    t1 = positive_finite("t1", t1)
    ok_order = isinstance(order, numbers.Integral | np.integer) and not isinstance(order, bool)
    if not ok_order or int(order) not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2 (the weak order of the model); got {order!r}.")
    order = int(order)
    paths = positive_int("paths", paths)
    key = _check_key(key)
    _check_batching(batching)
    n = int(problem.n)
    batching.check(n)
    b = int(batching.batch_size(n))
    solver, stratonovich = _resolve_solver(solver, order)
    dt = lr if dt is None else positive_finite("dt", dt)
    steps = max(1, int(np.ceil(t1 / dt - 1e-9)))
    dtype = _float_dtype(problem.params0)
    if ts is None:
        ts_np = np.linspace(0.0, t1, 101)
    else:
        ts_np = np.asarray(ts, dtype=float)
        slack = 1e-9 * max(1.0, t1)
        if (
            ts_np.ndim != 1
            or ts_np.size == 0
            or not np.all(np.isfinite(ts_np))
            or np.any(np.diff(ts_np) < 0)
            or ts_np[0] < -slack
            or ts_np[-1] > t1 + slack
        ):
            raise ValueError(
                f"`ts` must be a non-empty increasing 1-d array of times in [0, t1={t1}]; "
                f"got {ts!r}."
            )
        ts_np = np.clip(ts_np, 0.0, t1)
    ts_arr = jnp.asarray(ts_np, dtype)
    keys = jax.random.split(key, paths)
    lr_arr = jnp.asarray(lr, dtype)
    (ys, full, ok), compile_s, run_s = run_compiled(
        _solve,
        problem,
        lr_arr,
        keys,
        ts_arr,
        jnp.asarray(t1, dtype),
        b,
        order,
        solver,
        jnp.asarray(steps, jnp.int32),
        stratonovich,
    )
    if not bool(ok) or not bool(jnp.all(jnp.isfinite(full))):
        raise RuntimeError(
            f"sgd_sde: a path became non-finite (lr={lr}, dt={t1 / steps}); the flow "
            "diverges at this step size. Reduce `lr` or `dt`."
        )
    mean = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), ys)
    sem = (
        jnp.std(full, axis=0, ddof=1) / np.sqrt(paths)
        if paths > 1
        else jnp.full(full.shape[1:], jnp.nan, full.dtype)
    )
    return SDESolution(
        ts=ts_arr,
        params=ys,
        loss=full,
        mean=mean,
        mean_loss=jnp.mean(full, axis=0),
        sem_loss=sem,
        order=order,
        lr=lr,
        dt=t1 / steps,
        steps=steps,
        solver=type(solver).__name__,
        compile_seconds=compile_s,
        seconds=run_s,
    )
