"""Oracles for the modified (backward-error) loss and fields of GD and SGD.

* local one-step error orders, fitted: the flow of the order-``p`` field for time ``lr``
  (classical RK4 at ``lr/16``, far below the measured errors) is within ``O(lr^(p+2))`` of
  one GD step, on a log-sum-exp-plus-quartic loss and on a small tanh network;
* dense-derivative reference (``jax.hessian``, third derivative by ``jax.jacfwd``);
* closed forms on quadratics, including the text's bowl through ``gf.gradient_flow``;
* SGD modified loss against NumPy (least squares), an exhaustive expectation over batches,
  and the order-averaged epoch claim of Smith et al. (2021) with fitted orders.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdflow as gf
from gdflow import modified_field, modified_loss, sgd_modified_loss


def _fit(hs, errs):
    return gf.fit_order(hs, errs)


# ---------------------------------------------------------------------------------------
# losses


def _lse_data(seed=0):
    rng = np.random.default_rng(seed)
    return {"A": jnp.asarray(rng.normal(size=(5, 3))), "B": jnp.asarray(rng.normal(size=(3, 3)))}


def lse_loss(th, d):
    """Log-sum-exp plus a quartic: smooth, convex, nonzero third derivative."""
    return jax.nn.logsumexp(d["A"] @ th) + 0.25 * jnp.sum((d["B"] @ th) ** 4)


def _mlp_setup(seed=1):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.normal(size=(8, 3)))
    Y = jnp.asarray(rng.normal(size=(8, 2)))
    params = [
        {
            "W": jnp.asarray(rng.normal(size=(3, 4)) / np.sqrt(3)),
            "b": jnp.asarray(0.1 * rng.normal(size=4)),
        },
        {"W": jnp.asarray(rng.normal(size=(4, 2)) / 2.0), "b": jnp.zeros(2)},
    ]
    return params, {"X": X, "Y": Y}


def mlp_loss(params, d):
    h = jnp.tanh(d["X"] @ params[0]["W"] + params[0]["b"])
    out = h @ params[1]["W"] + params[1]["b"]
    return 0.5 * jnp.mean(jnp.sum((out - d["Y"]) ** 2, axis=-1))


def _tree_norm(t):
    return jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(t)))


def _sub(a, b):
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def _flow(field, y0, t1, args, steps=16):
    """Flow of ``field(params, args)`` for time ``t1`` by classical RK4 at tiny steps.

    The local errors measured below are at least ``~1e-9``; RK4's error over ``t1`` with
    step ``t1/16`` is ``O(t1 * (t1/16)^4)`` smaller than the leading term it would have to
    mimic, far below that. (A fixed-step scan compiles in a fraction of the time of an
    adaptive diffrax solve; the diffrax path is checked in ``test_gradient_flow_...``.)
    """
    h = t1 / steps
    a_coef = jnp.asarray([0.0, 0.5, 0.5, 1.0])
    b_coef = jnp.asarray([1.0, 2.0, 2.0, 1.0]) / 6

    def axpy(a, x, y):
        return jax.tree_util.tree_map(lambda u, v: u + a * v, y, x)

    def rk4(_, y):
        # Stages in a loop so that the (expensive to compile) field appears once.
        def stage(i, carry):
            k, incr = carry
            k = field(axpy(a_coef[i] * h, k, y), args)
            return k, axpy(b_coef[i], k, incr)

        zero = jax.tree_util.tree_map(jnp.zeros_like, y)
        _, incr = jax.lax.fori_loop(0, 4, stage, (zero, zero))
        return axpy(h, incr, y)

    return jax.lax.fori_loop(0, steps, rk4, y0)


def _local_errors(loss, params0, data, lrs, order):
    def one(lr):
        end = _flow(modified_field(loss, lr, order), params0, lr, data)
        gd = jax.tree_util.tree_map(
            lambda p, g: p - lr * g, params0, jax.grad(loss)(params0, data)
        )
        return _tree_norm(_sub(end, gd))

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(lrs)))


# ---------------------------------------------------------------------------------------
# GD: local orders


@pytest.mark.parametrize("order", [0, 1, 2])
def test_local_order_lse(order):
    data = _lse_data()
    th0 = jnp.asarray([0.3, -0.5, 0.2])
    lrs = np.array([0.005, 0.01, 0.02, 0.04])
    errs = _local_errors(lse_loss, th0, data, lrs, order)
    slope = _fit(lrs, errs)
    assert abs(slope - (order + 2)) < 0.3, (slope, errs)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_local_order_tanh_mlp(order):
    params, data = _mlp_setup()
    lrs = np.array([0.02, 0.04, 0.08, 0.16])
    errs = _local_errors(mlp_loss, params, data, lrs, order)
    slope = _fit(lrs, errs)
    assert abs(slope - (order + 2)) < 0.3, (slope, errs)


# ---------------------------------------------------------------------------------------
# GD: the field against dense derivatives and closed forms


def test_field_matches_dense_derivatives():
    data = _lse_data(3)
    th = jnp.asarray([0.4, 0.1, -0.3])
    lr = 0.07

    @jax.jit
    def both(th, data):
        g = jax.grad(lse_loss)(th, data)
        H = jax.hessian(lse_loss)(th, data)
        T = jax.jacfwd(jax.hessian(lse_loss))(th, data)  # T[i, j, k] = d3 L / d_j d_k d_i
        tgg = jnp.einsum("ijk,j,k->i", T, g, g)
        dense = [
            -g,
            -g - lr / 2 * H @ g,
            -g - lr / 2 * H @ g - lr**2 * (tgg / 12 + H @ H @ g / 3),
        ]
        return dense, [modified_field(lse_loss, lr, order)(th, data) for order in range(3)]

    dense, ours = both(th, data)
    for order in range(3):
        np.testing.assert_allclose(ours[order], dense[order], rtol=1e-12)


def test_quadratic_closed_forms():
    rng = np.random.default_rng(4)
    Q = rng.normal(size=(4, 4))
    H = Q @ Q.T / 4 + 0.1 * np.eye(4)
    c = rng.normal(size=4)
    lr = 0.3

    def loss(th, c_):
        r = th - c_
        return 0.5 * r @ jnp.asarray(H) @ r

    th = jnp.asarray(rng.normal(size=4))
    r = np.asarray(th) - c
    H2, H3 = H @ H, H @ H @ H
    np.testing.assert_allclose(
        modified_loss(loss, lr)(th, c), 0.5 * r @ (H + lr / 2 * H2) @ r, rtol=1e-13
    )
    expected = [-H @ r, -(H + lr / 2 * H2) @ r, -(H + lr / 2 * H2 + lr**2 / 3 * H3) @ r]
    for order in range(3):
        np.testing.assert_allclose(
            modified_field(loss, lr, order)(th, c), expected[order], rtol=1e-12
        )


def test_text_warmup_numbers():
    # modified-loss.md: lambda = 1, eta = 0.5: the bowl (1/2)(lambda + eta lambda^2 / 2) theta^2.
    loss = lambda th: 0.5 * th**2  # noqa: E731
    assert np.isclose(modified_loss(loss, 0.5)(1.2), 0.5 * 1.25 * 1.2**2)


def test_gradient_flow_on_modified_bowl_matches_closed_form():
    # The text's figure through the public solver: GF on L_eta is exp(-(lam + eta lam^2/2) t).
    lam, lr, theta0 = 1.0, 0.5, 1.2
    problem = gf.problems.quadratic(jnp.asarray(lam), params0=jnp.asarray([theta0]))
    ts = lr * np.arange(11)
    flow = gf.gradient_flow(
        problem, ts[-1], ts=ts, field=modified_field(problem.loss, lr, 1), rtol=1e-11, atol=1e-13
    )
    exact = theta0 * np.exp(-(lam + lr * lam**2 / 2) * ts)
    np.testing.assert_allclose(np.asarray(flow.params)[:, 0], exact, rtol=1e-8, atol=1e-12)
    # ... and after one step it is within O(eta^3) of GD, much closer than GF.
    gd1 = (1 - lr * lam) * theta0
    assert abs(exact[1] - gd1) < 0.4 * abs(theta0 * np.exp(-lam * lr) - gd1)


@pytest.mark.parametrize("which", ["lse", "mlp"])
def test_order1_field_is_minus_grad_of_modified_loss(which):
    if which == "lse":
        loss, params, data = lse_loss, jnp.asarray([0.2, 0.3, -0.1]), _lse_data()
    else:
        params, data = _mlp_setup()
        loss = mlp_loss
    lr = 0.13
    field = jax.jit(modified_field(loss, lr, 1))(params, data)
    minus_grad = jax.tree_util.tree_map(
        jnp.negative, jax.jit(jax.grad(modified_loss(loss, lr)))(params, data)
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(field), jax.tree_util.tree_leaves(minus_grad), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_order2_field_not_a_gradient_but_is_on_quadratics():
    # The Jacobian of the lr^2 term is symmetric iff the term is (locally) a gradient.
    data = _lse_data()
    th = jnp.asarray([0.2, 0.3, -0.1])
    lr = 1.0

    def f2(t, d):
        return modified_field(lse_loss, lr, 2)(t, d) - modified_field(lse_loss, lr, 1)(t, d)

    J = jax.jit(jax.jacfwd(f2))(th, data)
    assert np.max(np.abs(J - J.T)) > 1e-3 * np.max(np.abs(J))
    quad = lambda t, d: 0.5 * t @ (d["A"].T @ d["A"]) @ t  # noqa: E731
    Jq = jax.jit(jax.jacfwd(modified_field(quad, lr, 2)))(th, data)
    np.testing.assert_allclose(Jq, Jq.T, rtol=1e-12, atol=1e-12)


def test_dict_params_match_flat():
    data = _lse_data(5)

    def dict_loss(p, d):
        th = jnp.concatenate([p["u"], p["v"].reshape(-1)])
        return lse_loss(th, d)

    p = {"u": jnp.asarray([0.1]), "v": jnp.asarray([[0.2, -0.4]])}
    flat, unravel = ravel_pytree(p)
    # ravel_pytree orders by sorted keys: u then v, matching dict_loss's concatenation.
    lr = 0.2

    @jax.jit
    def both(p, flat, data):
        fields = [
            (
                modified_field(dict_loss, lr, o)(p, data),
                modified_field(lse_loss, lr, o)(flat, data),
            )
            for o in range(3)
        ]
        losses = (modified_loss(dict_loss, lr)(p, data), modified_loss(lse_loss, lr)(flat, data))
        return fields, losses

    fields, losses = both(p, flat, data)
    for out, ref in fields:
        assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(p)
        np.testing.assert_allclose(ravel_pytree(out)[0], ref, rtol=1e-12)
    np.testing.assert_allclose(*losses, rtol=1e-13)


@pytest.mark.parametrize("order", [3, -1, 1.5, "1", True, None])
def test_bad_order(order):
    with pytest.raises(ValueError, match="order"):
        modified_field(lse_loss, 0.1, order)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_lr(lr):
    with pytest.raises(ValueError, match="lr"):
        modified_field(lse_loss, lr, 1)
    with pytest.raises(ValueError, match="lr"):
        modified_loss(lse_loss, lr)


# ---------------------------------------------------------------------------------------
# SGD


def ls_loss(th, batch):
    return 0.5 * jnp.mean((batch["X"] @ th - batch["y"]) ** 2)


def _ls_problem(n=12, p=3, seed=6):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(n, p)), rng.normal(size=n)
    return gf.Problem(ls_loss, {"X": jnp.asarray(X), "y": jnp.asarray(y)}, jnp.zeros(p)), X, y


def _numpy_sgd_modified(X, y, th, lr, batches):
    """Value and gradient of L + lr/(4m) sum_j |g_j|^2 for least squares, in NumPy."""
    r = X @ th - y
    value = 0.5 * np.mean(r**2)
    grad = X.T @ r / len(y)
    m = len(batches)
    for rows in batches:
        Xb, rb = X[rows], r[rows]
        gb = Xb.T @ rb / len(rows)
        Hb = Xb.T @ Xb / len(rows)
        value += lr / (4 * m) * gb @ gb
        grad = grad + lr / (2 * m) * Hb @ gb
    return value, grad


@pytest.mark.parametrize(
    "batching",
    [gf.FullBatch(), gf.RoundRobin(4), gf.Reshuffle(3, jax.random.key(2))],
    ids=["full", "roundrobin", "reshuffle"],
)
def test_sgd_modified_loss_least_squares_numpy(batching):
    problem, X, y = _ls_problem()
    th = np.array([0.3, -1.0, 0.5])
    lr = 0.1
    batches = np.asarray(batching.epoch(problem.n, 0))
    f = sgd_modified_loss(problem, lr, batching)
    v_ref, g_ref = _numpy_sgd_modified(X, y, th, lr, batches)
    value, grad = jax.jit(jax.value_and_grad(f))(jnp.asarray(th), problem.data)
    np.testing.assert_allclose(value, v_ref, rtol=1e-12)
    np.testing.assert_allclose(grad, g_ref, rtol=1e-12)
    if isinstance(batching, gf.FullBatch):
        np.testing.assert_allclose(value, modified_loss(ls_loss, lr)(th, problem.data))


def test_sgd_modified_loss_expected_is_mean_over_all_batches():
    # Each batch of a uniformly random partition is a uniform b-subset, so the expectation of
    # (1/m) sum_j |g_j|^2 is the mean of |g_B|^2 over all b-subsets B: enumerate them.
    problem, X, y = _ls_problem(n=6, p=2, seed=7)
    th = np.array([0.5, -0.2])
    lr, b = 0.2, 2
    r = X @ th - y
    sq = [
        np.sum((X[list(B)].T @ r[list(B)] / b) ** 2) for B in itertools.combinations(range(6), b)
    ]
    ref = 0.5 * np.mean(r**2) + lr / 4 * np.mean(sq)
    f = sgd_modified_loss(problem, lr, gf.Reshuffle(b, jax.random.key(0)), expected=True)
    np.testing.assert_allclose(jax.jit(f)(jnp.asarray(th), problem.data), ref, rtol=1e-12)


def test_sgd_modified_loss_order_averaged_epoch():
    # Smith et al. (2021): averaged over the m! batch orders, one SGD epoch (time m*lr) equals
    # the flow of -grad L_SGD for time m*lr up to O(lr^3); a fixed order is only O(lr^2).
    rng = np.random.default_rng(8)
    X = jnp.asarray(rng.normal(size=(6, 2)))
    y = jnp.asarray((rng.uniform(size=6) < 0.5).astype(float))

    def logistic(th, batch):
        z = batch["X"] @ th
        return jnp.mean(jax.nn.softplus(z) - batch["y"] * z)

    problem = gf.Problem(logistic, {"X": X, "y": y}, jnp.asarray([0.5, -0.8]))
    batching = gf.RoundRobin(2)
    rows = np.asarray(batching.epoch(6, 0))
    m = len(rows)
    orders = jnp.asarray(list(itertools.permutations(range(m))))
    lrs = np.array([0.05, 0.1, 0.2, 0.4])
    data = problem.data

    def epoch(th, lr, order):
        for j in order:
            batch = jax.tree_util.tree_map(lambda x: x[jnp.asarray(rows)[j]], data)
            th = th - lr * jax.grad(logistic)(th, batch)
        return th

    def errors(lr):
        ends = jax.vmap(lambda o: epoch(problem.params0, lr, [o[i] for i in range(m)]))(orders)
        f = sgd_modified_loss_traced(problem, lr, rows)
        flow_end = _flow(lambda p, d: -jax.grad(f)(p, d), problem.params0, m * lr, data)
        return jnp.linalg.norm(jnp.mean(ends, 0) - flow_end), jnp.linalg.norm(ends[0] - flow_end)

    avg, fixed = (np.asarray(e) for e in jax.jit(jax.vmap(errors))(jnp.asarray(lrs)))
    assert abs(_fit(lrs, avg) - 3) < 0.3, avg
    assert abs(_fit(lrs, fixed) - 2) < 0.3, fixed
    # and the jitted helper agrees with the public function at one step size
    f_pub = sgd_modified_loss(problem, 0.1, batching)
    np.testing.assert_allclose(
        f_pub(problem.params0, data),
        sgd_modified_loss_traced(problem, 0.1, rows)(problem.params0, data),
    )


def sgd_modified_loss_traced(problem, lr, rows):
    """The same formula with a traceable ``lr`` (for vmapping the test over step sizes)."""
    m = len(rows)

    def f(th, data):
        sq = 0.0
        for j in range(m):
            batch = jax.tree_util.tree_map(lambda x: x[jnp.asarray(rows[j])], data)
            sq = sq + jnp.sum(jax.grad(problem.loss)(th, batch) ** 2)
        return problem.loss(th, data) + lr / (4 * m) * sq

    return f


def test_sgd_modified_loss_bad_input():
    problem, _, _ = _ls_problem()
    with pytest.raises(ValueError, match="batching"):
        sgd_modified_loss(problem, 0.1, gf.Replacement(4, jax.random.key(0)))
    with pytest.raises(ValueError, match="batch"):
        sgd_modified_loss(problem, 0.1, gf.RoundRobin(5, drop_remainder=True))
    with pytest.raises(ValueError, match="lr"):
        sgd_modified_loss(problem, -1.0, gf.RoundRobin(4))
