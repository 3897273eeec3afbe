r"""Backward error analysis of gradient descent, heavy ball and minibatch SGD.

Gradient descent (GD) with step `lr` is explicit Euler on gradient flow (GF)
$\dot\theta = -\nabla L(\theta)$. It agrees with GF only to first order in `lr`, but it
agrees to higher order with the flow of a *modified* vector field
$f_{\mathrm{lr}} = f_0 + \mathrm{lr}\, f_1 + \mathrm{lr}^2 f_2 + \dots$, chosen so that
the flow of $f_{\mathrm{lr}}$ run for time `lr` reproduces one GD step. This module
evaluates the first three terms of that series matrix-free ([`gdflow.modified_field`][]),
the modified loss whose negative gradient is the first two ([`gdflow.modified_loss`][]),
the same two objects for heavy-ball momentum and Nesterov (`momentum=beta`; the start-up
layer is in `gdflow._momentum`), and the modified loss of minibatch SGD
([`gdflow.sgd_modified_loss`][]).

The returned callables are small equinox Modules that hold `lr` as an array leaf, so a
jitted solver ([`gdflow.gradient_flow`][]) traces it: sweeping the step size compiles
once. `momentum` is static (each value compiles once).

References: `../shared/sources/modified-loss.md` (the quadratic warm-up and "the general
case", which derives the first-order term). The second-order term (derived in
[`gdflow.modified_field`][]; Hairer, Lubich and Wanner, *Geometric Numerical
Integration*, ch. IX), the heavy-ball terms (derived there too) and the SGD modified loss
(Smith, Dherin, Barrett and De, "On the origin of implicit regularization in stochastic
gradient descent", ICLR 2021) go beyond that text.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._batching import AbstractBatching, Replacement
from ._problem import Problem
from ._validate import nonnegative_finite, positive_finite

PyTree = Any

__all__ = ["modified_field", "modified_loss", "sgd_modified_loss"]


# ---------------------------------------------------------------------------------------
# pytree helpers


def _sqnorm(tree) -> jax.Array:
    r"""$\sum_{\text{leaves}} \|x\|^2$ as a scalar."""
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def _combine(coefs, trees):
    r"""$\sum_i c_i\, t_i$ leafwise, for pytrees of one structure, in each leaf's dtype."""

    def leaf(*xs):
        return sum(jnp.asarray(c, dtype=x.dtype) * x for c, x in zip(coefs, xs, strict=True))

    return jax.tree_util.tree_map(leaf, *trees)


def _check_lr(lr) -> jax.Array:
    # A traced step size (jax.vmap over lr) cannot be inspected; accept it unchecked so
    # that modified flows can be batched over step sizes.
    if isinstance(lr, jax.core.Tracer):
        return lr
    # An array leaf, not a Python float: jitted runners then trace it, so a sweep over
    # step sizes compiles once instead of once per lr.
    return jnp.asarray(positive_finite("lr", lr))


def _check_order(order) -> int:
    ok = (
        isinstance(order, numbers.Integral | np.integer)
        and not isinstance(order, bool)
        and int(order) in (0, 1, 2)
    )
    if not ok:
        raise ValueError(
            "`order` must be 0, 1 or 2 (the number of correction terms of the modified "
            f"field; 0 is plain gradient flow), got {order!r}."
        )
    return int(order)


def _scalar(c, like):
    return jnp.asarray(c, dtype=jnp.result_type(like))


# ---------------------------------------------------------------------------------------
# GD


def _check_momentum(momentum, nesterov) -> tuple[float, bool]:
    if isinstance(momentum, jax.core.Tracer):
        raise TypeError(
            "`momentum` must be a concrete number in [0, 1) (it is a static "
            "hyperparameter: each value compiles once); got a traced value."
        )
    beta = nonnegative_finite("momentum", momentum)
    if beta >= 1:
        raise ValueError(
            f"`momentum` must be in [0, 1) (heavy ball diverges from its flow at beta >= 1); "
            f"got {momentum!r}."
        )
    if not isinstance(nesterov, bool | np.bool_):
        raise TypeError(f"`nesterov` must be True or False; got {nesterov!r}.")
    return beta, bool(nesterov)


def momentum_penalty(beta: float, nesterov: bool) -> float:
    r"""The coefficient $c(\beta)$ of $\mathrm{lr}\,\|\nabla L\|^2$ in the modified loss.

    $c = \frac{1+\beta}{4(1-\beta)^2}$ for heavy ball and
    $c = \frac{1-\beta+2\beta^2}{4(1-\beta)^2}$ for optax's Nesterov form (derivation in
    [`gdflow.modified_field`][]); both are $\tfrac14$ at $\beta = 0$.
    """
    if nesterov:
        return (1.0 - beta + 2.0 * beta * beta) / (4.0 * (1.0 - beta) ** 2)
    return (1.0 + beta) / (4.0 * (1.0 - beta) ** 2)


class ModifiedLoss(eqx.Module):
    r"""$L + \mathrm{lr}\,c(\beta)\|\nabla L\|^2$; built by [`gdflow.modified_loss`][]."""

    loss: Callable = eqx.field(static=True)
    lr: jax.Array
    momentum: float = eqx.field(static=True, default=0.0)
    nesterov: bool = eqx.field(static=True, default=False)

    # Hash by identity so that plain `jax.jit(f)` accepts it (a Module's default hash
    # hashes its fields, and the `lr` array is unhashable). Two equal but distinct
    # instances then hash differently: at worst a cache miss, never a wrong result.
    __hash__ = object.__hash__

    def __call__(self, params, *args) -> jax.Array:
        value, g = jax.value_and_grad(self.loss)(params, *args)
        if self.momentum == 0.0:
            # GD (and Nesterov at beta = 0, which is GD): the original expression, so
            # that momentum=0 reproduces the GD modified loss bit for bit.
            return value + _scalar(self.lr / 4, value) * _sqnorm(g)
        c = momentum_penalty(self.momentum, self.nesterov)
        return value + _scalar(self.lr * c, value) * _sqnorm(g)


class ModifiedField(eqx.Module):
    r"""The truncated backward-error field of GD or heavy ball; built by
    [`gdflow.modified_field`][]."""

    loss: Callable = eqx.field(static=True)
    lr: jax.Array
    order: int = eqx.field(static=True)
    momentum: float = eqx.field(static=True, default=0.0)
    nesterov: bool = eqx.field(static=True, default=False)

    # Hash by identity so that plain `jax.jit(f)` accepts it (a Module's default hash
    # hashes its fields, and the `lr` array is unhashable).
    __hash__ = object.__hash__

    def __call__(self, params, *args):
        def grad(p):
            return jax.grad(self.loss)(p, *args)

        beta = self.momentum
        if beta != 0.0:
            # Heavy ball / Nesterov: -(g + 2 c lr H g) / (1 - beta), orders 0 and 1.
            s = 1.0 / (1.0 - beta)
            if self.order == 0:
                return jax.tree_util.tree_map(lambda x: -s * x, grad(params))
            g, hvp = jax.linearize(grad, params)
            c2 = 2.0 * momentum_penalty(beta, self.nesterov)
            return _combine((-s, -s * c2 * self.lr), (g, hvp(g)))

        if self.order == 0:
            return jax.tree_util.tree_map(jnp.negative, grad(params))
        lr = self.lr
        # One linearisation of the gradient serves both Hessian-vector products.
        g, hvp = jax.linearize(grad, params)
        hg = hvp(g)
        if self.order == 1:
            return _combine((-1.0, -lr / 2), (g, hg))
        hhg = hvp(hg)

        # T[g, g] = d/de H(p + e g) g: a forward derivative of the HVP, direction g fixed.
        def hvp_along_g(p):
            return jax.jvp(grad, (p,), (g,))[1]

        tgg = jax.jvp(hvp_along_g, (params,), (g,))[1]
        c2 = lr * lr
        return _combine((-1.0, -lr / 2, -c2 / 12, -c2 / 3), (g, hg, tgg, hhg))


def modified_loss(
    loss: Callable[..., Any], lr, *, momentum=0.0, nesterov: bool = False
) -> ModifiedLoss:
    r"""First-order modified loss of gradient descent, or of heavy-ball momentum.

    $$
    \tilde L(\theta) = L(\theta) + \mathrm{lr}\;c(\beta)\,\|\nabla L(\theta)\|^2, \qquad
    c(\beta) = \frac{1+\beta}{4(1-\beta)^2}\quad(\text{heavy ball}),\qquad
    c(\beta) = \frac{1-\beta+2\beta^2}{4(1-\beta)^2}\quad(\text{Nesterov}),
    $$

    with $\beta$ = `momentum`. At $\beta = 0$ this is GD's
    $L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2$ (`../shared/sources/modified-loss.md`):
    gradient flow on it, run for time `lr` from $\theta_0$, lands on the GD step
    $\theta_0 - \mathrm{lr}\,\nabla L(\theta_0)$ up to $O(\mathrm{lr}^3)$, and over a fixed
    horizon ($t = k\,\mathrm{lr}$) GD stays within $O(\mathrm{lr}^2)$ of that flow, against
    $O(\mathrm{lr})$ of gradient flow.

    For $\beta > 0$ heavy ball (`optax.sgd(lr, momentum=beta)`) follows
    $\dot\theta = -\nabla\tilde L/(1-\beta)$ on the clock $t = k\,\mathrm{lr}$, to
    $O(\mathrm{lr}^2)$ over a fixed horizon *after its start-up layer* (derivation and the
    layer in [`gdflow.modified_field`][] and [`gdflow.momentum_start`][]). Note the
    factor $1/(1-\beta)$: the flow is gradient flow on $\tilde L/(1-\beta)$, i.e. on
    $\tilde L$ with time stretched by $1/(1-\beta)$.

    There is no second-order modified *loss*: the $\mathrm{lr}^2$ term of GD's modified
    field is not a gradient in general (see [`gdflow.modified_field`][]).

    Cost: one value-and-gradient of `loss`; its gradient (double backprop) costs about
    one Hessian-vector product more.

    **Arguments:**

    - `loss`: `loss(params, *args) -> scalar`, twice differentiable in `params` (any
      pytree of floating arrays). The other arguments (data, a batch) are passed through
      and not differentiated.
    - `lr`: the step size, finite and `> 0`.
    - `momentum`: $\beta \in [0, 1)$ (default 0: GD, reproducing the GD modified loss
      exactly). Static: each value compiles once.
    - `nesterov`: use the coefficient of optax's Nesterov form
      (`optax.sgd(lr, momentum=beta, nesterov=True)`).

    **Returns:** a callable `modified(params, *args) -> scalar` with the signature of
    `loss` (an equinox Module holding `lr` as an array).

    **Raises:** `ValueError` if `lr` is not a finite number `> 0` or `momentum` is not in
    $[0, 1)$; `TypeError` if `loss` is not callable.

    ```python
    >>> Lm = gf.modified_loss(lambda th: 0.5 * th**2, lr=0.5)  # the text's bowl
    >>> round(float(Lm(1.2)), 6)  # 0.5 * (1 + 0.5 / 2) * 1.2**2
    0.9
    >>> Lh = gf.modified_loss(lambda th: 0.5 * th**2, lr=0.1, momentum=0.5)
    >>> round(float(Lh(1.0)), 6)  # 0.5 + 0.1 * 1.5 / (4 * 0.25) * 1.0
    0.65
    ```

    References: `../shared/sources/modified-loss.md` ("The general case") for GD; for
    heavy ball the derivation in [`gdflow.modified_field`][], checked by fitted orders in
    the tests (Kovachki and Stuart, "Continuous time analysis of momentum methods", JMLR
    2021, study such modified equations; the coefficient here was derived, not copied).
    """
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(params, *args); got {loss!r}.")
    beta, nesterov = _check_momentum(momentum, nesterov)
    return ModifiedLoss(loss, _check_lr(lr), beta, nesterov)


def modified_field(
    loss: Callable[..., Any], lr, order: int, *, momentum=0.0, nesterov: bool = False
) -> ModifiedField:
    r"""Backward-error (modified) vector field of GD or heavy ball, truncated at `order`.

    **Gradient descent** ($\beta = 0$). With $g = \nabla L$, $H = \nabla^2 L$ and
    $T = \nabla^3 L$ at $\theta$,

    $$
    f(\theta) = -g \;-\; \frac{\mathrm{lr}}{2}\, H g
        \;-\; \mathrm{lr}^2\Big(\frac{1}{12}\, T[g, g] + \frac{1}{3}\, H^2 g\Big),
    $$

    keeping one term for `order=0` (gradient flow), two for `order=1` (the negative
    gradient of [`gdflow.modified_loss`][]) and all three for `order=2`.

    **Heavy ball** ($\beta$ = `momentum` $> 0$), the iteration
    $\theta_{k+1} = \theta_k - \mathrm{lr}\,\nabla L(\theta_k) + \beta(\theta_k -
    \theta_{k-1})$ on the clock $t = k\,\mathrm{lr}$ (this is exactly
    `optax.sgd(lr, momentum=beta)` from its zero initial velocity: optax keeps
    $v_{k+1} = g_k + \beta v_k$, $\theta_{k+1} = \theta_k - \mathrm{lr}\,v_{k+1}$, so
    $\theta_{k+1} - \theta_k = -\mathrm{lr}\,g_k + \beta(\theta_k - \theta_{k-1})$ with
    $\theta_{-1} = \theta_0$; the tests check it against the closed form): orders 0
    and 1,

    $$
    f(\theta) = -\frac{1}{1-\beta}\Big(g + \mathrm{lr}\,\frac{1+\beta}{2(1-\beta)^2}\,Hg\Big)
    = -\frac{\nabla\tilde L}{1-\beta},\qquad
    \tilde L = L + \mathrm{lr}\frac{1+\beta}{4(1-\beta)^2}\|\nabla L\|^2 .
    $$

    *Derivation.* Seek a smooth curve $x(t)$ with $\theta_k = x(k\,\mathrm{lr})$ and
    $\dot x = f_0 + \mathrm{lr} f_1$. Taylor-expanding $x(t \pm \mathrm{lr})$, the
    recurrence $\theta_{k+1} - (1+\beta)\theta_k + \beta\theta_{k-1} = -\mathrm{lr}\,g$
    reads $(1-\beta)\dot x + \frac{(1+\beta)\mathrm{lr}}{2}\ddot x = -g + O(\mathrm{lr}^2)$.
    Order $\mathrm{lr}^0$: $f_0 = -g/(1-\beta)$. Order $\mathrm{lr}^1$, with
    $\ddot x = Hg/(1-\beta)^2 + O(\mathrm{lr})$: $f_1 = -\frac{1+\beta}{2(1-\beta)^3}Hg$.
    Nesterov (`nesterov=True`, optax's form: $v_{k+1} = g_k + \beta v_k$,
    $\theta_{k+1} = \theta_k - \mathrm{lr}(g_k + \beta v_{k+1})$, gradient at the
    iterate) satisfies $\theta_{k+1} - (1+\beta)\theta_k + \beta\theta_{k-1} =
    -\mathrm{lr}(1+\beta)g_k + \mathrm{lr}\,\beta g_{k-1}$; since
    $g_{k-1} = g - \mathrm{lr}\,H\dot x + O(\mathrm{lr}^2)$ the same steps give
    $f_1 = -\frac{1-\beta+2\beta^2}{2(1-\beta)^3}Hg$ (the loss coefficient
    $\frac{1-\beta+2\beta^2}{4(1-\beta)^2}$). These are outer solutions: from zero initial
    velocity the iterates also carry a start-up layer $\propto\beta^k$ that shifts the
    path by $O(\mathrm{lr})$; start the flow at [`gdflow.momentum_start`][] and add
    [`gdflow.momentum_layer`][] for an $O(\mathrm{lr}^2)$ approximation at every step.

    **Accuracy.** GD: the flow of $f$ run for time `lr` agrees with one GD step up to
    $O(\mathrm{lr}^{\mathrm{order}+2})$, so over a fixed horizon GD stays within
    $O(\mathrm{lr}^{\mathrm{order}+1})$ of it. Heavy ball: global error
    $O(\mathrm{lr}^{\mathrm{order}+1})$ over a fixed horizon, with the start-up treatment
    above (without it, $O(\mathrm{lr})$ for either order). Both while
    $\mathrm{lr}\,\|H\|$ is well below the stability limit.

    **GD derivation** (backward error analysis, Hairer-Lubich-Wanner IX.1). Write
    $f = f_0 + \mathrm{lr} f_1 + \mathrm{lr}^2 f_2$, expand the exact flow
    $\theta(\mathrm{lr}) = \theta_0 + \mathrm{lr} f + \tfrac{\mathrm{lr}^2}{2} f'f
    + \tfrac{\mathrm{lr}^3}{6}(f''[f,f] + f'f'f) + O(\mathrm{lr}^4)$ and match powers of
    `lr` with $\theta_0 - \mathrm{lr}\,g$: $f_0 = -g$; $f_1 = -\tfrac12 f_0'f_0 =
    -\tfrac12 Hg$ (the text's result); $f_2 = -\tfrac12(f_0'f_1 + f_1'f_0) -
    \tfrac16(f_0''[f_0,f_0] + f_0'f_0'f_0) = -\tfrac1{12}T[g,g] - \tfrac13 H^2 g$, using
    $f_1'v = -\tfrac12(T[v,g] + H^2 v)$.

    **The order-2 field is not a gradient in general**, so there is no "second-order
    modified loss": the Jacobian of $\tfrac1{12}T[g,g] + \tfrac13H^2g$ is not symmetric
    for a generic $L$. On a quadratic $L = \tfrac12(\theta-c)^\top H(\theta-c)$ it is, and
    $f = -(H + \tfrac{\mathrm{lr}}{2}H^2 + \tfrac{\mathrm{lr}^2}{3}H^3)(\theta - c)$, the
    first terms of $\log(I - \mathrm{lr}H)(\theta-c)/\mathrm{lr}$.

    **Cost, matrix-free** (no Hessian is formed): order 0, one gradient; order 1, one
    `jax.linearize` of the gradient and one Hessian-vector product (HVP); order 2, a
    second HVP and $T[g,g] = \tfrac{d}{d\epsilon} H(\theta + \epsilon g)\, g$, one forward
    derivative of an HVP with $g$ held fixed.

    **Arguments:**

    - `loss`: `loss(params, *args) -> scalar`, three times differentiable in `params`
      (any pytree of floating arrays); the other arguments are passed through.
    - `lr`: the step size, finite and `> 0` (a traced value, e.g. under `jax.vmap` over
      step sizes, is accepted unchecked).
    - `order`: `0`, `1` or `2` (`2` only for $\beta = 0$).
    - `momentum`: $\beta \in [0, 1)$, default 0 (GD, exactly as before). Static.
    - `nesterov`: the field of optax's Nesterov form instead of heavy ball.

    **Returns:** a callable `field(params, *args)` returning a pytree shaped like
    `params` (an equinox Module holding `lr` as an array, so that
    [`gdflow.gradient_flow`][] compiles once for a sweep over `lr`).

    **Raises:** `ValueError` if `order` is not 0, 1 or 2, if `order=2` with
    `momentum > 0` (not derived), if `lr` is not a finite number `> 0` or `momentum` not
    in $[0, 1)$.

    ```python
    >>> f = gf.modified_field(lambda th: 0.5 * th**2, 0.1, 1, momentum=0.5)
    >>> round(float(f(1.0)), 6)  # -(1 + 0.1 * 1.5 / (2 * 0.25)) / 0.5
    -2.6
    ```

    Reference: `../shared/sources/modified-loss.md` (GD orders 0 and 1; the rest is
    derived above and checked by fitted orders in the tests).
    """
    order = _check_order(order)
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(params, *args); got {loss!r}.")
    beta, nesterov = _check_momentum(momentum, nesterov)
    if beta != 0.0 and order == 2:
        raise ValueError(
            "`order=2` is derived for gradient descent only (momentum=0); with "
            f"momentum={beta} use order 0 or 1."
        )
    return ModifiedField(loss, _check_lr(lr), order, beta, nesterov)


# ---------------------------------------------------------------------------------------
# SGD


class SGDModifiedLoss(eqx.Module):
    r"""SGD's modified loss; built by [`gdflow.sgd_modified_loss`][]."""

    loss: Callable = eqx.field(static=True)
    lr: jax.Array
    batches: jax.Array  # (m, b) int: row j = example indices of batch j
    expected: bool = eqx.field(static=True)

    # Hash by identity so that plain `jax.jit(f)` accepts it (a Module's default hash
    # hashes its fields, and the `lr` array is unhashable).
    __hash__ = object.__hash__

    def __call__(self, params, data) -> jax.Array:
        loss = self.loss
        m, b = self.batches.shape
        if self.expected:
            # E over uniformly random partitions: |grad L|^2 + (n-b)/(b(n-1)) * Gamma.
            n = m * b
            value, g = jax.value_and_grad(loss)(params, data)

            def sqdev(row):
                one = jax.tree_util.tree_map(lambda x: x[None], row)
                return _sqnorm(_combine((1.0, -1.0), (jax.grad(loss)(params, one), g)))

            gamma = jnp.mean(jax.vmap(sqdev)(data))
            scale = (n - b) / (b * (n - 1)) if n > 1 else 0.0
            penalty = _sqnorm(g) + scale * gamma
        else:

            def batch_sqnorm(rows):
                batch = jax.tree_util.tree_map(lambda x: x[rows], data)
                return _sqnorm(jax.grad(loss)(params, batch))

            value = loss(params, data)
            penalty = jnp.mean(jax.vmap(batch_sqnorm)(self.batches))
        return value + _scalar(self.lr / 4, value) * penalty


def sgd_modified_loss(
    problem: Problem, lr, batching: AbstractBatching, *, expected: bool = False
) -> SGDModifiedLoss:
    r"""Modified loss of one epoch of minibatch SGD (Smith, Dherin, Barrett, De 2021).

    With the epoch's $m$ batches of equal size $b$ (so
    $L = \frac1m\sum_j L_j$, $L_j$ the mean loss over batch $j$),

    $$
    L_{\mathrm{SGD}}(\theta) = L(\theta)
        + \frac{\mathrm{lr}}{4m} \sum_{j=1}^{m} \|\nabla L_j(\theta)\|^2
    = L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2
        + \frac{\mathrm{lr}}{4m}\sum_j \|\nabla L_j - \nabla L\|^2 .
    $$

    **Claim** (Smith et al. 2021, Sec. 2). Averaged over the *order* in which the
    $m$ batches are visited, one epoch of SGD with step `lr` (time
    $m\,\mathrm{lr}$ in gdflow's clock) lands on the gradient flow of
    $L_{\mathrm{SGD}}$ run for time $m\,\mathrm{lr}$ up to
    $O(m^3\mathrm{lr}^3)$. Why: an epoch in a fixed order is
    $\theta_0 - \mathrm{lr}\sum_j g_j + \mathrm{lr}^2\sum_{i<j} H_j g_i
    + O(\mathrm{lr}^3)$ ($g_j, H_j$ batch $j$'s gradient and Hessian at
    $\theta_0$), and the flow of $-\nabla L - \mathrm{lr}\,c$ for time
    $m\,\mathrm{lr}$ is $\theta_0 - m\mathrm{lr}\,g - m\mathrm{lr}^2 c
    + \tfrac{m^2\mathrm{lr}^2}{2}Hg + O(\mathrm{lr}^3)$. Matching gives
    $c = \frac{1}{2m}\sum_j H_j g_j + \frac{1}{2m}\sum_{i<j}(H_i g_j - H_j g_i)$:
    the first part is $\nabla\frac{1}{4m}\sum_j\|g_j\|^2$, the second is
    antisymmetric in the order and vanishes on average over orders.

    **Assumptions** (the claim holds only under them):

    - `problem.loss(params, batch)` is the *mean* of per-example losses over the batch
      (gdflow's convention) and the epoch's batches all have size $b$ and cover the
      data, so that $L$ is the mean of the batch losses: $b$ must divide
      `problem.n`.
    - The partition is `batching.epoch(problem.n, 0)` (epoch 0). For `RoundRobin`
      it is the partition SGD uses in every epoch, but in a *fixed* order the
      antisymmetric term above does not average out: the modified loss then describes
      the order-averaged epoch, and one epoch in the fixed order deviates from its flow by
      $O(m^2\mathrm{lr}^2)$. For `Reshuffle` the target is the expectation over
      random orders *and* random partitions, and the partition of epoch 0 is one sample
      of it; `expected=True` gives that expectation in closed form.
    - `lr` is small on the scale of the curvature and of an epoch:
      $m\,\mathrm{lr}\,\|H\| \ll 1$ (the expansion is in the epoch length
      $m\,\mathrm{lr}$).
    - `FullBatch()` gives $m = 1$, i.e. [`gdflow.modified_loss`][] of the full loss.

    With `expected=True` the batch term is replaced by its expectation over uniformly
    random partitions into batches of size $b$ (what `Reshuffle` draws each
    epoch; each batch is then a uniform $b$-subset drawn without replacement):

    $$
    \mathbb{E}\,\frac1m\sum_j\|\nabla L_j\|^2 = \|\nabla L\|^2
        + \frac{n-b}{b(n-1)}\,\Gamma, \qquad
    \Gamma = \frac1n\sum_{i=1}^n \|\nabla\ell_i - \nabla L\|^2,
    $$

    with $\ell_i$ the loss of example $i$ (Smith et al. 2021, Sec. 2). This
    costs $n$ per-example gradients (vectorised: memory $n\times$ the
    parameter count).

    Cost (default): one full gradient and $m$ batch gradients ($\approx$ two
    full gradients' worth); its gradient (double backprop) about as much again.

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][] (its `loss` and `n` are used).
    - `lr`: the SGD step size, finite and `> 0`.
    - `batching`: `FullBatch()`, `RoundRobin(b)` or `Reshuffle(b, key)`.
    - `expected`: use the expectation over random partitions (see above).

    **Returns:** a callable `f(params, data) -> scalar` with the signature of
    `problem.loss` applied to the full data (an equinox Module holding `lr` and the
    `(m, b)` index table as arrays). Use it as
    `gf.gradient_flow(problem, t1, field=lambda p, d: jax.tree.map(jnp.negative,
    jax.grad(f)(p, d)))`, or as the loss of `gf.Problem(f, problem.data,
    problem.params0)` for full-batch methods (it gathers the batches from the *full*
    `data` by index, so never hand it a minibatch).

    **Raises:** `ValueError` for a bad `lr`, for `Replacement` batching (its
    epochs do not partition the data), or for a batch size that does not divide
    `problem.n` (including `drop_remainder=True` with a remainder).

    ```python
    >>> problem = gf.problems.random_least_squares(64, 5, noise=0.1, key=jax.random.key(0))
    >>> f = gf.sgd_modified_loss(problem, lr=0.01, batching=gf.RoundRobin(8))
    >>> bool(f(problem.params0, problem.data) > problem.full_loss(problem.params0))
    True
    ```

    Reference: Smith, Dherin, Barrett, De, "On the origin of implicit regularization in
    stochastic gradient descent", ICLR 2021, Sec. 2.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a gdflow.Problem; got {type(problem).__name__}.")
    lr = _check_lr(lr)
    n = int(problem.n)
    _check_partition(batching, n)
    batches = jnp.asarray(batching.epoch(n, 0))
    return SGDModifiedLoss(problem.loss, lr, batches, bool(expected))


def _check_partition(batching, n: int) -> None:
    if isinstance(batching, Replacement):
        raise ValueError(
            "`batching` must partition the data in every epoch (FullBatch(), RoundRobin(b) "
            "or Reshuffle(b, key)): the SGD modified loss is derived for sampling without "
            "replacement; got Replacement."
        )
    if not isinstance(batching, AbstractBatching):
        raise TypeError(
            "`batching` must be FullBatch(), RoundRobin(b) or Reshuffle(b, key); "
            f"got {batching!r}."
        )
    batching.check(n)
    b = int(batching.batch_size(n))
    if n % b:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        near = sorted(sorted(divisors, key=lambda d: abs(d - b))[:3])
        raise ValueError(
            f"`batching` has batch size {b}, which does not divide n={n}: the SGD modified "
            "loss needs equal batches that cover the data. Choose a batch size dividing "
            f"n (near {b}: {', '.join(map(str, near))})."
        )
