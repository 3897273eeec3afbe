"""Oracles for the stochastic modified equation of SGD (`sgd_sde`).

Linear least squares, per-example loss l_i = 1/2 (x_i^T th - y_i)^2, minibatches of b
indices drawn with replacement. Per-example gradients are affine, g_i = A_i th - c_i, so
the minibatch-gradient covariance Sigma(th) = (1/(n b)) sum_i (D_i th - e_i)(D_i th - e_i)^T
(D_i = A_i - A, e_i = c_i - c) is quadratic in th and its expectation is affine in the
first two moments (m, S) = (E th, E th th^T). Hence, exactly (NumPy/scipy, below):

* SGD: (m, S) follow a linear recursion
  m' = M m + lr c, S' = M S M^T + lr (M m c^T + c m^T M^T) + lr^2 c c^T + lr^2 E Sigma,
  M = I - lr A;
* the SDE dX = (-A~ X + c~) dt + sqrt(lr Sigma) dW follows the linear ODE
  m' = -A~ m + c~, S' = -(A~ S + S A~^T) + c~ m^T + m c~^T + lr E Sigma (a Lyapunov
  equation with a moment-dependent source), solved by expm; A~ = A (order 1) or
  A + lr/2 A^2, c~ = c + lr/2 A c (order 2);
* Euler–Maruyama with step dt has the SGD-like recursion with (A~, c~, dt) and noise
  dt lr E Sigma (so at dt = lr, order 1, it *is* SGD's recursion).

Checks: the library's SGD replays in NumPy to rounding and its many-seed Monte Carlo
matches the exact recursion within 4.5 standard errors; the SDE's weak orders are fitted
from exact moments (no Monte Carlo noise); the Monte Carlo of `sgd_sde` matches the exact
moments of its scheme (Euler, no bias) and of the SDE (bias computed exactly) within
4.5 standard errors. Test functions: u^T th, |th|^2 and the loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import gdflow as gf
from gdflow._sde import _Noise, _trace_sigma, sgd_sde

N, B = 8, 2
U = np.array([0.6, 0.8])
TH0 = np.array([1.5, -1.0])


class Exact:
    """Exact first two moments of SGD-with-replacement, the SME and Euler–Maruyama."""

    def __init__(self, X, y, b):
        self.y, self.b = y, b
        self.n, self.P = X.shape
        Ai = np.einsum("ni,nj->nij", X, X)
        ci = X * y[:, None]
        self.A, self.c = Ai.mean(0), ci.mean(0)
        self.D, self.e = Ai - self.A, ci - self.c

    def esigma(self, m, S, one):
        """E Sigma(th) from (m, S); `one` multiplies the constant part (affine probing)."""
        D, e = self.D, self.e
        quad = np.einsum("nij,jk,nlk->il", D, S, D)
        cross = np.einsum("nij,j,nk->ik", D, m, e)
        return (quad - cross - cross.T + one * e.T @ e) / (self.n * self.b)

    def _matrix(self, fn):
        """The affine map fn on z = (m, vec S, 1) as a matrix, by probing a basis."""
        P = self.P
        size = P + P * P + 1
        out = np.zeros((size, size))
        for k in range(size):
            z = np.zeros(size)
            z[k] = 1.0
            dm, dS, d1 = fn(z[:P], z[P:-1].reshape(P, P), z[-1])
            out[:, k] = np.concatenate([dm, dS.ravel(), [d1]])
        return out

    def drift(self, lr, order):
        if order == 2:
            return self.A + lr / 2 * self.A @ self.A, self.c + lr / 2 * self.A @ self.c
        return self.A, self.c

    def _recursion(self, Am, cm, h, noise):
        M = np.eye(self.P) - h * Am

        def step(m, S, one):
            Mm = M @ m
            S2 = M @ S @ M.T + h * (np.outer(Mm, cm) + np.outer(cm, Mm))
            S2 = S2 + one * h * h * np.outer(cm, cm) + noise * self.esigma(m, S, one)
            return Mm + one * h * cm, S2, one

        return self._matrix(step)

    def sgd(self, lr, ks):
        T = self._recursion(self.A, self.c, lr, lr * lr)
        return self._moments([np.linalg.matrix_power(T, k) for k in ks])

    def euler(self, lr, dt, ks, order):
        Am, cm = self.drift(lr, order)
        T = self._recursion(Am, cm, dt, dt * lr)
        return self._moments([np.linalg.matrix_power(T, k) for k in ks])

    def sde(self, lr, ts, order):
        Am, cm = self.drift(lr, order)

        def gen(m, S, one):
            dS = -(Am @ S + S @ Am.T) + np.outer(cm, m) + np.outer(m, cm)
            return -Am @ m + one * cm, dS + lr * self.esigma(m, S, one), 0.0

        G = self._matrix(gen)
        return self._moments([scipy.linalg.expm(t * G) for t in ts])

    def _moments(self, maps):
        P = self.P
        z0 = np.concatenate([TH0, np.outer(TH0, TH0).ravel(), [1.0]])
        zs = np.array([T @ z0 for T in maps])
        return zs[:, :P], zs[:, P:-1].reshape(-1, P, P)

    def phis(self, m, S):
        """E of (u^T th, |th|^2, L(th)) from the moments, stacked (T, 3)."""
        lin = m @ U
        sq = np.trace(S, axis1=1, axis2=2)
        loss = 0.5 * np.einsum("ij,tji->t", self.A, S) - m @ self.c + 0.5 * np.mean(self.y**2)
        return np.stack([lin, sq, loss], axis=-1)


def _phis_samples(params, loss):
    """(u^T th, |th|^2, L(th)) per sample: params (S, T, P), loss (S, T) -> (S, T, 3)."""
    params = np.asarray(params)
    return np.stack([params @ U, np.sum(params**2, axis=-1), np.asarray(loss)], axis=-1)


@pytest.fixture(scope="module")
def lsq():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(N, 2)), rng.normal(size=N)
    problem = gf.problems.least_squares(jnp.asarray(X), jnp.asarray(y), params0=jnp.asarray(TH0))
    return problem, Exact(X, y, B), X, y


def _within(mc, se, exact, slack=0.0, z=4.5):
    err = np.abs(mc - exact)
    assert np.all(err <= z * se + slack), (err, se, slack)


# ---------------------------------------------------------------------------------------
# SGD: the library against the exact recursion


def test_sgd_replays_to_rounding_and_matches_exact_moments(lsq):
    problem, ex, X, y = lsq
    lr, epochs = 0.125, 2  # 4 steps per epoch: K = 8, t = 1
    m = N // B
    # One seed replayed in NumPy from the batching's own index tables.
    batching = gf.Replacement(B, jax.random.key(7))
    traj = gf.sgd(problem, lr, epochs, batching)
    th, path = TH0.copy(), [TH0.copy()]
    for e in range(epochs):
        for rows in np.asarray(batching.epoch(N, e)):
            Xb, yb = X[rows], y[rows]
            th = th - lr * Xb.T @ (Xb @ th - yb) / B
            path.append(th.copy())
    np.testing.assert_allclose(np.asarray(traj.flat()), np.array(path), rtol=0, atol=1e-13)
    # Many seeds: Monte Carlo of the library's SGD against the exact recursion.
    seeds = 200
    samples = []
    for s in range(seeds):
        tr = gf.sgd(problem, lr, epochs, gf.Replacement(B, jax.random.key(1000 + s)))
        samples.append(_phis_samples(np.asarray(tr.flat())[None], np.asarray(tr.loss)[None])[0])
    samples = np.array(samples)  # (seeds, K+1, 3)
    ks = np.arange(epochs * m + 1)
    exact = ex.phis(*ex.sgd(lr, ks))
    mc, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(seeds)
    _within(mc[1:], se[1:], exact[1:])
    np.testing.assert_allclose(mc[0], exact[0], rtol=1e-13)


# ---------------------------------------------------------------------------------------
# the SDE's weak order, from exact moments


@pytest.mark.parametrize("order", [1, 2])
def test_sme_weak_order_exact(lsq, order):
    _, ex, *_ = lsq
    lrs = np.array([0.05, 0.025, 0.0125, 0.00625])
    T = 1.0
    errs = []
    for lr in lrs:
        K = int(round(T / lr))
        sgd = ex.phis(*ex.sgd(lr, [K]))
        sde = ex.phis(*ex.sde(lr, [T], order))
        errs.append(np.abs(sgd - sde)[0])
    errs = np.array(errs)
    for j in range(3):
        slope = scipy.stats.linregress(np.log(lrs), np.log(errs[:, j])).slope
        assert abs(slope - order) < 0.25, (j, slope, errs[:, j])


def test_gradient_flow_misses_the_variance(lsq):
    """SGD's covariance at t = 1 is O(lr); the order-1 SME gets it to relative O(lr), while
    gradient flow (no noise) predicts zero: relative error 1 at every lr."""
    _, ex, *_ = lsq
    lrs = np.array([0.05, 0.025, 0.0125])
    rel = []
    for lr in lrs:
        m, S = ex.sgd(lr, [int(round(1 / lr))])
        ms, Ss = ex.sde(lr, [1.0], 1)
        cov = np.trace(S[0] - np.outer(m[0], m[0]))
        cov_sde = np.trace(Ss[0] - np.outer(ms[0], ms[0]))
        rel.append(abs(cov_sde - cov) / cov)
    slope = scipy.stats.linregress(np.log(lrs), np.log(rel)).slope
    assert abs(slope - 1) < 0.25 and max(rel) < 0.1, rel


def test_euler_at_dt_lr_is_sgd_exactly(lsq):
    """Why order 1 at dt = lr costs nothing in accuracy on this problem: Euler–Maruyama's
    first two moments are SGD's recursion (same affine maps)."""
    _, ex, *_ = lsq
    ks = np.arange(9)
    a, b = ex.sgd(0.125, ks), ex.euler(0.125, 0.125, ks, 1)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-13)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-13)


# ---------------------------------------------------------------------------------------
# the library's Monte Carlo SDE solver


def test_sgd_sde_order1_monte_carlo(lsq):
    problem, ex, *_ = lsq
    lr, dt, paths = 0.125, 0.0625, 4000
    ts = lr * np.arange(9)
    sol = sgd_sde(
        problem,
        lr,
        1.0,
        gf.Replacement(B, jax.random.key(0)),
        key=jax.random.key(3),
        paths=paths,
        ts=ts,
        dt=dt,
    )
    assert sol.params.shape == (paths, len(ts), 2) and sol.solver == "Euler" and sol.steps == 16
    samples = _phis_samples(sol.params, sol.loss)
    mc, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(paths)
    scheme = ex.phis(*ex.euler(lr, dt, 2 * np.arange(9), 1))  # Euler's exact moments
    sde = ex.phis(*ex.sde(lr, ts, 1))
    _within(mc[1:], se[1:], scheme[1:])
    _within(mc[1:], se[1:], sde[1:], slack=np.abs(scheme - sde)[1:])
    np.testing.assert_allclose(sol.mean_loss, mc[:, 2], rtol=1e-12)
    np.testing.assert_allclose(sol.sem_loss[1:], se[1:, 2], rtol=1e-10)


def test_sgd_sde_order2_monte_carlo(lsq):
    """Heun on the Stratonovich form at dt = lr/8. Its discretisation bias, O(dt^2 + lr dt),
    was measured with 10^6 paths at t = 1 (scratch run, 2026-12-01): 1.9e-4, 6.0e-4 and
    1.4e-4 for u^T th, |th|^2 and the loss (standard errors 1.3e-4, 2.6e-4, 0.8e-4), under
    0.15 of the standard errors of these 4000 paths; at dt = lr/2 it was 1.9e-3, 3.0e-3,
    8.7e-4. Without the Ito-Stratonovich drift correction (dt = lr/4) the |th|^2 bias was
    0.068."""
    problem, ex, *_ = lsq
    lr, paths = 0.125, 4000
    ts = lr * np.arange(9)
    sol = sgd_sde(
        problem,
        lr,
        1.0,
        gf.Replacement(B, jax.random.key(0)),
        order=2,
        key=jax.random.key(4),
        paths=paths,
        ts=ts,
        dt=lr / 8,
    )
    assert sol.solver == "Heun"
    samples = _phis_samples(sol.params, sol.loss)
    mc, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(paths)
    _within(mc[1:], se[1:], ex.phis(*ex.sde(lr, ts, 2))[1:])


def test_noise_is_the_low_rank_factor():
    """The matrix-free noise action equals G^T w with the dense centred per-example
    Jacobian G (n x P, / sqrt(n b)), and G^T G is the minibatch covariance; the trace used
    by the Stratonovich drift equals tr(G^T G). Nonlinear model, pytree parameters."""
    rng = np.random.default_rng(2)
    X, Y = jnp.asarray(rng.normal(size=(6, 3))), jnp.asarray(rng.normal(size=(6,)))
    params = {"w": jnp.asarray(rng.normal(size=3)), "s": jnp.asarray(0.7)}

    def loss(p, d):
        return jnp.mean((jnp.tanh(d["X"] @ p["w"]) * p["s"] - d["Y"]) ** 2)

    data = {"X": X, "Y": Y}
    b, lr = 3, 0.2
    flat = lambda t: jnp.concatenate([t["s"][None], t["w"]])  # noqa: E731 (tree order)
    per = jnp.stack(
        [flat(jax.grad(loss)(params, {"X": X[i : i + 1], "Y": Y[i : i + 1]})) for i in range(6)]
    )
    G = (per - per.mean(0)) / np.sqrt(6 * b)
    w = jnp.asarray(rng.normal(size=6))
    act = _Noise(loss, jnp.sqrt(lr / (6 * b)))(params, data, w)
    np.testing.assert_allclose(flat(act), np.sqrt(lr) * G.T @ w, rtol=1e-12)
    cov = np.cov(np.asarray(per).T, bias=True) / b
    np.testing.assert_allclose(G.T @ G, cov, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_trace_sigma(loss, params, data, b), np.trace(cov), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# input checks


def test_refusals(lsq):
    problem, *_ = lsq
    key = jax.random.key(0)
    for batching, word in [
        (gf.RoundRobin(2), "RoundRobin"),
        (gf.Reshuffle(2, key), "Reshuffle"),
        (gf.FullBatch(), "FullBatch"),
    ]:
        with pytest.raises(ValueError, match=word):
            sgd_sde(problem, 0.1, 1.0, batching, key=key, paths=2)
    rep = gf.Replacement(2, key)
    import diffrax

    with pytest.raises(ValueError, match="weak order"):
        sgd_sde(problem, 0.1, 1.0, rep, order=2, key=key, paths=2, solver=diffrax.Euler())
    with pytest.raises(TypeError, match="solver"):
        sgd_sde(problem, 0.1, 1.0, rep, key=key, paths=2, solver="euler")
    with pytest.raises(ValueError, match="order"):
        sgd_sde(problem, 0.1, 1.0, rep, order=3, key=key, paths=2)
    with pytest.raises(TypeError, match="key"):
        sgd_sde(problem, 0.1, 1.0, rep, key=0, paths=2)
    with pytest.raises(ValueError, match="ts"):
        sgd_sde(problem, 0.1, 1.0, rep, key=key, paths=2, ts=[0.0, 2.0])
    with pytest.raises(ValueError, match="lr"):
        sgd_sde(problem, -0.1, 1.0, rep, key=key, paths=2)
    with pytest.raises(ValueError, match="paths"):
        sgd_sde(problem, 0.1, 1.0, rep, key=key, paths=0)


def test_other_step_sizes_and_horizons_reuse_the_compiled_sde_solve():
    # Identical examples: the gradient noise vanishes and Euler–Maruyama is Euler on GF,
    # replayed in NumPy. The step count and horizon are traced: a run at another lr, dt
    # and t1 traces the loss no more often than a repeated identical run does.
    x, yv = np.array([0.6, -0.8]), 0.5
    X, y = np.tile(x, (N, 1)), np.full(N, yv)
    base = gf.problems.least_squares(jnp.asarray(X), jnp.asarray(y), params0=jnp.asarray(TH0))
    traced = []

    def loss(p, d):
        traced.append(1)
        return base.loss(p, d)

    problem = gf.Problem(loss, base.data, base.params0)
    A, c = np.outer(x, x), x * yv
    counts = []
    for lr, t1, dt in ((0.1, 1.0, 0.05), (0.1, 1.0, 0.05), (0.2, 2.0, 0.04)):
        sol = sgd_sde(
            problem,
            lr,
            t1,
            gf.Replacement(B, jax.random.key(1)),
            key=jax.random.key(2),
            paths=2,
            ts=[0.0, t1],
            dt=dt,
        )
        th = TH0.copy()
        for _ in range(int(round(t1 / dt))):
            th = th - dt * (A @ th - c)
        assert sol.steps == int(round(t1 / dt))
        np.testing.assert_allclose(np.asarray(sol.params)[:, -1], [th, th], rtol=1e-12)
        counts.append(len(traced))
    repeat = counts[1] - counts[0]
    assert counts[0] > repeat and counts[2] - counts[1] == repeat
