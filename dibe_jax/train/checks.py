"""Every check of a training config, in one place, before any data is opened or compiled.

:func:`validate` runs in well under a second: field types (a choice such as ``optim.schedule``
or ``model.name`` is a ``typing.Literal`` of :mod:`~dibe_jax.train.config`, checked from its
annotation by :func:`~dibe_jax.train.config.check_types`), value ranges, the loss's name
(its registry can grow) and the dataset's, the dataset's classes (its mask feature must say
how many) against the loss's kind (a binary loss needs a 2-class dataset, a multi-class
loss 3 classes or more; the Monte-Carlo dropout loss needs ``T >= 2`` passes and a model
with dropout), each loss hyperparameter against the range the loss itself declares (the
loss is traced abstractly with ``jax.eval_shape`` on a tiny input of its kind, so the range
lives once, in the loss), model options (the model is built abstractly), image sizes
against the network's stride, and a batch the devices can split. :func:`check_mask_values`
refuses mask values outside the classes. :func:`check_resume` says which changes a resumed
run can honour. Every failure is a :class:`~dibe_jax.errors.ConfigError` whose one-line
message names the field and what was expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any, get_args

import jax
import jax.numpy as jnp
import numpy as np

from dibe_jax import losses, models
from dibe_jax.errors import UserError
from dibe_jax.train.config import Config, ConfigError, Precision, check_types, diff

__all__ = [
    "BINARY_CLASSES",
    "RESUMABLE",
    "check_image_sizes",
    "check_mask_values",
    "check_resume",
    "dataset_classes",
    "image_sizes",
    "model_options",
    "model_outputs",
    "validate",
]

#: The classes of in-memory data given without names: a binary ``{0, 1}`` mask.
BINARY_CLASSES = ("background", "defect")

#: The JAX dtype of each ``Config.dtype`` choice.
DTYPES = dict(zip(get_args(Precision), (jnp.float32, jnp.bfloat16), strict=True))

# Fields a resumed run can take from the command line; anything else would change the
# model, loss, data or optimiser of a run that is half trained.
RESUMABLE = (
    "epochs",
    "eval_every",
    "progress",
    "checkpoint_every_epochs",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "nonfinite",
    "data.data_dir",
    "data.manual_dir",
    "data.memory_budget_mb",  # a resume keeps the data path its checkpoint records
)


def _at_least(name: str, value: Any, low: float, *, strict: bool = False) -> None:
    if value is None:
        return
    if (value <= low) if strict else (value < low):
        raise ConfigError(
            f"{name}: expected a value {'>' if strict else '>='} {low:g}, got {value!r}"
        )


def _unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: expected a value in [0, 1], got {value!r}")


def model_options(config: Config) -> dict[str, Any]:
    """The keyword arguments of ``models.create`` for ``config`` (``dtype`` included)."""
    options = dict(config.model.options)
    options.setdefault("dtype", DTYPES[config.dtype])
    return options


def _check_model(config: Config) -> tuple[int, int]:
    allowed = set(models.config_keys(config.model.name))
    unknown = sorted(set(config.model.options) - allowed)
    if unknown:
        raise ConfigError(
            f"model.{unknown[0]}: model {config.model.name!r} takes no option {unknown[0]!r}; "
            f"it takes: {', '.join(sorted(allowed - {'dtype', 'param_dtype'}))}"
        )
    try:
        return models.input_size_rule(config.model.name, **model_options(config))
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"model.options of {config.model.name!r}: {e}") from e


def model_outputs(classes: Sequence[str]) -> int:
    """Output channels of the model for a dataset with these classes: 1 (one sigmoid channel)
    for a binary dataset, ``C`` (softmax) for ``C >= 3`` classes.

    >>> model_outputs(("background", "crack")), model_outputs(("background", "crack", "spot"))
    (1, 3)
    """
    return 1 if len(classes) == 2 else len(classes)


def dataset_classes(
    config: Config, *, in_memory: bool = False, class_names: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The class names of the run's data, background (0) first, read without building.

    ``data.dataset``'s mask feature says them (:func:`dibe_jax.datasets.class_names`); data
    given in memory have ``class_names`` (default :data:`BINARY_CLASSES`, ``{0, 1}`` masks).

    Raises:
      ConfigError: the dataset does not say how many classes it has, or fewer than 2 names.
    """
    if in_memory:
        names = tuple(class_names) if class_names is not None else BINARY_CLASSES
        if len(names) < 2 or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(
                f"class_names: expected at least 2 names (background first), got {list(names)}"
            )
        return names
    from dibe_jax import datasets

    try:  # a folder dataset is read from data.manual_dir (checked once per change)
        return datasets.class_names(config.data.dataset, manual_dir=config.data.manual_dir)
    except UserError:
        raise  # names its file or field itself
    except ValueError as e:
        raise ConfigError(f"data.dataset: {e}") from None


def check_mask_values(
    mask: np.ndarray, classes: Sequence[str], *, dataset: str, where: str
) -> None:
    """``ConfigError`` unless every value of ``mask`` is a class id in ``[0, len(classes))``.

    Args:
      mask: integer masks (any shape).
      classes: the dataset's class names.
      dataset: the dataset, for the message.
      where: which examples, for the message (``"train example 12"``).
    """
    mask = np.asarray(mask)
    if mask.size == 0:
        return
    lo, hi = int(mask.min()), int(mask.max())
    if lo < 0 or hi >= len(classes):
        raise ConfigError(
            f"data: {where} of {dataset} has mask values in [{lo}, {hi}], outside the class ids "
            f"[0, {len(classes)}) of its {len(classes)} classes ({', '.join(classes)})"
        )


def _model_dropout(config: Config) -> float | None:
    """The model's dropout rate (its option, else its default); None if it has none."""
    if "dropout_rate" in config.model.options:
        return config.model.options["dropout_rate"]
    from dibe_jax.models import model_class

    param = inspect.signature(model_class(config.model.name).__init__).parameters.get(
        "dropout_rate"
    )
    return None if param is None else param.default


def _check_loss(config: Config, classes: tuple[str, ...], dataset: str) -> None:
    name, params = config.loss.name, config.loss.params
    try:
        fn = losses.get(name)
    except ValueError:
        raise ConfigError(
            f"loss.name: unknown loss {name!r}; known losses: {', '.join(losses.names())}"
        ) from None
    entry = losses.info(name)
    options = losses.step_options(name)
    allowed = {**losses.hyperparameters(name), **options}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"loss.{unknown[0]}: loss {name!r} takes no hyperparameter {unknown[0]!r}; "
            f"it takes: {', '.join(allowed) or 'none'}"
        )
    task = "binary" if len(classes) == 2 else "multiclass"
    data = f"data.dataset {dataset!r} has {len(classes)} classes ({', '.join(classes)})"
    if task not in entry.tasks:
        kind = losses.describe_kind(name, short=True)
        if task == "binary":
            raise ConfigError(
                f"loss.name: {name!r} is a multi-class loss ({kind}) and {data}, a binary task "
                "with one sigmoid output; use a binary loss such as dibe, dibe_reg, "
                "focal_tversky, or a multi-class dataset such as magnetic_tile/all or "
                "synthetic_cracks/multi_96"
            )
        raise ConfigError(
            f"loss.name: {name!r} is a binary loss ({kind}) and {data}, a multi-class task "
            "with one softmax output per class; use a multi-class loss such as dibe, "
            "softmax_cross_entropy, dice_multiclass, lovasz_softmax (`dibe-jax losses` lists "
            "each loss's kind)"
        )
    samples = None
    if "mc_samples" in options:
        samples = params.get("mc_samples", options["mc_samples"])
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise ConfigError(
                f"loss.mc_samples: {name!r} needs T >= 2 Monte-Carlo dropout passes per step "
                f"(an integer; CDFL Eq. 4 is the variance over them), got {samples!r}"
            )
        rate = _model_dropout(config)
        if rate is None or not rate > 0:
            has = "has no dropout" if rate is None else f"has dropout_rate {rate}"
            raise ConfigError(
                f"model.dropout_rate: {name!r} draws its T = {samples} passes from the model's "
                f"dropout, but model {config.model.name!r} {has}, so every pass would be the "
                "same; set e.g. --set model.dropout_rate=0.1"
            )
    # The loss checks its own Python-number hyperparameters while it is traced; an abstract
    # trace on a tiny input of its kind runs those checks without computing or compiling.
    hyper = {k: v for k, v in params.items() if k not in options}
    if task == "binary":
        z = y = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
    else:
        lead = () if samples is None else (samples,)
        z = jax.ShapeDtypeStruct((*lead, 1, 8, 8, len(classes)), jnp.float32)
        y = jax.ShapeDtypeStruct((1, 8, 8), jnp.int32)
    try:
        jax.eval_shape(lambda z, y: fn(z, y, **hyper), z, y)
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"loss.params of {name!r}: {msg}") from e


def image_sizes(image_size: Any) -> list[tuple[int, int]]:
    """Every ``(rows, cols)`` an ``image_size`` setting uses (one per schedule entry).

    >>> image_sizes(96), image_sizes([64, 128]), image_sizes([[0, 64], [10, 96]])
    ([(96, 96)], [(64, 128)], [(64, 64), (96, 96)])
    """
    if image_size is None:
        return []
    if isinstance(image_size, int):
        return [(image_size, image_size)]
    if len(image_size) == 2 and all(isinstance(v, int) for v in image_size):
        return [(int(image_size[0]), int(image_size[1]))]
    return [(int(s), int(s)) for _, s in image_size]


def check_image_sizes(
    sizes: Iterable[tuple[int, int]],
    rule: tuple[int, int],
    *,
    model: str,
    field: str = "data.image_size",
) -> None:
    """``ConfigError`` for a size the network cannot take (not a multiple of its stride)."""
    multiple, minimum = rule
    for rows, cols in sizes:
        for s in (rows, cols):
            if s < minimum or s % multiple:
                below = max(multiple, s // multiple * multiple)
                raise ConfigError(
                    f"{field}: {model} needs sizes that are multiples of {multiple} and at least "
                    f"{minimum}, got {rows}x{cols} (e.g. {below} or {below + multiple})"
                )


def validate(
    config: Config, *, in_memory: bool = False, class_names: Sequence[str] | None = None
) -> None:
    """Check ``config`` completely, before anything is opened, built or compiled.

    Args:
      config: the run.
      in_memory: the data come as in-memory ``sources`` (tests, notebooks), so
        ``data.dataset`` is not looked up.
      class_names: the classes of in-memory data (default :data:`BINARY_CLASSES`).

    Raises:
      ConfigError: naming the first wrong field and what was expected.
    """
    check_types(config)
    _at_least("epochs", config.epochs, 1)
    _at_least("eval_every", config.eval_every, 1)
    _at_least("keep_checkpoints", config.keep_checkpoints, 1)
    _at_least("checkpoint_every_epochs", config.checkpoint_every_epochs, 1)
    _at_least("checkpoint_every_steps", config.checkpoint_every_steps, 1)
    _at_least("data.worker_count", config.data.worker_count, 0)
    _at_least("data.memory_budget_mb", config.data.memory_budget_mb, 0)
    if not 0 < config.data.val_fraction < 1:
        raise ConfigError(
            f"data.val_fraction: expected a number in (0, 1), got {config.data.val_fraction!r}"
        )
    _at_least("optim.lr", config.optim.lr, 0.0, strict=True)
    _at_least("optim.grad_clip", config.optim.grad_clip, 0.0, strict=True)
    if not 0.0 <= config.optim.momentum < 1.0:
        raise ConfigError(
            f"optim.momentum: expected a value in [0, 1), got {config.optim.momentum!r}"
        )
    if any(e < 0 for e in config.optim.step_epochs):
        raise ConfigError(
            f"optim.step_epochs: expected epochs >= 0, got {config.optim.step_epochs}"
        )
    for name in ("hflip", "vflip", "brightness", "contrast", "saturation"):
        _unit(f"data.{name}", getattr(config.data, name))
    n = jax.device_count()
    if config.batch_size <= 0 or config.batch_size % n:
        raise ConfigError(
            f"batch_size: expected a positive multiple of the {n} devices, got {config.batch_size}"
        )
    if config.batch_size % jax.process_count():
        raise ConfigError(
            f"batch_size: expected a multiple of the {jax.process_count()} "
            f"processes, got {config.batch_size}"
        )
    rule = _check_model(config)
    if not in_memory:
        from dibe_jax import datasets

        try:
            datasets.check_spec(config.data.dataset)
        except ValueError as e:
            raise ConfigError(f"data.dataset: {e}") from None
    classes = dataset_classes(config, in_memory=in_memory, class_names=class_names)
    _check_loss(config, classes, "in-memory data" if in_memory else config.data.dataset)
    sizes = _checked_schedule(config.data.image_size)
    if not in_memory and not sizes:
        where = config.data.manual_dir  # a folder dataset's own sizes
        native = datasets.native_image_size(config.data.dataset, manual_dir=where)
        default = datasets.default_image_size(config.data.dataset, manual_dir=where)
        if native is not None:
            sizes = [tuple(native)]
        elif default is not None:
            sizes = [(default, default)]
    check_image_sizes(sizes, rule, model=config.model.name)


def _checked_schedule(image_size: Any) -> list[tuple[int, int]]:
    if isinstance(image_size, list | tuple) and not image_size:
        raise ConfigError("data.image_size: expected a size, [rows, cols] or a schedule, got []")
    sizes = image_sizes(image_size)
    if isinstance(image_size, list | tuple) and isinstance(image_size[0], list | tuple):
        starts = [int(e) for e, _ in image_size]
        if starts != sorted(starts) or starts[0] != 0:
            raise ConfigError(
                f"data.image_size: a schedule must be sorted by epoch and start "
                f"at epoch 0, got {image_size}"
            )
    for rows, cols in sizes:
        if rows < 1 or cols < 1:
            raise ConfigError(f"data.image_size: expected positive sizes, got {image_size}")
    return sizes


def check_resume(stored: Config, requested: Config, *, where: str = "config.json") -> None:
    """``ConfigError`` unless ``requested`` differs from ``stored`` only in fields a resumed
    run can honour (:data:`RESUMABLE`: more epochs, evaluation and logging options).

    The message names the field and both values.
    """
    for key, old, new in diff(stored, requested):
        if key not in RESUMABLE:
            raise ConfigError(
                f"--resume: {key} is {old!r} in {where} but {new!r} was asked for; a resumed "
                "run keeps its model, loss, data and optimiser (drop the flag, or train in a "
                "new --workdir)"
            )
        if key == "epochs" and stored.optim.schedule == "cosine":
            raise ConfigError(
                f"--resume: epochs {old} -> {new} would change the cosine learning-rate "
                "schedule of steps already taken; train a new run instead"
            )
