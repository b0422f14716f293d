"""Input pipeline: grain loaders, augmentations of the DIBE paper, progressive resizing.

See :func:`make_loader` (one epoch of batches, resumable through its iterator's state)
and :mod:`dibe_jax.data.augment` (the per-example operations).
"""

from dibe_jax.data.augment import AugmentConfig
from dibe_jax.data.pipeline import (
    ArraySource,
    Preprocess,
    epoch_seed,
    make_loader,
    pad_batch,
    size_at,
)

__all__ = [
    "ArraySource",
    "AugmentConfig",
    "Preprocess",
    "epoch_seed",
    "make_loader",
    "pad_batch",
    "size_at",
]
