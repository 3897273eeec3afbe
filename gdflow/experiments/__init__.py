"""The experiments: one module per text, each a pipeline config -> run -> figures, report.

`registry()` lists them; [`reproduce`][gdflow.experiments.reproduce] runs some and writes `DIR/NAME/*.png`,
`DIR/NAME/results.json` (with its `claims`) and `DIR/report.md`.
"""

from __future__ import annotations

import importlib

from ._base import (
    AtLeast as AtLeast,
    AtMost as AtMost,
    Claim as Claim,
    Close as Close,
    Experiment as Experiment,
    Greater as Greater,
    claims_table as claims_table,
    run_tasks as run_tasks,
)
from ._runner import (
    Interrupted as Interrupted,
    reproduce as reproduce,
    write_report as write_report,
)

# Order of the report. A module not written yet is skipped, so areas land independently.
_MODULES = (
    "modified_loss",
    "minibatch_flow",
    "gf_vs_gd",
    "splitting",
    "sgd_sde",
    "edge_of_stability",
)


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
