"""Progress meters: host-side objects the engine updates between compiled chunks.

The engine runs a long computation as a sequence of compiled chunks (each a fraction of a
second) and tells the meter how far it got after each one, so a meter needs no callback
from inside the compiled code and no state outside its own instance.
"""

from __future__ import annotations

import abc
import sys

import equinox as eqx

__all__ = ["AbstractProgressMeter", "NoProgressMeter", "TqdmProgressMeter", "resolve_meter"]


class AbstractProgressMeter(eqx.Module):
    """Base class of progress meters. Subclasses are final.

    The engine calls `start(total, desc)` once, `update(handle, done)` after every chunk
    and `close(handle)` once, where `handle` is what `start` returned.
    """

    @abc.abstractmethod
    def start(self, total: int, desc: str):
        """Begin a meter over `total` units; return a handle for `update` and `close`."""

    @abc.abstractmethod
    def update(self, handle, done: int) -> None:
        """Report that `done` of the `total` units are finished."""

    @abc.abstractmethod
    def close(self, handle) -> None:
        """Finish the meter."""


class NoProgressMeter(AbstractProgressMeter):
    """Shows nothing."""

    def start(self, total: int, desc: str):
        del total, desc
        return None

    def update(self, handle, done: int) -> None:
        del handle, done

    def close(self, handle) -> None:
        del handle


class TqdmProgressMeter(AbstractProgressMeter):
    """A tqdm bar over optimiser steps, updated after every compiled chunk (a few per second).

    **Arguments:**

    - `leave`: keep the finished bar on screen.
    """

    leave: bool = eqx.field(static=True, default=False)

    def start(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="step", leave=self.leave, file=sys.stderr)

    def update(self, handle, done: int) -> None:
        handle.n = int(done)
        handle.refresh()

    def close(self, handle) -> None:
        handle.close()


def resolve_meter(progress) -> AbstractProgressMeter:
    """A meter from `progress`: `True`/`False` or a meter instance."""
    if isinstance(progress, AbstractProgressMeter):
        return progress
    if progress is None or isinstance(progress, bool):
        return TqdmProgressMeter() if progress else NoProgressMeter()
    raise TypeError(
        "`progress` must be True, False or a progress meter such as "
        f"gf.TqdmProgressMeter(); got {progress!r}."
    )
