"""What a run is built from: the model, its SGD optimiser and state, the jitted steps.

:func:`make_state` draws a fresh model (one jitted program for every parameter) and its
optimiser; :func:`loss_steps` builds the jitted train and eval steps of ``config.loss``;
:func:`build` validates a config, opens its data (:mod:`dibe_jax.train.batches`) and puts
all of it together as a :class:`Built`, compiling nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dibe_jax import losses, models
from dibe_jax.train import checks
from dibe_jax.train.batches import device_preprocess, device_splits, open_sources
from dibe_jax.train.built import Built
from dibe_jax.train.config import Config, ConfigError
from dibe_jax.train.step import make_mesh, make_steps, replicate

__all__ = ["Built", "build", "loss_steps", "make_state", "validate"]


def validate(
    config: Config, *, in_memory: bool = False, class_names: Sequence[str] | None = None
) -> None:
    """Check ``config`` before anything is opened or compiled (see :mod:`.checks`)."""
    checks.validate(config, in_memory=in_memory, class_names=class_names)


def _optimizer(
    config: Config, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, dict[str, Any]]:
    """SGD with momentum as ``config.optim`` says, for a run of ``steps_per_epoch``:
    ``(transformation, values)``.

    The transformation depends only on the kind of schedule (its number of step
    boundaries) and on whether gradients are clipped; every number (learning rate,
    momentum, schedule length or boundaries, clipping norm) is one of ``values``, which
    :func:`make_state` puts in the optimiser state (``optax.inject_hyperparams``). So runs
    that differ in these numbers share one graph definition, and one compiled step.
    """
    o = config.optim
    values: dict[str, Any] = {"learning_rate": float(o.lr), "momentum": float(o.momentum)}
    boundaries = sorted(set(o.step_epochs)) if o.schedule == "step" else []
    if o.schedule == "cosine":
        values["decay_steps"] = float(max(1, config.epochs * steps_per_epoch))
    elif o.schedule == "step":
        values["boundaries"] = np.asarray([e * steps_per_epoch for e in boundaries], np.int32)
    if o.grad_clip is not None:
        values["max_norm"] = float(o.grad_clip)
    return _sgd(o.schedule, len(boundaries), o.grad_clip is not None), values


@functools.lru_cache(maxsize=32)
def _sgd(schedule: str, n_boundaries: int, clip: bool) -> optax.GradientTransformation:
    """The optax transformation of this structure, one object for equal structures: it is
    part of the optimiser's graph definition, so runs with equal structures have equal
    graph definitions and :func:`~dibe_jax.train.step.make_steps` hands back the steps it
    already compiled. The numbers here are placeholders; :func:`make_state` sets the run's."""
    placeholders: dict[str, Any] = {"learning_rate": 0.0, "momentum": 0.0}
    if schedule == "cosine":
        placeholders["decay_steps"] = 1.0
    elif schedule == "step":
        placeholders["boundaries"] = np.zeros(n_boundaries, np.int32)
    if clip:
        placeholders["max_norm"] = 1.0
    return optax.inject_hyperparams(_scheduled_sgd, static_args=("schedule",))(
        schedule=schedule, **placeholders
    )


def _scheduled_sgd(
    learning_rate: jax.Array,
    momentum: jax.Array,
    decay_steps: jax.Array | None = None,
    boundaries: jax.Array | None = None,
    max_norm: jax.Array | None = None,
    *,
    schedule: str = "constant",
) -> optax.GradientTransformation:
    """``optax.sgd`` with momentum, its learning rate ``learning_rate`` (constant), cosine
    decay to 0 over ``decay_steps`` steps, or times 0.1 at each of ``boundaries`` (steps);
    gradients first clipped to global norm ``max_norm`` when given. The schedules compute
    what ``optax.cosine_decay_schedule`` and ``optax.piecewise_constant_schedule`` compute,
    operation for operation, with traced lengths and boundaries."""
    if schedule == "cosine":

        def lr(count):
            count = jnp.minimum(count.astype(decay_steps.dtype), decay_steps)
            return learning_rate * (0.5 * (1 + jnp.cos(jnp.pi * count / decay_steps)))

    elif schedule == "step":

        def lr(count):
            v = learning_rate
            for i in range(boundaries.shape[0]):
                indicator = jnp.maximum(0.0, jnp.sign(boundaries[i] - count).astype(v.dtype))
                v = v * indicator + (1 - indicator) * 0.1 * v
            return v

    else:
        lr = learning_rate
    tx = optax.sgd(lr, momentum=momentum)
    if max_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(max_norm), tx)
    return tx


def make_state(config: Config, in_channels: int, steps_per_epoch: int = 1, *, num_classes: int = 1):
    """``(train_graphdef, eval_graphdef, state)`` of a fresh model and its SGD optimiser.

    ``state`` holds parameters, BatchNorm statistics, optimiser and RNG state; the two
    graph definitions differ only in train/eval mode (BatchNorm, dropout). ``num_classes``
    is the number of outputs: 1 for a binary run, ``C`` for a multi-class one.
    """
    options = dict(config.model.options)
    options.setdefault("dtype", checks.DTYPES[config.dtype])
    args = (config.model.name, in_channels, num_classes, config.seed)
    key = models.options_key(options)  # one compiled program draws every parameter
    if key is None or options.get("backbone_checkpoint") is not None:  # reads files
        model = _create_model(*args, tuple(options.items()))
    else:
        model = _create_model_jitted(*args[:3], np.int32(config.seed), key)
    tx, values = _optimizer(config, steps_per_epoch)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    hyperparams = optimizer.opt_state.hyperparams  # the run's numbers, inputs of the step
    for name, value in values.items():
        hyperparams[name][...] = jnp.asarray(value, hyperparams[name][...].dtype)
    model.eval()
    eval_graphdef, _ = nnx.split((model, optimizer))
    model.train()
    train_graphdef, state = nnx.split((model, optimizer))
    return train_graphdef, eval_graphdef, state


def _create_model(
    name: str, in_channels: int, num_classes: int, seed: int | jax.Array, options: tuple
) -> nnx.Module:
    """Model ``name`` with parameters drawn from ``seed`` (dropout from ``seed + 1``), an
    int or a traced ``int32`` scalar (the same keys)."""
    rngs = nnx.Rngs(params=jax.random.key(seed), dropout=jax.random.key(seed + 1))
    return models.create(
        name, in_channels=in_channels, num_classes=num_classes, rngs=rngs, **dict(options)
    )


@functools.partial(nnx.jit, static_argnums=(0, 1, 2, 4))
def _create_model_jitted(
    name: str, in_channels: int, num_classes: int, seed: jax.Array, options: tuple
) -> nnx.Module:
    """:func:`_create_model` as one jitted program, ``options`` as
    :func:`~dibe_jax.models.registry.options_key` gives them: one compilation instead of
    one per parameter shape when run eagerly (U-Net width 8 builds in 3.0 s instead of
    4.4 s, cache empty). The seed is an input (an ``int32`` scalar): every seed of one
    model shares the program, and equal arguments compile nothing. The values are the
    eager ones bit for bit (the initialisers of :mod:`dibe_jax.models.blocks` keep XLA
    from folding their scale into the random draw)."""
    return _create_model(name, in_channels, num_classes, seed, tuple((k, v) for k, _, v in options))


def loss_steps(config: Config, train_graphdef, eval_graphdef, mesh, *, num_classes: int):
    """The jitted steps of ``config.loss`` for a model with ``num_classes`` outputs, as its
    kind asks (:func:`dibe_jax.losses.info`): ``T = loss.mc_samples`` dropout passes for a
    Monte-Carlo dropout loss, the batch's own value for a batch-scalar loss; the step
    options are not passed to the loss function."""
    options = losses.step_options(config.loss.name)
    params = {k: v for k, v in config.loss.params.items() if k not in options}
    return make_steps(
        train_graphdef,
        eval_graphdef,
        losses.get(config.loss.name),
        params,
        mesh,
        num_classes=num_classes,
        mc_samples=config.loss.params.get("mc_samples", options.get("mc_samples")),
        batch_loss=losses.info(config.loss.name).batch,
        skip_nonfinite=True,
        preprocess=device_preprocess(config),
    )


def build(
    config: Config,
    sources: Mapping[str, Sequence] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    train: bool = True,
    validated: bool = False,
) -> Built:
    """Validate ``config``, open the data and build model, optimiser, state and steps.

    Nothing is compiled here (the steps compile at their first call) and nothing is
    written except a TFDS dataset built on first use. ``class_names`` name the classes of
    in-memory ``sources`` (default: binary ``{0, 1}`` masks); a dataset's come from its
    mask feature. Splits on the device data path (``data.pipeline``) are decoded here, the
    training split only if ``train`` (False: evaluation only). ``validated``: the caller
    has checked ``config`` with :func:`validate` already (``train_and_evaluate`` does, once).
    """
    if not validated:
        validate(config, in_memory=sources is not None, class_names=class_names)
    train_src, eval_src, classes = open_sources(config, sources, class_names)
    if len(train_src) == 0 or len(eval_src) == 0:
        raise ConfigError("data: the train and evaluation splits must not be empty")
    if len(eval_src) < jax.process_count():
        raise ConfigError(
            f"data.eval_split: {len(eval_src)} examples cannot be shared by "
            f"{jax.process_count()} processes"
        )
    sample = np.asarray(train_src[0]["image"])
    in_channels = int(sample.shape[-1]) if sample.ndim == 3 else 1
    if config.data.image_size is None:  # native size: the network must take it
        checks.check_image_sizes(
            [tuple(sample.shape[:2])],
            models.input_size_rule(config.model.name, **checks.model_options(config)),
            model=config.model.name,
            field="data.image_size (native size of the data)",
        )
    local_batch = config.batch_size // jax.process_count()
    steps_per_epoch = len(train_src) // jax.process_count() // local_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size: {config.batch_size} exceeds the {len(train_src)} training examples"
        )
    data_label = "the in-memory data" if sources is not None else config.data.dataset
    wanted = {config.data.eval_split: eval_src}
    if train:
        wanted = {config.data.train_split: train_src, **wanted}  # training split first
    arrays = device_splits(
        config, wanted, classes, data_label, in_memory_sources=sources is not None
    )
    outputs = checks.model_outputs(classes)
    train_graphdef, eval_graphdef, state = make_state(
        config, in_channels, steps_per_epoch, num_classes=outputs
    )
    mesh = make_mesh()
    steps = loss_steps(config, train_graphdef, eval_graphdef, mesh, num_classes=outputs)
    state = replicate(state, steps.replicated)
    return Built(
        config,
        state,
        steps,
        mesh,
        train_src,
        eval_src,
        steps_per_epoch,
        local_batch,
        train_graphdef,
        eval_graphdef,
        classes,
        data_label,
        arrays.get(config.data.train_split) if train else None,
        arrays[config.data.eval_split],
        _native_size(config, train_src, sources is not None),
    )


def _native_size(config: Config, train_src: Sequence, in_memory_data: bool):
    """``(rows, cols)`` every training image has, or None when they differ (training then
    resized each to ``data.image_size``)."""
    sample = np.asarray(train_src[0]["image"])
    if config.data.image_size is None:  # trained at the native size, which all share
        return tuple(sample.shape[:2])
    if not in_memory_data:
        from dibe_jax import datasets

        size = datasets.native_image_size(config.data.dataset, manual_dir=config.data.manual_dir)
        return tuple(size) if size is not None else None
    if not isinstance(train_src, list | tuple):
        return None  # a custom sequence or ArraySource: not read again just for this
    sizes = {np.shape(ex["image"])[:2] for ex in train_src}
    return tuple(sample.shape[:2]) if len(sizes) == 1 else None
