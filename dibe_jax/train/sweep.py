"""K runs compiled once: a sweep over loss hyperparameters, optimiser numbers and seeds.

The members of a sweep share the model, the data, the batch size and the image size, and
differ only in what is an input of the compiled step (:class:`~dibe_jax.train.step.StepInputs`:
the loss's real-valued hyperparameters and the augmentation seed) and in their state (the
parameters drawn from their own seed, BatchNorm statistics, dropout RNG state, and the
optimiser state with its learning rate, momentum and schedule numbers).
Their states are stacked along a leading axis ``[K]`` and one compiled program trains them all:

* ``"vmap"``: :func:`jax.vmap` of the run's own train step over the stacked states, batches
  and inputs (XLA batches the members' convolutions into grouped ones);
* ``"map"``: :func:`jax.lax.map` over the members inside one program (each member's
  convolutions in the body of a loop, one member after another, without a dispatch per
  member);
* ``"loop"``: one call per member of a program that steps that member's slot of the stacked
  state in place (the single run's step, compiled once for every member).

Which is fastest depends on the device (``benchmarks/sweep.py`` measures all three); ``"auto"``
takes :data:`AUTO_STRATEGY` of the platform.

Every member draws its own data order (:class:`~dibe_jax.data.in_memory.Batches` of its seed),
augmentation (its seed's keys) and initial parameters, exactly as the separate ``train`` run
with its config; so a member is that run up to floating-point rounding of the batched
program. Each member is a normal run folder, ``workdir/<value>/seed<k>`` (``config.json``,
``model.json``, ``metrics.jsonl``, ``checkpoints/`` (:mod:`dibe_jax.train.stacked`), ``plots/``,
``tensorboard/``): ``dibe-jax eval``, ``predict`` and ``train --resume`` work on it.
``workdir/sweep.json`` summarises the settings by the reporting statistic
(:class:`~dibe_jax.train.runs.SeedRuns`: the last 3 evaluations of every seed).

Members that do not fit the device's memory together are trained in chunks (the first step
of a chunk that runs out of memory is retried with half the members), and the output says so.
A sweep needs the device data path (the training split decoded into memory).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from dibe_jax import losses
from dibe_jax.files import atomic_write_json
from dibe_jax.train import checks
from dibe_jax.train.config import Config, ConfigError, override
from dibe_jax.train.seed_runs import SeedRuns
from dibe_jax.train.stacked import ChunkTooBig, MixedPositions, train_chunk
from dibe_jax.train.state import build
from dibe_jax.train.workdir import existing_outputs, load_config

__all__ = [
    "AUTO_STRATEGY",
    "Member",
    "SweepResult",
    "members",
    "parse_sweep",
    "train_members",
    "train_sweep",
]

#: The strategy ``"auto"`` picks per platform, as ``benchmarks/sweep.py`` measured it. GPU
#: (``benchmarks/results/gpu_2026-12-04_library/sweep_gpu.md``, one H200, U-Net width 64,
#: 160², batch 32): ``"vmap"`` runs K = 2 and 4 members 3× slower than K separate runs (XLA
#: turns the members' convolutions into grouped convolutions), ``"map"`` within 4 % of them
#: (``"loop"`` not measured there yet). CPU (``benchmarks/results/sweep_cpu_demo.md``, the
#: demo's U-Net width 8 at 96², batch 16, K = 2): ``"map"`` 14× and ``"vmap"`` 4× slower
#: than separate runs, ``"loop"`` as fast as they are. TPU: not measured; ``"map"`` runs each
#: member's convolutions as a single run does, so it never falls far behind K separate runs.
AUTO_STRATEGY = {"cpu": "loop", "gpu": "map", "tpu": "map"}
STRATEGIES = ("auto", "vmap", "map", "loop")


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a sweep.

    Attributes:
      name: its folder below the sweep's workdir, e.g. ``alpha=0.3/seed0``.
      config: the run's full config (its ``seed`` included).
      values: the swept fields and their values, e.g. ``{"loss.alpha": 0.3}``.
    """

    name: str
    config: Config
    values: dict[str, float]

    @property
    def setting(self) -> str:
        """The folder of its setting (every seed of the same values), e.g. ``alpha=0.3``."""
        return self.name.rpartition("/")[0]


@dataclasses.dataclass
class SweepResult:
    """Every member's evaluation records and the summary written to ``sweep.json``."""

    members: list[Member]
    records: list[list[dict[str, Any]]]
    summary: dict[str, Any]

    def seed_runs(self, setting: str) -> SeedRuns:
        """The seeds of one setting (its folder name) as :class:`SeedRuns`."""
        picked = [(m, r) for m, r in zip(self.members, self.records, strict=True)]
        picked = [(m, r) for m, r in picked if m.setting == setting]
        wall = self.summary.get("wall_seconds", 0.0) * len(picked) / max(1, len(self.members))
        return SeedRuns([r for _, r in picked], [m.config.seed for m, _ in picked], wall)


def parse_sweep(specs: Sequence[str]) -> dict[str, list[float]]:
    """``["loss.alpha=0.3,0.5,0.7"]`` -> ``{"loss.alpha": [0.3, 0.5, 0.7]}``.

    >>> parse_sweep(["loss.alpha=0.3,0.5", "loss.gamma=1.5"])
    {'loss.alpha': [0.3, 0.5], 'loss.gamma': [1.5]}

    Raises:
      ConfigError: a spec that is not ``FIELD=V1,V2,...`` of numbers, or a field twice.
    """
    out: dict[str, list[float]] = {}
    for spec in specs:
        field, eq, values = spec.partition("=")
        field = field.strip()
        if not eq or not field or not values.strip():
            raise ConfigError(f"--sweep {spec!r}: expected FIELD=V1,V2,... e.g. loss.alpha=0.3,0.5")
        if field in out:
            raise ConfigError(f"--sweep {field}: given twice; list all its values in one flag")
        try:
            out[field] = [float(v) for v in values.split(",")]
        except ValueError:
            raise ConfigError(
                f"--sweep {field}: expected comma-separated numbers, got {values!r}"
            ) from None
        if len(set(out[field])) != len(out[field]):
            raise ConfigError(f"--sweep {field}: a value is listed twice in {values!r}")
    return out


def _optim_fields(config: Config) -> tuple[str, ...]:
    """The optimiser's numbers a sweep may vary: they live in the optimiser state
    (:func:`~dibe_jax.train.state.make_state`), not in the program. The clipping norm only
    when clipping is on (turning it on or off changes the program)."""
    clip = ("optim.grad_clip",) if config.optim.grad_clip is not None else ()
    return ("optim.lr", "optim.momentum", *clip)


def _check_field(config: Config, field: str) -> str:
    """The short name of sweepable ``field`` (a real-valued loss hyperparameter or an
    optimiser number); :class:`ConfigError` for any other field."""
    group, _, name = field.partition(".")
    if config.loss.name not in losses.names():  # before validation, which needs the values
        raise ConfigError(
            f"loss.name: unknown loss {config.loss.name!r}; known losses: "
            f"{', '.join(losses.names())}"
        )
    takes = losses.hyperparameters(config.loss.name)
    if group == "loss" and name in takes:
        default = takes[name]
        if isinstance(default, float) and not isinstance(default, bool):
            return name
    if field in _optim_fields(config):
        return name
    which = (
        f"loss {config.loss.name!r} takes no real-valued hyperparameter {name!r}"
        if group == "loss"
        else f"{field} would change the compiled program (shapes, model, data or schedule)"
    )
    sweepable = [f"loss.{k}" for k, v in takes.items() if isinstance(v, float)]
    raise ConfigError(
        f"--sweep {field}: {which}; the members of a sweep share one program, so only the "
        f"loss's real-valued hyperparameters ({', '.join(sweepable) or 'none'}) and "
        f"{', '.join(_optim_fields(config))} vary besides --seeds; train other settings as "
        "separate sweeps"
    )


def members(
    config: Config, sweep: Mapping[str, Sequence[float]], seeds: Sequence[int]
) -> list[Member]:
    """The runs of a sweep: every combination of the swept values, each with every seed.

    Fields must be real-valued loss hyperparameters or the optimiser's numbers (anything
    else would change the compiled program: refused in one line); the values are set as
    given (no β = 1 − α rule: sweep both fields, or use ``oii-search``);
    :func:`train_members` validates them.
    """
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice in {list(seeds)}")
    names = {field: _check_field(config, field) for field in sweep}
    out = []
    combos = itertools.product(*sweep.values()) if sweep else [()]
    for combo in combos:
        values = dict(zip(sweep, combo, strict=True))
        label = ",".join(f"{names[f]}={v:g}" for f, v in values.items()) or "run"
        for seed in seeds:
            changes = {**{f: float(v) for f, v in values.items()}, "seed": int(seed)}
            c = override(copy.deepcopy(config), changes)
            out.append(Member(f"{label}/seed{int(seed)}", c, values))
    return out


# ----------------------------------------------------------------------------- training


def train_sweep(
    config: Config,
    workdir: str | Path,
    sweep: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    **kwargs: Any,
) -> SweepResult:
    """Train ``config`` for every combination of ``sweep``'s values and every seed, all in
    one compiled program (:func:`members`, :func:`train_members`); write ``sweep.json``."""
    return train_members(members(config, sweep, seeds), workdir, **kwargs)


def train_members(
    runs: Sequence[Member],
    workdir: str | Path,
    *,
    sources: Mapping[str, Sequence] | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    strategy: str = "auto",
    chunk: int | None = None,
    log: Callable[[str], None] | None = None,
    summary: bool = True,
) -> SweepResult:
    """Train ``runs`` (members of one sweep) in ``workdir/<member.name>``.

    Args:
      runs: members whose configs differ only in real-valued loss hyperparameters, the
        optimiser's numbers and seed (:func:`members` builds them).
      workdir: the sweep's folder; ``sweep.json`` goes there (unless ``summary`` is False).
      sources, class_names: in-memory splits, as in
        :func:`~dibe_jax.train.train_and_evaluate`.
      overwrite: replace previous runs in the members' folders.
      resume: continue members from their latest checkpoints (all at the same epoch end).
      strategy: ``"vmap"``, ``"map"``, ``"loop"`` or ``"auto"`` (see the module docstring).
      chunk: at most this many members per program (default: all; fewer when they do not
        fit the device memory).
      log: called with progress lines (chunks, one line per member at the end).

    Raises:
      ConfigError: members that would need different programs, a member folder that holds
        a run (without ``overwrite`` or ``resume``), no device data path; all before
        anything is compiled or written.
    """
    from dibe_jax.train import loop

    t0 = time.perf_counter()
    say = log or (lambda line: None)
    runs = list(runs)
    if not runs:
        raise ConfigError("--sweep: no members to train")
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if chunk is not None and chunk < 1:
        raise ConfigError(f"--sweep-chunk: expected a number >= 1, got {chunk}")
    _check_members(runs, in_memory=sources is not None, class_names=class_names)
    first = runs[0].config
    workdir = Path(workdir)
    dirs = [workdir / m.name for m in runs]
    for m, d in zip(runs, dirs, strict=True):
        _check_folder(m.config, d, overwrite=overwrite, resume=resume)
    if sources is None:  # every member was validated above: resolve() only fills in a size
        resolved = loop.resolve(first)
        runs = [
            dataclasses.replace(m, config=_with_size(m.config, resolved.data.image_size))
            for m in runs
        ]
        first = runs[0].config
    built = build(first, sources, class_names=class_names, validated=True)
    if built.train_arrays is None or built.eval_arrays is None:
        raise ConfigError(
            "data.pipeline: a sweep trains on the device data path; the splits do not fit "
            f"data.memory_budget_mb={first.data.memory_budget_mb} (raise it) or "
            "data.pipeline is 'grain'"
        )
    if jax.process_count() > 1:
        raise ConfigError("a sweep runs in one process; train members separately across hosts")
    platform = jax.devices()[0].platform
    chosen = AUTO_STRATEGY.get(platform, "map") if strategy == "auto" else strategy
    records, size = _train_in_chunks(
        runs,
        dirs,
        built,
        chosen,
        chunk or len(runs),
        workdir=workdir,
        overwrite=overwrite,
        resume=resume,
        say=say,
    )
    wall = time.perf_counter() - t0
    done = [r or [] for r in records]
    for d, recs in zip(dirs, done, strict=True):
        atomic_write_json(d / "wall.json", {"seconds": round(wall / len(runs), 2)})
        if recs:
            last = recs[-1]
            key = "miou" if "miou" in last else "iou"
            oii = "macro_oii" if "miou" in last else "oii"
            say(f"{d}: epoch {last['epoch']} {key} {last[key]:.3f} {oii} {last[oii]:+.3f}")
    result = SweepResult(runs, done, {})
    result.summary = _summary(result, chosen, size, wall)
    if summary:
        atomic_write_json(workdir / "sweep.json", result.summary)
    return result


def _check_members(runs: Sequence[Member], **validate: Any) -> None:
    """Every member of one program (only sweepable fields and the seed differ) with values
    that :func:`~dibe_jax.train.checks.validate` accepts."""
    first = runs[0].config
    for m in runs[1:]:
        for key, old, new in _diff(first, m.config):
            if key != "seed" and not _sweepable(first, key):
                raise ConfigError(
                    f"{m.name}: {key} is {new!r} but {old!r} in {runs[0].name}; the members of "
                    "a sweep differ only in real-valued loss hyperparameters, optimiser "
                    "numbers and seed"
                )
    for m in runs:  # each value against the loss's ranges, before anything is opened
        checks.validate(m.config, **validate)


def _train_in_chunks(
    runs: list[Member],
    dirs: list[Path],
    built: Any,
    chosen: str,
    size: int,
    *,
    workdir: Path,
    overwrite: bool,
    resume: bool,
    say: Callable[[str], None],
) -> tuple[list[list[dict[str, Any]] | None], int]:
    """Train ``runs`` ``size`` members at a time, halving ``size`` when a chunk does not fit
    the device memory, and training the members of a chunk that continue from different
    positions (a sweep stopped between its chunks) as chunks of their own; every member's
    records and the chunk size that fitted."""
    records: list[list[dict[str, Any]] | None] = [None] * len(runs)
    pending = list(range(len(runs)))
    together: list[int] | None = None  # members known to be at one position
    while pending:
        part = together or pending[:size]
        together = None
        try:
            out = train_chunk(
                [runs[i] for i in part],
                [dirs[i] for i in part],
                built,
                chosen,
                workdir=workdir,
                overwrite=overwrite,
                resume=resume,
            )
        except ChunkTooBig:
            if size == 1:
                raise ConfigError(
                    "one member does not fit the device memory; lower batch_size or the image size"
                ) from None
            size = max(1, size // 2)
            say(
                f"sweep: {len(part)} members do not fit the device memory together; "
                f"training in chunks of {size}"
            )
            continue
        except MixedPositions as e:
            together = [part[g] for g in e.groups[0]]
            say(
                f"sweep: {_numbers(part)} continue from {len(e.groups)} different "
                f"checkpoint positions; training {_numbers(together)} first"
            )
            continue
        for i, r in zip(part, out, strict=True):
            records[i] = r
        pending = [i for i in pending if i not in part]
        if len(runs) > len(part):
            say(
                f"sweep: trained {_numbers(part)} of {len(runs)} "
                f"(chunks of {size}, strategy {chosen})"
            )
    return records, size


def _numbers(indices: list[int]) -> str:
    """Members' 0-based ``indices`` as the log names them: ``member 3``, ``members 1-4``,
    ``members 2, 5``."""
    numbers = [i + 1 for i in indices]
    if len(numbers) == 1:
        return f"member {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"members {numbers[0]}-{numbers[-1]}"
    return "members " + ", ".join(map(str, numbers))


def _diff(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    from dibe_jax.train.config import diff

    return diff(a, b)


def _sweepable(config: Config, key: str) -> bool:
    if key in _optim_fields(config):
        return True
    group, _, name = key.partition(".")
    if group != "loss":
        return False
    default = losses.hyperparameters(config.loss.name).get(name.removeprefix("params."))
    return isinstance(default, float)


def _with_size(config: Config, image_size: Any) -> Config:
    config = copy.deepcopy(config)
    config.data.image_size = image_size
    return config


def _check_folder(config: Config, run_dir: Path, *, overwrite: bool, resume: bool) -> None:

    existing = existing_outputs(run_dir)
    if resume and (run_dir / "config.json").is_file():
        checks.check_resume(load_config(run_dir), config, where=str(run_dir / "config.json"))
    elif existing and not overwrite and not resume:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "the sweep, --overwrite to replace it, or choose another --workdir"
        )


def _summary(result: SweepResult, strategy: str, chunk: int, wall: float) -> dict[str, Any]:
    """``sweep.json``: the members and, per setting, :meth:`SeedRuns.summary`."""
    settings: dict[str, dict[str, Any]] = {}
    for m in result.members:
        settings.setdefault(m.setting, {"values": m.values})
    for name, entry in settings.items():
        entry.update(result.seed_runs(name).summary())
    return {
        "members": [
            {"dir": m.name, "seed": m.config.seed, "values": m.values} for m in result.members
        ],
        "settings": settings,
        "strategy": strategy,
        "chunk": chunk,
        "wall_seconds": round(wall, 2),
        "statistic": "mean ± sd of the last 3 evaluations of every seed (last3), of each "
        "seed's last (final) and best (best) evaluation",
    }
