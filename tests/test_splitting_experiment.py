"""Oracles for the steps-to-target machinery of the ``splitting`` experiment.

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
from gdflow.experiments.splitting import (
    _Case,
    _measure,
    _OneBatchPerEpoch,
    _relative_error,
    first_hit,
    saved_steps,
    time_to_target,
)

P = 4


def closed_form_steps(r, target, p=P):
    """First batch step k = e·p + j after which the relative error is <= target."""
    for k in range(1, 100_000):
        e, j = divmod(k, p)
        err2 = (j * r ** (2 * e + 2) + (p - j) * r ** (2 * e)) / p
        if math.sqrt(err2) <= target:
            return k
    raise AssertionError("target not reached")


def identity_case(local, target, *, seg_epochs=7, max_epochs=200):
    theta_star = np.arange(1.0, P + 1)
    problem = gf.problems.least_squares(np.eye(P), theta_star, params0=jnp.zeros(P))
    case = _Case(
        key="identity",
        title="identity",
        problem=problem,
        batch_size=1,
        local=local,
        measure="relative error",
        target=target,
        error=None,
        lrs=[],
        init_scale=0.0,
        max_epochs=max_epochs,
        seg_epochs=seg_epochs,
        time_epochs=5,
        best_of=1,
    )
    return case, theta_star


def weighted_error(theta_star):
    # |θ - θ*| weighted per coordinate by 1/θ*_i: each coordinate starts at error 1
    def error(params):
        P_ = np.asarray(params)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sqrt(np.mean(((P_ - theta_star) / theta_star) ** 2, axis=1))

    return error


@pytest.mark.parametrize(
    "method, lr, r",
    [("sgd", 0.1, 0.9), ("split", 0.1, math.exp(-0.1)), ("sgd", 0.7, 0.3)],
)
def test_steps_to_target_match_closed_form(method, lr, r):
    target = 1e-2
    case, theta_star = identity_case(gf.Exact(), target)
    case.error = weighted_error(theta_star)
    rec = _measure(method, case, case.problem, lr)
    assert rec["steps"] == closed_form_steps(r, target)
    assert rec["epochs"] == rec["steps"] / P
    assert rec["seconds"] is not None and rec["seconds"] >= 0
    assert not rec["diverged"] and rec["failed"] is None


def test_target_inside_first_epoch_and_not_reached():
    # lr = 5 with exact flows: every coordinate is fixed to e^-5 ≈ 7e-3 by its own batch
    case, theta_star = identity_case(gf.Exact(), 0.6)
    case.error = weighted_error(theta_star)
    rec = _measure("split", case, case.problem, 5.0)
    assert rec["steps"] == closed_form_steps(math.exp(-5.0), 0.6) == 3
    case.max_epochs = 10
    case.target = 1e-9
    rec = _measure("sgd", case, case.problem, 0.01)  # 0.99^10 is far from 1e-9
    assert rec["steps"] is None and not rec["diverged"]


def test_divergence_is_recorded():
    case, theta_star = identity_case(gf.Exact(), 1e-3, max_epochs=20)
    case.error = weighted_error(theta_star)
    rec = _measure("sgd", case, case.problem, 1e200)
    assert rec["steps"] is None and rec["diverged"]


def test_one_batch_per_epoch_replays_round_robin():
    # With the Euler local solver the splitting *is* SGD: the replay rule must visit the
    # batches of RoundRobin(b) in the same order, one per "epoch".
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 3)), rng.standard_normal(12)
    problem = gf.problems.least_squares(X, y, params0=jnp.ones(3))
    m, b, lr = 4, 3, 0.05
    sgd = gf.sgd(problem, lr, 2, gf.RoundRobin(b), save_every=1)
    rep = gf.split(problem, lr, 2 * m, _OneBatchPerEpoch(b, m), local=gf.Euler(), save_every=1)
    np.testing.assert_allclose(np.asarray(rep.ts), np.asarray(sgd.ts), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(rep.params), np.asarray(sgd.params), rtol=1e-10)
    np.testing.assert_array_equal(saved_steps(rep, lr), np.arange(2 * m + 1))
    # and with exact local flows it ends where the RoundRobin epoch ends
    one = gf.split(problem, lr * 40, 1, gf.RoundRobin(b))
    rep = gf.split(problem, lr * 40, m, _OneBatchPerEpoch(b, m))
    np.testing.assert_allclose(np.asarray(rep.final), np.asarray(one.final), rtol=1e-9)


def test_helpers():
    assert first_hit([0, 5, 10], [1.0, np.nan, 0.1], 0.5) == 10
    assert first_hit([0, 5], [np.nan, 2.0], 0.5) is None
    assert time_to_target(2.0, 100, 25) == 0.5
    err = _relative_error(np.array([3.0, 4.0]))
    np.testing.assert_allclose(err(np.array([[3.0, 4.0], [0.0, 0.0]])), [0.0, 1.0])
