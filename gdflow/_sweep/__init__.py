"""Sweeps: grids of independent runs, in-process or on a Dask cluster, cached.

`gdflow.sweep` runs a function over a grid through any
`concurrent.futures.Executor`-shaped executor (in this process by default; a
`distributed.Client` for a Dask cluster, local or on SLURM through `dask-jobqueue`), in
grid order, with failures kept apart and each finished task cached so that a rerun skips
it. See `docs/sweeps.md`.

Everything is re-exported at the top level: `gf.sweep`, `gf.SweepResult`,
`gf.SweepFailure`, `gf.SweepError`, `gf.ResultCache`, `gf.local_cluster`,
`gf.sweep_executor`, `gf.InProcess`, `gf.connect`, `gf.task_key`, `gf.grid_points`.
"""

from ._cache import ResultCache as ResultCache, task_key as task_key
from ._executors import (
    InProcess as InProcess,
    connect as connect,
    executor as executor,
    jax_settings as jax_settings,
    local_cluster as local_cluster,
)
from ._sweep import (
    Failure as Failure,
    SweepError as SweepError,
    SweepResult as SweepResult,
    grid_points as grid_points,
    sweep as sweep,
)

# Top-level names that would be ambiguous beside the rest of gdflow.
SweepFailure = Failure
sweep_executor = executor
