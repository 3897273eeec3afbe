"""Fully connected networks (the neural-network text's setting)."""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np

from .._problem import Problem
from .._validate import nonnegative_finite, one_of, positive_int
from ._glm import one_hot

_ACTIVATIONS = ("linear", "relu", "leaky_relu", "tanh")


def _activate(name: str, slope: float, x):
    if name == "linear":
        return x
    if name == "relu":
        return jax.nn.relu(x)
    if name == "leaky_relu":
        return jnp.where(x >= 0, x, slope * x)
    return jnp.tanh(x)


def mlp_apply(params, X, *, activation: str = "relu", slope: float = 0.01):
    """Forward pass: `X @ W1 -> act -> ... -> @ WL` (no activation after the last layer).

    `params` is a list of layers; a layer is a weight matrix `(fan_in, fan_out)` or,
    with biases, a dict `{"W": ..., "b": ...}`.
    """
    h = X
    for i, layer in enumerate(params):
        if isinstance(layer, dict):
            h = h @ layer["W"] + layer["b"]
        else:
            h = h @ layer
        if i < len(params) - 1:
            h = _activate(activation, slope, h)
    return h


def _cross_entropy(activation, slope, params, batch):
    z = mlp_apply(params, batch["X"], activation=activation, slope=slope)
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.sum(batch["Y"] * z, axis=-1))


def _mse(activation, slope, params, batch):
    z = mlp_apply(params, batch["X"], activation=activation, slope=slope)
    return 0.5 * jnp.mean(jnp.sum((z - batch["Y"]) ** 2, axis=-1))


# Losses are cached per (activation, slope) so that two problems with the same network
# share one function object, and jitted runners compile once for both.
@ft.cache
def _loss_fn(kind: str, activation: str, slope: float):
    base = _cross_entropy if kind == "cross_entropy" else _mse
    return ft.partial(base, activation, slope)


def _check_labels(Y, n: int, num_classes):
    """Integer labels must lie in 0..K-1 (a label -1 would become an all-zero one-hot row);
    one-hot targets pass through."""
    Y = np.asarray(Y)
    if Y.ndim != 1:
        return Y
    if Y.shape[0] != n:
        raise ValueError(f"`Y` must have leading size n={n}; got shape {Y.shape}.")
    if not np.issubdtype(Y.dtype, np.integer):
        if (
            np.issubdtype(Y.dtype, np.floating)
            and np.all(np.isfinite(Y))
            and np.all(Y == np.round(Y))
        ):
            Y = Y.astype(np.int64)
        else:
            raise ValueError(
                "`Y`: class labels for cross-entropy must be integers 0..K-1 (or one-hot "
                f"rows); got dtype {Y.dtype}."
            )
    if num_classes is not None:
        num_classes = positive_int("num_classes", num_classes)
    if Y.size and Y.min() < 0:
        raise ValueError(
            f"`Y`: class labels must be non-negative (found {Y.min()}); map your classes "
            "to 0..K-1."
        )
    if num_classes is not None and Y.size and Y.max() >= num_classes:
        raise ValueError(
            f"`Y`: label {Y.max()} is not below num_classes={num_classes}; labels must lie "
            f"in 0..{num_classes - 1}."
        )
    return Y


def mlp(
    X,
    Y,
    widths=(50, 50),
    activation: str = "relu",
    bias: bool = False,
    loss: str = "cross_entropy",
    key=None,
    *,
    init_scale: float = 1.0,
    init: str = "he",
    num_classes: int | None = None,
    slope: float = 0.01,
    name: str | None = None,
) -> Problem:
    r"""A fully connected network $f(x) = W_L\,\sigma(\cdots\sigma(W_1 x))$.

    **Arguments:**

    - `X`: inputs `(n, d)`; `Y`: targets: integer classes `(n,)` or one-hot
      `(n, K)` for `loss="cross_entropy"`, real `(n,)` or `(n, K)` for
      `loss="mse"` (per example $\tfrac12|f(x_i)-y_i|^2$).
    - `widths`: the **hidden** widths; input and output sizes come from `X` and `Y`
      (the neural-network text's 784-50-50-10 is `widths=(50, 50)` on MNIST).
    - `activation`: `"linear"`, `"relu"`, `"leaky_relu"` (negative `slope`,
      default 0.01) or `"tanh"`.
    - `bias`: add biases (the text's networks have none).
    - `key`: `jax.random` key of the initialisation (default key 0).
    - `init`: `"he"` draws weights $N(0, g^2/\mathrm{fan\_in})$ with gain
      $g = \sqrt2$ for (leaky) ReLU and 1 otherwise; `"xavier"` draws them
      uniformly on $[-a, a]$, $a = \sqrt{6/(\mathrm{fan\_in} +
      \mathrm{fan\_out})}$ (Glorot & Bengio 2010; PyTorch's `xavier_uniform_` with
      gain 1, the initialisation of Elkabetz & Cohen's experiments). Biases start at 0.
    - `init_scale`: multiplies the initial weights; small values give the near-zero
      initialisation of the deep linear result.
    - `num_classes`: for integer labels, the number of classes `K` (default: the
      largest label + 1); every label must lie in `0..K-1`.

    **Returns:** a [`gdflow.Problem`][] with params a list of weight
    matrices `(fan_in, fan_out)` (dicts `{"W", "b"}` when `bias`).
    """
    one_of("activation", activation, _ACTIVATIONS)
    one_of("loss", loss, ("cross_entropy", "mse"))
    one_of("init", init, ("he", "xavier"))
    init_scale = nonnegative_finite("init_scale", init_scale)
    widths = tuple(positive_int("widths", w) for w in widths)
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(float)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a matrix (n, d); got shape {X.shape}.")
    if loss == "cross_entropy":
        Yd = one_hot(_check_labels(Y, X.shape[0], num_classes), num_classes, X.dtype)
    else:
        Yd = jnp.asarray(Y, X.dtype)
        Yd = Yd[:, None] if Yd.ndim == 1 else Yd
    if Yd.ndim != 2 or Yd.shape[0] != X.shape[0]:
        raise ValueError(f"`Y` must have leading size n={X.shape[0]}; got shape {Yd.shape}.")
    sizes = (X.shape[1], *widths, Yd.shape[1])
    key = jax.random.key(0) if key is None else key
    gain = 2.0**0.5 if activation in ("relu", "leaky_relu") else 1.0
    params = []
    for fan_in, fan_out, k in zip(sizes[:-1], sizes[1:], jax.random.split(key, len(sizes) - 1)):
        if init == "he":
            W = gain / fan_in**0.5 * jax.random.normal(k, (fan_in, fan_out), X.dtype)
        else:
            a = (6.0 / (fan_in + fan_out)) ** 0.5
            W = jax.random.uniform(k, (fan_in, fan_out), X.dtype, -a, a)
        W = init_scale * W
        params.append({"W": W, "b": jnp.zeros(fan_out, X.dtype)} if bias else W)
    label = name or f"mlp_{activation}_{'-'.join(map(str, sizes))}"
    return Problem(
        _loss_fn(loss, activation, float(slope)),
        {"X": X, "Y": Yd},
        params,
        name=label,
    )
