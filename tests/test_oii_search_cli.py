"""``dibe-jax oii-search`` end to end: the glue from a value to seeded runs, SPEC's statistic,
the β rule, and one short real search."""

from __future__ import annotations

import json

import pytest

from dibe_jax import cli
from dibe_jax.train import runs

TINY = [
    "--epochs",
    "1",
    "--eval-every",
    "1",
    "--batch-size",
    "64",
    "--set",
    "model.width=4",
    "--set",
    "model.num_stages=2",
    "--no-progress",
]


def test_search_steers_on_last3_mean_over_seeds(monkeypatch, tmp_path, capsys):
    """A synthetic monotone response (OII falls as alpha rises) through the real CLI glue."""
    calls = []

    def fake_train_seeds(config, workdir, seeds, **kwargs):
        a = config.loss.params["alpha"]
        calls.append((a, config.loss.params["beta"], list(seeds), workdir.name))
        # per seed, 4 evaluations; only the last 3 count, and they average to 0.6 - a
        recs = [
            [
                {"epoch": e, "oii": (0.6 - a) + d, "iou": 0.5, "pa": 0.5}
                for e, d in enumerate((5.0, -0.01, 0.0, 0.01), 1)
            ]
            for _ in seeds
        ]
        return runs.SeedRuns(recs, list(seeds), 1.0)

    monkeypatch.setattr(runs, "train_seeds", fake_train_seeds)
    rc = cli.main(
        [
            "oii-search",
            "--workdir",
            str(tmp_path),
            "--loss",
            "tversky",
            "--interval",
            "0.15",
            "0.25",
            "--seeds",
            "2",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 seed(s)" in out and "last 3 evaluations" in out
    saved = json.loads((tmp_path / "oii_search.json").read_text())
    best = saved["best"]
    assert 0.15 < best["oii"] < 0.25 and best["seeds"] == 2 and best["evaluations"] == 6
    assert calls[0][:3] == (0.5, 0.5, [0, 1])  # the centre first, beta = 1 - alpha
    assert all(b == pytest.approx(1 - a) for a, b, _, _ in calls)
    assert calls[0][3] == "alpha=0.5"


def test_fixed_beta_and_bad_flags(monkeypatch, tmp_path, capsys):
    seen = []

    def fake_train_seeds(config, workdir, seeds, **kwargs):
        seen.append(dict(config.loss.params))
        recs = [[{"epoch": 1, "oii": 0.2, "iou": 0.5, "pa": 0.5}]]
        return runs.SeedRuns(recs, [0], 1.0)

    monkeypatch.setattr(runs, "train_seeds", fake_train_seeds)
    assert (
        cli.main(
            [
                "oii-search",
                "--workdir",
                str(tmp_path),
                "--loss",
                "tversky",
                "--beta",
                "0.6",
                "--seeds",
                "1",
            ]
        )
        == 0
    )
    assert seen[0] == {"alpha": 0.5, "beta": 0.6}
    assert (
        cli.main(
            ["oii-search", "--workdir", str(tmp_path / "x"), "--param", "beta", "--beta", "0.6"]
        )
        == 2
    )
    assert "--beta: it is the searched hyperparameter" in capsys.readouterr().err
    assert cli.main(["oii-search", "--workdir", str(tmp_path / "y"), "--loss", "dice"]) == 2
    assert "takes no hyperparameter 'alpha'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_short_real_search_on_the_synthetic_set(tmp_path, capsys):
    rc = cli.main(
        [
            "oii-search",
            "--workdir",
            str(tmp_path / "s"),
            "--loss",
            "tversky",
            "--dataset",
            "synthetic_cracks/r150_96",
            "--data-dir",
            str(tmp_path / "tfds"),
            "--seeds",
            "1",
            "--max-runs",
            "2",
            *TINY,
        ]
    )
    assert rc == 0
    saved = json.loads((tmp_path / "s" / "oii_search.json").read_text())
    assert 1 <= saved["runs_needed"] <= 2 and len(saved["runs"]) == saved["runs_needed"]
    first = saved["runs"][0]
    assert first["value"] == 0.5 and -1 <= first["oii"] <= 1 and first["evaluations"] == 1
    run = tmp_path / "s" / "runs" / "alpha=0.5" / "seed0"
    config = json.loads((run / "config.json").read_text())
    assert config["loss"]["params"] == {"alpha": 0.5, "beta": 0.5}
    assert (run / "wall.json").exists()
