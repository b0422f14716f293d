"""Augmentations and resizing for (image, mask) pairs, numpy + PIL only.

The DIBE paper (Sec. 4.3.3) augments every training set with flip, contrast,
brightness and saturation; THC's training files are pre-augmented the same way
upstream. Here they are applied on the fly:

* geometric ops (:func:`resize`, :func:`random_crop`, :func:`center_crop`,
  :func:`random_scale_crop`, :func:`random_flip`) act on the image and the mask
  with the same parameters, so the pair stays aligned; masks are resized with
  nearest neighbour (or ``"max"`` pooling), never interpolated, so their values
  stay class ids;
* photometric ops (:func:`color_jitter`) act on the image only, after
  :func:`to_float` (``uint8 -> float32`` in ``[0, 1]``); saturation is skipped
  for one-channel images.

Shapes: ``image`` ``uint8 [H, W, C]`` (``C`` 1 or 3) or ``float32 [H, W, C]`` for the
photometric ops, ``mask`` ``uint8 [H, W, 1]``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from PIL import Image

__all__ = [
    "AugmentConfig",
    "center_crop",
    "color_jitter",
    "convert_channels",
    "normalize",
    "random_crop",
    "random_flip",
    "random_scale_crop",
    "resize",
    "resize_mask",
    "to_float",
]

MaskResize = Literal["nearest", "max"]
Size = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation of the paper (flip, contrast, brightness, saturation).

    Attributes:
      hflip, vflip: probability of a left-right / up-down flip.
      brightness, contrast, saturation: strength ``s`` of each jitter; the factor is
        drawn from ``U(1 - s, 1 + s)`` (torchvision ``ColorJitter`` semantics, the
        paper's PyTorch setup). 0 disables it.
      scale: for ``crop="scale"``: range of the crop's area as a fraction of the image.
    """

    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    scale: tuple[float, float] = (0.5, 1.0)


def _as_size(size: int | Size) -> Size:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _pil_resize(a: np.ndarray, size: Size, resample: int) -> np.ndarray:
    """Resize ``uint8 [H, W, C]`` to ``size = (rows, cols)`` with PIL."""
    h, w = size
    if a.shape[:2] == (h, w):
        return a
    c = a.shape[-1]
    if c == 1:
        out = np.asarray(Image.fromarray(a[..., 0]).resize((w, h), resample))[..., None]
    elif c == 3:
        out = np.asarray(Image.fromarray(a).resize((w, h), resample))
    else:
        out = np.stack(
            [np.asarray(Image.fromarray(a[..., i]).resize((w, h), resample)) for i in range(c)],
            axis=-1,
        )
    return out


def resize_mask(mask: np.ndarray, size: int | Size, *, method: MaskResize = "nearest"):
    """Resize a ``uint8 [H, W, 1]`` label mask to ``size`` without inventing values.

    ``"nearest"`` picks the nearest source pixel; ``"max"`` marks an output pixel
    with the largest class id that covers any part of its footprint (thin cracks
    survive downscaling; close to how the DIBE paper's ratios were obtained).

    >>> m = np.zeros((8, 8, 1), np.uint8); m[3, :, 0] = 1
    >>> int(resize_mask(m, 4, method="max").sum()), int(resize_mask(m, 4).sum()) in (0, 4)
    (4, True)
    """
    size = _as_size(size)
    if mask.shape[:2] == size:
        return mask
    if method == "nearest":
        return _pil_resize(mask, size, Image.NEAREST)
    if method != "max":
        raise ValueError(f"unknown mask resize method {method!r}")
    out = np.zeros((*size, 1), np.uint8)
    for c in np.unique(mask):
        if c == 0:
            continue
        cover = _pil_resize(((mask == c) * np.uint8(255)), size, Image.BOX)
        out[cover > 0] = c  # ascending c: the largest id wins
    return out


def resize(
    image: np.ndarray,
    mask: np.ndarray,
    size: int | Size,
    *,
    mask_resize: MaskResize = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image`` (bilinear) and ``mask`` (:func:`resize_mask`) to ``size``.

    Args:
      image: ``uint8 [H, W, C]``.
      mask: ``uint8 [H, W, 1]``.
      size: ``S`` (square) or ``(rows, cols)``.
      mask_resize: ``"nearest"`` or ``"max"``.

    Returns:
      ``image [rows, cols, C]``, ``mask [rows, cols, 1]``.
    """
    size = _as_size(size)
    return _pil_resize(image, size, Image.BILINEAR), resize_mask(mask, size, method=mask_resize)


def _pad_to(image: np.ndarray, mask: np.ndarray, size: Size):
    """Zero-pad (reflect for the image) at the bottom/right up to ``size``."""
    ph, pw = max(size[0] - image.shape[0], 0), max(size[1] - image.shape[1], 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        mask = np.pad(mask, ((0, ph), (0, pw), (0, 0)))
    return image, mask


def random_crop(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, size: int | Size
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` window of ``image [H, W, C]`` and ``mask [H, W, 1]`` (same window);
    smaller inputs are padded first (image reflected, mask with 0)."""
    size = _as_size(size)
    image, mask = _pad_to(image, mask, size)
    y = int(rng.integers(0, image.shape[0] - size[0] + 1))
    x = int(rng.integers(0, image.shape[1] - size[1] + 1))
    sl = (slice(y, y + size[0]), slice(x, x + size[1]))
    return image[sl], mask[sl]


def center_crop(
    image: np.ndarray, mask: np.ndarray, size: int | Size
) -> tuple[np.ndarray, np.ndarray]:
    """The central ``size`` window (padding smaller inputs as in :func:`random_crop`)."""
    size = _as_size(size)
    image, mask = _pad_to(image, mask, size)
    y = (image.shape[0] - size[0]) // 2
    x = (image.shape[1] - size[1]) // 2
    sl = (slice(y, y + size[0]), slice(x, x + size[1]))
    return image[sl], mask[sl]


def random_scale_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    size: int | Size,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    mask_resize: MaskResize = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a random window covering a fraction ``U(*scale)`` of the image area (aspect
    ratio in ``[3/4, 4/3]``, clipped to the image), then :func:`resize` it to ``size``."""
    h, w = image.shape[:2]
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(np.clip(round(np.sqrt(area / aspect)), 1, h))
    cw = int(np.clip(round(np.sqrt(area * aspect)), 1, w))
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return resize(
        image[y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw], size, mask_resize=mask_resize
    )


def random_flip(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    horizontal: float = 0.5,
    vertical: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip image ``[H, W, C]`` and mask ``[H, W, 1]`` together, left-right with probability
    ``horizontal`` and up-down with probability ``vertical``."""
    if rng.random() < horizontal:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < vertical:
        image, mask = image[::-1], mask[::-1]
    return image, mask


def to_float(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, C]`` -> ``float32`` in ``[0, 1]``."""
    return np.asarray(image, np.float32) * np.float32(1.0 / 255.0)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def color_jitter(
    rng: np.random.Generator,
    image: np.ndarray,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
) -> np.ndarray:
    """Brightness, contrast and saturation jitter of a ``float32 [H, W, C]`` image in [0, 1].

    Factors ``b, c, s`` are drawn from ``U(1 - strength, 1 + strength)`` (torchvision
    ``ColorJitter`` semantics, in this order): brightness scales the image, contrast
    blends it with its mean gray level ``mu``, saturation (RGB only) blends each pixel
    with its own gray level ``g(x) = x . (0.299, 0.587, 0.114)``. Composed, this is one
    linear colour map plus a constant, applied in a single pass and clipped once:

    .. math:: x' = \\mathrm{clip}(c b (s x + (1 - s) g(x)) + (1 - c) b \\mu, 0, 1)

    (torchvision clips after each step; the difference only shows on saturated pixels).
    """
    x = np.asarray(image, np.float32)
    b = rng.uniform(1 - brightness, 1 + brightness) if brightness > 0 else 1.0
    c = rng.uniform(1 - contrast, 1 + contrast) if contrast > 0 else 1.0
    rgb = x.shape[-1] == 3
    s = rng.uniform(1 - saturation, 1 + saturation) if saturation > 0 and rgb else 1.0
    if b == 1.0 and c == 1.0 and s == 1.0:
        return x
    mu = float((x @ _LUMA).mean()) if rgb else float(x.mean())
    offset = np.float32((1.0 - c) * b * mu)
    if rgb and s != 1.0:
        # out_j = c b (s x_j + (1 - s) sum_i L_i x_i): a 3x3 matrix on the channels.
        m = (c * b) * (s * np.eye(3) + (1.0 - s) * _LUMA[:, None] * np.ones((1, 3)))
        out = x @ m.astype(np.float32)
    else:
        out = x * np.float32(c * b)
    out += offset
    return np.clip(out, np.float32(0.0), np.float32(1.0), out=out)


def normalize(
    image: np.ndarray,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
) -> np.ndarray:
    """``(image - mean) / std`` on a ``float32 [H, W, C]`` image in ``[0, 1]``; no-op for None."""
    if mean is not None:
        image = image - np.asarray(mean, np.float32)
    if std is not None:
        image = image / np.asarray(std, np.float32)
    return image.astype(np.float32, copy=False)


def convert_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """Make a ``uint8 [H, W, C]`` image have ``channels`` (1 <-> 3); None keeps it."""
    c = image.shape[-1]
    if channels is None or channels == c:
        return image
    if c == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c == 3 and channels == 1:
        gray = image.astype(np.float32) @ _LUMA
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"cannot convert {c} channels to {channels}")
