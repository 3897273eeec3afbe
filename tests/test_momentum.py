"""Oracles for heavy-ball (and Nesterov) momentum and its modified flows.

* optax's `sgd(lr, momentum=beta)` from zero velocity is the recurrence
  theta_{k+1} = theta_k - lr g_k + beta (theta_k - theta_{k-1}), theta_{-1} = theta_0:
  checked through `gf.descent` against the closed form on a quadratic (a 2x2 companion
  matrix per Hessian eigenvalue, powers by NumPy);
* closed forms of the momentum modified loss and field on a quadratic;
* local residual orders of the modified flows in the two-step recurrence (fitted, on a
  non-quadratic loss): lr^2 for the limit flow, lr^3 for the modified flow, as for GD;
* global orders over a fixed horizon, the maximum over *every* step 0..K (the start-up
  layer included): 1 for the limit flow, 2 for the modified flow with the start-up
  treatment, and 1 without it, also at the final time (the shift never decays).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import gdflow as gf
from gdflow._modified import modified_field, modified_loss
from gdflow._momentum import momentum_layer, momentum_start

BETA = 0.3


def _quadratic(seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    lam = np.array([0.4, 1.0, 2.0])
    H = Q @ np.diag(lam) @ Q.T
    c = rng.normal(size=3)
    th0 = c + rng.normal(size=3)
    return (
        gf.problems.quadratic(jnp.asarray(H), center=jnp.asarray(c), params0=jnp.asarray(th0)),
        Q,
        lam,
        c,
        th0,
    )


def _closed_form(Q, lam, c, th0, lr, beta, K, nesterov):
    """Heavy ball / optax-Nesterov iterates 0..K on L = 1/2 (th-c)^T H (th-c), per eigenvalue."""
    z0 = Q.T @ (th0 - c)
    out = np.empty((K + 1, len(lam)))
    for i, l in enumerate(lam):
        if nesterov:
            # theta_{k+1} = (1+b)(1-lr l) theta_k - b (1-lr l) theta_{k-1} for k >= 1;
            # the first step from rest is theta_1 = theta_0 - lr (1+b) l theta_0.
            M = np.array([[(1 + beta) * (1 - lr * l), -beta * (1 - lr * l)], [1.0, 0.0]])
            start = np.array([(1 - lr * (1 + beta) * l) * z0[i], z0[i]])
            out[0, i] = z0[i]
            for k in range(1, K + 1):
                out[k, i] = (np.linalg.matrix_power(M, k - 1) @ start)[0]
        else:
            M = np.array([[1 + beta - lr * l, -beta], [1.0, 0.0]])
            for k in range(K + 1):
                out[k, i] = (np.linalg.matrix_power(M, k) @ np.array([z0[i], z0[i]]))[0]
    return out @ Q.T + c


@pytest.mark.parametrize("nesterov", [False, True])
def test_optax_momentum_is_the_recurrence(nesterov):
    problem, Q, lam, c, th0 = _quadratic()
    lr, K = 0.1, 40
    traj = gf.descent(problem, optax.sgd(lr, momentum=BETA, nesterov=nesterov), K, lr=lr)
    expected = _closed_form(Q, lam, c, th0, lr, BETA, K, nesterov)
    np.testing.assert_allclose(np.asarray(traj.flat()), expected, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(traj.ts), lr * np.arange(K + 1), rtol=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_quadratic_closed_forms(nesterov):
    problem, Q, lam, c, th0 = _quadratic()
    H = Q @ np.diag(lam) @ Q.T
    lr, th = 0.05, jnp.asarray(th0)
    cb = (1 - BETA + 2 * BETA**2 if nesterov else 1 + BETA) / (4 * (1 - BETA) ** 2)
    r = th0 - c
    d = problem.data
    value = modified_loss(problem.loss, lr, momentum=BETA, nesterov=nesterov)(th, d)
    np.testing.assert_allclose(value, 0.5 * r @ H @ r + lr * cb * r @ H @ H @ r, rtol=1e-13)
    f0 = modified_field(problem.loss, lr, 0, momentum=BETA, nesterov=nesterov)(th, d)
    f1 = modified_field(problem.loss, lr, 1, momentum=BETA, nesterov=nesterov)(th, d)
    np.testing.assert_allclose(f0, -(H @ r) / (1 - BETA), rtol=1e-13)
    np.testing.assert_allclose(f1, -(H @ r + 2 * lr * cb * H @ H @ r) / (1 - BETA), rtol=1e-13)
    # The start-up shift and layer on the quadratic (g0 = H r).
    a = lr * BETA ** (2 if nesterov else 1) / (1 - BETA) ** 2
    start = momentum_start(problem.full_loss, th, lr, momentum=BETA, nesterov=nesterov)
    np.testing.assert_allclose(start, th0 + a * H @ r, rtol=1e-13)
    lay = momentum_layer(
        problem.full_loss, th, lr, [0.0, 2 * lr], momentum=BETA, nesterov=nesterov
    )
    np.testing.assert_allclose(lay, -np.outer([1.0, BETA**2], a * H @ r), rtol=1e-12)


def test_beta_zero_is_gd():
    """momentum=0 gives GD's objects bit for bit (GD's own oracles are in test_modified)."""
    problem, *_ = _quadratic()
    th = problem.params0
    for order in (0, 1, 2):
        a = modified_field(problem.loss, 0.1, order, momentum=0.0)(th, problem.data)
        b = modified_field(problem.loss, 0.1, order)(th, problem.data)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        modified_loss(problem.loss, 0.1, momentum=0.0)(th, problem.data),
        modified_loss(problem.loss, 0.1)(th, problem.data),
    )
    np.testing.assert_array_equal(momentum_start(problem.full_loss, th, 0.1, momentum=0.0), th)


# ---------------------------------------------------------------------------------------
# local residual orders on a non-quadratic loss


def _lse(th, A):
    return jax.nn.logsumexp(A @ th) + 0.25 * jnp.sum(th**4)


def _rk4(field, y, t1, steps=16):
    h = t1 / steps

    def step(_, y):
        k1 = field(y)
        k2 = field(y + 0.5 * h * k1)
        k3 = field(y + 0.5 * h * k2)
        k4 = field(y + h * k3)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return jax.lax.fori_loop(0, steps, step, y)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("order", [0, 1])
def test_local_residual_order(order, nesterov):
    """The flow x of the order-p field satisfies the two-step recurrence with residual
    O(lr^(p+2)) (x(t +- lr) by RK4 at lr/16, forward and backward in time)."""
    A = jnp.asarray(np.random.default_rng(3).normal(size=(5, 3)))
    th = jnp.asarray([0.3, -0.5, 0.2])
    grad = jax.grad(_lse)

    def residual(lr):
        f = modified_field(_lse, lr, order, momentum=BETA, nesterov=nesterov)
        fwd = _rk4(lambda y: f(y, A), th, lr)
        bwd = _rk4(lambda y: -f(y, A), th, lr)
        rhs = lr * grad(th, A)
        if nesterov:
            rhs = lr * (1 + BETA) * grad(th, A) - lr * BETA * grad(bwd, A)
        r = fwd - (1 + BETA) * th + BETA * bwd + rhs
        return jnp.linalg.norm(r)

    lrs = np.array([0.005, 0.01, 0.02, 0.04])
    errs = np.asarray(jax.jit(jax.vmap(residual))(jnp.asarray(lrs)))
    slope = scipy.stats.linregress(np.log(lrs), np.log(errs)).slope
    assert abs(slope - (order + 2)) < 0.15, (slope, errs)


# ---------------------------------------------------------------------------------------
# global orders, the start-up layer included


def _loss(th, d):
    """The quadratic of `_quadratic(1)` plus a quartic: no closed form for the flow."""
    r = th - d["c"][0]
    return 0.5 * r @ d["H"][0] @ r + 0.1 * jnp.sum(th**4)


@functools.partial(jax.jit, static_argnames=("K", "nesterov"))
def _paths(lr, th0, start, layer, d, *, K, nesterov):
    """Heavy ball from rest (the recurrence `gf.descent` is checked against above) and,
    at every step, the flows of the order-0 and order-1 fields from theta_0 and from the
    shifted start (RK4, 8 substeps per lr: error O(lr^4/8^4), far below those measured)."""
    kw = dict(momentum=BETA, nesterov=nesterov)
    f0 = modified_field(_loss, lr, 0, **kw)
    f1 = modified_field(_loss, lr, 1, **kw)
    grad = jax.grad(_loss)

    def rk4(f, y):
        h = lr / 8

        def sub(_, y):
            k1 = f(y, d)
            k2 = f(y + 0.5 * h * k1, d)
            k3 = f(y + 0.5 * h * k2, d)
            k4 = f(y + h * k3, d)
            return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

        return jax.lax.fori_loop(0, 8, sub, y)

    def step(carry, _):
        th, v, x0, x1, y1 = carry
        g = grad(th, d)
        v = g + BETA * v
        th = th - lr * (g + BETA * v if nesterov else v)
        x0, x1, y1 = rk4(f0, x0), rk4(f1, x1), rk4(f1, y1)
        return (th, v, x0, x1, y1), jnp.stack([th, x0, x1, y1])

    init = (th0, jnp.zeros_like(th0), start, start, th0)
    _, out = jax.lax.scan(step, init, None, length=K)
    first = jnp.stack([th0, start, start, th0])
    out = jnp.concatenate([first[None], out])  # (K+1, 4, P)
    hb = out[:, 0]
    err = lambda x: jnp.linalg.norm(x - hb, axis=1)  # noqa: E731
    limit_layer = err(out[:, 1] + layer)
    modified_layer = err(out[:, 2] + layer)
    modified_start = err(out[:, 2])
    modified_none = err(out[:, 3])
    return jnp.stack([limit_layer, modified_layer, modified_start, modified_none])


def _global_errors(nesterov, lrs, t1=1.0):
    """Errors (rows: limit flow + layer, modified + layer, modified from the shifted
    start, modified from theta_0) for each lr: the maximum over steps 0..K and the last."""
    problem, *_ = _quadratic(1)
    d, th0 = problem.data, problem.params0
    kw = dict(momentum=BETA, nesterov=nesterov)
    max_err, end_err = [], []
    for lr in lrs:
        K = int(round(t1 / lr))
        start = momentum_start(_loss, th0, lr, d, **kw)
        layer = momentum_layer(_loss, th0, lr, lr * np.arange(K + 1), d, **kw)
        e = np.asarray(_paths(lr, th0, start, layer, d, K=K, nesterov=nesterov))
        max_err.append(e.max(axis=1))
        end_err.append(e[:, -1])
    return np.array(max_err).T, np.array(end_err).T


LRS = np.array([0.00125, 0.0025, 0.005, 0.01])


def _slope(errs):
    return scipy.stats.linregress(np.log(LRS), np.log(errs)).slope


@pytest.mark.parametrize("nesterov", [False, True])
def test_global_orders_and_startup_layer(nesterov):
    """Fixed horizon t = 1. With the layer, the maximum error over every step is O(lr) for
    the limit flow and O(lr^2) for the modified flow; from theta_0 itself the modified
    flow is O(lr) off, at the last step too; from the shifted start it is O(lr^2) at the
    last step, where the layer has decayed (beta^K < 1e-50)."""
    max_err, end_err = _global_errors(nesterov, LRS)
    limit_layer, modified_layer, modified_start, modified_none = max_err
    assert abs(_slope(modified_layer) - 2) < 0.15, modified_layer
    assert abs(_slope(limit_layer) - 1) < 0.15, limit_layer
    assert abs(_slope(modified_none) - 1) < 0.15, modified_none
    assert abs(_slope(end_err[3]) - 1) < 0.15, end_err[3]
    assert abs(_slope(end_err[2]) - 2) < 0.15, end_err[2]
    # The shift alone leaves the layer's O(lr) at the first steps.
    assert abs(_slope(modified_start) - 1) < 0.15, modified_start


# ---------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan"), 1.5])
def test_bad_momentum(beta):
    with pytest.raises(ValueError, match="momentum"):
        modified_field(_lse, 0.1, 1, momentum=beta)
    with pytest.raises(ValueError, match="momentum"):
        modified_loss(_lse, 0.1, momentum=beta)
    with pytest.raises(ValueError, match="momentum"):
        momentum_start(_lse, jnp.zeros(3), 0.1, momentum=beta)


def test_bad_order_with_momentum_and_bad_nesterov():
    with pytest.raises(ValueError, match="order=2"):
        modified_field(_lse, 0.1, 2, momentum=0.5)
    with pytest.raises(TypeError, match="nesterov"):
        modified_loss(_lse, 0.1, momentum=0.5, nesterov="yes")
    with pytest.raises(ValueError, match="ts"):
        momentum_layer(_lse, jnp.zeros(3), 0.1, [-1.0], momentum=0.5)
