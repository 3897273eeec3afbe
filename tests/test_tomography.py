"""Oracles for the parallel-beam tomography problem (AIR Tools II ``paralleltomo`` geometry).

Oracles: the closed-form chord length of a line through a square, a brute-force
fine-sampling estimate of every ray–pixel length, and the 0°/90° projections as plain
column/row sums of the image.
"""

import numpy as np
import pytest

from gdflow import LeastSquares
from gdflow.problems._tomography import parallel_beam_matrix, shepp_logan, tomography


def chord(theta_deg, s, h):
    """Length of the line {x : x·(cos θ, sin θ) = s} inside the square [-h, h)².

    Closed form: with c = |cos θ|, σ = |sin θ| the chord is 2h / max(c, σ) while the line
    crosses two opposite sides, and δ/(cσ) once it cuts a corner at normal distance
    δ = h(c + σ) - |s| from the corner. Axis-parallel lines follow the half-open
    convention: on the left/bottom edge they count, on the right/top edge they do not.
    """
    th = np.deg2rad(theta_deg)
    c, sg = abs(np.cos(th)), abs(np.sin(th))
    if theta_deg % 90 == 0:  # angles in [0, 180): 0° is the line x = s, 90° the line y = s
        return 2 * h if -h <= s < h else 0.0
    return max(0.0, min(2 * h / max(c, sg), (h * (c + sg) - abs(s)) / (c * sg)))


def rays(angles, offsets):
    return [(a, s) for a in angles for s in offsets]


def test_default_shape_sparsity_and_nonnegativity():
    A = parallel_beam_matrix(50)
    assert A.shape == (12780, 2500)  # 180 angles x round(sqrt(2)*50) = 71 rays
    assert A.format == "csr"
    assert A.data.min() > 0
    assert A.data.max() <= np.sqrt(2) + 1e-12  # no segment is longer than a pixel diagonal
    # every pixel is seen by some ray
    assert np.all(np.asarray(A.sum(axis=0)).ravel() > 0)


def test_default_row_sums_are_chord_lengths():
    N = 50
    A = parallel_beam_matrix(N)
    offsets = np.linspace(-35, 35, 71)  # d = p - 1 = 70
    expected = np.array([chord(a, s, N / 2) for a, s in rays(np.arange(180.0), offsets)])
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), expected, atol=1e-10)


@pytest.mark.parametrize("N", [7, 12])
def test_general_geometry_row_sums_and_constant_image(N):
    rng = np.random.default_rng(N)
    angles = np.concatenate([[0.0, 45.0, 90.0, 135.0], rng.uniform(0, 180, size=12)])
    p, d = 15, 2.2 * N  # outer rays miss the square entirely
    A = parallel_beam_matrix(N, angles, p, d)
    offsets = np.linspace(-d / 2, d / 2, p)
    expected = np.array([chord(a, s, N / 2) for a, s in rays(angles, offsets)])
    np.testing.assert_allclose(A @ np.full(N * N, 0.7), 0.7 * expected, atol=1e-10)
    missing = expected == 0
    assert missing.sum() >= 2 * len(angles)  # at least the two outermost rays per angle
    assert np.all(np.diff(A.indptr)[missing] == 0)  # empty rows, no stored zeros


def test_ray_on_right_edge_is_empty_and_on_left_edge_is_full():
    # N=4, offsets -2..2 on the grid lines: at 0° the ray x=2 (right edge) is empty and
    # x=-2 (left edge) is charged to the leftmost pixel column (half-open pixels).
    A = parallel_beam_matrix(4, [0.0, 90.0], 5, 4.0).toarray()
    assert np.all(A[4] == 0) and np.all(A[9] == 0)
    np.testing.assert_allclose(A[0].sum(), 4.0)
    np.testing.assert_allclose(A[0][:4], 1.0)  # column-major: pixels 0..3 = image column 0


def test_pixel_order_hand_computed():
    # N=2, one vertical ray x = 0.5: it crosses the right image column (c=1), rows r=0,1,
    # i.e. columns c*N + r = 2, 3 of A, length 1 in each.
    A = parallel_beam_matrix(2, [0.0], 1, 0.0).toarray()
    assert A.shape == (1, 4)
    A = parallel_beam_matrix(2, [0.0], 3, 1.0).toarray()  # offsets -0.5, 0, 0.5
    np.testing.assert_allclose(A[2], [0, 0, 1, 1])
    np.testing.assert_allclose(A[1], [0, 0, 1, 1])  # x = 0 lies on a grid line: to its right
    np.testing.assert_allclose(A[0], [1, 1, 0, 0])
    # A horizontal ray y = 0.5 crosses the top image row r=0: columns 0 and 2.
    A = parallel_beam_matrix(2, [90.0], 1, 0.0).toarray()
    np.testing.assert_allclose(A[0], [1, 0, 1, 0])  # y = 0 on a grid line: the row above


def brute_force(N, angles, offsets, dt):
    """Sum dt over fine samples along each ray, binned into half-open pixels."""
    h = N / 2
    t = np.arange(-h * np.sqrt(2) - 1, h * np.sqrt(2) + 1, dt) + dt / 2
    out = np.zeros((len(angles) * len(offsets), N * N))
    for k, (a, s) in enumerate(rays(angles, offsets)):
        th = np.deg2rad(a)
        c = 0.0 if a % 180 == 90 else np.cos(th)
        sn = 0.0 if a % 180 == 0 else np.sin(th)
        x, y = s * c - t * sn, s * sn + t * c
        ix, iy = np.floor(x + h).astype(int), np.floor(y + h).astype(int)
        ok = (ix >= 0) & (ix < N) & (iy >= 0) & (iy < N)
        np.add.at(out[k], ix[ok] * N + (N - 1 - iy[ok]), dt)
    return out


def test_against_brute_force_sampling():
    N, dt = 5, 1e-3
    angles = np.array([0.0, 13.0, 57.0, 90.0, 101.0, 149.0])
    p, d = 8, 7.0  # offsets -3.5, -2.5 (a grid line for odd N), ..., 3.5
    A = parallel_beam_matrix(N, angles, p, d).toarray()
    B = brute_force(N, angles, np.linspace(-d / 2, d / 2, p), dt)
    np.testing.assert_allclose(A, B, atol=2.5 * dt)


def test_shepp_logan_range_and_orientation():
    N = 50
    img = shepp_logan(N)
    assert img.shape == (N, N)
    assert img.min() == 0.0 and img.max() == 1.0
    # centre of the head: outer 1 - inner 0.8 = 0.2; the ellipse of intensity +0.1
    # centred at y = +0.35 must appear in the *upper* half (small row index).
    col = N // 2
    row_of = lambda y: int(round((N - 1) / 2 - y * (N - 1) / 2))  # noqa: E731
    np.testing.assert_allclose(img[row_of(0.35), col], 0.3)
    np.testing.assert_allclose(img[row_of(-0.35), col], 0.2)
    # the larger dark ellipse (semi-axes 0.16 x 0.41) is on the left (x = -0.22)
    col_of = lambda x: int(round((N - 1) / 2 + x * (N - 1) / 2))  # noqa: E731
    assert img[row_of(0.3), col_of(-0.22)] == 0.0
    np.testing.assert_allclose(img[row_of(0.3), col_of(0.22)], 0.2)


def test_projections_at_0_and_90_degrees_are_image_sums():
    # With d = p - 1 the 0°/90° rays run along grid lines and are charged to the pixel
    # column to their right / the pixel row above: b is then a plain column / row sum.
    N = 50
    A = parallel_beam_matrix(N, [0.0, 90.0])
    img = shepp_logan(N)
    b = A @ img.ravel(order="F")
    offsets = np.linspace(-35, 35, 71)
    inside = (offsets >= -25) & (offsets < 25)
    cols = (offsets[inside] + 25).astype(int)
    np.testing.assert_allclose(b[:71][inside], img.sum(axis=0)[cols], atol=1e-12)
    rows = N - 1 - (offsets[inside] + 25).astype(int)
    np.testing.assert_allclose(b[71:][inside], img.sum(axis=1)[rows], atol=1e-12)
    assert np.all(b[:71][~inside] == 0)


def test_tomography_problem():
    import jax

    tomo = tomography(N=10)
    n = 180 * 14
    assert tomo.A.shape == (n, 100) and tomo.shape == (10, 10)
    assert tomo.problem.n == n and isinstance(tomo.problem.structure, LeastSquares)
    np.testing.assert_allclose(np.asarray(tomo.problem.data["X"]), tomo.A.toarray())
    np.testing.assert_allclose(np.asarray(tomo.problem.data["y"]), tomo.b)
    np.testing.assert_allclose(tomo.b, tomo.A @ tomo.x_true)
    np.testing.assert_allclose(tomo.image(tomo.x_true), shepp_logan(10))
    eps = np.finfo(tomo.problem.data["X"].dtype).eps
    assert float(tomo.problem.full_loss(jax.numpy.asarray(tomo.x_true))) < 100 * eps**2
    noisy = tomography(N=10, noise=0.05, key=jax.random.key(0))
    np.testing.assert_allclose(
        np.linalg.norm(noisy.b - tomo.b), 0.05 * np.linalg.norm(tomo.b), rtol=1e-12
    )
    custom = tomography(N=10, angles=[0.0, 90.0], phantom=np.ones((10, 10)))
    np.testing.assert_allclose(custom.b[:14], [chord(0, s, 5) for s in custom.offsets])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"N": 0}, "N"),
        ({"angles": []}, "angles"),
        ({"angles": [np.nan]}, "angles"),
        ({"p": 0}, "p"),
        ({"d": -1.0}, "d"),
        ({"phantom": "cameraman"}, "phantom"),
        ({"phantom": np.ones((3, 3))}, "phantom"),
        ({"noise": -0.1}, "noise"),
        ({"noise": 0.1}, "key"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tomography(**{"N": 4, **kwargs})
