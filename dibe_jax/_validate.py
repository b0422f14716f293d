"""Argument checks shared by several packages (losses, models): one function, one order.

Imported by name (``from dibe_jax._validate import check_choice``); it imports nothing from
the library, so every package may use it without depending on another.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["check_choice"]

T = TypeVar("T")


def check_choice(name: str, value: T, choices: tuple[T, ...]) -> T:
    """Return ``value`` if it is one of ``choices``; ``ValueError`` naming ``name`` otherwise.

    A static option: only a ``str`` or an ``int`` (not a bool) can match, so an array or a
    tracer is refused rather than compared element by element.

    >>> check_choice("upsampling", "bilinear", ("bilinear", "transposed"))
    'bilinear'
    >>> check_choice("output_stride", 32, (8, 16))
    Traceback (most recent call last):
    ...
    ValueError: `output_stride` must be one of (8, 16), got 32.
    """
    static = isinstance(value, str | int | np.integer) and not isinstance(value, bool)
    if not (static and value in choices):
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")
    return value
