r"""Extreme Hessian eigenvalues from Hessian-vector products, and along trajectories.

The Hessian is never formed. A Hessian-vector product (HVP) is forward-over-reverse
differentiation, $H(\theta)v = \frac{d}{d\epsilon}\nabla L(\theta + \epsilon v)|_0$
(`jax.jvp` of `jax.grad`), at the cost of about two gradient evaluations; parameters
of any pytree structure are raveled to one vector with `jax.flatten_util.ravel_pytree`.

The eigensolver is the Lanczos method with full reorthogonalisation, written in JAX
(one jitted `lax.while_loop`). Elkabetz & Cohen (NeurIPS 2021;
`../shared/sources/gf-vs-gd-neural-networks.md`, Theorem 1) bound the distance between
gradient descent and gradient flow by $\exp(-\int_0^t \lambda_{\min}(\nabla^2
L(\theta(s)))\,ds)$; $\lambda_{\min}$ is the quantity this module exists for, and
along a trajectory consecutive Hessians are close, so each solve is warm-started from the
previous eigenvectors ([`gdflow.spectrum_along`][]).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

from ._trajectory import Trajectory
from ._validate import (
    check_finite,
    check_scalar_loss,
    is_traced,
    one_of,
    positive_finite,
    positive_int,
    prng_key,
    real_array,
)

PyTree = Any

_WHICH = ("smallest", "largest", "both")
_METHODS = ("lanczos", "eigsh")
# Options of `hessian_eigs` that `spectrum_along` passes on.
_EIG_KWARGS = frozenset({"tol", "max_iters", "min_iters", "method", "key"})

# Relative weight of the random vector mixed into a warm start. A warm start made only of
# old eigenvectors may span (nearly) an invariant subspace, whose Krylov space never
# reaches an eigenvalue that has become extreme since. The random part puts every
# eigendirection into the Krylov space (a cold start has weight 1 on it). It is small
# because Lanczos must damp it like any other error of the start vector: on the digits
# MLP a weight of 1e-2 cost ~10% more HVPs per warm solve than 1e-6; 1e-3 sits between.
# It does not make a warm start as safe as a cold one (see `hessian_eigs`).
_WARM_NOISE = 1e-3

# Rows of the Lanczos basis handled together in the reorthogonalisation.
_BLOCK = 16


def _hvp(loss: Callable, unravel: Callable, x, v, args):
    """$H(x) v$ for the raveled loss, by `jvp` of `grad` (forward over reverse)."""

    def flat_loss(y):
        return loss(unravel(y), *args)

    return jax.jvp(jax.grad(flat_loss), (x,), (v,))[1]


class HessianEigs(eqx.Module):
    r"""Extreme eigenpairs of a Hessian $\nabla^2 L(\theta)$.

    **Attributes:**

    - `eigenvalues`: shape `(r,)`, ascending: the `k` smallest (`which="smallest"`),
      the `k` largest (`"largest"`) or the `k` smallest followed by the `k`
      largest (`"both"`, `r = 2k`; with fewer than `2k` parameters the two groups
      overlap).
    - `eigenvectors`: shape `(r, P)`, unit Ritz vectors in the raveled parameter space
      (`P` parameters), row `i` for `eigenvalues[i]`. `vector` returns one as
      a pytree shaped like the parameters.
    - `residuals`: shape `(r,)`, $\|H y_i - \lambda_i y_i\|$: *some* eigenvalue
      of $H$ lies within it of $\lambda_i$ (within `residual**2 / gap` once
      the pair is isolated). It does not prove that $\lambda_i$ is the extreme one:
      a Krylov method can miss an eigenvector its start vector is (nearly) orthogonal to.
    - `hvps`: number of Hessian-vector products spent.
    - `converged`: whether every residual met the tolerance.
    - `method`, `which`: how they were computed.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    hvps: int = eqx.field(static=True)
    converged: bool = eqx.field(static=True)
    method: str = eqx.field(static=True)
    which: str = eqx.field(static=True)
    unravel: Callable = eqx.field(static=True)

    @property
    def lambda_min(self) -> jax.Array:
        r"""$\lambda_{\min}$ (requires `which` in `"smallest"`, `"both"`)."""
        if self.which == "largest":
            raise ValueError("This result holds the largest eigenvalues; use which='both'.")
        return self.eigenvalues[0]

    @property
    def lambda_max(self) -> jax.Array:
        r"""$\lambda_{\max}$ (requires `which` in `"largest"`, `"both"`)."""
        if self.which == "smallest":
            raise ValueError("This result holds the smallest eigenvalues; use which='both'.")
        return self.eigenvalues[-1]

    def vector(self, i: int) -> PyTree:
        """Eigenvector `i` as a pytree with the structure of the parameters."""
        return self.unravel(self.eigenvectors[i])


# ---------------------------------------------------------------------------------------
# Lanczos with full reorthogonalisation.
#
# Design: the expensive part of a step (one HVP and the reorthogonalisation against all
# previous Lanczos vectors, O(nP)) is one jitted function, `_lanczos_step`, that updates
# the basis V in place (its buffer is donated). The cheap part (the eigenpairs of the
# small tridiagonal T_n and the convergence test, O(n^2)) runs on the host with LAPACK's
# `stemr` through scipy. A first version ran everything in one `lax.while_loop`; its
# in-loop `eigh` had to be padded to static sizes and cost ~1 s of compilation per size.
# Here one compilation serves every `k`, `which` and tolerance for a given problem shape,
# and the per-step host round trip (~0.1-1 ms) is small next to an HVP of any network
# worth a Lanczos solve.
# ---------------------------------------------------------------------------------------


def _flat_hvp(loss, params, args, v):
    x, unravel = ravel_pytree(params)
    return _hvp(loss, unravel, x, v, args)


def _project_out(w, V, filled):
    """Block Gram-Schmidt of `w` against the first `filled` rows of `V`, twice.

    "Twice is enough" (Kahan-Parlett): two passes give orthogonality to working
    precision. Walking over the filled rows in blocks makes the cost O(filled * P), not
    O(max_iters * P); rows not yet filled are zero and drop out of a partial block.
    """

    def block(i, w):
        Vb = jax.lax.dynamic_slice_in_dim(V, i * _BLOCK, _BLOCK)
        return w - Vb.T @ (Vb @ w)

    nblocks = (filled + _BLOCK - 1) // _BLOCK
    w = jax.lax.fori_loop(0, nblocks, block, w)
    return jax.lax.fori_loop(0, nblocks, block, w)


@eqx.filter_jit
def _flat_hvp_jit(problem, v):
    return _flat_hvp(*problem, v)


@eqx.filter_jit(donate="all-except-first")
def _lanczos_step(problem, V, j, beta_prev):
    r"""One Lanczos step: $w = Hv_j - \alpha_j v_j - \beta_{j-1} v_{j-1}$, reorthogonalised.

    `problem = (loss, params, args)` is not donated; `V` (rows `v_0..v_j` filled)
    is, and is returned with `v_{j+1} = w / \beta_j` written in row `j + 1`.
    """
    loss, params, args = problem
    v = V[j]
    w = _flat_hvp(loss, params, args, v)
    a = jnp.vdot(v, w)
    w = w - a * v - beta_prev * V[jnp.maximum(j - 1, 0)]
    w = _project_out(w, V, j + 1)
    b = jnp.linalg.norm(w)
    V = V.at[j + 1].set(w / jnp.maximum(b, jnp.finfo(w.dtype).tiny))
    return V, a, b


@eqx.filter_jit(donate="all-except-first")
def _lanczos_restart(key, V, j):
    """Write a random unit vector orthogonal to rows `0..j` of `V` into row `j + 1`."""
    r = jax.random.normal(jax.random.fold_in(key, j), V.shape[1:], V.dtype)
    r = _project_out(r, V, j + 1)
    return V.at[j + 1].set(r / jnp.linalg.norm(r))


def _ritz(alpha, beta, lo: int, hi: int):
    """Eigenpairs `lo..hi` (ascending) of the tridiagonal matrix with diagonal `alpha`."""
    if alpha.size == 1:
        return alpha.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(alpha, beta, select="i", select_range=(lo, hi))


def _lanczos(loss, params, args, v0, key, *, tol, m, k, which, min_iters):
    """Lanczos with full reorthogonalisation; returns (values, vectors, residuals, n, ok)."""
    x, _ = ravel_pytree(params)
    P, dtype = x.shape[0], x.dtype
    eps = float(jnp.finfo(dtype).eps)
    rows = -(-(m + 1) // _BLOCK) * _BLOCK
    V = jnp.zeros((rows, P), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    alpha, beta = np.zeros(m), np.zeros(m)
    problem = (loss, params, args)
    want_lo, want_hi = which in ("smallest", "both"), which in ("largest", "both")
    converged = False
    n = 0
    at_breakdown = None  # wanted Ritz values at the last breakdown
    for j in range(m):
        V, a, b = _lanczos_step(
            problem, V, jnp.asarray(j), jnp.asarray(beta[max(j - 1, 0)], dtype)
        )
        alpha[j], b = float(a), float(b)
        if not (np.isfinite(alpha[j]) and np.isfinite(b)):
            raise ValueError(
                f"hessian_eigs: the Hessian-vector product at `params` is not finite (step "
                f"{j}): the loss or its first two derivatives are NaN or infinite there (a "
                "log, sqrt or division at the edge of its domain, or an overflow). Check "
                "loss(params, *args) and jax.grad of it at this point."
            )
        n = j + 1
        kk = min(k, n)
        w_lo, S_lo = _ritz(alpha[:n], beta[: n - 1], 0, kk - 1)
        w_hi, S_hi = _ritz(alpha[:n], beta[: n - 1], n - kk, n - 1)
        scale = max(abs(w_lo[0]), abs(w_hi[-1]))
        res = np.concatenate([b * np.abs(S_lo[-1])] * want_lo + [b * np.abs(S_hi[-1])] * want_hi)
        if b <= 100.0 * eps * max(scale, np.finfo(float).tiny) and n < min(m, P):
            # Breakdown: span(V) is invariant and its Ritz values are exact, so every
            # residual is ~0 -- but a start vector lacking some eigendirections, or a
            # repeated eigenvalue (which one Krylov sequence sees once), may hide an
            # extreme eigenvalue outside it. Continue from a random direction orthogonal
            # to it (no coupling, beta_j = 0); accept only once a further invariant block
            # has left the wanted Ritz values unchanged.
            wanted = np.concatenate([w_lo] * want_lo + [w_hi] * want_hi)
            if (
                at_breakdown is not None
                and n >= max(k, min_iters)
                and at_breakdown.shape == wanted.shape
                and np.allclose(at_breakdown, wanted, rtol=0.0, atol=tol * scale)
            ):
                converged, beta[j] = True, b
                break
            at_breakdown = wanted
            beta[j] = 0.0
            V = _lanczos_restart(key, V, jnp.asarray(j))
            continue
        converged = n >= max(k, min_iters) and bool(np.all(res <= tol * scale))
        beta[j] = b
        if converged or n == m or n == P:
            break
    lo = np.arange(min(k, n))
    hi = np.arange(max(n - k, 0), n)
    idx = lo if which == "smallest" else hi if which == "largest" else np.concatenate([lo, hi])
    vals, S = _ritz(alpha[:n], beta[: n - 1], 0, n - 1)
    vals, S = vals[idx], S[:, idx]
    res = beta[n - 1] * np.abs(S[-1])
    vecs = jnp.asarray(S.T, dtype) @ V[:n]
    return jnp.asarray(vals, dtype), vecs, jnp.asarray(res, dtype), n, converged


def _start_vector(v0, x, key, dtype):
    """Combine a warm start (vectors, pytree or a previous result) with a random vector."""
    P = x.shape[0]
    r = jax.random.normal(key, (P,), dtype)
    r = r / jnp.linalg.norm(r)
    if v0 is None:
        return r
    if isinstance(v0, HessianEigs):
        v0 = v0.eigenvectors
    for leaf in jax.tree_util.tree_leaves(v0):
        if not is_traced(leaf):
            real_array("v0", leaf, finite=False)
    if not (isinstance(v0, jax.Array | np.ndarray) and np.ndim(v0) in (1, 2)):
        leaves = jax.tree_util.tree_leaves(v0)
        v0 = ravel_pytree(v0)[0] if leaves else None
    else:
        v0 = jnp.asarray(v0, dtype)
    if v0 is None or v0.shape[-1] != P:
        got = None if v0 is None else v0.shape
        raise ValueError(
            f"`v0` must have {P} entries per vector (the raveled parameters), got shape "
            f"{got}. Pass a pytree shaped like `params`, a (P,) or (r, P) array, or a "
            "previous HessianEigs result."
        )
    if v0.ndim == 2:
        # Several old eigenvectors (signs arbitrary): their sum has a component along each.
        v0 = jnp.sum(v0 / jnp.linalg.norm(v0, axis=1, keepdims=True), axis=0)
    nrm = jnp.linalg.norm(v0)
    if not bool(jnp.isfinite(nrm)) or float(nrm) == 0.0:
        raise ValueError("`v0` must be a finite, nonzero vector.")
    return v0 / nrm + _WARM_NOISE * r


def _eigsh(loss, params, args, v0, *, k, which, tol, max_iters):
    """scipy.sparse.linalg.eigsh (ARPACK, implicitly restarted Lanczos) on a jitted HVP."""
    import scipy.sparse.linalg as sla

    x, unravel = ravel_pytree(params)
    P = x.shape[0]
    nev = 2 * k if which == "both" else k
    if nev >= P:
        raise ValueError(
            f"method='eigsh' needs fewer wanted eigenvalues ({nev}) than parameters ({P}); "
            "use method='lanczos' for tiny problems."
        )
    problem = (loss, params, args)
    count = [0]

    def hvp(v):
        return _flat_hvp_jit(problem, v)

    def matvec(v):
        count[0] += 1
        return np.asarray(hvp(jnp.asarray(np.ravel(v), x.dtype)))

    op = sla.LinearOperator((P, P), matvec=matvec, dtype=np.dtype(x.dtype))
    code = {"smallest": "SA", "largest": "LA", "both": "BE"}[which]
    try:
        vals, vecs = sla.eigsh(
            op, k=nev, which=code, v0=np.asarray(v0), tol=tol, maxiter=max_iters
        )
        converged = True
    except sla.ArpackNoConvergence as e:
        vals, vecs, converged = e.eigenvalues, e.eigenvectors, False
    order = np.argsort(vals)
    vals, vecs = jnp.asarray(vals[order]), jnp.asarray(vecs[:, order].T)
    res = jnp.stack([jnp.linalg.norm(hvp(y) - lam * y) for lam, y in zip(vals, vecs)])
    return vals, vecs, res, count[0], converged


def _check_args(args) -> tuple:
    """`args` as a tuple; a single array or a dict is refused rather than iterated (a
    tuple of an array's rows, or of a dict's keys, would reach the loss silently)."""
    if not isinstance(args, tuple | list):
        raise TypeError(
            "`args` must be a tuple (or list) of the loss's extra arguments, e.g. "
            f"args=(problem.data,); got {type(args).__name__}. Wrap a single argument: "
            "args=(x,)."
        )
    return tuple(args)


def _check_params(params, name: str = "params"):
    """Every leaf of `params` an array of real, finite numbers (concrete values only)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if is_traced(leaves):
        return params
    out = []
    for path, leaf in zip(
        [jax.tree_util.keystr(kp) for kp, _ in jax.tree_util.tree_leaves_with_path(params)], leaves
    ):
        arr = real_array(f"{name}{path}", leaf, finite=False)
        check_finite(f"{name}{path}", arr)
        out.append(leaf if isinstance(leaf, jax.Array) else jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, out)


def _loss_and_args(loss, args, params, *, need_params: bool):
    """`(loss, args, params)` from a [`gdflow.Problem`][] or a bare loss with its `args`:
    the one way in shared by the spectrum functions."""
    from ._problem import Problem

    if isinstance(loss, Problem):
        if not (isinstance(args, tuple | list) and len(args) == 0):
            raise ValueError(
                "`args`: a Problem carries its data (passed as loss(params, problem.data)); "
                "give `args` only with a bare loss function."
            )
        if params is None and need_params:
            params = loss.params0
        return loss.loss, (loss.data,), params
    if params is None and need_params:
        raise TypeError("`params` is required with a bare loss (only a Problem has params0).")
    args = _check_args(args)
    if callable(loss) and not args:
        import inspect

        try:
            sig = inspect.signature(loss)
            sig.bind(*([None] * 1))
        except TypeError:
            raise TypeError(
                "`loss` takes more than the parameters, and no `args` were given: pass the "
                "Problem itself (gf.hessian_eigs(problem, ...), gf.spectrum_along(problem, "
                "traj)) or the data as args=(problem.data,)."
            ) from None
        except ValueError:  # no signature (a builtin or a C function): let the check speak
            pass
    return loss, args, params


def hessian_eigs(
    loss,
    params: PyTree = None,
    k: int = 1,
    which: str = "both",
    *,
    args: Sequence = (),
    v0=None,
    tol: float = 1e-6,
    max_iters: int | None = None,
    min_iters: int = 1,
    method: str = "lanczos",
    key: jax.Array | None = None,
) -> HessianEigs:
    r"""The `k` smallest and/or largest eigenpairs of $\nabla^2 L(\theta)$.

    Only Hessian-vector products $v \mapsto \nabla^2 L(\theta) v$ are used (`jvp`
    of `grad`, about two gradients each). `method="lanczos"` (default) runs Lanczos
    with full reorthogonalisation (each step one jitted HVP and reorthogonalisation; the
    small tridiagonal eigenproblem and the stopping test on the host): after `n` HVPs,
    $H V_n = V_n T_n + \beta_n v_{n+1} e_n^\top$ with orthonormal $V_n$ and
    tridiagonal $T_n$; the Ritz pairs $(\vartheta_i, V_n s_i)$ of $T_n$
    have residual $\|H y_i - \vartheta_i y_i\| = \beta_n |e_n^\top s_i|$, and the loop
    stops once every wanted pair has residual $\le$ `tol` $\cdot\max|\vartheta|$.
    Since $H$ is symmetric, some eigenvalue lies within the residual of each Ritz
    value (within residual²/gap once it is isolated). That it is *the* extreme eigenvalue
    is what a Krylov method cannot prove: a start vector (nearly) orthogonal to the
    extreme eigenvector, or an extreme eigenvalue of multiplicity above one, can hide it.
    Exact invariance (breakdown) is detected and answered by restarting in a random
    orthogonal direction, and warm starts mix in a random component; for a second
    opinion use `min_iters` or a cold start with another `key`.

    Indefinite Hessians need no special treatment: both ends of the spectrum are extremes
    of the same Krylov space (a shift $H - \sigma I$ leaves the Krylov space, and so
    this method, unchanged; shifts only help the power method). $\lambda_{\min}$ of
    a network's Hessian usually sits at the edge of a dense bulk near zero and needs more
    iterations than $\lambda_{\max}$ (an outlier); an unrestarted Lanczos with full
    reorthogonalisation spends the fewest HVPs for it, at memory `max_iters x P`.
    `method="eigsh"` uses `scipy.sparse.linalg.eigsh` (ARPACK, implicitly restarted;
    memory ~`20 x P`) on a jitted HVP: a reference, and the fallback when
    `max_iters x P` floats do not fit in memory. Measured for $\lambda_{\min}$
    along a GF path of the digits MLP (64-128-128-10, tanh, 25856 parameters;
    `benchmarks/spectrum_cost.py`): Lanczos ~90 HVPs per point cold and ~30 warm,
    ARPACK ~450 and ~160 (its tolerance is relative to the eigenvalue, stricter near 0,
    which accounts for part of the difference), with the same eigenvalues to 1e-9.

    **Arguments:**

    - `loss`: a [`gdflow.Problem`][] (its full-data loss, its data), or a bare
      `loss(params, *args) -> scalar`. Pass data through `args` (e.g.
      `args=(problem.data,)` with `problem.loss`), not in a closure: the solver is
      jitted and closed-over arrays would be constant-folded into it.
    - `params`: the point $\theta$, any pytree of floating arrays (default for a
      Problem: `problem.params0`).
    - `k`: how many eigenvalues at each wanted end.
    - `which`: `"smallest"`, `"largest"` or `"both"`.
    - `args`: extra arguments of `loss`.
    - `v0`: warm start: a previous [`gdflow.HessianEigs`][], its `eigenvectors` (`(r,
      P)`), one vector `(P,)` or a pytree shaped like `params`. Several vectors are
      summed; a small random vector is mixed in (weight `1e-3`) so that no
      eigendirection is absent from the Krylov space. The saving is logarithmic: from a
      start vector with error $\epsilon$ Lanczos needs about
      $\log(\epsilon/\mathrm{tol})$ instead of $\log(1/\mathrm{tol})$
      convergence periods. Caveat: if the extreme eigenvalue has changed eigenvector (a
      crossing), the new one has a small component in the start vector and the solve may
      converge first to the old one, reporting an eigenvalue too high (for `"smallest"`)
      by up to the gap Lanczos could not resolve; cold starts are the safe choice.
    - `tol`: relative residual tolerance (see above); for `"eigsh"`, ARPACK's `tol`
      (residual relative to each eigenvalue, stricter near zero).
    - `max_iters`: maximal number of Lanczos steps (= HVPs; default `min(P, 300)`);
      for `"eigsh"` ARPACK's `maxiter` (restarts).
    - `min_iters`: Lanczos steps to take before convergence may be declared (a guard
      against accepting an early, non-extreme Ritz pair from a poor start vector).
    - `method`: `"lanczos"` or `"eigsh"`.
    - `key`: PRNG key for the random start (default `PRNGKey(0)`: reproducible).

    **Returns:** a [`gdflow.HessianEigs`][].

    **Raises:** `ValueError` for bad `k`, `which`, `tol`, `method` or `v0`,
    non-finite `params`, a `loss` that fails on `params` or does not return a scalar,
    or a Hessian-vector product that is not finite; `TypeError` for a non-callable or
    integer-valued `loss`, `args` that is not a tuple or list, non-numeric `params`
    or a `key` that is not a PRNG key. The loss is checked abstractly
    (`jax.eval_shape`) before any HVP. A `RuntimeWarning` if the tolerance is not met
    within `max_iters` (the values are returned with `converged=False`).

    ```python
    import jax.numpy as jnp, gdflow as gf
    loss = lambda th, A: 0.5 * th @ A @ th
    A = jnp.diag(jnp.array([-1.0, 0.5, 2.0, 3.0]))
    res = gf.hessian_eigs(loss, jnp.zeros(4), args=(A,))
    res.lambda_min, res.lambda_max  # (-1.0, 3.0)
    ```

    Reference: Elkabetz & Cohen, NeurIPS 2021 (`gf-vs-gd-neural-networks.md`,
    Theorem 1); Golub & Van Loan, *Matrix Computations*, §10.1 (Lanczos), §10.3
    (reorthogonalisation).
    """
    loss, args, params = _loss_and_args(loss, args, params, need_params=True)
    k = positive_int("k", k)
    one_of("which", which, _WHICH)
    one_of("method", method, _METHODS)
    tol = positive_finite("tol", tol)
    min_iters = positive_int("min_iters", min_iters)
    params = _check_params(params)
    x, unravel = ravel_pytree(params)
    if x.size == 0:
        raise ValueError("`params` holds no parameters.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`params` must be floating point, got dtype {x.dtype}.")
    check_scalar_loss(loss, params, args)
    P = int(x.shape[0])
    if max_iters is None:
        max_iters = min(P, 300)
    max_iters = positive_int("max_iters", max_iters)
    key = jax.random.PRNGKey(0) if key is None else prng_key("key", key)
    k_start, k_loop = jax.random.split(key)
    start = _start_vector(v0, x, k_start, x.dtype)

    if method == "eigsh":
        vals, vecs, res, hvps, converged = _eigsh(
            loss, params, args, start, k=k, which=which, tol=tol, max_iters=max_iters
        )
    else:
        m = min(max_iters, P)
        if k > m:
            raise ValueError(f"`k`={k} exceeds the Lanczos subspace size {m}; raise max_iters.")
        vals, vecs, res, n, conv = _lanczos(
            loss,
            params,
            args,
            start,
            k_loop,
            tol=tol,
            m=m,
            k=k,
            which=which,
            min_iters=min(min_iters, m),
        )
        hvps, converged = int(n), bool(conv)
        # Exhausting the whole space (n == P) is exact even if the test never fired.
        converged = converged or hvps >= P
    if not converged:
        warnings.warn(
            f"hessian_eigs ({method}) did not reach tol={tol:g} within max_iters={max_iters}; "
            f"largest residual {float(jnp.max(res)):.3g}. Raise max_iters or tol.",
            RuntimeWarning,
            stacklevel=2,
        )
    return HessianEigs(
        eigenvalues=vals,
        eigenvectors=vecs,
        residuals=res,
        hvps=hvps,
        converged=converged,
        method=method,
        which=which,
        unravel=unravel,
    )


class SpectrumPath(eqx.Module):
    r"""Extreme Hessian eigenvalues at the saved points of a trajectory.

    **Attributes:**

    - `ts`: the trajectory's times, shape `(T,)`.
    - `eigenvalues`: shape `(T, r)`, row `i` ascending as in
      [`gdflow.HessianEigs`][] (`r = k` or `2k`).
    - `hvps`: Hessian-vector products per point, shape `(T,)` (NumPy int).
    - `seconds`: wall time per point, shape `(T,)` (the first includes compilation).
    - `converged`: per point, shape `(T,)` (NumPy bool).
    - `last`: the [`gdflow.HessianEigs`][] at the final point (with eigenvectors, e.g. to
      warm-start a continuation).
    """

    ts: jax.Array
    eigenvalues: jax.Array
    hvps: np.ndarray
    seconds: np.ndarray
    converged: np.ndarray
    last: HessianEigs
    which: str = eqx.field(static=True)

    @property
    def lambda_min(self) -> jax.Array:
        r"""$\lambda_{\min}(t)$, shape `(T,)`."""
        if self.which == "largest":
            raise ValueError("This path holds the largest eigenvalues; use which='both'.")
        return self.eigenvalues[:, 0]

    @property
    def lambda_max(self) -> jax.Array:
        r"""$\lambda_{\max}(t)$, shape `(T,)`."""
        if self.which == "smallest":
            raise ValueError("This path holds the smallest eigenvalues; use which='both'.")
        return self.eigenvalues[:, -1]


def _extrapolate(a: HessianEigs, b: HessianEigs, ta: float, tb: float, t: float):
    r"""Warm-start vectors for time `t` from the eigenvectors at `ta < tb`.

    Linear extrapolation $u(t) \approx u_b + \frac{t - t_b}{t_b - t_a}(u_b - u_a)$
    (signs aligned first) cuts the start vector's error from $O(\Delta t)$ to
    $O(\Delta t^2)$ on a smooth path; Lanczos's iteration count grows with the log
    of that error, so this roughly halves the cost of a warm solve (measured in
    `benchmarks/spectrum_cost.py`). A pair whose vectors disagree (overlap < 0.9: the
    eigenvalues have crossed or the vector rotated within a cluster) is not extrapolated.
    """
    ua, ub = np.asarray(a.eigenvectors), np.asarray(b.eigenvectors)
    if ua.shape != ub.shape or tb == ta:
        return b
    c = np.sum(ua * ub, axis=1, keepdims=True)
    s = (t - tb) / (tb - ta)
    e = ub + s * (ub - np.sign(c) * ua)
    e = np.where(np.abs(c) >= 0.9, e, ub)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def spectrum_along(
    loss,
    traj,
    k: int = 1,
    *,
    args: Sequence = (),
    which: str = "both",
    warm_start: bool = True,
    every: int = 1,
    progress: bool | None = None,
    **eig_kwargs,
) -> SpectrumPath:
    r"""Extreme Hessian eigenvalues at every saved point of a [`gdflow.Trajectory`][].

    Runs [`gdflow.hessian_eigs`][] at $\theta(t_i)$ for each saved time, warm-started
    from the eigenvectors of the two previous points, extrapolated linearly in time (from
    the previous point alone at the second point): along a smooth path consecutive
    Hessians differ little, so these are already good Ritz vectors and far fewer HVPs are
    needed than from a random start (`benchmarks/spectrum_cost.py`). See
    [`gdflow.hessian_eigs`][] for what a warm start can miss (an eigenvalue crossing);
    `warm_start=False` solves every point from scratch.

    **Arguments:**

    - `loss`: a [`gdflow.Problem`][], or a bare `loss(params, *args)`, e.g.
      `problem.loss` with `args=(problem.data,)`.
    - `traj`: a [`gdflow.Trajectory`][] (discrete or continuous; its saved points
      are used).
    - `k`, `which`: as in [`gdflow.hessian_eigs`][].
    - `warm_start`: start each point from the previous eigenvectors (default) or cold.
    - `every`: use every `every`-th saved point (and always the last).
    - `progress`: show a tqdm bar; `None` shows one for 20 points or more when the
      output is a terminal.
    - `eig_kwargs`: passed to [`gdflow.hessian_eigs`][] (`tol`, `max_iters`, `method`,
      `min_iters`, `key`).

    **Returns:** a [`gdflow.SpectrumPath`][]. One `RuntimeWarning` summarises the points
    that did not converge, if any.

    **Raises:** as [`gdflow.hessian_eigs`][], checked once before the first point; a
    `ValueError` naming the index if a used point of `traj` is not finite (a run that
    diverged); a `TypeError` for options `hessian_eigs` does not take.

    ```python
    path = gf.spectrum_along(problem, flow)  # or (problem.loss, flow, args=(problem.data,))
    path.lambda_min  # (T,)
    ```
    """
    from tqdm.auto import tqdm

    k = positive_int("k", k)
    every = positive_int("every", every)
    one_of("which", which, _WHICH)
    if "v0" in eig_kwargs:
        raise ValueError(
            "`v0` is chosen by spectrum_along; pass warm_start=False for cold starts."
        )
    if not isinstance(traj, Trajectory):
        raise TypeError(
            f"`traj` must be a gdflow.Trajectory; got {type(traj).__name__}. For one point "
            "use hessian_eigs(loss, params)."
        )
    unknown = sorted(set(eig_kwargs) - _EIG_KWARGS)
    if unknown:
        raise TypeError(
            f"spectrum_along got unknown keyword argument(s) {unknown}; the options passed "
            f"on to hessian_eigs are {sorted(_EIG_KWARGS)}."
        )
    loss, args, _ = _loss_and_args(loss, args, None, need_params=False)
    T = len(traj)
    if T == 0:
        raise ValueError("`traj` is empty.")
    idx = list(range(0, T, every))
    if idx[-1] != T - 1:
        idx.append(T - 1)
    ts_all = np.asarray(traj.ts, dtype=np.float64)
    for i in idx:
        point = traj.at(i)
        if not is_traced(point) and not all(
            bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(point)
        ):
            raise ValueError(
                f"`traj` holds a non-finite point at index {i} (t={ts_all[i]:g}): a run "
                "that diverged has no Hessian there. Pass the part of the run before it "
                f"(its first {i} points, e.g. rerun with fewer steps)."
            )
    check_scalar_loss(loss, traj.at(idx[0]), args)
    show = (len(idx) >= 20) if progress is None else bool(progress)
    it = tqdm(idx, desc="Hessian spectrum", disable=None if show else True, leave=False)

    vals, hvps, secs, conv = [], [], [], []
    ts_np = np.asarray(traj.ts, dtype=np.float64)
    prev, prev_t = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for i in it:
            t0 = time.perf_counter()
            v0 = None
            if warm_start and len(prev) == 2:
                v0 = _extrapolate(prev[0], prev[1], prev_t[0], prev_t[1], ts_np[i])
            elif warm_start and prev:
                v0 = prev[-1]
            res = hessian_eigs(loss, traj.at(i), k, which, args=args, v0=v0, **eig_kwargs)
            res.eigenvalues.block_until_ready()
            secs.append(time.perf_counter() - t0)
            vals.append(res.eigenvalues)
            hvps.append(res.hvps)
            conv.append(res.converged)
            prev, prev_t = [*prev[-1:], res], [*prev_t[-1:], ts_np[i]]
    for w in caught:
        if not (issubclass(w.category, RuntimeWarning) and "hessian_eigs" in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    bad = int(len(conv) - sum(conv))
    if bad:
        warnings.warn(
            f"spectrum_along: {bad} of {len(conv)} points did not converge to the tolerance "
            "(see `converged`); raise max_iters or tol.",
            RuntimeWarning,
            stacklevel=2,
        )
    return SpectrumPath(
        ts=jnp.asarray(traj.ts)[jnp.asarray(idx)],
        eigenvalues=jnp.stack(vals),
        hvps=np.asarray(hvps),
        seconds=np.asarray(secs),
        converged=np.asarray(conv),
        which=which,
        last=prev[-1],
    )
