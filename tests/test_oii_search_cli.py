"""``dibe-jax oii-search`` end to end: the glue from a value to seeded runs, the last-3 statistic,
the β rule, steering a multi-class run on one class's OII or the macro OII, the refusals, and
one short real search."""

from __future__ import annotations

import json

import pytest

from dibe_jax import cli
from dibe_jax.train import runs

TINY = [  # the 96 px images resized to 32 px, a U-Net with one stage: seconds per run
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--eval-every",
    "1",
    "--batch-size",
    "64",
    "--set",
    "model.width=4",
    "--set",
    "model.num_stages=1",
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


MULTI = "synthetic_cracks/multi_96"  # classes background, crack, spot


def _multiclass_response(a: float) -> dict[str, float]:
    """A synthetic monotone 3-class response: every OII falls as alpha rises, each its way."""
    return {
        "oii/background": -0.05 * a,
        "oii/crack": 0.8 - a,  # bisection from 0.5: 0.30, 0.10, then 0.20 at 0.6
        "oii/spot": -0.4 - a,  # never inside the interval: must not be what is steered on
        "macro_oii": 0.35 - 0.5 * a,  # 0.10 at 0.5, then 0.20 at 0.3
        "iou/crack": 0.4,
        "precision/crack": 0.6,
        "recall/crack": 0.5,
        "miou": 0.7,
        "macro_precision": 0.8,
    }


def _fake_multiclass_train_seeds(calls: list):
    def fake(config, workdir, seeds, **kwargs):
        a = config.loss.params["alpha"]
        calls.append((a, config.loss.params["beta"], workdir.name))
        response = _multiclass_response(a)
        # per seed, 4 evaluations; the first is far off and must not count (last 3 only)
        recs = [
            [
                {"epoch": e, **{k: v + d for k, v in response.items()}}
                for e, d in enumerate((5.0, -0.01, 0.0, 0.01), 1)
            ]
            for _ in seeds
        ]
        return runs.SeedRuns(recs, list(seeds), 1.0)

    return fake


@pytest.mark.parametrize(
    ("steer", "key", "values", "iou", "pa"),
    [
        (["--steer", "crack"], "oii/crack", [0.5, 0.7, 0.6], 0.4, 0.6),
        (["--steer", "macro"], "macro_oii", [0.5, 0.3], 0.7, 0.8),
        ([], "macro_oii", [0.5, 0.3], 0.7, 0.8),  # the default of a multi-class dataset
    ],
)
def test_multiclass_search_steers_on_a_class_or_the_macro_oii(
    monkeypatch, tmp_path, capsys, steer, key, values, iou, pa
):
    calls: list = []
    monkeypatch.setattr(runs, "train_seeds", _fake_multiclass_train_seeds(calls))
    rc = cli.main(
        ["oii-search", "--workdir", str(tmp_path), "--dataset", MULTI, "--seeds", "2", *steer]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert f"steered on {key} (" in out and "2 seed(s)" in out
    saved = json.loads((tmp_path / "oii_search.json").read_text())
    assert [r["value"] for r in saved["runs"]] == pytest.approx(values)
    assert saved["converged"] and saved["stop_reason"] == "inside"
    best = saved["best"]
    assert best["steered"] == key and all(r["steered"] == key for r in saved["runs"])
    assert 0.15 < best["oii"] < 0.25
    assert best["oii"] == pytest.approx(_multiclass_response(best["value"])[key])
    assert (best["iou"], best["pa"]) == pytest.approx((iou, pa))
    assert best["seeds"] == 2 and best["evaluations"] == 6
    assert calls[0] == (0.5, 0.5, "alpha=0.5")  # the centre first, beta = 1 - alpha (dibe)


def test_search_metrics_keys_per_target():
    recs = [[{"epoch": 1, **_multiclass_response(0.2), "oii": 0.1, "iou": 0.3, "pa": 0.9}]]
    result = runs.SeedRuns(recs, [0], 2.0)
    binary = runs.search_metrics(result)
    assert list(binary) == [
        *("oii", "oii_sd", "iou", "iou_sd", "pa", "pa_sd"),
        *("seeds", "evaluations", "seconds"),
    ]  # the binary record as before: no "steered"
    assert (binary["oii"], binary["iou"], binary["pa"]) == (0.1, 0.3, 0.9)
    spot = runs.search_metrics(result, "oii/spot")
    assert spot["steered"] == "oii/spot" and spot["oii"] == pytest.approx(-0.6)
    macro = runs.search_metrics(result, "macro_oii")
    assert (macro["oii"], macro["iou"], macro["pa"]) == pytest.approx((0.25, 0.7, 0.8))
    with pytest.raises(ValueError, match="no evaluation record has 'oii/fray'"):
        runs.search_metrics(result, "oii/fray")
    with pytest.raises(ValueError, match="steer must be"):
        runs.search_metrics(result, "iou/crack")


def test_seed_runs_summary_of_binary_and_multiclass_runs():
    binary = runs.SeedRuns([[{"epoch": e, "iou": 0.1 * e, "oii": 0.2} for e in (1, 2)]], [0])
    out = binary.summary()
    assert [k for k in out if k.endswith("_last3")] == [f"{k}_last3" for k in runs.BINARY_SUMMARY]
    assert out["iou_last3"] == [pytest.approx(0.15), pytest.approx(0.05 * 2**0.5), 2]
    assert out["iou_final"][0] == pytest.approx(0.2) and out["pa_last3"][2] == 0  # absent key
    recs = [[{"epoch": 1, **_multiclass_response(0.2), "miou": 0.5}], [{"epoch": 1, "miou": 0.7}]]
    multi = runs.SeedRuns(recs, [0, 1], 3.0).summary()
    assert multi["seeds"] == [0, 1] and multi["wall_seconds"] == 3.0
    assert multi["miou_last3"] == [pytest.approx(0.6), pytest.approx(0.1 * 2**0.5), 2]
    classes = [k.split("/", 1)[1] for k in _multiclass_response(0.2) if k.startswith("iou/")]
    assert classes and all(f"{m}/{c}_best" in multi for m in ("iou", "oii") for c in classes)
    assert list(runs.SeedRuns(recs, [0, 1]).summary(["miou"])) == [
        *("seeds", "wall_seconds", "miou_last3", "miou_final", "miou_best")
    ]


def test_steer_target_names():
    classes = ("background", "Hair line", "spot")
    assert runs.steer_target(classes, "Hair line") == "oii/hair_line"
    assert runs.steer_target(classes, "hair_line") == "oii/hair_line"
    assert runs.steer_target(("background", "crack")) == "oii"
    with pytest.raises(ValueError, match="valid: macro, background, hair_line, spot"):
        runs.steer_target(classes, "hair")
    with pytest.raises(ValueError, match="foreground OII only"):
        runs.steer_target(("background", "crack"), "macro")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", MULTI, "--steer", "fray"],
            "--steer: unknown class 'fray'; valid: macro, background, crack, spot",
        ),
        (
            ["--dataset", "synthetic_cracks/r150_96", "--loss", "tversky", "--steer", "crack"],
            "--steer: 'crack': a binary dataset (background, crack) is steered on its "
            "foreground OII only",
        ),
        (
            ["--dataset", "synthetic_cracks/r150_96", "--loss", "tversky", "--steer", "macro"],
            "--steer: 'macro': a binary dataset",
        ),
        (
            ["--dataset", MULTI, "--loss", "softmax_cross_entropy"],
            "--param: loss 'softmax_cross_entropy' takes no hyperparameter 'alpha'",
        ),
        (
            ["--dataset", MULTI, "--loss", "lovasz_softmax", "--param", "beta"],
            "--param: loss 'lovasz_softmax' takes no hyperparameter 'beta'",
        ),
    ],
)
def test_refusals_before_anything_trains(monkeypatch, tmp_path, capsys, args, message):
    def must_not_train(*a, **k):
        raise AssertionError("trained although the request was refused")

    monkeypatch.setattr(runs, "train_seeds", must_not_train)
    rc = cli.main(["oii-search", "--workdir", str(tmp_path / "w"), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("dibe-jax: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "w").exists()


def test_an_interrupted_search_says_the_same_command_continues_it(monkeypatch, tmp_path, capsys):
    """Ctrl-C inside a search's training: the run saved, and running the search again (without
    ``--overwrite``, which would replace what was saved) resumes it."""
    import signal

    from dibe_jax import train

    def interrupted(config, workdir, seeds, **kwargs):
        raise train.Interrupted(signal.SIGINT, 3, 0, workdir / "seed0")

    monkeypatch.setattr(runs, "train_seeds", interrupted)
    wd = str(tmp_path / "w")
    rc = cli.main(["oii-search", "--workdir", wd, "--epochs", "2", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 130 and "step 3" in err
    assert err.splitlines()[-1] == f"resume with: dibe-jax oii-search --workdir {wd} --epochs 2"


def test_multiclass_runs_log_their_macro_scores(monkeypatch, tmp_path):
    """train_seeds' progress line for multi-class records (no iou/pa/oii keys)."""
    from dibe_jax.train import Config, loop

    def fake_train_and_evaluate(config, workdir, **kwargs):
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(config.to_json())
        record = {"epoch": config.epochs, **_multiclass_response(0.5)}
        (workdir / "metrics.jsonl").write_text(json.dumps(record) + "\n")

    monkeypatch.setattr(loop, "train_and_evaluate", fake_train_and_evaluate)
    lines: list[str] = []
    result = runs.train_seeds(Config(), tmp_path, [0], log=lines.append)
    assert len(lines) == 1 and "mIoU 0.700 macro PA 0.800 macro OII +0.100" in lines[0]
    assert runs.search_metrics(result, "oii/crack")["oii"] == pytest.approx(0.3)


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
