r"""The central flow of full-batch gradient descent at the edge of stability.

At step sizes people train with, gradient descent runs at the *edge of stability*: the
sharpness $S = \lambda_{\max}(\nabla^2 L)$ rises to $2/\eta$ and hovers there while GD
oscillates along the top eigenvectors (Cohen et al., ICLR 2021). The *central flow*
(Cohen, Damian, Talwalkar, Kolter, Lee, ICLR 2025, §3, eqs. (5)–(8)) is an ODE for GD's
time-averaged path there. On gdflow's clock $t = k\eta$:

$$ \dot\theta = -\nabla L(\theta) - \tfrac12 \sum_{ij} Y_{ij}\, g_{ij}(\theta), \qquad
   g_{ij} = \nabla_\theta\,(u_i^\top \nabla^2 L(\theta)\, u_j), \qquad \Sigma = U Y U^\top, $$

with $U$ the tracked top eigenvectors and $Y \succeq 0$ the solution of a small
semidefinite complementarity problem (SDCP, [`sdcp`][gdflow._central.sdcp]) that keeps
$\eta\lambda_i \le 2$.

This module holds the pieces, all in JAX and jittable: third-derivative products
(`jvp` of Hessian-vector products), the SDCP solver (closed form for one eigenvalue,
accelerated projected gradient on the PSD cone with adaptive restart otherwise), a
block eigen-tracker (Rayleigh–Ritz on a warm subspace plus residual refinement) and
[`central_flow`][gdflow._central.central_flow].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._problem import Problem
from ._trajectory import Trajectory
from ._tree import tree_zeros
from ._validate import nonnegative_finite, one_of, positive_finite, positive_int

PyTree = Any

__all__ = [
    "CentralFlowResults",
    "central_flow",
    "sdcp",
    "third_derivative",
    "track_eigs",
]


# ---------------------------------------------------------------------------------------
# Derivatives on the raveled parameters.
# ---------------------------------------------------------------------------------------


def _flat(loss: Callable, params, data):
    x, unravel = ravel_pytree(params)

    def f(y):
        return loss(unravel(y), data)

    return f, x, unravel


def _hvp(f, x, v):
    return jax.jvp(jax.grad(f), (x,), (v,))[1]


def _d3(f, x, u, v):
    r"""$\nabla_\theta(u^\top H(\theta) v) = D^3L(\theta)[u, v, \cdot]$: `jvp` of an HVP."""
    return jax.jvp(lambda y: _hvp(f, y, u), (x,), (v,))[1]


def third_derivative(loss: Callable, params: PyTree, u: PyTree, v: PyTree, data) -> PyTree:
    r"""The third-derivative product $\nabla_\theta\,(u^\top \nabla^2 L(\theta)\, v)$.

    Computed as the directional derivative along $v$ of the Hessian-vector product
    $H(\theta)u$ (forward over forward over reverse):
    $\frac{d}{d\epsilon} H(\theta + \epsilon v) u |_0 = D^3 L(\theta)[u, v, \cdot]$, which
    is symmetric in $u, v$. Cost: about 1.7 gradients on the 433-parameter anchor MLP
    (`benchmarks/central_flow.py` measures it).

    **Arguments:**

    - `loss`: `loss(params, data) -> scalar`.
    - `params`, `u`, `v`: pytrees of one structure.
    - `data`: passed to `loss`.

    **Returns:** a pytree shaped like `params`.

    ```python
    >>> g = third_derivative(lambda p, d: jnp.sum(p**4) / 4, jnp.ones(2), jnp.ones(2), jnp.ones(2), None)
    >>> g.tolist()  # 6 p u v
    [6.0, 6.0]

    ```
    """
    f, x, unravel = _flat(loss, params, data)
    uu, vv = ravel_pytree(u)[0], ravel_pytree(v)[0]
    if uu.shape != x.shape or vv.shape != x.shape:
        raise ValueError(
            f"`u` and `v` must have the structure of `params` ({x.shape[0]} entries); got "
            f"{uu.shape[0]} and {vv.shape[0]}."
        )
    return unravel(_d3(f, x, uu.astype(x.dtype), vv.astype(x.dtype)))


# ---------------------------------------------------------------------------------------
# The semidefinite complementarity problem.
# ---------------------------------------------------------------------------------------


def _sym(M):
    return 0.5 * (M + jnp.swapaxes(M, -1, -2))


def _psd_project(M):
    w, Q = jnp.linalg.eigh(_sym(M))
    return (Q * jnp.maximum(w, 0.0)) @ Q.T


def _apply(B, Y):
    return jnp.einsum("ijkl,kl->ij", B, Y)


class SDCPSolution(NamedTuple):
    """Result of [`sdcp`][gdflow._central.sdcp] (all JAX arrays)."""

    Y: jax.Array  # (k, k) PSD solution
    iterations: jax.Array  # () int32: projected-gradient iterations (0 for k = 1)
    residual: jax.Array  # () natural residual |Y - Π(Y - A/L)|_F, relative
    converged: jax.Array  # () bool: residual <= tol and the problem bounded


def _sdcp_impl(alpha, B, Y0, tol, max_iters):
    k = alpha.shape[0]
    dtype = alpha.dtype
    alpha = _sym(alpha)
    if k == 1:
        b = B[0, 0, 0, 0]
        a = alpha[0, 0]
        # Singular operator: bounded only when alpha >= 0, and then Y = 0 is optimal.
        y = jnp.where(b > 0, jnp.maximum(0.0, -a / jnp.where(b > 0, b, 1.0)), 0.0)
        ok = (b > 0) | (a >= 0)
        return SDCPSolution(y.reshape(1, 1), jnp.zeros((), jnp.int32), jnp.zeros((), dtype), ok)
    Bm = B.reshape(k * k, k * k)
    Bm = 0.5 * (Bm + Bm.T)
    Lip = jnp.linalg.eigvalsh(Bm)[-1]
    tiny = jnp.finfo(dtype).tiny
    # Guard for a singular or zero operator: the step 1/L needs L > 0. With B = 0 the
    # problem is linear: bounded (solution 0) only if alpha >= 0.
    zero_op = Lip <= 1e3 * tiny * (1 + jnp.max(jnp.abs(Bm)))
    L = jnp.where(zero_op, 1.0, Lip)
    scale = jnp.linalg.norm(alpha) / L

    def resid(Y):
        A = alpha + _apply(B, Y)
        r = jnp.linalg.norm(Y - _psd_project(Y - A / L))
        return r / jnp.maximum(jnp.linalg.norm(Y) + scale, tiny)

    def cond(c):
        Y, Z, tk, it, r = c
        return (it < max_iters) & (r > tol)

    def body(c):
        # FISTA on f(Y) = ½<Y, B[Y]> + <alpha, Y> over the PSD cone, with the
        # gradient-based adaptive restart of O'Donoghue & Candès (2015) for a linear rate
        # when B is positive definite on the relevant face.
        Y, Z, tk, it, _ = c
        G = alpha + _apply(B, Z)
        Yn = _psd_project(Z - G / L)
        restart = jnp.sum(G * (Yn - Y)) > 0
        tn = jnp.where(restart, 1.0, 0.5 * (1 + jnp.sqrt(1 + 4 * tk**2)))
        mom = jnp.where(restart, 0.0, (tk - 1) / tn)
        Zn = Yn + mom * (Yn - Y)
        return Yn, Zn, tn, it + 1, resid(Yn)

    Y0 = _psd_project(Y0)
    Y0 = jnp.where(zero_op, jnp.zeros_like(Y0), Y0)
    init = (Y0, Y0, jnp.ones((), dtype), jnp.zeros((), jnp.int32), resid(Y0))
    Y, _, _, it, r = jax.lax.while_loop(cond, body, init)
    psd_alpha = jnp.linalg.eigvalsh(alpha)[0] >= 0
    Y = jnp.where(zero_op, jnp.zeros_like(Y), Y)
    r = jnp.where(zero_op, 0.0, r)
    ok = jnp.where(zero_op, psd_alpha, r <= tol)
    return SDCPSolution(_sym(Y), it, r, ok)


def sdcp(alpha, beta, Y0=None, *, tol: float = 1e-12, max_iters: int = 20_000) -> SDCPSolution:
    r"""Solve the semidefinite complementarity problem of the central flow.

    Find $Y \in \mathbb{S}^k$ with

    $$ Y \succeq 0, \qquad A := \alpha + \beta[Y] \succeq 0, \qquad \langle Y, A\rangle = 0, $$

    $\beta[Y]_{ij} = \sum_{kl} \beta_{ijkl} Y_{kl}$ a positive semidefinite operator. These
    are the optimality conditions of the convex problem
    $\min_{Y \succeq 0} \tfrac12\langle Y, \beta[Y]\rangle + \langle \alpha, Y\rangle$.

    $k = 1$: the closed form $Y = \max(0, -\alpha/\beta)$. $k > 1$: accelerated projected
    gradient (FISTA, step $1/\|\beta\|$, projection onto the PSD cone by `eigh`) with
    adaptive restart, stopped when the natural residual
    $\|Y - \Pi_+(Y - A/\|\beta\|)\|_F \le$ `tol` $\cdot(\|Y\|_F + \|\alpha\|_F/\|\beta\|)$.
    A zero operator is guarded: the problem is then linear, bounded (with $Y = 0$) only
    when $\alpha \succeq 0$. A singular but nonzero $\beta$ is handled by the same
    iteration (the solution may then not be unique; one is returned). Departure from the
    reference code: it calls CVXPY/CVXOPT on the host (≈ 10 ms a call, and it fails on a
    singular $\beta$); this runs inside `jit`.

    **Arguments:**

    - `alpha`: shape `(k, k)`, symmetric.
    - `beta`: shape `(k, k, k, k)`, with $\beta_{ijkl} = \beta_{klij}$ and PSD as a
      $k^2 \times k^2$ matrix (a Gram operator).
    - `Y0`: warm start, shape `(k, k)` (default 0).
    - `tol`, `max_iters`: stopping rule.

    **Returns:** an `SDCPSolution` (`Y`, `iterations`, `residual`, `converged`).

    **Raises:** `ValueError` for mismatched shapes or a non-positive `tol`.

    ```python
    >>> sol = sdcp(jnp.array([[-1.0]]), jnp.array([[[[4.0]]]]))
    >>> float(sol.Y[0, 0])
    0.25

    ```
    Reference: Cohen, Damian et al., ICLR 2025, §3 ("the central flow"), Appendix on
    the SDCP.
    """
    alpha = jnp.asarray(alpha)
    beta = jnp.asarray(beta, alpha.dtype)
    if alpha.ndim != 2 or alpha.shape[0] != alpha.shape[1]:
        raise ValueError(f"`alpha` must be a square (k, k) matrix; got shape {alpha.shape}.")
    k = alpha.shape[0]
    if beta.shape != (k, k, k, k):
        raise ValueError(f"`beta` must have shape {(k, k, k, k)}; got {beta.shape}.")
    tol = positive_finite("tol", tol)
    max_iters = positive_int("max_iters", max_iters)
    Y0 = jnp.zeros_like(alpha) if Y0 is None else jnp.asarray(Y0, alpha.dtype)
    if Y0.shape != (k, k):
        raise ValueError(f"`Y0` must have shape {(k, k)}; got {Y0.shape}.")
    return _sdcp_jit(alpha, beta, Y0, tol, max_iters)


@eqx.filter_jit
def _sdcp_jit(alpha, beta, Y0, tol, max_iters):
    return _sdcp_impl(alpha, beta, Y0, tol, max_iters)


# ---------------------------------------------------------------------------------------
# Block eigen-tracking: Rayleigh–Ritz on a warm subspace, refined by residuals.
# ---------------------------------------------------------------------------------------


def _cols(hvp, V):
    return jax.vmap(hvp, in_axes=1, out_axes=1)(V)


def _rr(V, W):
    """Rayleigh–Ritz in span(V) given W = HV: descending Ritz values, vectors and HX."""
    T = _sym(V.T @ W)
    lam, S = jnp.linalg.eigh(T)
    lam, S = lam[::-1], S[:, ::-1]
    return lam, V @ S, W @ S


def _orth(V):
    return jnp.linalg.qr(V)[0]


class _Eigs(NamedTuple):
    lam: jax.Array  # (m,) descending Ritz values
    X: jax.Array  # (P, m) Ritz vectors
    res: jax.Array  # (m,) residual norms |HX - X lam|
    hvps: jax.Array  # () int32


def _track(hvp, V, *, iters, tol=0.0, max_iters=None):
    r"""Top-`m` eigenpairs from a warm basis `V` (P, m).

    One Rayleigh–Ritz step in span(V) (m HVPs), then refinement steps: Rayleigh–Ritz in
    span([X, R]) with R the residual block orthogonalised against X (m more HVPs each; a
    block Davidson step with the identity preconditioner). At least `iters` refinements,
    at most `max_iters`, stopping once every residual is <= tol * max|lambda|.
    """
    P, m = V.shape
    extra = min(m, P - m)
    max_iters = iters if max_iters is None else max_iters
    if extra == 0:  # the basis spans the whole space: Rayleigh-Ritz is exact
        iters = max_iters = 0
    V = _orth(V)
    lam, X, HX = _rr(V, _cols(hvp, V))
    R = HX - X * lam

    def res_of(lam, X, HX):
        return jnp.linalg.norm(HX - X * lam, axis=0)

    def cond(c):
        lam, X, HX, it = c
        r = res_of(lam, X, HX)
        small = jnp.all(r <= tol * jnp.max(jnp.abs(lam)))
        return (it < iters) | ((it < max_iters) & ~small)

    def body(c):
        lam, X, HX, it = c
        R = HX - X * lam
        R = R - X @ (X.T @ R)
        # The new block: the columns after the first m of a QR of [X, R]. They are
        # orthonormal and orthogonal to span(X) even where R is (numerically) rank
        # deficient, as it is once pairs converge; a QR of R alone would then return
        # arbitrary columns not orthogonal to X, and Rayleigh-Ritz on a non-orthonormal
        # basis returns values outside the spectrum.
        mode = "complete" if 2 * m > P else "reduced"
        Q = jnp.linalg.qr(jnp.concatenate([X, R], axis=1), mode=mode)[0][:, m : m + extra]
        HQ = _cols(hvp, Q)
        basis = jnp.concatenate([X, Q], axis=1)
        Hb = jnp.concatenate([HX, HQ], axis=1)
        lam2, X2, HX2 = _rr(basis, Hb)
        return lam2[:m], X2[:, :m], HX2[:, :m], it + 1

    del R
    lam, X, HX, it = jax.lax.while_loop(cond, body, (lam, X, HX, jnp.zeros((), jnp.int32)))
    return _Eigs(lam, X, res_of(lam, X, HX), (m + extra * it).astype(jnp.int32))


def track_eigs(
    loss: Callable,
    params: PyTree,
    data,
    V0,
    *,
    tol: float = 1e-8,
    min_iters: int = 1,
    max_iters: int = 200,
):
    r"""The top `m` Hessian eigenpairs from a warm start `V0` of `m` vectors, jitted.

    Block Rayleigh–Ritz in the span of the warm vectors, then refinement by the residual
    block (block Davidson, identity preconditioner) until every residual
    $\|Hx_i - \lambda_i x_i\| \le$ `tol` $\max_i|\lambda_i|$. Each iteration costs `m`
    Hessian-vector products (about 2 gradients each). Unlike
    [`gdflow.hessian_eigs`][] the whole solve is one compiled `while_loop`, so it can sit
    inside a jitted time loop; it finds the top eigenvalues only (those the edge of
    stability concerns), and like every Krylov-type method it can miss an eigenvector
    the start block is orthogonal to.

    **Arguments:**

    - `loss`, `params`, `data`: the loss `loss(params, data)` at `params`.
    - `V0`: shape `(P, m)` start vectors (raveled parameters), e.g. the previous call's
      `X`, or random ones.
    - `tol`, `min_iters`, `max_iters`: stopping rule.

    **Returns:** `(eigenvalues (m,) descending, vectors (P, m), residuals (m,), hvps)`.
    """
    f, x, _ = _flat(loss, params, data)
    V0 = jnp.asarray(V0, x.dtype)
    if V0.ndim != 2 or V0.shape[0] != x.shape[0]:
        raise ValueError(
            f"`V0` must have shape (P, m) with P = {x.shape[0]} raveled parameters; got "
            f"{V0.shape}."
        )
    min_iters = positive_int("min_iters", min_iters, allow_zero=True)
    max_iters = positive_int("max_iters", max_iters)
    tol = nonnegative_finite("tol", tol)
    out = _track_jit(loss, params, data, V0, tol, min_iters, max(max_iters, min_iters))
    return out.lam, out.X, out.res, int(out.hvps)


@eqx.filter_jit
def _track_jit(loss, params, data, V0, tol, iters, max_iters):
    f, x, _ = _flat(loss, params, data)
    return _track(lambda v: _hvp(f, x, v), V0, iters=iters, tol=tol, max_iters=max_iters)


# ---------------------------------------------------------------------------------------
# The central-flow vector field.
# ---------------------------------------------------------------------------------------


class _Counts(NamedTuple):
    grads: jax.Array
    hvps: jax.Array
    d3: jax.Array
    sdcp_iters: jax.Array
    evals: jax.Array  # field evaluations
    active_evals: jax.Array  # field evaluations that solved an SDCP


class _Diag(NamedTuple):
    loss: jax.Array
    grad_sq: jax.Array
    lam: jax.Array  # (m,)
    Y: jax.Array  # (k, k)
    res: jax.Array  # (m,)
    sdcp_ok: jax.Array


class _Cfg(eqx.Module):
    lr: float
    tau: float
    k: int = eqx.field(static=True)
    threshold: float
    eig_iters: int = eqx.field(static=True)
    sdcp_tol: float
    sdcp_max_iters: int = eqx.field(static=True)


def _field(f, x, V, Y0, cfg: _Cfg, counts: _Counts):
    """Central-flow field at x, warm-started from the basis V and the previous Y."""
    k = cfg.k
    loss, grad = jax.value_and_grad(f)(x)
    eig = _track(lambda v: _hvp(f, x, v), V, iters=cfg.eig_iters)
    lam_k = eig.lam[:k]
    U = eig.X[:, :k]
    # Skip the third derivatives and the SDCP while no tracked eigenvalue is near the
    # edge (as the reference code, which enters eigenvalues with lr*lambda > 1.95).
    near = jnp.any(cfg.lr * lam_k >= cfg.threshold)
    iu, ju = np.triu_indices(k)

    def active(_):
        gs = jax.vmap(lambda a, b: _d3(f, x, U[:, a], U[:, b]))(jnp.asarray(iu), jnp.asarray(ju))
        g = jnp.zeros((k, k, x.shape[0]), x.dtype).at[iu, ju].set(gs).at[ju, iu].set(gs)
        alpha = jnp.diag(2.0 / cfg.lr - lam_k) + cfg.tau * (g @ grad)
        gg = g.reshape(k * k, -1)
        B = (0.5 * cfg.tau) * (gg @ gg.T).reshape(k, k, k, k)
        sol = _sdcp_impl(alpha, B, Y0, cfg.sdcp_tol, cfg.sdcp_max_iters)
        Y = sol.Y
        corr = 0.5 * jnp.einsum("ij,ijp->p", Y, g)
        return Y, corr, sol.iterations, sol.converged

    def idle(_):
        return (
            jnp.zeros((k, k), x.dtype),
            jnp.zeros_like(x),
            jnp.zeros((), jnp.int32),
            jnp.asarray(True),
        )

    Y, corr, its, ok = jax.lax.cond(near, active, idle, None)
    npairs = len(iu)
    counts = _Counts(
        grads=counts.grads + 1,
        hvps=counts.hvps + eig.hvps,
        d3=counts.d3 + jnp.where(near, npairs, 0),
        sdcp_iters=counts.sdcp_iters + its,
        evals=counts.evals + 1,
        active_evals=counts.active_evals + near.astype(jnp.int32),
    )
    lam = eig.lam
    diag = _Diag(loss, jnp.vdot(grad, grad), lam, Y, eig.res, ok)
    return -grad - corr, eig.X, Y, diag, counts


_TABLEAUX = {
    # name: (a (lower-triangular stage coefficients), b (weights)); explicit RK.
    "euler": ((), (1.0,)),
    "heun": (((1.0,),), (0.5, 0.5)),
    "rk3": (((0.5,), (-1.0, 2.0)), (1 / 6, 2 / 3, 1 / 6)),
    "rk4": (((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}
_ORDERS = {"euler": 1, "heun": 2, "rk3": 3, "rk4": 4}


def _rk_step(f, x, V, Y, h, cfg, counts, method):
    a, b = _TABLEAUX[method]
    F1, V, Y, diag, counts = _field(f, x, V, Y, cfg, counts)
    Fs = [F1]
    for row in a:
        xs = x + h * sum(c * F for c, F in zip(row, Fs) if c != 0.0)
        Fi, V, Y, _, counts = _field(f, xs, V, Y, cfg, counts)
        Fs.append(Fi)
    x_new = x + h * sum(w * F for w, F in zip(b, Fs))
    return x_new, V, Y, diag, counts


@eqx.filter_jit
def _integrate(loss, unravel, data, x0, V0, cfg, h, n_saves, per_save, method):
    def f(y):
        return loss(unravel(y), data)

    zero = jnp.zeros((), jnp.int32)
    counts0 = _Counts(zero, zero, zero, zero, zero, zero)
    Y0 = jnp.zeros((cfg.k, cfg.k), x0.dtype)

    _, _, _, diag_shape, _ = jax.eval_shape(lambda: _field(f, x0, V0, Y0, cfg, counts0))
    diag0 = tree_zeros(diag_shape)

    def save_block(carry, _):
        x, V, Y, counts = carry

        # Diagnostics at the save point come from the first stage of the next step.
        def step(i, c):
            x, V, Y, counts, d = c
            x, V, Y, diag, counts = _rk_step(f, x, V, Y, h, cfg, counts, method)
            d = jax.tree_util.tree_map(lambda old, new: jnp.where(i == 0, new, old), d, diag)
            return x, V, Y, counts, d

        x1, V1, Y1, counts1, d = jax.lax.fori_loop(0, per_save, step, (x, V, Y, counts, diag0))
        return (x1, V1, Y1, counts1), (x, d)

    (xT, VT, YT, counts), (xs, diags) = jax.lax.scan(
        save_block, (x0, V0, Y0, counts0), None, length=n_saves
    )
    # The final point: one more field evaluation for its diagnostics.
    _, _, _, dT, countsT = _field(f, xT, VT, YT, cfg, counts)
    xs = jnp.concatenate([xs, xT[None]], axis=0)
    diags = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b[None]]), diags, dT)
    return xs, diags, counts, countsT


class CentralFlowResults(eqx.Module):
    r"""What [`central_flow`][gdflow._central.central_flow] computes besides the path.

    **Attributes** (NumPy arrays, `T` saved times, `m` tracked eigenvalues, `k` of them
    entering the SDCP):

    - `ts` `(T,)`: save times (clock $t = k\eta$).
    - `loss` `(T,)`: $L(\theta(t))$ on the central flow.
    - `predicted_loss` `(T,)`: GD's predicted time-averaged loss
      $L + \tfrac12\langle H, \Sigma\rangle = L + \tfrac12\sum_i \lambda_i Y_{ii}$.
    - `grad_sq` `(T,)`, `predicted_grad_sq` `(T,)`: $|\nabla L|^2$ and GD's predicted
      time-averaged $|\nabla L|^2 + \sum_i \lambda_i^2 Y_{ii}$.
    - `eigenvalues` `(T, m)`: tracked top Hessian eigenvalues, descending
      (`sharpness = eigenvalues[:, 0]`).
    - `Y` `(T, k, k)`: the SDCP solution; `sigma_eigenvalues` `(T, k)` the eigenvalues of
      $\Sigma = UYU^\top$, descending.
    - `at_edge` `(T, k)` bool: eigenvalue $i$ is held at the edge
      ($Y_{ii} > 10^{-6}\,\mathrm{tr}\,Y$ and $\eta\lambda_i \ge$ `threshold`).
    - `edge_intervals`: a list of `(i, t_start, t_end)` over which eigenvalue `i`
      (by rank) was at the edge.
    - `residuals` `(T, m)`: eigen residuals $\|Hx_i - \lambda_i x_i\|$.
    - `costs`: a dict: `grads`, `hvps`, `third_derivatives`, `sdcp_iterations`,
      `evaluations`, `active_evaluations`, `gradient_equivalents` (HVP = 2, third
      derivative = `d3_cost`), per unit time and per GD step.
    - `lr`: the GD step size.
    """

    ts: np.ndarray
    loss: np.ndarray
    predicted_loss: np.ndarray
    grad_sq: np.ndarray
    predicted_grad_sq: np.ndarray
    eigenvalues: np.ndarray
    Y: np.ndarray
    sigma_eigenvalues: np.ndarray
    at_edge: np.ndarray
    edge_intervals: list
    residuals: np.ndarray
    costs: dict
    lr: float

    @property
    def sharpness(self) -> np.ndarray:
        r"""$\lambda_{\max}$ along the flow, shape `(T,)`."""
        return self.eigenvalues[:, 0]


def _intervals(ts, mask):
    out = []
    for i in range(mask.shape[1]):
        on = mask[:, i]
        start = None
        for j, v in enumerate(on):
            if v and start is None:
                start = j
            if not v and start is not None:
                out.append((i, float(ts[start]), float(ts[j - 1])))
                start = None
        if start is not None:
            out.append((i, float(ts[start]), float(ts[-1])))
    return out


def central_flow(
    problem: Problem,
    lr: float,
    t1: float,
    ts=None,
    *,
    k: int = 2,
    guard: int = 1,
    dt: float | None = None,
    method: str = "rk4",
    tau: float | None = None,
    threshold: float = 1.9,
    eig_iters: int = 1,
    init_eig_iters: int = 100,
    sdcp_tol: float = 1e-10,
    sdcp_max_iters: int = 2000,
    d3_cost: float = 3.0,
    key: jax.Array | None = None,
) -> Trajectory:
    r"""The central flow of full-batch gradient descent (Cohen, Damian et al., ICLR 2025).

    On the clock $t = k\eta$ ($\eta$ = `lr`),

    $$ \dot\theta = -\nabla L(\theta) - \tfrac12 \sum_{i,j \le k} Y_{ij}\, \nabla_\theta
       (u_i^\top H(\theta) u_j), $$

    $u_1, \dots, u_k$ the top Hessian eigenvectors and $Y \succeq 0$ the solution of the
    SDCP ([`sdcp`][gdflow._central.sdcp]) with

    $$ \alpha_{ij} = (2/\eta - \lambda_i)\delta_{ij} + \tau\langle g_{ij}, \nabla L\rangle,
       \qquad \beta_{ijkl} = \tfrac{\tau}{2}\langle g_{ij}, g_{kl}\rangle, $$

    i.e. $A = 2/\eta - (U^\top H U + \tau\,\tfrac{d}{dt}U^\top H U)$: the eigenvalues
    predicted a time $\tau$ ahead stay at or below $2/\eta$, with complementarity. On the
    active set this is $\dot\lambda_i = (2/\eta - \lambda_i)/\tau$: the edge is kept with a
    drift correction of time constant $\tau$. With no eigenvalue at the edge ($Y = 0$) the
    flow is gradient flow.

    **Integrator** (departures from the reference code, which takes forward Euler with 4
    substeps per GD step and $\tau$ = the substep): a fixed-step explicit Runge–Kutta
    method (`method`: `"euler"`, `"heun"`, `"rk3"`, `"rk4"`, order 1–4 while the active set
    is fixed; the field is only Lipschitz where it changes) with step `dt` (default
    `lr`, one GD step), and $\tau$ (default `dt`) independent of it. The eigenpairs are
    tracked at every stage: Rayleigh–Ritz in the warm subspace of the previous stage
    (`k + guard` HVPs) and `eig_iters` residual refinements (as many HVPs each), see
    [`track_eigs`][gdflow._central.track_eigs]. The third derivatives ($k(k+1)/2$ per
    stage) and the SDCP are skipped while $\eta\lambda_i <$ `threshold` for all tracked
    $i \le k$. Everything runs in one compiled loop, no host round trips.

    **Cost** per field evaluation: 1 gradient, $(k + g)(1 + \text{eig\_iters})$ HVPs,
    $k(k+1)/2$ third-derivative products near the edge, the SDCP's iterations (a
    $k\times k$ `eigh` each); `method`'s stage count evaluations per step. Reported
    exactly in `results.costs`.

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][].
    - `lr`: GD's step size $\eta$.
    - `t1`: end time ($K$ GD steps is $t_1 = K\eta$).
    - `ts`: save times, multiples of `dt` in $[0, t_1]$, evenly spaced (default every GD
      step: `lr * arange(K + 1)`).
    - `k`: eigenvalues that may enter the SDCP; `guard`: extra tracked eigenvectors (they
      make the tracked subspace catch an eigenvalue rising into the top `k`).
    - `dt`, `method`, `tau`: the integrator (above).
    - `threshold`: $\eta\lambda$ at which an eigenvalue may enter the SDCP.
    - `eig_iters`: refinement iterations per stage; `init_eig_iters`: at $t = 0$ (a cold
      start; converged to 1e-10 relative or this many).
    - `sdcp_tol`, `sdcp_max_iters`: the SDCP solver's stopping rule (warm-started from
      the previous stage's $Y$).
    - `d3_cost`: gradient-equivalents per third-derivative product in the cost total.
    - `key`: PRNG key for the initial eigen-basis (default `PRNGKey(0)`).

    **Returns:** a discrete [`gdflow.Trajectory`][] (`method="central_flow"`) at `ts`, with
    `stats["results"]` a [`CentralFlowResults`][gdflow._central.CentralFlowResults]
    (predicted loss, Σ's eigenvalues, edge activity, costs) and the usual `stats`
    (`grad_evals` counts gradient-equivalents, `seconds`).

    **Raises:** `ValueError` for a non-positive `lr`, `t1`, `dt` or `tau`, save times off the
    grid, `k + guard` above the parameter count, an unknown `method`; `TypeError` for a
    non-Problem.

    ```python
    >>> problem = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 5.0])), params0=jnp.ones(2))
    >>> cf = central_flow(problem, lr=0.1, t1=1.0, k=1, guard=1)  # lr*lambda = 0.5: plain GF
    >>> round(float(cf.loss[-1]), 6)
    0.067782

    ```
    Reference: J. Cohen, A. Damian, A. Talwalkar, J. Z. Kolter, J. D. Lee, "Understanding
    Optimization in Deep Learning with Central Flows", ICLR 2025, §3 and Appendix (SDCP);
    edge of stability: Cohen et al., ICLR 2021.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    lr = positive_finite("lr", lr)
    t1 = positive_finite("t1", t1)
    k = positive_int("k", k)
    guard = positive_int("guard", guard, allow_zero=True)
    one_of("method", method, tuple(_TABLEAUX))
    eig_iters = positive_int("eig_iters", eig_iters, allow_zero=True)
    init_eig_iters = positive_int("init_eig_iters", init_eig_iters, allow_zero=True)
    sdcp_tol = positive_finite("sdcp_tol", sdcp_tol)
    sdcp_max_iters = positive_int("sdcp_max_iters", sdcp_max_iters)
    threshold = nonnegative_finite("threshold", threshold)
    d3_cost = nonnegative_finite("d3_cost", d3_cost)
    dt = lr if dt is None else positive_finite("dt", dt)
    tau = dt if tau is None else positive_finite("tau", tau)
    x0, unravel = ravel_pytree(problem.params0)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise TypeError(f"`problem.params0` must be floating point; got {x0.dtype}.")
    P = int(x0.shape[0])
    m = k + guard
    if m > P:
        raise ValueError(f"`k + guard` = {m} exceeds the {P} parameters; lower `k` or `guard`.")
    n_steps = int(round(t1 / dt))
    if abs(n_steps * dt - t1) > 1e-9 * max(1.0, t1) or n_steps < 1:
        raise ValueError(f"`t1`={t1:g} must be a positive multiple of `dt`={dt:g}.")
    if ts is None:
        per_save = max(1, int(round(lr / dt))) if abs(round(lr / dt) * dt - lr) < 1e-9 * lr else 1
        if n_steps % per_save:
            per_save = 1
    else:
        ts_np = np.asarray(ts, np.float64).reshape(-1)
        if ts_np.size < 2 or not np.all(np.isfinite(ts_np)):
            raise ValueError("`ts` must hold at least two finite times.")
        gaps = np.diff(ts_np)
        per = gaps[0] / dt
        if (
            abs(ts_np[0]) > 1e-9 * t1
            or abs(ts_np[-1] - t1) > 1e-9 * t1
            or abs(per - round(per)) > 1e-6
            or round(per) < 1
            or np.any(np.abs(gaps - gaps[0]) > 1e-9 * t1)
        ):
            raise ValueError(
                "`ts` must run from 0 to `t1` in equal gaps that are multiples of `dt`; for "
                "other times, interpolate the result."
            )
        per_save = int(round(per))
    n_saves = n_steps // per_save
    dtype = x0.dtype
    key = jax.random.PRNGKey(0) if key is None else key
    V0 = jax.random.normal(key, (P, m), dtype)
    data = problem.data

    # Cold start of the eigenbasis: a converged solve at t = 0.
    eig0 = _track_jit(
        _LossOf(problem.loss, unravel), x0, data, V0, 1e-10, 1, max(init_eig_iters, 1)
    )
    # The SDCP cannot be solved below the working precision: a float32 run with the
    # float64 default would spin to `sdcp_max_iters` at every evaluation.
    sdcp_tol = max(sdcp_tol, 100 * float(jnp.finfo(dtype).eps))
    cfg = _Cfg(
        lr=jnp.asarray(lr, dtype),
        tau=jnp.asarray(tau, dtype),
        k=k,
        threshold=jnp.asarray(threshold, dtype),
        eig_iters=eig_iters,
        sdcp_tol=jnp.asarray(sdcp_tol, dtype),
        sdcp_max_iters=sdcp_max_iters,
    )
    # `per_save` is traced (one compilation serves every step count with the same
    # number of save points); `n_saves` sets the output shape and is static.
    args = (
        problem.loss,
        unravel,
        data,
        x0,
        eig0.X,
        cfg,
        jnp.asarray(dt, dtype),
        n_saves,
        jnp.asarray(per_save, jnp.int32),
        method,
    )
    from ._run import run_compiled

    (xs, diags, counts, countsT), compile_s, run_s = run_compiled(_integrate, *args)
    xs = np.asarray(xs)
    ts_out = np.arange(n_saves + 1) * (per_save * dt)
    lam = np.asarray(diags.lam)
    Y = np.asarray(diags.Y)
    Ydiag = np.diagonal(Y, axis1=1, axis2=2)
    loss_v = np.asarray(diags.loss)
    gsq = np.asarray(diags.grad_sq)
    lam_k = lam[:, :k]
    pred = loss_v + 0.5 * np.sum(lam_k * Ydiag, axis=1)
    pred_g = gsq + np.sum(lam_k**2 * Ydiag, axis=1)
    sig = np.linalg.eigvalsh(Y)[:, ::-1]
    scale = np.maximum(np.trace(Y, axis1=1, axis2=2), 0.0)
    # At the edge: a share of Sigma's trace along u_i, with lr*lambda_i past the
    # threshold (a tiny Y_ii from Ritz-basis rotation alone does not count).
    at_edge = (Ydiag > 1e-6 * scale[:, None]) & (Ydiag > 0) & (lr * lam_k >= threshold)
    c = {name: int(v) for name, v in counts._asdict().items()}
    t_total = n_steps * dt
    geq = c["grads"] + 2 * c["hvps"] + d3_cost * c["d3"]
    costs = {
        "grads": c["grads"],
        "hvps": c["hvps"] + int(eig0.hvps),
        "third_derivatives": c["d3"],
        "sdcp_iterations": c["sdcp_iters"],
        "evaluations": c["evals"],
        "active_evaluations": c["active_evals"],
        "gradient_equivalents": float(geq + 2 * int(eig0.hvps)),
        "per_unit_time": {
            "grads": c["grads"] / t_total,
            "hvps": c["hvps"] / t_total,
            "third_derivatives": c["d3"] / t_total,
            "sdcp_iterations": c["sdcp_iters"] / t_total,
        },
        "gradient_equivalents_per_gd_step": geq / (t_total / lr),
        "d3_cost": d3_cost,
        "integrator_steps": n_steps,
    }
    results = CentralFlowResults(
        ts=ts_out,
        loss=loss_v,
        predicted_loss=pred,
        grad_sq=gsq,
        predicted_grad_sq=pred_g,
        eigenvalues=lam,
        Y=Y,
        sigma_eigenvalues=sig,
        at_edge=at_edge,
        edge_intervals=_intervals(ts_out, at_edge),
        residuals=np.asarray(diags.res),
        costs=costs,
        lr=lr,
    )
    if not np.all(np.isfinite(loss_v)):
        bad = int(np.argmin(np.isfinite(loss_v)))
        raise FloatingPointError(
            f"central_flow: the loss became non-finite at t={ts_out[bad]:g}; lower `dt` or "
            "raise `eig_iters`."
        )
    params = jax.vmap(unravel)(jnp.asarray(xs, dtype))
    return Trajectory(
        ts=jnp.asarray(ts_out, dtype),
        params=params,
        loss=jnp.asarray(loss_v, dtype),
        method="central_flow",
        stats={
            "grad_evals": int(round(geq)),
            "seconds": run_s,
            "compile_seconds": compile_s,
            "lr": lr,
            "dt": dt,
            "tau": tau,
            "integrator": method,
            "order": _ORDERS[method],
            "sdcp_converged": bool(np.all(np.asarray(diags.sdcp_ok))),
            "results": results,
        },
    )


class _LossOf(eqx.Module):
    """`loss(unravel(y), data)` as a hashable callable of the flat parameters."""

    loss: Callable = eqx.field(static=True)
    unravel: Callable = eqx.field(static=True)

    def __call__(self, y, data):
        return self.loss(self.unravel(y), data)
