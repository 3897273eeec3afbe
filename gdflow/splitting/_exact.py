r"""The exact local solver: closed-form local flows of quadratic losses."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .._structure import LeastSquares, Quadratic, TwoPoints
from ._base import AbstractLocalSolver, phi, reduce_batch

__all__ = ["Exact"]

_CLOSED_FORMS = (LeastSquares, Quadratic, TwoPoints)


class Exact(AbstractLocalSolver):
    r"""The local flow $\dot\theta = -\nabla L_j(\theta)$ solved in closed form.

    Every supported batch loss is quadratic, so its gradient is affine and the local flow
    is a linear ODE, solved exactly through an eigendecomposition computed once per batch.
    With $\varphi(\lambda, h) = (1 - e^{-\lambda h})/\lambda$ ($\to h$ on zero
    eigenvalues, where the flow is linear in time; see
    `gdflow.splitting._base.phi`), per structure of the problem (the typed value
    `problem.structure` set by the constructors of [`gdflow.problems`][]):

    - `LeastSquares`: $\nabla L_j = \frac1b X_j^\top(X_j\theta - y_j)$.
      Two exact reductions of the flow to `b` dimensions (`reduction`):

      `"gram"` (default): the residual $r = X_j\theta - y_j$ obeys the closed
      linear ODE $\dot r = -Gr$ with the Gram matrix $G = X_jX_j^\top/b =
      U\Lambda U^\top$ (`b×b`), so $\int_0^h r = U\varphi(\Lambda, h)U^\top r_0$
      and

      $$
      \theta(h) = \theta_0 - \tfrac1b X_j^\top U\,\varphi(\Lambda, h)\,U^\top
                  (X_j\theta_0 - y_j).
      $$

      `"qr"` (the splitting text's reduction): $X_j^\top = QR$ thin QR
      (`Q` `p×k`, `R` `k×b`, $k = \min(p, b)$), $\eta = Q^\top\theta$
      with $\dot\eta = -\frac1b R(R^\top\eta - y_j)$; with
      $RR^\top/b = V\Lambda V^\top$, $W = QV$ and $d = V^\top R y_j/b$,

      $$
      \theta(h) = \theta_0 + W\big[\varphi(\Lambda, h)\odot(d - \Lambda W^\top\theta_0)
                  \big] = \theta_0 + Q(\eta(h) - \eta(0)).
      $$

      Both are the same map (the nonzero eigenvalues of $X_jX_j^\top/b$ and
      $RR^\top/b$ coincide) and cost $O(pb)$ per local step — two `p×b`
      matrix–vector products, as an SGD step — after a one-off factorisation per batch.
      They differ in that factorisation: `"gram"` needs a `b×b` Gram matrix and its
      `eigh` ($O(pb^2)$ in one matrix product, the fast kind), `"qr"` a
      Householder QR ($O(pb^2)$ in slow, vector-level LAPACK work) plus the `p×b`
      product $QV$; measured on 10000×500, b=20 the Gram factorisation is about
      20× cheaper (`benchmarks/split_cost.py`). Departure from the text, flagged: the
      default is the Gram form. It is as accurate here — $\varphi$ is bounded by
      `h` and smooth, so nothing is divided by small eigenvalues and squaring the
      condition number (the usual objection to Gram matrices, which concerns *solving*
      with them) does no harm — and rank-deficient batches (repeated or dependent
      rows, or `b > p`) give zero eigenvalues, handled exactly by both.
    - `Quadratic`: per-example $\tfrac12(\theta-c_i)^\top H_i(\theta-c_i)$;
      $\nabla L_j = \overline{H}\theta - \overline{Hc}$ (batch means),
      $\overline H = W\Lambda W^\top$ by `eigh` ($O(d^3)$ once per batch),
      and the `"qr"` formula above with $d = W^\top\overline{Hc}$.
    - `TwoPoints`: per-example $\tfrac12|x_i - \theta|^2$, so
      $\theta(h) = \bar x + (\theta_0 - \bar x)e^{-h}$.

    Local error zero: with `scheme="lie_trotter"` the splitting is the switched flow
    sampled at its switching times ([`gdflow.switched_flow`][] with `dwell = lr`),
    stable for every `lr` (each local flow is a gradient flow of a convex quadratic).

    `Exact` dispatches on the *type* of `problem.structure`. A structure defines its
    loss (a `Problem` given a structure must use exactly that loss), so the closed form
    always solves the flow of the problem's own loss; a problem built from an arbitrary
    loss has no structure and is refused. `order = None` (exact), no gradient
    evaluations.

    **Arguments:**

    - `reduction`: `"gram"` (default) or `"qr"`, for least squares (see above).

    **Raises:** `ValueError` for an unknown `reduction`; from [`gdflow.split`][],
    `ValueError` for a problem without a closed-form structure.

    Reference: `../shared/sources/sgd-as-ode-splitting.md` (the QR-reduced local ODE,
    "integration: analytical").
    """

    order: ClassVar[None] = None
    evals_per_solve: ClassVar[int] = 0
    reduction: str = eqx.field(static=True, default="gram")

    def __check_init__(self):
        if self.reduction not in ("gram", "qr"):
            raise ValueError(
                "`reduction` must be 'gram' (eigendecomposition of the batch Gram matrix, "
                f"the default) or 'qr' (the text's QR reduction); got {self.reduction!r}."
            )

    def check(self, problem) -> None:
        if not isinstance(problem.structure, _CLOSED_FORMS):
            have = "no structure (an arbitrary loss)"
            if problem.structure is not None:
                have = f"structure {type(problem.structure).__name__}()"
            raise ValueError(
                "`local`=Exact() has a closed form only for least squares, quadratics and "
                f"the two-point problem (gf.problems.least_squares, quadratic, two_points); "
                f"problem {problem.name!r} has {have}. Use local=gf.LocalODE() (an "
                "accurate solve of the local flow) or local=gf.Euler() (SGD)."
            )
        if jnp.ndim(problem.params0) != 1:
            raise ValueError(
                "`local`=Exact() needs a parameter vector (p,); problem.params0 has shape "
                f"{jnp.shape(problem.params0)}."
            )

    def prepare(self, problem, batch):
        structure = problem.structure
        if isinstance(structure, LeastSquares) and self.reduction == "gram":
            X, y = batch["X"], batch["y"]
            lam, U = jnp.linalg.eigh(X @ X.T / X.shape[0])
            return {"X": X, "y": y, "U": U, "lam": lam}
        if isinstance(structure, LeastSquares):
            X, y = batch["X"], batch["y"]
            b = X.shape[0]
            Q, R = reduce_batch(X)
            lam, V = jnp.linalg.eigh(R @ R.T / b)
            return {"W": Q @ V, "lam": lam, "d": V.T @ (R @ y) / b}
        if isinstance(structure, Quadratic):
            H = jnp.mean(batch["H"], axis=0)
            g = jnp.mean(jnp.einsum("nij,nj->ni", batch["H"], batch["c"]), axis=0)
            lam, W = jnp.linalg.eigh((H + H.T) / 2)
            return {"W": W, "lam": lam, "d": W.T @ g}
        if isinstance(structure, TwoPoints):
            # A = I: no rotation needed.
            xbar = jnp.mean(batch["x"], axis=0)
            return {"W": None, "lam": jnp.ones_like(xbar), "d": xbar}
        raise AssertionError(structure)  # excluded by check()

    def solve(self, problem, factors, params, dt):
        del problem
        if "U" in factors:  # least squares, Gram form
            X, U, lam = factors["X"], factors["U"], factors["lam"]
            r = X @ params - factors["y"]
            c = U @ (phi(lam, dt) * (U.T @ r))
            return params - X.T @ c / X.shape[0], jnp.zeros((), jnp.int32)
        W, lam, d = factors["W"], factors["lam"], factors["d"]
        z = params if W is None else W.T @ params
        delta = phi(lam, dt) * (d - lam * z)
        new = params + (delta if W is None else W @ delta)
        return new, jnp.zeros((), jnp.int32)

    def count_evals(self, steps, solves):
        del steps, solves
        return 0
