"""Forward+backward speed and peak memory of every binary loss, side by side in one run.

For each loss: ``jax.value_and_grad`` of the batch mean, jitted, on float32 logits
``[32, 448, 448]`` with 1:2000 defect labels (median of ``--repeats`` runs after warm-up),
next to (a) the jitted ``bce`` on the same input and (b) a straightforward PyTorch eager
implementation of the same equation (``benchmarks/torch_losses.py``; needs
``pip install torch==2.13.0``, never a package dependency).

Peak memory is the rise of the process's resident-set high-water mark (VmHWM, reset through
``/proc/self/clear_refs``) during one forward+backward, with inputs already allocated; for
JAX, XLA's own temp-buffer size is shown as well.

    python benchmarks/losses.py --out benchmarks/results/losses_cpu.md
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

from benchmarks._common import cpu_name, emit
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


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, int]:
    fn()  # warm-up (and compilation)
    base = _rss_reset()
    fn()
    peak = _status("VmHWM") - base if base >= 0 else -1
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), peak


def jax_case(name: str, z: jax.Array, y: jax.Array, repeats: int) -> dict[str, float]:
    loss = losses.get(name)
    step = jax.jit(jax.value_and_grad(lambda a, b: jnp.mean(loss(a, b))))
    compiled = step.lower(z, y).compile()
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", -1) if mem is not None else -1
    seconds, peak = _time(lambda: jax.block_until_ready(compiled(z, y)), repeats)
    value = float(compiled(z, y)[0])
    return {"seconds": seconds, "peak": peak, "temp": temp, "value": value}


def torch_case(name: str, z_np: np.ndarray, y_np: np.ndarray, repeats: int):
    import torch

    from benchmarks.torch_losses import LOSSES

    fn = LOSSES[name]
    y = torch.from_numpy(y_np)
    z = torch.from_numpy(z_np).requires_grad_(True)

    def run():
        z.grad = None
        out = fn(z, y).mean()
        out.backward()
        return out

    seconds, peak = _time(run, repeats)
    return {"seconds": seconds, "peak": peak, "value": float(run())}


def _mb(n: float) -> str:
    return "n/a" if n < 0 else f"{n / 2**20:.0f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 448, 448])
    parser.add_argument("--ratio", type=float, default=2000.0, help="background per defect")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--losses", nargs="+", default=NAMES, choices=NAMES)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    shape = tuple(args.shape)
    z_np = rng.normal(scale=2.0, size=shape).astype(np.float32)
    y_np = (rng.random(shape) < 1 / (args.ratio + 1)).astype(np.float32)
    z, y = jnp.asarray(z_np), jnp.asarray(y_np)
    if not args.no_torch:
        import torch

        torch.manual_seed(0)
    base = jax_case("bce", z, y, args.repeats)
    rows = []
    for name in args.losses:
        j = base if name == "bce" else jax_case(name, z, y, args.repeats)
        t = None if args.no_torch else torch_case(name, z_np, y_np, args.repeats)
        rows.append((name, j, t))
        print(
            name,
            f"jax {j['seconds'] * 1e3:.1f} ms",
            "" if t is None else f"torch {t['seconds'] * 1e3:.1f} ms",
            flush=True,
        )

    cpu = cpu_name()
    dev = jax.devices()[0]
    lines = [
        f"Forward+backward of the batch mean, logits float32 {list(shape)}, 1:{args.ratio:g} "
        f"labels, median of {args.repeats}; JAX {jax.__version__} on {dev.platform} "
        f"({dev.device_kind}), CPU: {cpu}, {jax.local_device_count()} device(s).",
        "",
        "| loss | JAX ms | × jitted bce | PyTorch eager ms | PyTorch / JAX | JAX peak MB "
        "(XLA temp MB) | PyTorch peak MB | |Δ value| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, j, t in rows:
        cols = [name, f"{j['seconds'] * 1e3:.1f}", f"{j['seconds'] / base['seconds']:.2f}"]
        if t is None:
            cols += ["–", "–", f"{_mb(j['peak'])} ({_mb(j['temp'])})", "–", "–"]
        else:
            cols += [
                f"{t['seconds'] * 1e3:.1f}",
                f"{t['seconds'] / j['seconds']:.1f}×",
                f"{_mb(j['peak'])} ({_mb(j['temp'])})",
                _mb(t["peak"]),
                f"{abs(t['value'] - j['value']):.1e}",
            ]
        lines.append("| " + " | ".join(cols) + " |")
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
