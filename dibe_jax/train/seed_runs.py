"""The statistics a setting trained over several seeds is reported by.

With the paper's constant learning rate, one run's validation IoU moves by 0.1-0.2 between
evaluations, so a single final number cannot rank losses that differ by 0.01. Each setting
is therefore reported over at least 3 seeds (docs/conventions.md, "Reporting trained
results"), as :class:`SeedRuns` summarises them:

* **last-3**: mean ± sample standard deviation of the last 3 evaluations of every seed,
  pooled (3 × seeds values): the number held against the paper's single value;
* **final**: mean ± sd over seeds of each seed's last evaluation;
* **best**: mean ± sd over seeds of each seed's best evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "BINARY_SUMMARY",
    "LAST_N",
    "MULTICLASS_SUMMARY",
    "SeedRuns",
    "Stat",
    "fmt",
    "stat",
]

#: Evaluations per seed that the reported statistic averages.
LAST_N = 3
#: What :meth:`SeedRuns.summary` reports of a binary run.
BINARY_SUMMARY = ("iou", "pa", "oii", "recall")
#: What it reports of a multi-class run before the per-class keys.
MULTICLASS_SUMMARY = ("miou", "miou_defects", "macc", "macro_oii", "mean_abs_oii")


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (0 for one value) and number of values."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return fmt(self)


def stat(values: Iterable[float | None]) -> Stat:
    """:class:`Stat` of the finite values (NaN mean if there are none).

    >>> s = stat([0.5, 0.7, None])
    >>> round(s.mean, 6), round(s.std, 6), s.n
    (0.6, 0.141421, 2)
    """
    xs = [float(v) for v in values if _finite(v)]
    if not xs:
        return Stat(math.nan, math.nan, 0)
    return Stat(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs))


def fmt(s: Stat | float | None, digits: int = 3, *, signed: bool = False) -> str:
    """``0.512 ± 0.034`` for a :class:`Stat`, ``0.512`` for a number, ``–`` for nothing.

    >>> fmt(Stat(0.5123, 0.0341, 9)), fmt(-0.25, 2, signed=True), fmt(None)
    ('0.512 ± 0.034', '-0.25', '–')
    """
    sign = "+" if signed else ""
    if isinstance(s, Stat):
        if s.n == 0:
            return "–"
        return f"{s.mean:{sign}.{digits}f} ± {s.std:.{digits}f}"
    if s is None or not math.isfinite(float(s)):
        return "–"
    return f"{float(s):{sign}.{digits}f}"


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass
class SeedRuns:
    """Every seed's evaluation records of one setting, and their summaries.

    Attributes:
      runs: per seed, every evaluation record (``metrics.jsonl`` lines) in order.
      seeds: the seeds, in the order of ``runs``.
      wall_seconds: training wall time of all seeds (measured when they were trained).
    """

    runs: list[list[dict[str, Any]]]
    seeds: list[int]
    wall_seconds: float = 0.0

    def last3(self, key: str = "iou") -> Stat:
        """The reported statistic: the last :data:`LAST_N` evaluations of every seed, pooled."""
        return stat(r.get(key) for recs in self.runs for r in recs[-LAST_N:])

    def final(self, key: str = "iou") -> Stat:
        return stat(recs[-1].get(key) for recs in self.runs if recs)

    def best(self, key: str = "iou") -> Stat:
        return stat(
            max((r.get(key) for r in recs if _finite(r.get(key))), default=None)
            for recs in self.runs
        )

    def curve(self, key: str = "iou") -> tuple[list[int], list[Stat]]:
        """Epochs and, for each, the :class:`Stat` of ``key`` over seeds."""
        by_epoch: dict[int, list[Any]] = {}
        for recs in self.runs:
            for r in recs:
                by_epoch.setdefault(int(r["epoch"]), []).append(r.get(key))
        epochs = sorted(by_epoch)
        return epochs, [stat(by_epoch[e]) for e in epochs]

    def evaluations_used(self) -> int:
        """How many evaluations (over all seeds) :meth:`last3` averages."""
        return sum(len(recs[-LAST_N:]) for recs in self.runs)

    def summary_keys(self) -> tuple[str, ...]:
        """The record keys :meth:`summary` reports by default: a binary run's IoU, PA, OII
        and recall; a multi-class run's (records with ``miou``) mIoU and its relatives, then
        IoU, OII, precision and recall of every class in its records.

        >>> SeedRuns([[{"epoch": 1, "iou": 0.5}]], [0]).summary_keys()
        ('iou', 'pa', 'oii', 'recall')
        >>> rec = {"epoch": 1, "miou": 0.4, "iou/background": 0.9, "iou/crack": 0.1}
        >>> SeedRuns([[rec]], [0]).summary_keys()[5:7]
        ('iou/background', 'iou/crack')
        """
        first = next((r for recs in self.runs for r in recs), {})
        if "miou" not in first:
            return BINARY_SUMMARY
        classes = [k.split("/", 1)[1] for k in first if k.startswith("iou/")]
        per_class = [f"{m}/{c}" for m in ("iou", "oii", "precision", "recall") for c in classes]
        return MULTICLASS_SUMMARY + tuple(per_class)

    def summary(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """``{key}_{last3|final|best}: [mean, std, n]`` of every key in ``keys`` (default:
        :meth:`summary_keys`), with the seeds and the wall time."""
        out: dict[str, Any] = {"seeds": self.seeds, "wall_seconds": round(self.wall_seconds, 1)}
        for key in self.summary_keys() if keys is None else keys:
            for name in ("last3", "final", "best"):
                s = getattr(self, name)(key)
                out[f"{key}_{name}"] = [s.mean, s.std, s.n]
        return out
