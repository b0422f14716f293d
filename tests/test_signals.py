"""Ctrl-C (SIGINT) during training: the run saves a checkpoint mid-epoch, a resume from it
equals the uninterrupted run, and the CLI prints the resume command and exits with 130."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from dibe_jax import cli, train

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import run_script, uninterrupted_record  # noqa: E402


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


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
