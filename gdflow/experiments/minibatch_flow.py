r"""Experiment `minibatch-flow`: the switched (square-wave) gradient flow of minibatching.

Source: `shared/sources/minibatch-gradient-flow.md`. Two points `a`, `b`, per-example
loss $\tfrac12|x-\theta|^2$, one example per batch visited round robin; the text
models this as $\dot\theta = \eta[g_{2\eta}(t)(a-\theta) + (1-g_{2\eta}(t))(b-\theta)]$
(rate and dwell time $\eta$), solves it by Laplace transform and approximates the
solution for $\eta \ll 1$. We

1. solve the switched flow numerically ([`gdflow.switched_flow`][], `rate = dwell =
   eta`) and compare it with the closed form ([`gdflow.two_point_flow`][]), the
   approximation ([`gdflow.two_point_flow_approx`][]), full-batch gradient flow and
   discrete round-robin GD in one figure;
2. tabulate the approximation's maximal error against $\eta$ (log-log figure, fitted
   order), beside full-batch gradient flow and a consistently corrected approximation
   (our addition, $O(\eta^4)$; see [`gdflow.two_point_flow_approx`][]);
3. go beyond two batches: a small least-squares problem with `m = 8` batches, where the
   switched flow (rate 1, dwell `lr`) sampled at epoch ends *is* the splitting
   optimiser with exact local flows ([`gdflow.split`][], `local=Exact()`), and compare
   it, its Strang variant and SGD with gradient flow (global errors of order 1, 2, 1 in
   `lr`).

Time conventions. The text's flow advances each dwell of length $\eta$ at rate
$\eta$, i.e. by as much gradient-flow time as an SGD step of $\eta^2$: its
Euler discretisation is round-robin GD with step $\eta^2$, whose step `k` sits at
text time $t = k\eta$. Full-batch GF in text time is
$\dot\theta = -\eta\nabla L$.
"""

from __future__ import annotations

import dataclasses
import functools as ft

import jax
import jax.numpy as jnp
import numpy as np

import gdflow as gf

from ._base import (
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

# The text gives no numbers for its figures; a 2-d instance where every curve is visible.
A = np.array([2.0, 0.0])
B = np.array([0.0, 2.0])
THETA0 = np.array([-1.0, -0.5])
ETA_FIGURE = 0.3
DWELLS = 32  # dwell intervals solved numerically per eta (one compilation for all eta)
TOL = {"rtol": 1e-12, "atol": 1e-14}


@dataclasses.dataclass(frozen=True)
class Config:
    """The two-point instance, the eta grid and the many-batch grid for one size."""

    size: str
    etas: tuple[float, ...]
    epochs: tuple[int, ...]  # many batches: epochs per run at fixed T (lr = T / (m E))
    eta_figure: float = ETA_FIGURE
    # Published / predicted values compared in the claims.
    approx_order: float = 2.0  # the text: the eta << 1 approximation errs by O(eta^2)
    order_tolerance: float = 0.25
    closed_form_tolerance: float = 1e-9


def config(size: str = "default", *, data_dir=None, seeds=None) -> Config:
    """The configuration for `size` (no data set and no seeds: everything is closed form)."""
    return Config(
        size=size,
        etas=tuple(
            pick(
                size,
                quick=[0.5, 0.25, 0.125, 0.0625],
                default=[0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625],
                full=[0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625],
            )
        ),
        epochs=tuple(pick(size, quick=[10, 20, 40, 80], default=[10, 20, 40, 80, 160, 320])),
    )


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the figures and the report are made from."""

    config: Config
    curves: dict  # the figure's dense curves (arrays)
    figure: dict  # numbers of the figure
    rows: list  # per eta: approximation errors
    orders: dict  # fitted orders of the approximations
    many_curves: dict
    many: dict
    claims: tuple[Claim, ...]

    def numbers(self) -> dict:
        return {
            "figure": self.figure,
            "approximation": {"rows": self.rows, "orders": self.orders},
            "many_batches": self.many,
        }


def _along(theta):
    """Coordinate of `theta` along a − b, relative to the midpoint (the oscillating one)."""
    u = (A - B) / np.linalg.norm(A - B)
    return (np.asarray(theta) - (A + B) / 2) @ u


def _two_point_problem():
    return gf.problems.two_points(jnp.asarray(A), jnp.asarray(B), jnp.asarray(THETA0))


def _switched(eta: float):
    """The text's switched flow on its first `DWELLS` dwell intervals."""
    return gf.switched_flow(
        _two_point_problem(), eta, DWELLS * eta, gf.RoundRobin(1), rate=eta, **TOL
    )


def figure_task(config: Config):
    """The figure's curves and numbers at `config.eta_figure` (one task)."""
    eta = config.eta_figure
    t1 = DWELLS * eta
    flow = _switched(eta)
    t = np.linspace(0.0, t1, 1601)
    numeric = np.asarray(flow.evaluate(t))
    closed = np.asarray(gf.two_point_flow(t, A, B, THETA0, eta))
    approx = np.asarray(gf.two_point_flow_approx(t, A, B, THETA0, eta))
    corrected = np.asarray(gf.two_point_flow_approx(t, A, B, THETA0, eta, corrected=True))
    problem = _two_point_problem()
    # Full-batch GF in text time (rate eta), in closed form: the text's straight line
    # from theta0 to (a+b)/2.
    mid = (A + B) / 2
    full = mid + (THETA0 - mid) * np.exp(-eta * t)[:, None]
    # Round-robin GD, the Euler discretisation of the text's flow: step eta² per batch,
    # step k at text time k·eta.
    steps = DWELLS
    gd = gf.sgd(problem, eta**2, steps // 2, gf.RoundRobin(1))
    curves = {
        "t": t,
        "numeric": numeric,
        "closed": closed,
        "approx": approx,
        "corrected": corrected,
        "full": full,
        "gd_t": np.asarray(gd.ts) / eta,
        "gd": np.asarray(gd.params),
    }
    numbers = {
        "eta": eta,
        "a": A,
        "b": B,
        "theta0": THETA0,
        "t1": t1,
        "closed_vs_numeric_max": float(np.abs(closed - numeric).max()),
        "approx_vs_numeric_max": float(np.abs(approx - numeric).max()),
        "corrected_vs_numeric_max": float(np.abs(corrected - numeric).max()),
        "full_gf_vs_numeric_max": float(np.abs(full - numeric).max()),
        "late_oscillation_amplitude_numeric": float(np.ptp(_along(numeric[t > t1 - 2 * eta])) / 2),
        "late_oscillation_amplitude_predicted": float(
            np.linalg.norm(A - B) / 2 * np.tanh(eta**2 / 2)
        ),
        "gd_vs_flow_at_switches_max": float(
            np.abs(
                curves["gd"] - np.asarray(gf.two_point_flow(curves["gd_t"], A, B, THETA0, eta))
            ).max()
        ),
    }
    return curves, numbers


def _figure(out, c) -> str:
    import matplotlib.pyplot as plt

    eta = ETA_FIGURE
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(c["t"], _along(c["full"]), color="0.5", lw=1.5, label="full-batch GF")
    ax.plot(c["t"], _along(c["numeric"]), color="C0", lw=2.2, label="switched flow (numerical)")
    ax.plot(c["t"], _along(c["closed"]), "--", color="C1", lw=1.2, label="closed form (text)")
    ax.plot(
        c["t"], _along(c["approx"]), ":", color="C3", lw=1.5, label=r"$\eta\ll1$ approx. (text)"
    )
    ax.plot(c["t"], _along(c["corrected"]), "-.", color="C4", lw=1, label="approx., corrected")
    ax.plot(c["gd_t"], _along(c["gd"]), "k.", ms=5, label=r"round-robin GD, step $\eta^2$")
    ax.set(
        xlabel=r"text time $t$",
        ylabel=r"$(\theta - \frac{a+b}{2})\cdot\frac{a-b}{|a-b|}$",
        title=rf"Two points, $\eta={eta:g}$: component along $a-b$",
    )
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    ax.plot(*c["full"].T, color="0.5", lw=1.5, label="full-batch GF")
    ax.plot(*c["numeric"].T, color="C0", lw=2, label="switched flow")
    ax.plot(*c["approx"].T, ":", color="C3", lw=1.5, label="approximation")
    ax.plot(*c["gd"].T, "k.", ms=5, label="round-robin GD")
    ax.plot(*np.stack([A, B]).T, "s", color="C2", ms=7, label="a, b")
    ax.plot(*THETA0, "o", color="C3", ms=7, label=r"$\theta_0$")
    ax.set(xlabel=r"$\theta_1$", ylabel=r"$\theta_2$", title="Paths in the plane")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[2]
    tiny = 1e-18
    ax.semilogy(
        c["t"],
        np.linalg.norm(c["closed"] - c["numeric"], axis=1) + tiny,
        color="C1",
        label="|closed form − numerical|",
    )
    for key, color, label in (
        ("approx", "C3", "text's approximation"),
        ("full", "0.5", "full-batch GF"),
        ("corrected", "C4", "corrected approximation"),
    ):
        ax.semilogy(
            c["t"],
            np.linalg.norm(c[key] - c["numeric"], axis=1) + tiny,
            color=color,
            label=f"|{label} − numerical|",
        )
    ax.set(xlabel=r"text time $t$", ylabel="error", title="Errors against the numerical flow")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return savefig(fig, out, "two_point_flow.png")


def approx_error_task(config: Config, eta: float) -> dict:
    """Errors of the closed form and the approximations at one `eta` (one task)."""
    # numerical switched flow on its first DWELLS intervals, 8 samples per dwell
    flow = _switched(eta)
    t_num = np.linspace(0.0, DWELLS * eta, 8 * DWELLS + 1)
    numeric = np.asarray(flow.evaluate(t_num))
    closed_num = np.asarray(gf.two_point_flow(t_num, A, B, THETA0, eta))
    approx_num = np.asarray(gf.two_point_flow_approx(t_num, A, B, THETA0, eta))
    # closed form on the whole transient, eta·t in [0, 6], finely near the first switches
    t = np.unique(
        np.concatenate([np.linspace(0, 4 * eta, 4001), np.linspace(0, 6 / eta, 200_001)])
    )
    exact = np.asarray(gf.two_point_flow(t, A, B, THETA0, eta))
    err = np.abs(np.asarray(gf.two_point_flow_approx(t, A, B, THETA0, eta)) - exact).max()
    corr = np.abs(
        np.asarray(gf.two_point_flow_approx(t, A, B, THETA0, eta, corrected=True)) - exact
    ).max()
    mid = (A + B) / 2
    full = np.abs(mid + (THETA0 - mid) * np.exp(-eta * t)[:, None] - exact).max()
    return {
        "eta": eta,
        "closed_vs_numeric": float(np.abs(closed_num - numeric).max()),
        "approx_vs_numeric": float(np.abs(approx_num - numeric).max()),
        "approx_vs_closed": float(err),
        "approx_error_over_eta2": float(err / eta**2),
        "full_gf_vs_closed": float(full),
        "corrected_vs_closed": float(corr),
        "corrected_error_over_eta4": float(corr / eta**4),
    }


def _fit_orders(rows):
    e = [r["eta"] for r in rows]
    return {
        k: gf.fit_order(e, [r[k] for r in rows])
        for k in ("approx_vs_closed", "full_gf_vs_closed", "corrected_vs_closed")
    }


def _error_figure(out, rows, orders) -> str:
    import matplotlib.pyplot as plt

    etas = np.array([r["eta"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for key, style, color, label in (
        ("approx_vs_closed", "o-", "C3", "text's approximation"),
        ("full_gf_vs_closed", "v-", "0.5", "full-batch GF"),
        ("corrected_vs_closed", "D-", "C4", "corrected approximation"),
    ):
        err = np.array([r[key] for r in rows])
        ax.loglog(etas, err, style, color=color, label=f"{label} (slope {orders[key]:.2f})")
    closed = np.array([max(r["closed_vs_numeric"], 1e-17) for r in rows])
    ax.loglog(etas, closed, "s:", color="C1", label="closed form vs numerical")
    ax.set(
        xlabel=r"$\eta$",
        ylabel=r"$\max_t\,|\cdot - \theta(t)|_\infty$",
        title=r"Approximations of the switched flow",
    )
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return savefig(fig, out, "approx_error.png")


_MB, _MT, _MLR = 8, 4.0, 0.05  # batch size, horizon T, figure lr = T / (m · 10): 10 epochs


@ft.cache
def _many_problem():
    problem = gf.problems.random_least_squares(64, 8, noise=0.5, key=jax.random.key(0))
    return problem, gf.RoundRobin(_MB)


@ft.cache
def _gf_dense():
    """GF on the grid of every time compared (multiples of lr / 5), solved once."""
    problem, batching = _many_problem()
    m = batching.num_batches(problem.n)
    epochs = round(_MT / (m * _MLR))
    t_dense = np.linspace(0.0, _MT, 5 * m * epochs + 1)
    flow = gf.gradient_flow(problem, _MT, ts=t_dense, **TOL)
    return t_dense, np.asarray(flow.params)


def _gf_final() -> np.ndarray:
    return _gf_dense()[1][-1]


def many_batches_task(config: Config):
    """m = 8 batches of least squares at the figure's lr: switched flow = exact splitting."""
    problem, batching = _many_problem()
    T, lr_fig = _MT, _MLR
    m = batching.num_batches(problem.n)
    epochs = round(T / (m * lr_fig))
    per = 5
    t_dense, gf_at = _gf_dense()
    switched = gf.switched_flow(problem, lr_fig, T, batching, **TOL)
    exact = gf.split(problem, lr_fig, epochs, batching)
    strang = gf.split(problem, lr_fig, epochs, batching, scheme="strang")
    sgd = gf.sgd(problem, lr_fig, epochs, batching)
    sw_dense = np.asarray(switched.evaluate(t_dense))

    def gap(traj):
        idx = np.rint(np.asarray(traj.ts) / (lr_fig / per)).astype(int)
        return np.linalg.norm(np.asarray(traj.params) - gf_at[idx], axis=1)

    curves = {
        "t": t_dense,
        "switched": np.linalg.norm(sw_dense - gf_at, axis=1),
        "exact_t": np.asarray(exact.ts),
        "exact": gap(exact),
        "strang_t": np.asarray(strang.ts),
        "strang": gap(strang),
        "sgd_t": np.asarray(sgd.ts),
        "sgd": gap(sgd),
    }
    same = float(np.abs(np.asarray(switched.params)[::m] - np.asarray(exact.params)).max())
    numbers = {
        "n": problem.n,
        "p": 8,
        "batch_size": _MB,
        "num_batches": m,
        "T": T,
        "lr": lr_fig,
        "switched_at_epoch_ends_vs_split_exact_max": same,
    }
    return curves, numbers


def global_error_task(config: Config, epochs: int) -> dict:
    """Error at T against gradient flow of SGD, exact Lie–Trotter and Strang at one lr."""
    problem, batching = _many_problem()
    m = batching.num_batches(problem.n)
    lr = _MT / (m * epochs)
    # Every run saves 10 epochs apart (11 points), so all share one compilation per method.
    every = epochs // 10
    runs = {
        "sgd": gf.split(problem, lr, epochs, batching, local=gf.Euler(), save_every=every),
        "lie_trotter": gf.split(problem, lr, epochs, batching, save_every=every),
        "strang": gf.split(problem, lr, epochs, batching, scheme="strang", save_every=every),
    }
    final = _gf_final()
    return {
        "lr": lr,
        **{k: float(np.linalg.norm(np.asarray(r.final) - final)) for k, r in runs.items()},
    }


def _many_figure(out, c, nb) -> str:
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax0.plot(c["t"], c["switched"], color="C0", lw=1.5, label="switched flow (rate 1, dwell lr)")
    ax0.plot(
        c["exact_t"],
        c["exact"],
        "o",
        color="C1",
        ms=6,
        mfc="none",
        label="split, Exact, Lie–Trotter (epoch ends)",
    )
    ax0.plot(c["strang_t"], c["strang"], "^", color="C2", ms=5, label="split, Exact, Strang")
    ax0.plot(c["sgd_t"], c["sgd"], ".", color="k", ms=3, label="SGD (every step)")
    ax0.set(
        xlabel="t",
        ylabel=r"$|\theta(t) - \theta_{GF}(t)|$",
        title=f"Least squares, m={nb['num_batches']} batches, lr={nb['lr']:g}",
    )
    ax0.legend(frameon=False, fontsize=8)
    lrs = np.array(nb["lrs"])
    labels = {"sgd": "SGD (Euler)", "lie_trotter": "Exact, Lie–Trotter", "strang": "Exact, Strang"}
    for k, v in nb["errors_at_T"].items():
        ax1.loglog(lrs, v, "o-", label=f"{labels[k]} (order {nb['orders'][k]:.2f})")
    ax1.set(
        xlabel="lr",
        ylabel=r"$|\theta(T) - \theta_{GF}(T)|$",
        title=f"Global error at T={nb['T']:g}",
    )
    ax1.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return savefig(fig, out, "many_batches.png")


def run(config: Config, *, executor=None, progress: bool = False) -> Results:
    """Measure everything of the experiment; the grids go through [`run_tasks`][gdflow.experiments._base.run_tasks]."""
    (curves, fig_numbers), (many_curves, many) = run_tasks(
        apply_task, [(figure_task, config), (many_batches_task, config)], executor
    )
    rows = run_tasks(
        approx_error_task,
        [(config, eta) for eta in config.etas],
        executor,
        track=tracker(progress, "eta"),
    )
    errs = run_tasks(
        global_error_task,
        [(config, E) for E in config.epochs],
        executor,
        track=tracker(progress, "lr"),
    )
    orders = _fit_orders(rows)
    lrs = [e["lr"] for e in errs]
    many["lrs"] = lrs
    many["errors_at_T"] = {k: [e[k] for e in errs] for k in ("sgd", "lie_trotter", "strang")}
    many["orders"] = {k: gf.fit_order(lrs, v) for k, v in many["errors_at_T"].items()}
    claims = make_claims(config, fig_numbers, rows, orders, many)
    return Results(config, curves, fig_numbers, rows, orders, many_curves, many, claims)


def make_claims(config: Config, f: dict, rows: list, orders: dict, many: dict):
    """The claims of the section, from the measured numbers."""
    order_rule = Close(atol=config.order_tolerance)
    tol = Close(atol=config.closed_form_tolerance)
    return (
        Claim(
            "closed_form_exact",
            "the Laplace-transform solution solves the switched flow: max |closed form − "
            f"numerical| at η = {f['eta']:g}",
            0.0,
            f["closed_vs_numeric_max"],
            tol,
        ),
        Claim(
            "closed_form_exact_all_eta",
            "the same, worst over the η grid",
            0.0,
            max(r["closed_vs_numeric"] for r in rows),
            tol,
        ),
        Claim(
            "approx_order",
            "the η ≪ 1 approximation errs by O(η²): fitted order of its max error",
            config.approx_order,
            orders["approx_vs_closed"],
            order_rule,
        ),
        Claim(
            "full_gf_order",
            "full-batch GF is also O(η²) from the switched flow (gdflow's check): fitted order",
            2.0,
            orders["full_gf_vs_closed"],
            order_rule,
        ),
        Claim(
            "approx_vs_full_gf",
            "the approximation is closer to the flow than full-batch GF: ratio of max errors "
            f"(approx / full GF) at η = {rows[-1]['eta']:g}",
            1.0,
            rows[-1]["approx_vs_closed"] / rows[-1]["full_gf_vs_closed"],
            AtMost(),
        ),
        Claim(
            "corrected_order",
            "the corrected approximation (gdflow's addition, all O(η²) terms kept) is O(η⁴): "
            "fitted order",
            4.0,
            orders["corrected_vs_closed"],
            order_rule,
        ),
        Claim(
            "late_amplitude",
            "late half-amplitude of the oscillation along a−b equals |a−b|/2·tanh(η²/2) "
            "(gdflow's derivation from the closed form)",
            f["late_oscillation_amplitude_predicted"],
            f["late_oscillation_amplitude_numeric"],
            Close(rtol=0.02),
        ),
        Claim(
            "switched_is_exact_splitting",
            "with m batches the switched flow (rate 1, dwell lr) at epoch ends is the "
            "splitting optimiser with exact local flows: max difference",
            0.0,
            many["switched_at_epoch_ends_vs_split_exact_max"],
            tol,
        ),
        Claim(
            "sgd_order",
            "SGD's global error against GF is first order in lr",
            1.0,
            many["orders"]["sgd"],
            order_rule,
        ),
        Claim(
            "lie_trotter_order",
            "exact Lie–Trotter splitting is first order in lr",
            1.0,
            many["orders"]["lie_trotter"],
            order_rule,
        ),
        Claim(
            "strang_order",
            "exact Strang splitting is second order in lr",
            2.0,
            many["orders"]["strang"],
            order_rule,
        ),
    )


def figures(results: Results, out) -> list[str]:
    """The three figures, drawn from `results` alone."""
    return [
        _figure(out, results.curves),
        _error_figure(out, results.rows, results.orders),
        _many_figure(out, results.many_curves, results.many),
    ]


def report(results: Results) -> str:
    """The Markdown section, from `results` alone: claims first."""
    rows, orders, many, f = results.rows, results.orders, results.many, results.figure
    table = md_table(
        [
            "η",
            "closed form vs numerical",
            "text's approx.: max error",
            "/ η²",
            "full-batch GF",
            "corrected approx.",
            "/ η⁴",
        ],
        [
            [
                r["eta"],
                r["closed_vs_numeric"],
                r["approx_vs_closed"],
                r["approx_error_over_eta2"],
                r["full_gf_vs_closed"],
                r["corrected_vs_closed"],
                r["corrected_error_over_eta4"],
            ]
            for r in rows
        ]
        + [
            [
                "fitted order",
                "",
                orders["approx_vs_closed"],
                "",
                orders["full_gf_vs_closed"],
                orders["corrected_vs_closed"],
                "",
            ]
        ],
        fmt="{:.3g}",
    )
    lrs = many["lrs"]
    errs = many["errors_at_T"]
    table2 = md_table(
        ["lr", "SGD", "Exact, Lie–Trotter", "Exact, Strang"],
        [
            [lr, errs["sgd"][i], errs["lie_trotter"][i], errs["strang"][i]]
            for i, lr in enumerate(lrs)
        ]
        + [
            [
                "fitted order",
                many["orders"]["sgd"],
                many["orders"]["lie_trotter"],
                many["orders"]["strang"],
            ]
        ],
        fmt="{:.3g}",
    )
    return "\n".join(
        [
            claims_table(results.claims),
            "",
            f"Two points a={A.tolist()}, b={B.tolist()}, θ0={THETA0.tolist()}; one example "
            "per batch, round robin, a first. The text's flow has rate and dwell η; gdflow "
            "solves it numerically with `gf.switched_flow(..., dwell=η, rate=η)` (Tsit5, "
            "rtol 1e-12) and compares it with the text's closed form (`gf.two_point_flow`) "
            "and its η≪1 approximation (`gf.two_point_flow_approx`).",
            "",
            f"**Figure (η={f['eta']:g}).** Max errors against the numerical flow: closed "
            f"form {f['closed_vs_numeric_max']:.1e}, the text's approximation "
            f"{f['approx_vs_numeric_max']:.3g}, full-batch GF {f['full_gf_vs_numeric_max']:.3g}, "
            f"the corrected approximation {f['corrected_vs_numeric_max']:.2g}. Round-robin GD "
            "with step η² (the Euler discretisation of the text's flow, step k at t=kη) "
            f"differs from the flow at the switching times by up to "
            f"{f['gd_vs_flow_at_switches_max']:.3g}.",
            "",
            "**Maximal errors against η** (max over ηt ∈ [0, 6] against the closed form; the "
            f"closed form against the numerical flow over the first {DWELLS} dwell "
            "intervals):",
            "",
            table,
            "",
            "The corrected approximation (`gf.two_point_flow_approx(..., corrected=True)`, "
            "gdflow's addition) keeps every O(η²) term that the text's last steps drop: "
            "s(1−e^{−ητ}) + η²(½−s)e^{−ητ} + (η²/2)e^{−ηt}.",
            "",
            f"**More batches.** Least squares {many['n']}×{many['p']}, m={many['num_batches']} "
            f"batches of {many['batch_size']}, round robin; the switched flow with rate 1 and "
            f"dwell lr={many['lr']:g} against `gf.split(..., local=gf.Exact())`. "
            f"Error against gradient flow at T={many['T']:g} for decreasing lr (fixed T):",
            "",
            table2,
        ]
    )


EXPERIMENT = Experiment(
    name="minibatch-flow",
    title="Minibatching as a switched gradient flow (square wave), in closed form",
    source="minibatch-gradient-flow.md (Gradient flow with minibatching, blog post 2024)",
    summary=(
        "Round-robin minibatching on two points is a gradient flow whose target switches "
        "with a square wave. Checks the text's closed form against a numerical solve, the "
        "order of its η≪1 approximation, and, with m batches, that the same switched flow "
        "is the splitting optimiser with exact local flows."
    ),
    config=config,
    run=run,
    figures=figures,
    report=report,
    seconds={"quick": 17.0, "default": 21.0, "full": 26.0},  # 2026-12-04, for ordering only
)
