"""Cost of the splitting optimiser with exact local flows against SGD.

The splitting text's random linear system: least squares 10000 × 500, batch size b = 20
(m = 500 batches), RoundRobin (and Reshuffle, where the factors are recomputed every
epoch), float64. Seconds per epoch (compiled run, compilation
excluded, best of three after a warm-up) of ``gf.split(local=gf.Exact())`` (Lie–Trotter
and Strang) beside ``gf.sgd`` and ``gf.split(local=gf.Euler())``, in the same process,
plus the one-off factorisation of every batch (default ``reduction="gram"``: 20×20 Gram
matrix and its eigendecomposition; ``"qr"``, the text's reduction: thin QR, 20×20
eigendecomposition and the 500×20 basis ``QV``).
Target: an Exact epoch costs at most 2× an SGD epoch once factorised (both are two
``p × b`` matrix–vector products per batch).

Run: .venv/bin/python benchmarks/split_cost.py [epochs]
"""

import platform
import sys

import jax

jax.config.update("jax_enable_x64", True)

import gdflow as gf  # noqa: E402


def best_of(run, repeats=3):
    """Run once to compile (warm-up), then ``repeats`` times: the fastest run and the
    fastest factorisation (each timed apart from compilation)."""
    run()
    stats = [run().stats for _ in range(repeats)]
    setup = [s["setup_seconds"] for s in stats if "setup_seconds" in s]
    return {"seconds": min(s["seconds"] for s in stats), "setup_seconds": min(setup, default=None)}


def main(epochs: int = 10):
    problem = gf.problems.random_least_squares(10_000, 500, noise=0.0, key=jax.random.key(0))
    batching = gf.RoundRobin(20)
    shuffle = gf.Reshuffle(20, jax.random.key(1))
    m = batching.num_batches(problem.n)
    lr = 1e-3
    runs = {
        "sgd": lambda: gf.sgd(problem, lr, epochs, batching, save_every=epochs * m),
        "split Euler (= SGD)": lambda: gf.split(
            problem, lr, epochs, batching, local=gf.Euler(), save_every=epochs
        ),
        "split Exact, Lie-Trotter": lambda: gf.split(
            problem, lr, epochs, batching, save_every=epochs
        ),
        "split Exact, Strang": lambda: gf.split(
            problem, lr, epochs, batching, scheme="strang", save_every=epochs
        ),
        "split Exact(qr), L-T": lambda: gf.split(
            problem, lr, epochs, batching, local=gf.Exact("qr"), save_every=epochs
        ),
        # A new partition every epoch: factors recomputed inside every epoch.
        "split Exact, Reshuffle": lambda: gf.split(
            problem, lr, epochs, shuffle, save_every=epochs
        ),
        "sgd, Reshuffle": lambda: gf.sgd(problem, lr, epochs, shuffle, save_every=epochs * m),
    }
    stats = {name: best_of(run) for name, run in runs.items()}
    base = stats["sgd"]["seconds"] / epochs

    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"jax {jax.__version__}, devices {jax.devices()}"
    )
    print(f"least squares 10000 x 500, b = 20 (m = {m}), {epochs} epochs, best of 3\n")
    print(
        f"{'method':26s} {'s/epoch':>9s} {'/ SGD':>7s} {'factorise s':>12s} {'/ SGD epoch':>12s}"
    )
    for name, s in stats.items():
        per = s["seconds"] / epochs
        setup = s.get("setup_seconds")
        setup_txt = f"{setup:12.3f} {setup / base:12.1f}" if setup else f"{'-':>12s} {'-':>12s}"
        print(f"{name:26s} {per:9.4f} {per / base:7.2f} {setup_txt}")
    ratio = stats["split Exact, Lie-Trotter"]["seconds"] / stats["sgd"]["seconds"]
    print(f"\nExact (Lie-Trotter) epoch / SGD epoch = {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
