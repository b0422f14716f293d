"""Training throughput of U-Net, end to end with the input pipeline, next to PyTorch eager.

JAX: the library's own jitted data-parallel train step (``dibe_jax.train``) fed by the grain
loader (``dibe_jax.data.make_loader``, augmentation on) over in-memory synthetic crack images;
images/s over ``--steps`` steps after the compilation step, with the XLA FLOP count of one
step (``cost_analysis``) to give achieved GFLOP/s and, on a GPU with a known peak, model
FLOPs utilisation. PyTorch: the same U-Net (``benchmarks.models.torch_unet``), SGD with
momentum and the same DIBE loss (``benchmarks.torch_losses.dibe``), eager, ``channels_last``,
``torch.autocast`` bfloat16 for the bfloat16 rows, fed the same batches from the same loader,
on the device JAX runs on (``--torch-device auto``: CUDA when JAX is on a GPU and PyTorch sees
one; timed after ``torch.cuda.synchronize()``). Both in one run, reported as a ratio; the
table names both devices.

    python -m benchmarks.train --sizes 224 448 --width 16 --out benchmarks/results/train_cpu.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks._common import (
    PEAK_TFLOPS,
    emit,
    host_line,
    jax_side,
    torch_device,
    torch_side,
    torch_sync,
)
from dibe_jax import train
from dibe_jax.data import make_loader
from dibe_jax.datasets import generate_example


def _examples(n: int, size: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        dict(zip(("image", "mask"), generate_example(rng, size, 500), strict=True))
        for _ in range(n)
    ]


def _config(size: int, width: int, batch: int, dtype: str):
    values = {"model.width": width, "batch_size": batch, "dtype": dtype, "epochs": 1}
    return train.override(train.Config(), {**values, "progress": False})


def jax_case(size: int, width: int, batch: int, steps: int, dtype: str) -> dict[str, Any]:
    examples = _examples(batch * (steps + 1), size)
    config = _config(size, width, batch, dtype)
    built = train.build(config, {"train": examples, "validation": examples[:batch]})
    loader = make_loader(examples, batch_size=batch, image_size=size, train=True, seed=0)
    it = iter(loader)
    first = train.shard_batch(next(it), built.mesh)
    compiled = built.steps.train.lower(built.state, first).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, stats = built.steps.train(built.state, first)  # warm-up
    jax.block_until_ready(stats)
    t = time.perf_counter()
    n = 0
    for batch_np in it:
        state, stats = built.steps.train(state, train.shard_batch(batch_np, built.mesh))
        n += 1
    jax.block_until_ready(stats)
    seconds = time.perf_counter() - t
    return {
        "images_s": n * batch / seconds,
        "flops": flops,
        "step_s": seconds / n,
        "loss": float(stats["loss"]),
    }


def torch_case(
    size: int, width: int, batch: int, steps: int, dtype: str = "float32", device=None
) -> dict[str, Any]:
    import torch

    from benchmarks.models import torch_unet
    from benchmarks.torch_losses import dibe

    device = torch_device() if device is None else device
    sync = torch_sync(device)
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = torch_unet(width).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    examples = _examples(batch * (steps + 1), size)
    loader = make_loader(examples, batch_size=batch, image_size=size, train=True, seed=0)

    def step(b):
        x = torch.from_numpy(b["image"]).permute(0, 3, 1, 2).to(device, memory_format=fmt)
        y = torch.from_numpy(b["mask"].astype(np.float32)).permute(0, 3, 1, 2).to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = model(x)
        loss = dibe(logits.float(), y).mean()
        loss.backward()
        opt.step()
        return loss

    it = iter(loader)
    step(next(it))  # warm-up
    sync()
    t = time.perf_counter()
    n = 0
    for b in it:
        loss = step(b)
        n += 1
    sync()
    seconds = time.perf_counter() - t
    return {"images_s": n * batch / seconds, "step_s": seconds / n, "loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--width", type=int, default=16, help="U-Net width (paper: 64)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--torch-device",
        default="auto",
        help="'auto' (CUDA when JAX is on a GPU and PyTorch sees one), 'cpu' or 'cuda'",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    dev = jax.devices()[0]
    kind = dev.device_kind
    device = None if args.no_torch else torch_device(args.torch_device)
    rows = []
    for size in args.sizes:
        for dtype in args.dtypes:
            j = jax_case(size, args.width, args.batch, args.steps, dtype)
            t = None
            if device is not None:
                t = torch_case(size, args.width, args.batch, args.steps, dtype, device)
            rows.append((size, dtype, j, t))
            print(
                size,
                dtype,
                f"jax {j['images_s']:.2f} img/s",
                "" if t is None else f"torch {t['images_s']:.2f} img/s",
                flush=True,
            )
    how = "eager, channels_last, torch.autocast bfloat16 for the bfloat16 rows"
    lines = [
        f"U-Net width {args.width}, DIBE loss, SGD, batch {args.batch}, {args.steps} timed steps "
        "after warm-up, grain loader with augmentation feeding both sides, each side waiting "
        "for its device before the clock is read.",
        "",
        f"- JAX side: {jax_side()}.",
        "- PyTorch side: "
        + ("not run (`--no-torch`)" if device is None else torch_side(device, how))
        + ".",
        f"- Host: {host_line()}.",
        "",
        "| size | dtype | JAX img/s | GFLOP/step (XLA) | achieved TFLOP/s | MFU | "
        "PyTorch eager img/s | JAX / PyTorch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, dtype, j, t in rows:
        tflops = j["flops"] / j["step_s"] / 1e12
        peaks = next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)
        if peaks is None:
            mfu = "n/a (CPU)" if dev.platform == "cpu" else "n/a (no peak known)"
        elif dtype == "float32":  # convolutions run in TF32 by default
            mfu = f"{tflops / peaks[dtype]:.0%} of FP32 ({tflops / peaks['tf32']:.0%} of TF32)"
        else:
            mfu = f"{tflops / peaks[dtype]:.1%}"
        tcols = (
            ["–", "–"]
            if t is None
            else [f"{t['images_s']:.2f}", f"{j['images_s'] / t['images_s']:.2f}×"]
        )
        lines.append(
            f"| {size}² | {dtype} | {j['images_s']:.2f} | {j['flops'] / 1e9:.1f} | "
            f"{tflops:.3f} | {mfu} | {' | '.join(tcols)} |"
        )
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
