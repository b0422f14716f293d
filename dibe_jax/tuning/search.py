"""OII-guided hyperparameter search (Appendix C of the DIBE paper) and its grid-search baseline.

Appendix C proposes to tune α (or β) by bisection on the Output Imbalance Index instead of a
grid: train once at the centre of the range, read the validation OII, and halve the range on
the side that moves OII towards a target interval ``(m0, m1)`` ((0.15, 0.25) on THC448) until
OII falls inside it. Table 6 compares that search with a 5-point grid over ``[0.1, 0.9]`` in
number of trainings, IoU and PA.

Both searches here are pure functions of a ``train_fn(value) -> metrics`` callback; they know
nothing about models, data or JAX. Direction (docs/conventions.md, "α and β"): ``alpha``
weights misses (label 1 predicted 0), so **raising α lowers OII** (``direction=-1``, the
default); ``beta`` weights false alarms, so raising β raises OII (``direction=+1``).

On a multi-class run the "OII" a search reads may be one class's OII (Eqs. 15-17, the class
against the rest) or the macro OII (their mean); the caller maps it to ``"oii"``
(:func:`dibe_jax.train.runs.search_metrics`). The direction rule holds per class for the
one-vs-rest losses (DIBE, Tversky, focal Tversky per class): one α weights the misses of
every class, so raising it lowers each class's OII and their mean. The classes share one
softmax, so this is the tendency of each class, not a guarantee for a rare class.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dibe_jax.errors import UserError

__all__ = ["SearchError", "SearchResult", "grid_search", "oii_search"]

TrainFn = Callable[[float], Mapping[str, Any]]

# Keys the searches add to every run; a metric with one of these names would be overwritten.
_RESERVED = ("value", "run")
# Relative slack when comparing a bisection step with the resolution (0.8 / 16 is not exact).
_REL_TOL = 1e-9
_METHOD_LABELS = {"oii_guidance": "OII guidance", "grid_search": "Grid search"}
_PARAM_LABELS = {"alpha": "α", "beta": "β"}


class SearchError(UserError):
    """A search stopped on an unusable ``train_fn`` result; ``partial`` keeps the runs made."""

    def __init__(self, message: str, partial: SearchResult) -> None:
        super().__init__(message)
        self.partial = partial


@dataclasses.dataclass
class SearchResult:
    """The runs of one hyperparameter search and the one it selects (Table 6, one row).

    Attributes:
      runs: one dict per call of ``train_fn`` in call order: ``value`` (the hyperparameter),
        every metric ``train_fn`` returned, and ``run`` (0-based index, the paper's
        α_0, α_1, ...).
      best: the selected run (an element of ``runs``).
      runs_needed: number of trainings made (``len(runs)``; Table 6's "times").
      converged: OII search: the best run's OII lies inside the open target interval.
        Grid search: every grid point was evaluated.
      method: ``"oii_guidance"`` or ``"grid_search"``.
      parameter: name of the tuned hyperparameter (``"alpha"``, ``"beta"``, ...).
      stop_reason: why the search stopped: ``"inside"``, ``"max_runs"``, ``"resolution"`` or
        ``"grid"``.
      settings: the search arguments (bounds, interval, direction, resolution, ...).
    """

    runs: list[dict[str, Any]]
    best: dict[str, Any]
    runs_needed: int
    converged: bool
    method: str
    parameter: str = "alpha"
    stop_reason: str = ""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def value(self) -> float:
        """The selected hyperparameter value, ``best["value"]``."""
        return float(self.best["value"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite metrics become ``null`` (read back as NaN)."""
        return {
            "method": self.method,
            "parameter": self.parameter,
            "runs_needed": self.runs_needed,
            "converged": self.converged,
            "stop_reason": self.stop_reason,
            "best_run": self.best["run"],
            "best": _jsonable(self.best),
            "runs": [_jsonable(r) for r in self.runs],
            "settings": _jsonable(self.settings),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to strict JSON (no ``NaN`` tokens); inverse of :meth:`from_json`."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        """Rebuild a result written by :meth:`to_dict`; ``best`` is again one of ``runs``."""
        runs = [_from_jsonable(r) for r in data["runs"]]
        best = next(r for r in runs if r["run"] == data["best_run"])
        settings = dict(data.get("settings", {}))
        for key in ("bounds", "interval"):
            if isinstance(settings.get(key), list):
                settings[key] = tuple(settings[key])
        return cls(
            runs=runs,
            best=best,
            runs_needed=int(data["runs_needed"]),
            converged=bool(data["converged"]),
            method=str(data["method"]),
            parameter=str(data.get("parameter", "alpha")),
            stop_reason=str(data.get("stop_reason", "")),
            settings=settings,
        )

    @classmethod
    def from_json(cls, text: str) -> SearchResult:
        """Parse the output of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` atomically and return the path.

        The JSON goes to a temporary file in the same folder, is flushed to disk, then moved
        over ``path`` with :func:`os.replace`, so a reader sees the old file or the new one,
        never half of one; the temporary file is removed if writing fails.
        """
        from dibe_jax.files import atomic_write_text

        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchResult:
        """Read a file written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def row(self) -> str:
        """This result as one Markdown row of :meth:`table`."""
        label = _METHOD_LABELS.get(self.method, self.method)
        if self.method == "oii_guidance" and not self.converged:
            label += " (OII not in interval)"
        b = self.best
        cells = [
            label,
            str(self.runs_needed),
            f"{self.value:.4g}",
            _fmt(b.get("iou")),
            _fmt(b.get("pa")),
            _fmt(b.get("oii")),
        ]
        return "| " + " | ".join(cells) + " |"

    def table(self, other: SearchResult | None = None) -> str:
        """Markdown comparison in the style of Table 6: method, runs, α, IoU, PA, OII.

        One row for this result and, when given, one for ``other`` (e.g. the grid search
        beside the OII-guided one). Metrics are printed to three decimals; a metric the
        ``train_fn`` did not return is printed as ``–``.
        """
        param = _PARAM_LABELS.get(self.parameter, self.parameter)
        lines = [
            f"| method | runs | {param} | IoU | PA | OII |",
            "|---|---:|---:|---:|---:|---:|",
            self.row(),
        ]
        if other is not None:
            lines.append(other.row())
        return "\n".join(lines)


def oii_search(
    train_fn: TrainFn,
    *,
    interval: tuple[float, float] = (0.15, 0.25),
    bounds: tuple[float, float] = (0.1, 0.9),
    max_runs: int | None = None,
    resolution: float | None = None,
    grid: int | None = None,
    direction: int = -1,
    start: float | None = None,
    parameter: str = "alpha",
) -> SearchResult:
    """OII-guided bisection for one hyperparameter (Appendix C, Fig. 16, Table 6).

    Starts at the centre of ``bounds`` (α = β = 0.5 on [0.1, 0.9] in the paper) or at
    ``start``, trains, and reads the validation OII. If OII lies inside the open interval
    ``(m0, m1)`` the search stops. Otherwise it keeps the half of the current bracket
    ``[lo, hi]`` on the side that moves OII towards the interval and trains at its centre:

    * ``direction=-1`` (raising the parameter **lowers** OII, e.g. α, which weights misses;
      per class, and so for the macro OII, with a one-vs-rest multi-class loss):
      OII ≥ m1 → ``[value, hi]``, OII ≤ m0 → ``[lo, value]``;
    * ``direction=+1`` (raising the parameter **raises** OII, e.g. β, which weights false
      alarms): the opposite halves.

    The paper's examples: DIBE_Dis on SegNet, α0 = 0.5 gives OII = 0.294 > 0.25, so
    α1 = 0.7 (centre of [α0, 0.9]), OII = 0.162, done in 2 runs; Tversky on U-Net,
    OII = 0.000 at 0.5, 0.022 at α1 = 0.3 (centre of [0.1, α0]) and 0.228 at α2 = 0.2
    (centre of [0.1, α1]), done in 3 runs.

    Run k (0-based) from the centre of ``bounds`` lies on the grid of spacing
    ``(hi - lo) / 2**(k+1)``. The search makes the next run only while that step (half the
    remaining bracket, i.e. the distance from the next value to the values already tried)
    is at least ``resolution``; so with ``bounds`` divided into ``grid = 2**m`` parts it
    visits only grid points and makes at most ``m`` runs, where a grid search needs
    ``2**m + 1`` (Appendix C). Bisection never evaluates the end points of ``bounds``.

    Args:
      train_fn: ``train_fn(value)`` trains (or evaluates) once with the hyperparameter set to
        ``value`` and returns metrics containing at least ``"oii"`` (the validation OII
        steered on: a binary run's, or a multi-class run's per-class or macro OII), usually
        also ``"iou"``, ``"pa"``, ``"seconds"``. Numbers are stored as floats, strings as is
        (e.g. ``"steered": "oii/crack"``).
      interval: target interval ``(m0, m1)`` for OII, open at both ends; (0.15, 0.25) is the
        paper's choice for THC448.
      bounds: search range ``(lo, hi)`` of the hyperparameter, ``lo < hi``.
      max_runs: stop after this many trainings (None: no limit besides ``resolution``).
      resolution: smallest step; default ``(hi - lo) / grid`` when ``grid`` is given, else
        ``(hi - lo) / 2**4`` (at most 4 runs). An explicit value overrides ``grid``.
      grid: number of equal parts of ``bounds`` whose points the search may visit (Appendix
        C's ``2**m``); only sets the default ``resolution``.
      direction: ``-1`` if raising the parameter lowers OII (α), ``+1`` if it raises it (β).
      start: first value to try (default: centre of ``bounds``); must lie in ``bounds``.
      parameter: name used in the result and in :meth:`SearchResult.table`.

    Returns:
      A :class:`SearchResult` with ``method="oii_guidance"``. ``best`` is the run inside the
      interval if there is one, else the run whose OII is nearest the interval (ties: higher
      IoU, then the earlier run); ``converged`` says whether ``best`` lies inside.

    Raises:
      ValueError: on invalid arguments (naming the argument), when a ``train_fn`` result has
        no ``"oii"`` or uses a reserved key (``"value"``, ``"run"``).
      SearchError: (a ``ValueError``) when OII is NaN or infinite; ``partial`` holds the
        runs made so far, including the offending one.

    Example (the paper's first worked example, Table 6, DIBE_Dis on SegNet):

    >>> paper = {0.5: {"oii": 0.294, "iou": 0.442, "pa": 0.713},
    ...          0.7: {"oii": 0.162, "iou": 0.477, "pa": 0.709}}
    >>> result = oii_search(lambda a: paper[round(a, 6)])
    >>> [round(run["value"], 6) for run in result.runs], result.converged
    ([0.5, 0.7], True)
    >>> print(result.table())
    | method | runs | α | IoU | PA | OII |
    |---|---:|---:|---:|---:|---:|
    | OII guidance | 2 | 0.7 | 0.477 | 0.709 | 0.162 |
    """
    lo, hi = _check_bounds(bounds)
    m0, m1 = _check_interval(interval)
    if direction not in (-1, 1):
        raise ValueError(f"direction must be -1 or +1, got {direction!r}")
    if max_runs is not None and (isinstance(max_runs, bool) or max_runs < 1):
        raise ValueError(f"max_runs must be None or an integer >= 1, got {max_runs!r}")
    if grid is not None and (isinstance(grid, bool) or int(grid) != grid or grid < 1):
        raise ValueError(f"grid must be None or an integer >= 1, got {grid!r}")
    if resolution is None:
        resolution = (hi - lo) / (grid if grid is not None else 2**4)
    elif not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a positive finite number, got {resolution!r}")
    if start is None:
        value = (lo + hi) / 2
    elif not (math.isfinite(start) and lo <= start <= hi):
        raise ValueError(f"start must lie in bounds [{lo}, {hi}], got {start!r}")
    else:
        value = float(start)

    settings = {
        "bounds": (lo, hi),
        "interval": (m0, m1),
        "direction": int(direction),
        "resolution": float(resolution),
        "max_runs": max_runs,
        "start": value,
    }
    runs: list[dict[str, Any]] = []
    cache: dict[float, dict[str, Any]] = {}

    def result(stop_reason: str) -> SearchResult:
        best = _closest_to_interval(runs, m0, m1) if runs else {}
        return SearchResult(
            runs=runs,
            best=best,
            runs_needed=len(runs),
            converged=bool(runs) and m0 < best["oii"] < m1,
            method="oii_guidance",
            parameter=parameter,
            stop_reason=stop_reason,
            settings=settings,
        )

    b_lo, b_hi = lo, hi
    while True:
        run = _evaluate(train_fn, value, len(runs), require="oii")
        runs.append(run)
        cache[value] = run
        oii = run["oii"]
        if not math.isfinite(oii):
            raise SearchError(
                f"train_fn returned a non-finite OII (oii={oii}) at {parameter}={value!r} "
                f"(run {run['run']}): the training diverged, or the steered OII is undefined "
                "(a class that is neither in the validation masks nor predicted)",
                result("non-finite oii"),
            )
        if m0 < oii < m1:
            return result("inside")
        if max_runs is not None and len(runs) >= max_runs:
            return result("max_runs")
        # OII too high (>= m1): move so that OII decreases, i.e. upwards when direction = -1.
        go_up = (oii >= m1) == (direction == -1)
        if go_up:
            b_lo = value
        else:
            b_hi = value
        step = (b_hi - b_lo) / 2
        nxt = (b_lo + b_hi) / 2
        if step < resolution * (1 - _REL_TOL) or nxt in cache:
            return result("resolution")
        value = nxt


def grid_search(
    train_fn: TrainFn,
    *,
    bounds: tuple[float, float] = (0.1, 0.9),
    points: int = 5,
    select: str = "iou",
    parameter: str = "alpha",
) -> SearchResult:
    """Grid search over ``points`` evenly spaced values, the baseline of Table 6.

    Appendix C: ``[a, b]`` divided into ``k`` equal parts gives ``α_i = a + i (b - a) / k``,
    ``i = 0..k``, so ``k + 1`` trainings including both ends; Table 6 uses 5 points on
    [0.1, 0.9] (0.1, 0.3, 0.5, 0.7, 0.9).

    Args:
      train_fn: as in :func:`oii_search`; here ``"oii"`` is optional.
      bounds: ``(lo, hi)``, ``lo < hi``; both ends are evaluated.
      points: number of values (``k + 1``), at least 2.
      select: metric to maximise when picking ``best`` (``"iou"`` or ``"pa"`` in Table 6).
        Runs where it is NaN are skipped; ties go to the earlier run.
      parameter: name used in the result and in :meth:`SearchResult.table`.

    Returns:
      A :class:`SearchResult` with ``method="grid_search"``, ``runs_needed == points``.

    Raises:
      ValueError: on invalid arguments, a result without ``select`` or with a reserved key,
        or when ``select`` is NaN in every run.
    """
    lo, hi = _check_bounds(bounds)
    if isinstance(points, bool) or int(points) != points or points < 2:
        raise ValueError(f"points must be an integer >= 2 (both ends are included), got {points!r}")
    points = int(points)
    runs = []
    for i in range(points):
        value = hi if i == points - 1 else lo + i * (hi - lo) / (points - 1)
        runs.append(_evaluate(train_fn, value, i, require=select))
    finite = [r for r in runs if isinstance(r[select], float) and not math.isnan(r[select])]
    if not finite:
        raise ValueError(f"select metric {select!r} is NaN in every run of the grid search")
    best = max(finite, key=lambda r: r[select])  # max keeps the first of equal values
    return SearchResult(
        runs=runs,
        best=best,
        runs_needed=len(runs),
        converged=True,
        method="grid_search",
        parameter=parameter,
        stop_reason="grid",
        settings={"bounds": (lo, hi), "points": points, "select": select},
    )


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    try:
        m0, m1 = (float(m) for m in interval)
    except (TypeError, ValueError) as e:
        raise ValueError(f"interval must be a pair (m0, m1) of numbers, got {interval!r}") from e
    if not (math.isfinite(m0) and math.isfinite(m1) and m0 < m1):
        raise ValueError(f"interval must be finite with m0 < m1, got {interval!r}")
    return m0, m1


def _evaluate(train_fn: TrainFn, value: float, index: int, *, require: str) -> dict[str, Any]:
    """Call ``train_fn`` once and build the run dict (value, metrics as floats, run index)."""
    metrics = train_fn(value)
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"train_fn must return a mapping of metrics, got {type(metrics).__name__} "
            f"at value={value!r}"
        )
    if require not in metrics:
        raise ValueError(
            f"train_fn result at value={value!r} has no {require!r} key (keys: {sorted(metrics)})"
        )
    run: dict[str, Any] = {"value": float(value)}
    for key, v in metrics.items():
        if key in _RESERVED:
            raise ValueError(f"train_fn result uses the reserved key {key!r}; rename it")
        if isinstance(v, str):
            run[key] = v
            continue
        try:
            run[key] = float(v)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"train_fn metric {key!r} at value={value!r} is not a number: {v!r}"
            ) from e
    run["run"] = index
    return run


def _closest_to_interval(runs: list[dict[str, Any]], m0: float, m1: float) -> dict[str, Any]:
    """Inside the open interval first, then smallest distance; ties: higher IoU, earlier run.

    Non-finite OII ranks last.
    """

    def key(r: dict[str, Any]) -> tuple[int, float, float, int]:
        oii = r["oii"]
        if not math.isfinite(oii):  # only in a SearchError's partial result
            return (2, math.inf, math.inf, r["run"])
        inside = m0 < oii < m1
        distance = 0.0 if inside else max(m0 - oii, oii - m1, 0.0)
        iou = r.get("iou", -math.inf)
        iou = -math.inf if not isinstance(iou, float) or math.isnan(iou) else iou
        return (0 if inside else 1, distance, -iou, r["run"])

    return min(runs, key=key)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.3f}"
    return "–"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _from_jsonable(run: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in run.items():
        if k == "run":
            out[k] = int(v)
        elif v is None:
            out[k] = math.nan
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v)
        else:
            out[k] = v
    return out
