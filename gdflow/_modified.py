r"""Backward error analysis of gradient descent and minibatch SGD.

Gradient descent (GD) with step ``lr`` is explicit Euler on gradient flow (GF)
:math:`\dot\theta = -\nabla L(\theta)`. It agrees with GF only to first order in ``lr``,
but it agrees to higher order with the flow of a *modified* vector field
:math:`f_{\mathrm{lr}} = f_0 + \mathrm{lr}\, f_1 + \mathrm{lr}^2 f_2 + \dots`, chosen so
that the flow of :math:`f_{\mathrm{lr}}` run for time ``lr`` reproduces one GD step. This
module evaluates the first three terms of that series matrix-free
(:func:`modified_field`), the modified loss whose negative gradient is the first two
(:func:`modified_loss`), and the modified loss of minibatch SGD
(:func:`sgd_modified_loss`).

The returned callables are small equinox Modules that hold ``lr`` as an array leaf, so
a jitted solver (:func:`gdflow.gradient_flow`) traces it: sweeping the step size
compiles once.

References: ``../shared/sources/modified-loss.md`` (the quadratic warm-up and "the
general case", which derives the first-order term). The second-order term (derived in
:func:`modified_field`; Hairer, Lubich and Wanner, *Geometric Numerical Integration*,
ch. IX) and the SGD modified loss (Smith, Dherin, Barrett and De, "On the origin of
implicit regularization in stochastic gradient descent", ICLR 2021) go beyond that text.
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
from ._validate import positive_finite

PyTree = Any

__all__ = ["modified_field", "modified_loss", "sgd_modified_loss"]


# ---------------------------------------------------------------------------------------
# pytree helpers


def _sqnorm(tree) -> jax.Array:
    r""":math:`\sum_{\text{leaves}} \|x\|^2` as a scalar."""
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def _combine(coefs, trees):
    r""":math:`\sum_i c_i\, t_i` leafwise, for pytrees of one structure, in each leaf's dtype."""

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


class ModifiedLoss(eqx.Module):
    r""":math:`L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2`; built by :func:`modified_loss`."""

    loss: Callable = eqx.field(static=True)
    lr: jax.Array

    # Hash by identity so that plain ``jax.jit(f)`` accepts it (a Module's default hash
    # hashes its fields, and the ``lr`` array is unhashable). Two equal but distinct
    # instances then hash differently: at worst a cache miss, never a wrong result.
    __hash__ = object.__hash__

    def __call__(self, params, *args) -> jax.Array:
        value, g = jax.value_and_grad(self.loss)(params, *args)
        return value + _scalar(self.lr / 4, value) * _sqnorm(g)


class ModifiedField(eqx.Module):
    r"""The truncated backward-error field of GD; built by :func:`modified_field`."""

    loss: Callable = eqx.field(static=True)
    lr: jax.Array
    order: int = eqx.field(static=True)

    # Hash by identity so that plain ``jax.jit(f)`` accepts it (a Module's default hash
    # hashes its fields, and the ``lr`` array is unhashable).
    __hash__ = object.__hash__

    def __call__(self, params, *args):
        def grad(p):
            return jax.grad(self.loss)(p, *args)

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


def modified_loss(loss: Callable[..., Any], lr) -> ModifiedLoss:
    r"""First-order modified loss of gradient descent.

    .. math::

        L_{\mathrm{lr}}(\theta) = L(\theta) + \frac{\mathrm{lr}}{4}\,\|\nabla L(\theta)\|^2,

    the loss whose gradient flow, run for time ``lr`` from :math:`\theta_0`, lands on the
    GD step :math:`\theta_0 - \mathrm{lr}\,\nabla L(\theta_0)` up to :math:`O(\mathrm{lr}^3)`
    (gradient flow on :math:`L` itself misses it by
    :math:`\tfrac{\mathrm{lr}^2}{2} H\nabla L + O(\mathrm{lr}^3)`). Its negative gradient,
    :math:`-\nabla L - \tfrac{\mathrm{lr}}{2} H\nabla L`, is
    ``modified_field(loss, lr, 1)``. Over ``k`` steps (time :math:`t = k\,\mathrm{lr}`, a
    fixed horizon) GD stays within :math:`O(\mathrm{lr}^2)` of this flow, against
    :math:`O(\mathrm{lr})` of gradient flow.

    There is no second-order modified *loss*: the :math:`\mathrm{lr}^2` term of the
    modified field is not a gradient in general (see :func:`modified_field`).

    Cost: one value-and-gradient of ``loss``; its gradient (double backprop) costs about
    one Hessian-vector product more.

    **Arguments:**

    - ``loss``: ``loss(params, *args) -> scalar``, twice differentiable in ``params`` (any
      pytree of floating arrays). The other arguments (data, a batch) are passed through
      and not differentiated.
    - ``lr``: the GD step size, finite and ``> 0``.

    **Returns:** a callable ``modified(params, *args) -> scalar`` with the signature of
    ``loss`` (an equinox Module holding ``lr`` as an array).

    **Raises:** ``ValueError`` if ``lr`` is not a finite number ``> 0``.

    ```python
    Lm = gf.modified_loss(lambda th: 0.5 * th**2, lr=0.5)  # the text's bowl, lambda = 1
    Lm(1.2)  # 0.5 * (1 + 0.5 / 2) * 1.2**2 = 0.9
    ```

    Reference: ``../shared/sources/modified-loss.md`` ("The general case").
    """
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(params, *args); got {loss!r}.")
    return ModifiedLoss(loss, _check_lr(lr))


def modified_field(loss: Callable[..., Any], lr, order: int) -> ModifiedField:
    r"""Backward-error (modified) vector field of gradient descent, truncated at ``order``.

    With :math:`g = \nabla L`, :math:`H = \nabla^2 L` and :math:`T = \nabla^3 L` at
    :math:`\theta`,

    .. math::

        f(\theta) = -g \;-\; \frac{\mathrm{lr}}{2}\, H g
            \;-\; \mathrm{lr}^2\Big(\frac{1}{12}\, T[g, g] + \frac{1}{3}\, H^2 g\Big),

    keeping one term for ``order=0`` (gradient flow), two for ``order=1`` (the negative
    gradient of :func:`modified_loss`) and all three for ``order=2``.

    **Accuracy.** The flow of :math:`f` run for time ``lr`` from :math:`\theta_0` agrees
    with one GD step :math:`\theta_0 - \mathrm{lr}\, g` up to a local error
    :math:`O(\mathrm{lr}^{\mathrm{order}+2})`, so over a fixed time horizon GD stays within
    :math:`O(\mathrm{lr}^{\mathrm{order}+1})` of the modified flow (while the flow stays
    in a region where the expansion holds, :math:`\mathrm{lr}\,\|H\|` well below 1).

    **Derivation** (backward error analysis, Hairer-Lubich-Wanner IX.1). Write
    :math:`f = f_0 + \mathrm{lr} f_1 + \mathrm{lr}^2 f_2`, expand the exact flow
    :math:`\theta(\mathrm{lr}) = \theta_0 + \mathrm{lr} f + \tfrac{\mathrm{lr}^2}{2} f'f
    + \tfrac{\mathrm{lr}^3}{6}(f''[f,f] + f'f'f) + O(\mathrm{lr}^4)` and match powers of
    ``lr`` with :math:`\theta_0 - \mathrm{lr}\,g`: order 1 gives :math:`f_0 = -g`; order 2
    gives :math:`f_1 = -\tfrac12 f_0'f_0 = -\tfrac12 Hg` (the text's result); order 3 gives
    :math:`f_2 = -\tfrac12(f_0'f_1 + f_1'f_0) - \tfrac16(f_0''[f_0,f_0] + f_0'f_0'f_0)
    = -\tfrac12(H^2g + \tfrac12 T[g,g]) + \tfrac16(T[g,g] + H^2 g)
    = -\tfrac1{12}T[g,g] - \tfrac13 H^2 g`, using
    :math:`f_1'v = -\tfrac12(T[v,g] + H^2 v)`. The tests fit these orders.

    **The order-2 field is not a gradient in general**, so there is no "second-order
    modified loss": the Jacobian of :math:`\tfrac1{12}T[g,g] + \tfrac13H^2g` is not
    symmetric for a generic :math:`L`. On a quadratic
    :math:`L = \tfrac12(\theta-c)^\top H(\theta-c)` it is, and
    :math:`f = -(H + \tfrac{\mathrm{lr}}{2}H^2 + \tfrac{\mathrm{lr}^2}{3}H^3)(\theta - c)`,
    the first terms of :math:`\log(I - \mathrm{lr}H)(\theta-c)/\mathrm{lr}`.

    **Cost, matrix-free** (no Hessian is formed): order 0, one gradient; order 1, one
    ``jax.linearize`` of the gradient and one Hessian-vector product (HVP); order 2, a
    second HVP through the same linearisation and
    :math:`T[g,g] = \tfrac{d}{d\epsilon} H(\theta + \epsilon g)\, g\,|_{\epsilon=0}`, one
    forward derivative of an HVP with :math:`g` held fixed.

    **Arguments:**

    - ``loss``: ``loss(params, *args) -> scalar``, three times differentiable in
      ``params`` (any pytree of floating arrays); the other arguments are passed through
      and not differentiated.
    - ``lr``: the GD step size, finite and ``> 0`` (a traced value, e.g. under
      ``jax.vmap`` over step sizes, is accepted unchecked).
    - ``order``: ``0``, ``1`` or ``2``.

    **Returns:** a callable ``field(params, *args)`` returning a pytree shaped like
    ``params`` (an equinox Module holding ``lr`` as an array, so that
    :func:`gdflow.gradient_flow` compiles once for a sweep over ``lr``).

    **Raises:** ``ValueError`` if ``order`` is not 0, 1 or 2, or ``lr`` is not a finite
    number ``> 0``.

    ```python
    lr = 0.1
    f = gf.modified_field(problem.loss, lr, order=2)
    flow = gf.gradient_flow(problem, t1=10 * lr, ts=lr * jnp.arange(11), field=f)
    gd = gf.gd(problem, lr, steps=10)  # within O(lr^3) of `flow` at every saved time
    ```

    Reference: ``../shared/sources/modified-loss.md`` (orders 0 and 1; order 2 above).
    """
    order = _check_order(order)
    if not callable(loss):
        raise TypeError(f"`loss` must be callable as loss(params, *args); got {loss!r}.")
    return ModifiedField(loss, _check_lr(lr), order)


# ---------------------------------------------------------------------------------------
# SGD


class SGDModifiedLoss(eqx.Module):
    r"""SGD's modified loss; built by :func:`sgd_modified_loss`."""

    loss: Callable = eqx.field(static=True)
    lr: jax.Array
    batches: jax.Array  # (m, b) int: row j = example indices of batch j
    expected: bool = eqx.field(static=True)

    # Hash by identity so that plain ``jax.jit(f)`` accepts it (a Module's default hash
    # hashes its fields, and the ``lr`` array is unhashable).
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

    With the epoch's :math:`m` batches of equal size :math:`b` (so
    :math:`L = \frac1m\sum_j L_j`, :math:`L_j` the mean loss over batch :math:`j`),

    .. math::

        L_{\mathrm{SGD}}(\theta) = L(\theta)
            + \frac{\mathrm{lr}}{4m} \sum_{j=1}^{m} \|\nabla L_j(\theta)\|^2
        = L + \frac{\mathrm{lr}}{4}\|\nabla L\|^2
            + \frac{\mathrm{lr}}{4m}\sum_j \|\nabla L_j - \nabla L\|^2 .

    **Claim** (Smith et al. 2021, Sec. 2). Averaged over the *order* in which the
    :math:`m` batches are visited, one epoch of SGD with step ``lr`` (time
    :math:`m\,\mathrm{lr}` in gdflow's clock) lands on the gradient flow of
    :math:`L_{\mathrm{SGD}}` run for time :math:`m\,\mathrm{lr}` up to
    :math:`O(m^3\mathrm{lr}^3)`. Why: an epoch in a fixed order is
    :math:`\theta_0 - \mathrm{lr}\sum_j g_j + \mathrm{lr}^2\sum_{i<j} H_j g_i
    + O(\mathrm{lr}^3)` (:math:`g_j, H_j` batch :math:`j`'s gradient and Hessian at
    :math:`\theta_0`), and the flow of :math:`-\nabla L - \mathrm{lr}\,c` for time
    :math:`m\,\mathrm{lr}` is :math:`\theta_0 - m\mathrm{lr}\,g - m\mathrm{lr}^2 c
    + \tfrac{m^2\mathrm{lr}^2}{2}Hg + O(\mathrm{lr}^3)`. Matching gives
    :math:`c = \frac{1}{2m}\sum_j H_j g_j + \frac{1}{2m}\sum_{i<j}(H_i g_j - H_j g_i)`:
    the first part is :math:`\nabla\frac{1}{4m}\sum_j\|g_j\|^2`, the second is
    antisymmetric in the order and vanishes on average over orders.

    **Assumptions** (the claim holds only under them):

    - ``problem.loss(params, batch)`` is the *mean* of per-example losses over the batch
      (gdflow's convention) and the epoch's batches all have size :math:`b` and cover the
      data, so that :math:`L` is the mean of the batch losses: :math:`b` must divide
      ``problem.n``.
    - The partition is ``batching.epoch(problem.n, 0)`` (epoch 0). For ``RoundRobin``
      it is the partition SGD uses in every epoch, but in a *fixed* order the
      antisymmetric term above does not average out: the modified loss then describes
      the order-averaged epoch, and one epoch in the fixed order deviates from its flow by
      :math:`O(m^2\mathrm{lr}^2)`. For ``Reshuffle`` the target is the expectation over
      random orders *and* random partitions, and the partition of epoch 0 is one sample
      of it; ``expected=True`` gives that expectation in closed form.
    - ``lr`` is small on the scale of the curvature and of an epoch:
      :math:`m\,\mathrm{lr}\,\|H\| \ll 1` (the expansion is in the epoch length
      :math:`m\,\mathrm{lr}`).
    - ``FullBatch()`` gives :math:`m = 1`, i.e. :func:`modified_loss` of the full loss.

    With ``expected=True`` the batch term is replaced by its expectation over uniformly
    random partitions into batches of size :math:`b` (what ``Reshuffle`` draws each
    epoch; each batch is then a uniform :math:`b`-subset drawn without replacement):

    .. math::

        \mathbb{E}\,\frac1m\sum_j\|\nabla L_j\|^2 = \|\nabla L\|^2
            + \frac{n-b}{b(n-1)}\,\Gamma, \qquad
        \Gamma = \frac1n\sum_{i=1}^n \|\nabla\ell_i - \nabla L\|^2,

    with :math:`\ell_i` the loss of example :math:`i` (Smith et al. 2021, Sec. 2). This
    costs :math:`n` per-example gradients (vectorised: memory :math:`n\times` the
    parameter count).

    Cost (default): one full gradient and :math:`m` batch gradients (:math:`\approx` two
    full gradients' worth); its gradient (double backprop) about as much again.

    **Arguments:**

    - ``problem``: a :class:`gdflow.Problem` (its ``loss`` and ``n`` are used).
    - ``lr``: the SGD step size, finite and ``> 0``.
    - ``batching``: ``FullBatch()``, ``RoundRobin(b)`` or ``Reshuffle(b, key)``.
    - ``expected``: use the expectation over random partitions (see above).

    **Returns:** a callable ``f(params, data) -> scalar`` with the signature of
    ``problem.loss`` applied to the full data (an equinox Module holding ``lr`` and the
    ``(m, b)`` index table as arrays). Use it as
    ``gf.gradient_flow(problem, t1, field=lambda p, d: jax.tree.map(jnp.negative,
    jax.grad(f)(p, d)))``, or as the loss of ``gf.Problem(f, problem.data,
    problem.params0)`` for full-batch methods (it gathers the batches from the *full*
    ``data`` by index, so never hand it a minibatch).

    **Raises:** ``ValueError`` for a bad ``lr``, for ``Replacement`` batching (its
    epochs do not partition the data), or for a batch size that does not divide
    ``problem.n`` (including ``drop_remainder=True`` with a remainder).

    ```python
    problem = gf.problems.random_least_squares(64, 5, noise=0.1, key=jax.random.key(0))
    f = gf.sgd_modified_loss(problem, lr=0.01, batching=gf.RoundRobin(8))
    f(problem.params0, problem.data)
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
