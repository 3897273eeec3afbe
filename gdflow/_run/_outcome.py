"""How a run ended: an enumeration of outcomes, and what the caller is told."""

from __future__ import annotations

import warnings

import equinox as eqx

__all__ = ["RESULTS", "DivergenceError", "DivergenceWarning", "RunInterrupted", "report"]


class RESULTS(eqx.Enumeration):
    """The outcome of a discrete run (traced inside the engine, like diffrax's `RESULTS`).

    A run stops at the first step that is not `successful`; the state it stops in is the
    last one whose parameters were finite.
    """

    successful = ""
    nonfinite_loss = "non-finite loss"
    nonfinite_gradient = "non-finite gradient (the loss was finite)"
    nonfinite_params = "non-finite parameters after the step"


class DivergenceWarning(RuntimeWarning):
    """A run met a non-finite loss, gradient or state and stopped early."""


class DivergenceError(RuntimeError):
    """A run stopped early (see [`gdflow.DivergenceWarning`][]).

    `.trajectory` holds what was computed before it; `.result` the outcome.
    """

    def __init__(self, message: str, trajectory, result=None):
        super().__init__(message)
        self.trajectory = trajectory
        self.result = result


class RunInterrupted(KeyboardInterrupt):
    """A run was interrupted (Ctrl-C); `.trajectory` keeps the points saved before it."""

    def __init__(self, message: str, trajectory):
        super().__init__(message)
        self.trajectory = trajectory


_ACTIONS = ("warn", "raise", "ignore")


def report(msg: str, traj, on_divergence: str, result=None, stacklevel: int = 3) -> None:
    """Act on a run that stopped early as `on_divergence` says: raise, warn or stay silent."""
    if on_divergence == "raise":
        raise DivergenceError(msg, traj, result)
    if on_divergence == "warn":
        warnings.warn(msg, DivergenceWarning, stacklevel=stacklevel + 1)
