"""What every epoch shares, whichever data path makes its batches (no grain, no JAX).

* :func:`size_at`: the image size of an epoch under a fixed size or a progressive-resizing
  schedule (one size per epoch, so one compilation per size);
* :func:`epoch_seed`: the seed of an epoch's order and augmentation;
* :func:`pad_batch`: the padding of a short evaluation batch, marked invalid.

Used by the grain loader (:mod:`dibe_jax.data.pipeline`) and the in-memory path
(:mod:`dibe_jax.data.in_memory`); importing this module needs only numpy.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ImageSize", "Schedule", "epoch_seed", "pad_batch", "size_at", "size_pair"]

Schedule = Sequence[tuple[int, int]]
ImageSize = int | tuple[int, int] | Schedule | None


def size_at(image_size: ImageSize, epoch: int) -> int | tuple[int, int] | None:
    """The image size of ``epoch`` under a fixed size or a progressive schedule.

    Args:
      image_size: ``None`` (keep), ``S``, ``(rows, cols)``, or a schedule
        ``[(start_epoch, S), ...]`` (pairs as tuples or lists, e.g. from JSON) sorted
        by ``start_epoch``, the first at 0.

    >>> size_at([(0, 64), (10, 96), (20, 128)], 9), size_at([(0, 64), (10, 96)], 10)
    (64, 96)
    >>> size_at(96, 3), size_at((64, 128), 3), size_at([[0, 32], [5, 48]], 5)
    (96, (64, 128), 48)
    """
    if image_size is None or isinstance(image_size, int):
        return image_size
    if len(image_size) == 2 and all(isinstance(v, int) for v in image_size):
        return (int(image_size[0]), int(image_size[1]))  # (rows, cols)
    schedule = [(int(e), s) for e, s in image_size]
    starts = [e for e, _ in schedule]
    if not schedule or starts != sorted(starts) or starts[0] != 0:
        raise ValueError(f"a size schedule must be sorted and start at epoch 0: {image_size}")
    return schedule[bisect.bisect_right(starts, epoch) - 1][1]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for ``(seed, epoch)``, decorrelated across epochs (grain seeds its
    per-record generators with ``seed + index``, so consecutive seeds would overlap).

    >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
    True
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0]) >> 1


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pad a short (last evaluation) batch to ``batch_size`` with zeros and add
    ``valid`` (``bool [batch_size]``, False on padding), so a jitted step sees one shape.

    >>> b = pad_batch({"image": np.ones((3, 2, 2, 1), np.float32)}, 4)
    >>> b["image"].shape, b["valid"].tolist()
    ((4, 2, 2, 1), [True, True, True, False])
    """
    n = len(next(iter(batch.values())))
    if n > batch_size:
        raise ValueError(f"batch of {n} is larger than batch_size {batch_size}")
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        pad = [(0, batch_size - n)] + [(0, 0)] * (v.ndim - 1)
        out[k] = (
            np.pad(v, pad)
            if v.dtype.kind in "biuf"
            else np.concatenate([v, np.full(batch_size - n, v.dtype.type(), v.dtype)])
        )
    out["valid"] = np.arange(batch_size) < n
    return out


def size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``S`` -> ``(S, S)``, ``(rows, cols)`` -> itself as ints, ``None`` -> ``None`` (a size
    of :func:`size_at` in the hashable form a jitted step takes as a static argument).

    >>> size_pair(64), size_pair([32, 48]), size_pair(None)
    ((64, 64), (32, 48), None)
    """
    if size is None:
        return None
    if isinstance(size, int | np.integer):
        return (int(size), int(size))
    rows, cols = size
    return (int(rows), int(cols))
