r"""Experiment `sgd-sde`: the continuous models of SGD's noise and of heavy-ball momentum.

Beyond the texts (their open question: "What about ... momentum, stochasticity?").

1. *Weak error.* Minibatch SGD with sampling with replacement on a small linear least
   squares problem against the stochastic modified equations (SME) of Li, Tai and E
   ([`gdflow.sgd_sde`][], orders 1 and 2) and plain gradient flow, at a fixed horizon,
   for $\varphi$ = a linear functional $u^\top\theta$, $|\theta|^2$ and the loss. On
   least squares the first two moments of SGD and of the SME are *exact* (linear
   recursions; linear ODEs with a Lyapunov part, by `expm`), so the weak orders are fitted
   free of Monte Carlo noise; the library's Monte Carlo (SGD seeds by `gf.sgd`, SDE paths
   by `gf.sgd_sde`) is checked against them, with its standard error reported, and orders
   are fitted from Monte Carlo only where the differences exceed three standard errors.
2. *Stationary spread.* SGD started at the minimiser: its spread $E|\theta-\theta^*|^2$
   after a long run against the SME's stationary prediction.
3. *Heavy ball.* Iterates of `optax.sgd(lr, momentum=beta)` against the limit flow
   $-\nabla L/(1-\beta)$ and the modified flow $-\nabla\tilde L/(1-\beta)$
   ([`gdflow.modified_field`][] with `momentum`), both started at
   [`gdflow.momentum_start`][] with the start-up layer [`gdflow.momentum_layer`][] added,
   and the modified flow from $\theta_0$ untreated; maximum error over every step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

import gdflow as gf
from gdflow._modified import modified_field
from gdflow._momentum import momentum_layer, momentum_start
from gdflow._sde import sgd_sde

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

N, B = 8, 2  # examples, batch size: m = 4 steps per "epoch" of gf.Replacement
U = np.array([0.6, 0.8])
TH0 = np.array([1.5, -1.0])
PHIS = ("u^T θ", "|θ|²", "loss")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the three parts (the texts give no values: these are ours)."""

    size: str
    horizon: float
    exact_lrs: tuple[float, ...]
    mc_lrs: tuple[float, ...]
    paths: int
    seeds: int
    stationary_lr: float
    stationary_horizon: float
    stationary_seeds: int
    hb_beta: float
    hb_lrs: tuple[float, ...]
    weak_tolerance: float = 0.25
    hb_tolerance: float = 0.15


def config(size: str = "default", *, data_dir=None, seeds=None) -> Config:
    """The configuration for `size`; `seeds` sets the SGD seeds of the Monte Carlo."""
    del data_dir
    return Config(
        size=size,
        horizon=1.0,
        exact_lrs=tuple(
            pick(size, quick=[0.025, 0.0125, 0.00625], default=[0.05, 0.025, 0.0125, 0.00625])
        ),
        # K = T / lr whole "epochs" of m = 4 steps.
        mc_lrs=tuple(pick(size, quick=[0.25, 0.125], default=[0.25, 0.125, 0.0625])),
        paths=pick(size, quick=2000, default=20000, full=100000),
        seeds=seeds if seeds is not None else pick(size, quick=100, default=1000, full=4000),
        stationary_lr=0.05,
        stationary_horizon=pick(size, quick=10.0, default=20.0),
        stationary_seeds=pick(size, quick=100, default=400, full=2000),
        hb_beta=0.3,
        hb_lrs=tuple(
            pick(size, quick=[0.01, 0.005, 0.0025], default=[0.01, 0.005, 0.0025, 0.00125])
        ),
    )


# ---------------------------------------------------------------------------------------
# exact moments on least squares


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, 2)), rng.normal(size=N)


class _Moments:
    r"""Exact $(E\theta, E\theta\theta^\top)$ of SGD with replacement, the SME and GF."""

    def __init__(self, X, y, b):
        self.y, self.b = y, b
        self.n, self.P = X.shape
        Ai = np.einsum("ni,nj->nij", X, X)
        ci = X * y[:, None]
        self.A, self.c = Ai.mean(0), ci.mean(0)
        self.D, self.e = Ai - self.A, ci - self.c

    def esigma(self, m, S, one):
        quad = np.einsum("nij,jk,nlk->il", self.D, S, self.D)
        cross = np.einsum("nij,j,nk->ik", self.D, m, self.e)
        return (quad - cross - cross.T + one * self.e.T @ self.e) / (self.n * self.b)

    def _matrix(self, fn):
        P = self.P
        size = P + P * P + 1
        out = np.zeros((size, size))
        for k in range(size):
            z = np.zeros(size)
            z[k] = 1.0
            dm, dS, d1 = fn(z[:P], z[P:-1].reshape(P, P), z[-1])
            out[:, k] = np.concatenate([dm, dS.ravel(), [d1]])
        return out

    def sgd_map(self, lr):
        M = np.eye(self.P) - lr * self.A

        def step(m, S, one):
            Mm = M @ m
            S2 = M @ S @ M.T + lr * (np.outer(Mm, self.c) + np.outer(self.c, Mm))
            S2 = S2 + one * lr * lr * np.outer(self.c, self.c) + lr * lr * self.esigma(m, S, one)
            return Mm + one * lr * self.c, S2, one

        return self._matrix(step)

    def generator(self, lr, order, noise=True):
        Am, cm = self.A, self.c
        if order == 2:
            Am, cm = Am + lr / 2 * Am @ Am, cm + lr / 2 * Am @ cm

        def gen(m, S, one):
            dS = -(Am @ S + S @ Am.T) + np.outer(cm, m) + np.outer(m, cm)
            if noise:
                dS = dS + lr * self.esigma(m, S, one)
            return -Am @ m + one * cm, dS, 0.0

        return self._matrix(gen)

    def z0(self, th0):
        return np.concatenate([th0, np.outer(th0, th0).ravel(), [1.0]])

    def split(self, z):
        P = self.P
        return z[..., :P], z[..., P:-1].reshape(z.shape[:-1] + (P, P))

    def phis(self, z):
        m, S = self.split(np.atleast_2d(z))
        lin = m @ U
        sq = np.trace(S, axis1=-2, axis2=-1)
        loss = 0.5 * np.einsum("ij,tji->t", self.A, S) - m @ self.c + 0.5 * np.mean(self.y**2)
        return np.stack([lin, sq, loss], axis=-1)

    def cov_trace(self, z):
        m, S = self.split(np.atleast_2d(z))
        return np.trace(S, axis1=-2, axis2=-1) - np.sum(m * m, axis=-1)

    def stationary(self, T):
        """Fixed point z = T z (affine map with last component 1)."""
        size = T.shape[0]
        Mx = T[:-1, :-1] - np.eye(size - 1)
        return np.concatenate([np.linalg.solve(Mx, -T[:-1, -1]), [1.0]])

    def stationary_flow(self, G):
        return np.concatenate([np.linalg.solve(G[:-1, :-1], -G[:-1, -1]), [1.0]])


def _problem(params0):
    X, y = _data()
    return gf.problems.least_squares(jnp.asarray(X), jnp.asarray(y), params0=jnp.asarray(params0))


def exact_task(config: Config) -> dict:
    """Weak errors at the horizon from exact moments, for SME-1, SME-2 and GF."""
    ex = _Moments(*_data(), B)
    z0, T = ex.z0(TH0), config.horizon
    errs = {"sme1": [], "sme2": [], "gf": []}
    cov = {"sgd": [], "sme1": [], "sme2": [], "gf": []}
    for lr in config.exact_lrs:
        K = int(round(T / lr))
        zs = np.linalg.matrix_power(ex.sgd_map(lr), K) @ z0
        models = {
            "sme1": scipy.linalg.expm(T * ex.generator(lr, 1)) @ z0,
            "sme2": scipy.linalg.expm(T * ex.generator(lr, 2)) @ z0,
            "gf": scipy.linalg.expm(T * ex.generator(lr, 1, noise=False)) @ z0,
        }
        for k, z in models.items():
            errs[k].append(np.abs(ex.phis(zs) - ex.phis(z))[0])
            cov[k].append(float(ex.cov_trace(z)[0]))
        cov["sgd"].append(float(ex.cov_trace(zs)[0]))
    lrs = np.asarray(config.exact_lrs)
    errs = {k: np.array(v) for k, v in errs.items()}
    slopes = {k: [gf.fit_order(lrs, v[:, j]) for j in range(3)] for k, v in errs.items()}
    cov = {k: np.array(v) for k, v in cov.items()}
    rel_cov = {k: np.abs(cov[k] - cov["sgd"]) / cov["sgd"] for k in ("sme1", "sme2", "gf")}
    return {
        "lrs": lrs,
        "errors": errs,
        "slopes": slopes,
        "cov_trace": cov,
        "rel_cov_error": rel_cov,
        "rel_cov_slopes": {k: gf.fit_order(lrs, rel_cov[k]) for k in ("sme1", "sme2")},
    }


def _phi_samples(flat, loss):
    flat, loss = np.asarray(flat), np.asarray(loss)
    return np.stack([flat @ U, np.sum(flat**2, axis=-1), loss], axis=-1)


def mc_sgd_task(config: Config, lr: float, first: int, count: int):
    """Final phi of `count` library SGD seeds (one task per block of seeds)."""
    problem = _problem(TH0)
    K = int(round(config.horizon / lr))
    epochs = K // (N // B)
    out = []
    for s in range(first, first + count):
        tr = gf.sgd(problem, lr, epochs, gf.Replacement(B, jax.random.key(s)), save_every=K)
        out.append(_phi_samples(np.asarray(tr.flat())[-1], np.asarray(tr.loss)[-1]))
    return np.array(out)


def mc_sde_task(config: Config, lr: float, order: int):
    """Final phi over the library's SDE paths."""
    problem = _problem(TH0)
    sol = sgd_sde(
        problem,
        lr,
        config.horizon,
        gf.Replacement(B, jax.random.key(0)),
        order=order,
        key=jax.random.key(100 + order),
        paths=config.paths,
        ts=[0.0, config.horizon],
        # dt = lr/8: the solver's own bias is then far below the Monte Carlo error (for
        # Heun it was measured at under 0.15 standard errors of 4000 paths, see
        # tests/test_sde.py); at dt = lr it is as large as the model error itself.
        dt=lr / 8,
    )
    return _phi_samples(np.asarray(sol.flat())[:, -1], np.asarray(sol.loss)[:, -1])


def _mean_se(samples):
    return samples.mean(0), samples.std(0, ddof=1) / np.sqrt(len(samples))


def _mc_numbers(config: Config, sgd_samples, sde_samples) -> dict:
    ex = _Moments(*_data(), B)
    z0, T = ex.z0(TH0), config.horizon
    rows = []
    for i, lr in enumerate(config.mc_lrs):
        K = int(round(T / lr))
        exact_sgd = ex.phis(np.linalg.matrix_power(ex.sgd_map(lr), K) @ z0)[0]
        m_sgd, se_sgd = _mean_se(sgd_samples[i])
        row = {"lr": lr, "sgd_mean": m_sgd, "sgd_se": se_sgd, "sgd_exact": exact_sgd}
        row["sgd_z"] = np.abs(m_sgd - exact_sgd) / se_sgd
        for order in (1, 2):
            exact_sde = ex.phis(scipy.linalg.expm(T * ex.generator(lr, order)) @ z0)[0]
            m, se = _mean_se(sde_samples[(i, order)])
            diff = np.abs(m_sgd - m)
            se_diff = np.sqrt(se_sgd**2 + se**2)
            row[f"sde{order}"] = {
                "mean": m,
                "se": se,
                "exact": exact_sde,
                # |MC - exact SDE| over the MC standard error (Euler / Heun bias included).
                "z": np.abs(m - exact_sde) / se,
                "weak_error_mc": diff,
                "weak_error_se": se_diff,
                "weak_error_exact": np.abs(exact_sgd - exact_sde),
                "resolved": diff > 3 * se_diff,
            }
        rows.append(row)
    fits = {}
    lrs = np.asarray(config.mc_lrs)
    for order in (1, 2):
        for j, name in enumerate(PHIS):
            ok = all(r[f"sde{order}"]["resolved"][j] for r in rows)
            e = [r[f"sde{order}"]["weak_error_mc"][j] for r in rows]
            fits[f"sde{order}:{name}"] = gf.fit_order(lrs, e) if ok and len(lrs) > 1 else None
    return {"rows": rows, "fitted_orders_mc": fits, "paths": config.paths, "seeds": config.seeds}


# ---------------------------------------------------------------------------------------
# stationary spread


def stationary_task(config: Config) -> dict:
    ex = _Moments(*_data(), B)
    lr, T = config.stationary_lr, config.stationary_horizon
    theta_star = np.linalg.solve(ex.A, ex.c)
    problem = _problem(theta_star)
    K = int(round(T / lr))
    epochs = K // (N // B)
    spread = []
    for s in range(config.stationary_seeds):
        tr = gf.sgd(
            problem, lr, epochs, gf.Replacement(B, jax.random.key(10_000 + s)), save_every=K
        )
        spread.append(float(np.sum((np.asarray(tr.flat())[-1] - theta_star) ** 2)))
    spread = np.array(spread)
    sol = sgd_sde(
        problem,
        lr,
        T,
        gf.Replacement(B, jax.random.key(0)),
        order=2,
        key=jax.random.key(7),
        paths=config.stationary_seeds * 4,
        ts=[0.0, T],
    )
    sde_spread = np.sum((np.asarray(sol.flat())[:, -1] - theta_star) ** 2, axis=-1)

    def around_star(z):
        m, S = ex.split(z)
        return float(np.trace(S) - 2 * theta_star @ m + theta_star @ theta_star)

    # How far from stationary a run of length T still is (slowest rate: lambda_min).
    lam_min = float(np.linalg.eigvalsh(ex.A).min())
    return {
        "lr": lr,
        "horizon": T,
        "lambda_min": lam_min,
        "relaxation_left": float(np.exp(-2 * lam_min * T)),
        "sgd_mc": float(spread.mean()),
        "sgd_mc_se": float(spread.std(ddof=1) / np.sqrt(len(spread))),
        "sde_mc": float(sde_spread.mean()),
        "sde_mc_se": float(sde_spread.std(ddof=1) / np.sqrt(len(sde_spread))),
        "sgd_exact": around_star(ex.stationary(ex.sgd_map(lr))),
        "sme1_exact": around_star(ex.stationary_flow(ex.generator(lr, 1))),
        "sme2_exact": around_star(ex.stationary_flow(ex.generator(lr, 2))),
        "seeds": config.stationary_seeds,
        "paths": config.stationary_seeds * 4,
    }


# ---------------------------------------------------------------------------------------
# heavy ball


HB_TH0 = np.array([1.0, -0.7])
HB_H = np.array([[1.2, 0.3], [0.3, 0.5]])


def _hb_loss(th, d):
    r = th - d["c"][0]
    return 0.5 * r @ d["H"][0] @ r + 0.1 * jnp.sum(th**4)


def heavy_ball_task(config: Config, lr: float) -> dict:
    beta, T = config.hb_beta, config.horizon
    data = {"H": jnp.asarray(HB_H)[None], "c": jnp.zeros((1, 2))}
    problem = gf.Problem(_hb_loss, data, jnp.asarray(HB_TH0))
    K = int(round(T / lr))
    hb = gf.descent(problem, optax.sgd(lr, momentum=beta), K, lr=lr)
    ts = np.asarray(hb.ts)
    start = momentum_start(_hb_loss, problem.params0, lr, data, momentum=beta)
    layer = np.asarray(momentum_layer(_hb_loss, problem.params0, lr, ts, data, momentum=beta))
    out = {"ts": ts, "hb": np.asarray(hb.flat())}
    for name, order, p0, lay in (
        ("limit", 0, start, layer),
        ("modified", 1, start, layer),
        ("modified_untreated", 1, problem.params0, 0.0),
    ):
        flow = gf.gradient_flow(
            problem.with_params0(p0),
            float(ts[-1]),
            ts=ts,
            field=modified_field(_hb_loss, lr, order, momentum=beta),
            rtol=1e-11,
            atol=1e-13,
        )
        x = np.asarray(flow.flat()) + lay
        out[name] = x
        out[f"{name}_max_error"] = float(np.linalg.norm(x - out["hb"], axis=1).max())
    return out


def _hb_numbers(config: Config, runs) -> dict:
    lrs = np.asarray(config.hb_lrs)
    names = ("limit", "modified", "modified_untreated")
    errs = {k: np.array([r[f"{k}_max_error"] for r in runs]) for k in names}
    return {
        "beta": config.hb_beta,
        "lrs": lrs,
        "max_errors": errs,
        "slopes": {k: gf.fit_order(lrs, v) for k, v in errs.items()},
        "panel": {k: runs[0][k] for k in ("ts", "hb", *names)},
        "panel_lr": float(lrs[0]),
    }


# ---------------------------------------------------------------------------------------
# the pipeline


@dataclasses.dataclass(frozen=True)
class Results:
    config: Config
    exact: dict
    mc: dict
    stationary: dict
    heavy_ball: dict
    claims: tuple[Claim, ...]

    def numbers(self) -> dict:
        return {
            "exact_weak_errors": self.exact,
            "monte_carlo": self.mc,
            "stationary": self.stationary,
            "heavy_ball": {k: v for k, v in self.heavy_ball.items() if k != "panel"},
        }


def run(config: Config, *, executor=None, progress: bool = False) -> Results:
    (exact, stationary) = run_tasks(
        apply_task, [(exact_task, config), (stationary_task, config)], executor
    )
    block = 100
    sgd_tasks = [
        (config, lr, s, min(block, config.seeds - s))
        for lr in config.mc_lrs
        for s in range(0, config.seeds, block)
    ]
    blocks = run_tasks(mc_sgd_task, sgd_tasks, executor, track=tracker(progress, "SGD seeds"))
    per_lr = len(range(0, config.seeds, block))
    sgd_samples = [
        np.concatenate(blocks[i * per_lr : (i + 1) * per_lr]) for i in range(len(config.mc_lrs))
    ]
    sde_tasks = [(config, lr, order) for lr in config.mc_lrs for order in (1, 2)]
    sde = run_tasks(mc_sde_task, sde_tasks, executor, track=tracker(progress, "SDE paths"))
    sde_samples = {
        (i, order): sde[2 * i + order - 1] for i in range(len(config.mc_lrs)) for order in (1, 2)
    }
    mc = _mc_numbers(config, sgd_samples, sde_samples)
    hb_runs = run_tasks(
        heavy_ball_task,
        [(config, lr) for lr in config.hb_lrs],
        executor,
        track=tracker(progress, "heavy ball"),
    )
    hb = _hb_numbers(config, hb_runs)
    claims = make_claims(config, exact, mc, stationary, hb)
    return Results(config, exact, mc, stationary, hb, claims)


def make_claims(config: Config, exact, mc, st, hb) -> tuple[Claim, ...]:
    w = Close(atol=config.weak_tolerance)
    h = Close(atol=config.hb_tolerance)
    claims = []
    for order in (1, 2):
        for j, name in enumerate(PHIS):
            claims.append(
                Claim(
                    f"weak_order_{order}.{j}",
                    f"SGD (with replacement) vs the order-{order} SME, φ = {name}: weak order "
                    "fitted from exact moments",
                    float(order),
                    exact["slopes"][f"sme{order}"][j],
                    w,
                )
            )
    claims.append(
        Claim(
            "gf_mean_order_1",
            "gradient flow gets the mean to order 1: fitted order of |E u^Tθ_SGD − u^Tθ_GF|",
            1.0,
            exact["slopes"]["gf"][0],
            w,
        )
    )
    claims.append(
        Claim(
            "gf_misses_variance",
            "gradient flow misses the variance entirely: relative error of tr Cov at the "
            "horizon, smallest lr",
            1.0,
            float(exact["rel_cov_error"]["gf"][-1]),
            # GF's covariance is zero up to the rounding of expm on the moment system.
            Close(atol=1e-6),
        )
    )
    claims.append(
        Claim(
            "sme1_variance",
            "the order-1 SME gets the variance to relative O(lr): fitted order of the "
            "relative error of tr Cov",
            1.0,
            exact["rel_cov_slopes"]["sme1"],
            w,
        )
    )
    z_sgd = max(float(np.max(r["sgd_z"])) for r in mc["rows"])
    z_sde = max(float(np.max(r[f"sde{o}"]["z"])) for r in mc["rows"] for o in (1, 2))
    claims.append(
        Claim(
            "mc_sgd_vs_exact",
            "library SGD Monte Carlo agrees with the exact SGD moments: largest |MC − exact| "
            "in standard errors",
            4.5,
            z_sgd,
            AtMost(),
        )
    )
    claims.append(
        Claim(
            "mc_sde_vs_exact",
            "library SDE Monte Carlo (dt = lr/8) agrees with the exact SME moments: largest "
            "|MC − exact| in standard errors (solver bias included)",
            4.5,
            z_sde,
            AtMost(),
        )
    )
    rel1 = abs(st["sme1_exact"] - st["sgd_exact"]) / st["sgd_exact"]
    rel2 = abs(st["sme2_exact"] - st["sgd_exact"]) / st["sgd_exact"]
    claims.append(
        Claim(
            "stationary_sme1",
            f"SGD's stationary spread E|θ−θ*|² at lr = {st['lr']:g} is predicted by the "
            "order-1 SME to relative O(lr): relative error (exact stationary moments)",
            0.0,
            float(rel1),
            Close(atol=0.05),
        )
    )
    claims.append(
        Claim(
            "stationary_sme2_not_better",
            "the order-2 drift does not improve the stationary spread (weak order 2 is a "
            "finite-horizon statement; for a scalar quadratic with constant noise the "
            "relative errors are lr·λ for SME-2 against lr·λ/2 for SME-1): ratio of "
            "relative errors SME-2 / SME-1",
            1.0,
            float(rel2 / rel1),
            AtLeast(),
        )
    )
    claims.append(
        Claim(
            "stationary_mc",
            "library SGD from θ*, after the horizon, has SGD's exact stationary spread: "
            "|MC − exact| in standard errors (the relaxation still left is reported)",
            4.5,
            abs(st["sgd_mc"] - st["sgd_exact"]) / st["sgd_mc_se"],
            AtMost(),
        )
    )
    claims.append(
        Claim(
            "hb_limit_order",
            f"heavy ball (β = {hb['beta']:g}) vs its limit flow −∇L/(1−β), start-up layer "
            "treated: fitted order of the max error over all steps",
            1.0,
            hb["slopes"]["limit"],
            h,
        )
    )
    claims.append(
        Claim(
            "hb_modified_order",
            "heavy ball vs the modified flow −∇L̃/(1−β), L̃ = L + lr(1+β)/(4(1−β)²)|∇L|², "
            "start-up layer treated: fitted order of the max error over all steps",
            2.0,
            hb["slopes"]["modified"],
            h,
        )
    )
    claims.append(
        Claim(
            "hb_untreated_order",
            "the same modified flow from θ0 with no start-up treatment: fitted order",
            1.0,
            hb["slopes"]["modified_untreated"],
            h,
        )
    )
    return tuple(claims)


# ---------------------------------------------------------------------------------------
# figures and report (from the results alone)


def _weak_figure(out, exact, mc) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    lrs = exact["lrs"]
    labels = {"sme1": "SME order 1", "sme2": "SME order 2", "gf": "gradient flow"}
    for j, ax in enumerate(axes):
        for i, (k, lab) in enumerate(labels.items()):
            e = exact["errors"][k][:, j]
            ax.loglog(
                lrs,
                e,
                "o-",
                color=f"C{i}",
                label=f"{lab} (exact), slope {exact['slopes'][k][j]:.2f}",
            )
        for o in (1, 2):
            x = [r["lr"] for r in mc["rows"]]
            y = [r[f"sde{o}"]["weak_error_mc"][j] for r in mc["rows"]]
            yerr = [3 * r[f"sde{o}"]["weak_error_se"][j] for r in mc["rows"]]
            ax.errorbar(
                x,
                y,
                yerr=yerr,
                fmt="s",
                ms=4,
                color=f"C{o - 1}",
                alpha=0.6,
                label=f"SME {o}, Monte Carlo (±3 s.e.)",
            )
        ax.set(xlabel="lr", ylabel=f"|E φ(θ_K) − E φ(X(T))|, φ = {PHIS[j]}")
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle("SGD with replacement vs its continuous models at T = 1 (least squares)")
    fig.tight_layout()
    return savefig(fig, out, "weak_error.png")


def _hb_figure(out, hb) -> str:
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    p = hb["panel"]
    ts = p["ts"]
    every = max(1, len(ts) // 40)
    ax0.plot(ts[::every], p["hb"][::every, 0], "ko", ms=3, label="heavy ball θ_k[0]")
    ax0.plot(ts, p["limit"][:, 0], color="C0", label="limit flow (+ layer)")
    ax0.plot(ts, p["modified"][:, 0], "--", color="C1", label="modified flow (+ layer)")
    ax0.plot(ts, p["modified_untreated"][:, 0], ":", color="C2", label="modified, from θ0")
    ax0.set(xlabel="t = k·lr", ylabel="θ[0]", title=f"β = {hb['beta']:g}, lr = {hb['panel_lr']:g}")
    ax0.legend(frameon=False, fontsize=8)
    for i, k in enumerate(("limit", "modified", "modified_untreated")):
        ax1.loglog(
            hb["lrs"],
            hb["max_errors"][k],
            "o-",
            color=f"C{i}",
            label=f"{k}: slope {hb['slopes'][k]:.2f}",
        )
    ax1.set(xlabel="lr", ylabel="max_k |θ_k − flow(k·lr)|", title="errors over every step")
    ax1.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return savefig(fig, out, "heavy_ball.png")


def figures(results: Results, out) -> list[str]:
    return [_weak_figure(out, results.exact, results.mc), _hb_figure(out, results.heavy_ball)]


def report(results: Results) -> str:
    ex, mc, st, hb = results.exact, results.mc, results.stationary, results.heavy_ball
    rows = [[k, *[f"{s:.2f}" for s in ex["slopes"][k]]] for k in ("sme1", "sme2", "gf")]
    mc_rows = []
    for r in mc["rows"]:
        for o in (1, 2):
            d = r[f"sde{o}"]
            for j, name in enumerate(PHIS):
                mc_rows.append(
                    [
                        r["lr"],
                        o,
                        name,
                        float(d["weak_error_exact"][j]),
                        float(d["weak_error_mc"][j]),
                        float(d["weak_error_se"][j]),
                        "yes" if d["resolved"][j] else "no",
                    ]
                )
    fitted = {
        k: ("not fitted (MC error too large)" if v is None else f"{v:.2f}")
        for k, v in mc["fitted_orders_mc"].items()
    }
    return "\n\n".join(
        [
            claims_table(results.claims),
            "### Weak error",
            f"Least squares, n = {N}, b = {B}, sampling with replacement, θ0 = {TH0.tolist()}, "
            f"horizon T = {results.config.horizon:g}. Fitted orders from exact moments "
            "(columns φ = " + ", ".join(PHIS) + "):",
            md_table(["model", *PHIS], rows),
            f"Monte Carlo ({mc['seeds']} SGD seeds by `gf.sgd`, {mc['paths']} SDE paths by "
            "`gf.sgd_sde` at dt = lr/8), weak error against SGD, and whether it exceeds three "
            "standard errors:",
            md_table(
                ["lr", "order", "φ", "exact", "Monte Carlo", "s.e.", "resolved"],
                mc_rows,
                fmt="{:.3g}",
            ),
            "Orders fitted from Monte Carlo (only where every point is resolved): "
            + ", ".join(f"{k}: {v}" for k, v in fitted.items())
            + ".",
            "### Stationary spread",
            f"From θ*, lr = {st['lr']:g}, after T = {st['horizon']:g} (relaxation left "
            f"e^(−2λ_min T) = {st['relaxation_left']:.1e}): SGD Monte Carlo "
            f"{st['sgd_mc']:.4g} ± {st['sgd_mc_se']:.2g} ({st['seeds']} seeds), SDE order 2 Monte "
            f"Carlo {st['sde_mc']:.4g} ± {st['sde_mc_se']:.2g} ({st['paths']} paths); exact "
            f"stationary values: SGD {st['sgd_exact']:.4g}, SME-1 {st['sme1_exact']:.4g}, SME-2 "
            f"{st['sme2_exact']:.4g}.",
            "### Heavy ball",
            f"β = {hb['beta']:g}, max error over every step 0..K at T = {results.config.horizon:g}:",
            md_table(
                ["flow", *[f"lr={h:g}" for h in hb["lrs"]], "slope"],
                [
                    [k, *[float(e) for e in v], f"{hb['slopes'][k]:.2f}"]
                    for k, v in hb["max_errors"].items()
                ],
                fmt="{:.3g}",
            ),
        ]
    )


EXPERIMENT = Experiment(
    name="sgd-sde",
    title="SGD's noise and heavy ball's momentum: their continuous models, checked",
    source="beyond the texts (Li, Tai & E 2017/2019; backward error analysis of heavy ball)",
    summary=(
        "Fits the weak orders of the stochastic modified equations of SGD with replacement "
        "from exact moments on least squares, checks the library's Monte Carlo (SGD seeds, "
        "SDE paths) against them, compares SGD's stationary spread with the SME's, and fits "
        "the orders of heavy ball's limit and modified flows with the start-up layer treated."
    ),
    config=config,
    run=run,
    figures=figures,
    report=report,
    seconds={"quick": 23.0, "default": 44.0, "full": 222.0},  # 2026-12-04, for ordering only
)
