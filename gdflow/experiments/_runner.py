"""Running experiments and assembling the report."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import time
import traceback
from pathlib import Path

from ._base import Experiment, claims_table, describe_tasks, write_json

SPREADS = ("tasks", "experiments")  # what `reproduce(..., spread=)` gives the workers


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def machine() -> dict:
    """What this run ran on, read from the machine itself."""
    import jax

    devices = jax.devices()
    info = {
        "system": f"{platform.system()} {platform.release()}",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_devices": f"{len(devices)} × {devices[0].platform} ({devices[0].device_kind})",
    }
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not on every platform
        info["load_average_1min"] = None
    return info


def describe_machine(m: dict) -> str:
    """One sentence about the machine, computed from [`machine`][gdflow.experiments._runner.machine]'s numbers."""
    text = f"{m['cpu_count']} CPU core(s) ({m['cpu']}, {m['system']}), JAX on {m['jax_devices']}"
    load = m.get("load_average_1min")
    if load is not None and m.get("cpu_count"):
        # Rule: "loaded" when the 1-minute load average at the start is at least the
        # number of cores (every core already busy with other work).
        state = "loaded" if load >= m["cpu_count"] else "not fully loaded"
        text += f"; load average {load:g} at the start ({state}: rule load ≥ cores)"
    return text


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
    }


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `reproduce`: says what was interrupted and what the report keeps."""

    def __init__(self, name: str | list[str], finished: list[str], out: Path):
        names = [name] if isinstance(name, str) else list(name)
        self.name, self.finished, self.out = ", ".join(names), finished, out
        kept = ", ".join(finished) if finished else "no experiment of this run"
        if len(names) == 1:
            during, theirs, caches = repr(names[0]), "its", out / names[0] / "cache"
        else:  # experiments on workers: those running and those waiting
            during = "the unfinished " + ", ".join(map(repr, names))
            theirs, caches = "their", out / "NAME" / "cache"
        super().__init__(
            f"interrupted during {during}; {out / 'report.md'} keeps {kept} "
            f"(and any earlier results); {theirs} results were left as they were, and "
            f"the tasks that finished are in {caches} for the rerun."
        )


def check_data_dir(data_dir) -> Path | None:
    """`--data DIR` must exist and hold a recognisable data set; `None` passes."""
    if data_dir is None:
        return None
    from .. import datasets

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"`--data` {data_dir} is not a directory.")
    found = [n for n in ("mnist", "fashion-mnist") if datasets.find_idx_dir(data_dir, n)]
    if not found:
        raise ValueError(
            f"`--data` {data_dir} holds no IDX data set. Looked for "
            + datasets.describe_search(data_dir)
            + ". Put the IDX files there, or leave out --data."
        )
    return data_dir


def check_out_dir(out) -> Path:
    """`--out DIR` must be a directory that can be created and written."""
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is" if parent == out else f"lies under {parent}, which is"
            raise ValueError(f"`--out` {out} {what} an existing file; give a directory.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".gdflow-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"`--out` {out} cannot be written ({e.strerror or e}).") from None
    return out


def reproduce(
    names,
    out,
    *,
    size: str = "default",
    data_dir=None,
    seeds: int | None = None,
    progress: bool = True,
    executor=None,
    cache: bool = True,
    log=print,
    spread: str = "tasks",
) -> dict[str, dict]:
    """Run experiments `names` (a list, or `"all"`) and write their results.

    Enables float64 (`jax_enable_x64`) and the non-interactive matplotlib backend first.
    Each experiment writes its figures and `results.json` into a temporary folder, which
    replaces `out/NAME` only when the experiment has finished, so an interrupted run never
    mixes figures of one run with numbers of another. `out/report.md` is rewritten after
    each one. A failing experiment is recorded in its `results.json` and the report, and
    the rest still run. With `cache` (default) every task of an experiment's grid is
    stored under `out/NAME/cache/` as it finishes (keyed by the task, the config and
    gdflow's version) and a rerun skips the finished ones; `executor` runs the tasks (a
    Dask client for `--workers`/`--scheduler`, else this process).

    `spread` says what the executor's workers are given:

    - `"tasks"` (default): the experiments run one after another, each one's grid
      spread over the workers task by task. Best where one experiment has many long
      tasks (the default and full sizes).
    - `"experiments"`: each experiment is one task; a worker runs its grid itself, in
      order, and writes its folder. Best where the run is bound by compilation (the
      quick size): no two experiments share a compiled function, so a worker compiles
      only what its own experiments need, where spreading tasks makes every worker
      compile nearly everything. The experiments are submitted longest first, by the
      time each one took in this `out` folder at this size (computed, not answered
      from the cache), else by its typical time (`Experiment.seconds`); ones with
      neither go first, in the listed order. Each worker applies the caller's JAX
      numerics options (float64, matmul precision, rank promotion) and describes its own
      machine. The workers must see `out` and `data_dir` (a local cluster, or a shared
      filesystem) and run one task at a time (one thread each, as `local_cluster`
      starts them); a worker that does not fails that experiment with an error saying
      so. On Ctrl-C the experiments not yet started are cancelled; those running go on
      until their workers stop (`--workers` stops them on exit), and keep their finished
      tasks in their caches for the rerun.

    Without an executor both run everything in this process.

    **Returns:** a dict from name to the record written to `results.json`.

    **Raises:** `ValueError` for an unknown name, a bad `size`, `spread`, `--data` or
    `--out` (checked before anything is written); [`Interrupted`][gdflow.experiments._runner.Interrupted] on Ctrl-C.
    """
    from . import registry

    available = registry()
    if names == "all" or names == ["all"]:
        chosen = list(available)
    else:
        chosen = list(dict.fromkeys(names))  # each once, in the order given
        unknown = [n for n in chosen if n not in available]
        if unknown:
            raise ValueError(
                f"unknown experiment(s) {unknown}; available: {', '.join(available)} or 'all'."
            )
    if spread not in SPREADS:
        raise ValueError(f"`spread` must be one of {SPREADS}; got {spread!r}.")
    data_dir = check_data_dir(data_dir)  # before the output folder is created
    out = check_out_dir(out)
    _setup()
    if spread == "experiments" and executor is not None:
        return _reproduce_spread(
            chosen, out, size, data_dir, seeds, progress, executor, cache, log
        )
    host = machine()
    records: dict[str, dict] = {}
    finished: list[str] = []
    for name in chosen:
        exp: Experiment = available[name]
        log(f"[gdflow] {name}: {exp.title} (size {size})")
        try:
            record = _run_one(exp, out, size, data_dir, seeds, progress, executor, host, cache)
        except KeyboardInterrupt:
            write_report(out, list(available))
            raise Interrupted(name, finished, out) from None
        records[name] = record
        finished.append(name)
        _ended(name, record, out, list(available), log)
    return records


def _ended(name: str, record: dict, out: Path, order: list[str], log) -> None:
    """Say how experiment `name` ended, and rewrite the report."""
    if record["status"] == "ok":
        log(f"[gdflow] {name}: done in {record['seconds']:.1f} s -> {out / name}")
    else:
        log(f"[gdflow] {name} FAILED: {record['error']}")
    write_report(out, order)


def _setup() -> None:
    """What every process that runs experiments needs: float64, and figures drawn
    without a display."""
    import matplotlib

    matplotlib.use("Agg")
    _enable_x64()


def _last_seconds(out: Path, name: str, size: str) -> float | None:
    """How long experiment `name` took when it last ran at `size` into `out`, finished,
    and computed every task (none from the cache); `None` if it did not."""
    try:
        rec = json.loads((out / name / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    seconds = rec.get("seconds")
    if rec.get("status") != "ok" or rec.get("size") != size:
        return None
    if (rec.get("tasks") or {}).get("from_cache"):
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        return None
    return float(seconds)


def _run_whole(name, out, marker, size, data_dir, seeds, cache) -> dict:
    """One experiment, start to finish, on a worker: its tasks in this process, in order.
    `marker` is a file the caller wrote into `out`: seeing it shows that this worker
    shares the caller's folder (not merely one of the same name)."""
    out = Path(out)
    if not (out / marker).exists():
        raise RuntimeError(
            f"this worker ({platform.node()}) cannot see the output folder {out} of the "
            "process that started the run: spread='experiments' needs workers that share "
            "the filesystem (a local cluster, --workers N); use spread='tasks' on a remote "
            "scheduler."
        )
    data_dir = check_data_dir(data_dir)  # seen from the worker as well
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):  # not on a Dask worker
        threads = 1
    if threads > 1:
        raise RuntimeError(
            f"this worker runs {threads} tasks at once: spread='experiments' needs workers "
            "of one thread each (figures and JAX's options are per process), e.g. "
            "`dask worker ADDRESS --nthreads 1`, or gdflow.local_cluster(n)."
        )
    _setup()
    from . import registry

    exp = registry()[name]
    return _run_one(exp, out, size, data_dir, seeds, False, None, machine(), cache)


def _reproduce_spread(chosen, out, size, data_dir, seeds, progress, executor, cache, log):
    """`reproduce(..., spread="experiments")`: every experiment one task on `executor`."""
    import uuid

    from .._sweep import jax_settings
    from .._sweep._executors import _cancel
    from . import registry
    from ._base import _Completions, _WithJax, longest_first, tracker

    available = registry()
    out = out.resolve()  # the workers may start elsewhere
    data_dir = None if data_dir is None else str(data_dir.resolve())
    # Longest first: by the time measured in `out` at this size, else the typical time.
    last = [_last_seconds(out, n, size) for n in chosen]
    last = [available[n].seconds.get(size) if t is None else t for n, t in zip(chosen, last)]
    order = longest_first(last)
    # A file only this run writes: a worker that sees it shares this folder. Its name
    # also makes this run's tasks differ from any earlier run's on the same cluster.
    marker = f".gdflow-run-{uuid.uuid4().hex}"
    (out / marker).write_text("")
    tasks = [(name, str(out), marker, size, data_dir, seeds, cache) for name in chosen]
    for i in order:
        log(f"[gdflow] {chosen[i]}: {available[chosen[i]].title} (size {size}) on a worker")
    done = _Completions(executor, _WithJax(_run_whole, jax_settings()), tasks, order)
    records: dict[str, dict] = {}
    try:
        for i in tracker(progress, "experiments")(done):
            name = chosen[i]
            try:
                record = done.futures[i].result().value
            except Exception as e:  # the worker, not the experiment, failed
                record = _failed_record(available[name], out, size, machine(), e)
            records[name] = record
            _ended(name, record, out, list(available), log)
    except KeyboardInterrupt:
        _cancel(executor, [f for j, f in done.futures.items() if chosen[j] not in records])
        write_report(out, list(available))
        running = [n for n in chosen if n not in records]
        if running:
            raise Interrupted(running, list(records), out) from None
    finally:
        (out / marker).unlink(missing_ok=True)
    return {name: records[name] for name in chosen}


def _header(exp, size, host) -> dict:
    return {
        "name": exp.name,
        "title": exp.title,
        "source": exp.source,
        "summary": exp.summary,
        "size": size,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": host,
    }


def _failed_record(exp, out, size, host, error: BaseException) -> dict:
    """The record of an experiment whose worker failed, written to `out/NAME/results.json`
    (the cache kept, the rest of the old folder replaced)."""
    record = _header(exp, size, host)
    record.update(
        status="failed",
        error=f"{type(error).__name__}: {error}",
        traceback="".join(traceback.format_exception(error)),
        seconds=0.0,
    )
    tmp = _fresh_partial(out, exp.name)
    write_json(tmp / "results.json", record)
    _install(out, exp.name, tmp)
    return record


def _fresh_partial(out: Path, name: str) -> Path:
    """An empty `out/.NAME.partial` for a new run of `name`, after putting back what a
    run stopped in the middle of `_install` left: the old folder (`.NAME.old`) if
    `out/NAME` is missing, and a cache left in the partial folder."""
    final, tmp, old = out / name, out / f".{name}.partial", out / f".{name}.old"
    if old.exists() and not final.exists():
        old.rename(final)
    if (tmp / "cache").is_dir() and not (final / "cache").exists():
        final.mkdir(exist_ok=True)
        (tmp / "cache").rename(final / "cache")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _install(out: Path, name: str, tmp: Path) -> None:
    """Move the finished folder `tmp` to `out/name`, with the old folder's cache."""
    final = out / name
    if (final / "cache").exists():  # kept with --no-cache too: it is still valid
        (final / "cache").rename(tmp / "cache")
    # Move into place only now: the old folder (if any) goes as a whole.
    if final.exists():
        old = out / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def _run_one(exp, out, size, data_dir, seeds, progress, executor, host, cache=True) -> dict:
    final = out / exp.name
    tmp = _fresh_partial(out, exp.name)  # first: it may put a cache back in `final`
    from .._sweep import ResultCache
    from ._base import CachedExecutor

    # The cache lives in the final folder from the start, so an interrupted run keeps the
    # tasks that finished; it moves with the results when they replace the folder. Without
    # a cache the executor still times every task.
    store = ResultCache(final / "cache", pickle=True) if cache else None
    tasks = CachedExecutor(store, executor)
    executor = tasks
    start = time.perf_counter()
    record = _header(exp, size, host)
    record["process"] = {"node": platform.node(), "pid": os.getpid()}
    try:
        try:
            config = exp.config(size, data_dir=data_dir, seeds=seeds)
            results = exp.run(config, executor=executor, progress=progress)
            figures = exp.figures(results, tmp)
            text = exp.report(results)
        except Exception as e:  # keep going: one broken experiment must not lose the rest
            record.update(
                status="failed",
                error=f"{type(e).__name__}: {e}",
                traceback=traceback.format_exc(),
                seconds=time.perf_counter() - start,
            )
        else:
            record.update(
                status="ok",
                seconds=time.perf_counter() - start,
                claims=[c.to_json() for c in results.claims],
                numbers=results.numbers(),
                figures=figures,
                text=text,
            )
        write_json(tmp / "results.json", record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tasks.close()
    record["tasks"] = {
        "computed": tasks.misses,
        "from_cache": tasks.hits,
        "seconds": {k: round(v, 3) for k, v in tasks.seconds.items()},
    }
    write_json(tmp / "results.json", record)
    _install(out, exp.name, tmp)
    return record


def write_report(out, order=None) -> Path:
    """Assemble `out/report.md` from every `out/*/results.json` present."""
    out = Path(out)
    found = {}
    for path in sorted(out.glob("*/results.json")):
        if path.parent.name.startswith("."):
            continue
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
        "`full` uses the texts' own sizes. Each section opens with its claims: the text's "
        "statement, its published value, gdflow's measurement and the verdict computed by "
        "the stated rule (holds / differs / no published value).",
        "",
    ]
    for n in names:
        folder, rec = found[n]
        counts = {}
        for c in rec.get("claims", []):
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        tally = ", ".join(f"{k}: {v}" for k, v in counts.items())
        lines.append(
            f"- [{rec.get('title', n)}](#{n}) — `{n}`, size {rec.get('size')}, "
            f"{rec.get('status')}, {rec.get('seconds', 0):.0f} s" + (f"; {tally}" if tally else "")
        )
    lines.append("")
    for n in names:
        folder, rec = found[n]
        lines += [f'<a id="{n}"></a>', f"## {rec.get('title', n)}", ""]
        lines += [
            f"*Source:* {rec.get('source', '')}  ",
            f"*Run:* `gdflow reproduce {n}` "
            f"(size {rec.get('size')}, {rec.get('seconds', 0):.1f} s, {rec.get('date', '')})",
        ]
        if rec.get("machine"):
            lines += [f"*Machine:* {describe_machine(rec['machine'])}  "]
        if rec.get("tasks"):
            lines += [f"*Tasks:* {describe_tasks(rec['tasks'])}"]
        lines.append("")
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


__all__ = ["reproduce", "write_report", "machine", "describe_machine", "claims_table"]
