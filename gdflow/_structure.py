r"""Closed-form structure of a problem's loss, carried as a typed value.

A [`gdflow.Problem`][] built from an arbitrary loss has no structure (`None`). The
constructors of [`gdflow.problems`][] for losses with known structure attach one of the
final classes below; structure-aware solvers dispatch on its *type*, never on a label:
[`gdflow.Exact`][] solves local flows in closed form for the quadratic structures
(`LeastSquares`, `Quadratic`, `TwoPoints`), and [`gdflow.LocalODE`][] reduces the local
flows of generalised linear models (`LeastSquares`, `Logistic`, `Softmax`) to the batch's
row space.

A structure *defines* the loss: each class holds its per-batch loss as `loss`, and a
`Problem` given a structure must use exactly that function (checked at construction), so
a solver that trusts the structure cannot be fed a different loss.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AbstractGLM",
    "AbstractStructure",
    "LeastSquares",
    "Logistic",
    "Quadratic",
    "Softmax",
    "TwoPoints",
]


def _require(structure: str, data, keys: tuple[str, ...]) -> None:
    if not isinstance(data, dict) or any(k not in data for k in keys):
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"`structure`={structure}() needs `data` to be a dict with keys {list(keys)}; "
            f"got {have}. Build the problem with the matching constructor of gdflow.problems."
        )


class AbstractStructure(eqx.Module):
    """Base class of loss structures. Subclasses are final and define `loss` and
    `check(data, params0)`."""

    loss: eqx.AbstractClassVar[staticmethod]

    @abc.abstractmethod
    def check(self, data, params0) -> None:
        """Raise `ValueError` if `data` and `params0` do not have this structure's layout."""


class AbstractGLM(AbstractStructure):
    r"""A generalised linear model: the batch gradient is $\frac1b X_B^\top r(X_B\theta)$.

    Subclasses define the residual $r(z) - y$ of the predictions $z = X_B\theta$ and
    where the targets live in the data.
    """

    targets_key: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def residual(self, z, targets):
        """$r(z) - y$: the derivative of the per-example loss in the prediction $z$."""


def _vector_params(structure: str, params0, p: int) -> None:
    if jnp.ndim(params0) != 1 or jnp.shape(params0)[0] != p:
        raise ValueError(
            f"`structure`={structure}() needs a parameter vector of shape ({p},); "
            f"`params0` has shape {jnp.shape(params0)}."
        )


def _lls_loss(params, batch):
    r = batch["X"] @ params - batch["y"]
    return 0.5 * jnp.mean(r**2)


class LeastSquares(AbstractGLM):
    r"""Linear least squares, per-example $\tfrac12(x_i^\top\theta - y_i)^2$.

    Data `{"X": (n, p), "y": (n,)}`, parameters `(p,)`.
    """

    loss: ClassVar = staticmethod(_lls_loss)
    targets_key: ClassVar[str] = "y"

    def check(self, data, params0) -> None:
        _require("LeastSquares", data, ("X", "y"))
        _vector_params("LeastSquares", params0, np.shape(data["X"])[-1])

    def residual(self, z, targets):
        return z - targets


def _logistic_loss(params, batch):
    z = batch["X"] @ params
    return jnp.mean(jax.nn.softplus(z) - batch["y"] * z)


class Logistic(AbstractGLM):
    r"""Logistic regression, per-example $\log(1 + e^{z_i}) - y_i z_i$, $z_i = x_i^\top\theta$.

    Data `{"X": (n, p), "y": (n,)}` with labels in $\{0, 1\}$, parameters `(p,)`.
    """

    loss: ClassVar = staticmethod(_logistic_loss)
    targets_key: ClassVar[str] = "y"

    def check(self, data, params0) -> None:
        _require("Logistic", data, ("X", "y"))
        _vector_params("Logistic", params0, np.shape(data["X"])[-1])

    def residual(self, z, targets):
        return jax.nn.sigmoid(z) - targets


def _softmax_loss(params, batch):
    z = batch["X"] @ params
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.sum(batch["Y"] * z, axis=-1))


class Softmax(AbstractGLM):
    r"""Softmax regression (cross-entropy), predictions $z_i = \Theta^\top x_i \in \mathbb R^K$.

    Data `{"X": (n, p), "Y": (n, K)}` one-hot, parameters `(p, K)`.
    """

    loss: ClassVar = staticmethod(_softmax_loss)
    targets_key: ClassVar[str] = "Y"

    def check(self, data, params0) -> None:
        _require("Softmax", data, ("X", "Y"))
        p, K = np.shape(data["X"])[-1], np.shape(data["Y"])[-1]
        if jnp.shape(params0) != (p, K):
            raise ValueError(
                f"`structure`=Softmax() needs parameters of shape ({p}, {K}); `params0` has "
                f"shape {jnp.shape(params0)}."
            )

    def residual(self, z, targets):
        return jax.nn.softmax(z, axis=-1) - targets


def _quadratic_loss(params, batch):
    r = params[None, :] - batch["c"]
    return 0.5 * jnp.mean(jnp.einsum("ni,nij,nj->n", r, batch["H"], r))


class Quadratic(AbstractStructure):
    r"""Per-example quadratics $\tfrac12(\theta - c_i)^\top H_i(\theta - c_i)$.

    Data `{"H": (n, d, d), "c": (n, d)}`, parameters `(d,)`.
    """

    loss: ClassVar = staticmethod(_quadratic_loss)

    def check(self, data, params0) -> None:
        _require("Quadratic", data, ("H", "c"))
        _vector_params("Quadratic", params0, np.shape(data["c"])[-1])
        H = np.asarray(data["H"])
        if not isinstance(data["H"], jax.core.Tracer) and not np.allclose(
            H, np.swapaxes(H, -1, -2), rtol=1e-10, atol=1e-12
        ):
            # The closed forms use an eigendecomposition of the (symmetric) Hessian.
            raise ValueError(
                "`structure`=Quadratic() needs symmetric matrices `data['H']`; pass "
                "(H + H.T) / 2 (the same loss)."
            )


def _two_point_loss(params, batch):
    return 0.5 * jnp.mean(jnp.sum((batch["x"] - params[None, :]) ** 2, axis=-1))


class TwoPoints(AbstractStructure):
    r"""Per-example $\tfrac12|x_i - \theta|^2$ (the minibatch text's two points).

    Data `{"x": (n, d)}`, parameters `(d,)`.
    """

    loss: ClassVar = staticmethod(_two_point_loss)

    def check(self, data, params0) -> None:
        _require("TwoPoints", data, ("x",))
        _vector_params("TwoPoints", params0, np.shape(data["x"])[-1])
