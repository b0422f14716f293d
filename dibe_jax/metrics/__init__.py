"""Segmentation metrics: additive confusion counts, IoU / PA / recall / OII and friends."""

from dibe_jax.metrics.binary import (
    Confusion,
    ConfusionAccumulator,
    confusion_counts,
    dice_score,
    fp_fn_ratio,
    g_mean,
    iou,
    oii,
    pa,
    precision,
    recall,
    specificity,
    summarize,
)

__all__ = [
    "Confusion",
    "ConfusionAccumulator",
    "confusion_counts",
    "dice_score",
    "fp_fn_ratio",
    "g_mean",
    "iou",
    "oii",
    "pa",
    "precision",
    "recall",
    "specificity",
    "summarize",
]
