"""The core imports and trains without the optional heavy dependencies.

grain (the host loader), TFDS (named datasets), array_record and tensorboardX load only when
used, so a machine with only the numerical packages (the GPU machine of ``make bench-gpu``)
can import ``dibe_jax.train`` and train on in-memory splits through the device data path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# End to end (trainings in subprocesses or conversions): run by `make test-slow`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = ("grain", "tensorflow_datasets", "array_record", "tensorboardX")

# Run in a fresh interpreter: an import finder that refuses the blocked top-level names
# (as if they were not installed), then the library's imports and a one-epoch training.
SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = {blocked!r}


    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None


    sys.meta_path.insert(0, Missing())
    sys.modules["torch"] = None  # not needed; saves the subprocess importing it

    import numpy as np

    import dibe_jax.data.device_augment
    import dibe_jax.data.in_memory
    import dibe_jax.losses
    import dibe_jax.models
    import dibe_jax.train
    import dibe_jax.train.predict
    import dibe_jax.train.runs
    from dibe_jax import train

    imported = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)

    rng = np.random.default_rng(0)


    def examples(n):
        out = []
        for _ in range(n):
            mask = np.zeros((32, 32, 1), np.uint8)
            mask[rng.integers(0, 28) :, 10:13] = 1
            image = rng.integers(0, 256, (32, 32, 3), np.uint8)
            out.append({{"image": image, "mask": mask}})
        return out


    config = train.override(
        train.Config(),
        {{
            "model.width": 4,
            "model.num_stages": 1,
            "data.image_size": 32,
            "batch_size": 4,
            "epochs": 1,
            "progress": False,
        }},
    )
    train.make_state(config, in_channels=3)
    sources = {{"train": examples(8), "validation": examples(4)}}
    record = train.train_and_evaluate(config, sys.argv[1], sources=sources)
    print(json.dumps({{
        "imported": imported,
        "after_training": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        "record": record,
    }}))
    """
).format(blocked=BLOCKED)


def test_train_imports_and_trains_without_grain_tfds_array_record_tensorboardx(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["imported"] == [] and out["after_training"] == []
    record = out["record"]
    assert (record["epoch"], record["step"]) == (1, 2)
    assert record["tp"] + record["fp"] + record["fn"] + record["tn"] == 4 * 32 * 32
    run = tmp_path / "run"
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints").is_dir()
    assert not (run / "tensorboard").exists()  # no tensorboardX: no events, and said so
    assert "tensorboardX is not installed" in proc.stderr
    assert json.loads((run / "config.json").read_text())["epochs"] == 1
