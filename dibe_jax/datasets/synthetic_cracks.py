"""Procedural thin, branching, low-contrast cracks on textured backgrounds.

A file-free stand-in for the THC sets of the DIBE paper (Table 2: THC448 1:2228,
THC224 1:584, THC112 1:191) and CFD (1:25), with the foreground fraction under
control: each config fixes the image size and the FG:BG ratio ``1:ratio``
(pixel-pooled over a split). Everything is numpy and deterministic from a seed, so
it is the embedded default for training demos, tests and benchmarks.

How an example is made (:func:`generate_example`):

1. background: fractal (``1/f``) noise mottling, a few faint blobs (stain-like
   distractors), fine grain noise, and for RGB a random tint;
2. with probability ``empty_fraction`` the mask is empty; otherwise a per-image
   foreground budget ``T`` is drawn (log-normal around
   ``H*W / (1 + ratio) / (1 - empty_fraction)``, so the pooled ratio is ``1:ratio``)
   and cracks are drawn as meandering random walks with branches until they cover
   ``T`` pixels; the stroke width grows with ``T / size`` (1 px for THC-like
   ratios, several px for CFD-like ones);
3. the crack pixels (and a 1-px soft halo) are darkened by ``contrast`` (0.15;
   0.2 for the CPU demo config ``r150_96``: there a 5-layer dilated CNN, 16
   channels, Adam 3e-3, Dice + weighted BCE, batch 32, reached a validation IoU of
   0.51 after 12 epochs and 0.76 after 20, in 2.5 min on 2 busy CPU cores; with
   contrast 0.15 it was 0.25 and 0.61);
4. multi-class configs (``spot_ratio`` set) add a second defect class, blob-like
   round spots (ellipses of radius 2-6 % of the image side, FG:BG ``1:spot_ratio``
   drawn like the cracks' budget), *brightened* by ``contrast`` with the same soft
   halo. The mask holds class ids: 0 background, 1 crack, 2 spot (a spot wins where
   the two overlap). Binary configs draw no spot and consume no random number for
   them, so their examples are unchanged.

Configs (``synthetic_cracks/<name>``):

=============  =====  ================  =============  ==========================
name           size   FG:BG             train / val    mirrors
=============  =====  ================  =============  ==========================
``r150_96``    96     1:150             384 / 128      default, CPU demos (contrast 0.2)
``r25_160``    160    1:25              360 / 348      CFD
``r190_112``   112    1:190             1334 / 1177    THC112
``r580_224``   224    1:580             1053 / 954     THC224
``r2200_448``  448    1:2200            981 / 893      THC448
``multi_96``   96     crack 1:150,      384 / 128      three classes (background,
                      spot 1:60                        crack, spot), contrast 0.2
=============  =====  ================  =============  ==========================
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow_datasets as tfds

from dibe_jax.datasets._common import DefectBuilder, encode_png, features

__all__ = ["SyntheticCracks", "SyntheticCracksConfig", "generate_example"]


def _fractal_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Zero-mean, unit-std noise with a ``1 / f**beta`` amplitude spectrum, ``[size, size]``."""
    spec = np.fft.rfft2(rng.standard_normal((size, size)))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    k = np.sqrt(fx**2 + fy**2)
    k[0, 0] = 1.0
    spec /= k**beta
    spec[0, 0] = 0.0
    tex = np.fft.irfft2(spec, s=(size, size))
    return tex / (tex.std() + 1e-8)


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge padding (numpy only)."""
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _draw_cracks(rng: np.random.Generator, size: int, target: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of branching random-walk cracks covering about
    ``target`` pixels (at most one stroke stamp more)."""
    mask = np.zeros((size, size), bool)
    count = 0
    width = int(np.clip(math.ceil(target / (1.3 * size)), 1, 8))
    for _ in range(64):  # cracks (restarts); each adds at least one stamp
        if count >= target:
            break
        pos = rng.uniform(0.1 * size, 0.9 * size, 2)
        stack = [(pos, rng.uniform(0.0, 2.0 * math.pi), width, rng.uniform(0.6, 1.5) * size)]
        while stack and count < target:
            (y, x), angle, w, length = stack.pop()
            h_lo = (w - 1) // 2
            for _step in range(int(length)):
                iy, ix = int(round(y)), int(round(x))
                if not (0 <= iy < size and 0 <= ix < size):
                    break
                y0, x0 = max(iy - h_lo, 0), max(ix - h_lo, 0)
                patch = mask[y0 : iy - h_lo + w, x0 : ix - h_lo + w]
                count += int(patch.size - np.count_nonzero(patch))
                patch[...] = True
                if count >= target:
                    break
                if rng.random() < 0.03 and len(stack) < 8:  # a branch
                    turn = rng.choice((-1.0, 1.0)) * rng.uniform(0.4, 1.1)
                    stack.append(
                        ((y, x), angle + turn, max(1, w - 1), rng.uniform(0.2, 0.6) * length)
                    )
                angle += rng.normal(0.0, 0.12) + (rng.random() < 0.02) * rng.normal(0.0, 0.8)
                y += math.sin(angle)
                x += math.cos(angle)
    return mask


def _draw_spots(rng: np.random.Generator, size: int, target: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of round spots (axis-aligned ellipses of radius 2-6 %
    of ``size``, at least 1.2 px) covering about ``target`` pixels (at most one spot more)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), bool)
    count = 0
    for _ in range(64):
        if count >= target:
            break
        ry = max(1.2, rng.uniform(0.02, 0.06) * size)
        rx = ry * rng.uniform(0.6, 1.0)
        if rng.random() < 0.5:
            ry, rx = rx, ry
        cy = rng.uniform(ry, size - ry)
        cx = rng.uniform(rx, size - rx)
        spot = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        count += int(np.count_nonzero(spot & ~mask))
        mask |= spot
    return mask


def _budget(rng: np.random.Generator, n: int, ratio: float, empty_fraction: float) -> int:
    """A per-image foreground budget: log-normal around ``n / (1 + ratio) / (1 - empty)``."""
    mean_fg = n / (1.0 + ratio) / (1.0 - empty_fraction)
    sigma = 0.35
    target = int(round(mean_fg * rng.lognormal(-0.5 * sigma**2, sigma)))
    return int(np.clip(target, 1, n // 4))


def generate_example(
    rng: np.random.Generator | int,
    size: int,
    ratio: float,
    *,
    channels: int = 3,
    contrast: float = 0.15,
    empty_fraction: float = 0.1,
    spot_ratio: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic crack image and its mask (with ``spot_ratio``: three classes).

    Args:
      rng: a ``numpy.random.Generator`` or an integer seed (same seed, same example).
      size: image side in pixels (square images).
      ratio: target background:foreground pixel ratio, FG:BG = ``1:ratio``, in
        expectation over images (empty ones included), as in Table 2 of the DIBE paper.
      channels: 3 (RGB, slightly tinted) or 1 (grayscale).
      contrast: darkening of crack pixels on a ``[0, 1]`` intensity scale; the
        background mottling has a std of about 0.06 and the grain noise 0.03, so
        0.1-0.2 is low contrast.
      empty_fraction: probability that the image has no crack (and, independently, no
        spot).
      spot_ratio: ``None`` (binary) or the spots' background:foreground ratio
        ``1:spot_ratio``; then bright round spots are drawn too, labelled 2.

    Returns:
      ``image`` ``uint8 [size, size, channels]`` and ``mask`` ``uint8 [size, size, 1]``
      with values ``{0, 1}``, or with ``spot_ratio`` class ids ``{0, 1, 2}`` (background,
      crack, spot).

    >>> image, mask = generate_example(0, 96, 150)
    >>> image.shape, image.dtype, mask.shape, sorted(set(mask.ravel().tolist())) <= [0, 1]
    ((96, 96, 3), dtype('uint8'), (96, 96, 1), True)
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 8 or ratio <= 0 or not 0.0 <= empty_fraction < 1.0:
        raise ValueError(f"bad size/ratio/empty_fraction: {size}, {ratio}, {empty_fraction}")
    if spot_ratio is not None and not spot_ratio > 0:
        raise ValueError(f"spot_ratio must be None or > 0, got {spot_ratio}")
    rng = np.random.default_rng(rng)
    n = size * size

    # Background: mottling + stain-like blobs + grain.
    base = rng.uniform(0.35, 0.65)
    tex = base + 0.05 * _fractal_noise(rng, size, beta=rng.uniform(1.2, 1.8))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(rng.integers(0, 4)):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.2) * size
        tex += rng.normal(0.0, 0.06) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))

    # Cracks.
    if rng.random() < empty_fraction:
        mask = np.zeros((size, size), bool)
    else:
        mask = _draw_cracks(rng, size, _budget(rng, n, ratio, empty_fraction))
    m = mask.astype(np.float32)
    depth = contrast * rng.uniform(0.8, 1.2)
    tex -= depth * np.maximum(m, 0.35 * _box3(m))
    labels = mask.astype(np.uint8)
    if spot_ratio is not None:  # bright round spots, class 2
        spots = np.zeros((size, size), bool)
        if rng.random() >= empty_fraction:
            spots = _draw_spots(rng, size, _budget(rng, n, spot_ratio, empty_fraction))
        s = spots.astype(np.float32)
        tex += contrast * rng.uniform(0.8, 1.2) * np.maximum(s, 0.35 * _box3(s))
        labels[spots] = 2
    tex += 0.03 * rng.standard_normal((size, size))

    if channels == 3:
        tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
        img = tex[..., None] * tint
    else:
        img = tex[..., None]
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return image, labels[..., None]


@dataclasses.dataclass(eq=False)
class SyntheticCracksConfig(tfds.core.BuilderConfig):
    """Image ``size``, FG:BG = ``1:ratio``, split sizes, rendering and seed.

    Make your own for a custom set, e.g.
    ``SyntheticCracks(config=SyntheticCracksConfig(name="tiny", size=32, ratio=50,
    num_train=8, num_validation=4))``.
    """

    size: int = 96
    ratio: float = 150.0
    num_train: int = 384
    num_validation: int = 128
    channels: int = 3
    contrast: float = 0.15
    empty_fraction: float = 0.1
    seed: int = 0
    spot_ratio: float | None = None  # set: three classes (background, crack, spot)


def _cfg(
    name: str,
    size: int,
    ratio: float,
    n_train: int,
    n_val: int,
    what: str,
    contrast=0.15,
    spot_ratio: float | None = None,
):
    spots = "" if spot_ratio is None else f", spots 1:{spot_ratio:g}"
    return SyntheticCracksConfig(
        name=name,
        description=f"{size}x{size}, FG:BG 1:{ratio:g}{spots}, {n_train}/{n_val} images, "
        f"contrast {contrast:g}; {what}.",
        size=size,
        ratio=ratio,
        num_train=n_train,
        num_validation=n_val,
        contrast=contrast,
        spot_ratio=spot_ratio,
    )


class SyntheticCracks(DefectBuilder):
    """Synthetic extreme-imbalance crack segmentation; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        _cfg("r150_96", 96, 150, 384, 128, "small default for CPU demos and tests", 0.2),
        _cfg("r25_160", 160, 25, 360, 348, "mirrors CFD (Table 2)"),
        _cfg("r190_112", 112, 190, 1334, 1177, "mirrors THC112 (Table 2)"),
        _cfg("r580_224", 224, 580, 1053, 954, "mirrors THC224 (Table 2)"),
        _cfg("r2200_448", 448, 2200, 981, 893, "mirrors THC448 (Table 2)"),
        _cfg(
            "multi_96",
            96,
            150,
            384,
            128,
            "three classes (background, crack, spot), multi-class CPU demos and tests",
            0.2,
            spot_ratio=60,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "r150_96"

    @classmethod
    def native_size(cls, config: tfds.core.BuilderConfig) -> tuple[int, int]:
        """``(size, size)`` of the config."""
        return (config.size, config.size)

    @classmethod
    def class_names(cls, config: tfds.core.BuilderConfig) -> tuple[str, ...]:
        """``("background", "crack")``, and ``"spot"`` for configs with ``spot_ratio``."""
        if config.spot_ratio is None:
            return ("background", "crack")
        return ("background", "crack", "spot")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg: SyntheticCracksConfig = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(channels=cfg.channels, classes=self.class_names(cfg), size=cfg.size),
            supervised_keys=("image", "mask"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg: SyntheticCracksConfig = self.builder_config
        return {
            "train": self._generate_examples(0, cfg.num_train),
            "validation": self._generate_examples(1, cfg.num_validation),
        }

    def _generate_examples(self, split_id: int, count: int):
        cfg: SyntheticCracksConfig = self.builder_config
        for i in range(count):
            rng = np.random.default_rng([cfg.seed, split_id, i])
            image, mask = generate_example(
                rng,
                cfg.size,
                cfg.ratio,
                channels=cfg.channels,
                contrast=cfg.contrast,
                empty_fraction=cfg.empty_fraction,
                spot_ratio=cfg.spot_ratio,
            )
            name = f"{'train' if split_id == 0 else 'validation'}/{i:05d}"
            yield name, {"image": encode_png(image), "mask": encode_png(mask), "file_name": name}
