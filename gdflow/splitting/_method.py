r"""The splitting optimiser as a method of the engine: a scheme times a local solver."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._batching import AbstractBatching
from .._methods._base import AbstractMethod, epoch_table
from .._run._outcome import RESULTS
from .._tree import all_finite, tree_where
from .._validate import is_traced as _traced, positive_finite
from ._base import AbstractLocalSolver
from ._schemes import AbstractScheme

__all__ = ["Splitting"]


def factorise(problem, local: AbstractLocalSolver, table):
    """Per-batch factors for the `(m, b)` index `table`, stacked on a leading `m`."""
    batches = jax.tree_util.tree_map(lambda x: x[table], problem.data)
    # lax.map, not vmap: batched QR / eigh on the CPU is far slower than a loop of them
    # (measured: 213 QRs of 2500x60 took 102 s vmapped, 1.3 s mapped).
    return jax.lax.map(lambda batch: local.prepare(problem, batch), batches)


class Splitting(AbstractMethod):
    r"""One epoch of splitting of gradient flow by minibatches per method step.

    `scheme` ([`gdflow.LieTrotter`][], [`gdflow.Strang`][]) composes the batches' local
    flows $\dot\theta = -\nabla L_j(\theta)$; `local` ([`gdflow.Euler`][],
    [`gdflow.Exact`][], [`gdflow.LocalODE`][]) solves each one. One method step spans
    the $m$ batch steps of an epoch, $h = m\cdot\mathrm{lr}$ on the clock.

    `order` is the global order against gradient flow: the scheme's when the local flows
    are solved exactly or to tolerance (`local.order is None`), else the smaller of the
    two.

    For a fixed partition (`RoundRobin`, `FullBatch`) the per-batch factors are computed
    once, in `init`; when the partition changes every epoch (`Reshuffle`,
    `Replacement`) at the start of each epoch. If a local solve gives a non-finite state,
    the step fails and the engine keeps the state at the start of the epoch (a state of
    the scheme).

    **Arguments:**

    - `scheme`, `local`: the scheme and local solver objects.
    - `lr`: the dwell time per batch (SGD's learning rate).
    """

    scheme: AbstractScheme
    local: AbstractLocalSolver
    lr: jax.Array

    def __init__(self, scheme: AbstractScheme, local: AbstractLocalSolver, lr):
        if not isinstance(scheme, AbstractScheme):
            raise TypeError(f"`scheme` must be gf.LieTrotter() or gf.Strang(); got {scheme!r}.")
        if not isinstance(local, AbstractLocalSolver):
            raise TypeError(
                f"`local` must be gf.Euler(), gf.Exact() or gf.LocalODE(); got {local!r}."
            )
        self.scheme = scheme
        self.local = local
        self.lr = jnp.asarray(lr if _traced(lr) else positive_finite("lr", lr))

    @property
    def order(self) -> int:
        """Global order against gradient flow (see the class docstring)."""
        if self.local.order is None:
            return self.scheme.order
        return min(self.scheme.order, self.local.order)

    @property
    def evals_per_step(self) -> None:
        """Varies with the number of batches (and, for LocalODE, with the steps)."""
        return None

    def init(self, problem, batching: AbstractBatching, params):
        del params
        self.local.check(problem)  # e.g. Exact() on a problem without a closed form
        if batching.deterministic:
            return factorise(problem, self.local, epoch_table(problem, batching, 0))
        return None

    def step(self, problem, batching, clock, params, state):
        e, _ = clock
        factors = state
        if factors is None:
            factors = factorise(problem, self.local, epoch_table(problem, batching, e))
        m = jax.tree_util.tree_leaves(factors)[0].shape[0]
        dtype = jax.tree_util.tree_leaves(params)[0].dtype

        def sweep(carry, dt, reverse):
            def body(c, f):
                theta, ok, steps = c
                new, ns = self.local.solve(problem, f, theta, dt)
                ok = ok & all_finite(new)
                return (tree_where(ok, new, theta), ok, steps + ns), None

            carry, _ = jax.lax.scan(body, carry, factors, reverse=reverse)
            return carry

        carry0 = (params, jnp.asarray(True), jnp.zeros((), jnp.int32))
        new, ok, ode_steps = self.scheme.epoch(sweep, carry0, self.lr.astype(dtype))
        solves = jnp.int32(m * self.scheme.solves_per_batch)
        counts = {"local_solves": solves, "ode_steps": ode_steps}
        evals = self.local.count_evals(ode_steps, solves)
        if evals is not None:
            counts["grad_evals"] = jnp.asarray(evals, jnp.int32)
        result = RESULTS.where(ok, RESULTS.successful, RESULTS.nonfinite_params)
        return new, state, result, counts

    def batch_steps(self, n: int, batching: AbstractBatching) -> int:
        return batching.num_batches(n)

    def describe(self) -> str:
        return f"Splitting({type(self.scheme).__name__}, {type(self.local).__name__})"
