"""Typed training configuration; defaults are the DIBE paper's (Sec. 4.3.3).

SGD with learning rate 0.01 and momentum 0.9, batch 32, 50 epochs, validation every
5 epochs, a fixed seed, augmentation on (flip, contrast, brightness, saturation), U-Net and
the DIBE loss with the paper's hyperparameters.

A :class:`Config` is a tree of dataclasses; each field's annotation is its type, read with
:func:`typing.get_type_hints` and checked by :mod:`dibe_jax.train.typed` (a choice is a
``typing.Literal``, refused with the allowed values). It is changed in three typed ways:

* in code, with Python values: ``override(config, {"loss.alpha": 0.7, "model.width": 16})``
  (or by setting fields: ``config.model.options["width"] = 16``);
* from the command line, with text parsed by each field's type: ``--set loss.alpha=0.7``,
  ``--config.model.width=16`` (:func:`apply_overrides`: ``epochs=two`` is an error naming
  ``epochs`` and the type it expected, never a string that fails an hour later);
* from a file: ``--config cfg.py`` (a Python file with ``get_config()`` returning a
  :class:`Config`, the convention of the Flax examples and big_vision; shipped ones are in
  :mod:`dibe_jax.configs`) or ``--config run/config.json`` (another run's config)
  (:func:`load`).

A name that is not a field, at any level (``c.epoch = 1`` for ``epochs``), is an error like
an unknown ``--set`` key. ``loss.<name>`` sets a loss hyperparameter and ``model.<name>`` a
model option; their text is parsed by the type of the model's option (its annotation) or
of the loss's default, so ``loss.gamma=2`` is the number 2. Values are checked against
their ranges, and names against the registries, by :func:`dibe_jax.train.validate`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dibe_jax.errors import ConfigError
from dibe_jax.train import typed

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "apply_overrides",
    "check_types",
    "diff",
    "flatten",
    "from_dict",
    "from_get_config",
    "load",
    "override",
    "parse_value",
]

#: The networks of :func:`dibe_jax.models.names` (a test keeps the two equal).
ModelName = Literal["unet", "segnet", "pspnet", "deeplabv3", "fcn", "attention_unet"]
Pipeline = Literal["auto", "device", "grain"]
Schedule = Literal["constant", "cosine", "step"]
Precision = Literal["float32", "bfloat16"]
NonFinite = Literal["raise", "skip"]
ImageSize = (
    int
    | Annotated[tuple[int, int], "[rows, cols] like [64, 128]"]
    | Annotated[list[tuple[int, int]], "a schedule [[epoch, size], ...] like [[0, 64], [10, 96]]"]
    | None
)


@dataclasses.dataclass
class ModelConfig:
    """Which network (``dibe_jax.models.names()``) and its options (``width``, ``dtype``...)."""

    name: ModelName = "unet"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LossConfig:
    """Which loss (``dibe_jax.losses.names()``: a registry that can grow, so a string checked
    by :func:`~dibe_jax.train.validate`) and its hyperparameters (paper defaults)."""

    name: str = "dibe"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataConfig:
    """Dataset ``NAME[/CONFIG]`` of :mod:`dibe_jax.datasets` and input-pipeline options.

    ``image_size`` is one size ``S``, ``[rows, cols]``, or a progressive-resizing schedule
    ``[[start_epoch, S], ...]`` (one compilation per size); ``None`` means the dataset's
    own size, or for datasets whose images differ in size (magnetic_tile) its documented
    default (``dibe_jax.datasets.default_image_size``).

    ``hflip`` / ``vflip`` are flip probabilities; ``brightness`` / ``contrast`` /
    ``saturation`` are jitter strengths ``s`` (factor drawn from ``U(1 - s, 1 + s)``,
    torchvision ``ColorJitter`` semantics); all apply only when ``augment`` is on.

    ``pipeline`` chooses the data path of each split (:mod:`dibe_jax.data`):

    * ``"device"``: the split is decoded once into ``uint8`` arrays in host memory (stored at
      the largest size of ``image_size``, or the native size), each epoch gathers batches
      from a seeded permutation and sends them to the device as ``uint8``, and augmentation
      runs on the device inside the jitted step (:mod:`dibe_jax.data.in_memory`). A split
      that does not fit ``memory_budget_mb`` is an error, raised before anything is
      written or compiled;
    * ``"grain"``: the grain loader decodes and augments every example on the host every
      epoch (the path of runs made before the device path existed);
    * ``"auto"`` (default): ``"device"`` for each split that fits, ``"grain"`` for the
      others; in-memory data given as a custom sequence (anything but a list, tuple or
      ``ArraySource``, e.g. a reader with side effects) stays on grain.

    ``memory_budget_mb`` is the host memory (MiB, per process) the decoded splits may take
    together: images ``N x H x W x C`` plus masks ``N x H x W`` bytes, the training split
    first (THC448's 981 training images at 448x448: 751 MiB).
    """

    dataset: str = "synthetic_cracks/r150_96"
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    image_size: ImageSize = None
    augment: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    worker_count: int = 0
    pipeline: Pipeline = "auto"
    memory_budget_mb: int = 4096
    val_fraction: float = 0.2  # dataset "folder" with only images/ + masks/: validation share


@dataclasses.dataclass
class OptimConfig:
    """SGD with momentum (the paper), an optional schedule and gradient clipping
    (``"step"``: the learning rate times 0.1 at each of ``step_epochs``)."""

    lr: float = 0.01
    momentum: float = 0.9
    schedule: Schedule = "constant"
    step_epochs: list[int] = dataclasses.field(default_factory=list)
    grad_clip: float | None = None


@dataclasses.dataclass
class Config:
    """Everything :func:`dibe_jax.train.train_and_evaluate` needs.

    ``dtype`` is the model's computation dtype; ``nonfinite`` what a non-finite loss or
    gradient does: ``"raise"`` (stop, naming the step) or ``"skip"`` (drop the update);
    ``checkpoint_every_epochs`` saves the epoch-end checkpoint every N epochs (and always
    after an evaluation, at the last epoch and on a signal; a crash loses at most N epochs);
    ``checkpoint_every_steps`` saves besides the epoch ends.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    seed: int = 0
    epochs: int = 50
    batch_size: int = 32
    eval_every: int = 5
    dtype: Precision = "float32"
    nonfinite: NonFinite = "raise"
    keep_checkpoints: int = 3
    checkpoint_every_epochs: int = 1
    checkpoint_every_steps: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ------------------------------------------------------------------- build and check


def _unknown(key: str, group: str, names: Iterable[str]) -> ConfigError:
    """The one error of every unknown name: ``--set``, a dict, a get_config() attribute."""
    return ConfigError(f"unknown config field {key!r}; {group or 'config'} has: {', '.join(names)}")


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def from_dict(d: Mapping[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict`; unknown keys and wrong types raise
    :class:`ConfigError` naming the field."""
    config = _build(Config, d, "")
    check_types(config)
    return config


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {d!r}")
    types = typed.hints(cls)
    names = _field_names(cls)
    for k in d:
        if k not in names:
            raise _unknown(f"{prefix}{k}", prefix.rstrip("."), names)
    return cls(
        **{
            k: _build(types[k], v, f"{prefix}{k}.") if dataclasses.is_dataclass(types[k]) else v
            for k, v in d.items()
        }
    )


def check_types(config: Config) -> None:
    """:class:`ConfigError` naming the first field whose value is not of its declared type,
    or an attribute that is no field (a typo such as ``config.epoch = 1``).

    >>> c = Config(); c.epochs = "two"; check_types(c)
    Traceback (most recent call last):
    ...
    dibe_jax.errors.ConfigError: epochs: expected an integer, got 'two'
    >>> c = Config(); c.dtype = "fp16"; check_types(c)
    Traceback (most recent call last):
    ...
    dibe_jax.errors.ConfigError: dtype: expected one of float32, bfloat16, got 'fp16'
    """

    def walk(obj: Any, prefix: str) -> None:
        names = _field_names(obj)
        for extra in sorted(vars(obj).keys() - set(names)):
            raise _unknown(f"{prefix}{extra}", prefix.rstrip("."), names)
        types = typed.hints(type(obj))
        for name in names:
            value = getattr(obj, name)
            if dataclasses.is_dataclass(types[name]):
                if type(value) is not types[name]:
                    raise ConfigError(
                        f"{prefix}{name}: expected a {types[name].__name__}, got {value!r}"
                    )
                walk(value, f"{prefix}{name}.")
            elif not typed.matches(value, types[name]):
                raise ConfigError(
                    f"{prefix}{name}: expected {typed.describe(types[name])}, got {value!r}"
                )

    if not isinstance(config, Config):
        raise ConfigError(f"expected a dibe_jax.train.Config, got {type(config).__name__}")
    walk(config, "")


def _resolve(config: Config, key: str) -> tuple[Any, str, Any]:
    """``(parent object, last name, its type)`` of a dotted ``key``; the type of a loss
    hyperparameter or model option comes from the loss or model (:func:`_free_form_type`)."""
    parts = key.strip().split(".")
    target: Any = config
    for i, part in enumerate(parts[:-1]):
        if not dataclasses.is_dataclass(target) or part not in _field_names(target):
            group = ".".join(parts[:i])
            names = _field_names(target) if dataclasses.is_dataclass(target) else []
            raise _unknown(".".join(parts[: i + 1]), group, names)
        target = getattr(target, part)
    last = parts[-1]
    if not dataclasses.is_dataclass(target):
        raise ConfigError(f"unknown config field {key!r}")
    names = _field_names(target)
    if last in names:
        if dataclasses.is_dataclass(getattr(target, last)):
            raise ConfigError(f"{key!r} is a group of fields; set one of them, e.g. {key}.name")
        return target, last, typed.hints(type(target))[last]
    if isinstance(target, LossConfig | ModelConfig) and last:
        return target, last, _free_form_type(target, last)
    raise _unknown(key, ".".join(parts[:-1]), names)


def _free_form_type(target: LossConfig | ModelConfig, key: str) -> Any:
    """Type of ``loss.<key>`` (from the loss's default) or ``model.<key>`` (the model's
    annotation); ``Any`` for a name the loss or model does not take (validation says so)."""
    import numbers

    if isinstance(target, LossConfig):
        from dibe_jax import losses

        try:
            defaults = {**losses.hyperparameters(target.name), **losses.step_options(target.name)}
        except ValueError:
            return Any
        default = defaults.get(key)
        if isinstance(default, bool):
            return bool
        if isinstance(default, numbers.Integral):
            return int | float
        if isinstance(default, numbers.Real):
            return float
        return str if isinstance(default, str) else Any
    from dibe_jax import models
    from dibe_jax.models import model_class

    if target.name not in models.names():
        return Any
    return typed.hints(model_class(target.name).__init__).get(key, Any)


def _set(config: Config, key: str, value: Any) -> None:
    target, last, field_type = _resolve(config, key)
    if isinstance(target, LossConfig) and last not in ("name", "params"):
        target.params[last] = value
    elif isinstance(target, ModelConfig) and last not in ("name", "options"):
        target.options[last] = value
    else:
        if not typed.matches(value, field_type):
            raise ConfigError(f"{key}: expected {typed.describe(field_type)}, got {value!r}")
        setattr(target, last, value)


def parse_value(text: str, tp: Any, *, name: str) -> Any:
    """Parse command-line ``text`` as a value of type ``tp`` for field ``name``
    (:func:`dibe_jax.train.typed.parse`).

    >>> parse_value("5", int, name="epochs"), parse_value("none", float | None, name="x")
    (5, None)
    """
    return typed.parse(text, tp, name=name)


def override(config: Config, values: Mapping[str, Any]) -> Config:
    """Set dotted fields to Python values, type-checked; returns the same (mutated) config.

    >>> c = override(Config(), {"loss.alpha": 0.7, "model.width": 16, "epochs": 2})
    >>> c.loss.params, c.model.options, c.epochs
    ({'alpha': 0.7}, {'width': 16}, 2)
    """
    for key, value in values.items():
        _set(config, key, value)
    return config


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Apply command-line ``key=value`` text, each value parsed by the field's type.

    Keys are dotted paths: ``epochs=5``, ``optim.lr=0.05``, ``data.image_size=64``,
    ``data.image_size=[[0,64],[10,96]]``; ``loss.<name>`` sets a loss hyperparameter and
    ``model.<name>`` a model option unless it names a field (``loss.name=tversky``).

    >>> c = apply_overrides(Config(), ["loss.alpha=0.7", "model.width=16", "epochs=2"])
    >>> c.loss.params, c.model.options, c.epochs
    ({'alpha': 0.7}, {'width': 16}, 2)
    >>> apply_overrides(Config(), ["optim.lr=abc"])
    Traceback (most recent call last):
    ...
    dibe_jax.errors.ConfigError: optim.lr: expected a number, got 'abc'
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. loss.alpha=0.7")
        key, text = item.split("=", 1)
        key = key.strip()
        _, _, tp = _resolve(config, key)
        _set(config, key, typed.parse(text, tp, name=key))
    return config


def from_get_config(out: Any, *, where: str) -> Config:
    """The :class:`Config` a ``get_config()`` returned: a :class:`Config` (checked, typos
    included), a dict of its fields, or an object with ``to_dict()`` (an
    ``ml_collections.ConfigDict``), converted with :func:`from_dict`.

    Raises:
      ConfigError: ``where: <what is wrong>``, one line.
    """
    try:
        if isinstance(out, Config):
            check_types(out)
            return out
        if isinstance(out, Mapping):
            return from_dict(out)
        if callable(getattr(out, "to_dict", None)):
            return from_dict(out.to_dict())
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    raise ConfigError(
        f"{where}: get_config() returned {type(out).__name__}, "
        "expected a dibe_jax.train.Config or a dict"
    )


def load(path: str | Path) -> Config:
    """A :class:`Config` from a ``.json`` file (a run's ``config.json``) or a ``.py`` file
    defining ``get_config()`` (:func:`from_get_config`). The shipped configs are loaded by
    name with :func:`dibe_jax.configs.load`.

    Raises:
      ConfigError: the file is missing, unreadable or not a valid config (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    if path.suffix == ".json":
        try:
            return from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {path}: not valid JSON ({e})") from e
        except ConfigError as e:
            raise ConfigError(f"--config {path}: {e}") from None
    if path.suffix != ".py":
        raise ConfigError(f"--config {path}: expected a .py file with get_config() or a .json")
    spec = importlib.util.spec_from_file_location(f"_dibe_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        get_config = module.get_config
    except AttributeError:
        raise ConfigError(f"--config {path}: defines no get_config()") from None
    except Exception as e:  # noqa: BLE001 - any error in a user's file is a config error
        raise ConfigError(f"--config {path}: {type(e).__name__}: {e}") from e
    try:
        out = get_config()
    except Exception as e:  # noqa: BLE001 - e.g. an AttributeError from a typo in the file
        raise ConfigError(f"--config {path}: get_config() raised {type(e).__name__}: {e}") from e
    return from_get_config(out, where=f"--config {path}")


def flatten(config: Config) -> dict[str, Any]:
    """Dotted key -> value for every field, loss hyperparameter and model option.

    >>> flatten(override(Config(), {"loss.alpha": 0.5}))["loss.alpha"]
    0.5
    """
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif isinstance(value, dict) and f.name in ("params", "options"):
                for k, v in value.items():
                    out[f"{prefix}{k}"] = v
            else:
                out[f"{prefix}{f.name}"] = value

    walk(config, "")
    return out


def diff(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    """``[(key, value in a, value in b)]`` for every dotted key whose values differ
    (missing entries are ``None``), in sorted order."""
    fa, fb = flatten(a), flatten(b)

    def norm(v: Any) -> Any:
        return [norm(x) for x in v] if isinstance(v, list | tuple) else v

    return [
        (k, fa.get(k), fb.get(k))
        for k in sorted(set(fa) | set(fb))
        if norm(fa.get(k)) != norm(fb.get(k))
    ]
