"""``make bench-gpu`` in its tiny CPU mode, end to end, as on the GPU machine (no grain, TFDS,
array_record or tensorboardX): the library itself trains there, and every table fills."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import cfd_data  # noqa: E402

TABLES = ("losses", "unet", "data", "cfd")

# Imported at start-up of the benchmark's process: any import of a module the GPU machine
# lacks fails there as it would on that machine.
BLOCK_MISSING = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ("grain", "tensorflow_datasets", "array_record", "tensorboardX")


    class _Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _Missing())
    """
)


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``make bench-gpu`` (tiny CPU mode) with the GPU machine's missing modules blocked."""
    tmp = tmp_path_factory.mktemp("bench_gpu")
    out = tmp / "tables"
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_MISSING)
    # No LLVM optimisation of XLA's CPU code: most of a compile, and these numbers are
    # not speed (the tables record XLA_FLAGS).
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", XLA_FLAGS=flags)
    before = {p.name for p in (ROOT / "benchmarks" / "results").glob("*")}
    args = f"--out-dir {out}"
    import jax

    if jax.devices()[0].platform != "cpu":  # a GPU here: still the tiny mode
        args += " --cpu-tiny"
    if shutil.which("make"):
        cmd = ["make", "-s", "bench-gpu", f"PYTHON={sys.executable}", f"BENCH_GPU_ARGS={args}"]
    else:  # what the target runs
        cmd = [sys.executable, "-m", "benchmarks.gpu", *args.split()]
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), path])
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    after = {p.name for p in (ROOT / "benchmarks" / "results").glob("*")}
    return proc, out, before, after


@pytest.mark.slow
def test_bench_gpu_tiny_mode_runs_and_says_so(tiny_run):
    proc, out, before, after = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TINY CPU MODE" in proc.stdout
    written = sorted(p.name for p in out.glob("*.md"))
    assert written == sorted(f"{t}_cpu_tiny.md" for t in (*TABLES, "sweep"))
    sweep = (out / "sweep_cpu_tiny.md").read_text()  # the sweep section (benchmarks/sweep.py)
    row = next(line for line in sweep.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(float(c) > 0 for c in cells[1:5])  # separate, vmap, map, loop (ms)
    assert all(re.fullmatch(r"[\d.]+x", c) for c in cells[5:8])
    assert cells[8] in ("vmap", "map", "loop", "separate")
    assert after == before  # nothing written into benchmarks/results
    for name in TABLES:
        text = (out / f"{name}_cpu_tiny.md").read_text()
        assert "**Tiny CPU mode**" in text
        assert re.search(r"^- JAX side: JAX \S+ .* on cpu \(", text, re.M), text


@pytest.mark.slow
def test_bench_gpu_tables_name_the_device_of_both_sides(tiny_run):
    _, out, _, _ = tiny_run
    for name in ("losses", "unet"):
        text = (out / f"{name}_cpu_tiny.md").read_text()
        if _has_torch():
            assert re.search(r"^- PyTorch side: PyTorch \S+ on cpu \(", text, re.M), text
            assert "torch.compile (backend 'eager'" in text
        else:
            assert "- PyTorch side: not run: PyTorch not installed" in text
    for name in ("data", "cfd"):
        assert (
            "- PyTorch side: not used in this table." in (out / f"{name}_cpu_tiny.md").read_text()
        )


@pytest.mark.slow
def test_bench_gpu_tiny_mode_fills_every_row(tiny_run):
    """Each section's rows carry numbers; the torch.compile rows ran (graph capture with
    backend 'eager': inductor's code generation takes minutes on two cores)."""
    _, out, _, _ = tiny_run
    unet = (out / "unet_cpu_tiny.md").read_text()
    for dtype in ("bfloat16", "float32"):
        # ms/step, images/s, GFLOP/step (counted on the CPU: the convolutions included)
        assert re.search(
            rf"^\| {dtype} \| JAX `jax.jit` \(library step\) \| [0-9.]+ \| [0-9.]+ \| "
            r"[0-9.]+ \|",
            unet,
            re.M,
        ), unet
        if _has_torch():  # each in the PyTorch process, with JAX's FLOP count
            assert re.search(rf"^\| {dtype} \| PyTorch eager \| [0-9.]+ \|", unet, re.M), unet
            for mode in ("default", "max-autotune"):
                assert re.search(
                    rf"^\| {dtype} \| PyTorch `torch.compile` \(eager, mode '{mode}'\) \| "
                    r"[0-9.]+ \| [0-9.]+ \| [0-9.]+ \|",
                    unet,
                    re.M,
                ), unet
    # The lowered count agrees with the CPU-compiled one's (both count the convolutions; the
    # compiler's passes add a few per cent), and a U-Net step of width 4 at 32², batch 4, is
    # tens of MFLOP, not the few a count without convolutions gives.
    lowered, compiled = map(
        float,
        re.search(r"lowered ([0-9.e+]+) GFLOP, compiled for the CPU ([0-9.e+]+)", unet).groups(),
    )
    assert 0.01 < lowered < 1 and abs(lowered - compiled) < 0.15 * compiled, unet
    # Cold and warm compile times: the JAX step (bfloat16; float32 was reused) and, with
    # PyTorch, torch.compile's first call in two processes.
    assert re.search(
        r"^\| JAX \| train step bfloat16 \(lower \+ compile\) \| [0-9.]+ \| [0-9.]+ \|$", unet, re.M
    ), unet
    if _has_torch():
        assert re.search(
            r"^\| PyTorch \| `torch.compile` bfloat16, .* \| [0-9.]+ \| [0-9.]+ \|$", unet, re.M
        ), unet
    # The tiny profile shares its steps between sections (see CPU_TINY): the data section's
    # bare step is the U-Net section's float32 row, compiled there (the warm-cache
    # measurement then cleared JAX's in-memory caches, so the data section loads it from
    # the persistent cache), and the CFD runs reuse the data section's uint8 step.
    assert re.search(r"^\| float32 \| JAX .*\| [0-9.]+ \|$", unet, re.M), unet
    assert re.search(
        r"^\| JAX \| train step float32 \(lower \+ compile\) \| [0-9.]+ \| [0-9.]+ \|$",
        unet,
        re.M,
    ), unet
    losses = (out / "losses_cpu_tiny.md").read_text()
    row = re.search(r"^\| dibe \|(.*)$", losses, re.M).group(1).split("|")
    assert all(c.strip() not in ("", "–") for c in row[:-1]), row  # compile column filled too
    # The CFD runs are dibe_jax.train.train_and_evaluate's, with grain, TFDS and tensorboardX
    # blocked.
    cfd = (out / "cfd_cpu_tiny.md").read_text()
    assert "Trained by `dibe_jax.train.train_and_evaluate` itself" in cfd, cfd
    for label in ("DIBE", "FT (focal Tversky)"):
        # paper IoU, mean IoU ± sd, final IoU, best (epoch), PA, OII, epochs, skipped updates,
        # wall s (to the 1st evaluation), loop images/s (– with one epoch), step images/s
        assert re.search(
            rf"^\| {re.escape(label)} \| 0\.5\d\d \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ \| "
            r"[0-9.]+ \(1\) \| [0-9.]+ \| [+-][0-9.]+ \| 1 \| 0 \| \d+ \(\d+\) \| – \| \d+ \|$",
            cfd,
            re.M,
        ), cfd
    data = (out / "data_cpu_tiny.md").read_text()
    assert re.search(r"^- For reference, .*U-Net step 32² float32 \(JAX\) \d+", data, re.M), data
    # size, source, batch, data images/s (batches), bare step, step with device
    # preprocessing, its cost ms (%), data / step, first call s (bare / device)
    assert re.search(
        r"^\| 32² \| CFD training tiles \| 4 \| \d+ \(\d+\) \| \d+ \| \d+ \| -?[0-9.]+ "
        r"\(-?\d+%\) \| [0-9.]+ \| [0-9.]+ / [0-9.]+ \|$",
        data,
        re.M,
    ), data


def test_cfd_reader_matches_the_dataset_builder(tmp_path):
    """``benchmarks.cfd_data`` gives the tiles ``dibe_jax.datasets.crackforest`` builds."""
    pytest.importorskip("tensorflow_datasets")
    root = cfd_data.find_root()
    if root is None:
        pytest.skip("CrackForest files not found (../shared/data/crackforest or bench_data/)")
    from PIL import Image

    from dibe_jax.datasets import crackforest

    assert (cfd_data.TILE, cfd_data.LAST_TRAIN) == (crackforest.TILE, crackforest.LAST_TRAIN)
    data = cfd_data.load(root, images_per_split=1)
    builder = crackforest.Crackforest(config="label2", data_dir=str(tmp_path))  # the default
    for split, stem in (("train", "001"), ("validation", f"{crackforest.LAST_TRAIN + 1:03d}")):
        examples = list(builder._generate_examples(root, [stem]))
        images, masks = data[split]
        assert len(examples) == 6 and images.shape == (6, 160, 160, 3)
        for t, (_, ex) in enumerate(examples):
            image = np.asarray(Image.open(io.BytesIO(ex["image"])))
            mask = np.asarray(Image.open(io.BytesIO(ex["mask"])))
            np.testing.assert_array_equal(images[t], image)
            np.testing.assert_array_equal(masks[t, ..., 0], mask.reshape(160, 160))


@pytest.mark.parametrize("module", ["losses", "train", "gpu"])
def test_benchmark_help(module, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out
