"""Draw the README's figure: one CrackForest validation image, its ground truth, a prediction.

Trains a small U-Net with the DIBE loss on the 360 CrackForest training tiles (or loads a
run that is already there), predicts one of the 58 validation images (061-118) at its native
480 x 320 resolution with the library's sliding-window predictor, and writes
``docs/_static/readme_prediction.png``: the image, the ground truth (crack =
``Segmentation == 2``) and the prediction coloured by outcome (hits white, misses red, false
alarms cyan), titled with the image's IoU, PA (precision) and OII.

Commands (from the repository root, raw files in ``../shared/data/crackforest`` or
``$DIBE_JAX_DATA/crackforest``)::

    python scripts/readme_figure.py                       # train (CPU) then draw
    python scripts/readme_figure.py --workdir RUN         # draw from an existing run

Default setting: U-Net width 8, DIBE with the paper's defaults, batch 8, SGD 0.01 / 0.9,
8 epochs evaluated every 4, seed 0, the training tiles at their native 160 x 160. It took
45 minutes on two CPU cores shared with other jobs (load average about 10; validation IoU
0.36 over the 348 tiles; image 110: IoU 0.36, PA 0.37, OII -0.76); a GPU run of the paper's
setting (``--width 64 --batch-size 32 --epochs 50``) draws a better mask. The run is kept
under ``--workdir`` (default ``results/readme_figure/run``), so redrawing only loads it and
predicts (1.5 minutes on the same loaded cores).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "_static" / "readme_prediction.png"


def train_run(args: argparse.Namespace) -> None:
    """Train the figure's run in ``args.workdir`` unless a finished run is already there."""
    from dibe_jax import train

    if (args.workdir / "config.json").is_file() and (args.workdir / "checkpoints").is_dir():
        print(f"using the run in {args.workdir}")
        return
    config = train.Config()
    config.model.name = "unet"
    config.model.options["width"] = args.width
    config.loss.name = "dibe"
    config.data.dataset = "crackforest/label2"
    config.data.data_dir = os.fspath(args.tfds_dir)
    config.data.manual_dir = os.fspath(args.data)
    config.epochs = args.epochs
    config.batch_size = args.batch_size
    config.eval_every = args.eval_every
    config.seed = args.seed
    config.progress = False
    train.train_and_evaluate(config, args.workdir)


def ground_truth(data: Path, stem: str) -> np.ndarray:
    """``bool [320, 480]``: ``Segmentation == 2`` of ``groundTruth/<stem>.mat`` (the crack)."""
    from scipy.io import loadmat

    seg = loadmat(data / "groundTruth" / f"{stem}.mat")["groundTruth"][0, 0]["Segmentation"]
    return np.asarray(seg) == 2


def predict_mask(workdir: Path, image: np.ndarray) -> np.ndarray:
    """``bool [H, W]``: the run's best checkpoint at the image's native resolution."""
    from dibe_jax.data import augment
    from dibe_jax.train import predict

    run = predict.load_forward(workdir)
    logits = predict.predict_logits(
        run.forward,
        augment.to_float(image),
        multiple=run.multiple,
        window=run.image_size,
        minimum=run.minimum,
    )
    return logits[..., 0] >= 0


def scores(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """IoU, PA (precision) and OII of one image from its hard confusion counts."""
    from dibe_jax import metrics

    tp = float(np.sum(pred & label))
    fp = float(np.sum(pred & ~label))
    fn = float(np.sum(~pred & label))
    return {
        "iou": float(metrics.iou(tp, fp, fn)),
        "pa": float(metrics.pa(tp, fp)),
        "oii": float(metrics.oii(tp, fp, fn)),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def outcome_image(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]``: hits white, misses (FN) red, false alarms (FP) cyan."""
    rgb = np.zeros((*pred.shape, 3), np.uint8)
    rgb[pred & label] = (255, 255, 255)
    rgb[~pred & label] = (230, 40, 40)
    rgb[pred & ~label] = (40, 200, 230)
    return rgb


def draw(image: np.ndarray, label: np.ndarray, pred: np.ndarray, stem: str, s: dict) -> bytes:
    """The three panels as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.0), dpi=100)
    panels = [
        (image, f"CrackForest {stem} (validation)"),
        (np.where(label[..., None], 255, 0).astype(np.uint8).repeat(3, -1), "ground truth"),
        (outcome_image(pred, label), "prediction: hit / miss (red) / false alarm (cyan)"),
    ]
    for ax, (im, title) in zip(axes, panels, strict=True):
        ax.imshow(im)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    if s["oii"] > 0:
        balance = "more misses than false alarms"
    elif s["oii"] < 0:
        balance = "more false alarms than misses"
    else:
        balance = "as many misses as false alarms"
    fig.suptitle(
        f"U-Net, DIBE loss: IoU {s['iou']:.2f}, PA {s['pa']:.2f}, OII {s['oii']:+.2f} ({balance})",
        fontsize=11,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=ROOT / "results" / "readme_figure" / "run")
    data_root = Path(os.environ.get("DIBE_JAX_DATA", ROOT.parent / "shared" / "data"))
    p.add_argument("--data", type=Path, default=data_root / "crackforest")
    p.add_argument("--tfds-dir", type=Path, default=ROOT / "results" / "tfds")
    p.add_argument("--image", default="110", help="validation image stem, 061-118")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if not (args.image.isdigit() and 61 <= int(args.image) <= 118):
        p.error(f"--image: expected a validation image 061-118, got {args.image!r}")
    args.image = f"{int(args.image):03d}"
    jpg = args.data / "image" / f"{args.image}.jpg"
    if not jpg.is_file():
        p.error(f"--data: expected CrackForest's image/ and groundTruth/ in {args.data}")

    from dibe_jax.data.images import read_image
    from dibe_jax.files import atomic_write_bytes

    train_run(args)
    image = read_image(jpg, mode="RGB")
    label = ground_truth(args.data, args.image)
    pred = predict_mask(args.workdir, image)
    s = scores(pred, label)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, draw(image, label, pred, args.image, s))
    print(
        f"{args.image}: IoU {s['iou']:.4f} PA {s['pa']:.4f} OII {s['oii']:+.4f} "
        f"(TP {s['tp']:.0f} FP {s['fp']:.0f} FN {s['fn']:.0f}); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
