"""The run folder: what a run writes, its stored config, and where its checkpoints resume.

:func:`resolve` makes a config portable before it is stored (absolute data paths, the
dataset's default image size filled in).

A run folder describes itself: ``config.json`` is the truth for resume, evaluation and
prediction (:func:`load_config`); ``model.json`` records the model's input channels, outputs
and classes; each checkpoint carries a :class:`ResumeMeta` that says where training continues.
:class:`Workdir` records what a launch writes, so that a launch failing before its first
training step can put the folder back as it found it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dibe_jax.errors import RunNotFoundError
from dibe_jax.files import atomic_write_text
from dibe_jax.train.config import Config, ConfigError, from_dict

__all__ = ["OUTPUTS", "ResumeMeta", "Workdir", "existing_outputs", "load_config", "resolve"]

log = logging.getLogger(__name__)

#: What a training run writes into its folder (and ``dibe-jax calibrate``'s threshold, which
#: belongs to the run's checkpoints: ``--overwrite`` replaces it with them).
OUTPUTS = (
    "config.json",
    "model.json",
    "metrics.jsonl",
    "checkpoints",
    "tensorboard",
    "plots",
    "threshold.json",
)


@dataclasses.dataclass(frozen=True)
class ResumeMeta:
    """Where a checkpoint continues from: the JSON ``meta`` item stored beside its state.

    Attributes:
      epoch: at an epoch end, the number of finished epochs; mid-epoch (``loader`` set), the
        epoch in progress, 0-based.
      step: the number of training steps taken.
      loader: mid-epoch, the training iterator's position (its ``get_state()``, decoded);
        None at an epoch end.
      pipeline: the training data path the run used, ``"device"`` or ``"grain"`` (a resume
        keeps it; checkpoints from before the device path record none: ``"grain"``).
      seconds: training time so far, summed over launches.
      skipped: updates dropped so far because the loss or a gradient was not finite.
      loss_sum, loss_count: mid-epoch, the epoch's running sum of training losses and the
        number of steps in it (0 at an epoch end).
    """

    epoch: int
    step: int
    loader: str | None = None
    pipeline: Literal["device", "grain"] = "grain"
    seconds: float = 0.0
    skipped: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the checkpoint."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], step: int) -> ResumeMeta:
        """The metadata of the checkpoint of ``step``, as stored (older checkpoints lack
        the fields added since: their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in meta.items() if k in known}, "step": step})

    @property
    def mid_epoch(self) -> bool:
        """Whether the checkpoint was saved inside an epoch (with the loader's position)."""
        return bool(self.loader)


def load_config(workdir: str | Path) -> Config:
    """The :class:`Config` a run in ``workdir`` was started with (``config.json``)."""
    path = Path(workdir) / "config.json"
    if not Path(workdir).is_dir():
        raise RunNotFoundError(f"--workdir {workdir}: no such folder")
    if not path.exists():
        raise RunNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not a valid dibe_jax config: {e}") from e


def existing_outputs(workdir: Path) -> list[str]:
    """The names of :data:`OUTPUTS` that ``workdir`` already holds."""
    return [n for n in OUTPUTS if (workdir / n).exists()]


class Workdir:
    """What a launch wrote, so a launch that fails before its first step can undo it.

    Only the writing process (``writer``) touches the folder; on the others every method
    is a no-op.
    """

    def __init__(self, workdir: Path, writer: bool) -> None:
        self.path, self.writer = workdir, writer
        self.existed = workdir.exists()
        self.created: list[Path] = []
        self.previous: dict[Path, str] = {}
        self.parked: Path | None = None  # a replaced run's outputs, until the first step

    def park(self, names: list[str]) -> None:
        """Move a previous run's outputs aside (``overwrite``); :meth:`commit` deletes them."""
        if not self.writer or not names:
            return
        self.parked = Path(tempfile.mkdtemp(dir=self.path, prefix=".replaced-"))
        for n in names:
            os.replace(self.path / n, self.parked / n)

    def write(self, name: str, text: str) -> None:
        """Write ``name`` atomically (its previous text is restored by :meth:`undo`)."""
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            p = self.path / name
            if p.exists():
                self.previous[p] = p.read_text()
            else:
                self.created.append(p)
            atomic_write_text(p, text)

    def track(self, *names: str) -> None:
        """Remember which of ``names`` this launch will create (removed by :meth:`undo`)."""
        for n in names:
            if not (self.path / n).exists():
                self.created.append(self.path / n)

    def commit(self) -> None:
        """The first step is done: the replaced run is gone for good."""
        if self.parked is not None:
            shutil.rmtree(self.parked, ignore_errors=True)
            self.parked = None
        self.created, self.previous = [], {}

    def undo(self) -> None:
        """Remove what this launch created and put a replaced run back."""
        if not self.writer:
            return
        for p in reversed(self.created):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        for p, text in self.previous.items():
            atomic_write_text(p, text)
        if self.parked is not None:
            for p in self.parked.iterdir():
                os.replace(p, self.path / p.name)
            self.parked.rmdir()
        if not self.existed and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()


def resolve(config: Config) -> Config:
    """A copy of ``config`` with absolute ``data.data_dir`` / ``data.manual_dir`` (a run's
    ``config.json`` then works from any directory) and the dataset's default image size
    filled in when the dataset's images differ in size and ``data.image_size`` is None
    (magnetic_tile, a folder of mixed sizes: the size stated by
    :func:`dibe_jax.datasets.default_image_size`)."""
    config = copy.deepcopy(config)
    for field in ("data_dir", "manual_dir"):
        value = getattr(config.data, field)
        if value is not None:
            setattr(config.data, field, os.path.abspath(os.path.expanduser(value)))
    if config.data.image_size is None:
        from dibe_jax import datasets

        where = config.data.manual_dir  # a folder dataset's own sizes
        if datasets.native_image_size(config.data.dataset, manual_dir=where) is None:
            size = datasets.default_image_size(config.data.dataset, manual_dir=where)
            if size is not None:
                log.info(
                    "%s images differ in size: training at %dx%d (data.image_size)",
                    config.data.dataset,
                    size,
                    size,
                )
                config.data.image_size = size
    return config
