"""Resume from the run folder alone (dibe_jax.train: the run's ``config.json`` and
checkpoints): a resumed run equals the uninterrupted one, after a clean stop or a SIGKILL
and a corrupt checkpoint; a changed model is refused with the run left untouched; a failed
launch leaves the folder as it was."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dibe_jax import train

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import run_script, tiny_config, uninterrupted_record  # noqa: E402


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show a workflow changed nothing)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


@pytest.fixture
def two_epochs(finished_run) -> Path:
    """The folder of the shared finished 2-epoch run (``conftest.py``): read only."""
    return finished_run[0]


def test_resume_from_workdir_alone_extends_the_run(two_epochs, sources, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    config = train.load_config(run)  # what `--workdir RUN --resume --epochs 3` builds
    config.epochs = 3
    resumed = train.train_and_evaluate(config, run, resume=True, sources=sources)
    whole = train.train_and_evaluate(tiny_config(epochs=3), tmp_path / "whole", sources=sources)
    assert _comparable(resumed) == _comparable(whole)
    assert train.load_config(run).epochs == 3
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]


def _to_legacy_layout(run: Path) -> None:
    """Rewrite every checkpoint of ``run`` as dibe_jax 0.1.0 wrote it before the learning
    rate became part of the optimiser state: the ``optax.sgd`` chain's state alone."""
    import shutil

    import jax
    import orbax.checkpoint as ocp
    from flax import nnx

    from dibe_jax.train.checkpoints import Checkpoints, _from_saveable, _to_saveable

    _, _, like = train.make_state(train.load_config(run), in_channels=3, steps_per_epoch=4)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(like))
    ckpt, saved = Checkpoints(run / "checkpoints"), []
    for kind in ("latest", "best"):
        manager = getattr(ckpt, f"_{kind}")
        for step in manager.all_steps():
            args = ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
            )
            out = manager.restore(step, args=args)
            state = nnx.State(dict(_from_saveable(out["state"], like)))
            state[1] = nnx.State(dict(state[1]))
            state[1]["opt_state"] = state[1]["opt_state"]["inner_state"]
            saved.append((kind, step, state, dict(out["meta"])))
    ckpt.close()
    shutil.rmtree(run / "checkpoints")
    ckpt = Checkpoints(run / "checkpoints")
    for kind, step, state, meta in saved:
        metrics = {"iou": 1.0} if kind == "best" else None
        getattr(ckpt, f"_{kind}").save(step, args=ckpt._args(state, meta), metrics=metrics)
    ckpt.wait()
    ckpt.close()


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_run_saved_before_the_optimiser_held_its_learning_rate_resumes_and_evaluates(
    two_epochs, sources, tmp_path
):
    """Checkpoints whose optimiser state is the plain ``optax.sgd`` chain (no
    ``inject_hyperparams`` state) restore into the current layout: evaluation reads the
    same counts, and a resume continues exactly as from a current checkpoint."""
    import shutil

    current, legacy = tmp_path / "current", tmp_path / "legacy"
    shutil.copytree(two_epochs, current)
    shutil.copytree(two_epochs, legacy)
    _to_legacy_layout(legacy)
    stored = list((legacy / "checkpoints" / "latest").glob("*/state/_METADATA"))
    assert stored and all("inner_state" not in f.read_text() for f in stored)
    want = train.evaluate_checkpoint(current, sources=sources)
    got = train.evaluate_checkpoint(legacy, sources=sources)
    assert _comparable(got) == _comparable(want)
    records = []
    for run in (current, legacy):
        config = train.load_config(run)
        config.epochs = 3
        records.append(train.train_and_evaluate(config, run, resume=True, sources=sources))
    assert _comparable(records[1]) == _comparable(records[0])


def test_resume_refuses_a_changed_model_and_leaves_the_run_untouched(two_epochs, sources):
    before = _snapshot(two_epochs)
    config = train.load_config(two_epochs)
    config.model.options["width"] = 8
    with pytest.raises(train.ConfigError, match="model.width is 4 in .*config.json but 8"):
        train.train_and_evaluate(config, two_epochs, resume=True, sources=sources)
    config = train.load_config(two_epochs)
    config.epochs = 1  # fewer epochs than were trained
    with pytest.raises(train.ConfigError, match="already trained 2 epochs"):
        train.train_and_evaluate(config, two_epochs, resume=True, sources=sources)
    assert _snapshot(two_epochs) == before


def test_checkpoint_that_does_not_fit_the_config_is_a_mismatch_not_corruption(
    two_epochs, sources, tmp_path
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["options"]["width"] = 8  # as if someone edited config.json
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        train.CheckpointMismatchError,
        match=r"model/.* has shape \(4,\) in the checkpoint and \(8,\)",
    ):
        train.evaluate_checkpoint(run, sources=sources)


def test_resume_of_an_empty_workdir_says_it_starts_fresh(sources, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="dibe_jax"):
        train.train_and_evaluate(
            tiny_config(epochs=1), tmp_path / "new", resume=True, sources=sources
        )
    assert "holds no run yet; starting a new one" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dibe_jax"):
        config = train.load_config(tmp_path / "new")
        config.epochs = 2
        train.train_and_evaluate(config, tmp_path / "new", resume=True, sources=sources)
    assert "from step 2 (epoch 1 of 2 done)" in caplog.text


class _FailingSource:
    """Examples that raise on the ``n``-th read: a launch that dies before its first step."""

    def __init__(self, items, n):
        self.items, self.n, self.reads = items, n, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads >= self.n:
            raise OSError("disk went away")
        return self.items[i]


def test_failed_launch_leaves_the_workdir_as_it_was(sources, two_epochs, tmp_path):
    import shutil

    bad = {"train": _FailingSource(sources["train"], 3), "validation": sources["validation"]}
    with pytest.raises(OSError, match="disk went away"):
        train.train_and_evaluate(tiny_config(epochs=1), tmp_path / "fresh", sources=bad)
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "empty").mkdir()
    bad["train"].reads = 0
    with pytest.raises(OSError):
        train.train_and_evaluate(tiny_config(epochs=1), tmp_path / "empty", sources=bad)
    assert list((tmp_path / "empty").iterdir()) == []
    # --overwrite of a run by a launch that fails: the old run comes back, byte for byte
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    before = _snapshot(run)
    bad["train"].reads = 0
    with pytest.raises(OSError):
        train.train_and_evaluate(tiny_config(epochs=1), run, overwrite=True, sources=bad)
    assert _snapshot(run) == before and sorted(p.name for p in run.iterdir()) == sorted(
        p.name for p in two_epochs.iterdir()
    )
    # the fixed command then runs without --overwrite
    bad_config = tiny_config(epochs=1)
    train.train_and_evaluate(bad_config, tmp_path / "fresh", sources=sources)
    assert (tmp_path / "fresh" / "metrics.jsonl").exists()


def test_unknown_split_is_a_config_error(two_epochs, sources):
    with pytest.raises(train.ConfigError, match="no split 'test' in the given sources"):
        train.evaluate_checkpoint(two_epochs, split="test", sources=sources)


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
