"""``experiments/multiclass.py``: its quick mode end to end (five losses on tiny in-memory
3-class synthetic data, in-process), the report on MTSDD-shaped records, and the entry point
run as a file and as a module."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import common, multiclass

ROOT = Path(__file__).resolve().parents[1]
MTSDD = ("background", "blowhole", "break", "crack", "fray", "uneven")


def _row(text: str, section: str, label: str) -> list[str]:
    """The cells of the row of ``label`` in the first table after the heading ``section``."""
    table = text.split(f"## {section}")[1].split("\n## ")[0]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} under {section!r}")


@pytest.mark.slow
def test_quick_trains_every_loss_and_reports_every_class(tmp_path: Path) -> None:
    assert multiclass.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "multiclass.md").read_text()
    runs = {p.parts[-3]: p for p in (tmp_path / "runs").rglob("metrics.jsonl")}
    assert sorted(runs) == sorted(multiclass.LOSSES)
    iou_head = "| loss | mIoU | mIoU defects | IoU background | IoU crack | IoU spot |"
    oii_head = "| loss | macro OII | mean abs OII | OII background | OII crack | OII spot |"
    assert iou_head in text and oii_head in text
    for loss in multiclass.LOSSES:
        label = multiclass.LABELS[loss]
        record = json.loads(runs[loss].read_text().splitlines()[-1])
        assert len(record["confusion_matrix"]) == 3  # three classes, three rows
        # one seed, one evaluation: every last-3 cell is that evaluation's value, sd 0
        iou = _row(text, "mIoU and IoU per class", label)
        expected = [record["miou"], record["miou_defects"]]
        expected += [record[f"iou/{c}"] for c in multiclass.QUICK_CLASSES]
        assert iou == [f"{v:.3f} ± 0.000" for v in expected]
        oii = _row(text, "OII per class", label)
        assert oii[0] == f"{record['macro_oii']:+.3f} ± 0.000"
        assert oii[2:] == [f"{record[f'oii/{c}']:+.3f} ± 0.000" for c in multiclass.QUICK_CLASSES]
    comparison = text.split("class by class")[1]
    for base in ("CE", "FT"):
        for c in ("crack (rare)", "spot"):  # MTSDD's rare classes are marked where they occur
            assert (
                sum(
                    line.startswith(f"| {c} |") and f"| DIBE (one-vs-rest) − {base} |" in line
                    for line in comparison.splitlines()
                )
                == 1
            ), (c, base)
    summary = json.loads((tmp_path / "multiclass.json").read_text())
    assert [s["loss"] for s in summary] == list(multiclass.LOSSES)
    assert all(s["seeds"] == [0] and s["wall_seconds"] > 0 for s in summary)
    assert all(0.0 <= s["iou/spot_last3"][0] <= 1.0 for s in summary)

    # A second call reads the finished runs back: nothing is trained, same table.
    before = {p: p.stat().st_mtime_ns for p in runs.values()}
    assert multiclass.main(["--quick", "--out", str(tmp_path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in runs.values()} == before
    again = (tmp_path / "multiclass.md").read_text()
    assert again.split("Script wall time")[0] == text.split("Script wall time")[0]


def _records(values: dict[str, float], n: int = 4) -> list[dict[str, float]]:
    """``n`` evaluations of an MTSDD record, each class's IoU from ``values`` (+ epoch)."""
    out = []
    for e in range(1, n + 1):
        r: dict[str, float] = {"epoch": 2 * e, "miou": 0.5 + 0.01 * e, "macro_oii": 0.1}
        for c in MTSDD:
            r[f"iou/{c}"] = values.get(c, 0.5) + 0.01 * e
            r[f"oii/{c}"] = -0.2
            r[f"support/{c}"] = 100
        out.append(r)
    return out


def test_report_compares_dibe_with_ce_and_ft_on_the_rare_classes() -> None:
    def result(loss: str, fray: list[float]) -> common.CellResult:
        runs = [_records({"fray": f, "crack": 0.3}) for f in fray]
        cell = common.Cell(multiclass.DATASET, "unet", loss)
        return common.CellResult(runs, list(range(len(fray))), 60.0 * len(fray), cell=cell)

    results = {
        "softmax_cross_entropy": result("softmax_cross_entropy", [0.10, 0.12, 0.11]),
        "focal_tversky_multiclass": result("focal_tversky_multiclass", [0.30, 0.05, 0.20]),
        "dibe_multiclass": result("dibe_multiclass", [0.40, 0.42, 0.38]),
    }
    text = multiclass.report(results, multiclass.MODES["medium"])
    for c in MTSDD:
        assert f"IoU {c}" in text and f"OII {c}" in text
    # Fray: DIBE last-3 mean 0.40 + 0.03, CE 0.11 + 0.03; the pooled sds are small
    ce = next(line for line in text.splitlines() if line.startswith("| fray (rare) |"))
    assert "| DIBE (one-vs-rest) − CE | +0.290 |" in ce and "| 3 of 3 | higher |" in ce
    ft = [line for line in text.splitlines() if line.startswith("| fray (rare) |")][1]
    assert "− FT | +0.217 |" in ft and "| 3 of 3 | higher |" in ft
    crack = [line for line in text.splitlines() if line.startswith("| crack (rare) |")]
    assert all("| +0.000 |" in line and "equal (within the spread)" in line for line in crack)
    assert _row(text, "mIoU: last-3", "DIBE (one-vs-rest)")[-2:] == ["180", "60"]
    cmp = multiclass.compare(results, "dibe_multiclass", "focal_tversky_multiclass", "iou/fray")
    assert cmp["diff"] == pytest.approx(0.4 - 0.55 / 3, abs=1e-9) and cmp["wins"] == 3
    assert cmp["sd"] == pytest.approx(results["focal_tversky_multiclass"].last3("iou/fray").std)


def test_medium_config_is_the_multiclass_mtsdd_run() -> None:
    mode = multiclass.MODES["medium"]
    config = multiclass.make_config("dibe_multiclass", mode, seed=2)
    assert config.data.dataset.startswith("magnetic_tile/all in memory") and config.seed == 2
    assert "no MT_Free image (train 238 / validation 154 images)" in config.data.dataset
    eighth = multiclass.make_config("dibe_multiclass", mode, free_every=8).data.dataset
    assert eighth.endswith("one MT_Free image in 8 (train 310 / validation 202 images)")
    assert (config.epochs, config.batch_size, config.data.image_size) == (
        mode.epochs,
        8,
        mode.image_size,
    )
    assert mode.epochs // mode.eval_every >= 3  # the last-3 statistic needs three evaluations
    full = multiclass.make_config("unified_focal", multiclass.MODES["full"])
    assert full.data.dataset == "magnetic_tile/all" and full.data.image_size == 224
    assert Path(full.data.manual_dir) == common.data_root()
    assert multiclass.make_config("unified_focal", mode, free_every=1).data.dataset == (
        "magnetic_tile/all"
    )
    from dibe_jax import losses

    for loss in multiclass.LOSSES:
        assert "multiclass" in losses.info(loss).tasks, loss
    assert doctest.testmod(multiclass).failed == 0


@pytest.mark.slow  # builds the whole 6-class MTSDD dataset from the real files
@pytest.mark.skipif(
    not (common.data_root() / "magnetic_tile").is_dir(), reason="MTSDD not in ../shared/data"
)
def test_mtsdd_subset_keeps_every_defect_image_and_one_free_image_in_k(
    tmp_path: Path, monkeypatch
) -> None:
    import numpy as np

    monkeypatch.setenv("DIBE_JAX_TFDS", str(tmp_path))  # the TFDS build goes here
    multiclass.mtsdd_sources.cache_clear()
    data = multiclass.mtsdd_sources(8)
    multiclass.mtsdd_sources.cache_clear()
    for split, n in multiclass.SPLIT_IMAGES.items():
        names = [ex["file_name"] for ex in data[split]]
        free = [x for x in names if x.startswith("MT_Free/")]
        assert len(names) - len(free) == n["defect"] and len(free) == -(-n["free"] // 8)
        for ex in data[split][:: len(names) // 20]:  # about 20 masks per split
            cls = ex["file_name"].split("/")[0][3:].lower()
            ids = set(np.unique(ex["mask"]).tolist())
            assert ids <= {0, multiclass.MTSDD_CLASSES.index(cls) if cls != "free" else 0}
    fray = [ex for ex in data["train"] if ex["file_name"].startswith("MT_Fray/")]
    assert len(fray) == 20 and all(4 in np.unique(ex["mask"]) for ex in fray)
    defects = multiclass.mtsdd_sources(0)  # the medium mode's data: no Free image
    multiclass.mtsdd_sources.cache_clear()
    assert {k: len(v) for k, v in defects.items()} == {"train": 238, "validation": 154}
    assert not any(ex["file_name"].startswith("MT_Free/") for ex in defects["validation"])


@pytest.mark.slow  # two fresh interpreters (as tests/test_experiments.py's for every script)
def test_runs_as_a_file_and_as_a_module() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for cmd in (["experiments/multiclass.py"], ["-m", "experiments.multiclass"]):
        out = subprocess.run(
            [sys.executable, *cmd, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "usage:" in out.stdout and "--quick" in out.stdout and "--losses" in out.stdout
