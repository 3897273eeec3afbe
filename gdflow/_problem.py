"""The optimisation problem: a per-batch mean loss, the data, and a starting point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

_KINDS = (
    "generic",
    "quadratic",
    "two_points",
    "least_squares",
    "logistic",
    "softmax",
    "mlp",
)


def _leading_sizes(data) -> set[int]:
    sizes = set()
    for leaf in jax.tree_util.tree_leaves(data):
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                "`data` leaves must have a leading example axis; found a scalar leaf. "
                "Give every array in `data` the shape (n, ...)."
            )
        sizes.add(int(shape[0]))
    return sizes


class Problem(eqx.Module):
    r"""A finite-sum problem :math:`L(\theta) = \frac1n \sum_{i=1}^n \ell(\theta; x_i)`.

    The loss is given per *batch*: ``loss(params, batch)`` returns the **mean** of the
    per-example losses over the examples in ``batch``, where ``batch`` has the same
    pytree structure as ``data`` with a leading example axis of any size ``b``. With
    this convention the batch loss :math:`L_B` is an unbiased estimate of :math:`L`, the
    minibatch SGD step is :math:`\theta \leftarrow \theta - \eta \nabla L_B(\theta)` and a
    fixed partition into ``m`` equal batches gives :math:`L = \frac1m\sum_j L_{B_j}`.

    **Arguments:**

    - ``loss``: ``loss(params, batch) -> scalar``, the mean over the batch's examples.
      It must be a JAX-traceable function; keep data out of its closure (pass it through
      ``batch``) so that jitted runners see it as an argument.
    - ``data``: a pytree of arrays, each with leading example axis ``n``.
    - ``params0``: the starting point, any pytree of floating arrays.
    - ``name``: a label used in figures and reports.
    - ``kind``: the problem family, which lets structure-aware solvers (the exact and
      reduced local flows of :func:`gdflow.split`) recognise the data layout. One of
      ``"generic"``, ``"quadratic"``, ``"two_points"``, ``"least_squares"``,
      ``"logistic"``, ``"softmax"``, ``"mlp"``; see :mod:`gdflow.problems`.

    **Raises:** ``ValueError`` if the data leaves disagree on ``n``, if ``params0`` is not
    floating point, or if ``loss(params0, one_example)`` does not evaluate to a scalar
    (the usual sign of a shape mismatch between ``params0`` and ``data``).

    ```python
    import jax.numpy as jnp, gdflow as gf
    X, y = jnp.ones((4, 2)), jnp.arange(4.0)
    loss = lambda th, b: 0.5 * jnp.mean((b["X"] @ th - b["y"]) ** 2)
    problem = gf.Problem(loss, {"X": X, "y": y}, jnp.zeros(2))
    problem.full_loss(problem.params0)
    ```
    """

    loss: Callable[[PyTree, PyTree], jax.Array] = eqx.field(static=True)
    data: PyTree
    params0: PyTree
    name: str = eqx.field(static=True, default="problem")
    kind: str = eqx.field(static=True, default="generic")

    def __check_init__(self):
        if not callable(self.loss):
            raise TypeError(f"`loss` must be callable as loss(params, batch); got {self.loss!r}.")
        if self.kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {_KINDS}; got {self.kind!r}.")
        sizes = _leading_sizes(self.data)
        if len(sizes) == 0:
            raise ValueError("`data` holds no arrays; give at least one array of shape (n, ...).")
        if len(sizes) > 1:
            raise ValueError(
                f"`data` leaves disagree on the number of examples: leading sizes {sorted(sizes)}. "
                "Every array in `data` must have the same leading axis n."
            )
        leaves = jax.tree_util.tree_leaves(self.params0)
        if not leaves:
            raise ValueError("`params0` holds no arrays.")
        for leaf in leaves:
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(
                    "`params0` must hold floating-point arrays; got dtype "
                    f"{jnp.result_type(leaf)}. Convert with jnp.asarray(x, dtype=float)."
                )
        one = jax.tree_util.tree_map(lambda x: x[:1], self.data)
        try:
            out = jax.eval_shape(self.loss, self.params0, one)
        except Exception as e:
            raise ValueError(
                f"loss(params0, batch) failed for problem {self.name!r}: {type(e).__name__}: "
                f"{e}\nCheck that `params0` has the shapes `loss` expects for this `data`."
            ) from None
        if getattr(out, "shape", None) != ():
            raise ValueError(
                f"loss(params0, batch) must return a scalar (the batch mean); got shape "
                f"{getattr(out, 'shape', None)}. Check `params0` against `data`."
            )

    @property
    def n(self) -> int:
        """Number of examples (the leading axis of every leaf of ``data``)."""
        return next(iter(_leading_sizes(self.data)))

    def full_loss(self, params: PyTree) -> jax.Array:
        r"""The full-data loss :math:`L(\theta)` (the mean over all ``n`` examples)."""
        return self.loss(params, self.data)

    def batch(self, idx) -> PyTree:
        """The sub-pytree of ``data`` at example indices ``idx`` (any integer array)."""
        return jax.tree_util.tree_map(lambda x: x[idx], self.data)

    def grad(self, params: PyTree, batch: PyTree | None = None) -> PyTree:
        r""":math:`\nabla L_B(\theta)` on ``batch`` (the full data when ``None``)."""
        return jax.grad(self.loss)(params, self.data if batch is None else batch)

    def with_params0(self, params0: PyTree) -> Problem:
        """The same problem started from ``params0``."""
        return Problem(self.loss, self.data, params0, name=self.name, kind=self.kind)


def float_dtype(tree: PyTree):
    """The common floating dtype of a pytree's leaves (the state dtype for solvers)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.result_type(*leaves)
