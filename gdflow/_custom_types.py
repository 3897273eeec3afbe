"""Type aliases used in public signatures (jaxtyping), defined once for the package."""

from __future__ import annotations

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int, PyTree as _PyTree

#: Any pytree of arrays (parameters, data, optimiser states).
PyTree: TypeAlias = _PyTree[Any]
#: A real scalar given from Python or as a 0-d array.
RealScalarLike: TypeAlias = float | int | ArrayLike
#: Save times, shape ``(T,)``.
Times: TypeAlias = Float[Array, " T"]
#: Per-save scalars (losses), shape ``(T,)``.
PerSave: TypeAlias = Float[Array, " T"]
#: An integer index table of minibatches, shape ``(m, b)``.
BatchTable: TypeAlias = Int[Array, "m b"]

__all__ = ["BatchTable", "PerSave", "PyTree", "RealScalarLike", "Times"]
