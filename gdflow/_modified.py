r"""Backward error analysis of gradient descent and minibatch SGD.

Gradient descent (GD) with step ``lr`` is explicit Euler on gradient flow (GF)
$\dot\theta = -\nabla L(\theta)$. It is *not* close to GF beyond first order, but it is
close, to any order, to the flow of a *modified* vector field
$f_{\mathrm{lr}} = -\nabla L + \mathrm{lr}\, f_1 + \mathrm{lr}^2 f_2 + \dots$ chosen so that
the flow of $f_{\mathrm{lr}}$ for time ``lr`` reproduces one GD step. This module computes
the first three terms of that series matrix-free, the modified loss whose gradient gives
the first two, and the modified loss of minibatch SGD.

Reference: ``../shared/sources/modified-loss.md`` (the quadratic warm-up and "the general
case", which derives the first-order term); the second-order term and the SGD modified loss
go beyond that text and are derived in the docstrings below (Hairer, Lubich and Wanner,
*Geometric Numerical Integration*, IX.1; Smith, Dherin, Barrett and De, "On the origin of
implicit regularization in stochastic gradient descent", ICLR 2021).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._batching import AbstractBatching, Replacement
from ._validate import positive_finite

__all__ = ["modified_field", "modified_loss", "sgd_modified_loss"]


# ---------------------------------------------------------------------------------------
# small pytree helpers (kept private: the public face is the three functions below)


def _sqnorm(tree) -> jax.Array:
    """$\\sum_{\\text{leaves}} |x|^2$ as a scalar."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(jnp.sum(jnp.square(x)) for x in leaves)


def _combine(coefs, trees):
    """$\\sum_i c_i\\, t_i$ leafwise for pytrees of one structure."""
    return jax.tree_util.tree_map(lambda *xs: sum(c * x for c, x in zip(coefs, xs)), *trees)


def _check_lr(lr):
    # A traced step size (jax.vmap or jax.grad over lr) cannot be inspected; accept it as is
    # so that modified flows can be batched over step sizes.
    if isinstance(lr, jax.core.Tracer):
        return lr
    return positive_finite("lr", lr)


def _check_order(order) -> int:
    ok = (
        isinstance(order, numbers.Integral | np.integer)
        and not isinstance(order, bool)
        and int(order) in (0, 1, 2)
    )
    if not ok:
        raise ValueError(
            f"`order` must be 0, 1 or 2 (the number of correction terms of the modified "
            f"field; 0 is plain gradient flow), got {order!r}."
        )
    return int(order)


# ---------------------------------------------------------------------------------------
# GD


def modified_loss(loss: Callable[..., Any], lr) -> Callable[..., jax.Array]:
    r"""First-order modified loss of gradient descent.

    $$
    L_{\mathrm{lr}}(\theta) = L(\theta) + \frac{\mathrm{lr}}{4}\,\|\nabla L(\theta)\|^2 ,
    $$

    the loss whose gradient flow, run for time ``lr`` from $\theta_0$, lands on the GD step
    $\theta_0 - \mathrm{lr}\,\nabla L(\theta_0)$ up to $O(\mathrm{lr}^3)$ (gradient flow on
    $L$ itself is off by $\tfrac{\mathrm{lr}^2}{2} H\nabla L$). Its negative gradient
    $-\nabla L - \tfrac{\mathrm{lr}}{2} H \nabla L$ is ``modified_field(loss, lr, 1)``.
    Over $k$ steps (time $t = k\,\mathrm{lr}$) the gap is $O(\mathrm{lr}^2)$ instead of
    GF's $O(\mathrm{lr})$.

    There is no second-order modified *loss*: the $\mathrm{lr}^2$ term of the modified
    field is not a gradient in general (see [`gdflow.modified_field`][]).

    Cost: one gradient of ``loss`` (value and gradient); differentiating the returned
    function costs one more reverse pass through that gradient (double backprop), i.e. one
    Hessian-vector product.

    **Arguments:**

    - `loss`: `loss(params, *args) -> scalar`, differentiable twice in `params` (any
      pytree of float arrays). The extra arguments (data, a batch, ...) are passed
      through and not differentiated.
    - `lr`: the GD step size, finite and `> 0`.

    **Returns:**

    A function `modified(params, *args) -> scalar` with the signature of `loss`.

    **Raises:**

    `ValueError` if `lr` is not a finite positive number.

    **Example:**

    ```python
    L = lambda th: 0.5 * th**2  # lambda = 1
    Lm = gf.modified_loss(L, lr=0.5)
    Lm(1.2)  # 0.5 * (1 + 0.5 / 2) * 1.2**2 = 0.9, the text's steeper bowl
    ```

    Reference: ``../shared/sources/modified-loss.md`` ("The general case").
    """
    lr = _check_lr(lr)
    value_and_grad = jax.value_and_grad(loss)

    @functools.wraps(loss)
    def modified(params, *args):
        value, g = value_and_grad(params, *args)
        return value + (lr / 4) * _sqnorm(g)

    return modified


def modified_field(loss: Callable[..., Any], lr, order: int) -> Callable[..., Any]:
    r"""Backward-error (modified) vector field of gradient descent, truncated at `order`.

    With $g = \nabla L$, $H = \nabla^2 L$ and $T = \nabla^3 L$ at $\theta$,

    $$
    f(\theta) = -g
      \;-\; \frac{\mathrm{lr}}{2}\, H g
      \;-\; \mathrm{lr}^2\Big(\frac{1}{12}\, T[g, g] + \frac{1}{3}\, H^2 g\Big),
    $$

    keeping one term for `order=0` (gradient flow), two for `order=1` (the negative
    gradient of [`gdflow.modified_loss`][]) and all three for `order=2`.

    The flow of $f$ run for time `lr` from $\theta_0$ agrees with one GD step
    $\theta_0 - \mathrm{lr}\, g$ up to a local error $O(\mathrm{lr}^{\,\mathrm{order}+2})$,
    so over a fixed time horizon GD stays within $O(\mathrm{lr}^{\,\mathrm{order}+1})$ of
    the modified flow. Derivation (Hairer-Lubich-Wanner IX.1): write
    $f = f_0 + \mathrm{lr} f_1 + \mathrm{lr}^2 f_2$, expand the exact flow
    $\theta(\mathrm{lr}) = \theta_0 + \mathrm{lr} f + \tfrac{\mathrm{lr}^2}{2} f'f
    + \tfrac{\mathrm{lr}^3}{6}(f''[f,f] + f'f'f) + O(\mathrm{lr}^4)$ and match powers of
    `lr` with $\theta_0 - \mathrm{lr}\,g$: order 1 gives $f_0 = -g$; order 2 gives
    $f_1 = -\tfrac12 f_0' f_0 = -\tfrac12 Hg$; order 3 gives
    $f_2 = -\tfrac12(f_0'f_1 + f_1'f_0) - \tfrac16(f_0''[f_0,f_0] + f_0'f_0'f_0)
    = -\tfrac12(H^2g + \tfrac12 T[g,g]) + \tfrac16(T[g,g] + H^2 g)
    = -\tfrac1{12}T[g,g] - \tfrac13 H^2 g$.

    **The order-2 field is not a gradient in general**, so there is no "second-order
    modified loss": the Jacobian of $T[g,g]/12 + H^2g/3$ is not symmetric for a generic
    $L$. On a quadratic $L = \tfrac12(\theta-c)^\top H(\theta-c)$ it is, and
    $f = -(H + \tfrac{\mathrm{lr}}{2}H^2 + \tfrac{\mathrm{lr}^2}{3}H^3)(\theta - c)$,
    the first terms of $\log(I - \mathrm{lr}H)/\mathrm{lr}$.

    Matrix-free: $Hg$ and $H^2g$ are Hessian-vector products (forward-over-reverse,
    `jax.linearize` of the gradient, reused for both), and
    $T[g,g] = \frac{d}{d\epsilon} H(\theta + \epsilon g)\, g \,\big|_{\epsilon=0}$ is one
    more forward derivative of the Hessian-vector product with $g$ held fixed. No Hessian
    is formed. Cost per evaluation: one gradient (order 0); plus about two HVPs' worth
    (order 1, 2 HVPs; order 2, 2 HVPs and one third-order directional derivative).

    **Arguments:**

    - `loss`: `loss(params, *args) -> scalar`, differentiable three times in `params`
      (any pytree of float arrays); the extra arguments are passed through and not
      differentiated.
    - `lr`: the GD step size, finite and `> 0` (a traced value is accepted, e.g. under
      `jax.vmap` over step sizes, and then not checked).
    - `order`: `0`, `1` or `2`.

    **Returns:**

    A function `field(params, *args)` returning a pytree shaped like `params`. Use it in
    [`gdflow.gradient_flow`][] as `field=gf.modified_field(problem.loss, lr, 2)`.

    **Raises:**

    `ValueError` if `order` is not 0, 1 or 2, or `lr` is not a finite positive number.

    **Example:**

    ```python
    f = gf.modified_field(problem.loss, lr=0.1, order=2)
    flow = gf.gradient_flow(problem, t1=10 * 0.1, field=f)  # tracks 10 GD steps to O(lr^3)
    ```

    Reference: ``../shared/sources/modified-loss.md`` (orders 0 and 1; order 2 derived
    above).
    """
    order = _check_order(order)
    lr = _check_lr(lr)

    def field(params, *args):
        grad = lambda p: jax.grad(loss)(p, *args)  # noqa: E731
        if order == 0:
            return jax.tree_util.tree_map(jnp.negative, grad(params))
        g, hvp = jax.linearize(grad, params)
        hg = hvp(g)
        if order == 1:
            return _combine((-1.0, -lr / 2), (g, hg))
        hhg = hvp(hg)
        # T[g, g]: differentiate v -> H(p) v along g with the direction g held fixed.
        hvp_g = lambda p: jax.jvp(grad, (p,), (g,))[1]  # noqa: E731
        tgg = jax.jvp(hvp_g, (params,), (g,))[1]
        c2 = lr * lr
        return _combine((-1.0, -lr / 2, -c2 / 12, -c2 / 3), (g, hg, tgg, hhg))

    return field


# ---------------------------------------------------------------------------------------
# SGD


def sgd_modified_loss(problem, lr, batching, *, expected: bool = False):
    r"""Modified loss of one epoch of minibatch SGD (Smith, Dherin, Barrett, De 2021).

    With the epoch's $m$ batches of equal size $b$ (so $L = \frac1m\sum_j L_j$, $L_j$ the
    mean loss over batch $j$),

    $$
    L_{\mathrm{SGD}}(\theta) = L(\theta)
      + \frac{\mathrm{lr}}{4m} \sum_{j=1}^{m} \|\nabla L_j(\theta)\|^2
    = L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2
      + \frac{\mathrm{lr}}{4m}\sum_j \|\nabla L_j - \nabla L\|^2 .
    $$

    Claim (Smith et al. 2021, Sec. 2): averaged over the *order* in which the $m$ batches
    are visited, one epoch of SGD with step `lr` (time $m\,\mathrm{lr}$ in gdflow's
    convention, one step per `lr`) lands on the gradient flow of $L_{\mathrm{SGD}}$ run for
    time $m\,\mathrm{lr}$ up to $O(m^3\mathrm{lr}^3)$. Why: one epoch in a fixed order is
    $\theta_0 - \mathrm{lr}\sum_j g_j + \mathrm{lr}^2\sum_{i<j} H_j g_i + O(\mathrm{lr}^3)$
    ($g_j, H_j$ batch $j$'s gradient and Hessian at $\theta_0$), and the flow of
    $-\nabla L - \mathrm{lr}\,c$ for time $m\,\mathrm{lr}$ is
    $\theta_0 - m\mathrm{lr}\,g - m\mathrm{lr}^2 c + \tfrac{m^2\mathrm{lr}^2}{2}Hg$.
    Matching gives
    $c = \frac{1}{2m}\sum_j H_j g_j + \frac{1}{2m}\sum_{i<j}(H_i g_j - H_j g_i)$; the
    first part is $\nabla\frac{1}{4m}\sum_j\|g_j\|^2$, the second is antisymmetric in the
    order and vanishes on average over orders.

    Assumptions (the docstring's claims hold only under them):

    - `problem.loss(params, batch)` is the *mean* of per-example losses over the batch
      (gdflow's convention), and every batch of the epoch has the same size $b$, so that
      $L$ is the mean of the batch losses. The partition must cover the data: $n$ must be
      divisible by the batch size.
    - The partition is `batching.epoch(problem.n, 0)` (epoch 0). For `RoundRobin` it is
      the fixed partition SGD uses every epoch; in a *fixed* order the antisymmetric term
      above does not average out, so the modified loss describes the order-averaged
      epoch, not each epoch, and the per-epoch error is then $O(m^2\mathrm{lr}^2)$.
      For `Reshuffle` the target is the expectation over the random orders *and* random
      partitions; the partition of epoch 0 is one sample of it. Pass `expected=True` for
      that expectation in closed form instead.
    - `lr` is small against the curvature: $m\,\mathrm{lr}\,\|H\| \ll 1$ (the expansion is
      in $m\,\mathrm{lr}$, the length of an epoch).
    - `FullBatch()` gives $m = 1$ and [`gdflow.modified_loss`][] of the full loss.

    With `expected=True`, the batch term is replaced by its expectation over uniformly
    random partitions into batches of size $b$ drawn without replacement (what
    `Reshuffle` samples each epoch):
    $\mathbb{E}\,\frac1m\sum_j\|\nabla L_j\|^2 = \|\nabla L\|^2
    + \frac{n-b}{b(n-1)}\,\Gamma$, with
    $\Gamma = \frac1n\sum_i \|\nabla\ell_i - \nabla L\|^2$ the per-example gradient
    variance (Smith et al. 2021, Sec. 2). This costs $n$ per-example gradients.

    **Arguments:**

    - `problem`: a [`gdflow.Problem`][] (its `loss`, `n` and `data` are used).
    - `lr`: the SGD step size, finite and `> 0`.
    - `batching`: `FullBatch()`, `RoundRobin(b)` or `Reshuffle(b, key)` (an epoch must
      partition the data; `Replacement` is rejected).
    - `expected`: use the expectation over random partitions (see above).

    **Returns:**

    `f(params, data) -> scalar`, with the signature of `problem.loss` applied to the full
    data, e.g. `gf.gradient_flow(problem, t1, field=lambda p, d: jax.tree.map(jnp.negative,
    jax.grad(f)(p, d)))` or `gf.Problem(f, problem.data, problem.params0)` (do not batch
    the latter: `f` gathers the epoch's batches from the full `data` by index).

    **Raises:**

    `ValueError` for a bad `lr`, a batching that does not partition the data, or a batch
    size that does not divide `problem.n`.

    Reference: Smith, Dherin, Barrett, De, "On the origin of implicit regularization in
    stochastic gradient descent", ICLR 2021, Sec. 2.
    """
    lr = positive_finite("lr", lr)
    n = int(problem.n)
    loss = problem.loss
    _check_partition(batching, n)
    batches = np.asarray(batching.epoch(n, 0))
    m, b = batches.shape
    if expected:
        variance_scale = (n - b) / (b * (n - 1)) if n > 1 else 0.0

        def sgd_loss(params, data):
            value, g = jax.value_and_grad(loss)(params, data)

            def example_sqdev(row):
                one = jax.tree_util.tree_map(lambda x: x[None], row)
                gi = jax.grad(loss)(params, one)
                return _sqnorm(jax.tree_util.tree_map(jnp.subtract, gi, g))

            gamma = jnp.mean(jax.vmap(example_sqdev)(data))
            return value + (lr / 4) * (_sqnorm(g) + variance_scale * gamma)

        return sgd_loss

    idx = jnp.asarray(batches)

    def sgd_loss(params, data):
        def batch_sqnorm(rows):
            batch = jax.tree_util.tree_map(lambda x: x[rows], data)
            return _sqnorm(jax.grad(loss)(params, batch))

        return loss(params, data) + (lr / (4 * m)) * jnp.sum(jax.vmap(batch_sqnorm)(idx))

    return sgd_loss


def _check_partition(batching, n: int) -> None:
    if isinstance(batching, Replacement):
        raise ValueError(
            "`batching` must partition the data each epoch (FullBatch, RoundRobin or "
            "Reshuffle); the SGD modified loss is derived for sampling without "
            "replacement, got Replacement."
        )
    if not isinstance(batching, AbstractBatching):
        raise TypeError(
            "`batching` must be FullBatch(), RoundRobin(b) or Reshuffle(b, key); "
            f"got {batching!r}."
        )
    batching.check(n)
    b = int(batching.batch_size(n))
    if n % b != 0:
        raise ValueError(
            f"`batching` has batch size {b}, which does not divide n = {n}; the SGD "
            f"modified loss needs equal batches covering the data. Choose a batch size "
            f"dividing {n} (divisors near {b}: {_near_divisors(n, b)})."
        )


def _near_divisors(n: int, b: int) -> str:
    divs = [d for d in range(1, n + 1) if n % d == 0]
    divs.sort(key=lambda d: abs(d - b))
    return ", ".join(str(d) for d in sorted(divs[:3]))

