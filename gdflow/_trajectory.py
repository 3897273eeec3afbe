"""Results of every run, discrete or continuous, as one value type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


class Trajectory(eqx.Module):
    r"""A run of an optimiser or a flow, sampled at times ``ts``.

    Discrete and continuous runs share one clock: gradient-descent step ``k`` with step
    size ``lr`` sits at :math:`t = k\cdot\mathrm{lr}`; a minibatch step counts as one step,
    so an SGD epoch of ``m`` batches spans :math:`m\cdot\mathrm{lr}` (one splitting step).

    **Attributes:**

    - ``ts``: times, shape ``(T,)``.
    - ``params``: the parameters at those times, the structure of ``params0`` with a
      leading axis ``T`` on every leaf.
    - ``loss``: the full-data loss :math:`L(\theta(t))`, shape ``(T,)``.
    - ``method``: a label, e.g. ``"gd"``, ``"sgd"``, ``"gradient_flow"``.
    - ``stats``: a dict of run statistics. Always ``"seconds"`` (wall time of the run,
      excluding compilation), ``"compile_seconds"`` and ``"grad_evals"`` (calls of the
      batch gradient or vector field); discrete runs add ``"steps"``, ``"lr"``,
      ``"batch_size"``, ``"diverged_at"`` (step index of the first non-finite loss, or
      ``None``); flows add the solver's step counts.

    Continuous trajectories can be evaluated at any time in their span with
    :meth:`evaluate` (an accurate re-solve, not an interpolation by hand).
    """

    ts: jax.Array
    params: PyTree
    loss: jax.Array
    method: str = eqx.field(static=True)
    stats: dict = eqx.field(static=True, default_factory=dict)
    evaluator: Callable | None = eqx.field(static=True, default=None)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def continuous(self) -> bool:
        """Whether :meth:`evaluate` can be called at arbitrary times."""
        return self.evaluator is not None

    @property
    def diverged_at(self) -> int | None:
        """The step at which a discrete run met a non-finite loss, or ``None``."""
        return self.stats.get("diverged_at")

    @property
    def final(self) -> PyTree:
        """Parameters at the last saved time."""
        return self.at(-1)

    def at(self, i: int) -> PyTree:
        """Parameters at saved index ``i``."""
        return jax.tree_util.tree_map(lambda x: x[i], self.params)

    def flat(self) -> jax.Array:
        """Parameters raveled to one vector per time, shape ``(T, P)``."""
        leaves = jax.tree_util.tree_leaves(self.params)
        T = len(self)
        return jnp.concatenate([jnp.reshape(x, (T, -1)) for x in leaves], axis=1)

    def evaluate(self, ts) -> PyTree:
        """Parameters at times ``ts`` (1-d), stacked on a leading axis.

        Continuous trajectories are re-solved to ``ts`` at the tolerances they were
        computed with. Discrete trajectories exist only at their saved times; asking for
        another time raises ``ValueError``.
        """
        ts = jnp.atleast_1d(jnp.asarray(ts, dtype=self.ts.dtype))
        if self.evaluator is not None:
            return self.evaluator(ts)
        saved = np.asarray(self.ts)
        want = np.asarray(ts)
        scale = max(1.0, float(np.max(np.abs(saved)))) if saved.size else 1.0
        idx = np.searchsorted(saved, want)
        idx = np.clip(idx, 0, len(saved) - 1)
        lower = np.clip(idx - 1, 0, len(saved) - 1)
        pick = np.where(np.abs(saved[lower] - want) < np.abs(saved[idx] - want), lower, idx)
        err = np.abs(saved[pick] - want)
        if np.any(err > 1e-9 * scale):
            bad = want[np.argmax(err)]
            raise ValueError(
                f"Trajectory {self.method!r} is discrete: it has no point at t={bad:g}. "
                "Evaluate it at its own times `traj.ts` (a discrete method exists only there)."
            )
        return jax.tree_util.tree_map(lambda x: x[pick], self.params)

    def __repr__(self) -> str:
        tail = f", diverged_at={self.diverged_at}" if self.diverged_at is not None else ""
        span = f"t∈[{float(self.ts[0]):g}, {float(self.ts[-1]):g}]" if len(self) else "empty"
        return f"Trajectory(method={self.method!r}, T={len(self)}, {span}{tail})"
