"""Input pipeline: grain ``DataLoader`` over a TFDS data source or in-memory examples.

One call, :func:`make_loader`, gives one epoch of batches::

    import dibe_jax.datasets as dd
    from dibe_jax.data import make_loader

    train = dd.prepare("synthetic_cracks").as_data_source()["train"]
    for epoch in range(50):
        for batch in make_loader(train, batch_size=32, image_size=96, train=True,
                                 seed=0, epoch=epoch):
            batch["image"]  # float32 [32, 96, 96, 3] in [0, 1]
            batch["mask"]   # uint8   [32, 96, 96, 1], {0, 1} (class ids if multi-class)

What it does, in order, per example: channel conversion, resize or crop to the
epoch's size (image bilinear, mask nearest or ``"max"``), flips (same for image and
mask), brightness / contrast / saturation jitter (image only; the augmentation of
the DIBE paper, Sec. 4.3.3), ``uint8 -> float32`` and optional mean/std
normalization; then batching. Training loaders shuffle with a seed derived from
``(seed, epoch)`` (a new order every epoch, the same for a given pair) and drop
the last incomplete batch; evaluation loaders keep file order, apply no random
op and keep the remainder (see :func:`pad_batch`).

Progressive resizing (small images first, then larger, weights carried over; used
by the MR-image paper, seed 004) is a schedule ``[(0, 64), (10, 96)]`` given as
``image_size``: epoch ``e`` uses the size of the last entry with ``start <= e``, so
each epoch's batches have one fixed shape (one compilation per size).

Multi-host: each process reads its own shard (``jax.process_index()`` of
``jax.process_count()`` by default) and ``batch_size`` is the per-process batch.

Resuming: ``it = iter(loader)``; ``state = it.get_state()`` (bytes) and, later,
``it = iter(make_loader(...same arguments...)); it.set_state(state)`` continues
with the same batches (the training loop stores that state in its checkpoints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import grain.python as grain
import numpy as np

from dibe_jax.data import augment as aug
from dibe_jax.data.epochs import ImageSize, epoch_seed, pad_batch, size_at

__all__ = [
    "ArraySource",
    "Preprocess",
    "epoch_seed",
    "make_loader",
    "pad_batch",
    "size_at",
]

Crop = Literal["resize", "crop", "scale"]


class ArraySource(Sequence):
    """Random-access source over in-memory examples with a short ``repr`` (grain checks
    ``repr(source)`` when restoring a state).

    Args:
      examples: a sequence of dicts with ``image`` ``uint8 [H, W, C]`` and ``mask``
        ``uint8 [H, W, 1]`` (or ``[H, W]``), or a dict of stacked arrays
        ``{"image": [N, H, W, C], "mask": [N, H, W, 1]}``.
      name: shown in ``repr``.
    """

    def __init__(self, examples: Sequence[Mapping[str, Any]] | Mapping[str, Any], name="arrays"):
        if isinstance(examples, Mapping):
            n = len(examples["image"])
            self._columns = {k: np.asarray(v) for k, v in examples.items()}
            if any(len(v) != n for v in self._columns.values()):
                raise ValueError("all arrays of an ArraySource need the same first dimension")
            self._rows = None
            self._len = n
        else:
            self._rows = list(examples)
            self._columns = None
            self._len = len(self._rows)
        self._name = name

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        if self._rows is not None:
            return self._rows[i]
        return {k: v[i] for k, v in self._columns.items()}

    def __repr__(self) -> str:
        return f"ArraySource(name={self._name!r}, len={self._len})"


class _Strided(Sequence):
    """Examples ``start, start + step, ...`` of ``source`` (one process's evaluation shard, or
    the whole of a source whose ``repr`` would change between processes)."""

    def __init__(self, source: Sequence, start: int, step: int, *, name: str | None = None):
        self._source, self._start, self._step = source, start, step
        self._len = len(range(start, len(source), step))
        self._name = name  # shown instead of repr(source) (one without a memory address)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._source[self._start + i * self._step]

    def __repr__(self) -> str:
        inner = f"{self._name}(len={len(self._source)})" if self._name else repr(self._source)
        return f"_Strided({inner}, start={self._start}, step={self._step})"


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Per-example processing shared by the train and eval transforms.

    ``__call__(example, rng)`` maps a source dict (``image`` ``uint8 [H, W, C]`` or
    ``[H, W]``, ``mask`` ``uint8 [H, W, 1]`` or ``[H, W]``) to ``image`` ``float32
    [h, w, C']`` and ``mask`` ``uint8 [h, w, 1]``; ``rng=None`` is the deterministic
    evaluation path (resize or center crop, no flip, no jitter).
    """

    size: int | tuple[int, int] | None
    crop: Crop = "resize"
    augment: aug.AugmentConfig | None = None
    mask_resize: aug.MaskResize = "nearest"
    channels: int | None = None
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    keep_file_name: bool = False

    def __call__(self, example: Mapping[str, Any], rng: np.random.Generator | None) -> dict:
        image = np.asarray(example["image"])
        mask = np.asarray(example["mask"])
        if image.dtype != np.uint8 or mask.dtype != np.uint8:
            raise ValueError(
                f"examples need uint8 image and mask, got {image.dtype} and {mask.dtype}"
            )
        image = image[..., None] if image.ndim == 2 else image
        mask = mask[..., None] if mask.ndim == 2 else mask
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"image {image.shape} and mask {mask.shape} differ in size")
        image = aug.convert_channels(image, self.channels)
        a = self.augment if rng is not None else None
        if self.size is not None:
            if self.crop == "resize" or (rng is None and self.crop == "scale"):
                image, mask = aug.resize(image, mask, self.size, mask_resize=self.mask_resize)
            elif self.crop == "crop":
                if rng is None:
                    image, mask = aug.center_crop(image, mask, self.size)
                else:
                    image, mask = aug.random_crop(rng, image, mask, self.size)
            elif self.crop == "scale":
                scale = a.scale if a is not None else (0.5, 1.0)
                image, mask = aug.random_scale_crop(
                    rng, image, mask, self.size, scale=scale, mask_resize=self.mask_resize
                )
            else:
                raise ValueError(f"unknown crop mode {self.crop!r}")
        if a is not None:
            image, mask = aug.random_flip(rng, image, mask, horizontal=a.hflip, vertical=a.vflip)
        x = aug.to_float(image)
        if a is not None:
            x = aug.color_jitter(
                rng, x, brightness=a.brightness, contrast=a.contrast, saturation=a.saturation
            )
        out = {
            "image": np.ascontiguousarray(aug.normalize(x, self.mean, self.std)),
            "mask": np.ascontiguousarray(mask),
        }
        if self.keep_file_name and "file_name" in example:
            name = example["file_name"]
            out["file_name"] = name.decode() if isinstance(name, bytes) else str(name)
        return out


class _TrainTransform(grain.RandomMapTransform):
    def __init__(self, preprocess: Preprocess):
        self.preprocess = preprocess

    def random_map(self, element, rng: np.random.Generator):
        return self.preprocess(element, rng)


class _EvalTransform(grain.MapTransform):
    def __init__(self, preprocess: Preprocess):
        self.preprocess = preprocess

    def map(self, element):
        return self.preprocess(element, None)


def _ensure_absl_flags_parsed() -> None:
    # grain's worker processes read absl flags; scripts that do not use absl.app.run
    # would fail with UnparsedFlagAccessError. Marking them parsed keeps the defaults.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_loader(
    source: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    image_size: ImageSize,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    worker_count: int = 0,
    augment: aug.AugmentConfig | None = None,
    crop: Crop = "resize",
    mask_resize: aug.MaskResize = "nearest",
    channels: int | None = None,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    drop_remainder: bool | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    read_threads: int = 2,
    prefetch: int = 64,
    worker_buffer_size: int = 2,
    keep_file_name: bool = False,
) -> grain.DataLoader:
    """A grain ``DataLoader`` over one epoch of ``source``.

    Args:
      source: random-access examples: ``builder.as_data_source()[split]`` of a
        :mod:`dibe_jax.datasets` builder, an :class:`ArraySource`, or any sequence of
        dicts (wrapped in an :class:`ArraySource`).
      batch_size: examples per batch (per process in multi-host runs).
      image_size: ``S``, ``(rows, cols)``, ``None`` (keep native sizes; they must all
        agree) or a progressive schedule ``[(0, 64), (10, 96)]`` (:func:`size_at`).
      train: shuffle, random augmentation (``augment``) and ``drop_remainder=True``;
        otherwise file order, deterministic preprocessing, remainder kept.
      seed: base seed; shuffling and augmentation use :func:`epoch_seed` of
        ``(seed, epoch)``.
      epoch: epoch number (order, augmentation and scheduled size depend on it).
      worker_count: worker processes (0: in this process, with ``read_threads``
        threads reading and decoding). Workers start anew for every loader (every
        epoch), which costs seconds (imports); on a 2-core machine 0 is fastest
        (``benchmarks/results/input_pipeline_cpu.md``). Worker processes need the calling script to
        have an ``if __name__ == "__main__":`` guard. Each worker batches its own
        share of the records, so which examples share a batch depends on
        ``worker_count`` (each example's processing does not); restore a state
        with the same ``worker_count``.
      augment: training augmentation; default :class:`~dibe_jax.data.augment.AugmentConfig`
        (flip, brightness, contrast, saturation). Ignored when ``train`` is False.
      crop: how to reach ``image_size``: ``"resize"`` (whole image; the default),
        ``"crop"`` (random window in training, central window in evaluation; smaller
        images are padded), ``"scale"`` (random area 50-100 % resized; evaluation
        resizes the whole image).
      mask_resize: ``"nearest"`` or ``"max"`` (any covered defect pixel counts).
      channels: convert images to 1 or 3 channels; None keeps them.
      mean, std: optional normalization after scaling to ``[0, 1]``.
      drop_remainder: override the default (``train``).
      shard_index, shard_count: this process's shard; default
        ``jax.process_index()`` / ``jax.process_count()``. Training shards are
        equal (the remainder is dropped); evaluation shards keep every example and
        may differ by one, so pad the last batches (:func:`pad_batch`).
      read_threads, prefetch: grain ``ReadOptions`` (threads, records buffered).
      worker_buffer_size: batches each worker prepares ahead.
      keep_file_name: add ``file_name`` (``[B]`` strings) to the batches.

    Returns:
      An iterable of batches ``{"image": float32 [B, H, W, C], "mask": uint8
      [B, H, W, 1]}``; ``iter(loader)`` has ``get_state()`` / ``set_state()``.

    >>> from dibe_jax.datasets import generate_example
    >>> data = [dict(zip(("image", "mask"), generate_example(i, 32, 50))) for i in range(10)]
    >>> batches = list(make_loader(data, batch_size=4, image_size=24, train=True))
    >>> len(batches), batches[0]["image"].shape, batches[0]["mask"].dtype
    (2, (4, 24, 24, 3), dtype('uint8'))
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not hasattr(source, "__getitem__") or not hasattr(source, "__len__"):
        raise TypeError("source must support len() and [index]")
    if isinstance(source, list | tuple):
        source = ArraySource(source)
    if len(source) == 0:
        raise ValueError("source is empty")
    if shard_index is None or shard_count is None:
        import jax

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    drop_remainder = train if drop_remainder is None else drop_remainder
    if " at 0x" in repr(source):
        # grain checks repr(source) when a saved iterator state is restored; a default repr
        # holds a memory address that differs in a resumed process.
        source = _Strided(source, 0, 1, name=type(source).__name__)
    if not train and shard_count > 1:
        # grain's shards drop the remainder even when asked not to; evaluation must see
        # every example once, so each process reads every shard_count-th one itself.
        source = _Strided(source, shard_index, shard_count)
        shard_index, shard_count = 0, 1
    shard_options = grain.ShardOptions(
        shard_index=shard_index, shard_count=shard_count, drop_remainder=train
    )
    preprocess = Preprocess(
        size=size_at(image_size, epoch),
        crop=crop,
        augment=(augment or aug.AugmentConfig()) if train else None,
        mask_resize=mask_resize,
        channels=channels,
        mean=mean,
        std=std,
        keep_file_name=keep_file_name,
    )
    sampler = grain.IndexSampler(
        num_records=len(source),
        shard_options=shard_options,
        shuffle=train,
        num_epochs=1,
        seed=epoch_seed(seed, epoch),
    )
    transform = _TrainTransform(preprocess) if train else _EvalTransform(preprocess)
    if worker_count > 0:
        _ensure_absl_flags_parsed()
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[transform, grain.Batch(batch_size, drop_remainder=drop_remainder)],
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
        shard_options=shard_options,
        read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch),
    )
