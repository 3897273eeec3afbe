"""The command end to end: `gdflow reproduce all --quick` writes figures, results and a report."""

import json
import subprocess
import sys

import pytest

from gdflow.cli import main
from gdflow.experiments import registry


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry():
        assert name in out


def test_reproduce_all_quick(tmp_path):
    out = tmp_path / "res"
    assert main(["reproduce", "all", "--quick", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    names = list(registry())
    assert "modified-loss" in names
    for name in names:
        record = json.loads((out / name / "results.json").read_text())
        assert record["status"] == "ok", record.get("traceback")
        assert record["figures"], f"{name} wrote no figure"
        for fig in record["figures"]:
            assert (out / name / fig).stat().st_size > 1000
            assert f"({name}/{fig})" in report
        assert record["title"] in report


def test_bad_arguments(tmp_path, capsys):
    assert main(["reproduce", "no-such", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["reproduce", "modified-loss", "--out", str(tmp_path), "--seeds", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["reproduce", "all", "--quick", "--full"])
    missing = tmp_path / "nope"
    assert (
        main(["reproduce", "modified-loss", "--out", str(tmp_path), "--data", str(missing)]) == 2
    )


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "gdflow", "list"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "modified-loss" in done.stdout


def test_md_table_keeps_norm_bars_in_their_column():
    import re

    from gdflow.experiments._base import md_table

    table = md_table(["net", "|θ(T) − θ0|"], [["linear", 6.367], ["|a|", 0.5]])
    for line in table.splitlines():
        # unescaped bars: one per column boundary (3 for two columns)
        assert len(re.findall(r"(?<!\\)\|", line)) == 3, line
    assert "\\|θ(T) − θ0\\|" in table and "6.367" in table
