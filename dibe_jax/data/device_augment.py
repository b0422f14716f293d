"""Augmentation and ``uint8 -> float32`` of whole batches on the device, inside a jitted step.

The in-memory data path (:mod:`dibe_jax.data.in_memory`) sends ``uint8`` batches to the
device; these pure functions turn them into what the model takes, with the semantics of the
host-side :mod:`dibe_jax.data.augment` (the DIBE paper's flip / brightness / contrast /
saturation, Sec. 4.3.3):

* geometry first, the same for image and mask: :func:`resize_images` (bilinear, antialiased
  when shrinking, like PIL's) and :func:`resize_masks` (nearest: a mask keeps its class ids)
  to the epoch's size, or :func:`random_crop` / :func:`center_crop` windows; then
  :func:`random_flips` (left-right and up-down, each with its probability);
* :func:`to_float` (``uint8 -> float32`` in ``[0, 1]``), :func:`color_jitter` on the image
  only (factors ``U(1 - s, 1 + s)``, torchvision ``ColorJitter`` semantics, composed into one
  linear colour map clipped once, as :func:`dibe_jax.data.augment.color_jitter`), and
  :func:`normalize`.

Randomness comes from one key per step, ``fold_in(key(seed), step)`` (:func:`step_key`),
from which each random op draws one value per example of the *global* batch (a ``[B]``
vector), so a batch's augmentation does not depend on how it is sharded over devices or
processes, and a resumed run draws what the uninterrupted one drew. :class:`DevicePreprocess`
bundles the settings and is what :func:`dibe_jax.train.step.make_steps` takes.

Shapes: ``images`` ``uint8 [B, H, W, C]`` (or ``float32`` after :func:`to_float`), ``masks``
``uint8 [B, H, W, 1]``; sizes are ``(rows, cols)``. The module imports only JAX and numpy.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from dibe_jax.data.augment import AugmentConfig

__all__ = [
    "DevicePreprocess",
    "apply_color_jitter",
    "center_crop",
    "color_jitter",
    "jitter_factors",
    "normalize",
    "random_crop",
    "random_flips",
    "resize_images",
    "resize_masks",
    "step_key",
    "to_float",
]

Size = tuple[int, int]

#: ITU-R 601 luma weights, as :mod:`dibe_jax.data.augment` (and torchvision) use them.
_LUMA = (0.299, 0.587, 0.114)


def _check_batch(images: jax.Array, masks: jax.Array) -> None:
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[-1] != 1:
        raise ValueError(
            f"expected images [B, H, W, C] and masks [B, H, W, 1], got {images.shape} and "
            f"{masks.shape}"
        )
    if images.shape[:3] != masks.shape[:3]:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in size")


def step_key(seed: jax.Array | int, step: jax.Array | int) -> jax.Array:
    """The augmentation key of training step ``step``: ``fold_in(key(seed), step)`` (a Python
    int ``seed`` and the same value as an ``int32`` array give the same key)."""
    return jax.random.fold_in(jax.random.key(seed), jnp.asarray(step, jnp.uint32))


def to_float(images: jax.Array) -> jax.Array:
    """``uint8 [B, H, W, C]`` -> ``float32`` in ``[0, 1]`` (``x * (1 / 255)``, bit for bit
    what :func:`dibe_jax.data.augment.to_float` gives on the host).

    >>> to_float(jnp.array([[[[0, 255]]]], jnp.uint8)).tolist()
    [[[[0.0, 1.0]]]]
    """
    return images.astype(jnp.float32) * jnp.float32(1.0 / 255.0)


def normalize(
    images: jax.Array,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
) -> jax.Array:
    """``(images - mean) / std`` on ``float32 [B, H, W, C]``, per channel; no-op for None."""
    if mean is not None:
        images = images - jnp.broadcast_to(jnp.asarray(mean, jnp.float32), images.shape)
    if std is not None:
        images = images / jnp.broadcast_to(jnp.asarray(std, jnp.float32), images.shape)
    return images


def resize_images(images: jax.Array, size: Size) -> jax.Array:
    """Bilinear resize of ``float32 [B, H, W, C]`` to ``[B, rows, cols, C]`` (antialiased when
    shrinking, as PIL's ``BILINEAR``); the same size returns the input."""
    b, h, w, c = images.shape
    if (h, w) == tuple(size):
        return images
    return jax.image.resize(images, (b, size[0], size[1], c), "bilinear", antialias=True)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel (pixel centres: ``floor((i + 1/2) n_in / n_out)``)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_masks(masks: jax.Array, size: Size) -> jax.Array:
    """Nearest-neighbour resize of ``[B, H, W, 1]`` masks to ``[B, rows, cols, 1]``: every
    output value is one of the input's, so class ids stay class ids.

    >>> m = jnp.zeros((1, 4, 4, 1), jnp.uint8).at[0, 1, 2, 0].set(3)
    >>> sorted(set(resize_masks(m, (7, 5)).ravel().tolist()))
    [0, 3]
    """
    _, h, w, _ = masks.shape
    if (h, w) == tuple(size):
        return masks
    rows, cols = _nearest_index(h, size[0]), _nearest_index(w, size[1])
    return masks[:, rows][:, :, cols]


def _offsets(key: jax.Array, batch: int, room: Size) -> tuple[jax.Array, jax.Array]:
    ky, kx = jax.random.split(key)
    y = jax.random.randint(ky, (batch,), 0, room[0] + 1)
    x = jax.random.randint(kx, (batch,), 0, room[1] + 1)
    return y, x


def _crop_room(shape: tuple[int, ...], size: Size) -> Size:
    room = (shape[1] - size[0], shape[2] - size[1])
    if min(room) < 0:
        raise ValueError(
            f"cannot crop {size[0]}x{size[1]} windows from images of {shape[1]}x{shape[2]}"
        )
    return room


def _windows(x: jax.Array, y0: jax.Array, x0: jax.Array, size: Size) -> jax.Array:
    def one(image, y, x):
        return jax.lax.dynamic_slice(image, (y, x, 0), (size[0], size[1], image.shape[-1]))

    return jax.vmap(one)(x, y0, x0)


def random_crop(
    key: jax.Array, images: jax.Array, masks: jax.Array, size: Size
) -> tuple[jax.Array, jax.Array]:
    """A random ``size`` window of each example, the same window for its image and mask.

    Args:
      key: the batch's key (one window per example is drawn from it).
      images: ``[B, H, W, C]`` (any dtype).
      masks: ``[B, H, W, 1]``.
      size: ``(rows, cols)``, at most ``(H, W)``.

    Returns:
      ``images [B, rows, cols, C]``, ``masks [B, rows, cols, 1]``.
    """
    _check_batch(images, masks)
    room = _crop_room(images.shape, size)
    y, x = _offsets(key, images.shape[0], room)
    return _windows(images, y, x, size), _windows(masks, y, x, size)


def center_crop(images: jax.Array, masks: jax.Array, size: Size) -> tuple[jax.Array, jax.Array]:
    """The central ``size`` window of ``images [B, H, W, C]`` and ``masks [B, H, W, 1]``."""
    _check_batch(images, masks)
    dy, dx = _crop_room(images.shape, size)
    y, x = dy // 2, dx // 2
    window = (slice(None), slice(y, y + size[0]), slice(x, x + size[1]))
    return images[window], masks[window]


def _per_example(flags: jax.Array, ndim: int) -> jax.Array:
    return jnp.reshape(flags, (-1,) + (1,) * (ndim - 1))


def random_flips(
    key: jax.Array,
    images: jax.Array,
    masks: jax.Array,
    *,
    horizontal: float = 0.5,
    vertical: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """Flip each example's image ``[B, H, W, C]`` and mask ``[B, H, W, 1]`` together,
    left-right with probability ``horizontal`` and up-down with probability ``vertical``
    (a probability of 0 costs nothing)."""
    _check_batch(images, masks)
    kh, kv = jax.random.split(key)
    for p, k, axis in ((horizontal, kh, 2), (vertical, kv, 1)):
        if p <= 0:
            continue
        flip = jax.random.bernoulli(k, p, (images.shape[0],))
        images = jnp.where(_per_example(flip, 4), jnp.flip(images, axis), images)
        masks = jnp.where(_per_example(flip, 4), jnp.flip(masks, axis), masks)
    return images, masks


def jitter_factors(
    key: jax.Array,
    batch: int,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Brightness, contrast and saturation factors ``b, c, s``, each ``float32 [batch]`` drawn
    from ``U(1 - strength, 1 + strength)`` (torchvision ``ColorJitter``); 1 for a strength
    of 0."""
    keys = jax.random.split(key, 3)
    out = []
    for k, strength in zip(keys, (brightness, contrast, saturation), strict=True):
        if strength <= 0:
            out.append(jnp.ones((batch,), jnp.float32))
        else:
            lo, hi = 1.0 - strength, 1.0 + strength
            out.append(jax.random.uniform(k, (batch,), jnp.float32, minval=lo, maxval=hi))
    return out[0], out[1], out[2]


def apply_color_jitter(
    images: jax.Array, b: jax.Array, c: jax.Array, s: jax.Array | None = None
) -> jax.Array:
    """Apply per-example factors ``b, c, s`` (``float32 [B]``) to ``float32 [B, H, W, C]``
    images in ``[0, 1]``.

    With ``g(x) = x . (0.299, 0.587, 0.114)`` (RGB) or ``x`` (one channel) and ``mu`` the
    example's mean of ``g``, as :func:`dibe_jax.data.augment.color_jitter`:

    .. math:: x' = \\mathrm{clip}(c b (s x + (1 - s) g(x)) + (1 - c) b \\mu, 0, 1)

    ``s`` (saturation) applies to RGB images only; None skips it.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got {images.shape}")
    rgb = images.shape[-1] == 3
    gray = images @ jnp.asarray(_LUMA, jnp.float32) if rgb else images[..., 0]  # [B, H, W]
    mu = jnp.mean(gray, axis=(1, 2))  # [B]
    out = images
    if rgb and s is not None:
        s4 = _per_example(s, 4)
        out = s4 * out + (jnp.float32(1.0) - s4) * gray[..., None]
    out = _per_example(c * b, 4) * out + _per_example((jnp.float32(1.0) - c) * b * mu, 4)
    return jnp.clip(out, jnp.float32(0.0), jnp.float32(1.0))


def color_jitter(
    key: jax.Array,
    images: jax.Array,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
) -> jax.Array:
    """Per-example brightness, contrast and saturation jitter of ``float32 [B, H, W, C]``
    images in ``[0, 1]``: factors from :func:`jitter_factors`, applied by
    :func:`apply_color_jitter` (saturation skipped for one-channel images; all strengths 0
    return the images unchanged).
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got {images.shape}")
    if brightness <= 0 and contrast <= 0 and saturation <= 0:
        return images
    rgb = images.shape[-1] == 3
    b, c, s = jitter_factors(
        key,
        images.shape[0],
        brightness=brightness,
        contrast=contrast,
        saturation=saturation if rgb else 0.0,
    )
    return apply_color_jitter(images, b, c, s if rgb and saturation > 0 else None)


@dataclasses.dataclass(frozen=True)
class DevicePreprocess:
    """What a jitted step does to a ``uint8`` batch: augmentation in training, and in both
    training and evaluation the geometry to the epoch's size, ``uint8 -> float32`` and the
    optional normalisation. Frozen (hashable): the steps close over it.

    Attributes:
      augment: training augmentation (a :class:`dibe_jax.data.augment.AugmentConfig`: flip
        probabilities and jitter strengths); None for none.
      crop: ``"resize"`` (the whole stored image to the epoch's size; the training loop's
        mode) or ``"crop"`` (a random window in training, the central one in evaluation).
      mean, std: normalisation after scaling to ``[0, 1]`` (None: none).
      seed: the run's seed; step ``t`` augments with :func:`step_key` ``(seed, t)``. The
        jitted steps pass it as an input (``train(..., seed=)``), so it is no constant of
        their compilation.
    """

    augment: AugmentConfig | None = None
    crop: str = "resize"
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop not in ("resize", "crop"):
            raise ValueError(f"crop must be 'resize' or 'crop' on the device, got {self.crop!r}")

    def _geometry(
        self, key: jax.Array | None, images: jax.Array, masks: jax.Array, size: Size | None
    ) -> tuple[jax.Array, jax.Array]:
        """Window (``crop``) on ``uint8``, then ``float32``, then resize (``resize``)."""
        if size is not None and self.crop == "crop":
            if key is None:
                images, masks = center_crop(images, masks, size)
            else:
                images, masks = random_crop(key, images, masks, size)
        x = to_float(images)
        if size is not None and self.crop == "resize":
            x, masks = resize_images(x, size), resize_masks(masks, size)
        return x, masks

    def train(
        self,
        step: jax.Array | int,
        images: jax.Array,
        masks: jax.Array,
        size: Size | None,
        *,
        seed: jax.Array | int | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """The training batch of step ``step``.

        Args:
          step: the global step (traced: no recompilation per step).
          images: ``uint8 [B, H, W, C]`` (the global batch, as stored).
          masks: ``uint8 [B, H, W, 1]``.
          size: the epoch's ``(rows, cols)``, or None for the stored size.
          seed: the run's seed, traced (an input of the jitted step, so runs with other
            seeds share its compilation); None: :attr:`seed`. The same value draws the
            same augmentation either way.

        Returns:
          ``float32 [B, rows, cols, C]`` images and ``uint8 [B, rows, cols, 1]`` masks.
        """
        _check_batch(images, masks)
        a = self.augment
        key = step_key(self.seed if seed is None else seed, step)
        k_geometry, k_flip, k_color = jax.random.split(key, 3)
        x, masks = self._geometry(k_geometry, images, masks, size)
        if a is not None:
            x, masks = random_flips(k_flip, x, masks, horizontal=a.hflip, vertical=a.vflip)
            x = color_jitter(
                k_color, x, brightness=a.brightness, contrast=a.contrast, saturation=a.saturation
            )
        return normalize(x, self.mean, self.std), masks

    def evaluate(
        self, images: jax.Array, masks: jax.Array, size: Size | None
    ) -> tuple[jax.Array, jax.Array]:
        """The evaluation batch: no random op; shapes as :meth:`train`."""
        _check_batch(images, masks)
        x, masks = self._geometry(None, images, masks, size)
        return normalize(x, self.mean, self.std), masks

    def describe(self) -> dict[str, Any]:
        """The settings as plain values (for logs and benchmark tables)."""
        return dataclasses.asdict(self)
