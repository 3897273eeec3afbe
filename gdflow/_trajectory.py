"""Results of every run, discrete or continuous, as one value type."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import PyTree
from ._stats import AbstractStats
from ._time import match_times
from ._validate import real_array

__all__ = ["Trajectory"]


class Trajectory(eqx.Module):
    r"""A run of an optimiser or a flow, sampled at times `ts`.

    Discrete and continuous runs share one clock: gradient-descent step $k$ with step size
    `lr` sits at $t = k\cdot\mathrm{lr}$; a minibatch step counts as one step, so an SGD
    epoch of $m$ batches spans $m\cdot\mathrm{lr}$ (one splitting step).

    **Attributes:**

    - `ts`: times, shape `(T,)`.
    - `params`: the parameters at those times, the structure of `params0` with a leading
      axis `T` on every leaf.
    - `loss`: the full-data loss $L(\theta(t))$, shape `(T,)`.
    - `method`: a label, e.g. `"gd"`, `"sgd"`, `"gradient_flow"`.
    - `stats`: a typed record of run statistics ([`gdflow.RunStats`][] for discrete runs,
      [`gdflow.FlowStats`][] for ODE solves), readable as `stats.grad_evals` or
      `stats["grad_evals"]`; `None` for a hand-built trajectory.
    - `continuous`: whether [`gdflow.Trajectory.evaluate`][] can be called at any time in
      the span (flows), or only at the saved times (discrete runs).

    A trajectory is a pytree (an equinox Module): its arrays and statistics are leaves, its
    labels static, so it passes through `eqx.filter_jit`.

    **Raises:** `ValueError` when `ts` is not 1-d, or `loss` or a leaf of `params` does
    not have `len(ts)` entries on its leading axis.
    """

    ts: jax.Array
    params: PyTree
    loss: jax.Array
    method: str = eqx.field(static=True)
    stats: AbstractStats | dict | None = None
    evaluator: Callable | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        ts_shape = np.shape(self.ts)
        if len(ts_shape) != 1:
            raise ValueError(f"Trajectory: `ts` must be 1-d (T,); got shape {ts_shape}.")
        T = ts_shape[0]
        if np.shape(self.loss) != (T,):
            raise ValueError(
                f"Trajectory: `loss` must have shape ({T},) to match `ts`; got "
                f"{np.shape(self.loss)}."
            )
        for path, leaf in jax.tree_util.tree_leaves_with_path(self.params):
            shape = np.shape(leaf)
            if len(shape) == 0 or shape[0] != T:
                where = jax.tree_util.keystr(path) or "params"
                raise ValueError(
                    f"Trajectory: every leaf of `params` needs a leading axis of length "
                    f"len(ts)={T}; leaf {where} has shape {shape}. Stack the parameters "
                    "of each saved time along axis 0."
                )

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def __getitem__(self, index) -> Trajectory:
        """The saved points at `index` (a slice or an integer index array) as a trajectory
        of the same kind: `flow[::5]` is still the flow (evaluable anywhere, with its
        statistics), saved at every fifth time."""
        if isinstance(index, int | np.integer):
            raise TypeError(
                "Trajectory[i] with an integer would drop the time axis; use traj.at(i) for "
                "the parameters at index i, or traj[i:i + 1] for a one-point trajectory."
            )
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.ndim != 1 or not (
                np.issubdtype(index.dtype, np.integer) or index.dtype == bool
            ):
                raise TypeError(
                    "Trajectory[index]: `index` must be a slice or a 1-d integer or boolean "
                    f"array; got {index!r}."
                )
        return Trajectory(
            ts=self.ts[index],
            params=jax.tree_util.tree_map(lambda x: x[index], self.params),
            loss=self.loss[index],
            method=self.method,
            stats=self.stats,
            evaluator=self.evaluator,
        )

    @property
    def continuous(self) -> bool:
        """Whether [`gdflow.Trajectory.evaluate`][] can be called at arbitrary times."""
        return self.evaluator is not None

    @property
    def diverged_at(self) -> int | None:
        """The step at which a discrete run met a non-finite value, or `None`."""
        if self.stats is None:
            return None
        return self.stats.get("diverged_at")

    @property
    def final(self) -> PyTree:
        """Parameters at the last saved time."""
        return self.at(-1)

    def at(self, i: int) -> PyTree:
        """Parameters at saved index `i`."""
        return jax.tree_util.tree_map(lambda x: x[i], self.params)

    def flat(self) -> jax.Array:
        """Parameters raveled to one vector per time, shape `(T, P)`."""
        leaves = jax.tree_util.tree_leaves(self.params)
        T = len(self)
        return jnp.concatenate([jnp.reshape(x, (T, -1)) for x in leaves], axis=1)

    def evaluate(self, ts) -> PyTree:
        """Parameters at times `ts` (1-d), stacked on a leading axis.

        Continuous trajectories are re-solved to `ts` at the tolerances they were computed
        with. Discrete trajectories exist only at their saved times (matched by the
        package's one time rule, `gdflow._time`); asking for another time raises
        `ValueError`.
        """
        if not isinstance(ts, jax.core.Tracer):
            ts = real_array("ts", ts)  # a clear error for strings, NaN, complex
        ts = jnp.atleast_1d(jnp.asarray(ts, dtype=self.ts.dtype))
        if self.evaluator is not None:
            return self.evaluator(ts)
        want = np.asarray(ts)
        pick = match_times(want, np.asarray(self.ts))
        if np.any(pick < 0):
            bad = want[np.argmax(pick < 0)]
            raise ValueError(
                f"Trajectory {self.method!r} is discrete: it has no point at t={bad:g}. "
                "Evaluate it at its own times `traj.ts` (a discrete method exists only there)."
            )
        return jax.tree_util.tree_map(lambda x: x[pick], self.params)

    def __repr__(self) -> str:
        tail = f", diverged_at={self.diverged_at}" if self.diverged_at is not None else ""
        span = f"t∈[{float(self.ts[0]):g}, {float(self.ts[-1]):g}]" if len(self) else "empty"
        return f"Trajectory(method={self.method!r}, T={len(self)}, {span}{tail})"
