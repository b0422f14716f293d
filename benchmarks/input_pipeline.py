"""The two data paths side by side: the grain loader and the in-memory device path.

Source: ``synthetic_cracks`` images of 448x448 (the THC448-like generator, FG:BG 1:2200)
built once as ``array_record`` into ``--data-dir``. Four measurements:

1. **grain** (today's path): each example read and PNG-decoded by TFDS, flipped,
   colour-jittered (brightness, contrast, saturation; the DIBE paper's augmentation),
   converted to float32 and batched by :func:`dibe_jax.data.make_loader`, with 0 and 2
   worker processes; the time to the first batch and the steady images/s (best of
   ``--repeats`` epochs).
2. **(a) device path, data alone**: the split decoded once
   (:func:`dibe_jax.data.decode_split`), then each epoch's seeded permutation gathered into
   ``uint8`` batches and put on the device (``shard_batch``), one or two ahead
   (:class:`dibe_jax.data.Batches`): images/s of gather + transfer, waited for at the end of
   the epoch (target: at least 2,000 images/s at 448x448).
3. **(b) device augmentation's cost**: the library's U-Net (width 16, DIBE loss, SGD) train
   step at 448x448 on a ``uint8`` batch already on the device, with the run's augmentation
   (flips, colour jitter from the key of ``(seed, step)``) and without (``data.augment``
   off: only ``uint8 -> float32``); and the augmentation alone, jitted. Target: under 5 %
   of the step.
4. **(c) an epoch against its steps**: CrackForest's 360 training tiles of 160x160
   (``benchmarks/cfd_data.py``; random 160x160 tiles of the same count when CFD is absent),
   U-Net width 16, batch 32: the wall time of a training epoch through the device path
   (gather, transfer, augmentation, step; one sync at the end) against the number of steps
   times the bare step time (the same step on one batch resident on the device), and the
   same epoch through the grain loader. Target: within 5 %.

The table goes to stdout and, with ``--out``, to a Markdown file with the CPU and the load
average (``os.getloadavg``) at the start and the end: on a shared machine the numbers are
what the pipeline got under that contention.

Run::

    nice .venv/bin/python -m benchmarks.input_pipeline \\
        --out benchmarks/results/input_pipeline_cpu.md

(about 10 minutes on 2 busy cores: the U-Net steps dominate; ``--skip-steps`` measures the
data paths alone in 1-2 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds

import dibe_jax.datasets as dd
from benchmarks import _common, cfd_data
from dibe_jax import train
from dibe_jax.data import (
    ArraySource,
    AugmentConfig,
    Batches,
    Preprocess,
    decode_split,
    make_loader,
)
from dibe_jax.train import batches, loop


def cpu_name() -> str:
    """The CPU model with the number of cores."""
    return f"{_common.cpu_name()}, {os.cpu_count()} logical cores"


def build_source(data_dir: str, num_images: int):
    """The 448x448 synthetic source (r2200_448 parameters, ``num_images`` train images)."""
    cfg = dd.SyntheticCracksConfig(
        name=f"bench448_n{num_images}",
        description="benchmark: r2200_448 parameters, fewer images",
        size=448,
        ratio=2200,
        num_train=num_images,
        num_validation=1,
    )
    builder = dd.SyntheticCracks(config=cfg, data_dir=data_dir)
    t = time.perf_counter()
    builder.download_and_prepare()
    return builder.as_data_source()["train"], time.perf_counter() - t


def measure(source, *, worker_count: int, batch_size: int, repeats: int, crop: str) -> dict:
    """Start-up seconds and steady images/s (best over ``repeats`` epochs)."""
    startups, rates = [], []
    for epoch in range(repeats):
        loader = make_loader(
            source,
            batch_size=batch_size,
            image_size=448,
            train=True,
            seed=0,
            epoch=epoch,
            worker_count=worker_count,
            augment=AugmentConfig(),
            crop=crop,
        )
        t0 = time.perf_counter()
        it = iter(loader)
        first = next(it)
        assert first["image"].shape == (batch_size, 448, 448, 3)
        t1 = time.perf_counter()
        n = 0
        for batch in it:
            n += len(batch["image"])
        t2 = time.perf_counter()
        del first, batch, it, loader
        startups.append(t1 - t0)
        rates.append(n / (t2 - t1))
    return {"startup": float(np.median(startups)), "rate": max(rates), "rates": rates}


def measure_parts(source, n: int = 96) -> dict:
    """Single-thread rates of the two halves: TFDS read + PNG decode, and
    :class:`~dibe_jax.data.Preprocess` (flip + jitter + float32) on decoded examples."""
    t = time.perf_counter()
    examples = [source[i] for i in range(n)]
    read = n / (time.perf_counter() - t)
    prep = Preprocess(size=448, augment=AugmentConfig())
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for ex in examples:
        prep(ex, rng)
    return {"read": read, "preprocess": n / (time.perf_counter() - t)}


def measure_device_path(source, *, batch_size: int, repeats: int) -> dict:
    """(a) Decode once, then images/s of an epoch's gathers + transfers (best of
    ``repeats`` epochs), the last batch waited for."""
    t = time.perf_counter()
    split = decode_split(source, size=(448, 448), name="train")
    decode_s = time.perf_counter() - t
    mesh = train.make_mesh()
    rates = []
    for epoch in range(repeats):
        it = Batches(
            split,
            batch_size=batch_size,
            train=True,
            seed=0,
            epoch=epoch,
            put=lambda b: train.shard_batch(b, mesh),
        )
        t0 = time.perf_counter()
        last, n = None, 0
        for batch in it:
            last, n = batch, n + batch_size
        jax.block_until_ready(last)
        rates.append(n / (time.perf_counter() - t0))
    return {
        "decode_s": decode_s,
        "mib": split.nbytes / 2**20,
        "n": len(split),
        "rate": max(rates),
        "rates": rates,
    }


def _config(size: int | None, batch: int, *, augment: bool = True) -> train.Config:
    return train.override(
        train.Config(),
        {
            "model.width": 16,
            "batch_size": batch,
            "data.image_size": size,
            "data.augment": augment,
            "data.pipeline": "device",
            "epochs": 1,
            "progress": False,
        },
    )


def _time_steps(step_fn, state, batch, steps: int) -> tuple[Any, float]:
    """Seconds per call of ``step_fn(state, batch, k)`` over ``steps`` calls, one sync."""
    state, stats = step_fn(state, batch, 0)  # compile and warm up
    jax.block_until_ready(stats)
    t = time.perf_counter()
    for k in range(1, steps + 1):
        state, stats = step_fn(state, batch, k)
    jax.block_until_ready(stats)
    return state, (time.perf_counter() - t) / steps


def measure_augment_cost(*, batch_size: int, steps: int) -> dict:
    """(b) The U-Net width-16 train step at 448x448 on a uint8 batch with and without the
    device augmentation, and the augmentation alone."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 448, 448, 3), np.uint8)
    masks = (rng.random((batch_size, 448, 448, 1)) < 1 / 2200).astype(np.uint8)
    mesh = train.make_mesh()
    batch = train.shard_batch({"image": images, "mask": masks}, mesh)
    out = {}
    for label, augment in (("with", True), ("without", False)):
        config = _config(448, batch_size, augment=augment)
        tg, eg, state = train.make_state(config, 3)
        steps_ = loop.loss_steps(config, tg, eg, mesh, num_classes=1)
        state = jax.device_put(state, steps_.replicated)
        _, out[label] = _time_steps(
            lambda s, b, k, f=steps_.train: f(s, b, k, size=(448, 448)), state, batch, steps
        )
    prep = batches.device_preprocess(_config(448, batch_size))
    aug_only = jax.jit(prep.train, static_argnames=("size",))

    def call(k: int):
        return aug_only(k, batch["image"], batch["mask"], size=(448, 448))

    jax.block_until_ready(call(0))
    t = time.perf_counter()
    for k in range(1, 2 * steps + 1):
        res = call(k)
    jax.block_until_ready(res)
    out["alone"] = (time.perf_counter() - t) / (2 * steps)
    return out


def cfd_sources() -> tuple[dict, str]:
    """CrackForest's 160x160 tiles (360 train / 348 validation), or random tiles of the
    same count and size when the files are absent."""
    root = cfd_data.find_root()
    if root is not None:
        data = cfd_data.load(root)
        what = f"CrackForest tiles from `{root}`"
    else:
        rng = np.random.default_rng(0)
        data = {
            split: (
                rng.integers(0, 256, (n, 160, 160, 3), np.uint8),
                (rng.random((n, 160, 160, 1)) < 1 / 25).astype(np.uint8),
            )
            for split, n in (("train", 360), ("validation", 348))
        }
        what = "random 160x160 tiles (CrackForest not found)"
    sources = {
        k: ArraySource({"image": images, "mask": masks}, name=k)
        for k, (images, masks) in data.items()
    }
    return sources, what


def measure_epoch(*, batch_size: int, bare_steps: int, grain: bool) -> dict:
    """(c) Epoch wall time through the device path (and the grain loader) against its steps
    times the bare step time, U-Net width 16 at 160x160."""
    sources, what = cfd_sources()
    built = train.build(_config(None, batch_size), sources)
    assert built.train_arrays is not None
    put = lambda b: train.shard_batch(b, built.mesh)  # noqa: E731 - the loop's transfer
    state = built.state
    resident = next(
        iter(Batches(built.train_arrays, batch_size=built.local_batch, train=True, put=put))
    )
    state, bare = _time_steps(built.steps.train, state, resident, bare_steps)
    out = {"what": what, "steps": built.steps_per_epoch, "bare": bare, "n": len(sources["train"])}
    step = bare_steps + 1
    for epoch in range(2):  # epoch 0 compiles nothing new but warms the caches
        t = time.perf_counter()
        stats = None
        for batch in Batches(
            built.train_arrays, batch_size=built.local_batch, train=True, epoch=epoch, put=put
        ):
            state, stats = built.steps.train(state, batch, step)
            step += 1
        jax.block_until_ready(stats)
        out["device"] = time.perf_counter() - t
    if grain:
        kwargs = dict(
            batch_size=built.local_batch,
            image_size=None,
            seed=built.config.seed,
            augment=batches.augment_config(built.config),
        )
        first = next(iter(make_loader(sources["train"], train=True, epoch=0, **kwargs)))
        state, stats = built.steps.train(state, train.shard_batch(first, built.mesh), step)
        jax.block_until_ready(stats)  # the float32 variant compiled
        t = time.perf_counter()
        for batch in make_loader(sources["train"], train=True, epoch=1, **kwargs):
            state, stats = built.steps.train(state, train.shard_batch(batch, built.mesh), step)
            step += 1
        jax.block_until_ready(stats)
        out["grain"] = time.perf_counter() - t
    return out


def _load() -> str:
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "dibe_bench"))
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--augment-batch", type=int, default=4, help="batch of the 448x448 U-Net steps of (b)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting in (b)")
    parser.add_argument("--bare-steps", type=int, default=5, help="timed bare steps in (c)")
    parser.add_argument("--skip-steps", action="store_true", help="data paths only: no (b), (c)")
    parser.add_argument("--out", default=None, help="write the Markdown report here")
    args = parser.parse_args()
    tfds.disable_progress_bar()

    load0 = _load()
    source, build_s = build_source(args.data_dir, args.num_images)
    parts = measure_parts(source)
    rows = [
        f"| grain | - | TFDS read + PNG decode only, 1 thread | {parts['read']:.0f} | | |",
        f"| grain | - | flip + colour jitter + float32 only, 1 thread | "
        f"{parts['preprocess']:.0f} | | |",
    ]
    print(*rows, sep="\n", flush=True)
    for crop in ("resize", "scale"):
        for wc in args.workers:
            r = measure(
                source,
                worker_count=wc,
                batch_size=args.batch_size,
                repeats=args.repeats,
                crop=crop,
            )
            what = "flip + colour jitter" if crop == "resize" else "+ random scale crop"
            rows.append(
                f"| grain | {wc} workers | {what}, float32 batches | {r['rate']:.0f} | "
                f"{r['startup']:.1f} | " + ", ".join(f"{x:.0f}" for x in r["rates"]) + " |"
            )
            print(rows[-1], flush=True)
    dev = measure_device_path(source, batch_size=args.batch_size, repeats=max(2, args.repeats))
    rows.append(
        f"| device (a) | - | gather + transfer, uint8 batches (augmentation on the device: (b)) "
        f"| **{dev['rate']:.0f}** | {dev['decode_s']:.1f} (decode, once) | "
        + ", ".join(f"{x:.0f}" for x in dev["rates"])
        + " |"
    )
    print(rows[-1], flush=True)
    text = [
        "# Input pipeline: the grain loader and the in-memory device path (CPU)",
        "",
        f"CPU: {cpu_name()}. Python {platform.python_version()}, numpy {np.__version__}, "
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device).",
        f"Load average (1, 5, 15 min) at the start: {load0}; at the end: LOAD_END. The cores are "
        "shared with other jobs, so expect noise between epochs; the run was started with `nice`.",
        "",
        "## Data paths at 448x448",
        "",
        f"Source: `synthetic_cracks`, {args.num_images} images of 448x448x3 as PNG in "
        f"array_record (prepared or reused in {build_s:.0f} s); batches of {args.batch_size}. "
        "grain: `make_loader(..., image_size=448, train=True, worker_count=W)` (TFDS read + PNG "
        "decode with 2 read threads, augmentation, float32), images/s after the first batch. "
        f"device (a): the split decoded once into uint8 ({dev['n']} images, {dev['mib']:.0f} "
        "MiB), then per epoch `Batches(split, ..., put=shard_batch)`: permutation, row "
        "gathers, `shard_batch` one or two batches ahead, the last waited for; the "
        "augmentation runs inside the train step, measured in (b).",
        "",
        "| path | workers | what | images/s (best epoch) | start-up s | images/s per epoch |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Target (a): at least 2,000 images/s: **{'met' if dev['rate'] >= 2000 else 'not met'}** "
        f"({dev['rate']:.0f}).",
        "",
    ]
    if not args.skip_steps:
        cost = measure_augment_cost(batch_size=args.augment_batch, steps=args.steps)
        frac = (cost["with"] - cost["without"]) / cost["without"]
        alone = cost["alone"] / cost["without"]
        print(f"(b) {cost}", flush=True)
        text += [
            "## (b) Device augmentation against the U-Net step at 448x448",
            "",
            f"U-Net width 16, DIBE loss, SGD, batch {args.augment_batch} (uint8 on the device "
            f"already), mean of {args.steps} steps after a warm-up: the library's train step "
            "(`loop.loss_steps`) with the run's augmentation (flips 0.5 / 0.5, brightness / "
            "contrast / saturation 0.2, from the key of (seed, step)) and with `data.augment` "
            "off (uint8 -> float32 only); and the augmentation alone, jitted (mean of "
            f"{2 * args.steps} calls).",
            "",
            "| step with augmentation s | step without s | difference | augmentation alone s "
            "| alone / step |",
            "|---|---|---|---|---|",
            f"| {cost['with']:.3f} | {cost['without']:.3f} | {100 * frac:+.1f} % | "
            f"{cost['alone']:.4f} | {100 * alone:.2f} % |",
            "",
            f"Target (b): under 5 %: **{'met' if alone < 0.05 else 'not met'}** (the "
            "difference of the two step times is within the noise of a shared machine; the "
            "augmentation alone is the cleaner measure).",
            "",
        ]
        ep = measure_epoch(batch_size=args.batch_size, bare_steps=args.bare_steps, grain=True)
        print(f"(c) {ep}", flush=True)
        ideal = ep["steps"] * ep["bare"]
        text += [
            "## (c) A CrackForest-shaped epoch against its steps",
            "",
            f"{ep['what']}: {ep['n']} training tiles of 160x160, U-Net width 16, batch "
            f"{args.batch_size}, {ep['steps']} steps per epoch. Bare step: the train step on "
            f"one batch resident on the device, mean of {args.bare_steps}. Epoch: every batch "
            "of a training epoch (the second one timed), one sync at its end; device path: "
            "`Batches` + `shard_batch` + the step with augmentation; grain: `make_loader` + "
            "`shard_batch` + the step (float32 batches), as `data.pipeline=grain` trains.",
            "",
            "| path | epoch s | steps x bare step s | epoch / (steps x bare) |",
            "|---|---|---|---|",
            f"| device | {ep['device']:.2f} | {ideal:.2f} | {ep['device'] / ideal:.3f} |",
            f"| grain | {ep['grain']:.2f} | {ideal:.2f} | {ep['grain'] / ideal:.3f} |",
            "",
            f"Target (c): within 5 %: **"
            f"{'met' if abs(ep['device'] / ideal - 1) <= 0.05 else 'not met'}** for the "
            "device path.",
            "",
        ]
    text += [
        "Command: `nice .venv/bin/python -m benchmarks.input_pipeline "
        "--out benchmarks/results/input_pipeline_cpu.md`",
        "",
    ]
    report = "\n".join(text).replace("LOAD_END", _load())
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
