"""Problem families: gradients against NumPy formulas, shapes, and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdflow as gf


def _data(n=10, p=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p)), rng


def test_least_squares_batch_gradient_is_text_formula():
    X, rng = _data()
    y = rng.standard_normal(10)
    problem = gf.problems.least_squares(X, y)
    th = rng.standard_normal(4)
    idx = np.array([1, 4, 7])
    g = problem.grad(jnp.asarray(th), problem.batch(idx))
    np.testing.assert_allclose(np.asarray(g), X[idx].T @ (X[idx] @ th - y[idx]) / 3, atol=1e-13)
    assert float(problem.full_loss(jnp.asarray(th))) == pytest.approx(
        0.5 * np.mean((X @ th - y) ** 2), rel=1e-13
    )


def test_random_least_squares_shapes_and_consistency():
    problem = gf.problems.random_least_squares(50, 5, noise=0.0, key=jax.random.key(1))
    X, y = np.asarray(problem.data["X"]), np.asarray(problem.data["y"])
    assert (
        X.shape == (50, 5) and problem.n == 50 and isinstance(problem.structure, gf.LeastSquares)
    )
    sol = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(X @ sol, y, atol=1e-10)  # noise-free: consistent system


def test_logistic_gradient_and_labels():
    X, rng = _data()
    y = (rng.random(10) < 0.5).astype(float)
    problem = gf.problems.logistic(X, y)
    th = rng.standard_normal(4)
    s = 1 / (1 + np.exp(-X @ th))
    np.testing.assert_allclose(
        np.asarray(problem.grad(jnp.asarray(th))), X.T @ (s - y) / 10, atol=1e-13
    )
    with pytest.raises(ValueError, match="labels 0 and 1"):
        gf.problems.logistic(X, y + 1)


def test_softmax_gradient_and_integer_labels():
    X, rng = _data()
    labels = rng.integers(0, 3, 10)
    problem = gf.problems.softmax(X, labels, num_classes=3)
    Th = rng.standard_normal((4, 3))
    Z = X @ Th
    S = np.exp(Z - Z.max(1, keepdims=True))
    S /= S.sum(1, keepdims=True)
    Y = np.eye(3)[labels]
    np.testing.assert_allclose(
        np.asarray(problem.grad(jnp.asarray(Th))), X.T @ (S - Y) / 10, atol=1e-13
    )
    assert problem.params0.shape == (4, 3)


def test_two_points_and_quadratic_losses():
    problem = gf.problems.two_points(jnp.array([1.0, 0.0]), jnp.array([-1.0, 2.0]), jnp.zeros(2))
    assert float(problem.full_loss(jnp.zeros(2))) == pytest.approx(0.5 * (1 + 5) / 2)
    q = gf.problems.quadratic(2.0, params0=[1.5])
    assert float(q.full_loss(jnp.array([1.5]))) == pytest.approx(0.5 * 2.0 * 1.5**2)
    with pytest.raises(ValueError, match="symmetric"):
        gf.problems.quadratic(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="params0"):
        gf.problems.quadratic(np.eye(2), params0=np.ones(3))


@pytest.mark.parametrize("activation", ["linear", "relu", "leaky_relu", "tanh"])
def test_mlp_forward_matches_numpy(activation):
    X, rng = _data(n=6, p=5)
    labels = rng.integers(0, 3, 6)
    problem = gf.problems.mlp(
        X, labels, widths=(7, 4), activation=activation, key=jax.random.key(2)
    )
    W = [np.asarray(w) for w in problem.params0]
    assert [w.shape for w in W] == [(5, 7), (7, 4), (4, 3)]
    act = {
        "linear": lambda z: z,
        "relu": lambda z: np.maximum(z, 0),
        "leaky_relu": lambda z: np.where(z >= 0, z, 0.01 * z),
        "tanh": np.tanh,
    }[activation]
    Z = act(act(X @ W[0]) @ W[1]) @ W[2]
    logp = Z - np.log(np.exp(Z).sum(1, keepdims=True))
    expected = -np.mean(logp[np.arange(6), labels])
    assert float(problem.full_loss(problem.params0)) == pytest.approx(expected, rel=1e-12)


def test_mlp_bias_mse_and_init_scale():
    X, rng = _data(n=8, p=3)
    y = rng.standard_normal(8)
    problem = gf.problems.mlp(X, y, widths=(4,), activation="tanh", bias=True, loss="mse")
    assert set(problem.params0[0]) == {"W", "b"}
    small = gf.problems.mlp(X, y, widths=(4, 4), activation="linear", loss="mse", init_scale=1e-3)
    big = gf.problems.mlp(X, y, widths=(4, 4), activation="linear", loss="mse", init_scale=1.0)
    np.testing.assert_allclose(
        np.asarray(small.params0[0]), 1e-3 * np.asarray(big.params0[0]), rtol=1e-12
    )
    with pytest.raises(ValueError, match="`activation`"):
        gf.problems.mlp(X, y, activation="gelu")


def test_problem_input_checks():
    loss = lambda th, b: 0.5 * jnp.mean((b["X"] @ th - b["y"]) ** 2)  # noqa: E731
    X, y = np.ones((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="leading"):
        gf.Problem(loss, {"X": X, "y": np.zeros(3)}, jnp.zeros(2))
    with pytest.raises(ValueError, match="params0"):
        gf.Problem(loss, {"X": X, "y": y}, jnp.zeros(3))  # shape mismatch with X
    with pytest.raises(ValueError, match="floating"):
        gf.Problem(loss, {"X": X, "y": y}, jnp.zeros(2, int))
    with pytest.raises(ValueError, match="scalar"):
        gf.Problem(lambda th, b: b["X"] @ th, {"X": X, "y": y}, jnp.zeros(2))
    with pytest.raises(ValueError, match="`X`"):
        gf.problems.least_squares(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="`y`"):
        gf.problems.least_squares(X, np.ones(5))


def test_mlp_xavier_uniform_init():
    X = np.ones((5, 784))
    problem = gf.problems.mlp(X, np.arange(5) % 2, widths=(50, 50), init="xavier")
    for W, (fi, fo) in zip(problem.params0, [(784, 50), (50, 50), (50, 2)], strict=True):
        W = np.asarray(W)
        a = np.sqrt(6.0 / (fi + fo))
        assert W.shape == (fi, fo) and np.abs(W).max() <= a
    W1 = np.asarray(problem.params0[0])
    a = np.sqrt(6.0 / 834)
    # uniform on [-a, a]: variance a²/3; 39200 draws give a relative error of ~1 %
    assert abs(W1.var() / (a**2 / 3) - 1) < 0.05
    he = gf.problems.mlp(X, np.arange(5) % 2, widths=(50, 50), activation="relu")
    assert abs(np.asarray(he.params0[0]).var() / (2 / 784) - 1) < 0.05
    with pytest.raises(ValueError, match="init"):
        gf.problems.mlp(X, np.arange(5) % 2, init="orthogonal")


def _np_conv(x, W, stride):
    """NumPy reference: x (n, H, W, C), W (25·C, O) with rows ordered (i, j, c)."""
    n, H, Wd, C = x.shape
    O = W.shape[1]
    K = W.reshape(5, 5, C, O)
    Ho, Wo = (H - 5) // stride + 1, (Wd - 5) // stride + 1
    out = np.zeros((n, Ho, Wo, O))
    for a in range(Ho):
        for b in range(Wo):
            win = x[:, a * stride : a * stride + 5, b * stride : b * stride + 5, :]
            out[:, a, b, :] = np.einsum("nijc,ijco->no", win, K)
    return out


@pytest.mark.parametrize("kind", ["subsample", "maxpool"])
def test_conv_nets_against_numpy(kind):
    rng = np.random.default_rng(0)
    X = rng.random((3, 784))
    y = np.array([0, 3, 9])
    problem = gf.problems.conv_net(X, y, kind, key=jax.random.key(1))
    p = jax.tree_util.tree_map(np.asarray, problem.params0)
    if kind == "maxpool":  # non-zero biases, so that they are checked too
        p["conv_b"] = [rng.standard_normal(6) * 0.1, rng.standard_normal(16) * 0.1]
        p["fc_b"] = [rng.standard_normal(k) * 0.1 for k in (120, 84, 10)]
    h = np.pad(X.reshape(3, 28, 28, 1), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(2):
        h = _np_conv(h, p["conv"][i], 2 if kind == "subsample" else 1)
        if kind == "maxpool":
            h = h + p["conv_b"][i]
        h = np.maximum(h, 0)
        if kind == "maxpool":
            n, H, W, C = h.shape
            h = h.reshape(n, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))
    h = h.reshape(3, -1)
    assert h.shape == (3, 400)
    for i in range(3):
        h = h @ p["fc"][i] + (p["fc_b"][i] if kind == "maxpool" else 0)
        if i < 2:
            h = np.maximum(h, 0)
    z = np.asarray(
        gf.problems.conv_apply(jax.tree_util.tree_map(jnp.asarray, p), jnp.asarray(X), kind=kind)
    )
    np.testing.assert_allclose(z, h, rtol=1e-10, atol=1e-12)
    ce = np.mean(np.log(np.exp(h).sum(1)) - h[np.arange(3), y])
    batch = {"X": jnp.asarray(X), "Y": jax.nn.one_hot(y, 10, dtype=jnp.float64)}
    loss = problem.loss(jax.tree_util.tree_map(jnp.asarray, p), batch)
    assert float(loss) == pytest.approx(ce, rel=1e-12)
    n_params = sum(np.size(v) for v in jax.tree_util.tree_leaves(problem.params0))
    weights = 25 * 6 + 150 * 16 + 400 * 120 + 120 * 84 + 84 * 10  # 61470
    biases = 6 + 16 + 120 + 84 + 10 if kind == "maxpool" else 0
    assert n_params == weights + biases
