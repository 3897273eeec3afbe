"""The `gdflow` command: `gdflow list` and `gdflow reproduce NAME|all`."""

from __future__ import annotations

import argparse
import sys
import textwrap


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdflow",
        description="Reproduce the claims of the gdflow texts: figures, numbers and a report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    rep = sub.add_parser(
        "reproduce",
        help="run experiments and write figures, results.json and report.md",
        description="Run one experiment (or all) and write DIR/NAME/*.png, "
        "DIR/NAME/results.json and DIR/report.md.",
    )
    rep.add_argument("name", help="experiment name (see `gdflow list`) or 'all'")
    rep.add_argument("--out", default="results", help="output directory (default: results)")
    size = rep.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run (seconds to a minute)")
    size.add_argument("--full", action="store_true", help="the texts' own sizes (long)")
    rep.add_argument(
        "--data",
        default=None,
        help="directory holding IDX data sets (DIR/mnist, DIR/fashion-mnist, or torchvision's "
        "DIR/MNIST/raw, DIR/FashionMNIST/raw); never downloaded. Without it MNIST is the "
        "5000-image subset of the gdflow[mnist] extra, where installed",
    )
    rep.add_argument("--seeds", type=int, default=None, help="number of seeds where relevant")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    where = rep.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run each experiment's tasks on a local Dask cluster of N worker processes",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        help="run the tasks on an existing Dask cluster (address tcp://HOST:PORT)",
    )
    rep.add_argument(
        "--spread",
        choices=("tasks", "experiments"),
        default="tasks",
        help="with --workers/--scheduler: spread each experiment's tasks over the workers "
        "(tasks, the default), or give each worker whole experiments (experiments: "
        "faster at --quick, which is bound by compilation; the workers must see --out)",
    )
    rep.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute every task (default: tasks finished in DIR/NAME/cache/ are skipped)",
    )
    return parser


def _executor(args):
    """A context giving the executor the flags ask for: `None` (in this process), or a
    Dask client on a local cluster (`--workers N`, spawned workers configuring JAX and
    float64 themselves) or on an existing one (`--scheduler ADDRESS`)."""
    import contextlib

    if args.workers is None and args.scheduler is None:
        return contextlib.nullcontext(None)
    from ._sweep import sweep_executor

    return sweep_executor(workers=args.workers, scheduler=args.scheduler, x64=True)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .experiments import registry, reproduce

    if args.command == "list":
        for name, exp in registry().items():
            print(f"{name:16s} {exp.title}")
            print(textwrap.indent(textwrap.fill(exp.summary, 76), " " * 17))
            print(" " * 17 + f"source: {exp.source}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        print("gdflow: --seeds must be >= 1", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("gdflow: --workers must be >= 1", file=sys.stderr)
        return 2
    size = "quick" if args.quick else "full" if args.full else "default"
    from .experiments import Interrupted

    try:
        with _executor(args) as executor:
            records = reproduce(
                [args.name] if args.name != "all" else "all",
                args.out,
                size=size,
                data_dir=args.data,
                seeds=args.seeds,
                progress=not args.no_progress,
                executor=executor,
                cache=not args.no_cache,
                spread=args.spread,
                log=lambda msg: print(msg, file=sys.stderr),
            )
    except Interrupted as e:
        print(f"gdflow: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before any experiment started
        print(
            "gdflow: interrupted before any experiment ran; nothing was written.", file=sys.stderr
        )
        return 130
    except (ValueError, OSError, ImportError) as e:
        # One clear line: the checks name the argument; an OS error names the path.
        print(f"gdflow: {e}", file=sys.stderr)
        return 2
    failed = [n for n, r in records.items() if r["status"] != "ok"]
    print(f"report: {args.out}/report.md", file=sys.stderr)
    if failed:
        print(f"gdflow: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
