"""Calibrate a trained run's decision threshold on a split, and record it in the run.

:func:`calibrate` runs the run's best (or latest) checkpoint once over a split (the
validation split by default), summing the logit histograms of defect and background pixels
on the device (:func:`dibe_jax.metrics.threshold.logit_histograms`), then picks the
threshold that brings OII to 0 or maximises IoU from the cumulative sums
(:func:`~dibe_jax.metrics.threshold.choose_threshold`: no pass per candidate). The result
goes to ``workdir/threshold.json`` (written atomically) with the checkpoint step it was
calibrated for, the metrics at logit 0 and at the threshold, and a digest of the run's
``config.json``.

:func:`recorded_threshold` gives ``eval`` and ``predict`` the threshold of a checkpoint:
the recorded one when it was calibrated for that very checkpoint (same step, same
``config.json``), else none with the reason (a resumed or replaced run must be calibrated
again). :func:`metrics_at_thresholds` evaluates a checkpoint at given thresholds in one pass.

Binary runs only. A multi-class run predicts ``argmax_c`` of its softmax logits: a logit
threshold per class would give a pixel several labels or none, so one-vs-rest thresholds do
not define a prediction of the losses' softmax model; :func:`calibrate` refuses such a run.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dibe_jax import metrics
from dibe_jax.errors import UserError
from dibe_jax.files import atomic_write_json
from dibe_jax.metrics import threshold as thresholds
from dibe_jax.train.batches import device_preprocess, epoch_size, eval_batches
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.config import ConfigError
from dibe_jax.train.evaluate import restore_for_eval
from dibe_jax.train.state import build
from dibe_jax.train.step import replicate
from dibe_jax.train.workdir import load_config

__all__ = [
    "THRESHOLD_FILE",
    "Calibration",
    "RecordedThreshold",
    "calibrate",
    "metrics_at_thresholds",
    "recorded_threshold",
]

#: The file in a run folder that records its calibrated threshold.
THRESHOLD_FILE = "threshold.json"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` found and wrote: the choice, the checkpoint and the file."""

    choice: thresholds.ThresholdChoice
    split: str
    step: int
    epoch: int
    path: Path | None


@dataclasses.dataclass(frozen=True)
class RecordedThreshold:
    """The threshold to apply to one checkpoint (``value`` None: logit 0) and why."""

    value: float | None
    reason: str


def _digest(workdir: Path) -> str:
    return hashlib.sha256((workdir / "config.json").read_bytes()).hexdigest()


def _model_info(workdir: Path) -> dict[str, Any]:
    path = workdir / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: was {workdir} written by dibe-jax train?")
    return json.loads(path.read_text())


def _check_binary(workdir: Path, what: str) -> None:
    info = _model_info(workdir)
    if int(info.get("num_classes", 1)) > 1:
        names = ", ".join(info.get("class_names", []))
        raise ConfigError(
            f"--workdir {workdir}: a multi-class run ({names}) predicts the argmax of its "
            f"softmax logits, which one logit threshold per class cannot express; {what} "
            "is for binary runs"
        )


def _restored(workdir: Path, split: str, best: bool, sources):
    """``(built, state, epoch, step)``: the run's model restored, its ``split`` ready."""
    config = load_config(workdir)
    config.data.eval_split = split
    class_names = None
    if sources is not None:
        class_names = _model_info(workdir).get("class_names")
    ckpt_dir = workdir / "checkpoints"
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"--workdir {workdir}: no checkpoints/ folder (nothing trained)")
    ckpt = Checkpoints(ckpt_dir, keep=config.keep_checkpoints, create=False)
    try:
        built = build(config, sources, class_names=class_names, train=False)
    except BaseException:
        ckpt.close()
        raise
    state, epoch, step = restore_for_eval(ckpt, built, best=best)
    return built, state, epoch, step


def _split_pass(built, state, epoch: int, per_batch: Callable, init, extra):
    """Sum ``per_batch(logits, mask, where, extra)`` over the evaluation split on the device.

    ``logits`` are the eval-mode model's ``[B, H, W, 1]``, ``where`` masks the padding rows;
    one compilation per batch shape, no host round-trip until the end.
    """
    graphdef = built.eval_graphdef
    preprocess = device_preprocess(built.config)
    size = epoch_size(built.config, epoch)

    @functools.partial(jax.jit, static_argnames=("size",), out_shardings=built.steps.replicated)
    def step(state, batch, acc, extra, *, size=None):
        image, mask = batch["image"], batch["mask"]
        if image.dtype == jnp.uint8:
            image, mask = preprocess.evaluate(image, mask, size)
        model, _ = nnx.merge(graphdef, state)
        logits = model(image)
        where = jnp.broadcast_to(batch["valid"][:, None, None, None], logits.shape)
        return jax.tree.map(jnp.add, acc, per_batch(logits, mask, where, extra))

    acc = replicate(init, built.steps.replicated)
    for batch in eval_batches(built, epoch):  # the evaluation's own batches
        acc = step(state, batch, acc, extra, size=size)
    return jax.device_get(acc)


def _histograms(logits, mask, where, edges):
    return tuple(thresholds.logit_histograms(logits, mask, edges, where=where))


def calibrate(
    workdir: str | Path,
    *,
    target: str = "oii",
    split: str = "validation",
    best: bool = True,
    sources: Mapping[str, Sequence] | None = None,
    edges: np.ndarray | None = None,
    write: bool = True,
) -> Calibration:
    """Choose a binary run's logit threshold on ``split`` and record it in ``workdir``.

    Args:
      workdir: a finished (or interrupted) training run.
      target: ``"oii"`` (|OII| smallest) or ``"iou"`` (IoU largest), see
        :func:`~dibe_jax.metrics.threshold.choose_threshold`.
      split: the split to calibrate on (the validation split: never the one you report).
      best: the best checkpoint (the latest if there is none); False: the latest.
      sources: in-memory splits instead of the run's dataset (as
        :func:`~dibe_jax.train.evaluate_checkpoint`).
      edges: candidate thresholds (default :func:`~dibe_jax.metrics.threshold.threshold_edges`).
      write: write ``workdir/threshold.json`` (atomically; it replaces an earlier one).

    Raises:
      UserError: an unknown target, a multi-class run, no run or no checkpoint in
        ``workdir``, an unknown split; before anything is compiled or written.
    """
    if target not in thresholds.TARGETS:
        raise ConfigError(
            f"--target: expected one of {', '.join(thresholds.TARGETS)}, got {target!r}"
        )
    workdir = Path(workdir)
    load_config(workdir)  # a run folder at all
    _check_binary(workdir, "calibration")
    edges = thresholds.threshold_edges() if edges is None else np.asarray(edges, np.float32)
    built, state, epoch, step = _restored(workdir, split, best, sources)
    init = (jnp.zeros(edges.size + 1, jnp.int32), jnp.zeros(edges.size + 1, jnp.int32))
    hist = _split_pass(built, state, max(0, epoch - 1), _histograms, init, edges)
    choice = thresholds.choose_threshold(metrics.ScoreHistogram(*hist), edges, target=target)
    path = None
    if write:
        path = atomic_write_json(
            workdir / THRESHOLD_FILE,
            {
                "threshold": choice.threshold,
                "target": target,
                "split": split,
                "step": int(step),
                "epoch": int(epoch),
                "config_sha256": _digest(workdir),
                "candidates": {
                    "low": float(edges[0]),
                    "high": float(edges[-1]),
                    "count": int(edges.size),
                },
                "at_zero": choice.at_zero,
                "at_threshold": choice.at_threshold,
                "calibrated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
        )
    return Calibration(choice, split, int(step), int(epoch), path)


def read_threshold_file(workdir: str | Path) -> dict[str, Any] | None:
    """``workdir/threshold.json`` as a dict, None if there is none; ConfigError if it is not
    a threshold record."""
    path = Path(workdir) / THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        value = float(record["threshold"])
        int(record["step"])
        str(record["config_sha256"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"{path} is not a threshold record ({type(e).__name__}: {e}); run "
            "`dibe-jax calibrate` again or delete it"
        ) from None
    if not np.isfinite(value):
        raise ConfigError(f"{path}: threshold {value} is not finite")
    return record


def recorded_threshold(workdir: str | Path, step: int | None) -> RecordedThreshold:
    """The calibrated threshold of the checkpoint at ``step``, or None with the reason.

    It applies only to the checkpoint it was calibrated for: same step and an unchanged
    ``config.json`` (a resumed, extended or replaced run needs a new calibration).
    """
    workdir = Path(workdir)
    record = read_threshold_file(workdir)
    if record is None:
        return RecordedThreshold(None, f"logit 0 (the default; no {THRESHOLD_FILE} in the run)")
    if step is not None and int(record["step"]) != int(step):
        return RecordedThreshold(
            None,
            f"logit 0 (the default; {THRESHOLD_FILE} was calibrated for the checkpoint of step "
            f"{record['step']}, this one is step {step}: run `dibe-jax calibrate` again)",
        )
    if record["config_sha256"] != _digest(workdir):
        return RecordedThreshold(
            None,
            f"logit 0 (the default; config.json changed since {THRESHOLD_FILE} was written: run "
            "`dibe-jax calibrate` again)",
        )
    value = float(record["threshold"])
    return RecordedThreshold(
        value,
        f"logit {value:g} (calibrated on the {record.get('split', '?')} split for "
        f"{record.get('target', '?')}, {THRESHOLD_FILE})",
    )


def _counts(logits, mask, where, values):
    def at(t):
        return tuple(metrics.confusion_counts(logits, mask, where=where, threshold=t).sum())

    return jax.vmap(at)(values)


def metrics_at_thresholds(
    workdir: str | Path,
    values: Sequence[float],
    *,
    split: str = "validation",
    best: bool = True,
    sources: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """Dataset-level metrics of the best (or latest) checkpoint at each logit threshold in
    ``values`` (``ŷ = [logit ≥ t]``), from one pass over ``split``; writes nothing.

    Returns:
      ``{"split", "step", "epoch", "rows": [summarize(...) + {"threshold": t}, ...]}``.
    """
    workdir = Path(workdir)
    _check_binary(workdir, "a logit threshold")
    values = np.asarray(values, np.float32)
    if values.ndim != 1 or not values.size or not np.all(np.isfinite(values)):
        raise UserError(f"thresholds must be finite numbers, got {values.tolist()}")
    built, state, epoch, step = _restored(workdir, split, best, sources)
    init = tuple(jnp.zeros(values.size, jnp.int32) for _ in range(4))
    counts = _split_pass(built, state, max(0, epoch - 1), _counts, init, values)
    rows = []
    for i, t in enumerate(values.tolist()):
        row = metrics.summarize(metrics.Confusion(*(int(c[i]) for c in counts)))
        rows.append({"threshold": t, **row})
    return {"split": split, "step": int(step), "epoch": int(epoch), "rows": rows}


def rows_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """A Markdown table of named metric rows (:func:`~dibe_jax.metrics.summarize` dicts):
    threshold, IoU, PA, recall, OII, FP and FN."""
    lines = [
        "| decision | IoU | PA | recall | OII | FP | FN |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['iou']:.4f} | {r['pa']:.4f} | {r['recall']:.4f} | "
            f"{r['oii']:+.4f} | {r['fp']:,} | {r['fn']:,} |"
        )
    return "\n".join(lines)
