"""Your own data: a folder of images and masks, used as the shipped datasets are.

``--dataset folder --manual-dir PATH`` (``data.dataset = "folder"``, ``data.manual_dir = PATH``)
trains, evaluates, searches and reports statistics on PATH, laid out in one of two ways::

    PATH/train/images/<stem>.<ext>   PATH/train/masks/<stem>.<ext>
    PATH/val/images/...              PATH/val/masks/...       (or validation/)
    PATH/test/images/...             PATH/test/masks/...      (optional)
    PATH/classes.json                                         (optional)

or only ``PATH/images/`` and ``PATH/masks/``: then ``data.val_fraction`` (default 0.2) of the
pairs, drawn with a fixed seed (0) from the sorted stems, form the validation split and the
rest the training split; the same folder and fraction give the same split in every run, and
the fraction is recorded in the run's ``config.json``. Splits are ``train``, ``validation``
and ``test``. An image and its mask share the file stem (``a.jpg`` pairs with ``a.png``).

**Images**: ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``; 8- or 16-bit,
grayscale, RGB, RGBA or palette, any size (decoded by :func:`dibe_jax.data.images.read_image`:
16-bit values become ``round(v / 257)``, alpha is dropped). The model's input channels follow
the data: 1 when every image is grayscale, else 3 (grayscale images are then repeated to RGB).

**Masks**: ``.png``, ``.tif``, ``.tiff``, ``.bmp``, 8-bit, the same size as their image
(JPEG masks are refused: lossy compression invents values at the edges).

* Without ``classes.json`` the dataset is binary (background, defect): a mask whose values
  are all 0 or 1 is used as it is; otherwise a pixel is defect iff its value is **> 127**.
  That covers ``{0, 255}`` masks and anti-aliased grayscale masks (magnetic-tile's rule). A
  mask with values above 1 but none above 127 (``{0, 2}``: class ids?) is refused.
* ``classes.json`` names the classes, background (id 0) first: ``["background", "crack"]``
  or ``{"classes": ["background", "crack", "spot"]}``. Two names: binary as above. Three or
  more: grayscale and palette masks hold class ids (a palette PNG's indices) and every value
  must be below the number of classes.
* RGB(A) masks need ``{"classes": [...], "colors": [[0, 0, 0], [255, 0, 0], ...]}`` (one
  colour per class; alpha ignored); a colour not in the map is refused. An RGB mask whose
  three channels are equal is read as a grayscale mask.

**Sizes**: when every image has one size, training uses it (``data.image_size`` None, as for
CrackForest's tiles); when sizes differ, training resizes every image to 224 x 224 unless
``--image-size`` says otherwise, the documented policy of ``magnetic_tile``
(:data:`DEFAULT_IMAGE_SIZE`).

**Checked up front**: opening a folder (:func:`open_folder`) decodes every image and mask once
and refuses, with one line naming the first offending files and how many more, an image
without a mask or the reverse, two files with one stem, an unreadable or truncated file, an
image/mask size mismatch, mask values outside the classes and an empty split. The layout
error says which layout was expected. Nothing is written, anywhere.

**Why not a TFDS builder** (as the shipped datasets are): a builder copies the data into
``data_dir`` once and reuses that copy, which is right for fixed public datasets but wrong for
a folder that the user edits: the copy goes stale, or must be rebuilt under a new name for
every change, and it doubles the disk space. This module reads the files in place: a split is
a random-access :class:`FolderSource` that decodes a file when asked, which the training loop
either decodes once into memory (when it fits ``data.memory_budget_mb``) or streams through
the grain loader, exactly as it does a TFDS data source. The only cache is the result of the
up-front check, kept in this process and keyed by a fingerprint of every file's name, size
and modification time (:func:`fingerprint`), so an edited mask, or a file added or removed,
is seen by the next open.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dibe_jax.data.images import GRAY_MODES, read_image
from dibe_jax.datasets.masks import ClassSpec, read_class_ids, read_classes
from dibe_jax.errors import DatasetFileError, UserError

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_VAL_FRACTION",
    "IMAGE_SUFFIXES",
    "LAYOUT",
    "MASK_SUFFIXES",
    "NAME",
    "FolderDataset",
    "FolderSource",
    "fingerprint",
    "open_folder",
    "read_class_ids",
]

NAME = "folder"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
#: Square side that training resizes to when the images differ in size (magnetic_tile's).
DEFAULT_IMAGE_SIZE = 224
DEFAULT_VAL_FRACTION = 0.2
SPLIT_SEED = 0
LAYOUT = (
    "PATH/train/{images,masks}/ and PATH/val/{images,masks}/ (optionally test/), "
    "or PATH/images/ and PATH/masks/, images and masks paired by file stem"
)
_SPLIT_DIRS = (("train", ("train",)), ("validation", ("val", "validation")), ("test", ("test",)))
_SHOWN = 3  # offending files named in an error besides the first


def _problem(items: Sequence[tuple[Path | str, str]]) -> DatasetFileError:
    """One line: the first ``(path, what)`` in full, then how many more and a few names."""
    path, what = items[0]
    text = f"{path}: {what}"
    if len(items) > 1:
        more = ", ".join(Path(p).name for p, _ in items[1 : 1 + _SHOWN])
        text += f" (and {len(items) - 1} more: {more}{', ...' if len(items) > 1 + _SHOWN else ''})"
    return DatasetFileError(text)


# ------------------------------------------------------------------------------ layout


def _list_files(folder: Path, suffixes: Sequence[str], role: str) -> dict[str, Path]:
    """``{stem: path}`` of the files of ``folder`` with these suffixes (hidden files and other
    suffixes ignored); two files with one stem, or a JPEG mask, are refused."""
    out: dict[str, Path] = {}
    twins: list[tuple[Path, str]] = []
    jpeg: list[tuple[Path, str]] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        suffix = p.suffix.lower()
        if role == "mask" and suffix in (".jpg", ".jpeg"):
            jpeg.append((p, "JPEG masks are lossy; save masks as PNG, TIFF or BMP"))
            continue
        if suffix not in suffixes:
            continue
        if p.stem in out:
            twins.append((p, f"two {role} files with stem {p.stem!r} (also {out[p.stem].name})"))
            continue
        out[p.stem] = p
    if jpeg:
        raise _problem(jpeg)
    if twins:
        raise _problem(twins)
    return out


def _layout(root: Path) -> dict[str, Path]:
    """``{split: folder holding images/ and masks/}``; DatasetFileError naming the layout."""
    if not root.is_dir():
        raise DatasetFileError(
            f"{root}: no such folder (--manual-dir of dataset folder); expected {LAYOUT}"
        )
    found: dict[str, Path] = {}
    for split, names in _SPLIT_DIRS:
        dirs = [root / n for n in names if (root / n).is_dir()]
        if len(dirs) > 1:
            raise DatasetFileError(f"{dirs[1]}: both {dirs[0].name}/ and {dirs[1].name}/ exist")
        if dirs:
            found[split] = dirs[0]
    if not found:
        if (root / "images").is_dir() or (root / "masks").is_dir():
            found["all"] = root
        else:
            entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
            seen = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "") or "nothing"
            raise DatasetFileError(
                f"{root}: not a dataset folder; expected {LAYOUT}\nhint: it holds {seen}"
            )
    elif "train" not in found or "validation" not in found:
        missing = root / ("train" if "train" not in found else "val")
        raise DatasetFileError(f"{missing}: folder is missing; expected {LAYOUT}")
    for folder in found.values():
        for sub in ("images", "masks"):
            if not (folder / sub).is_dir():
                raise DatasetFileError(f"{folder / sub}: folder is missing; expected {LAYOUT}")
    return found


@dataclasses.dataclass(frozen=True)
class _Pair:
    stem: str
    image: Path
    mask: Path


def _pairs(folder: Path) -> list[_Pair]:
    images = _list_files(folder / "images", IMAGE_SUFFIXES, "image")
    masks = _list_files(folder / "masks", MASK_SUFFIXES, "mask")
    lonely = [
        (images[s], f"no mask {s}.* in {folder / 'masks'}")
        for s in sorted(images.keys() - masks.keys())
    ]
    lonely += [
        (masks[s], f"no image {s}.* in {folder / 'images'}")
        for s in sorted(masks.keys() - images.keys())
    ]
    if lonely:
        raise _problem(lonely)
    return [_Pair(s, images[s], masks[s]) for s in sorted(images)]


def fingerprint(root: os.PathLike | str) -> str:
    """A hash of the name, size and modification time of every file a folder dataset reads
    (its ``images/`` and ``masks/`` folders and ``classes.json``): it changes when a file is
    edited, added or removed.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); (d / "images").mkdir()
    >>> a = fingerprint(d); _ = (d / "images" / "x.png").write_bytes(b"1"); a != fingerprint(d)
    True
    """
    root = Path(root)
    h = hashlib.sha1()
    names = ["."] + [n for _, split_names in _SPLIT_DIRS for n in split_names]
    for folder in (root / n / sub for n in names for sub in ("images", "masks")):
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # no such folder
            continue
        for e in entries:
            try:
                st = e.stat()
            except OSError:
                continue
            rel = folder.relative_to(root) / e.name
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    classes = root / "classes.json"
    if classes.is_file():
        st = classes.stat()
        h.update(f"classes.json\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------ the check


@dataclasses.dataclass(frozen=True)
class _Checked:
    """What the up-front check learnt of one pair."""

    pair: _Pair
    size: tuple[int, int]  # (rows, cols)
    gray: bool
    counts: tuple[int, ...]  # pixels per class id


def _check_pair(pair: _Pair, classes: ClassSpec) -> _Checked | tuple[int, Path, str]:
    """The pair's facts, or ``(order, path, problem)``: 0 unreadable, 1 size, 2 mask values."""
    try:
        with Image.open(pair.image) as im:
            gray = im.mode in GRAY_MODES
        image = read_image(pair.image, mode="L")
    except (DatasetFileError, OSError) as e:
        return (0, pair.image, str(e).removeprefix(f"{pair.image}: "))
    try:
        ids = read_class_ids(pair.mask, classes)
    except DatasetFileError as e:
        text = str(e).removeprefix(f"{pair.mask}: ")
        return (0 if text.startswith("unreadable") else 2, pair.mask, text)
    if image.shape[:2] != ids.shape:
        return (
            1,
            pair.mask,
            f"mask is {ids.shape[0]}x{ids.shape[1]} (rows x cols) but image {pair.image.name} "
            f"is {image.shape[0]}x{image.shape[1]}",
        )
    counts = np.bincount(ids.ravel(), minlength=len(classes.names))
    return _Checked(pair, (int(ids.shape[0]), int(ids.shape[1])), gray, tuple(counts.tolist()))


@dataclasses.dataclass(frozen=True)
class _Scan:
    root: Path
    classes: ClassSpec
    groups: dict[str, list[_Checked]]  # "train"/"validation"/"test", or "all" (flat layout)
    fingerprint: str


_SCANS: collections.OrderedDict[tuple[str, str], _Scan] = collections.OrderedDict()
_KEEP = 4


def _scan(root: Path) -> _Scan:
    found = _layout(root)
    key = (str(root), fingerprint(root))
    if key in _SCANS:
        _SCANS.move_to_end(key)
        return _SCANS[key]
    classes = read_classes(root)
    pairs = {split: _pairs(folder) for split, folder in found.items()}
    empty = [(found[s] / "images", "no image files") for s, p in pairs.items() if not p]
    if empty:
        raise _problem(empty)
    flat = [p for ps in pairs.values() for p in ps]
    threads = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda p: _check_pair(p, classes), flat))
    bad = sorted((r for r in results if isinstance(r, tuple)), key=lambda r: r[0])
    if bad:
        raise _problem([(path, text) for order, path, text in bad if order == bad[0][0]])
    checked = iter(results)
    groups = {split: [next(checked) for _ in ps] for split, ps in pairs.items()}
    scan = _Scan(root, classes, groups, key[1])
    _SCANS[key] = scan
    while len(_SCANS) > _KEEP:
        _SCANS.popitem(last=False)
    return scan


def _check_fraction(val_fraction: Any) -> float:
    ok = isinstance(val_fraction, int | float) and not isinstance(val_fraction, bool)
    if not ok or not 0 < float(val_fraction) < 1:
        raise UserError(f"data.val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    return float(val_fraction)


def _split_flat(items: list[_Checked], val_fraction: float, root: Path) -> dict[str, list]:
    n = len(items)
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DatasetFileError(
            f"{root / 'images'}: {n} image(s) cannot be split into a non-empty training and "
            f"validation split with data.val_fraction={val_fraction:g}"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    val = set(order[:n_val].tolist())
    return {
        "train": [x for i, x in enumerate(items) if i not in val],
        "validation": [x for i, x in enumerate(items) if i in val],
    }


# ---------------------------------------------------------------------------- the dataset


class FolderSource(Sequence):
    """One split as a random-access sequence of example dicts, decoded when read:
    ``{"image": uint8 [H, W, C], "mask": uint8 [H, W, 1], "file_name": str}`` (``C`` the
    dataset's channels, the mask the class ids)."""

    def __init__(self, items: Sequence[_Checked], classes: ClassSpec, channels: int, name: str):
        self._items = tuple(items)
        self._classes = classes
        self._mode = "L" if channels == 1 else "RGB"
        self._name = name

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self._items[i]
        image = read_image(item.pair.image, mode=self._mode)
        mask = read_class_ids(item.pair.mask, self._classes)
        return {"image": image, "mask": mask[..., None], "file_name": item.pair.image.name}

    def __repr__(self) -> str:  # short and stable: grain compares it when restoring a state
        return f"FolderSource({self._name}, {len(self)})"


class FolderDataset:
    """A checked folder of images and masks (see the module docstring); build it with
    :func:`open_folder`.

    Attributes:
      root: the folder (absolute).
      layout: ``"splits"`` (train/val[/test] folders) or ``"flat"`` (images/ + masks/).
      val_fraction: the validation fraction of a flat folder (None for ``"splits"``).
      fingerprint: :func:`fingerprint` of the files read.
    """

    name = NAME

    def __init__(self, scan: _Scan, val_fraction: float):
        self.root = scan.root
        self._classes = scan.classes
        if "all" in scan.groups:
            self.layout = "flat"
            self.val_fraction: float | None = val_fraction
            self._splits = _split_flat(scan.groups["all"], val_fraction, scan.root)
        else:
            self.layout = "splits"
            self.val_fraction = None
            self._splits = dict(scan.groups)
        self.fingerprint = scan.fingerprint
        everything = [x for items in self._splits.values() for x in items]
        self.channels = 1 if all(x.gray for x in everything) else 3
        sizes = {x.size for x in everything}
        self._native = next(iter(sizes)) if len(sizes) == 1 else None

    @property
    def spec(self) -> str:
        return NAME

    def class_names(self) -> tuple[str, ...]:
        """The classes, background first (``classes.json``, or ``("background", "defect")``)."""
        return self._classes.names

    def split_names(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def native_size(self) -> tuple[int, int] | None:
        """``(rows, cols)`` shared by every image, or None when sizes differ."""
        return self._native

    def default_image_size(self) -> int | None:
        """None when every image has one size, else :data:`DEFAULT_IMAGE_SIZE`."""
        return None if self._native is not None else DEFAULT_IMAGE_SIZE

    def sizes(self, split: str) -> list[tuple[int, int]]:
        return [x.size for x in self._splits[split]]

    def class_pixels(self, split: str) -> np.ndarray:
        """``int64 [N, classes]``: pixels of each class id in each mask of ``split``."""
        return np.array([x.counts for x in self._splits[split]], np.int64).reshape(
            -1, len(self._classes.names)
        )

    def files(self, split: str) -> list[tuple[Path, Path]]:
        return [(x.pair.image, x.pair.mask) for x in self._splits[split]]

    def source(self, split: str) -> FolderSource:
        if split not in self._splits:
            raise UserError(
                f"split {split!r} not in dataset folder {self.root}; it has: "
                f"{', '.join(self._splits)}"
            )
        return FolderSource(self._splits[split], self._classes, self.channels, split)

    def as_data_source(self) -> dict[str, FolderSource]:
        """``{split: FolderSource}``, as a prepared TFDS builder's ``as_data_source()``."""
        return {s: self.source(s) for s in self._splits}

    def __repr__(self) -> str:
        return f"FolderDataset({self.root}, {self.layout}, {len(self._classes.names)} classes)"


def open_folder(
    manual_dir: os.PathLike | str | None, *, val_fraction: float = DEFAULT_VAL_FRACTION
) -> FolderDataset:
    """Check the folder ``manual_dir`` (every file decoded once; see the module docstring)
    and return it as a :class:`FolderDataset`. Writes nothing.

    Raises:
      UserError: no ``manual_dir``, or ``val_fraction`` outside (0, 1).
      DatasetFileError: one line naming the first offending files and how many more.
    """
    if manual_dir is None or not str(manual_dir).strip():
        raise UserError(
            "data.manual_dir: dataset 'folder' reads your own images; give their folder as "
            f"--manual-dir PATH, holding {LAYOUT}"
        )
    fraction = _check_fraction(val_fraction)
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(manual_dir))))
    scan = _scan(root)
    return FolderDataset(scan, fraction)
