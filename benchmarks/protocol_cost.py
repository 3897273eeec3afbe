"""Cost of the splitting experiment's measurement protocol against the optimiser runs it needs.

`gdflow.protocol.measure` finds the batch steps and seconds to a target. Its wall time
is compared here with the optimiser work it measures: one plain call of `gf.sgd` (or
`gf.split`) from the same start over the whole epochs to the target (the hitting epoch
rounded up), or over `max_epochs` when the target is not reached, saving only its end
point. Both run in the same process, interleaved (protocol, plain, protocol, plain, …),
after a warm-up at another seed that compiles every call shape; the warm-up's own wall
times are printed as "first" (compilations included: what the first step size of a
process pays).

Problem: the splitting experiment's tomography case (`gdflow.experiments.splitting`:
AIR Tools II paralleltomo, b = 60, relative error 1e-3 to θ* = lsqr(A, b), exact local
flows, the experiment's seeded starts and `best_of=3`). Cases at N = 20 (5040 × 400,
m = 84), with the default size's budget (400 epochs, segments ≤ 128) and, for an SGD run
that reaches the target, the full size's (2000 epochs, segments ≤ 256); with `--n50`
also N = 50 (12780 × 2500, m = 213). Target of the protocol's design: ratio ≤ 2.

The breakdown splits the protocol's wall time into its timed segments (and timing
repeats), the untimed re-run that locates the hitting epoch, the replayed epoch, and the
rest (error evaluations on the host, bookkeeping).

Run: .venv/bin/python benchmarks/protocol_cost.py [--repeats R] [--n50] [--only NAME]
"""

import argparse
import math
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import gdflow as gf  # noqa: E402
from gdflow import protocol  # noqa: E402
from gdflow.experiments import splitting as S  # noqa: E402

# name, N, method, lr, max_epochs, seg_epochs (expected: reaches or not; see README)
CASES = [
    ("split-lr4", 20, "split", 4.0, 400, 128),
    ("split-lr1e2", 20, "split", 1e2, 400, 128),
    ("split-lr1", 20, "split", 1.0, 400, 128),
    ("sgd-lr1", 20, "sgd", 1.0, 400, 128),
    ("sgd-lr2-full", 20, "sgd", 2.0, 2000, 256),
]
CASES_50 = [
    ("n50-sgd-lr1", 50, "sgd", 1.0, 400, 128),
    ("n50-split-lr1e2", 50, "split", 1e2, 400, 128),
]

_parts = {}


def _instrument():
    """Wall seconds of the protocol's optimiser calls, by the function calling them."""
    run, replay = protocol._run, protocol._replay_epoch

    def timed_run(*a, **k):
        who = sys._getframe(1).f_code.co_name  # "measure" or "_locate"
        t = time.perf_counter()
        out = run(*a, **k)
        key = "re-run" if who == "_locate" else "timed"
        _parts[key] = _parts.get(key, 0.0) + time.perf_counter() - t
        return out

    def timed_replay(*a, **k):
        t = time.perf_counter()
        out = replay(*a, **k)
        _parts["replay"] = _parts.get("replay", 0.0) + time.perf_counter() - t
        return out

    protocol._run, protocol._replay_epoch = timed_run, timed_replay


def _case(size_N):
    cfg = S.config({20: "default", 50: "full"}[size_N])
    return cfg, S.build_case(cfg, "tomography")


def _plain(method, problem, lr, E, b):
    t = time.perf_counter()
    if method == "sgd":
        m = problem.n // b
        gf.sgd(problem, lr, E, gf.RoundRobin(b), save_every=E * m, on_divergence="ignore")
    else:
        gf.split(
            problem,
            lr,
            E,
            gf.RoundRobin(b),
            local=gf.Exact(),
            save_every=E,
            on_divergence="ignore",
        )
    return time.perf_counter() - t


def _spread(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}, {max(xs):.2f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n50", action="store_true")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    _instrument()
    cases = CASES + (CASES_50 if args.n50 else [])
    if args.only:
        cases = [c for c in cases if c[0] == args.only]
    built = {}
    rows = []
    for name, N, method, lr, max_epochs, seg in cases:
        if N not in built:
            built[N] = _case(N)
        cfg, case = built[N]
        b, m = case.batch_size, case.m
        kw = dict(
            batch_size=b,
            error=case.error,
            target=case.target,
            local=case.local,
            max_epochs=max_epochs,
            seg_epochs=seg,
            best_of=cfg.best_of,
        )

        def need(rec):
            return max_epochs if rec.steps is None else max(1, math.ceil(rec.steps / m))

        # warm-up at seed 1: compiles every call shape of the protocol and of the plain run
        t = time.perf_counter()
        rec = protocol.measure(method, case.seeded(1), lr, **kw)
        first_p = time.perf_counter() - t
        first_r = _plain(method, case.seeded(1), lr, need(rec), b)
        problem = case.seeded(0)
        walls, runs, parts = [], [], []
        for _ in range(args.repeats):
            _parts.clear()
            t = time.perf_counter()
            rec = protocol.measure(method, problem, lr, **kw)
            walls.append(time.perf_counter() - t)
            parts.append(dict(_parts))
            runs.append(_plain(method, problem, lr, need(rec), b))
        ratios = [w / r for w, r in zip(walls, runs, strict=True)]
        E = need(rec)
        hit = "—" if rec.steps is None else f"{rec.epochs:.1f}"
        med = {
            k: statistics.median(p.get(k, 0.0) for p in parts)
            for k in ("timed", "re-run", "replay")
        }
        other = statistics.median(walls) - sum(med.values())
        rows.append(
            (
                name,
                N,
                method,
                lr,
                hit,
                E,
                rec.epochs_run,
                _spread(walls),
                _spread(runs),
                f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]",
                f"{first_p:.2f} / {first_r:.2f}",
                f"{med['timed']:.2f} / {med['re-run']:.2f} / {med['replay']:.2f} / {other:.2f}",
            )
        )
        print(
            f"{name}: N={N} {method} lr={lr:g} max_epochs={max_epochs} seg={seg}: epochs to "
            f"target {hit}, plain run {E} epochs, protocol ran {rec.epochs_run:.0f} epochs "
            f"({rec.timed_epochs} timed); protocol {_spread(walls)} s, plain {_spread(runs)} s, "
            f"ratio {rows[-1][9]}; first (compiles) {rows[-1][10]} s",
            flush=True,
        )
    print()
    print(
        "| case | N | method | lr | epochs to target | plain run (epochs) | protocol epochs "
        "| protocol s | plain s | ratio | first: protocol / plain s "
        "| timed / re-run / replay / other s |"
    )
    print("|---" * 12 + "|")
    for r in rows:
        print(
            "| " + " | ".join(str(x) if not isinstance(x, float) else f"{x:g}" for x in r) + " |"
        )


if __name__ == "__main__":
    main()
