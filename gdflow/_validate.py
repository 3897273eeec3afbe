"""Argument checks shared by the public functions.

Every check raises `ValueError` (or `TypeError`) whose message names the
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
    """Return `value` as a float, or raise if it is not finite and > 0."""
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
    """Return `value` as an int, or raise if it is not a (positive) integer."""
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


def real_scalar(name: str, value, *, fix: str = "") -> float:
    """Return `value` as a float; a `TypeError` naming `name` if it is not a real
    number (a string, `None`, a bool, a complex number or an array of several numbers).

    Finiteness is not checked: callers say which values are allowed.
    """
    if isinstance(value, bool | np.bool_) or value is None or isinstance(value, str | bytes):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.{fix}")
    return _as_float(name, value)


def real_array(
    name: str, value, *, finite: bool = True, dtype=None, allow_bool: bool = False
) -> np.ndarray:
    """`value` as a NumPy array of real numbers (integers or floats), checked.

    Raises `TypeError` naming `name` for strings, objects, booleans or complex
    numbers, and (with `finite`) `ValueError` saying where the first NaN or infinity
    sits. Meant for concrete inputs at the public edge, never inside a trace.
    """
    try:
        arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be an array of real numbers; could not read {type(value).__name__} "
            f"as one ({e})."
        ) from None
    if allow_bool and arr.dtype == np.bool_:
        return arr
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(
            f"`{name}` must hold real numbers (integer or float); got dtype {arr.dtype}."
            + (" Take the real part first (np.real)." if np.iscomplexobj(arr) else "")
        )
    if finite:
        check_finite(name, arr)
    return arr


def check_finite(name: str, arr) -> None:
    """Raise `ValueError` naming `name` and the first non-finite entry of `arr`."""
    arr = np.asarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any() and arr.ndim == 0:
            raise ValueError(f"`{name}` must be finite; got {arr.item()}.")
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"`{name}` must be finite; it holds {int(bad.sum())} NaN or infinite "
                f"value(s), the first ({arr[where]}) at index {where}. Remove or replace "
                "them first."
            )


def is_traced(*values) -> bool:
    """Whether any value is a JAX tracer (inside `jit`/`vmap`/`grad`): concrete
    checks of values are then impossible and are skipped."""
    import jax

    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


def prng_key(name: str, key):
    """`key` if it is a JAX PRNG key (typed, or raw `uint32` of shape `(2,)`)."""
    import jax
    import jax.numpy as jnp

    ok = isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    )
    if not ok:
        raise TypeError(f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got {key!r}.")
    return key


def check_scalar_loss(loss, params, args: tuple, *, name: str = "loss", call: str = "") -> None:
    """Check by abstract evaluation (no compute) that `loss(params, *args)` runs and
    returns a floating scalar, so that failures name the argument instead of surfacing
    from inside `jax.grad`."""
    import jax
    import jax.numpy as jnp

    call = call or f"{name}(params, *args)"
    if not callable(loss):
        raise TypeError(f"`{name}` must be callable as {call}; got {loss!r}.")
    try:
        out = jax.eval_shape(loss, params, *args)
    except Exception as e:
        raise ValueError(
            f"{call} failed: {type(e).__name__}: {e}\nCheck that `params` has the shapes "
            f"`{name}` expects and that its data comes through `args`."
        ) from None
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != ():
        raise ValueError(
            f"{call} must return a scalar (the mean loss); got "
            f"{'shape ' + str(shape) if shape is not None else type(out).__name__}."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{call} must return a floating-point scalar to be differentiated; got dtype "
            f"{dtype}. Compute it in floats (e.g. jnp.mean of float arrays, no integer casts)."
        )


def checked_array(name: str, value, *, finite: bool = True, allow_bool: bool = False):
    """`value` as a JAX array of real numbers, checked as `real_array` does; a
    traced value (inside `jit`/`vmap`) is passed through unchecked."""
    import jax.numpy as jnp

    if is_traced(value):
        return jnp.asarray(value)
    arr = real_array(name, value, finite=finite, allow_bool=allow_bool)
    return value if _is_jax_array(value) else jnp.asarray(arr)


def _is_jax_array(value) -> bool:
    import jax

    return isinstance(value, jax.Array)
