"""Fully connected networks (the neural-network text's setting)."""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp

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
    """Forward pass: ``X @ W1 -> act -> ... -> @ WL`` (no activation after the last layer).

    ``params`` is a list of layers; a layer is a weight matrix ``(fan_in, fan_out)`` or,
    with biases, a dict ``{"W": ..., "b": ...}``.
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
    slope: float = 0.01,
    name: str | None = None,
) -> Problem:
    r"""A fully connected network :math:`f(x) = W_L\,\sigma(\cdots\sigma(W_1 x))`.

    **Arguments:**

    - ``X``: inputs ``(n, d)``; ``Y``: targets: integer classes ``(n,)`` or one-hot
      ``(n, K)`` for ``loss="cross_entropy"``, real ``(n,)`` or ``(n, K)`` for
      ``loss="mse"`` (per example :math:`\tfrac12|f(x_i)-y_i|^2`).
    - ``widths``: the **hidden** widths; input and output sizes come from ``X`` and ``Y``
      (the neural-network text's 784-50-50-10 is ``widths=(50, 50)`` on MNIST).
    - ``activation``: ``"linear"``, ``"relu"``, ``"leaky_relu"`` (negative ``slope``,
      default 0.01) or ``"tanh"``.
    - ``bias``: add biases (the text's networks have none).
    - ``key``: ``jax.random`` key of the initialisation (default key 0).
    - ``init_scale``: multiplies the initial weights, drawn as
      :math:`N(0, g^2/\mathrm{fan\_in})` with gain :math:`g = \sqrt2` for (leaky) ReLU and 1
      otherwise; small values give the near-zero initialisation of the deep linear result.

    **Returns:** a :class:`gdflow.Problem` with params a list of weight
    matrices ``(fan_in, fan_out)`` (dicts ``{"W", "b"}`` when ``bias``).
    """
    one_of("activation", activation, _ACTIVATIONS)
    one_of("loss", loss, ("cross_entropy", "mse"))
    init_scale = nonnegative_finite("init_scale", init_scale)
    widths = tuple(positive_int("widths", w) for w in widths)
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(float)
    if X.ndim != 2:
        raise ValueError(f"`X` must be a matrix (n, d); got shape {X.shape}.")
    if loss == "cross_entropy":
        Yd = one_hot(Y, None, X.dtype)
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
        W = init_scale * gain / fan_in**0.5 * jax.random.normal(k, (fan_in, fan_out), X.dtype)
        params.append({"W": W, "b": jnp.zeros(fan_out, X.dtype)} if bias else W)
    label = name or f"mlp_{activation}_{'-'.join(map(str, sizes))}"
    return Problem(
        _loss_fn(loss, activation, float(slope)),
        {"X": X, "Y": Yd},
        params,
        name=label,
    )
