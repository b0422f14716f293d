"""``dibe-jax predict`` at native resolution against ``evaluate_checkpoint`` on CrackForest.

The same checkpoint is scored twice on the CFD validation split, which
:mod:`dibe_jax.datasets.crackforest` makes from images 061-118 (``LAST_TRAIN = 60``; 58 images
of 320 x 480, 348 tiles of 160 x 160):

(a) :func:`dibe_jax.train.evaluate_checkpoint`: the 348 validation tiles, TP/FP/FN pooled;
(b) :func:`dibe_jax.train.predict.predict` on the 58 full images ``image/NNN.jpg``: the
    written ``NNN_mask.png`` files against ``groundTruth/NNN.mat`` (crack =
    ``Segmentation == 2``, read with the builder's own reader), TP/FP/FN pooled over the 58
    images.

Both pool the same pixels (the tiles partition the images), so the two IoUs differ only by
how the model sees them: a tile alone with zero padding at its borders (a) or the whole
image in overlapping windows blended with Gaussian weights (b). Before the native-resolution
rewrite, (b) resized each image to 160 x 160 and scored far lower (IoU 0.164 vs 0.61 on
image 001). Acceptance target: ``|IoU_predict - IoU_eval| <= 0.02``.

Commands::

    python -m experiments.predict_vs_eval            # U-Net width 8, batch 8, DIBE, 12 epochs
    python experiments/predict_vs_eval.py --workdir results/predict_vs_eval/run --skip-train
    python -m experiments.predict_vs_eval --quick    # 2+2 images, width 4, 1 epoch: seconds
    python -m experiments.predict_vs_eval --width 16 --batch-size 32 --epochs 25  # GPU-sized

The default trains on the 360 CFD training tiles (TFDS build under ``results/tfds``, raw
files from ``../shared/data/crackforest`` or ``$DIBE_JAX_DATA/crackforest``), SGD 0.01 /
0.9, evaluation every 4 epochs. ``--quick`` trains on the tiles of 2 training images held in
memory (U-Net with 1 stage, no TFDS build) and predicts 2 validation images; its numbers only
show that the pipeline runs.

Runtime on 2 CPU cores shared with other jobs (load 4-9), under ``nice -n 10``: the default
about 15 min (12 epochs of 45 steps at 1-2 s a step, then evaluation, prediction and the
breakdown, about 3 min); width 16 with batch 32 took 333 s an epoch (2.3 h for 25 epochs),
too long here. ``--quick``: about 20 s with a warm compilation cache, 50-60 s cold.

Result (default setting, seed 0, best checkpoint = epoch 12): tile evaluation IoU 0.3745,
native-resolution predict IoU 0.4040 (+0.029, outside the 0.02 target, in predict's favour).
The breakdown (:func:`tile_breakdown`) puts all of it at the tile borders: the tiles run alone and
stitched reproduce the evaluation's counts exactly (IoU 0.3745, TP 61151 FP 21041 FN 81077);
more than 16 px from an inner tile border the two agree (0.3562 tiles, 0.3554 predict);
within 16 px (22 % of the pixels) the tiles score 0.402 and predict 0.473: cut into tiles,
a crack that crosses a tile border loses its context (the network sees zero padding there)
and is missed more often (FN 30218 vs 23912). One 320 x 480 window (no sliding) gives the
same IoU as 160 x 160 windows (0.4040; overlap 0.5: 0.4037), and 320 x 480 is a multiple of
every U-Net stride (no padding), so neither the blending nor the padding mode plays a part.

Writes ``<workdir>/predict_vs_eval.json`` (both IoUs, their difference, the pooled counts,
the breakdown, the settings and wall times) and the masks and overlays under
``<workdir>/predict/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402

TARGET = 0.02
QUICK_TRAIN, QUICK_VAL = ("001", "002"), ("061", "062")


def crackforest_root(data: str | Path | None = None) -> Path:
    """Raw CFD folder (``image/``, ``groundTruth/``): ``data`` or ``<data_root>/crackforest``."""
    return Path(data) if data is not None else common.data_root() / "crackforest"


def validation_stems() -> list[str]:
    """The images of the builder's validation split: ``LAST_TRAIN + 1 .. NUM_LABELLED``."""
    from dibe_jax.datasets import crackforest

    return [f"{i:03d}" for i in range(crackforest.LAST_TRAIN + 1, crackforest.NUM_LABELLED + 1)]


def _builder(tfds_dir: Path):
    from dibe_jax.datasets import Crackforest

    return Crackforest(config="label2", data_dir=os.fspath(tfds_dir))


def ground_truth(builder, root: Path, stem: str) -> np.ndarray:
    """``uint8 [320, 480]`` crack mask of ``groundTruth/<stem>.mat``, as the builder makes it."""
    seg = builder._read_segmentation(root / "groundTruth" / f"{stem}.mat")
    cfg = builder.builder_config
    return ((seg >= cfg.min_label) & (seg <= cfg.max_label)).astype(np.uint8)


def quick_sources(builder, root: Path) -> dict[str, list[dict[str, np.ndarray]]]:
    """In-memory tiles of :data:`QUICK_TRAIN` and :data:`QUICK_VAL`, cut as the builder cuts."""
    from dibe_jax.datasets import crackforest, read_image, tile_image

    out = {}
    for split, stems in (("train", QUICK_TRAIN), ("validation", QUICK_VAL)):
        examples = []
        for stem in stems:
            image = read_image(root / "image" / f"{stem}.jpg", mode="RGB")
            mask = ground_truth(builder, root, stem)[..., None]
            for img_tile, mask_tile in zip(
                tile_image(image, crackforest.TILE), tile_image(mask, crackforest.TILE), strict=True
            ):
                examples.append({"image": img_tile, "mask": mask_tile})
        out[split] = examples
    return out


def make_config(args: argparse.Namespace, root: Path):
    """The training :class:`dibe_jax.train.Config`, fields set directly."""
    from dibe_jax import train

    config = train.Config()
    config.model.name = "unet"
    config.model.options["width"] = args.width
    if args.quick:
        config.model.options["num_stages"] = 1
    config.loss.name = "dibe"
    config.data.dataset = "crackforest/label2"
    config.data.data_dir = os.fspath(args.tfds_dir)
    config.data.manual_dir = os.fspath(root)
    config.epochs = args.epochs
    config.batch_size = args.batch_size
    config.eval_every = args.eval_every
    config.seed = args.seed
    config.progress = not args.no_progress
    return config


def pooled_counts(report, builder, root: Path) -> dict[str, int]:
    """TP/FP/FN/TN of the written masks against the ground truth, summed over images."""
    from PIL import Image

    tp = fp = fn = tn = 0
    for w in report.written:
        pred = np.asarray(Image.open(w.mask)) > 127
        label = ground_truth(builder, root, w.input.stem) > 0
        if pred.shape != label.shape:
            raise ValueError(f"{w.mask}: {pred.shape} but ground truth {label.shape}")
        tp += int(np.sum(pred & label))
        fp += int(np.sum(pred & ~label))
        fn += int(np.sum(~pred & label))
        tn += int(np.sum(~pred & ~label))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _counts(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    return np.array([np.sum(pred & label), np.sum(pred & ~label), np.sum(~pred & label)])


def _iou(c: np.ndarray) -> float:
    return float(c[0] / max(1, c[0] + c[1] + c[2]))


def tile_breakdown(workdir: Path, report, builder, root: Path, *, band: int = 16) -> dict:
    """Where the two scores differ: the tile grid against the written native-resolution masks.

    Each image is also predicted tile by tile (the six 160 x 160 tiles of the builder, each
    run alone, as :func:`~dibe_jax.train.evaluate_checkpoint` runs them) and stitched. Both
    predictions are scored, pooled over the images, on all pixels, on the ``band`` within
    ``band`` px of an inner tile border, and on the rest (``inner``). The stitched tiles
    reproduce the evaluation's counts exactly when preprocessing and checkpoint agree.
    """
    from PIL import Image

    from dibe_jax.data import augment
    from dibe_jax.datasets import crackforest, read_image
    from dibe_jax.train.predict import load_forward, predict_logits

    run = load_forward(workdir)  # the best checkpoint, as predict and evaluate_checkpoint use
    t = crackforest.TILE
    totals = {
        k: {r: np.zeros(3, np.int64) for r in ("all", "band", "inner")} for k in ("tiles", "native")
    }
    near = None
    for w in report.written:
        image = augment.to_float(read_image(w.input, mode="RGB"))
        label = ground_truth(builder, root, w.input.stem) > 0
        h, wd = label.shape
        tiles = np.zeros((h, wd), bool)
        for r in range(0, h, t):
            for c in range(0, wd, t):
                z = predict_logits(
                    run.forward,
                    image[r : r + t, c : c + t],
                    multiple=run.multiple,
                    window=t,
                    minimum=run.minimum,
                )
                tiles[r : r + t, c : c + t] = z[..., 0] >= 0
        native = np.asarray(Image.open(w.mask)) > 127
        near = np.zeros((h, wd), bool)
        for r in range(t, h, t):
            near[max(0, r - band) : r + band] = True
        for c in range(t, wd, t):
            near[:, max(0, c - band) : c + band] = True
        for name, pred in (("tiles", tiles), ("native", native)):
            for region, where in (("all", slice(None)), ("band", near), ("inner", ~near)):
                totals[name][region] += _counts(pred[where], label[where])
    out: dict[str, Any] = {
        "band_px": band,
        "band_fraction": float(near.mean()) if near is not None else 0.0,
    }
    for name, regions in totals.items():
        out[name] = {
            region: {"iou": _iou(c), "tp": int(c[0]), "fp": int(c[1]), "fn": int(c[2])}
            for region, c in regions.items()
        }
    return out


def _link_inputs(root: Path, stems: Sequence[str], folder: Path) -> Path:
    """A folder holding (links to) exactly the images to predict."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for stem in stems:
        src = (root / "image" / f"{stem}.jpg").resolve()
        try:
            (folder / src.name).symlink_to(src)
        except OSError:
            (folder / src.name).write_bytes(src.read_bytes())
    return folder


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (unless ``--skip-train``), evaluate the tiles, predict the images, compare."""
    from dibe_jax import metrics, train
    from dibe_jax.train.predict import predict

    root = crackforest_root(args.data)
    if not (root / "image").is_dir() or not (root / "groundTruth").is_dir():
        raise SystemExit(f"--data: {root} lacks image/ and groundTruth/ (CrackForest files)")
    workdir = Path(args.workdir)
    builder = _builder(Path(args.tfds_dir))
    sources = quick_sources(builder, root) if args.quick else None
    stems = list(QUICK_VAL) if args.quick else validation_stems()
    result: dict[str, Any] = {"workdir": str(workdir), "quick": args.quick}

    train_seconds = None
    if not args.skip_train:
        config = make_config(args, root)
        t0 = time.perf_counter()
        train.train_and_evaluate(
            config,
            workdir,
            resume=args.resume,
            overwrite=args.overwrite or args.quick,
            sources=sources,
        )
        train_seconds = time.perf_counter() - t0
    config = train.load_config(workdir)
    result["setting"] = {
        "model": config.model.name,
        "options": config.model.options,
        "loss": config.loss.name,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "dataset": config.data.dataset,
    }

    t0 = time.perf_counter()
    ev = train.evaluate_checkpoint(workdir, sources=sources)
    eval_seconds = time.perf_counter() - t0

    inputs = _link_inputs(root, stems, workdir / "predict_inputs")
    t0 = time.perf_counter()
    report = predict(
        workdir,
        inputs,
        workdir / "predict",
        window=args.window,
        overlap=args.overlap,
        batch_size=args.predict_batch,
        progress=not args.no_progress,
    )
    predict_seconds = time.perf_counter() - t0
    if report.skipped:
        print(report.summary())
    counts = pooled_counts(report, builder, root)
    summary = metrics.summarize(metrics.Confusion(*(counts[k] for k in ("tp", "fp", "fn", "tn"))))

    t0 = time.perf_counter()
    breakdown = tile_breakdown(workdir, report, builder, root)
    breakdown_seconds = time.perf_counter() - t0

    diff = float(summary["iou"]) - float(ev["iou"])
    result.update(
        {
            "validation_images": f"{stems[0]}-{stems[-1]} ({len(stems)} images)",
            "checkpoint": {"step": ev["step"], "epoch": ev["epoch"]},
            "eval_tiles": {
                k: ev[k] for k in ("iou", "pa", "recall", "oii", "tp", "fp", "fn", "tn")
            },
            "predict_images": {
                "iou": float(summary["iou"]),
                "pa": float(summary["pa"]),
                "recall": float(summary["recall"]),
                "oii": float(summary["oii"]),
                **counts,
                "images": len(report.written),
                "skipped": [[str(p), r] for p, r in report.skipped],
            },
            "window": args.window,
            "overlap": args.overlap,
            "eval_iou": float(ev["iou"]),
            "predict_iou": float(summary["iou"]),
            "difference": diff,
            "target": TARGET,
            "within_target": abs(diff) <= TARGET,
            "breakdown": breakdown,
            "seconds": {
                "train": train_seconds,
                "eval": eval_seconds,
                "predict": predict_seconds,
                "breakdown": breakdown_seconds,
            },
        }
    )
    (workdir / "predict_vs_eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 training + 2 validation images in memory, width 4, 1 epoch",
    )
    parser.add_argument(
        "--workdir", help="run folder (default results/predict_vs_eval/{run,quick})"
    )
    parser.add_argument(
        "--skip-train", action="store_true", help="use the finished run in --workdir as it is"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--overwrite", action="store_true", help="replace a run in --workdir")
    parser.add_argument(
        "--data",
        help="raw CrackForest folder (default "
        "$DIBE_JAX_DATA/crackforest or ../shared/data/crackforest)",
    )
    parser.add_argument(
        "--tfds-dir",
        default=os.fspath(common.tfds_dir()),
        help="where the TFDS data is built (default results/tfds)",
    )
    parser.add_argument("--epochs", type=int, help="default 12 (quick: 1)")
    parser.add_argument("--width", type=int, help="U-Net width (default 8, quick: 4)")
    parser.add_argument("--batch-size", type=int, help="default 8 (quick: 4)")
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, help="predict window (default: training size)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--predict-batch", type=int, default=8, help="windows per forward")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    defaults = (1, 4, 4) if args.quick else (12, 8, 8)
    for name, value in zip(("epochs", "width", "batch_size"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.workdir is None:
        args.workdir = os.fspath(
            common.REPO / "results" / "predict_vs_eval" / ("quick" if args.quick else "run")
        )
    common.setup_jax()
    t0 = time.perf_counter()
    r = run(args)
    print(
        f"checkpoint: step {r['checkpoint']['step']} (epoch {r['checkpoint']['epoch']}) "
        f"of {r['workdir']}; validation images {r['validation_images']}"
    )
    print(f"eval    (validation tiles of 160x160, pooled):    IoU {r['eval_iou']:.4f}")
    print(f"predict (whole images, native resolution, pooled): IoU {r['predict_iou']:.4f}")
    print(
        f"difference predict - eval: {r['difference']:+.4f} (target |diff| <= {TARGET}: "
        f"{'met' if r['within_target'] else 'NOT met'}); total {time.perf_counter() - t0:.0f} s"
    )
    b = r["breakdown"]
    print(
        f"where they differ (pooled IoU; band = pixels within {b['band_px']} px of an inner "
        f"tile border, {b['band_fraction']:.0%} of the pixels):"
    )
    for name, label in (("tiles", "tiles run alone, stitched"), ("native", "predict")):
        ious = "  ".join(f"{k} {v['iou']:.4f}" for k, v in b[name].items())
        print(f"  {label:26s} {ious}")
    print(f"wrote {Path(r['workdir']) / 'predict_vs_eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
