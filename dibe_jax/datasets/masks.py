"""Masks of a folder dataset: ``classes.json`` and the rules that turn a mask file into
class ids (:mod:`dibe_jax.datasets.folder` describes them for users).

* Without ``classes.json`` the dataset is binary (background, defect): a mask whose values
  are all 0 or 1 is used as it is; otherwise a pixel is defect iff its value is
  > :data:`BINARY_THRESHOLD` (127), which reads ``{0, 255}`` and anti-aliased grayscale masks
  alike. Values above 1 but none above 127 (``{0, 2}``) are refused.
* ``classes.json``: ``["background", "crack", ...]`` or ``{"classes": [...], "colors":
  [[r, g, b], ...]}``. Two names: binary as above; more: grayscale and palette masks hold
  class ids below the number of classes.
* RGB(A) masks go through ``colors``; an RGB mask whose channels are equal is grayscale.

Every refusal is a :class:`~dibe_jax.errors.DatasetFileError` whose message starts with the
file and names the values or colours found.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from dibe_jax.errors import DatasetFileError

__all__ = ["BINARY_THRESHOLD", "ClassSpec", "read_class_ids", "read_classes"]

BINARY_THRESHOLD = 127


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """The classes of a folder dataset (background first) and, for colour masks, the RGB
    colour of each."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] | None = None


def read_classes(root: Path) -> ClassSpec:
    """``root/classes.json`` read and checked, or the binary default without it."""
    path = root / "classes.json"
    if not path.is_file():
        return ClassSpec(("background", "defect"))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetFileError(f"{path}: not valid JSON ({e})") from None
    colors = None
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"classes", "colors"})
        if unknown or "classes" not in data:
            raise DatasetFileError(
                f'{path}: expected a list of class names or {{"classes": [...], '
                f'"colors": [[r, g, b], ...]}}, got keys {sorted(data)}'
            )
        names, colors = data["classes"], data.get("colors")
    else:
        names = data
    if (
        not isinstance(names, list)
        or len(names) < 2
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(set(names)) != len(names)
    ):
        raise DatasetFileError(
            f"{path}: classes must be a list of at least 2 distinct names, background first; "
            f"got {names!r}"
        )
    if len(names) > 256:
        raise DatasetFileError(f"{path}: at most 256 classes fit an 8-bit mask, got {len(names)}")
    if colors is not None:
        ok = isinstance(colors, list) and len(colors) == len(names)
        ok = ok and all(
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in colors
        )
        if not ok or len({tuple(c) for c in colors}) != len(names):
            raise DatasetFileError(
                f"{path}: colors must be one distinct [r, g, b] (0-255) per class "
                f"({len(names)}), got {colors!r}"
            )
        colors = tuple(tuple(c) for c in colors)
    return ClassSpec(tuple(names), colors)


def _values_text(values: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) for v in values[:8])
    return f"{{{shown}{', ...' if len(values) > 8 else ''}}}"


def read_class_ids(path: os.PathLike | str, classes: ClassSpec) -> np.ndarray:
    """Decode mask ``path`` into class ids ``uint8 [H, W]`` by the module's mask rules.

    Raises:
      DatasetFileError: unreadable, not 8-bit, or values outside the classes (the message
        names the file and the values found).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGBA", "RGBa", "PA", "LA", "La"):
                im = im.convert("L" if mode in ("LA", "La") else "RGB")
            elif mode == "1":
                im = im.convert("L")
            array = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetFileError(f"{path}: unreadable or truncated mask ({e})") from e
    if array.dtype != np.uint8:
        raise DatasetFileError(
            f"{path}: mask of PIL mode {mode!r} ({array.dtype}); expected an 8-bit mask "
            "(grayscale, palette or RGB)"
        )
    n = len(classes.names)
    if array.ndim == 3:
        if classes.colors is not None:
            codes = (array[..., 0].astype(np.int32) << 16) | (array[..., 1].astype(np.int32) << 8)
            codes |= array[..., 2]
            table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(classes.colors)}
            found = np.unique(codes)
            unknown = [int(c) for c in found if int(c) not in table]
            if unknown:
                shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:4])
                raise DatasetFileError(
                    f"{path}: mask colours not in classes.json colors: {shown}"
                    f"{' ...' if len(unknown) > 4 else ''}"
                )
            lut = np.zeros(len(found), np.uint8)
            for j, c in enumerate(found):
                lut[j] = table[int(c)]
            return lut[np.searchsorted(found, codes)]
        if not (
            np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 0], array[..., 2])
        ):
            raise DatasetFileError(
                f"{path}: colour mask but classes.json gives no colors; add "
                '{"classes": [...], "colors": [[r, g, b], ...]} or save class ids as grayscale'
            )
        array = array[..., 0]
        mode = "L"
    values = np.flatnonzero(np.bincount(array.ravel(), minlength=256))  # sorted, fast
    if n == 2 and mode != "P":
        if values[-1] <= 1:
            return array
        if values[-1] > BINARY_THRESHOLD:
            return (array > BINARY_THRESHOLD).astype(np.uint8)
        raise DatasetFileError(
            f"{path}: mask values {_values_text(values)} are neither {{0, 1}} nor marked by "
            f"values > {BINARY_THRESHOLD}; a multi-class mask needs classes.json naming the classes"
        )
    if values[-1] >= n:
        raise DatasetFileError(
            f"{path}: mask values {_values_text(values)} outside the {n} class ids 0..{n - 1} "
            f"({', '.join(classes.names)})"
        )
    return array
