"""Wall time of a sweep in-process, on 1 Dask worker and on 2, and the Dask path's
per-task overhead.

The grid is shaped like the splitting experiment's default: its 14 step sizes on random
least squares 10000 × 500, b = 20 (RoundRobin), for SGD (`gf.sgd`) and the splitting
optimiser (`gf.split`, exact local solver): 28 independent tasks, each a fixed number of
epochs (sized so that one task takes about 1-3 s here), float64.

- Wall time: the whole grid through `gf.sweep` with the in-process default, a 1-worker
  and a 2-worker `LocalCluster` (spawned processes, one thread each), in interleaved
  rounds (in-process, 1 worker, 2 workers, then again), after a warm-up task in every
  process (compilation excluded; cluster start-up reported apart).
- Per-task overhead: tasks sent one at a time to the 1-worker cluster; the round trip as
  the client sees it minus the task's own time measured inside the worker.

Targets: 2 workers ≤ 0.6× the in-process wall time; overhead ≤ 5% of the median task time.
Other work may share the cores: the load average is printed beside every round, and the
ratios are taken within a round, then their median.

Run: .venv/bin/python benchmarks/sweep_scaling.py [--rounds 2] [--epochs E]
"""

import argparse
import functools
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

import gdflow as gf

LRS = [1e-3, 1e-2, 2e-2, 4e-2, 5e-2, 6.3e-2, 8e-2, 0.1, 1.0, 4.4, 1e2, 1e4, 1e6, 1e8]
N, P, B = 10_000, 500, 20


@functools.lru_cache(maxsize=1)
def _problem():
    return gf.problems.random_least_squares(N, P, noise=0.0, key=jax.random.key(0))


def task(point):
    """One grid point: `epochs` epochs of SGD or splitting from a seeded start."""
    problem = _problem()
    rng = np.random.default_rng(1000 + point["seed"])
    problem = problem.with_params0(jax.numpy.asarray(rng.standard_normal(P)))
    E, lr = point["epochs"], point["lr"]
    if point["method"] == "sgd":
        tr = gf.sgd(
            problem, lr, E, gf.RoundRobin(B), save_every=E * (N // B), on_divergence="ignore"
        )
    else:
        tr = gf.split(problem, lr, E, gf.RoundRobin(B), local=gf.Exact(), save_every=E,
                      on_divergence="ignore")  # fmt: skip
    return {"loss": float(tr.loss[-1])}


def warm(points):
    """Compile in this process (every worker and the client) before anything is timed:
    one task per method at the grid's epoch counts (the number of steps is static)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    for p in points:
        task(p)
    return os.getpid()


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per task (default: sized)")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    # Tasks pickle by reference to this file as a module, which the spawned workers import
    # (they inherit sys.path); functions of __main__ would be pickled by value.
    import sweep_scaling as me

    from gdflow import local_cluster, sweep

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"JAX {jax.__version__} ({jax.devices()[0].platform}), float64; load {load()}"
    )
    epochs = {}
    for method in ("sgd", "split"):  # size each method's task to about 1.5 s
        p = {"method": method, "lr": 0.01, "seed": 0, "epochs": 20}
        me.task(p)  # compile
        t0 = time.perf_counter()
        me.task(p)
        per_epoch = (time.perf_counter() - t0) / 20
        epochs[method] = args.epochs or max(1, round(1.5 / per_epoch))
    grid = [{"method": m, "lr": lr, "seed": 0, "epochs": epochs[m]} for m in epochs for lr in LRS]
    warmup = [dict(grid[0], method=m, epochs=epochs[m]) for m in epochs]
    me.warm(warmup)
    print(
        f"grid: 2 methods x {len(LRS)} step sizes = {len(grid)} tasks; epochs per task: "
        f"{epochs} (random least squares {N}x{P}, b={B})"
    )

    clients, startup = {}, {}
    try:
        for w in (1, 2):
            t0 = time.perf_counter()
            c = local_cluster(w, x64=True, timeout=180)
            c.wait_for_workers(w, timeout=180)
            startup[w] = time.perf_counter() - t0
            t0 = time.perf_counter()
            c.run(me.warm, warmup)
            startup[w] = (startup[w], time.perf_counter() - t0)
            clients[w] = c
        for w, (s, comp) in startup.items():
            print(f"{w}-worker cluster: start {s:.1f} s, warm-up (import + compile) {comp:.1f} s")

        walls = {"in-process": [], "1 worker": [], "2 workers": []}
        inside = []
        for r in range(args.rounds):
            for label, ex in (("in-process", None), ("1 worker", clients[1]),
                              ("2 workers", clients[2])):  # fmt: skip
                l0 = load()
                t0 = time.perf_counter()
                res = sweep(me.task, grid, executor=ex, progress=False)
                wall = time.perf_counter() - t0
                res.unwrap()
                walls[label].append(wall)
                if label == "in-process":
                    inside.extend(res.seconds)
                print(
                    f"round {r + 1} {label:>10}: {wall:6.1f} s  (sum of task times "
                    f"{sum(res.seconds):.1f} s; load before {l0}, after {load()})"
                )

        # Per-task overhead: one task at a time on the 1-worker cluster.
        pts = [p for p in grid if p["lr"] <= 0.05]
        trips, worker_t = [], []
        for p in pts:
            t0 = time.perf_counter()
            res = sweep(me.task, [p], executor=clients[1], progress=False)
            trips.append(time.perf_counter() - t0)
            worker_t.append(res.seconds[0])
        over = [a - b for a, b in zip(trips, worker_t)]
    finally:
        for c in clients.values():
            c.close()

    med_task = statistics.median(inside)
    print()
    # Ratios are taken within a round (the load drifts between rounds), then the median.
    print("| path | wall s: median (min-max) of rounds | × in-process, per round | median × |")
    print("|---|---|---|---|")
    ratios = {}
    for label, ws in walls.items():
        ratios[label] = [w / b for w, b in zip(ws, walls["in-process"])]
        per = ", ".join(f"{r:.2f}" for r in ratios[label])
        print(
            f"| {label} | {statistics.median(ws):.1f} ({min(ws):.1f}-{max(ws):.1f}) | {per} | "
            f"{statistics.median(ratios[label]):.2f} |"
        )
    mo = statistics.median(over)
    print()
    print(
        f"median task time (in-process): {med_task:.3f} s; Dask round trip minus in-worker time: "
        f"median {1e3 * mo:.1f} ms (min {1e3 * min(over):.1f}, max {1e3 * max(over):.1f}) over "
        f"{len(over)} tasks = {100 * mo / med_task:.2f}% of the median task time"
    )
    r2 = statistics.median(ratios["2 workers"])
    print(
        f"target 2 workers <= 0.6x in-process: {'met' if r2 <= 0.6 else 'not met'} ({r2:.2f}x); "
        f"target overhead <= 5%: {'met' if mo / med_task <= 0.05 else 'not met'} "
        f"({100 * mo / med_task:.2f}%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
