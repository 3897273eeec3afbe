"""benchmarks/device_check.py runs at its tiny size on whatever device JAX finds (the CPU
here) and prints its table; its numbers match the closed form and the stored CPU values."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_tiny():
    env = dict(os.environ, PYTHONWARNINGS="error")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"^device: \w+ .*dtype float64; size tiny", out, re.M), out
    # The quadratic's gap against the NumPy closed form (1 - lr h)^K vs exp(-h t): an oracle.
    row = next(line for line in out.splitlines() if line.startswith("| quadratic gap"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    gap, exact = float(cells[1]), float(cells[2].split()[0])
    assert abs(gap - exact) <= 1e-6 * exact and cells[4] == "yes"
    for name in ("digits MLP GD loss", "digits MLP GF loss"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4] == "yes", row  # within tolerance of the stored CPU value
    for label in ("gf.gd", "gf.gradient_flow"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {label}"))
        steps_per_s = float(row.strip("|").split("|")[5])
        assert steps_per_s > 0
    assert "verdict: all key numbers within tolerance" in out
