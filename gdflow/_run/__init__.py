"""The one engine every discrete method runs through (see `_engine.py`)."""

from ._compile import compile_timed as compile_timed, run_compiled as run_compiled
from ._engine import run as run
from ._outcome import (
    RESULTS as RESULTS,
    DivergenceError as DivergenceError,
    DivergenceWarning as DivergenceWarning,
    RunInterrupted as RunInterrupted,
    report as report,
)
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
)
