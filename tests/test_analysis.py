"""The main job for now: ``dibe-jax analyze`` and the gradient-analysis notebook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dibe_jax import analysis, cli

ROOT = Path(__file__).resolve().parents[1]


def test_cli_analyze_writes_table_and_figures(tmp_path, capsys):
    assert cli.main(["analyze", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| 4 | 2:5:1 | 5 | 0.250 | 0.286 | -0.667 |" in printed
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["table1.md", *analysis.FIGURES])
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_help_and_losses(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert cli.main(["losses"]) == 0
    assert "dibe_reg" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "dibe_jax.cli", "analyze", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--out" in out.stdout


def test_notebook_executes():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "gradient_analysis.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()  # fmt: skip
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]  # fmt: skip
    assert len(images) == 5  # Figs. 4, 5, 12, 13, 15
