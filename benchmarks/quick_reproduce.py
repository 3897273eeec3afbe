"""Wall time of `gdflow reproduce all --quick`: in one process, against two spawned Dask
workers given whole experiments (`--spread experiments`, what `make quick` runs) and,
with `--modes ... tasks`, against two workers given the experiments' tasks.

Each run is a fresh `gdflow` process with `--no-cache` into a fresh output folder, so it
pays what a user pays: JAX's import and every compilation (the quick size is bound by
compilation), and for the workers the cluster's start. The modes are interleaved round by
round (one, experiments, ..., then again), and each ratio is taken within its round; the
load average is printed beside every run. The claims' measured values of every run are
compared with the first in-process run's: they must be the same to the bit (timings
aside, which are not claims).

Target: `--quick` in about 2 minutes on 2 cores.

Run: .venv/bin/python benchmarks/quick_reproduce.py [--rounds 2] [--modes one experiments]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "one": [],
    "experiments": ["--workers", "2", "--spread", "experiments"],
    "tasks": ["--workers", "2", "--spread", "tasks"],
}


def gdflow_command() -> list[str]:
    return [sys.executable, "-m", "gdflow"]


def run(mode: str, out: Path) -> tuple[float, dict]:
    """One fresh `gdflow reproduce all --quick`; its wall time and per-experiment seconds."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [*gdflow_command(), "reproduce", "all", "--quick", "--no-cache", "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run([*argv, "--out", str(out), *MODES[mode]], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{mode}: gdflow exited {done.returncode}:\n{done.stderr[-3000:]}")
    seconds = {}
    for path in sorted(out.glob("*/results.json")):
        rec = json.loads(path.read_text())
        seconds[rec["name"]] = rec["seconds"]
    return wall, seconds


def claims(out: Path) -> dict:
    found = {}
    for path in sorted(out.glob("*/results.json")):
        rec = json.loads(path.read_text())
        found[rec["name"]] = [(c["claim"], c["measured"], c["verdict"]) for c in rec["claims"]]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["one", "experiments"])
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"{platform.system()} {platform.release()}; python {platform.python_version()}"
    )
    walls: dict[str, list[float]] = {m: [] for m in args.modes}
    reference, same = None, {}
    base = Path(tempfile.mkdtemp(prefix="gdflow-quick-"))
    try:
        for r in range(args.rounds):
            for mode in args.modes:
                out = base / f"{mode}-{r}"
                load = os.getloadavg()[0]
                wall, seconds = run(mode, out)
                walls[mode].append(wall)
                got = claims(out)
                if reference is None:
                    reference = got
                same[(mode, r)] = got == reference
                parts = ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
                print(
                    f"round {r + 1} {mode:11s} {wall:6.1f} s  (load {load:.2f} at the start; "
                    f"{parts}); claims as the first run: {same[(mode, r)]}",
                    flush=True,
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print("| mode | wall s: median (min–max) | × one process, per round | median × |")
    print("|---|---|---|---|")
    for mode in args.modes:
        w = walls[mode]
        cell = f"{statistics.median(w):.1f} ({min(w):.1f}–{max(w):.1f})"
        if "one" in walls:
            ratios = [a / b for a, b in zip(w, walls["one"])]
            shown = ", ".join(f"{x:.2f}" for x in ratios)
            median = f"{statistics.median(ratios):.2f}"
        else:
            shown = median = "—"
        print(f"| {mode} | {cell} | {shown} | {median} |")
    best = {m: statistics.median(w) for m, w in walls.items()}
    fastest = min(best, key=best.get)
    # Rule: "about 2 minutes" is met when the median wall time is at most 2 min 10 s.
    verdict = "met" if best[fastest] <= 130.0 else "not met"
    print(
        f"\nfastest: {fastest}, median {best[fastest]:.1f} s; target --quick in about "
        f"2 minutes (rule: median ≤ 130 s): {verdict}; claims identical in every run: "
        f"{all(same.values())}"
    )


if __name__ == "__main__":
    main()
