r"""The accurate local solver: a diffrax solve of each batch's local flow."""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._flow import count_evals, resolve_solver
from .._problem import float_dtype
from .._structure import AbstractGLM
from .._validate import positive_finite, positive_int
from ._base import AbstractLocalSolver, reduce_batch

__all__ = ["LocalODE"]


def _reduced_field(structure: AbstractGLM):
    r"""The QR-reduced local field $\dot\eta = -\frac1b R\,(r(R^\top\eta) - y)$."""

    def field(t, eta, args):
        del t
        R, y = args
        z = R.T @ eta  # the batch's predictions X_B θ, (b,) or (b, K)
        return -(R @ structure.residual(z, y)) / R.shape[1]

    return field


def _full_field(loss):
    def field(t, params, batch):
        del t
        grads = jax.grad(loss)(params, batch)
        return jax.tree_util.tree_map(jnp.negative, grads)

    return field


class LocalODE(AbstractLocalSolver):
    r"""The local flow $\dot\theta = -\nabla L_j(\theta)$ solved accurately by diffrax.

    For the generalised linear models the batch gradient is
    $\frac1b X_j^\top r(X_j\theta)$ and, with the thin QR
    $X_j^\top = QR$ computed once per batch, the flow reduces to `k = min(p, b)`
    unknowns (`k × K` for softmax), exactly as in the splitting text:

    $$
    \dot\eta = -\tfrac1b R\,\big(r(R^\top\eta) - y_j\big),\qquad \eta = Q^\top\theta,
    \qquad \theta(h) = \theta_0 + Q(\eta(h) - \eta(0)),
    $$

    with $r(z) = z$ (`LeastSquares`), $\sigma(z)$ (`Logistic`) or
    the row-wise softmax (`Softmax`, $H = Q^\top\Theta$): every problem whose
    `structure` is a generalised linear model (`AbstractGLM`) supplies its residual. Every other problem
    (and `reduce=False`) is solved in the full parameter space (any pytree).

    Each local solve is an adaptive `diffeqsolve` from 0 to `dt` with a PID
    step-size controller; its cost is the solver's steps times its stages (Tsit5: 6
    field evaluations per step), each field evaluation $O(pb)$ reduced (after an
    $O(pb^2)$ QR per batch), or one batch gradient in full space.

    **Arguments:**

    - `solver`: a diffrax solver or a name (`"tsit5"` default, `"dopri8"`,
      `"implicit"`, …, as in [`gdflow.gradient_flow`][]).
    - `rtol`, `atol`: tolerances of each local solve (defaults `1e-8`, `1e-10`).
    - `max_steps`: cap on solver steps per local solve (a solve that hits it raises).
    - `reduce`: use the QR-reduced flow for `least_squares`, `logistic` and
      `softmax` problems (default `True`).

    Reference: `../shared/sources/sgd-as-ode-splitting.md` (table of local ODEs and
    their reductions, "integration: odeint"). Departure: the text integrates with
    `odeint` (LSODA); here any diffrax solver, adaptive Tsit5 by default.
    """

    order: ClassVar[None] = None  # solved to the tolerances: exact for the order tests
    evals_per_solve: ClassVar[None] = None  # varies with the adaptive steps
    solver: diffrax.AbstractSolver
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    reduce: bool = eqx.field(static=True)

    def __init__(
        self,
        solver: diffrax.AbstractSolver | str | None = None,
        rtol: float = 1e-8,
        atol: float = 1e-10,
        max_steps: int = 4096,
        reduce: bool = True,
    ):
        self.solver = resolve_solver(solver)
        if not (
            isinstance(self.solver, diffrax.AbstractAdaptiveSolver)
            or hasattr(self.solver, "tableau")
        ):
            raise ValueError(
                f"`solver` {type(self.solver).__name__} has no error estimate; LocalODE needs "
                "an adaptive solver such as 'tsit5' or 'dopri8' (for one explicit step per "
                "batch use gf.Euler())."
            )
        self.rtol = positive_finite("rtol", rtol)
        self.atol = positive_finite("atol", atol)
        self.max_steps = positive_int("max_steps", max_steps)
        self.reduce = bool(reduce)

    def _reduced(self, problem) -> bool:
        return self.reduce and isinstance(problem.structure, AbstractGLM)

    def check(self, problem) -> None:
        del problem

    def prepare(self, problem, batch):
        if not self._reduced(problem):
            return batch
        Q, R = reduce_batch(batch["X"])
        return {"Q": Q, "R": R, "y": batch[problem.structure.targets_key]}

    def _solve(self, field, y0, args, dt):
        dtype = float_dtype(y0)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            self.solver,
            t0=jnp.zeros((), dtype),
            t1=jnp.asarray(dt, dtype),
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=self.max_steps,
            throw=False,
        )
        # A failed solve (max_steps, step-size underflow, a blow-up) returns NaN: the
        # splitting step then fails like any non-finite state and the run keeps the state
        # at the start of the epoch, instead of an error from inside the compiled loop.
        ok = sol.result == diffrax.RESULTS.successful
        y1 = jax.tree_util.tree_map(lambda x: jnp.where(ok, x[-1], jnp.nan), sol.ys)
        return y1, sol.stats["num_steps"]

    def solve(self, problem, factors, params, dt):
        if not self._reduced(problem):
            return self._solve(_full_field(problem.loss), params, factors, dt)
        Q, R, y = factors["Q"], factors["R"], factors["y"]
        eta0 = Q.T @ params
        eta1, steps = self._solve(_reduced_field(problem.structure), eta0, (R, y), dt)
        return params + Q @ (eta1 - eta0), steps

    def count_evals(self, steps: int, solves: int) -> int | None:
        """Field evaluations of `solves` local solves taking `steps` solver steps in all
        (`None` for implicit solvers)."""
        return count_evals(self.solver, steps, solves)
