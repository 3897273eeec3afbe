"""The ``gdflow`` command: ``gdflow list`` and ``gdflow reproduce NAME|all``."""

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
        help="directory holding IDX data sets (DIR/mnist, DIR/fashion-mnist); never downloaded",
    )
    rep.add_argument("--seeds", type=int, default=None, help="number of seeds where relevant")
    rep.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


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
    size = "quick" if args.quick else "full" if args.full else "default"
    try:
        records = reproduce(
            [args.name] if args.name != "all" else "all",
            args.out,
            size=size,
            data_dir=args.data,
            seeds=args.seeds,
            progress=not args.no_progress,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except ValueError as e:
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
