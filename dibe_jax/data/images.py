"""Reading image files into arrays, with PIL only (no TFDS, no TensorFlow).

Used by the dataset builders, the folder dataset (:mod:`dibe_jax.datasets.folder`) and
``predict``. Every image becomes ``uint8 [H, W, C]``, whatever its bit depth and colour
mode:

* 8-bit grayscale (``L``), RGB, RGBA, palette (``P``), CMYK, YCbCr and 1-bit files are
  converted by PIL; an alpha channel is dropped (the colour values are kept as they are, not
  composited on a background);
* 16-bit grayscale (PIL modes ``I;16``, ``I;16B``, ``I;16L``, and 32-bit integer ``I`` whose
  values lie in ``[0, 65535]``, as PNG and TIFF store them) are mapped to 8 bits by the
  fixed rule ``v8 = round(v16 / 257)``. This is the inverse of the usual 8 -> 16-bit
  widening ``v16 = 257 v8`` (``0 -> 0``, ``255 -> 65535``), so a 16-bit copy of an 8-bit
  image decodes to exactly that 8-bit image and the model sees the same input; a fixed rule
  (rather than a per-image min-max stretch) keeps the intensities of different images
  comparable, as the model saw them in training. Images that use only a small part of the
  16-bit range (e.g. 12-bit sensors) therefore look dark; stretch them yourself if the
  training images were stretched.
* 16-bit colour PNGs are decoded by PIL to their high byte (``v16 >> 8``, equal to
  ``round(v16 / 257)`` for a widened 8-bit image).

Anything else (floating-point ``F`` images, 32-bit integers beyond 16 bits, files PIL cannot
decode) raises :class:`~dibe_jax.errors.DatasetFileError` naming the file and the mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from dibe_jax.errors import DatasetFileError

__all__ = ["GRAY_MODES", "SIXTEEN_BIT_MODES", "read_image", "to_uint8"]

#: PIL modes of 16-bit (or wider integer) grayscale images.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: PIL modes of single-channel images (C = 1 when the data decide the channels).
GRAY_MODES = ("1", "L", "LA", "La", *SIXTEEN_BIT_MODES)
_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def to_uint8(values: np.ndarray, *, path: os.PathLike | str = "image") -> np.ndarray:
    """Map 16-bit intensities to ``uint8`` by ``round(v / 257)`` (the module's rule).

    >>> to_uint8(np.array([0, 257, 65535, 128], np.uint16)).tolist()
    [0, 1, 255, 0]
    >>> to_uint8(np.array([3 * 257, 200 * 257], np.int32)).tolist()
    [3, 200]
    """
    values = np.asarray(values)
    if values.size and (int(values.min()) < 0 or int(values.max()) > 65535):
        raise DatasetFileError(
            f"{path}: integer image with values in [{int(values.min())}, {int(values.max())}]; "
            "expected 8- or 16-bit values (0..65535)"
        )
    # (2 v + 257) // 514 == round(v / 257) with halves rounded up, in exact integers
    return ((values.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)


def _decode(im: Image.Image, mode: str, path: Path) -> np.ndarray:
    """``uint8 [H, W]`` (mode ``L``) or ``[H, W, 3]`` (``RGB``) of an opened, loaded image."""
    if im.mode in SIXTEEN_BIT_MODES:
        gray = to_uint8(np.asarray(im), path=path)
        return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=-1)
    if im.mode in ("F",) or im.mode.startswith("I;") or im.mode.startswith("F;"):
        raise DatasetFileError(
            f"{path}: PIL mode {im.mode!r} (floating-point or unusual integer pixels) is not "
            "supported; expected an 8- or 16-bit grayscale, RGB, RGBA or palette image"
        )
    if im.mode in ("RGBA", "RGBa", "LA", "La", "PA"):  # drop alpha, keep the colour values
        im = im.convert("RGB" if im.mode in ("RGBA", "RGBa", "PA") else "L")
    return np.asarray(im.convert(mode), dtype=np.uint8)


def read_image(path: os.PathLike | str, *, mode: str) -> np.ndarray:
    """Decode an image file fully and return ``uint8 [H, W, C]`` (see the module docstring
    for bit depths and colour modes).

    Args:
      path: image file.
      mode: ``"RGB"`` (C = 3) or ``"L"`` (C = 1). Grayscale files become RGB by repeating
        their channel; colour files become ``L`` by PIL's luma (ITU-R 601-2).

    Raises:
      DatasetFileError: the file is missing, not an image, truncated, or of an unsupported
        pixel type.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.png"
    >>> Image.fromarray(np.full((2, 3), 200 * 257, np.uint16)).save(p)
    >>> read_image(p, mode="L")[..., 0].tolist()
    [[200, 200, 200], [200, 200, 200]]
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"{path}: file is missing")
    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: truncated files fail here
            array = _decode(im, mode, path)
    except _READ_ERRORS as e:
        if isinstance(e, DatasetFileError):
            raise
        raise DatasetFileError(f"{path}: unreadable or truncated image ({e})") from e
    if array.ndim == 2:
        array = array[..., None]
    return array
