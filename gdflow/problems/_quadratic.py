"""Quadratic bowls and the minibatch text's two-point problem: flows known in closed form."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._problem import Problem
from .._structure import Quadratic, TwoPoints
from .._validate import checked_array


def _square(name, H):
    # Finite first: a NaN fails the symmetry test below, whose advice would mislead.
    H = checked_array(name, H)
    if H.ndim == 0:
        H = H.reshape(1, 1)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or H.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a square matrix (d, d) with d >= 1; got shape {H.shape}."
        )
    if not jnp.issubdtype(H.dtype, jnp.floating):
        H = H.astype(float)
    if not np.allclose(np.asarray(H), np.asarray(H).T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"`{name}` must be symmetric; pass (H + H.T) / 2.")
    return H


def _vector(name, x, dtype):
    """A real, finite vector (any array of d entries is raveled, as before)."""
    return checked_array(name, x).astype(dtype).reshape(-1)


def quadratic(H, center=None, params0=None, *, name: str = "quadratic") -> Problem:
    r"""The bowl $L(\theta) = \tfrac12(\theta - c)^\top H (\theta - c)$.

    Gradient descent and gradient flow are known exactly here, which makes it the first
    oracle of every test: $\theta_k - c = (I - \eta H)^k(\theta_0 - c)$ and
    $\theta(t) - c = e^{-tH}(\theta_0 - c)$.

    **Arguments:**

    - `H`: symmetric `(d, d)` matrix (a scalar gives the text's 1-d bowl
      $\tfrac{\lambda}{2}\theta^2$).
    - `center`: the minimiser `c` (default zero).
    - `params0`: the start (default ones).

    The data is one "example" holding `H` and `c` (`n = 1`), so the matrix is a
    traced argument of jitted runs rather than a compile-time constant.

    **Raises:** `TypeError` for non-numeric or complex input; `ValueError` for NaN or
    infinite entries (checked before symmetry, naming the argument), a non-square or
    empty `H`, an asymmetric `H`, or shapes of `center`/`params0` that differ.
    """
    H = _square("H", H)
    d = H.shape[0]
    c = jnp.zeros(d, H.dtype) if center is None else _vector("center", center, H.dtype)
    if c.shape != (d,):
        raise ValueError(f"`center` must have shape ({d},) to match H; got {c.shape}.")
    p0 = jnp.ones(d, H.dtype) if params0 is None else _vector("params0", params0, H.dtype)
    if p0.shape != (d,):
        raise ValueError(f"`params0` must have shape ({d},) to match H; got {p0.shape}.")
    return Problem(
        Quadratic.loss, {"H": H[None], "c": c[None]}, p0, name=name, structure=Quadratic()
    )


def two_points(a, b, params0, *, name: str = "two_points") -> Problem:
    r"""Two examples `a`, `b` with per-example loss $\tfrac12|x - \theta|^2$.

    The minibatch-flow text's problem: full-batch GF runs straight to
    $(a+b)/2$; round-robin batches of one example switch between flows towards
    `a` and towards `b`.
    """
    a = jnp.atleast_1d(checked_array("a", a))
    dtype = jnp.result_type(a, float)
    a = a.astype(dtype)
    b = jnp.atleast_1d(checked_array("b", b)).astype(dtype)
    p0 = jnp.atleast_1d(checked_array("params0", params0)).astype(dtype)
    if a.ndim != 1 or a.shape != b.shape or a.shape != p0.shape:
        raise ValueError(
            f"`a`, `b` and `params0` must be vectors of one length; got shapes {a.shape}, "
            f"{b.shape}, {p0.shape}."
        )
    return Problem(TwoPoints.loss, {"x": jnp.stack([a, b])}, p0, name=name, structure=TwoPoints())
