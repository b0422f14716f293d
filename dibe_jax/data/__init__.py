"""Input pipeline: two data paths, the augmentations of the DIBE paper, progressive resizing.

* the grain loader, :func:`make_loader` (:mod:`~dibe_jax.data.pipeline`): one epoch of
  batches decoded and augmented on the host, resumable through its iterator's state, with
  the per-example operations of :mod:`~dibe_jax.data.augment`;
* the in-memory path (:mod:`~dibe_jax.data.in_memory`): a split decoded once into ``uint8``
  arrays, epochs of index gathers sent to the device as ``uint8``, augmented there inside
  the jitted step (:mod:`~dibe_jax.data.device_augment`).

:mod:`~dibe_jax.data.epochs` holds what both share (:func:`size_at`, :func:`epoch_seed`,
:func:`pad_batch`). grain is imported only when a name of the grain loader is first used,
so the in-memory and device modules import on a machine without grain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dibe_jax.data.augment import AugmentConfig
from dibe_jax.data.device_augment import DevicePreprocess
from dibe_jax.data.epochs import epoch_seed, pad_batch, size_at
from dibe_jax.data.in_memory import ArraySplit, Batches, decode_split, stored_size

if TYPE_CHECKING:
    from dibe_jax.data.pipeline import ArraySource, Preprocess, make_loader

__all__ = [
    "ArraySource",
    "ArraySplit",
    "AugmentConfig",
    "Batches",
    "DevicePreprocess",
    "Preprocess",
    "decode_split",
    "epoch_seed",
    "make_loader",
    "pad_batch",
    "size_at",
    "stored_size",
]

_FROM_PIPELINE = ("ArraySource", "Preprocess", "make_loader")


def __getattr__(name: str) -> Any:
    # The grain loader's names, imported (with grain) on first use.
    if name in _FROM_PIPELINE:
        return getattr(importlib.import_module("dibe_jax.data.pipeline"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
