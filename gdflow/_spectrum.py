r"""Extreme Hessian eigenvalues from Hessian-vector products, and along trajectories.

The Hessian is never formed. A Hessian-vector product (HVP) is forward-over-reverse
differentiation, :math:`H(\theta)v = \frac{d}{d\epsilon}\nabla L(\theta + \epsilon v)|_0`
(``jax.jvp`` of ``jax.grad``), at the cost of about two gradient evaluations; parameters
of any pytree structure are raveled to one vector with ``jax.flatten_util.ravel_pytree``.

The eigensolver is the Lanczos method with full reorthogonalisation, written in JAX
(one jitted ``lax.while_loop``). Elkabetz & Cohen (NeurIPS 2021;
``../shared/sources/gf-vs-gd-neural-networks.md``, Theorem 1) bound the distance between
gradient descent and gradient flow by :math:`\exp(-\int_0^t \lambda_{\min}(\nabla^2
L(\theta(s)))\,ds)`; :math:`\lambda_{\min}` is the quantity this module exists for, and
along a trajectory consecutive Hessians are close, so each solve is warm-started from the
previous eigenvectors (:func:`spectrum_along`).
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
from jax.flatten_util import ravel_pytree

from ._validate import one_of, positive_finite, positive_int

PyTree = Any

_WHICH = ("smallest", "largest", "both")
_METHODS = ("lanczos", "eigsh")

# Relative weight of the random vector mixed into a warm start. A warm start made only of
# old eigenvectors spans (nearly) an invariant subspace: Lanczos would converge quickly,
# but to the old eigenpairs, and could never see an eigenvalue that has become extreme
# since. A random component keeps every eigendirection in the Krylov space (a cold start
# has weight 1 on it) at the price of a few iterations to damp it.
_WARM_NOISE = 1e-2


def _hvp(loss: Callable, unravel: Callable, x, v, args):
    """:math:`H(x) v` for the raveled loss, by ``jvp`` of ``grad`` (forward over reverse)."""

    def flat_loss(y):
        return loss(unravel(y), *args)

    return jax.jvp(jax.grad(flat_loss), (x,), (v,))[1]


class HessianEigs(eqx.Module):
    r"""Extreme eigenpairs of a Hessian :math:`\nabla^2 L(\theta)`.

    **Attributes:**

    - ``eigenvalues``: shape ``(r,)``, ascending: the ``k`` smallest (``which="smallest"``),
      the ``k`` largest (``"largest"``) or the ``k`` smallest followed by the ``k``
      largest (``"both"``, ``r = 2k``; with fewer than ``2k`` parameters the two groups
      overlap).
    - ``eigenvectors``: shape ``(r, P)``, unit Ritz vectors in the raveled parameter space
      (``P`` parameters), row ``i`` for ``eigenvalues[i]``. :meth:`vector` returns one as
      a pytree shaped like the parameters.
    - ``residuals``: shape ``(r,)``, :math:`\|H y_i - \lambda_i y_i\|` (the bound on each
      eigenvalue's error, which is in fact of order ``residual**2 / gap``).
    - ``hvps``: number of Hessian-vector products spent.
    - ``converged``: whether every residual met the tolerance.
    - ``method``, ``which``: how they were computed.
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
        r""":math:`\lambda_{\min}` (requires ``which`` in ``"smallest"``, ``"both"``)."""
        if self.which == "largest":
            raise ValueError("This result holds the largest eigenvalues; use which='both'.")
        return self.eigenvalues[0]

    @property
    def lambda_max(self) -> jax.Array:
        r""":math:`\lambda_{\max}` (requires ``which`` in ``"largest"``, ``"both"``)."""
        if self.which == "smallest":
            raise ValueError("This result holds the smallest eigenvalues; use which='both'.")
        return self.eigenvalues[-1]

    def vector(self, i: int) -> PyTree:
        """Eigenvector ``i`` as a pytree with the structure of the parameters."""
        return self.unravel(self.eigenvectors[i])


# ---------------------------------------------------------------------------------------
# Lanczos with full reorthogonalisation, in one jitted while loop.
# ---------------------------------------------------------------------------------------


def _buckets(m: int) -> tuple[int, ...]:
    """Padded sizes for the small tridiagonal eigenproblems solved inside the loop."""
    sizes, s = [], 16
    while s < m:
        sizes.append(s)
        s *= 2
    sizes.append(m)
    return tuple(sizes)


def _tridiag(alpha, beta, n, s: int):
    r"""The leading ``n x n`` Lanczos matrix :math:`T_n`, padded to the static size ``s``.

    Padding rows get the diagonal value :math:`c = 1 + 2(\max|\alpha| + 2\max|\beta|)`,
    strictly above :math:`\|T_n\|`, and no coupling, so ``eigh`` of the padded matrix
    returns the ``n`` Ritz values first (ascending) and ``c`` after them. Padding to a few
    static sizes keeps the per-iteration ``eigh`` cheap (``O(s^3)`` with ``s < 2n``).
    """
    idx = jnp.arange(s)
    a = jnp.where(idx < n, alpha[:s], 0.0)
    b = jnp.where(idx[:-1] < n - 1, beta[: s - 1], 0.0)
    c = 1.0 + 2.0 * (jnp.max(jnp.abs(a)) + 2.0 * jnp.max(jnp.abs(b), initial=0.0))
    a = jnp.where(idx < n, a, c)
    return jnp.diag(a) + jnp.diag(b, 1) + jnp.diag(b, -1)


def _ritz_ends(alpha, beta, n, b_last, k: int, s: int):
    """The k smallest and k largest Ritz values of T_n and their residual norms."""
    w, S = jnp.linalg.eigh(_tridiag(alpha, beta, n, s))
    last = jax.lax.dynamic_index_in_dim(S, n - 1, axis=0, keepdims=False)
    res = jnp.abs(b_last * last)
    start = jnp.maximum(n - k, 0)
    lo_w, lo_r = w[:k], res[:k]
    hi_w = jax.lax.dynamic_slice_in_dim(w, start, k)
    hi_r = jax.lax.dynamic_slice_in_dim(res, start, k)
    return lo_w, lo_r, hi_w, hi_r


@eqx.filter_jit
def _lanczos(loss, params, args, v0, key, tol, *, m: int, k: int, which: str, min_iters: int):
    x, unravel = ravel_pytree(params)
    P = x.shape[0]
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    buckets = _buckets(m)
    want_lo = which in ("smallest", "both")
    want_hi = which in ("largest", "both")

    def hvp(v):
        return _hvp(loss, unravel, x, v, args)

    def orthogonalise(w, V):
        # Full reorthogonalisation, twice ("twice is enough", Kahan-Parlett): rows of V
        # not yet filled are zero and drop out.
        w = w - V.T @ (V @ w)
        return w - V.T @ (V @ w)

    v0 = v0 / jnp.linalg.norm(v0)
    V0 = jnp.zeros((m, P), dtype).at[0].set(v0)
    zeros_m = jnp.zeros((m,), dtype)
    zk = jnp.zeros((k,), dtype)
    state0 = (
        jnp.asarray(0),  # j: iterations done (= HVPs = size n of T_n)
        V0,  # (m, P) Lanczos vectors; row j is the next one to multiply
        zeros_m,  # alpha (m,)
        zeros_m,  # beta (m,): beta[j] couples v_j and v_{j+1}; 0 after a restart
        jnp.asarray(False),  # done
        jnp.asarray(False),  # converged
        (zk, zk, zk, zk),  # (lo values, lo residuals, hi values, hi residuals)
    )

    def cond(state):
        return ~state[4]

    def body(state):
        j, V, alpha, beta, _, _, _ = state
        v = V[j]
        w = hvp(v)
        a = jnp.vdot(v, w)
        # Three-term recurrence (beta[0] is still 0 when j == 0), then full reorthogonalisation.
        jm = jnp.maximum(j - 1, 0)
        w = w - a * v - beta[jm] * V[jm]
        w = orthogonalise(w, V)
        b = jnp.linalg.norm(w)
        alpha = alpha.at[j].set(a)
        n = j + 1

        branch = sum(jnp.where(n > s, 1, 0) for s in buckets[:-1])
        ends = jax.lax.switch(
            branch,
            [lambda al, be, n, b, s=s: _ritz_ends(al, be, n, b, k, s) for s in buckets],
            alpha,
            beta,
            n,
            b,
        )
        lo_w, lo_r, hi_w, hi_r = ends
        scale = jnp.maximum(jnp.abs(lo_w[0]), jnp.abs(hi_w[-1]))
        ok = jnp.asarray(n >= max(k, min_iters))
        if want_lo:
            ok = ok & jnp.all(lo_r <= tol * scale)
        if want_hi:
            ok = ok & jnp.all(hi_r <= tol * scale)

        # Breakdown (an invariant subspace is exhausted): the Ritz values found so far are
        # exact eigenvalues. Continue from a fresh random direction orthogonal to V, with
        # no coupling, so that a start vector lacking some eigendirections (or repeated
        # eigenvalues, which one Krylov sequence sees once) cannot hide them.
        breakdown = b <= 100.0 * eps * jnp.maximum(scale, jnp.finfo(dtype).tiny)
        fresh = orthogonalise(jax.random.normal(jax.random.fold_in(key, j), (P,), dtype), V)
        fresh = orthogonalise(fresh - jnp.vdot(v, fresh) * v, V)
        w_next = jnp.where(breakdown, fresh, w)
        w_next = w_next / jnp.maximum(jnp.linalg.norm(w_next), jnp.finfo(dtype).tiny)
        beta = beta.at[j].set(jnp.where(breakdown, 0.0, b))
        V = jnp.where(n < m, V.at[jnp.minimum(n, m - 1)].set(w_next), V)
        # After a breakdown the residuals of the Ritz pairs are 0 (exact); they are still
        # only accepted once k of them exist, which `ok` checks.
        done = ok | (n >= m)
        return (n, V, alpha, beta, done, ok, ends)

    n, V, alpha, beta, _, converged, _ = jax.lax.while_loop(cond, body, state0)
    # Ritz vectors from one eigh of the padded T_n (m x m; once per call).
    b_last = beta[jnp.maximum(n - 1, 0)]
    w, S = jnp.linalg.eigh(_tridiag(alpha, beta.at[n - 1].set(0.0), n, m))
    last = jax.lax.dynamic_index_in_dim(S, n - 1, axis=0, keepdims=False)
    res = jnp.abs(b_last * last)
    start = jnp.maximum(n - k, 0)
    lo_i = jnp.arange(k)
    hi_i = start + jnp.arange(k)
    idx = (
        lo_i
        if which == "smallest"
        else hi_i
        if which == "largest"
        else jnp.concatenate([lo_i, hi_i])
    )
    vals = w[idx]
    vecs = S[:, idx].T @ V
    return vals, vecs, res[idx], n, converged


def _start_vector(v0, x, key, dtype):
    """Combine a warm start (vectors, pytree or a previous result) with a random vector."""
    P = x.shape[0]
    r = jax.random.normal(key, (P,), dtype)
    r = r / jnp.linalg.norm(r)
    if v0 is None:
        return r
    if isinstance(v0, HessianEigs):
        v0 = v0.eigenvectors
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
    hvp = eqx.filter_jit(lambda x, v, args: _hvp(loss, unravel, x, v, args))
    count = [0]

    def matvec(v):
        count[0] += 1
        return np.asarray(hvp(x, jnp.asarray(np.ravel(v), x.dtype), args))

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
    res = jnp.stack([jnp.linalg.norm(hvp(x, y, args) - lam * y) for lam, y in zip(vals, vecs)])
    return vals, vecs, res, count[0], converged


def hessian_eigs(
    loss: Callable,
    params: PyTree,
    k: int = 1,
    which: str = "both",
    *,
    args: Sequence = (),
    v0=None,
    tol: float = 1e-8,
    max_iters: int | None = None,
    min_iters: int = 1,
    method: str = "lanczos",
    key: jax.Array | None = None,
) -> HessianEigs:
    r"""The ``k`` smallest and/or largest eigenpairs of :math:`\nabla^2 L(\theta)`.

    Only Hessian-vector products :math:`v \mapsto \nabla^2 L(\theta) v` are used (``jvp``
    of ``grad``, about two gradients each). ``method="lanczos"`` (default) runs Lanczos
    with full reorthogonalisation inside one jitted JAX loop: after ``n`` HVPs,
    :math:`H V_n = V_n T_n + \beta_n v_{n+1} e_n^\top` with orthonormal :math:`V_n` and
    tridiagonal :math:`T_n`; the Ritz pairs :math:`(\vartheta_i, V_n s_i)` of :math:`T_n`
    have residual :math:`\|H y_i - \vartheta_i y_i\| = \beta_n |e_n^\top s_i|`, and the loop
    stops once every wanted pair has residual :math:`\le` ``tol`` :math:`\cdot\max|\vartheta|`.
    Since :math:`H` is symmetric the eigenvalue error is at most the residual, and in fact
    of order residual²/gap.

    Indefinite Hessians need no special treatment: both ends of the spectrum are extremes
    of the same Krylov space (a shift :math:`H - \sigma I` leaves the Krylov space, and so
    this method, unchanged; shifts only help the power method). :math:`\lambda_{\min}` of
    a network's Hessian usually sits at the edge of a dense bulk near zero and needs more
    iterations than :math:`\lambda_{\max}` (an outlier); an unrestarted Lanczos with full
    reorthogonalisation spends the fewest HVPs for it, at memory ``max_iters x P``.
    ``method="eigsh"`` uses ``scipy.sparse.linalg.eigsh`` (ARPACK, implicitly restarted;
    memory ~``20 x P``) on a jitted HVP: a reference, and the fallback when
    ``max_iters x P`` floats do not fit in memory. Measured on the digits MLP
    (64-128-128-10, tanh, 25856 parameters; ``benchmarks/spectrum_cost.py``), Lanczos
    needs fewer HVPs and less time for both ends, cold and warm.

    **Arguments:**

    - ``loss``: ``loss(params, *args) -> scalar``. Pass data through ``args`` (e.g.
      ``args=(problem.data,)`` with ``problem.loss``), not in a closure: the solver is
      jitted and closed-over arrays would be constant-folded into it.
    - ``params``: the point :math:`\theta`, any pytree of floating arrays.
    - ``k``: how many eigenvalues at each wanted end.
    - ``which``: ``"smallest"``, ``"largest"`` or ``"both"``.
    - ``args``: extra arguments of ``loss``.
    - ``v0``: warm start: a previous :class:`HessianEigs`, its ``eigenvectors`` (``(r,
      P)``), one vector ``(P,)`` or a pytree shaped like ``params``. Several vectors are
      summed; a small random vector is always mixed in (weight ``1e-2``) so that no
      eigendirection is absent from the Krylov space.
    - ``tol``: relative residual tolerance (see above); for ``"eigsh"``, ARPACK's ``tol``
      (residual relative to each eigenvalue, stricter near zero).
    - ``max_iters``: maximal number of Lanczos steps (= HVPs; default ``min(P, 400)``);
      for ``"eigsh"`` ARPACK's ``maxiter`` (restarts).
    - ``min_iters``: Lanczos steps to take before convergence may be declared (a guard
      against accepting an early, non-extreme Ritz pair from a poor start vector).
    - ``method``: ``"lanczos"`` or ``"eigsh"``.
    - ``key``: PRNG key for the random start (default ``PRNGKey(0)``: reproducible).

    **Returns:** a :class:`HessianEigs`.

    **Raises:** ``ValueError`` for bad ``k``, ``which``, ``tol``, ``method`` or ``v0``. A
    ``RuntimeWarning`` if the tolerance is not met within ``max_iters`` (the values are
    returned with ``converged=False``).

    ```python
    import jax.numpy as jnp, gdflow as gf
    loss = lambda th, A: 0.5 * th @ A @ th
    A = jnp.diag(jnp.array([-1.0, 0.5, 2.0, 3.0]))
    res = gf.hessian_eigs(loss, jnp.zeros(4), args=(A,))
    res.lambda_min, res.lambda_max  # (-1.0, 3.0)
    ```

    Reference: Elkabetz & Cohen, NeurIPS 2021 (``gf-vs-gd-neural-networks.md``,
    Theorem 1); Golub & Van Loan, *Matrix Computations*, §10.1 (Lanczos), §10.3
    (reorthogonalisation).
    """
    k = positive_int("k", k)
    one_of("which", which, _WHICH)
    one_of("method", method, _METHODS)
    tol = positive_finite("tol", tol)
    min_iters = positive_int("min_iters", min_iters)
    args = tuple(args)
    x, unravel = ravel_pytree(params)
    if x.size == 0:
        raise ValueError("`params` holds no parameters.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`params` must be floating point, got dtype {x.dtype}.")
    P = int(x.shape[0])
    if max_iters is None:
        max_iters = min(P, 400)
    max_iters = positive_int("max_iters", max_iters)
    key = jax.random.PRNGKey(0) if key is None else key
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
            jnp.asarray(tol, x.dtype),
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

    - ``ts``: the trajectory's times, shape ``(T,)``.
    - ``eigenvalues``: shape ``(T, r)``, row ``i`` ascending as in
      :class:`HessianEigs` (``r = k`` or ``2k``).
    - ``hvps``: Hessian-vector products per point, shape ``(T,)`` (NumPy int).
    - ``seconds``: wall time per point, shape ``(T,)`` (the first includes compilation).
    - ``converged``: per point, shape ``(T,)`` (NumPy bool).
    - ``last``: the :class:`HessianEigs` at the final point (with eigenvectors, e.g. to
      warm-start a continuation).
    """

    ts: jax.Array
    eigenvalues: jax.Array
    hvps: np.ndarray = eqx.field(static=True)
    seconds: np.ndarray = eqx.field(static=True)
    converged: np.ndarray = eqx.field(static=True)
    which: str = eqx.field(static=True)
    last: HessianEigs

    @property
    def lambda_min(self) -> jax.Array:
        r""":math:`\lambda_{\min}(t)`, shape ``(T,)``."""
        if self.which == "largest":
            raise ValueError("This path holds the largest eigenvalues; use which='both'.")
        return self.eigenvalues[:, 0]

    @property
    def lambda_max(self) -> jax.Array:
        r""":math:`\lambda_{\max}(t)`, shape ``(T,)``."""
        if self.which == "smallest":
            raise ValueError("This path holds the smallest eigenvalues; use which='both'.")
        return self.eigenvalues[:, -1]


def spectrum_along(
    loss: Callable,
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
    r"""Extreme Hessian eigenvalues at every saved point of a :class:`~gdflow.Trajectory`.

    Runs :func:`hessian_eigs` at :math:`\theta(t_i)` for each saved time, warm-started
    from the eigenvectors found at the previous point: along a smooth path consecutive
    Hessians differ little, so the old eigenvectors are already good Ritz vectors and
    far fewer HVPs are needed than from a random start (``benchmarks/spectrum_cost.py``).

    **Arguments:**

    - ``loss``: ``loss(params, *args)``, e.g. ``problem.loss`` with
      ``args=(problem.data,)``.
    - ``traj``: a :class:`~gdflow.Trajectory` (discrete or continuous; its saved points
      are used).
    - ``k``, ``which``: as in :func:`hessian_eigs`.
    - ``warm_start``: start each point from the previous eigenvectors (default) or cold.
    - ``every``: use every ``every``-th saved point (and always the last).
    - ``progress``: show a tqdm bar; ``None`` shows one for 20 points or more when the
      output is a terminal.
    - ``eig_kwargs``: passed to :func:`hessian_eigs` (``tol``, ``max_iters``, ``method``,
      ``min_iters``, ``key``).

    **Returns:** a :class:`SpectrumPath`. One ``RuntimeWarning`` summarises the points
    that did not converge, if any.

    ```python
    path = gf.spectrum_along(problem.loss, flow, args=(problem.data,))
    path.lambda_min  # (T,)
    ```
    """
    from tqdm.auto import tqdm

    k = positive_int("k", k)
    every = positive_int("every", every)
    one_of("which", which, _WHICH)
    if "v0" in eig_kwargs:
        raise ValueError("`v0` is chosen by spectrum_along; pass warm_start=False for cold starts.")
    T = len(traj)
    if T == 0:
        raise ValueError("`traj` is empty.")
    idx = list(range(0, T, every))
    if idx[-1] != T - 1:
        idx.append(T - 1)
    show = (len(idx) >= 20) if progress is None else bool(progress)
    it = tqdm(idx, desc="Hessian spectrum", disable=None if show else True, leave=False)

    vals, hvps, secs, conv = [], [], [], []
    prev = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for i in it:
            t0 = time.perf_counter()
            res = hessian_eigs(
                loss,
                traj.at(i),
                k,
                which,
                args=args,
                v0=prev if warm_start else None,
                **eig_kwargs,
            )
            res.eigenvalues.block_until_ready()
            secs.append(time.perf_counter() - t0)
            vals.append(res.eigenvalues)
            hvps.append(res.hvps)
            conv.append(res.converged)
            prev = res
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
        last=prev,
    )
