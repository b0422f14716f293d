"""What a run is made of once built: :class:`Built` (model state, steps, data, shapes).

:func:`dibe_jax.train.state.build` makes one; the data path (:mod:`dibe_jax.train.batches`),
evaluation and the training loop read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dibe_jax.data import in_memory
from dibe_jax.train import checks
from dibe_jax.train.config import Config

__all__ = ["Built"]


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
    #: the size every training image has, None when they differ (model.json: predict's scale)
    native_size: tuple[int, int] | None = None

    @property
    def num_outputs(self) -> int:
        """Model outputs: 1 (binary, sigmoid) or the number of classes (softmax)."""
        return checks.model_outputs(self.classes)

    @property
    def train_pipeline(self) -> str:
        """The training split's data path: ``"device"`` or ``"grain"``."""
        return "device" if self.train_arrays is not None else "grain"
