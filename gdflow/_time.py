r"""One rule for "the same time", used by every function that matches times.

Discrete runs save at $t = k\cdot\mathrm{lr}$, computed in the state's dtype; two runs
that should meet (GD at `lr` step `k·r` and GD at `lr/r` step `k`, or a flow's save time
and a GD step) differ by rounding only. Times $s$ and $t$ are the same when

$$ |s - t| \le \tau \max(1, |t_\text{max}|), \qquad
   \tau = \max(10^{-9}, 16\,\varepsilon), $$

with $\varepsilon$ the machine epsilon of the coarsest dtype involved and $t_\text{max}$
the largest time on the grid being matched against: a few ulps in float32, $10^{-9}$ in
float64 (far below any step size a run would use).
"""

from __future__ import annotations

import numpy as np

__all__ = ["match_times", "same_time_slack", "time_tolerance"]


def time_tolerance(*ts) -> float:
    """The relative tolerance $\\tau$ for times of the given arrays' dtypes."""
    eps = 0.0
    for t in ts:
        dtype = np.asarray(t).dtype
        if np.issubdtype(dtype, np.floating):
            eps = max(eps, float(np.finfo(dtype).eps))
    return max(1e-9, 16.0 * eps)


def same_time_slack(scale, *ts) -> float:
    """The absolute slack $\\tau\\max(1, |\\text{scale}|)$ for times near `scale`."""
    return time_tolerance(*ts) * max(1.0, abs(float(scale)))


def match_times(want, grid) -> np.ndarray:
    """Index into sorted `grid` of each time in `want`, or -1 where `grid` has none.

    Uses the package's one tolerance (module docstring): relative to the larger of 1 and
    the largest time in `grid`.
    """
    want = np.asarray(want)
    grid_np = np.asarray(grid)
    if grid_np.size == 0:
        return np.full(want.shape, -1, dtype=np.int64)
    slack = same_time_slack(np.max(np.abs(grid_np)), want, grid_np)
    g = grid_np.astype(np.float64)
    w = want.astype(np.float64)
    idx = np.clip(np.searchsorted(g, w), 0, len(g) - 1)
    lower = np.clip(idx - 1, 0, len(g) - 1)
    pick = np.where(np.abs(g[lower] - w) < np.abs(g[idx] - w), lower, idx)
    return np.where(np.abs(g[pick] - w) <= slack, pick, -1)
