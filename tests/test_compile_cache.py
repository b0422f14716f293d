"""The persistent compilation cache: on by default for ``train_and_evaluate`` and the CLI,
in ``$DIBE_JAX_CACHE_DIR``; a second launch of the same shapes compiles nothing new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dibe_jax.train import compile_cache

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).parent / "_cache_script.py"


def _launch(workdir: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's own cache: not configured here
    env.update({"PYTHONPATH": str(ROOT), compile_cache.ENV: str(cache)})
    # Every program is written, however fast it compiled: on an idle machine the eval step
    # compiles in less than the library's 0.5 s threshold and would (rightly) not be kept.
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()}


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_second_launch_compiles_nothing_new(tmp_path):
    cache = tmp_path / "cache"
    first = _launch(tmp_path / "a", cache)
    assert first["cache_dir"] == str(cache)
    written = _entries(cache)
    steps = {"jit(train_step)", "jit(eval_step)"}
    assert steps <= {name for name, hit in first["compiled"] if not hit}
    assert written  # the steps (seconds to compile) were written
    second = _launch(tmp_path / "b", cache)
    assert _entries(cache) == written  # nothing new was worth writing
    loaded = {name for name, hit in second["compiled"] if hit}
    assert steps <= loaded
    assert {name for name, hit in second["compiled"] if not hit}.isdisjoint(steps)


def test_default_folder_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "dibe_jax" / "jax"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.default_dir() == tmp_path / "mine"
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.default_dir() is None


def test_a_configured_cache_is_left_alone():
    """The suite configures its own cache (conftest.py): ``enable`` keeps it."""
    import jax

    before = jax.config.jax_compilation_cache_dir
    assert before
    assert compile_cache.enable("/nonexistent/elsewhere") == Path(before)
    assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.parametrize("flag", [[], ["--no-compile-cache"]])
def test_cli_flag(flag):
    from dibe_jax import cli

    args = cli.build_parser().parse_args(["losses", *flag])
    assert args.no_compile_cache == bool(flag)
