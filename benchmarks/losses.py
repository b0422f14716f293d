"""Forward+backward speed and peak memory of every binary loss, side by side in one run.

For each loss: ``jax.value_and_grad`` of the batch mean, jitted, on float32 logits
``[32, 448, 448]`` with 1:2000 defect labels (median of ``--repeats`` runs after warm-up),
next to (a) the jitted ``bce`` on the same input and (b) a straightforward PyTorch eager
implementation of the same equation (``benchmarks/torch_losses.py``; needs
``pip install torch==2.13.0``, never a package dependency), optionally also under
``torch.compile`` (``--torch-compile``).

PyTorch runs on the device JAX runs on (``--torch-device auto``: CUDA when JAX is on a GPU
and PyTorch sees one), timed after ``torch.cuda.synchronize()``; the table names both devices.

Peak memory on the CPU is the rise of the process's resident-set high-water mark (VmHWM,
reset through ``/proc/self/clear_refs``) during one forward+backward, with inputs already
allocated; on a GPU, PyTorch's is ``torch.cuda.max_memory_allocated`` above the inputs and
JAX's is XLA's temp-buffer size of the compiled step (shown in brackets on either device).

    python -m benchmarks.losses --out benchmarks/results/losses_cpu.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import (
    emit,
    host_line,
    jax_on_gpu,
    jax_side,
    torch_device,
    torch_side,
    torch_sync,
)
from dibe_jax import losses

NAMES = [
    "bce",
    "wbce",
    "focal",
    "dibe_dis",
    "dice",
    "tversky",
    "focal_tversky",
    "dibe_reg",
    "combo",
    "exp_log",
    "hybrid_focal",
    "dibe",
]


def _rss_reset() -> int:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS")
    except OSError:
        return -1


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return -1


def _time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, int]:
    fn()  # warm-up (and compilation)
    sync()
    base = _rss_reset()
    fn()
    sync()
    peak = _status("VmHWM") - base if base >= 0 else -1
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), peak


def make_inputs(shape: tuple[int, ...], ratio: float, seed: int = 0):
    """Float32 logits ``N(0, 2^2)`` and ``{0, 1}`` float32 labels with 1 defect per
    ``ratio`` background pixels, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=shape).astype(np.float32)
    y = (rng.random(shape) < 1 / (ratio + 1)).astype(np.float32)
    return z, y


def jax_case(name: str, z: jax.Array, y: jax.Array, repeats: int) -> dict[str, float]:
    """Seconds (median), host peak (CPU only, else -1), XLA temp bytes and the value of the
    jitted forward+backward of ``mean(loss(z, y))``."""
    loss = losses.get(name)
    step = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(loss(a, b))))
    t = time.perf_counter()
    compiled = step.lower(z, y).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", -1) if mem is not None else -1
    seconds, peak = _time(lambda: jax.block_until_ready(compiled(z, y)), repeats, lambda: None)
    value = float(compiled(z, y)[0])
    if jax_on_gpu():
        peak = -1  # the host's resident set says nothing about device memory
    return {"seconds": seconds, "peak": peak, "temp": temp, "value": value, "compile": compile_s}


def torch_case(
    name: str,
    z_np: np.ndarray,
    y_np: np.ndarray,
    repeats: int,
    *,
    device=None,
    compile_backend: str | None = None,
) -> dict[str, float]:
    """The PyTorch port of ``name`` on ``device`` (default: :func:`torch_device`), eager or
    under ``torch.compile(backend=compile_backend)`` (the whole ``mean(loss(z, y))``; the
    backward is compiled through AOTAutograd): seconds (median, synchronised), peak bytes,
    value, and the seconds of the first call (compilation included)."""
    import torch

    from benchmarks.torch_losses import LOSSES

    device = torch_device() if device is None else device
    sync = torch_sync(device)
    fn = LOSSES[name]

    def objective(z, y):
        return fn(z, y).mean()

    if compile_backend is not None:
        objective = torch.compile(objective, backend=compile_backend)
    y = torch.from_numpy(y_np).to(device)
    z = torch.from_numpy(z_np).to(device).requires_grad_(True)

    def run():
        z.grad = None
        out = objective(z, y)
        out.backward()
        return out

    t = time.perf_counter()
    run()
    sync()
    first = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        sync()
        peak = torch.cuda.max_memory_allocated(device) - base
        seconds, _ = _time(run, repeats, sync)
    else:
        seconds, peak = _time(run, repeats, sync)
    return {
        "seconds": seconds,
        "peak": peak,
        "value": float(run().detach()),
        "compile": first,
    }


def _mb(n: float) -> str:
    return "n/a" if n < 0 else f"{n / 2**20:.0f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 448, 448])
    parser.add_argument("--ratio", type=float, default=2000.0, help="background per defect")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--losses", nargs="+", default=NAMES, choices=NAMES)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--torch-device",
        default="auto",
        help="'auto' (CUDA when JAX is on a GPU and PyTorch sees one), 'cpu' or 'cuda'",
    )
    parser.add_argument(
        "--torch-compile",
        nargs="*",
        default=[],
        choices=NAMES,
        metavar="LOSS",
        help="also time these losses under torch.compile (inductor)",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    shape = tuple(args.shape)
    z_np, y_np = make_inputs(shape, args.ratio)
    z, y = jnp.asarray(z_np), jnp.asarray(y_np)
    device = None
    if not args.no_torch:
        import torch

        torch.manual_seed(0)
        device = torch_device(args.torch_device)
    base = jax_case("bce", z, y, args.repeats)
    rows = []
    for name in args.losses:
        j = base if name == "bce" else jax_case(name, z, y, args.repeats)
        t = c = None
        if device is not None:
            t = torch_case(name, z_np, y_np, args.repeats, device=device)
            if name in args.torch_compile:
                c = torch_case(
                    name, z_np, y_np, args.repeats, device=device, compile_backend="inductor"
                )
        rows.append((name, j, t, c))
        print(
            name,
            f"jax {j['seconds'] * 1e3:.1f} ms",
            "" if t is None else f"torch {t['seconds'] * 1e3:.1f} ms",
            "" if c is None else f"torch.compile {c['seconds'] * 1e3:.1f} ms",
            flush=True,
        )

    how = "eager" + (
        f"; torch.compile (inductor, default mode) for {', '.join(args.torch_compile)}"
        if args.torch_compile
        else ""
    )
    lines = [
        f"Forward+backward of the batch mean, logits float32 {list(shape)}, 1:{args.ratio:g} "
        f"labels, median of {args.repeats} after a warm-up, each side waiting for its device "
        "before the clock is read.",
        "",
        f"- JAX side: {jax_side()}.",
        "- PyTorch side: "
        + ("not run (`--no-torch`)" if device is None else torch_side(device, how))
        + ".",
        f"- Host: {host_line()}.",
        "",
        "| loss | JAX ms | × jitted bce | PyTorch eager ms | PyTorch / JAX | "
        "torch.compile ms | JAX peak MB (XLA temp MB) | PyTorch peak MB | |Δ value| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, j, t, c in rows:
        cols = [name, f"{j['seconds'] * 1e3:.1f}", f"{j['seconds'] / base['seconds']:.2f}"]
        jmem = f"{_mb(j['peak'])} ({_mb(j['temp'])})"
        if t is None:
            cols += ["–", "–", "–", jmem, "–", "–"]
        else:
            cols += [
                f"{t['seconds'] * 1e3:.1f}",
                f"{t['seconds'] / j['seconds']:.1f}×",
                "–" if c is None else f"{c['seconds'] * 1e3:.1f}",
                jmem,
                _mb(t["peak"]),
                f"{abs(t['value'] - j['value']):.1e}",
            ]
        lines.append("| " + " | ".join(cols) + " |")
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
