r"""Splitting schemes: how one epoch composes the batches' local flows.

With $m$ batches, gradient flow $\dot\theta = -\nabla L = \sum_j(-\tfrac1m\nabla L_j)$
is a sum of $m$ fields; running field $j$ for the splitting step $h = m\cdot\mathrm{lr}$
is running the local flow $\varphi_j$ of $\dot\theta = -\nabla L_j$ for the dwell time
$\mathrm{lr}$. A scheme says in which order and for how long; the local solver
([`gdflow.Euler`][], [`gdflow.Exact`][], [`gdflow.LocalODE`][]) says how each local
flow is solved.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx

__all__ = ["AbstractScheme", "LieTrotter", "Strang"]


class AbstractScheme(eqx.Module):
    """Base class of splitting schemes. Subclasses are final.

    A subclass declares `order` (global order against gradient flow with exact local
    flows) and `solves_per_batch` (local solves of each batch per epoch) as class
    attributes and implements `epoch(sweep, carry, lr)`, composing calls
    `sweep(carry, dt, reverse)` that run every batch's local flow for `dt`, in batch order
    or (`reverse=True`) backwards.
    """

    order: eqx.AbstractClassVar[int]
    solves_per_batch: eqx.AbstractClassVar[int]

    @abc.abstractmethod
    def epoch(self, sweep, carry, lr):
        """One splitting step of $h = m\\cdot\\mathrm{lr}$ from `carry`."""


class LieTrotter(AbstractScheme):
    r"""Lie–Trotter splitting: $\Phi_h = \varphi_m^{\mathrm{lr}}\circ\dots\circ
    \varphi_1^{\mathrm{lr}}$, batches in order, each for the dwell time lr.

    The text's "first order splitting": global error $O(h)$ against gradient flow on a
    fixed horizon (`order = 1`). With [`gdflow.Euler`][] local solves it is minibatch
    SGD exactly. One local solve per batch per epoch.

    Reference: `../shared/sources/sgd-as-ode-splitting.md` (Algorithm 1).
    """

    order: ClassVar[int] = 1
    solves_per_batch: ClassVar[int] = 1

    def epoch(self, sweep, carry, lr):
        return sweep(carry, lr, False)


class Strang(AbstractScheme):
    r"""Strang splitting: $\Phi_h = \varphi_1^{\mathrm{lr}/2}\circ\dots\circ
    \varphi_m^{\mathrm{lr}/2}\circ\varphi_m^{\mathrm{lr}/2}\circ\dots\circ
    \varphi_1^{\mathrm{lr}/2}$.

    Batches $1..m$ for lr/2 each, then $m..1$ for lr/2 each: symmetric, so second order
    ($O(h^2)$, `order = 2`) when the local flows are solved exactly or to tolerance. With
    [`gdflow.Euler`][] local solves the composition is not symmetric (explicit Euler is
    not its own adjoint) and the method is first order. Two local solves per batch per
    epoch; an epoch still spans $m\cdot\mathrm{lr}$.
    """

    order: ClassVar[int] = 2
    solves_per_batch: ClassVar[int] = 2

    def epoch(self, sweep, carry, lr):
        half = lr / 2
        return sweep(sweep(carry, half, False), half, True)
