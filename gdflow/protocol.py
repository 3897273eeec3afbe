r"""Steps and seconds to a target: the measurement protocol of the splitting text.

Merkulov & Oseledets (sgd-as-ode-splitting.md) compare SGD with the splitting optimiser
by the iterations and the seconds each needs to reach a target (a relative error
$|\theta - \theta^\star|/|\theta^\star| \le 10^{-3}$, or a test error). This module
measures both, for any method that runs epoch by epoch over a fixed partition:

* **Steps to target.** A run proceeds in segments of whole epochs (1, 2, 4, … epochs,
  capped at `seg_epochs`: a target met early costs little, a late one few calls; see
  [`measure`][gdflow.protocol.measure] for how the segments near the target are cut
  short); the first segment whose end meets the target is re-run from its start saving
  the iterate at every epoch end, the first epoch whose end meets the target is then
  replayed from its start batch by batch, saving every $s = \max(1, \lfloor m/100
  \rfloor)$ batch steps, and the first saved step that meets it is the count. The unit
  is the **batch step** (one SGD step, one local solve), the unit of the authors' code
  (split-sgd: one "iteration" is one batch); epochs are batch steps / $m$.
* **Seconds to target.** The target test (the error of every saved iterate) is not
  optimiser work. [`measure`][gdflow.protocol.measure] therefore runs the method in timed segments that save
  only their end points (the target is tested there, outside the timed calls), and
  locates the target inside the segment that first meets it by the untimed re-run and
  replay above; then
  $$\text{seconds to target} = \text{seconds of the timed segments}\times
    \frac{\text{steps to target}}{\text{steps run in them}},$$
  from `Trajectory.stats["seconds"]` (compilation excluded; each call's two full-loss
  evaluations, at its start and end, remain inside). When the timed segments add up to
  less than `short_call` seconds, the run to the target is timed again `best_of` times
  and the fastest kept. The splitting optimiser's one-off per-batch factorisation
  (`stats["setup_seconds"]`, paid again by every call) is reported apart.

Cost: the timed segments (the run to the target, rounded up to a segment end), the
re-run of the segment that meets it up to its hitting epoch, and one replayed epoch.
Measured on the splitting experiment's tomography (N = 20, `benchmarks/protocol_cost.py`):
1.1–2.2× the wall time of one plain optimiser call over the same epochs, warm.

The methods are `"sgd"` ([`gdflow.sgd`][]) and `"split"` ([`gdflow.split`][] with a
given local solver), both over [`gdflow.RoundRobin`][]`(batch_size)`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gdflow as gf

__all__ = [
    "OneBatchPerEpoch",
    "TargetRecord",
    "first_hit",
    "measure",
    "relative_error",
    "saved_steps",
    "steps_to_target",
    "time_to_target",
]

REPLAY_POINTS = 100  # saves per replayed epoch: resolution m/100 batch steps
METHODS = ("sgd", "split")


class OneBatchPerEpoch(gf.AbstractBatching):
    """Round robin over `m` fixed batches of size `b`, one batch per "epoch".

    With this rule, epoch `e` of [`gdflow.split`][] is batch step `e` of the ordinary
    `RoundRobin(b)` run, and its saved points are the states after each batch: it
    replays one epoch of the splitting optimiser batch by batch (each batch is
    factorised again at its step: slower, never timed).

    **Arguments:**

    - `batch_size`: examples per batch `b`.
    - `m`: batches in the partition (`n = m·b`).

    **Raises:** `ValueError` if `m·b` is not the number of examples.
    """

    deterministic: ClassVar[bool] = False  # the table changes from "epoch" to "epoch"
    batch_size_: int = eqx.field(static=True)
    m: int = eqx.field(static=True)

    def __init__(self, batch_size: int, m: int):
        for name, v in (("batch_size", batch_size), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
        self.batch_size_ = int(batch_size)
        self.m = int(m)

    def batch_size(self, n: int) -> int:
        return self.batch_size_

    def num_batches(self, n: int) -> int:
        if n != self.m * self.batch_size_:
            raise ValueError(
                f"OneBatchPerEpoch(batch_size={self.batch_size_}, m={self.m}) covers "
                f"{self.m * self.batch_size_} examples, the problem has n={n}."
            )
        return 1

    def epoch(self, n: int, e) -> jax.Array:
        j = jnp.mod(e, self.m)
        return (j * self.batch_size_ + jnp.arange(self.batch_size_))[None, :]

    def batch(self, data, table, j):
        idx = table[j]
        return jax.tree_util.tree_map(lambda x: x[idx], data)


def first_hit(ks, values, target: float) -> int | None:
    """The first `k` in `ks` whose value is `<= target` (NaN never is), or `None`.

    >>> first_hit([0, 5, 10], [1.0, float("nan"), 0.1], 0.5)
    10
    """
    values = np.asarray(values, dtype=float)
    ok = np.nonzero(np.nan_to_num(values, nan=np.inf) <= target)[0]
    return None if ok.size == 0 else int(np.asarray(ks)[ok[0]])


def saved_steps(traj: gf.Trajectory, lr: float) -> np.ndarray:
    """Batch-step index of each saved point, from the library's clock $t = k\\cdot\\mathrm{lr}$."""
    return np.rint(np.asarray(traj.ts) / lr).astype(np.int64)


def time_to_target(seconds: float, steps_run: int, steps_needed: int) -> float:
    """Seconds of a timed run scaled to the steps needed: `seconds · needed / run`.

    >>> time_to_target(2.0, 100, 25)
    0.5
    """
    if steps_run <= 0:
        raise ValueError(f"`steps_run` must be positive; got {steps_run}.")
    return seconds * steps_needed / steps_run


def relative_error(theta_star) -> Callable[[Any], np.ndarray]:
    r"""The error $|\theta - \theta^\star| / |\theta^\star|$ of stacked parameters `(T, ...)`.

    >>> err = relative_error(np.array([3.0, 4.0]))
    >>> err(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [0.0, 1.0]
    """
    theta_star = np.asarray(theta_star, dtype=float).ravel()
    scale = float(np.linalg.norm(theta_star))
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError("`theta_star` must be finite and non-zero (the error is relative).")

    def error(params):
        P = np.asarray(params).reshape(np.shape(params)[0], -1)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.linalg.norm(P - theta_star[None, :], axis=1) / scale

    return error


@dataclasses.dataclass
class TargetRecord:
    """What [`measure`][gdflow.protocol.measure] found for one method, step size and start.

    - `steps`: batch steps to the target (`None`: not reached); `epochs` = steps / m.
    - `seconds`: seconds to the target, iterations only; `setup_seconds`: the one-off
      factorisation of the splitting optimiser; `seconds_per_epoch`: of the timed call.
    - `diverged`: the run became non-finite before the target; `failed`: an ODE solve
      gave up (the message); `last_value`: the last finite error seen.
    - `epochs_run`: epochs the protocol ran in all (located, replayed and timed runs);
      `timed_epochs`: epochs of the timed call; `wall_seconds`: the protocol's wall time.
    """

    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None
    setup_seconds: float | None = None
    seconds_per_epoch: float | None = None
    diverged: bool = False
    failed: str | None = None
    last_value: float | None = None
    epochs_run: float = 0.0
    timed_epochs: int = 0
    wall_seconds: float = 0.0


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; got {method!r}.")


def _run(method, problem, lr, epochs, batch_size, local, save_every_epochs, batching=None):
    batching = gf.RoundRobin(batch_size) if batching is None else batching
    if method == "sgd":
        m = batching.num_batches(problem.n)
        return gf.sgd(
            problem,
            lr,
            epochs,
            batching,
            save_every=save_every_epochs * m,
            on_divergence="ignore",
        )
    return gf.split(
        problem,
        lr,
        epochs,
        batching,
        local=local,
        save_every=save_every_epochs,
        on_divergence="ignore",
    )


def _replay_epoch(method, problem, lr, batch_size, local, error):
    """One epoch from `problem.params0`, saved every `s` batch steps: (steps, values, traj)."""
    m = problem.n // batch_size
    s = max(1, m // REPLAY_POINTS)
    if method == "sgd":
        tr = gf.sgd(
            problem, lr, 1, gf.RoundRobin(batch_size), save_every=s, on_divergence="ignore"
        )
    else:
        tr = gf.split(
            problem,
            lr,
            m,
            OneBatchPerEpoch(batch_size, m),
            local=local,
            save_every=s,
            on_divergence="ignore",
        )
    return saved_steps(tr, lr), error(tr.params), tr


def _diverged(tr, vals) -> bool:
    return getattr(tr, "diverged_at", None) is not None or not np.isfinite(vals[-1])


def _row(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def steps_to_target(
    method: str,
    problem: gf.Problem,
    lr: float,
    *,
    batch_size: int,
    error: Callable[[Any], np.ndarray],
    target: float,
    local=None,
    max_epochs: int = 100,
    seg_epochs: int = 16,
    stepwise: bool = True,
) -> TargetRecord:
    """Batch steps until `error(params) <= target`, by the protocol of the module docstring.

    **Arguments:**

    - `method`: `"sgd"` or `"split"`; `local`: the splitting's local solver
      (default [`gdflow.Exact`][]).
    - `problem`, `lr`, `batch_size`: the run (`RoundRobin(batch_size)`, from
      `problem.params0`).
    - `error`: stacked parameters `(T, ...)` to `(T,)` values; `target`: the threshold.
    - `max_epochs`: the budget; `seg_epochs`: the longest untimed segment.
    - `stepwise`: resolve the hitting epoch batch by batch (else whole epochs).

    **Returns:** a [`TargetRecord`][gdflow.protocol.TargetRecord] with `steps`, `epochs`, `diverged`, `failed`,
    `last_value` and `epochs_run` filled in.
    """
    _check_method(method)
    local = gf.Exact() if local is None else local
    m = problem.n // batch_size
    rec = TargetRecord()
    steps = None
    done = 0  # epochs fully traced
    cur = problem
    seg = 1
    try:
        while steps is None and done < max_epochs:
            E = min(seg, seg_epochs, max_epochs - done)
            tr = _run(method, cur, lr, E, batch_size, local, 1)
            rec.epochs_run += E
            vals = error(tr.params)
            ks = saved_steps(tr, lr)  # steps since this call's start
            e_hit = first_hit(ks // m, vals, target)
            finite = np.isfinite(vals)
            rec.last_value = float(vals[finite][-1]) if finite.any() else None
            if e_hit == 0:  # only possible for the initial point
                steps = done * m
                break
            if e_hit is not None:
                if stepwise:
                    start = _row(tr.params, int(np.nonzero(ks // m == e_hit - 1)[0][0]))
                    rks, rvals, _ = _replay_epoch(
                        method, problem.with_params0(start), lr, batch_size, local, error
                    )
                    rec.epochs_run += 1
                    j = first_hit(rks, rvals, target)
                    steps = (done + e_hit - 1) * m + (m if j is None else j)
                else:
                    steps = (done + e_hit) * m
                break
            if _diverged(tr, vals):
                rec.diverged = True
                break
            done += E
            seg *= 2
            cur = problem.with_params0(_row(tr.params, -1))
    except RuntimeError as e:  # an ODE solve that gives up: record, keep the sweep going
        rec.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return rec
    if steps is not None:
        rec.steps = int(steps)
        rec.epochs = steps / m
    return rec


FINE_EPOCHS = 16  # longest piece of the located re-run, shortest predicted segment
MAX_PREDICTED = 6  # segments shortened by the prediction, at most, per measurement


def _predict(points, target: float) -> float | None:
    """Epochs from the last segment end to the target, extrapolating the log of the
    measure linearly at the slower of its rates over the last two segments (points
    `(epoch, value)` at the segment ends); `None` with fewer than three points or when the
    measure is not decreasing there (or not positive and finite)."""
    if len(points) < 3 or not target > 0:
        return None
    (e0, v0), (e1, v1), (e2, v2) = points[-3:]
    if not (e2 > e1 > e0 and math.isfinite(v0) and v0 > v1 > v2 > 0):
        return None
    rate = min(
        (math.log(v0) - math.log(v1)) / (e1 - e0), (math.log(v1) - math.log(v2)) / (e2 - e1)
    )
    return (math.log(v2) - math.log(target)) / rate


def _locate(method, start, lr, E, batch_size, local, error, target):
    """The first epoch end `e` in `1..E` after `start` that meets the target.

    Re-runs from `start` (untimed) in pieces of `P = min(E, FINE_EPOCHS)` epochs saved
    at every epoch end (the call shapes, hence the compilations, are those of the pieces
    1, 2, 4, 8 and 16 epochs long whatever the segments' lengths, plus `seg_epochs` or a
    remainder of `max_epochs` when shorter), and stops at the first piece that meets
    the target (the last piece may run past `E`, by less than `P` epochs). Returns `(e, the state at epoch e - 1, epochs run)`; `e` is `None` when no
    epoch end up to `E` meets it (a measure that is not reproduced by the re-run).
    """
    P = min(FINE_EPOCHS, E)
    done, cur, ran = 0, start, 0
    while done < E:
        tr = _run(method, cur, lr, P, batch_size, local, 1)
        ran += P
        vals = error(tr.params)  # saved point i is epoch done + i
        i = first_hit(np.arange(1, len(vals)), vals[1:], target)
        if i is not None and done + i <= E:
            return done + i, _row(tr.params, i - 1), ran
        if i is not None or len(vals) < P + 1 or _diverged(tr, vals):
            break
        done += P
        cur = cur.with_params0(_row(tr.params, -1))
    return None, None, ran


def measure(
    method: str,
    problem: gf.Problem,
    lr: float,
    *,
    batch_size: int,
    error: Callable[[Any], np.ndarray],
    target: float,
    local=None,
    max_epochs: int = 100,
    seg_epochs: int = 16,
    time_epochs: int = 1,
    stepwise: bool = True,
    best_of: int = 3,
    short_call: float = 0.2,
) -> TargetRecord:
    r"""Steps and seconds to the target for one method, step size and start.

    The run proceeds in timed segments that save only their end points, so the timed
    calls do no target tests; the target is checked at each segment's end. Segments
    at least double, 1, 2, 4, … epochs, capped at `seg_epochs` (longer when a call's cost
    beyond its timed seconds, the splitting optimiser's factorisation of every batch, is
    more than a quarter of the next segment: it is then four times that cost); once the
    measure has decreased over two segments, the next segment is also cut to end short of
    the epoch where its log, extrapolated linearly at the slower of the two rates, meets
    the target (90% of the way there, at
    least `FINE_EPOCHS` = 16 epochs or `seg_epochs` if shorter), so the segment that
    meets the target is short. That segment is then re-run untimed from its start,
    saving every epoch end (in pieces of at most 16 epochs, stopping at the first piece
    that meets the target), and the epoch that first meets it is replayed batch by
    batch (`stepwise`). The seconds to target are the timed segments' seconds scaled to
    the steps needed.

    Cost: the timed segments (the epochs to the target $E$, rounded up to a segment
    end), the re-run of the segment that meets it up to its hitting epoch (rounded up
    to 16 epochs) and one replayed epoch; about $E$ plus a few dozen epochs when the
    prediction holds, at most $E + 2\,\mathrm{seg\_epochs} + 1$ otherwise;
    `benchmarks/protocol_cost.py` measures it against the optimiser run to the target.

    The count is the first epoch end meeting the target provided the measure, once
    below the target at an epoch end, does not return above it before a later segment
    end (true of the relative error of a converging run). A measure that dips below
    the target inside a segment and is above it again at the segment's end is missed:
    give non-monotone measures (test errors) `seg_epochs=1`, every epoch end then
    being a segment end.

    Arguments as in [`steps_to_target`][gdflow.protocol.steps_to_target], and:

    - `time_epochs`: kept for compatibility (the timed calls are the segments);
    - `best_of`, `short_call`: when the timed segments add up to less than `short_call`
      seconds, the run to the target is timed again `best_of` times in one call and the
      fastest kept (short calls are at the mercy of the scheduler).

    **Returns:** a [`TargetRecord`][gdflow.protocol.TargetRecord], all fields filled in.

    **Raises:** `ValueError` for an unknown `method` or a `batch_size` that does not
    divide `problem.n`.

    ```python
    >>> import jax.numpy as jnp, numpy as np, gdflow as gf
    >>> from gdflow.protocol import measure, relative_error
    >>> problem = gf.problems.least_squares(np.eye(4), np.arange(1.0, 5.0),
    ...                                     params0=jnp.zeros(4))
    >>> rec = measure("sgd", problem, 0.5, batch_size=1, target=1e-2,
    ...               error=relative_error(np.arange(1.0, 5.0)), best_of=1)
    >>> rec.steps, rec.epochs
    (28, 7.0)

    ```
    """
    _check_method(method)
    if problem.n % batch_size:
        raise ValueError(
            f"`batch_size`={batch_size} must divide the number of examples n={problem.n}."
        )
    for name, v in (("max_epochs", max_epochs), ("seg_epochs", seg_epochs)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
    del time_epochs
    wall = time.perf_counter()
    local = gf.Exact() if local is None else local
    m = problem.n // batch_size
    rec = TargetRecord()
    done, seg, secs, setup = 0, 1, 0.0, 0.0
    fine = min(FINE_EPOCHS, seg_epochs)
    predicted = 0
    points: list[tuple[int, float]] = []  # (epoch, value) at the segment ends
    cur = problem
    over = 0.0  # a call's cost beyond its timed seconds, in epochs (setup, dispatch)
    try:
        while done < max_epochs:
            E = min(seg, seg_epochs, max_epochs - done)
            d = _predict(points, target)
            if d is not None and predicted < MAX_PREDICTED and 0.9 * d < E - max(fine, over):
                E = max(fine, math.ceil(0.9 * d))  # end short of the predicted hit
                predicted += 1
            t_call = time.perf_counter()
            tr = _run(method, cur, lr, E, batch_size, local, E)
            t_call = time.perf_counter() - t_call
            if tr.stats["seconds"] > 0:
                over = (t_call - tr.stats["seconds"]) * E / tr.stats["seconds"]
            secs += tr.stats["seconds"]
            setup += float(tr.stats.get("setup_seconds", 0.0))
            rec.epochs_run += E
            rec.timed_epochs += E
            vals = error(tr.params)  # start and end of the segment
            finite = np.isfinite(vals)
            rec.last_value = float(vals[finite][-1]) if finite.any() else rec.last_value
            if done == 0:
                if vals[0] <= target:
                    rec.steps, rec.epochs, rec.seconds, rec.setup_seconds = 0, 0.0, 0.0, 0.0
                    rec.seconds_per_epoch = secs / E
                    rec.wall_seconds = time.perf_counter() - wall
                    return rec
                points.append((0, float(vals[0])))
            if vals[-1] <= target:
                e, state, ran = _locate(method, cur, lr, E, batch_size, local, error, target)
                rec.epochs_run += ran
                if e is None:  # not reproduced by the re-run: count the segment's end
                    rec.steps = (done + E) * m
                elif not stepwise:
                    rec.steps = (done + e) * m
                else:
                    rks, rvals, _ = _replay_epoch(
                        method, problem.with_params0(state), lr, batch_size, local, error
                    )
                    rec.epochs_run += 1
                    j = first_hit(rks, rvals, target)
                    rec.steps = (done + e - 1) * m + (m if j is None else j)
                break
            if _diverged(tr, vals):
                rec.diverged = True
                break
            done += E
            # double, and make the next call long enough that its overhead is at most a
            # quarter of it (the splitting optimiser factorises every batch in each call)
            seg = max(2 * E, math.ceil(4 * over))
            points.append((done, float(vals[-1])))
            cur = problem.with_params0(_row(tr.params, -1))
    except RuntimeError as e:  # an ODE solve that gives up: record, keep the sweep going
        rec.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if rec.steps is not None:
        rec.epochs = rec.steps / m
        run_steps = rec.timed_epochs * m
        if secs < short_call and best_of > 1:
            # Too short to trust one reading: time the run to the target again in one call.
            need = max(1, math.ceil(rec.steps / m))
            best = math.inf
            for _ in range(best_of):
                best = min(
                    best, _run(method, problem, lr, need, batch_size, local, need).stats["seconds"]
                )
            rec.epochs_run += best_of * need
            secs, run_steps = best, need * m
        rec.seconds = time_to_target(secs, run_steps, rec.steps)
        rec.seconds_per_epoch = secs * m / run_steps
        rec.setup_seconds = setup
    rec.wall_seconds = time.perf_counter() - wall
    return rec
