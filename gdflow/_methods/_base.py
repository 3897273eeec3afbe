r"""The method interface: what the engine needs from a discrete method.

A method advances a parameter pytree by one *method step* from a state it threads
purely (`init -> state`, `step -> state`), as optax transformations do. The engine
([`gdflow.run`][]) owns everything around the step: saving every `k` steps, detecting
non-finite values, timing, progress and interruption. A method says how many batch
steps one of its steps spans (`batch_steps`: 1 for an SGD step, `m` for a splitting
epoch) and the time each batch step advances the clock (`lr`), so that every method
shares the clock $t = k\cdot\mathrm{lr}$ with $k$ counting batch steps.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._batching import AbstractBatching, check_table
from .._run._outcome import RESULTS
from .._tree import all_finite, finite_code, tree_where

__all__ = [
    "AbstractMethod",
    "all_finite",
    "batch_for",
    "declares_absorbing",
    "loss_result",
    "step_result",
    "tree_where",
]


class AbstractMethod(eqx.Module):
    r"""Base class of discrete methods. Subclasses are final.

    A subclass declares `order` (the global order of accuracy against the flow it
    discretises, on a fixed horizon as the step size goes to zero; `None` when it is not
    a discretisation of a known flow) and `evals_per_step` (batch-gradient evaluations
    per method step, `None` when it varies): class attributes for single methods
    ([`gdflow.SGD`][]), properties computed from the parts for composite ones
    ([`gdflow.Splitting`][]: from its scheme's and local solver's class attributes). It
    implements:

    - `init(problem, batching, params) -> state`: the state before the first step
      (traceable; run once, timed as set-up).
    - `step(problem, batching, clock, params, state) -> (params, state, result, counts)`:
      one method step. `clock = (e, j)` is the epoch and the method step within it;
      `result` a [`RESULTS`][gdflow.RESULTS] item; `counts` a dict of int32 counters of
      the work done (at least `"grad_evals"` when countable), summed by the engine.
    - `batch_steps(n, batching) -> int`: batch steps per method step.
    - `describe() -> str`: a short label for reports.

    and has a field `lr` (the clock time of one batch step, or `None`: then $t = k$).

    The engine checks the new parameters of every step for non-finite values itself; a
    method whose `result` already says `nonfinite_params` for them (as
    `step_result` does) sets the class attribute
    `checks_params = True`, and the engine skips its own check.

    A method may set `absorbing = True` when a non-finite entry of its parameters stays
    non-finite at every later step and a non-finite gradient makes the new parameters
    non-finite (SGD: $\theta + (-\mathrm{lr})\,g$). Its `step` then also accepts
    `check=False`, whose `result` covers only the loss (`loss_result`): the engine runs
    each compiled chunk so, checks the parameters once at its end, and runs a chunk that
    failed again with `check=True` to find the failing step. The outcome is the same as
    checking every step, without a pass over the parameters per step. The declaration
    belongs to the `step` beside it: a subclass that overrides `step` without declaring
    `absorbing = True` again gets every step checked (see `declares_absorbing`).
    """

    lr: eqx.AbstractVar[jax.Array | None]
    checks_params: ClassVar[bool] = False
    absorbing: ClassVar[bool] = False

    @abc.abstractmethod
    def init(self, problem, batching: AbstractBatching, params):
        """The method's state before the first step."""

    @abc.abstractmethod
    def step(self, problem, batching: AbstractBatching, clock, params, state):
        """One method step: `(params, state, result, counts)`."""

    @abc.abstractmethod
    def batch_steps(self, n: int, batching: AbstractBatching) -> int:
        """Batch steps spanned by one method step."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short label, e.g. `"SGD"` or `"Splitting(Strang, Exact)"`."""


def step_result(value, grads, new_params):
    """The outcome of a step computed from a gradient: a non-finite loss, else a
    non-finite gradient, else non-finite new parameters, else success.

    The gradient check and the engine's check of the new parameters in one pass over
    each (gradient, new parameter) pair of leaves instead of two (`grads` and
    `new_params` must have the same structure). A method using it sets
    `checks_params = True`.
    """
    code = finite_code(grads, new_params)
    return RESULTS.where(
        jnp.isfinite(value),
        RESULTS.where(
            code == 0,
            RESULTS.successful,
            RESULTS.where(code == 1, RESULTS.nonfinite_params, RESULTS.nonfinite_gradient),
        ),
        RESULTS.nonfinite_loss,
    )


def declares_absorbing(method) -> bool:
    """Whether `method`'s `step` is one declared `absorbing`: the nearest class (in the
    method resolution order) that sets `absorbing` sets it true, and no class below it
    overrides `step` (whose failures might then not be absorbing, e.g. a clipped step)."""
    mro = type(method).__mro__
    decl = next((i for i, c in enumerate(mro) if "absorbing" in c.__dict__), None)
    step = next((i for i, c in enumerate(mro) if "step" in c.__dict__), None)
    return decl is not None and bool(mro[decl].__dict__["absorbing"]) and step >= decl


def loss_result(value):
    """The outcome of a step from its loss alone: successful, or `nonfinite_loss`."""
    return RESULTS.where(jnp.isfinite(value), RESULTS.successful, RESULTS.nonfinite_loss)


def epoch_table(problem, batching: AbstractBatching, e):
    """The index table of epoch `e`, range-checked for user-defined batching rules."""
    return check_table(batching, batching.epoch(problem.n, e), problem.n)


def batch_for(problem, batching: AbstractBatching, clock, table):
    """The batch of method step `clock = (e, j)` (one batch per step) and the table.

    A rule that changes its partition every epoch draws the new table at the epoch's
    first step; fixed rules keep the table made by `init`.
    """
    e, j = clock
    if not batching.deterministic:
        table = jax.lax.cond(j == 0, lambda: epoch_table(problem, batching, e), lambda: table)
    return batching.batch(problem.data, table, j), table
