"""The OII-guided search on real trainings, as ``dibe-jax oii-search`` runs it.

:func:`plan_search` checks a request completely before anything trains and returns a
:class:`SearchPlan`: the loss takes the searched hyperparameter, the steered OII exists for
the dataset's classes, the search's own arguments, and the training config at both ends of
the range (a loss declares each hyperparameter's range as an interval, so every value
between the two ends is valid too). :func:`run_search` then trains every value the search
asks for with each seed (:func:`dibe_jax.train.runs.train_seeds`, in
``WORKDIR/runs/<param>=<value>/seed<k>``), steers on the reporting statistic (the mean of the last 3
evaluations of every seed, :func:`dibe_jax.train.runs.search_metrics`) and writes
``oii_search.json`` (and ``grid_search.json`` with a grid).

The rules, in one place for the command line and the experiments:

* **direction**: ``alpha`` weights misses, so raising α lowers OII (``direction=-1``);
  ``beta`` weights false alarms, so raising β raises OII (``+1``) (docs/conventions.md, "α and β");
* **the other one**: with α searched, β = 1 − α if the loss takes β, unless fixed (and
  the same with the roles swapped), as in the paper's start α = β = 0.5
  (:func:`dibe_jax.train.runs.with_hyperparameter`);
* **what is steered on**: a binary run's OII; a multi-class run's macro OII (the default)
  or one class's OII (:func:`dibe_jax.train.runs.steer_target`).

Every refusal is a :class:`~dibe_jax.errors.ConfigError` whose one line names the flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dibe_jax.errors import ConfigError
from dibe_jax.tuning import search

if TYPE_CHECKING:
    from dibe_jax.train import Config

__all__ = ["PARAMS", "SearchPlan", "plan_search", "run_search", "steered_words"]

#: The hyperparameters a search can tune (each with its direction, see the module docstring).
PARAMS = {"alpha": -1, "beta": +1}


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """A checked search request (:func:`plan_search`).

    Attributes:
      base: the training setting; each searched value changes only ``param`` (and the other
        of α, β by the rule above).
      param: ``"alpha"`` or ``"beta"``.
      steer: the metrics key steered on (``"oii"``, ``"macro_oii"``, ``"oii/<class>"``).
      seeds: the seeds trained for each value.
      fixed: a value for the other of α, β that the rule should not set.
      interval: the target OII interval ``(m0, m1)``, open.
      bounds: the search range ``(lo, hi)``.
      max_runs: stop after this many values (None: until inside or at the resolution).
      grid: K to also run the (K+1)-point grid search.
    """

    base: Config
    param: str
    steer: str
    seeds: tuple[int, ...]
    fixed: Mapping[str, float]
    interval: tuple[float, float]
    bounds: tuple[float, float]
    max_runs: int | None = None
    grid: int | None = None

    @property
    def direction(self) -> int:
        """``-1`` if raising ``param`` lowers OII (α), ``+1`` if it raises it (β)."""
        return PARAMS[self.param]

    def config(self, value: float) -> Config:
        """The training config of one searched value."""
        from dibe_jax.train import runs

        return runs.with_hyperparameter(self.base, self.param, value, fixed=self.fixed)


def _pair(flag: str, pair: Sequence[float], names: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in pair)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"{flag}: expected two finite numbers {names} with the first smaller")
    return lo, hi


def _count(flag: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ConfigError(f"{flag}: expected an integer >= 1, got {value!r}")


def plan_search(
    base: Config,
    *,
    param: str = "alpha",
    steer: str | None = None,
    interval: Sequence[float] = (0.15, 0.25),
    bounds: Sequence[float] = (0.1, 0.9),
    seeds: int = 3,
    max_runs: int | None = None,
    grid: int | None = None,
    fixed: Mapping[str, float] | None = None,
) -> SearchPlan:
    """Check a search request before anything trains.

    Args:
      base: the training setting (its value of ``param`` is replaced by the search's).
      param: ``"alpha"`` or ``"beta"``; the loss must take it.
      steer: a multi-class dataset's class name (or metrics key) or ``"macro"`` (default);
        None for a binary dataset.
      interval, bounds, seeds, max_runs, grid: as ``dibe-jax oii-search`` (the paper's
        (0.15, 0.25) on [0.1, 0.9]; seeds per value).
      fixed: ``{"beta": 0.7}`` keeps β at 0.7 while α is searched (or the reverse).

    Raises:
      ConfigError: naming the flag or field and what was expected, before any training.
    """
    from dibe_jax import losses
    from dibe_jax.train import checks, runs

    if param not in PARAMS:
        raise ConfigError(f"--param: expected one of {', '.join(PARAMS)}, got {param!r}")
    checks.check_types(base)
    if base.loss.name not in losses.names():
        raise ConfigError(
            f"loss.name: unknown loss {base.loss.name!r}; known losses: {', '.join(losses.names())}"
        )
    classes = checks.dataset_classes(base)
    try:
        target = runs.steer_target(classes, steer)
    except ValueError as e:
        raise ConfigError(f"--steer: {e}") from None
    takes = losses.hyperparameters(base.loss.name)
    if param not in takes:
        task = "binary" if len(classes) == 2 else "multiclass"
        fits = [
            n
            for n in losses.names()
            if task in losses.info(n).tasks and param in losses.hyperparameters(n)
        ]
        raise ConfigError(
            f"--param: loss {base.loss.name!r} takes no hyperparameter {param!r} "
            f"(it takes: {', '.join(takes) or 'none'}); losses of {base.data.dataset!r} that "
            f"take it: {', '.join(fits)}"
        )
    fixed = dict(fixed or {})
    if param in fixed:
        raise ConfigError(f"--{param}: it is the searched hyperparameter (--param)")
    other = "beta" if param == "alpha" else "alpha"
    for name in (param, other):  # never overwritten silently by the search's rule
        if name in base.loss.params:
            how = "the search sets it" if name == param else f"the search sets it to 1 - {param}"
            raise ConfigError(
                f"loss.{name}: set to {base.loss.params[name]!r} in the config, but {how}; "
                f"drop it{'' if name == param else f', or fix it with --{name}'}"
            )
    _count("--seeds", seeds)
    _count("--max-runs", max_runs)
    _count("--grid", grid)
    plan = SearchPlan(
        base=base,
        param=param,
        steer=target,
        seeds=tuple(range(seeds)),
        fixed=fixed,
        interval=_pair("--interval", interval, "M0 M1"),
        bounds=_pair("--bounds", bounds, "LO HI"),
        max_runs=max_runs,
        grid=grid,
    )
    for value in plan.bounds:  # the ends; every value between is then in range too
        checks.validate(plan.config(value))
    return plan


def run_search(
    plan: SearchPlan,
    workdir: str | Path,
    *,
    log: Callable[[str], None] | None = print,
    overwrite: bool = False,
) -> tuple[search.SearchResult, search.SearchResult | None]:
    """Run the OII-guided search of ``plan`` (and its grid), training in ``workdir/runs``.

    A value trained before with the same setting is read back, not trained again, and one
    trained for fewer epochs is extended; training is replaced only with ``overwrite``. Writes
    ``workdir/oii_search.json`` and, with a grid, ``workdir/grid_search.json``.

    Returns:
      ``(guided, grid)``: the two results (``grid`` None without ``plan.grid``).
    """
    from dibe_jax.train import runs

    workdir = Path(workdir)

    def train_value(value: float) -> dict[str, Any]:
        result = runs.train_seeds(
            plan.config(value),
            workdir / "runs" / f"{plan.param}={value:g}",
            plan.seeds,
            log=log,
            overwrite=overwrite,
        )
        return runs.search_metrics(result, plan.steer)

    guided = search.oii_search(
        train_value,
        interval=plan.interval,
        bounds=plan.bounds,
        direction=plan.direction,
        parameter=plan.param,
        max_runs=plan.max_runs,
        grid=plan.grid,
    )
    guided.save(workdir / "oii_search.json")
    grid = None
    if plan.grid:
        grid = search.grid_search(
            train_value, bounds=plan.bounds, points=plan.grid + 1, parameter=plan.param
        )
        grid.save(workdir / "grid_search.json")
    return guided, grid


def steered_words(steer: str) -> str:
    """What the columns OII, IoU and PA of a search's table are, for people.

    >>> steered_words("oii/crack")
    "oii/crack (class crack's OII; IoU is iou/crack, PA precision/crack)"
    """
    if steer == "oii":
        return "oii (the foreground's OII)"
    if steer == "macro_oii":
        return "macro_oii (the mean per-class OII; IoU is miou, PA macro_precision)"
    name = steer.partition("/")[2]
    return f"{steer} (class {name}'s OII; IoU is iou/{name}, PA precision/{name})"
