"""Throughput of the input pipeline alone (no model) at 448x448 with augmentation.

Source: ``synthetic_cracks`` images of 448x448 (the THC448-like generator, FG:BG
1:2200) built once as ``array_record`` into ``--data-dir``; each example is read and
PNG-decoded by TFDS, flipped, colour-jittered (brightness, contrast, saturation;
the DIBE paper's augmentation), converted to float32 and batched by
:func:`dibe_jax.data.make_loader`. Measured with 0 and 2 worker processes.

Reported per setting: the time to the first batch (start-up: worker processes,
imports, first reads) and the steady rate in images/s over the following batches
(best of ``--repeats`` epochs). The table goes to stdout and, with ``--out``, to a
Markdown file together with the CPU it ran on.

Run::

    .venv/bin/python -m benchmarks.input_pipeline \\
        --out benchmarks/results/input_pipeline_cpu.md

(about 1-2 minutes on 2 cores, half of it building the 512-image source once).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

import dibe_jax.datasets as dd
from benchmarks import _common
from dibe_jax.data import AugmentConfig, Preprocess, make_loader


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "dibe_bench"))
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    args = parser.parse_args()
    tfds.disable_progress_bar()

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    source, build_s = build_source(args.data_dir, args.num_images)
    parts = measure_parts(source)
    rows = [
        f"| - | TFDS read + PNG decode only, 1 thread | {parts['read']:.0f} | | |",
        f"| - | flip + colour jitter + float32 only, 1 thread | {parts['preprocess']:.0f} | | |",
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
                f"| {wc} | {what} | {r['rate']:.0f} | {r['startup']:.1f} | "
                + ", ".join(f"{x:.0f}" for x in r["rates"])
                + " |"
            )
            print(rows[-1], flush=True)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    text = "\n".join(
        [
            "# Input pipeline throughput (CPU)",
            "",
            f"CPU: {cpu_name()}. Python {platform.python_version()}, numpy {np.__version__}.",
            f"Load average (1 min) at the start {load0:.1f}, at the end {load[0]:.1f}: the "
            "cores are shared with other jobs, so expect noise between epochs.",
            "",
            f"Source: `synthetic_cracks`, {args.num_images} images of 448x448x3 as PNG in "
            f"array_record (prepared or reused in {build_s:.0f} s). Pipeline: TFDS read + "
            f"PNG decode (2 read threads per process), augmentation, float32, batches of "
            f"{args.batch_size}: `make_loader(..., image_size=448, train=True)`.",
            "",
            "| workers | augmentation | images/s (steady, best epoch) | start-up s | "
            "images/s per epoch |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Command: `.venv/bin/python -m benchmarks.input_pipeline "
            "--out benchmarks/results/input_pipeline_cpu.md`",
            "",
        ]
    )
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
