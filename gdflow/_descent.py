r"""Discrete optimisers: gradient descent, minibatch SGD and any optax transformation.

Thin wrappers over the one engine ([`gdflow.run`][]) with the methods
[`gdflow.SGD`][] and [`gdflow.Optax`][]: only the saved iterates are kept, the run
stops at the first non-finite loss, gradient or parameter, keeping everything computed
before it.
"""

from __future__ import annotations

import optax

from ._batching import AbstractBatching, FullBatch, resolve_batching
from ._methods import SGD, Optax
from ._problem import Problem, as_problem
from ._run import (
    DivergenceError as DivergenceError,
    DivergenceWarning as DivergenceWarning,
    run,
)
from ._trajectory import Trajectory
from ._validate import positive_int

__all__ = ["descent", "gd", "sgd"]


def gd(
    problem: Problem,
    lr: float,
    steps: int,
    save_every: int = 1,
    *,
    on_divergence: str = "warn",
    progress=False,
) -> Trajectory:
    r"""Full-batch gradient descent, $\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k)$.

    GD is the explicit Euler method on gradient flow $\dot\theta = -\nabla L(\theta)$:
    iterate `k` is saved at time $t = k\eta$, so it can be compared directly with
    [`gdflow.gradient_flow`][] (global error $O(\eta)$ on a fixed horizon).

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][].
    - `lr`: the step size $\eta > 0$.
    - `steps`: number of steps `K`.
    - `save_every`: keep every `save_every`-th iterate (and the last); memory is
      `O(K / save_every)` iterates.
    - `on_divergence`: at the first non-finite loss the run stops and `"warn"`
      (default) returns what it computed with a [`gdflow.DivergenceWarning`][], `"raise"`
      raises [`gdflow.DivergenceError`][] carrying it, `"ignore"` returns it silently.
    - `progress`: draw a progress bar (updated a few times a second, between compiled chunks).

    **Returns:** a [`gdflow.Trajectory`][] with `ts = k·lr` for the saved `k`.
    Cost: `K` full gradients, plus one full loss per saved point.

    **Raises:** `ValueError` for a non-finite or non-positive `lr`, negative
    `steps` or `save_every < 1`.

    ```python
    >>> import jax.numpy as jnp, gdflow as gf
    >>> problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 3.0])), params0=jnp.ones(2))
    >>> traj = gf.gd(problem, lr=0.1, steps=50, save_every=25)
    >>> traj.ts.tolist(), traj.stats.grad_evals
    ([0.0, 2.5, 5.0], 50)
    >>> round(float(traj.final[0]), 6), round(0.9**50, 6)  # (1 - lr·λ)^k
    (0.005154, 0.005154)

    ```
    """
    problem = as_problem(problem)
    return run(
        SGD(lr),
        problem,
        steps,
        FullBatch(),
        save_every=save_every,
        label="gd",
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
    progress=False,
) -> Trajectory:
    r"""Minibatch SGD, $\theta_{k+1} = \theta_k - \eta\nabla L_{B_k}(\theta_k)$.

    $L_B$ is the mean loss over batch $B$ (`problem.loss(params, batch)`);
    the batches come from `batching` (`RoundRobin` is the texts' fixed order). Each
    step is one explicit Euler step of the batch's local flow
    $\dot\theta = -\nabla L_{B}(\theta)$ with dwell time $\eta$, so step `k`
    is saved at $t = k\eta$ and one epoch of `m` batches is one Lie–Trotter
    splitting step of gradient flow with $h = m\eta$ (Merkulov & Oseledets 2020).

    **Arguments:**

    - `problem`, `lr`: as in [`gdflow.gd`][].
    - `epochs`: number of epochs; `epochs · m` steps in all.
    - `batching`: `FullBatch()`, `RoundRobin(b)`, `Reshuffle(b, key)` or
      `Replacement(b, key)`.
    - `save_every`: save every `save_every` **steps** (`m` saves once per epoch).
    - `on_divergence`, `progress`: as in [`gdflow.gd`][].

    **Returns:** a [`gdflow.Trajectory`][]; `stats["epochs"]` counts epochs done.
    Cost: `epochs · m` batch gradients of `b` examples each.

    **Raises:** `ValueError` for a bad `lr`, or a `batching` that cannot batch
    `n` examples (batch size larger than `n`, or not dividing it).
    """
    problem = as_problem(problem)
    method = SGD(lr)  # checks `lr`; the step casts it to each leaf's dtype
    epochs = positive_int("epochs", epochs, allow_zero=True)
    batching = resolve_batching(batching)
    batching.check(problem.n)
    m = batching.num_batches(problem.n)
    return run(
        method,
        problem,
        epochs * m,
        batching,
        save_every=save_every,
        label="sgd",
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
    progress=False,
) -> Trajectory:
    r"""Run any optax optimiser on `problem`, saved like [`gdflow.gd`][].

    Step `k` uses the batch gradient $\nabla L_{B_k}(\theta_k)$ and
    `optimizer.update`; `descent(problem, optax.sgd(lr), K, lr=lr)` is [`gdflow.gd`][].

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`.
    - `steps`: number of optimiser steps.
    - `batching`: as in [`gdflow.sgd`][] (default full batch).
    - `lr`: the time scale: step `k` is saved at `t = k·lr`. Without it `t = k`.
    - `save_every`, `on_divergence`, `progress`: as in [`gdflow.gd`][].
    - `method`: a label for the trajectory (default `"descent"`).
    """
    problem = as_problem(problem)
    return run(
        Optax(optimizer, lr),
        problem,
        steps,
        batching,
        save_every=save_every,
        label=method or "descent",
        on_divergence=on_divergence,
        progress=progress,
    )
