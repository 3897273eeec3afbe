r"""How an epoch's examples are grouped into minibatches.

A batching rule maps an epoch number `e` to an integer table of shape `(m, b)`:
row `j` holds the example indices of the `j`-th step of that epoch. Discrete runners
([`gdflow.sgd`][], [`gdflow.descent`][]) and the splitting optimiser
([`gdflow.split`][]) all read batches through this one interface, so a given rule
produces the same batches in every method.

The texts' setting is [`gdflow.RoundRobin`][]: a fixed partition visited in a fixed order,
which makes minibatch SGD a deterministic Lie–Trotter splitting of gradient flow.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._validate import positive_int

__all__ = [
    "AbstractBatching",
    "FullBatch",
    "Replacement",
    "Reshuffle",
    "RoundRobin",
    "check_table",
    "resolve_batching",
]


class AbstractBatching(eqx.Module):
    """Base class of batching rules. Subclasses are final.

    A subclass declares `deterministic: ClassVar[bool]` (whether every epoch uses the
    same table) and
    implements `batch_size`, `num_batches`, `epoch` (the index table of an epoch) and
    `batch` (the `j`-th batch of an epoch's table, which may be a slice rather than a
    gather when the batches are contiguous).
    """

    deterministic: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def batch_size(self, n: int) -> int:
        """Examples per batch `b` for a data set of `n` examples."""

    @abc.abstractmethod
    def num_batches(self, n: int) -> int:
        """Batches (optimiser steps) per epoch `m`."""

    @abc.abstractmethod
    def epoch(self, n: int, e) -> jax.Array:
        """Integer table `(m, b)` of example indices for epoch `e` (traceable in `e`)."""

    @abc.abstractmethod
    def batch(self, data, table, j):
        """The `j`-th batch (traceable in `j`) of the epoch whose index table is `table`."""

    def check(self, n: int) -> None:
        """Raise `ValueError` if this rule cannot batch `n` examples, or if its epoch-0
        table holds indices outside `[0, n)` or has the wrong shape."""
        b, m = self.batch_size(n), self.num_batches(n)
        table = np.asarray(self.epoch(n, 0))
        if table.shape != (m, b):
            raise ValueError(
                f"{type(self).__name__}.epoch(n, 0) must return an index table of shape "
                f"(num_batches, batch_size) = ({m}, {b}); got {table.shape}."
            )
        if not np.issubdtype(table.dtype, np.integer):
            raise ValueError(
                f"{type(self).__name__}.epoch(n, 0) must return integer indices; got dtype "
                f"{table.dtype}."
            )
        if table.size and (table.min() < 0 or table.max() >= n):
            raise ValueError(
                f"{type(self).__name__}.epoch(n, 0) returned indices in [{table.min()}, "
                f"{table.max()}], outside [0, n) = [0, {n}): JAX would clamp them silently "
                "and repeat examples. Return indices of examples that exist."
            )


def check_table(batching: AbstractBatching, table, n: int):
    """`table`, with a run-time error if a non-built-in rule produced indices outside
    `[0, n)` (JAX gathers clamp out-of-range indices silently)."""
    if isinstance(batching, FullBatch | RoundRobin | Reshuffle | Replacement):
        return table  # indices in range by construction
    bad = jnp.any((table < 0) | (table >= n))
    return eqx.error_if(
        table, bad, f"{type(batching).__name__}.epoch returned indices outside [0, n={n})."
    )


def _gather(data, table, j):
    idx = table[j]
    return jax.tree_util.tree_map(lambda x: x[idx], data)


class FullBatch(AbstractBatching):
    """Every step sees all `n` examples: `m = 1`, `b = n` (gradient descent)."""

    deterministic: ClassVar[bool] = True

    def batch_size(self, n: int) -> int:
        return n

    def num_batches(self, n: int) -> int:
        return 1

    def epoch(self, n: int, e) -> jax.Array:
        del e
        return jnp.arange(n)[None, :]

    def batch(self, data, table, j):
        del table, j
        return data  # no gather: the batch is the data


def _sized(batch_size: int, n: int, drop_remainder: bool, cls: str) -> int:
    if batch_size > n:
        raise ValueError(
            f"{cls}: `batch_size`={batch_size} is larger than the number of examples n={n}. "
            f"Use a batch size <= {n}, or FullBatch()."
        )
    if n % batch_size and not drop_remainder:
        raise ValueError(
            f"{cls}: `batch_size`={batch_size} does not divide n={n} ({n % batch_size} "
            "examples would be left over). Choose a divisor of n, or pass "
            "drop_remainder=True to skip the last n mod batch_size examples of each epoch."
        )
    return n // batch_size


class RoundRobin(AbstractBatching):
    r"""A fixed partition in a fixed order: batch `j` holds examples `j·b, …, (j+1)·b-1`.

    This is the setting of the splitting and minibatch-flow texts: one epoch of SGD is
    one Lie–Trotter splitting step of gradient flow on
    $L = \frac1m\sum_j L_{B_j}$.

    **Arguments:**

    - `batch_size`: examples per batch `b` (must divide `n` unless
      `drop_remainder`).
    - `drop_remainder`: ignore the last `n mod b` examples instead of raising.
    """

    deterministic: ClassVar[bool] = True
    batch_size_: int = eqx.field(static=True)
    drop_remainder: bool = eqx.field(static=True, default=False)

    def __init__(self, batch_size: int, drop_remainder: bool = False):
        self.batch_size_ = positive_int("batch_size", batch_size)
        self.drop_remainder = bool(drop_remainder)

    def batch_size(self, n: int) -> int:
        return self.batch_size_

    def num_batches(self, n: int) -> int:
        return _sized(self.batch_size_, n, self.drop_remainder, "RoundRobin")

    def epoch(self, n: int, e) -> jax.Array:
        del e
        m = self.num_batches(n)
        return jnp.arange(m * self.batch_size_).reshape(m, self.batch_size_)

    def batch(self, data, table, j):
        del table
        # Contiguous rows: a slice is much cheaper than a gather.
        b = self.batch_size_
        return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_slice_in_dim(x, j * b, b), data)


class Reshuffle(AbstractBatching):
    """Random reshuffling: a new random partition every epoch, each example once per epoch.

    Epoch `e` uses the permutation drawn from `jax.random.fold_in(key, e)`, so a run
    is reproducible and two methods given the same rule see the same batches.

    **Arguments:**

    - `batch_size`: examples per batch (must divide `n` unless `drop_remainder`).
    - `key`: a `jax.random` key.
    - `drop_remainder`: ignore the last `n mod b` shuffled examples of each epoch.
    """

    deterministic: ClassVar[bool] = False
    batch_size_: int = eqx.field(static=True)
    key: jax.Array
    drop_remainder: bool = eqx.field(static=True, default=False)

    def __init__(self, batch_size: int, key: jax.Array, drop_remainder: bool = False):
        self.batch_size_ = positive_int("batch_size", batch_size)
        self.key = _check_key(key)
        self.drop_remainder = bool(drop_remainder)

    def batch_size(self, n: int) -> int:
        return self.batch_size_

    def num_batches(self, n: int) -> int:
        return _sized(self.batch_size_, n, self.drop_remainder, "Reshuffle")

    def epoch(self, n: int, e) -> jax.Array:
        m = self.num_batches(n)
        perm = jax.random.permutation(jax.random.fold_in(self.key, e), n)
        return perm[: m * self.batch_size_].reshape(m, self.batch_size_)

    def batch(self, data, table, j):
        return _gather(data, table, j)


class Replacement(AbstractBatching):
    """Sampling with replacement: every step draws `b` indices uniformly from `n`.

    An "epoch" is `m = n // b` steps, so that epochs of every rule see `≈ n` examples.
    """

    deterministic: ClassVar[bool] = False
    batch_size_: int = eqx.field(static=True)
    key: jax.Array

    def __init__(self, batch_size: int, key: jax.Array):
        self.batch_size_ = positive_int("batch_size", batch_size)
        self.key = _check_key(key)

    def batch_size(self, n: int) -> int:
        return self.batch_size_

    def num_batches(self, n: int) -> int:
        return _sized(self.batch_size_, n, True, "Replacement")

    def epoch(self, n: int, e) -> jax.Array:
        m = self.num_batches(n)
        k = jax.random.fold_in(self.key, e)
        return jax.random.randint(k, (m, self.batch_size_), 0, n)

    def batch(self, data, table, j):
        return _gather(data, table, j)


def _check_key(key):
    try:
        arr = jnp.asarray(key) if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    except AttributeError:
        raise TypeError(
            f"`key` must be a jax.random key (e.g. jax.random.key(0)); got {key!r}."
        ) from None
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        return arr
    if arr.dtype == jnp.uint32 and arr.shape == (2,):
        return arr
    raise TypeError(f"`key` must be a jax.random key (e.g. jax.random.key(0)); got {key!r}.")


def resolve_batching(batching) -> AbstractBatching:
    if batching is None:
        return FullBatch()
    if not isinstance(batching, AbstractBatching):
        raise TypeError(
            "`batching` must be FullBatch(), RoundRobin(b), Reshuffle(b, key) or "
            f"Replacement(b, key); got {batching!r}."
        )
    return batching
