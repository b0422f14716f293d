"""Re-running a search never throws finished training away: runs asked for more epochs are
extended, finished ones read back, runs of another setting refused without ``overwrite``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dibe_jax import train, tuning
from dibe_jax.train import runs

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402

# End to end (trainings in subprocesses or conversions): run by `make test-slow`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources():
    return {"train": make_examples(8, 0), "validation": make_examples(4, 1)}


def _search(workdir: Path, config, sources, **kwargs) -> list[runs.SeedRuns]:
    """The OII-guided search's glue, one value, one seed (as ``dibe-jax oii-search``)."""
    results = []

    def run(value: float) -> dict:
        c = runs.with_hyperparameter(config, "alpha", value)
        r = runs.train_seeds(c, workdir / f"alpha={value:g}", [0], sources=sources, **kwargs)
        results.append(r)
        return runs.search_metrics(r)

    tuning.oii_search(run, max_runs=1)
    return results


def test_a_rerun_with_more_epochs_extends_the_runs(tmp_path, sources):
    config = tiny_config(epochs=1, batch_size=4, **{"loss.name": "tversky"})
    (first,) = _search(tmp_path, config, sources)
    run_dir = tmp_path / "alpha=0.5" / "seed0"
    before = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [r["epoch"] for r in first.runs[0]] == [1]
    # More epochs, another progress option: resumed from the checkpoint, not started again.
    longer = train.override(config, {"epochs": 3, "progress": True})
    (second,) = _search(tmp_path, longer, sources)
    after = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert after[:1] == before  # the first epoch's record unchanged, byte for byte
    assert [r["epoch"] for r in second.runs[0]] == [1, 2, 3]
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    # The same request again (but the progress option): read back, nothing trains.
    mtime = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    (third,) = _search(tmp_path, train.override(longer, {"progress": False}), sources)
    assert third.runs == second.runs and (run_dir / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_a_run_of_another_setting_is_refused_without_overwrite(tmp_path, sources):
    config = tiny_config(epochs=1, batch_size=4, **{"loss.name": "tversky"})
    runs.train_seeds(config, tmp_path, [0], sources=sources)
    other = train.override(config, {"optim.lr": 0.02})
    with pytest.raises(train.ConfigError, match=r"seed0 holds a run of another setting \(optim.lr"):
        runs.train_seeds(other, tmp_path, [0], sources=sources)
    assert json.loads((tmp_path / "seed0" / "config.json").read_text())["optim"]["lr"] == 0.01
    result = runs.train_seeds(other, tmp_path, [0], sources=sources, overwrite=True)
    assert json.loads((tmp_path / "seed0" / "config.json").read_text())["optim"]["lr"] == 0.02
    assert [r["epoch"] for r in result.runs[0]] == [1]
