"""End-to-end tests of the experiment scripts: every ``--quick`` mode, in-process, on CPU.

Quick mode trains U-Net of width 4 for one epoch on tiny in-memory synthetic data (no file
needed). The scripts' quick defaults share losses and hyperparameters, so with the test
suite's persistent compilation cache (``conftest.py``) most programs compile once.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import re
from pathlib import Path

import pytest

from experiments import (
    common,
    convergence,
    losses_by_dataset,
    losses_by_model,
    oii_curves,
    oii_guidance,
    table1_oii,
)

NUMBER = re.compile(r"[-+]?\d+\.\d{3}")


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUMBER.findall(text)]


def test_table1_reproduces_the_paper(tmp_path: Path, capsys) -> None:
    assert table1_oii.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "table1.md").read_text()
    assert "reproduced to three decimals" in text
    assert "-0.667" in text and "0.292" in text  # rows 4 and 6 of Table 1
    assert table1_oii.largest_difference() <= 5e-4


@pytest.mark.slow
def test_losses_by_dataset_quick(tmp_path: Path) -> None:
    assert losses_by_dataset.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "table5.md").read_text()
    assert "| FT | DIBE_Reg |" in text and "(paper) | 0.501 | 0.510 |" in text
    assert len(numbers(text)) >= 10
    summary = json.loads((tmp_path / "table5.json").read_text())
    assert len(summary) == 2 and all(0.0 <= s["iou_last3"][0] <= 1.0 for s in summary)
    runs = list((tmp_path / "runs").rglob("metrics.jsonl"))
    assert len(runs) == 2
    # Each seed's final IoU is in the per-seed table, and the claim check counts seeds.
    finals = {p.parts[-3]: json.loads(p.read_text().splitlines()[-1])["iou"] for p in runs}
    for loss, label in (("focal_tversky", "FT"), ("dibe_reg", "DIBE_Reg")):
        assert f"| {label} | {finals[loss]:.3f} |" in text.split("## Final IoU per seed")[1]
    holds = int(finals["dibe_reg"] >= finals["focal_tversky"])
    assert "| DIBE_Reg ≥ FT | " in text and f"| {holds} of 1 |" in text


def test_table5_report_without_a_claim_pair_says_so() -> None:
    records = [[{"epoch": e, "iou": 0.1 * e, "pa": 0.5, "oii": 0.0} for e in range(1, 5)]]
    cell = common.Cell("cfd", "unet", "dibe")
    results = {("cfd", "dibe"): common.CellResult(records, [0], 1.0, cell=cell)}
    text = losses_by_dataset.report(results, common.MODES["medium"])
    claims = text.split("## The paper's claims on our numbers")[1]
    assert "None checked" in claims and "| DIBE ≥ HF |" not in claims
    assert "| CFD (crack = label 2) | DIBE | 0.400 |" in text.split("## Final IoU per seed")[1]


@pytest.mark.slow
def test_convergence_quick(tmp_path: Path) -> None:
    assert convergence.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "fig11.md").read_text()
    assert "IoU FT" in text and "IoU DIBE_Reg" in text and numbers(text)
    png = tmp_path / "fig11_syn2200.png"
    assert png.exists() and png.stat().st_size > 5_000


@pytest.mark.slow
def test_oii_curves_and_guidance_share_runs(tmp_path: Path) -> None:
    assert oii_curves.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "fig10.md").read_text()
    assert "Kendall" in text and len(numbers(text)) >= 8
    assert (tmp_path / "fig10_unet_syn2200.png").stat().st_size > 5_000
    before = set((tmp_path / "runs").rglob("metrics.jsonl"))
    assert len(before) == 2  # α = 0.3 and 0.7

    # Table 6 on the same folder: the grid's two α are read back, only α = 0.5 is trained.
    assert oii_guidance.main(["--quick", "--out", str(tmp_path)]) == 0
    after = set((tmp_path / "runs").rglob("metrics.jsonl"))
    assert len(after - before) == 1
    table = (tmp_path / "table6.md").read_text()
    for method in ("Basic", "Grid search", "OII guidance"):
        assert method in table
    found = json.loads((tmp_path / "table6.json").read_text())
    (search,) = found.values()
    assert search["grid"]["runs_needed"] == 2 and search["basic"]["runs_needed"] == 1
    assert all(math.isfinite(r["iou"]) for r in search["grid"]["runs"])


@pytest.mark.slow
def test_losses_by_model_quick(tmp_path: Path) -> None:
    assert losses_by_model.main(["--quick", "--out", str(tmp_path)]) == 0
    t3 = (tmp_path / "table3.md").read_text()
    t4 = (tmp_path / "table4.md").read_text()
    assert "| CE |" in t3 and "0.577" in t3  # the paper's U-Net CE IoU beside ours
    assert "| DIBE_Reg |" in t4 and "0.652" in t4
    assert numbers(t3) and numbers(t4)


@pytest.mark.slow  # trains a quick-mode run, as the other training tests here
def test_finished_runs_are_not_trained_again(tmp_path: Path, capsys) -> None:
    mode = common.MODES["quick"]
    cell = common.Cell("syn2200", "unet", "dibe_reg").with_params(alpha=0.3, beta=0.7)
    first = common.run_cell(cell, mode, tmp_path)
    capsys.readouterr()
    again = common.run_cell(cell, mode, tmp_path)
    assert "[quick]" not in capsys.readouterr().out  # nothing trained the second time
    assert again.runs == first.runs and again.last3("iou") == first.last3("iou")


def test_statistics_and_presets() -> None:
    s = common.stat([0.2, 0.4, float("nan"), None])
    assert s.n == 2 and s.mean == pytest.approx(0.3) and s.std == pytest.approx(0.1414, 1e-3)
    assert common.fmt(s) == "0.300 ± 0.141" and common.fmt(None) == "–"
    records = [
        [{"epoch": e, "iou": v} for e, v in enumerate(vals, 1)]
        for vals in ([0.1, 0.5, 0.6, 0.7], [0.2, 0.3, 0.4, 0.2])
    ]
    r = common.CellResult(records, [0, 1], 0.0, cell=common.Cell("cfd", "unet", "dice"))
    assert r.last3().mean == pytest.approx((0.5 + 0.6 + 0.7 + 0.3 + 0.4 + 0.2) / 6)
    assert r.final().mean == pytest.approx(0.45) and r.best().mean == pytest.approx(0.55)
    assert common.resolve_dataset("syn2200_128").synthetic == (128, 2200.0, 384, 128)
    with pytest.raises(ValueError, match="unknown dataset"):
        common.resolve_dataset("thc9000")
    medium = common.MODES["medium"]
    config = common.make_config(common.Cell("crack", "unet", "dibe"), medium, seed=2)
    assert (config.epochs, config.batch_size, config.seed) == (30, 8, 2)
    assert config.data.image_size == 96 and config.data.dataset == "magnetic_tile/crack"
    assert Path(config.data.manual_dir) == common.data_root()
    full = common.make_config(
        common.Cell("cfd", "segnet", "dibe_dis").with_params(alpha=0.7),
        common.MODES["full"],
        seed=0,
    )
    assert (full.epochs, full.batch_size, full.eval_every, full.optim.lr) == (50, 32, 5, 0.01)
    assert full.loss.params == {"alpha": 0.7} and "width" not in full.model.options


@pytest.mark.parametrize("module", [common, oii_curves], ids=lambda m: m.__name__)
def test_doctests(module) -> None:
    assert doctest.testmod(module).failed == 0


SCRIPTS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.py")
    if p.stem not in ("__init__", "common")
)


_BOTH_WAYS = """
import contextlib, io, runpy, sys
for script in sys.argv[1:]:
    for how in ("file", "module"):
        sys.argv = [script, "--help"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            if how == "file":
                runpy.run_path(f"experiments/{script}.py", run_name="__main__")
            else:  # `python -m` from the repository root puts the root first on sys.path
                sys.path.insert(0, "")
                runpy.run_module(f"experiments.{script}", run_name="__main__", alter_sys=True)
        assert "usage:" in out.getvalue(), (script, how)
        for name in [m for m in sys.modules if m == "experiments" or m.startswith("experiments.")]:
            del sys.modules[name]  # the next run imports them afresh
        sys.path.pop(0)  # what the file's bootstrap (or `-m`) inserted
print("ok", len(sys.argv))
"""


@pytest.mark.slow
def test_every_experiment_runs_as_a_file_and_as_a_module():
    """``python experiments/X.py`` and ``python -m experiments.X`` both work (one process,
    without the repository on ``sys.path``, as from a fresh shell)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-I", "-c", _BOTH_WAYS, *SCRIPTS]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


# ---------------------------------------------------------------- experiments/paper_scale.py

_PAPER_DATA = Path(
    os.environ.get("DIBE_JAX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
_needs_paper_data = pytest.mark.skipif(
    not ((_PAPER_DATA / "crackforest").is_dir() and (_PAPER_DATA / "magnetic_tile").is_dir()),
    reason="CrackForest / magnetic tile not in ../shared/data (set DIBE_JAX_DATA)",
)

#: Runs paper_scale without TFDS, grain, array_record or tensorboardX (as on the GPU machine).
_WITHOUT_TFDS = """
import sys
for name in ("tensorflow_datasets", "grain", "array_record", "tensorboardX", "tensorflow"):
    sys.modules[name] = None  # any import of them raises ImportError
from experiments import paper_scale
sys.exit(paper_scale.main(sys.argv[1:]))
"""


def _paper_scale(*args: str) -> tuple[int, str]:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), DIBE_JAX_DATA=str(_PAPER_DATA))
    cmd = [sys.executable, "-c", _WITHOUT_TFDS, *args]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=900)
    return out.returncode, out.stdout + out.stderr


@_needs_paper_data
@pytest.mark.slow  # about a minute on 2 busy cores: 5 compilations
def test_paper_scale_quick_without_tfds(tmp_path: Path) -> None:
    """``paper_scale --quick`` runs all three parts from the raw files without TFDS or grain,
    writes the tables beside the paper's, and a second launch reads the sweeps back."""
    rc, text = _paper_scale("--quick", "--out", str(tmp_path))
    assert rc == 0, text[-3000:]
    for part in ("table5", "fig10", "table6"):
        assert f"[{part}] estimate on one H200:" in text and f"[{part}] done in" in text
    md = (tmp_path / "paper_scale.md").read_text()
    assert "| CFD (paper) | 0.510 | 0.512 |" in md  # Table 5, DIBE_Reg and DIBE
    assert "| Crack (paper) | 0.717 | 0.723 |" in md
    assert "OII guidance" in md and "Grid search" in md
    data = json.loads((tmp_path / "paper_scale.json").read_text())
    assert set(data["table5"]) == {"cfd/dibe_reg", "cfd/dibe", "crack/dibe_reg", "crack/dibe"}
    assert all(cell["seeds"] == [0, 1] for cell in data["table5"].values())
    assert set(data["fig10"]) == {"alpha=0.3", "alpha=0.7"}
    grid, guided = data["table6"]["grid"], data["table6"]["oii"]
    assert [r["value"] for r in grid["runs"]] == [0.3, 0.7]  # Fig. 10's sweep, read back
    assert guided["runs"][0]["value"] == 0.5 and guided["runs_needed"] == 1
    runs = tmp_path / "runs"
    for member in ("table5/crack/dibe/run/seed1", "alpha_dibe_cfd/alpha=0.5/seed0"):
        config = json.loads((runs / member / "config.json").read_text())
        assert config["epochs"] == 2 and config["model"]["options"]["width"] == 4
        assert config["data"]["image_size"] == 32
        assert (runs / member / "metrics.jsonl").read_text().count("\n") == 2  # 2 evaluations
    config = json.loads((runs / "alpha_dibe_cfd/alpha=0.7/seed1/config.json").read_text())
    assert config["loss"]["params"] == {"alpha": 0.7, "beta": 0.3} and config["seed"] == 1
    sweep = json.loads((runs / "alpha_dibe_cfd" / "sweep.json").read_text())
    assert len(sweep["members"]) == 4 and sweep["chunk"] == 4  # 2 α × 2 seeds, one program
    # a second launch trains nothing and writes the same tables
    rc, again = _paper_scale("--quick", "--out", str(tmp_path), "--parts", "fig10", "table6")
    assert rc == 0, again[-3000:]
    assert "finished members read back" in again and " members in " not in again
    assert "| Crack (paper) | 0.717 | 0.723 |" in (tmp_path / "paper_scale.md").read_text()
    assert "table5" in json.loads((tmp_path / "paper_scale.json").read_text())  # kept
    assert (tmp_path / "paper_scale.md").read_text().split("## Fig. 10")[1] == md.split(
        "## Fig. 10"
    )[1]


@_needs_paper_data
def test_paper_scale_reads_the_builders_splits() -> None:
    """The in-memory magnetic-tile split is the builder's (sorted stems, ``i % 5 < 3``), and
    a missing data folder is refused with exit 2 before anything trains."""
    from dibe_jax.datasets._common import pair_files, split_by_rule
    from experiments import paper_scale

    folder = _PAPER_DATA / "magnetic_tile" / "MT_Crack" / "Imgs"
    stems = [s for s, _, _ in pair_files(folder, folder, image_ext=".jpg", label_ext=".png")]
    assert paper_scale.mt_split(stems) == split_by_rule(stems)
    scale = paper_scale.dataclasses.replace(paper_scale.QUICK, mt_images=None)
    got = paper_scale.mt_sources(_PAPER_DATA / "magnetic_tile", "Crack", scale)
    assert (len(got["train"]), len(got["validation"])) == (35, 22)  # the builder's Crack
    ex = got["train"][0]
    assert ex["image"].shape == ex["mask"].shape and ex["image"].shape[-1] == 1
    assert set(ex["mask"].ravel().tolist()) <= {0, 1}
    assert doctest.testmod(paper_scale).failed == 0
    assert paper_scale.main(["--quick", "--data-dir", "/nonexistent"], log=print) == 2
