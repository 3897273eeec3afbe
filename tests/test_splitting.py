"""Oracles for the splitting optimiser, switched flows and the two-point closed form.

Closed forms and independent NumPy/SciPy computations: SGD itself (``gf.sgd``), matrix
exponentials of the affine least-squares flows, a literal transcription of the minibatch
text's formula, and fitted orders of the Lie–Trotter and Strang schemes.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

import gdflow as gf

# ----------------------------------------------------------------------------- helpers


def _ls(n=24, p=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = rng.normal(size=n)
    return gf.problems.least_squares(X, y, params0=rng.normal(size=p)), X, y


def _affine_flow(X, y, theta0, t):
    r"""Exact flow of :math:`\dot\theta = -\frac1b X^\top(X\theta - y)` for time ``t``,
    via the matrix exponential of the augmented linear system (SciPy)."""
    b, p = X.shape
    M = np.zeros((p + 1, p + 1))
    M[:p, :p] = -X.T @ X / b
    M[:p, p] = X.T @ y / b
    return (expm(M * t) @ np.append(theta0, 1.0))[:p]


def _svd_flow(X, y, theta0, t):
    r"""The same flow from the SVD of ``X`` (no Gram matrix, no QR): with
    :math:`X = U\Sigma V^\top`, :math:`\theta(t) = \theta_0 - \frac1b V\Sigma
    \varphi(\Sigma^2/b, t)U^\top(X\theta_0 - y)`. Accurate for stiff batches, where
    ``expm`` of the augmented matrix loses digits."""
    b = X.shape[0]
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    lam = s**2 / b
    ph = -np.expm1(-lam * t) / lam
    return theta0 - Vt.T @ (s * ph * (U.T @ (X @ theta0 - y))) / b


def _text_formula(t, a, b, theta0, eta):
    """The minibatch text's closed form transcribed literally (floors and all)."""
    t = np.asarray(t)[:, None]
    s = np.where(np.floor(t / eta) % 2 == 0, 1.0, -1.0)
    q = np.exp(2 * eta**2)
    k1 = np.floor(t / (2 * eta))
    k2 = np.floor((t - eta) / (2 * eta))
    k3 = np.floor((t - 2 * eta) / (2 * eta))
    bracket = (
        (1 - q ** (k1 + 1)) - 2 * np.exp(eta**2) * (1 - q ** (k2 + 1)) + q * (1 - q ** (k3 + 1))
    )
    inv = s - np.exp(-eta * t) / (1 - q) * bracket
    mid, half = (a + b) / 2, (a - b) / 2
    return mid + (theta0 - mid) * np.exp(-eta * t) + half * inv


@eqx.filter_jit
def _local_step(local, problem, batch, params, dt):
    return local.solve(problem, local.prepare(problem, batch), params, dt)[0]


A2 = np.array([1.0, 0.5])
B2 = np.array([-1.0, 2.0])
THETA2 = np.array([3.0, -1.0])


# ------------------------------------------------------------------ Euler is SGD exactly


@pytest.mark.parametrize("reshuffle", [False, True])
def test_euler_split_is_sgd(reshuffle):
    problem, _, _ = _ls(n=24, p=5)
    batching = gf.Reshuffle(6, jax.random.key(3)) if reshuffle else gf.RoundRobin(6)
    m = 4
    split = gf.split(problem, 0.07, 5, batching, local=gf.Euler())
    sgd = gf.sgd(problem, 0.07, 5, batching, save_every=m)
    np.testing.assert_allclose(split.ts, sgd.ts, rtol=0, atol=1e-15)
    np.testing.assert_allclose(split.params, sgd.params, rtol=0, atol=1e-12)
    np.testing.assert_allclose(split.loss, sgd.loss, rtol=1e-12, atol=1e-14)
    assert split.stats["grad_evals"] == sgd.stats["grad_evals"] == 5 * m


# ------------------------------------------------------- Exact against matrix exponentials


def test_exact_local_flows_match_expm_including_rank_deficient_batches():
    rng = np.random.default_rng(1)
    p, b = 7, 4
    X = rng.normal(size=(12, p))
    X[1] = X[0]  # batch 0 has a repeated row: R is singular, a zero eigenvalue
    X[6] = 2.0 * X[5]  # batch 1 has dependent rows
    X[8:12] = X[8:12] * np.array([[10.0], [1.0], [0.1], [1.0]])  # batch 2 ill-conditioned
    y = rng.normal(size=12)
    theta0 = rng.normal(size=p)
    problem = gf.problems.least_squares(X, y, params0=theta0)
    lr, epochs = 0.3, 2
    for scheme, reduction in (("lie_trotter", "gram"), ("strang", "gram"), ("lie_trotter", "qr")):
        traj = gf.split(
            problem, lr, epochs, gf.RoundRobin(b), scheme=scheme, local=gf.Exact(reduction)
        )
        th = theta0.copy()
        order = [0, 1, 2] if scheme == "lie_trotter" else [0, 1, 2, 2, 1, 0]
        dt = lr if scheme == "lie_trotter" else lr / 2
        for _ in range(epochs):
            for j in order:
                th = _affine_flow(X[j * b : (j + 1) * b], y[j * b : (j + 1) * b], th, dt)
        np.testing.assert_allclose(traj.final, th, rtol=0, atol=1e-12)
        assert np.allclose(traj.ts, [0.0, 3 * lr, 6 * lr])
    # Reshuffle: factors recomputed every epoch for that epoch's partition and order
    shuffle = gf.Reshuffle(b, jax.random.key(7))
    traj = gf.split(problem, lr, epochs, shuffle)
    th = theta0.copy()
    for e in range(epochs):
        for rows in np.asarray(shuffle.epoch(12, e)):
            th = _affine_flow(X[rows], y[rows], th, lr)
    np.testing.assert_allclose(traj.final, th, rtol=0, atol=1e-12)


def test_exact_full_batch_is_gradient_flow_and_quadratic_kinds():
    problem, X, y = _ls(n=10, p=3, seed=2)
    traj = gf.split(problem, 0.25, 4, gf.FullBatch())
    want = _affine_flow(X, y, np.asarray(problem.params0), 1.0)
    np.testing.assert_allclose(traj.final, want, rtol=0, atol=1e-12)
    # a stiff, ill-conditioned, rank-deficient batch (b > rank): λ_max·t ≈ 1e6
    rng = np.random.default_rng(3)
    Xs = rng.normal(size=(5, 4)) * np.array([[1e3], [1.0], [1e-3], [1.0], [1.0]])
    Xs[4] = Xs[3]
    ys, th0 = rng.normal(size=5), rng.normal(size=4)
    stiff = gf.problems.least_squares(Xs, ys, params0=th0)
    for reduction in ("gram", "qr"):
        step = _local_step(gf.Exact(reduction), stiff, stiff.data, jnp.asarray(th0), 0.3)
        np.testing.assert_allclose(step, _svd_flow(Xs, ys, th0, 0.3), rtol=0, atol=1e-13)
    # quadratic kind: θ(t) - c = expm(-tH)(θ0 - c)
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    c = np.array([0.3, -0.7])
    quad = gf.problems.quadratic(H, center=c, params0=np.array([1.0, 2.0]))
    traj = gf.split(quad, 0.4, 3, gf.FullBatch())
    want = c + expm(-1.2 * H) @ (np.array([1.0, 2.0]) - c)
    np.testing.assert_allclose(traj.final, want, rtol=0, atol=1e-12)


def test_exact_two_points_equals_text_closed_form():
    # The text's flow (rate η, dwell η) is the unit-rate switched flow with dwell η²:
    # epoch e of split(lr=η²) sits at text time t = 2eη.
    eta, epochs = 0.4, 6
    two = gf.problems.two_points(A2, B2, THETA2)
    traj = gf.split(two, eta**2, epochs, gf.RoundRobin(1))
    t_text = 2 * eta * np.arange(epochs + 1)
    np.testing.assert_allclose(
        traj.params, gf.two_point_flow(t_text, A2, B2, THETA2, eta), rtol=0, atol=1e-13
    )


def test_exact_is_unconditionally_stable():
    problem, _, _ = _ls()
    traj = gf.split(problem, 1e3, 3, gf.RoundRobin(6), on_divergence="raise")
    assert traj.diverged_at is None and np.all(np.isfinite(traj.final))
    with pytest.warns(gf.DivergenceWarning, match="diverged"):
        bad = gf.split(problem, 1e3, 60, gf.RoundRobin(6), local=gf.Euler())
    assert bad.diverged_at is not None and np.all(np.isfinite(bad.final))


# ------------------------------------------------------------------ LocalODE oracles


def test_exact_equals_local_ode_on_least_squares():
    problem, _, _ = _ls(n=24, p=6, seed=4)
    exact = gf.split(problem, 0.1, 3, gf.RoundRobin(6))
    ode = gf.split(
        problem,
        0.1,
        3,
        gf.RoundRobin(6),
        local=gf.LocalODE(rtol=1e-12, atol=1e-14),
    )
    np.testing.assert_allclose(exact.params, ode.params, rtol=0, atol=1e-10)
    assert ode.stats["ode_steps"] > 0 and exact.stats["grad_evals"] == 0


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_local_ode_reduced_equals_full_space(kind):
    # The QR-reduced flow (b or b×K unknowns) against the flow in all p (p×K) unknowns.
    rng = np.random.default_rng(5)
    n, p, b = 8, 7, 4
    X = rng.normal(size=(n, p))
    if kind == "logistic":
        problem = gf.problems.logistic(X, (rng.random(n) < 0.5).astype(float))
    else:
        problem = gf.problems.softmax(X, rng.integers(0, 3, size=n), num_classes=3)
    params = jnp.asarray(rng.normal(size=problem.params0.shape))
    batch = problem.batch(np.arange(b))
    tight = dict(rtol=1e-11, atol=1e-13)
    dt = jnp.asarray(2.0)
    reduced = _local_step(gf.LocalODE(**tight), problem, batch, params, dt)
    full = _local_step(gf.LocalODE(reduce=False, **tight), problem, batch, params, dt)
    np.testing.assert_allclose(reduced, full, rtol=0, atol=1e-9)
    assert float(jnp.max(jnp.abs(reduced - params))) > 0.1  # it moved
    # and the move lies in the row space of the batch
    Q, _ = np.linalg.qr(X[:b].T)
    moved = np.asarray(reduced - params).reshape(p, -1)
    np.testing.assert_allclose(moved, Q @ (Q.T @ moved), rtol=0, atol=1e-12)


# --------------------------------------------------------------------- fitted orders


def test_lie_trotter_order_one_strang_order_two():
    problem, X, y = _ls(n=24, p=4, seed=0)
    m, T = 4, 2.0
    ref = _affine_flow(X, y, np.asarray(problem.params0), T)  # gradient flow at T
    for scheme, order in (("lie_trotter", 1.0), ("strang", 2.0)):
        lrs, errs = [], []
        for epochs in (8, 16, 32, 64):
            lr = T / (epochs * m)
            traj = gf.split(
                problem, lr, epochs, gf.RoundRobin(6), scheme=scheme, save_every=epochs
            )
            assert np.isclose(float(traj.ts[-1]), T)
            lrs.append(lr)
            errs.append(np.linalg.norm(np.asarray(traj.final) - ref))
        assert abs(gf.fit_order(lrs, errs) - order) < 0.3, (scheme, errs)


# ------------------------------------------------------ switched flows and the two-point form


def test_two_point_flow_is_the_text_formula_and_the_switched_flow():
    for eta in (0.5, 0.2, 0.1):
        t1 = 50 * eta  # 50 dwell intervals: one compilation for every eta
        flow = gf.switched_flow(
            gf.problems.two_points(A2, B2, THETA2),
            eta,
            t1,
            gf.RoundRobin(1),
            rate=eta,
            rtol=1e-13,
            atol=1e-15,
        )
        ts = np.linspace(0.0, t1, 97)
        frac = ts / eta - np.round(ts / eta)
        ts = ts[np.abs(frac) > 1e-3]  # away from the switching instants
        closed = np.asarray(gf.two_point_flow(ts, A2, B2, THETA2, eta))
        np.testing.assert_allclose(flow.evaluate(ts), closed, rtol=0, atol=1e-10)
        np.testing.assert_allclose(
            closed, _text_formula(ts, A2, B2, THETA2, eta), rtol=0, atol=1e-11
        )
        # the default save times are the switching times; the flow is continuous there
        np.testing.assert_allclose(
            flow.params, gf.two_point_flow(flow.ts, A2, B2, THETA2, eta), rtol=0, atol=1e-10
        )
    # first dwell: exactly the flow towards a
    t = np.linspace(0, 0.29, 5)
    np.testing.assert_allclose(
        gf.two_point_flow(t, A2, B2, THETA2, 0.3),
        A2 + (THETA2 - A2) * np.exp(-0.3 * t)[:, None],
        rtol=0,
        atol=1e-14,
    )


def test_two_point_approx_error_shrinks_like_eta_squared():
    etas = np.array([0.4, 0.2, 0.1, 0.05, 0.025])
    errs = []
    for eta in etas:
        ts = np.linspace(0.0, 8.0 / eta, 20001)
        exact = gf.two_point_flow(ts, A2, B2, THETA2, eta)
        approx = gf.two_point_flow_approx(ts, A2, B2, THETA2, eta)
        errs.append(float(jnp.max(jnp.abs(exact - approx))))
    assert np.all(np.diff(errs) < 0)
    assert abs(gf.fit_order(etas, errs) - 2.0) < 0.3
    # max error ≈ η²|a - b| (componentwise), reached just after the first switch
    np.testing.assert_allclose(errs[-1], etas[-1] ** 2 * np.max(np.abs(A2 - B2)), rtol=0.05)
    # exact on the first dwell
    t = np.linspace(0, 0.099, 7)
    np.testing.assert_allclose(
        gf.two_point_flow_approx(t, A2, B2, THETA2, 0.1),
        gf.two_point_flow(t, A2, B2, THETA2, 0.1),
        rtol=0,
        atol=1e-14,
    )


def test_switched_flow_at_epoch_ends_is_exact_splitting():
    problem, _, _ = _ls(n=24, p=5, seed=6)
    lr, epochs, m = 0.15, 4, 4
    split = gf.split(problem, lr, epochs, gf.RoundRobin(6))
    flow = gf.switched_flow(problem, lr, epochs * m * lr, gf.RoundRobin(6), rtol=1e-12, atol=1e-14)
    assert len(flow) == epochs * m + 1
    np.testing.assert_allclose(flow.params[::m], split.params, rtol=0, atol=1e-10)
    np.testing.assert_allclose(flow.ts[::m], split.ts, rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    problem, _, _ = _ls()
    rr = gf.RoundRobin(6)
    for lr in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`lr`"):
            gf.split(problem, lr, 2, rr)
    with pytest.raises(ValueError, match="`scheme`"):
        gf.split(problem, 0.1, 2, rr, scheme="yoshida")
    with pytest.raises(ValueError, match="`local`"):
        gf.split(problem, 0.1, 2, rr, local="rk4")
    with pytest.raises(ValueError, match="`local`"):
        gf.split(problem, 0.1, 2, rr, local=object())
    with pytest.raises(ValueError, match="does not divide"):
        gf.split(problem, 0.1, 2, gf.RoundRobin(5))
    with pytest.raises(ValueError, match="`save_every`"):
        gf.split(problem, 0.1, 2, rr, save_every=0)
    logistic = gf.problems.logistic(np.ones((4, 2)), np.array([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="Exact.*LocalODE"):
        gf.split(logistic, 0.1, 2, gf.RoundRobin(2), local=gf.Exact())
    with pytest.raises(ValueError, match="`rtol`"):
        gf.LocalODE(rtol=-1.0)
    with pytest.raises(ValueError, match="`reduction`"):
        gf.Exact(reduction="lu")
    with pytest.raises(ValueError, match="`dwell`"):
        gf.switched_flow(problem, 0.0, 1.0, rr)
    with pytest.raises(ValueError, match="`t1`"):
        gf.switched_flow(problem, 0.1, -1.0, rr)
    with pytest.raises(ValueError, match="`eta`"):
        gf.two_point_flow(np.ones(3), A2, B2, THETA2, 0.0)
    with pytest.raises(ValueError, match="one shape"):
        gf.two_point_flow_approx(np.ones(3), A2, B2[:1], THETA2, 0.1)
