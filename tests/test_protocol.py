"""Oracles for `gdflow.protocol`, the steps-to-target measurement of the splitting text.

On least squares with the identity as design and one example per batch, batch ``i`` only
moves coordinate ``i``: an SGD step multiplies its error by ``r = 1 - lr``, an exact local
flow by ``r = exp(-lr)``. After ``e`` epochs and ``j`` more batch steps the squared
relative error is ``(j r^(2e+2) + (p - j) r^(2e)) / p``, so the first step meeting a
target is known in closed form.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import gdflow as gf
from gdflow import protocol

P = 4


def closed_form_steps(r, target, p=P):
    """First batch step k = e·p + j after which the relative error is <= target."""
    for k in range(1, 100_000):
        e, j = divmod(k, p)
        err2 = (j * r ** (2 * e + 2) + (p - j) * r ** (2 * e)) / p
        if math.sqrt(err2) <= target:
            return k
    raise AssertionError("target not reached")


def identity_problem():
    theta_star = np.arange(1.0, P + 1)
    problem = gf.problems.least_squares(np.eye(P), theta_star, params0=jnp.zeros(P))
    return problem, theta_star


def weighted_error(theta_star):
    # |θ - θ*| weighted per coordinate by 1/θ*_i: each coordinate starts at error 1
    def error(params):
        P_ = np.asarray(params)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sqrt(np.mean(((P_ - theta_star) / theta_star) ** 2, axis=1))

    return error


def _measure(method, lr, target, **kw):
    problem, theta_star = identity_problem()
    kw.setdefault("max_epochs", 200)
    kw.setdefault("seg_epochs", 7)
    return protocol.measure(
        method,
        problem,
        lr,
        batch_size=1,
        error=weighted_error(theta_star),
        target=target,
        local=gf.Exact(),
        best_of=1,
        **kw,
    )


@pytest.mark.parametrize(
    "method, lr, r",
    [("sgd", 0.1, 0.9), ("split", 0.1, math.exp(-0.1)), ("sgd", 0.7, 0.3)],
)
def test_steps_to_target_match_closed_form(method, lr, r):
    rec = _measure(method, lr, 1e-2)
    assert rec.steps == closed_form_steps(r, 1e-2)
    assert rec.epochs == rec.steps / P
    assert rec.seconds is not None and rec.seconds >= 0
    assert not rec.diverged and rec.failed is None
    # cost: timed segments (1, 2, 4, 7, 7, … epochs) cover the epochs to the target,
    # overshooting by less than one segment; locating adds at most a segment and an epoch
    need = math.ceil(rec.steps / P)
    assert need <= rec.timed_epochs < need + 7
    assert rec.epochs_run <= rec.timed_epochs + 7 + 1


def test_whole_epochs_when_not_stepwise():
    rec = _measure("sgd", 0.1, 1e-2, stepwise=False)
    assert rec.steps == P * math.ceil(closed_form_steps(0.9, 1e-2) / P)


def test_target_inside_first_epoch_and_not_reached():
    # lr = 5 with exact flows: every coordinate is fixed to e^-5 ≈ 7e-3 by its own batch
    rec = _measure("split", 5.0, 0.6)
    assert rec.steps == closed_form_steps(math.exp(-5.0), 0.6) == 3
    rec = _measure("sgd", 0.01, 1e-9, max_epochs=10)  # 0.99^10 is far from 1e-9
    assert rec.steps is None and not rec.diverged and rec.seconds is None


def test_divergence_is_recorded():
    rec = _measure("sgd", 1e200, 1e-3, max_epochs=20)
    assert rec.steps is None and rec.diverged


def test_one_batch_per_epoch_replays_round_robin():
    # With the Euler local solver the splitting *is* SGD: the replay rule must visit the
    # batches of RoundRobin(b) in the same order, one per "epoch".
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 3)), rng.standard_normal(12)
    problem = gf.problems.least_squares(X, y, params0=jnp.ones(3))
    m, b, lr = 4, 3, 0.05
    sgd = gf.sgd(problem, lr, 2, gf.RoundRobin(b), save_every=1)
    rep = gf.split(
        problem, lr, 2 * m, protocol.OneBatchPerEpoch(b, m), local=gf.Euler(), save_every=1
    )
    np.testing.assert_allclose(np.asarray(rep.ts), np.asarray(sgd.ts), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(rep.params), np.asarray(sgd.params), rtol=1e-10)
    np.testing.assert_array_equal(protocol.saved_steps(rep, lr), np.arange(2 * m + 1))
    # and with exact local flows it ends where the RoundRobin epoch ends
    one = gf.split(problem, lr * 40, 1, gf.RoundRobin(b))
    rep = gf.split(problem, lr * 40, m, protocol.OneBatchPerEpoch(b, m))
    np.testing.assert_allclose(np.asarray(rep.params)[-1], np.asarray(one.params)[-1], rtol=1e-9)


def test_helpers():
    assert protocol.first_hit([0, 5, 10], [1.0, np.nan, 0.1], 0.5) == 10
    assert protocol.first_hit([0, 5], [np.nan, 2.0], 0.5) is None
    assert protocol.time_to_target(2.0, 100, 25) == 0.5
    err = protocol.relative_error(np.array([3.0, 4.0]))
    np.testing.assert_allclose(err(np.array([[3.0, 4.0], [0.0, 0.0]])), [0.0, 1.0])


def test_bad_arguments():
    problem, theta_star = identity_problem()
    err = weighted_error(theta_star)
    with pytest.raises(ValueError, match="method"):
        protocol.measure("adam", problem, 0.1, batch_size=1, error=err, target=0.1)
    with pytest.raises(ValueError, match="divide"):
        protocol.measure("sgd", problem, 0.1, batch_size=3, error=err, target=0.1)
    with pytest.raises(ValueError, match="theta_star"):
        protocol.relative_error(np.zeros(3))
    with pytest.raises(ValueError, match="steps_run"):
        protocol.time_to_target(1.0, 0, 1)
    with pytest.raises(ValueError, match="batch_size"):
        protocol.OneBatchPerEpoch(0, 4)
    for name, bad in (("max_epochs", 0), ("seg_epochs", 0), ("seg_epochs", 2.5)):
        with pytest.raises(ValueError, match=f"`{name}` must be a positive integer"):
            protocol.measure(
                "sgd", problem, 0.1, batch_size=1, error=err, target=0.1, **{name: bad}
            )


def _consistent_system(seed=0, n=24, p=6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    theta_star = rng.standard_normal(p)
    problem = gf.problems.least_squares(X, X @ theta_star, params0=jnp.zeros(p))
    return problem, X, theta_star


def brute_force_errors(method, X, theta_star, lr, b, epochs):
    """Relative error after every batch step, from an independent NumPy implementation:
    SGD steps, or exact local flows θ(lr) = θ - Xᵀ G⁻¹ (I - e^{-G lr}) r / b with
    G = X_j X_jᵀ / b and r = X_j θ - y_j (the residual obeys ṙ = -G r)."""
    y = X @ theta_star
    theta = np.zeros(X.shape[1])
    out = [1.0]
    for _ in range(epochs):
        for j in range(len(y) // b):
            Xj, yj = X[j * b : (j + 1) * b], y[j * b : (j + 1) * b]
            r = Xj @ theta - yj
            if method == "sgd":
                theta = theta - lr * Xj.T @ r / b
            else:
                w, V = np.linalg.eigh(Xj @ Xj.T / b)
                theta = theta - Xj.T @ (V @ ((1 - np.exp(-w * lr)) / w * (V.T @ r))) / b
            out.append(np.linalg.norm(theta - theta_star) / np.linalg.norm(theta_star))
    return np.array(out)


@pytest.mark.parametrize("seg_epochs", [8, 64])
@pytest.mark.parametrize("method, lr", [("sgd", 0.05), ("split", 0.05)])
def test_steps_to_target_equal_brute_force_first_hit(method, lr, seg_epochs):
    # the predicted segment ends, the piecewise re-run and the replay must land on the
    # first batch step whose error meets the target, here at ~70-90 epochs
    problem, X, theta_star = _consistent_system()
    b, m, target = 3, 8, 1e-4
    errs = brute_force_errors(method, X, theta_star, lr, b, 200)
    k_star = int(np.nonzero(errs <= target)[0][0])
    assert 40 * m < k_star < 200 * m  # past the doubling segments
    rec = protocol.measure(
        method,
        problem,
        lr,
        batch_size=b,
        error=protocol.relative_error(theta_star),
        target=target,
        local=gf.Exact(),
        max_epochs=200,
        seg_epochs=seg_epochs,
        best_of=1,
    )
    assert rec.steps == k_star
    # cost: timed segments cover the epochs to the target, the re-run at most a segment
    need = math.ceil(k_star / m)
    assert need <= rec.timed_epochs < need + seg_epochs
    assert rec.epochs_run <= rec.timed_epochs + seg_epochs + protocol.FINE_EPOCHS + 1


def test_predict_extrapolates_the_slower_rate():
    # log10 values 0, -1 (rate 1 per epoch), -1.5 (rate 0.5): 1.5 decades at 0.5 -> 3 epochs
    pts = [(0, 1.0), (1, 0.1), (2, 10**-1.5)]
    assert protocol._predict(pts, 1e-3) == pytest.approx(3.0)
    assert protocol._predict(pts[:2], 1e-3) is None  # two points: no prediction
    assert protocol._predict([(0, 1.0), (1, 2.0), (2, 0.5)], 1e-3) is None  # not decreasing
