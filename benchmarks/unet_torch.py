"""The PyTorch rows of ``benchmarks.gpu``'s U-Net section, timed in a process of their own.

``benchmarks.gpu`` starts ``python -m benchmarks.unet_torch --device cuda --rows
bfloat16:eager float32:eager bfloat16:default ...`` with ``JAX_PLATFORMS=cpu``: JAX never
touches the GPU here, so PyTorch has the device memory that JAX's allocator holds in the
benchmark's own process (in the 2026-12-04 run the float32 PyTorch row ran out of memory
beside it). Each row is one training step of the U-Net the JAX rows train, written as a
speed-minded PyTorch user writes it: ``channels_last``, ``cudnn.benchmark``, autocast
bfloat16 for the bfloat16 rows, SGD with momentum; ``eager``, or forward + loss under
``torch.compile`` in the row's mode (``default``, ``max-autotune``; backward through
AOTAutograd).

Output: one JSON object per line, flushed as soon as it is known: first ``{"side": ...}``
(PyTorch version, device, flags), then ``{"row": "dtype:mode", ...}`` per row (``step_s``,
``first`` (the first call, compilation included), ``params``, ``loss``; or ``error``), so a
process stopped at its time limit keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import numpy as np


def random_batch(batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The U-Net rows' batch: float32 images ``[B, size, size, 3]`` and a ``uint8`` mask with
    1 % defect pixels (both sides use this one)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    y = (rng.random((batch, size, size, 1)) < 0.01).astype(np.uint8)
    return x, y


def time_row(torch, device, dtype: str, mode: str, args: argparse.Namespace) -> dict:
    """``step_s`` (mean of ``args.steps`` after ``args.warmup``), ``first`` (first call s),
    ``params`` and the last ``loss`` of one row."""
    from benchmarks.models import torch_unet
    from benchmarks.torch_losses import dibe

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = torch_unet(args.width, num_stages=args.num_stages)
    model = model.to(device, memory_format=fmt).train()
    params = sum(q.numel() for q in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_np, y_np = random_batch(args.batch, args.size)
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).to(device, memory_format=fmt)
    y = torch.from_numpy(y_np.astype(np.float32)).permute(0, 3, 1, 2).to(device)
    bf16 = dtype == "bfloat16"

    def forward_loss(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        return dibe(logits.float(), y).mean()

    if mode != "eager":
        # A mode only means something to inductor (the tiny CPU mode captures graphs only).
        kwargs = {"mode": mode} if args.backend == "inductor" and mode != "default" else {}
        forward_loss = torch.compile(forward_loss, backend=args.backend, **kwargs)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(x, y)
        loss.backward()
        opt.step()
        return loss

    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(args.warmup - 1):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    step_s = (time.perf_counter() - t) / args.steps
    return {"step_s": step_s, "first": first, "params": params, "loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cuda or cpu")
    parser.add_argument("--rows", nargs="+", required=True, help="dtype:mode, e.g. bfloat16:eager")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--num-stages", type=int, default=4)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks._common import torch_side

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    modes = sorted({r.split(":")[1] for r in args.rows} - {"eager"})
    how = "eager" + (f" and torch.compile (backend {args.backend!r}, mode " if modes else "")
    how += (", ".join(modes) + "), ") if modes else ", "
    how += "channels_last, autocast bfloat16 for the bfloat16 rows, in a process without JAX"
    print(json.dumps({"side": torch_side(device, how)}), flush=True)
    for row in args.rows:
        dtype, mode = row.split(":")
        try:
            out = time_row(torch, device, dtype, mode, args)
        except Exception as e:  # noqa: BLE001 - a failed row is a result
            out = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
        print(json.dumps({"row": row, **out}), flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
