"""The two reductions every loss shares: a masked mean over an image's pixels, and pooling
per-image counts over the batch (and devices).

Distribution (pixel) losses are means over each image's pixels; region losses use each
image's soft counts, summed over the batch and devices only when asked (``pool_batch``,
``axis_name``). Both conventions are on the documentation's conventions page ("Reductions").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dibe_jax.losses._safe import safe_div


def pixel_mean(per_pixel: jax.Array, where: jax.Array | None) -> jax.Array:
    """Mean over the pixel axis 1 of ``[B, P]`` or ``[B, P, C]``, over unmasked pixels.

    ``where`` is ``None`` or ``[B, P]`` (0 drops a pixel); a fully masked image gives 0.
    """
    if where is None:
        return jnp.mean(per_pixel, axis=1)
    if per_pixel.ndim == 3:
        where = where[..., None]
    return safe_div(jnp.sum(per_pixel * where, axis=1), jnp.sum(where, axis=1))


def pool(x: jax.Array, *, pool_batch: bool, axis_name: str | None) -> jax.Array:
    """Sum ``[B, ...]`` over the batch (and the devices of ``axis_name``), broadcast back.

    Returns ``x`` unchanged unless ``pool_batch`` is True or ``axis_name`` is given (a device
    axis implies pooling); then every image carries the pooled value.
    """
    if not (pool_batch or axis_name is not None):
        return x
    total = jnp.sum(x, axis=0)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    return jnp.broadcast_to(total, x.shape)
