"""The data of a run: its splits opened, decoded for the device path, and batched.

Two data paths (``data.pipeline``): a split that fits ``data.memory_budget_mb`` is decoded
once into ``uint8`` arrays (:func:`device_splits`; its mask values checked there) and each
epoch gathers index batches of a seeded permutation that the jitted step augments
(:mod:`dibe_jax.data.in_memory`, :mod:`dibe_jax.data.device_augment`); other splits go
through the grain loader (:mod:`dibe_jax.data.pipeline`), whose batches are checked here
before their step. Both iterators yield device batches (:func:`shard_batch`) and store their
position with ``get_state()``.

This is the only module of the training package that uses the grain loader, and it imports
it only when a split goes through it, so training on the device path needs neither grain nor
TFDS (TFDS is imported only to open a named dataset).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import jax
import numpy as np

from dibe_jax.data import in_memory
from dibe_jax.data.augment import AugmentConfig
from dibe_jax.data.device_augment import DevicePreprocess
from dibe_jax.data.epochs import pad_batch, size_at, size_pair
from dibe_jax.errors import UserError
from dibe_jax.train import checks
from dibe_jax.train.config import Config, ConfigError
from dibe_jax.train.step import shard_batch

if TYPE_CHECKING:
    from dibe_jax.train.built import Built

__all__ = [
    "augment_config",
    "device_preprocess",
    "device_splits",
    "epoch_size",
    "eval_batches",
    "open_sources",
    "train_batches",
]

log = logging.getLogger(__name__)


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


def epoch_size(config: Config, epoch: int) -> tuple[int, int] | None:
    """The epoch's ``(rows, cols)`` (the steps' static ``size``), None for the native size."""
    return size_pair(size_at(config.data.image_size, epoch))


def open_sources(
    config: Config, sources: Mapping[str, Sequence] | None, class_names: Sequence[str] | None
) -> tuple[Sequence, Sequence, tuple[str, ...]]:
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

    d = config.data
    for field, split in zip(("data.train_split", "data.eval_split"), splits, strict=True):
        try:  # before anything is built
            datasets.check_split(d.dataset, split, manual_dir=d.manual_dir)
        except UserError:
            raise  # a folder dataset's file, named
        except ValueError as e:
            raise ConfigError(f"{field}: {e}") from None
    builder = datasets.prepare(
        d.dataset, data_dir=d.data_dir, manual_dir=d.manual_dir, val_fraction=d.val_fraction
    )
    try:
        classes = datasets.class_names(builder)
    except ValueError as e:
        raise ConfigError(f"data.dataset: {e}") from None
    ds = builder.as_data_source()
    return ds[splits[0]], ds[splits[1]], classes


def _materialised(source: Sequence) -> bool:
    """In-memory data ``auto`` may decode: a list, tuple or ``ArraySource`` (a custom
    sequence may do work on every read, which decoding once would skip)."""
    if isinstance(source, list | tuple):
        return True
    # An ArraySource exists only once the grain loader's module was imported.
    pipeline = sys.modules.get("dibe_jax.data.pipeline")
    return pipeline is not None and isinstance(source, pipeline.ArraySource)


def device_splits(
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


def _checked_batch(built: Built, batch: Mapping[str, np.ndarray], where: str) -> None:
    """Refuse a batch whose masks hold a value that is not a class id (before its step)."""
    checks.check_mask_values(batch["mask"], built.classes, dataset=built.data_label, where=where)


def _grain_loader(built: Built, source: Sequence, *, train: bool, epoch: int, image_size):
    """The grain loader of ``source`` for ``epoch`` (grain is imported here, on first use)."""
    from dibe_jax.data import pipeline

    c = built.config
    return pipeline.make_loader(
        source,
        train=train,
        epoch=epoch,
        batch_size=built.local_batch,
        image_size=image_size,
        seed=c.seed,
        worker_count=c.data.worker_count,
        augment=augment_config(c),
    )


def _put(built: Built):
    # Looked up at each call, so a test may watch the module's shard_batch.
    return lambda batch: shard_batch(batch, built.mesh)


class _GrainBatches:
    """The grain loader's training epoch as device batches (each checked, then sharded),
    with its iterator's ``get_state`` / ``set_state``."""

    def __init__(self, built: Built, epoch: int) -> None:
        image_size = built.config.data.image_size
        loader = _grain_loader(
            built, built.train_source, train=True, epoch=epoch, image_size=image_size
        )
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


def train_batches(built: Built, epoch: int, state: str | None):
    """The training batches of ``epoch`` on the device, from position ``state`` (a stored
    ``get_state()``) or the start: an iterator with ``get_state`` / ``set_state``."""
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


def eval_batches(built: Built, epoch: int) -> Iterator[dict[str, jax.Array]]:
    """The evaluation split's device batches, the same number on every process (the last
    ones padded, ``valid`` False)."""
    if built.eval_arrays is not None:
        yield from in_memory.Batches(
            built.eval_arrays, batch_size=built.local_batch, train=False, put=_put(built)
        )
        return
    image_size = size_at(built.config.data.image_size, epoch)
    loader = _grain_loader(
        built, built.eval_source, train=False, epoch=epoch, image_size=image_size
    )
    # Every process must run the same number of (collective) steps: the shards differ by at
    # most one example, so the shorter ones add a batch of padding rows (valid = False).
    per_process = -(-len(built.eval_source) // jax.process_count())
    batches = -(-per_process // built.local_batch)
    done, template = 0, None
    for batch in loader:
        _checked_batch(built, batch, f"evaluation batch {done}")
        batch = pad_batch(batch, built.local_batch)
        template = batch
        yield shard_batch(batch, built.mesh)
        done += 1
    for _ in range(batches - done):
        yield shard_batch({k: np.zeros_like(v) for k, v in template.items()}, built.mesh)
