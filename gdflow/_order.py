"""Convergence orders fitted from data."""

from __future__ import annotations

import numpy as np


def fit_order(hs, errors) -> float:
    r"""The slope $p$ of $\log e = p\log h + c$, fitted by least squares.

    For a method of order $p$, errors against step sizes `hs` in the asymptotic
    regime follow $e \approx C h^p$; this returns the fitted $p$. Fit only
    points in that regime (not so large that higher terms dominate, not so small that
    rounding does).

    **Arguments:** `hs` and `errors`: positive, finite, the same length (at least 2).

    **Raises:** `ValueError` for mismatched lengths, fewer than two points, fewer than
    two distinct `hs`, or non-positive / non-finite values.

    ```python
    gf.fit_order([0.1, 0.05, 0.025], [1e-2, 2.5e-3, 6.25e-4])  # 2.0
    ```
    """
    h = np.asarray(hs, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if h.shape != e.shape:
        raise ValueError(f"`hs` and `errors` must have one length; got {h.size} and {e.size}.")
    if h.size < 2:
        raise ValueError("fit_order needs at least two (h, error) pairs.")
    if not (np.all(np.isfinite(h)) and np.all(h > 0)):
        raise ValueError("`hs` must be finite and > 0.")
    if not (np.all(np.isfinite(e)) and np.all(e > 0)):
        raise ValueError(
            "`errors` must be finite and > 0 (an exact zero error has no logarithm: "
            "drop points at machine precision)."
        )
    if np.unique(h).size < 2:
        raise ValueError("`hs` must hold at least two distinct step sizes.")
    slope, _ = np.polyfit(np.log(h), np.log(e), 1)
    return float(slope)
