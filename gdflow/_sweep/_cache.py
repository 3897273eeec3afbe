"""The result cache of a sweep: one file per finished task, written atomically."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, final

import numpy as np

__all__ = ["ResultCache", "task_key"]

_FORMAT = 1  # bump when the file layout changes: old entries then miss, never misread


def _canonical(value: Any, where: str) -> Any:
    """`value` as plain JSON data with a single spelling (tuples as lists, NumPy scalars
    as Python numbers), so that equal parameters hash equally across processes."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        # JSON has no inf/nan; spell them so that they still hash (and differ from strings).
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"{where}: keys must be strings to form a cache key, got {k!r}; "
                    "rename the key or run without `cache=`."
                )
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"{where} = {value!r} (a {type(value).__name__}) cannot form a stable cache key: "
        "grid values and `config` must be JSON-like (numbers, strings, bools, None, lists, "
        "dicts). Put large or unhashable objects (problems, arrays) in the task function's "
        "closure, e.g. functools.partial(fn, problem=...), and sweep over plain labels."
    )


def task_key(point: dict, *, config: Any = None, task: str = "", version: str = "") -> str:
    """The cache key of one task: the SHA-256 of the canonical JSON of its parameters,
    the sweep's `config`, the task's name and gdflow's version.

    Stable across processes, machines and Python sessions (no `hash()`, which is salted).
    """
    doc = {
        "format": _FORMAT,
        "point": _canonical(point, "grid point"),
        "config": _canonical(config, "config"),
        "task": task,
        "version": version,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# --- values: pytrees of arrays as JSON + .npz ----------------------------------------------


class _Unsupported(TypeError):
    pass


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """JSON structure of `value`, with every array moved into `arrays` (by reference)."""
    if isinstance(value, np.generic):  # first: np.float64 is also a Python float
        if value.dtype == object:
            raise _Unsupported("object scalar")
        name = f"a{len(arrays)}"
        arrays[name] = np.asarray(value)
        return {"__scalar__": name}
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # Python's float repr round-trips exactly; inf/nan are spelled out.
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {"__tuple__": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unsupported("dict with non-string keys")
        if any(k.startswith("__") and k.endswith("__") for k in value):
            # Would collide with the tags above.
            return {"__dict__": [[k, _encode(v, arrays)] for k, v in value.items()]}
        return {k: _encode(v, arrays) for k, v in value.items()}
    if isinstance(value, np.ndarray) or _is_jax_array(value):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise _Unsupported("object array")
        name = f"a{len(arrays)}"
        arrays[name] = arr
        return {"__array__": name}
    raise _Unsupported(type(value).__name__)


def _decode(doc: Any, arrays) -> Any:
    if isinstance(doc, list):
        return [_decode(v, arrays) for v in doc]
    if isinstance(doc, dict):
        if len(doc) == 1:
            ((tag, v),) = doc.items()
            if tag == "__array__":
                return np.array(arrays[v])
            if tag == "__scalar__":
                return np.array(arrays[v])[()]
            if tag == "__float__":
                return float(v)
            if tag == "__tuple__":
                return tuple(_decode(x, arrays) for x in v)
            if tag == "__dict__":
                return {k: _decode(x, arrays) for k, x in v}
        return {k: _decode(v, arrays) for k, v in doc.items()}
    return doc


def _is_jax_array(value) -> bool:
    mod = type(value).__module__
    return mod.startswith("jax") and hasattr(value, "__array__") and hasattr(value, "dtype")


@final
class ResultCache:
    r"""A directory of finished tasks' results, one file per task, keyed by
    `gdflow.task_key` (the task's parameters, the sweep's `config`, the task
    function's name and gdflow's version).

    Values are stored as a NumPy `.npz` file holding every array of the value plus its
    structure as JSON: nested `dict` (string keys), `list`, `tuple`, `None`, `bool`,
    `int`, `float`, `str`, NumPy scalars and arrays, JAX arrays (read back as NumPy
    arrays). Such files are read with `allow_pickle=False`: loading them runs no code.
    Any other value (a [`gdflow.Trajectory`][], a custom class) is refused with a
    `TypeError` unless `pickle=True`, which stores it with `pickle` instead; **only read
    a pickled cache that you wrote yourself**, since unpickling can run arbitrary code.

    Each file is written to a temporary name in the same directory and moved into place
    with `os.replace`, which is atomic: a reader (or a rerun after a crash) sees a whole
    entry or none.

    **Arguments:**

    - `directory`: where the entries live (created if missing). The experiments use
      `OUT/NAME/cache/`.
    - `config`: a JSON-like value folded into every key (e.g. the experiment's sizes);
      change it and earlier entries no longer match.
    - `pickle`: allow values the `.npz` format cannot hold, stored with `pickle`.

    **Raises:**

    - `TypeError`: `directory` is not a path, or `config` is not JSON-like.
    """

    def __init__(self, directory, *, config: Any = None, pickle: bool = False):
        if not isinstance(directory, str | os.PathLike):
            raise TypeError(
                f"directory must be a path (str or os.PathLike), got {type(directory).__name__}."
            )
        if not isinstance(pickle, bool):
            raise TypeError(f"pickle must be True or False, got {pickle!r}.")
        _canonical(config, "config")  # fail now, not at the first finished task
        self.directory = Path(directory)
        self.config = config
        self.pickle = pickle

    def __repr__(self) -> str:
        return f"ResultCache({str(self.directory)!r}, config={self.config!r})"

    def key(self, point: dict, task: str = "") -> str:
        """The key of `point` for the task named `task` (see `gdflow.task_key`)."""
        from .. import __version__

        return task_key(point, config=self.config, task=task, version=__version__)

    def _paths(self, key: str) -> tuple[Path, Path]:
        sub = self.directory / key[:2]
        return sub / f"{key}.npz", sub / f"{key}.pkl"

    def contains(self, key: str) -> bool:
        """Whether a finished entry exists for `key`."""
        return any(p.exists() for p in self._paths(key))

    def load(self, key: str) -> Any:
        """The stored value of `key`. Raises `KeyError` when there is none."""
        npz, pkl = self._paths(key)
        if npz.exists():
            with np.load(npz, allow_pickle=False) as f:
                meta = json.loads(bytes(f["__meta__"]).decode())
                arrays = {k: f[k] for k in f.files if k != "__meta__"}
            return _decode(meta["value"], arrays)
        if pkl.exists():
            if not self.pickle:
                raise TypeError(
                    f"cache entry {pkl} was stored with pickle; open the cache with "
                    "pickle=True to read it (only for a cache you wrote yourself)."
                )
            with open(pkl, "rb") as fh:
                return pickle.load(fh)["value"]
        raise KeyError(key)

    def store(self, key: str, value: Any, *, point: dict | None = None) -> None:
        """Write `value` under `key` atomically (temporary file, then `os.replace`).

        The point and config are stored beside the value for inspection.

        **Raises:**

        - `TypeError`: `value` is not a pytree of arrays and plain Python data, and the
          cache was opened without `pickle=True`.
        """
        npz, pkl = self._paths(key)
        npz.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        try:
            doc = _encode(value, arrays)
        except _Unsupported as e:
            if not self.pickle:
                raise TypeError(
                    f"the task returned a value the cache cannot store safely ({e}); "
                    "return nested dicts/lists/tuples of arrays and numbers (e.g. "
                    "traj.params, traj.loss instead of a Trajectory), or open the cache "
                    "with pickle=True."
                ) from None
            payload = pickle.dumps({"point": point, "value": value}, protocol=5)
            self._write_atomic(pkl, payload)
            return
        meta = {"point": _canonical(point, "grid point"), "config": self.config, "value": doc}
        buf = io.BytesIO()
        meta_bytes = json.dumps(meta).encode()
        np.savez(buf, __meta__=np.frombuffer(meta_bytes, dtype=np.uint8), **arrays)
        self._write_atomic(npz, buf.getvalue())

    @staticmethod
    def _write_atomic(path: Path, payload: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        if not self.directory.exists():
            return 0
        return sum(1 for p in self.directory.glob("*/*") if p.suffix in (".npz", ".pkl"))
