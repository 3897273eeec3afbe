"""What an experiment is, what it is given, and what it returns."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SIZES = ("quick", "default", "full")


@dataclasses.dataclass(frozen=True)
class Result:
    """What an experiment reports.

    - ``numbers``: JSON-serialisable measurements (nested dicts / lists / floats); written
      to ``results.json``.
    - ``figures``: paths of the figures written, relative to the experiment's folder.
    - ``text``: Markdown for ``report.md``: what was run, the numbers that matter in
      tables, and how they compare with the text.
    """

    numbers: dict
    figures: list[str]
    text: str


@dataclasses.dataclass
class Context:
    """What an experiment is given.

    - ``out``: the experiment's own folder (``DIR/NAME``), created before ``run``.
    - ``size``: ``"quick"`` (a CI smoke run), ``"default"`` (minutes) or ``"full"``
      (the texts' own sizes).
    - ``data_dir``: where the user keeps IDX data sets (``None``: bundled digits only).
    - ``seeds``: number of seeds asked for on the command line (``None``: the
      experiment's default for the size).
    - ``progress``: whether to draw progress bars.
    """

    out: Path
    size: str = "default"
    data_dir: Path | None = None
    seeds: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"`size` must be one of {SIZES}; got {self.size!r}.")
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def pick(self, *, quick, default, full=None):
        """The value for this run's size (``full`` falls back to ``default``)."""
        if self.size == "quick":
            return quick
        if self.size == "full" and full is not None:
            return full
        return default

    def num_seeds(self, *, quick: int, default: int, full: int | None = None) -> int:
        """``--seeds`` if given, else the experiment's choice for the size."""
        if self.seeds is not None:
            return self.seeds
        return self.pick(quick=quick, default=default, full=full)

    def track(self, iterable: Iterable, desc: str = "", total: int | None = None):
        """Iterate with a progress bar (on stderr) when ``progress`` is on."""
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr)

    def savefig(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``out/name`` (PNG, 150 dpi), close it, return ``name``."""
        import matplotlib.pyplot as plt

        path = self.out / name
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
        return name


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A reproducible claim of one of the texts.

    - ``name``: the command-line name (``gdflow reproduce NAME``).
    - ``title``: one line for listings and the report.
    - ``source``: the text it reproduces (a file in ``shared/sources``) with its authors.
    - ``summary``: what it shows, two or three sentences.
    - ``run``: ``run(ctx: Context) -> Result``.
    """

    name: str
    title: str
    source: str
    summary: str
    run: Callable[[Context], Result]


def jsonable(obj: Any) -> Any:
    """Convert NumPy / JAX scalars and arrays inside ``obj`` to plain JSON values."""
    import numpy as np

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
    """A Markdown table; floats formatted with ``fmt``, ``|`` inside cells escaped (so a
    norm such as ``|θ - θ*|`` stays in its column)."""

    def cell(v):
        text = fmt.format(v) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
