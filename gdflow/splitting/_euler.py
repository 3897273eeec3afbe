r"""The explicit Euler local solver: one SGD step per batch."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractLocalSolver

__all__ = ["Euler"]


class Euler(AbstractLocalSolver):
    r"""One explicit Euler step of the local flow $\dot\theta = -\nabla L_j(\theta)$:

    $$
    \theta \leftarrow \theta - \mathrm{dt}\,\nabla L_j(\theta).
    $$

    With Lie–Trotter (`dt = lr`) this is exactly one minibatch SGD step, so
    `gf.split(problem, lr, epochs, batching, local=gf.Euler())` reproduces
    `gf.sgd(problem, lr, epochs, batching)` (same batches, same arithmetic) — the
    observation of the splitting text: one SGD epoch is one first-order splitting step of
    gradient flow with $h = m\cdot\mathrm{lr}$ whose local flows are solved by a
    single Euler step. Local error $O(\mathrm{dt}^2)$; cost one batch gradient.

    Works for every problem (any parameter pytree). `order = 1`, one batch gradient per
    solve.

    Reference: `../shared/sources/sgd-as-ode-splitting.md`, table "SGD as a splitting
    scheme".
    """

    order: ClassVar[int] = 1
    evals_per_solve: ClassVar[int] = 1

    def check(self, problem) -> None:
        del problem

    def prepare(self, problem, batch):
        del problem
        return batch

    def solve(self, problem, factors, params, dt):
        grads = jax.grad(problem.loss)(params, factors)
        # Written as p + (-dt)·g, the arithmetic of optax.sgd + optax.apply_updates, so
        # that split(local=Euler()) and gf.sgd agree to the last bit.
        new = jax.tree_util.tree_map(lambda p, g: p + (-dt) * g, params, grads)
        return new, jnp.zeros((), jnp.int32)

    def count_evals(self, steps, solves):
        del steps
        return solves
