"""The engine's finite checks against NumPy on every mix of finite, ±inf and NaN values."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdflow._tree import all_finite, finite_code

VALUES = [1.0, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("jit", [False, True])
def test_all_finite_and_finite_code_match_numpy(jit):
    af = jax.jit(all_finite) if jit else all_finite
    fc = jax.jit(finite_code) if jit else finite_code
    for a0, a1, b0, b1 in itertools.product(VALUES, repeat=4):
        a = {"x": jnp.array([a0, 2.0]), "y": jnp.array([[a1]]), "z": jnp.zeros((0, 3))}
        b = {"x": jnp.array([3.0, b0]), "y": jnp.array([[b1]]), "z": jnp.zeros((0, 3))}
        fa = bool(np.all(np.isfinite([a0, a1])))
        fb = bool(np.all(np.isfinite([b0, b1])))
        assert bool(af(a)) == fa and bool(af(b)) == fb
        assert int(fc(a, b)) == (2 if not fa else 1 if not fb else 0)


def test_finite_checks_edge_cases():
    assert bool(all_finite({})) and int(finite_code({}, {})) == 0
    assert bool(all_finite(jnp.arange(3)))  # integers are finite
    assert bool(all_finite(jnp.array([1 + 1j])))
    assert not bool(all_finite(jnp.array([np.inf * 1j])))
    assert not bool(all_finite(jnp.array([np.nan], jnp.float32)))
    with pytest.raises(ValueError, match="same structure"):
        finite_code({"a": jnp.ones(2)}, {"a": jnp.ones(2), "b": jnp.ones(1)})
