"""Typed training configuration; defaults are the DIBE paper's (Sec. 4.3.3).

SGD with learning rate 0.01 and momentum 0.9, batch 32, 50 epochs, validation every
5 epochs, a fixed seed, augmentation on (flip, contrast, brightness, saturation), U-Net and
the DIBE loss with the paper's hyperparameters. Any field can be overridden from the command
line with ``--set key=value`` (:func:`apply_overrides`): ``--set loss.alpha=0.7`` sets a loss
hyperparameter, ``--set model.width=16`` a model option, ``--set optim.lr=0.05`` an
optimiser field.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Iterable
from typing import Any

__all__ = [
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "apply_overrides",
    "from_dict",
]


@dataclasses.dataclass
class ModelConfig:
    """Which network (``dibe_jax.models.names()``) and its options (``width``, ``dtype``...)."""

    name: str = "unet"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LossConfig:
    """Which loss (``dibe_jax.losses.names()``) and its hyperparameters (paper defaults)."""

    name: str = "dibe"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataConfig:
    """Dataset ``NAME[/CONFIG]`` of :mod:`dibe_jax.datasets` and input-pipeline options.

    ``image_size`` is one size ``S`` or a progressive-resizing schedule
    ``[[start_epoch, S], ...]`` (one compilation per size).
    """

    dataset: str = "synthetic_cracks/r150_96"
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    image_size: int | list[list[int]] | None = None
    augment: bool = True
    worker_count: int = 0


@dataclasses.dataclass
class OptimConfig:
    """SGD with momentum (the paper), an optional schedule and gradient clipping."""

    lr: float = 0.01
    momentum: float = 0.9
    schedule: str = "constant"  # "constant" | "cosine" | "step"
    step_epochs: list[int] = dataclasses.field(default_factory=list)  # for "step": ×0.1
    grad_clip: float | None = None


@dataclasses.dataclass
class Config:
    """Everything :func:`dibe_jax.train.train_and_evaluate` needs."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    seed: int = 0
    epochs: int = 50
    batch_size: int = 32
    eval_every: int = 5
    dtype: str = "float32"  # computation dtype of the model: "float32" | "bfloat16"
    nonfinite: str = "raise"  # "raise" (stop, naming the step) | "skip" (drop the update)
    keep_checkpoints: int = 3
    checkpoint_every_steps: int | None = None  # besides every epoch end
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def from_dict(d: dict[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict` (unknown keys raise ``ValueError``)."""
    return _build(Config, d, "")


def _build(cls, d: dict[str, Any], prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(prefix + k for k in unknown)}")
    kwargs = {}
    for k, v in d.items():
        sub = _SUBCONFIGS.get((cls, k))
        kwargs[k] = _build(sub, v, f"{prefix}{k}.") if sub is not None else v
    return cls(**kwargs)


_SUBCONFIGS = {
    (Config, "model"): ModelConfig,
    (Config, "loss"): LossConfig,
    (Config, "data"): DataConfig,
    (Config, "optim"): OptimConfig,
}


def _parse_value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply ``key=value`` overrides and return the (same, mutated) config.

    Keys are dotted paths: ``epochs=5``, ``optim.lr=0.05``, ``data.image_size=64``;
    ``loss.<name>`` sets a loss hyperparameter and ``model.<name>`` a model option unless
    it names a field (``loss.name=tversky``, ``model.name=segnet``). Values are Python
    literals (``0.7``, ``[[0, 64], [10, 96]]``, ``None``) or plain strings.

    >>> c = apply_overrides(Config(), ["loss.alpha=0.7", "model.width=16", "epochs=2"])
    >>> c.loss.params, c.model.options, c.epochs
    ({'alpha': 0.7}, {'width': 16}, 2)
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        value = _parse_value(text.strip())
        parts = key.strip().split(".")
        target: Any = config
        for i, part in enumerate(parts[:-1]):
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise ValueError(f"unknown config field {'.'.join(parts[: i + 1])!r} in {item!r}")
            target = getattr(target, part)
        last = parts[-1]
        names = (
            {f.name for f in dataclasses.fields(target)}
            if dataclasses.is_dataclass(target)
            else set()
        )
        if last in names:
            setattr(target, last, value)
        elif isinstance(target, LossConfig):
            target.params[last] = value
        elif isinstance(target, ModelConfig):
            target.options[last] = value
        else:
            raise ValueError(f"unknown config field {key!r} in {item!r}")
    return config
