"""Cost of the splitting experiment's measurement protocol against the optimiser runs it needs.

`gdflow.protocol.measure` finds the batch steps and seconds to a target. Its cost is
compared here with the optimiser work it measures: one plain call of `gf.sgd` (or
`gf.split`) from the same start over the whole epochs to the target, saving only its end
point. Both in the same process, warm (a first measurement at another seed compiles
every call first), wall-clock seconds.

Problem: the splitting text's tomography (AIR Tools II paralleltomo, N=50 by default:
12780 × 2500, b = 60, m = 213 batches), relative error 1e-3 to θ* = lsqr(A, b), SGD at
`lr` (default 1.0). Target of the protocol's design: at most 2× the optimiser run.

Run: .venv/bin/python benchmarks/protocol_cost.py [N] [lr] [method] [seg_epochs] [max_epochs]
"""

import math
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.sparse.linalg import lsqr  # noqa: E402

import gdflow as gf  # noqa: E402
from gdflow import protocol  # noqa: E402


def main():
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    lr = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    method = sys.argv[3] if len(sys.argv) > 3 else "sgd"
    seg = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    tomo = gf.problems.tomography(N=N)
    theta_star = lsqr(tomo.A, tomo.b, atol=1e-14, btol=1e-14, iter_lim=100_000)[0]
    X, y = np.asarray(tomo.problem.data["X"]), np.asarray(tomo.problem.data["y"])
    b = 60
    m = len(y) // b

    def start(seed):
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(y))
        p0 = jnp.asarray(0.1 * rng.standard_normal(X.shape[1]))
        return gf.problems.least_squares(X[perm], y[perm], params0=p0)

    kw = dict(
        batch_size=b,
        error=protocol.relative_error(theta_star),
        target=1e-3,
        local=gf.Exact(),
        max_epochs=int(sys.argv[5]) if len(sys.argv) > 5 else 2000,
        seg_epochs=seg,
        best_of=3,
    )
    protocol.measure(method, start(1), lr, **kw)  # warm-up: compiles every call
    problem = start(0)
    t = time.perf_counter()
    rec = protocol.measure(method, problem, lr, **kw)
    wall = time.perf_counter() - t
    # the optimiser run the measurement needs: to the target, or the whole budget
    E = kw["max_epochs"] if rec.steps is None else max(1, math.ceil(rec.steps / m))

    def plain():
        if method == "sgd":
            return gf.sgd(problem, lr, E, gf.RoundRobin(b), save_every=E * m)
        return gf.split(problem, lr, E, gf.RoundRobin(b), local=gf.Exact(), save_every=E)

    plain()  # compile this length
    t = time.perf_counter()
    plain()
    run = time.perf_counter() - t
    print(f"tomography N={N} ({len(y)}×{X.shape[1]}), b={b}, m={m}, {method}, lr={lr:g}")
    if rec.steps is None:
        print(f"target not reached in {E} epochs (diverged={rec.diverged})")
    else:
        print(f"steps to target       {rec.steps} ({rec.epochs:.2f} epochs)")
    print(f"protocol wall         {wall:.2f} s  (epochs run {rec.epochs_run:.0f})")
    print(f"optimiser run to it   {run:.2f} s  ({E} epochs, one call)")
    print(f"ratio                 {wall / run:.2f}  (target <= 2)")
    if rec.seconds is not None:
        print(f"seconds to target     {rec.seconds:.3f} s (protocol's estimate)")


if __name__ == "__main__":
    main()
