"""Evaluation on a whole split, as the DIBE paper reports it (Sec. 4.3.3).

TP/FP/FN/TN are summed over every image of the split (and every device) by the jitted eval
step, then IoU (Eq. 22), PA (precision, Eq. 23), recall, OII (Eqs. 15-17) and FP/FN are
computed once from the sums (:func:`dibe_jax.metrics.summarize`). A multi-class run sums a
``[C, C]`` confusion matrix instead and reports mIoU, mAcc, pixel accuracy and per-class
scores (:func:`dibe_jax.train.reporting.multiclass_metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dibe_jax import metrics
from dibe_jax.train import reporting
from dibe_jax.train.batches import epoch_size, eval_batches
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.state import Built, build
from dibe_jax.train.step import read_totals, replicate, zero_totals
from dibe_jax.train.workdir import ResumeMeta, load_config

__all__ = ["evaluate", "evaluate_checkpoint", "summarize"]


def evaluate(built: Built, state, epoch: int) -> dict[str, Any]:
    """Dataset-level metrics of ``state`` on the evaluation split, at ``epoch``'s image size
    (0-based; it matters for a progressive-resizing schedule), with ``val_loss`` the mean
    loss per image."""
    size = epoch_size(built.config, epoch)
    totals = replicate(zero_totals(built.num_outputs), built.steps.replicated)
    for batch in eval_batches(built, epoch):
        totals = built.steps.evaluate(state, batch, totals, size=size)
    return summarize(read_totals(totals), built)  # exact counts past 2**31 pixels


def summarize(totals: dict[str, Any], built: Built) -> dict[str, Any]:
    """The evaluation record of :func:`~dibe_jax.train.step.read_totals`' host totals."""
    val_loss = totals["loss"] / max(1, totals["images"])
    if built.num_outputs > 1:
        return {**reporting.multiclass_metrics(totals["cm"], built.classes), "val_loss": val_loss}
    counts = metrics.Confusion(*(totals[k] for k in ("tp", "fp", "fn", "tn")))
    summary = metrics.summarize(counts)
    summary["val_loss"] = val_loss
    return summary


def evaluate_checkpoint(
    workdir: str | Path,
    *,
    split: str = "validation",
    best: bool = True,
    sources: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """Evaluate the best (or latest) checkpoint of a finished run on ``split``.

    Reads the run's ``config.json`` and checkpoints; writes nothing.
    """
    workdir = Path(workdir)
    config = load_config(workdir)
    config.data.eval_split = split
    class_names = None
    if sources is not None and (workdir / "model.json").is_file():  # in memory: the run says
        class_names = json.loads((workdir / "model.json").read_text()).get("class_names")
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints, create=False)
    built = build(config, sources, class_names=class_names, train=False)
    try:
        state, meta, step = ckpt.restore(built.state, best=best)
    except CheckpointError as e:
        if not best or type(e) is not CheckpointError:
            raise
        state, meta, step = ckpt.restore(built.state, best=False)
    finally:
        ckpt.close()
    state = replicate(state, built.steps.replicated)
    epoch = ResumeMeta.from_json(meta, step).epoch
    out = evaluate(built, state, max(0, epoch - 1))
    return {"split": split, "step": step, "epoch": epoch, **out}
