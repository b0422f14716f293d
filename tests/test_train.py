"""Training (dibe_jax.train.train_and_evaluate and the state and steps it builds): what a run
writes, its checkpoints evaluated and predicted from, compiled steps reused, failing loudly
on non-finite values and on data the network cannot take."""

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
    tiny_config,
)

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("epoch", "step", "train_loss", "iou", "pa", "recall", "oii", "tp", "fp", "fn", "seconds")
#: Every key of a binary run's record, in order: what binary runs have always written (the
#: multi-class metrics of issue 15 must not change them).
BINARY_RECORD = "epoch step train_loss iou pa recall dice specificity g_mean oii fp_fn_ratio "
BINARY_RECORD += "precision tp fp fn tn val_loss skipped_steps seconds"


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


# ``sources`` and ``finished_run`` (a 2-epoch tiny run on them, trained once per test
# process) are shared by conftest.py. Config values: tests/test_config_overrides.py;
# validation: tests/test_validate.py; resume: tests/test_resume.py.


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
    # the steps of the shared run may have left make_steps' cache since (other tests'
    # programs): a first run here may compile, the second must not
    first = train.train_and_evaluate(tiny_config(epochs=2), tmp_path / "first", sources=sources)
    compilations.clear()
    again = train.train_and_evaluate(tiny_config(epochs=2), tmp_path / "again", sources=sources)
    assert compilations == []
    assert _comparable(first) == _comparable(record)
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
    # the learning rate lives in the optimiser state: the same steps; a schedule does not
    other_lr = train.make_state(train.override(config, {"optim.lr": 0.5}), in_channels=3)
    assert train.make_steps(other_lr[0], other_lr[1], dibe, {"alpha": 0.3}, mesh) is first
    cosine = train.make_state(train.override(config, {"optim.schedule": "cosine"}), 3)
    assert train.make_steps(cosine[0], cosine[1], dibe, {"alpha": 0.3}, mesh) != first
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


def test_progress_counts_completed_steps():
    from dibe_jax.train.launch import Progress as _Progress

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    class Fake:
        def __init__(self, ready):
            self.ready = ready

        def is_ready(self):
            return self.ready

        def block_until_ready(self):
            self.ready = True
            return self

    bar = Bar()
    progress = _Progress(bar, ahead=2)
    progress.add(Fake(False))
    progress.add(Fake(False))
    assert bar.n == 0  # two steps in flight: nothing completed yet
    progress.add(Fake(False))
    assert bar.n == 1  # never more than two in flight: the oldest is waited for
    progress.flush()
    assert bar.n == 3


def test_nonfinite_raise_stops_within_a_few_steps(tmp_path, monkeypatch):
    from dibe_jax.train import batches, loop

    calls = []
    real = batches.shard_batch
    monkeypatch.setattr(batches, "shard_batch", lambda b, m: calls.append(1) or real(b, m))
    config = tiny_config(epochs=1)  # the step of test_nonfinite_raises_naming_the_step...
    config.optim.lr = 1e30  # parameters overflow after the first update
    data = {"train": make_examples(384, 0), "validation": make_examples(4, 1)}  # 48 steps
    with pytest.raises(train.NonFiniteError, match=r"not finite at step [0-2] \(epoch 0\)"):
        train.train_and_evaluate(config, tmp_path / "r", sources=data)
    assert 0 < len(calls) <= 2 * loop.NONFINITE_CHECK_EVERY + 2 < 48  # not the whole epoch


def test_native_size_not_fitting_the_network_is_a_config_error(tmp_path):
    odd = {"train": make_examples(8, 0, size=34), "validation": make_examples(4, 1, size=34)}
    two_stages = tiny_config(epochs=1, **{"model.num_stages": 2})  # sizes: multiples of 4
    with pytest.raises(train.ConfigError, match="native size .* multiples of 4"):
        train.train_and_evaluate(two_stages, tmp_path / "r", sources=odd)
    assert not (tmp_path / "r").exists()
    np.testing.assert_equal(odd["train"][0]["image"].shape, (34, 34, 3))


SHARED_DATA = Path(
    os.environ.get("DIBE_JAX_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.mark.slow
def test_magnetic_tile_trains_without_image_size(tmp_path, caplog):
    import logging

    if not (SHARED_DATA / "magnetic_tile" / "MT_Crack").is_dir():
        pytest.skip(f"MTSDD not found under {SHARED_DATA} (set DIBE_JAX_DATA)")
    config = train.override(
        train.Config(),
        {
            "data.dataset": "magnetic_tile/crack",
            "data.data_dir": str(tmp_path / "tfds"),
            "data.manual_dir": str(SHARED_DATA / "magnetic_tile"),
            "epochs": 1,
            "batch_size": 8,
            "model.width": 4,
            "model.num_stages": 1,
            "progress": False,
        },
    )
    assert config.data.image_size is None  # images come in 49 sizes
    with caplog.at_level(logging.INFO, logger="dibe_jax"):
        record = train.train_and_evaluate(config, tmp_path / "run")
    assert "training at 224x224" in caplog.text
    assert train.load_config(tmp_path / "run").data.image_size == 224  # the run says so
    assert record["step"] > 0 and record["tp"] + record["fn"] > 0


@pytest.fixture(autouse=True, scope="module")
def _cleanup_tmp():
    yield
    shutil.rmtree(ROOT / "results" / "_tmp", ignore_errors=True)


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_checkpoint_every_epochs_saves_at_its_epochs_evaluations_and_the_end(tmp_path, sources):
    """``checkpoint_every_epochs=3`` over 5 epochs, evaluated every 2: checkpoints at epochs
    2 and 4 (evaluations, the best among them), 3 (its own period) and 5 (the end), no more;
    a resume continues from the latest."""
    config = tiny_config(epochs=5, eval_every=2, checkpoint_every_epochs=3, keep_checkpoints=5)
    train.train_and_evaluate(config, tmp_path / "run", sources=sources)
    steps_per_epoch = 16 // 8
    latest = sorted(int(p.name) for p in (tmp_path / "run/checkpoints/latest").iterdir())
    assert [s // steps_per_epoch for s in latest] == [2, 3, 4, 5]
    config = train.load_config(tmp_path / "run")
    config.epochs = 6
    resumed = train.train_and_evaluate(config, tmp_path / "run", resume=True, sources=sources)
    assert resumed["epoch"] == 6
