"""Discrete runs against closed forms and independent NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdflow as gf


def _spd(d, seed=0, low=0.2, high=3.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return Q @ np.diag(np.linspace(low, high, d)) @ Q.T


def test_gd_quadratic_matches_matrix_power():
    H = _spd(4)
    c = np.array([0.5, -1.0, 2.0, 0.0])
    th0 = np.array([1.0, 2.0, -1.0, 0.5])
    problem = gf.problems.quadratic(H, center=c, params0=th0)
    lr, steps = 0.3, 37
    traj = gf.gd(problem, lr, steps, save_every=5)
    ks = np.array([0, 5, 10, 15, 20, 25, 30, 35, 37])
    np.testing.assert_allclose(np.asarray(traj.ts), ks * lr, rtol=0, atol=1e-15)
    M = np.eye(4) - lr * H
    for k, th in zip(ks, np.asarray(traj.params)):
        np.testing.assert_allclose(th, c + np.linalg.matrix_power(M, k) @ (th0 - c), atol=1e-12)
    losses = [0.5 * (th - c) @ H @ (th - c) for th in np.asarray(traj.params)]
    np.testing.assert_allclose(np.asarray(traj.loss), losses, rtol=1e-12, atol=1e-15)
    assert traj.stats["grad_evals"] == steps and traj.diverged_at is None


def _lls(n=12, p=3, seed=1):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, p)), rng.standard_normal(n)
    return X, y, gf.problems.least_squares(X, y, params0=rng.standard_normal(p))


def test_sgd_round_robin_matches_numpy_loop():
    X, y, problem = _lls()
    lr, b, epochs = 0.07, 4, 5
    traj = gf.sgd(problem, lr, epochs, gf.RoundRobin(b))
    th = np.asarray(problem.params0).copy()
    expected = [th.copy()]
    for _ in range(epochs):
        for j in range(len(y) // b):
            Xb, yb = X[j * b : (j + 1) * b], y[j * b : (j + 1) * b]
            th = th - lr * Xb.T @ (Xb @ th - yb) / b
            expected.append(th.copy())
    np.testing.assert_allclose(np.asarray(traj.params), np.array(expected), atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.ts), lr * np.arange(len(expected)), atol=1e-14)
    assert traj.stats["epochs"] == epochs and traj.stats["examples"] == epochs * len(y)


def test_descent_with_optax_sgd_equals_gd():
    _, _, problem = _lls()
    a = gf.gd(problem, 0.05, 20)
    b = gf.descent(problem, optax.sgd(0.05), 20, lr=0.05)
    np.testing.assert_allclose(np.asarray(a.params), np.asarray(b.params), atol=1e-14)
    np.testing.assert_allclose(np.asarray(a.ts), np.asarray(b.ts))


def test_descent_momentum_matches_numpy_heavy_ball():
    X, y, problem = _lls()
    lr, beta = 0.05, 0.9
    traj = gf.descent(problem, optax.sgd(lr, momentum=beta), 15)
    th, v = np.asarray(problem.params0).copy(), np.zeros(3)
    for _ in range(15):
        g = X.T @ (X @ th - y) / len(y)
        v = beta * v + g
        th = th - lr * v
    np.testing.assert_allclose(np.asarray(traj.final), th, atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.ts), np.arange(16.0))  # no lr: t = k


def test_reshuffle_visits_each_example_once_per_epoch():
    rule = gf.Reshuffle(3, jax.random.key(4))
    tables = [np.asarray(rule.epoch(12, e)) for e in range(3)]
    for t in tables:
        assert t.shape == (4, 3)
        assert sorted(t.ravel().tolist()) == list(range(12))
    assert not np.array_equal(tables[0], tables[1])
    np.testing.assert_array_equal(tables[2], np.asarray(rule.epoch(12, 2)))


def test_sgd_reshuffle_matches_numpy_with_same_tables():
    X, y, problem = _lls()
    rule = gf.Reshuffle(4, jax.random.key(7))
    lr = 0.05
    traj = gf.sgd(problem, lr, 3, rule, save_every=3)
    th = np.asarray(problem.params0).copy()
    for e in range(3):
        for idx in np.asarray(rule.epoch(len(y), e)):
            th = th - lr * X[idx].T @ (X[idx] @ th - y[idx]) / len(idx)
    np.testing.assert_allclose(np.asarray(traj.final), th, atol=1e-12)


def test_replacement_batches_in_range():
    t = np.asarray(gf.Replacement(5, jax.random.key(0)).epoch(12, 3))
    assert t.shape == (2, 5) and t.min() >= 0 and t.max() < 12


def test_divergence_stops_and_keeps_what_it_computed():
    problem = gf.problems.quadratic(jnp.asarray(4.0), params0=jnp.array([1.0]))
    with pytest.warns(gf.DivergenceWarning, match=r"non-finite loss at step \d+"):
        traj = gf.gd(problem, 10.0, 5000)
    k = traj.diverged_at
    assert k is not None and 0 < k < 5000
    # Every iterate up to the failing one is kept; only its loss is non-finite.
    assert len(traj) == k + 1
    assert np.all(np.isfinite(np.asarray(traj.loss)[:-1]))
    assert not np.isfinite(float(traj.loss[-1]))
    # |1 - 10*4|^k growth: the last kept iterate is the closed form.
    np.testing.assert_allclose(np.asarray(traj.final), [(-39.0) ** k], rtol=1e-10)
    with pytest.raises(gf.DivergenceError) as info:
        gf.gd(problem, 10.0, 5000, save_every=100, on_divergence="raise")
    assert info.value.trajectory.diverged_at == k


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_step_size(lr):
    _, _, problem = _lls()
    with pytest.raises(ValueError, match="`lr`"):
        gf.gd(problem, lr, 10)
    with pytest.raises(ValueError, match="`lr`"):
        gf.sgd(problem, lr, 1, gf.RoundRobin(4))


def test_bad_batching():
    _, _, problem = _lls(n=12)
    with pytest.raises(ValueError, match="larger than the number of examples"):
        gf.sgd(problem, 0.1, 1, gf.RoundRobin(13))
    with pytest.raises(ValueError, match="does not divide"):
        gf.sgd(problem, 0.1, 1, gf.RoundRobin(5))
    traj = gf.sgd(problem, 0.1, 1, gf.RoundRobin(5, drop_remainder=True))
    assert traj.stats["steps"] == 2
    with pytest.raises(TypeError, match="batching"):
        gf.sgd(problem, 0.1, 1, 4)
    with pytest.raises(ValueError, match="batch_size"):
        gf.RoundRobin(0)


def test_bad_steps_and_save_every():
    _, _, problem = _lls()
    with pytest.raises(ValueError, match="`steps`"):
        gf.gd(problem, 0.1, -1)
    with pytest.raises(ValueError, match="`save_every`"):
        gf.gd(problem, 0.1, 10, save_every=0)
    with pytest.raises(TypeError, match="optimizer"):
        gf.descent(problem, "adam", 10)


def test_progress_bar_does_not_change_the_run():
    _, _, problem = _lls()
    a = gf.gd(problem, 0.05, 30, save_every=10)
    b = gf.gd(problem, 0.05, 30, save_every=10, progress=True)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
