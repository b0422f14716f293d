"""The PNG files :func:`dibe_jax.train.predict.predict` writes, and the overlays they show.

Each PNG is written atomically (``_save_png_atomic``: a temporary file in the output
folder, then ``os.replace``). A binary run's overlay shows the defects in red over the image
(``_overlay``); a multi-class run's overlay colours each defect class over the image
(:data:`PALETTE`), with a legend naming the classes in a band below it
(:func:`class_overlay`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dibe_jax.files import atomic_write_bytes

__all__ = ["PALETTE", "class_overlay"]


def _save_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as PNG at ``path`` so a killed run leaves no half-written file there."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]``: ``image`` with ``mask > 0`` pixels blended 60 % towards red."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image.copy()
    hit = mask > 0
    rgb[hit] = (0.4 * rgb[hit] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
    return rgb


#: Overlay colours of classes 1, 2, ... (class 0, the background, is left as it is): a
#: palette of distinct colours (Trubetskoy's), red first as in binary overlays.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
)


def _legend(names: Sequence[str], colours: Sequence[tuple[int, int, int]], width: int):
    """``uint8 [h, w, 3]`` band naming each class next to a swatch of its colour, entries
    wrapped to ``width`` pixels (wider only if one entry is)."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, swatch, row = 4, 10, 14
    sizes = [swatch + 4 + int(np.ceil(probe.textlength(n, font=font))) for n in names]
    width = max(width, max(sizes, default=0) + 2 * pad)
    places, x, y = [], pad, pad
    for size in sizes:
        if x > pad and x + size > width - pad:
            x, y = pad, y + row
        places.append((x, y))
        x += size + 3 * pad
    band = Image.new("RGB", (width, y + row + pad), (24, 24, 24))
    draw = ImageDraw.Draw(band)
    for (x, y), name, colour in zip(places, names, colours, strict=True):
        draw.rectangle((x, y + 1, x + swatch - 1, y + swatch), fill=colour)
        draw.text((x + swatch + 4, y - 1), name, fill=(255, 255, 255), font=font)
    return np.asarray(band)


def class_overlay(image: np.ndarray, ids: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """``uint8 [H + h, max(W, w), 3]``: ``image`` with each defect class blended 60 % towards
    its colour (:data:`PALETTE`), above a legend band naming the classes and their colours.

    Args:
      image: ``uint8 [H, W, 1]`` or ``[H, W, 3]``.
      ids: ``[H, W]`` class ids, 0 the background (left as it is).
      class_names: every class, background first.

    >>> ov = class_overlay(np.zeros((20, 30, 1), np.uint8), np.eye(20, 30, dtype=np.uint8),
    ...                    ["background", "crack"])
    >>> ov.dtype, ov.shape[0] > 20, ov.shape[2], ov[0, 0].tolist()
    (dtype('uint8'), True, 3, [138, 15, 45])
    """
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image.copy()
    colours = [PALETTE[(c - 1) % len(PALETTE)] for c in range(1, len(class_names))]
    for c, colour in enumerate(colours, start=1):
        hit = ids == c
        rgb[hit] = (0.4 * rgb[hit] + 0.6 * np.array(colour)).astype(np.uint8)
    legend = _legend(list(class_names[1:]), colours, rgb.shape[1])
    if legend.shape[1] > rgb.shape[1]:
        extra = legend.shape[1] - rgb.shape[1]
        rgb = np.pad(rgb, ((0, 0), (0, extra), (0, 0)), constant_values=24)
    return np.concatenate([rgb, legend], axis=0)
