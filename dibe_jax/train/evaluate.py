"""Evaluation on a whole split, as the DIBE paper reports it (Sec. 4.3.3).

TP/FP/FN/TN are summed over every image of the split (and every device) by the jitted eval
step, then IoU (Eq. 22), PA (precision, Eq. 23), recall, OII (Eqs. 15-17) and FP/FN are
computed once from the sums (:func:`dibe_jax.metrics.summarize`). A multi-class run sums a
``[C, C]`` confusion matrix instead and reports mIoU, mAcc, pixel accuracy and per-class
scores (:func:`dibe_jax.train.reporting.multiclass_metrics`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dibe_jax import metrics
from dibe_jax.train import checks, reporting
from dibe_jax.train.batches import epoch_size, eval_batches
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.config import Config, ConfigError
from dibe_jax.train.state import Built, build
from dibe_jax.train.step import read_totals, replicate, zero_totals
from dibe_jax.train.workdir import ResumeMeta, load_config, resolve

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


def _check_same_task(config: Config, info: Mapping[str, Any], workdir: Path) -> None:
    """ConfigError unless ``config.data.dataset`` has the classes and channels of the run."""
    from dibe_jax import datasets

    classes = checks.dataset_classes(config)
    run_classes = tuple(info.get("class_names") or checks.BINARY_CLASSES)
    outputs = int(info.get("num_classes", 1))
    same = checks.model_outputs(classes) == outputs and (outputs == 1 or classes == run_classes)
    label = config.data.dataset
    if not same:
        raise ConfigError(
            f"--dataset {label}: its classes ({', '.join(classes)}) differ from those of the "
            f"run in {workdir} ({', '.join(run_classes)})"
        )
    d = config.data
    if datasets.is_folder(d.dataset):
        ds = datasets.prepare(d.dataset, manual_dir=d.manual_dir, val_fraction=d.val_fraction)
        channels = ds.channels
    else:
        source = datasets.data_source(
            d.dataset, d.eval_split, data_dir=d.data_dir, manual_dir=d.manual_dir
        )
        image = np.asarray(source[0]["image"])
        channels = int(image.shape[-1]) if image.ndim == 3 else 1
    if "in_channels" in info and channels != int(info["in_channels"]):
        raise ConfigError(
            f"--dataset {label}: its images have {channels} channel(s) but the run in {workdir} "
            f"was trained on {info['in_channels']}"
        )


def evaluate_checkpoint(
    workdir: str | Path,
    *,
    split: str = "validation",
    best: bool = True,
    sources: Mapping[str, Sequence] | None = None,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate the best (or latest) checkpoint of a finished run on ``split``.

    Reads the run's ``config.json`` and checkpoints; writes nothing (a TFDS dataset is built
    only where the run, or ``data_dir``, says, never in a folder relative to the current
    directory).

    Args:
      dataset: evaluate on another dataset (``NAME[/CONFIG]``, or ``folder`` with
        ``manual_dir``) than the run's; it must have the run's classes (any binary dataset for
        a binary run) and image channels. Default: the run's own.
      data_dir, manual_dir: where that dataset lives; without ``dataset``, they replace the
        run's stored folders (a run moved to another machine).

    Raises:
      ConfigError: the dataset's classes or channels differ from the run's (one line naming
        both), or the run stores a relative folder that does not exist from here.
    """
    workdir = Path(workdir)
    config = load_config(workdir)
    config.data.eval_split = split
    info_path = workdir / "model.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if dataset is not None:
        config.data.dataset = dataset
    if dataset is not None or data_dir is not None:
        config.data.data_dir = os.fspath(data_dir) if data_dir is not None else None
    if dataset is not None or manual_dir is not None:
        config.data.manual_dir = os.fspath(manual_dir) if manual_dir is not None else None
    for field in ("data_dir", "manual_dir"):  # runs from before paths were stored absolute
        value = getattr(config.data, field)
        if value is not None and not os.path.isabs(value) and not os.path.isdir(value):
            raise ConfigError(
                f"data.{field}: {workdir / 'config.json'} stores the relative folder {value!r}, "
                f"which does not exist from {os.getcwd()}; run from the directory the run was "
                f"trained in or pass --{field.replace('_', '-')}"
            )
    if sources is None:
        config = resolve(config)
        if dataset is not None:
            _check_same_task(config, info, workdir)
    class_names = None
    if sources is not None and info:  # in memory: the run says
        class_names = info.get("class_names")
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints, create=False)
    built = build(config, sources, class_names=class_names, train=False)
    state, epoch, step = restore_for_eval(ckpt, built, best=best)
    out = evaluate(built, state, max(0, epoch - 1))
    return {"split": split, "step": step, "epoch": epoch, **out}


def restore_for_eval(ckpt: Checkpoints, built, *, best: bool = True) -> tuple[Any, int, int]:
    """Restore ``built``'s state from ``ckpt`` (then closed) for evaluation: the best
    checkpoint by validation IoU, or the latest when none was ranked (``best=False``: the
    latest). Returns ``(replicated state, epoch, step)``."""
    try:
        try:
            state, meta, step = ckpt.restore(built.state, best=best)
        except CheckpointError as e:
            if not best or type(e) is not CheckpointError:
                raise
            state, meta, step = ckpt.restore(built.state, best=False)
    finally:
        ckpt.close()
    epoch = ResumeMeta.from_json(meta, step).epoch
    return replicate(state, built.steps.replicated), epoch, step
