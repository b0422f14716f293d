"""``make bench-gpu``: the GPU benchmarks in one command, within 7 minutes.

On a machine with a GPU (one H100 or H200) it runs, each section within its own time budget
and printing its progress as it goes:

1. **losses** (``losses_gpu.md``): forward+backward of every binary loss on float32 logits
   ``[32, 448, 448]`` (1:2000 labels): ``jax.jit`` against the PyTorch port
   (``benchmarks/torch_losses.py``) eager and, for ``bce`` and ``dibe``, under
   ``torch.compile`` (inductor), both on the GPU; beside each the HBM floor: the bytes that
   must move (logits and labels read once, the gradient written once) over the device's
   measured copy bandwidth (``x -> x + 1`` on a 2 GiB float32 array, bytes read + written).
2. **unet** (``unet_gpu.md``): the library's training step (``dibe_jax.train``:
   ``make_state`` and the steps of ``loss_steps``; U-Net width 64, DIBE loss, SGD with
   momentum, 448², batch 32) in bfloat16 and float32, its FLOPs counted by XLA's cost
   analysis of the same step lowered for the CPU (the GPU's count leaves out the cuDNN
   convolutions) and the MFU they give against the dense bf16 peak (989 TFLOP/s on the
   H100/H200 SXM); against the same step in PyTorch (``benchmarks.unet_torch``, in a process
   of its own without JAX on the GPU: ``channels_last``, ``torch.autocast`` bfloat16 for the
   bfloat16 row, ``cudnn.benchmark``), eager and under ``torch.compile`` (default mode and
   ``max-autotune``). A second table gives compile times cold and warm: the JAX step with
   an empty and with a warm persistent compilation cache, ``torch.compile``'s first call
   with an empty and with a warm inductor cache (a second process).
3. **data** (``data_gpu.md``): the device data path that ``dibe-jax train`` uses by default
   (``dibe_jax.data.in_memory``: a split decoded once into ``uint8``, seeded-permutation
   epochs of ``Batches``, batches put on the device 2 ahead): its images/s (host gather +
   transfer, ``uint8``, batches of 32) at CFD's 160² and the U-Net's 448², and the
   library's train step at the same sizes on a ``float32`` batch (bare) and on the
   ``uint8`` batch with the device preprocessing (``dibe_jax.data.device_augment``:
   ``uint8 -> float32``, flips, jitter, inside the jitted step): its cost per step, and the
   data path against the step it feeds. The grain loader is not measured: grain is not
   installed there.
4. **cfd** (``cfd_gpu.md``): full-width (64) U-Net trained on CrackForest's native 160²
   tiles (360 train / 348 validation, as ``dibe_jax.datasets.crackforest``) with DIBE and,
   when the budget allows, the focal Tversky loss (FT): ``dibe_jax.train.train_and_evaluate``
   itself on the decoded tiles (its ``sources``: the device data path, checkpoints, metrics),
   50 epochs, seed 0, the paper's SGD (lr 0.01, momentum 0.9, batch 32) and augmentation
   (the library's ``train.Config`` defaults), evaluated every 5 epochs (dataset-level IoU,
   PA, OII); the IoU beside the paper's Table 5 (DIBE 0.512, FT 0.501). One seed: see
   docs/conventions.md on what one run can and cannot rank.

The sections run in the order losses, unet, data, cfd, each within its share of the run's
budget (``--budget-s``, default 420 s): a row whose compilation or run would overrun it is
skipped and says so in its table. To measure every row of one section, run it alone with
more time, e.g. ``--sections unet --budget-s 560``.

Without a GPU (or with ``--cpu-tiny``) it runs a **tiny CPU mode** that says so in its
output and its tables: every size is shrunk, ``torch.compile`` uses ``backend="eager"``
(graph capture only, no code generation), and the tables go to ``*_cpu_tiny.md`` in a
temporary folder (or ``--out-dir``), never over the GPU results. ``tests/test_benchmarks.py``
runs it, so the command cannot rot.

The GPU machine has its own python3 with jax (0.11), flax, optax, orbax, torch, PIL and
SciPy, but no grain, TFDS, array_record or tensorboardX, and no installation of this
package: ``dibe_jax`` imports from the source tree (``PYTHONPATH=.``) and trains there
without them (they load only when used; the runs write no TensorBoard events).
CrackForest may not be committed: ``make bench-data`` copies it into the git-ignored
``bench_data/crackforest``, which the run carries.

The GPU run through the device tool: ``make bench-data`` here first, then ``run`` with
``carry=["bench_data"]``, ``timeout_s=570`` and the command (bash, on the GPU machine)::

    set -o pipefail; PYTHONUNBUFFERED=1 make bench-gpu BENCH_GPU_ARGS="--out-dir $OUT" \\
      2>&1 | tee $OUT/bench_gpu.log

It writes ``$OUT/{losses,unet,data,cfd}_gpu.md`` and ``$OUT/bench_gpu.log``; copy the tables
into ``benchmarks/results/``. On any GPU machine with this checkout, ``make bench-gpu``
alone (``python3 -m benchmarks.gpu`` with ``PYTHONPATH=.``) writes
``benchmarks/results/*_gpu.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import cfd_data
from benchmarks._common import (
    PEAK_TFLOPS,
    emit,
    host_line,
    jax_device_name,
    jax_on_gpu,
    jax_side,
    torch_device,
    torch_side,
)
from benchmarks.losses import NAMES
from benchmarks.unet_torch import random_batch
from dibe_jax import models, train
from dibe_jax.data import in_memory
from dibe_jax.data.augment import to_float
from dibe_jax.train.batches import device_preprocess
from dibe_jax.train.reporting import read_metrics
from dibe_jax.train.state import loss_steps
from dibe_jax.train.step import make_mesh, replicate, shard_batch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PAPER_TABLE5 = {"dibe": 0.512, "focal_tversky": 0.501}  # U-Net on CFD, IoU
LOSS_LABEL = {"dibe": "DIBE", "focal_tversky": "FT (focal Tversky)"}
ALL_LOSSES = tuple(NAMES)  # the binary losses, in the order of benchmarks/losses.py


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and time budgets of one mode (``gpu`` or ``cpu_tiny``)."""

    name: str
    loss_shape: tuple[int, int, int]
    loss_names: tuple[str, ...]
    loss_compiled: tuple[str, ...]
    loss_repeats: int
    copy_mib: int
    unet_width: int
    unet_size: int
    unet_batch: int
    unet_dtypes: tuple[str, ...]
    unet_steps: int  # timed steps after the warm-up ones
    unet_warmup: int
    cfd_width: int
    cfd_epochs: int | None  # None: the library's Config.epochs (50)
    cfd_eval_every: int | None  # None: Config.eval_every (5)
    cfd_batch: int | None  # None: Config.batch_size (32)
    cfd_tiles: tuple[int | None, int | None]  # train / validation tiles used (None: all)
    cfd_crop: int | None  # keep the top-left crop x crop of each tile (None: whole tiles)
    data_batches: int  # batches of the 448² data-path epoch
    data_steps: int  # timed steps of each data-section step
    compile_backend: str
    compile_modes: tuple[str, ...]  # torch.compile modes of the U-Net rows
    min_s_for_compile: float  # a torch.compile row starts only with this much section time
    budgets: dict[str, float]  # seconds per section
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)


GPU = Profile(
    name="gpu",
    loss_shape=(32, 448, 448),
    loss_names=ALL_LOSSES,
    loss_compiled=("dibe", "bce"),
    loss_repeats=10,
    copy_mib=2048,
    unet_width=64,
    unet_size=448,
    unet_batch=32,
    unet_dtypes=("bfloat16", "float32"),
    unet_steps=10,
    unet_warmup=2,
    cfd_width=64,
    cfd_epochs=None,
    cfd_eval_every=None,
    cfd_batch=None,
    cfd_tiles=(None, None),
    cfd_crop=None,
    data_batches=16,
    data_steps=30,
    compile_backend="inductor",
    compile_modes=("default", "max-autotune"),
    min_s_for_compile=45.0,
    budgets={"losses": 40.0, "unet": 270.0, "data": 50.0, "cfd": 60.0, "sweep": 60.0},
)

CPU_TINY = Profile(
    name="cpu_tiny",
    loss_shape=(2, 32, 32),
    loss_names=("bce", "dibe"),
    loss_compiled=("dibe",),
    loss_repeats=1,
    copy_mib=16,
    unet_width=4,
    unet_size=32,
    unet_batch=4,
    unet_dtypes=("bfloat16", "float32"),
    unet_steps=1,
    unet_warmup=1,
    cfd_width=4,
    cfd_epochs=1,
    cfd_eval_every=1,
    cfd_batch=4,
    cfd_tiles=(6, 6),
    # cfd_crop = unet_size, cfd_width = unet_width and cfd_batch = unet_batch: one size in
    # the data section, whose two steps are the CFD training's (uint8, augmented) and the
    # U-Net section's float32 row (float32 batch): each compiled once.
    cfd_crop=32,
    data_batches=1,
    data_steps=2,
    compile_backend="eager",
    compile_modes=("default", "max-autotune"),
    min_s_for_compile=0.0,
    budgets={"losses": 120.0, "unet": 240.0, "data": 60.0, "cfd": 120.0, "sweep": 120.0},
    model_options={"num_stages": 1},
)


class Run:
    """The run's mode, clock, output folder and the numbers later sections reuse."""

    def __init__(
        self,
        profile: Profile,
        out_dir: Path,
        budget_s: float,
        data_dir: str | None,
        command: str = "python -m benchmarks.gpu",
    ):
        self.profile = profile
        self.command = command
        self.data_seconds = float("nan")
        self.out_dir = out_dir
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.budget_s = budget_s
        self.data_dir = data_dir
        self.copy_gbs: float | None = None  # bytes read + written per second / 1e9
        self.step_rates: dict[str, float] = {}  # label -> images/s of a training step
        self.data_rows: dict[int, dict[str, Any]] = {}  # size -> data path and step rates
        self.torch_error: str | None = None
        self.section_end = self.deadline
        self.section_start = self.t0

    @property
    def tiny(self) -> bool:
        return self.profile.name == "cpu_tiny"

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {message}", flush=True)

    def start_section(self, name: str) -> None:
        now = time.monotonic()
        self.section_start = now
        self.section_end = min(self.deadline, now + self.profile.budgets[name])
        self.log(f"== {name} (budget {self.section_end - now:.0f} s)")

    def left(self) -> float:
        """Seconds left in the current section."""
        return self.section_end - time.monotonic()

    def path(self, name: str) -> Path:
        return self.out_dir / f"{name}_{self.profile.name}.md"

    def torch(self):
        """``(torch module, device)`` or ``(None, None)`` when PyTorch is missing."""
        try:
            import torch
        except ImportError as e:
            self.torch_error = f"PyTorch not installed ({e})"
            return None, None
        device = torch_device()
        if jax_on_gpu() and device.type != "cuda":
            self.torch_error = "PyTorch sees no CUDA device, JAX runs on a GPU: not compared"
            return torch, None
        return torch, device

    def header(
        self, title: str, what: list[str], torch_how: str | None, seconds: float | None = None
    ) -> list[str]:
        """Title, mode, what is measured, and the devices and versions of both sides;
        ``seconds``: the section's wall time (default: since it started)."""
        if seconds is None:
            seconds = time.monotonic() - self.section_start
        if self.tiny:
            mode = (
                "**Tiny CPU mode**: no GPU here (or `--cpu-tiny`), so every size is shrunk "
                f"and `torch.compile` uses backend {self.profile.compile_backend!r} (graph "
                "capture only); these numbers show that the code runs, not speed. The real "
                "run is `make bench-gpu` on one H100/H200."
            )
        else:
            mode = f"GPU run of `make bench-gpu`, run budget {self.budget_s:.0f} s."
        if torch_how is None:
            torch_line = "not used in this table"
        elif self.torch_error:
            torch_line = f"not run: {self.torch_error}"
        else:
            _, device = self.torch()
            torch_line = torch_side(device, torch_how)
        return [
            f"# {title}",
            "",
            mode,
            "",
            *what,
            "",
            f"- JAX side: {jax_side()}.",
            f"- PyTorch side: {torch_line}.",
            f"- Host: {host_line()}.",
            f"- Section wall time {seconds:.0f} s (compilation included); command "
            f"`{self.command}`.",
            "",
        ]


def _flops(program: Any) -> float:
    """XLA's FLOP count of a lowered or compiled program (NaN if it gives none)."""
    analysis = program.cost_analysis()
    if analysis is None:
        return float("nan")
    if isinstance(analysis, dict):
        analysis = [analysis]
    return float(sum(a.get("flops", 0.0) for a in analysis if a))


def _peak(dtype: str) -> float | None:
    kind = jax.devices()[0].device_kind
    return next((v[dtype] for k, v in PEAK_TFLOPS.items() if k in kind), None)


def _num(x: float) -> str:
    return "–" if x != x else f"{x:.0f}"  # NaN: not measured


def _free_torch(torch) -> None:
    gc.collect()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------- copy bandwidth


def copy_bandwidth(run: Run) -> float:
    """Device bytes read + written per second by ``x -> x + 1`` on a large float32 array."""
    n = run.profile.copy_mib * 2**20 // 4
    x = jnp.zeros((n,), jnp.float32)
    f = jax.jit(lambda a: a + 1.0).lower(x).compile()
    times = []
    jax.block_until_ready(f(x))
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - t)
    del x
    seconds = statistics.median(times)
    return 2 * n * 4 / seconds


# --------------------------------------------------------------------------- losses


def section_losses(run: Run) -> None:
    from benchmarks import losses as lb

    p = run.profile
    run.start_section("losses")
    torch, device = run.torch()
    z_np, y_np = lb.make_inputs(p.loss_shape, 2000.0)
    z, y = jnp.asarray(z_np), jnp.asarray(y_np)
    floor_bytes = 3 * z_np.nbytes  # logits and labels read, gradient written (float32)
    floor_s = floor_bytes / run.copy_gbs / 1e9
    rows: dict[str, dict[str, Any]] = {}
    for name in p.loss_names:
        if run.left() <= 0:
            rows[name] = {"note": "skipped: section budget spent"}
            continue
        j = lb.jax_case(name, z, y, p.loss_repeats)
        t = (
            None
            if device is None
            else lb.torch_case(name, z_np, y_np, p.loss_repeats, device=device)
        )
        rows[name] = {"jax": j, "eager": t}
        run.log(
            f"{name}: jax {j['seconds'] * 1e3:.3f} ms"
            + ("" if t is None else f", torch eager {t['seconds'] * 1e3:.3f} ms")
        )
    for name in p.loss_compiled:  # after the eager rows, in order of importance
        if device is None or "jax" not in rows.get(name, {}):
            continue
        if run.left() < p.min_s_for_compile / 3:
            rows[name]["compiled"] = "skipped: section budget spent"
            continue
        try:
            c = lb.torch_case(
                name, z_np, y_np, p.loss_repeats, device=device, compile_backend=p.compile_backend
            )
        except Exception as e:  # noqa: BLE001 - a failed compilation is a result, not a crash
            rows[name]["compiled"] = f"failed: {type(e).__name__}: {str(e)[:120]}"
            run.log(f"{name}: torch.compile failed: {e!r}")
            continue
        rows[name]["compiled"] = c
        run.log(
            f"{name}: torch.compile {c['seconds'] * 1e3:.3f} ms (first call {c['compile']:.0f} s)"
        )
    del z, y
    _free_torch(torch)

    b, h, w = p.loss_shape
    what = [
        f"Forward + backward of the batch mean of each binary loss: float32 logits "
        f"`[{b}, {h}, {w}]`, float32 labels with 1 defect pixel per 2000, median of "
        f"{p.loss_repeats} after a warm-up; each side waits for its device "
        "(`block_until_ready`, `torch.cuda.synchronize()`) before the clock is read.",
        "",
        f"HBM floor: the bytes that must move, {floor_bytes / 2**20:.0f} MiB (logits and "
        "labels read once, the gradient written once, float32; the per-image values are "
        f"negligible), over the measured copy bandwidth {run.copy_gbs:.0f} GB/s (`x -> x + 1` "
        f"on a {p.copy_mib} MiB float32 array, bytes read + written per second): "
        f"{floor_s * 1e3:.3f} ms. Region and compound losses (dice, tversky, focal_tversky, "
        "dibe_reg, combo, exp_log, hybrid_focal, dibe) need their per-image sums before the "
        "gradient, so a single pass cannot reach the floor unless the inputs stay on chip: "
        "their floor with two reads is 5/3 of it.",
        "",
        f"PyTorch: the eager port of each equation (`benchmarks/torch_losses.py`); "
        f"`torch.compile(backend={p.compile_backend!r})` of `mean(loss(z, y))` for "
        f"{', '.join(p.loss_compiled)} (with inductor the backward is compiled too, through "
        "AOTAutograd). "
        "× floor: measured time over the HBM floor (1 = at the floor).",
    ]
    how = (
        f"eager, and torch.compile (backend {p.compile_backend!r}, default mode) where a "
        "column says so"
    )
    lines = run.header("Binary losses: forward + backward", what, how)
    lines += [
        "| loss | JAX jit ms | × floor | PyTorch eager ms | eager / JAX | "
        "torch.compile ms | compile / JAX | JAX compile s | torch.compile first call s | "
        "|Δ value| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        j, t, c = r.get("jax"), r.get("eager"), r.get("compiled")
        if j is None:
            lines.append(f"| {name} | {r['note']} |" + " |" * 8)
            continue
        js = j["seconds"]
        cols = [name, f"{js * 1e3:.3f}", f"{js / floor_s:.1f}"]
        if t is None:
            cols += ["–", "–"]
        else:
            cols += [f"{t['seconds'] * 1e3:.3f}", f"{t['seconds'] / js:.2f}"]
        if isinstance(c, dict):
            cols += [f"{c['seconds'] * 1e3:.3f}", f"{c['seconds'] / js:.2f}"]
        else:
            cols += [c or "–", "–"]
        cols += [f"{j['compile']:.1f}", f"{c['compile']:.1f}" if isinstance(c, dict) else "–"]
        cols.append("–" if t is None else f"{abs(t['value'] - j['value']):.1e}")
        lines.append("| " + " | ".join(cols) + " |")
    emit("\n".join(lines), run.path("losses"))


# ------------------------------------------------------------ library step and state


def bench_config(
    base: train.Config, loss: str, *, width: int, dtype: str, model_options: dict[str, Any]
) -> train.Config:
    """``base`` with a U-Net of ``width`` (and ``model_options``), ``loss`` with its paper
    defaults and the computation in ``dtype``."""
    config = copy.deepcopy(base)
    config.loss.name, config.loss.params = loss, {}
    config.model.name, config.model.options = "unet", {"width": width, **model_options}
    config.dtype = dtype
    return config


def build_steps(config: train.Config):
    """``(steps, state, mesh, params, graphdefs)``: the library's jitted train / eval steps of
    ``config`` for a binary U-Net on RGB images (``train.make_state``, then
    ``train.state.loss_steps``, as ``train.build`` makes them: ``uint8`` batches get the
    device preprocessing of ``config.data``, ``float32`` batches none) and a fresh state,
    replicated. Equal configs give the same steps back (``make_steps`` keeps them), so a
    second section with the same setting and shapes reuses their compilation
    (:func:`compiled_before`)."""
    from flax import nnx

    train_gd, eval_gd, state = train.make_state(config, in_channels=3)
    mesh = make_mesh()
    steps = loss_steps(config, train_gd, eval_gd, mesh, num_classes=1)
    params = models.count_params(nnx.merge(train_gd, state)[0])
    return steps, replicate(state, steps.replicated), mesh, params, (train_gd, eval_gd)


def cpu_step_flops(config: train.Config, graphdefs, state, batch: dict, *, compiled: bool):
    """FLOPs of one train step of ``config`` on ``batch``'s shapes, from XLA's cost analysis
    of the same step lowered for the CPU (abstract inputs placed on the CPU: nothing is
    allocated or run): ``(lowered count, compiled count or None)``. The CPU keeps every
    convolution as a ``convolution`` op, which the cost analysis counts; on a GPU they
    become cuDNN custom calls, which it does not. NaN where the CPU backend is off."""
    try:
        cpu = jax.devices("cpu")[:1]
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return float("nan"), None
    mesh = make_mesh(cpu)
    steps = loss_steps(config, *graphdefs, mesh, num_classes=1)
    replicated = steps.replicated
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def abstract(x, sharding):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    lowered, _ = lower_train(
        steps,
        jax.tree.map(lambda x: abstract(x, replicated), state),
        {k: abstract(v, sharded) for k, v in batch.items()},
    )
    flops = _flops(lowered)
    return flops, (_flops(lowered.compile()) if compiled else None)


def lower_train(steps, state, batch: dict) -> tuple[Any, tuple]:
    """``(lowered, extra)``: the jitted train step lowered as a ``float32`` batch calls it
    (``steps.train(state, batch)``); its compiled form takes ``(state, batch, *extra)``.
    Steps whose run inputs (loss hyperparameters, seed) are arguments of a shared jitted
    function give it as ``train_jit`` (``train_jit(state, batch, step, inputs)``); others
    are jitted themselves."""
    jitted = getattr(steps, "train_jit", None)
    if jitted is None:
        return steps.train.lower(state, batch), ()
    extra = (None, steps.inputs)
    return jitted.lower(state, batch, *extra), extra


_CALLED: set[tuple] = set()


def _signature(steps, batch: dict, numbered: bool) -> tuple:
    leaves = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(batch.items()))
    return (id(steps.train), numbered, leaves)


def compiled_before(steps, batch: dict, *, numbered: bool, record: bool = True) -> bool:
    """Whether ``steps.train`` was called before on batches of these shapes and dtypes, in
    the same form (``numbered``: ``train(state, batch, step, size=None)``, else
    ``train(state, batch)``), so that ``jax.jit`` holds its compilation; records this call
    (unless ``record`` is False)."""
    signature = _signature(steps, batch, numbered)
    seen = signature in _CALLED
    if record:
        _CALLED.add(signature)
    return seen


# ----------------------------------------------------------------------------- U-Net


def jax_unet(run: Run, config, dtype: str) -> dict[str, Any]:
    """The library's train step of the U-Net rows in ``dtype``: its step time, compile time
    (or that an earlier section compiled it), FLOPs counted on the CPU and parameters."""
    p = run.profile
    config = bench_config(
        config, "dibe", width=p.unet_width, dtype=dtype, model_options=p.model_options
    )
    steps, state, mesh, params, graphdefs = build_steps(config)
    x, y = random_batch(p.unet_batch, p.unet_size)
    batch = shard_batch({"image": x, "mask": y}, mesh)
    reused = compiled_before(steps, batch, numbered=False)
    t = time.perf_counter()
    lowered, extra = lower_train(steps, state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    # After the timed compile: on a CPU-only machine the CPU's step is this very program.
    flops, flops_compiled = cpu_step_flops(config, graphdefs, state, batch, compiled=run.tiny)
    for _ in range(p.unet_warmup):
        state, stats = compiled(state, batch, *extra)
    jax.block_until_ready(stats)
    t = time.perf_counter()
    for _ in range(p.unet_steps):
        state, stats = compiled(state, batch, *extra)
    jax.block_until_ready(stats)
    step_s = (time.perf_counter() - t) / p.unet_steps
    loss = float(stats["loss"])
    del state, compiled
    gc.collect()
    return {
        "step_s": step_s,
        "flops": flops,
        "flops_cpu_compiled": flops_compiled,
        "compile": compile_s,
        "params": params,
        "loss": loss,
        "reused": reused,
    }


def warm_compile_s(run: Run, config, dtype: str) -> float:
    """Seconds to lower and compile the U-Net row's step again once JAX's in-memory caches
    are cleared: what a new process pays with the persistent compilation cache warm."""
    p = run.profile
    config = bench_config(
        config, "dibe", width=p.unet_width, dtype=dtype, model_options=p.model_options
    )
    steps, state, mesh, _, _ = build_steps(config)
    x, y = random_batch(p.unet_batch, p.unet_size)
    batch = shard_batch({"image": x, "mask": y}, mesh)
    jax.clear_caches()
    _CALLED.clear()  # nothing compiled is held in memory any more
    t = time.perf_counter()
    lower_train(steps, state, batch)[0].compile()
    return time.perf_counter() - t


def torch_unet_rows(
    run: Run, device, rows: list[str], timeout_s: float, cache_dir: Path
) -> tuple[str | None, dict[str, dict[str, Any]], str]:
    """Run ``rows`` (``dtype:mode``) in ``benchmarks.unet_torch``, a process of their own
    with JAX kept off the GPU: ``(its PyTorch side line, row -> result, note)``; rows it did
    not finish in ``timeout_s`` are missing, and ``note`` says why."""
    p = run.profile
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.unet_torch",
        f"--device={device.type}",
        f"--width={p.unet_width}",
        f"--num-stages={p.model_options.get('num_stages', 4)}",
        f"--size={p.unet_size}",
        f"--batch={p.unet_batch}",
        f"--steps={p.unet_steps}",
        f"--warmup={p.unet_warmup}",
        f"--backend={p.compile_backend}",
        f"--threads={1 if run.tiny else 0}",
        "--rows",
        *rows,
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", TORCHINDUCTOR_CACHE_DIR=str(cache_dir))
    note = ""
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1.0, timeout_s)
        )
        out = proc.stdout
        if proc.returncode != 0:
            note = f"PyTorch process failed ({proc.returncode}): {proc.stderr[-300:]}"
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        note = f"skipped: section budget spent (PyTorch process stopped after {timeout_s:.0f} s)"
    side, results = None, {}
    for line in out.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            if "side" in item:
                side = item["side"]
            elif "row" in item:
                results[item.pop("row")] = item
    if note:
        run.log(note)
    return side, results, note


def section_unet(run: Run, config) -> None:
    p = run.profile
    run.start_section("unet")
    torch, device = run.torch()
    kinds = {"eager": "PyTorch eager"}
    for mode in p.compile_modes:
        kinds[mode] = f"PyTorch `torch.compile` ({p.compile_backend}, mode {mode!r})"
    labels = {"jax": "JAX `jax.jit` (library step)", **kinds}
    results: dict[tuple[str, str], tuple[dict | None, str]] = {}
    compile_rows: list[tuple[str, str, str, str]] = []  # side, program, cold, warm
    # PyTorch first, in a process of its own that gives the device back when it ends (eager,
    # then torch.compile, slowest to start, within the budget left beside a reserve for the
    # JAX rows); then the JAX rows in this process, whose allocator keeps what it once used.
    torch_line = None
    if device is not None:
        # In order of importance, for a budget running out: eager, then each compile mode
        # in the first dtype (bfloat16), then in the others.
        rows = [f"{dtype}:eager" for dtype in p.unet_dtypes]
        rows += [f"{dtype}:{mode}" for dtype in p.unet_dtypes for mode in p.compile_modes]
        cache = Path(tempfile.mkdtemp(prefix="bench_inductor_"))
        # Kept for the JAX rows (two compilations of about 90 s each on an H200) and for the
        # warm-cache process below.
        reserve = 0.0 if run.tiny else 230.0
        torch_line, got, note = torch_unet_rows(run, device, rows, run.left() - reserve, cache)
        for row in rows:
            dtype, kind = row.split(":")
            r = got.get(row)
            if r is None:
                results[dtype, kind] = (None, note or "skipped")
            elif "error" in r:
                results[dtype, kind] = (None, f"failed: {r['error']}")
            else:
                results[dtype, kind] = (r, "")
                run.log(f"U-Net {dtype} {labels[kind]}: {r['step_s'] * 1e3:.1f} ms/step")
        cold_row = f"{p.unet_dtypes[0]}:default"
        if cold_row in got and "first" in got[cold_row] and run.left() - reserve + 30 > 5:
            _, again, _ = torch_unet_rows(run, device, [cold_row], run.left() - reserve + 30, cache)
            warm = again.get(cold_row, {}).get("first")
            compile_rows.append(
                (
                    "PyTorch",
                    f"`torch.compile` {p.unet_dtypes[0]}, mode 'default' (first call)",
                    f"{got[cold_row]['first']:.1f}",
                    "–" if warm is None else f"{warm:.1f}",
                )
            )
        shutil.rmtree(cache, ignore_errors=True)
    for dtype in p.unet_dtypes:
        if run.left() <= 0:
            results[dtype, "jax"] = (None, "skipped: section budget spent")
            continue
        j = jax_unet(run, config, dtype)
        run.step_rates[f"U-Net step {p.unet_size}² {dtype} (JAX)"] = p.unet_batch / j["step_s"]
        results[dtype, "jax"] = (j, "")
        run.log(f"U-Net {dtype} jax: {j['step_s'] * 1e3:.1f} ms/step, compile {j['compile']:.0f} s")
    for dtype in p.unet_dtypes:  # the same programs with the persistent cache warm
        j = results[dtype, "jax"][0]
        if j is None or j["reused"] or run.left() <= 0:
            continue
        warm = warm_compile_s(run, config, dtype)
        compile_rows.append(
            ("JAX", f"train step {dtype} (lower + compile)", f"{j['compile']:.1f}", f"{warm:.1f}")
        )
        run.log(f"U-Net {dtype} jax: compile {j['compile']:.1f} s cold, {warm:.1f} s warm")
    for (dtype, kind), (r, _) in results.items():
        j = results[dtype, "jax"][0]
        if kind != "jax" and r is not None and j is not None and r["params"] != j["params"]:
            raise AssertionError(f"PyTorch U-Net has {r['params']} parameters, JAX {j['params']}")
    rows_out = [
        (dtype, labels[kind], *results[dtype, kind])
        for dtype in p.unet_dtypes
        for kind in labels
        if (dtype, kind) in results
    ]
    peak = _peak("bfloat16")
    what = [
        f"One training step of U-Net width {p.unet_width} (bilinear, BatchNorm, "
        f"{p.model_options.get('num_stages', 4)} pooling stage(s)), 3 -> 1 channels, "
        f"{p.unet_size}², batch {p.unet_batch}: forward, DIBE loss (batch mean), backward, "
        "SGD with momentum 0.9; the same random batch every step, on the device; mean over "
        f"{p.unet_steps} steps after {p.unet_warmup} warm-up, synchronised at both ends.",
        "",
        "JAX: the library's train step (`dibe_jax.train.make_state` and "
        "`dibe_jax.train.state.loss_steps`, as `dibe-jax train` builds them: one `jax.jit` "
        "with the non-finite guard, parameters float32, computation in the row's dtype). "
        "PyTorch: `benchmarks.models.torch_unet` (same architecture; parameter counts checked "
        "equal) in a process of its own, without JAX on the device (`benchmarks.unet_torch`), "
        "`channels_last`, `torch.autocast(dtype=torch.bfloat16)` for the bfloat16 row (loss "
        "in float32), `torch.optim.SGD`; eager, then `torch.compile` of forward + loss in "
        f"each mode ({', '.join(p.compile_modes)}).",
        "",
        "GFLOP/step: XLA's cost analysis of the same JAX step lowered for the CPU "
        "(`jit(...).lower(...)` on abstract CPU-placed inputs): there every convolution "
        "stays a `convolution` op and is counted, while the GPU's own `cost_analysis()` "
        "leaves out the cuDNN convolutions (the 2026-12-04 run reported 125 GFLOP and "
        "0.2 % MFU that way). The PyTorch rows use the same count (same network). MFU: "
        "achieved FLOP/s over the dense bf16 peak (H100/H200 SXM: 989 TFLOP/s) for every "
        "row; float32 convolutions run in TF32 by default on both sides (XLA's default "
        "precision, `torch.backends.cudnn.allow_tf32`), whose dense peak is half of it.",
    ]
    lines = run.header("U-Net training step", what, "in a process of its own")
    if torch_line is not None:  # the line the PyTorch process wrote about itself
        i = next(k for k, line in enumerate(lines) if line.startswith("- PyTorch side:"))
        lines[i] = f"- PyTorch side: {torch_line}."
    if run.tiny:
        j = results[p.unet_dtypes[0], "jax"][0]
        if j is not None and j["flops_cpu_compiled"] is not None:
            lines += [
                f"- FLOP count check (tiny mode): lowered {j['flops'] / 1e9:.6g} GFLOP, "
                f"compiled for the CPU {j['flops_cpu_compiled'] / 1e9:.6g} GFLOP.",
                "",
            ]
    lines += [
        "| dtype | implementation | ms/step | images/s | GFLOP/step | TFLOP/s | MFU (bf16 "
        "peak) | vs JAX | compile / first call s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    jax_s, flops = {}, {}
    for dtype, label, r, note in rows_out:
        if r is None:
            lines.append(f"| {dtype} | {label} | {note} |" + " |" * 6)
            continue
        if label.startswith("JAX"):
            jax_s[dtype], flops[dtype] = r["step_s"], r["flops"]
        f = flops.get(dtype, float("nan"))
        tflops = f / r["step_s"] / 1e12
        if peak is None:
            mfu = "n/a (CPU)" if not jax_on_gpu() else "n/a (no peak known for this GPU)"
        else:
            mfu = f"{tflops / peak:.1%}"
        vs = f"{r['step_s'] / jax_s[dtype]:.2f}" if dtype in jax_s else "–"
        if r.get("reused"):
            first = "reused (compiled by an earlier section)"
        else:
            first = f"{r.get('compile', r.get('first', float('nan'))):.1f}"
        lines.append(
            f"| {dtype} | {label} | {r['step_s'] * 1e3:.1f} | {p.unet_batch / r['step_s']:.1f} | "
            f"{f / 1e9:.4g} | {tflops:.3g} | {mfu} | {vs} | {first} |"
        )
    lines += [
        "",
        "vs JAX: time per step over JAX's (> 1: JAX faster).",
        "",
        "## Compile time, cold and warm",
        "",
        "JAX: `lower` + `compile` of the row's step with the run's persistent compilation "
        "cache empty for it (the table above), then again after `jax.clear_caches()`, served "
        "by the persistent cache (what a second launch of the same shapes pays). PyTorch: "
        "the first call of the `torch.compile`d step (compilation included) in a process "
        "with an empty inductor cache, then in a second process with that cache warm.",
        "",
        "| side | program | cold s | warm s |",
        "|---|---|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in compile_rows),
    ]
    if not compile_rows:
        lines.append("| – | not measured (reused programs or section budget spent) | – | – |")
    emit("\n".join(lines), run.path("unet"))


# ----------------------------------------------------------------------- data path


def cfd_splits(data: dict) -> dict[str, Any]:
    """CFD's tiles decoded once into the device data path's ``ArraySplit``s
    (``dibe_jax.data.in_memory.decode_split``, native size), as ``dibe-jax train`` stores
    a split that fits in host memory."""
    return {
        split: in_memory.decode_split(
            [{"image": x, "mask": m} for x, m in zip(images, masks, strict=True)],
            size=None,
            name=split,
        )
        for split, (images, masks) in data.items()
    }


def _random_split(n: int, size: int, seed: int = 0):
    """``n`` random ``uint8`` images of ``size``² with 1 % defect pixels, as an ``ArraySplit``
    (the data path's and the augmentation's cost do not depend on the content)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), np.uint8)
    masks = (rng.random((n, size, size, 1)) < 0.01).astype(np.uint8)
    return in_memory.ArraySplit(images, masks, masks.reshape(n, -1).max(axis=1), "random")


def _time_train(steps, state, batch, n: int, first_step: int = 0):
    """``(images/s, first call s, reused, state)`` of ``n`` train steps on ``batch`` (already
    on the device), after one untimed call (the compilation, unless ``reused``: compiled
    before, :func:`compiled_before`).

    A ``uint8`` batch is called as the training loop calls it, ``train(state, batch, step,
    size=None)``, each step with its own number (the augmentation key changes, the program
    does not); a ``float32`` batch as the U-Net section calls it, ``train(state, batch)``.
    A call spelled differently would not find the other's compilation in the cache."""

    numbered = batch["image"].dtype == jnp.uint8

    def call(state, k):
        if numbered:
            return steps.train(state, batch, first_step + k, size=None)
        return steps.train(state, batch)

    reused = compiled_before(steps, batch, numbered=numbered)
    t = time.perf_counter()
    state, stats = call(state, 0)
    jax.block_until_ready(stats)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(n):
        state, stats = call(state, 1 + k)
    jax.block_until_ready(stats)
    return n * len(batch["image"]) / (time.perf_counter() - t), first_s, reused, state


def data_path_rate(split, *, batch: int, seed: int, mesh) -> tuple[float, int]:
    """``(images/s, batches)`` of one training epoch of the device data path
    (``in_memory.Batches``: seeded permutation, ``np.take`` gathers, ``shard_batch`` 2
    batches ahead), each yielded batch waited for on the device; after one untimed put."""

    def put(b):
        return shard_batch(b, mesh)

    jax.block_until_ready(put({"image": split.images[:batch], "mask": split.masks[:batch]}))
    it = in_memory.Batches(split, batch_size=batch, train=True, seed=seed, epoch=0, put=put)
    t = time.perf_counter()
    for b in it:
        jax.block_until_ready(b)
    return len(it) * batch / (time.perf_counter() - t), len(it)


def section_data(run: Run, config, splits: dict | None) -> None:
    """The device data path's images/s, and the train step with device preprocessing (on
    ``uint8``) and without (on ``float32``), at the CFD tile size and the U-Net size."""
    p = run.profile
    run.start_section("data")
    cases = {}  # size -> (split, width, batch, source)
    if splits is not None:
        train_split = splits["train"]
        cases[train_split.images.shape[1]] = (
            train_split,
            p.cfd_width,
            p.cfd_batch or config.batch_size,
            "CFD training tiles",
        )
    if p.unet_size not in cases:
        n = p.unet_batch * p.data_batches
        split = _random_split(n, p.unet_size)
        cases[p.unet_size] = (split, p.unet_width, p.unet_batch, "random `uint8`")
    mesh = make_mesh()
    for size, (split, width, batch, source) in cases.items():
        row: dict[str, Any] = {"batch": batch, "width": width, "source": source}
        run.data_rows[size] = row
        if run.left() <= 0:
            row["note"] = "skipped: section budget spent"
            continue
        row["data"], row["batches"] = data_path_rate(
            split, batch=batch, seed=config.seed, mesh=mesh
        )
        run.log(f"data {size}² uint8: {row['data']:.0f} images/s")
        images, masks = split.images[:batch], split.masks[:batch]
        batches = {  # the same example images and masks, the same shapes
            "augmented": {"image": images, "mask": masks},
            "bare": {"image": to_float(images), "mask": masks},
        }
        for kind, host in batches.items():
            if run.left() <= 0:
                row[kind] = None
                continue
            # One library step: a uint8 batch gets the device preprocessing of the config
            # (the CFD training's step), a float32 one none (at the U-Net size the U-Net
            # section's float32 row).
            steps, state, _, _, _ = build_steps(
                bench_config(
                    config, "dibe", width=width, dtype=config.dtype, model_options=p.model_options
                )
            )
            on_device = shard_batch(host, mesh)
            numbered = on_device["image"].dtype == jnp.uint8
            new = not compiled_before(steps, on_device, numbered=numbered, record=False)
            if new and run.left() < p.min_s_for_compile:  # a compile would overrun
                row[kind] = None
                continue
            rate, first_s, reused, state = _time_train(steps, state, on_device, p.data_steps)
            row[kind] = {"rate": rate, "first_s": first_s, "reused": reused}
            run.log(f"data {size}² step ({kind}): {rate:.0f} images/s, first call {first_s:.1f} s")
            del state
        gc.collect()
    run.data_seconds = time.monotonic() - run.section_start


def write_data_table(run: Run, config) -> None:
    p = run.profile
    aug = device_preprocess(config).augment
    what = [
        "The device data path of `dibe-jax train` (`data.pipeline` `auto` / `device`): a split "
        "decoded once into `uint8` arrays (`dibe_jax.data.in_memory.ArraySplit`); an epoch "
        "(`in_memory.Batches`) is a seeded permutation, `np.take` gathers of each batch and "
        "`shard_batch` onto the device (asynchronous, 2 batches ahead); flips, colour jitter "
        "and `uint8 -> float32` run on the device inside the jitted train step "
        "(`dibe_jax.data.device_augment.DevicePreprocess`, key `fold_in(key(seed), step)`; "
        f"`train.Config().data`: hflip {aug.hflip}, vflip {aug.vflip}, brightness "
        f"{aug.brightness}, contrast {aug.contrast}, saturation {aug.saturation}).",
        "",
        "data images/s: one training epoch of `Batches` at the row's size in `uint8`, each "
        "batch waited for on the device (host gather + transfer; no step runs). Source: "
        "CrackForest's training tiles (or the tiny stand-in) at their size, random `uint8` "
        f"images at {p.unet_size}² (the cost does not depend on the content).",
        "",
        f"step images/s: the library's train step (U-Net, DIBE, SGD, {config.dtype}) on one "
        "batch already on the device, mean over "
        f"{p.data_steps} steps after an untimed first call, the same examples and "
        "shapes in both columns. *bare*: a `float32` batch (`uint8 -> float32` done on the "
        "host beforehand: the step of the host data path, and at the U-Net size the U-Net "
        "section's float32 row); *device preprocessing*: the `uint8` batch, with "
        "`uint8 -> float32`, flips and jitter inside the step (the CFD training's step, "
        "called as the training loop calls it). device preprocessing ms/step: the difference, "
        "and its share of the bare step. data / step > 1: the host keeps up with the step "
        "it feeds (JAX dispatch is asynchronous: the loop overlaps them).",
    ]
    lines = run.header(
        "Device data path and device preprocessing against the training step",
        what,
        None,
        seconds=run.data_seconds,
    )
    float32_steps = ", ".join(f"{k} {v:.0f}" for k, v in run.step_rates.items())
    lines += [
        f"- For reference, the U-Net section's steps on `float32` batches (images/s): "
        f"{float32_steps or 'not measured'}.",
        "",
        "| size | source | batch | data images/s (batches) | step images/s, bare (float32) | "
        "step images/s, device preprocessing (uint8) | device preprocessing ms/step (% of "
        "bare) | data / step with device preprocessing | first call s, bare / device "
        "preprocessing |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def first(r):
        return "reused" if r["reused"] else f"{r['first_s']:.1f}"

    for size, r in run.data_rows.items():
        head = f"| {size}² | {r['source']} | {r['batch']} |"
        if "note" in r:
            lines.append(f"{head} {r['note']} |" + " |" * 5)
            continue
        bare, augd = r.get("bare"), r.get("augmented")
        cols = [f"{r['data']:.0f} ({r['batches']})"]
        cols.append("skipped: section budget spent" if bare is None else f"{bare['rate']:.0f}")
        cols.append("skipped: section budget spent" if augd is None else f"{augd['rate']:.0f}")
        if bare and augd:
            extra_ms = r["batch"] / augd["rate"] * 1e3 - r["batch"] / bare["rate"] * 1e3
            cols.append(f"{extra_ms:.2f} ({extra_ms / (r['batch'] / bare['rate'] * 1e3):.0%})")
        else:
            cols.append("–")
        cols.append("–" if augd is None else f"{r['data'] / augd['rate']:.2f}")
        cols.append(" / ".join("–" if x is None else first(x) for x in (bare, augd)))
        lines.append(f"{head} " + " | ".join(cols) + " |")
    emit("\n".join(lines), run.path("data"))


# ------------------------------------------------------------------------------ CFD


def load_cfd(run: Run) -> tuple[dict | None, str]:
    """CrackForest tiles (``{"train": (images, masks), "validation": ...}``) and where they
    came from; in tiny mode a synthetic stand-in when the files are missing."""
    p = run.profile
    root = cfd_data.find_root(run.data_dir)
    if root is not None:
        data = cfd_data.load(root, images_per_split=1 if run.tiny else None)
        source = f"CrackForest files at `{root}`"
    elif run.tiny:
        rng = np.random.default_rng(0)
        data = {
            split: (
                rng.integers(0, 256, (n, 32, 32, 3), np.uint8),
                (rng.random((n, 32, 32, 1)) < 0.05).astype(np.uint8),
            )
            for split, n in (("train", 16), ("validation", 8))
        }
        source = "synthetic 32² stand-in (no CrackForest files found)"
    else:
        return None, "no CrackForest files found (`make bench-data`, then carry `bench_data`)"
    for split, keep in zip(("train", "validation"), p.cfd_tiles, strict=True):
        if keep is not None:
            data[split] = tuple(a[:keep] for a in data[split])
        if p.cfd_crop is not None:
            data[split] = tuple(a[:, : p.cfd_crop, : p.cfd_crop] for a in data[split])
    if p.cfd_crop is not None:
        source += f", top-left {p.cfd_crop}² of each tile (tiny mode)"
    return data, source


def cfd_config(run: Run, config, loss: str) -> train.Config:
    """The CFD run's config: ``train.Config()``'s paper settings with the profile's width,
    epochs, evaluation interval and batch, at the tiles' native size."""
    p = run.profile
    c = bench_config(
        config, loss, width=p.cfd_width, dtype=config.dtype, model_options=p.model_options
    )
    c.epochs = p.cfd_epochs or config.epochs
    c.eval_every = p.cfd_eval_every or config.eval_every
    c.batch_size = p.cfd_batch or config.batch_size
    c.data.image_size = None  # native 160² tiles (the tiny crops in tiny mode)
    c.progress = False
    return c


def train_cfd(run: Run, config, loss: str, data: dict, workdir: Path) -> dict[str, Any]:
    """Train and evaluate one loss on CFD with ``dibe_jax.train.train_and_evaluate`` on the
    decoded tiles (``sources``: the device data path, as ``dibe-jax train`` takes a split
    that fits in memory; checkpoints and metrics in ``workdir``). Returns its evaluations
    (``metrics.jsonl``) and timings, and the step alone on a fixed ``uint8`` batch."""
    p = run.profile
    c = cfd_config(run, config, loss)
    sources = {
        split: [{"image": x, "mask": m} for x, m in zip(images, masks, strict=True)]
        for split, (images, masks) in data.items()
    }
    t = time.perf_counter()
    train.train_and_evaluate(c, workdir, sources=sources)
    total_s = time.perf_counter() - t
    evals = read_metrics(workdir)
    for e in evals:
        run.log(
            f"cfd {loss} epoch {e['epoch']}/{c.epochs}: IoU {e['iou']:.3f} "
            f"PA {e['pa']:.3f} OII {e['oii']:+.3f}"
        )
    # Epochs after the first evaluation: the loop as it runs, data path, evaluations and
    # checkpoints included ("seconds": training time at each evaluated epoch's end).
    first, last = evals[0], evals[-1]
    n_train = len(sources["train"])
    steps_per_epoch = n_train // c.batch_size
    loop_images = (last["epoch"] - first["epoch"]) * steps_per_epoch * c.batch_size
    loop_s = last["seconds"] - first["seconds"]
    # The step alone (device augmentation included) on a uint8 batch already on the device:
    # the run's own steps (equal config, so the same jitted functions), its last state.
    built = train.build(c, sources)
    fixed = shard_batch(
        {
            k: np.stack([ex[k] for ex in sources["train"][: c.batch_size]])
            for k in ("image", "mask")
        },
        built.mesh,
    )
    steps_n = max(2, p.unet_steps)
    step_rate, _, _, state = _time_train(built.steps, built.state, fixed, steps_n, last["step"])
    del state, built
    gc.collect()
    return {
        "evals": evals,
        "skipped": last["skipped_steps"],
        "epochs": last["epoch"],
        "total_s": total_s,
        "first_eval_s": first["seconds"],
        "loop_rate": loop_images / loop_s if loop_images and loop_s > 0 else float("nan"),
        "step_rate": step_rate,
        "batch": c.batch_size,
        "every": c.eval_every,
        "tiles": (n_train, len(sources["validation"])),
        "size": data["train"][0].shape[1],
    }


def section_cfd(run: Run, config, data: dict | None, source: str) -> None:
    p = run.profile
    run.start_section("cfd")
    results = {}
    skipped = []
    if data is not None:
        work = Path(tempfile.mkdtemp(prefix="bench_cfd_"))
        try:
            for loss in ("dibe", "focal_tversky"):
                # A run cannot stop half-way: the next starts only if one more fits.
                need = 0.0 if not results else min(r["total_s"] for r in results.values())
                if run.left() <= need:
                    skipped.append(loss)
                    continue
                results[loss] = train_cfd(run, config, loss, data, work / loss)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    any_r = next(iter(results.values()), None)
    what = [
        f"U-Net width {p.cfd_width} trained on {source}: "
        + (
            f"{any_r['tiles'][0]} training / {any_r['tiles'][1]} validation tiles of "
            f"{any_r['size']}² (native size, no resizing), "
            if any_r
            else ""
        )
        + f"seed {config.seed}, batch {p.cfd_batch or config.batch_size}, "
        f"{p.cfd_epochs or config.epochs} epochs, SGD lr {config.optim.lr} momentum "
        f"{config.optim.momentum}, {config.dtype}; flip + brightness / contrast / saturation "
        "jitter as `train.Config().data`; each loss with its paper defaults "
        "(`dibe_jax.losses.get`). Evaluation every "
        f"{p.cfd_eval_every or config.eval_every} epochs on the whole validation split: TP / "
        "FP / FN / TN summed over it, then IoU, PA (precision) and OII (docs/conventions.md).",
        "",
        "Trained by `dibe_jax.train.train_and_evaluate` itself, given the decoded tiles "
        "as in-memory `sources` (no TFDS or grain needed): the device data path of "
        "`dibe-jax train` (its default for a split that fits in memory: the tiles decoded "
        "once into `uint8` arrays, each epoch a permutation of `epoch_seed(seed, epoch)`, "
        "batches put on the device 2 ahead, flips and jitter inside the jitted step with "
        "the key `fold_in(key(seed), step)`), a checkpoint at every epoch end, "
        "`metrics.jsonl` at every evaluation; wall time includes all of it and the "
        "compilation.",
        "",
        "One seed: with the paper's constant learning rate the validation IoU moves by "
        "0.1-0.2 between evaluations (docs/conventions.md, *Reporting trained results*), "
        "so this run cannot rank DIBE against FT, whose Table 5 values differ by 0.011; the "
        "mean of the last 3 evaluations is the number to hold against the paper's.",
    ]
    lines = run.header("CrackForest training: DIBE and FT against the paper's Table 5", what, None)
    if not results:
        lines.append(
            f"Not run: {source if data is None else 'section budget spent before training'}."
        )
        emit("\n".join(lines), run.path("cfd"))
        return
    paper_note = " (tiny mode: not comparable)" if run.tiny else ""
    lines += [
        f"| loss | paper Table 5 IoU{paper_note} | mean IoU, last 3 evals (± sd) | final IoU | "
        "best IoU (epoch) | final PA | final OII | epochs | skipped updates | wall s (to "
        "1st evaluation) | loop images/s | step images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for loss, r in results.items():
        ious = [e["iou"] for e in r["evals"]]
        last3 = ious[-3:]
        sd = statistics.stdev(last3) if len(last3) > 1 else 0.0
        best = max(r["evals"], key=lambda e: e["iou"])
        final = r["evals"][-1]
        epochs = r["epochs"]
        lines.append(
            f"| {LOSS_LABEL[loss]} | {PAPER_TABLE5[loss]:.3f} | {statistics.mean(last3):.3f} "
            f"± {sd:.3f} | {final['iou']:.3f} | {best['iou']:.3f} ({best['epoch']}) | "
            f"{final['pa']:.3f} | {final['oii']:+.3f} | {epochs} | {r['skipped']} | "
            f"{r['total_s']:.0f} ({r['first_eval_s']:.0f}) | {_num(r['loop_rate'])} | "
            f"{r['step_rate']:.0f} |"
        )
    for loss in skipped:  # a run cannot stop half-way: it starts only if one fits
        lines.append(f"| {LOSS_LABEL[loss]} | skipped: section budget spent |" + " |" * 10)
    epochs = sorted({e["epoch"] for r in results.values() for e in r["evals"]})
    lines += [
        "",
        "wall s: the whole `train_and_evaluate` call (compilation, data, checkpoints, "
        "evaluations, plots); in brackets its training time at the first evaluation "
        "(compilation included). loop images/s: the epochs after the first evaluation, data "
        "path, evaluations and checkpoints included; step images/s: the train step alone "
        "(device augmentation included) on a `uint8` batch already on the device.",
        "",
        "Validation IoU / PA / OII at each evaluation:",
        "",
        "| loss | " + " | ".join(f"ep {e}" for e in epochs) + " |",
        "|---|" + "---:|" * len(epochs),
    ]
    for loss, r in results.items():
        by_epoch = {e["epoch"]: e for e in r["evals"]}
        cells = [
            f"{by_epoch[e]['iou']:.3f} / {by_epoch[e]['pa']:.3f} / {by_epoch[e]['oii']:+.2f}"
            if e in by_epoch
            else "–"
            for e in epochs
        ]
        lines.append(f"| {LOSS_LABEL[loss]} | " + " | ".join(cells) + " |")
    emit("\n".join(lines), run.path("cfd"))


# ----------------------------------------------------------------------------- sweep


def section_sweep(run: Run) -> None:
    """K members of ``dibe-jax sweep`` as one program (vmap, lax.map) against K separate runs
    (``benchmarks.sweep``: U-Net width 64, 160², batch 32, K = 1, 2, 4, 8 on a GPU)."""
    from benchmarks import sweep

    run.start_section("sweep")
    mode = "cpu" if run.tiny else "gpu"
    args = ["--mode", mode, "--out", str(run.path("sweep"))]
    if run.tiny:  # one row, the tiny U-Net of the other sections: shows the section works
        stages = run.profile.model_options.get("num_stages", 4)
        args += ["--members", "2", "--rounds", "2", "--num-stages", str(stages)]
    sweep.main(args)


# ----------------------------------------------------------------------------- main

SECTIONS = ("losses", "data", "cfd", "unet", "sweep")


def main(argv: list[str] | None = None) -> Path:
    """Run the sections; returns the folder the tables went to."""
    # Entry-point settings (before JAX starts its backend): JAX must not take 75 % of the
    # GPU up front, and its allocator (which keeps what it once used) at most 90 % of it:
    # the PyTorch loss rows share this process (small tensors), and the U-Net section runs
    # its PyTorch process before the JAX rows take their memory (a float32 448² step needs
    # a 33 GiB buffer beside the bfloat16 one).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="where the tables go (default: benchmarks/results on a GPU, a new temporary "
        "folder in the tiny CPU mode)",
    )
    parser.add_argument(
        "--cpu-tiny", action="store_true", help="the tiny CPU mode even where a GPU is present"
    )
    parser.add_argument(
        "--data-dir",
        help="the CrackForest folder (image/, groundTruth/); default: $DIBE_JAX_DATA/"
        "crackforest, bench_data/crackforest or ../shared/data/crackforest",
    )
    parser.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="run only these"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="the whole run's time budget in seconds (sections stop starting new work "
        "after their own share of it)",
    )
    args = parser.parse_args(argv)
    if args.cpu_tiny:  # entry-point setting: the tiny mode is CPU-only, also beside a GPU
        jax.config.update("jax_platforms", "cpu")
    profile = GPU if jax_on_gpu() else CPU_TINY
    if profile is CPU_TINY:
        try:
            import torch

            # Entry-point setting: one PyTorch thread in the tiny mode. Its tensors are too
            # small to share, and OpenMP threads spin-waiting on a busy machine made each
            # tiny convolution take tens of milliseconds.
            torch.set_num_threads(1)
        except ImportError:
            pass
    out_dir = args.out_dir
    if out_dir is None:
        out_dir = RESULTS if profile is GPU else Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)])
    run = Run(profile, out_dir, args.budget_s, args.data_dir, command)
    if run.tiny:
        run.log(
            "no GPU (or --cpu-tiny): TINY CPU MODE, shrunk sizes, torch.compile backend "
            f"'eager'; the numbers show the code runs, not speed. Tables -> {out_dir}"
        )
    else:
        run.log(f"GPU mode on {jax_device_name()}; tables -> {out_dir}")
    # Entry-point setting: a persistent compilation cache of this run's own, empty at the
    # start, for the U-Net section's cold / warm compile times (removed at the end).
    cache_dir = tempfile.mkdtemp(prefix="bench_jax_cache_")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    config = train.Config()

    run.copy_gbs = copy_bandwidth(run) / 1e9
    run.log(f"device copy bandwidth {run.copy_gbs:.0f} GB/s (read + write)")
    data, cfd, source = None, None, ""
    if "cfd" in args.sections or "data" in args.sections:
        data, source = load_cfd(run)
        cfd = None if data is None else cfd_splits(data)
        run.log(f"CFD data: {source}")
    # The U-Net section right after the losses: its rows (FLOPs, PyTorch in its own
    # process, torch.compile modes, compile times) matter most and cost the most time.
    plan = [
        ("losses", "losses", lambda: section_losses(run)),
        ("unet", "unet", lambda: section_unet(run, config)),
        ("data", None, lambda: section_data(run, config, cfd)),
        ("cfd", "cfd", lambda: section_cfd(run, config, data, source)),
        ("data", "data", lambda: write_data_table(run, config)),
        ("sweep", "sweep", lambda: section_sweep(run)),
    ]
    failed = []
    for section, table, fn in plan:
        if section not in args.sections:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the other sections still run
            traceback.print_exc()
            failed.append(section)
            if table is not None:
                lines = run.header(f"{table}: FAILED", [], None)
                emit("\n".join([*lines, f"Failed: {type(e).__name__}: {e}"]), run.path(table))
    shutil.rmtree(cache_dir, ignore_errors=True)
    written = ", ".join(sorted(f.name for f in out_dir.glob("*.md")))
    run.log(f"done; tables in {out_dir}: {written}")
    if failed:
        raise SystemExit(f"benchmarks.gpu: section(s) failed: {', '.join(failed)}")
    return out_dir


if __name__ == "__main__":
    main()
