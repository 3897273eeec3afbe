"""The optimisation problem: a per-batch mean loss, the data, and a starting point."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import PyTree
from ._structure import AbstractStructure

__all__ = ["Problem", "as_problem", "float_dtype"]


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


def _check_finite(name: str, tree) -> None:
    """Raise if a floating leaf of `tree` holds NaN or inf, naming the leaf."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.core.Tracer):
            continue  # inside a transformation: values are not known
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            where = f"{name}{jax.tree_util.keystr(path)}"
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"`{where}` holds {bad} non-finite value(s) (NaN or inf). Clean or drop them "
                "before building the Problem; a run would otherwise stop at step 0."
            )


class Problem(eqx.Module):
    r"""A finite-sum problem $L(\theta) = \frac1n \sum_{i=1}^n \ell(\theta; x_i)$.

    The loss is given per *batch*: `loss(params, batch)` returns the **mean** of the
    per-example losses over the examples in `batch`, where `batch` has the same
    pytree structure as `data` with a leading example axis of any size `b`. With
    this convention the batch loss $L_B$ is an unbiased estimate of $L$, the
    minibatch SGD step is $\theta \leftarrow \theta - \eta \nabla L_B(\theta)$ and a
    fixed partition into `m` equal batches gives $L = \frac1m\sum_j L_{B_j}$.

    **Arguments:**

    - `loss`: `loss(params, batch) -> scalar`, the mean over the batch's examples.
      It must be a JAX-traceable function; keep data out of its closure (pass it through
      `batch`) so that jitted runners see it as an argument.
    - `data`: a pytree of arrays, each with leading example axis `n`.
    - `params0`: the starting point, any pytree of floating arrays.
    - `name`: a label used in figures and reports.
    - `structure`: the closed-form structure of the loss, an instance of a final class
      of `gdflow._structure` (`LeastSquares()`, `Quadratic()`, `TwoPoints()`,
      `Logistic()`, `Softmax()`), or `None` for an arbitrary loss. The constructors
      of [`gdflow.problems`][] set it; structure-aware solvers ([`gdflow.Exact`][],
      the reduced [`gdflow.LocalODE`][]) dispatch on its type. A structure defines the
      loss, so `loss` must then be `structure.loss`.

    **Raises:** `ValueError` if `data` is empty (`n = 0`) or its leaves disagree on
    `n`, if `data` or `params0` hold NaN or inf (naming the leaf), if `params0` is
    not floating point, if `loss(params0, one_example)` does not evaluate to a real
    floating scalar (the usual sign of a shape mismatch between `params0` and `data`),
    or if `structure` does not match `loss` or the data layout.

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
    structure: AbstractStructure | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not callable(self.loss):
            raise TypeError(f"`loss` must be callable as loss(params, batch); got {self.loss!r}.")
        if self.structure is not None:
            if not isinstance(self.structure, AbstractStructure):
                raise TypeError(
                    "`structure` must be None or a loss structure such as LeastSquares(); "
                    f"got {self.structure!r}."
                )
            if self.loss is not self.structure.loss:
                raise ValueError(
                    f"`structure`={type(self.structure).__name__}() defines its own loss, but "
                    "`loss` is a different function. Solvers that use the structure would "
                    "ignore your loss: build the problem with gdflow.problems, or drop "
                    "`structure` (then gf.Exact() refuses it and gf.LocalODE() solves it in "
                    "full parameter space)."
                )
        sizes = _leading_sizes(self.data)
        if len(sizes) == 0:
            raise ValueError("`data` holds no arrays; give at least one array of shape (n, ...).")
        if len(sizes) > 1:
            raise ValueError(
                f"`data` leaves disagree on the number of examples: leading sizes {sorted(sizes)}. "
                "Every array in `data` must have the same leading axis n."
            )
        if sizes == {0}:
            raise ValueError("`data` has n = 0 examples; give at least one example.")
        leaves = jax.tree_util.tree_leaves(self.params0)
        if not leaves:
            raise ValueError("`params0` holds no arrays.")
        for leaf in leaves:
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(
                    "`params0` must hold floating-point arrays; got dtype "
                    f"{jnp.result_type(leaf)}. Convert with jnp.asarray(x, dtype=float)."
                )
        _check_finite("data", self.data)
        _check_finite("params0", self.params0)
        if self.structure is not None:
            self.structure.check(self.data, self.params0)
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
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(
                f"loss(params0, batch) must return a real floating scalar; got dtype "
                f"{out.dtype}. Return a float (e.g. jnp.mean(...) of float arrays, or "
                ".astype(float)) so that it can be differentiated."
            )

    @property
    def n(self) -> int:
        """Number of examples (the leading axis of every leaf of `data`)."""
        return next(iter(_leading_sizes(self.data)))

    def full_loss(self, params: PyTree) -> jax.Array:
        r"""The full-data loss $L(\theta)$ (the mean over all `n` examples)."""
        return self.loss(params, self.data)

    def batch(self, idx) -> PyTree:
        """The sub-pytree of `data` at example indices `idx` (any integer array)."""
        return jax.tree_util.tree_map(lambda x: x[idx], self.data)

    def grad(self, params: PyTree, batch: PyTree | None = None) -> PyTree:
        r"""$\nabla L_B(\theta)$ on `batch` (the full data when `None`)."""
        return jax.grad(self.loss)(params, self.data if batch is None else batch)

    def with_params0(self, params0: PyTree) -> Problem:
        """The same problem started from `params0`."""
        return Problem(self.loss, self.data, params0, name=self.name, structure=self.structure)

    def with_data(self, data: PyTree, params0: PyTree | None = None) -> Problem:
        """The same loss (and structure) on other `data`, e.g. a subset of examples."""
        p0 = self.params0 if params0 is None else params0
        return Problem(self.loss, data, p0, name=self.name, structure=self.structure)


def float_dtype(tree: PyTree):
    """The common floating dtype of a pytree's leaves (the state dtype for solvers)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.result_type(*leaves)


def as_problem(problem, name: str = "problem") -> Problem:
    """`problem` itself if it is a [`gdflow.Problem`][], else a `TypeError` that says how to
    build one (the check every entry point makes first)."""
    if isinstance(problem, Problem):
        return problem
    hint = ""
    if isinstance(problem, tuple | list):
        hint = " To wrap a loss and data, write gf.Problem(loss, data, params0)."
    raise TypeError(f"`{name}` must be a gdflow.Problem; got {type(problem).__name__}.{hint}")
