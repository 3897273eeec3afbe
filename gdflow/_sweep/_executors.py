"""Where a sweep's tasks run: in-process (the default) or on a Dask cluster."""

from __future__ import annotations

import concurrent.futures as cf
import time
import traceback
from typing import Any, final

__all__ = ["InProcess", "connect", "executor", "jax_settings", "local_cluster"]

# The JAX options that change a computation's numbers. A task that runs elsewhere gets the
# caller's values of these before it starts, so that it computes what the caller would.
_NUMERIC_OPTIONS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion")


def jax_settings() -> dict[str, Any]:
    """The calling process's values of the JAX options that change numbers
    (`jax_enable_x64`, `jax_default_matmul_precision`, `jax_numpy_rank_promotion`)."""
    import jax

    return {name: getattr(jax.config, name) for name in _NUMERIC_OPTIONS}


@final
class InProcess(cf.Executor):
    """Runs each submitted call at once, in the calling process and thread.

    The default executor of `gdflow.sweep`: no new process or service, tasks in grid
    order, and a `KeyboardInterrupt` inside a task stops the sweep at once (finished tasks
    are already cached). `submit` returns a finished `concurrent.futures.Future`.
    """

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as e:  # BaseException (KeyboardInterrupt, SystemExit) propagates
            fut.set_exception(e)
        return fut


@final
class _Outcome:
    """What a task sends back: its value, or its exception as text, and its duration
    measured inside the worker. Exceptions travel as text because not every exception
    pickles, and the traceback is formatted where it happened."""

    __slots__ = ("ok", "value", "error_type", "message", "traceback", "seconds")

    def __init__(self, ok, value, error_type, message, tb, seconds):
        self.ok, self.value, self.seconds = ok, value, seconds
        self.error_type, self.message, self.traceback = error_type, message, tb

    def __reduce__(self):
        return (
            _Outcome,
            (self.ok, self.value, self.error_type, self.message, self.traceback, self.seconds),
        )


@final
class _Task:
    """`fn` wrapped to run one grid point anywhere: JAX configured first, the duration
    timed, exceptions caught and returned as an `_Outcome`."""

    __slots__ = ("fn", "settings")

    def __init__(self, fn, settings: dict[str, Any] | None):
        self.fn, self.settings = fn, settings

    def __reduce__(self):
        return (_Task, (self.fn, self.settings))

    def __call__(self, point: dict) -> _Outcome:
        if self.settings:
            import jax

            # Only what differs: in the caller's own process this is a no-op.
            for name, value in self.settings.items():
                if getattr(jax.config, name) != value:
                    jax.config.update(name, value)
        t0 = time.perf_counter()
        try:
            value = self.fn(point)
        except Exception as e:
            return _Outcome(
                False,
                None,
                f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins."),
                str(e),
                traceback.format_exc(),
                time.perf_counter() - t0,
            )
        return _Outcome(True, value, None, None, None, time.perf_counter() - t0)


def _need_distributed(what: str):
    try:
        import distributed
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise ImportError(
            f"{what} needs Dask's `distributed`: pip install dask distributed"
        ) from None
    return distributed


def local_cluster(
    n_workers: int,
    *,
    x64: bool | None = None,
    threads_per_worker: int = 1,
    env: dict[str, str] | None = None,
    **cluster_kwargs,
):
    r"""Start a Dask `LocalCluster` of `n_workers` worker processes and return a
    `distributed.Client` connected to it; closing the client stops the cluster.

    Each worker is a *spawned* Python process (Dask's
    `distributed.worker.multiprocessing-method` set to `"spawn"` while the cluster
    starts), so nothing is forked from a process in which JAX has already initialised.
    One thread per worker by default: a sweep's tasks are independent runs, and JAX
    already uses the cores inside one run. The dashboard (if `bokeh` is installed) is
    on a free port: `client.dashboard_link`.

    The client is an executor for `gdflow.sweep` (it has `submit`, and its futures
    have `result()`), and a context manager:

    ```python
    >>> from gdflow import local_cluster
    >>> with local_cluster(2) as client:  # doctest: +SKIP
    ...     res = gf.sweep(task, grid, executor=client)
    ```

    **Arguments:**

    - `n_workers`: number of worker processes (≥ 1).
    - `x64`: enable (`True`) or disable (`False`) float64 in every worker's JAX at start
      (through `JAX_ENABLE_X64` in the worker's environment, read when JAX is imported).
      `None` leaves the workers' default; `gdflow.sweep` then still gives each task
      the caller's setting (its `jax_config="inherit"`).
    - `threads_per_worker`: Dask threads per worker (tasks run at once in one worker).
    - `env`: extra environment variables for the workers (e.g. `XLA_FLAGS`).
    - `cluster_kwargs`: passed to `distributed.LocalCluster`.

    **Returns:**

    A `distributed.Client`.

    **Raises:**

    - `ValueError`: `n_workers` or `threads_per_worker` is not a positive integer.
    - `TypeError`: `x64` is not a bool or None.
    """
    for name, v in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if x64 is not None and not isinstance(x64, bool):
        raise TypeError(f"x64 must be True, False or None, got {x64!r}.")
    distributed = _need_distributed("local_cluster")
    import dask

    worker_env = dict(env or {})
    if x64 is not None:
        worker_env["JAX_ENABLE_X64"] = "1" if x64 else "0"
    kwargs = dict(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        # Port 0: the scheduler's HTTP server (health routes; the dashboard where bokeh is
        # installed) takes a free port, so a second cluster on the machine neither clashes
        # nor warns (the default 8787 warns when taken).
        dashboard_address=":0",
    )
    kwargs.update(cluster_kwargs)
    if worker_env:
        kwargs["env"] = {**kwargs.get("env", {}), **worker_env}
    # A Client given no address starts a LocalCluster that it owns: close() stops it.
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        return distributed.Client(set_as_default=False, **kwargs)


def connect(address: str, *, timeout: float = 60.0):
    """A `distributed.Client` for the Dask scheduler at `address` (e.g.
    `"tcp://10.0.0.5:8786"`), for `gdflow.sweep`'s `scheduler=`.

    **Raises:**

    - `TypeError`: `address` is not a string.
    - `OSError`: no scheduler answered within `timeout` seconds.
    """
    if not isinstance(address, str) or not address:
        raise TypeError(
            f"scheduler must be an address string like 'tcp://host:8786', got {address!r}."
        )
    distributed = _need_distributed("scheduler=")
    return distributed.Client(address, timeout=timeout, set_as_default=False)


def _is_dask_client(executor) -> bool:
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scheduler")


def _submit(executor, task: _Task, point: dict):
    if _is_dask_client(executor):
        # pure=False: two equal points are still two tasks (a task may be random).
        return executor.submit(task, point, pure=False)
    return executor.submit(task, point)


def _as_completed(executor, futures: list):
    """Yield `(index, future)` as the futures finish; in order if their kind is unknown."""
    index = {id(f): i for i, f in enumerate(futures)}
    if _is_dask_client(executor):
        import distributed

        for f in distributed.as_completed(futures, loop=executor.loop):
            yield index[id(f)], f
    elif all(isinstance(f, cf.Future) for f in futures):
        for f in cf.as_completed(futures):
            yield index[id(f)], f
    else:
        yield from enumerate(futures)


def _cancel(executor, futures: list) -> None:
    if not futures:
        return
    if _is_dask_client(executor):
        try:
            executor.cancel(futures)
        except Exception:  # the client may already be closing; nothing left to cancel
            pass
        return
    for f in futures:
        cancel = getattr(f, "cancel", None)
        if cancel is not None:
            cancel()


class executor:
    """The executor a command line asks for, as a context manager: in-process (`None`)
    by default, a fresh `local_cluster` of `workers` processes, or a client of the
    Dask scheduler at `scheduler`; what it started is closed on exit.

    For the `--workers N` / `--scheduler ADDRESS` flags:

    ```python
    >>> from gdflow import sweep_executor as executor, sweep
    >>> with executor(workers=None, scheduler=None) as ex:  # in-process
    ...     sweep(lambda p: abs(p["x"]), [{"x": -1}], executor=ex, progress=False).values
    (1,)
    ```

    **Arguments:**

    - `workers`: `None` or a positive number of local worker processes.
    - `scheduler`: `None` or a Dask scheduler address (`"tcp://HOST:8786"`).
    - `x64`: for a local cluster, float64 on or off in the workers at start (see
      `local_cluster`); tasks of `gdflow.sweep` get the caller's setting anyway.

    **Raises:**

    - `ValueError`: both `workers` and `scheduler`, or `workers` not a positive integer.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None, *,
                 x64: bool | None = None):  # fmt: skip
        if workers is not None and scheduler is not None:
            raise ValueError("give either workers= (a local cluster) or scheduler=, not both.")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):  # fmt: skip
            raise ValueError(f"workers must be a positive integer or None, got {workers!r}.")
        self.workers, self.scheduler, self.x64 = workers, scheduler, x64
        self.client = None

    def __enter__(self):
        if self.workers is not None:
            self.client = local_cluster(self.workers, x64=self.x64)
        elif self.scheduler is not None:
            self.client = connect(self.scheduler)
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
            self.client = None
        return False
