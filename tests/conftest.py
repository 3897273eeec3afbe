import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdflow as gf

# Tests check numbers to 1e-12: float64 throughout. (The library itself never flips this.)
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def nonquadratic():
    """A smooth, non-quadratic loss bounded below (log-sum-exp of a linear map plus a
    quartic) on three parameters: a flow with no closed form, for fitted orders."""
    A = np.random.default_rng(5).standard_normal((6, 3))

    def loss(th, batch):
        z = batch["A"] @ th
        return jnp.mean(jax.nn.logsumexp(z) + 0.25 * jnp.sum(th**4) * jnp.ones(z.shape[:1]))

    return gf.Problem(loss, {"A": A[None]}, jnp.array([0.8, -0.5, 0.3]))
