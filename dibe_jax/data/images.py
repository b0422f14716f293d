"""Reading image files into arrays, with PIL only (no TFDS, no TensorFlow).

Used by the dataset builders and by ``predict``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dibe_jax.errors import DatasetFileError

__all__ = ["read_image"]


def read_image(path: os.PathLike | str, *, mode: str) -> np.ndarray:
    """Decode an image file fully and return ``uint8 [H, W, C]``.

    Args:
      path: image file.
      mode: PIL mode to convert to: ``"RGB"`` (C = 3) or ``"L"`` (C = 1).

    Raises:
      DatasetFileError: the file is missing, not an image, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"{path}: file is missing")
    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: truncated files fail here
            im = im.convert(mode)
            array = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetFileError(f"{path}: unreadable or truncated image ({e})") from e
    if array.ndim == 2:
        array = array[..., None]
    return array
