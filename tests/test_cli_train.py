"""``dibe-jax train`` and ``dibe-jax eval`` (dibe_jax.cli) as a user meets them: every bad
flag or value is one ``dibe-jax: error:`` line with status 2 before anything compiles or is
written, ``--resume`` refuses a changed model, and a run trained through the CLI is
evaluated and extended from its folder alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dibe_jax import cli, train


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show a workflow changed nothing)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def two_epochs(finished_run) -> Path:
    """The folder of the shared finished 2-epoch run (``conftest.py``): read only."""
    return finished_run[0]


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


def test_cli_resume_refuses_a_changed_model_with_status_2(two_epochs, capsys):
    before = _snapshot(two_epochs)
    rc = cli.main(["train", "--workdir", str(two_epochs), "--resume", "--set", "model.width=8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("dibe-jax: error: --resume: model.width is 4") and "but 8" in err[0]
    rc = cli.main(["train", "--workdir", str(two_epochs), "--resume", "--loss", "focal"])
    assert rc == 2 and "loss.name is 'dibe'" in capsys.readouterr().err
    assert _snapshot(two_epochs) == before


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


def test_cli_train_help_lists_options(capsys):
    for sub in ("train", "eval", "predict", "oii-search"):
        with pytest.raises(SystemExit):
            cli.main([sub, "--help"])
        assert "--workdir" in capsys.readouterr().out
