r"""A matrix-free linearly implicit (Rosenbrock-W) solver for stiff gradient flows.

Along gradient flow the sharpness can grow far beyond $2/\eta$ (in the edge-of-stability
paper past 430 while GD holds 200), and an explicit solver pays in proportion to
$\lambda_{\max}$ per unit time. [`ROS2CG`][gdflow.ROS2CG] is L-stable: its cost
is set by accuracy, not by the largest eigenvalue. Its linear systems
$(I + \gamma h H)k = b$ are solved by conjugate gradients on Hessian-vector products
(`jvp` of the vector field): no Jacobian is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from diffrax import (
    RESULTS,
    AbstractAdaptiveSolver,
    ODETerm,
    ThirdOrderHermitePolynomialInterpolation,
)
from jax.flatten_util import ravel_pytree

from .._central import _track
from ._linearise import linearise

__all__ = ["ROS2CG", "ROS2CGState"]

_GAMMA = 1.0 + 1.0 / np.sqrt(2.0)


class ROS2CGState(NamedTuple):
    """Solver state of [`ROS2CG`][gdflow.ROS2CG]."""

    f0: object  # PyTree like y: the vector field at the current point (FSAL)
    k1: object  # PyTree like y: the last step's first stage (CG warm start)
    U: jax.Array  # (P, m): tracked top Hessian eigenvectors (deflation; m = 0: none)
    evals: jax.Array  # () int32: vector-field evaluations (a JVP counts 2)
    cg_iters: jax.Array  # () int32: CG iterations so far (one JVP each)


def _cg(matvec, b, x0, rtol, max_iters, precond=None):
    """Preconditioned CG for a symmetric positive definite `matvec`; (x, iterations, ok).

    Stops at |r| <= rtol |b|, at `max_iters`, or on non-positive curvature (an
    indefinite system: the step is then too long for this linearisation and is rejected).
    `precond` applies an SPD approximation of the inverse (default: identity).
    """
    M = (lambda v: v) if precond is None else precond
    r0 = b - matvec(x0)
    z0 = M(r0)
    bn = jnp.linalg.norm(b)
    tiny = jnp.finfo(b.dtype).tiny

    def cond(c):
        x, r, z, p, rz, it, ok = c
        return (it < max_iters) & (jnp.linalg.norm(r) > rtol * bn) & ok

    def body(c):
        x, r, z, p, rz, it, ok = c
        Ap = matvec(p)
        pAp = jnp.vdot(p, Ap)
        # An exact solution (p = 0) is not negative curvature.
        good = (pAp > 0) | (jnp.abs(rz) <= tiny)
        a = jnp.where(pAp > 0, rz / jnp.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + a * p
        r = r - a * Ap
        z = M(r)
        rz_new = jnp.vdot(r, z)
        p = z + (rz_new / jnp.where(jnp.abs(rz) > tiny, rz, 1.0)) * p
        return x, r, z, p, rz_new, it + 1, good

    init = (x0, r0, z0, z0, jnp.vdot(r0, z0), jnp.zeros((), jnp.int32), jnp.asarray(True))
    x, r, _, _, _, it, ok = jax.lax.while_loop(cond, body, init)
    # Reaching the iteration cap is not a failure: a W-method keeps its order for any
    # W, and the attainable residual is limited by eps * cond(W) anyway. Only negative
    # curvature (an indefinite system) is.
    return x, it, ok


class ROS2CG(AbstractAdaptiveSolver):
    r"""ROS2, an L-stable second-order Rosenbrock-W method, with CG linear solves.

    For $\dot y = F(y)$ with Jacobian $J = \partial F/\partial y$ at $y_n$ (for gradient
    flow $J = -\nabla^2 L$, symmetric) and $W = I - \gamma h J$,
    $\gamma = 1 + 1/\sqrt2$ (Verwer, Spee, Blom, Hundsdorfer, SIAM J. Sci. Comput. 20
    (1999) 1456–1480, eq. (2.4)):

    $$ W k_1 = F(y_n), \qquad W k_2 = F(y_n + h k_1) - 2k_1, \qquad
       y_{n+1} = y_n + \tfrac32 h k_1 + \tfrac12 h k_2. $$

    Order 2 for *any* $W$ (a W-method), so inexact Krylov solves cost accuracy only
    through the solve tolerance; L-stable, so no step is limited by $\lambda_{\max}$.

    **Error estimate** (`estimate`), filtered by $W^{-1}$ as Shampine (1982) does for
    Rosenbrock pairs (one more, loose, CG solve), so that stiff components the method
    damps do not cut the step: `"hermite"` (default) the defect
    $\tfrac1{15}[12(y_n - y_{n+1}) + 6h(F_n + F_{n+1})] = h^3 y'''/15 + O(h^4)$ of RKC
    (Sommeijer et al. 1997, §3), error order 3; `"embedded"` the difference from the
    first-order solution $y_n + hk_1$, $\tfrac12 h(k_1 + k_2)$, error order 2 (Verwer
    et al.'s choice; it sizes steps for a first-order method: on the stiff net of
    `benchmarks/stiff_gf.py` it took 10x the steps of the Hermite estimate).

    **When it pays.** Rarely against [`gdflow.RKC2`][] on gradient flows: with a
    symmetric Jacobian, CG needs $\approx\sqrt{\kappa(W)} \approx \sqrt{\gamma h
    \lambda_{\max}}$ iterations per solve, the same $\sqrt{h\lambda_{\max}}$ scaling as
    RKC's stage count, and ROS2 pays three solves a step at 2 evaluations per HVP.
    Measured on the stiff net of `benchmarks/stiff_gf.py` (sharpness 11.7/lr, t1 = 300,
    rtol 1e-6): 85601 evaluations (2291 steps), error 3.1e-5, against RKC2's 5703
    (1084 steps, error 2.0e-5) and Tsit5's 54175 (error 9.2e-8); deflating 2 or 4
    eigenvectors did not help there (93998, 104879: its top eigenvalues 117, 61, 39, 33,
    31, 23, ... are not outliers). It beats classical explicit solvers when
    $h\lambda_{\max}$ is very large at the accuracy asked.

    The systems $Wk = b$ are solved by conjugate gradients with `jvp`s of the vector
    field as matrix-vector products: symmetric whenever $F$ is a gradient field (GF,
    or the modified loss's gradient), positive definite while $\gamma h \lambda_{\min}(H)
    > -1$; CG stops on non-positive curvature and the step is then rejected (infinite
    error). Not for vector fields with non-symmetric Jacobians.

    **Cost** per accepted step: 2 field evaluations ($F(y_n + hk_1)$ and the FSAL
    $F(y_{n+1})$) and 2 per CG iteration of its three solves (a JVP of a gradient field
    is an HVP, counted as 2 gradients, one more per solve for the initial residual);
    `init` costs 1. `num_evaluations(state)` reads the count, which
    [`gdflow.gradient_flow`][] reports (rejected attempts estimated at the mean).

    **Arguments:**

    - `cg_rtol`: relative residual of each CG solve (default 1e-3).
    - `cg_max_iters`: cap on CG iterations per solve (default 200).
    - `estimate`: `"hermite"` (default) or `"embedded"`, above.
    - `deflate`: number `m` of top Hessian eigenvectors tracked across steps (warm
      block Rayleigh–Ritz, $2m$ HVPs a step) to precondition CG by deflation (default 0:
      plain CG). Network Hessians have a few outlying eigenvalues; deflating them leaves
      CG the condition number $1 + \gamma h\lambda_{m+1}$.

    ```python
    >>> H = jnp.diag(jnp.geomspace(1e-2, 1e4, 6))
    >>> problem = gf.problems.quadratic(H, params0=jnp.ones(6))
    >>> flow = gf.gradient_flow(problem, 10.0, solver=ROS2CG(), rtol=1e-6, atol=1e-9)
    ```
    """

    term_structure: ClassVar = ODETerm
    interpolation_cls: ClassVar[Callable[..., ThirdOrderHermitePolynomialInterpolation]] = (
        ThirdOrderHermitePolynomialInterpolation
    )

    cg_rtol: float = eqx.field(default=1e-3, static=True)
    cg_max_iters: int = eqx.field(default=200, static=True)
    estimate: str = eqx.field(default="hermite", static=True)
    deflate: int = eqx.field(default=0, static=True)

    def __check_init__(self):
        if not (np.isfinite(self.cg_rtol) and 0 < self.cg_rtol < 1):
            raise ValueError(f"`cg_rtol` must be in (0, 1); got {self.cg_rtol!r}.")
        if not (isinstance(self.deflate, int) and self.deflate >= 0):
            raise ValueError(f"`deflate` must be an int >= 0; got {self.deflate!r}.")
        if self.estimate not in ("hermite", "embedded"):
            raise ValueError(f"`estimate` must be 'hermite' or 'embedded'; got {self.estimate!r}.")
        if not (isinstance(self.cg_max_iters, int) and self.cg_max_iters >= 1):
            raise ValueError(f"`cg_max_iters` must be an int >= 1; got {self.cg_max_iters!r}.")

    def order(self, terms):
        return 2

    def error_order(self, terms):
        return 3 if self.estimate == "hermite" else 2

    def num_evaluations(self, solver_state: ROS2CGState) -> jax.Array:
        """Field evaluations counted in `solver_state` (a JVP counts 2)."""
        return solver_state.evals

    def init(self, terms, t0, t1, y0, args) -> ROS2CGState:
        del t1
        f0 = terms.vf(t0, y0, args)
        zero = jax.tree_util.tree_map(jnp.zeros_like, y0)
        x0, _ = ravel_pytree(y0)
        U = jax.random.normal(jax.random.key(0), (x0.shape[0], self.deflate), x0.dtype)
        return ROS2CGState(f0, zero, U, jnp.asarray(1, jnp.int32), jnp.asarray(0, jnp.int32))

    def step(self, terms, t0, t1, y0, args, solver_state: ROS2CGState, made_jump):
        # J v by forward-over-reverse through the field, linearised once per step.
        x0, unravel, dtype, h, f0, F0, F, jvp_lin, evals = linearise(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        g = _GAMMA * h

        def W(v):
            return v - g * jvp_lin(v)

        U = solver_state.U
        precond = None
        if self.deflate > 0:
            # Deflation: the top eigenpairs of -J, tracked from the last step's vectors
            # (one block Rayleigh-Ritz step and one refinement, 2m products), give
            # M^{-1} = I - U diag(c) U^T, c = g lam / (1 + g lam): exact inverse of W on
            # span(U). CG then sees cond ~ 1 + g lambda_{m+1} instead of 1 + g lambda_max:
            # the few outlying Hessian eigenvalues of a network no longer set its cost.
            eig = _track(lambda v: -jvp_lin(v), U, iters=1)
            U = eig.X
            lam = jnp.maximum(eig.lam, 0.0)
            c = g * lam / (1.0 + g * lam)
            evals = evals + 2 * eig.hvps

            def precond(v):
                return v - U @ (c * (U.T @ v))

        warm = ravel_pytree(solver_state.k1)[0]
        k1, it1, ok1 = _cg(W, F0, warm, self.cg_rtol, self.cg_max_iters, precond)
        F1 = F(x0 + h * k1)
        k2, it2, ok2 = _cg(W, F1 - 2 * k1, k1, self.cg_rtol, self.cg_max_iters, precond)
        x1 = x0 + h * (1.5 * k1 + 0.5 * k2)
        y1 = unravel(x1)
        # The embedded first-order solution y_n + h k1 is not L-stable (its stability
        # function tends to 1 - 1/gamma), so the raw difference 1/2 h (k1 + k2) is ~y/2
        # on stiff components that the main method damps: steps would be cut to the
        # explicit stability limit. Filtered as Shampine (1982) does for Rosenbrock
        # pairs: err = W^{-1} (1/2 h (k1 + k2)), one more (loose) CG solve.
        f1 = terms.vf(t1, y1, args)
        if self.estimate == "embedded":
            raw = 0.5 * h * (k1 + k2)
        else:
            # The Hermite defect of RKC (Sommeijer et al. 1997, §3), h^3 y'''/15 + O(h^4):
            # a third-order estimate for this second-order method, so the controller
            # sizes steps for order 2 instead of for the first-order embedded solution.
            F1f = ravel_pytree(f1)[0]
            raw = (12.0 * (x0 - x1) + 6.0 * h * (F0 + F1f)) / 15.0
        err, it3, ok3 = _cg(W, raw, raw, 1e-2, self.cg_max_iters, precond)
        ok = ok1 & ok2 & ok3
        err = jnp.where(ok, err, jnp.inf)
        its = it1 + it2 + it3
        # Each CG solve also spends one product on its initial residual.
        evals = evals + 2 + 2 * (its + 3)
        state = ROS2CGState(f1, unravel(k1), U, evals, solver_state.cg_iters + its)
        dense = dict(
            y0=y0,
            y1=y1,
            k0=jax.tree_util.tree_map(lambda a: h * a, f0),
            k1=jax.tree_util.tree_map(lambda a: h * a, f1),
        )
        return y1, unravel(err), dense, state, RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
