"""Typed training configuration; defaults are the DIBE paper's (Sec. 4.3.3).

SGD with learning rate 0.01 and momentum 0.9, batch 32, 50 epochs, validation every
5 epochs, a fixed seed, augmentation on (flip, contrast, brightness, saturation), U-Net and
the DIBE loss with the paper's hyperparameters.

A :class:`Config` is a tree of dataclasses whose field annotations are the types that every
value is checked against (:func:`check_types`). It is changed in three typed ways:

* in code, with Python values: ``override(config, {"loss.alpha": 0.7, "model.width": 16})``
  (or by setting fields: ``config.model.options["width"] = 16``);
* from the command line, with text parsed by each field's type: ``--set loss.alpha=0.7``,
  ``--config.model.width=16`` (:func:`apply_overrides`: ``epochs=two`` is an error naming
  ``epochs`` and the type it expected, never a string that fails an hour later);
* from a file: ``--config cfg.py`` (a Python file with ``get_config()`` returning a
  :class:`Config` or a dict, the convention of the Flax examples and big_vision) or
  ``--config run/config.json`` (another run's config) (:func:`load`).

``loss.<name>`` sets a loss hyperparameter and ``model.<name>`` a model option; their text
is parsed by the type of the loss's (model's) default, so ``loss.gamma=2`` is the number 2.
Values are checked against their ranges by :func:`dibe_jax.train.validate`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dibe_jax.errors import UserError

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
    "load",
    "override",
    "parse_value",
]


class ConfigError(UserError):
    """A configuration value or name is wrong; the message names the field and what was
    expected (one line)."""


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
    image_size: int | list[int] | list[list[int]] | None = None
    augment: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    worker_count: int = 0
    pipeline: str = "auto"  # "auto" | "device" | "grain"
    memory_budget_mb: int = 4096
    val_fraction: float = 0.2  # dataset "folder" with only images/ + masks/: validation share


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


_SUBCONFIGS = {
    (Config, "model"): ModelConfig,
    (Config, "loss"): LossConfig,
    (Config, "data"): DataConfig,
    (Config, "optim"): OptimConfig,
}


# ------------------------------------------------------------------------------ types


def _hints(cls) -> dict[str, str]:
    """Field name -> annotation text (``"int | None"``), from the class's annotations."""
    out = {}
    for klass in reversed(cls.__mro__):
        out.update(getattr(klass, "__annotations__", {}))
    return {k: (v if isinstance(v, str) else _type_text(v)) for k, v in out.items()}


def _type_text(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _split_union(annotation: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in annotation:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def _describe(annotation: str) -> str:
    words = {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "None": "none",
        "list[int]": "a list of integers like [10, 20]",
        "list[list[int]]": "a schedule like [[0, 64], [10, 96]]",
        "Sequence[int]": "a list of integers like [1, 2, 3, 6]",
        "dict[str, Any]": "a mapping",
    }
    return " or ".join(words.get(p, p) for p in _split_union(annotation))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _matches(value: Any, annotation: str) -> bool:
    for part in _split_union(annotation):
        if part == "None" and value is None:
            return True
        if part == "int" and _is_int(value):
            return True
        if part == "float" and _is_float(value):
            return True
        if part == "bool" and isinstance(value, bool):
            return True
        if part == "str" and isinstance(value, str):
            return True
        if part in ("list[int]", "Sequence[int]") and isinstance(value, list | tuple):
            if all(_is_int(v) for v in value):
                return True
        if part == "list[list[int]]" and isinstance(value, list | tuple) and value:
            if all(
                isinstance(v, list | tuple) and len(v) == 2 and all(map(_is_int, v)) for v in value
            ):
                return True
        if part in ("Any", "Dtype"):
            return True
        if part.startswith("dict") and isinstance(value, dict):
            return True
    return False


def _parse_scalar(text: str, part: str) -> Any:
    low = text.strip().lower()
    if part == "None":
        if low in ("none", "null"):
            return None
        raise ValueError
    if part == "bool":
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise ValueError
    if part == "int":
        return int(text.strip())
    if part == "float":
        v = float(text.strip())
        if not math.isfinite(v):
            raise ValueError
        return v
    if part == "str":
        t = text.strip()
        if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
            t = t[1:-1]  # 'tversky' as written in a shell
        return t
    if part in ("list[int]", "Sequence[int]", "list[list[int]]"):
        t = text.strip()
        if not t.startswith("["):
            t = f"[{t}]"  # 10,20 -> [10, 20]
        v = json.loads(t)
        if not _matches(v, part):
            raise ValueError
        return v
    if part in ("Any", "Dtype"):
        return _parse_any(text)
    raise ValueError


def _parse_any(text: str) -> Any:
    """JSON-like text without a declared type: number, bool, none, list, else the string."""
    t = text.strip()
    low = t.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        return _parse_scalar(t, "str")


def parse_value(text: str, annotation: str, *, name: str) -> Any:
    """Parse command-line ``text`` as a value of type ``annotation`` for field ``name``.

    Raises:
      ConfigError: naming ``name``, the text and the type expected.

    >>> parse_value("5", "int", name="epochs"), parse_value("none", "float | None", name="x")
    (5, None)
    >>> parse_value("two", "int", name="epochs")
    Traceback (most recent call last):
    ...
    dibe_jax.train.config.ConfigError: epochs: expected an integer, got 'two'
    """
    # Order matters: "1" is an int before it is a bool; "none" before a string.
    parts = _split_union(annotation)
    order = sorted(
        parts,
        key=lambda p: (
            ["None", "int", "float", "bool"].index(p)
            if p in ("None", "int", "float", "bool")
            else 4
        ),
    )
    for part in order:
        try:
            return _parse_scalar(text, part)
        except (ValueError, TypeError, json.JSONDecodeError):
            continue
    raise ConfigError(f"{name}: expected {_describe(annotation)}, got {text!r}")


def _default_annotation(default: Any) -> str:
    """The type of a free-form entry (loss hyperparameter, model option) from its default."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, numbers.Integral):
        return "int | float"
    if isinstance(default, numbers.Real):
        return "float"
    if isinstance(default, str):
        return "str"
    return "Any"


def _free_form_annotation(target: Any, key: str) -> str:
    """Annotation of ``loss.<key>`` / ``model.<key>`` from the loss's or model's signature."""
    import inspect

    if isinstance(target, LossConfig):
        from dibe_jax import losses

        try:
            defaults = {**losses.hyperparameters(target.name), **losses.step_options(target.name)}
        except ValueError:
            return "Any"
        return _default_annotation(defaults[key]) if key in defaults else "Any"
    from dibe_jax import models
    from dibe_jax.models import model_class

    if target.name not in models.names():
        return "Any"
    params = inspect.signature(model_class(target.name).__init__).parameters
    if key not in params:
        return "Any"
    p = params[key]
    if isinstance(p.annotation, str) and p.annotation not in ("Dtype",):
        return p.annotation
    return _default_annotation(p.default)


# ------------------------------------------------------------------- build and check


def from_dict(d: Mapping[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict`; unknown keys and wrong types raise
    :class:`ConfigError` naming the field."""
    config = _build(Config, d, "")
    check_types(config)
    return config


def _build(cls, d: Mapping[str, Any], prefix: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {[prefix + k for k in unknown]}; "
            f"{prefix or 'config '}fields: {', '.join(fields)}"
        )
    kwargs = {}
    for k, v in d.items():
        sub = _SUBCONFIGS.get((cls, k))
        kwargs[k] = _build(sub, v, f"{prefix}{k}.") if sub is not None else v
    return cls(**kwargs)


def check_types(config: Config) -> None:
    """:class:`ConfigError` naming the first field whose value is not of its declared type.

    >>> c = Config(); c.epochs = "two"; check_types(c)
    Traceback (most recent call last):
    ...
    dibe_jax.train.config.ConfigError: epochs: expected an integer, got 'two'
    """

    def walk(obj: Any, prefix: str) -> None:
        hints = _hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            if not _matches(value, hints[f.name]):
                raise ConfigError(
                    f"{prefix}{f.name}: expected {_describe(hints[f.name])}, got {value!r}"
                )
            if isinstance(value, dict):
                for k in value:
                    if not isinstance(k, str):
                        raise ConfigError(f"{prefix}{f.name}: keys must be strings, got {k!r}")

    if not isinstance(config, Config):
        raise ConfigError(f"expected a dibe_jax.train.Config, got {type(config).__name__}")
    walk(config, "")


def _resolve(config: Config, key: str) -> tuple[Any, str, bool]:
    """``(parent object, last name, is_field)`` of a dotted ``key``."""
    parts = key.strip().split(".")
    target: Any = config
    for i, part in enumerate(parts[:-1]):
        if not dataclasses.is_dataclass(target) or part not in {
            f.name for f in dataclasses.fields(target)
        }:
            raise ConfigError(f"unknown config field {'.'.join(parts[: i + 1])!r}")
        target = getattr(target, part)
    last = parts[-1]
    if not dataclasses.is_dataclass(target):
        raise ConfigError(f"unknown config field {key!r}")
    names = {f.name for f in dataclasses.fields(target)}
    if last in names:
        if dataclasses.is_dataclass(getattr(target, last)):
            raise ConfigError(f"{key!r} is a group of fields; set one of them, e.g. {key}.name")
        return target, last, True
    if isinstance(target, LossConfig | ModelConfig) and last:
        return target, last, False
    raise ConfigError(
        f"unknown config field {key!r}; "
        f"{'.'.join(parts[:-1]) or 'config'} has: {', '.join(sorted(names))}"
    )


def _set(config: Config, key: str, value: Any) -> None:
    target, last, is_field = _resolve(config, key)
    if is_field:
        annotation = _hints(type(target))[last]
        if not _matches(value, annotation):
            raise ConfigError(f"{key}: expected {_describe(annotation)}, got {value!r}")
        setattr(target, last, value)
    elif isinstance(target, LossConfig):
        target.params[last] = value
    else:
        target.options[last] = value


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
    dibe_jax.train.config.ConfigError: optim.lr: expected a number, got 'abc'
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. loss.alpha=0.7")
        key, text = item.split("=", 1)
        key = key.strip()
        target, last, is_field = _resolve(config, key)
        if is_field:
            annotation = _hints(type(target))[last]
        else:
            annotation = _free_form_annotation(target, last)
        _set(config, key, parse_value(text, annotation, name=key))
    return config


def load(path: str | Path) -> Config:
    """A :class:`Config` from a ``.json`` file (a run's ``config.json``) or a ``.py`` file
    defining ``get_config()`` that returns a :class:`Config` or a dict of its fields.

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
    if path.suffix != ".py":
        raise ConfigError(f"--config {path}: expected a .py file with get_config() or a .json")
    spec = importlib.util.spec_from_file_location(f"_dibe_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any error in a user's file is a config error
        raise ConfigError(f"--config {path}: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config {path}: defines no get_config()")
    out = module.get_config()
    if isinstance(out, Config):
        check_types(out)
        return out
    if isinstance(out, Mapping):
        return from_dict(out)
    raise ConfigError(
        f"--config {path}: get_config() returned {type(out).__name__}, "
        "expected a dibe_jax.train.Config or a dict"
    )


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
