"""Least squares and generalised linear models (logistic, softmax regression)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._problem import Problem
from .._structure import LeastSquares, Logistic, Softmax
from .._validate import nonnegative_finite, positive_int


def _design(X, y_name: str, y, *, y_ndim: tuple[int, ...]):
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(float)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a matrix (n, p); got shape {X.shape}.")
    y = jnp.asarray(y)
    if y.ndim not in y_ndim or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"`{y_name}` must have leading size n={X.shape[0]} matching `X`; got shape {y.shape}."
        )
    return X, y


def _params0(params0, shape, dtype):
    if params0 is None:
        return jnp.zeros(shape, dtype)
    p0 = jnp.asarray(params0, dtype)
    if p0.shape != shape:
        raise ValueError(f"`params0` must have shape {shape}; got {p0.shape}.")
    return p0


def least_squares(X, y, params0=None, *, name: str = "least_squares") -> Problem:
    r"""Linear least squares, per-example :math:`\tfrac12(x_i^\top\theta - y_i)^2`.

    The mean over a batch :math:`B` of size ``b`` has gradient
    :math:`\frac1b X_B^\top(X_B\theta - y_B)`, as in the splitting text. Data
    ``{"X": (n, p), "y": (n,)}``; ``params0`` defaults to zeros.
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
    r"""The splitting text's random linear system: :math:`X_{ij} \sim N(0,1)`,
    :math:`y = X\theta^\star + \sigma\varepsilon` with :math:`\theta^\star \sim N(0, I)`.

    **Arguments:** ``n`` × ``p`` the size (the text: 10000 × 500), ``noise`` the standard
    deviation :math:`\sigma` of the residual, ``key`` a ``jax.random`` key (default key 0).
    ``dtype`` defaults to JAX's default float (float64 when x64 is enabled).
    """
    n = positive_int("n", n)
    p = positive_int("p", p)
    noise = nonnegative_finite("noise", noise)
    key = jax.random.key(0) if key is None else key
    dtype = jnp.result_type(float) if dtype is None else dtype
    kx, kt, ke = jax.random.split(key, 3)
    X = jax.random.normal(kx, (n, p), dtype)
    theta = jax.random.normal(kt, (p,), dtype)
    y = X @ theta + noise * jax.random.normal(ke, (n,), dtype)
    return least_squares(X, y, params0, name=f"random_least_squares_{n}x{p}")


def logistic(X, y, params0=None, *, name: str = "logistic") -> Problem:
    r"""Binary logistic regression, per-example
    :math:`-[y_i\log\sigma(x_i^\top\theta) + (1-y_i)\log(1-\sigma(x_i^\top\theta))]`.

    Labels ``y`` in {0, 1}; batch gradient :math:`\frac1b X_B^\top(\sigma(X_B\theta)-y_B)`.
    Data ``{"X": (n, p), "y": (n,)}``; ``params0`` defaults to zeros.
    """
    X, y = _design(X, "y", y, y_ndim=(1,))
    yv = np.asarray(y)
    if not np.all((yv == 0) | (yv == 1)):
        raise ValueError("`y` must hold labels 0 and 1 only; map your two classes to {0, 1}.")
    return Problem(
        Logistic.loss,
        {"X": X, "y": y.astype(X.dtype)},
        _params0(params0, (X.shape[1],), X.dtype),
        name=name,
        structure=Logistic(),
    )


def one_hot(Y, num_classes: int | None = None, dtype=float):
    """Integer labels ``(n,)`` to one-hot ``(n, K)``; one-hot input is returned as is."""
    Y = jnp.asarray(Y)
    if Y.ndim == 2:
        return Y.astype(dtype)
    if Y.ndim != 1 or not jnp.issubdtype(Y.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integer classes (n,) or one-hot (n, K); got {Y.dtype} {Y.shape}."
        )
    K = int(Y.max()) + 1 if num_classes is None else num_classes
    return jax.nn.one_hot(Y, K, dtype=dtype)


def softmax(X, Y, params0=None, *, num_classes: int | None = None, name: str = "softmax"):
    r"""Softmax (multinomial logistic) regression: one linear layer and cross-entropy,
    per-example :math:`\log\sum_k e^{(\Theta^\top x_i)_k} - y_i^\top\Theta^\top x_i`.

    ``Y`` integer classes ``(n,)`` or one-hot ``(n, K)``; params :math:`\Theta` of shape
    ``(p, K)`` (default zeros). Data ``{"X": (n, p), "Y": (n, K)}`` (one-hot).
    """
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(float)
    Yh = one_hot(Y, num_classes, X.dtype)
    X, Yh = _design(X, "Y", Yh, y_ndim=(2,))
    return Problem(
        Softmax.loss,
        {"X": X, "Y": Yh},
        _params0(params0, (X.shape[1], Yh.shape[1]), X.dtype),
        name=name,
        structure=Softmax(),
    )
