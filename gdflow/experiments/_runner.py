"""Running experiments and assembling the report."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import time
import traceback
from pathlib import Path

from ._base import Context, Experiment, write_json


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _versions() -> dict:
    import diffrax
    import equinox
    import jax
    import optax

    import gdflow

    return {
        "gdflow": gdflow.__version__,
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "optax": optax.__version__,
        "equinox": equinox.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}",
    }


def reproduce(
    names,
    out,
    *,
    size: str = "default",
    data_dir=None,
    seeds: int | None = None,
    progress: bool = True,
    log=print,
) -> dict[str, dict]:
    """Run experiments ``names`` (a list, or ``"all"``) and write their results.

    Enables float64 (``jax_enable_x64``) and the non-interactive matplotlib backend first.
    Each experiment writes ``out/NAME/*.png`` and ``out/NAME/results.json``; ``out/report.md``
    is rewritten after each one, so an interrupted run keeps every finished experiment.
    A failing experiment is recorded in its ``results.json`` and the report, and the rest
    still run.

    **Returns:** a dict from name to the record written to ``results.json``.
    """
    import matplotlib

    matplotlib.use("Agg")
    _enable_x64()
    from . import registry

    available = registry()
    if names == "all" or names == ["all"]:
        chosen = list(available)
    else:
        chosen = list(names)
        unknown = [n for n in chosen if n not in available]
        if unknown:
            raise ValueError(
                f"unknown experiment(s) {unknown}; available: {', '.join(available)} or 'all'."
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = None if data_dir is None else Path(data_dir)
    if data_dir is not None and not data_dir.is_dir():
        raise ValueError(f"`--data` {data_dir} is not a directory.")
    records: dict[str, dict] = {}
    for name in chosen:
        exp: Experiment = available[name]
        ctx = Context(out / name, size=size, data_dir=data_dir, seeds=seeds, progress=progress)
        log(f"[gdflow] {name}: {exp.title} (size {size})")
        start = time.perf_counter()
        record = {
            "name": exp.name,
            "title": exp.title,
            "source": exp.source,
            "summary": exp.summary,
            "size": size,
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "versions": _versions(),
        }
        try:
            result = exp.run(ctx)
        except Exception as e:  # keep going: one broken experiment must not lose the rest
            record.update(
                status="failed",
                error=f"{type(e).__name__}: {e}",
                traceback=traceback.format_exc(),
                seconds=time.perf_counter() - start,
            )
            log(f"[gdflow] {name} FAILED: {type(e).__name__}: {e}")
        else:
            record.update(
                status="ok",
                seconds=time.perf_counter() - start,
                numbers=result.numbers,
                figures=result.figures,
                text=result.text,
            )
            log(f"[gdflow] {name}: done in {record['seconds']:.1f} s -> {ctx.out}")
        write_json(ctx.out / "results.json", record)
        records[name] = record
        write_report(out, list(available))
    return records


def write_report(out, order=None) -> Path:
    """Assemble ``out/report.md`` from every ``out/*/results.json`` present."""
    out = Path(out)
    found = {}
    for path in sorted(out.glob("*/results.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found[rec.get("name", path.parent.name)] = (path.parent.name, rec)
    names = [n for n in (order or []) if n in found] + [n for n in found if n not in (order or [])]
    lines = [
        "# gdflow — reproduction report",
        "",
        "Each section reproduces claims of one text in `shared/sources/` with a figure and "
        "numbers measured by gdflow. Sizes: `quick` is a smoke run, `default` takes minutes, "
        "`full` uses the texts' own sizes.",
        "",
    ]
    for n in names:
        folder, rec = found[n]
        lines.append(
            f"- [{rec.get('title', n)}](#{n}) — `{n}`, size {rec.get('size')}, "
            f"{rec.get('status')}, {rec.get('seconds', 0):.0f} s"
        )
    lines.append("")
    for n in names:
        folder, rec = found[n]
        lines += [f'<a id="{n}"></a>', f"## {rec.get('title', n)}", ""]
        lines += [
            f"*Source:* {rec.get('source', '')}  ",
            f"*Run:* `gdflow reproduce {n}` "
            f"(size {rec.get('size')}, {rec.get('seconds', 0):.1f} s, {rec.get('date', '')})",
            "",
        ]
        if rec.get("summary"):
            lines += [rec["summary"], ""]
        if rec.get("status") != "ok":
            lines += ["**This experiment failed:**", "", "```", rec.get("error", ""), "```", ""]
            continue
        lines += [rec.get("text", "").strip(), ""]
        for fig in rec.get("figures", []):
            lines += [f"![{fig}]({folder}/{fig})", ""]
    v = next((rec.get("versions") for _, rec in found.values() if rec.get("versions")), None)
    if v:
        lines += ["---", "", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
