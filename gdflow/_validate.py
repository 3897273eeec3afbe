"""Argument checks shared by the public functions.

Every check raises :class:`ValueError` (or :class:`TypeError`) whose message names the
argument and says how to fix it, so that bad input never surfaces as a traceback from
deep inside JAX.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def _as_float(name: str, value) -> float:
    try:
        arr = np.asarray(value)
    except Exception as e:  # pragma: no cover - exotic objects
        raise TypeError(f"`{name}` must be a real number, got {value!r}.") from e
    if arr.shape != () or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"`{name}` must be a real scalar, got {value!r} (shape {arr.shape}).")
    if np.iscomplexobj(arr):
        raise TypeError(f"`{name}` must be real, got {value!r}.")
    return float(arr)


def positive_finite(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not finite and > 0."""
    v = _as_float(name, value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return v


def nonnegative_finite(name: str, value) -> float:
    v = _as_float(name, value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return v


def positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int, or raise if it is not a (positive) integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | np.integer):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    v = int(value)
    low = 0 if allow_zero else 1
    if v < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {v}.")
    return v


def one_of(name: str, value, options) -> str:
    if value not in options:
        opts = ", ".join(repr(o) for o in options)
        raise ValueError(f"`{name}` must be one of {opts}; got {value!r}.")
    return value
