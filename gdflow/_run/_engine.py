r"""The one run loop: every discrete method of gdflow runs through [`gdflow.run`][].

The loop is compiled once per (method type, problem structure, shapes) and run as a
sequence of *chunks*: each call of the compiled function advances a number of save
blocks (`save_every` steps each, then one saved point) and returns to the host, which
updates the progress meter, notices an interrupt, and calls the next chunk. Chunks are
sized from measured time (a fraction of a second each), so their dispatch cost is
negligible, and the saved-point buffers are donated to each call, so they are updated in
place and never copied.

Why chunks and not one call: the host regains control a few times a second without any
callback from compiled code (no module-level state for the progress bar), Ctrl-C stops
the run between chunks with everything computed so far, and step counts beyond $2^{31}$
work with int32 counters inside the compiled code (each chunk counts from zero; the
host adds up in Python integers).
"""

from __future__ import annotations

import functools as ft
import math
import signal
import threading
import time
from collections.abc import Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._batching import AbstractBatching, resolve_batching
from .._problem import as_problem, float_dtype
from .._stats import RunStats
from .._trajectory import Trajectory
from .._tree import all_finite, tree_where
from .._validate import one_of, positive_int
from ._compile import compile_timed
from ._outcome import RESULTS, RunInterrupted, report
from ._progress import AbstractProgressMeter, resolve_meter

__all__ = ["run"]

# Steps of one compiled call stay below 2**30, so int32 counters inside never overflow.
_MAX_BLOCK = 2**30
# Target wall time of one chunk: long enough that dispatch is free, short enough that the
# bar moves and Ctrl-C answers promptly. The first call runs _FIRST_PIECE method steps;
# later calls are sized from the measured time per step (a save interval longer than one
# call is cut into non-saving pieces, so even `save_every=steps` answers promptly).
_CHUNK_SECONDS = 0.25
_FIRST_PIECE = 16
# Saved-point buffers come in a few sizes, so that runs of different lengths (a search
# over step counts, replays, GD at several step sizes) share their compilations: at
# least _MIN_SLOTS points where they take at most _MIN_SLOTS_BYTES, above that sizes
# with four significant bits (at most an eighth of the slots unused).
_MIN_SLOTS = 64
_MIN_SLOTS_BYTES = 8 * 2**20


def _step_counts(method, problem, batching, params0, state):
    return method.step(problem, batching, (jnp.int32(0), jnp.int32(0)), params0, state)[3]


@ft.lru_cache(maxsize=64)
def _counts_shape_cached(leaves, treedef):
    return eqx.filter_eval_shape(_step_counts, *jax.tree_util.tree_unflatten(treedef, leaves))


def _struct(x):
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), weak_type=_weak(x))


def _weak(x) -> bool:
    return bool(getattr(getattr(x, "aval", None), "weak_type", False))


def _counts_shape(method, problem, batching, params0, state):
    """The structure of a step's counters (`eqx.filter_eval_shape` of one step).

    Tracing a step costs as much as its compilation's front end (a quarter of a second
    for a splitting step with an ODE solve inside), and a run needs the structure before
    its first chunk: it is cached by the arguments' structure, array shapes and dtypes
    (the arrays' values cannot change it) and non-array leaves. Arguments with an
    unhashable non-array leaf are traced every time.
    """
    args = (method, problem, batching, params0, state)
    leaves, treedef = jax.tree_util.tree_flatten(args)
    leaves = tuple(_struct(x) if eqx.is_array(x) else x for x in leaves)
    try:
        return _counts_shape_cached(leaves, treedef)
    except TypeError:  # an unhashable leaf
        return eqx.filter_eval_shape(_step_counts, *args)


def _buffer_slots(num_saves: int, params0) -> int:
    """The saved-point buffer's length for `num_saves` points (see `_MIN_SLOTS`)."""
    leaves = jax.tree_util.tree_leaves(params0)
    per = 8 + sum(int(np.size(x)) * jnp.dtype(jnp.result_type(x)).itemsize for x in leaves)
    floor = max(1, min(_MIN_SLOTS, _MIN_SLOTS_BYTES // per))
    if num_saves <= floor:
        return floor
    shift = max(num_saves.bit_length() - 4, 0)
    return -(-num_saves >> shift) << shift


@eqx.filter_jit
def _init(method, problem, batching, params0, num_saves: int):
    """The method's state and the saved-point buffers (point 0 filled in)."""
    state = method.init(problem, batching, params0)
    p_buf = jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_saves, *jnp.shape(x)), jnp.result_type(x)).at[0].set(x),
        params0,
    )
    value0 = problem.full_loss(params0)
    l_buf = jnp.full((num_saves,), jnp.nan, jnp.result_type(value0)).at[0].set(value0)
    return state, (p_buf, l_buf)


@eqx.filter_jit
def _full_loss(problem, params):
    return problem.full_loss(params)


@eqx.filter_jit(donate="all-except-first")
def _chunk(args, bufs):
    """Advance `nblocks` blocks of `block_steps` method steps, saving after each block
    when `write`; stop early at the first unsuccessful step or non-finite saved loss.

    `carry = (i, e, j, params, state, result, counts)`: the next save slot, the clock
    (epoch, step within it), the method's state, the outcome so far and work counters.
    Returns the new carry, the buffers, the method steps done in this call and whether
    the final parameters are finite. Only the buffers are donated: the start carry stays
    valid, so a chunk can be run again from it.

    With `checked=False` (only for methods whose non-finite parameters are absorbing,
    see [`gdflow.AbstractMethod`][]) the steps check only their loss and the parameters
    are checked once, at the end: a chunk that then fails is run again with `checked`.
    """
    fixed, carry = args
    method, problem, batching, steps_per_epoch, nblocks, block_steps, write, checked = fixed
    ok_ = RESULTS.successful

    def step(c):
        s, e, j, params, state, result, counts = c
        if checked:
            new_params, new_state, res, n = method.step(problem, batching, (e, j), params, state)
            if not method.checks_params:  # else the method's result covers new_params
                res = RESULTS.where(
                    (res == ok_) & ~all_finite(new_params), RESULTS.nonfinite_params, res
                )
            ok = res == ok_
            params = tree_where(ok, new_params, params)
            state = tree_where(ok, new_state, state)
            counts = jax.tree_util.tree_map(lambda a, b: a + jnp.where(ok, b, 0), counts, n)
        else:  # a failed chunk is run again checked, so nothing needs undoing here
            params, state, res, n = method.step(
                problem, batching, (e, j), params, state, check=False
            )
            ok = res == ok_
            counts = jax.tree_util.tree_map(jnp.add, counts, n)
        j1 = j + 1
        wrap = j1 >= steps_per_epoch
        e = jnp.where(ok & wrap, e + 1, e)
        j = jnp.where(ok, jnp.where(wrap, 0, j1), j)
        return jnp.where(ok, s + 1, s), e, j, params, state, res, counts

    def block(c):
        b, done, (i, e, j, params, state, result, counts), (p_buf, l_buf) = c
        s, e, j, params, state, result, counts = jax.lax.while_loop(
            lambda c: (c[0] < block_steps) & (c[5] == ok_),
            step,
            (jnp.int32(0), e, j, params, state, result, counts),
        )
        value = jax.lax.cond(
            write,
            lambda: problem.full_loss(params).astype(l_buf.dtype),
            lambda: jnp.zeros((), l_buf.dtype),
        )
        result = RESULTS.where(
            write & (result == ok_) & ~jnp.isfinite(value), RESULTS.nonfinite_loss, result
        )
        keep = write & (result == ok_)
        # Written unconditionally (a select over the buffer would cost O(T) per save); a
        # slot written by a failed or non-saving block is overwritten or never counted.
        p_buf = jax.tree_util.tree_map(lambda buf, x: buf.at[i].set(x), p_buf, params)
        l_buf = l_buf.at[i].set(value)
        i = i + jnp.where(keep, 1, 0)
        carry = (i, e, j, params, state, result, counts)
        return b + 1, done + s, carry, (p_buf, l_buf)

    _, done, carry, bufs = jax.lax.while_loop(
        lambda c: (c[0] < nblocks) & (c[2][5] == ok_),
        block,
        (jnp.int32(0), jnp.int32(0), carry, bufs),
    )
    finite = jnp.asarray(True) if checked else all_finite(carry[3])
    return carry, bufs, done, finite


def _plan(steps: int, every: int) -> Iterator[tuple[int, int, bool]]:
    """Segments `(block_steps, nblocks, write)` that run `steps` steps saving every
    `every` (and at the end), with no block longer than `_MAX_BLOCK` steps."""

    def blocks(length: int, count: int):
        if length <= _MAX_BLOCK:
            yield length, count, True
            return
        # A save interval longer than one compiled call allows: split each interval into
        # non-saving pieces followed by the piece that saves.
        q, r = divmod(length, _MAX_BLOCK)
        for _ in range(count):
            if q - (0 if r else 1) > 0:
                yield _MAX_BLOCK, q - (0 if r else 1), False
            yield (r if r else _MAX_BLOCK), 1, True

    q, r = divmod(steps, every)
    if q:
        yield from blocks(every, q)
    if r:
        yield from blocks(r, 1)


class _Interrupt:
    """Turns the first Ctrl-C during a run into a flag the loop checks between chunks (a
    second one raises `KeyboardInterrupt` as soon as the running chunk returns). Only in
    the main thread, where signals arrive, and never where SIGINT is ignored."""

    def __init__(self):
        self.hit = False
        self._old = None
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        old = signal.getsignal(signal.SIGINT)
        if old is signal.SIG_IGN or old is None:
            # A process that ignores Ctrl-C (or whose handler is not Python's) keeps it.
            return self
        self._old = old

        def handler(signum, frame):
            if self.hit:
                raise KeyboardInterrupt
            self.hit = True

        signal.signal(signal.SIGINT, handler)
        self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
        return False


def run(
    method,
    problem,
    steps: int,
    batching: AbstractBatching | None = None,
    *,
    save_every: int = 1,
    label: str | None = None,
    on_divergence: str = "warn",
    progress: bool | AbstractProgressMeter = False,
) -> Trajectory:
    r"""Run a discrete method for `steps` method steps, saving every `save_every`.

    The engine behind [`gdflow.gd`][], [`gdflow.sgd`][], [`gdflow.descent`][] and
    [`gdflow.split`][]: `method` is an [`gdflow.AbstractMethod`][] (e.g.
    [`gdflow.SGD`][], [`gdflow.Optax`][], [`gdflow.Splitting`][]). Only the saved
    iterates are kept (memory $O(\text{steps}/\text{save\_every})$ iterates; the buffer
    is allocated in a few sizes, at most an eighth or 8 MiB larger, so that runs of other
    lengths reuse the compilation). Saved
    point $s$ is method step $\min(s\cdot\text{save\_every}, \text{steps})$, at time
    $t = k\cdot\mathrm{lr}$ with $k$ its batch-step count ($t = k$ without `lr`).

    The run stops at the first step whose loss, gradient or new parameters are not
    finite, or whose saved loss is not finite ([`gdflow.RESULTS`][]), keeping every
    point before it and the last finite state. Ctrl-C stops it between compiled chunks
    and raises [`gdflow.RunInterrupted`][] (a `KeyboardInterrupt`) carrying the points
    computed so far.

    **Arguments:**

    - `method`: the method object.
    - `problem`: a [`gdflow.Problem`][].
    - `steps`: method steps (any non-negative integer; beyond $2^{31}$ is fine).
    - `batching`: a batching rule (default full batch).
    - `save_every`: save every `save_every` method steps, and the last.
    - `label`: the trajectory's `method` label (default: the method's description).
    - `on_divergence`: `"warn"` (default: return what was computed with a
      [`gdflow.DivergenceWarning`][]), `"raise"` ([`gdflow.DivergenceError`][] carrying
      it) or `"ignore"`.
    - `progress`: `True` for a bar, `False`, or an [`gdflow.AbstractProgressMeter`][].

    **Returns:** a [`gdflow.Trajectory`][] whose `stats` is a [`gdflow.RunStats`][].
    """
    from .._methods import AbstractMethod
    from .._methods._base import declares_absorbing

    if not isinstance(method, AbstractMethod):
        raise TypeError(
            f"`method` must be a gdflow method such as gf.SGD(lr); got {type(method).__name__}."
        )
    problem = as_problem(problem)
    steps = positive_int("steps", steps, allow_zero=True)
    save_every = positive_int("save_every", save_every)
    one_of("on_divergence", on_divergence, ("warn", "raise", "ignore"))
    meter = resolve_meter(progress)
    batching = resolve_batching(batching)
    n = problem.n
    batching.check(n)
    m = batching.num_batches(n)
    batch_steps = method.batch_steps(n, batching)
    steps_per_epoch = max(1, m // batch_steps)
    label = label or method.describe()
    if not batching.deterministic and steps // steps_per_epoch >= 2**31:
        raise ValueError(
            f"`steps`={steps} spans 2**31 epochs or more of {type(batching).__name__}, whose "
            "epochs are numbered by a 32-bit counter. Run fewer epochs per call and continue "
            "from the last state (problem.with_params0(traj.final))."
        )
    num_saves = steps // save_every + (1 if steps % save_every else 0) + 1

    params0 = problem.params0
    t0 = time.perf_counter()
    state, bufs = _init(method, problem, batching, params0, _buffer_slots(num_saves, params0))
    jax.block_until_ready((state, bufs))
    setup_s = time.perf_counter() - t0

    counts0 = _counts_shape(method, problem, batching, params0, state)

    # Host-side scalars are NumPy values: a chunk call then transfers nothing but them.
    def zeros():
        return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), counts0)

    def i32(x: int):
        return np.asarray(x, np.int32)

    value0 = float(bufs[1][0])
    result = RESULTS.successful if math.isfinite(value0) else RESULTS.nonfinite_loss
    carry = (i32(1), i32(0), i32(0), params0, state, result, zeros())
    ok = math.isfinite(value0)  # a Python bool, kept beside the traced outcome
    totals = {k: 0 for k in counts0}
    done = 0  # method steps done
    compile_s = run_s = 0.0
    interrupted = False
    interrupt = None
    handle = meter.start(steps, label)
    # Method steps per compiled call, adapted to measured time (see _CHUNK_SECONDS).
    piece = _FIRST_PIECE

    # Methods whose non-finite parameters are absorbing run their chunks with a loss check
    # per step and a parameter check per chunk; a chunk that fails is run again checked.
    fast = declares_absorbing(method)
    compiled = {}

    def call(checked: bool, nb: int, block_steps: int, write: bool):
        nonlocal compile_s
        fixed = (
            method,
            problem,
            batching,
            steps_per_epoch,
            i32(nb),
            i32(block_steps),
            np.asarray(write),
            checked,
        )
        args = (fixed, carry)
        if checked not in compiled:
            compiled[checked], dt = compile_timed(_chunk, args, bufs)
            compile_s += dt
        new_carry, new_bufs, did, finite = compiled[checked](args, bufs)
        # One transfer per chunk: it waits for the chunk and reads what the host needs.
        host = jax.device_get((did, finite, new_carry[5]._value, new_carry[6]))
        return new_carry, new_bufs, host

    def advance(nb: int, block_steps: int, write: bool) -> None:
        nonlocal carry, bufs, run_s, done, result, ok, piece
        t1, c1 = time.perf_counter(), compile_s
        new_carry, bufs, (did, finite, res, counts) = call(not fast, nb, block_steps, write)
        if fast and not (finite and res == RESULTS.successful._value):
            # Find the step that failed, and keep the state before it: the start carry
            # was not donated, and the buffers hold the same points up to that step.
            new_carry, bufs, (did, finite, res, counts) = call(True, nb, block_steps, write)
        carry = new_carry
        dt = time.perf_counter() - t1 - (compile_s - c1)
        run_s += dt
        did = int(did)
        done += did
        for k, v in counts.items():
            totals[k] += int(v)
        carry = (*carry[:6], zeros())
        result = carry[5]
        ok = bool(res == RESULTS.successful._value)
        meter.update(handle, done)
        # The next call: aim at _CHUNK_SECONDS, growing at most 8x at a time.
        if did and dt > 0:
            want = int(_CHUNK_SECONDS * did / dt)
            piece = max(1, min(8 * piece, want, _MAX_BLOCK))

    def going() -> bool:
        return ok and not interrupt.hit

    try:
        with _Interrupt() as interrupt:
            for block_steps, nblocks, write in _plan(steps, save_every):
                left = nblocks
                while left and going():
                    if block_steps <= piece:  # several whole save blocks per call
                        nb = min(left, max(1, piece // block_steps))
                        advance(nb, block_steps, write)
                        left -= nb
                        continue
                    # A save interval longer than a call should take: non-saving pieces,
                    # then the piece that ends the interval and saves.
                    remaining = block_steps
                    while remaining and going():
                        p = min(piece, remaining)
                        advance(1, p, write and p == remaining)
                        remaining -= p
                    left -= 1
            interrupted = interrupt.hit and done < steps
    finally:
        meter.close(handle)

    i = int(carry[0])
    params = carry[3]
    saved_k = [min(s * save_every, steps) for s in range(i)]
    p_saved = jax.tree_util.tree_map(lambda x: x[:i], bufs[0])
    l_saved = bufs[1][:i]
    failed = not ok
    if (failed or interrupted) and saved_k[-1] != done:
        # Keep the state the run stopped in: the last finite parameters.
        saved_k.append(done)
        p_saved = jax.tree_util.tree_map(
            lambda buf, x: jnp.concatenate([buf, x[None]]), p_saved, params
        )
        l_saved = jnp.concatenate(
            [l_saved, jnp.asarray(_full_loss(problem, params), l_saved.dtype)[None]]
        )

    dtype = float_dtype(problem.params0)
    ks = np.asarray(saved_k, dtype=np.float64) * batch_steps
    lr = None if method.lr is None else float(method.lr)
    ts = jnp.asarray(ks, dtype) * (1 if lr is None else jnp.asarray(lr, dtype))
    batch_done = done * batch_steps
    outcome = "interrupted" if interrupted else RESULTS[result] if failed else ""
    stats = RunStats(
        steps=batch_done,
        epochs=batch_done / m,
        grad_evals=totals.get("grad_evals"),
        examples=batch_done * batching.batch_size(n),
        batch_size=batching.batch_size(n),
        num_batches=m,
        lr=lr,
        local_solves=totals.get("local_solves"),
        ode_steps=totals.get("ode_steps"),
        seconds=run_s,
        compile_seconds=compile_s,
        setup_seconds=setup_s,
        diverged_at=batch_done if failed else None,
        outcome=outcome,
        method=method.describe(),
    )
    traj = Trajectory(ts=ts, params=p_saved, loss=l_saved, method=label, stats=stats)
    total = steps * batch_steps
    if interrupted:
        raise RunInterrupted(
            f"{label} interrupted at batch step {batch_done} of {total}; the "
            f"{len(traj)} points computed so far are on `.trajectory`.",
            traj,
        )
    if failed:
        when = f" (t={batch_done * lr:g})" if lr is not None else ""
        advice = (
            "check the data and the loss (the loss was finite, its gradient was not)"
            if result == RESULTS.nonfinite_gradient
            else "try a smaller step size"
        )
        report(
            f"{label} diverged: {RESULTS[result]} at step {batch_done}{when} of {total}. "
            f"Returning the {len(traj)} points computed before it; {advice}.",
            traj,
            on_divergence,
            result=RESULTS[result],
            stacklevel=3,
        )
    return traj
