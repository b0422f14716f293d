"""Threshold calibration: histogram counts are exact, the choice is the best edge, and a run's
calibrated threshold reaches eval's rows and predict's masks (dibe_jax.metrics.threshold,
dibe_jax.train.calibrate, ``dibe-jax calibrate``).

One tiny run (U-Net width 4, 1 stage, 32 px synthetic cracks, 2 epochs) is trained per module.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dibe_jax import cli, metrics
from dibe_jax.metrics import threshold as th
from dibe_jax.train import calibrate as cal
from dibe_jax.train.predict import load_forward, predict_logits

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sources():
    return {"train": make_examples(16, 0), "validation": make_examples(8, 1)}


@pytest.fixture(scope="module")
def run(tmp_path_factory, sources) -> Path:
    from dibe_jax import train

    workdir = tmp_path_factory.mktemp("calib") / "run"
    train.train_and_evaluate(tiny_config(epochs=2), workdir, sources=sources)
    return workdir


@pytest.fixture(scope="module")
def calibrated(run, sources):
    return cal.calibrate(run, sources=sources)


# ----------------------------------------------------------------- histogram -> counts, exact


def test_counts_from_histograms_equal_direct_thresholding_at_every_edge():
    rng = np.random.default_rng(0)
    edges = th.threshold_edges((-2.0, 2.0), 0.25)
    logits = rng.normal(0, 1.5, (3, 9, 11, 1)).astype(np.float32)
    logits.flat[:40] = rng.choice(edges, 40)  # logits exactly on edges: ties go to "defect"
    logits.flat[40:44] = [-50.0, 50.0, -2.0, 2.0]  # outside and at the range's ends
    labels = (rng.random(logits.shape) < 0.3).astype(np.int32)
    where = rng.random(logits.shape) < 0.9
    counts = th.counts_at_edges(th.logit_histograms(logits, labels, edges, where=where))
    for j, t in enumerate(edges):
        direct = metrics.confusion_counts(logits, labels, where=where, threshold=float(t)).sum()
        assert [int(c[j]) for c in counts] == [int(c) for c in direct], t


def test_histograms_are_additive_over_batches():
    rng = np.random.default_rng(1)
    edges = th.threshold_edges((-1.0, 1.0), 0.125)
    z = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    y = rng.random(z.shape) < 0.2
    whole = th.logit_histograms(z, y, edges)
    parts = th.logit_histograms(z[:1], y[:1], edges) + th.logit_histograms(z[1:], y[1:], edges)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("target", th.TARGETS)
def test_choice_is_the_best_edge_by_brute_force(target):
    rng = np.random.default_rng(2)
    edges = th.threshold_edges((-3.0, 3.0), 0.5)
    z = rng.normal(-0.5, 1.0, (2, 16, 16, 1)).astype(np.float32)
    y = (z + rng.normal(0, 1.0, z.shape) > 0.3).astype(np.int32)  # under-segmented at 0
    choice = th.choose_threshold(th.logit_histograms(z, y, edges), edges, target=target)
    scores = []
    for t in edges:
        c = metrics.summarize(metrics.confusion_counts(z, y, threshold=float(t)))
        scores.append(-abs(c["oii"]) if target == "oii" else c["iou"])
    best = max(scores)
    tied = [float(t) for t, s in zip(edges, scores, strict=True) if s == best]
    assert choice.threshold == min(tied, key=abs)
    assert choice.at_zero == metrics.summarize(metrics.confusion_counts(z, y))


def test_edges_and_targets_are_checked():
    with pytest.raises(ValueError, match="contain 0"):
        th.threshold_edges((0.5, 2.0))
    edges = th.threshold_edges((-1.0, 1.0), 0.5)
    hist = th.logit_histograms(jnp.zeros((1, 4)), jnp.ones((1, 4)), edges)
    with pytest.raises(ValueError, match="target must be one of oii, iou"):
        th.choose_threshold(hist, edges, target="dice")
    with pytest.raises(ValueError, match="do not match"):
        th.choose_threshold(hist, edges[1:])


# -------------------------------------------------------------------------------- on a run


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_calibration_does_not_worsen_oii_and_is_recorded(run, calibrated):
    c = calibrated.choice
    assert c.at_zero["oii"] > 0  # this run under-segments at logit 0 (more misses)
    assert abs(c.at_threshold["oii"]) <= abs(c.at_zero["oii"])
    assert c.threshold < 0  # fewer misses: a lower threshold
    record = json.loads((run / cal.THRESHOLD_FILE).read_text())
    assert record["threshold"] == c.threshold and record["step"] == calibrated.step
    assert record["target"] == "oii" and record["split"] == "validation"
    assert cal.recorded_threshold(run, calibrated.step).value == c.threshold


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_eval_rows_from_a_second_pass_equal_the_histogram_counts(run, calibrated, sources):
    c = calibrated.choice
    out = cal.metrics_at_thresholds(run, [0.0, c.threshold], sources=sources)
    assert out["step"] == calibrated.step
    for row, expected in zip(out["rows"], (c.at_zero, c.at_threshold), strict=True):
        assert [row[k] for k in ("tp", "fp", "fn", "tn")] == [
            expected[k] for k in ("tp", "fp", "fn", "tn")
        ]


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_iou_target_is_at_least_the_default_iou(run, sources):
    choice = cal.calibrate(run, target="iou", sources=sources, write=False).choice
    assert choice.at_threshold["iou"] >= choice.at_zero["iou"]


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_threshold_applies_only_to_its_checkpoint(run, calibrated, tmp_path):
    assert cal.recorded_threshold(run, calibrated.step + 1).value is None
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["seed"] += 1  # a replaced run with the same steps
    (copy / "config.json").write_text(json.dumps(config))
    recorded = cal.recorded_threshold(copy, calibrated.step)
    assert recorded.value is None and "config.json changed" in recorded.reason


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_overwriting_a_run_replaces_its_threshold_too(run, calibrated, sources, tmp_path):
    """``threshold.json`` belongs to the run's checkpoints: a run that holds only it is a
    run, and ``--overwrite`` removes it with the rest."""
    from dibe_jax import train

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    from dibe_jax.train.workdir import existing_outputs

    assert "threshold.json" in existing_outputs(copy)
    train.train_and_evaluate(tiny_config(epochs=1), copy, overwrite=True, sources=sources)
    assert not (copy / "threshold.json").exists()


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_predict_uses_the_calibrated_threshold_and_says_so(run, calibrated, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    for i, example in enumerate(make_examples(2, 5, size=48)):
        Image.fromarray(example["image"]).save(images / f"img{i}.png")
    t = calibrated.choice.threshold
    capsys.readouterr()
    assert (
        cli.main(
            [
                "predict",
                "--workdir",
                str(run),
                "--input",
                str(images),
                "--out",
                str(tmp_path / "cal"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"threshold: logit {t:g} (calibrated on the validation split for oii" in out
    assert (
        cli.main(
            [
                "predict",
                "--workdir",
                str(run),
                "--input",
                str(images),
                "--out",
                str(tmp_path / "zero"),
                "--threshold",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "threshold: logit 0 (given)" in capsys.readouterr().out
    loaded = load_forward(run)
    changed = 0
    for path in sorted(images.iterdir()):
        x = np.asarray(Image.open(path), np.float32) / 255
        z = predict_logits(
            loaded.forward,
            x,
            multiple=loaded.multiple,
            window=loaded.image_size,
            minimum=loaded.minimum,
        )
        for folder, cut in (("cal", t), ("zero", 0.0)):
            mask = np.asarray(Image.open(tmp_path / folder / f"{path.stem}_mask.png"))
            np.testing.assert_array_equal(mask > 0, z[..., 0] >= cut)
        changed += int(np.sum((z[..., 0] >= t) != (z[..., 0] >= 0)))
    assert changed > 0  # the calibrated masks differ from logit 0's


# ----------------------------------------------------------------------------- refusals


def _fails(capsys, args: list[str], match: str) -> None:
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dibe-jax: error:") and match in err[0], err


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_refused_inputs_exit_2_writing_nothing(run, calibrated, tmp_path, capsys):
    before = _snapshot(run)
    _fails(capsys, ["calibrate", "--workdir", str(run), "--target", "dice"], "--target")
    _fails(capsys, ["calibrate", "--workdir", str(tmp_path / "none")], "no such folder")
    empty = tmp_path / "untrained"
    empty.mkdir()
    for name in ("config.json", "model.json"):
        shutil.copy(run / name, empty / name)
    _fails(capsys, ["calibrate", "--workdir", str(empty)], "no checkpoints/ folder")
    multi = tmp_path / "multi"
    multi.mkdir()
    shutil.copy(run / "config.json", multi / "config.json")
    info = {"in_channels": 3, "num_classes": 3, "class_names": ["background", "a", "b"]}
    (multi / "model.json").write_text(json.dumps({**info, "image_size": 32}))
    _fails(capsys, ["calibrate", "--workdir", str(multi)], "multi-class run")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for bad in ("nan", "inf"):
        _fails(
            capsys,
            [
                "predict",
                "--workdir",
                str(run),
                "--input",
                str(image),
                "--out",
                str(tmp_path / "p"),
                "--threshold",
                bad,
            ],
            "threshold: expected a finite logit",
        )
    assert not (tmp_path / "p").exists()
    assert not any((p / cal.THRESHOLD_FILE).exists() for p in (empty, multi))
    assert _snapshot(run) == before


@pytest.mark.slow
def test_calibration_vs_search_quick(tmp_path):
    from experiments import calibration_vs_search

    assert calibration_vs_search.main(["--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "calibration_vs_search.md").read_text()
    assert "calibrated for OII" in text and "OII guidance (α = " in text
    (found,) = json.loads((tmp_path / "calibration_vs_search.json").read_text())
    cal_oii = found["calibration"]["oii"]
    assert abs(cal_oii["threshold_oii"][0]) <= abs(cal_oii["zero_oii"][0]) + 1e-6
    # logit 0 of the calibration pass is the basic run's final evaluation
    assert cal_oii["zero_iou"][0] == pytest.approx(found["basic"]["iou_final"][0], abs=1e-6)
    assert 1 <= found["search_runs"] <= 2
