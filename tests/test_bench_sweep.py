"""``benchmarks/sweep.py`` (K runs in one program against K separate runs) runs in its CPU
mode and writes its table, so ``make bench-gpu``'s sweep section cannot rot."""

from __future__ import annotations

import re

import pytest


@pytest.mark.slow
def test_sweep_benchmark_cpu_mode_writes_its_table(tmp_path):
    from benchmarks import sweep

    out = tmp_path / "sweep_cpu.md"
    text = sweep.main(["--mode", "cpu", "--members", "2", "--rounds", "1", "--out", str(out)])
    assert out.read_text() == text
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(float(c) > 0 for c in cells[1:4])  # separate, vmap, map (ms)
    assert re.fullmatch(r"[\d.]+x", cells[4]) and cells[6] in ("vmap", "map", "separate")
