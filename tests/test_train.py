"""Training: config, failing loudly, one real run, resume after SIGKILL, data parallelism."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dibe_jax import train

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import (  # noqa: E402
    make_examples,
    run_script,
    tiny_config,
    uninterrupted_record,
)

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("epoch", "step", "train_loss", "iou", "pa", "recall", "oii", "tp", "fp", "fn", "seconds")
#: Every key of a binary run's record, in order: what binary runs have always written (the
#: multi-class metrics of issue 15 must not change them).
BINARY_RECORD = "epoch step train_loss iou pa recall dice specificity g_mean oii fp_fn_ratio "
BINARY_RECORD += "precision tp fp fn tn val_loss skipped_steps seconds"


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


@pytest.fixture(scope="module")
def sources():
    return {"train": make_examples(16, 0), "validation": make_examples(8, 1)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, sources):
    workdir = tmp_path_factory.mktemp("run")
    record = train.train_and_evaluate(tiny_config(epochs=2), workdir, sources=sources)
    return workdir, record


# Config parsing and validation: tests/test_lifecycle.py.


# ----------------------------------------------------------------------------- a run


def test_run_writes_metrics_checkpoints_plots(finished_run):
    workdir, record = finished_run
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for key in KEYS:
        assert key in record
    assert record == lines[-1]
    assert list(record) == BINARY_RECORD.split()
    from dibe_jax import metrics

    counts = metrics.Confusion(*(record[k] for k in ("tp", "fp", "fn", "tn")))
    assert {k: record[k] for k in metrics.summarize(counts)} == metrics.summarize(counts)
    assert json.loads((workdir / "model.json").read_text())["num_classes"] == 1
    assert record["tp"] + record["fn"] > 0 and -1 <= record["oii"] <= 1
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == ["iou.png", "oii.png", "pa.png"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir()) == [2, 4]
    assert len(list((workdir / "checkpoints" / "best").iterdir())) == 1
    assert train.from_dict(json.loads((workdir / "config.json").read_text())).epochs == 2


def test_existing_run_is_not_overwritten_by_accident(finished_run, sources):
    workdir, _ = finished_run
    before = (workdir / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
        train.train_and_evaluate(tiny_config(epochs=2), workdir, sources=sources)
    assert (workdir / "metrics.jsonl").read_text() == before


def test_eval_and_predict_from_checkpoint(finished_run, sources, tmp_path):
    from PIL import Image

    from dibe_jax.train.predict import predict

    workdir, record = finished_run
    out = train.evaluate_checkpoint(workdir, best=False, sources=sources)
    assert out["step"] == record["step"]
    for key in ("iou", "pa", "oii", "tp", "fp", "fn"):
        assert out[key] == pytest.approx(record[key])
    images = tmp_path / "in"
    images.mkdir()
    for i, ex in enumerate(sources["validation"][:2]):
        Image.fromarray(ex["image"]).save(images / f"img{i}.png")
    report = predict(workdir, images, tmp_path / "out", progress=False)
    assert len(report.written) == 2 and not report.skipped
    for w in report.written:
        mask = np.asarray(Image.open(w.mask))
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        assert np.asarray(Image.open(w.overlay)).shape == (32, 32, 3)
        assert 0 <= w.defect_fraction <= 1
    with pytest.raises(ValueError, match="does not exist"):
        predict(workdir, tmp_path / "missing.png", tmp_path / "out")


def test_the_same_run_again_in_one_process_compiles_nothing(
    finished_run, sources, tmp_path, compilations
):
    """Equal settings give equal graph definitions (one optax object per SGD setting), so
    ``make_steps`` hands back the steps it compiled: a second seed-for-seed identical run
    neither traces nor compiles, and ends with the same record."""
    _, record = finished_run
    again = train.train_and_evaluate(tiny_config(epochs=2), tmp_path / "again", sources=sources)
    assert compilations == []
    assert _comparable(again) == _comparable(record)


def _leaves(tree) -> list[np.ndarray]:
    import jax

    out = []
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out


@pytest.mark.parametrize("kernel_init", ["torch_default", "he_normal_fan_out"])
def test_make_state_draws_the_eager_parameters_in_one_program(kernel_init, compilations):
    """The model of ``make_state`` is drawn by one jitted program: the values of the eager
    draw bit for bit, the same on every call, and a second call compiles nothing."""
    from flax import nnx

    from dibe_jax.train.state import _create_model

    config = tiny_config(**{"model.kernel_init": kernel_init, "seed": 3})
    _, _, state = train.make_state(config, in_channels=3)
    options = (("width", 4), ("num_stages", 1), ("kernel_init", kernel_init))
    eager = _create_model("unet", 3, 1, 3, (*options, ("dtype", np.float32)))
    got, want = _leaves(state[0]), _leaves(nnx.state(eager))
    assert [a.shape for a in got] == [b.shape for b in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    compilations.clear()
    _, _, again = train.make_state(config, in_channels=3)
    assert compilations == []
    for a, b in zip(_leaves(state), _leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_make_steps_reuses_only_for_equal_arguments():
    from dibe_jax import losses
    from dibe_jax.train import step

    config = tiny_config()
    tg, eg, _ = train.make_state(config, in_channels=3)
    mesh = train.make_mesh()
    dibe = losses.get("dibe")
    first = train.make_steps(tg, eg, dibe, {"alpha": 0.3}, mesh)
    assert train.make_steps(tg, eg, dibe, {"alpha": 0.3}, mesh) is first
    assert train.make_steps(tg, eg, dibe, {"alpha": 0.4}, mesh) is not first
    assert train.make_steps(tg, eg, dibe, {"alpha": 0.3}, mesh, num_classes=1) is first
    assert train.make_steps(tg, eg, dibe, {"alpha": 0.3}, mesh, skip_nonfinite=False) != first
    assert train.make_steps(tg, eg, losses.get("tversky"), {"alpha": 0.3}, mesh) != first
    other_lr = train.make_state(train.override(config, {"optim.lr": 0.5}), in_channels=3)
    assert train.make_steps(other_lr[0], other_lr[1], dibe, {"alpha": 0.3}, mesh) != first
    weights = {"alpha": np.array([0.3])}  # not hashable: built afresh, never kept
    assert train.make_steps(tg, eg, dibe, weights, mesh) is not train.make_steps(
        tg, eg, dibe, weights, mesh
    )
    assert len(step._STEPS) <= step._STEPS_KEPT


def test_nonfinite_raises_naming_the_step_or_skips(tmp_path, sources):
    config = tiny_config(epochs=1)
    config.optim.lr = 1e30  # parameters overflow after the first update
    with pytest.raises(train.NonFiniteError, match=r"not finite at step \d+"):
        train.train_and_evaluate(config, tmp_path / "raise", sources=sources)
    config.nonfinite = "skip"
    record = train.train_and_evaluate(config, tmp_path / "skip", sources=sources)
    assert record["skipped_steps"] >= 1  # the run went on, dropping the bad updates
    assert record["train_loss"] is None or np.isfinite(record["train_loss"])


# ----------------------------------------------- resume after SIGKILL, corrupt checkpoint


@pytest.mark.slow
def test_resume_after_sigkill_and_corrupt_checkpoint_matches_uninterrupted_run(
    tmp_path, tmp_path_factory
):
    whole = uninterrupted_record(tmp_path_factory)
    crashed = tmp_path / "crashed"
    # 16 training reads per epoch: the 56th read is in the middle of epoch 4 (of 4)
    out = run_script(str(crashed), "--kill-after", "56", check=False)
    assert out.returncode == -9, out.stderr[-2000:]
    latest = crashed / "checkpoints" / "latest"
    saved = sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    assert len(saved) >= 2 and max(saved) < whole["step"]
    # corrupt the newest checkpoint: it must be reported and the previous one used
    for f in (latest / str(saved[-1])).rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    resumed = run_script(str(crashed), "--resume")
    assert "unreadable" in resumed.stderr and str(saved[-1]) in resumed.stderr
    assert _comparable(json.loads(resumed.stdout.splitlines()[-1])) == _comparable(whole)
    lines = [json.loads(x) for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]  # no duplicate after the resume


# ------------------------------------------------------------------- data parallelism


@pytest.mark.slow
def test_four_device_step_equals_single_device_step():
    env = {
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    out = json.loads(run_script("--devices-check", env=env).stdout.splitlines()[-1])
    assert out["devices"] == 4
    assert out["max_diff"] < 1e-5


def test_two_device_step_in_process_equals_single_device_step():
    # The two fake CPU devices of conftest.py: the library's own path (loss_steps, replicate,
    # shard_batch) with the batch split over a 2-device mesh gives the loss, weights and
    # BatchNorm statistics of the same step on one device.
    import jax
    from flax import nnx

    from dibe_jax.train import loop, step

    assert jax.device_count() == 2
    config = tiny_config(**{"model.width": 2, "model.num_stages": 1})
    examples = make_examples(4, 3, size=16)
    batch = {
        "image": np.stack([e["image"] for e in examples]).astype(np.float32) / 255,
        "mask": np.stack([e["mask"] for e in examples]),
    }

    def weights_and_stats(tg, state):
        model = nnx.merge(tg, state)[0]
        leaves = jax.tree.leaves((nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat)))
        return [np.asarray(x) for x in leaves]

    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        tg, eg, state = train.make_state(config, in_channels=3)
        before = weights_and_stats(tg, state)
        mesh = step.make_mesh(devices)
        steps = loop.loss_steps(config, tg, eg, mesh, num_classes=1)
        state = step.replicate(state, steps.replicated)
        sharded = step.shard_batch(batch, mesh)
        assert len(sharded["image"].addressable_shards) == len(devices)
        assert sharded["image"].addressable_shards[0].data.shape[0] == 4 // len(devices)
        state, stats = steps.train(state, sharded)
        assert int(stats["nonfinite"]) == 0
        after = weights_and_stats(tg, state)
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(after, before, strict=True)) > 0
        results.append((float(stats["loss"]), after))
    (loss_2, leaves_2), (loss_1, leaves_1) = results
    assert abs(loss_2 - loss_1) < 1e-5
    for a, b in zip(leaves_2, leaves_1, strict=True):  # weights and BatchNorm statistics
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_cli_train_help_lists_options(capsys):
    from dibe_jax import cli

    for sub in ("train", "eval", "predict", "oii-search"):
        with pytest.raises(SystemExit):
            cli.main([sub, "--help"])
        assert "--workdir" in capsys.readouterr().out


@pytest.fixture(autouse=True, scope="module")
def _cleanup_tmp():
    yield
    shutil.rmtree(ROOT / "results" / "_tmp", ignore_errors=True)
