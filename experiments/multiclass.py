"""Multi-class defect segmentation on MTSDD (issue 15): U-Net on ``magnetic_tile/all``
(background + Blowhole, Break, Crack, Fray, Uneven) with softmax CE, multi-class Dice,
multi-class Focal Tversky, unified focal and one-vs-rest DIBE. Does one-vs-rest DIBE help
the rare classes (Fray: 32 images, Crack: 57) against CE and FT?

Command (full: all 1,344 images at 224 px, the paper's 50 epochs, batch 32, SGD 0.01 / 0.9,
3 seeds; a GPU job)::

    python -m experiments.multiclass
    python -m experiments.multiclass --medium     # 2 CPU cores, about 50 min
    python -m experiments.multiclass --quick      # seconds: tiny in-memory data

``--medium`` (2 CPU cores): the 392 images with a defect (no MT_Free image,
``--free-every 0``: 238 train / 154 validation) at 96 px, U-Net width 8, batch 8, SGD lr
0.05 (the paper's is 0.01; see below) momentum 0.9, 16 epochs (464 steps), evaluation every
2, seeds 0-2.

Runtime: ``--quick`` 20-40 s with a warm compilation cache, up to 3 min cold, on 2 busy
cores (5 trainings of one epoch on 32 px synthetic images). ``--medium``: about 12 s per
epoch, 3.5 min per training, 50 min for 5 losses x 3 seeds on 2 shared cores. Measured
before choosing (``EXPERIMENTS.md``): with all 810 training images at 96 px an epoch took
115 s under load 8; at 64 px with one Free image in 8 (310 images) 10 s, but there DIBE did
not leave the all-background prediction in 12 epochs at lr 0.01 or 0.05, nor CE in 30
epochs at 0.05.

Expected result: no paper reports this setting. At this short, small setting expect most
defect classes to stay near IoU 0 for some losses (the binary runs of ``EXPERIMENTS.md``
saw CE and FT stay trivial on MTSDD Crack); the question is whether one-vs-rest DIBE gets
the rare classes (Fray, Crack) off zero where CE and FT do not, beyond the seed spread.

Data: the MTSDD folders under ``../shared/data`` (``DIBE_JAX_DATA`` overrides), built once
as the TFDS dataset ``magnetic_tile/all`` under ``results/tfds`` (``DIBE_JAX_TFDS``
overrides): 810 train / 534 validation images (Blowhole 69/46, Break 51/34, Crack 35/22,
Fray 20/12, Uneven 63/40, Free 572/380, Free and four Uneven masks empty). ``--quick``
replaces it by tiny in-memory synthetic images with three classes (background, crack,
spot; :func:`dibe_jax.datasets.generate_example`) and needs no file.

Writes ``<out>/multiclass.md`` (mIoU, per-class IoU and OII per loss, the last-3
statistic over seeds, and DIBE against CE and FT class by class) and
``<out>/multiclass.json``; runs go to ``<out>/runs/<loss>/seed<k>`` and are reused by a
later call with the same setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python experiments/multiclass.py`: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402

DATASET = "magnetic_tile/all"
LOSSES = (
    "softmax_cross_entropy",
    "dice_multiclass",
    "focal_tversky_multiclass",
    "unified_focal",
    "dibe_multiclass",
)
LABELS = {
    "softmax_cross_entropy": "CE",
    "dice_multiclass": "Dice",
    "focal_tversky_multiclass": "FT",
    "unified_focal": "Unified focal",
    "dibe_multiclass": "DIBE (one-vs-rest)",
}
#: The loss under test and the baselines it is compared with class by class.
CANDIDATE = "dibe_multiclass"
BASELINES = ("softmax_cross_entropy", "focal_tversky_multiclass")
#: MTSDD's rarest defect classes by number of images (Fray 32, Crack 57 of 1,344).
RARE = ("fray", "crack")

#: MTSDD's class names (the ``magnetic_tile/all`` mask ids 0-5).
MTSDD_CLASSES = ("background", "blowhole", "break", "crack", "fray", "uneven")
#: Per mode, which defect-free (``MT_Free``) images are kept: every ``k``-th of each split
#: (1: all, the TFDS dataset as it is). Free images are 70 % of MTSDD and hold only
#: background; keeping one in 8 makes a 2-core epoch 2.6 times shorter.
FREE_EVERY = {"quick": 1, "medium": 0, "full": 1}

#: Images per split of ``magnetic_tile/all``: with a defect (Blowhole 69/46, Break 51/34,
#: Crack 35/22, Fray 20/12, Uneven 63/40) and defect-free (``MT_Free``).
SPLIT_IMAGES = {"train": {"defect": 238, "free": 572}, "validation": {"defect": 154, "free": 380}}

#: Quick mode: tiny in-memory 3-class synthetic data (thin dark cracks, bright spots).
QUICK_CLASSES = ("background", "crack", "spot")
QUICK_DATA = dict(size=32, ratio=40.0, spot_ratio=40.0, contrast=0.3, n_train=8, n_val=4)

MODES: dict[str, common.Mode] = {
    "quick": common.MODES["quick"],
    # Measured before choosing (EXPERIMENTS.md, module docstring): 96 px, defect images
    # only, about 12 s per epoch on 2 shared cores. lr 0.05 as in the library's multi-class
    # training test; at 64 px DIBE stayed all-background for 12 epochs at 0.01 and 0.05.
    "medium": common.Mode(
        "medium",
        epochs=16,
        batch_size=8,
        eval_every=2,
        seeds=3,
        width=8,
        image_size=96,
        lr=0.05,
    ),
    "full": common.Mode("full", epochs=50, batch_size=32, eval_every=5, seeds=3, image_size=224),
}


def mode_from_args(args: argparse.Namespace) -> common.Mode:
    """This script's :data:`MODES` entry chosen on the command line, with the overrides
    of :func:`experiments.common.add_common_args` applied."""
    mode = MODES["quick" if args.quick else "medium" if args.medium else "full"]
    changes: dict[str, Any] = {}
    for field in ("epochs", "seeds", "width", "batch_size", "image_size", "eval_every"):
        value = getattr(args, field, None)
        if value is not None:
            changes[field] = value
    if args.set:
        changes["overrides"] = tuple(args.set)
    return dataclasses.replace(mode, **changes)


@functools.lru_cache(maxsize=2)
def quick_sources() -> dict[str, Any]:
    """The quick mode's splits: 3-class synthetic examples made in memory (no file)."""
    import numpy as np

    from dibe_jax.data import ArraySource
    from dibe_jax.datasets import generate_example

    q = QUICK_DATA
    out = {}
    for split, n in (("train", q["n_train"]), ("validation", q["n_val"])):
        rng = np.random.default_rng([0, 0 if split == "train" else 1])
        examples = []
        for _ in range(n):
            image, mask = generate_example(
                rng,
                q["size"],
                q["ratio"],
                spot_ratio=q["spot_ratio"],
                contrast=q["contrast"],
                empty_fraction=0,
            )
            examples.append({"image": image, "mask": mask})
        out[split] = ArraySource(examples, name=f"synthetic_multiclass_{split}")
    return out


@functools.lru_cache(maxsize=2)
def mtsdd_sources(free_every: int) -> dict[str, list[dict[str, Any]]]:
    """``magnetic_tile/all`` decoded into memory with every defect image and every
    ``free_every``-th ``MT_Free`` image of each split (file order), built once as a TFDS
    dataset under :func:`experiments.common.tfds_dir`."""
    from dibe_jax import datasets

    builder = datasets.prepare(
        DATASET, data_dir=str(common.tfds_dir()), manual_dir=str(common.data_root())
    )
    if tuple(datasets.class_names(builder)) != MTSDD_CLASSES:
        raise ValueError(f"{DATASET}: classes {datasets.class_names(builder)}")
    out = {}
    for split, source in builder.as_data_source().items():
        examples, free = [], 0
        for i in range(len(source)):
            ex = source[i]
            name = ex["file_name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name.startswith("MT_Free/"):
                free += 1
                if free_every == 0 or (free - 1) % free_every:
                    continue
            examples.append({"image": ex["image"], "mask": ex["mask"], "file_name": name})
        out[split] = examples
    sizes = {k: len(v) for k, v in out.items()}
    if sizes != subset_sizes(free_every):
        raise ValueError(f"{DATASET}: {sizes} images, expected {subset_sizes(free_every)}")
    return out


def subset_sizes(free_every: int) -> dict[str, int]:
    """Images per split with every defect image and every ``free_every``-th Free image
    (``0``: none).

    >>> subset_sizes(1), subset_sizes(8)
    ({'train': 810, 'validation': 534}, {'train': 310, 'validation': 202})
    >>> subset_sizes(0)
    {'train': 238, 'validation': 154}
    """
    return {
        split: n["defect"] + (-(-n["free"] // free_every) if free_every else 0)
        for split, n in SPLIT_IMAGES.items()
    }


def data_description(free_every: int) -> str:
    """What ``data.dataset`` of a run on an MTSDD subset says."""
    n = subset_sizes(free_every)
    free = f"one MT_Free image in {free_every}" if free_every else "no MT_Free image"
    return (
        f"{DATASET} in memory: every defect image, {free} "
        f"(train {n['train']} / validation {n['validation']} images)"
    )


def make_config(loss: str, mode: common.Mode, seed: int = 0, *, free_every: int | None = None):
    """The :class:`dibe_jax.train.Config` of one seed of ``loss`` under ``mode``, on the
    MTSDD images with one ``MT_Free`` image in ``free_every`` (default :data:`FREE_EVERY`)."""
    from dibe_jax import train

    free_every = FREE_EVERY[mode.name] if free_every is None else free_every

    values: dict[str, object] = {
        "model.name": "unet",
        "loss.name": loss,
        "seed": seed,
        "epochs": mode.epochs,
        "batch_size": mode.batch_size,
        "eval_every": mode.eval_every,
        "optim.lr": mode.lr,
        "optim.momentum": mode.momentum,
        "progress": False,
    }
    if mode.width is not None:
        values["model.width"] = mode.width
    values |= {f"model.{k}": v for k, v in mode.model_options.get("unet", {}).items()}
    if mode.quick:  # in-memory sources: the name says what they are
        q = QUICK_DATA
        values["data.dataset"] = (
            f"in-memory generate_example: {q['size']} px, crack 1:{q['ratio']:g}, spot "
            f"1:{q['spot_ratio']:g}, {q['n_train']} train / {q['n_val']} validation, seed 0"
        )
    elif free_every != 1:  # in-memory subset of the TFDS dataset (mtsdd_sources)
        values["data.dataset"] = data_description(free_every)
    else:
        values |= {
            "data.dataset": DATASET,
            "data.data_dir": str(common.tfds_dir()),
            "data.manual_dir": str(common.data_root()),
        }
    if not mode.quick:
        if mode.image_size is not None:
            values["data.image_size"] = mode.image_size
    config = train.override(train.Config(), values)
    return train.apply_overrides(config, mode.overrides)


def run(
    mode: common.Mode,
    out: str | Path,
    *,
    losses: Sequence[str] = LOSSES,
    free_every: int | None = None,
) -> dict[str, common.CellResult]:
    """Train every loss once per seed under ``mode`` in ``out/runs/<loss>/seed<k>``;
    return each loss's :class:`experiments.common.CellResult` (every seed's records)."""
    from dibe_jax.train import runs

    free_every = FREE_EVERY[mode.name] if free_every is None else free_every
    if mode.quick:
        sources, names = quick_sources(), QUICK_CLASSES
    elif free_every != 1:
        sources, names = mtsdd_sources(free_every), MTSDD_CLASSES
    else:
        sources, names = None, MTSDD_CLASSES
    seeds = list(range(mode.seeds))
    results = {}
    for loss in losses:
        workdir = Path(out) / "runs" / loss
        config = make_config(loss, mode, free_every=free_every)
        r = runs.train_seeds(config, workdir, seeds, sources=sources, class_names=names)
        cell = common.Cell(DATASET, "unet", loss)
        results[loss] = result = common.CellResult(r.runs, r.seeds, r.wall_seconds, cell=cell)
        print(
            f"[{mode.name}] {workdir}: seeds {result.seeds}, mIoU last-3 "
            f"{common.fmt(result.last3('miou'))}, training {result.wall_seconds:.0f} s",
            flush=True,
        )
    return results


# --------------------------------------------------------------------------------------------
# Report


def class_names(results: Mapping[str, common.CellResult]) -> list[str]:
    """The classes of the records (``iou/<class>`` keys), background first."""
    for r in results.values():
        for recs in r.runs:
            if recs:
                return [k.split("/", 1)[1] for k in recs[-1] if k.startswith("iou/")]
    return []


def _seed_last3(result: common.CellResult, key: str) -> dict[int, float]:
    """Per seed, the mean of its last 3 evaluations of ``key``."""
    out = {}
    for seed, recs in zip(result.seeds, result.runs, strict=True):
        s = common.stat(r.get(key) for r in recs[-3:])
        if s.n:
            out[seed] = s.mean
    return out


def compare(
    results: Mapping[str, common.CellResult], ours: str, base: str, key: str
) -> dict[str, Any]:
    """``ours`` against ``base`` on ``key`` (last-3): the difference of the means, the
    larger of the two sds, in how many shared seeds ``ours`` is at least as high (per-seed
    last-3 means) and a verdict that says when the difference is inside the spread."""
    a, b = results[ours].last3(key), results[base].last3(key)
    diff, noise = a.mean - b.mean, max(a.std, b.std)
    sa, sb = _seed_last3(results[ours], key), _seed_last3(results[base], key)
    shared = sorted(set(sa) & set(sb))
    wins = sum(sa[s] >= sb[s] for s in shared)
    verdict = "higher" if diff > 0 else "lower" if diff < 0 else "equal"
    if abs(diff) <= noise:
        verdict += " (within the spread)"
    return {"diff": diff, "sd": noise, "wins": wins, "seeds": len(shared), "verdict": verdict}


def _images(mode: common.Mode, free_every: int) -> str:
    if mode.quick:
        q = QUICK_DATA
        return (
            f"tiny in-memory synthetic data ({q['size']} px, {q['n_train']} train / "
            f"{q['n_val']} validation images, classes {', '.join(QUICK_CLASSES)}); the "
            "numbers only show the pipeline runs"
        )
    size = "the stored size" if mode.image_size is None else f"{mode.image_size} px"
    n = subset_sizes(free_every)
    kept = (
        "all images"
        if free_every == 1
        else f"every defect image and one defect-free (MT_Free) image in {free_every}"
        if free_every
        else "the defect images only (no MT_Free image)"
    )
    return (
        f"MTSDD `{DATASET}`, {kept}: {n['train']} train / {n['validation']} validation images "
        "(with a defect: Blowhole 69/46, Break 51/34, Crack 35/22, Fray 20/12, Uneven 63/40; "
        f"Free 572/380 in the whole set), resized to {size}"
    )


def describe(mode: common.Mode, free_every: int | None = None) -> str:
    """One Markdown paragraph saying exactly what was run."""
    free_every = FREE_EVERY[mode.name] if free_every is None else free_every
    width = "model default" if mode.width is None else str(mode.width)
    extra = f", overrides {', '.join(mode.overrides)}" if mode.overrides else ""
    return (
        f"Mode **{mode.name}**: U-Net width {width}, {mode.epochs} epochs, evaluation every "
        f"{mode.eval_every}, batch {mode.batch_size}, SGD lr {mode.lr:g} momentum "
        f"{mode.momentum:g}, augmentation on, {mode.seeds} seed(s){extra}. Data: "
        f"{_images(mode, free_every)}. Each loss has its registry defaults."
    )


def report(
    results: Mapping[str, common.CellResult],
    mode: common.Mode,
    *,
    free_every: int | None = None,
) -> str:
    """mIoU, per-class IoU and per-class OII per loss (last-3 over seeds), the other
    statistics, wall time, and the candidate against each baseline class by class."""
    names = class_names(results)
    defects = names[1:]
    losses = list(results)

    iou = common.markdown_table(
        ["loss", "mIoU", "mIoU defects", *(f"IoU {c}" for c in names)],
        [
            [
                LABELS.get(loss, loss),
                common.fmt(r.last3("miou")),
                common.fmt(r.last3("miou_defects")),
                *(common.fmt(r.last3(f"iou/{c}")) for c in names),
            ]
            for loss, r in results.items()
        ],
    )
    oii = common.markdown_table(
        ["loss", "macro OII", "mean abs OII", *(f"OII {c}" for c in names)],
        [
            [
                LABELS.get(loss, loss),
                common.fmt(r.last3("macro_oii"), signed=True),
                common.fmt(r.last3("mean_abs_oii")),
                *(common.fmt(r.last3(f"oii/{c}"), signed=True) for c in names),
            ]
            for loss, r in results.items()
        ],
    )
    pr = common.markdown_table(
        ["loss", *(f"{m} {c}" for c in defects for m in ("prec.", "recall"))],
        [
            [
                LABELS.get(loss, loss),
                *(
                    common.fmt(r.last3(f"{m}/{c}"))
                    for c in defects
                    for m in ("precision", "recall")
                ),
            ]
            for loss, r in results.items()
        ],
    )
    other = common.markdown_table(
        [
            "loss",
            "mIoU last-3",
            "mIoU final",
            "mIoU best",
            "mAcc last-3",
            "evaluations used",
            "seed ids",
            "train s (all seeds)",
            "train s per seed",
        ],
        [
            [
                LABELS.get(loss, loss),
                common.fmt(r.last3("miou")),
                common.fmt(r.final("miou")),
                common.fmt(r.best("miou")),
                common.fmt(r.last3("macc")),
                str(r.evaluations_used()),
                ",".join(map(str, r.seeds)),
                f"{r.wall_seconds:.0f}",
                f"{r.wall_seconds / max(1, len(r.seeds)):.0f}",
            ]
            for loss, r in results.items()
        ],
    )

    support = {}
    for r in results.values():
        for recs in r.runs:
            if recs:
                support = {c: recs[-1].get(f"support/{c}") for c in names}
                break
        if support:
            break

    rows = []
    for base in BASELINES:
        if CANDIDATE not in results or base not in results:
            continue
        for c in defects:
            cmp = compare(results, CANDIDATE, base, f"iou/{c}")
            rows.append(
                [
                    c + (" (rare)" if c in RARE else ""),
                    f"{support.get(c) or 0:,}",
                    f"{LABELS[CANDIDATE]} − {LABELS[base]}",
                    f"{cmp['diff']:+.3f}",
                    f"{cmp['sd']:.3f}",
                    f"{cmp['wins']} of {cmp['seeds']}",
                    cmp["verdict"],
                ]
            )
    comparison = (
        common.markdown_table(
            [
                "class",
                "validation pixels",
                "IoU difference (last-3)",
                "value",
                "larger sd",
                "seeds where DIBE ≥ (per-seed last-3)",
                "DIBE is",
            ],
            rows,
            align="lrlrrrl",
        )
        if rows
        else (
            f"None: the comparison needs {LABELS[CANDIDATE]} and at least one of "
            f"{', '.join(LABELS[b] for b in BASELINES)} in the same run."
        )
    )
    return "\n\n".join(
        [
            describe(mode, free_every),
            common.stats_legend().replace(" PA is precision TP / (TP + FP).", "")
            + " Per-class values are one class against the rest; OII > 0: the class is "
            "under-segmented (fewer false alarms than misses).",
            "## mIoU and IoU per class (last-3)",
            iou,
            "## OII per class (last-3)",
            oii,
            "## Precision and recall per defect class (last-3)",
            pr,
            "## mIoU: last-3, final, best; wall time",
            other,
            f"## {LABELS.get(CANDIDATE, CANDIDATE)} against "
            + " and ".join(LABELS[b] for b in BASELINES)
            + ", class by class",
            comparison,
            "Losses: " + ", ".join(f"{LABELS.get(x, x)} = `{x}`" for x in losses) + ".",
        ]
    )


def summary(results: Mapping[str, common.CellResult]) -> list[dict[str, Any]]:
    """JSON-ready: per loss, its cell, seeds, wall time, and ``[mean, sd, n]`` (last-3, final,
    best) of mIoU and its relatives and of IoU / OII / precision / recall per class
    (:meth:`dibe_jax.train.runs.SeedRuns.summary`)."""
    return [{"loss": loss, **r.summary()} for loss, r in results.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser, default_out="multiclass")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), help="registry names")
    parser.add_argument(
        "--free-every",
        type=int,
        help="keep one defect-free (MT_Free) image in K of each split (0: none; medium: 0; "
        "full: 1, all images)",
    )
    args = parser.parse_args(argv)
    if args.free_every is not None and args.free_every < 0:
        parser.error("--free-every must be 0 (no Free image) or more")
    common.setup_jax()
    mode = mode_from_args(args)
    t0 = time.perf_counter()
    results = run(mode, args.out, losses=args.losses, free_every=args.free_every)
    wall = time.perf_counter() - t0
    path = common.write_markdown(
        f"{args.out}/multiclass.md",
        "Multi-class MTSDD: five losses, mIoU and per-class IoU / OII",
        [report(results, mode, free_every=args.free_every), f"Script wall time: {wall:.0f} s."],
    )
    common.write_json(f"{args.out}/multiclass.json", summary(results))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
