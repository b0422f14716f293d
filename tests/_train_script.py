"""Subprocess entry for the training tests: a tiny deterministic run on in-memory data.

    python tests/_train_script.py WORKDIR [--resume] [--kill-after N] [--signal-after N]
        [--epochs E] [--devices-check]

``--kill-after N`` sends SIGKILL to this process from inside the data source on its N-th
read of a training example: a real crash in the middle of an epoch, with no hook in the
library. ``--signal-after N`` sends SIGINT instead (a user's Ctrl-C): the run saves a
checkpoint and the script exits with 130, as the CLI does. ``--devices-check`` compares
one data-parallel step on every (fake) device with the same step on one device and prints
the largest parameter difference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence

import numpy as np

if __name__ == "__main__":
    # The runs here never use PyTorch, but tensorboardX imports it whenever it is installed
    # (it is, for the parity tests): 3 s of every subprocess. Hidden, tensorboardX writes
    # the same event files from NumPy.
    sys.modules["torch"] = None


def make_examples(n: int, seed: int, size: int = 32) -> list[dict]:
    from dibe_jax.datasets import generate_example

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image, mask = generate_example(rng, size, 60)
        out.append({"image": image, "mask": mask})
    return out


SCRIPT = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(SCRIPT))


def run_script(*args: str, env: dict | None = None, check: bool = True):
    """Run this script in a fresh interpreter; ``AssertionError`` with its stderr on failure."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    out = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check and out.returncode != 0:
        raise AssertionError(f"script failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


def uninterrupted_record(tmp_path_factory) -> dict:
    """The final record of the uninterrupted 4-epoch run, trained once per test session and
    shared by the tests that crash or interrupt the same run and resume it (under
    pytest-xdist, by every worker: a file lock in the session's common temporary folder)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    result = shared / "uninterrupted_run.json"
    with FileLock(str(shared / "uninterrupted_run.lock")):
        if not result.exists():
            out = run_script(str(shared / "uninterrupted_run"), "--epochs", "4")
            result.write_text(out.stdout.splitlines()[-1])
    return json.loads(result.read_text())


class KillingSource(Sequence):
    """A list of examples that sends ``sig`` to its own process on the N-th read (once)."""

    def __init__(self, items: list[dict], kill_after: int | None, sig=signal.SIGKILL) -> None:
        self.items, self.kill_after, self.reads, self.sig = items, kill_after, 0, sig

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        if self.kill_after is not None and self.reads == self.kill_after:
            os.kill(os.getpid(), self.sig)
        return self.items[i]


def tiny_config(**overrides):
    from dibe_jax import train

    values = {
        "epochs": 4,
        "batch_size": 8,
        "eval_every": 1,
        "model.width": 4,
        "model.num_stages": 1,
        "progress": False,
    }
    return train.override(train.Config(), {**values, **overrides})


def devices_check() -> float:
    import jax
    from flax import nnx

    from dibe_jax import losses, train

    config = tiny_config()
    batch = make_examples(8, 3)
    batch = {
        "image": np.stack([b["image"] for b in batch]).astype(np.float32) / 255,
        "mask": np.stack([b["mask"] for b in batch]),
    }
    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        tg, eg, state = train.make_state(config, in_channels=3)
        mesh = train.make_mesh(devices)
        steps = train.make_steps(tg, eg, losses.get("dibe"), {}, mesh)
        state = jax.device_put(state, steps.replicated)
        state, _ = steps.train(state, train.shard_batch(batch, mesh))
        params = nnx.state(nnx.merge(tg, state)[0], nnx.Param)  # weights after one update
        stats = nnx.state(nnx.merge(tg, state)[0], nnx.BatchStat)  # BatchNorm statistics
        results.append([np.asarray(x) for x in jax.tree.leaves((params, stats))])
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*results, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--signal-after", type=int)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--process",
        type=int,
        nargs=3,
        metavar=("ID", "COUNT", "PORT"),
        help="join a multi-process run on localhost (jax.distributed)",
    )
    parser.add_argument("--eval-examples", type=int, default=8)
    parser.add_argument("--devices-check", action="store_true")
    args = parser.parse_args()
    if args.devices_check:
        import jax

        print(json.dumps({"devices": jax.device_count(), "max_diff": devices_check()}))
        return
    if args.process:
        import jax

        pid, count, port = args.process
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}", num_processes=count, process_id=pid
        )
        from jax.experimental import multihost_utils

        # Set up the CPU collectives (gloo) now, while both processes are at the same point:
        # gloo gives a peer 30 s to join, and one process may compile much longer than the
        # other on a loaded machine.
        multihost_utils.sync_global_devices("dibe_jax_test_start")
    from dibe_jax import train

    if args.signal_after is not None:
        source = KillingSource(make_examples(16, 0), args.signal_after, signal.SIGINT)
    else:
        source = KillingSource(make_examples(16, 0), args.kill_after)
    sources = {"train": source, "validation": make_examples(args.eval_examples, 1)}
    config = tiny_config(epochs=args.epochs)
    if args.resume and os.path.exists(os.path.join(args.workdir, "config.json")):
        config = train.load_config(args.workdir)  # the run describes itself
        config.epochs = args.epochs
    try:
        record = train.train_and_evaluate(config, args.workdir, resume=args.resume, sources=sources)
    except train.Interrupted as e:
        print(json.dumps({"interrupted_at_step": e.step, "epoch": e.epoch}))
        return 128 + int(e.signum)
    print(json.dumps(record))


if __name__ == "__main__":
    sys.exit(main())
