"""The main job for now: ``dibe-jax analyze`` and the gradient-analysis notebook."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dibe_jax import analysis, cli, metrics

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "gradient_analysis.ipynb"
SHARED_DATA = Path(
    os.environ.get("DIBE_JAX_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


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
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--out" in out.stdout


def test_gradient_checks_closed_forms_equal_autodiff():
    checks = analysis.gradient_checks(
        alphas=(0.0, 0.3, 0.7), gammas_ft=(0.75, 1.0), gammas_reg=(1.5, 2.0), n=40
    )
    assert [c.equation for c in checks] == ["19"] * 3 + ["24"] * 2 + ["25"] * 2
    for c in checks:  # autodiff of the loss, not a copy of the closed form
        assert c.closed.shape == c.autodiff.shape == (40,) and np.all(np.isfinite(c.autodiff))
    diffs = analysis.max_differences(checks)
    assert sorted(diffs) == ["19", "24", "25"]
    assert all(rel < 1e-5 for _, rel in diffs.values()), diffs
    # Fig. 5: a larger α gives misses a steeper (more negative) gradient at every p̂.
    eq19 = [c.autodiff for c in checks if c.equation == "19"]
    assert np.all(eq19[1] < eq19[0]) and np.all(eq19[2] < eq19[1])
    # The parameters reach the curves: λ scales Eq. 19 linearly.
    half = analysis.gradient_checks(alphas=(0.3,), lam=0.125, gammas_ft=(), gammas_reg=(), n=40)
    np.testing.assert_allclose(half[0].autodiff, checks[1].autodiff / 2, rtol=1e-5)


def test_max_differences_reports_a_wrong_closed_form():
    c = analysis.GradientCheck("19", "x", np.ones(3), np.array([1.0, 2.0, 4.0]), np.ones(3))
    assert analysis.max_differences([c]) == {"19": (3.0, 0.75)}


def test_fig_gradient_checks_has_a_panel_pair_per_equation():
    checks = analysis.gradient_checks(alphas=(0.3,), gammas_ft=(0.75,), gammas_reg=(1.5,), n=10)
    fig = analysis.fig_gradient_checks(checks)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 6 and sum("Eq." in t for t in titles) == 3


def test_fig_oii_map_values_and_table1_points():
    fig = analysis.fig_oii_map(tp=2.0, fp_max=6.0, fn_max=6.0, n=61)
    ax = fig.axes[0]
    values = np.asarray(ax.collections[0].get_array()).reshape(61, 61)  # rows: FN, cols: FP
    assert values.min() > -1 and values.max() < 1
    fp = fn = np.linspace(0, 6, 61)
    i, j = int(np.argmin(abs(fn - 5))), int(np.argmin(abs(fp - 1)))  # Table 1, row 7: 2:1:5
    assert values[i, j] == pytest.approx(0.667, abs=1e-3)
    np.testing.assert_allclose(np.diag(values), 0, atol=1e-6)  # FP = FN
    points = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(points) == len(analysis.TABLE_1)
    other_tp = analysis.fig_oii_map(tp=5.0, n=11).axes[0]
    assert not [line for line in other_tp.get_lines() if line.get_marker() == "o"]


def test_fig_training_curves_one_line_per_run():
    runs = {
        "FT": [{"epoch": e, "iou": 0.1 * e, "oii": -0.2} for e in (1, 2, 3)],
        "DIBE": [{"epoch": e, "iou": 0.2 * e, "oii": 0.1} for e in (1, 2, 3)],
    }
    fig = analysis.fig_training_curves(runs, keys=("iou", "oii"), title="t")
    iou_ax, oii_ax = fig.axes
    assert [line.get_label() for line in iou_ax.get_lines()] == ["FT", "DIBE"]
    np.testing.assert_allclose(iou_ax.get_lines()[1].get_ydata(), [0.2, 0.4, 0.6])
    assert oii_ax.get_ylim()[0] < -1 < 1 < oii_ax.get_ylim()[1]


def test_fig_mask_overlays_titles_and_colours():
    images = np.full((2, 8, 8, 3), 0.5, np.float32)
    masks = np.zeros((2, 8, 8, 1), np.uint8)
    masks[:, 0, :4] = 1  # 4 defect pixels per image
    pred = np.zeros((2, 8, 8), bool)
    pred[:, 0, :2] = True  # 2 hits ...
    pred[:, 7, :2] = True  # ... 2 false alarms, 2 misses: IoU 2/6, OII 0
    fig = analysis.fig_mask_overlays(images, masks, {"A": pred, "B": masks[..., 0]})
    axes = np.array(fig.axes).reshape(2, 3)
    assert axes[0, 1].get_title() == "A\nIoU 0.33  OII +0.00"
    assert axes[1, 2].get_title() == "IoU 1.00  OII +0.00"
    rgb = axes[0, 1].get_images()[0].get_array()
    assert tuple(rgb[0, 0]) == pytest.approx((0.1, 0.85, 0.1))  # hit: green
    assert tuple(rgb[7, 0]) == pytest.approx((1.0, 0.15, 0.1))  # false alarm: red
    assert tuple(rgb[0, 3]) == pytest.approx((0.15, 0.45, 1.0))  # miss: blue
    expected = metrics.oii(2.0, 0.0, 2.0)  # a prediction with misses only: OII = k > 0
    only_hits = np.zeros((2, 8, 8), bool)
    only_hits[:, 0, :2] = True
    fig = analysis.fig_mask_overlays(images, masks, {"C": only_hits})
    assert f"OII {float(expected):+.2f}" in fig.axes[1].get_title()


def _images(nb) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def _text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            out.append(o.get("text", "") + o.get("data", {}).get("text/markdown", ""))
    return "\n".join(out)


# Figures of sections 1-3 (Fig. 4, OII map, Fig. 5, gradient checks, Figs. 12, 13, 15) and of
# the real-data section 4 (IoU/OII curves, predicted masks).
ANALYTIC_FIGURES, DATA_FIGURES = 7, 2
LOSS_LABELS = ("FT", "DIBE_Reg", "DIBE")
RUN_LINE = re.compile(r"^\s*(\S+): +\d+ s; epoch (\d+): IoU ([\d.]+) .* OII ([+-][\d.]+)$", re.M)


def test_stored_notebook_has_its_outputs():
    """The repository shows the figures: the notebook is stored executed, full setting."""
    nbformat = pytest.importorskip("nbformat")
    assert NOTEBOOK.stat().st_size < 2_000_000
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "DIBE_JAX_NOTEBOOK_FAST" in first_code.source  # the one parameter cell is first
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert _images(nb) == ANALYTIC_FIGURES + DATA_FIGURES
    text = _text(nb)
    assert "FAST smoke setting" not in text and "SKIPPED" not in text
    assert sorted(m[0] for m in RUN_LINE.findall(text)) == sorted(LOSS_LABELS)


@pytest.mark.slow
def test_notebook_executes(tmp_path, monkeypatch):
    """Run the notebook in its fast setting (about 2 minutes on 2 CPU cores) and check what
    it shows: every figure, Eq. 19/24/25 equal to jax.grad, one training per loss."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DIBE_JAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("DIBE_JAX_NOTEBOOK_RESULTS", str(tmp_path))
    monkeypatch.setenv("DIBE_JAX_DATA", str(SHARED_DATA))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = _text(nb)
    assert "Table 1: 10 of 10 rows equal the paper" in text
    found = re.findall(
        r"Eq\. (\d+) vs jax\.grad: max \|diff\| = (\S+), max relative diff = (\S+)", text
    )
    assert sorted(eq for eq, _, _ in found) == ["19", "24", "25"]
    for _, _, rel in found:
        assert float(rel) < 1e-5
    have_data = (SHARED_DATA / "crackforest" / "groundTruth").is_dir()
    if not have_data:
        assert "SKIPPED section 4" in text
        assert _images(nb) == ANALYTIC_FIGURES
        return
    assert "FAST smoke setting" in text
    assert _images(nb) == ANALYTIC_FIGURES + DATA_FIGURES
    runs = {
        label: (int(e), float(iou), float(oii)) for label, e, iou, oii in RUN_LINE.findall(text)
    }
    assert sorted(runs) == sorted(LOSS_LABELS)
    for epoch, iou, oii in runs.values():
        assert epoch == 2 and 0 <= iou <= 1 and -1 <= oii <= 1 and math.isfinite(oii)
    for label in LOSS_LABELS:
        assert (tmp_path / label / "metrics.jsonl").is_file()  # the runs went to RESULTS
