"""``train_and_evaluate(config, workdir)``: the training loop of the DIBE paper's experiments.

Every ``eval_every`` epochs the whole validation split is evaluated: TP/FP/FN/TN summed over
every image (and device), then IoU, PA (precision), recall, OII and FP/FN computed once, as
the paper reports them (Sec. 4.3.3). Each evaluation is appended to ``workdir/metrics.jsonl``
and TensorBoard; checkpoints go to ``workdir/checkpoints`` (see
:mod:`dibe_jax.train.checkpoints`); plots of IoU, PA and OII against epoch to
``workdir/plots``.

The number of classes comes from the dataset's mask feature
(:func:`dibe_jax.datasets.class_names`): two classes make a binary run (one sigmoid output,
exactly the above); ``C >= 3`` make a multi-class run: the model has ``C`` softmax outputs,
evaluation sums a ``[C, C]`` confusion matrix over the split and reports mIoU, mAcc, pixel
accuracy, per-class IoU / precision / recall / OII and the multi-class OII summary
(:func:`dibe_jax.train.reporting.multiclass_metrics`), and the best checkpoint is the one
of the highest mIoU. ``model.json`` records the classes for ``eval`` and ``predict``.

A run folder describes itself: ``config.json`` is the truth for resume, evaluation and
prediction. ``resume=True`` continues from the newest readable checkpoint with the same
optimiser state, RNG state and data order (an interrupted run ends with the same metrics as
an uninterrupted one); it accepts only changes a resume can honour
(:data:`~dibe_jax.train.checks.RESUMABLE`: more epochs, evaluation and logging options).

Data paths (``data.pipeline``): a split that fits ``data.memory_budget_mb`` is decoded once in
:func:`build` into ``uint8`` arrays (its mask values checked there, before the workdir is
touched); each epoch then gathers index batches of a seeded permutation, sends them to the
device as ``uint8`` a batch or two ahead, and the jitted step augments them
(:mod:`dibe_jax.data.in_memory`, :mod:`dibe_jax.data.device_augment`). Other splits go
through the grain loader. Both iterators yield device batches and store their position with
``get_state()`` in the checkpoints, together with the training path, which a resume keeps.
Nothing in the workdir is written before the config is validated, the data opened and the
checkpoint restored, and a launch that fails before its first training step removes what it
wrote (a replaced run, with ``overwrite=True``, is put back). SIGINT or SIGTERM during
training saves a checkpoint at the last completed step, data position included, and raises
:class:`Interrupted`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dibe_jax import losses, metrics, models
from dibe_jax.data import in_memory, pipeline
from dibe_jax.data.augment import AugmentConfig
from dibe_jax.data.device_augment import DevicePreprocess
from dibe_jax.data.epochs import size_pair
from dibe_jax.files import atomic_write_text
from dibe_jax.train import checks, reporting
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.config import Config, ConfigError, from_dict
from dibe_jax.train.step import make_mesh, make_steps, replicate, shard_batch, zero_totals

__all__ = [
    "Interrupted",
    "NonFiniteError",
    "build",
    "evaluate_checkpoint",
    "load_config",
    "loss_steps",
    "make_state",
    "resolve",
    "train_and_evaluate",
    "validate",
]

log = logging.getLogger(__name__)

#: With ``nonfinite="raise"``, how often (in steps) the device-side flag is read.
NONFINITE_CHECK_EVERY = 8

OUTPUTS = ("config.json", "model.json", "metrics.jsonl", "checkpoints", "tensorboard", "plots")


class NonFiniteError(FloatingPointError):
    """The loss or a gradient stopped being finite."""


class Interrupted(Exception):  # noqa: N818 - it is the event, not an error
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint.

    Attributes:
      signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
      step, epoch: where the saved checkpoint continues from (``epoch`` is the epoch in
        progress, 0-based, or the number of finished epochs at an epoch end).
      workdir: the run.
    """

    def __init__(self, signum: int, step: int, epoch: int, workdir: Path) -> None:
        self.signum, self.step, self.epoch, self.workdir = signum, step, epoch, workdir
        name = signal.Signals(signum).name
        super().__init__(
            f"{name}: saved a checkpoint at step {step} (epoch {epoch + 1}) "
            f"in {workdir / 'checkpoints'}"
        )


def validate(
    config: Config, *, in_memory: bool = False, class_names: Sequence[str] | None = None
) -> None:
    """Check ``config`` before anything is opened or compiled (see :mod:`.checks`)."""
    checks.validate(config, in_memory=in_memory, class_names=class_names)


def resolve(config: Config) -> Config:
    """A copy of ``config`` with the dataset's default image size filled in when the
    dataset's images differ in size and ``data.image_size`` is None (magnetic_tile: the
    size stated by :func:`dibe_jax.datasets.default_image_size`)."""
    config = copy.deepcopy(config)
    if config.data.image_size is None:
        from dibe_jax import datasets

        if datasets.native_image_size(config.data.dataset) is None:
            size = datasets.default_image_size(config.data.dataset)
            if size is not None:
                log.info(
                    "%s images differ in size: training at %dx%d (data.image_size)",
                    config.data.dataset,
                    size,
                    size,
                )
                config.data.image_size = size
    return config


def _sources(
    config: Config, sources: Mapping[str, Sequence] | None, class_names: Sequence[str] | None
):
    """``(train source, eval source, class names)``: in-memory splits with their names
    (checked mask by mask for lists and tuples), or the prepared dataset and the names its
    mask feature carries."""
    splits = (config.data.train_split, config.data.eval_split)
    if sources is not None:
        for field, split in zip(("data.train_split", "data.eval_split"), splits, strict=True):
            if split not in sources:
                raise ConfigError(
                    f"{field}: no split {split!r} in the given sources; they have: "
                    f"{', '.join(sources)}"
                )
        classes = checks.dataset_classes(config, in_memory=True, class_names=class_names)
        for split in dict.fromkeys(splits):
            if isinstance(sources[split], list | tuple):  # other sequences: batch by batch
                for i, example in enumerate(sources[split]):
                    checks.check_mask_values(
                        example["mask"],
                        classes,
                        dataset="the in-memory data",
                        where=f"{split} example {i}",
                    )
        return sources[splits[0]], sources[splits[1]], classes
    from dibe_jax import datasets

    for field, split in zip(("data.train_split", "data.eval_split"), splits, strict=True):
        try:
            datasets.check_split(config.data.dataset, split)  # before anything is built
        except ValueError as e:
            raise ConfigError(f"{field}: {e}") from None
    builder = datasets.prepare(
        config.data.dataset, data_dir=config.data.data_dir, manual_dir=config.data.manual_dir
    )
    try:
        classes = datasets.class_names(builder)
    except ValueError as e:
        raise ConfigError(f"data.dataset: {e}") from None
    ds = builder.as_data_source()
    return ds[splits[0]], ds[splits[1]], classes


def _optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum as ``config.optim`` says, for a run of ``steps_per_epoch``."""
    o = config.optim
    # only what the schedule uses, so that equal transformations are one object
    total = max(1, config.epochs * steps_per_epoch) if o.schedule == "cosine" else 0
    per_epoch = steps_per_epoch if o.schedule == "step" else 0
    return _sgd(o.lr, o.momentum, o.schedule, tuple(o.step_epochs), o.grad_clip, total, per_epoch)


@functools.lru_cache(maxsize=32, typed=True)
def _sgd(
    lr: float,
    momentum: float,
    schedule: str,
    step_epochs: tuple[int, ...],
    grad_clip: float | None,
    total: int,
    steps_per_epoch: int,
) -> optax.GradientTransformation:
    """The optax transformation of these settings, one object for equal settings: it is part
    of the optimiser's graph definition, so equal settings give equal graph definitions and
    :func:`~dibe_jax.train.step.make_steps` can hand back the steps it already compiled."""
    if schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr, total)
    elif schedule == "step":
        lr = optax.piecewise_constant_schedule(lr, {e * steps_per_epoch: 0.1 for e in step_epochs})
    tx = optax.sgd(lr, momentum=momentum)
    if grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
    return tx


@dataclasses.dataclass
class Built:
    """A model, its optimiser state and the jitted steps, ready to train or evaluate."""

    config: Config
    state: Any
    steps: Any
    mesh: Any
    train_source: Sequence
    eval_source: Sequence
    steps_per_epoch: int
    local_batch: int
    train_graphdef: Any
    eval_graphdef: Any
    classes: tuple[str, ...] = checks.BINARY_CLASSES
    data_label: str = "the in-memory data"  # the dataset, for messages
    train_arrays: in_memory.ArraySplit | None = None  # decoded: the device data path
    eval_arrays: in_memory.ArraySplit | None = None

    @property
    def num_outputs(self) -> int:
        """Model outputs: 1 (binary, sigmoid) or the number of classes (softmax)."""
        return checks.model_outputs(self.classes)

    @property
    def train_pipeline(self) -> str:
        """The training split's data path: ``"device"`` or ``"grain"``."""
        return "device" if self.train_arrays is not None else "grain"


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
        model = _create_model_jitted(*args, key)
    optimizer = nnx.Optimizer(model, _optimizer(config, steps_per_epoch), wrt=nnx.Param)
    model.eval()
    eval_graphdef, _ = nnx.split((model, optimizer))
    model.train()
    train_graphdef, state = nnx.split((model, optimizer))
    return train_graphdef, eval_graphdef, state


def _create_model(
    name: str, in_channels: int, num_classes: int, seed: int, options: tuple
) -> nnx.Module:
    """Model ``name`` with parameters drawn from ``seed`` (dropout from ``seed + 1``)."""
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    return models.create(
        name, in_channels=in_channels, num_classes=num_classes, rngs=rngs, **dict(options)
    )


@functools.partial(nnx.jit, static_argnums=(0, 1, 2, 3, 4))
def _create_model_jitted(
    name: str, in_channels: int, num_classes: int, seed: int, options: tuple
) -> nnx.Module:
    """:func:`_create_model` as one jitted program, ``options`` as
    :func:`~dibe_jax.models.registry.options_key` gives them: one compilation instead of
    one per parameter shape when run eagerly (U-Net width 8 builds in 3.0 s instead of
    4.4 s, cache empty), none for equal arguments within a process. The values are the
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


def augment_config(config: Config) -> AugmentConfig:
    """The training augmentation of ``config.data`` (all off unless ``data.augment``)."""
    d = config.data
    if not d.augment:
        return AugmentConfig(hflip=0.0, vflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
    return AugmentConfig(
        hflip=d.hflip,
        vflip=d.vflip,
        brightness=d.brightness,
        contrast=d.contrast,
        saturation=d.saturation,
    )


def device_preprocess(config: Config) -> DevicePreprocess:
    """What the jitted steps do to the ``uint8`` batches of the device data path: the
    augmentation of ``config.data`` from the key of ``(config.seed, step)``, resize to the
    epoch's size, ``uint8 -> float32``."""
    return DevicePreprocess(augment=augment_config(config), seed=config.seed)


def _materialised(source: Sequence) -> bool:
    """In-memory data ``auto`` may decode: a list, tuple or ``ArraySource`` (a custom
    sequence may do work on every read, which decoding once would skip)."""
    return isinstance(source, list | tuple | pipeline.ArraySource)


def _device_splits(
    config: Config,
    splits: Mapping[str, Sequence],
    classes: Sequence[str],
    data_label: str,
    *,
    in_memory_sources: bool,
) -> dict[str, in_memory.ArraySplit | None]:
    """Each split of ``splits`` decoded for the device path, or None where it stays on grain.

    The budget (``data.memory_budget_mb``) is checked for every split before any is decoded
    (the training split first, then the others with what is left); decoding scans the mask
    values and refuses one outside the classes, naming the example.
    """
    d = config.data
    if d.pipeline == "grain":
        return dict.fromkeys(splits)
    size = in_memory.stored_size(d.image_size)
    budget = left = int(d.memory_budget_mb) * 2**20
    plan: dict[str, Sequence | None] = {}
    for split, src in splits.items():
        if d.pipeline == "auto" and in_memory_sources and not _materialised(src):
            plan[split] = None
            continue
        image = np.asarray(src[0]["image"])
        hw = size or tuple(image.shape[:2])
        need = in_memory.split_bytes(len(src), hw, image.shape[-1] if image.ndim == 3 else 1)
        if need > left:
            if d.pipeline == "device":
                raise ConfigError(
                    f"data.pipeline: 'device' keeps the {split} split in host memory as uint8 "
                    f"({len(src)} images of {hw[0]}x{hw[1]}: {need / 2**20:.0f} MiB), more than "
                    f"the {left / 2**20:.0f} MiB of data.memory_budget_mb={d.memory_budget_mb} "
                    "left for it; raise data.memory_budget_mb or set data.pipeline=grain"
                )
            log.info(
                "data: the %s split (%.0f MiB as uint8) exceeds the %.0f MiB left of "
                "data.memory_budget_mb: grain loader",
                split,
                need / 2**20,
                left / 2**20,
            )
            plan[split] = None
        else:
            plan[split] = src
            left -= need
    out: dict[str, in_memory.ArraySplit | None] = {}
    for split, src in plan.items():
        if src is None:
            out[split] = None
            continue
        t = time.perf_counter()
        try:
            arrays = in_memory.decode_split(src, size=size, name=split)
        except ValueError as e:
            raise ConfigError(f"data: {data_label}: {e}") from None
        bad = np.flatnonzero(arrays.mask_max >= len(classes))
        if bad.size:
            i = int(bad[0])
            checks.check_mask_values(
                arrays.masks[i], classes, dataset=data_label, where=f"{split} example {i}"
            )
        log.info(
            "data: %s split decoded into memory (%d images, %.0f MiB, %.1f s; budget %d MiB)",
            split,
            len(arrays),
            arrays.nbytes / 2**20,
            time.perf_counter() - t,
            budget // 2**20,
        )
        out[split] = arrays
    return out


def build(
    config: Config,
    sources: Mapping[str, Sequence] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    train: bool = True,
) -> Built:
    """Validate ``config``, open the data and build model, optimiser, state and steps.

    Nothing is compiled here (the steps compile at their first call) and nothing is
    written except a TFDS dataset built on first use. ``class_names`` name the classes of
    in-memory ``sources`` (default: binary ``{0, 1}`` masks); a dataset's come from its
    mask feature. Splits on the device data path (``data.pipeline``) are decoded here, the
    training split only if ``train`` (False: evaluation only).
    """
    validate(config, in_memory=sources is not None, class_names=class_names)
    train_src, eval_src, classes = _sources(config, sources, class_names)
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
    arrays = _device_splits(
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
    )


def _checked_batch(built: Built, batch: Mapping[str, np.ndarray], where: str) -> None:
    """Refuse a batch whose masks hold a value that is not a class id (before its step)."""
    checks.check_mask_values(batch["mask"], built.classes, dataset=built.data_label, where=where)


def _loader_kwargs(config: Config, local_batch: int) -> dict[str, Any]:
    d = config.data
    return dict(
        batch_size=local_batch,
        image_size=d.image_size,
        seed=config.seed,
        worker_count=d.worker_count,
        augment=augment_config(config),
    )


def _epoch_size(config: Config, epoch: int) -> tuple[int, int] | None:
    """The epoch's ``(rows, cols)`` (the steps' static ``size``), None for the native size."""
    return size_pair(pipeline.size_at(config.data.image_size, epoch))


def _put(built: Built):
    # Looked up at each call, so a test may watch the module's shard_batch.
    return lambda batch: shard_batch(batch, built.mesh)


class _GrainBatches:
    """The grain loader's training epoch as device batches (each checked, then sharded),
    with its iterator's ``get_state`` / ``set_state``."""

    def __init__(self, built: Built, epoch: int) -> None:
        kwargs = _loader_kwargs(built.config, built.local_batch)
        loader = pipeline.make_loader(built.train_source, train=True, epoch=epoch, **kwargs)
        self._it, self._built, self._epoch = iter(loader), built, epoch

    def __iter__(self) -> _GrainBatches:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        batch = next(self._it)
        _checked_batch(self._built, batch, f"a training batch of epoch {self._epoch + 1}")
        return shard_batch(batch, self._built.mesh)

    def get_state(self) -> bytes:
        return self._it.get_state()

    def set_state(self, state: bytes) -> None:
        self._it.set_state(state)


def _train_batches(built: Built, epoch: int, state: str | None):
    """The training batches of ``epoch`` on the device, from position ``state`` (a stored
    ``get_state()``) or the start."""
    if built.train_arrays is not None:
        it = in_memory.Batches(
            built.train_arrays,
            batch_size=built.local_batch,
            train=True,
            seed=built.config.seed,
            epoch=epoch,
            put=_put(built),
        )
    else:
        it = _GrainBatches(built, epoch)
    if state is not None:
        it.set_state(state.encode())
    return it


def _eval_batches(built: Built, epoch: int):
    """The evaluation split's device batches, the same number on every process (the last
    ones padded, ``valid`` False)."""
    if built.eval_arrays is not None:
        yield from in_memory.Batches(
            built.eval_arrays, batch_size=built.local_batch, train=False, put=_put(built)
        )
        return
    kwargs = _loader_kwargs(built.config, built.local_batch)
    kwargs["image_size"] = pipeline.size_at(built.config.data.image_size, epoch)
    loader = pipeline.make_loader(built.eval_source, train=False, epoch=epoch, **kwargs)
    # Every process must run the same number of (collective) steps: the shards differ by at
    # most one example, so the shorter ones add a batch of padding rows (valid = False).
    per_process = -(-len(built.eval_source) // jax.process_count())
    batches = -(-per_process // built.local_batch)
    done, template = 0, None
    for batch in loader:
        _checked_batch(built, batch, f"evaluation batch {done}")
        batch = pipeline.pad_batch(batch, built.local_batch)
        template = batch
        yield shard_batch(batch, built.mesh)
        done += 1
    for _ in range(batches - done):
        yield shard_batch({k: np.zeros_like(v) for k, v in template.items()}, built.mesh)


def evaluate(built: Built, state, epoch: int) -> dict[str, Any]:
    """Dataset-level metrics of ``state`` on the evaluation split."""
    size = _epoch_size(built.config, epoch)
    totals = replicate(zero_totals(built.num_outputs), built.steps.replicated)
    for batch in _eval_batches(built, epoch):
        totals = built.steps.evaluate(state, batch, totals, size=size)
    totals = jax.device_get(totals)
    val_loss = float(totals["loss"]) / max(1, int(totals["images"]))
    if built.num_outputs > 1:
        return {**reporting.multiclass_metrics(totals["cm"], built.classes), "val_loss": val_loss}
    counts = metrics.Confusion(*(int(totals[k]) for k in ("tp", "fp", "fn", "tn")))
    summary = metrics.summarize(counts)
    summary["val_loss"] = val_loss
    return summary


def _new_epoch_sums(loss_sum: float, loss_count: int, skipped: int) -> dict[str, jax.Array]:
    return {
        "loss_sum": jnp.asarray(loss_sum, jnp.float32),
        "loss_count": jnp.asarray(loss_count, jnp.int32),
        "skipped": jnp.asarray(skipped, jnp.int32),
        "bad": jnp.asarray(-1, jnp.int32),  # first step whose update was not finite
    }


@jax.jit
def _add_step(acc: dict[str, jax.Array], stats: dict[str, jax.Array], step) -> dict:
    """Fold one step's stats into the epoch sums (one small jitted call per step)."""
    ok = stats["nonfinite"] == 0
    return {
        "loss_sum": acc["loss_sum"] + jnp.where(ok, stats["loss"], 0.0),
        "loss_count": acc["loss_count"] + ok.astype(jnp.int32),
        "skipped": acc["skipped"] + (~ok).astype(jnp.int32),
        "bad": jnp.where(~ok & (acc["bad"] < 0), step, acc["bad"]),
    }


class _Signals:
    """Catch SIGINT / SIGTERM while training: the loop saves and stops at the next step.

    A second signal of the same kind stops at once (the default behaviour). Outside the
    main thread (where Python cannot install handlers) nothing is caught.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is not None:  # second signal: give up waiting
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "%s received: saving a checkpoint after this step (again to stop now)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Progress:
    """A tqdm bar over *completed* steps: a step counts when its loss is ready on the device.

    Dispatch may run ahead of the device; at most ``ahead`` steps are left in flight, so the
    bar never stalls at an epoch end and the host never waits more than that.
    """

    def __init__(self, bar, ahead: int = 2) -> None:
        self.bar, self.ahead = bar, ahead
        self._pending: collections.deque = collections.deque()

    def add(self, loss: jax.Array) -> None:
        self._pending.append(loss)
        while self._pending and (len(self._pending) > self.ahead or self._pending[0].is_ready()):
            self._pending.popleft().block_until_ready()
            self.bar.update(1)

    def flush(self) -> None:
        while self._pending:
            self._pending.popleft().block_until_ready()
            self.bar.update(1)


class _Workdir:
    """What a launch wrote, so a launch that fails before its first step can undo it."""

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


def _existing_outputs(workdir: Path) -> list[str]:
    return [n for n in OUTPUTS if (workdir / n).exists()]


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    sources: Mapping[str, Sequence] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train ``config`` in ``workdir``; return the last evaluation record.

    Args:
      config: the run (see :class:`~dibe_jax.train.config.Config`; paper defaults). With
        ``resume``, it must equal the run's ``config.json`` except for the fields a resume
        can honour (:data:`~dibe_jax.train.checks.RESUMABLE`); build it with
        :func:`load_config` and change those.
      workdir: output folder: ``config.json``, ``model.json``, ``metrics.jsonl``,
        ``tensorboard/``, ``checkpoints/``, ``plots/``.
      resume: continue from the newest readable checkpoint in ``workdir``; a workdir with
        no run starts a new one (logged).
      overwrite: replace a previous run's outputs in ``workdir`` (they are removed once the
        new run has taken its first step). Without it (and without ``resume``) a workdir
        that already holds a run is an error, so nothing is lost by accident.
      sources: optional in-memory splits ``{"train": seq, "validation": seq}`` of example
        dicts (``image`` uint8 ``[H, W, C]``, ``mask`` uint8 ``[H, W, 1]``) used instead of
        ``config.data.dataset`` (tests, notebooks).
      class_names: the classes of ``sources``' masks, background (0) first; default a
        binary ``{0, 1}`` mask. Three or more make a multi-class run.

    Raises:
      ConfigError: for an invalid config or a change a resume cannot honour, before
        anything is written or compiled.
      NonFiniteError: if the loss or gradients stop being finite and
        ``config.nonfinite == "raise"`` (the message names the step and the last good
        checkpoint; the bad update is never applied).
      Interrupted: SIGINT or SIGTERM arrived; a checkpoint of the last completed step was
        saved first.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    writer = jax.process_index() == 0
    existing = _existing_outputs(workdir)
    stored = None
    if resume:
        if (workdir / "config.json").is_file():
            stored = load_config(workdir)
            checks.check_resume(stored, config, where=str(workdir / "config.json"))
        elif existing:
            raise ConfigError(
                f"--resume: {workdir} holds {', '.join(existing)} but no "
                "config.json, so it cannot be resumed"
            )
        else:
            log.warning("--resume: %s holds no run yet; starting a new one", workdir)
            resume = False
    elif existing and not overwrite:
        raise ConfigError(
            f"{workdir} already holds a run ({', '.join(existing)}); pass resume=True "
            "(--resume) to continue it, overwrite=True (--overwrite) to replace it, or "
            "choose another workdir"
        )
    if sources is None:
        validate(config)  # fail on names before resolve() looks the dataset up
        config = resolve(config)
    built = build(config, sources, class_names=class_names)
    state = built.state
    start_epoch, skip_batches, step, elapsed0 = 0, None, 0, 0.0
    skipped = 0  # updates dropped for non-finite loss or gradients
    loss_sum0, loss_count0 = 0.0, 0
    meta = None
    if resume and (workdir / "checkpoints" / "latest").is_dir():
        ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
        if ckpt.latest_step() is not None:
            state, meta, step = ckpt.restore(state)
        ckpt.close()
    if meta is not None and meta["epoch"] > config.epochs:
        raise ConfigError(
            f"epochs: the run in {workdir} has already trained {meta['epoch']} "
            f"epochs; ask for at least that many"
        )
    if meta is not None:
        built = _recorded_pipeline(built, meta, workdir)
    # From here on the workdir changes; before the first step, a failure undoes it.
    wd = _Workdir(workdir, writer)
    if not resume:
        wd.park(existing)
    wd.track("checkpoints", "tensorboard", "metrics.jsonl", "plots")
    mlog = ckpt = bar = None
    try:
        wd.write("config.json", config.to_json() + "\n")
        sample = np.asarray(built.train_source[0]["image"])
        final_size = pipeline.size_at(config.data.image_size, config.epochs - 1)
        info = {
            "in_channels": int(sample.shape[-1]) if sample.ndim == 3 else 1,
            "num_classes": built.num_outputs,
            "image_size": final_size or list(sample.shape[:2]),
        }
        if built.num_outputs > 1:  # a binary run's model.json stays as it always was
            info["class_names"] = list(built.classes)
        wd.write("model.json", json.dumps(info) + "\n")
        ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
        mlog = reporting.MetricsLog(workdir, enabled=writer)
        if meta is not None:
            latest = ckpt.latest_step()
            if latest is not None and step != latest:
                ckpt.discard_after(step)
            state = replicate(state, built.steps.replicated)
            start_epoch, skip_batches = meta["epoch"], meta.get("loader")
            elapsed0 = meta.get("seconds", 0.0)
            loss_sum0, loss_count0 = meta.get("loss_sum", 0.0), meta.get("loss_count", 0)
            skipped = int(meta.get("skipped", 0))
            log.info(
                "resuming %s from step %d (epoch %d of %d%s)",
                workdir,
                step,
                start_epoch + (1 if skip_batches else 0),
                config.epochs,
                ", mid-epoch" if skip_batches else " done",
            )
        elif resume:
            log.info("resuming %s: no checkpoint yet, starting from step 0", workdir)
        mlog.truncate_after(step)

        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.epochs * built.steps_per_epoch,
            initial=step,
            unit="step",
            disable=not (config.progress and writer),
            dynamic_ncols=True,
        )
        progress = _Progress(bar)
        first_step = step
        record: dict[str, Any] = {}
        with _Signals() as signals:
            for epoch in range(start_epoch, config.epochs):
                size = _epoch_size(config, epoch)
                it = _train_batches(built, epoch, skip_batches)
                skip_batches = None
                # Running sums stay on the device: no host round-trip inside the epoch.
                acc = replicate(
                    _new_epoch_sums(loss_sum0, loss_count0, skipped), built.steps.replicated
                )
                loss_sum0, loss_count0 = 0.0, 0
                earlier_bad = None
                for batch in it:
                    state, stats = built.steps.train(state, batch, step, size=size)
                    acc = _add_step(acc, stats, step)
                    step += 1
                    progress.add(stats["loss"])
                    if step == first_step + 1:
                        wd.commit()
                    if config.nonfinite == "raise" and step % NONFINITE_CHECK_EVERY == 0:
                        # Read the flag of NONFINITE_CHECK_EVERY steps ago: long computed, so
                        # reading it never stalls the device; a bad step stops the run within
                        # 2 * NONFINITE_CHECK_EVERY steps.
                        if earlier_bad is not None:
                            _raise_if_nonfinite({"bad": earlier_bad}, config, ckpt, epoch, bar)
                        earlier_bad = acc["bad"]
                    every = config.checkpoint_every_steps
                    # (an epoch's last step is saved below, with the epoch's end)
                    periodic = every and step % every == 0 and step % built.steps_per_epoch
                    if signals.received or periodic:
                        ckpt.save(
                            step,
                            state,
                            {
                                "epoch": epoch,
                                "loader": it.get_state().decode(),
                                "pipeline": built.train_pipeline,
                                "step": step,
                                "loss_sum": float(acc["loss_sum"]),
                                "loss_count": int(acc["loss_count"]),
                                "skipped": int(acc["skipped"]),
                                "seconds": elapsed0 + time.perf_counter() - t_start,
                            },
                        )
                    if signals.received:
                        progress.flush()
                        _raise_if_nonfinite(acc, config, ckpt, epoch, bar)
                        ckpt.wait()
                        raise Interrupted(signals.received, step, epoch, workdir)
                progress.flush()
                acc = jax.device_get(acc)  # once per epoch
                skipped = int(acc["skipped"])
                count = int(acc["loss_count"])
                train_loss = float(acc["loss_sum"]) / count if count else float("nan")
                _raise_if_nonfinite(acc, config, ckpt, epoch, bar)
                mlog.scalar("train/loss", train_loss, step)
                seconds = elapsed0 + time.perf_counter() - t_start
                iou = None
                if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                    summary = evaluate(built, state, epoch)
                    record = {
                        "epoch": epoch + 1,
                        "step": step,
                        "train_loss": train_loss,
                        **summary,
                        "skipped_steps": skipped,
                        "seconds": round(seconds, 3),
                    }
                    mlog.write(record)
                    iou = summary["miou" if built.num_outputs > 1 else "iou"]
                bar.set_postfix(loss=f"{train_loss:.4f}", **reporting.postfix(record))
                meta = {
                    "epoch": epoch + 1,
                    "loader": None,
                    "pipeline": built.train_pipeline,
                    "step": step,
                    "seconds": seconds,
                    "skipped": skipped,
                }
                ckpt.save(step, state, meta, iou=iou)
                if signals.received:
                    ckpt.wait()
                    raise Interrupted(signals.received, step, epoch + 1, workdir)
        bar.close()
        ckpt.wait()
    except BaseException:
        if bar is not None:
            bar.close()
        for closer in (ckpt, mlog):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001, S110 - already failing; keep the first error
                    pass
        wd.undo()  # a no-op once a step was taken
        raise
    ckpt.close()
    records = mlog.read() if writer else []
    if writer and records:
        reporting.plot_history(records, workdir / "plots")
    mlog.close()
    if records:
        record = records[-1]
    return record


def _recorded_pipeline(built: Built, meta: Mapping[str, Any], workdir: Path) -> Built:
    """``built`` on the training data path its checkpoint records (runs from before the
    device path record none: grain), so a resumed run continues with the same batches."""
    recorded = meta.get("pipeline", "grain")
    if recorded == built.train_pipeline:
        return built
    if recorded == "grain":
        log.info("resuming %s on the grain loader it was trained with", workdir)
        return dataclasses.replace(built, train_arrays=None, eval_arrays=None)
    raise ConfigError(
        f"data.memory_budget_mb: the run in {workdir} trained on the device data path, but "
        f"its training split does not fit data.memory_budget_mb="
        f"{built.config.data.memory_budget_mb} now; raise it to resume"
    )


def _raise_if_nonfinite(acc, config: Config, ckpt: Checkpoints, epoch: int, bar) -> None:
    bad_step = int(acc["bad"])
    if bad_step >= 0 and config.nonfinite == "raise":
        ckpt.wait()
        last = ckpt.latest_step()
        where = (
            f"the last good checkpoint is step {last} in {ckpt.directory / 'latest'}"
            if last is not None
            else "no checkpoint was saved yet"
        )
        bar.close()
        raise NonFiniteError(
            f"loss or gradients not finite at step {bad_step} (epoch {epoch}); the update "
            f"was not applied; {where}. Set nonfinite='skip' to drop such updates instead."
        )


def load_config(workdir: str | Path) -> Config:
    """The :class:`Config` a run in ``workdir`` was started with (``config.json``)."""
    path = Path(workdir) / "config.json"
    if not Path(workdir).is_dir():
        raise FileNotFoundError(f"--workdir {workdir}: no such folder")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not a valid dibe_jax config: {e}") from e


def evaluate_checkpoint(
    workdir: str | Path,
    *,
    split: str = "validation",
    best: bool = True,
    sources: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """Evaluate the best (or latest) checkpoint of a finished run on ``split``.

    Reads the run's ``config.json`` and checkpoints; writes nothing.
    """
    workdir = Path(workdir)
    config = load_config(workdir)
    config.data.eval_split = split
    class_names = None
    if sources is not None and (workdir / "model.json").is_file():  # in memory: the run says
        class_names = json.loads((workdir / "model.json").read_text()).get("class_names")
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints, create=False)
    built = build(config, sources, class_names=class_names, train=False)
    try:
        state, meta, step = ckpt.restore(built.state, best=best)
    except CheckpointError as e:
        if not best or type(e) is not CheckpointError:
            raise
        state, meta, step = ckpt.restore(built.state, best=False)
    finally:
        ckpt.close()
    state = replicate(state, built.steps.replicated)
    out = evaluate(built, state, max(0, meta["epoch"] - 1))
    return {"split": split, "step": step, "epoch": meta["epoch"], **out}
