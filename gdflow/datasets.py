"""Data sets: scikit-learn's bundled digits, and MNIST / Fashion-MNIST from IDX files.

Nothing is downloaded. MNIST and Fashion-MNIST are read from the IDX files a user already
has (``train-images-idx3-ubyte.gz`` and friends, gzipped or raw) in a directory they
name. Every loader returns NumPy arrays ``(X, y)``: ``X`` float64 of shape ``(n, d)``
scaled to ``[0, 1]``, ``y`` int64 class labels of shape ``(n,)``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["digits", "read_idx", "mnist", "fashion_mnist", "find_idx_dir"]

# IDX type codes (http-less summary of the format: magic = 0, 0, type, ndim; then ndim
# big-endian uint32 sizes; then the data, big-endian, row-major).
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _select(X, y, classes, where: str):
    if classes is None:
        return X, y
    classes = [int(c) for c in classes]
    present = set(np.unique(y).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(
            f"`classes` {missing} do not occur in {where}; present: {sorted(present)}."
        )
    keep = np.isin(y, classes)
    X, y = X[keep], y[keep]
    # Relabel to 0..len(classes)-1 in the order given, so two classes are 0/1 labels.
    lookup = {c: i for i, c in enumerate(classes)}
    return X, np.array([lookup[int(v)] for v in y], dtype=np.int64)


def digits(classes=None, *, limit: int | None = None):
    """scikit-learn's bundled 8×8 digits (1797 images, 64 features scaled to [0, 1]).

    **Arguments:**

    - ``classes``: keep only these digits, relabelled ``0..len(classes)-1`` in the
      given order (``classes=(0, 1)`` gives a binary problem with labels 0 and 1).
    - ``limit``: keep the first ``limit`` examples (after selecting classes).

    **Returns:** ``(X, y)``, ``X`` float64 ``(n, 64)``, ``y`` int64 ``(n,)``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    X, y = _select(X, y, classes, "the digits data")
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


def read_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a NumPy array of its stored type.

    **Raises:** ``ValueError`` naming the file when it cannot be read as IDX: a wrong
    magic number, an unknown type code, zero dimensions, or a size that does not match
    its header (a truncated or padded file). ``FileNotFoundError`` when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read the file ({e}); is it a complete .gz?") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes).")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex()}; IDX starts with 0000)."
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}.")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares zero dimensions.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (needs {header} bytes, has {len(raw)}).")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {what}: header dims {dims} need {expected} bytes, file has "
            f"{len(raw)}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(directory: Path, stem: str) -> Path:
    candidates = [
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ]
    for c in candidates:
        if (directory / c).is_file():
            return directory / c
    raise FileNotFoundError(
        f"{directory}: no {stem}[.gz] here. Put the IDX files of the data set in this "
        "directory (gdflow never downloads them)."
    )


def _load_pair(directory, split: str, classes, limit, what: str):
    if split not in _NAMES:
        raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}.")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {directory}")
    img_path = _find(directory, _NAMES[split][0])
    lab_path = _find(directory, _NAMES[split][1])
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3:
        raise ValueError(f"{img_path}: expected images (n, rows, cols); got dims {images.shape}.")
    if labels.ndim != 1:
        raise ValueError(f"{lab_path}: expected labels (n,); got dims {labels.shape}.")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds "
            f"{labels.shape[0]} labels; the two files must come from the same split."
        )
    X = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    y = labels.astype(np.int64)
    X, y = _select(X, y, classes, str(lab_path))
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


def mnist(directory, classes=None, *, split: str = "train", limit: int | None = None):
    """MNIST from IDX files in ``directory`` (``train-images-idx3-ubyte[.gz]`` etc.).

    ``classes`` and ``limit`` as in :func:`digits`; ``split`` is ``"train"`` or
    ``"test"``. Returns ``(X, y)`` with ``X`` ``(n, 784)`` in [0, 1].
    """
    return _load_pair(directory, split, classes, limit, "MNIST")


def fashion_mnist(directory, classes=None, *, split: str = "train", limit: int | None = None):
    """Fashion-MNIST from IDX files in ``directory`` (same file names as MNIST)."""
    return _load_pair(directory, split, classes, limit, "Fashion-MNIST")


def find_idx_dir(data_dir, name: str) -> Path | None:
    """Where under ``data_dir`` the IDX files of data set ``name`` live, or ``None``.

    ``name`` is ``"mnist"`` or ``"fashion-mnist"``; looked up as ``data_dir/name``,
    ``data_dir/name`` with ``_`` for ``-``, and (for ``"mnist"``) ``data_dir`` itself.
    """
    if data_dir is None:
        return None
    base = Path(os.fspath(data_dir))
    options = [base / name, base / name.replace("-", "_"), base / name.replace("-", "")]
    if name == "mnist":
        options.append(base)
    for d in options:
        if d.is_dir() and any(
            (d / (s + ext)).is_file() for s in _NAMES["train"][:1] for ext in ("", ".gz")
        ):
            return d
    return None
