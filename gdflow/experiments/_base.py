"""What an experiment is: config -> run (a results record) -> figures and report.

An experiment is a pipeline of four pure steps (see [`Experiment`][gdflow.experiments._base.Experiment]):

1. `config(size, data_dir=..., seeds=...)` builds a frozen configuration: the text's
   published values and this size's grid;
2. `run(config, executor=None, progress=False)` measures and returns a typed results
   record (a frozen dataclass with a `claims` tuple); its grid (step sizes x seeds x
   problems) is a list of independent task calls of one module-level function, executed
   through [`run_tasks`][gdflow.experiments._base.run_tasks] so that a later change can send them to a Dask cluster;
3. `figures(results, out)` draws from the record alone and returns the file names;
4. `report(results)` writes Markdown from the record alone, each section opening with
   its claims table ([`claims_table`][gdflow.experiments._base.claims_table]).

Every sentence of a report that states a fact about a run comes from a [`Claim`][gdflow.experiments._base.Claim]: the
text's statement, the published value, the measured value and the rule that compares
them; the verdict is computed, never typed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

SIZES = ("quick", "default", "full")

HOLDS = "holds"
DIFFERS = "differs"
NO_PUBLISHED = "no published value"


# --- rules and claims ----------------------------------------------------------------------


def _finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass(frozen=True)
class Close:
    """Holds when $|m - p| \\le \\mathrm{atol} + \\mathrm{rtol}\\,|p|$ (m measured, p published)."""

    rtol: float = 0.0
    atol: float = 0.0

    def holds(self, published, measured) -> bool:
        return abs(measured - published) <= self.atol + self.rtol * abs(published)

    def describe(self) -> str:
        parts = []
        if self.rtol:
            parts.append(f"{self.rtol:g}·|text|")
        if self.atol or not parts:
            parts.append(f"{self.atol:g}")
        return "|gdflow − text| ≤ " + " + ".join(parts)


@dataclasses.dataclass(frozen=True)
class AtMost:
    """Holds when $m \\le \\mathrm{factor}\\cdot p$."""

    factor: float = 1.0

    def holds(self, published, measured) -> bool:
        return measured <= self.factor * published

    def describe(self) -> str:
        return "gdflow ≤ " + ("text" if self.factor == 1 else f"{self.factor:g}·text")


@dataclasses.dataclass(frozen=True)
class AtLeast:
    """Holds when $m \\ge \\mathrm{factor}\\cdot p$."""

    factor: float = 1.0

    def holds(self, published, measured) -> bool:
        return measured >= self.factor * published

    def describe(self) -> str:
        return "gdflow ≥ " + ("text" if self.factor == 1 else f"{self.factor:g}·text")


@dataclasses.dataclass(frozen=True)
class Greater:
    """Holds when $m > p$ (strictly: "the loss rises", "GD leaves GF")."""

    def holds(self, published, measured) -> bool:
        return measured > published

    def describe(self) -> str:
        return "gdflow > text"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One statement of a text, checked against one measured number.

    - `claim`: a short identifier (`"random_lls.split_plateau_steps"`).
    - `text`: the statement, in words (what the text says, or what the theory predicts).
    - `published`: the number the statement gives (`None`: the text gives none).
    - `measured`: what this run measured (`None`: the run did not reach it).
    - `rule`: a [`Close`][gdflow.experiments._base.Close], [`AtMost`][gdflow.experiments._base.AtMost], [`AtLeast`][gdflow.experiments._base.AtLeast] or [`Greater`][gdflow.experiments._base.Greater] comparing the two.

    The verdict is computed: `"no published value"` when `published` is `None`,
    `"differs"` when nothing finite was measured or the rule fails, else `"holds"`.
    """

    claim: str
    text: str
    published: float | None
    measured: float | None
    rule: Close | AtMost | AtLeast | Greater
    unit: str = ""

    @property
    def verdict(self) -> str:
        if self.published is None:
            return NO_PUBLISHED
        if not _finite(self.measured):
            return DIFFERS
        return HOLDS if self.rule.holds(float(self.published), float(self.measured)) else DIFFERS

    def to_json(self) -> dict:
        return {
            "claim": self.claim,
            "text": self.text,
            "published": self.published,
            "measured": self.measured,
            "rule": self.rule.describe(),
            "verdict": self.verdict,
            "unit": self.unit,
        }


def _num(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def claims_table(claims: Sequence[Claim]) -> str:
    """The claims table that opens a report section: claim | text | gdflow | verdict."""
    rows = []
    for c in claims:
        unit = f" {c.unit}" if c.unit else ""
        pub = "none given" if c.published is None else _num(c.published) + unit
        verdict = c.verdict if c.published is None else f"{c.verdict} ({c.rule.describe()})"
        rows.append(
            [c.text, pub, _num(c.measured) + (unit if c.measured is not None else ""), verdict]
        )
    return md_table(["claim", "text", "gdflow", "verdict"], rows)


def verdicts(claims: Iterable[Claim]) -> dict[str, str]:
    """`{claim id: verdict}`, for tests and summaries."""
    return {c.claim: c.verdict for c in claims}


# --- the task loop --------------------------------------------------------------------------


def run_tasks(
    fn: Callable, tasks: Sequence[tuple], executor=None, *, track=None, cost=None
) -> list:
    """Call `fn(*task)` for every task; results in task order.

    `fn` must be a module-level (picklable) function of one grid point and `tasks`
    tuples of picklable values, so that the same list runs unchanged on any
    `concurrent.futures.Executor`-shaped object (`executor.submit(fn, *task)` returning
    futures with `.result()`): a process pool, or a Dask `distributed.Client`.
    `executor=None` runs in this process, in order. `track` wraps the iteration over the
    tasks as they finish (a progress bar): on an executor the bar counts completed
    tasks, not submissions, where the futures report when they are done
    (`add_done_callback`, which `concurrent.futures` and Dask futures have; others count
    once all are submitted). A task that failed raises as soon as it is seen: the tasks
    not yet submitted are not run (a cache keeps those that finished).

    `cost(task)`, when given, estimates a task's run time (any unit): tasks are then
    submitted costliest first, so that on $w$ workers the longest ones do not start last
    (the longest-processing-time rule, whose makespan is at most $4/3 - 1/(3w)$ of the
    best possible). The results are in task order all the same.
    """
    tasks = list(tasks)
    order = list(range(len(tasks)))
    if cost is not None:
        if not callable(cost):
            raise TypeError(
                f"`cost` must be a function of one task returning its estimated run time "
                f"(a number), or None; got {cost!r}."
            )
        costs = [cost(t) for t in tasks]
        bad = [c for c in costs if isinstance(c, bool) or not isinstance(c, numbers.Real)]
        if bad or not all(math.isfinite(c) for c in costs):
            shown = bad[0] if bad else next(c for c in costs if not math.isfinite(c))
            raise ValueError(f"`cost` must return a finite number for every task; got {shown!r}.")
        order = longest_first(costs)
    if executor is None:
        it = order if track is None else track(order)
        answers = {i: fn(*tasks[i]) for i in it}
    else:
        done = _Completions(executor, fn, tasks, order)
        answers = {i: done.futures[i].result() for i in (done if track is None else track(done))}
    return [answers[i] for i in range(len(tasks))]


def longest_first(costs: Sequence[float | None]) -> list[int]:
    """Indices of `costs` costliest first (the longest-processing-time rule); unknown
    costs (`None`) before all others, and ties in their given order."""
    return sorted(range(len(costs)), key=lambda i: -math.inf if costs[i] is None else -costs[i])


class _Completions:
    """Submits the tasks in `order` and yields each one's index as it finishes: at once
    for an executor that runs a task inside `submit` (in process), else as the workers
    report. Futures without `add_done_callback` are reported once all are submitted, so
    that waiting on one does not hold back the submission of the others."""

    def __init__(self, executor, fn, tasks, order):
        self.executor, self.fn, self.tasks, self.order = executor, fn, tasks, order
        self.futures: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        import queue

        finished: queue.SimpleQueue = queue.SimpleQueue()
        given, silent = 0, []
        for i in self.order:
            future = self.executor.submit(self.fn, *self.tasks[i])
            self.futures[i] = future
            notify = getattr(future, "add_done_callback", None)
            if notify is None:  # reported after the submissions, not to wait on it now
                silent.append(i)
            else:
                notify(lambda _, i=i: finished.put(i))
            while not finished.empty():
                given += 1
                yield finished.get()
        for i in silent:
            finished.put(i)
        while given < len(self.order):
            try:  # a timeout, so that Ctrl-C is seen between waits
                index = finished.get(timeout=0.5)
            except queue.Empty:
                continue
            given += 1
            yield index


def apply_task(fn: Callable, *args):
    """`fn(*args)`: one module-level function through which tasks of different functions
    go to the workers in one [`run_tasks`][gdflow.experiments._base.run_tasks] call, so
    that they share the workers (`run_tasks(apply_task, [(f, a), (g, b)])`)."""
    return fn(*args)


def task_label(fn, task: tuple) -> str:
    """A short name of one task for timing tables: the function's name and the task's
    plain arguments (numbers, strings, short tuples of them), arrays by their shape and
    0-d arrays by their value; configs (dataclasses) are left out, or named by their type
    inside a tuple."""
    import dataclasses

    def show(x, depth=0):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return type(x).__name__
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            if x.shape == ():
                return show(x.item(), depth)
            return f"array{tuple(x.shape)}"
        if isinstance(x, float):
            return f"{x:g}"
        if isinstance(x, tuple | list) and depth == 0 and len(x) <= 4:
            return "(" + ", ".join(show(v, 1) for v in x) + ")"
        if isinstance(x, str | int | bool | type(None)):
            return repr(x) if isinstance(x, str) else str(x)
        if callable(x) and hasattr(x, "__name__"):
            return x.__name__
        return type(x).__name__

    if fn is apply_task and task and callable(task[0]):
        return task_label(task[0], task[1:])
    args = [show(v) for v in task if not (dataclasses.is_dataclass(v) and not isinstance(v, type))]
    return f"{getattr(fn, '__name__', type(fn).__name__)}({', '.join(args)})"


def _stable_repr(x) -> str:
    """A text that identifies a task's arguments exactly and is the same in every run:
    floats by their shortest exact `repr`, arrays by dtype, shape and a hash of their
    bytes (NumPy's `repr` rounds and elides), functions by module and qualified name (not
    by address), containers and dataclasses field by field."""
    import dataclasses
    import hashlib

    import numpy as np

    if isinstance(x, tuple | list):
        inner = ", ".join(_stable_repr(v) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    if isinstance(x, dict):
        items = sorted((_stable_repr(k), _stable_repr(v)) for k, v in x.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = ", ".join(
            f"{f.name}={_stable_repr(getattr(x, f.name))}" for f in dataclasses.fields(x)
        )
        return f"{type(x).__module__}.{type(x).__qualname__}({fields})"
    if hasattr(x, "__array__") and hasattr(x, "dtype") and hasattr(x, "shape"):
        arr = np.asarray(x)
        digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
        return f"array({arr.dtype}, {arr.shape}, {digest})"
    if callable(x) and hasattr(x, "__qualname__") and not isinstance(x, type):
        return f"<{getattr(x, '__module__', '')}.{x.__qualname__}>"
    return repr(x)


class _Timed(NamedTuple):
    """A task's value and the seconds it took where it ran."""

    value: Any
    seconds: float


class _WithJax:
    """`fn` that first applies the caller's JAX numerics settings (float64 on or off,
    matmul precision, rank promotion): a task on another process computes what it would
    compute here. Returns a [`_Timed`][gdflow.experiments._base._Timed]: the value and
    the seconds `fn` took on the worker."""

    __slots__ = ("fn", "settings")

    def __init__(self, fn, settings: dict):
        self.fn, self.settings = fn, settings

    def __reduce__(self):
        return (_WithJax, (self.fn, self.settings))

    def __call__(self, *task):
        import time

        import jax

        for name, value in self.settings.items():
            if getattr(jax.config, name) != value:
                jax.config.update(name, value)
        t0 = time.perf_counter()
        value = self.fn(*task)
        return _Timed(value, time.perf_counter() - t0)


class CachedExecutor:
    """An executor that answers tasks from a [`gdflow.ResultCache`][] and stores each
    result the moment it arrives, wrapped around any `concurrent.futures`-shaped executor
    (in-process by default, or a Dask client); it also times every task it computes.

    A task is `fn(*task)`; its key hashes the function's qualified name, the `repr` of the
    task tuple (configs are frozen dataclasses with deterministic reprs) and gdflow's
    version, so a rerun with the same config skips finished tasks, and an interrupted run
    loses at most the tasks in flight. `cache=None` caches nothing and only times.
    `hits` and `misses` count what happened; `seconds` maps each computed task's
    [`task_label`][gdflow.experiments._base.task_label] to the seconds it took where it
    ran (on a Dask worker, the worker's time).
    """

    def __init__(self, cache, executor=None):
        from .._sweep import InProcess

        self.cache = cache
        self.executor = InProcess() if executor is None else executor
        self.hits = 0
        self.misses = 0
        self._timed: dict[int, tuple[str, float]] = {}  # submission -> (label, seconds)
        self.closed = False
        # Dask runs the done-callbacks in another thread: storing, closing and reading
        # the timings take this lock.
        self._lock = threading.Lock()

    @property
    def seconds(self) -> dict[str, float]:
        """`{task label: seconds}` of the tasks computed so far (labels of tasks with
        equal arguments get `#2`, `#3`, ... in the order they were submitted)."""
        with self._lock:
            timed = sorted(self._timed.items())
        out: dict[str, float] = {}
        for _, (label, sec) in timed:
            name, n = label, 2
            while name in out:
                name, n = f"{label} #{n}", n + 1
            out[name] = sec
        return out

    def _key(self, fn, task) -> str:
        import hashlib

        from .._sweep import jax_settings

        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        text = _stable_repr((task, sorted(jax_settings().items())))
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.cache.key({"task": digest}, task=name)

    def submit(self, fn, *task):
        import concurrent.futures as cf

        key = None if self.cache is None else self._key(fn, task)
        if key is not None and self.cache.contains(key):
            self.hits += 1
            done: cf.Future = cf.Future()
            done.set_result(self.cache.load(key))
            return done
        self.misses += 1
        from .._sweep import jax_settings

        future = self.executor.submit(_WithJax(fn, jax_settings()), *task)
        slot = (self.misses, task_label(fn, task))

        def store(f):
            # As soon as a task finishes (in another thread for Dask): an interrupted run
            # keeps it. Not once the cache was closed and moved with the results.
            if not self.closed and not f.cancelled() and f.exception() is None:
                self._store(key, slot, f.result())

        future.add_done_callback(store)
        return _Storing(future, lambda timed: self._store(key, slot, timed))

    def _store(self, key, slot, timed: _Timed) -> None:
        with self._lock:
            if self.closed:
                return
            self._timed[slot[0]] = (slot[1], timed.seconds)
            if key is not None and not self.cache.contains(key):
                self.cache.store(key, timed.value)

    def close(self) -> None:
        """Store nothing more (the results and the cache are about to be moved)."""
        with self._lock:
            self.closed = True


class _Storing:
    """A future whose `result()` also stores the value, in the caller's thread, so that
    every collected result is in the cache before the experiment's folder is moved; it
    answers the value without its timing."""

    def __init__(self, future, store):
        self._future, self._store = future, store

    def result(self, timeout=None):
        timed = self._future.result(timeout)
        self._store(timed)
        return timed.value

    def __getattr__(self, name):
        return getattr(self._future, name)


def describe_tasks(tasks: dict) -> str:
    """One line on an experiment's tasks from its `results.json` record: how many were
    computed and answered from the cache, their summed time and the longest ones."""
    seconds = tasks.get("seconds", {})
    line = f"{tasks['computed']} computed, {tasks['from_cache']} from the cache"
    if seconds:
        top = sorted(seconds.items(), key=lambda kv: -kv[1])[:3]
        longest = ", ".join(f"`{k}` {v:.1f} s" for k, v in top)
        line += f"; {sum(seconds.values()):.1f} s of task time, longest {longest}"
    return line


def tracker(progress: bool, desc: str = ""):
    """A function wrapping an iterable in a progress bar on stderr (or not)."""

    def track(iterable):
        if not progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False, file=sys.stderr)

    return track


def pick(size: str, *, quick, default, full=None):
    """The value for `size` (`full` falls back to `default`)."""
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}; got {size!r}.")
    if size == "quick":
        return quick
    if size == "full" and full is not None:
        return full
    return default


def savefig(fig, out: Path, name: str) -> str:
    """Save a matplotlib figure as `out/name` (PNG, 150 dpi), close it, return `name`."""
    import matplotlib.pyplot as plt

    fig.savefig(Path(out) / name, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return name


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A reproducible set of claims of one of the texts, as a pipeline.

    - `name`: the command-line name (`gdflow reproduce NAME`).
    - `title`: one line for listings and the report.
    - `source`: the text it reproduces (a file in `shared/sources`) with its authors.
    - `summary`: what it checks, two or three sentences (no verdicts: those are claims).
    - `config`: `config(size, *, data_dir=None, seeds=None) -> Config`.
    - `run`: `run(config, *, executor=None, progress=False) -> Results`; `Results` has
      `claims` and `numbers()` (a JSON-ready dict).
    - `figures`: `figures(results, out) -> list[str]`.
    - `report`: `report(results) -> str`.
    - `seconds`: roughly how long it runs at each size (`{"quick": 34.0, ...}`), as last
      measured in one process on the 2-core reference machine. Used only to order work:
      `reproduce(..., spread="experiments")` submits the longest experiments first (a
      time measured in the output folder takes precedence). Never a verdict.
    """

    name: str
    title: str
    source: str
    summary: str
    config: Callable[..., Any]
    run: Callable[..., Any]
    figures: Callable[[Any, Path], list[str]]
    report: Callable[[Any], str]
    seconds: Mapping[str, float] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        for size, t in dict(self.seconds).items():
            number = isinstance(t, numbers.Real) and not isinstance(t, bool)
            if size not in SIZES or not number or not (math.isfinite(t) and t > 0):
                raise ValueError(
                    f"Experiment {self.name!r}: `seconds` maps sizes {SIZES} to positive "
                    f"finite run times; got {size!r}: {t!r}."
                )


def jsonable(obj: Any) -> Any:
    """Convert NumPy / JAX scalars and arrays, dataclasses and claims to plain JSON values."""
    import numpy as np

    if isinstance(obj, Claim):
        return jsonable(obj.to_json())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, str | bytes):
        arr = np.asarray(obj)
        return jsonable(arr.item()) if arr.shape == () else jsonable(arr.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    return str(obj)


def write_json(path: Path, payload: dict) -> None:
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(payload), indent=2, allow_nan=False))
    tmp.replace(path)


def md_table(header: list[str], rows: list[list[Any]], fmt: str = "{:.4g}") -> str:
    """A Markdown table; floats formatted with `fmt`, `|` inside cells escaped (so a
    norm such as `|θ - θ*|` stays in its column)."""

    def cell(v):
        text = fmt.format(v) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
