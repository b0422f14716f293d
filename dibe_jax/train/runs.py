"""Runs over several seeds: training them, and what the OII-guided search reads of them.

Each setting is reported over at least 3 seeds by the statistics of
:mod:`dibe_jax.train.seed_runs` (re-exported here): the last-3 statistic (the last 3
evaluations of every seed, pooled) is the number held against the paper's single value,
and the one :func:`search_metrics` hands to the OII-guided search (a binary run's OII, or
on a multi-class run one class's OII or the macro OII, as :func:`steer_target` resolves it).

:func:`train_seeds` trains one config once per seed in ``workdir/seed<k>`` (a run finished
earlier with the same setting is read back, an interrupted one resumes, one asked for more
epochs is extended, one of another setting is refused unless ``overwrite``) and returns a
:class:`SeedRuns`. :func:`with_hyperparameter` turns a
hyperparameter value into the config of a run, with the one β rule of the project.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dibe_jax.files import atomic_write_json
from dibe_jax.train.config import Config
from dibe_jax.train.reporting import class_key, read_metrics
from dibe_jax.train.seed_runs import (
    BINARY_SUMMARY,
    LAST_N,
    MULTICLASS_SUMMARY,
    SeedRuns,
    Stat,
    fmt,
    stat,
)

__all__ = [
    "BINARY_SUMMARY",
    "LAST_N",
    "MULTICLASS_SUMMARY",
    "SeedRuns",
    "Stat",
    "finished_records",
    "fmt",
    "recorded_wall_seconds",
    "search_metrics",
    "stat",
    "steer_target",
    "train_seeds",
    "with_hyperparameter",
]

#: The steered summary of a multi-class run: the mean per-class OII (``macro_oii``).
MACRO = "macro"


def steer_target(classes: Sequence[str], steer: str | None = None) -> str:
    """The record key an OII-guided search steers on, for a dataset with ``classes``.

    * binary (2 classes): ``"oii"``, the foreground's OII; ``steer`` must be ``None``;
    * multi-class: ``"macro_oii"`` (the mean per-class OII) for ``steer`` ``None`` or
      ``"macro"``, else ``"oii/<class_key>"`` for the class ``steer`` names, by its display
      name or its :func:`~dibe_jax.train.reporting.class_key` (background included).

    >>> steer_target(("background", "crack"))
    'oii'
    >>> names = ("background", "Hair line", "spot")
    >>> steer_target(names), steer_target(names, "hair_line"), steer_target(names, "spot")
    ('macro_oii', 'oii/hair_line', 'oii/spot')
    >>> steer_target(names, "crack")
    Traceback (most recent call last):
    ...
    ValueError: unknown class 'crack'; valid: macro, background, hair_line, spot

    Raises:
      ValueError: ``steer`` given for a binary dataset, or naming no class (one line that
        lists the valid names).
    """
    classes = tuple(classes)
    if len(classes) == 2:
        if steer is not None:
            raise ValueError(
                f"{steer!r}: a binary dataset ({', '.join(classes)}) is steered on its "
                "foreground OII only; leave the option out"
            )
        return "oii"
    if steer is None or steer == MACRO:
        return "macro_oii"
    for name in classes:
        if steer in (name, class_key(name)):
            return f"oii/{class_key(name)}"
    valid = ", ".join([MACRO, *(class_key(n) for n in classes)])
    raise ValueError(f"unknown class {steer!r}; valid: {valid}")


def _steered_keys(steer: str) -> tuple[str, str, str]:
    """The record keys reported as OII, IoU and PA when steering on ``steer``."""
    if steer == "oii":
        return "oii", "iou", "pa"
    if steer == "macro_oii":
        return "macro_oii", "miou", "macro_precision"
    metric, sep, name = steer.partition("/")
    if metric != "oii" or not sep or not name:
        raise ValueError(f"steer must be 'oii', 'macro_oii' or 'oii/<class>', got {steer!r}")
    return steer, f"iou/{name}", f"precision/{name}"


def search_metrics(result: SeedRuns, steer: str = "oii") -> dict[str, Any]:
    """What a hyperparameter search steers on: the last-3 mean over seeds of OII, IoU
    and PA (with their spreads), the seeds and evaluations used, and the wall time.

    ``steer`` (from :func:`steer_target`) says which record keys are OII, IoU and PA:
    ``"oii"``: a binary run's ``oii``, ``iou``, ``pa``; ``"oii/<c>"``: class ``c``'s
    ``oii/<c>``, ``iou/<c>``, ``precision/<c>``; ``"macro_oii"``: ``macro_oii``, ``miou``,
    ``macro_precision``. A multi-class result also says ``"steered": steer``.

    >>> recs = [{"epoch": e, "oii/crack": o, "iou/crack": 0.5, "precision/crack": 0.6}
    ...         for e, o in ((1, 0.9), (2, 0.3), (3, 0.2), (4, 0.1))]
    >>> m = search_metrics(SeedRuns([recs], [0]), "oii/crack")
    >>> m["steered"], round(m["oii"], 6), m["pa"], m["evaluations"]
    ('oii/crack', 0.2, 0.6, 3)

    Raises:
      ValueError: ``steer`` is none of those, or no record of ``result`` has its key.
    """
    keys = _steered_keys(steer)
    if any(result.runs) and not any(steer in r for recs in result.runs for r in recs):
        raise ValueError(f"search_metrics: no evaluation record has {steer!r}")
    out: dict[str, Any] = {} if steer == "oii" else {"steered": steer}
    for name, key in zip(("oii", "iou", "pa"), keys, strict=True):
        s = result.last3(key)
        out[name], out[f"{name}_sd"] = s.mean, s.std
    out["seeds"] = len(result.seeds)
    out["evaluations"] = result.evaluations_used()
    out["seconds"] = round(result.wall_seconds, 2)
    return out


def with_hyperparameter(
    config: Config, param: str, value: float, *, fixed: Mapping[str, float] | None = None
) -> Config:
    """A copy of ``config`` whose loss hyperparameter ``param`` is ``value``.

    The β rule (one for the CLI and the experiments): when ``param`` is ``alpha`` and the
    loss also takes ``beta``, β = 1 − α, and when ``param`` is ``beta``, α = 1 − β, as in the
    paper's defaults (α, β) = (0.3, 0.7) and Appendix C's start α = β = 0.5; unless
    ``fixed`` gives the other one a value (``fixed={"beta": 0.7}``).

    >>> c = with_hyperparameter(Config(), "alpha", 0.2)  # the default loss, dibe
    >>> c.loss.params
    {'alpha': 0.2, 'beta': 0.8}
    >>> with_hyperparameter(Config(), "alpha", 0.2, fixed={"beta": 0.5}).loss.params
    {'alpha': 0.2, 'beta': 0.5}
    """
    from dibe_jax import losses

    config = copy.deepcopy(config)
    takes = losses.hyperparameters(config.loss.name)
    config.loss.params[param] = round(float(value), 6)
    other = {"alpha": "beta", "beta": "alpha"}.get(param)
    fixed = dict(fixed or {})
    if other in fixed:
        config.loss.params[other] = float(fixed[other])
    elif other is not None and other in takes:
        config.loss.params[other] = round(1.0 - float(value), 6)
    return config


def finished_records(workdir: Path, config: Config) -> list[dict[str, Any]] | None:
    """The records of a run already finished with ``config``'s setting, else ``None``: its
    config may differ only in options that do not change training (logging, checkpoints,
    data locations: :data:`~dibe_jax.train.checks.RESUMABLE` but ``epochs``)."""
    path = workdir / "config.json"
    if not path.exists() or not (workdir / "wall.json").exists():
        return None
    stored = _stored_config(workdir)
    if stored is None or _changes(stored, config) - _SAME_TRAINING:
        return None
    records = read_metrics(workdir)
    if records and records[-1].get("epoch") == config.epochs:
        return records
    return None


#: Fields that leave the training itself unchanged (what a finished run can differ in).
_SAME_TRAINING = frozenset(
    {
        "eval_every",  # evaluation records only, and a finished run has its records
        "progress",
        "checkpoint_every_epochs",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "nonfinite",
        "data.data_dir",
        "data.manual_dir",
        "data.memory_budget_mb",
    }
)


def _stored_config(workdir: Path) -> Config | None:
    from dibe_jax.train.config import ConfigError
    from dibe_jax.train.loop import load_config

    try:
        return load_config(workdir)
    except (ConfigError, FileNotFoundError):
        return None


def _changes(stored: Config, config: Config) -> set[str]:
    from dibe_jax.train.config import diff

    return {key for key, _, _ in diff(stored, config)}


def _plan(run_dir: Path, config: Config, overwrite: bool) -> str:
    """How :func:`train_seeds` continues in ``run_dir``: ``"resume"`` (no run yet, an
    interrupted one, or one whose config differs only in what a resume may change: more
    epochs, logging) or ``"replace"`` (a run of another setting, with ``overwrite``).

    Raises:
      ConfigError: ``run_dir`` holds a run of another setting and ``overwrite`` is False
        (training is never deleted without it).
    """
    from dibe_jax.train import checks
    from dibe_jax.train.config import ConfigError

    if not (run_dir / "config.json").exists():
        return "resume"  # nothing yet (or no run: train_and_evaluate says so)
    stored = _stored_config(run_dir)
    if stored is not None:
        try:
            checks.check_resume(stored, config, where=str(run_dir / "config.json"))
            return "resume"
        except ConfigError as e:
            reason = str(e).split(";")[0].removeprefix("--resume: ")
    else:
        reason = f"{run_dir / 'config.json'} is not a valid config"
    if overwrite:
        return "replace"
    raise ConfigError(
        f"{run_dir} holds a run of another setting ({reason}); pass --overwrite "
        "(overwrite=True) to replace it, or choose another --workdir"
    )


def train_seeds(
    config: Config,
    workdir: str | Path,
    seeds: Sequence[int],
    *,
    sources: Mapping[str, Sequence] | None = None,
    class_names: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    together: bool = True,
) -> SeedRuns:
    """Train ``config`` once per seed in ``workdir/seed<k>``; return every seed's records.

    A run finished earlier with the same setting is read back instead of trained (its
    config may differ in logging and checkpoint options); a run whose config differs only in
    what a resume may change (:data:`~dibe_jax.train.checks.RESUMABLE`: more epochs, the
    evaluation interval, progress and checkpoint options) continues from its last checkpoint,
    so a re-run with more epochs extends it, its first epochs' records unchanged; an
    interrupted one resumes. A run of another setting is an error unless ``overwrite``
    (then it is replaced): finished training is never deleted by accident.
    ``workdir/seed<k>/wall.json`` records each run's training wall time (summed over
    launches).

    Args:
      config: the setting (its ``seed`` is replaced by each of ``seeds``).
      workdir: one folder per seed goes below it.
      seeds: e.g. ``range(3)`` (at least 3 for a reported number).
      sources: in-memory splits, as in :func:`~dibe_jax.train.train_and_evaluate`.
      class_names: the classes of ``sources``' masks (background first), as there.
      log: called with one line per seed trained.
      overwrite: replace runs of another setting instead of refusing them.
      together: train the new seeds as the members of one sweep, in one compiled program
        (:mod:`dibe_jax.train.sweep`; each member the run its seed would train alone, up
        to rounding), when the data is on the device path; False: one run after another.

    Raises:
      ConfigError: a seed's folder holds a run of another setting (without ``overwrite``),
        checked for every seed before any trains.
    """
    from dibe_jax.train.loop import train_and_evaluate

    plan, fresh = [], []
    for seed in seeds:  # every refusal before anything trains
        run_dir = Path(workdir) / f"seed{seed}"
        seeded = copy.deepcopy(config)
        seeded.seed = int(seed)
        records = finished_records(run_dir, seeded)
        how = None if records is not None else _plan(run_dir, seeded, overwrite)
        plan.append((run_dir, seeded, records, how == "resume"))
        if how == "replace" or (how == "resume" and not (run_dir / "config.json").exists()):
            fresh.append(len(plan) - 1)  # a new run
    if together and len(fresh) > 1 and config.data.pipeline != "grain":
        swept = _train_together(
            [plan[i] for i in fresh], Path(workdir), sources, class_names, overwrite, log
        )
        for i, records in zip(fresh, swept or [None] * len(fresh), strict=True):
            if records is not None:
                plan[i] = (*plan[i][:2], records, False)
    runs, wall = [], 0.0
    for run_dir, seeded, records, resume in plan:
        if records is None:
            before = recorded_wall_seconds(run_dir) if resume else 0.0
            t0 = time.perf_counter()
            train_and_evaluate(
                seeded,
                run_dir,
                resume=resume,
                overwrite=not resume,
                sources=sources,
                class_names=class_names,
            )
            seconds = before + time.perf_counter() - t0
            records = read_metrics(run_dir)
            atomic_write_json(run_dir / "wall.json", {"seconds": round(seconds, 2)})
            if log is not None and records:
                last = records[-1]
                if "miou" in last:  # a multi-class run
                    scores = (
                        f"mIoU {last['miou']:.3f} macro PA {last['macro_precision']:.3f} "
                        f"macro OII {last['macro_oii']:+.3f}"
                    )
                else:
                    scores = f"IoU {last['iou']:.3f} PA {last['pa']:.3f} OII {last['oii']:+.3f}"
                log(f"{run_dir}: epoch {last['epoch']} {scores} ({seconds:.0f} s)")
        else:
            seconds = recorded_wall_seconds(run_dir)
        wall += seconds
        runs.append(records)
    return SeedRuns(runs, [int(s) for s in seeds], wall)


def _train_together(plan, workdir, sources, class_names, overwrite, log):
    """The seeds of ``plan`` (new runs) as the members of one sweep
    (:func:`~dibe_jax.train.sweep.train_members`): their records, or None when the sweep
    cannot take them (the splits are not on the device data path)."""
    from dibe_jax.train import sweep
    from dibe_jax.train.config import ConfigError

    members = [sweep.Member(d.name, c, {}) for d, c, _, _ in plan]
    try:
        result = sweep.train_members(
            members,
            workdir,
            sources=sources,
            class_names=class_names,
            overwrite=overwrite,
            log=log,
            summary=False,
        )
    except ConfigError as e:
        if not str(e).startswith("data.pipeline:"):
            raise
        return None
    return result.records


def recorded_wall_seconds(run_dir: Path) -> float:
    """The training wall time ``wall.json`` records (0 if none)."""
    path = run_dir / "wall.json"
    return float(json.loads(path.read_text())["seconds"]) if path.exists() else 0.0
