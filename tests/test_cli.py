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


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_bug_is_shown_with_its_traceback_and_status_1(monkeypatch, capsys):
    from dibe_jax import losses

    def broken(name):
        raise ValueError("boom inside the library")

    monkeypatch.setattr(losses, "describe", broken)
    assert cli.main(["losses"]) == 1
    err = _err_lines(capsys)
    assert err[0] == "Traceback (most recent call last):"
    assert "ValueError: boom inside the library" in err
    assert err[-1] == "dibe-jax: internal error (a bug): please report it with the traceback above"
    assert not any(line.startswith("dibe-jax: error:") for line in err)
    with pytest.raises(ValueError, match="boom"):
        cli.main(["losses", "--debug"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["data", "stats", "cityscapes"], "NAME: unknown dataset 'cityscapes'"),
        (["train", "--config", "nope", "--workdir", "w"], "--config nope: no shipped config"),
        (["predict", "--workdir", "w", "--input", "missing.png", "--out", "o"], "does not exist"),
        (["oii-search", "--workdir", "w", "--bounds", "0.9", "0.1"], "--bounds: expected two"),
        (["oii-search", "--workdir", "w", "--interval", "0.3", "0.2"], "--interval: expected"),
        (["oii-search", "--workdir", "w", "--seeds", "0"], "--seeds: expected an integer >= 1"),
        (["oii-search", "--workdir", "w", "--set", "loss.gamma=-1"], "loss.params of 'dibe'"),
        (["oii-search", "--workdir", "w", "--set", "loss.alpha=0.2"], "loss.alpha: set to 0.2"),
        (["oii-search", "--workdir", "w", "--set", "loss.beta=0.6"], "or fix it with --beta"),
    ],
)
def test_user_errors_are_one_line_and_status_2(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("dibe-jax: error: ") and needle in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_oii_search_runs_in_one_process(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:  # the flag is gone: argparse refuses it
        cli.main(["oii-search", "--workdir", str(tmp_path / "w"), "--distributed"])
    assert e.value.code == 2 and "unrecognized arguments: --distributed" in capsys.readouterr().err
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    assert cli.main(["oii-search", "--workdir", str(tmp_path / "w")]) == 2
    assert "oii-search: runs in one process" in _err_lines(capsys)[0]
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--bogus", "x"], "dibe-jax train: error: unrecognized arguments: --bogus x"),
        (["train"], "dibe-jax train: error: the following arguments are required: --workdir"),
        (
            ["predict", "--workdir", "w", "--bogus"],
            "dibe-jax predict: error: unrecognized arguments: --bogus",
        ),
        (
            ["predict", "--workdir", "w"],
            "dibe-jax predict: error: the following arguments are required: --input, --out",
        ),
    ],
)
def test_an_unknown_flag_is_named_before_a_missing_required_one(argv, needle, capsys):
    """A mistyped flag is what the error names, even when a required flag is missing too;
    a missing required flag is still refused (status 2)."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == needle


def test_configs_command_and_train_help_name_the_shipped_configs(capsys):
    from dibe_jax import configs

    assert cli.main(["configs"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in configs.names())
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--config NAME|PATH" in capsys.readouterr().out


class _Stop(Exception):
    """Raised where the data would be opened: everything before it is the launch's checks."""


def test_one_validation_pass_per_call(monkeypatch, tmp_path):
    from dibe_jax import train
    from dibe_jax.train import checks, evaluate, runs, state

    passes = []
    real = checks.validate

    def counting(config, **kwargs):
        passes.append(kwargs)
        return real(config, **kwargs)

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(checks, "validate", counting)
    monkeypatch.setattr(state, "open_sources", stop)
    with pytest.raises(_Stop):
        cli.main(["train", "--workdir", str(tmp_path / "new"), "--set", "model.width=4", "--debug"])
    assert len(passes) == 1
    run = tmp_path / "run"  # a run folder as `eval` and `--resume` read it
    run.mkdir()
    (run / "config.json").write_text(train.Config().to_json())
    monkeypatch.setattr(evaluate, "Checkpoints", lambda *args, **kwargs: None)
    for argv in (["eval", "--workdir", str(run)], ["train", "--workdir", str(run), "--resume"]):
        passes.clear()
        with pytest.raises(_Stop):
            cli.main([*argv, "--debug"])
        assert len(passes) == 1, argv
    # a search checks each distinct config it will train once: the two ends of its range
    monkeypatch.setattr(runs, "train_seeds", lambda *a, **k: stop())
    passes.clear()
    with pytest.raises(_Stop):
        cli.main(["oii-search", "--workdir", str(tmp_path / "s"), "--loss", "tversky", "--debug"])
    assert len(passes) == 2
    passes.clear()  # a sweep: each member (a distinct config) once
    sweep = ["sweep", "--sweep", "loss.alpha=0.3,0.5", "--seeds", "0", "--debug"]
    with pytest.raises(_Stop):
        cli.main([*sweep, "--workdir", str(tmp_path / "sw")])
    assert len(passes) == 2


def test_sweep_refuses_an_unknown_loss_in_one_line(tmp_path, capsys):
    argv = ["sweep", "--loss", "dibee", "--sweep", "loss.alpha=0.3,0.5", "--seeds", "0"]
    assert cli.main([*argv, "--workdir", str(tmp_path / "sw")]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("dibe-jax: error: loss.name: unknown loss 'dibee'")
    assert not (tmp_path / "sw").exists()


def test_a_closed_output_pipe_is_not_reported_as_a_bug(monkeypatch, capsys):
    """`dibe-jax configs | head -1`: the reader going away ends the command quietly (141)."""

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    parser = cli.build_parser
    monkeypatch.setattr(
        cli,
        "build_parser",
        lambda: _with_func(parser(), "configs", closed),
    )
    assert cli.main(["configs"]) == 141
    assert "internal error" not in capsys.readouterr().err


def _with_func(parser, sub, func):
    for action in parser._subparsers._group_actions:
        action.choices[sub].set_defaults(func=func)
    return parser
