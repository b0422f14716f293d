"""Defect-segmentation datasets as TFDS builders (importing this module registers them).

=====================================  ========================  =================  ================
builder / configs                      source                    paper (Table 2)    image size
=====================================  ========================  =================  ================
``crackforest/{label2,label_ge2}``     CFD road cracks, tiles    360/348, 1:25      160x160
``magnetic_tile/{blowhole,break,``     MTSDD, binary or multi-   Blowhole 101/70    varies; training
``crack,fray,uneven,free,all}``        class (``all``)           1:333, Crack       resizes to 224
                                                                 46/31 1:113        by default
``thc/{thc448,thc224,thc112}``         KLIVIS/DIBE tiny hidden   981/893 1:2228,    448, 224, 112
                                       cracks in PV cells        ...                (square)
``synthetic_cracks/{r150_96,``         procedural cracks, no     mirrors the rows   the config's,
``r25_160,r190_112,r580_224,``         files needed              above              96 ... 448
``r2200_448}``
``folder`` (with ``manual_dir``)       your own images and       -                  theirs if equal,
                                       masks, read in place                         else 224
=====================================  ========================  =================  ================

``folder`` is not a TFDS builder: :func:`prepare` checks the folder and returns a
:class:`~dibe_jax.datasets.folder.FolderDataset` whose ``as_data_source()`` reads the files in
place (:mod:`dibe_jax.datasets.folder` says why).

Image size: :func:`native_image_size` is the size every example of a config has
(``None`` for ``magnetic_tile``), :func:`default_image_size` the square size training
resizes to when the user names none: ``None`` (keep the native size) for the
fixed-size sets, **224** for ``magnetic_tile`` (it reproduces the paper's Table 2
FG:BG of Blowhole and Crack and is a multiple of every model's stride; see
:mod:`dibe_jax.datasets.magnetic_tile`).

Every example is ``{"image": uint8 [H, W, C], "mask": uint8 [H, W, 1], "file_name": str}``.
Files are ``array_record`` (random access through ``builder.as_data_source()``, no
TensorFlow needed). File-backed builders read a local folder given as ``manual_dir``
or download their public source::

    import dibe_jax.datasets as dd
    builder = dd.prepare("crackforest", data_dir="/tmp/tfds", manual_dir="../shared/data")
    train = builder.as_data_source()["train"]      # len 360, train[0]["image"].shape (160, 160, 3)

Checks that build nothing (for command lines and configs, before anything runs):
:func:`names`, :func:`config_names`, :func:`check_spec`, :func:`split_names`,
:func:`check_split`, :func:`native_image_size`, :func:`default_image_size`
(:mod:`dibe_jax.datasets.catalog`). Quick in-memory data for tests:
:func:`generate_example`.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from dibe_jax.datasets._common import (
    DatasetFileError,
    DefectBuilder,
    drop_opencv_notice,
    quiet_progress,
    read_image,
    tile_image,
)
from dibe_jax.datasets.catalog import (
    builder_class,
    check_spec,
    check_split,
    class_names,
    config_names,
    default_image_size,
    is_folder,
    names,
    native_image_size,
    split_names,
)
from dibe_jax.datasets.crackforest import Crackforest, CrackforestConfig
from dibe_jax.datasets.folder import FolderDataset, FolderSource, open_folder
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
    "DefectBuilder",
    "FolderDataset",
    "FolderSource",
    "MagneticTile",
    "MagneticTileConfig",
    "SyntheticCracks",
    "SyntheticCracksConfig",
    "Thc",
    "ThcConfig",
    "builder_class",
    "check_spec",
    "check_split",
    "class_names",
    "config_names",
    "data_source",
    "default_image_size",
    "generate_example",
    "is_folder",
    "names",
    "native_image_size",
    "open_folder",
    "prepare",
    "read_image",
    "split_names",
    "tile_image",
]

# TFDS logs "OpenCV is not installed. We recommend using OpenCV ..." (absl logger) on the
# first image it decodes without OpenCV, i.e. in every command that reads a dataset. PIL
# decodes our PNGs fine, so this filter drops exactly that record and nothing else.
drop_opencv_notice()


def prepare(
    spec: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    file_format: str = "array_record",
    val_fraction: float | None = None,
) -> tfds.core.DatasetBuilder | FolderDataset:
    """Build (once) and return the TFDS builder for ``spec``.

    ``spec = "folder"``: check the folder ``manual_dir`` and return it as a
    :class:`FolderDataset` (nothing is built or written; ``data_dir`` is not used;
    ``val_fraction`` splits a folder without train/val subfolders, default 0.2).

    ``spec`` is checked first (:func:`check_spec`), before anything is read or built.
    A local build (``manual_dir`` given, a filled default manual folder, a cached
    download, or a generated set like ``synthetic_cracks``) prints nothing: TFDS's
    progress bars are hidden for its duration (and restored after it) and its
    "Downloading and preparing ..." lines become one log record of the
    ``dibe_jax.datasets`` logger, ``built dataset NAME/CONFIG in DIR`` (INFO).
    A download keeps TFDS's progress bars (it may take minutes) but fails within
    seconds when there is no network.

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

    Raises:
      ValueError: a bad ``spec`` (one line, with the choices).
      DatasetFileError: missing or bad raw files, or a download that failed (one line:
        which dataset, that it could not be downloaded, and to pass ``manual_dir``
        with the expected layout; chained from the original error).
    """
    if is_folder(spec):
        kwargs = {} if val_fraction is None else {"val_fraction": val_fraction}
        return open_folder(manual_dir, **kwargs)
    name, config = check_spec(spec).split("/")
    builder = builder_class(name)(
        config=config,
        data_dir=os.fspath(data_dir) if data_dir is not None else None,
        file_format=file_format,
    )
    if builder.data_path.exists():  # what download_and_prepare reuses as it is
        return builder
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
    )
    if builder.needs_download(manual_dir):  # keep TFDS's progress bars: it may take minutes
        builder.download_and_prepare(download_config=download_config)
    else:
        with quiet_progress():
            builder.download_and_prepare(download_config=download_config)
    return builder


def data_source(
    spec: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
):
    """Random-access source of one split (``len``, ``[i] -> dict``), prepared if needed.

    ``spec`` and ``split`` are checked (:func:`check_spec`, :func:`check_split`)
    before anything is built.
    """
    if is_folder(spec):
        return open_folder(manual_dir).source(split)
    check_split(spec, split)
    return prepare(spec, data_dir=data_dir, manual_dir=manual_dir).as_data_source()[split]
