r"""Shared machinery of the splitting optimiser: the local-solver interface and helpers.

A *local solver* advances one batch's local flow

$$
\dot\theta = -\nabla L_j(\theta), \qquad L_j = \text{mean loss over batch } j,
$$

for a dwell time `dt` (`lr` for Lie–Trotter, `lr/2` for the half-steps of Strang).
It works in two phases so that anything depending only on the batch (a QR factorisation,
an eigendecomposition) is computed once per batch and reused every epoch:

- `prepare(problem, batch) -> factors`: per-batch precomputation, mapped over the
  `m` batches of an epoch (once per run for a fixed partition such as `RoundRobin`;
  once per epoch when the partition changes, as with `Reshuffle`);
- `solve(problem, factors, params, dt) -> (params, ode_steps)`: one local solve.

Reference: `../shared/sources/sgd-as-ode-splitting.md` (local ODEs, the QR reduction
$X_j^\top = Q_jR_j$, $\eta_j = Q_j^\top\theta$).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import PyTree

__all__ = ["AbstractLocalSolver", "phi", "reduce_batch"]


class AbstractLocalSolver(eqx.Module):
    r"""Base class of local solvers ([`gdflow.Euler`][], [`gdflow.Exact`][],
    [`gdflow.LocalODE`][]). Subclasses are final.

    A subclass declares, as class attributes, `order` (the local flow's error order in
    the dwell time: a local error $O(\mathrm{dt}^{\,\text{order}+1})$; `None` when the
    local flow is solved exactly, in closed form or to a tolerance) and `evals_per_solve`
    (batch-gradient evaluations per local solve; `None` when it varies), and implements
    `check`, `prepare`, `solve` and `count_evals`.
    """

    order: eqx.AbstractClassVar[int | None]
    evals_per_solve: eqx.AbstractClassVar[int | None]

    @abc.abstractmethod
    def check(self, problem) -> None:
        """Raise `ValueError` if this solver cannot handle `problem` (e.g. its structure)."""

    @abc.abstractmethod
    def prepare(self, problem, batch: PyTree) -> PyTree:
        """Per-batch precomputation (traceable; mapped over the batches of an epoch)."""

    @abc.abstractmethod
    def solve(self, problem, factors: PyTree, params: PyTree, dt) -> tuple[PyTree, jax.Array]:
        """Advance the local flow of the batch described by `factors` for time `dt`.

        Returns the new parameters and the number of ODE solver steps taken (0 for the
        closed-form and Euler solvers).
        """

    @abc.abstractmethod
    def count_evals(self, steps, solves):
        """Batch-gradient evaluations of `solves` local solves that took `steps` ODE solver
        steps in all (traceable; `None` if not countable, e.g. implicit ODE solvers)."""


def phi(lam, h):
    r"""$\varphi(\lambda, h) = (1 - e^{-\lambda h})/\lambda$, with $\varphi \to h$
    as $\lambda \to 0$.

    The affine flow $\dot z = -(\lambda z - d)$ moves by
    $z(h) - z(0) = \varphi(\lambda, h)\,(d - \lambda z(0))$; on a zero eigenvalue
    (a rank-deficient batch) the flow is linear in time, $z(h) = z(0) + h d$.
    `expm1` keeps full relative accuracy for small $\lambda h$; below
    $|\lambda h| < 10^{-8}$ the two-term series $h(1 - \lambda h/2)$ is exact to
    rounding and avoids dividing by (near) zero.
    """
    x = lam * h
    small = jnp.abs(x) < 1e-8
    safe = jnp.where(small, 1.0, x)
    return h * jnp.where(small, 1.0 - x / 2, -jnp.expm1(-safe) / safe)


def reduce_batch(X):
    r"""Thin QR of a batch's design matrix transposed, $X_B^\top = QR$.

    `X` has shape `(b, p)`; returns `Q` `(p, k)` with orthonormal columns and `R`
    `(k, b)`, $k = \min(p, b)$. Then $X_B\theta = R^\top Q^\top\theta$, so a
    GLM's batch gradient $\frac1b X_B^\top r(X_B\theta)$ lies in the column space of
    `Q` and the local flow is exactly the flow of $\eta = Q^\top\theta \in
    \mathbb R^k$ with $\theta(h) = \theta_0 + Q(\eta(h) - \eta(0))$.
    Cost $O(p b^2)$ per batch.
    """
    Q, R = jnp.linalg.qr(X.T, mode="reduced")
    return Q, R
