"""Guards the README's main job against regressions in learning: a shorter run of the same
setup (U-Net width 8, DIBE loss, synthetic_cracks/r150_96, batch 16) must clear a floor."""

from __future__ import annotations

import math

import pytest

from dibe_jax import train


@pytest.mark.slow
@pytest.mark.optimized
def test_main_job_learns(tmp_path):
    config = train.override(
        train.Config(),
        {
            "data.dataset": "synthetic_cracks/r150_96",
            "data.data_dir": str(tmp_path / "tfds"),
            "model.name": "unet",
            "model.width": 8,
            "loss.name": "dibe",
            "epochs": 4,
            "eval_every": 4,
            "batch_size": 16,
            "progress": False,
        },
    )
    record = train.train_and_evaluate(config, tmp_path / "run")
    # the full 12-epoch demo reaches IoU 0.85-0.92 depending on the CPU (README); 4 epochs
    # gave 0.68 when this floor was set and 0.74 on the AVX-512-less CPU of 2026-11-30 with
    # he_normal_fan_out kernels, 0.48 (OII -0.73) there with the torch_default ones, which
    # learn faster (0.48 at epoch 2 against 0.22) and swing more at this constant rate
    assert record["iou"] >= 0.4, record
    assert math.isfinite(record["iou"]) and math.isfinite(record["oii"])  # not NaN, not inf
    assert abs(record["oii"]) < 0.9
