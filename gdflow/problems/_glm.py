"""Least squares and generalised linear models (logistic, softmax regression)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._problem import Problem
from .._structure import LeastSquares, Logistic, Softmax
from .._validate import checked_array, nonnegative_finite, positive_int, prng_key


def _matrix(X):
    """The design matrix, checked: real, finite, (n, p) with n, p >= 1; floats."""
    X = checked_array("X", X)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a matrix (n, p); got shape {X.shape}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"`X` must have at least one example and one feature; got shape {X.shape}."
        )
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(float)
    return X


def _design(X, y_name: str, y, *, y_ndim: tuple[int, ...]):
    X = _matrix(X)
    y = checked_array(y_name, y, allow_bool=True)  # boolean labels, e.g. digits == 1
    if y.ndim not in y_ndim or y.shape[0] != X.shape[0]:
        want = "(n,)" if y_ndim == (1,) else "(n, K)"
        raise ValueError(
            f"`{y_name}` must have shape {want} with n={X.shape[0]} matching `X`; got shape "
            f"{y.shape}."
        )
    return X, y


def _params0(params0, shape, dtype):
    if params0 is None:
        return jnp.zeros(shape, dtype)
    p0 = checked_array("params0", params0)
    if p0.shape != shape:
        raise ValueError(f"`params0` must have shape {shape}; got {p0.shape}.")
    return p0.astype(dtype)


def least_squares(X, y, params0=None, *, name: str = "least_squares") -> Problem:
    r"""Linear least squares, per-example $\tfrac12(x_i^\top\theta - y_i)^2$.

    The mean over a batch $B$ of size `b` has gradient
    $\frac1b X_B^\top(X_B\theta - y_B)$, as in the splitting text. Data
    `{"X": (n, p), "y": (n,)}`; `params0` defaults to zeros.

    **Raises:** `TypeError` for non-numeric or complex `X`, `y` or `params0`;
    `ValueError` for NaN or infinite entries (naming the argument and the first index),
    an `X` that is not `(n, p)` with `n, p >= 1`, or shapes that disagree.
    """
    X, y = _design(X, "y", y, y_ndim=(1,))
    y = y.astype(X.dtype)
    return Problem(
        LeastSquares.loss,
        {"X": X, "y": y},
        _params0(params0, (X.shape[1],), X.dtype),
        name=name,
        structure=LeastSquares(),
    )


def random_least_squares(
    n: int = 10_000,
    p: int = 500,
    noise: float = 0.0,
    key=None,
    *,
    params0=None,
    dtype=None,
) -> Problem:
    r"""The splitting text's random linear system: $X_{ij} \sim N(0,1)$,
    $y = X\theta^\star + \sigma\varepsilon$ with $\theta^\star \sim N(0, I)$.

    **Arguments:** `n` × `p` the size (the text: 10000 × 500), `noise` the standard
    deviation $\sigma$ of the residual, `key` a `jax.random` key (default key 0).
    `dtype` defaults to JAX's default float (float64 when x64 is enabled).
    """
    n = positive_int("n", n)
    p = positive_int("p", p)
    noise = nonnegative_finite("noise", noise)
    key = jax.random.key(0) if key is None else prng_key("key", key)
    dtype = jnp.result_type(float) if dtype is None else dtype
    try:
        floating = jnp.issubdtype(dtype, jnp.floating)
    except TypeError:
        floating = False
    if not floating:
        raise TypeError(f"`dtype` must be a floating dtype such as jnp.float32; got {dtype!r}.")
    kx, kt, ke = jax.random.split(key, 3)
    X = jax.random.normal(kx, (n, p), dtype)
    theta = jax.random.normal(kt, (p,), dtype)
    y = X @ theta + noise * jax.random.normal(ke, (n,), dtype)
    return least_squares(X, y, params0, name=f"random_least_squares_{n}x{p}")


def logistic(X, y, params0=None, *, name: str = "logistic") -> Problem:
    r"""Binary logistic regression, per-example
    $-[y_i\log\sigma(x_i^\top\theta) + (1-y_i)\log(1-\sigma(x_i^\top\theta))]$.

    Labels `y` in {0, 1}; batch gradient $\frac1b X_B^\top(\sigma(X_B\theta)-y_B)$.
    Data `{"X": (n, p), "y": (n,)}`; `params0` defaults to zeros.

    **Raises:** as [`gdflow.problems.least_squares`][], and `ValueError` for labels other than 0, 1.
    """
    X, y = _design(X, "y", y, y_ndim=(1,))
    yv = np.asarray(y)
    if not np.all((yv == 0) | (yv == 1)):
        bad = yv[(yv != 0) & (yv != 1)]
        raise ValueError(
            f"`y` must hold labels 0 and 1 only; found {bad.size} other value(s), e.g. "
            f"{bad[0].item()!r}. Map your two classes to {{0, 1}}."
        )
    return Problem(
        Logistic.loss,
        {"X": X, "y": y.astype(X.dtype)},
        _params0(params0, (X.shape[1],), X.dtype),
        name=name,
        structure=Logistic(),
    )


def one_hot(Y, num_classes: int | None = None, dtype=float):
    """Integer labels `(n,)` to one-hot `(n, K)`; one-hot input is returned as is.

    **Raises:** `ValueError` for labels outside `0..num_classes-1` (JAX's one-hot
    would turn them into all-zero rows), non-integer 1-d labels, rows of a 2-d `Y`
    that are not probability vectors (entries in [0, 1] summing to 1), or a
    `num_classes` that disagrees with `Y`.
    """
    Y = checked_array("Y", Y, allow_bool=True)
    if num_classes is not None:
        num_classes = positive_int("num_classes", num_classes)
    if Y.ndim == 2:
        Yn = np.asarray(Y, dtype=np.float64)
        if num_classes is not None and Y.shape[1] != num_classes:
            raise ValueError(
                f"`num_classes`={num_classes} disagrees with one-hot `Y` of {Y.shape[1]} columns."
            )
        if Yn.size and (
            Yn.min() < 0 or Yn.max() > 1 or not np.allclose(Yn.sum(axis=1), 1.0, atol=1e-5)
        ):
            raise ValueError(
                "`Y` of shape (n, K) must hold one-hot (or probability) rows: entries in "
                "[0, 1] that sum to 1. Pass integer class labels (n,) instead."
            )
        return Y.astype(dtype)
    if Y.ndim != 1 or not jnp.issubdtype(Y.dtype, jnp.integer):
        raise ValueError(
            f"`Y` must be integer class labels (n,) or one-hot rows (n, K); got dtype "
            f"{Y.dtype} and shape {Y.shape}. Cast float labels with Y.astype(int)."
        )
    Yn = np.asarray(Y)
    lo, hi = (int(Yn.min()), int(Yn.max())) if Yn.size else (0, -1)
    K = hi + 1 if num_classes is None else num_classes
    if lo < 0 or hi >= K:
        raise ValueError(
            f"`Y` must hold class labels in 0..{K - 1}"
            + ("" if num_classes is None else f" (num_classes={num_classes})")
            + f"; got labels from {lo} to {hi}. Map your classes to 0..K-1"
            + ("." if num_classes is None else ", or raise `num_classes`.")
        )
    return jax.nn.one_hot(Y, K, dtype=dtype)


def softmax(X, Y, params0=None, *, num_classes: int | None = None, name: str = "softmax"):
    r"""Softmax (multinomial logistic) regression: one linear layer and cross-entropy,
    per-example $\log\sum_k e^{(\Theta^\top x_i)_k} - y_i^\top\Theta^\top x_i$.

    `Y` integer classes `(n,)` or one-hot `(n, K)`; params $\Theta$ of shape
    `(p, K)` (default zeros). Data `{"X": (n, p), "Y": (n, K)}` (one-hot).

    **Raises:** as [`gdflow.problems.least_squares`][] and [`gdflow.problems.one_hot`][] (labels outside
    `0..K-1`, rows that are not one-hot or probability vectors).
    """
    X = _matrix(X)
    Yh = one_hot(Y, num_classes, X.dtype)
    X, Yh = _design(X, "Y", Yh, y_ndim=(2,))
    return Problem(
        Softmax.loss,
        {"X": X, "Y": Yh},
        _params0(params0, (X.shape[1], Yh.shape[1]), X.dtype),
        name=name,
        structure=Softmax(),
    )
