"""`gdflow.sweep`: a grid of independent tasks through any executor, cached, in order."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import numpy as np

from ._cache import ResultCache
from ._executors import (
    InProcess,
    _as_completed,
    _cancel,
    _Outcome,
    _submit,
    _Task,
    connect,
    jax_settings,
)

__all__ = ["Failure", "SweepError", "SweepResult", "grid_points", "sweep"]


@final
@dataclasses.dataclass(frozen=True)
class Failure:
    """A grid point whose task raised.

    - `index`: its position in grid order.
    - `point`: the grid point (a dict).
    - `type`: the exception's qualified type name (`"ValueError"`, `"gdflow.FlowError"`).
    - `message`: `str(exception)`.
    - `traceback`: the traceback text, formatted in the process that ran the task.
    """

    index: int
    point: dict
    type: str
    message: str
    traceback: str

    def __str__(self) -> str:
        return f"point {self.index} {self.point}: {self.type}: {self.message}"


class SweepError(RuntimeError):
    """Raised by `gdflow.SweepResult.unwrap` when some points failed."""


@final
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """The results of `gdflow.sweep`, in grid order.

    - `points`: tuple of the grid points (dicts), in grid order.
    - `values`: tuple of the tasks' return values, `None` where the task failed.
    - `failures`: tuple of `gdflow.SweepFailure`, in grid order (empty if none).
    - `cached`: tuple of bools: the value was read from the cache, not computed.
    - `seconds`: tuple of each task's duration measured inside the process that ran it
      (`None` for cached values).
    - `shape`: the grid's shape for a mapping grid (one axis per name, in the mapping's
      order), `(len(points),)` for a list of points.
    - `names`: the grid's names for a mapping grid, else `None`.
    """

    points: tuple[dict, ...]
    values: tuple[Any, ...]
    failures: tuple[Failure, ...]
    cached: tuple[bool, ...]
    seconds: tuple[float | None, ...]
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self):
        """Iterate over `(point, value)` pairs in grid order."""
        return iter(zip(self.points, self.values))

    @property
    def ok(self) -> tuple[bool, ...]:
        """Per point, whether its task succeeded."""
        bad = {f.index for f in self.failures}
        return tuple(i not in bad for i in range(len(self.points)))

    def unwrap(self) -> list:
        """The values as a list; raises `gdflow.SweepError` listing the failures
        (the first one's traceback included) if any point failed."""
        if self.failures:
            f = self.failures[0]
            lines = "\n".join(f"  {x}" for x in self.failures[:10])
            more = f"\n  ... and {len(self.failures) - 10} more" if len(self.failures) > 10 else ""
            raise SweepError(
                f"{len(self.failures)} of {len(self.points)} points failed:\n{lines}{more}\n"
                f"first failure's traceback:\n{f.traceback}"
            )
        return list(self.values)

    def array(self, fn: Callable[[Any], Any] | None = None) -> np.ndarray:
        """`fn(value)` (the value itself by default) for every point as a NumPy array of the
        grid's shape (plus the values' own shape); failed points are NaN."""
        fn = (lambda v: v) if fn is None else fn
        got = [None if not ok else np.asarray(fn(v)) for v, ok in zip(self.values, self.ok)]
        like = next((g for g in got if g is not None), None)
        if like is None:
            return np.full(self.shape, np.nan)
        dtype = np.result_type(like.dtype, np.float64) if like.dtype.kind in "iub" else like.dtype
        out = np.full((len(got),) + like.shape, np.nan, dtype=dtype)
        for i, g in enumerate(got):
            if g is not None:
                out[i] = g
        return out.reshape(self.shape + like.shape)

    def table(self) -> list[dict]:
        """One row (a dict) per point in grid order: the point's entries, then the value's
        entries if it is a mapping (else a column `value`), then `error`
        (`"Type: message"` or `None`). Ready for `pandas.DataFrame(result.table())`."""
        errors = {f.index: f"{f.type}: {f.message}" for f in self.failures}
        rows = []
        for i, (p, v) in enumerate(zip(self.points, self.values)):
            row = dict(p)
            if isinstance(v, Mapping):
                row.update(v)
            else:
                row["value"] = v
            row["error"] = errors.get(i)
            rows.append(row)
        return rows


def grid_points(grid) -> tuple[list[dict], tuple[int, ...], tuple[str, ...] | None]:
    """Expand `grid` into its points, shape and names (see `gdflow.sweep`).

    A mapping `{name: values}` is the Cartesian product in row-major order: the first
    name varies slowest and the last fastest, as in nested `for` loops written in the
    mapping's order (`itertools.product`).
    """
    if isinstance(grid, Mapping):
        if not grid:
            raise ValueError("grid is an empty mapping; give at least one name -> values.")
        names, axes = [], []
        for name, values in grid.items():
            if not isinstance(name, str):
                raise TypeError(f"grid names must be strings, got {name!r}.")
            if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
                raise TypeError(
                    f"grid[{name!r}] must be a sequence of values (a list, tuple or 1-D "
                    f"array), got {type(values).__name__}; wrap a single value as [value]."
                )
            values = list(values.tolist() if isinstance(values, np.ndarray) else values)
            if not values:
                raise ValueError(f"grid[{name!r}] is empty; an axis needs at least one value.")
            names.append(name)
            axes.append(values)
        points = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
        return points, tuple(len(a) for a in axes), tuple(names)
    if isinstance(grid, str | bytes) or not isinstance(grid, Sequence):
        raise TypeError(
            "grid must be a mapping name -> values (their product) or a list of points "
            f"(dicts), got {type(grid).__name__}."
        )
    points = list(grid)
    for i, p in enumerate(points):
        if not isinstance(p, Mapping):
            raise TypeError(f"grid[{i}] must be a dict of parameters, got {type(p).__name__}.")
    return [dict(p) for p in points], (len(points),), None


def _task_name(fn) -> str:
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if qual is None:  # functools.partial and other callables
        inner = getattr(fn, "func", None)
        return _task_name(inner) if inner is not None else type(fn).__qualname__
    return f"{mod}.{qual}"


def _collect(fut) -> _Outcome:
    """The outcome of a finished future. A future can also fail outside the task (a
    worker that died, a function the worker cannot unpickle): that point fails too."""
    try:
        return fut.result()
    except Exception as e:
        import traceback

        return _Outcome(
            False,
            None,
            f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins."),
            str(e),
            traceback.format_exc(),
            None,
        )


def _want_progress(progress) -> bool:
    if progress is None:
        return sys.stderr.isatty() and os.environ.get("CI") is None
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (automatic), got {progress!r}.")
    return progress


def sweep(
    fn: Callable[[dict], Any],
    grid,
    executor=None,
    *,
    scheduler: str | None = None,
    cache=None,
    config: Any = None,
    jax_config="inherit",
    progress: bool | None = None,
    desc: str | None = None,
) -> SweepResult:
    r"""Run `fn` on every point of `grid` as independent tasks; results in grid order.

    A grid is either a mapping `{name: values}`, whose points are the Cartesian product
    of the values in row-major order (the first name varies slowest, the last fastest,
    like nested `for` loops in the mapping's order), or a list of points (dicts) taken as
    given. Each task is the call `fn(point)`.

    Tasks run on `executor`: anything shaped like `concurrent.futures.Executor`
    (`submit(fn, *args)` returning a future with `.result()`). The default,
    `gdflow.InProcess`, runs them one after another in this process, with no
    new service. A `distributed.Client` is an executor (see
    `gdflow.local_cluster`); `scheduler="tcp://HOST:PORT"` connects to an
    existing Dask cluster for this call. Where a task runs elsewhere, it first gets this
    process's JAX numerics options (`jax_config="inherit"`: float64 on or off, matmul
    precision, rank promotion), so that it computes what it would compute here: with the
    same seeds the results are identical to the bit (on the same kind of device).

    A task that raises does not stop the others: it becomes a
    `gdflow.SweepFailure` with the exception's type, message and traceback text,
    and its value is `None`. (`KeyboardInterrupt` and `SystemExit` are not caught: they
    stop the sweep, after the finished tasks were cached.)

    With `cache`, each finished task's value is written at once (atomically) under the
    cache directory, keyed by the point, `config`, the task function's qualified name and
    gdflow's version; a rerun reads finished tasks instead of running them, so an
    interrupted sweep loses at most the tasks in flight. Failures are not cached: a rerun
    tries them again. The key does not see what `fn` closes over (a
    `functools.partial`'s bound problem, a global): name such inputs in `config` or in
    the points, or two sweeps of one function over different problems share entries. Cached and fresh values alike come back as read from the cache
    (JAX arrays as NumPy arrays), so a rerun returns the same types.

    **Arguments:**

    - `fn`: a function of one grid point (a dict). It must be picklable for executors in
      other processes: a module-level function, or a `functools.partial` of one (Dask
      also pickles closures and lambdas, by value).
    - `grid`: a mapping name -> sequence of values, or a list of dicts.
    - `executor`: where tasks run (default: in this process, in order).
    - `scheduler`: the address of a Dask scheduler to use instead of `executor`; the
      client is closed at the end (the cluster is left running).
    - `cache`: a directory (str or path), or a `gdflow.ResultCache`; `None` (the
      default) stores nothing.
    - `config`: a JSON-like value folded into every cache key (an experiment's sizes and
      settings); with a `ResultCache`, give it there instead.
    - `jax_config`: `"inherit"` (the default; see above), `None` (leave the workers' JAX
      as it is), or a dict of JAX options to set in the worker before each task.
    - `progress`: show a `tqdm` bar over tasks; `None` (the default) shows it when
      standard error is a terminal.
    - `desc`: the progress bar's label.

    **Returns:**

    A `gdflow.SweepResult`: `points`, `values`, `failures`, `cached`, `seconds`
    (each task's time inside its worker), `shape`; `.array()` and `.table()`.

    **Raises:**

    - `TypeError` / `ValueError`: a malformed `grid`, an `fn` that is not callable, an
      `executor` without `submit`, both `executor` and `scheduler`, grid values or
      `config` that cannot form a cache key, or a value the cache cannot store.

    **Example:**

    ```python
    >>> from gdflow import sweep  # gf.sweep
    >>> def square(p):
    ...     return p["x"] ** 2 + p["y"]
    >>> res = sweep(square, {"x": [1, 2, 3], "y": [0, 10]}, progress=False)
    >>> res.shape, res.values
    ((3, 2), (1, 11, 4, 14, 9, 19))
    >>> float(res.array()[2, 1])
    19.0
    ```
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function of one grid point, got {type(fn).__name__}.")
    points, shape, names = grid_points(grid)
    if scheduler is not None and executor is not None:
        raise ValueError("give either executor= or scheduler=, not both.")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must have a submit(fn, *args) method returning a future (a "
            "concurrent.futures.Executor or a distributed.Client), got "
            f"{type(executor).__name__}."
        )
    if isinstance(cache, ResultCache):
        if config is not None:
            raise ValueError("give config= to the ResultCache, not to sweep, when cache is one.")
        store = cache
    elif cache is None:
        if config is not None:
            raise ValueError("config= only matters with cache=; give a cache directory.")
        store = None
    elif isinstance(cache, str | os.PathLike):
        store = ResultCache(cache, config=config)
    else:
        raise TypeError(
            f"cache must be a directory path or a ResultCache, got {type(cache).__name__}."
        )
    if jax_config == "inherit":
        settings = jax_settings()
    elif jax_config is None or isinstance(jax_config, Mapping):
        settings = dict(jax_config) if jax_config else None
    else:
        raise TypeError(
            f"jax_config must be 'inherit', None or a dict of JAX options, got {jax_config!r}."
        )
    show = _want_progress(progress)

    n = len(points)
    values: list[Any] = [None] * n
    cached = [False] * n
    seconds: list[float | None] = [None] * n
    failures: dict[int, Failure] = {}
    name = _task_name(fn)
    keys = [store.key(p, name) for p in points] if store is not None else [None] * n
    todo = []
    for i, k in enumerate(keys):
        if store is not None and store.contains(k):
            values[i] = store.load(k)
            cached[i] = True
        else:
            todo.append(i)

    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=n - len(todo), desc=desc or "sweep", unit="task")

    def finish(i: int, outcome: _Outcome) -> None:
        seconds[i] = outcome.seconds
        if outcome.ok:
            if store is not None:
                store.store(keys[i], outcome.value, point=points[i])
                values[i] = store.load(keys[i])
            else:
                values[i] = outcome.value
        else:
            failures[i] = Failure(
                i, points[i], outcome.error_type, outcome.message, outcome.traceback
            )
        if bar is not None:
            bar.update(1)
            if failures:
                bar.set_postfix(failed=len(failures))

    task = _Task(fn, settings)
    own_client = None
    try:
        if scheduler is not None:
            executor = own_client = connect(scheduler)
        if executor is None or isinstance(executor, InProcess):
            # One at a time: each result is cached before the next task starts.
            run = executor or InProcess()
            for i in todo:
                finish(i, run.submit(task, points[i]).result())
        else:
            futures = [_submit(executor, task, points[i]) for i in todo]
            pending = set(range(len(futures)))
            try:
                for j, fut in _as_completed(executor, futures):
                    finish(todo[j], _collect(fut))
                    pending.discard(j)
            finally:
                _cancel(executor, [futures[j] for j in pending])
    finally:
        if bar is not None:
            bar.close()
        if own_client is not None:
            own_client.close()

    return SweepResult(
        points=tuple(points),
        values=tuple(values),
        failures=tuple(failures[i] for i in sorted(failures)),
        cached=tuple(cached),
        seconds=tuple(seconds),
        shape=shape,
        names=names,
    )
