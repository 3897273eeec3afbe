r"""The two convolutional networks of Elkabetz & Cohen's experiments (MNIST, 28×28).

* `"subsample"`: the 28×28 input zero-padded by 2 (32×32), conv 1→6 with 5×5 kernels at
  stride 2 (14×14), ReLU, conv 6→16 with 5×5 kernels at stride 2 (5×5), ReLU, then fully
  connected 400-120-84-10 with ReLU between; no biases anywhere (positively homogeneous,
  as their theorem asks).
* `"maxpool"` (LeNet-style): the same convolutions at stride 1, each followed by ReLU and
  a 2×2 max-pool (32 → 28 → 14, 14 → 10 → 5), then 400-120-84-10, with biases.

Reference: Elkabetz & Cohen, "Continuous vs. Discrete Optimization of Deep Neural
Networks", NeurIPS 2021, Section 5 and Appendix (experimental details).
"""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp

from .._problem import Problem
from .._validate import nonnegative_finite, one_of
from ._glm import one_hot
from ._mlp import _check_labels

KINDS = ("subsample", "maxpool")
_FC = (400, 120, 84, 10)


def _patches(x, k: int, s: int):
    """`(n, H, W, C)` to `(n, H', W', k·k·C)`: every k×k window at stride s, flattened.

    Convolution as patches @ kernel: on the CPU, XLA's convolution (and above all its
    weight gradient) measured 3× slower than this for these small nets (1000 images,
    float64: 1.1 s against 0.36 s a gradient step of "subsample").
    """
    n, H, W, C = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    cols = [
        x[:, i : i + s * (Ho - 1) + 1 : s, j : j + s * (Wo - 1) + 1 : s, :]
        for i in range(k)
        for j in range(k)
    ]
    return jnp.concatenate(cols, axis=-1)


def _maxpool(x):
    n, H, W, C = x.shape
    return jnp.max(x.reshape(n, H // 2, 2, W // 2, 2, C), axis=(2, 4))


def conv_apply(params, X, *, kind: str = "subsample"):
    """Forward pass of one of the two nets on images `X` `(n, 784)` or `(n, 28, 28)`.

    `params` is a dict `{"conv": [w1, w2], "fc": [W1, W2, W3]}` (kernels as matrices
    `(5·5·in, out)`, rows ordered (row, column, channel) of the window; dense weights
    `(fan_in, fan_out)`) and, for `"maxpool"`, `"conv_b"` and `"fc_b"` lists of biases.
    """
    n = X.shape[0]
    h = jnp.reshape(X, (n, 28, 28, 1))
    h = jnp.pad(h, ((0, 0), (2, 2), (2, 2), (0, 0)))
    bias = kind == "maxpool"
    for i, w in enumerate(params["conv"]):
        h = _patches(h, 5, 2 if kind == "subsample" else 1) @ w
        if bias:
            h = h + params["conv_b"][i]
        h = jax.nn.relu(h)
        if kind == "maxpool":
            h = _maxpool(h)
    h = jnp.reshape(h, (n, -1))  # (n, 5·5·16 = 400)
    for i, W in enumerate(params["fc"]):
        h = h @ W
        if bias:
            h = h + params["fc_b"][i]
        if i < len(params["fc"]) - 1:
            h = jax.nn.relu(h)
    return h


def _cross_entropy(kind, params, batch):
    z = conv_apply(params, batch["X"], kind=kind)
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.sum(batch["Y"] * z, axis=-1))


@ft.cache
def _loss_fn(kind: str):
    # one function object per kind: two problems of one net share compilations
    return ft.partial(_cross_entropy, kind)


def _init(key, shape, fan_in, fan_out, init, dtype):
    if init == "xavier":
        a = (6.0 / (fan_in + fan_out)) ** 0.5
        return jax.random.uniform(key, shape, dtype, -a, a)
    return (2.0 / fan_in) ** 0.5 * jax.random.normal(key, shape, dtype)  # He, ReLU gain


def conv_net(
    X,
    Y,
    kind: str = "subsample",
    *,
    key=None,
    init: str = "xavier",
    init_scale: float = 1.0,
    name: str | None = None,
) -> Problem:
    r"""One of Elkabetz & Cohen's two convolutional nets on 28×28 images, cross-entropy.

    **Arguments:**

    - `X`: images `(n, 784)` or `(n, 28, 28)`; `Y`: integer classes `0..9` `(n,)` or
      one-hot `(n, 10)`.
    - `kind`: `"subsample"` (strided convolutions, no biases) or `"maxpool"` (LeNet:
      stride 1, 2×2 max-pools, biases); see the module docstring for the layers.
    - `key`: `jax.random` key of the initialisation (default key 0).
    - `init`: `"xavier"` (uniform, $a = \sqrt{6/(\mathrm{fan\_in}+\mathrm{fan\_out})}$,
      fans of a kernel counted as in PyTorch: channels × 25) or `"he"`
      ($N(0, 2/\mathrm{fan\_in})$). Biases start at zero (a departure from PyTorch's
      default uniform biases).
    - `init_scale`: multiplies the initial weights.

    **Returns:** a [`gdflow.Problem`][] with params `{"conv", "fc"[, "conv_b", "fc_b"]}`.

    **Raises:** `ValueError` for images that are not 28×28, labels outside `0..9`, or an
    unknown `kind` / `init`.

    Cost per gradient: about 0.6 MFLOP (subsample) or 1.3 MFLOP (maxpool) per image,
    forward and backward.
    """
    one_of("kind", kind, KINDS)
    one_of("init", init, ("xavier", "he"))
    init_scale = nonnegative_finite("init_scale", init_scale)
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(float)
    if X.ndim == 3:
        X = X.reshape(X.shape[0], -1)
    if X.ndim != 2 or X.shape[1] != 784:
        raise ValueError(
            f"`X` must hold 28×28 images, shape (n, 784) or (n, 28, 28); got {X.shape}."
        )
    Yd = one_hot(_check_labels(Y, X.shape[0], 10), 10, X.dtype)
    if Yd.shape != (X.shape[0], 10):
        raise ValueError(f"`Y` must be (n,) classes 0..9 or (n, 10) one-hot; got {Yd.shape}.")
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, 5)
    dt = X.dtype
    convs = [
        _init(keys[0], (25, 6), 25, 6 * 25, init, dt),
        _init(keys[1], (150, 16), 6 * 25, 16 * 25, init, dt),
    ]
    fcs = [
        _init(keys[2 + i], (a, b), a, b, init, dt)
        for i, (a, b) in enumerate(zip(_FC[:-1], _FC[1:]))
    ]
    params = {
        "conv": [init_scale * w for w in convs],
        "fc": [init_scale * W for W in fcs],
    }
    if kind == "maxpool":
        params["conv_b"] = [jnp.zeros(6, dt), jnp.zeros(16, dt)]
        params["fc_b"] = [jnp.zeros(b, dt) for b in _FC[1:]]
    return Problem(_loss_fn(kind), {"X": X, "Y": Yd}, params, name=name or f"conv_{kind}")


__all__ = ["conv_net", "conv_apply", "KINDS"]
