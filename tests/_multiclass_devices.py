"""Subprocess entry: the multi-class evaluation step on every (fake) device and on one.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/_multiclass_devices.py

Runs two batches (the second with padding rows) through the evaluation step of a tiny
3-class U-Net on a mesh of all devices and on a mesh of one, and prints JSON: the device
count, both summed confusion matrices and both loss sums, and the matrix computed on the
host from the one-device logits with :func:`dibe_jax.metrics.confusion_matrix`.
"""

from __future__ import annotations

import json

import numpy as np


def main() -> None:
    import jax
    from flax import nnx

    from dibe_jax import metrics, train
    from dibe_jax.datasets import generate_example
    from dibe_jax.train import loop, step

    rng = np.random.default_rng(0)
    examples = [generate_example(rng, 16, 20, spot_ratio=10) for _ in range(16)]
    batches = []
    for part, valid in ((slice(0, 8), 8), (slice(8, 16), 5)):  # 3 padding rows in batch 2
        batches.append(
            {
                "image": np.stack([e[0] for e in examples[part]]).astype(np.float32) / 255,
                "mask": np.stack([e[1] for e in examples[part]]),
                "valid": np.arange(8) < valid,
            }
        )
    config = train.override(
        train.Config(), {"loss.name": "dice_multiclass", "model.width": 2, "model.num_stages": 1}
    )
    out: dict = {"devices": jax.device_count()}
    for label, devices in (("all", jax.devices()), ("one", jax.devices()[:1])):
        tg, eg, state = train.make_state(config, 3, num_classes=3)
        mesh = train.make_mesh(devices)
        steps = loop.loss_steps(config, tg, eg, mesh, num_classes=3)
        state = step.replicate(state, steps.replicated)
        totals = step.replicate(step.zero_totals(3), steps.replicated)
        for batch in batches:
            totals = steps.evaluate(state, step.shard_batch(batch, mesh), totals)
        totals = step.read_totals(totals)
        out[f"cm_{label}"] = np.asarray(totals["cm"]).tolist()
        out[f"loss_{label}"] = totals["loss"]
        out[f"images_{label}"] = totals["images"]
        if label == "one":  # the same sum, on the host, batch by batch
            model = nnx.merge(eg, jax.device_get(state))[0]
            host = metrics.ConfusionMatrixAccumulator(3)
            for batch in batches:
                keep = batch["valid"]
                logits = model(batch["image"][keep])
                host.update(metrics.confusion_matrix(logits, batch["mask"][keep, ..., 0], 3))
            out["cm_host"] = host.result().tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
