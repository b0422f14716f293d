"""Defect-segmentation datasets as TFDS builders (importing this module registers them).

================================  ==========================================  ===========
builder / configs                 source                                      paper (T2)
================================  ==========================================  ===========
``crackforest/{label2,label_ge2}``  CFD road cracks, 160x160 tiles             360/348 1:25
``magnetic_tile/{blowhole,break,    MTSDD, native sizes, binary or multi-class  101/70 1:333
crack,fray,uneven,free,all}``                                                  (Blowhole),
                                                                               46/31 1:113
                                                                               (Crack)
``thc/{thc448,thc224,thc112}``    KLIVIS/DIBE tiny hidden cracks              981/893 1:2228 ...
``synthetic_cracks/{r150_96,        procedural cracks, no files needed          (mirrors the
r25_160,r190_112,r580_224,r2200_448}``                                         rows above)
================================  ==========================================  ===========

Every example is ``{"image": uint8 [H, W, C], "mask": uint8 [H, W, 1], "file_name": str}``.
Files are ``array_record`` (random access through ``builder.as_data_source()``, no
TensorFlow needed). File-backed builders read a local folder given as ``manual_dir``
or download their public source::

    import dibe_jax.datasets as dd
    builder = dd.prepare("crackforest", data_dir="/tmp/tfds", manual_dir="../shared/data")
    train = builder.as_data_source()["train"]      # len 360, train[0]["image"].shape (160, 160, 3)

Quick in-memory data for tests: :func:`generate_example`.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from dibe_jax.datasets._common import DatasetFileError, read_image, tile_image
from dibe_jax.datasets.crackforest import Crackforest, CrackforestConfig
from dibe_jax.datasets.magnetic_tile import MagneticTile, MagneticTileConfig
from dibe_jax.datasets.synthetic_cracks import (
    SyntheticCracks,
    SyntheticCracksConfig,
    generate_example,
)
from dibe_jax.datasets.thc import Thc, ThcConfig

__all__ = [
    "Crackforest",
    "CrackforestConfig",
    "DatasetFileError",
    "MagneticTile",
    "MagneticTileConfig",
    "SyntheticCracks",
    "SyntheticCracksConfig",
    "Thc",
    "ThcConfig",
    "data_source",
    "generate_example",
    "prepare",
    "read_image",
    "tile_image",
]


def prepare(
    spec: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    file_format: str = "array_record",
) -> tfds.core.DatasetBuilder:
    """Build (once) and return the TFDS builder for ``spec``.

    Args:
      spec: ``"name"`` or ``"name/config"``, e.g. ``"crackforest"``,
        ``"magnetic_tile/crack"``, ``"synthetic_cracks/r150_96"``.
      data_dir: where the prepared files go (TFDS default: ``~/tensorflow_datasets``).
      manual_dir: local folder with the raw files (or a parent of it); without it the
        builder downloads its public source.
      file_format: ``"array_record"`` (random access, the default) or ``"tfrecord"``.

    Returns:
      The prepared builder; ``builder.as_data_source()[split]`` is a random-access
      sequence of example dicts.
    """
    builder = tfds.builder(
        spec,
        data_dir=os.fspath(data_dir) if data_dir is not None else None,
        file_format=file_format,
    )
    config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
    )
    builder.download_and_prepare(download_config=config)
    return builder


def data_source(
    spec: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
):
    """Random-access source of one split (``len``, ``[i] -> dict``), prepared if needed."""
    return prepare(spec, data_dir=data_dir, manual_dir=manual_dir).as_data_source()[split]
