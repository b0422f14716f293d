"""Parameter-free array operations used by the segmentation models.

All functions take and return NHWC arrays (``[B, H, W, C]``) and depend only on static shapes,
so they trace once per input shape under ``jax.jit``.

* :func:`check_input` -- the shape check every model runs first (``ValueError`` on bad sizes).
* :func:`resize_bilinear` -- bilinear resizing with PyTorch's ``align_corners`` semantics.
* :func:`adaptive_avg_pool` -- PyTorch-style adaptive average pooling (PSPNet, Zhao et al. 2017).
* :func:`max_pool_with_argmax` / :func:`max_unpool` -- max pooling that remembers where each
  maximum came from and the index unpooling of SegNet (Badrinarayanan et al., TPAMI 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "adaptive_avg_pool",
    "check_input",
    "max_pool_with_argmax",
    "max_unpool",
    "resize_bilinear",
]


def check_input(
    x: jax.Array,
    *,
    in_channels: int,
    multiple: int,
    model: str,
    minimum: int | None = None,
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[B, H, W, in_channels]`` with valid ``H`` and ``W``.

    Args:
      x: the model input, ``[B, H, W, C]``.
      in_channels: the channel count the model was built for.
      multiple: ``H`` and ``W`` must be positive multiples of this (the model's total stride).
        ``1`` accepts any size of at least ``minimum``.
      model: the model's name, used in the message.
      minimum: smallest accepted ``H`` and ``W`` (default ``multiple``).
    """
    if x.ndim != 4:
        raise ValueError(f"{model} expects an NHWC input [B, H, W, C]; got shape {x.shape}")
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"{model} was built for in_channels={in_channels}; got an input with "
            f"{x.shape[-1]} channels (shape {x.shape})"
        )
    minimum = multiple if minimum is None else minimum
    height, width = x.shape[1], x.shape[2]
    if any(s < minimum or s % multiple for s in (height, width)):
        if multiple > 1:
            examples = ", ".join(str(multiple * k) for k in range(1, 5))
            allowed = (
                f"positive multiples of {multiple} ({examples}, ...; e.g. "
                f"{_nearest_multiples(height, multiple)} for a height of {height})"
            )
        else:
            allowed = f"any size of at least {minimum}"
        raise ValueError(
            f"{model} accepts heights and widths that are {allowed}; got {height}x{width}"
        )


def _nearest_multiples(size: int, multiple: int) -> str:
    low = max(multiple, size // multiple * multiple)
    high = low + multiple if low <= size else low
    return f"{low} or {high}" if low != high else str(low)


def _interpolation(n_in: int, n_out: int, align_corners: bool) -> tuple[np.ndarray, ...]:
    """Source indices ``i0, i1`` and weight ``w`` (of ``i1``) for 1-D linear interpolation."""
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = out * scale
    else:
        src = (out + 0.5) * (n_in / n_out) - 0.5
        src = np.maximum(src, 0.0)  # PyTorch clamps negative source coordinates to 0
    i0 = np.minimum(np.floor(src).astype(np.int32), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    weight = (src - i0).astype(np.float32)
    return i0, i1, weight


def _lerp_axis(x: jax.Array, n_out: int, axis: int, align_corners: bool) -> jax.Array:
    n_in = x.shape[axis]
    if n_in == n_out:
        return x
    i0, i1, w = _interpolation(n_in, n_out, align_corners)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w = jnp.asarray(w.reshape(shape), dtype=x.dtype)
    if n_in == 1:
        return jnp.repeat(x, n_out, axis=axis)
    return jnp.take(x, i0, axis=axis) * (1 - w) + jnp.take(x, i1, axis=axis) * w


def resize_bilinear(x: jax.Array, size: Sequence[int], *, align_corners: bool = False) -> jax.Array:
    """Bilinear resize of ``x [B, H, W, C]`` to ``[B, size[0], size[1], C]``.

    Matches ``torch.nn.functional.interpolate(mode="bilinear")``: with ``align_corners=False``
    output pixel ``o`` samples the input at ``(o + 0.5) * H / H_out - 0.5`` (clamped at 0, the same
    as ``jax.image.resize(..., "bilinear", antialias=False)``); with ``align_corners=True`` the
    corner pixels of input and output coincide, sample ``o * (H - 1) / (H_out - 1)``. No
    anti-aliasing is applied when shrinking. Separable: two gathers and lerps, ``O(output)`` work.

    >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    >>> resize_bilinear(x, (3, 3), align_corners=True)[0, :, :, 0]
    Array([[0. , 0.5, 1. ],
           [1. , 1.5, 2. ],
           [2. , 2.5, 3. ]], dtype=float32)
    """
    height, width = int(size[0]), int(size[1])
    x = _lerp_axis(x, height, 1, align_corners)
    return _lerp_axis(x, width, 2, align_corners)


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` averaging matrix; bin ``i`` is ``[floor(i n / m), ceil((i+1) n / m))``."""
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """Adaptive average pooling of ``x [B, H, W, C]`` to ``[B, h, w, C]`` (PyTorch bin rule).

    Output bin ``i`` averages input rows ``floor(i H / h)`` to ``ceil((i + 1) H / h) - 1``, as
    ``torch.nn.AdaptiveAvgPool2d`` (bins overlap when ``H`` is not a multiple of ``h``). Used by
    the pyramid pooling module of PSPNet (Zhao et al., CVPR 2017) with ``h = w = 1, 2, 3, 6``.

    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> adaptive_avg_pool(x, 2)[0, :, :, 0]
    Array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    rows = jnp.asarray(_adaptive_matrix(x.shape[1], int(output_size[0])), dtype=x.dtype)
    cols = jnp.asarray(_adaptive_matrix(x.shape[2], int(output_size[1])), dtype=x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def max_pool_with_argmax(x: jax.Array, window: int = 2) -> tuple[jax.Array, jax.Array]:
    """Max pooling with window = stride = ``window`` that also returns where each max came from.

    Floor mode (as PyTorch): trailing rows/columns that do not fill a window are ignored.

    Args:
      x: ``[B, H, W, C]``.
      window: pooling window and stride (SegNet uses 2).

    Returns:
      ``(values, indices)``, both ``[B, H // window, W // window, C]``. ``indices`` (int32) are
      flat spatial positions ``row * W + col`` into the *input*, per image and channel, the same
      convention as ``torch.nn.MaxPool2d(return_indices=True)``. Ties go to the first position in
      row-major order. The gradient of ``values`` flows only to the selected position.

    >>> x = jnp.array([[1.0, 5.0], [7.0, 2.0]]).reshape(1, 2, 2, 1)
    >>> values, indices = max_pool_with_argmax(x)
    >>> float(values[0, 0, 0, 0]), int(indices[0, 0, 0, 0])
    (7.0, 2)
    """
    batch, height, width, channels = x.shape
    h, w = height // window, width // window
    if h == 0 or w == 0:
        raise ValueError(f"input {height}x{width} is smaller than the pooling window {window}")
    windows = x[:, : h * window, : w * window].reshape(batch, h, window, w, window, channels)
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(batch, h, w, channels, window * window)
    local = jnp.argmax(windows, axis=-1).astype(jnp.int32)
    values = jnp.take_along_axis(windows, local[..., None], axis=-1)[..., 0]
    rows = jnp.arange(h, dtype=jnp.int32)[None, :, None, None] * window + local // window
    cols = jnp.arange(w, dtype=jnp.int32)[None, None, :, None] * window + local % window
    return values, (rows * width + cols).astype(jnp.int32)


def max_unpool(
    values: jax.Array,
    indices: jax.Array,
    output_size: Sequence[int],
    window: int = 2,
) -> jax.Array:
    """Inverse of :func:`max_pool_with_argmax`: put each value back at its recorded position.

    This is the upsampling of SegNet's decoder (Badrinarayanan et al., TPAMI 2017, Sec. 3): the
    result is zero everywhere except at the argmax positions of the matching encoder pooling.

    Args:
      values: ``[B, h, w, C]`` (e.g. decoder features at the pooled resolution).
      indices: ``[B, h, w, C]`` int flat positions ``row * W + col`` from
        :func:`max_pool_with_argmax` with the same ``window``. Each index must lie inside its own
        pooling window (true for indices made by :func:`max_pool_with_argmax`); any other index
        is dropped.
      output_size: ``(H, W)``, the spatial size before pooling (``H >= h * window``).
      window: the pooling window.

    Returns:
      ``[B, H, W, C]``, implemented as a one-hot select per window (no scatter), so it is
      differentiable in ``values`` and cheap on every backend.
    """
    batch, h, w, channels = values.shape
    height, width = int(output_size[0]), int(output_size[1])
    if height < h * window or width < w * window:
        raise ValueError(
            f"output_size {height}x{width} is smaller than {h}x{w} pooled values x window {window}"
        )
    rows, cols = indices // width, indices % width
    d_row = rows - jnp.arange(h, dtype=indices.dtype)[None, :, None, None] * window
    d_col = cols - jnp.arange(w, dtype=indices.dtype)[None, None, :, None] * window
    local = d_row * window + d_col
    slots = jnp.arange(window * window, dtype=indices.dtype).reshape(1, 1, 1, 1, -1)
    onehot = local[..., None] == slots
    onehot &= ((d_row >= 0) & (d_row < window) & (d_col >= 0) & (d_col < window))[..., None]
    out = jnp.where(onehot, values[..., None], jnp.zeros((), values.dtype))
    out = out.reshape(batch, h, w, channels, window, window).transpose(0, 1, 4, 2, 5, 3)
    out = out.reshape(batch, h * window, w * window, channels)
    pad = ((0, 0), (0, height - h * window), (0, width - w * window), (0, 0))
    return jnp.pad(out, pad) if pad[1][1] or pad[2][1] else out
