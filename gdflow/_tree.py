"""Leaf-wise helpers shared by the engine and the methods.

The finite checks run on every step of a run, so their form matters on small parameter
sets: a minimum or maximum over int8 is cheaper in XLA:CPU than `jnp.all` over a boolean
array (measured on the 2.4k-parameter net of `benchmarks/gd_throughput.py`), and one pass
over a (gradient, new parameters) pair is cheaper than two. The answers are exact: the
same as `jnp.all(jnp.isfinite(x))` leaf by leaf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["all_finite", "finite_code", "tree_where", "tree_zeros"]


def tree_where(pred, a, b):
    """`a` where `pred` else `b`, leaf by leaf."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def tree_zeros(shapes):
    """Zeros of the shapes and dtypes of `shapes` (e.g. a `jax.eval_shape` result)."""
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _combine(flags, empty):
    return jnp.stack(flags) if flags else jnp.asarray(empty)


def all_finite(tree) -> jax.Array:
    """Whether every leaf of `tree` is finite everywhere (a scalar bool)."""
    flags = [
        jnp.min(jnp.isfinite(x).astype(jnp.int8))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.size(x)  # an empty leaf is finite
    ]
    return jnp.min(_combine(flags, [1])) == 1


def finite_code(first, second) -> jax.Array:
    """Where the first non-finite value is, for two pytrees of the same structure: 0 when
    both are finite everywhere, 1 when `first` is finite and `second` is not, 2 when
    `first` is not (an int8 scalar).

    The answer of `all_finite(first)` and `all_finite(second)` together, in one pass
    over each pair of leaves.
    """
    a_leaves = jax.tree_util.tree_leaves(first)
    b_leaves = jax.tree_util.tree_leaves(second)
    if len(a_leaves) != len(b_leaves):
        raise ValueError(
            f"finite_code needs two pytrees of the same structure; got {len(a_leaves)} and "
            f"{len(b_leaves)} leaves."
        )
    zero, one, two = jnp.int8(0), jnp.int8(1), jnp.int8(2)
    codes = [
        jnp.max(jnp.where(jnp.isfinite(a), jnp.where(jnp.isfinite(b), zero, one), two))
        for a, b in zip(a_leaves, b_leaves)
        if jnp.size(a)  # an empty pair is finite
    ]
    return jnp.max(_combine(codes, [0])).astype(jnp.int8)
