r"""Parallel-beam X-ray tomography: the splitting text's "real linear system".

The geometry is that of AIR Tools II's `paralleltomo` (Hansen & Jørgensen, 2018), the
source of the 12780 × 2500 system in sgd-as-ode-splitting.md ("Tomography data from
AIRTools II 12780 × 2500, b = 60, relative error 1e-3"); see
`../shared/sources/sgd-as-ode-splitting.md`.

**Geometry.** The image is an `N × N` grid of unit pixels covering
$[-N/2, N/2]^2$. For every angle $\theta$ (degrees) there are `p` parallel
rays with signed offsets $s_j$ = `linspace(-d/2, d/2, p)`. Ray $(\theta, s)$
is the line

$$
r(t) = s\,(\cos\theta, \sin\theta) + t\,(-\sin\theta, \cos\theta),
$$

i.e. the line $\{x : x\cdot(\cos\theta,\sin\theta) = s\}$. Row `i·p + j` of
$A$ (angle `i`, ray `j`, both counted from 0) holds the length of that line
inside each pixel, so $(Ax)_{ij}$ is the line integral of the piecewise-constant
image `x`.

**Pixel order** is AIR Tools' (MATLAB's `x = X(:)`): the image `X` has row index
`r` running from the top ($y$ near $N/2$) down and column index `c`
running along $x$; pixel `(r, c)` is column `c·N + r` of $A$ (column-major).
Use [`gdflow.problems.Tomography.image`][] to turn a parameter vector into the `N × N` picture.

**Boundary convention** (as AIR Tools): pixels are half-open,
$[c, c+1) \times [r', r'+1)$ in shifted coordinates, so a ray running exactly along
an interior grid line is charged to the pixels to its right (vertical rays) or above it
(horizontal rays), and a ray running along the top or right edge of the square gives an
empty row. With the defaults (`d = p - 1`, integer offsets, integer grid lines for even
`N`) the 0° and 90° rays do run along grid lines, so this convention matters.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .._validate import nonnegative_finite, positive_int, prng_key, real_array

__all__ = ["Tomography", "parallel_beam_matrix", "shepp_logan", "tomography"]

# Modified Shepp–Logan phantom (P. Toft, "The Radon Transform - Theory and
# Implementation", PhD thesis, DTU 1996): Shepp & Logan's ellipses with intensities
# changed for contrast. Columns: intensity A, semi-axes a, b, centre x0, y0, rotation
# phi in degrees; coordinates normalised so that the pixel centres span [-1, 1].
_SHEPP_LOGAN_MODIFIED = np.array(
    [
        [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
        [-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0.0],
        [-0.2, 0.1100, 0.3100, 0.22, 0.0, -18.0],
        [-0.2, 0.1600, 0.4100, -0.22, 0.0, 18.0],
        [0.1, 0.2100, 0.2500, 0.0, 0.35, 0.0],
        [0.1, 0.0460, 0.0460, 0.0, 0.1, 0.0],
        [0.1, 0.0460, 0.0460, 0.0, -0.1, 0.0],
        [0.1, 0.0460, 0.0230, -0.08, -0.605, 0.0],
        [0.1, 0.0230, 0.0230, 0.0, -0.606, 0.0],
        [0.1, 0.0230, 0.0460, 0.06, -0.605, 0.0],
    ]
)

# Segments shorter than this are discarded: they arise when a ray crosses a vertical and
# a horizontal grid line at (numerically) the same point, i.e. passes through a pixel
# corner. AIR Tools drops such "double points" with the same tolerance.
_TINY = 1e-10


class Tomography(NamedTuple):
    r"""A parallel-beam tomography test problem (returned by [`gdflow.problems.tomography`][]).

    **Fields:**

    - `problem`: the least-squares [`gdflow.Problem`][] with data
      `{"X": A (dense, (n, N²)), "y": b (n,)}`, loss
      $\frac1n\sum_i \tfrac12(a_i^\top\theta - b_i)^2$ and `params0` zeros.
    - `A`: the same system matrix as a `scipy.sparse.csr_matrix` of shape
      `(len(angles)·p, N²)` (≈ 2 % nonzeros at `N = 50`).
    - `x_true`: the phantom as a vector of length `N²` in the column order of `A`,
      values in $[0, 1]$.
    - `b`: the right-hand side $A x_{\mathrm{true}}$ (plus noise if asked for).
    - `shape`: `(N, N)`.
    - `angles`: the projection angles in degrees, shape `(len(angles),)`.
    - `offsets`: the ray offsets `linspace(-d/2, d/2, p)`, shape `(p,)`.
    """

    problem: object
    A: sp.csr_matrix
    x_true: np.ndarray
    b: np.ndarray
    shape: tuple[int, int]
    angles: np.ndarray
    offsets: np.ndarray

    def image(self, v) -> np.ndarray:
        """The `N × N` picture of a vector `v` of length `N²` (top row first)."""
        return np.reshape(np.asarray(v), self.shape, order="F")


def _cosd_sind(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of angles in degrees, exact at multiples of 90° (as MATLAB's cosd/sind).

    Exactness matters: at 0° and 90° the default rays lie on grid lines, and
    `cos(pi/2) = 6e-17` would tilt them across a whole row of pixels.
    """
    r = np.mod(angles, 360.0)
    c = np.cos(np.deg2rad(r))
    s = np.sin(np.deg2rad(r))
    quarter = np.isclose(np.mod(r, 90.0), 0.0, rtol=0.0, atol=1e-12) | np.isclose(
        np.mod(r, 90.0), 90.0, rtol=0.0, atol=1e-12
    )
    k = np.mod(np.rint(r / 90.0).astype(int), 4)
    c = np.where(quarter, np.array([1.0, 0.0, -1.0, 0.0])[k], c)
    s = np.where(quarter, np.array([0.0, 1.0, 0.0, -1.0])[k], s)
    return c, s


def _default_geometry(N, angles, p, d):
    N = positive_int("N", N)
    if angles is None:
        angles = np.arange(180.0)
    angles = np.atleast_1d(real_array("angles", angles, finite=False).astype(float))
    if angles.ndim != 1 or angles.size == 0 or not np.all(np.isfinite(angles)):
        raise ValueError(
            "`angles` must be a non-empty 1-d array of finite angles in degrees, e.g. "
            f"np.arange(180); got shape {angles.shape}."
        )
    p = round(np.sqrt(2) * N) if p is None else positive_int("p", p)
    d = float(p - 1) if d is None else nonnegative_finite("d", d)
    if p > 1 and d == 0:
        raise ValueError(f"`d` (the width between the first and last ray) must be > 0 when p={p}.")
    offsets = np.linspace(-d / 2, d / 2, p)
    return N, angles, p, d, offsets


def _slab(origin, direction, h, n_rays):
    """Parameter interval of the line origin + t·direction inside [-h, h) (1-d slab).

    A line parallel to the slab is inside for all t if -h <= origin < h (half-open, so
    that a ray along the right/top edge of the square is outside, as in AIR Tools).
    """
    lo = np.full(n_rays, -np.inf)
    hi = np.full(n_rays, np.inf)
    moving = direction != 0
    t1 = (-h - origin[moving]) / direction[moving]
    t2 = (h - origin[moving]) / direction[moving]
    lo[moving] = np.minimum(t1, t2)
    hi[moving] = np.maximum(t1, t2)
    still = ~moving
    outside = still & ~((origin >= -h) & (origin < h))
    lo[outside], hi[outside] = np.inf, -np.inf
    return lo, hi


def _rays_block(N, c, s, off, row0):
    """Nonzeros (rows, cols, vals) for the rays (c_k, s_k, off_k), k = 0..R-1.

    Siddon's idea, vectorised over rays: a ray meets the vertical grid lines
    x = -N/2, …, N/2 at t_x = (x - x0)/a and the horizontal ones at t_y = (y - y0)/b.
    Sorting these crossing times (clipped to the ray's chord through the square) cuts the
    chord into segments, each inside one pixel; a segment's length is its difference of
    times (the direction is a unit vector) and its pixel is the one holding its midpoint.
    """
    h = N / 2.0
    R = off.shape[0]
    x0, y0 = c * off, s * off  # the foot of the ray on the line through the centre
    a, b = -s, c  # unit direction
    lox, hix = _slab(x0, a, h, R)
    loy, hiy = _slab(y0, b, h, R)
    tlo, thi = np.maximum(lox, loy), np.minimum(hix, hiy)
    hit = thi > tlo + _TINY
    tlo = np.where(hit, tlo, 0.0)
    thi = np.where(hit, thi, 0.0)

    grid = np.arange(N + 1, dtype=float) - h
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = (grid[None, :] - x0[:, None]) / a[:, None]
        ty = (grid[None, :] - y0[:, None]) / b[:, None]
    # Rays parallel to a family of grid lines never cross it: park those times at tlo.
    tx = np.where((a != 0)[:, None], tx, tlo[:, None])
    ty = np.where((b != 0)[:, None], ty, tlo[:, None])
    T = np.concatenate([tlo[:, None], thi[:, None], tx, ty], axis=1)
    T = np.clip(T, tlo[:, None], thi[:, None])
    T.sort(axis=1)

    seg = np.diff(T, axis=1)
    mid = 0.5 * (T[:, 1:] + T[:, :-1])
    xm = x0[:, None] + a[:, None] * mid + h
    ym = y0[:, None] + b[:, None] * mid + h
    ix = np.floor(xm).astype(np.int64)
    iy = np.floor(ym).astype(np.int64)
    keep = (seg > _TINY) & (ix >= 0) & (ix < N) & (iy >= 0) & (iy < N)
    rows = np.broadcast_to(np.arange(row0, row0 + R)[:, None], seg.shape)[keep]
    # AIR Tools' (MATLAB's column-major) pixel order: column c = ix, image row N-1-iy.
    cols = ix[keep] * N + (N - 1 - iy[keep])
    return rows, cols, seg[keep]


def parallel_beam_matrix(N: int = 50, angles=None, p=None, d=None) -> sp.csr_matrix:
    r"""The parallel-beam system matrix of AIR Tools II `paralleltomo(N, angles, p, d)`.

    Entry $A_{(i,j),k}$ is the length of ray $(\theta_i, s_j)$ inside pixel
    `k`; see the module docstring for the geometry, pixel order and boundary convention.
    Each row therefore sums to the chord length of its line through the square
    $[-N/2, N/2)^2$.

    **Arguments:**

    - `N`: pixels per side (the domain is $[-N/2, N/2]^2$, pixels of size 1).
    - `angles`: projection angles in degrees; default `0, 1, …, 179`.
    - `p`: rays per angle; default `round(sqrt(2)·N)` (71 for `N = 50`).
    - `d`: distance between the first and last ray; default `p - 1` (unit spacing).

    **Returns:** a `scipy.sparse.csr_matrix` of shape `(len(angles)·p, N²)`, rows
    ordered angle-major (row `i·p + j`).

    **Raises:** `ValueError` for a non-positive `N` or `p`, negative `d`, or
    empty/non-finite `angles`.

    Cost: $O(R\,N\log N)$ for `R` rays (a sort of `2N + 4` crossing times per
    ray), vectorised over blocks of rays; `N = 50` takes well under a second.
    """
    N, angles, p, d, offsets = _default_geometry(N, angles, p, d)
    c, s = _cosd_sind(angles)
    cr, sr = np.repeat(c, p), np.repeat(s, p)
    offr = np.tile(offsets, angles.size)
    n_rays = cr.size
    block = max(1, 2_000_000 // (2 * N + 4))  # bound the (rays × crossings) work arrays
    parts = [
        _rays_block(N, cr[k : k + block], sr[k : k + block], offr[k : k + block], k)
        for k in range(0, n_rays, block)
    ]
    rows = np.concatenate([q[0] for q in parts])
    cols = np.concatenate([q[1] for q in parts])
    vals = np.concatenate([q[2] for q in parts])
    A = sp.csr_matrix((vals, (rows, cols)), shape=(n_rays, N * N))
    A.sum_duplicates()
    return A


def shepp_logan(N: int = 50) -> np.ndarray:
    r"""The modified Shepp–Logan head phantom on an `N × N` grid, values in $[0, 1]$.

    Pixel `(r, c)` (row `r` from the top) takes the sum of the intensities of the
    ellipses of Toft's modified Shepp–Logan table that contain its centre, in coordinates
    where the pixel centres span $[-1, 1]$ ($x$ along columns, $y$ up),
    and negative sums are set to 0 — the phantom of AIR Tools' `phantomgallery`.

    **Returns:** an `(N, N)` float array; `shepp_logan(N).ravel(order="F")` is the
    vector in the column order of [`gdflow.problems.parallel_beam_matrix`][].
    """
    N = positive_int("N", N)
    xn = (np.arange(N) - (N - 1) / 2) / ((N - 1) / 2) if N > 1 else np.zeros(1)
    X = np.broadcast_to(xn[None, :], (N, N))
    Y = np.broadcast_to(xn[::-1, None], (N, N))  # top row at y = +1
    img = np.zeros((N, N))
    for amp, a, b, cx, cy, phi in _SHEPP_LOGAN_MODIFIED:
        ph = np.deg2rad(phi)
        u, v = X - cx, Y - cy
        inside = ((u * np.cos(ph) + v * np.sin(ph)) / a) ** 2 + (
            (v * np.cos(ph) - u * np.sin(ph)) / b
        ) ** 2 <= 1.0
        img += amp * inside
    return np.clip(img, 0.0, 1.0)


def tomography(
    N: int = 50,
    angles=None,
    p=None,
    d=None,
    phantom="shepp_logan",
    noise: float = 0.0,
    key=None,
) -> Tomography:
    r"""The parallel-beam tomography least-squares problem of the splitting text.

    Builds the AIR Tools II `paralleltomo` system $A$ (see
    [`gdflow.problems.parallel_beam_matrix`][]), a phantom $x_{\mathrm{true}}$ and
    $b = A x_{\mathrm{true}} + e$, and wraps them as the least-squares problem

    $$
    L(\theta) = \frac1n \sum_{i=1}^n \tfrac12 (a_i^\top\theta - b_i)^2
    $$

    (`gf.problems.least_squares(A_dense, b)`, `params0 = 0`). Without noise and with
    the default geometry $A$ has full column rank (checked numerically for
    `N` = 4, 5, 10, 20, 30, 50; $\sigma_{\min} = 0.138$ at `N = 50`), so the
    least-squares solution is the phantom itself.

    With the defaults (`N = 50`) this is the text's 12780 × 2500 system; the dense copy
    inside the problem takes `n·N²·8` bytes (256 MB at `N = 50` in float64).

    **Arguments:**

    - `N`, `angles`, `p`, `d`: the geometry, as in [`gdflow.problems.parallel_beam_matrix`][]
      (defaults: 0..179°, `round(sqrt(2)·N)` rays, `d = p - 1`).
    - `phantom`: `"shepp_logan"` (the modified Shepp–Logan head, as AIR Tools'
      default), or an array of shape `(N, N)` (top row first) or `(N²,)` (in the
      column order of `A`).
    - `noise`: relative noise level $\eta \ge 0$: $e = \eta\,|Ax|\,g/|g|$
      with $g$ standard Gaussian (AIR Tools' convention).
    - `key`: a `jax.random` key, required when `noise > 0`.

    **Returns:** a [`gdflow.problems.Tomography`][] `(problem, A, x_true, b, shape, angles,
    offsets)`.

    **Raises:** `ValueError` for bad geometry, an unknown phantom name or a phantom
    of the wrong shape, a negative `noise`, or `noise > 0` without `key`.

    ```python
    import gdflow as gf
    tomo = gf.problems.tomography(N=20)          # 5040 × 400
    tomo.A.shape, tomo.problem.n                 # ((5040, 400), 5040)
    ```
    """
    N, angles, p, d, offsets = _default_geometry(N, angles, p, d)
    noise = nonnegative_finite("noise", noise)
    if isinstance(phantom, str):
        if phantom != "shepp_logan":
            raise ValueError(
                f"`phantom` must be 'shepp_logan' or an (N, N) array; got {phantom!r}."
            )
        x_true = shepp_logan(N).ravel(order="F")
    else:
        img = real_array("phantom", phantom).astype(float)
        if img.shape == (N, N):
            x_true = img.ravel(order="F")
        elif img.shape == (N * N,):
            x_true = img.copy()
        else:
            raise ValueError(
                f"`phantom` must have shape ({N}, {N}) or ({N * N},) for N={N}; got {img.shape}."
            )
    A = parallel_beam_matrix(N, angles, p, d)
    b = A @ x_true
    if noise > 0:
        if key is None:
            raise ValueError("`noise` > 0 needs a random `key=` (e.g. jax.random.key(0)).")
        prng_key("key", key)
        import jax

        g = np.asarray(jax.random.normal(key, b.shape), dtype=float)
        b = b + noise * np.linalg.norm(b) * g / np.linalg.norm(g)

    # Imported here: gdflow.problems imports this module.
    from . import least_squares

    problem = least_squares(A.toarray(), b, name=f"tomography{N}")
    return Tomography(problem, A, x_true, b, (N, N), angles, offsets)
