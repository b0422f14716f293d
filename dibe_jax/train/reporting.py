"""What a run leaves in its workdir: ``metrics.jsonl``, TensorBoard events, PNG plots.

Only process 0 writes (multi-host runs); the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dibe_jax.files import atomic_write_text

__all__ = ["MetricsLog", "eval_table", "plot_history", "read_metrics", "summary_table"]


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
    """``workdir/metrics.jsonl`` (one JSON object per evaluation) and TensorBoard events."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

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
        for k, v in record.items():
            if k not in ("epoch", "step") and isinstance(v, int | float):
                self._tb.add_scalar(f"eval/{k}", v, record["step"])
        self._tb.flush()

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.enabled:
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_history(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """IoU, PA and OII against epoch (the paper's Figs. 9-11), one PNG each."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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


def summary_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of every evaluation."""
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


def eval_table(out: dict[str, Any]) -> str:
    """A rounded two-column table of :func:`dibe_jax.train.evaluate_checkpoint`'s result."""
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
