"""Cost per path of `gf.sgd_sde` (paths under vmap) against running as many SGD seeds.

Target (issue 13): SDE paths under `vmap` at no more than 2x the cost per path of running
the same number of SGD seeds. Two SGD baselines, both sampling with replacement, saving
only the start and the end (as the SDE runs here, `ts=[0, t1]`):

* `gf.sgd` in a loop over seeds (what a user of the library runs; compiled once, the
  per-call overhead included);
* the same SGD written as one jitted `lax.scan`, `vmap`ped over seeds (the fastest way to
  run S seeds on this machine: the strict baseline).

Rounds are interleaved (SDE, vmapped SGD, SGD loop, then again), compilation excluded
(each function is run once before the first round); the table gives the median ratio of
seconds per path over the rounds and its range (min-max). Problems: random linear least
squares (n x p, noise 0.1) and a tanh MLP on 256 digits (64-16-10, softmax
cross-entropy), lr = 0.01, t1 = 1 (100 SGD steps), order 1 (Euler, dt = lr, 100 steps)
and order 2 (Heun on the Stratonovich form, dt = lr).

Run: .venv/bin/python benchmarks/sde_cost.py [--rounds 5] [--paths 256]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import gdflow as gf  # noqa: E402
from gdflow._sde import sgd_sde  # noqa: E402


def _vmapped_sgd(problem, b, lr, steps):
    n = problem.n

    @jax.jit
    def run(params0, data, keys):
        def one(key):
            def step(th, k):
                idx = jax.random.randint(k, (b,), 0, n)
                batch = jax.tree_util.tree_map(lambda x: x[idx], data)
                g = jax.grad(problem.loss)(th, batch)
                return jax.tree_util.tree_map(lambda p, q: p - lr * q, th, g), None

            th, _ = jax.lax.scan(step, params0, jax.random.split(key, steps))
            return th

        return jax.vmap(one)(keys)

    return run


HEADER = (
    "\n| problem | SGD vmap s/path | SGD loop s/path | SDE o1 s/path | o1 / vmap | "
    "o1 / loop | SDE o2 s/path | o2 / vmap | o2 / loop |\n|---|---|---|---|---|---|---|---|---|"
)


def _ratio(a, b):
    r = a / b
    return f"{np.median(r):.2f} ({r.min():.2f}-{r.max():.2f})"


def _print_row(name, p):
    print(
        f"| {name} | {np.median(p['vmap']):.2e} | {np.median(p['loop']):.2e} | "
        f"{np.median(p['sde1']):.2e} | {_ratio(p['sde1'], p['vmap'])} | "
        f"{_ratio(p['sde1'], p['loop'])} | {np.median(p['sde2']):.2e} | "
        f"{_ratio(p['sde2'], p['vmap'])} | {_ratio(p['sde2'], p['loop'])} |",
        flush=True,
    )


def _problems():
    key = jax.random.key(0)
    out = []
    for n, p in ((64, 10), (512, 50)):
        prob = gf.problems.random_least_squares(n, p, noise=0.1, key=key)
        out.append((f"least squares {n}x{p}, b=8", prob, 8))
    X, y = gf.datasets.digits()
    X, y = X[:256], y[:256]
    mlp = gf.problems.mlp(X, y, widths=(16,), activation="tanh", key=key)
    out.append(("tanh MLP 64-16-10, 256 digits, b=16", mlp, 16))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--paths", type=int, default=128)
    ap.add_argument("--loop-seeds", type=int, default=32)
    args = ap.parse_args()
    lr, t1, S = 0.01, 1.0, args.paths
    steps = int(round(t1 / lr))
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, jax "
        f"{jax.__version__}, devices {jax.devices()}; paths = seeds = {S} "
        f"(gf.sgd loop: {args.loop_seeds} seeds, per seed), {args.rounds} interleaved rounds"
    )
    print(HEADER)  # a row prints as each problem finishes
    rows = []
    for name, problem, b in _problems():
        n = problem.n
        m = n // b
        epochs = steps // m
        K = epochs * m  # SGD steps actually run by gf.sgd (whole epochs)
        fast = _vmapped_sgd(problem, b, lr, steps)
        keys = jax.random.split(jax.random.key(1), S)
        jax.block_until_ready(fast(problem.params0, problem.data, keys))  # compile

        def sde(order, r):
            sol = sgd_sde(
                problem,
                lr,
                t1,
                gf.Replacement(b, jax.random.key(2)),
                order=order,
                key=jax.random.key(10 + r),
                paths=S,
                ts=[0.0, t1],
            )
            return sol.seconds / S

        def vm():
            t = time.perf_counter()
            jax.block_until_ready(fast(problem.params0, problem.data, keys))
            return (time.perf_counter() - t) / S

        def loop(r):
            t = time.perf_counter()
            for s in range(args.loop_seeds):
                gf.sgd(
                    problem,
                    lr,
                    epochs,
                    gf.Replacement(b, jax.random.key(1000 * r + s)),
                    save_every=K,
                )
            return (time.perf_counter() - t) / args.loop_seeds / K * steps

        sde(1, -1), sde(2, -1), loop(-1)  # warm-up (compiles)
        per = {"sde1": [], "sde2": [], "vmap": [], "loop": []}
        for r in range(args.rounds):
            per["sde1"].append(sde(1, r))
            per["vmap"].append(vm())
            per["loop"].append(loop(r))
            per["sde2"].append(sde(2, r))
        rows.append((name, {k: np.array(v) for k, v in per.items()}))
        _print_row(*rows[-1])

    verdicts = []
    for name, p in rows:
        for order in (1, 2):
            for base in ("vmap", "loop"):
                med = float(np.median(p[f"sde{order}"] / p[base]))
                verdicts.append((name, order, base, med, med <= 2.0))
    print("\nTarget: median ratio <= 2 (rule: median over rounds of per-path seconds ratio).")
    for name, order, base, med, ok in verdicts:
        print(f"  {name}, order {order} vs SGD {base}: {med:.2f} -> {'met' if ok else 'not met'}")


if __name__ == "__main__":
    main()
