"""The in-memory data path: each split decoded once into ``uint8`` arrays, each epoch a seeded
permutation and index gathers, batches sent to the device as ``uint8``.

The grain loader (:func:`dibe_jax.data.make_loader`) decodes and augments every example in
Python every epoch, which a GPU step outruns. Here a split that fits in host memory is read
once (:func:`decode_split`) into ``images uint8 [N, H, W, C]`` and ``masks uint8 [N, H, W, 1]``;
an epoch (:class:`Batches`) only gathers rows and hands them to ``put`` (the training loop's
``shard_batch``: the device transfer, asynchronous), a batch or two ahead of the step that
uses them. Augmentation and ``uint8 -> float32`` happen on the device, inside the jitted
step (:mod:`dibe_jax.data.device_augment`).

Stored size (:func:`stored_size`): the largest size of the run's ``image_size`` (the last,
largest entry of a progressive schedule), or the native size when ``image_size`` is None
(the images must then share one size). Images of another size are resized once, at decode,
with :func:`dibe_jax.data.augment.resize` (image bilinear, mask nearest, as the grain path
does every epoch); so with a fixed ``image_size`` and no augmentation the device sees the
pixels the grain path gives. Smaller epochs of a schedule are resized on the device from the
stored size (the grain path resizes from the native size: the pixels differ slightly).

Order: training epoch ``e`` visits ``np.random.default_rng(epoch_seed(seed, e)).permutation(N)``
(not grain's order: the same examples each epoch, in another order); the last incomplete
global batch is dropped. Evaluation keeps file order and pads the last batch
(:func:`~dibe_jax.data.epochs.pad_batch`, ``valid`` False on padding). With ``P`` processes
every process holds the whole split and gathers rows ``[p L, (p + 1) L)`` of each global
batch of ``P L`` (``L`` the per-process batch), so shards are equal and every process runs
the same number of steps.

Resuming: ``it.get_state()`` is the index of the next batch of the epoch (JSON bytes), and
``it.set_state(state)`` on a new :class:`Batches` of the same epoch continues there: the
interface of grain's iterators, so the training loop stores either in its checkpoints.

This module imports numpy, PIL (through :mod:`~dibe_jax.data.augment`) and nothing of grain.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dibe_jax.data import augment as aug
from dibe_jax.data.epochs import ImageSize, epoch_seed, pad_batch, size_pair

__all__ = ["ArraySplit", "Batches", "decode_split", "split_bytes", "stored_size"]


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A split decoded into host memory.

    Attributes:
      images: ``uint8 [N, H, W, C]``.
      masks: ``uint8 [N, H, W, 1]``.
      mask_max: ``uint8 [N]``, each example's largest mask value (scanned at decode, so a
        value outside the classes is found before anything runs).
      name: the split, for messages.
    """

    images: np.ndarray
    masks: np.ndarray
    mask_max: np.ndarray
    name: str = "split"

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        """Host memory held by the images and masks."""
        return int(self.images.nbytes + self.masks.nbytes)


def stored_size(image_size: ImageSize) -> tuple[int, int] | None:
    """The ``(rows, cols)`` a split is stored at for a run's ``image_size``: the size itself,
    the largest (by area) of a progressive schedule, or None (keep the native size).

    >>> stored_size(96), stored_size([[0, 64], [10, 128], [20, 96]]), stored_size(None)
    ((96, 96), (128, 128), None)
    >>> stored_size([64, 96])
    (64, 96)
    """
    if image_size is None or isinstance(image_size, int):
        return size_pair(image_size)
    if len(image_size) == 2 and all(isinstance(v, int) for v in image_size):
        return size_pair(image_size)
    sizes = [size_pair(s) for _, s in image_size]
    return max(sizes, key=lambda hw: (hw[0] * hw[1], hw))


def split_bytes(num_examples: int, size: tuple[int, int], channels: int) -> int:
    """Bytes of ``num_examples`` stored ``uint8`` images of ``size`` with ``channels`` plus their
    one-channel masks.

    >>> split_bytes(1000, (448, 448), 3) / 2**20  # THC448's training split, in MiB
    765.625
    """
    return int(num_examples) * int(size[0]) * int(size[1]) * (int(channels) + 1)


def _as_pair(example: Mapping[str, Any], index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    image, mask = np.asarray(example["image"]), np.asarray(example["mask"])
    if image.dtype != np.uint8 or mask.dtype != np.uint8:
        raise ValueError(
            f"{name} example {index}: expected uint8 image and mask, got {image.dtype} and "
            f"{mask.dtype}"
        )
    image = image[..., None] if image.ndim == 2 else image
    mask = mask[..., None] if mask.ndim == 2 else mask
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"{name} example {index}: image {image.shape} and mask {mask.shape}")
    return image, mask


def decode_split(
    source: Sequence[Mapping[str, Any]],
    *,
    size: tuple[int, int] | None,
    name: str = "split",
    threads: int | None = None,
) -> ArraySplit:
    """Read every example of ``source`` once into ``uint8`` arrays.

    Args:
      source: random-access examples (a TFDS data source, an ``ArraySource``, a list of
        dicts) with ``image`` ``uint8 [H, W, C]`` (or ``[H, W]``) and ``mask`` ``uint8
        [H, W, 1]`` (or ``[H, W]``).
      size: the stored ``(rows, cols)`` (:func:`stored_size`): examples of another size are
        resized (image bilinear, mask nearest); None keeps the native size, which every
        example must then share.
      name: the split, for messages.
      threads: reading threads (default ``min(8, cores)``; PNG decoding releases the GIL).

    Returns:
      An :class:`ArraySplit`.

    Raises:
      ValueError: an example is not ``uint8``, its image and mask differ in size, its
        channels differ from the first example's, or (``size=None``) its size does.

    >>> ex = [{"image": np.full((6, 8, 3), i, np.uint8), "mask": np.eye(6, 8, dtype=np.uint8)}
    ...       for i in range(3)]
    >>> s = decode_split(ex, size=(3, 4))
    >>> s.images.shape, s.masks.shape, s.mask_max.tolist()
    ((3, 3, 4, 3), (3, 3, 4, 1), [1, 1, 1])
    """
    n = len(source)
    if n == 0:
        raise ValueError(f"{name}: no examples")
    first_image, first_mask = _as_pair(source[0], 0, name)
    shape = first_image.shape[:2] if size is None else tuple(size)
    channels = first_image.shape[-1]
    images = np.empty((n, *shape, channels), np.uint8)
    masks = np.empty((n, *shape, 1), np.uint8)
    mask_max = np.empty((n,), np.uint8)

    def store(i: int, pair: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        image, mask = pair if pair is not None else _as_pair(source[i], i, name)
        if image.shape[-1] != channels:
            raise ValueError(
                f"{name} example {i}: {image.shape[-1]} channels, example 0 has {channels}"
            )
        if image.shape[:2] != shape:
            if size is None:
                raise ValueError(
                    f"{name} example {i} is {image.shape[0]}x{image.shape[1]}, example 0 "
                    f"{shape[0]}x{shape[1]}: images that differ in size need an image_size"
                )
            image, mask = aug.resize(image, mask, shape, mask_resize="nearest")
        images[i], masks[i] = image, mask
        mask_max[i] = mask.max()

    store(0, (first_image, first_mask))
    threads = threads or min(8, os.cpu_count() or 1)
    if threads <= 1 or n <= 2:
        for i in range(1, n):
            store(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(store, range(1, n)):
                pass
    return ArraySplit(images, masks, mask_max, name)


class Batches:
    """One epoch of batches of an :class:`ArraySplit`, gathered by index and put ahead.

    Args:
      split: the decoded split.
      batch_size: examples per batch of this process (``L``); the global batch is ``L P``.
      train: a seeded permutation, the last incomplete global batch dropped; otherwise file
        order with the last batch padded (``valid``).
      seed, epoch: the order of a training epoch is
        ``default_rng(epoch_seed(seed, epoch)).permutation(N)``.
      process_index, process_count: this process (``p``) of ``P``; default
        ``jax.process_index()`` / ``jax.process_count()``.
      put: called on each host batch (``{"image": uint8 [L, H, W, C], "mask": uint8
        [L, H, W, 1]}`` plus ``valid bool [L]`` in evaluation); its result is what the
        iterator yields. The training loop passes ``shard_batch`` (the device transfer).
        None yields the host batches.
      prefetch: batches ``put`` ahead of the one being yielded (1 or 2 keep the device fed:
        the transfer of the next batch runs while the current step does).

    ``len()`` is the number of batches; ``get_state()`` / ``set_state()`` as described in the
    module docstring.

    >>> s = ArraySplit(np.zeros((10, 2, 2, 1), np.uint8), np.zeros((10, 2, 2, 1), np.uint8),
    ...                np.zeros(10, np.uint8))
    >>> [len(b["image"]) for b in Batches(s, batch_size=4, train=True, process_count=1,
    ...                                   process_index=0)]
    [4, 4]
    >>> [int(b["valid"].sum()) for b in Batches(s, batch_size=4, train=False, process_count=1,
    ...                                    process_index=0)]
    [4, 4, 2]
    """

    def __init__(
        self,
        split: ArraySplit,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        epoch: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
        put: Callable[[dict[str, np.ndarray]], Any] | None = None,
        prefetch: int = 2,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self.split, self.train, self.batch_size = split, train, batch_size
        self._lo = process_index * batch_size
        self._global = batch_size * process_count
        n = len(split)
        if train:
            self.order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(n)
            self._num = n // self._global
        else:
            self.order = np.arange(n)
            self._num = -(-n // self._global)
        self._put = put if put is not None else (lambda b: b)
        self._prefetch = max(0, int(prefetch))
        self._next = 0  # the next batch to yield
        self._queued = 0  # the next batch to gather and put
        self._ahead: deque = deque()

    def __len__(self) -> int:
        return self._num

    def __iter__(self) -> Batches:
        return self

    def rows(self, index: int) -> np.ndarray:
        """The example indices of this process's part of batch ``index`` (in evaluation the
        last batch's part may be short or empty: it is padded)."""
        start = index * self._global + self._lo
        return self.order[start : start + self.batch_size]

    def host_batch(self, index: int) -> dict[str, np.ndarray]:
        """Batch ``index`` of this process as host arrays (gathered, not put)."""
        rows = self.rows(index)
        batch = {
            "image": np.take(self.split.images, rows, axis=0),
            "mask": np.take(self.split.masks, rows, axis=0),
        }
        return batch if self.train else pad_batch(batch, self.batch_size)

    def __next__(self) -> Any:
        if self._next >= self._num:
            raise StopIteration
        while self._queued < self._num and self._queued <= self._next + self._prefetch:
            self._ahead.append(self._put(self.host_batch(self._queued)))
            self._queued += 1
        self._next += 1
        return self._ahead.popleft()

    def get_state(self) -> bytes:
        """The position in the epoch: the next batch's index, as JSON bytes."""
        return json.dumps({"in_memory_batch": self._next}).encode()

    def set_state(self, state: bytes) -> None:
        """Continue at the position :meth:`get_state` gave (of an iterator of the same epoch)."""
        try:
            index = json.loads(state)["in_memory_batch"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                "not a state of the in-memory data path (a grain loader's state?)"
            ) from None
        if not isinstance(index, int) or not 0 <= index <= self._num:
            raise ValueError(f"batch {index!r} is outside this epoch's {self._num} batches")
        self._next = self._queued = index
        self._ahead.clear()
