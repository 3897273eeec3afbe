r"""The minibatch text's two-point switched flow in closed form, and its approximation.

Reference: `../shared/sources/minibatch-gradient-flow.md`. Two examples
$\mathbf a, \mathbf b$ with per-example loss $\tfrac12|x-\theta|^2$, visited
round robin (`a` first), modelled as the switched flow

$$
\dot\theta = \eta\big[g_{2\eta}(t)(\mathbf a - \theta)
             + (1 - g_{2\eta}(t))(\mathbf b - \theta)\big],
\qquad g_{2\eta} = \tfrac12 + \tfrac12 s_{2\eta},
$$

with the square wave $s_{2\eta}(t) = +1$ on $[0,\eta)$, $-1$ on
$[\eta, 2\eta)$, and so on: rate $\eta$ and dwell time $\eta$ per
batch. In [`gdflow.switched_flow`][] this is `rate=eta, dwell=eta` with
`RoundRobin(1)` on [`gdflow.problems.two_points`][].

Checked against the text (see `tests/test_splitting.py` and the `minibatch-flow`
experiment): the Laplace-transform solution with floors is correct as written (it agrees
with an accurate numerical solve of the switched flow to ~1e-14), and the final
$\eta \ll 1$ approximation is what the text says it is, an approximation with
error $O(\eta^2)$, uniformly in $t$ (measured maximum
$\approx \eta^2 |\mathbf a - \mathbf b|_\infty$, just after the first switch). No
typo needed correcting. But that accuracy is weak:

* the terms the text drops (for $t \gg 1$, the constants; for $\eta \ll 1$,
  the relative $O(\eta^2)$ corrections of
  $-2(1-e^{-\eta^2 s})/(1-e^{2\eta^2})$ and the factor $e^{2\eta^2}$) are
  all $O(\eta^2)$ — the same order as the oscillation
  $s_{2\eta}(t)(1-e^{-\eta\tau})$ it keeps ($\tau = t - 2\eta\lfloor
  t/2\eta\rfloor$). So it does not resolve the oscillation: it jumps by
  $\approx 2\eta^2$ at each switch (the flow is continuous) and is offset by
  $\approx\eta^2/2$ late in the run;
* plain full-batch gradient flow, $\tfrac{a+b}{2} + (\theta_0 -
  \tfrac{a+b}{2})e^{-\eta t}$, is also within $O(\eta^2)$ of the switched flow,
  with half the maximal error ($\approx \eta^2|\mathbf a - \mathbf b|_\infty/2$).

Beyond the text, `two_point_flow_approx(..., corrected=True)` keeps every
$O(\eta^2)$ term and is accurate to $O(\eta^4)$ (see its docstring).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._validate import checked_array, is_traced, positive_finite

__all__ = ["square_wave", "two_point_flow", "two_point_flow_approx"]


def square_wave(t, eta):
    r"""The text's square wave $s_{2\eta}(t)$: `+1` on $[2k\eta, (2k+1)\eta)$,
    `-1` on $[(2k+1)\eta, (2k+2)\eta)$, elementwise in `t`."""
    t = jnp.asarray(t)
    return jnp.where(jnp.floor(t / eta) % 2 == 0, 1.0, -1.0).astype(t.dtype)


def _prepare(t, a, b, theta0, eta):
    eta = positive_finite("eta", eta)
    a, b, theta0 = (checked_array(n, v) for n, v in (("a", a), ("b", b), ("theta0", theta0)))
    t = checked_array("t", t)
    if not is_traced(t):
        tn = np.asarray(t)
        if tn.size and tn.min() < 0:
            # The formula is the switched flow's only for t >= 0 (the square wave and the
            # floors start at t = 0); at t < 0 it returns a number with no meaning.
            raise ValueError(
                f"`t` must be >= 0 (the flow starts at t = 0); got a minimum of {tn.min():g}."
            )
    dtype = jnp.result_type(a, b, theta0, t, float)
    a = jnp.asarray(a, dtype)
    b = jnp.asarray(b, dtype)
    theta0 = jnp.asarray(theta0, dtype)
    if not (a.shape == b.shape == theta0.shape):
        raise ValueError(
            f"`a`, `b` and `theta0` must have one shape; got {a.shape}, {b.shape}, {theta0.shape}."
        )
    t = jnp.asarray(t, dtype)
    if t.ndim > 1:
        raise ValueError(f"`t` must be a scalar or a 1-d array of times; got shape {t.shape}.")
    # Times along a leading axis, points along the trailing ones.
    tt = t.reshape(t.shape + (1,) * a.ndim)
    mid = (a + b) / 2
    half = (a - b) / 2
    return t, tt, jnp.asarray(eta, dtype), mid, half, theta0


def two_point_flow(t, a, b, theta0, eta):
    r"""The exact two-point switched flow of the minibatch text, in closed form.

    The text's Laplace-transform solution (`a` first, rate and dwell $\eta$):

    $$
    \theta(t) = \tfrac{\mathbf a+\mathbf b}{2}
      + \big(\theta_0 - \tfrac{\mathbf a+\mathbf b}{2}\big)e^{-\eta t}
      + \tfrac{\mathbf a-\mathbf b}{2}\,\Big( s_{2\eta}(t)
      - \frac{e^{-\eta t}}{1-e^{2\eta^2}}\Big[1 - e^{2\eta^2(\lfloor t/2\eta\rfloor+1)}
      - 2e^{\eta^2}\big(1 - e^{2\eta^2(\lfloor (t-\eta)/2\eta\rfloor+1)}\big)
      + e^{2\eta^2}\big(1 - e^{2\eta^2(\lfloor (t-2\eta)/2\eta\rfloor+1)}\big)\Big]\Big).
    $$

    It is evaluated in an algebraically identical arrangement free of cancellation
    (the three geometric sums are each $O(1/\eta^2)$ and cancel to $O(1)$,
    which as written loses ~$\epsilon/\eta^2$ of accuracy). With
    $K = \lfloor t/2\eta\rfloor$, $\lfloor (t-2\eta)/2\eta\rfloor = K - 1$ and
    $\lfloor (t-\eta)/2\eta\rfloor = K - (1+s_{2\eta}(t))/2$, the bracket term is

    $$
    s_{2\eta}(t) + e^{-\eta t}\tanh(\eta^2/2)
      + 2e^{-\eta t + 2\eta^2(K+1)}\,
        \frac{\operatorname{expm1}(-\eta^2 s_{2\eta}(t))}{\operatorname{expm1}(2\eta^2)},
    $$

    where $-\eta t + 2\eta^2 K \in (-2\eta^2, 0]$ keeps the exponential bounded for
    every `t`. The flow is continuous at the switching instants $t = k\eta$, so
    rounding in the floors there changes the result only at rounding level.

    **Arguments:**

    - `t`: a time or a 1-d array of times $\ge 0$.
    - `a`, `b`: the two examples (arrays of one shape, e.g. `(d,)`, or scalars).
    - `theta0`: the start $\theta(0)$, same shape.
    - `eta`: the text's $\eta > 0$ (rate and dwell time).

    **Returns:** $\theta(t)$, shape `t.shape + a.shape`.

    **Raises:** `ValueError` for a non-positive or non-finite `eta`, a negative or
    non-finite `t`, non-finite `a`, `b` or `theta0`, mismatched shapes, or `t` of
    more than one dimension; `TypeError` for non-numeric input.

    ```python
    ts = jnp.linspace(0.0, 20.0, 401)
    theta = gf.two_point_flow(ts, jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]),
                              jnp.array([2.0, 2.0]), eta=0.5)   # (401, 2)
    ```
    """
    t, tt, eta, mid, half, theta0 = _prepare(t, a, b, theta0, eta)
    s = square_wave(tt, eta)
    K = jnp.floor(tt / (2 * eta))
    e2 = eta * eta
    decay = jnp.exp(-eta * tt)
    wave = (
        s
        + decay * jnp.tanh(e2 / 2)
        + 2 * jnp.exp(-eta * tt + 2 * e2 * (K + 1)) * jnp.expm1(-e2 * s) / jnp.expm1(2 * e2)
    )
    return mid + (theta0 - mid) * decay + half * wave


def two_point_flow_approx(t, a, b, theta0, eta, *, corrected: bool = False):
    r"""The minibatch text's $\eta \ll 1$ approximation of [`gdflow.two_point_flow`][].

    Exactly as written in the text (the default):

    $$
    \theta(t) \approx \tfrac{\mathbf a+\mathbf b}{2}
      + \big(\theta_0 - \tfrac{\mathbf a+\mathbf b}{2}\big)e^{-\eta t}
      + \tfrac{\mathbf a-\mathbf b}{2}\, s_{2\eta}(t)
        \big(1 - e^{-\eta t + 2\eta^2\lfloor t/2\eta\rfloor}\big).
    $$

    It is exact on the first dwell $[0, \eta)$ and has error $O(\eta^2)$
    uniformly in $t$ afterwards (maximum $\approx \eta^2|\mathbf a - \mathbf
    b|_\infty$, just after the first switch) — no better than full-batch gradient flow,
    and discontinuous at the switches (see the module docstring).

    `corrected=True` (a departure from the text, flagged as such) expands the exact
    bracket term $s + e^{-\eta t}\tanh(\eta^2/2) + 2e^{-\eta\tau + 2\eta^2}
    \operatorname{expm1}(-\eta^2 s)/\operatorname{expm1}(2\eta^2)$, with
    $\tau = t - 2\eta\lfloor t/2\eta\rfloor$, consistently to $O(\eta^2)$:

    $$
    s(1 - e^{-\eta\tau}) + \eta^2\big(\tfrac12 - s\big)e^{-\eta\tau}
      + \tfrac{\eta^2}{2}e^{-\eta t} + O(\eta^4),
    $$

    (using $2e^{2\eta^2}\operatorname{expm1}(-\eta^2 s)/\operatorname{expm1}(2\eta^2)
    = -s(1+\eta^2) + \eta^2/2 + O(\eta^4)$), whose error is $O(\eta^4)$ uniformly
    (measured maximum $\approx \eta^4|\mathbf a - \mathbf b|_\infty/2$). The text's
    formula is its first term alone.

    Arguments, returns and errors as in [`gdflow.two_point_flow`][].
    """
    if not isinstance(corrected, bool):
        raise TypeError(f"`corrected` must be True or False; got {corrected!r}.")
    t, tt, eta, mid, half, theta0 = _prepare(t, a, b, theta0, eta)
    s = square_wave(tt, eta)
    K = jnp.floor(tt / (2 * eta))
    decay = jnp.exp(-eta * tt)
    local = jnp.exp(-eta * tt + 2 * eta**2 * K)  # e^{-ητ}, τ the time since the last period
    wave = s * (1 - local)
    if corrected:
        wave = wave + eta**2 * (0.5 - s) * local + eta**2 / 2 * decay
    return mid + (theta0 - mid) * decay + half * wave
