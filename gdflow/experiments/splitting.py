r"""Experiment ``splitting``: SGD against the splitting optimiser, to a target, across step sizes.

Source: ``shared/sources/sgd-as-ode-splitting.md`` (Merkulov & Oseledets, ICLR 2020
DeepDiffEq workshop). One epoch of minibatch SGD over a fixed partition into ``m``
batches is one Lie–Trotter splitting step (:math:`h = m\cdot\mathrm{lr}`) of gradient
flow, with every batch's local flow :math:`\dot\theta = -\nabla L_j(\theta)` solved by a
single Euler step of length ``lr``. The splitting optimiser solves the local flows
accurately instead (:class:`gdflow.Exact` for least squares, :class:`gdflow.LocalODE`
reduced by QR for logistic and softmax regression), which stays stable for any ``lr``.

For each of the text's four problems, every step size on a log grid and every seed, both
methods run until a target is met; we record batch steps and seconds to the target.

**How the iterations are counted.** A run proceeds epoch by epoch (fixed partition in a
fixed order: ``RoundRobin``), saving the iterate at each epoch end; the first epoch whose
end meets the target is then replayed from its start batch by batch, saving every ``s``
steps (``s = max(1, m // 100)``), to find the first saved step that meets it. (The first
epoch is always replayed that way, because on the random system the target is met inside
it.) We report **epochs** = batch steps / ``m`` (the text's iterations are splitting
steps, i.e. epochs) and batch steps.

**How time is measured.** The target test (full loss, error to :math:`\theta^\star`, test
error) must not be timed as optimiser work, and the library's runners evaluate the full
loss at every saved point. So the runs above are not timed at all. Afterwards the same run
is repeated from the same start in one call that saves only its end point, over the
epochs covering the steps to target (rounded up to a multiple of ``E_t``), and

.. math:: \text{seconds to target} = \text{seconds of that call}\times
          \frac{\text{steps to target}}{\text{steps run in it}},

using ``Trajectory.stats["seconds"]`` (compilation excluded; two full-loss evaluations,
at the start and the end, remain inside; except at the quick size, calls shorter than
0.2 s are run three times and the fastest is kept). The splitting optimiser also factorises every
batch once per run (QR, and for ``Exact`` an eigendecomposition of the ``b × b`` Gram
matrix; ``stats["setup_seconds"]``): we report it separately and add it to the
splitting's "total" seconds.

**Seeds.** Seed ``s`` draws a random permutation of the examples (so a different fixed
partition, still visited in order) and a random initial point
:math:`\theta_0 = \sigma\,\xi`, :math:`\xi \sim N(0, I)`; SGD and splitting share both.
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

from ..problems._tomography import tomography as _make_tomography
from ._base import Context, Experiment, Result, md_table

# The text's numbers (read off its figures; "iterations" as the text counts them).
TEXT_VALUES = {
    "random_lls": {
        "split_plateau_iterations": 64,
        "split_plateau_lr_range": [4.4, 1e8],
        "sgd_best_iterations": 67,
        "sgd_best_lr": 0.04,
        "sgd_diverges_above_lr": 0.063,
    },
    "logistic": {"split_reaches_target_up_to_lr": 1e7},
}

_REPLAY_POINTS = 100  # saves per replayed epoch: resolution m/100 batch steps
_SHORT_CALL = 0.2  # seconds: timed calls shorter than this are repeated, best of three


class _OneBatchPerEpoch(gf.AbstractBatching):
    """Round robin over ``m`` fixed batches, but each "epoch" is a single batch.

    Only used to *replay* one epoch of the splitting optimiser batch by batch:
    ``gf.split`` saves at epoch ends, so with this rule its epoch ``e`` is batch step
    ``e`` of the ordinary ``RoundRobin(b)`` run, and its saved points are the states after
    every batch. The local flows are the same, so the states are those of the
    ``RoundRobin`` run (each batch is factorised again at its step: slower, never timed).
    """

    deterministic: ClassVar[bool] = False  # the table changes from "epoch" to "epoch"
    batch_size_: int = eqx.field(static=True)
    m: int = eqx.field(static=True)

    def __init__(self, batch_size: int, m: int):
        self.batch_size_ = int(batch_size)
        self.m = int(m)

    def batch_size(self, n: int) -> int:
        return self.batch_size_

    def num_batches(self, n: int) -> int:
        return 1

    def epoch(self, n: int, e) -> jax.Array:
        j = jnp.mod(e, self.m)
        return (j * self.batch_size_ + jnp.arange(self.batch_size_))[None, :]

    def batch(self, data, table, j):
        return jax.tree_util.tree_map(lambda x: x[table[j]], data)


@dataclasses.dataclass
class _Case:
    """One of the text's problems and how to run it."""

    key: str
    title: str
    problem: gf.Problem  # rows in a fixed base order; seeds permute them
    batch_size: int
    local: Any  # the splitting's local solver
    measure: str  # what is compared with the target
    target: float
    # stacked params (T, ...) -> (T,) values; the target is met when a value is <= target
    error: Callable[[Any], np.ndarray]
    lrs: list[float]
    init_scale: float
    max_epochs: int
    seg_epochs: int  # epochs per untimed trace call
    time_epochs: int  # epochs per timing call
    stepwise: bool = True  # resolve the hitting epoch batch by batch
    best_of: int = 3  # repeats of a timed call shorter than _SHORT_CALL seconds
    data_note: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.problem.n

    @property
    def m(self) -> int:
        return self.n // self.batch_size


def first_hit(ks, values, target) -> int | None:
    """The first ``k`` in ``ks`` whose value is ``<= target`` (NaN never is), or ``None``."""
    values = np.asarray(values, dtype=float)
    ok = np.nonzero(np.nan_to_num(values, nan=np.inf) <= target)[0]
    return None if ok.size == 0 else int(np.asarray(ks)[ok[0]])


def saved_steps(traj: gf.Trajectory, lr: float) -> np.ndarray:
    """Batch-step index of each saved point (the library's clock: ``t = k·lr``)."""
    return np.rint(np.asarray(traj.ts) / lr).astype(np.int64)


def time_to_target(seconds: float, steps_run: int, steps_needed: int) -> float:
    """Seconds of a timed run scaled to the steps needed: ``seconds · needed / run``."""
    return seconds * steps_needed / steps_run


# --- running one method ---------------------------------------------------------------


def _run(method, case: _Case, problem, lr, epochs, save_every_epochs, batching=None):
    """``epochs`` epochs of SGD or splitting on ``problem``, saving every few epochs."""
    batching = gf.RoundRobin(case.batch_size) if batching is None else batching
    if method == "sgd":
        return gf.sgd(
            problem,
            lr,
            epochs,
            batching,
            save_every=save_every_epochs * batching.num_batches(problem.n),
            on_divergence="ignore",
        )
    return gf.split(
        problem,
        lr,
        epochs,
        batching,
        local=case.local,
        save_every=save_every_epochs,
        on_divergence="ignore",
    )


def _replay_epoch(method, case: _Case, problem, lr):
    """One epoch from ``problem.params0``, saved every ``s`` batch steps: (steps, values)."""
    m = case.m
    s = max(1, m // _REPLAY_POINTS)
    if method == "sgd":
        tr = gf.sgd(
            problem, lr, 1, gf.RoundRobin(case.batch_size), save_every=s, on_divergence="ignore"
        )
    else:
        tr = gf.split(
            problem,
            lr,
            m,
            _OneBatchPerEpoch(case.batch_size, m),
            local=case.local,
            save_every=s,
            on_divergence="ignore",
        )
    return saved_steps(tr, lr), case.error(tr.params), tr


def _measure(method: str, case: _Case, problem: gf.Problem, lr: float) -> dict:
    """Steps and seconds to the target for one method, step size and seed."""
    m = case.m
    rec = {
        "steps": None,
        "epochs": None,
        "seconds": None,
        "setup_seconds": None,
        "seconds_per_epoch": None,
        "diverged": False,
        "failed": None,
        "last_value": None,
    }
    steps = None
    done = 0  # epochs fully traced
    cur = problem
    try:
        if case.stepwise:
            ks, vals, tr = _replay_epoch(method, case, cur, lr)
            steps = first_hit(ks, vals, case.target)
            rec["last_value"] = float(vals[-1]) if np.isfinite(vals[-1]) else None
            if steps is None and (tr.diverged_at is not None or not np.isfinite(vals[-1])):
                rec["diverged"] = True
            elif steps is None:  # go on from the end of the replayed first epoch
                cur = problem.with_params0(tr.final)
                done = 1
        while steps is None and not rec["diverged"] and done < case.max_epochs:
            E = case.seg_epochs
            tr = _run(method, case, cur, lr, E, 1)
            vals = case.error(tr.params)
            ks = saved_steps(tr, lr)  # steps since this call's start
            e_hit = first_hit(ks // m, vals, case.target)
            finite = np.isfinite(vals)
            rec["last_value"] = float(vals[finite][-1]) if finite.any() else None
            if e_hit == 0:  # only possible for the initial point
                steps = done * m
                break
            if e_hit is not None:
                if case.stepwise:
                    start = tr.at(int(np.nonzero(ks // m == e_hit - 1)[0][0]))
                    rks, rvals, _ = _replay_epoch(method, case, problem.with_params0(start), lr)
                    j = first_hit(rks, rvals, case.target)
                    steps = (done + e_hit - 1) * m + (m if j is None else j)
                else:
                    steps = (done + e_hit) * m
                break
            if tr.diverged_at is not None or not finite[-1]:
                rec["diverged"] = True
                break
            done += E
            cur = problem.with_params0(tr.final)
    except RuntimeError as e:  # an ODE solve that gives up: record, keep the sweep going
        rec["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return rec
    if steps is None:
        return rec
    rec["steps"] = int(steps)
    rec["epochs"] = steps / m
    if steps == 0:
        rec.update(seconds=0.0, setup_seconds=0.0)
        return rec
    # Timing: the same run again from the start, one call saving only its end point, over
    # the epochs covering the steps to target (rounded up to a multiple of E_t, so that
    # SGD, whose step count is static, compiles for few lengths).
    need = max(1, math.ceil(steps / m))
    epochs = math.ceil(need / case.time_epochs) * case.time_epochs
    tr = _run(method, case, problem, lr, epochs, epochs)
    secs = tr.stats["seconds"]
    # Short calls are at the mercy of the scheduler on a shared machine: best of three
    # (one at the quick size).
    for _ in range(case.best_of - 1 if secs < _SHORT_CALL else 0):
        secs = min(secs, _run(method, case, problem, lr, epochs, epochs).stats["seconds"])
    rec["seconds"] = time_to_target(secs, epochs * m, steps)
    rec["seconds_per_epoch"] = secs / epochs
    rec["setup_seconds"] = float(tr.stats.get("setup_seconds", 0.0))
    return rec


# --- the four problems -----------------------------------------------------------------


def _relative_error(theta_star):
    theta_star = np.asarray(theta_star)
    scale = np.linalg.norm(theta_star)

    def error(params):
        P = np.asarray(params).reshape(np.shape(params)[0], -1)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.linalg.norm(P - theta_star[None, :], axis=1) / scale

    return error


def _random_lls(ctx: Context) -> _Case:
    n, p = ctx.pick(quick=(1000, 50), default=(10_000, 500), full=(10_000, 500))
    problem = gf.problems.random_least_squares(n, p, noise=0.0, key=jax.random.key(0))
    X, y = np.asarray(problem.data["X"]), np.asarray(problem.data["y"])
    theta_star = np.linalg.lstsq(X, y, rcond=None)[0]
    lrs = ctx.pick(
        quick=[1e-2, 4e-2, 1.0, 1e8],
        default=[1e-3, 1e-2, 2e-2, 4e-2, 5e-2, 6.3e-2, 8e-2, 0.1, 1.0, 4.4, 1e2, 1e4, 1e6, 1e8],
        full=[
            1e-3,
            3e-3,
            1e-2,
            2e-2,
            3e-2,
            4e-2,
            5e-2,
            6.3e-2,
            8e-2,
            0.1,
            0.3,
            1.0,
            4.4,
            1e2,
            1e3,
            1e4,
            1e5,
            1e6,
            1e7,
            1e8,
        ],
    )
    return _Case(
        key="random_lls",
        title=f"Random least squares {n}×{p}, b=20",
        problem=problem,
        batch_size=20,
        local=gf.Exact(),
        measure="relative error |θ-θ*|/|θ*|",
        target=1e-3,
        error=_relative_error(theta_star),
        lrs=lrs,
        init_scale=1.0,
        max_epochs=ctx.pick(quick=20, default=60, full=100),
        seg_epochs=ctx.pick(quick=10, default=30),
        time_epochs=ctx.pick(quick=5, default=10),
        data_note=(
            f"X ~ N(0,1) ({n}×{p}), y = Xθ_true with θ_true ~ N(0, I), no noise; θ* = lstsq(X, y)."
        ),
    )


def _tomography(ctx: Context) -> _Case:
    N = ctx.pick(quick=10, default=20, full=50)
    tomo = _make_tomography(N=N)  # gf.problems.tomography
    from scipy.sparse.linalg import lsqr

    theta_star = lsqr(tomo.A, tomo.b, atol=1e-14, btol=1e-14, iter_lim=100_000)[0]
    gap = float(np.linalg.norm(theta_star - tomo.x_true) / np.linalg.norm(tomo.x_true))
    lrs = ctx.pick(
        quick=[3.0, 1e4],
        default=[0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0, 1e2, 1e4, 1e8],
        full=[0.01, 0.03, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 4.0, 1e1, 1e2, 1e4, 1e6, 1e8],
    )
    n, P = tomo.A.shape
    return _Case(
        key="tomography",
        title=f"Tomography N={N} ({n}×{P}), b=60",
        problem=tomo.problem,
        batch_size=60,
        local=gf.Exact(),
        measure="relative error |θ-θ*|/|θ*|",
        target=1e-3,
        error=_relative_error(theta_star),
        lrs=lrs,
        init_scale=0.1,
        max_epochs=ctx.pick(quick=50, default=400, full=2000),
        # few long calls: every split call refactorises all batches
        seg_epochs=ctx.pick(quick=50, default=100, full=250),
        time_epochs=ctx.pick(quick=10, default=20, full=50),
        data_note=(
            f"AIR Tools II paralleltomo geometry, N={N}: 180 angles × "
            f"{n // 180} rays, modified Shepp–Logan phantom, b = A x (no noise); "
            f"θ* = lsqr(A, b) (|θ* - x_true|/|x_true| = {gap:.1e})."
        ),
        extra={"lsqr_vs_phantom": gap},
    )


def _split_train_test(X, y, n_train, seed=12345):
    perm = np.random.default_rng(seed).permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def _logistic(ctx: Context) -> _Case:
    b = 50
    mnist_dir = gf.datasets.find_idx_dir(ctx.data_dir, "mnist")
    if mnist_dir is not None:
        Xtr, ytr = gf.datasets.mnist(mnist_dir, classes=(0, 1), split="train")
        Xte, yte = gf.datasets.mnist(mnist_dir, classes=(0, 1), split="test")
        # quick: a subset (CI smoke size); default and full: the whole 0/1 training set
        keep = ctx.pick(quick=2000, default=len(ytr))
        ntr = (min(keep, len(ytr)) // b) * b
        Xtr, ytr = Xtr[:ntr], ytr[:ntr]
        source = (
            f"MNIST 0 vs 1 from {mnist_dir} ({ntr} train, {len(yte)} test images); "
            "the text's target, test error 1e-3"
        )
    else:
        X, y = gf.datasets.digits(classes=(0, 1))
        Xtr, ytr, Xte, yte = _split_train_test(X, y, 300)
        source = (
            f"scikit-learn digits 0 vs 1, 8×8 (300 train, {len(yte)} test; pass --data DIR "
            "with MNIST IDX files for the text's data); the text's target, test error 1e-3, "
            f"here: no mistake on the {len(yte)} test digits"
        )
    problem = gf.problems.logistic(Xtr, ytr.astype(float), name="logistic_0v1")
    Xte, yte = np.asarray(Xte), np.asarray(yte)

    def test_error(params):
        P = np.asarray(params)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.mean((P @ Xte.T > 0) != (yte[None, :] == 1), axis=1)

    lrs = ctx.pick(
        quick=[0.1, 10.0, 1e7],
        default=[0.01, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e7],
        full=[1e-3, 0.01, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
    )
    return _Case(
        key="logistic",
        title=f"Logistic regression 0 vs 1 ({'MNIST' if mnist_dir else 'digits'}), b={b}",
        problem=problem,
        batch_size=b,
        local=gf.LocalODE(rtol=1e-6, atol=1e-9),
        measure="test misclassification rate",
        target=1e-3,
        error=test_error,
        lrs=lrs,
        init_scale=0.01,
        max_epochs=ctx.pick(quick=10, default=60, full=100),
        seg_epochs=1,  # shares one compilation with the timing calls (LocalODE compiles slowly)
        time_epochs=ctx.pick(quick=1, default=20, full=10),
        stepwise=ctx.pick(quick=False, default=True),
        data_note=source + ".",
    )


def _softmax(ctx: Context) -> _Case:
    b = 64
    fashion_dir = gf.datasets.find_idx_dir(ctx.data_dir, "fashion-mnist")
    if fashion_dir is not None:
        Xtr, ytr = gf.datasets.fashion_mnist(fashion_dir, split="train")
        Xte, yte = gf.datasets.fashion_mnist(fashion_dir, split="test")
        keep = ctx.pick(quick=2560, default=12_800, full=len(ytr))
        ntr = (min(keep, len(ytr)) // b) * b
        Xtr, ytr = Xtr[:ntr], ytr[:ntr]
        target = 0.25
        source = (
            f"Fashion-MNIST from {fashion_dir} ({ntr} train, {len(yte)} test); "
            "the text's target, test error 0.25"
        )
    else:
        X, y = gf.datasets.digits()
        ntr = 1280
        Xtr, ytr, Xte, yte = _split_train_test(X, y, ntr)
        # A linear softmax model reaches ~3 % test error on digits (~16 % on
        # Fashion-MNIST, where the text asks for 25 %): 5 % is the comparable target.
        target = 0.05
        source = (
            f"scikit-learn digits, 10 classes ({ntr} train, {len(yte)} test); target "
            "test error 0.05 (the text's 0.25 is for Fashion-MNIST: pass --data DIR)"
        )
    problem = gf.problems.softmax(Xtr, ytr, num_classes=10, name="softmax")
    Xte, yte = np.asarray(Xte), np.asarray(yte)

    def test_error(params):
        P = np.asarray(params)  # (T, p, K)
        with np.errstate(over="ignore", invalid="ignore"):
            pred = np.argmax(np.einsum("np,tpk->tnk", Xte, P), axis=-1)
        return np.mean(pred != yte[None, :], axis=1)

    lrs = ctx.pick(
        quick=[1.0, 1e7],
        default=[0.01, 0.1, 1.0, 10.0, 1e2, 1e4, 1e7],
        full=[1e-3, 0.01, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e7],
    )
    return _Case(
        key="softmax",
        title=f"Softmax regression ({'Fashion-MNIST' if fashion_dir else 'digits'}), b={b}",
        problem=problem,
        batch_size=b,
        local=gf.LocalODE(rtol=1e-6, atol=1e-9),
        measure="test misclassification rate",
        target=target,
        error=test_error,
        lrs=lrs,
        init_scale=0.01,
        max_epochs=ctx.pick(quick=10, default=60, full=100),
        seg_epochs=1,
        time_epochs=ctx.pick(quick=1, default=10, full=5),
        stepwise=ctx.pick(quick=False, default=True),
        data_note=source + ".",
    )


# --- the sweep ---------------------------------------------------------------------------


def _seeded(case: _Case, seed: int) -> gf.Problem:
    """The case's problem with seed's permutation of the examples and initial point."""
    rng = np.random.default_rng(1000 + seed)
    perm = rng.permutation(case.n)
    base = case.problem
    data = jax.tree_util.tree_map(lambda x: x[perm], base.data)
    params0 = jax.tree_util.tree_map(
        lambda x: jnp.asarray(case.init_scale * rng.standard_normal(np.shape(x)), x.dtype),
        base.params0,
    )
    return base.with_data(data, params0)


def _aggregate(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs if r[key] is not None]
    out = {"reached": len(vals), "of": len(runs)}
    if vals:
        out.update(mean=float(np.mean(vals)), min=float(np.min(vals)), max=float(np.max(vals)))
    return out


def _sweep(ctx: Context, case: _Case, seeds: int) -> dict:
    problems = [_seeded(case, s) for s in range(seeds)]
    results = {}
    for method in ("sgd", "split"):
        per_lr = []
        for lr in ctx.track(case.lrs, desc=f"{case.key} {method}"):
            runs = [_measure(method, case, prob, lr) for prob in problems]
            total = [
                None if r["seconds"] is None else r["seconds"] + (r["setup_seconds"] or 0.0)
                for r in runs
            ]
            for r, t in zip(runs, total, strict=True):
                r["total_seconds"] = t
            per_lr.append(
                {
                    "lr": lr,
                    "runs": runs,
                    "epochs": _aggregate(runs, "epochs"),
                    "steps": _aggregate(runs, "steps"),
                    "seconds": _aggregate(runs, "seconds"),
                    "total_seconds": _aggregate(runs, "total_seconds"),
                    "diverged": sum(r["diverged"] for r in runs),
                    "failed": sum(r["failed"] is not None for r in runs),
                }
            )
        results[method] = per_lr
    return results


def _summary(case: _Case, res: dict) -> dict:
    def reached(row):
        return row["epochs"]["reached"] == row["epochs"]["of"]

    out = {}
    sgd_ok = [row for row in res["sgd"] if reached(row)]
    if sgd_ok:
        best = min(sgd_ok, key=lambda r: r["epochs"]["mean"])
        out["sgd_best_lr"] = best["lr"]
        out["sgd_best_epochs"] = best["epochs"]["mean"]
        out["sgd_best_steps"] = best["steps"]["mean"]
        out["sgd_largest_lr_reaching"] = max(r["lr"] for r in sgd_ok)
    div = [row["lr"] for row in res["sgd"] if row["diverged"] == len(row["runs"])]
    out["sgd_smallest_lr_diverging"] = min(div) if div else None
    sp_ok = [row for row in res["split"] if reached(row)]
    if sp_ok:
        out["split_largest_lr_reaching"] = max(r["lr"] for r in sp_ok)
        best = min(sp_ok, key=lambda r: r["epochs"]["mean"])
        out["split_best_lr"] = best["lr"]
        out["split_best_epochs"] = best["epochs"]["mean"]
        big = [r["epochs"]["mean"] for r in sp_ok if r["lr"] >= 4.4]
        if big:
            out["split_plateau_epochs"] = float(np.median(big))
            out["split_plateau_steps"] = float(np.median(big)) * case.m
    out["split_failures"] = sum(row["failed"] for row in res["split"])
    return out


# --- figures and report --------------------------------------------------------------------


def _plot(ctx: Context, cases, results, quantity: str, fname: str) -> str:
    """One panel per problem: ``quantity`` ("epochs" or "seconds") to target against lr."""
    import matplotlib.pyplot as plt

    k = len(cases)
    cols = 2 if k > 1 else 1
    nrows = math.ceil(k / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    for ax, case in zip(axes.ravel(), cases, strict=False):
        res = results[case.key]
        plotted = False
        for method, color, label in (("sgd", "C0", "SGD"), ("split", "C3", "splitting")):
            rows = res[method]
            if quantity == "seconds" and method == "split":
                curves = [
                    ("total_seconds", "-", f"{label} (incl. factorisation)"),
                    ("seconds", "--", f"{label} (iterations only)"),
                ]
            else:
                curves = [(quantity, "-", label)]
            for key, style, lab in curves:
                ok = [r for r in rows if r[key]["reached"] and r[key]["mean"] > 0]
                if not ok:
                    continue
                lr = np.array([r["lr"] for r in ok])
                mean = np.array([r[key]["mean"] for r in ok])
                lo = mean - np.array([r[key]["min"] for r in ok])
                hi = np.array([r[key]["max"] for r in ok]) - mean
                ax.errorbar(
                    lr,
                    mean,
                    yerr=[lo, hi],
                    fmt="o" + style,
                    color=color,
                    ms=4,
                    capsize=2,
                    label=lab,
                )
                # hollow marks: only some seeds reached the target (mean over those)
                part = np.array([r[key]["reached"] < r[key]["of"] for r in ok])
                if part.any():
                    ax.plot(lr[part], mean[part], "o", ms=8, mfc="white", mec=color, zorder=4)
                plotted = True
            missed = [r["lr"] for r in rows if r["epochs"]["reached"] == 0]
            if missed:
                what = "diverged / not reached" if method == "sgd" else "not reached"
                # x data coordinates, y axes coordinates: crosses along the top edge
                ax.scatter(
                    missed,
                    np.ones(len(missed)),
                    marker="x",
                    color=color,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                    zorder=5,
                    label=f"{label}: {what}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        # the crosses do not enter autoscaling: fix the lr range explicitly
        ax.set_xlim(min(case.lrs) / 2, max(case.lrs) * 2)
        if not plotted:
            ax.set_ylim(1.0, 10.0)
        ylabel = "epochs to target" if quantity == "epochs" else "seconds to target"
        ax.set_xlabel("step size lr")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{case.title}\n{case.measure} ≤ {case.target:g}", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.tight_layout()
    return ctx.savefig(fig, fname)


def _fmt(agg: dict, digits: str = "{:.3g}", runs=None) -> str:
    if agg["reached"] == 0:
        last = [r["last_value"] for r in runs or [] if r["last_value"] is not None]
        return f"— (at the end: {np.median(last):.2g})" if last else "—"
    s = digits.format(agg["mean"])
    if agg["of"] > 1 and agg["max"] > agg["min"]:
        s += f" [{digits.format(agg['min'])}, {digits.format(agg['max'])}]"
    if agg["reached"] < agg["of"]:
        s += f" ({agg['reached']}/{agg['of']})"
    return s


def _case_table(case: _Case, res: dict) -> str:
    rows = []
    for sg, sp in zip(res["sgd"], res["split"], strict=True):
        note = "diverged" if sg["diverged"] == len(sg["runs"]) else ""
        rows.append(
            [
                f"{sg['lr']:g}",
                _fmt(sg["epochs"], runs=None if note else sg["runs"])
                + (f" {note}" if note else ""),
                _fmt(sp["epochs"], runs=sp["runs"]),
                _fmt(sg["seconds"]),
                _fmt(sp["seconds"]),
                _fmt(sp["total_seconds"]),
            ]
        )
    return md_table(
        ["lr", "SGD epochs", "split epochs", "SGD s", "split s (iter.)", "split s (+factor.)"],
        rows,
    )


def run(ctx: Context) -> Result:
    seeds = ctx.num_seeds(quick=1, default=3, full=5)
    builders = (_random_lls, _tomography, _logistic, _softmax)
    cases, results, numbers = [], {}, {"seeds": seeds, "text": TEXT_VALUES, "problems": {}}
    for build in builders:
        start = time.perf_counter()
        case = build(ctx)
        case.best_of = ctx.pick(quick=1, default=3)
        res = _sweep(ctx, case, seeds)
        wall = time.perf_counter() - start
        cases.append(case)
        results[case.key] = res
        numbers["problems"][case.key] = {
            "title": case.title,
            "n": case.n,
            "batch_size": case.batch_size,
            "num_batches": case.m,
            "measure": case.measure,
            "target": case.target,
            "local": type(case.local).__name__,
            "init_scale": case.init_scale,
            "max_epochs": case.max_epochs,
            "time_epochs": case.time_epochs,
            "stepwise": case.stepwise,
            "data": case.data_note,
            **case.extra,
            "wall_seconds": wall,
            "summary": _summary(case, res),
            "sgd": res["sgd"],
            "split": res["split"],
        }
    figures = [
        _plot(ctx, cases, results, "epochs", "epochs_to_target.png"),
        _plot(ctx, cases, results, "seconds", "seconds_to_target.png"),
    ]
    return Result(numbers=numbers, figures=figures, text=_report(cases, results, numbers, seeds))


def _report(cases, results, numbers, seeds) -> str:
    lls = numbers["problems"]["random_lls"]["summary"]
    lls_m = numbers["problems"]["random_lls"]["num_batches"]
    logi = numbers["problems"]["logistic"]["summary"]
    t = TEXT_VALUES

    def g(v, f="{:.3g}"):
        return "—" if v is None else f.format(v)

    comp = md_table(
        ["claim", "text", "gdflow (this run)"],
        [
            [
                "random LLS: splitting plateau (lr ≥ 4.4)",
                f"≈ {t['random_lls']['split_plateau_iterations']} iterations, lr 4.4 … 1e8",
                f"{g(lls.get('split_plateau_epochs'))} epochs = "
                f"{g(lls.get('split_plateau_steps'), '{:.0f}')} batch steps "
                f"(up to lr {g(lls.get('split_largest_lr_reaching'), '{:g}')})",
            ],
            [
                "random LLS: SGD best",
                f"≈ {t['random_lls']['sgd_best_iterations']} iterations at lr ≈ 0.04",
                f"{g(lls.get('sgd_best_epochs'))} epochs = "
                f"{g(lls.get('sgd_best_steps'), '{:.0f}')} batch steps at lr "
                f"{g(lls.get('sgd_best_lr'), '{:g}')}",
            ],
            [
                "random LLS: SGD ratio best / splitting plateau",
                f"{67 / 64:.2f} (67/64)",
                g(lls["sgd_best_epochs"] / lls["split_plateau_epochs"], "{:.2f}")
                if lls.get("sgd_best_epochs") and lls.get("split_plateau_epochs")
                else "—",
            ],
            [
                "random LLS: SGD diverges above",
                "≈ 0.063",
                f"largest lr reaching {g(lls.get('sgd_largest_lr_reaching'), '{:g}')}, smallest "
                f"diverging {g(lls.get('sgd_smallest_lr_diverging'), '{:g}')}",
            ],
            [
                "logistic: splitting reaches the target up to",
                "lr = 1e7",
                f"lr = {g(logi.get('split_largest_lr_reaching'), '{:g}')} (largest tried "
                f"{max(c.lrs[-1] for c in cases if c.key == 'logistic'):g}); SGD up to "
                f"{g(logi.get('sgd_largest_lr_reaching'), '{:g}')}",
            ],
        ],
    )
    parts = [
        f"SGD (`gf.sgd`) against the splitting optimiser (`gf.split`, Lie–Trotter; "
        f"`Exact` local flows for least squares, `LocalODE(rtol=1e-6, atol=1e-9)` QR-reduced "
        f"for logistic/softmax), fixed partition in fixed order (`RoundRobin`), {seeds} "
        f"seed(s) (a random permutation of the examples and a random θ0 per seed, shared by "
        f"both methods). Tables: mean [min, max] over seeds; '(k/n)' when only k of n seeds "
        f"reached the target within the epoch budget (hollow marks in the figures); "
        f"'—' none did (then the median over seeds of the measure at the end of the budget).",
        "",
        "**Iterations** are epochs (= splitting steps, `m` batch steps each), resolved to "
        "m/100 batch steps by replaying the epoch in which the target is first met. "
        "**Seconds** exclude the target test: the runs that locate the target are not timed; "
        "the same run is repeated in one call that saves only its end point, over the "
        "whole epochs covering the target (a multiple of E_t), and its time "
        "(`stats['seconds']`, compilation excluded) is scaled by "
        "(steps to target)/(steps timed); calls under 0.2 s: best of three. For "
        "splitting, 'split s (+factor.)' adds the one-off per-batch factorisation "
        "(`stats['setup_seconds']`). All times are "
        "wall-clock on a shared, loaded 2-core machine: compare within a table, not across "
        "machines.",
        "",
        "### The text's numbers beside ours",
        "",
        comp,
        "",
        "The text does not define its 'iterations'. On our random system (Gaussian, "
        "consistent, so θ* = θ_true) both methods meet the target *inside the first epoch* "
        f"({lls_m} batches), so counted in epochs neither could need ≈ 64; the batch-step "
        "counts, the plateau of the splitting in lr, SGD's optimum near lr 0.04 and its "
        "ratio to the splitting plateau are what we can compare.",
    ]
    for case in cases:
        res = results[case.key]
        s = numbers["problems"][case.key]
        parts += [
            "",
            f"### {case.title}",
            "",
            f"{case.data_note} Target: {case.measure} ≤ {case.target:g}. "
            f"m = {case.m} batches per epoch; budget {case.max_epochs} epochs; timed runs "
            f"of a multiple of E_t = {case.time_epochs} epochs"
            + ("" if case.stepwise else "; iterations resolved to whole epochs (quick size)")
            + ".",
            "",
            _case_table(case, res),
        ]
        summ = s["summary"]
        if summ.get("split_failures"):
            parts += [
                "",
                f"{summ['split_failures']} splitting run(s) failed (local ODE solve "
                "gave up); see results.json.",
            ]
    return "\n".join(parts)


EXPERIMENT = Experiment(
    name="splitting",
    title="SGD vs the splitting optimiser: iterations and seconds to target against step size",
    source="sgd-as-ode-splitting.md (Merkulov & Oseledets, ICLR 2020 DeepDiffEq workshop)",
    summary=(
        "One SGD epoch is a Lie–Trotter splitting step of gradient flow with each batch's "
        "local flow solved by one Euler step. Solving the local flows exactly (least "
        "squares) or accurately (logistic, softmax) gives an optimiser that reaches the "
        "target for any step size, levelling off where SGD is at its best and beyond SGD's "
        "divergence threshold: random least squares, AIR Tools tomography, logistic and "
        "softmax regression."
    ),
    run=run,
)
