"""A run a user can trust: typed configs, resume from the workdir alone, errors caught before
anything compiles, failed launches that leave nothing behind, and SIGINT that saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dibe_jax import cli, train

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import (  # noqa: E402
    make_examples,
    run_script,
    tiny_config,
    uninterrupted_record,
)

SCRIPT = Path(__file__).parent / "_train_script.py"
ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show a workflow changed nothing)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


@pytest.fixture(scope="module")
def sources():
    return {"train": make_examples(16, 0), "validation": make_examples(8, 1)}


# ------------------------------------------------------------------------ typed config


def test_text_is_parsed_by_the_field_type():
    c = train.apply_overrides(
        train.Config(),
        [
            "loss.name=tversky",
            "loss.alpha=0.7",
            "model.width=16",
            "optim.lr=5e-2",
            "data.image_size=[[0, 64], [10, 96]]",
            "optim.grad_clip=none",
            "epochs=3",
            "progress=false",
            "optim.step_epochs=10,20",
            "model.align_corners=False",
        ],
    )
    assert (c.loss.name, c.loss.params, c.model.options["width"]) == ("tversky", {"alpha": 0.7}, 16)
    assert c.optim.lr == 0.05 and c.epochs == 3 and c.progress is False
    assert c.data.image_size == [[0, 64], [10, 96]] and c.optim.step_epochs == [10, 20]
    assert c.model.options["align_corners"] is False and c.optim.grad_clip is None
    assert train.from_dict(json.loads(c.to_json())) == c


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs=two", "epochs: expected an integer, got 'two'"),
        ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
        ("progress=maybe", "progress: expected true or false"),
        ("data.image_size=big", "data.image_size: expected an integer"),
        ("loss.alpha=high", "loss.alpha: expected a number"),
        ("model.width=wide", "model.width: expected an integer"),
        ("optim.nope=1", "unknown config field 'optim.nope'"),
        ("epochs", "expected KEY=VALUE"),
        ("optim=1", "'optim' is a group of fields"),
    ],
)
def test_bad_text_names_the_field(item, message):
    with pytest.raises(train.ConfigError, match=message.replace("(", r"\(")):
        train.apply_overrides(train.Config(), [item])


def test_python_values_are_type_checked():
    with pytest.raises(train.ConfigError, match="epochs: expected an integer, got 2.5"):
        train.override(train.Config(), {"epochs": 2.5})
    with pytest.raises(train.ConfigError, match="batch_size: expected an integer, got True"):
        train.override(train.Config(), {"batch_size": True})
    with pytest.raises(train.ConfigError, match="unknown config field"):
        train.from_dict({"epochz": 3})
    with pytest.raises(train.ConfigError, match="optim.lr: expected a number"):
        train.from_dict({"optim": {"lr": "fast"}})


def test_config_files_py_and_json(tmp_path):
    py = tmp_path / "cfg.py"
    py.write_text(
        "from dibe_jax import train\n\n"
        "def get_config():\n"
        "    c = train.Config()\n"
        "    c.loss.name = 'dibe_reg'\n"
        "    c.model.options['width'] = 8\n"
        "    return c\n"
    )
    c = train.load(py)
    assert c.loss.name == "dibe_reg" and c.model.options == {"width": 8}
    js = tmp_path / "config.json"
    js.write_text(c.to_json())
    assert train.load(js) == c
    (tmp_path / "bad.py").write_text("def get_config():\n    return {'epochs': 'two'}\n")
    with pytest.raises(train.ConfigError, match="epochs: expected an integer"):
        train.load(tmp_path / "bad.py")
    with pytest.raises(train.ConfigError, match="no such file"):
        train.load(tmp_path / "missing.py")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss.gamma": -1.0}, r"loss.params of 'dibe': `gamma` must be > 0"),
        ({"loss.theta": 2.0}, r"`theta` must be in \[0, 1\]"),
        ({"loss.name": "dice_multiclass"}, "multi-class loss"),
        ({"loss.name": "dicee"}, "loss.name: unknown loss 'dicee'"),
        ({"loss.gamma_ft": 0.5}, "takes no hyperparameter 'gamma_ft'"),
        ({"model.name": "unett"}, "model.name: expected one of unet"),
        ({"model.widht": 8}, "model.widht: model 'unet' takes no option 'widht'"),
        ({"data.image_size": 100}, "multiples of 16"),
        ({"data.image_size": [[0, 64], [5, 90]]}, "multiples of 16"),
        ({"data.image_size": [[3, 64]]}, "start at epoch 0"),
        ({"batch_size": 0}, "batch_size"),
        ({"nonfinite": "ignore"}, "nonfinite: expected one of raise, skip"),
        ({"optim.lr": 0.0}, "optim.lr: expected a value > 0"),
        ({"optim.momentum": 1.0}, r"optim.momentum: expected a value in \[0, 1\)"),
        ({"data.brightness": 1.5}, r"data.brightness: expected a value in \[0, 1\]"),
        ({"epochs": 0}, "epochs: expected a value >= 1"),
    ],
)
def test_validate_catches_values_before_compiling(values, message, compilations):
    with pytest.raises(train.ConfigError, match=message):  # a choice already in override()
        train.validate(train.override(train.Config(), values), in_memory=True)
    assert compilations == []  # an abstract trace at most, never a compilation


def test_the_compilations_fixture_sees_a_compilation(compilations):
    """The guard of the tests above can fail: a new jitted program is seen."""
    import jax
    import jax.numpy as jnp

    jax.jit(lambda x: x * 3.25 + 1.0)(jnp.arange(7.0)).block_until_ready()
    assert compilations


def test_batch_not_divisible_by_devices(monkeypatch):
    import jax

    monkeypatch.setattr(jax, "device_count", lambda: 4)
    with pytest.raises(train.ConfigError, match="multiple of the 4 devices"):
        train.validate(train.override(train.Config(), {"batch_size": 6}), in_memory=True)


# --------------------------------------------------------------------- resume and workdir


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, sources):
    workdir = tmp_path_factory.mktemp("two") / "run"
    train.train_and_evaluate(tiny_config(epochs=2), workdir, sources=sources)
    return workdir


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


def test_cli_resume_refuses_a_changed_model_with_status_2(two_epochs, capsys):
    before = _snapshot(two_epochs)
    rc = cli.main(["train", "--workdir", str(two_epochs), "--resume", "--set", "model.width=8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("dibe-jax: error: --resume: model.width is 4") and "but 8" in err[0]
    rc = cli.main(["train", "--workdir", str(two_epochs), "--resume", "--loss", "focal"])
    assert rc == 2 and "loss.name is 'dibe'" in capsys.readouterr().err
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


# -------------------------------------------------------------------------- SIGINT


@pytest.mark.slow
def test_sigint_mid_epoch_saves_and_resume_matches_uninterrupted(tmp_path, tmp_path_factory):
    whole = uninterrupted_record(tmp_path_factory)
    run = tmp_path / "run"
    # 16 reads per epoch: the 40th is in the middle of epoch 3 (of 4)
    out = run_script(str(run), "--epochs", "4", "--signal-after", "40", check=False)
    assert out.returncode == 130, out.stderr[-2000:]
    info = json.loads(out.stdout.splitlines()[-1])
    assert 4 < info["interrupted_at_step"] < whole["step"]  # mid-epoch, after epoch 2
    resumed = run_script(str(run), "--resume", "--epochs", "4")
    assert _comparable(json.loads(resumed.stdout.splitlines()[-1])) == _comparable(whole)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]


def test_cli_interrupted_prints_resume_command_and_exits_130(monkeypatch, tmp_path, capsys):
    def interrupted(config, workdir, **kwargs):
        raise train.Interrupted(signal.SIGINT, 7, 1, Path(workdir))

    monkeypatch.setattr(train, "train_and_evaluate", interrupted)
    rc = cli.main(["train", "--workdir", str(tmp_path / "r"), "--set", "model.width=4"])
    err = capsys.readouterr().err
    assert rc == 130
    assert f"resume with: dibe-jax train --workdir {tmp_path / 'r'} --resume" in err
    assert "step 7" in err


# ----------------------------------------------------------------------- CLI user errors


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "loss.gamma=-1"], "`gamma` must be > 0"),
        (["--set", "epochs=two"], "epochs: expected an integer, got 'two'"),
        (["--set", "optim.lr=abc"], "optim.lr: expected a number, got 'abc'"),
        (["--config.optim.lr=abc"], "optim.lr: expected a number, got 'abc'"),
        (["--dataset", "crackforest/label3"], "unknown config 'label3'"),
        (["--dataset", "cityscapes"], "unknown dataset 'cityscapes'"),
        (["--image-size", "100"], "multiples of 16"),
        (["--loss", "dice_multiclass"], "multi-class loss"),
        (["--loss", "dibee"], "unknown loss 'dibee'"),
        (["--batch-size", "0"], "batch_size"),
        (["--set", "model.widht=8"], "takes no option 'widht'"),
        (["--config", "missing.py"], "no such file"),
    ],
)
def test_cli_bad_input_is_one_line_status_2_and_writes_nothing(
    args, needle, tmp_path, capsys, compilations
):
    workdir = tmp_path / "run"
    rc = cli.main(["train", "--workdir", str(workdir), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("dibe-jax: error: ") and needle in err[0], err
    assert compilations == []  # refused before anything compiled
    assert not workdir.exists()


def test_cli_debug_shows_the_traceback(tmp_path):
    with pytest.raises(train.ConfigError, match="epochs"):
        cli.main(["train", "--workdir", str(tmp_path / "r"), "--set", "epochs=two", "--debug"])


def test_cli_eval_and_predict_need_a_run(tmp_path, capsys):
    assert cli.main(["eval", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_unknown_split_is_a_config_error(two_epochs, sources):
    with pytest.raises(train.ConfigError, match="no split 'test' in the given sources"):
        train.evaluate_checkpoint(two_epochs, split="test", sources=sources)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A run trained through the CLI on the embedded synthetic set (1 epoch, tiny U-Net, the
    96 px images resized to 32 px)."""
    root = tmp_path_factory.mktemp("cli")
    args = [
        "train",
        "--dataset",
        "synthetic_cracks/r150_96",
        "--data-dir",
        str(root / "tfds"),
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--image-size",
        "32",
        "--set",
        "model.width=4",
        "--set",
        "model.num_stages=1",
        "--no-progress",
        "--workdir",
        str(root / "run"),
    ]
    assert cli.main(args) == 0
    return root / "run"


@pytest.mark.slow
def test_cli_resume_eval_from_workdir_alone(cli_run, capsys):
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(cli_run)]) == 0
    out = capsys.readouterr().out
    assert "on the validation split" in out and "IoU" in out and "step 6 (epoch 1)" in out
    assert cli.main(["eval", "--workdir", str(cli_run), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split 'test' not in dataset" in err[0], err
    assert (
        cli.main(["train", "--workdir", str(cli_run), "--resume", "--epochs", "2", "--no-progress"])
        == 0
    )
    captured = capsys.readouterr()
    assert "resuming" in captured.err and "from step 6 (epoch 1 of 2 done)" in captured.err
    assert [r["epoch"] for r in map(json.loads, (cli_run / "metrics.jsonl").open())] == [1, 2]
    assert train.load_config(cli_run).epochs == 2


def test_eval_table_is_rounded():
    from dibe_jax.train import reporting

    out = {
        "iou": 0.123456789,
        "pa": 0.5,
        "recall": 0.25,
        "oii": -0.3333333,
        "fp_fn_ratio": 2.0,
        "val_loss": 1.23456,
        "tp": 1234,
        "fp": 5,
        "fn": 6,
        "tn": 1000000,
    }
    table = reporting.eval_table(out)
    assert "0.1235" in table and "-0.3333" in table and "1,000,000" in table
    assert "0.123456789" not in table


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


def test_nonfinite_raise_stops_within_a_few_steps(tmp_path, monkeypatch):
    from dibe_jax.train import batches, loop

    calls = []
    real = batches.shard_batch
    monkeypatch.setattr(batches, "shard_batch", lambda b, m: calls.append(1) or real(b, m))
    config = tiny_config(epochs=1, batch_size=2)
    config.optim.lr = 1e30  # parameters overflow after the first update
    data = {"train": make_examples(96, 0), "validation": make_examples(4, 1)}  # 48 steps
    with pytest.raises(train.NonFiniteError, match=r"not finite at step [0-2] \(epoch 0\)"):
        train.train_and_evaluate(config, tmp_path / "r", sources=data)
    assert len(calls) <= 2 * loop.NONFINITE_CHECK_EVERY + 2 < 48  # not the whole epoch


def _two_processes(workdir: Path, attempts: int = 2) -> list[tuple[str, str]]:
    """Run the tiny training in 2 processes on localhost; their (stdout, stderr).

    CPU collectives (gloo) give a peer 30 s to join, which a loaded machine can exceed while
    the other process compiles: such a start-up time-out, and only that, is tried again.
    """
    import shutil
    import socket

    for attempt in range(attempts):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [
            sys.executable,
            str(SCRIPT),
            str(workdir),
            "--epochs",
            "2",
            "--eval-examples",
            "9",
            "--process",
        ]
        procs = [
            subprocess.Popen(
                [*cmd, str(i), "2", str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(2)
        ]
        outs = [p.communicate(timeout=600) for p in procs]
        if all(p.returncode == 0 for p in procs):
            return outs
        gloo_timeout = any("Gloo context initialization failed" in err for _, err in outs)
        if not gloo_timeout or attempt == attempts - 1:
            raise AssertionError("\n".join(err[-3000:] for _, err in outs))
        shutil.rmtree(workdir, ignore_errors=True)
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path):
    """2 CPU processes on localhost (jax.distributed): a short train + evaluate finishes, with
    9 validation examples (shards of 5 and 4: without padding, one process would wait for a
    collective the other never enters), and the evaluation counts every example once and
    equals a single-process evaluation of the saved state."""
    outs = _two_processes(tmp_path / "run")
    records = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    assert _comparable(records[0]) == _comparable(records[1])
    assert sum(records[0][k] for k in ("tp", "fp", "fn", "tn")) == 9 * 32 * 32
    single = train.evaluate_checkpoint(
        tmp_path / "run",
        best=False,
        sources={"train": make_examples(16, 0), "validation": make_examples(9, 1)},
    )
    for key in ("tp", "fp", "fn", "tn"):
        assert single[key] == records[0][key]
    assert single["iou"] == pytest.approx(records[0]["iou"])
