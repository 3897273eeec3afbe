"""Throughput of gdflow's discrete runs against a bare jitted `lax.scan` loop and PyTorch.

Time per optimiser step of `gf.gd`, `gf.sgd` (`RoundRobin` batches) and
`gf.descent(problem, optax.adam(1e-3), steps)`, against

- a bare jitted `lax.scan` loop written here with the same arithmetic (the batch
  `value_and_grad` of the problem's own loss, then the update; Adam written out as optax
  computes it), data, initial parameters and step size passed as arguments (arrays
  captured in a closure would be constant-folded at compile time);
- a plain PyTorch eager loop (`torch.optim.SGD` / `torch.optim.Adam`, float64) when
  torch is importable (the optional `bench` extra); the column is skipped otherwise.

Problems (tanh, float64, bias-free, cross-entropy, all 1797 digits; SGD uses the first
1792 = 28 x 64 in `RoundRobin(64)` batches):

- `mlp 64-128-128-10` (25,856 parameters), the digits MLP of `gf_cost.py`;
- `mlp 64-32-10` (2,368 parameters).

Timing: gdflow's own `traj.stats["seconds"]` (the compiled run, compilation excluded);
the bare loop is compiled once and its executable timed; torch is timed after warm-up
steps. Each round runs every (problem, method, implementation) once, implementations
interleaved, so that load from other work on the machine falls on all of them alike;
the table gives the median over rounds with the spread (min-max). A ratio is taken
within a round and then summarised the same way. Each run's final parameters are
compared with the bare loop's (relative 2-norm difference): a check that the three
implementations compute the same thing.

Target: gdflow within 1.1x of the bare scan on both problems (gdflow / bare <= 1.1, the
median, on every row) and at least 1.5x faster per step than torch eager
(torch / gdflow >= 1.5 on every row).

Run: .venv/bin/python benchmarks/gd_throughput.py [--rounds 5] [--label before]
The output is Markdown, ready to paste into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gdflow as gf  # noqa: E402

try:  # the torch column is optional (extra `bench`)
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

LR_SGD = 0.05  # GD and SGD step size
LR_ADAM = 1e-3  # as the issue asks: optax.adam(1e-3)
BATCH = 64
B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.adam's and torch.optim.Adam's defaults

# Steps per timed run, chosen so that one run takes about half a second here.
STEPS = {
    "mlp 64-128-128-10": {"gd": 100, "sgd": 20 * 28, "adam": 100},
    "mlp 64-32-10": {"gd": 1000, "sgd": 50 * 28, "adam": 1000},
}
WIDTHS = {"mlp 64-128-128-10": (128, 128), "mlp 64-32-10": (32,)}


# ---------------------------------------------------------------- bare lax.scan loops


def _batch(data, k, m, b):
    start = (k % m) * b
    return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, b), data)


def bare_loop(loss, method: str, steps: int, m: int, b: int):
    """A jitted `lax.scan` over `steps` steps; returns (params, last loss)."""

    def run(params, data, lr):
        if method == "adam":
            zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
            state0 = (jnp.zeros((), jnp.int32), zeros, zeros)
        else:
            state0 = ()

        def body(carry, k):
            params, state = carry
            batch = _batch(data, k, m, b) if method == "sgd" else data
            value, grads = jax.value_and_grad(loss)(params, batch)
            if method == "adam":
                count, mu, nu = state
                count = count + 1
                mu = jax.tree_util.tree_map(lambda m_, g: B1 * m_ + (1 - B1) * g, mu, grads)
                nu = jax.tree_util.tree_map(lambda v, g: B2 * v + (1 - B2) * g * g, nu, grads)
                c1 = 1 - B1 ** count.astype(lr.dtype)
                c2 = 1 - B2 ** count.astype(lr.dtype)
                params = jax.tree_util.tree_map(
                    lambda p, m_, v: p - lr * (m_ / c1) / (jnp.sqrt(v / c2) + EPS),
                    params,
                    mu,
                    nu,
                )
                state = (count, mu, nu)
            else:
                params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
            return (params, state), value

        (params, _), values = jax.lax.scan(body, (params, state0), jnp.arange(steps))
        return params, values[-1]

    return jax.jit(run)


# ---------------------------------------------------------------- torch eager loop


def torch_run(params0, X, Y, method: str, steps: int, m: int, b: int, lr: float):
    Ws = [torch.tensor(np.asarray(W), requires_grad=True) for W in params0]
    Xt, Yt = torch.tensor(np.asarray(X)), torch.tensor(np.asarray(Y))
    if method == "adam":
        opt = torch.optim.Adam(Ws, lr=lr, betas=(B1, B2), eps=EPS)
    else:
        opt = torch.optim.SGD(Ws, lr=lr)

    def step(k):
        if method == "sgd":
            s = (k % m) * b
            xb, yb = Xt[s : s + b], Yt[s : s + b]
        else:
            xb, yb = Xt, Yt
        h = xb
        for i, W in enumerate(Ws):
            h = h @ W
            if i < len(Ws) - 1:
                h = torch.tanh(h)
        loss = (torch.logsumexp(h, dim=-1) - (yb * h).sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Ws, step


# ---------------------------------------------------------------- one round


def make_problems():
    X, y = gf.datasets.digits()
    out = {}
    for name, widths in WIDTHS.items():
        full = gf.problems.mlp(X, y, widths=widths, activation="tanh", key=jax.random.key(0))
        # SGD on the first 28 * 64 = 1792 examples, the same rows for all three.
        n_sgd = (full.n // BATCH) * BATCH
        sub = gf.Problem(
            full.loss, jax.tree_util.tree_map(lambda x: x[:n_sgd], full.data), full.params0
        )
        out[name] = {"full": full, "sgd": sub}
    return out


def flat(params):
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


def rel_diff(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def gdflow_run(problem, method, steps, m):
    if method == "gd":
        traj = gf.gd(problem, LR_SGD, steps, save_every=steps)
    elif method == "sgd":
        traj = gf.sgd(problem, LR_SGD, steps // m, gf.RoundRobin(BATCH), save_every=steps)
    else:
        traj = gf.descent(problem, optax.adam(LR_ADAM), steps, save_every=steps)
    assert traj.stats["grad_evals"] == steps, traj.stats
    final = jax.tree_util.tree_map(lambda x: x[-1], traj.params)
    return traj.stats["seconds"], flat(final)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--label", default="", help="a label for the header (before/after)")
    args = ap.parse_args()

    problems = make_problems()
    methods = ("gd", "sgd", "adam")
    impls = ("gdflow", "bare") + (("torch",) if torch is not None else ())
    compiled = {}
    for name, ps in problems.items():
        for method in methods:
            p = ps["full"] if method != "sgd" else ps["sgd"]
            steps = STEPS[name][method]
            m = p.n // BATCH
            lr = jnp.asarray(LR_ADAM if method == "adam" else LR_SGD)
            fn = bare_loop(p.loss, method, steps, m, BATCH)
            compiled[name, method] = (fn.lower(p.params0, p.data, lr).compile(), lr)

    times = {}  # (name, method, impl) -> [seconds per step per round]
    finals = {}  # (name, method, impl) -> last round's final params (flat)
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    for r in range(args.rounds + 1):  # round 0 warms up (gdflow compiles, torch allocs)
        print(f"round {r}/{args.rounds} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
        for name, ps in problems.items():
            for method in methods:
                p = ps["full"] if method != "sgd" else ps["sgd"]
                steps = STEPS[name][method]
                m = p.n // BATCH
                # Rotate the order of the implementations from round to round.
                order = impls[r % len(impls) :] + impls[: r % len(impls)]
                for impl in order:
                    if impl == "gdflow":
                        sec, fin = gdflow_run(p, method, steps, m)
                    elif impl == "bare":
                        exe, lr = compiled[name, method]
                        t0 = time.perf_counter()
                        out = exe(p.params0, p.data, lr)
                        jax.block_until_ready(out)
                        sec = time.perf_counter() - t0
                        fin = flat(out[0])
                    else:
                        lr = LR_ADAM if method == "adam" else LR_SGD
                        Ws, step = torch_run(
                            p.params0, p.data["X"], p.data["Y"], method, steps, m, BATCH, lr
                        )
                        t0 = time.perf_counter()
                        for k in range(steps):
                            step(k)
                        sec = time.perf_counter() - t0
                        fin = np.concatenate([W.detach().numpy().ravel() for W in Ws])
                    if r > 0:
                        times.setdefault((name, method, impl), []).append(sec / steps)
                    finals[name, method, impl] = fin
    wall = time.perf_counter() - t_start
    load1 = os.getloadavg()[0]

    def summary(xs, fmt):
        return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"

    ms = lambda x: f"{1e3 * x:.3f}"  # noqa: E731
    rat = lambda x: f"{x:.2f}"  # noqa: E731

    gd_dir = os.path.dirname(os.path.dirname(os.path.abspath(gf.__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", gd_dir, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", gd_dir, "status", "--porcelain", "--", "gdflow"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        rev = f"{commit}{' + uncommitted changes in gdflow/' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"

    print(f"### gd_throughput {args.label}".rstrip())
    print()
    print(
        f"Measured {datetime.date.today().isoformat()}: gdflow from `{gf.__file__}` "
        f"(git {rev}); JAX {jax.__version__}, optax {optax.__version__}, "
        + (
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
            if torch
            else "no torch"
        )
        + f"; {platform.machine()}, {os.cpu_count()} CPUs, float64. "
        f"{args.rounds} interleaved rounds after a warm-up round ({wall:.0f} s); "
        f"1-minute load average {load0:.2f} at the start, {load1:.2f} at the end."
    )
    print()
    print("ms per step: median (min–max) over rounds; ratios taken within a round.")
    print()
    head = "| problem | method | steps | gdflow ms | bare scan ms |"
    sep = "|---|---|---|---|---|"
    if torch is not None:
        head += " torch ms |"
        sep += "---|"
    head += " gdflow / bare |"
    sep += "---|"
    if torch is not None:
        head += " torch / gdflow |"
        sep += "---|"
    head += " rel. diff. of θ_K vs bare (gdflow; torch) |"
    sep += "---|"
    print(head)
    print(sep)
    label = {"gd": "`gf.gd`", "sgd": "`gf.sgd` RoundRobin(64)", "adam": "`gf.descent` adam(1e-3)"}
    worst_bare, worst_torch = 0.0, np.inf
    for name in problems:
        for method in methods:
            g = times[name, method, "gdflow"]
            b = times[name, method, "bare"]
            row = f"| {name} | {label[method]} | {STEPS[name][method]} | "
            row += f"{summary(g, ms)} | {summary(b, ms)} |"
            r_gb = [x / y for x, y in zip(g, b)]
            worst_bare = max(worst_bare, statistics.median(r_gb))
            if torch is not None:
                t = times[name, method, "torch"]
                row += f" {summary(t, ms)} |"
            row += f" {summary(r_gb, rat)} |"
            diffs = f"{rel_diff(finals[name, method, 'gdflow'], finals[name, method, 'bare']):.1e}"
            if torch is not None:
                r_tg = [x / y for x, y in zip(t, g)]
                worst_torch = min(worst_torch, statistics.median(r_tg))
                row += f" {summary(r_tg, rat)} |"
                diffs += f"; {rel_diff(finals[name, method, 'torch'], finals[name, method, 'bare']):.1e}"
            row += f" {diffs} |"
            print(row)
    print()
    verdict = "met" if worst_bare <= 1.1 else "not met"
    print(
        f"Target gdflow / bare ≤ 1.1 on every row (median): **{verdict}**, "
        f"largest median {worst_bare:.2f}."
    )
    if torch is not None:
        verdict = "met" if worst_torch >= 1.5 else "not met"
        print(
            f"Target torch / gdflow ≥ 1.5 on every row (median): **{verdict}**, "
            f"smallest median {worst_torch:.2f}."
        )
    else:
        print("torch is not importable: the torch column and its target were skipped.")


if __name__ == "__main__":
    main()
