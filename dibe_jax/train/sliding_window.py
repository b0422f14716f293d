"""Logits of one image at its native resolution: whole, or in blended overlapping windows.

The models are fully convolutional, so an image is processed as MONAI's
``sliding_window_inference`` and nnU-Net do (:func:`predict_logits`):

* an image no larger than the window is run whole, reflect-padded up to the network's size
  multiple (:func:`dibe_jax.models.input_size_rule`) and cropped back;
* a larger image is cut into overlapping windows of the window's shape (default overlap
  0.25; the image is reflect-padded first wherever it is smaller than the window). The
  windows run ``batch_size`` at a time through one jitted forward (the last batch is padded,
  so each window shape compiles once), and their **logits** are blended with a Gaussian
  importance map (:func:`blend_weights`, σ = window / 8, never exactly 0) before the
  threshold ``ŷ = 1 iff logit ≥ 0``.

Padding mode: ``numpy.pad(mode="reflect")`` (mirror about the edge pixel, which is not
repeated), chosen over edge padding so the padded border continues the texture of the image
rather than smearing its last row; padded pixels are cropped away again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dibe_jax.errors import UserError

__all__ = ["blend_weights", "predict_logits", "window_starts"]

_PAD_MODE = "reflect"
_MIN_WEIGHT = 1e-6  # floor of the importance map: never exactly 0, even for tiny sigma

Window = int | tuple[int, int] | Sequence[int]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _as_pair(window: Window | None, name: str = "window") -> tuple[int, int]:
    """``S`` or ``(rows, cols)`` -> ``(rows, cols)`` of positive ints; ValueError otherwise."""
    values = [window, window] if np.ndim(window) == 0 else list(window)  # type: ignore[arg-type]
    if len(values) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values
    ):
        raise UserError(f"{name} must be an int or (rows, cols) of ints, got {window!r}")
    if min(values) < 1:
        raise UserError(f"{name} must be positive, got {window!r}")
    return int(values[0]), int(values[1])


def _check_overlap(overlap: float) -> None:
    try:
        ok = 0 <= float(overlap) < 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"overlap must be in [0, 1), got {overlap!r}")


def _check_batch_size(batch_size: int) -> None:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise UserError(f"batch_size must be a positive int, got {batch_size!r}")


def blend_weights(shape: tuple[int, int], *, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian importance map of one window: ``float32 [rows, cols]``, peak 1, all > 0.

    .. math::
        w(i, j) = \\max\\Big(g_r(i)\\, g_c(j),\\ 10^{-6}\\Big),\\qquad
        g_n(i) = \\exp\\Big(-\\frac{(i - (n-1)/2)^2}{2\\,(\\sigma_s n)^2}\\Big)

    with ``σ_s = sigma_scale`` (1/8, MONAI's ``mode="gaussian"`` and nnU-Net). Window
    borders, where a fully convolutional network sees its zero padding instead of the
    neighbouring pixels, count ``exp(-8) ≈ 3e-4`` times less than the centre.

    >>> w = blend_weights((4, 6))
    >>> w.shape, w.dtype, bool(w.min() > 0), float(w.max()) <= 1.0
    ((4, 6), dtype('float32'), True, True)
    """
    rows, cols = _as_pair(shape, "shape")
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")

    def axis(n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        return np.exp(-0.5 * (x / (sigma_scale * n)) ** 2)

    g = np.outer(axis(rows), axis(cols))
    return np.maximum(g / g.max(), _MIN_WEIGHT).astype(np.float32)


def window_starts(size: int, window: int, overlap: float, *, multiple: int = 1) -> list[int]:
    """Start offsets of windows of length ``window`` covering ``[0, size)`` (``size >= window``).

    The step is ``window * (1 - overlap)`` rounded down to a multiple of ``multiple`` (at
    least ``multiple``), as in MONAI but on the network's stride grid: when ``size`` and
    ``window`` are multiples of ``multiple`` too, every window is pooled on the same grid as
    the whole image would be. The last window ends exactly at ``size``.

    >>> window_starts(320, 160, 0.25), window_starts(480, 160, 0.25, multiple=16)
    ([0, 120, 160], [0, 112, 224, 320])
    >>> window_starts(96, 160, 0.5)
    [0]
    """
    if size <= window:
        return [0]
    step = max(multiple, int(window * (1 - overlap)) // multiple * multiple)
    n = -(-(size - window) // step) + 1
    return sorted({min(i * step, size - window) for i in range(n)})


def _pad_to(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Reflect-pad ``image [H, W, C]`` to ``size`` (centred); return it and the crop back."""
    h, w = image.shape[:2]
    dh, dw = size[0] - h, size[1] - w
    top, left = dh // 2, dw // 2
    if dh or dw:
        image = np.pad(image, ((top, dh - top), (left, dw - left), (0, 0)), mode=_PAD_MODE)
    return image, (slice(top, top + h), slice(left, left + w))


def _check_out(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    if y.ndim != 4 or y.shape[:3] != x.shape[:3]:
        raise ValueError(
            f"forward must map [N, h, w, C] to [N, h, w, K]; got {x.shape} -> {y.shape}"
        )
    return y


def predict_logits(
    forward: Callable[[np.ndarray], Any],
    image: np.ndarray,
    *,
    multiple: int,
    window: Window,
    overlap: float = 0.25,
    batch_size: int = 8,
    minimum: int = 1,
) -> np.ndarray:
    """Logits of ``image`` at its native resolution: whole, or blended sliding windows.

    Args:
      forward: ``x float32 [N, h, w, C] -> logits [N, h, w, K]`` (e.g. a jitted model in
        eval mode). It is called with ``N = 1`` and the padded image shape on the whole-image
        path, and with ``N = batch_size`` and ``(h, w) = window`` on the sliding path, so a
        jitted ``forward`` compiles once per window shape (plus once per distinct padded
        shape of the images run whole).
      image: ``float32 [H, W, C]`` preprocessed as in training (``augment.to_float``).
      multiple: ``H`` and ``W`` given to ``forward`` must be multiples of this (the network's
        total stride, :func:`dibe_jax.models.input_size_rule`).
      window: ``S`` or ``(rows, cols)``; rounded up to ``multiple`` and ``minimum``. An image
        with ``H <= rows`` and ``W <= cols`` is run whole, reflect-padded up to ``multiple``
        (and ``minimum``); a larger one in overlapping windows of this shape.
      overlap: fraction of a window shared with its neighbour, in ``[0, 1)``.
      batch_size: windows per call of ``forward`` (the last batch is padded with zeros).
      minimum: smallest ``h``, ``w`` that ``forward`` accepts.

    Returns:
      ``float32 [H, W, K]``: blended logits ``Σ_k w_k z_k / Σ_k w_k`` over the windows ``k``
      covering each pixel (weights :func:`blend_weights`, accumulated in float64, so a
      constant forward comes back exactly); ``ŷ = logits >= 0``.

    Raises:
      ValueError: an argument out of range (the message names it) or a ``forward`` output
        of the wrong shape.

    >>> box = lambda x: x.mean(axis=-1, keepdims=True) - 0.5  # any [N, h, w, C] -> [N, h, w, 1]
    >>> image = np.random.default_rng(0).random((50, 70, 3), dtype=np.float32)
    >>> z = predict_logits(box, image, multiple=8, window=32, overlap=0.25, batch_size=4)
    >>> z.shape, z.dtype, bool(np.allclose(z, box(image[None])[0], atol=1e-6))
    ((50, 70, 1), dtype('float32'), True)
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
    if isinstance(multiple, bool) or int(multiple) != multiple or multiple < 1:
        raise ValueError(f"multiple must be a positive int, got {multiple!r}")
    if isinstance(minimum, bool) or int(minimum) != minimum or minimum < 1:
        raise ValueError(f"minimum must be a positive int, got {minimum!r}")
    multiple, minimum = int(multiple), int(minimum)
    rows, cols = (_round_up(max(s, minimum), multiple) for s in _as_pair(window))
    _check_overlap(overlap)
    _check_batch_size(batch_size)
    h, w = image.shape[:2]

    if h <= rows and w <= cols:  # whole image, padded up to the size multiple only
        size = (_round_up(max(h, minimum), multiple), _round_up(max(w, minimum), multiple))
        x, crop = _pad_to(image, size)
        y = _check_out(np.asarray(forward(x[None]), np.float32), x[None])
        return np.ascontiguousarray(y[0][crop])

    # padded to a multiple as well, so every window start lies on the stride grid
    size = (_round_up(max(h, rows), multiple), _round_up(max(w, cols), multiple))
    x, crop = _pad_to(image, size)
    starts = [
        (r, c)
        for r in window_starts(size[0], rows, overlap, multiple=multiple)
        for c in window_starts(size[1], cols, overlap, multiple=multiple)
    ]
    weights = blend_weights((rows, cols)).astype(np.float64)
    total = np.zeros(size, np.float64)
    acc: np.ndarray | None = None
    pending: deque = deque()

    def consume() -> None:
        nonlocal acc
        batch, chunk, y = pending.popleft()
        y = _check_out(np.asarray(y, np.float32), batch)
        if acc is None:
            acc = np.zeros((*size, y.shape[-1]), np.float64)
        for j, (r, c) in enumerate(chunk):
            acc[r : r + rows, c : c + cols] += weights[..., None] * y[j]
            total[r : r + rows, c : c + cols] += weights

    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        batch = np.zeros((batch_size, rows, cols, image.shape[-1]), np.float32)
        for j, (r, c) in enumerate(chunk):
            batch[j] = x[r : r + rows, c : c + cols]
        pending.append((batch, chunk, forward(batch)))
        if len(pending) > 1:  # the next batch runs while this one is blended
            consume()
    while pending:
        consume()
    assert acc is not None
    return (acc / total[..., None])[crop].astype(np.float32)
