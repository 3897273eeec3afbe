"""Experiment `modified-loss`: GD against gradient flow on the text's quadratic bowl.

Source: `shared/sources/modified-loss.md`. Warm-up: the bowl
$L = \\tfrac{\\lambda}{2}\\theta^2$ with λ = 1, θ0 = 1.2 and step η = 0.5. GD iterate
`k` is plotted at `t = kη` against the GF curve; GD runs ahead of GF (it "locks in"
the starting gradient for the whole step).

Then, extending the text:

1. *The modified bowl* (the text's second figure): the bowl and
   $L_\\eta = L + \\tfrac{\\eta}{4}|\\nabla L|^2$; GF, GF on $L_\\eta$, the
   order-2 modified flow and GD over time; endpoint gaps after one and ten steps.
2. *The general case* on a small tanh network on digits: the one-step error
   $|\\Phi_\\eta(\\theta_0) - (\\theta_0 - \\eta g)|$ of the flow of
   `gf.modified_field(loss, η, p)` for p = 0, 1, 2 (expected slopes 2, 3, 4 in η), and
   GD against the same flows over a fixed horizon (expected slopes 1, 2, 3).
3. *SGD*: the mean over seeds of reshuffled SGD against GF on L and on the SGD modified
   loss (`gf.sgd_modified_loss`; Smith, Dherin, Barrett and De, ICLR 2021).
"""

from __future__ import annotations

import dataclasses
import functools as ft
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import gdflow as gf

from ._base import (
    AtLeast,
    AtMost,
    Claim,
    Close,
    Experiment,
    apply_task,
    claims_table,
    md_table,
    pick,
    run_tasks,
    savefig,
    tracker,
)

LAMBDA, THETA0, LR = 1.0, 1.2, 0.5


@dataclasses.dataclass(frozen=True)
class Config:
    """The text's bowl (λ, θ0, η) and the sizes of the network and SGD parts."""

    size: str
    local_lrs: tuple[float, ...]
    global_steps: tuple[int, ...]
    horizon: float
    n: int  # digits examples of the tanh network
    width: int
    sgd_epochs: int
    sgd_seeds: int
    lam: float = LAMBDA
    theta0: float = THETA0
    lr: float = LR
    order_tolerance: float = 0.3


def config(size: str = "default", *, data_dir=None, seeds=None) -> Config:
    """The configuration for `size`; `seeds` sets the SGD seeds."""
    return Config(
        size=size,
        local_lrs=tuple(
            pick(
                size,
                quick=[0.025, 0.05, 0.1, 0.2],
                default=[0.0125, 0.025, 0.05, 0.1, 0.2],
                full=[0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2],
            )
        ),
        # Each step count compiles GD once: quick fits its slope through three points.
        global_steps=tuple(
            pick(size, quick=[10, 20, 40], default=[10, 20, 40, 80], full=[20, 40, 80, 160, 320])
        ),
        horizon=pick(size, quick=2.0, default=2.0, full=4.0),
        n=pick(size, quick=64, default=256, full=1024),
        width=pick(size, quick=16, default=16, full=32),
        sgd_epochs=pick(size, quick=10, default=30, full=60),
        sgd_seeds=seeds if seeds is not None else pick(size, quick=8, default=32, full=128),
    )


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the figures and the report are made from."""

    config: Config
    warmup: dict
    warmup_curves: tuple
    bowl: dict
    bowl_curves: dict
    network: dict
    local: dict
    glob: dict
    sgd: dict
    claims: tuple[Claim, ...]

    def numbers(self) -> dict:
        return {
            **self.warmup,
            "modified_bowl": self.bowl,
            "network": self.network,
            "local_orders": self.local,
            "global_orders": self.glob,
            "sgd": self.sgd,
        }


def warmup_task(config: Config):
    steps = 10
    problem = gf.problems.quadratic(jnp.asarray(LAMBDA), params0=jnp.asarray([THETA0]))
    gd = gf.gd(problem, LR, steps)
    t_dense = np.linspace(0.0, steps * LR, 201)
    flow = gf.gradient_flow(problem, steps * LR, ts=t_dense, rtol=1e-11, atol=1e-13)
    flow_at_gd = np.asarray(flow.evaluate(gd.ts))[:, 0]
    gd_theta = np.asarray(gd.params)[:, 0]
    k = np.arange(steps + 1)
    # Closed forms: GD (1 - ηλ)^k θ0, GF e^{-λt} θ0.
    gd_exact = (1 - LR * LAMBDA) ** k * THETA0
    gf_exact = np.exp(-LAMBDA * LR * k) * THETA0
    gap = np.abs(gd_theta - flow_at_gd)
    numbers = {
        "lambda": LAMBDA,
        "theta0": THETA0,
        "lr": LR,
        "gd_theta": gd_theta,
        "gf_theta_at_gd_times": flow_at_gd,
        "gap": gap,
        "gap_after_1_step": gap[1],
        "gap_after_10_steps": gap[10],
        "gap_max": gap.max(),
        "gd_closed_form_max_error": np.abs(gd_theta - gd_exact).max(),
        "gf_closed_form_max_error": np.abs(flow_at_gd - gf_exact).max(),
    }
    return numbers, (t_dense, np.asarray(flow.params)[:, 0], np.asarray(gd.ts), gd_theta)


def _warmup_figure(out, curves) -> str:
    import matplotlib.pyplot as plt

    t_dense, gf_theta, gd_t, gd_theta = curves
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    th = np.linspace(-1.5, 1.5, 301)
    ax0.plot(th, 0.5 * LAMBDA * th**2, color="C0", label=r"$L(\theta)=\frac{\lambda}{2}\theta^2$")
    ax0.plot(gd_theta, 0.5 * LAMBDA * gd_theta**2, "ko", ms=4, label="GD iterates")
    ax0.plot([THETA0], [0.5 * LAMBDA * THETA0**2], "o", color="C3", ms=8, label=r"$\theta_0$")
    ax0.set(xlabel=r"$\theta$", ylabel="loss", title=rf"Quadratic bowl, $\lambda={LAMBDA:g}$")
    ax0.legend(frameon=False)
    ax1.plot(t_dense, gf_theta, color="C0", label="gradient flow")
    ax1.plot(gd_t, gd_theta, "ko", ms=4, label=rf"GD, $\eta={LR:g}$, at $t=k\eta$")
    ax1.set(xlabel="t", ylabel=r"$\theta(t)$", title="GF (line) vs GD (dots)")
    ax1.legend(frameon=False)
    fig.tight_layout()
    return savefig(fig, out, "warmup.png")


def _warmup_text(numbers) -> str:
    rows = [
        [
            k,
            float(numbers["gd_theta"][k]),
            float(numbers["gf_theta_at_gd_times"][k]),
            float(numbers["gap"][k]),
        ]
        for k in (0, 1, 2, 5, 10)
    ]
    return "\n".join(
        [
            f"Bowl $L=\\frac{{\\lambda}}{{2}}\\theta^2$, $\\lambda={LAMBDA:g}$, "
            f"$\\theta_0={THETA0:g}$, $\\eta={LR:g}$. GD lands at $(1-\\eta\\lambda)\\theta_0 = "
            f"{(1 - LR * LAMBDA) * THETA0:g}$ after one step, GF at $e^{{-\\lambda\\eta}}\\theta_0 "
            f"= {np.exp(-LAMBDA * LR) * THETA0:.4f}$.",
            "",
            md_table(["step k", "GD θ_k", "GF θ(kη)", "gap"], rows),
            "",
            f"Measured gap after one step {numbers['gap_after_1_step']:.4f}, largest "
            f"{numbers['gap_max']:.4f}. Library against closed forms: GD "
            f"{numbers['gd_closed_form_max_error']:.1e}, GF "
            f"{numbers['gf_closed_form_max_error']:.1e} (max abs error).",
        ]
    )


# ---------------------------------------------------------------------------------------
# Solving several flows of one problem at once.


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


# Flows of the network problem save at NT points, so that one compiled solver serves
# every step size and horizon (the fields hold lr as a traced array).
NT = 11


class _SumLoss(eqx.Module):
    """The loss of a stack of copies of one problem (bookkeeping for the stacked solve)."""

    loss: Callable = eqx.field(static=True)

    def __call__(self, params, batch):
        return sum(self.loss(p, batch) for p in params)


class _Stack(eqx.Module):
    """Block-diagonal field: component i of the state follows `fields[i]`."""

    fields: tuple

    def __call__(self, params, data):
        return tuple(f(p, data) for f, p in zip(self.fields, params, strict=True))


class _MinusGrad(eqx.Module):
    """`-grad f` of a loss `f(params, data)` (a Module, so its arrays stay traced)."""

    f: Callable

    def __call__(self, params, data):
        return jax.tree_util.tree_map(jnp.negative, jax.grad(self.f)(params, data))


def _flows(problem, fields, t1, ts, *, rtol, atol) -> list[np.ndarray]:
    """The flows of several `fields` from `problem.params0`, as `(T, P)` arrays.

    They are solved as one ODE system with a block-diagonal field (the flows side by side),
    so a comparison of several fields costs one compilation of the solver, not one each;
    compilation, not solving, dominates the cost of these small problems. The adaptive
    step is then shared, and the error control covers all blocks at once.
    """
    k = len(fields)
    stacked = gf.Problem(
        _SumLoss(problem.loss), problem.data, (problem.params0,) * k, name=problem.name
    )
    traj = gf.gradient_flow(stacked, t1, ts=ts, field=_Stack(tuple(fields)), rtol=rtol, atol=atol)
    return [np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(traj.params[i])) for i in range(k)]


# ---------------------------------------------------------------------------------------
# The text's second figure: the modified bowl and gradient flow on it.


def bowl_task(config: Config):
    steps = 10
    problem = gf.problems.quadratic(jnp.asarray(LAMBDA), params0=jnp.asarray([THETA0]))
    gd = np.asarray(gf.gd(problem, LR, steps).params)[:, 0]
    # 20 dense points per step, so that the GD times k·η are save times (no re-solve).
    per = 20
    t_dense = np.linspace(0.0, steps * LR, steps * per + 1)
    curves = {"t": t_dense, "gd": gd}
    fields = [gf.modified_field(problem.loss, LR, order) for order in (0, 1, 2)]
    for order, flow in enumerate(
        _flows(problem, fields, steps * LR, t_dense, rtol=1e-11, atol=1e-13)
    ):
        curves[order] = flow[:, 0]
    k = np.arange(steps + 1)
    # Closed forms: the order-p field is -a_p θ with a_0 = λ, a_1 = λ + ηλ²/2,
    # a_2 = a_1 + η²λ³/3 (the series of -log(1 - ηλ)/η), so θ(t) = e^{-a_p t} θ0.
    rates = {0: LAMBDA, 1: LAMBDA + LR * LAMBDA**2 / 2}
    rates[2] = rates[1] + LR**2 * LAMBDA**3 / 3
    numbers = {"lr": LR, "rates": {f"order_{p}": a for p, a in rates.items()}}
    for order in (0, 1, 2):
        at_gd = curves[order][::per]
        gap = np.abs(gd - at_gd)
        numbers[f"order_{order}"] = {
            "theta_at_gd_times": at_gd,
            "gap_after_1_step": gap[1],
            "gap_after_10_steps": gap[10],
            "gap_max": gap.max(),
            "closed_form_max_error": np.abs(at_gd - np.exp(-rates[order] * LR * k) * THETA0).max(),
        }
    mod = gf.modified_loss(problem.loss, LR)
    th = np.linspace(-1.5, 1.5, 301)
    curves["theta_grid"] = th
    curves["loss"] = 0.5 * LAMBDA * th**2
    curves["modified_loss"] = np.asarray(
        jax.vmap(lambda x: mod(x[None], problem.data))(jnp.asarray(th))
    )
    # The library's modified loss against the text's closed form (λ + ηλ²/2) θ² / 2.
    numbers["modified_loss_closed_form_max_error"] = np.abs(
        curves["modified_loss"] - 0.5 * rates[1] * th**2
    ).max()
    return numbers, curves


def _modified_bowl_figure(out, curves) -> str:
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    th = curves["theta_grid"]
    ax0.plot(th, curves["loss"], color="C0", label=r"$L(\theta)$")
    ax0.plot(th, curves["modified_loss"], color="C1", label=r"$L_\eta = L + \frac{\eta}{4}|L'|^2$")
    ax0.set(xlabel=r"$\theta$", ylabel="loss", title=rf"Original vs modified bowl, $\eta={LR:g}$")
    ax0.legend(frameon=False)
    t = curves["t"]
    ax1.plot(t, curves[0], color="C0", label="GF on $L$")
    ax1.plot(t, curves[1], color="C1", label=r"GF on $L_\eta$ (order 1)")
    ax1.plot(t, curves[2], "--", color="C2", lw=1, label="modified field, order 2")
    ax1.plot(LR * np.arange(len(curves["gd"])), curves["gd"], "ko", ms=4, label="GD at $t=k\\eta$")
    ax1.set(xlabel="t", ylabel=r"$\theta(t)$", title="GF / modified GF / GD")
    ax1.legend(frameon=False)
    fig.tight_layout()
    return savefig(fig, out, "modified_bowl.png")


def _modified_bowl_text(nb) -> str:
    rows = [
        [
            name,
            nb[f"order_{p}"]["gap_after_1_step"],
            nb[f"order_{p}"]["gap_after_10_steps"],
            nb[f"order_{p}"]["closed_form_max_error"],
        ]
        for p, name in ((0, "GF on L"), (1, "GF on L_η (order 1)"), (2, "order-2 field"))
    ]
    g0, g1, g2 = (nb[f"order_{p}"]["gap_after_1_step"] for p in (0, 1, 2))
    return "\n".join(
        [
            "### The modified bowl",
            "",
            f"`gf.modified_loss` gives the text's steeper bowl "
            f"$\\frac12(\\lambda + \\frac{{\\eta}}{{2}}\\lambda^2)\\theta^2$ (max deviation from "
            f"the closed form {nb['modified_loss_closed_form_max_error']:.1e}). Distance "
            "|GD θ_k − flow θ(kη)|, flows solved by `gf.gradient_flow` with "
            "`field=gf.modified_field(loss, η, order)`:",
            "",
            md_table(
                ["flow", "after 1 step", "after 10 steps", "vs closed form"], rows, fmt="{:.3g}"
            ),
            "",
            f"At $\\eta\\lambda = {LR * LAMBDA:g}$ the ratio of gaps after one step: GF / "
            f"modified GF {g0 / g1:.1f}, modified GF / order-2 field {g1 / g2:.1f} (on this "
            "bowl the order-2 field's rate is the third term of $-\\log(1-\\eta\\lambda)/\\eta$, "
            "GD's exact rate).",
        ]
    )


# ---------------------------------------------------------------------------------------
# The general case: a small tanh network on digits.


@ft.cache
def _mlp_problem(n: int, width: int):
    X, y = gf.datasets.digits(limit=n)
    return gf.problems.mlp(
        X, y, widths=(width,), activation="tanh", bias=True, key=jax.random.key(0)
    )


def local_order_task(config: Config, lr: float) -> list[float]:
    """|Φ_lr(θ0) - (θ0 - lr g)| for the order-p modified flows Φ, p = 0, 1, 2 (one task)."""
    problem = _mlp_problem(config.n, config.width)
    theta0 = _flat(problem.params0)
    g = _flat(problem.grad(problem.params0))
    fields = [gf.modified_field(problem.loss, lr, order) for order in (0, 1, 2)]
    ends = _flows(problem, fields, lr, np.linspace(0.0, lr, NT), rtol=1e-12, atol=1e-14)
    return [float(np.linalg.norm(ends[p][-1] - (theta0 - lr * g))) for p in (0, 1, 2)]


def global_order_task(config: Config, K: int) -> list[float]:
    """max_k |θ_k - Φ(k·lr)| over the horizon, GD (lr = T/K) against the order-p flows."""
    problem = _mlp_problem(config.n, config.width)
    lr = config.horizon / K
    ts = np.linspace(0.0, config.horizon, NT)
    gd = np.asarray(gf.gd(problem, lr, K, save_every=K // (NT - 1)).flat())
    fields = [gf.modified_field(problem.loss, lr, order) for order in (0, 1, 2)]
    flows = _flows(problem, fields, config.horizon, ts, rtol=1e-12, atol=1e-14)
    return [float(np.linalg.norm(gd - flows[p], axis=1).max()) for p in (0, 1, 2)]


def _orders(lrs, per_point, expected):
    errors = {p: np.asarray([e[p] for e in per_point]) for p in (0, 1, 2)}
    return {
        "lrs": np.asarray(lrs),
        "errors": {f"order_{p}": e for p, e in errors.items()},
        "slopes": {f"order_{p}": gf.fit_order(lrs, e) for p, e in errors.items()},
        "expected_slopes": {f"order_{p}": p + expected for p in (0, 1, 2)},
    }


def _orders_figure(out, local, glob) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, res, title in (
        (axes[0], local, "one step: $|\\Phi_\\eta(\\theta_0) - (\\theta_0 - \\eta g)|$"),
        (axes[1], glob, f"horizon T={glob['horizon']:g}: max$_k|\\theta_k - \\Phi(k\\eta)|$"),
    ):
        lrs = res["lrs"]
        for p in (0, 1, 2):
            e = res["errors"][f"order_{p}"]
            s = res["slopes"][f"order_{p}"]
            ax.loglog(lrs, e, "o-", color=f"C{p}", label=f"order {p}: slope {s:.2f}")
            ref = res["expected_slopes"][f"order_{p}"]
            ax.loglog(lrs, e[-1] * (lrs / lrs[-1]) ** ref, ":", color=f"C{p}", lw=1)
        ax.set(xlabel=r"step size $\eta$", ylabel="error", title=title)
        ax.set_xticks(lrs, [f"{h:g}" for h in lrs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle("tanh network on digits: GD vs the flow of the order-p modified field")
    fig.tight_layout()
    return savefig(fig, out, "orders.png")


def _orders_text(network, local, glob) -> str:
    rows = []
    for p in (0, 1, 2):
        key = f"order_{p}"
        rows.append(
            [
                p,
                f"{local['slopes'][key]:.2f} (expect {p + 2})",
                f"{glob['slopes'][key]:.2f} (expect {p + 1})",
            ]
        )
    return "\n".join(
        [
            "### The general case: a tanh network",
            "",
            f"`{network['name']}` ({network['params']} parameters, {network['n']} digits, "
            "cross-entropy). "
            "Local error: one GD step against the flow of `gf.modified_field(loss, η, p)` "
            f"for time η, η in {', '.join(f'{h:g}' for h in local['lrs'])}. Global error: "
            f"GD against the same flows over t ∈ [0, {glob['horizon']:g}], "
            f"η = {', '.join(f'{h:g}' for h in glob['lrs'])}. Flows by `gf.gradient_flow` "
            "at rtol 1e-12. Fitted slopes of log error against log η:",
            "",
            md_table(["order p", "one step", "fixed horizon"], rows),
            "",
            "The text derives order 1 (the $\\frac{\\eta}{4}|\\nabla L|^2$ loss); order 2 "
            "adds $-\\eta^2(\\frac1{12}\\nabla^3L[\\nabla L,\\nabla L] + "
            "\\frac13 H^2\\nabla L)$, which is not a gradient, so it has no loss.",
        ]
    )


# ---------------------------------------------------------------------------------------
# SGD: the mean of reshuffled SGD follows the SGD modified loss (Smith et al. 2021).


_SGD_LR = 0.05


def _sgd_setting(config: Config):
    problem = _mlp_problem(config.n, config.width)
    b = problem.n // 8  # m = 8 batches per epoch at every size
    m = problem.n // b
    every = config.sgd_epochs // (NT - 1)  # save at NT epoch ends: the flows' save grid
    return problem, b, m, every


def sgd_seed_task(config: Config, seed: int):
    """One reshuffled SGD run: its saved times and flat iterates `(NT, P)` (one task)."""
    problem, b, m, every = _sgd_setting(config)
    traj = gf.sgd(
        problem,
        _SGD_LR,
        config.sgd_epochs,
        gf.Reshuffle(b, jax.random.key(seed)),
        save_every=m * every,
    )
    return np.asarray(traj.ts), np.asarray(traj.flat())


def sgd_flows_task(config: Config, ts) -> dict:
    """The gradient flows compared with mean SGD, at the times `ts`."""
    problem, b, m, every = _sgd_setting(config)
    lr = _SGD_LR
    batching = gf.Reshuffle(b, jax.random.key(0))
    fields = {
        "gf": gf.modified_field(problem.loss, lr, 0),
        "gd_modified": gf.modified_field(problem.loss, lr, 1),
        "sgd_modified_expected": _MinusGrad(
            gf.sgd_modified_loss(problem, lr, batching, expected=True)
        ),
        "sgd_modified_one_partition": _MinusGrad(gf.sgd_modified_loss(problem, lr, batching)),
    }
    # Quick runs compare only the two flows of the claim (each field adds compile time).
    keep = pick(config.size, quick=("gf", "sgd_modified_expected"), default=tuple(fields))
    fields = {k: v for k, v in fields.items() if k in keep}
    solved = _flows(problem, list(fields.values()), ts[-1], ts, rtol=1e-10, atol=1e-12)
    return dict(zip(fields, solved, strict=True))


def _sgd_numbers(config: Config, seed_runs, flows) -> dict:
    problem, b, m, every = _sgd_setting(config)
    ts = seed_runs[0][0]
    runs = np.stack([r[1] for r in seed_runs])  # (seeds, NT, P)
    seeds = len(seed_runs)
    mean = runs.mean(0)
    # Seed noise of the mean: the typical distance of one run from the mean, / sqrt(seeds).
    noise = np.linalg.norm(runs - mean, axis=2).mean(0) / np.sqrt(seeds)
    dist = {k: np.linalg.norm(mean - v, axis=1) for k, v in flows.items()}
    return {
        "lr": _SGD_LR,
        "batch_size": b,
        "batches_per_epoch": m,
        "epochs": config.sgd_epochs,
        "seeds": seeds,
        "ts": ts,
        "distance": dist,
        "distance_final": {k: v[-1] for k, v in dist.items()},
        "seed_noise_of_mean": noise,
        "seed_noise_final": noise[-1],
        "single_run_spread_final": np.linalg.norm(runs[:, -1] - mean[-1], axis=1).mean(),
    }


def _sgd_figure(out, nb) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ts = nb["ts"]
    labels = {
        "gf": "GF on $L$",
        "gd_modified": r"GF on $L + \frac{\eta}{4}|\nabla L|^2$ (GD's modified loss)",
        "sgd_modified_one_partition": r"GF on $L_{SGD}$, one partition",
        "sgd_modified_expected": r"GF on $\mathbb{E}L_{SGD}$ (expected over partitions)",
    }
    for i, (key, label) in enumerate(labels.items()):
        if key in nb["distance"]:
            ax.plot(ts, nb["distance"][key], "o-", ms=3, color=f"C{i}", label=label)
    ax.fill_between(ts, 0, nb["seed_noise_of_mean"], color="0.85", label="seed noise of the mean")
    ax.set(
        xlabel="t (SGD step k at t = kη)",
        ylabel="distance to mean SGD",
        title=f"Reshuffled SGD, η={nb['lr']:g}, b={nb['batch_size']}, mean of {nb['seeds']} seeds",
    )
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return savefig(fig, out, "sgd_modified.png")


def _sgd_text(nb) -> str:
    d = nb["distance_final"]
    names = {
        "gf": "GF on L",
        "gd_modified": "GF on L + (η/4)‖∇L‖² (GD's modified loss)",
        "sgd_modified_one_partition": "GF on L_SGD, partition of epoch 0",
        "sgd_modified_expected": "GF on E L_SGD (expected=True)",
    }
    rows = [[label, d[key]] for key, label in names.items() if key in d]
    rows.append(["seed noise of the mean", nb["seed_noise_final"]])
    return "\n".join(
        [
            "### SGD's modified loss",
            "",
            f"Reshuffled SGD (η = {nb['lr']:g}, batch {nb['batch_size']}, "
            f"{nb['batches_per_epoch']} batches per epoch, {nb['epochs']} epochs), mean over "
            f"{nb['seeds']} seeds, against gradient flows at the epoch ends "
            f"(t = {nb['ts'][-1]:g} at the end). Smith, Dherin, Barrett & De (ICLR 2021): "
            "the mean iterate follows GF on "
            "$L_{SGD} = L + \\frac{\\eta}{4m}\\sum_j|\\nabla L_j|^2$, the batch term taken "
            "in expectation over random partitions (`gf.sgd_modified_loss(..., "
            "expected=True)`). Distance at the end:",
            "",
            md_table(["flow", "distance to mean SGD"], rows, fmt="{:.3g}"),
            "",
            f"One run's spread about the mean: {nb['single_run_spread_final']:.3g}. A single "
            "partition's loss (`expected=False`) is one sample of the expectation.",
        ]
    )


def run(config: Config, *, executor=None, progress: bool = False) -> Results:
    """Measure everything; the grids (step sizes, seeds) go through [`run_tasks`][gdflow.experiments._base.run_tasks]."""
    (warm, warm_curves), (bowl, bowl_curves) = run_tasks(
        apply_task, [(warmup_task, config), (bowl_task, config)], executor
    )
    local_pts = run_tasks(
        local_order_task,
        [(config, lr) for lr in config.local_lrs],
        executor,
        track=tracker(progress, "local orders"),
    )
    global_pts = run_tasks(
        global_order_task,
        [(config, K) for K in config.global_steps],
        executor,
        track=tracker(progress, "global orders"),
    )
    local = _orders(list(config.local_lrs), local_pts, 2)
    glob = _orders([config.horizon / K for K in config.global_steps], global_pts, 1)
    glob.update(horizon=config.horizon, steps=list(config.global_steps))
    seed_runs = run_tasks(
        sgd_seed_task,
        [(config, s) for s in range(config.sgd_seeds)],
        executor,
        track=tracker(progress, "SGD seeds"),
    )
    (flows,) = run_tasks(sgd_flows_task, [(config, seed_runs[0][0])], executor)
    sgd = _sgd_numbers(config, seed_runs, flows)
    problem = _mlp_problem(config.n, config.width)
    network = {
        "name": problem.name,
        "n": problem.n,
        "params": int(ravel_pytree(problem.params0)[0].size),
    }
    claims = make_claims(config, warm, bowl, local, glob, sgd)
    return Results(config, warm, warm_curves, bowl, bowl_curves, network, local, glob, sgd, claims)


def make_claims(config: Config, warm, bowl, local, glob, sgd) -> tuple[Claim, ...]:
    """The claims of the section, from the measured numbers."""
    o = Close(atol=config.order_tolerance)
    exact = Close(atol=1e-9)
    gd1 = float(warm["gd_theta"][1])
    gf1 = float(warm["gf_theta_at_gd_times"][1])
    g0, g1 = (bowl[f"order_{p}"]["gap_after_1_step"] for p in (0, 1))
    d = sgd["distance_final"]
    claims = [
        Claim(
            "gd_runs_ahead",
            f"GD runs ahead of GF: θ_GF(η) − θ_GD(1) after one step (θ0 = {config.theta0:g}, "
            f"η = {config.lr:g}); the text's closed forms give e^(−λη)θ0 − (1 − ηλ)θ0",
            float(
                np.exp(-config.lam * config.lr) * config.theta0
                - (1 - config.lr * config.lam) * config.theta0
            ),
            gf1 - gd1,
            Close(rtol=1e-6),
        ),
        Claim(
            "gd_closed_form",
            "GD is (1 − ηλ)^k θ0: max error of `gf.gd`",
            0.0,
            warm["gd_closed_form_max_error"],
            exact,
        ),
        Claim(
            "gf_closed_form",
            "GF is e^(−λt) θ0: max error of `gf.gradient_flow`",
            0.0,
            warm["gf_closed_form_max_error"],
            Close(atol=1e-8),
        ),
        Claim(
            "modified_loss_closed_form",
            "the modified bowl is ½(λ + ηλ²/2)θ²: max error of `gf.modified_loss`",
            0.0,
            bowl["modified_loss_closed_form_max_error"],
            exact,
        ),
        Claim(
            "modified_gf_closer",
            "GF on the modified loss is closer to GD than GF: gap ratio GF / modified GF "
            "after one step",
            1.0,
            g0 / g1,
            AtLeast(),
        ),
    ]
    for p in (0, 1, 2):
        key = f"order_{p}"
        who = "the text's" if p < 2 else "gdflow's"
        claims.append(
            Claim(
                f"local_order_{p}",
                f"one GD step is O(η^{p + 2}) from the order-{p} modified flow ({who} "
                "backward error analysis): fitted slope",
                float(p + 2),
                local["slopes"][key],
                o,
            )
        )
        claims.append(
            Claim(
                f"global_order_{p}",
                f"GD over a fixed horizon is O(η^{p + 1}) from the order-{p} modified flow: "
                "fitted slope",
                float(p + 1),
                glob["slopes"][key],
                o,
            )
        )
    claims.append(
        Claim(
            "sgd_modified_closer",
            "mean reshuffled SGD follows GF on E L_SGD (Smith et al. 2021) more closely than "
            "GF on L: distance ratio at the end (GF / E L_SGD)",
            1.0,
            d["gf"] / d["sgd_modified_expected"],
            AtLeast(),
        )
    )
    claims.append(
        Claim(
            "sgd_modified_within_noise",
            "…to within the seed noise of the mean: distance / twice the seed noise at the end",
            1.0,
            d["sgd_modified_expected"] / (2 * sgd["seed_noise_final"]),
            AtMost(),
        )
    )
    return tuple(claims)


def figures(results: Results, out) -> list[str]:
    """The four figures, drawn from `results` alone."""
    return [
        _warmup_figure(out, results.warmup_curves),
        _modified_bowl_figure(out, results.bowl_curves),
        _orders_figure(out, results.local, results.glob),
        _sgd_figure(out, results.sgd),
    ]


def report(results: Results) -> str:
    """The Markdown section, from `results` alone: claims first."""
    return "\n\n".join(
        [
            claims_table(results.claims),
            _warmup_text(results.warmup),
            _modified_bowl_text(results.bowl),
            _orders_text(results.network, results.local, results.glob),
            _sgd_text(results.sgd),
        ]
    )


EXPERIMENT = Experiment(
    name="modified-loss",
    title="GD follows a modified gradient flow (backward error analysis)",
    source="modified-loss.md (a note on modified losses of gradient descent)",
    summary=(
        "Compares GD (dots at t = kη) on the text's quadratic bowl with gradient flow and "
        "with gradient flow on the modified loss L + (η/4)|∇L|²; fits, on a tanh network, "
        "the orders of GD's one-step and fixed-horizon errors against the order-p modified "
        "flows; and compares the mean of reshuffled SGD with the SGD modified loss of Smith "
        "et al. (2021)."
    ),
    config=config,
    run=run,
    figures=figures,
    report=report,
    seconds={"quick": 21.0, "default": 40.0, "full": 76.0},  # 2026-12-04, for ordering only
)
