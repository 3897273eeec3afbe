"""Run statistics as typed records (pytrees), readable by attribute or by name."""

from __future__ import annotations

import dataclasses

import equinox as eqx

__all__ = ["AbstractStats", "FlowStats", "RunStats", "SwitchedStats"]


class AbstractStats(eqx.Module):
    """Base class of run statistics. Subclasses are final records of plain numbers.

    Fields read as attributes (`stats.grad_evals`) or by name (`stats["grad_evals"]`), so
    a record can stand where a dict of statistics was expected; `as_dict()` gives one.
    Numbers are pytree leaves and labels static fields, so a [`gdflow.Trajectory`][]
    carrying a record passes through `eqx.filter_jit`.
    """

    def keys(self) -> list[str]:
        """The field names."""
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, name: str):
        if name not in self.keys():
            raise KeyError(
                f"{type(self).__name__} has no statistic {name!r}; it has {self.keys()}."
            )
        return getattr(self, name)

    def __contains__(self, name: str) -> bool:
        return name in self.keys()

    def get(self, name: str, default=None):
        """The statistic `name`, or `default` if this record has no such field."""
        return getattr(self, name) if name in self.keys() else default

    def as_dict(self) -> dict:
        """The record as a plain dict (for JSON reports)."""
        return {k: getattr(self, k) for k in self.keys()}


class RunStats(AbstractStats):
    """Statistics of a discrete run ([`gdflow.gd`][], [`gdflow.sgd`][], [`gdflow.descent`][],
    [`gdflow.split`][]).

    **Fields:**

    - `steps`: optimiser steps taken, counted in batches (an SGD step, or one local solve
      position of a splitting epoch: `epochs · m`).
    - `epochs`: epochs done (`steps / m`; fractional for a partial epoch).
    - `grad_evals`: batch-gradient evaluations (`None` where not countable).
    - `examples`: examples seen (`steps · batch_size`).
    - `batch_size`, `num_batches`: `b` and `m` of the batching.
    - `lr`: the step size (`None` for an optax run given without `lr`).
    - `local_solves`, `ode_steps`: splitting only (local solves done; ODE solver steps of
      [`gdflow.LocalODE`][] in all), else `None`.
    - `seconds`: wall time of the run proper (compiled code only, excluding compilation).
    - `compile_seconds`: compilation of the run loop.
    - `setup_seconds`: the method's one-off set-up (splitting: per-batch factors),
      compilation included.
    - `diverged_at`: the step (in `steps`' unit) at which the run stopped on a non-finite
      value, else `None`.
    - `outcome`: `""` for a complete run, else what stopped it ("non-finite loss",
      "non-finite gradient ...", "non-finite parameters ...", "interrupted").
    - `method`: the method object's description (e.g. `"Splitting(Strang, Exact)"`).
    """

    steps: int
    epochs: float
    grad_evals: int | None
    examples: int
    batch_size: int
    num_batches: int
    lr: float | None
    local_solves: int | None
    ode_steps: int | None
    seconds: float
    compile_seconds: float
    setup_seconds: float
    diverged_at: int | None
    outcome: str = eqx.field(static=True, default="")
    method: str = eqx.field(static=True, default="")


class FlowStats(AbstractStats):
    r"""Statistics of an ODE solve ([`gdflow.gradient_flow`][] and other flows).

    **Fields:**

    - `num_steps`, `num_accepted_steps`, `num_rejected_steps`: the solver's step counts.
    - `grad_evals`: vector-field evaluations (`None` where not countable).
    - `grad_evals_exact`: whether `grad_evals` is exact (no rejected steps), else a bound.
    - `solver_evals`: the solver's own count of evaluations, for solvers that keep one
      ([`gdflow.RKC2`][]), else `None`.
    - `seconds`, `compile_seconds`: run and compile time.
    - `rtol`, `atol`: the controller's tolerances (`None` for fixed steps).
    - `solver`: the solver's class name.
    - `field`: `"gradient"` when the solved field is $-\nabla L$ of the problem, else
      `"custom"` (a `field=` was given) or another description.
    """

    num_steps: int
    num_accepted_steps: int
    num_rejected_steps: int
    grad_evals: int | None
    grad_evals_exact: bool | None
    solver_evals: int | None
    seconds: float
    compile_seconds: float
    rtol: float | None = None
    atol: float | None = None
    solver: str = eqx.field(static=True, default="")
    field: str = eqx.field(static=True, default="custom")


class SwitchedStats(AbstractStats):
    """Statistics of a switched minibatch flow ([`gdflow.switched_flow`][]).

    **Fields:**

    - `num_steps`: ODE solver steps over all segments.
    - `grad_evals`: batch-gradient (field) evaluations (`None` where not countable).
    - `segments`: dwell intervals solved.
    - `dwell`, `rate`: the dwell time per batch and the field's rate.
    - `num_batches`, `batch_size`: `m` and `b` of the batching.
    - `seconds`, `compile_seconds`: run and compile time.
    - `rtol`, `atol`: the tolerances of each segment's solve.
    - `solver`: the solver's class name.
    """

    num_steps: int
    grad_evals: int | None
    segments: int
    dwell: float
    rate: float
    num_batches: int
    batch_size: int
    seconds: float
    compile_seconds: float
    rtol: float | None = None
    atol: float | None = None
    solver: str = eqx.field(static=True, default="")
