"""What the datasets are, checked without building anything.

The one list of dataset names of the project, their configs, splits and image sizes,
read from the builder classes (``BUILDER_CONFIGS`` and class attributes): no builder
is instantiated, nothing is read from ``data_dir`` and nothing from the network, so
a command line or a config can be checked in microseconds before anything is built
or compiled. Every check raises :class:`ValueError` with one line that names the
argument and the choices.

>>> names()
('crackforest', 'magnetic_tile', 'synthetic_cracks', 'thc')
>>> check_spec("magnetic_tile")
'magnetic_tile/crack'
>>> native_image_size("thc/thc224"), native_image_size("magnetic_tile/crack")
((224, 224), None)
>>> default_image_size("crackforest"), default_image_size("magnetic_tile/blowhole")
(None, 224)
>>> class_names("magnetic_tile/all")
('background', 'blowhole', 'break', 'crack', 'fray', 'uneven')

``"folder"`` is the user's own folder of images and masks (:mod:`dibe_jax.datasets.folder`):
it has no builder and no configs, and what it is (classes, splits, sizes) is read from the
folder, so the functions below take its path as ``manual_dir`` for it (the folder is checked
once per change of its files, and nothing is written).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from dibe_jax.datasets import folder
from dibe_jax.datasets._common import DefectBuilder
from dibe_jax.datasets.crackforest import Crackforest
from dibe_jax.datasets.magnetic_tile import MagneticTile
from dibe_jax.datasets.synthetic_cracks import SyntheticCracks
from dibe_jax.datasets.thc import Thc

__all__ = [
    "builder_class",
    "check_spec",
    "check_split",
    "class_names",
    "config_names",
    "default_image_size",
    "names",
    "native_image_size",
    "split_names",
]

#: Builder class of each dataset name (the TFDS name, e.g. ``MagneticTile.name``).
_BUILDERS: dict[str, type[DefectBuilder]] = {
    cls.name: cls for cls in (Crackforest, MagneticTile, SyntheticCracks, Thc)
}

#: A dataset as ``"name"`` / ``"name/config"``, or a builder (prepared or not), or an opened
#: folder dataset.
Dataset = str | tfds.core.DatasetBuilder | folder.FolderDataset


def names() -> tuple[str, ...]:
    """The dataset names, sorted: the one list of the project.

    >>> names()
    ('crackforest', 'magnetic_tile', 'synthetic_cracks', 'thc')
    """
    return tuple(sorted(_BUILDERS))


def _known() -> str:
    return ", ".join(names()) + f", {folder.NAME} (your own images: --manual-dir PATH)"


def is_folder(dataset: Dataset) -> bool:
    """Is ``dataset`` the user's folder (``"folder"`` or an opened folder dataset)?

    >>> is_folder("folder"), is_folder(" folder "), is_folder("crackforest")
    (True, True, False)
    """
    if isinstance(dataset, folder.FolderDataset):
        return True
    return isinstance(dataset, str) and dataset.strip() == folder.NAME


def _folder(dataset: Dataset, manual_dir: os.PathLike | str | None) -> folder.FolderDataset:
    if isinstance(dataset, folder.FolderDataset):
        return dataset
    return folder.open_folder(manual_dir)


def builder_class(name: str) -> type[DefectBuilder]:
    """The builder class of dataset ``name`` (no config part).

    Raises:
      ValueError: ``unknown dataset 'cityscapes'; known: crackforest, ...``.
    """
    try:
        return _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; known: {_known()}") from None


def config_names(name: str) -> tuple[str, ...]:
    """The config names of dataset ``name``, in the builder's order (default first
    for the built-in datasets).

    >>> config_names("crackforest")
    ('label2', 'label_ge2')
    >>> config_names("thc")
    ('thc448', 'thc224', 'thc112')
    """
    return tuple(c.name for c in builder_class(name).BUILDER_CONFIGS)


def _split_spec(spec: str) -> tuple[type[DefectBuilder], tfds.core.BuilderConfig]:
    """(builder class, config) of a spec; ValueError with one line otherwise."""
    if not isinstance(spec, str):
        raise ValueError(
            f"dataset must be a string NAME or NAME/CONFIG, got {spec!r}; known: {_known()}"
        )
    text = spec.strip()
    if not text:
        raise ValueError(f"dataset is empty; known: {_known()}")
    if ":" in text:
        try:
            use = repr(check_spec(text.split(":", 1)[0]))
        except ValueError:
            use = f"NAME or NAME/CONFIG; known: {_known()}"
        raise ValueError(
            f"dataset {spec!r}: a version suffix is not accepted (each dataset has one "
            f"version); use {use}"
        )
    pathlike = text.startswith(("~", "./", "../")) or (text.startswith("/") and text.count("/") > 1)
    if pathlike or ("/" in text and os.path.isdir(text)):
        raise ValueError(
            f"dataset {spec!r} looks like a folder; for your own images and masks use "
            f"--dataset {folder.NAME} --manual-dir {text} (data.dataset={folder.NAME}, "
            "data.manual_dir=PATH)"
        )
    parts = text.split("/")
    name = parts[0]
    if name == folder.NAME:
        raise ValueError(
            f"dataset {spec!r}: {folder.NAME} takes no config; give its path as "
            "--manual-dir PATH (data.manual_dir)"
        )
    if not name:
        raise ValueError(f"dataset {spec!r}: no dataset name before '/'; known: {_known()}")
    if name not in _BUILDERS:
        where = "" if len(parts) == 1 else f"dataset {spec!r}: "
        raise ValueError(f"{where}unknown dataset {name!r}; known: {_known()}")
    cls = _BUILDERS[name]
    configs = {c.name: c for c in cls.BUILDER_CONFIGS}
    has = f"{name} has: {', '.join(configs)}"
    if len(parts) > 2:
        raise ValueError(f"dataset {spec!r}: expected NAME or NAME/CONFIG (one '/'); {has}")
    if len(parts) == 1:
        return cls, configs[cls.DEFAULT_BUILDER_CONFIG_NAME or next(iter(configs))]
    config = parts[1]
    if not config:
        raise ValueError(f"dataset {spec!r}: empty config after '/'; {has}")
    if config not in configs:
        raise ValueError(f"dataset {spec!r}: unknown config {config!r}; {has}")
    return cls, configs[config]


def check_spec(spec: str) -> str:
    """Check ``"NAME"`` or ``"NAME/CONFIG"`` and return it as ``"name/config"`` (the
    default config filled in), without building anything.

    Args:
      spec: e.g. ``"crackforest"``, ``"magnetic_tile/crack"``; surrounding blanks are
        ignored.

    Returns:
      The canonical spec ``"name/config"``.

    Raises:
      ValueError: one line naming the argument and the choices: an unknown dataset
        or config, an empty part, a version suffix (``name:1.0.0``) or more than
        one ``/``.

    >>> check_spec("crackforest")
    'crackforest/label2'
    >>> check_spec("crackforest/label3")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
      ...
    ValueError: dataset 'crackforest/label3': unknown config 'label3';
    crackforest has: label2, label_ge2
    >>> check_spec("cityscapes")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
      ...
    ValueError: unknown dataset 'cityscapes';
    known: crackforest, magnetic_tile, synthetic_cracks, thc, folder (your own images:
    --manual-dir PATH)
    """
    if is_folder(spec):
        return folder.NAME
    cls, config = _split_spec(spec)
    return f"{cls.name}/{config.name}"


def _resolve(dataset: Dataset) -> tuple[type, tfds.core.BuilderConfig | None, str]:
    """(builder class, config, "name/config") of a spec or a builder instance."""
    if isinstance(dataset, tfds.core.DatasetBuilder):
        config = dataset.builder_config
        label = f"{dataset.name}/{config.name}" if config is not None else dataset.name
        return type(dataset), config, label
    cls, config = _split_spec(dataset)
    return cls, config, f"{cls.name}/{config.name}"


def native_image_size(
    dataset: Dataset, *, manual_dir: os.PathLike | str | None = None
) -> tuple[int, int] | None:
    """``(rows, cols)`` of every example of a dataset/config, or ``None`` if sizes vary.

    Read from the builder class and config (CrackForest tiles ``(160, 160)``,
    ``synthetic_cracks`` its config's size, ``thc/thcR`` ``(R, R)``,
    ``magnetic_tile`` ``None``), so nothing is built. A builder instance of another
    kind is asked for the shape of its ``image`` feature.

    Raises:
      ValueError: as :func:`check_spec`.

    >>> native_image_size("crackforest"), native_image_size("synthetic_cracks/r2200_448")
    ((160, 160), (448, 448))
    """
    if is_folder(dataset):  # the size every image of the folder has, or None
        return _folder(dataset, manual_dir).native_size()
    cls, config, _ = _resolve(dataset)
    if issubclass(cls, DefectBuilder):
        return cls.native_size(config)
    shape = getattr(dataset.info.features["image"], "shape", None)  # foreign builders
    if shape and len(shape) >= 2 and all(isinstance(s, int) for s in shape[:2]):
        return (shape[0], shape[1])
    return None


def default_image_size(
    dataset: Dataset, *, manual_dir: os.PathLike | str | None = None
) -> int | None:
    """The square side that training resizes to when the user gives no image size.

    ``None`` for datasets whose examples all have one size (:func:`native_image_size`
    is not ``None``): they are used as they are. For ``magnetic_tile`` (sizes vary)
    it is ``224``: resizing to 224x224 reproduces the paper's Table 2 FG:BG ratios of
    Blowhole and Crack, and 224 is a multiple of every model's total stride (see
    :mod:`dibe_jax.datasets.magnetic_tile`).

    Raises:
      ValueError: as :func:`check_spec`.

    >>> default_image_size("magnetic_tile/crack"), default_image_size("thc/thc112")
    (224, None)
    """
    if is_folder(dataset):  # magnetic_tile's policy: 224 when the sizes differ
        return _folder(dataset, manual_dir).default_image_size()
    if native_image_size(dataset) is not None:
        return None
    cls, _, _ = _resolve(dataset)
    return getattr(cls, "DEFAULT_IMAGE_SIZE", None)


_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


def split_names(
    dataset: Dataset, *, manual_dir: os.PathLike | str | None = None
) -> tuple[str, ...]:
    """The split names of a dataset: from the builder class for a spec (nothing is
    built), from the prepared files for a prepared builder.

    Raises:
      ValueError: as :func:`check_spec`.

    >>> split_names("crackforest/label2")
    ('train', 'validation')
    """
    if is_folder(dataset):
        return _folder(dataset, manual_dir).split_names()
    cls, _, _ = _resolve(dataset)
    if isinstance(dataset, tfds.core.DatasetBuilder):
        found = list(dataset.info.splits.keys())  # empty until prepared
        if found:
            return tuple(sorted(found, key=lambda s: (_SPLIT_ORDER.get(s, 3), s)))
    return tuple(getattr(cls, "SPLITS", ("train", "validation")))


def check_split(
    dataset: Dataset, split: str, *, manual_dir: os.PathLike | str | None = None
) -> None:
    """Raise :class:`ValueError` unless ``split`` is a split of ``dataset``.

    >>> check_split("crackforest", "validation")
    >>> check_split("crackforest", "test")
    Traceback (most recent call last):
      ...
    ValueError: split 'test' not in dataset crackforest/label2; it has: train, validation
    """
    if is_folder(dataset):
        ds = _folder(dataset, manual_dir)
        label, have = f"{folder.NAME} {ds.root}", ds.split_names()
    else:
        _, _, label = _resolve(dataset)
        have = split_names(dataset)
    if split not in have:
        raise ValueError(f"split {split!r} not in dataset {label}; it has: {', '.join(have)}")


def class_names(
    dataset: Dataset, *, manual_dir: os.PathLike | str | None = None
) -> tuple[str, ...]:
    """The name of every class id of a dataset's masks, background (0) first.

    Two names mean a binary dataset (``{0, 1}`` masks, one sigmoid output), more a
    multi-class one (class ids, softmax over that many outputs). For a spec they are read
    from the builder class and config (:meth:`DefectBuilder.class_names`, what its mask
    feature is built from), so nothing is built; for a builder instance, from its mask
    feature (a ``tfds.features.LabeledImage``).

    Raises:
      ValueError: as :func:`check_spec`, or when the mask feature does not say how many
        classes it has (one line naming the dataset).

    >>> class_names("crackforest"), class_names("synthetic_cracks/multi_96")
    (('background', 'crack'), ('background', 'crack', 'spot'))
    """
    if is_folder(dataset):  # classes.json, or binary
        return _folder(dataset, manual_dir).class_names()
    cls, config, label = _resolve(dataset)
    names_ = None
    if isinstance(dataset, tfds.core.DatasetBuilder):
        mask = dataset.info.features["mask"] if "mask" in dataset.info.features else None
        names_ = getattr(mask, "names", None)
    elif issubclass(cls, DefectBuilder):
        names_ = cls.class_names(config)
    if not names_ or len(names_) < 2:
        raise ValueError(
            f"dataset {label}: its mask feature does not say how many classes it has; "
            "expected a tfds.features.LabeledImage(labels=[background, ...]) mask "
            "(DefectBuilder.class_names)"
        )
    return tuple(str(n) for n in names_)
