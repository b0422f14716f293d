"""Training-step speed and XLA FLOP count of the segmentation models, next to a PyTorch U-Net.

For each model, width, input size and dtype: one jitted training step (forward in train mode,
sigmoid cross-entropy, ``nnx.value_and_grad`` with respect to the parameters, BatchNorm
statistics updated; no optimiser) on a batch of ``--batch`` random ``[H, W, 3]`` images with
binary labels. Reported per image: the median wall time of ``--repeats`` steps after compilation
and one warm-up step, and the FLOPs XLA counts for the compiled step
(``jax.jit(f).lower(...).compile().cost_analysis()``). In the same run, a PyTorch eager U-Net of
the same architecture (bilinear, BatchNorm, same channels; its parameter count is checked against
the JAX model) does the same forward+backward, float32 or ``torch.autocast`` bfloat16, and the
table gives JAX / PyTorch time (< 1: JAX faster). PyTorch is a benchmark-only dependency
(``pip install torch==2.13.0``); ``--no-torch`` skips it.

``--width paper`` is the published width (64); ``--width small`` is 16 (``--small-width``).
ResNet-based models use ResNet-50 (``--depth``) at both widths.

Full-width 448x448 steps take tens of seconds each on a 2-core CPU (about four times the 224x224
cost) and several GB of memory; ``--quick`` runs 224x224 only, the small width only (plus U-Net at
the paper's width) and 2 repeats, which takes a few minutes on two cores::

    python -m benchmarks.models --quick --out benchmarks/results/models_cpu.md
    python -m benchmarks.models --models unet --sizes 224 448 --widths paper small
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks._common import cpu_name, emit
from dibe_jax import models

PAPER_WIDTH = 64
RESNET_MODELS = ("pspnet", "deeplabv3")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _flops(compiled: Any) -> float:
    """Total FLOPs of a compiled computation; ``cost_analysis()`` is a dict or a list of dicts."""
    analysis = compiled.cost_analysis()
    if analysis is None:
        return float("nan")
    if isinstance(analysis, dict):
        analysis = [analysis]
    return float(sum(a.get("flops", 0.0) for a in analysis if a))


def _data(batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    y = (rng.random((batch, size, size, 1)) < 0.01).astype(np.float32)
    return x, y


def jax_case(
    name: str, config: dict[str, Any], size: int, batch: int, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Seconds per training step, FLOPs per step, parameters and compile time of one model."""
    model = models.create(name, in_channels=3, num_classes=1, rngs=nnx.Rngs(0), **config)
    model.train()
    graphdef, state = nnx.split(model)
    params = models.count_params(model)
    del model
    x_np, y_np = _data(batch, size)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    def step(state, x, y):
        model = nnx.merge(graphdef, state)

        def loss_fn(model):
            logits = model(x)
            return jnp.mean(jax.nn.softplus(logits) - logits * y)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        return loss, grads, nnx.state(model)

    t = time.perf_counter()
    compiled = jax.jit(step).lower(state, x, y).compile()
    compile_s = time.perf_counter() - t
    flops = _flops(compiled)

    def run() -> Any:
        return jax.block_until_ready(compiled(state, x, y))

    seconds = _median_seconds(run, repeats, warmup)
    return {"seconds": seconds, "flops": flops, "params": params, "compile": compile_s}


def torch_unet(
    width: int,
    in_channels: int = 3,
    num_classes: int = 1,
    num_stages: int = 4,
    *,
    upsampling: str = "bilinear",
    align_corners: bool = True,
    bn_running_var: str = "unbiased",
):
    """PyTorch eager U-Net with the architecture of ``dibe_jax.models.UNet``.

    ``x [B, in_channels, H, W] -> logits [B, num_classes, H, W]`` (NCHW), ``H`` and ``W``
    multiples of ``2**num_stages``. Layers as milesial/Pytorch-UNet (the DIBE paper's U-Net):
    ``(Conv3x3(padding=1, bias=False) -> BatchNorm2d -> ReLU) x 2`` per unit, 2x2 max pooling,
    bilinear x2 upsampling (``align_corners``) with the bottleneck and decoder halved
    (``upsampling="bilinear"``), or ``ConvTranspose2d(2, stride=2)`` (``"transposed"``), the
    skip concatenated before the upsampled map, a 1x1 head with bias. PyTorch's default
    initialisation (``kaiming_uniform_(a=sqrt(5))``), BatchNorm ``momentum=0.1, eps=1e-5``.

    Module names mirror the JAX module tree, so ``model.state_dict()`` keys are the JAX
    paths joined by dots with the leaf renamed (see ``experiments/parity_torch.py``):
    ``backbone.units.{i}.conv{1,2}.conv.weight`` ↔ ``backbone/units/i/conv{1,2}/conv/kernel``,
    ``...bn.{weight,bias,running_mean,running_var}`` ↔ ``.../bn/{scale,bias,mean,var}``,
    ``decoder.{j}...``, ``ups.{j}.{weight,bias}`` (transposed only) and ``head.{weight,bias}``.

    ``bn_running_var``: ``"unbiased"`` (``nn.BatchNorm2d``: the running variance averages the
    unbiased batch variance, ``n / (n - 1)`` times the one used to normalise) or ``"biased"``
    (flax's ``nnx.BatchNorm``: the running variance averages the biased batch variance;
    normalisation and running mean are unchanged).
    """
    import torch
    from torch import nn

    if bn_running_var not in ("unbiased", "biased"):
        raise ValueError(f"bn_running_var must be 'unbiased' or 'biased'; got {bn_running_var!r}")
    if upsampling not in ("bilinear", "transposed"):
        raise ValueError(f"upsampling must be 'bilinear' or 'transposed'; got {upsampling!r}")

    class BiasedBatchNorm2d(nn.BatchNorm2d):
        """``nn.BatchNorm2d`` whose running variance tracks the biased batch variance (flax)."""

        def forward(self, x):
            if not self.training:
                return super().forward(x)
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3))
                var = x.var(dim=(0, 2, 3), unbiased=False)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
                self.num_batches_tracked += 1
            return nn.functional.batch_norm(
                x, None, None, self.weight, self.bias, True, 0.0, self.eps
            )

    batch_norm = nn.BatchNorm2d if bn_running_var == "unbiased" else BiasedBatchNorm2d

    class ConvBN(nn.Module):
        def __init__(self, c_in: int, c_out: int):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.bn = batch_norm(c_out, momentum=0.1, eps=1e-5)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class DoubleConv(nn.Module):
        def __init__(self, c_in: int, c_out: int, mid: int | None = None):
            super().__init__()
            mid = c_out if mid is None else mid
            self.conv1 = ConvBN(c_in, mid)
            self.conv2 = ConvBN(mid, c_out)

        def forward(self, x):
            return self.conv2(self.conv1(x))

    class Encoder(nn.Module):
        def __init__(self, features: list[int]):
            super().__init__()
            inputs = [in_channels, *features[:-1]]
            self.units = nn.ModuleList(
                DoubleConv(a, b) for a, b in zip(inputs, features, strict=True)
            )

        def forward(self, x):
            outs = []
            for i, unit in enumerate(self.units):
                if i:
                    x = nn.functional.max_pool2d(x, 2)
                x = unit(x)
                outs.append(x)
            return outs

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            factor = 2 if upsampling == "bilinear" else 1
            features = [width * 2**i for i in range(num_stages)]
            features.append(width * 2**num_stages // factor)
            self.backbone = Encoder(features)
            decoder, ups, deep = [], [], features[-1]
            for i in reversed(range(num_stages)):
                skip = features[i]
                if upsampling == "transposed":
                    ups.append(nn.ConvTranspose2d(deep, deep // 2, 2, stride=2))
                    decoder.append(DoubleConv(skip + deep // 2, skip))
                    deep = skip
                else:
                    out = skip // 2 if i else skip
                    decoder.append(DoubleConv(skip + deep, out, (skip + deep) // 2))
                    deep = out
            self.ups = nn.ModuleList(ups)
            self.decoder = nn.ModuleList(decoder)
            self.head = nn.Conv2d(deep, num_classes, 1)

        def forward(self, x):
            skips = self.backbone(x)
            y = skips.pop()
            for j, unit in enumerate(self.decoder):
                skip = skips.pop()
                if self.ups:
                    y = self.ups[j](y)
                else:
                    y = nn.functional.interpolate(
                        y, size=skip.shape[-2:], mode="bilinear", align_corners=align_corners
                    )
                y = unit(torch.cat([skip, y], dim=1))
            return self.head(y)

    return UNet()


def torch_case(
    width: int, size: int, dtype: str, batch: int, repeats: int, warmup: int = 1
) -> dict[str, float]:
    import torch

    torch.manual_seed(0)
    model = torch_unet(width).train()
    params = sum(p.numel() for p in model.parameters())
    x_np, y_np = _data(batch, size)
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(y_np).permute(0, 3, 1, 2).contiguous()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def run() -> float:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        return float(loss.detach())

    return {"seconds": _median_seconds(run, repeats, warmup), "params": params}


def _config(name: str, width: int, dtype: str, depth: int) -> dict[str, Any]:
    config: dict[str, Any] = {"width": width, "dtype": DTYPES[dtype]}
    if name in RESNET_MODELS:
        config["depth"] = depth
    return config


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=list(models.names()), choices=list(models.names())
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument(
        "--widths",
        nargs="+",
        default=["paper", "small"],
        help="'paper' (64), 'small' (--small-width) or integers",
    )
    parser.add_argument("--small-width", type=int, default=16)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth of PSPNet/DeepLabv3")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument(
        "--quick", action="store_true", help="224 only, small width (U-Net also at 64), 2 repeats"
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [224], min(args.repeats, 2)

    def widths(name: str) -> list[int]:
        if args.quick:
            return [PAPER_WIDTH, args.small_width] if name == "unet" else [args.small_width]
        named = {"paper": PAPER_WIDTH, "small": args.small_width}
        return [named[w] if w in named else int(w) for w in args.widths]

    if not args.no_torch:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        for width in widths(name):
            for size in args.sizes:
                for dtype in args.dtypes:
                    config = _config(name, width, dtype, args.depth)
                    j = jax_case(name, config, size, args.batch, args.repeats, args.warmup)
                    t = None
                    if name == "unet" and not args.no_torch:
                        t = torch_case(width, size, dtype, args.batch, args.repeats, args.warmup)
                        if t["params"] != j["params"]:
                            raise AssertionError(
                                f"PyTorch U-Net has {t['params']} parameters, JAX {j['params']}"
                            )
                    rows.append((name, width, size, dtype, j, t))
                    gc.collect()
                    print(
                        f"{name} w{width} {size} {dtype}: jax "
                        f"{j['seconds'] / args.batch * 1e3:.0f} ms/img"
                        + (
                            ""
                            if t is None
                            else f", torch {t['seconds'] / args.batch * 1e3:.0f} ms/img"
                        ),
                        flush=True,
                    )
    load_after = os.getloadavg()

    dev = jax.devices()[0]
    header = (
        f"Training step (forward + backward + BatchNorm update, no optimiser), batch "
        f"{args.batch}, 3 -> 1 channels, median of {args.repeats} after {args.warmup} warm-up; JAX "
        f"{jax.__version__} on {dev.platform}, CPU: {cpu_name()} ({os.cpu_count()} cores); "
        f"load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end. GFLOP/img: "
        "XLA cost analysis of the compiled step. JAX / PyTorch < 1: JAX faster."
    )
    lines = [
        header,
        "",
        "| model | width | size | dtype | params (M) | GFLOP/img | JAX ms/img | "
        "PyTorch ms/img | JAX / PyTorch | compile s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, width, size, dtype, j, t in rows:
        name_cfg = f"{name} (ResNet-{args.depth})" if name in RESNET_MODELS else name
        per_image = j["seconds"] / args.batch * 1e3
        cols = [
            name_cfg,
            str(width),
            f"{size}²",
            dtype,
            f"{j['params'] / 1e6:.2f}",
            f"{j['flops'] / args.batch / 1e9:.1f}",
            f"{per_image:.0f}",
        ]
        if t is None:
            cols += ["–", "–"]
        else:
            torch_ms = t["seconds"] / args.batch * 1e3
            cols += [f"{torch_ms:.0f}", f"{per_image / torch_ms:.2f}"]
        cols.append(f"{j['compile']:.0f}")
        lines.append("| " + " | ".join(cols) + " |")
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
