"""The paper at full scale through sweeps: Table 5, Fig. 10 and Table 6 of DIBE with U-Net.

* **table5**: U-Net with FT, DIBE_Reg, HF and DIBE on CrackForest (CFD, crack = label 2,
  160 x 160 tiles) and the magnetic-tile Blowhole and Crack sets (resized to 224 x 224), IoU
  beside the paper's Table 5;
* **fig10**: DIBE's α sweep on CFD (α ∈ {0.1, 0.3, 0.5, 0.7, 0.9}, β = 1 − α) with the
  validation OII of every α (the paper's Fig. 10 sweeps DIBE_Dis and Tversky on THC448, which
  is not public);
* **table6**: the OII-guided search of α (bisection from 0.5 on [0.1, 0.9] until the OII lies
  in (0.15, 0.25), :func:`dibe_jax.tuning.oii_search`) against the 5-point grid
  (:func:`dibe_jax.tuning.grid_search`), DIBE on CFD; the grid is Fig. 10's sweep, read back.

Every setting is trained as one sweep (:func:`dibe_jax.train.sweep.train_members`): the seeds
of a (dataset, loss) cell are the members of one compiled program, and so are all the α values
× seeds of Fig. 10. Each member is a normal run folder under ``<out>/runs/<part>/...``; the
cells report the mean ± sd of the last 3 evaluations of every seed
(:class:`~dibe_jax.train.runs.SeedRuns`). A sweep whose members all finished with the same
config is read back, not trained again.

The data are read straight from the raw files into memory (no TFDS, grain or tensorboardX
needed, so this runs on a GPU machine with JAX alone): CFD as ``benchmarks/cfd_data.py``
tiles it (images 001-060 train, 061-118 validation), magnetic tile as the
``magnetic_tile/{blowhole,crack}`` builders read it (``MT_<Class>/Imgs/<stem>.jpg`` in
grayscale, ``<stem>.png`` binarized at > 127, sorted stems, the ``i``-th to train iff
``i % 5 < 3``), resized by the training's own decoding to ``data.image_size`` = 224, the size
that builder documents.

Command::

    python -m experiments.paper_scale                         # full: width 64, 50 epochs, 3 seeds
    python -m experiments.paper_scale --parts fig10 table6 --seeds 2 --epochs 30
    python -m experiments.paper_scale --quick                 # CPU: all parts in about a minute

``--data-dir`` is the raw data root (default ``$DIBE_JAX_DATA`` or ``../shared/data``; it holds
``crackforest/`` and ``magnetic_tile/``). Writes ``<out>/paper_scale.md`` (our tables beside
the paper's) and ``<out>/paper_scale.json`` (every cell and search); a launch with fewer
``--parts`` keeps the other parts' tables of an earlier launch at the same scale.

Time (printed per part before it runs, ``--estimate`` prints it and stops; see
:func:`estimate`): the images a part trains and evaluates at the step rate measured on one
H200 on 2026-12-04 (:data:`STEP_PIXELS_PER_S`: U-Net width 64, batch 32, 1,587 images/s at
160² in float32; bfloat16 steps :data:`BF16_SPEEDUP` = 1.82x faster, as measured at 448²;
an evaluation image costs :data:`EVAL_COST` of a training one), plus one compilation per
distinct program (``--compile-s``, default :data:`COMPILE_S` = 25 s; a warm persistent
compilation cache makes it about 1.4 s). A sweep's members run one after another
(``lax.map``, as measured faster than ``vmap``), so K members take K times as long.

Checkpoints are what made the measured loop slow: a CFD run that saved its 250 MB state at
every epoch end ran 515 images/s against its step's 1,587 (orbax writes asynchronously, but
a save waits for the previous one, and an epoch at 160² takes 0.23 s). So full mode saves a
member only at its evaluations (``checkpoint_every_epochs`` = ``eval_every`` = 5: 10 saves
a member, each hidden behind the next 5 epochs of training), and computes in bfloat16
(parameters, optimiser state and losses stay float32; ``--dtype float32`` for the paper's
precision). Full mode (width 64, 50 epochs, 3 seeds, 10 programs: 4 losses × 2 input shapes
for Table 5, one for Fig. 10's 15 members, one for Table 6) is estimated at about 8 minutes
cold (about 4 minutes of it training, the rest compiling; about 4.5 minutes with a warm
compilation cache) and about 12 minutes in float32. These are estimates from the measured
step, not a measured run; the compile time is the least certain part (the width-64 step
took 89 s to compile cold at 448² in bfloat16).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dibe_jax.errors import UserError

if __package__ in (None, ""):  # `python experiments/paper_scale.py`: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import cfd_data  # noqa: E402
from experiments import common  # noqa: E402
from experiments.losses_by_dataset import PAPER_TABLE5  # noqa: E402
from experiments.oii_guidance import PAPER_TABLE6  # noqa: E402

PARTS = ("table5", "fig10", "table6")
LOSSES = ("focal_tversky", "dibe_reg", "hybrid_focal", "dibe")
DATASETS = ("cfd", "blowhole", "crack")
ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9)
SEARCH_LOSS = "dibe"
INTERVAL = (0.15, 0.25)
RESOLUTION = 0.1  # so the bisection makes at most 3 trainings (0.5, 0.3 / 0.7, then ± 0.1)
MT_CLASS = {"blowhole": "Blowhole", "crack": "Crack"}
LABELS = {"focal_tversky": "FT", "dibe_reg": "DIBE_Reg", "hybrid_focal": "HF", "dibe": "DIBE"}
LABELS |= {"dibe_dis": "DIBE_Dis"}
MT_THRESHOLD = 127  # the magnetic_tile builder's binarization of the anti-aliased masks
ALPHA_DIR = "alpha_dibe_cfd"  # Fig. 10's sweep and Table 6's searched values

#: Compile seconds of one program on one H200 (a 50-epoch CFD run reached its first
#: evaluation after 26 s, 5 epochs included; a warm persistent cache: about 1.4 s).
COMPILE_S = 25.0
#: Training pixels per second of one member's step on one H200, measured 2026-12-04 (U-Net
#: w64, float32, batch 32, 160²: 1,587 images/s; the whole loop of a run that saved a
#: checkpoint every epoch ran 515). A sweep runs its members one after another (``lax.map``:
#: within 4 % of separate runs; ``vmap`` was 3x slower), so K members take K times as long.
STEP_PIXELS_PER_S = 1587.0 * 160**2
#: bfloat16 over float32 step time, measured at 448² (80.6 against 147.0 ms a step).
BF16_SPEEDUP = 1.82
#: Seconds of one evaluation image relative to a training image (forward pass only: about a
#: third of a training step's work).
EVAL_COST = 1 / 3


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big the runs are: the full setting, or ``--quick`` (tiny, CPU, seconds)."""

    quick: bool
    width: int
    epochs: int
    seeds: int
    batch_size: int
    eval_every: int
    cfd_size: int | None  # None: the 160 x 160 tiles as they are
    mt_size: int
    alphas: tuple[float, ...]
    bounds: tuple[float, float]
    max_runs: int | None
    cfd_images: int | None  # labelled CFD images read per split (6 tiles each), None: all
    mt_images: int | None  # magnetic-tile pairs read per class (before the split), None: all
    losses: tuple[str, ...] = LOSSES
    datasets: tuple[str, ...] = DATASETS
    dtype: str = "float32"  # the model's computation dtype (parameters stay float32)
    strategy: str = "auto"
    checkpoint_every_epochs: int = 1  # full mode: at its evaluations only


FULL = Scale(
    quick=False, width=64, epochs=50, seeds=3, batch_size=32, eval_every=5, cfd_size=None,
    mt_size=224, alphas=ALPHAS, bounds=(0.1, 0.9), max_runs=None, cfd_images=None,
    mt_images=None, dtype="bfloat16", checkpoint_every_epochs=5,
)  # fmt: skip
#: Quick: every part, but Table 5 with 2 losses on 2 sets (each is its own compilation).
QUICK = Scale(
    quick=True, width=4, epochs=2, seeds=2, batch_size=4, eval_every=1, cfd_size=32,
    mt_size=32, alphas=(0.3, 0.7), bounds=(0.3, 0.7), max_runs=1, cfd_images=1, mt_images=10,
    losses=("dibe_reg", "dibe"), datasets=("cfd", "crack"), dtype="float32",
)  # fmt: skip


# ----------------------------------------------------------------------------------- data


def cfd_sources(root: Path, scale: Scale) -> dict[str, list[dict[str, np.ndarray]]]:
    """CFD tiles ``{"train", "validation"}`` as lists of ``{"image", "mask"}`` examples."""
    data = cfd_data.load(root, images_per_split=scale.cfd_images)
    return {
        split: [{"image": x, "mask": m} for x, m in zip(images, masks, strict=True)]
        for split, (images, masks) in data.items()
    }


def mt_split(stems: Sequence[str]) -> dict[str, list[str]]:
    """The magnetic_tile builder's split: sorted stems, the ``i``-th to train iff
    ``i % 5 < 3``.

    >>> mt_split(["e", "a", "b", "c", "d", "f"])
    {'train': ['a', 'b', 'c', 'f'], 'validation': ['d', 'e']}
    """
    out: dict[str, list[str]] = {"train": [], "validation": []}
    for i, s in enumerate(sorted(stems)):
        out["train" if i % 5 < 3 else "validation"].append(s)
    return out


def mt_sources(root: Path, cls: str, scale: Scale) -> dict[str, list[dict[str, np.ndarray]]]:
    """Magnetic-tile class ``cls`` (``"Blowhole"``, ``"Crack"``) at native sizes, as the
    builder reads it: grayscale ``uint8 [H, W, 1]`` images and ``{0, 1}`` masks."""
    from dibe_jax.data.images import read_image

    folder = root / f"MT_{cls}" / "Imgs"
    jpgs, pngs = ({p.stem for p in folder.glob(f"*.{ext}")} for ext in ("jpg", "png"))
    if jpgs != pngs:  # the builder refuses unpaired files too
        lonely = sorted(jpgs ^ pngs)
        raise FileNotFoundError(f"{folder}: {len(lonely)} unpaired file(s), e.g. {lonely[0]}")
    stems = sorted(jpgs)
    if scale.mt_images is not None:
        stems = stems[: scale.mt_images]
    if len(stems) < 2:
        raise FileNotFoundError(f"{folder}: fewer than 2 image/mask pairs (<stem>.jpg, .png)")
    out = {}
    for split, names in mt_split(stems).items():
        examples = []
        for s in names:
            image = read_image(folder / f"{s}.jpg", mode="L")
            mask = (read_image(folder / f"{s}.png", mode="L") > MT_THRESHOLD).astype(np.uint8)
            if image.shape != mask.shape:
                raise ValueError(f"{folder}/{s}: image {image.shape} != mask {mask.shape}")
            examples.append({"image": image, "mask": mask})
        out[split] = examples
    return out


def load_sources(data_dir: Path, datasets: Sequence[str], scale: Scale) -> dict[str, dict]:
    """``{dataset: {"train": [...], "validation": [...]}}`` read from the raw files."""
    out = {}
    for key in datasets:
        if key == "cfd":
            root = cfd_data.find_root(data_dir / "crackforest")
            if root is None:
                raise FileNotFoundError(f"{data_dir / 'crackforest'}: no image/ and groundTruth/")
            out[key] = cfd_sources(root, scale)
        else:
            out[key] = mt_sources(data_dir / "magnetic_tile", MT_CLASS[key], scale)
    return out


# -------------------------------------------------------------------------------- configs


def base_config(dataset: str, loss: str, scale: Scale):
    """The :class:`dibe_jax.train.Config` of one (dataset, loss) cell, seed 0."""
    from dibe_jax import train

    size = scale.cfd_size if dataset == "cfd" else scale.mt_size
    values: dict[str, Any] = {
        "model.name": "unet",
        "model.width": scale.width,
        "loss.name": loss,
        "seed": 0,
        "epochs": scale.epochs,
        "batch_size": scale.batch_size,
        "eval_every": scale.eval_every,
        "checkpoint_every_epochs": scale.checkpoint_every_epochs,
        "optim.lr": 0.01,
        "optim.momentum": 0.9,
        "progress": False,
        "dtype": scale.dtype,
        "data.dataset": f"in-memory {common.resolve_dataset(dataset).label}",
        "data.image_size": size,
    }
    if scale.quick:
        values["model.num_stages"] = 1
    return train.override(train.Config(), values)


def alpha_members(config, alphas: Sequence[float], seeds: Sequence[int]) -> list:
    """Sweep members ``alpha=<a>/seed<k>``: every α (β = 1 − α by the library's rule) with
    every seed."""
    from dibe_jax.train import override, runs
    from dibe_jax.train.sweep import Member

    out = []
    for a in alphas:
        c = runs.with_hyperparameter(config, "alpha", a)
        values = {f"loss.{k}": float(v) for k, v in c.loss.params.items() if k in ("alpha", "beta")}
        for s in seeds:
            out.append(Member(f"alpha={a:g}/seed{s}", override(c, {"seed": int(s)}), values))
    return out


def seed_members(config, seeds: Sequence[int]) -> list:
    """Sweep members ``run/seed<k>``: ``config`` with every seed."""
    from dibe_jax.train.sweep import members

    return members(config, {}, seeds)


def train_sweep(
    members: list,
    workdir: Path,
    sources: dict,
    scale: Scale,
    *,
    overwrite: bool,
    say,
    summary: bool = True,
) -> dict[str, Any]:
    """Train the members as one sweep (or read them back when every one finished with the
    same config); return ``{setting: SeedRuns}``."""
    from dibe_jax.train import reporting, runs
    from dibe_jax.train.sweep import train_members

    done = [runs.finished_records(workdir / m.name, m.config) for m in members]
    if overwrite or any(r is None for r in done):
        t = time.perf_counter()
        result = train_members(
            members,
            workdir,
            sources=sources,
            overwrite=overwrite,
            # a killed launch continues from its checkpoints; another setting is refused
            resume=not overwrite
            and any((workdir / m.name / "config.json").exists() for m in members),
            strategy=scale.strategy,
            log=say,
            summary=summary,
        )
        say(f"{workdir}: {len(members)} members in {time.perf_counter() - t:.1f} s")
        records = result.records
    else:
        say(f"{workdir}: {len(members)} finished members read back")
        records = [reporting.read_metrics(workdir / m.name) for m in members]
    out: dict[str, Any] = {}
    for m, recs in zip(members, records, strict=True):
        out.setdefault(m.setting, []).append((m.config.seed, recs))
    wall: dict[str, float] = {}
    for m in members:  # each member's share of its sweep's wall time
        wall[m.setting] = wall.get(m.setting, 0.0) + runs.recorded_wall_seconds(workdir / m.name)
    return {s: runs.SeedRuns([r for _, r in v], [k for k, _ in v], wall[s]) for s, v in out.items()}


# -------------------------------------------------------------------------------- estimate


def _throughput(size: int, dtype: str) -> float:
    """Training images per second of one member at ``size``² (:data:`STEP_PIXELS_PER_S`,
    :data:`BF16_SPEEDUP`)."""
    speedup = BF16_SPEEDUP if dtype == "bfloat16" else 1.0
    return STEP_PIXELS_PER_S * speedup / size**2


def estimate(part: str, sources: dict, scale: Scale, compile_s: float = COMPILE_S) -> str:
    """One line: the seconds a part should take on one H200 (see the module docstring)."""
    images, seconds, programs = _estimate(part, sources, scale)
    total = seconds + programs * compile_s
    return (
        f"[{part}] estimate on one H200: {images:,} images ≈ {seconds:.0f} s of training + "
        f"{programs} program(s) × {compile_s:g} s compile ≈ {total:.0f} s "
        "(CPU runs are far slower)"
    )


def total_estimate(parts, sources: dict, scale: Scale, compile_s: float = COMPILE_S) -> str:
    """The estimates of ``parts`` added up, one phrase."""
    got = [_estimate(p, sources, scale) for p in parts]
    seconds = sum(g[1] for g in got)
    programs = sum(g[2] for g in got)
    return f"≈ {seconds + programs * compile_s:.0f} s ({programs} programs)"


def _estimate(part: str, sources: dict, scale: Scale) -> tuple[int, float, int]:
    """``(images trained and evaluated, seconds of the loops, programs)`` of one part."""
    seeds = scale.seeds
    evals = max(1, scale.epochs // scale.eval_every)
    if part == "table5":
        jobs = [(d, seeds) for d in scale.datasets for _ in scale.losses]
        programs = len(scale.losses) * len({d == "cfd" for d in scale.datasets})
    elif part == "fig10":
        jobs, programs = [("cfd", len(scale.alphas) * seeds)], 1
    else:
        # the grid is Fig. 10's sweep; the bisection's third value (± 0.1) is new
        jobs, programs = [("cfd", seeds)], 1
    seconds = 0.0
    images = 0
    for d, members in jobs:
        size = (scale.cfd_size or cfd_data.TILE) if d == "cfd" else scale.mt_size
        n_train, n_val = len(sources[d]["train"]), len(sources[d]["validation"])
        train_images = members * n_train * scale.epochs
        eval_images = members * n_val * evals
        images += train_images + eval_images
        seconds += (train_images + EVAL_COST * eval_images) / _throughput(size, scale.dtype)
    return images, seconds, programs


# ----------------------------------------------------------------------------------- parts


def run_table5(sources, scale, out: Path, *, overwrite: bool, say) -> dict:
    results = {}
    seeds = list(range(scale.seeds))
    for d in scale.datasets:
        for loss in scale.losses:
            config = base_config(d, loss, scale)
            got = train_sweep(
                seed_members(config, seeds),
                out / "runs" / "table5" / d / loss,
                sources[d],
                scale,
                overwrite=overwrite,
                say=say,
            )
            results[d, loss] = got["run"]
    return results


def run_fig10(sources, scale, out: Path, *, overwrite: bool, say) -> dict:
    config = base_config("cfd", SEARCH_LOSS, scale)
    members = alpha_members(config, scale.alphas, range(scale.seeds))
    got = train_sweep(
        members, out / "runs" / ALPHA_DIR, sources["cfd"], scale, overwrite=overwrite, say=say
    )
    return {a: got[f"alpha={a:g}"] for a in scale.alphas}


def run_table6(sources, scale, out: Path, fig10: dict, *, overwrite: bool, say) -> dict:
    """The guided search and the grid; values of the Fig. 10 sweep are read from it."""
    from dibe_jax import tuning
    from dibe_jax.train import runs

    config = base_config("cfd", SEARCH_LOSS, scale)
    trained: dict[float, Any] = dict(fig10)

    def train_value(value: float) -> dict[str, Any]:
        value = round(float(value), 6)
        if value not in trained:
            got = train_sweep(
                alpha_members(config, [value], range(scale.seeds)),
                out / "runs" / ALPHA_DIR,
                sources["cfd"],
                scale,
                overwrite=overwrite,
                say=say,
                summary=False,  # sweep.json stays Fig. 10's
            )
            trained[value] = got[f"alpha={value:g}"]
        return runs.search_metrics(trained[value])

    guided = tuning.oii_search(
        train_value,
        interval=INTERVAL,
        bounds=scale.bounds,
        direction=-1,  # raising α lowers OII
        parameter="alpha",
        resolution=RESOLUTION,
        max_runs=scale.max_runs if scale.max_runs is not None else len(scale.alphas),
    )
    grid = tuning.grid_search(
        train_value, bounds=scale.bounds, points=len(scale.alphas), parameter="alpha"
    )
    return {"oii": guided, "grid": grid}


# ---------------------------------------------------------------------------------- report


def _describe(scale: Scale, sources: dict) -> str:
    sizes = {d: (scale.cfd_size or cfd_data.TILE) if d == "cfd" else scale.mt_size for d in sources}
    data = "; ".join(
        f"{common.resolve_dataset(d).label}: {len(s['train'])} train / {len(s['validation'])} "
        f"validation images at {sizes[d]} px"
        for d, s in sources.items()
    )
    return (
        f"{'Quick (CPU, tiny; the numbers only show the pipeline runs)' if scale.quick else 'Full'}"
        f" mode: U-Net width {scale.width}{', 1 stage' if scale.quick else ''}, {scale.epochs} "
        f"epochs, evaluation every {scale.eval_every}, batch {scale.batch_size}, SGD 0.01 / "
        f"momentum 0.9, {scale.seeds} seed(s) trained as members of one sweep. Data: {data}. "
        + common.stats_legend()
    )


def report_table5(results: dict) -> str:
    rows = []
    losses = list(dict.fromkeys(x for _, x in results))
    for d in dict.fromkeys(d for d, _ in results):
        ds = common.resolve_dataset(d)
        rows.append(
            [
                f"{ds.label} (ours, last-3)",
                *(common.fmt(results[d, x].last3("iou")) for x in losses),
            ]
        )
        paper = PAPER_TABLE5[ds.paper]
        rows.append([f"{ds.paper} (paper)", *(common.fmt(paper[x]) for x in losses)])
    header = ["dataset", *(LABELS[x] for x in losses)]
    return (
        "## Table 5: IoU of U-Net by loss\n\nEach loss with the library's default "
        "hyperparameters (the paper's, Sec. 4.3.3); the paper's values are single runs.\n\n"
        + common.markdown_table(header, rows)
    )


def report_fig10(results: dict) -> str:
    rows = [
        [
            f"{a:g}",
            f"{1 - a:g}",
            common.fmt(r.last3("oii"), signed=True),
            common.fmt(r.last3("iou")),
            common.fmt(r.last3("pa")),
        ]
        for a, r in results.items()
    ]
    return (
        "## Fig. 10: DIBE's α sweep on CFD (the paper's figure: DIBE_Dis and Tversky on THC448)"
        "\n\nRaising α should lower OII (fewer misses, more false alarms).\n\n"
        + common.markdown_table(["α", "β", "OII", "IoU", "PA"], rows)
    )


def report_table6(results: dict) -> str:
    rows = []
    for key, label in (("grid", "Grid search"), ("oii", "OII guidance")):
        r = results[key]
        b = r.best
        note = "" if key == "grid" or r.converged else " (OII not in interval)"
        rows.append(
            [
                f"{label}{note} (ours, DIBE, CFD)",
                r.runs_needed,
                f"{r.value:g}",
                common.fmt(b.get("iou")),
                common.fmt(b.get("pa")),
                common.fmt(b.get("oii"), signed=True),
            ]
        )
    for key, label in (("grid", "Grid search"), ("oii", "OII guidance")):
        for loss in ("dibe_dis", "dibe_reg"):
            n, a, iou, pa = PAPER_TABLE6["unet", loss, key]
            paper = [n, f"{a:g}", common.fmt(iou), common.fmt(pa), "–"]
            rows.append([f"{label} (paper, {LABELS[loss]}, THC448)", *paper])
    return (
        f"## Table 6: OII-guided search of α against the grid (target OII in "
        f"({INTERVAL[0]:g}, {INTERVAL[1]:g}))\n\nBoth searches read the last-3 means "
        "over seeds; *runs* counts the values each method trains on its own (ours share "
        "trainings: the grid is Fig. 10's sweep). The paper's Table 6 is on THC448.\n\n"
        + common.markdown_table(["method", "runs", "α", "IoU", "PA", "OII"], rows)
    )


def to_json(results: dict) -> dict:
    out: dict[str, Any] = {}
    if "table5" in results:
        out["table5"] = {f"{d}/{x}": r.summary() for (d, x), r in results["table5"].items()}
    if "fig10" in results:
        out["fig10"] = {f"alpha={a:g}": r.summary() for a, r in results["fig10"].items()}
    if "table6" in results:
        out["table6"] = {k: r.to_dict() for k, r in results["table6"].items()}
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.paper_scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--quick", action="store_true", help="tiny CPU mode, all parts, seconds")
    p.add_argument("--out", default="results/paper_scale", help="tables and runs go here")
    p.add_argument("--data-dir", help="raw data root (default $DIBE_JAX_DATA or ../shared/data)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 per setting (full: 3)")
    p.add_argument("--epochs", type=int, help="training epochs (full: 50)")
    p.add_argument("--width", type=int, help="U-Net width (full: 64)")
    p.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        help="computation dtype (full mode: bfloat16, ~1.8x faster steps; float32 as the paper)",
    )
    p.add_argument("--strategy", choices=("auto", "vmap", "map"), default="auto")
    p.add_argument("--compile-s", type=float, default=COMPILE_S, help="assumed compile seconds")
    p.add_argument("--overwrite", action="store_true", help="train again finished sweeps")
    p.add_argument("--estimate", action="store_true", help="print the time estimates and stop")
    args = p.parse_args(argv)
    for flag in ("seeds", "epochs", "width"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            p.error(f"--{flag}: expected an integer >= 1, got {v}")
    return args


def main(argv: Sequence[str] | None = None, *, log: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else FULL
    changes = {
        k: getattr(args, k) for k in ("seeds", "epochs", "width", "dtype") if getattr(args, k)
    }
    scale = dataclasses.replace(scale, strategy=args.strategy, **changes)
    if scale.epochs < scale.eval_every:
        scale = dataclasses.replace(scale, eval_every=scale.epochs)
    data_dir = Path(args.data_dir) if args.data_dir else common.data_root()
    parts = [p for p in PARTS if p in args.parts]
    datasets = scale.datasets  # all of them, so the tables' description is the same
    try:
        sources = load_sources(data_dir, datasets, scale)
    except (FileNotFoundError, ValueError) as e:
        print(f"paper_scale: error: --data-dir: {e}", file=sys.stderr)
        return 2
    common.setup_jax()
    out = Path(args.out)
    for part in parts:
        log(estimate(part, sources, scale, args.compile_s))
    counted = parts + (["fig10"] if "table6" in parts and "fig10" not in parts else [])
    total = total_estimate(counted, sources, scale, args.compile_s)
    log(f"[total] estimate on one H200: {total}")
    if args.estimate:
        return 0
    results: dict[str, Any] = {}
    sections: dict[str, str] = {}
    try:
        for part in parts:
            t = time.perf_counter()
            kw = dict(overwrite=args.overwrite, say=log)
            if part == "table5":
                results[part] = run_table5(sources, scale, out, **kw)
                sections[part] = report_table5(results[part])
            elif part == "fig10":
                results[part] = run_fig10(sources, scale, out, **kw)
                sections[part] = report_fig10(results[part])
            else:
                fig10 = results.get("fig10") or run_fig10(sources, scale, out, **kw)
                results[part] = run_table6(sources, scale, out, fig10, **kw)
                sections[part] = report_table6(results[part])
            log(f"[{part}] done in {time.perf_counter() - t:.1f} s")
    except UserError as e:  # e.g. a member folder holding another setting (--overwrite)
        print(f"paper_scale: error: {e} (here: --overwrite or another --out)", file=sys.stderr)
        return 2
    setting = json.loads(json.dumps(dataclasses.asdict(scale)))  # as read back (lists)
    data = to_json(results) | {"scale": setting, "markdown": sections}
    before = _read_json(out / "paper_scale.json")
    if before.get("scale") == data["scale"]:  # keep the parts of earlier launches, same scale
        data = {**before, **data, "markdown": {**before.get("markdown", {}), **sections}}
    shown = [data["markdown"][p] for p in PARTS if p in data["markdown"]]
    md = common.write_markdown(
        out / "paper_scale.md", "The DIBE paper at full scale", [_describe(scale, sources), *shown]
    )
    common.write_json(out / "paper_scale.json", data)
    log(md.read_text())
    log(f"wrote {md} and {out / 'paper_scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
