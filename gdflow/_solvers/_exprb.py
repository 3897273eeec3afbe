r"""A matrix-free exponential Rosenbrock solver for gradient flows (Lanczos on HVPs).

For gradient flow $\dot\theta = F(\theta) = -\nabla L(\theta)$ the Jacobian
$J = -\nabla^2 L$ is symmetric, so the $\varphi$-function products
$\varphi_k(hJ)v$ of an exponential integrator can be computed by the symmetric Lanczos
process on Hessian-vector products: no Jacobian is ever formed. An exponential
Rosenbrock method is exact on the flow linearised at each step, so its step is limited
by how fast the Hessian changes along the flow, not by $\lambda_{\max}$ (as an explicit
method's is) nor by the error constant of a rational approximation of $e^{-hH}$ (as a
Rosenbrock method's is).

References: M. Hochbruck, A. Ostermann, J. Schweitzer, "Exponential Rosenbrock-type
methods", SIAM J. Numer. Anal. 47 (2009) 786–803 (the scheme `exprb32`, §5.1);
Y. Saad, "Analysis of some Krylov subspace approximations to the matrix exponential
operator", SIAM J. Numer. Anal. 29 (1992) 209–228 (the Krylov error estimate, Thm. 5.1);
M. Hochbruck, C. Lubich, "On Krylov subspace approximations to the matrix exponential
operator", SIAM J. Numer. Anal. 34 (1997) 1911–1925 (convergence after
$\approx\sqrt{h\lambda_{\max}}$ iterations for symmetric matrices).
"""

from __future__ import annotations

import math
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

from ._linearise import linearise

__all__ = ["EXPRB32", "EXPRB32State", "phi"]

# Taylor terms of phi_k below |z| < 1 (the tail is < 1/25! relative).
_TAYLOR = 25


def phi(k: int, z):
    r"""$\varphi_k(z) = \sum_{j \ge 0} z^j/(j+k)!$, elementwise ($\varphi_0 = e^z$).

    Taylor series for $|z| < 1$, the recurrence
    $\varphi_{j+1}(z) = (\varphi_j(z) - 1/j!)/z$ from $e^z$ (or `expm1`) elsewhere, so
    that neither loses more than a few ulps.
    """
    z = jnp.asarray(z)
    small = jnp.abs(z) < 1.0
    zs = jnp.where(small, z, 0.0)
    # Taylor: sum_j zs^j / (j + k)!, by Horner.
    acc = jnp.zeros_like(zs) + 1.0 / math.factorial(_TAYLOR + k)
    for j in range(_TAYLOR - 1, -1, -1):
        acc = acc * zs + 1.0 / math.factorial(j + k)
    zb = jnp.where(small, 1.0, z)
    if k == 0:
        big = jnp.exp(zb)
    else:
        big = jnp.expm1(zb) / zb
        for j in range(1, k):
            big = (big - 1.0 / math.factorial(j)) / zb
    return jnp.where(small, acc, big)


def _lanczos(matvec, v, m_max, done):
    """Lanczos on the symmetric `matvec` from `v`, with full reorthogonalisation.

    Runs until `done(T, beta0, b, j)` (T the padded (m_max, m_max) tridiagonal after j
    iterations, b the next off-diagonal) says so, until `m_max` iterations, or on
    breakdown (an invariant subspace: the projection is then exact). Returns
    (V (m_max+1, P), T, beta0, b_last, j, converged).
    """
    P = v.shape[0]
    dtype = v.dtype
    beta0 = jnp.linalg.norm(v)
    tiny = jnp.finfo(dtype).tiny
    V = jnp.zeros((m_max + 1, P), dtype).at[0].set(v / jnp.where(beta0 > tiny, beta0, 1.0))
    T = jnp.zeros((m_max, m_max), dtype)

    def cond(c):
        V, T, b, j, conv = c
        return (j < m_max) & ~conv

    def body(c):
        V, T, b_prev, j, _ = c
        q = V[j]
        w = matvec(q)
        a = jnp.vdot(q, w)
        w = w - a * q - b_prev * V[jnp.maximum(j - 1, 0)] * (j > 0)
        # Full reorthogonalisation (twice is enough, Kahan-Parlett): rows > j are zero.
        w = w - V.T @ (V @ w)
        w = w - V.T @ (V @ w)
        b = jnp.linalg.norm(w)
        T = T.at[j, j].set(a)
        jn = j + 1
        brk = b <= 1e-12 * (jnp.abs(a) + b_prev + tiny)
        Tn = jnp.where(jn < m_max, T.at[jn % m_max, j].set(b).at[j, jn % m_max].set(b), T)
        # On breakdown the tridiagonal is complete: do not couple a zero vector.
        T = jnp.where(brk, T, Tn)
        V = V.at[jn].set(jnp.where(brk, 0.0, w / jnp.where(brk, 1.0, b)))
        b = jnp.where(brk, 0.0, b)
        conv = brk | done(T, beta0, b, jn)
        return V, T, b, jn, conv

    init = (V, T, jnp.zeros((), dtype), jnp.zeros((), jnp.int32), beta0 <= tiny)
    V, T, b, j, conv = jax.lax.while_loop(cond, body, init)
    return V, T, beta0, b, j, conv


def _phis(T, h, ks, j, m_max):
    """phi_k(-h T) e1 for each k in `ks`, T the (padded) Lanczos tridiagonal of size j."""
    # The padding (rows >= j) is decoupled from the first block: zero it out so that
    # f(T) e1 has no component there.
    mask = jnp.arange(m_max) < j
    T = jnp.where(mask[:, None] & mask[None, :], T, 0.0)
    lam, Q = jnp.linalg.eigh(T)
    q0 = Q[0]
    out = [Q @ (phi(k, -h * lam) * q0) for k in ks]
    return [jnp.where(mask, o, 0.0) for o in out]


class EXPRB32State(NamedTuple):
    """Solver state of [`gdflow.EXPRB32`][], carried between accepted steps."""

    f0: object  # PyTree like y: the vector field at the current point (FSAL)
    evals: jax.Array  # () int32: vector-field evaluations so far (an HVP counts 2)
    hvps: jax.Array  # () int32: Lanczos HVPs so far


class EXPRB32(AbstractAdaptiveSolver):
    r"""`exprb32`: a third-order exponential Rosenbrock method with Lanczos $\varphi$-products.

    For $\dot y = F(y)$, $J_n = \partial F/\partial y(y_n)$ and
    $D(u) = F(u) - F(y_n) - J_n(u - y_n)$ (Hochbruck, Ostermann & Schweitzer 2009, §5.1):

    $$ U = y_n + h\varphi_1(hJ_n)F(y_n), \qquad
       y_{n+1} = U + 2h\varphi_3(hJ_n)\,D(U), $$

    $\varphi_1(z) = (e^z - 1)/z$, $\varphi_3(z) = (e^z - 1 - z - z^2/2)/z^3$. Order 3;
    the embedded solution $U$ (exponential Rosenbrock–Euler) has order 2, and their
    difference $2h\varphi_3(hJ_n)D(U)$ is the error estimate (error order 3, local
    extrapolation). Exact for linear fields at any step: on the stiff part of the
    spectrum it inherits $e^{-h\lambda}$, so no step is limited by $\lambda_{\max}$.

    **Matrix-free.** For gradient flow $J_n = -\nabla^2 L(y_n)$ is symmetric, and both
    products are computed by Lanczos on Hessian-vector products (`jvp` of the field
    linearised once per step), with $\varphi_k(-hT_m)e_1$ of the small tridiagonal $T_m$
    by its eigendecomposition. $J_n(U - y_n)$ comes free from the Lanczos relation
    ($U - y_n$ lies in the Krylov space). Lanczos stops when Saad's error estimate
    $h^2\beta_0\beta_{m+1}|e_m^\top\varphi_{k+1}(-hT_m)e_1|$ of the product falls below
    `krylov_tol` $\cdot\,\|y_n\|$ (the first product, whose error enters the solution
    directly) or below $10^{-2}$ of the estimate $\|2h\varphi_3 D\|$ (the second, whose
    error is a fraction of the error estimate). Its iteration count grows like
    $\sqrt{h\lambda_{\max}}$ for large steps (Hochbruck & Lubich 1997), less when the
    field has small components along the stiff eigenvectors. A product that has not
    converged in `m_max` iterations rejects the step (infinite error), and the
    controller shrinks it. Only for fields with symmetric Jacobians (gradient fields).

    **Cost** per accepted step: 2 field evaluations ($F(U)$ and the FSAL $F(y_{n+1})$)
    and 2 per Lanczos iteration (an HVP counts as 2 gradients); `init` costs 1.
    `num_evaluations(state)` reads the count, which [`gdflow.gradient_flow`][] reports
    (rejected attempts estimated at the mean).

    **Saved values between steps** come from the cubic Hermite interpolant of
    $y_n, F(y_n), y_{n+1}, F(y_{n+1})$, which is not exponential: across a step with
    $h\lambda_{\max} \gg 1$ it is far less accurate than the steps themselves (on the
    stiff quadratic of `tests/test_implicit.py`, errors of 2e-2 against 1e-9 at the
    steps). Where values at `ts` matter, make the steps land on them:
    `controller=diffrax.PIDController(rtol=..., atol=..., step_ts=ts)`.

    **When it pays.** On the two benchmark flows of `benchmarks/README.md` it does not:
    their steps are limited by the nonlinearity (the Hessian changing along the flow),
    not by $\lambda_{\max}$, and a step spends about 8 HVPs (16 evaluations) in its two
    Lanczos products. Stiff net of `benchmarks/stiff_gf.py` (sharpness 11.7/lr, t1 = 300,
    rtol 1e-6): 25469 evaluations (1372 steps), error 1.1e-6, against RKC2's 17061 at
    rtol 1e-8 for error 9.4e-7. It pays where the flow is close to linear over a step
    much longer than $1/\lambda_{\max}$ (a quadratic: any step).

    **Arguments:**

    - `krylov_tol`: Lanczos tolerance of the first product relative to $\|y_n\|$
      (default 1e-9; keep it about $10^{-2}$ to $10^{-3}$ of the controller's `rtol`).
    - `m_max`: cap on Lanczos iterations per product (default 100).

    ```python
    >>> H = jnp.diag(jnp.geomspace(1e-2, 1e4, 6))
    >>> problem = gf.problems.quadratic(H, params0=jnp.ones(6))
    >>> flow = gf.gradient_flow(problem, 10.0, solver=gf.EXPRB32(), rtol=1e-6, atol=1e-9)
    ```
    """

    term_structure: ClassVar = ODETerm
    interpolation_cls: ClassVar[Callable[..., ThirdOrderHermitePolynomialInterpolation]] = (
        ThirdOrderHermitePolynomialInterpolation
    )

    krylov_tol: float = eqx.field(default=1e-9, static=True)
    m_max: int = eqx.field(default=100, static=True)

    def __check_init__(self):
        kt = self.krylov_tol
        if (
            isinstance(kt, bool)
            or not isinstance(kt, (int, float))
            or not (np.isfinite(kt) and 0 < kt < 1)
        ):
            raise ValueError(f"`krylov_tol` must be a float in (0, 1); got {kt!r}.")
        if isinstance(self.m_max, bool) or not isinstance(self.m_max, int) or self.m_max < 2:
            raise ValueError(f"`m_max` must be an int >= 2; got {self.m_max!r}.")

    def order(self, terms):
        return 3

    def error_order(self, terms):
        return 3

    def num_evaluations(self, solver_state: EXPRB32State) -> jax.Array:
        """Field evaluations counted in `solver_state` (an HVP counts 2)."""
        return solver_state.evals

    def init(self, terms, t0, t1, y0, args) -> EXPRB32State:
        del t1
        f0 = terms.vf(t0, y0, args)
        zero = jnp.zeros((), jnp.int32)
        return EXPRB32State(f0, jnp.asarray(1, jnp.int32), zero)

    def step(self, terms, t0, t1, y0, args, solver_state: EXPRB32State, made_jump):
        x0, unravel, dtype, h, f0, F0, F, jvp_lin, evals = linearise(
            terms, t0, t1, y0, args, solver_state, made_jump
        )

        def Hv(v):  # -J v: the Hessian for gradient flow
            return -jvp_lin(v)

        m_max = self.m_max
        tol1 = self.krylov_tol * jnp.linalg.norm(x0) + jnp.finfo(dtype).tiny

        def est(T, beta0, b, j, k):
            # Saad's estimate of the error of h phi_k(-hH) v: h^2 b0 b |e_j^T phi_{k+1}(-hT) e1|.
            (f,) = _phis(T, h, (k + 1,), j, m_max)
            return h * h * beta0 * b * jnp.abs(f[j - 1])

        # First product: h phi_1(hJ) F0.
        V1, T1, b01, bl1, j1, conv1 = _lanczos(
            Hv, F0, m_max, lambda T, b0, b, j: est(T, b0, b, j, 1) <= tol1
        )
        (p1,) = _phis(T1, h, (1,), j1, m_max)
        c = h * b01 * p1  # U - y_n = V c
        dU = V1[:m_max].T @ c
        U = x0 + dU
        # J (U - y_n) = -H V c = -(V T c + b v_{j+1} c_j): the Lanczos relation.
        mask = jnp.arange(m_max) < j1
        Tm = jnp.where(mask[:, None] & mask[None, :], T1, 0.0)
        HdU = V1[:m_max].T @ (Tm @ c) + bl1 * c[jnp.maximum(j1 - 1, 0)] * V1[j1]
        FU = F(U)
        D = FU - F0 + HdU

        # Second product: 2 h phi_3(hJ) D, to a tolerance relative to itself (it is the
        # error estimate, so its error is 1e-2 of the estimate).
        def done2(T, b0, b, j):
            (f3,) = _phis(T, h, (3,), j, m_max)
            size = 2.0 * h * b0 * jnp.linalg.norm(f3)
            return 2.0 * est(T, b0, b, j, 3) <= 1e-2 * size + jnp.finfo(dtype).tiny

        V2, T2, b02, _, j2, conv2 = _lanczos(Hv, D, m_max, done2)
        (p3,) = _phis(T2, h, (3,), j2, m_max)
        corr = V2[:m_max].T @ (2.0 * h * b02 * p3)
        x1 = U + corr
        y1 = unravel(x1)
        f1 = terms.vf(t1, y1, args)
        ok = conv1 & conv2 & jnp.all(jnp.isfinite(x1))
        err = jnp.where(ok, corr, jnp.inf)
        evals = evals + 2 + 2 * (j1 + j2)
        state = EXPRB32State(f1, evals, solver_state.hvps + j1 + j2)
        dense = dict(
            y0=y0,
            y1=y1,
            k0=jax.tree_util.tree_map(lambda a: h * a, f0),
            k1=jax.tree_util.tree_map(lambda a: h * a, f1),
        )
        return y1, unravel(err), dense, state, RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
