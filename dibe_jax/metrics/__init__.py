"""Segmentation metrics: additive confusion counts, IoU / PA / recall / OII and friends.

Binary counts (:mod:`~dibe_jax.metrics.binary`), multi-class confusion matrices with
per-class OII, mIoU and mAcc (:mod:`~dibe_jax.metrics.multiclass`), and ROC AUC / G-mean for
binary maps (:mod:`~dibe_jax.metrics.ranking`).
"""

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
from dibe_jax.metrics.multiclass import (
    ConfusionMatrixAccumulator,
    class_counts,
    confusion_matrix,
    mean_accuracy,
    mean_iou,
    multiclass_summary,
    per_class_metrics,
)
from dibe_jax.metrics.ranking import (
    ScoreHistogram,
    g_mean_at,
    roc_auc,
    roc_auc_from_histograms,
    score_histograms,
)

__all__ = [
    "Confusion",
    "ConfusionAccumulator",
    "ConfusionMatrixAccumulator",
    "ScoreHistogram",
    "class_counts",
    "confusion_counts",
    "confusion_matrix",
    "dice_score",
    "fp_fn_ratio",
    "g_mean",
    "g_mean_at",
    "iou",
    "mean_accuracy",
    "mean_iou",
    "multiclass_summary",
    "oii",
    "pa",
    "per_class_metrics",
    "precision",
    "recall",
    "roc_auc",
    "roc_auc_from_histograms",
    "score_histograms",
    "specificity",
    "summarize",
]
