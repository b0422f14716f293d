"""Data parallelism (dibe_jax.train.step) and several processes (``jax.distributed``): a
step on a mesh of 2 (in-process) or 4 (a subprocess) fake CPU devices equals the same step
on one device; two processes on localhost train and evaluate like one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dibe_jax import train

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, run_script, tiny_config  # noqa: E402

SCRIPT = Path(__file__).parent / "_train_script.py"
ROOT = Path(__file__).resolve().parents[1]


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_two_device_step_in_process_equals_single_device_step():
    # The two fake CPU devices of conftest.py: the library's own path (loss_steps, replicate,
    # shard_batch) with the batch split over a 2-device mesh gives the loss, weights and
    # BatchNorm statistics of the same step on one device.
    import jax
    from flax import nnx

    from dibe_jax.train import loop, step

    assert jax.device_count() == 2
    config = tiny_config(**{"model.width": 2, "model.num_stages": 1})
    examples = make_examples(4, 3, size=16)
    batch = {
        "image": np.stack([e["image"] for e in examples]).astype(np.float32) / 255,
        "mask": np.stack([e["mask"] for e in examples]),
    }

    def weights_and_stats(tg, state):
        model = nnx.merge(tg, state)[0]
        leaves = jax.tree.leaves((nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat)))
        return [np.asarray(x) for x in leaves]

    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        tg, eg, state = train.make_state(config, in_channels=3)
        before = weights_and_stats(tg, state)
        mesh = step.make_mesh(devices)
        steps = loop.loss_steps(config, tg, eg, mesh, num_classes=1)
        state = step.replicate(state, steps.replicated)
        sharded = step.shard_batch(batch, mesh)
        assert len(sharded["image"].addressable_shards) == len(devices)
        assert sharded["image"].addressable_shards[0].data.shape[0] == 4 // len(devices)
        state, stats = steps.train(state, sharded)
        assert int(stats["nonfinite"]) == 0
        after = weights_and_stats(tg, state)
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(after, before, strict=True)) > 0
        results.append((float(stats["loss"]), after))
    (loss_2, leaves_2), (loss_1, leaves_1) = results
    assert abs(loss_2 - loss_1) < 1e-5
    for a, b in zip(leaves_2, leaves_1, strict=True):  # weights and BatchNorm statistics
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_four_device_step_equals_single_device_step():
    env = {
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    out = json.loads(run_script("--devices-check", env=env).stdout.splitlines()[-1])
    assert out["devices"] == 4
    assert out["max_diff"] < 1e-5


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
