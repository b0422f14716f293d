"""The ``dibe-jax`` command's thinner subcommands: data stats, losses, help."""

from __future__ import annotations

import pytest

from dibe_jax import cli


def test_data_stats_prints_table(tmp_path, capsys):
    assert cli.main(["data", "stats", "synthetic_cracks/r150_96", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "validation" in out and "1:1" in out  # FG:BG ratios printed


@pytest.mark.parametrize("sub", ["analyze", "losses", "train", "eval", "predict", "oii-search"])
def test_every_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([sub, "--help"])
    assert e.value.code == 0
    assert "usage: dibe-jax" in capsys.readouterr().out


def test_data_stats_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "stats", "--help"])
    assert "NAME[/CONFIG]" in capsys.readouterr().out


def test_unknown_loss_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--loss", "dibee", "--workdir", str(tmp_path / "r")]) == 2
    assert "dibe-jax: error: loss.name: unknown loss 'dibee'" in capsys.readouterr().err
