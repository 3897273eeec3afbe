r"""Discrete optimisers: gradient descent, minibatch SGD and any optax transformation.

All three run through one jitted engine: a ``lax.while_loop`` over save points, each
advancing ``save_every`` optimiser steps with an inner ``lax.while_loop``. Only the
saved iterates are kept in memory (a preallocated ``(T, ...)`` buffer), and the loop
stops at the first non-finite loss or parameter, keeping everything computed before it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._batching import AbstractBatching, FullBatch, RoundRobin, resolve_batching
from ._problem import Problem, float_dtype
from ._trajectory import Trajectory
from ._validate import one_of, positive_finite, positive_int

PyTree = Any


class DivergenceWarning(RuntimeWarning):
    """A run met a non-finite loss and stopped early."""


class DivergenceError(RuntimeError):
    """A run met a non-finite loss; ``.trajectory`` holds what was computed before it."""

    def __init__(self, message: str, trajectory: Trajectory):
        super().__init__(message)
        self.trajectory = trajectory


class _Fixed(eqx.Module):
    """Wraps a ready-made optax transformation so it can be built inside the engine."""

    optimizer: Any = eqx.field(static=True)

    def __call__(self, hyper):
        del hyper
        return self.optimizer


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves))


# The bar being drawn by the current run (host side); the jitted loop ticks it through a
# module-level callback so that the compiled function does not depend on the bar object.
_BAR: list = []


def _tick(done):
    if _BAR:
        _BAR[0].n = int(done)
        _BAR[0].refresh()


@eqx.filter_jit
def _engine(
    problem: Problem, make_optimizer, hyper, batching: AbstractBatching, steps, every, progress
):
    loss, data, n = problem.loss, problem.data, problem.n
    m = batching.num_batches(n)
    opt = make_optimizer(hyper)
    num_saves = -(-steps // every) + 1
    params0 = problem.params0

    full = isinstance(batching, FullBatch)
    fixed_table = batching.deterministic

    contiguous = isinstance(batching, RoundRobin)
    b = batching.batch_size(n)

    def get_batch(table, k):
        if full:
            return data  # no gather: the batch is the data
        if contiguous:
            # Round robin batches are contiguous rows: a slice is much cheaper than a gather.
            start = (k % m) * b
            return jax.tree_util.tree_map(
                lambda x: jax.lax.dynamic_slice_in_dim(x, start, b), data
            )
        idx = table[k % m]
        return jax.tree_util.tree_map(lambda x: x[idx], data)

    def step(carry):
        k, params, state, table, bad = carry
        if not fixed_table:
            table = jax.lax.cond(
                (k % m == 0) & (k > 0),
                lambda: batching.epoch(n, k // m),
                lambda: table,
            )
        value, grads = jax.value_and_grad(loss)(params, get_batch(table, k))
        updates, new_state = opt.update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(value) & _all_finite(new_params)
        params = _tree_where(ok, new_params, params)
        state = _tree_where(ok, new_state, state)
        bad = jnp.where(ok, bad, k)
        k = jnp.where(ok, k + 1, k)
        return k, params, state, table, bad

    def save_block(carry):
        i, inner, p_buf, l_buf, k_buf = carry
        target = jnp.minimum(i * every, steps)
        inner = jax.lax.while_loop(lambda c: (c[0] < target) & (c[4] < 0), step, inner)
        k, params, _, _, bad = inner
        value = loss(params, data)
        bad = jnp.where((bad < 0) & ~jnp.isfinite(value), k, bad)
        keep = bad < 0
        # Write unconditionally (a select over the whole buffer would cost O(T) per save);
        # a slot written after divergence is never counted as valid, since i stays put.
        p_buf = jax.tree_util.tree_map(lambda buf, x: buf.at[i].set(x), p_buf, params)
        l_buf = l_buf.at[i].set(value)
        k_buf = k_buf.at[i].set(k)
        inner = (k, params, inner[2], inner[3], bad)
        if progress:
            jax.debug.callback(_tick, k)
        return i + jnp.where(keep, 1, 0), inner, p_buf, l_buf, k_buf

    p_buf = jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_saves, *jnp.shape(x)), jnp.result_type(x)).at[0].set(x),
        params0,
    )
    value0 = loss(params0, data)
    l_buf = jnp.full((num_saves,), jnp.nan, jnp.result_type(value0)).at[0].set(value0)
    k_buf = jnp.zeros((num_saves,), jnp.int32)
    bad0 = jnp.where(jnp.isfinite(value0), -1, 0).astype(jnp.int32)
    inner0 = (jnp.int32(0), params0, opt.init(params0), batching.epoch(n, 0), bad0)
    carry0 = (jnp.int32(1), inner0, p_buf, l_buf, k_buf)
    i, inner, p_buf, l_buf, k_buf = jax.lax.while_loop(
        lambda c: (c[0] < num_saves) & (c[1][4] < 0), save_block, carry0
    )
    k, params, _, _, bad = inner
    return i, p_buf, l_buf, k_buf, k, params, bad


def run_compiled(fn, *args):
    """Compile ``fn`` for ``args`` (timed), run it (timed); return output and both times."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    t1 = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def _run(
    problem: Problem,
    make_optimizer: Callable,
    hyper: PyTree,
    *,
    batching: AbstractBatching,
    steps: int,
    save_every: int,
    method: str,
    lr: float | None,
    on_divergence: str,
    progress: bool = False,
) -> Trajectory:
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    steps = positive_int("steps", steps, allow_zero=True)
    save_every = positive_int("save_every", save_every)
    one_of("on_divergence", on_divergence, ("warn", "raise", "ignore"))
    batching = resolve_batching(batching)
    n = problem.n
    batching.check(n)

    args = (problem, make_optimizer, hyper, batching, steps, save_every, bool(progress))
    if progress:
        from tqdm.auto import tqdm

        _BAR[:] = [tqdm(total=steps, desc=method, unit="step", leave=False)]
    try:
        out, compile_s, run_s = run_compiled(_engine, *args)
    finally:
        if _BAR:
            _BAR.pop().close()
    i, p_buf, l_buf, k_buf, k, params, bad = out
    valid = int(i)
    ks = np.asarray(k_buf)[:valid]
    saved = jax.tree_util.tree_map(lambda x: x[:valid], p_buf)
    losses = l_buf[:valid]
    bad = int(bad)
    diverged_at = bad if bad >= 0 else None
    k = int(k)
    if diverged_at is not None and (valid == 0 or ks[-1] != k):
        # Keep the last finite iterate too: it is what the run had when it stopped.
        ks = np.append(ks, k)
        saved = jax.tree_util.tree_map(
            lambda buf, x: jnp.concatenate([buf, x[None]]), saved, params
        )
        losses = jnp.concatenate([losses, jnp.asarray(problem.full_loss(params))[None]])

    dtype = float_dtype(problem.params0)
    scale = 1.0 if lr is None else lr
    ts = jnp.asarray(ks, dtype=dtype) * jnp.asarray(scale, dtype=dtype)
    b = batching.batch_size(n)
    stats = {
        "steps": k,
        "grad_evals": k,
        "examples": k * b,
        "epochs": k / batching.num_batches(n),
        "batch_size": b,
        "lr": lr,
        "seconds": run_s,
        "compile_seconds": compile_s,
        "diverged_at": diverged_at,
    }
    traj = Trajectory(ts=ts, params=saved, loss=losses, method=method, stats=stats)
    if diverged_at is not None:
        when = f" (t={diverged_at * lr:g})" if lr is not None else ""
        report_divergence(
            f"{method} diverged: non-finite loss at step {diverged_at}{when} of {steps}. "
            f"Returning the {len(traj)} points computed before it; try a smaller step size.",
            traj,
            on_divergence,
            stacklevel=4,
        )
    return traj


def report_divergence(msg: str, traj: Trajectory, on_divergence: str, stacklevel: int) -> None:
    """Act on a diverged run as ``on_divergence`` says: raise, warn or stay silent."""
    if on_divergence == "raise":
        raise DivergenceError(msg, traj)
    if on_divergence == "warn":
        warnings.warn(msg, DivergenceWarning, stacklevel=stacklevel)


def _sgd_from(hyper) -> optax.GradientTransformation:
    # Built inside the engine so that the step size is a traced argument: runs at many
    # step sizes share one compilation.
    return optax.sgd(hyper["learning_rate"])


def _lr_hyper(problem: Problem, lr: float):
    return {"learning_rate": jnp.asarray(lr, dtype=float_dtype(problem.params0))}


def gd(
    problem: Problem,
    lr: float,
    steps: int,
    save_every: int = 1,
    *,
    on_divergence: str = "warn",
    progress: bool = False,
) -> Trajectory:
    r"""Full-batch gradient descent, :math:`\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k)`.

    GD is the explicit Euler method on gradient flow :math:`\dot\theta = -\nabla L(\theta)`:
    iterate ``k`` is saved at time :math:`t = k\eta`, so it can be compared directly with
    :func:`gdflow.gradient_flow` (global error :math:`O(\eta)` on a fixed horizon).

    **Arguments:**

    - ``problem``: a :class:`gdflow.Problem`.
    - ``lr``: the step size :math:`\eta > 0`.
    - ``steps``: number of steps ``K``.
    - ``save_every``: keep every ``save_every``-th iterate (and the last); memory is
      ``O(K / save_every)`` iterates.
    - ``on_divergence``: at the first non-finite loss the run stops and ``"warn"``
      (default) returns what it computed with a :class:`DivergenceWarning`, ``"raise"``
      raises :class:`DivergenceError` carrying it, ``"ignore"`` returns it silently.
    - ``progress``: draw a progress bar (updated at every save point).

    **Returns:** a :class:`gdflow.Trajectory` with ``ts = k·lr`` for the saved ``k``.
    Cost: ``K`` full gradients, plus one full loss per saved point.

    **Raises:** ``ValueError`` for a non-finite or non-positive ``lr``, negative
    ``steps`` or ``save_every < 1``.

    ```python
    traj = gf.gd(gf.problems.quadratic(jnp.eye(2), params0=jnp.ones(2)), lr=0.1, steps=50)
    ```
    """
    lr = positive_finite("lr", lr)
    return _run(
        problem,
        _sgd_from,
        _lr_hyper(problem, lr),
        batching=FullBatch(),
        steps=steps,
        save_every=save_every,
        method="gd",
        lr=lr,
        on_divergence=on_divergence,
        progress=progress,
    )


def sgd(
    problem: Problem,
    lr: float,
    epochs: int,
    batching: AbstractBatching,
    save_every: int = 1,
    *,
    on_divergence: str = "warn",
    progress: bool = False,
) -> Trajectory:
    r"""Minibatch SGD, :math:`\theta_{k+1} = \theta_k - \eta\nabla L_{B_k}(\theta_k)`.

    :math:`L_B` is the mean loss over batch :math:`B` (``problem.loss(params, batch)``);
    the batches come from ``batching`` (``RoundRobin`` is the texts' fixed order). Each
    step is one explicit Euler step of the batch's local flow
    :math:`\dot\theta = -\nabla L_{B}(\theta)` with dwell time :math:`\eta`, so step ``k``
    is saved at :math:`t = k\eta` and one epoch of ``m`` batches is one Lie–Trotter
    splitting step of gradient flow with :math:`h = m\eta` (Merkulov & Oseledets 2020).

    **Arguments:**

    - ``problem``, ``lr``: as in :func:`gd`.
    - ``epochs``: number of epochs; ``epochs · m`` steps in all.
    - ``batching``: ``FullBatch()``, ``RoundRobin(b)``, ``Reshuffle(b, key)`` or
      ``Replacement(b, key)``.
    - ``save_every``: save every ``save_every`` **steps** (``m`` saves once per epoch).
    - ``on_divergence``, ``progress``: as in :func:`gd`.

    **Returns:** a :class:`gdflow.Trajectory`; ``stats["epochs"]`` counts epochs done.
    Cost: ``epochs · m`` batch gradients of ``b`` examples each.

    **Raises:** ``ValueError`` for a bad ``lr``, or a ``batching`` that cannot batch
    ``n`` examples (batch size larger than ``n``, or not dividing it).
    """
    lr = positive_finite("lr", lr)
    epochs = positive_int("epochs", epochs, allow_zero=True)
    batching = resolve_batching(batching)
    batching.check(problem.n)
    m = batching.num_batches(problem.n)
    return _run(
        problem,
        _sgd_from,
        _lr_hyper(problem, lr),
        batching=batching,
        steps=epochs * m,
        save_every=save_every,
        method="sgd",
        lr=lr,
        on_divergence=on_divergence,
        progress=progress,
    )


def descent(
    problem: Problem,
    optimizer: optax.GradientTransformation,
    steps: int,
    batching: AbstractBatching | None = None,
    *,
    lr: float | None = None,
    save_every: int = 1,
    on_divergence: str = "warn",
    method: str | None = None,
    progress: bool = False,
) -> Trajectory:
    r"""Run any optax optimiser on ``problem``, saved like :func:`gd`.

    Step ``k`` uses the batch gradient :math:`\nabla L_{B_k}(\theta_k)` and
    ``optimizer.update``; ``descent(problem, optax.sgd(lr), K, lr=lr)`` is :func:`gd`.

    **Arguments:**

    - ``optimizer``: an ``optax.GradientTransformation``.
    - ``steps``: number of optimiser steps.
    - ``batching``: as in :func:`sgd` (default full batch).
    - ``lr``: the time scale: step ``k`` is saved at ``t = k·lr``. Without it ``t = k``.
    - ``save_every``, ``on_divergence``, ``progress``: as in :func:`gd`.
    - ``method``: a label for the trajectory (default ``"descent"``).
    """
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            "`optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-3)); "
            f"got {optimizer!r}."
        )
    if lr is not None:
        lr = positive_finite("lr", lr)
    return _run(
        problem,
        _Fixed(optimizer),
        None,
        batching=resolve_batching(batching),
        steps=steps,
        save_every=save_every,
        method=method or "descent",
        lr=lr,
        on_divergence=on_divergence,
        progress=progress,
    )
