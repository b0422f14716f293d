"""What a run leaves in its workdir: ``metrics.jsonl``, TensorBoard events, PNG plots.

Binary runs record IoU, PA (precision), recall, OII and the counts; multi-class runs the
record of :func:`multiclass_metrics` (mIoU, mAcc, per-class IoU / precision / recall / OII,
the multi-class OII summary and the confusion matrix). Only process 0 writes (multi-host
runs); the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dibe_jax import metrics
from dibe_jax.files import atomic_write_text

__all__ = [
    "MetricsLog",
    "class_key",
    "eval_table",
    "multiclass_metrics",
    "plot_history",
    "postfix",
    "read_metrics",
    "summary_table",
]

#: Per-class values of a multi-class record, under ``"<metric>/<class>"``.
PER_CLASS = ("iou", "precision", "recall", "oii", "support")


def class_key(name: str) -> str:
    """A class name as a metrics key: lower case, runs of other characters as ``_``.

    >>> class_key("Blowhole"), class_key("hair line")
    ('blowhole', 'hair_line')
    """
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "class"


def multiclass_metrics(cm: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """The record of a multi-class evaluation from its confusion matrix ``[C, C]``.

    ``cm[t, p]`` counts the pixels of class ``t`` predicted ``p``, summed over the whole split
    (additive over batches, devices and processes). One-vs-rest per class (rows: labels):

    * ``miou``: mean IoU over the classes that occur (CDFL Eq. 7; background included), and
      ``miou_defects`` without the background (class 0);
    * ``macc``: mean per-class accuracy (recall; CDFL Eq. 8); ``pixel_accuracy``;
    * ``macro_precision``, ``macro_recall``;
    * the multi-class OII summary: ``macro_oii`` (mean per-class OII, > 0: classes are on
      average under-segmented) and ``mean_abs_oii`` (the imbalance whatever its sign); a
      pooled OII would be 0 by construction (:func:`dibe_jax.metrics.multiclass_summary`);
    * ``iou/<class>``, ``precision/<class>``, ``recall/<class>``, ``oii/<class>`` (OII Eqs.
      15-17 of the class against the rest) and ``support/<class>`` (its label pixels);
    * ``confusion_matrix``: ``cm`` as nested lists of ints.

    >>> r = multiclass_metrics([[90, 5, 5], [2, 8, 0], [1, 0, 9]], ["background", "crack", "spot"])
    >>> round(r["iou/crack"], 4), r["support/spot"], round(r["miou"], 4)
    (0.5333, 10, 0.669)
    """
    cm = np.asarray(cm, dtype=np.int64)
    names = [class_key(n) for n in class_names]
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"cm must be [{len(names)}, {len(names)}], got {cm.shape}")
    whole = metrics.multiclass_summary(cm)
    defects = metrics.multiclass_summary(cm, include_background=False)
    out: dict[str, Any] = {
        "miou": whole["miou"],
        "miou_defects": defects["miou"],
        "macc": whole["macc"],
        "pixel_accuracy": whole["pixel_accuracy"],
        "macro_precision": whole["macro_precision"],
        "macro_recall": whole["macro_recall"],
        "macro_oii": whole["macro_oii"],
        "mean_abs_oii": whole["mean_abs_oii"],
    }
    for metric in PER_CLASS:
        for i, name in enumerate(names):
            out[f"{metric}/{name}"] = whole[metric][i]
    out["confusion_matrix"] = cm.tolist()
    return out


def postfix(record: dict[str, Any]) -> dict[str, str]:
    """The progress bar's evaluation entries: IoU and OII, or mIoU and macro OII."""
    if not record:
        return {}
    if "miou" in record:
        return {"miou": f"{record['miou']:.3f}", "oii": f"{record['macro_oii']:+.3f}"}
    return {"iou": f"{record['iou']:.3f}", "oii": f"{record['oii']:+.3f}"}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """The records of ``workdir/metrics.jsonl``, one per evaluation (a line cut short by a
    kill is ignored); ``[]`` when there is none."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsLog:
    """``workdir/metrics.jsonl`` (one JSON object per evaluation) and TensorBoard events.

    tensorboardX is imported here, when a run first writes; where it is not installed
    (a machine with only the core numerical packages) the run writes ``metrics.jsonl`` and
    its plots without TensorBoard events, and says so once in the log.
    """

    def __init__(self, workdir: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                import logging

                logging.getLogger(__name__).warning(
                    "tensorboardX is not installed: %s gets metrics.jsonl and plots but no "
                    "TensorBoard events (pip install tensorboardX)",
                    workdir,
                )
            else:
                self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def read(self) -> list[dict[str, Any]]:
        """Every record written so far (complete lines only)."""
        return read_metrics(self.path.parent)

    def truncate_after(self, step: int) -> None:
        """Drop records newer than ``step`` (written after the checkpoint we resume from)."""
        if not self.enabled:
            return
        keep = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._tb is None:
            return
        for k, v in record.items():
            if k not in ("epoch", "step") and isinstance(v, int | float):
                self._tb.add_scalar(f"eval/{k}", v, record["step"])
        self._tb.flush()

    def scalar(self, name: str, value: float, step: int) -> None:
        if self._tb is not None:
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _per_class_names(record: dict[str, Any]) -> list[str]:
    return [k.split("/", 1)[1] for k in record if k.startswith("iou/")]


def _plot_multiclass(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per-class IoU (with mIoU), OII (with macro OII), precision and recall against epoch."""
    epochs = [r["epoch"] for r in records]
    names = _per_class_names(records[-1])
    paths = []
    panels = (
        ("iou", "IoU", "miou", "mIoU"),
        ("oii", "OII", "macro_oii", "macro OII"),
        ("precision", "precision", "macro_precision", "macro precision"),
        ("recall", "recall", "macc", "mAcc (mean recall)"),
    )
    for key, label, mean_key, mean_label in panels:
        fig = Figure(figsize=(6, 3.8), layout="constrained")
        ax = fig.add_subplot()
        for name in names:
            ax.plot(epochs, [r.get(f"{key}/{name}") for r in records], marker=".", label=name)
        ax.plot(
            epochs, [r.get(mean_key) for r in records], "k-", lw=2, marker="o", label=mean_label
        )
        if key == "oii":
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylim(-1, 1)
        else:
            ax.set_ylim(0, 1)
        ax.set(xlabel="epoch", ylabel=label, title=f"validation {label} per class")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def plot_history(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """IoU, PA and OII against epoch (the paper's Figs. 9-11), one PNG each; for a
    multi-class run per-class IoU, OII, precision and recall with their means."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if records and "miou" in records[0]:
        return _plot_multiclass(records, out_dir)
    paths = []
    epochs = [r["epoch"] for r in records]
    for key, label in (("iou", "IoU"), ("pa", "PA (precision)"), ("oii", "OII")):
        fig = Figure(figsize=(5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(epochs, [r.get(key) for r in records], marker="o")
        if key == "oii":
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylim(-1, 1)
        else:
            ax.set_ylim(0, 1)
        ax.set(xlabel="epoch", ylabel=label, title=f"validation {label}")
        ax.grid(alpha=0.3)
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _multiclass_summary_table(records: list[dict[str, Any]]) -> str:
    names = _per_class_names(records[-1])
    head = (
        "| epoch | step | train loss | val loss | mIoU | mAcc | macro OII | "
        + " | ".join(f"IoU {n}" for n in names)
        + " |\n|"
        + "---:|" * (7 + len(names))
    )
    rows = [
        f"| {r['epoch']} | {r['step']} | {_f(r['train_loss'], '.4f')} | "
        f"{_f(r['val_loss'], '.4f')} | {_f(r['miou'], '.4f')} | {_f(r['macc'], '.4f')} | "
        f"{_f(r['macro_oii'], '+.4f')} | "
        + " | ".join(_f(r.get(f"iou/{n}"), ".4f") for n in names)
        + " |"
        for r in records
    ]
    return "\n".join([head, *rows])


def summary_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of every evaluation (multi-class: mIoU, mAcc, macro OII, IoU per class)."""
    if records and "miou" in records[0]:
        return _multiclass_summary_table(records)
    head = (
        "| epoch | step | train loss | val loss | IoU | PA | recall | OII | FP/FN |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for r in records:
        x = r["fp_fn_ratio"]
        x = x if isinstance(x, str) else f"{x:.3g}"
        rows.append(
            f"| {r['epoch']} | {r['step']} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | "
            f"{r['iou']:.4f} | {r['pa']:.4f} | {r['recall']:.4f} | {r['oii']:+.4f} | {x} |"
        )
    return "\n".join([head, *rows])


def _multiclass_eval_table(out: dict[str, Any]) -> str:
    names = _per_class_names(out)
    summary = [
        ("mIoU", _f(out["miou"], ".4f")),
        ("mIoU (defects)", _f(out["miou_defects"], ".4f")),
        ("mAcc", _f(out["macc"], ".4f")),
        ("pixel accuracy", _f(out["pixel_accuracy"], ".4f")),
        ("macro OII", _f(out["macro_oii"], "+.4f")),
        ("mean |OII|", _f(out["mean_abs_oii"], ".4f")),
        ("loss", _f(out["val_loss"], ".4f")),
    ]
    width = max(len(k) for k, _ in summary)
    lines = [f"  {k:<{width}}  {v:>8}" for k, v in summary]
    cw = max(5, *(len(n) for n in names))
    lines += [
        "",
        f"  {'class':<{cw}}  {'IoU':>7}  {'prec.':>7}  {'recall':>7}  {'OII':>7}  support",
    ]
    for n in names:
        lines.append(
            f"  {n:<{cw}}  {_f(out[f'iou/{n}'], '.4f'):>7}  {_f(out[f'precision/{n}'], '.4f'):>7}"
            f"  {_f(out[f'recall/{n}'], '.4f'):>7}  {_f(out[f'oii/{n}'], '+.4f'):>7}"
            f"  {out[f'support/{n}']:,}"
        )
    return "\n".join(lines)


def eval_table(out: dict[str, Any]) -> str:
    """A rounded table of :func:`dibe_jax.train.evaluate_checkpoint`'s result (multi-class:
    the summary, then one row per class)."""
    if "miou" in out:
        return _multiclass_eval_table(out)
    rows = [
        ("IoU", f"{out['iou']:.4f}"),
        ("PA (precision)", f"{out['pa']:.4f}"),
        ("recall", f"{out['recall']:.4f}"),
        ("OII", f"{out['oii']:+.4f}"),
        (
            "FP/FN",
            out["fp_fn_ratio"]
            if isinstance(out["fp_fn_ratio"], str)
            else f"{out['fp_fn_ratio']:.3g}",
        ),
        ("loss", f"{out['val_loss']:.4f}"),
        ("TP", f"{out['tp']:,}"),
        ("FP", f"{out['fp']:,}"),
        ("FN", f"{out['fn']:,}"),
        ("TN", f"{out['tn']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    return "\n".join(f"  {k:<{width}}  {v:>{vwidth}}" for k, v in rows)
