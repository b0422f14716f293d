"""Shared by the benchmark scripts: devices of both sides, timing, writing a result table.

JAX runs where ``jax.devices()`` says; the PyTorch baselines run on the same kind of device
(:func:`torch_device`: CUDA when JAX is on a GPU and PyTorch sees one, else the CPU), and
every table names both (:func:`jax_side`, :func:`torch_side`). Timings wait for the device:
``jax.block_until_ready`` on the JAX side, ``torch.cuda.synchronize`` on the PyTorch side
(:func:`torch_sync`), before the clock is read.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

#: Dense peak TFLOP/s by device kind and dtype (SXM datasheets; the H200 has the H100's
#: arithmetic). ``float32`` is plain FP32; XLA and cuDNN run float32 convolutions in TF32
#: by default, whose peak is ``tf32``.
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 67.0, "tf32": 494.5},
    "H200": {"bfloat16": 989.0, "float32": 67.0, "tf32": 494.5},
}


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (or ``platform`` where that is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def emit(text: str, out: str | Path | None) -> str:
    """Print ``text`` and, if ``out`` is given, write it there (folders created)."""
    print(text, flush=True)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text.rstrip("\n") + "\n")
    return text


# ---------------------------------------------------------------------------- devices


def jax_on_gpu() -> bool:
    """Whether JAX's default device is a GPU."""
    return jax.devices()[0].platform in ("gpu", "cuda", "rocm")


def jax_device_name() -> str:
    """``"gpu (NVIDIA H200)"`` or ``"cpu (AMD EPYC)"``: the platform and the chip."""
    dev = jax.devices()[0]
    return f"{dev.platform} ({cpu_name() if dev.platform == 'cpu' else dev.device_kind})"


def jax_side() -> str:
    """One line naming the JAX side: versions, device, number of devices, what compiles."""
    import flax
    import jaxlib
    import optax

    flags = os.environ.get("XLA_FLAGS")
    return (
        f"JAX {jax.__version__} (jaxlib {jaxlib.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}) on {jax_device_name()}, {jax.device_count()} device(s); "
        "every JAX function is compiled with `jax.jit` (XLA"
        + (f", `XLA_FLAGS={flags}`" if flags else "")
        + ")"
    )


def torch_device(prefer: str = "auto"):
    """The PyTorch device of the baselines: ``prefer`` (``"cpu"``, ``"cuda"``), or with
    ``"auto"`` CUDA when JAX runs on a GPU and PyTorch sees one, else the CPU."""
    import torch

    if prefer == "auto":
        prefer = "cuda" if jax_on_gpu() and torch.cuda.is_available() else "cpu"
    return torch.device(prefer)


def torch_device_name(device) -> str:
    """``"cuda (NVIDIA H200)"`` or ``"cpu (AMD EPYC)"``."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()})"


def torch_side(device, compiled: str = "eager") -> str:
    """One line naming the PyTorch side: version, device, threads or TF32 flags, and how
    it runs (``compiled``: e.g. ``"eager and torch.compile (inductor)"``)."""
    import torch

    if device.type == "cuda":
        extra = (
            f"cudnn {torch.backends.cudnn.version()}, "
            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"cudnn.benchmark={torch.backends.cudnn.benchmark}, "
            f"float32 matmul precision {torch.get_float32_matmul_precision()!r}"
        )
    else:
        extra = f"{torch.get_num_threads()} thread(s)"
    warn = ""
    if device.type == "cpu" and jax_on_gpu():
        warn = " (WARNING: JAX runs on a GPU, PyTorch here on the CPU: PyTorch has no CUDA)"
    return f"PyTorch {torch.__version__} on {torch_device_name(device)}, {extra}; {compiled}{warn}"


def torch_sync(device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (a no-op on the CPU)."""
    import torch

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def host_line() -> str:
    """Python, the host CPU and its cores."""
    return f"Python {platform.python_version()}, host CPU {cpu_name()} ({os.cpu_count()} cores)"


# ----------------------------------------------------------------------------- timing


def median_seconds(
    fn: Callable[[], Any], repeats: int, *, warmup: int = 1, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones;
    ``sync()`` (if given) runs before the clock starts and before it is read, so work queued
    on a device is counted. JAX callers block inside ``fn``."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
