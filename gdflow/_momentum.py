r"""The start-up layer of heavy-ball momentum, and where its flow starts.

Heavy ball from rest, as optax runs it (`optax.sgd(lr, momentum=beta)`: velocity
$v_0 = 0$, $v_{k+1} = \nabla L(\theta_k) + \beta v_k$,
$\theta_{k+1} = \theta_k - \mathrm{lr}\,v_{k+1}$), is exactly the two-step recurrence
$\theta_{k+1} = \theta_k - \mathrm{lr}\,\nabla L(\theta_k) + \beta(\theta_k - \theta_{k-1})$
with $\theta_{-1} = \theta_0$. A two-step recurrence has two modes per direction: the slow
one follows the modified flow $\dot\theta = -\nabla\tilde L/(1-\beta)$
([`gdflow.modified_field`][] with `momentum=beta`); the fast one decays like $\beta^k$.
Starting from rest excites the fast mode with an $O(\mathrm{lr})$ amplitude, and the
slow mode is *not* the flow through $\theta_0$: the iterates accelerate from rest, lag
behind that flow and never catch up. This module gives the two corrections that make the
flow an $O(\mathrm{lr}^2)$ model of every iterate, early ones included.

**Derivation** (matched layers). Over the $O(1)$ steps of the layer the gradient is
$g_0 = \nabla L(\theta_0) + O(\mathrm{lr})$. With a frozen gradient, heavy ball's step $k$
is $-\mathrm{lr}\,g_0(1-\beta^{k+1})/(1-\beta)$ against the terminal
$-\mathrm{lr}\,g_0/(1-\beta)$ the flow takes; the displacement lost, summed, is
$\mathrm{lr}\,g_0\sum_{k\ge0}\beta^{k+1}/(1-\beta) = \mathrm{lr}\,\beta g_0/(1-\beta)^2$.
For optax's Nesterov form ($\theta_{k+1} = \theta_k - \mathrm{lr}(g_k + \beta v_{k+1})$)
step $k$ is $-\mathrm{lr}\,g_0(1-\beta^{k+2})/(1-\beta)$ and the loss is
$\mathrm{lr}\,\beta^2 g_0/(1-\beta)^2$. Hence, with $\nu = 0$ (heavy ball) or $1$
(Nesterov),

$$
\theta_k = x(k\,\mathrm{lr}) \;-\; \mathrm{lr}\,\frac{\beta^{k+1+\nu}}{(1-\beta)^2}\,
    \nabla L(\theta_0) \;+\; O(\mathrm{lr}^2)\quad\text{uniformly in }k,
\qquad x(0) = \tilde\theta_0 = \theta_0 + \mathrm{lr}\,\frac{\beta^{1+\nu}}{(1-\beta)^2}
    \nabla L(\theta_0),
$$

with $x$ the order-1 modified flow (the order-0 limit flow gives $O(\mathrm{lr})$). The
layer term is $O(\mathrm{lr})$ at $k = 0$ (it makes the sum equal $\theta_0$ exactly) and
negligible after $k \gg 1/\log(1/\beta)$ steps; the shifted start $\tilde\theta_0$ is
what remains of it at late times (an $O(\mathrm{lr})$ error forever if ignored). Why the
remainders are $O(\mathrm{lr}^2)$: the gradient moves by $O(\mathrm{lr})$ during the
layer, which changes the $O(\mathrm{lr})$ amplitudes by $O(\mathrm{lr}^2)$, and the fast
root is $\beta + O(\mathrm{lr})$, so $\beta^k$ is off by
$O(k\,\mathrm{lr}\,\beta^k) = O(\mathrm{lr})$ relatively. The tests fit order 2 for the
maximum error over *all* steps $0..K$.

Cost: one gradient at $\theta_0$ for either function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._modified import _check_momentum
from ._validate import positive_finite

__all__ = ["momentum_layer", "momentum_start"]


def _amplitude(beta: float, nesterov: bool) -> float:
    return beta ** (2 if nesterov else 1) / (1.0 - beta) ** 2


def _check(loss, lr, momentum, nesterov):
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(params, *args); got {loss!r}.")
    return positive_finite("lr", lr), *_check_momentum(momentum, nesterov)


def momentum_start(loss: Callable[..., Any], params0, lr, *args, momentum, nesterov: bool = False):
    r"""Effective starting point of heavy ball's flow from rest.

    $$
    \tilde\theta_0 = \theta_0 + \mathrm{lr}\,\frac{\beta^{1+\nu}}{(1-\beta)^2}\,
        \nabla L(\theta_0),
    $$

    $\nu = 0$ for heavy ball, $1$ for Nesterov (derivation in the module docstring). The
    modified flow of [`gdflow.modified_field`][] (`momentum=beta`, order 1) started here
    tracks heavy ball from zero velocity to $O(\mathrm{lr}^2)$ once the start-up layer
    has decayed; add [`gdflow.momentum_layer`][] for the first steps too. At
    $\beta = 0$ it is $\theta_0$. Cost: one gradient.

    **Arguments:**

    - `loss`: `loss(params, *args) -> scalar`.
    - `params0`: the starting point $\theta_0$ (any pytree of floating arrays).
    - `lr`: the step size, finite and `> 0`.
    - `*args`: passed to `loss` (e.g. the full data).
    - `momentum`: $\beta \in [0, 1)$ (keyword).
    - `nesterov`: optax's Nesterov form.

    **Returns:** a pytree like `params0`.

    **Raises:** `ValueError` for a bad `lr` or `momentum`; `TypeError` if `loss` is not
    callable.

    ```python
    >>> float(gf.momentum_start(lambda th: 0.5 * th**2, 1.0, 0.1, momentum=0.5))
    1.2
    ```
    """
    lr, beta, nesterov = _check(loss, lr, momentum, nesterov)
    a = lr * _amplitude(beta, nesterov)
    g = jax.grad(loss)(params0, *args)
    return jax.tree_util.tree_map(lambda p, q: p + jnp.asarray(a, q.dtype) * q, params0, g)


def momentum_layer(
    loss: Callable[..., Any], params0, lr, ts, *args, momentum, nesterov: bool = False
):
    r"""Heavy ball's start-up layer at times `ts` (clock $t = k\,\mathrm{lr}$).

    $$
    \ell(t) = -\mathrm{lr}\,\frac{\beta^{t/\mathrm{lr} + 1 + \nu}}{(1-\beta)^2}\,
        \nabla L(\theta_0),
    $$

    so that heavy ball from rest is $\theta_k = x(k\,\mathrm{lr}) + \ell(k\,\mathrm{lr})
    + O(\mathrm{lr}^2)$ at *every* step, with $x$ the order-1 modified flow started at
    [`gdflow.momentum_start`][] (module docstring). Cost: one gradient.

    **Arguments:** as [`gdflow.momentum_start`][], plus `ts`, a 1-d array of times
    $\ge 0$.

    **Returns:** a pytree like `params0` with a leading axis of length `len(ts)` (add it
    to a flow's `traj.params` saved at `ts`).

    **Raises:** `ValueError` for a bad `lr`, `momentum` or `ts`.

    ```python
    >>> lay = gf.momentum_layer(lambda th: 0.5 * th**2, 1.0, 0.1, [0.0, 0.1], momentum=0.5)
    >>> [round(float(v), 6) for v in lay]
    [-0.2, -0.1]
    ```
    """
    lr, beta, nesterov = _check(loss, lr, momentum, nesterov)
    ts_np = np.asarray(ts, dtype=float)
    if ts_np.ndim != 1 or not np.all(np.isfinite(ts_np)) or np.any(ts_np < 0):
        raise ValueError(
            f"`ts` must be a 1-d array of finite times >= 0; got shape {ts_np.shape}."
        )
    g = jax.grad(loss)(params0, *args)
    nu = 1 if nesterov else 0
    # beta**(k + 1 + nu) with k = t / lr; at beta = 0 the layer is identically 0.
    decay = np.zeros_like(ts_np) if beta == 0.0 else beta ** (ts_np / lr + 1 + nu)
    w = -lr * decay / (1.0 - beta) ** 2

    def leaf(q):
        wq = jnp.asarray(w, dtype=q.dtype).reshape((-1,) + (1,) * jnp.ndim(q))
        return wq * q[None]

    return jax.tree_util.tree_map(leaf, g)
