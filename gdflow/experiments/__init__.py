"""The experiments: one module per text, each a reproducible figure and set of numbers.

``registry()`` lists them; :func:`reproduce` runs some and writes ``DIR/NAME/*.png``,
``DIR/NAME/results.json`` and ``DIR/report.md``.
"""

from __future__ import annotations

import importlib

from ._base import Context as Context, Experiment as Experiment, Result as Result
from ._runner import reproduce as reproduce, write_report as write_report

# Order of the report. A module not written yet is skipped, so areas land independently.
_MODULES = ("modified_loss", "minibatch_flow", "gf_vs_gd", "splitting")


def registry() -> dict[str, Experiment]:
    """All available experiments by command-line name, in report order."""
    found: dict[str, Experiment] = {}
    for mod in _MODULES:
        full = f"{__name__}.{mod}"
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as e:
            if e.name == full:
                continue
            raise
        exp = module.EXPERIMENT
        found[exp.name] = exp
    return found
