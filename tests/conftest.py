import jax
import pytest

# Tests check numbers to 1e-12: float64 throughout. (The library itself never flips this.)
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.key(0)
