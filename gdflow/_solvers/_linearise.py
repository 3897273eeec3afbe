"""The start of a matrix-free linearly implicit step, shared by the Krylov solvers."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


class Linearised(NamedTuple):
    """The field at the start of a step, on raveled parameters, and its linearisation.

    `x0`, `unravel`, `dtype`, `h` (the step, in the state's dtype), `f0` (the field, as a
    pytree), `F0` (raveled), `F` (the raveled field), `jvp` ($v \\mapsto Jv$,
    forward-over-reverse through the field, linearised once) and `evals` (the solver's
    evaluation count, with the re-evaluation after a jump added).
    """

    x0: jax.Array
    unravel: object
    dtype: object
    h: jax.Array
    f0: object
    F0: jax.Array
    F: object
    jvp: object
    evals: jax.Array


def linearise(terms, t0, t1, y0, args, solver_state, made_jump) -> Linearised:
    """The field at `(t0, y0)` (re-evaluated after a jump, else the state's FSAL value
    `solver_state.f0`) and $v \\mapsto J(t_0, y_0)\\,v$; `solver_state.evals` counts it."""
    x0, unravel = ravel_pytree(y0)
    dtype = x0.dtype
    h = jnp.asarray(t1 - t0, dtype)
    f0 = solver_state.f0
    evals = solver_state.evals
    if made_jump is not False:
        f0 = jax.lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: solver_state.f0)
        evals = evals + jnp.where(made_jump, 1, 0).astype(jnp.int32)

    def F(x):
        return ravel_pytree(terms.vf(t0, unravel(x), args))[0]

    _, jvp = jax.linearize(F, x0)
    return Linearised(x0, unravel, dtype, h, f0, ravel_pytree(f0)[0], F, jvp, evals)
