r"""Minibatch SGD (and full-batch GD): one explicit Euler step of a batch's gradient flow."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from .._batching import AbstractBatching
from .._validate import is_traced, positive_finite
from ._base import AbstractMethod, batch_for, epoch_table, loss_result, step_result

__all__ = ["SGD"]


class SGD(AbstractMethod):
    r"""Minibatch SGD, $\theta_{k+1} = \theta_k - \mathrm{lr}\,\nabla L_{B_k}(\theta_k)$.

    With full batches this is gradient descent, the explicit Euler method on gradient
    flow $\dot\theta = -\nabla L(\theta)$: global error $O(\mathrm{lr})$ on a fixed
    horizon (`order = 1`). Cost: one batch gradient per step.

    The update is written $\theta + (-\mathrm{lr})\,g$, the arithmetic of
    `optax.sgd(lr)` followed by `optax.apply_updates`, so the two agree to the last bit.

    **Arguments:**

    - `lr`: the step size (a traced array: runs at different step sizes share one
      compilation).
    """

    order: ClassVar[int] = 1
    evals_per_step: ClassVar[int] = 1
    checks_params: ClassVar[bool] = True
    absorbing: ClassVar[bool] = True
    lr: jax.Array

    def __init__(self, lr):
        self.lr = jnp.asarray(lr if is_traced(lr) else positive_finite("lr", lr))

    def init(self, problem, batching: AbstractBatching, params):
        del params
        return epoch_table(problem, batching, 0)

    def step(self, problem, batching, clock, params, state, *, check: bool = True):
        batch, table = batch_for(problem, batching, clock, state)
        value, grads = jax.value_and_grad(problem.loss)(params, batch)
        new = jax.tree_util.tree_map(
            lambda p, g: p + (-self.lr.astype(p.dtype)) * g, params, grads
        )
        counts = {"grad_evals": jnp.ones((), jnp.int32)}
        # A non-finite parameter stays non-finite (inf + finite = inf, nan + x = nan), and
        # a non-finite gradient makes the new parameters non-finite: `absorbing`.
        result = step_result(value, grads, new) if check else loss_result(value)
        return new, table, result, counts

    def batch_steps(self, n: int, batching: AbstractBatching) -> int:
        del n, batching
        return 1

    def describe(self) -> str:
        return "SGD"
