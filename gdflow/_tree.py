"""Leaf-wise helpers shared by the engine and the methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["all_finite", "tree_where"]


def tree_where(pred, a, b):
    """`a` where `pred` else `b`, leaf by leaf."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def all_finite(tree) -> jax.Array:
    """Whether every leaf of `tree` is finite everywhere (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
