"""Sharpness along GD and flow paths against dense Hessian eigenvalues."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdflow as gf
from gdflow._sharpness import _crossing, sharpness_along, sharpness_gd


def _mlp():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(24, 3)))
    y = jnp.asarray(rng.normal(size=(24,)))
    p = {"W0": jnp.asarray(rng.normal(size=(3, 6))), "W1": jnp.asarray(rng.normal(size=(6,)))}

    def loss(p, batch):
        x, y = batch
        return jnp.mean((jax.nn.swish(x @ p["W0"]) @ p["W1"] - y) ** 2)

    return gf.Problem(loss, (x, y), p)


def _dense_top(prob, params, k):
    x, unravel = jax.flatten_util.ravel_pytree(params)
    H = jax.hessian(lambda z: prob.loss(unravel(z), prob.data))(x)
    return np.sort(np.linalg.eigvalsh(np.asarray(H)))[::-1][:k]


def test_sharpness_gd_matches_dense_eigh_at_gd_iterates():
    prob = _mlp()
    lr, steps, every = 0.05, 60, 20
    path = sharpness_gd(prob, lr, steps, every=every, k=2, guard=2, tol=1e-10, max_iters=200)
    gd = gf.gd(prob, lr, steps, save_every=every)
    assert len(path.ts) == len(gd) == 4
    np.testing.assert_allclose(path.ts, np.asarray(gd.ts), rtol=1e-12)
    for i in range(len(gd)):
        np.testing.assert_allclose(path.eigenvalues[i], _dense_top(prob, gd.at(i), 2), rtol=1e-8)
    np.testing.assert_allclose(path.loss, np.asarray(gd.loss), rtol=1e-10)
    assert path.grad_evals == steps and path.hvps > 0
    assert path.flat_params is None


def test_sharpness_gd_keeps_every_loss_and_the_iterates_at_its_points():
    """The loss at every step and, with `save_params`, the iterates at the points: those
    of `gf.gd` saving every step, whose iterates are an independent run of the same map."""
    prob = _mlp()
    lr, steps, every = 0.05, 30, 10
    path = sharpness_gd(prob, lr, steps, every=every, k=1, guard=1, save_params=True)
    gd = gf.gd(prob, lr, steps, save_every=1)
    assert path.step_loss.shape == (steps + 1,)
    np.testing.assert_allclose(path.step_loss, np.asarray(gd.loss), rtol=1e-12)
    np.testing.assert_allclose(path.flat_params, np.asarray(gd.flat())[::every], rtol=1e-12)
    with pytest.raises(TypeError, match="save_params"):
        sharpness_gd(prob, lr, steps, every=every, save_params=1)


def test_sharpness_gd_over_many_compiled_calls_is_one_run_and_shares_a_compilation():
    """75 blocks take three compiled calls of 32: losses are those of `gf.gd` (an
    independent run), eigenvalues those of a dense `eigh` on both sides of the calls'
    boundaries; another step size and length (40 blocks) traces the loss no more."""
    base = _mlp()
    traced = []

    def loss(p, batch):
        traced.append(1)
        return base.loss(p, batch)

    prob = gf.Problem(loss, base.data, base.params0)
    lr, every, blocks = 0.05, 2, 75
    steps = every * blocks
    path = sharpness_gd(prob, lr, steps, every=every, k=1, guard=1, tol=1e-10, max_iters=200)
    assert len(traced) > 0
    first = len(traced)
    gd = gf.gd(base, lr, steps, save_every=1)
    assert path.eigenvalues.shape == (blocks + 1, 1) and path.step_loss.shape == (steps + 1,)
    np.testing.assert_allclose(path.step_loss, np.asarray(gd.loss), rtol=1e-12)
    for i in (0, 31, 32, 64, blocks):
        top = _dense_top(base, gd.at(i * every), 1)
        np.testing.assert_allclose(path.eigenvalues[i], top, rtol=1e-8)
    assert path.hvps > 0
    again = sharpness_gd(prob, 0.02, every * 40, every=every, tol=1e-10, max_iters=200)
    assert len(traced) == first  # another lr and length: the same compilation
    want = np.asarray(gf.gd(base, 0.02, every * 40).loss)
    np.testing.assert_allclose(again.step_loss, want, rtol=1e-12)
    saved = sharpness_gd(prob, 0.03, every * 40, every=every, save_params=True)
    gd2 = gf.gd(base, 0.03, every * 40, save_every=every)
    np.testing.assert_allclose(saved.flat_params, np.asarray(gd2.flat()), rtol=1e-12)


def test_sharpness_gd_is_one_run_however_many_blocks_a_call_takes(monkeypatch):
    """10 blocks in one call (16 slots), in calls of 4, 4 and 2, and one block a call
    (outputs capped at one block's bytes): the same eigenvalues, HVP count, losses and
    iterates."""
    from gdflow import _sharpness

    prob = _mlp()
    kw = dict(every=2, k=1, guard=1, tol=1e-10, max_iters=200, save_params=True)
    one = sharpness_gd(prob, 0.05, 20, **kw)
    for name, value in (("_CHUNK", 4), ("_CHUNK_BYTES", 1)):
        with monkeypatch.context() as m:
            m.setattr(_sharpness, name, value)
            other = sharpness_gd(prob, 0.05, 20, **kw)
        np.testing.assert_allclose(other.eigenvalues, one.eigenvalues, rtol=1e-12)
        np.testing.assert_allclose(other.step_loss, one.step_loss, rtol=1e-12)
        np.testing.assert_allclose(other.flat_params, one.flat_params, rtol=1e-12)
        assert other.hvps == one.hvps and len(other.ts) == 11


def test_sharpness_along_a_flow_matches_dense_eigh():
    prob = _mlp()
    flow = gf.gradient_flow(prob, 2.0, ts=np.linspace(0, 2.0, 5))
    path = sharpness_along(prob, flow, lr=0.3, k=1, guard=2, tol=1e-10, max_iters=200)
    for i in range(len(flow)):
        assert path.sharpness[i] == pytest.approx(_dense_top(prob, flow.at(i), 1)[0], rel=1e-8)


def test_crossing_time_interpolates():
    ts = np.array([0.0, 1.0, 2.0, 3.0])
    lam = np.array([10.0, 15.0, 25.0, 30.0])  # lr*lam: 1.0, 1.5, 2.5, 3.0 with lr = 0.1
    t, i = _crossing(ts, lam, 0.1)
    assert i == 2 and t == pytest.approx(1.5)
    assert _crossing(ts, lam, 0.01) == (None, None)


def test_quadratic_crossing_and_checks():
    prob = gf.problems.quadratic(jnp.diag(jnp.array([1.0, 30.0])), params0=jnp.ones(2))
    path = sharpness_gd(prob, 0.1, 20, every=10, k=1, guard=1)
    np.testing.assert_allclose(path.sharpness, 30.0, rtol=1e-12)
    assert path.crossing_time == 0.0
    with pytest.raises(ValueError, match="multiple"):
        sharpness_gd(prob, 0.1, 25, every=10)
    with pytest.raises(ValueError, match="guard"):
        sharpness_gd(prob, 0.1, 20, every=10, k=2, guard=1)
    with pytest.raises(TypeError, match="Trajectory"):
        sharpness_along(prob, "x")
