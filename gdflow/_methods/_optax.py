r"""Any optax gradient transformation as a method of the engine."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._batching import AbstractBatching
from .._validate import is_traced, positive_finite
from ._base import AbstractMethod, batch_for, epoch_table, step_result

__all__ = ["Optax"]


class Optax(AbstractMethod):
    r"""An optax `GradientTransformation` run on batch gradients.

    Step $k$ computes $g_k = \nabla L_{B_k}(\theta_k)$, then
    `updates, s = optimizer.update(g_k, s, θ_k)` and `θ_{k+1} = optax.apply_updates(θ_k,
    updates)`. `order` is `None`: an arbitrary transformation discretises no particular
    flow (for `optax.sgd(lr)` it is 1, as [`gdflow.SGD`][]). Cost: one batch gradient per
    step.

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`.
    - `lr`: the clock: batch step $k$ sits at $t = k\cdot\mathrm{lr}$ (`None`: $t = k$).
    """

    order: ClassVar[None] = None
    evals_per_step: ClassVar[int] = 1
    checks_params: ClassVar[bool] = True
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    lr: jax.Array | None

    def __init__(self, optimizer: optax.GradientTransformation, lr=None):
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(
                "`optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-3)); "
                f"got {optimizer!r}."
            )
        self.optimizer = optimizer
        if lr is not None and not is_traced(lr):
            lr = positive_finite("lr", lr)
        self.lr = None if lr is None else jnp.asarray(lr)

    def init(self, problem, batching: AbstractBatching, params):
        return self.optimizer.init(params), epoch_table(problem, batching, 0)

    def step(self, problem, batching, clock, params, state):
        opt_state, table = state
        batch, table = batch_for(problem, batching, clock, table)
        value, grads = jax.value_and_grad(problem.loss)(params, batch)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        new = optax.apply_updates(params, updates)
        counts = {"grad_evals": jnp.ones((), jnp.int32)}
        return new, (opt_state, table), step_result(value, grads, new), counts

    def batch_steps(self, n: int, batching: AbstractBatching) -> int:
        del n, batching
        return 1

    def describe(self) -> str:
        return "Optax"
