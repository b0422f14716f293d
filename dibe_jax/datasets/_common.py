"""Shared pieces of the defect-segmentation TFDS builders.

Every builder in :mod:`dibe_jax.datasets` writes the same three features:

* ``image``: ``uint8 [H, W, C]`` (``C = 3`` for RGB sources, ``1`` for grayscale),
* ``mask``: ``uint8 [H, W, 1]``, ``{0, 1}`` for binary configs, class ids for
  multi-class ones (``0`` is background); a ``tfds.features.LabeledImage`` whose names
  say how many classes there are (:meth:`DefectBuilder.class_names`, read without building
  by :func:`dibe_jax.datasets.class_names`),
* ``file_name``: the source file (and tile) the example comes from.

Images are stored losslessly as PNG, and the files are written as ``array_record``
by default so that :meth:`builder.as_data_source` gives random access without
TensorFlow. Input files are decoded and checked here, at build time: unreadable or
truncated images, image/mask size mismatches, unexpected mask values and unpaired
files raise :class:`DatasetFileError` naming the file, and TFDS removes its
temporary directory, so nothing half-written is left in ``data_dir``.

Downloads (no ``manual_dir``): :meth:`DefectBuilder._source_root` first checks in a
few seconds that the server can be reached (:func:`check_reachable`; TFDS itself
retries a dead connection 10 times with exponential back-off, about 3.5 minutes),
and turns any failure into a one-line :class:`DatasetFileError` that says to pass
``manual_dir``, chained from the original exception. TFDS's "Downloading and
preparing ..." and "... downloaded and prepared to ..." lines (printed to stdout)
become log records of the ``dibe_jax.datasets`` logger, and
:func:`dibe_jax.datasets.prepare` hides the progress bars of a local build with
:func:`quiet_progress`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dibe_jax.data.images import read_image
from dibe_jax.errors import DatasetFileError

__all__ = [
    "DatasetFileError",
    "DefectBuilder",
    "binarize",
    "check_reachable",
    "drop_opencv_notice",
    "encode_png",
    "features",
    "find_root",
    "pair_files",
    "quiet_progress",
    "read_image",
    "read_mask",
    "tile_image",
]

log = logging.getLogger("dibe_jax.datasets")


def features(
    *, channels: int, classes: Sequence[str], size: int | None = None
) -> tfds.features.FeaturesDict:
    """The common feature dict: ``image [H, W, channels]``, ``mask [H, W, 1]``, ``file_name``.

    Args:
      channels: image channels (1 or 3).
      classes: the name of every class id of the mask, background (id 0) first; two names
        for a binary mask. The mask is a ``tfds.features.LabeledImage`` carrying them.
      size: fixed square size of every example, or ``None`` for variable sizes.
    """
    if len(classes) < 2:
        raise ValueError(f"classes: a mask needs at least 2 class names, got {list(classes)}")
    hw = (size, size)
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(*hw, channels), encoding_format="png"),
            "mask": tfds.features.LabeledImage(
                labels=list(classes), shape=(*hw, 1), encoding_format="png"
            ),
            "file_name": tfds.features.Text(),
        }
    )


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8 [H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` array (PIL, no TF)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def read_mask(path: os.PathLike | str) -> np.ndarray:
    """Decode a label image to ``uint8 [H, W]`` (grayscale; RGB labels are converted to L)."""
    return read_image(path, mode="L")[..., 0]


def binarize(
    mask: np.ndarray,
    *,
    path: os.PathLike | str,
    threshold: int | None,
) -> np.ndarray:
    """Return a ``{0, 1}`` ``uint8`` mask.

    Args:
      mask: ``uint8 [H, W]`` label image.
      path: the label file, for error messages.
      threshold: ``mask > threshold`` is foreground (anti-aliased masks, e.g. MTSDD
        with 127). ``None`` means the labels must already be binary: values in
        ``{0, 1}`` or in ``{0, 255}``.

    Raises:
      DatasetFileError: ``threshold`` is None and the values are not binary.
    """
    if threshold is not None:
        return (mask > threshold).astype(np.uint8)
    values = np.unique(mask)
    if np.all(np.isin(values, (0, 1))):
        return mask.astype(np.uint8)
    if np.all(np.isin(values, (0, 255))):
        return (mask == 255).astype(np.uint8)
    shown = ", ".join(str(int(v)) for v in values[:10]) + (" ..." if len(values) > 10 else "")
    raise DatasetFileError(
        f"{path}: mask has non-binary values [{shown}]; expected {{0, 1}} or {{0, 255}}"
    )


def check_same_size(image: np.ndarray, mask: np.ndarray, *, image_path: Any, mask_path: Any):
    """Raise :class:`DatasetFileError` unless ``image [H, W, C]`` and ``mask [H, W]`` agree."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetFileError(
            f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} (rows x cols) but image "
            f"{image_path} is {image.shape[0]}x{image.shape[1]}"
        )


def tile_image(array: np.ndarray, tile: int = 448) -> list[np.ndarray]:
    """Cut an image into non-overlapping ``tile x tile`` pieces, row by row.

    This is the preprocessing of the DIBE paper (Sec. 4.1, Fig. 7): a raw
    ``1344 x 1344`` EL image becomes 9 tiles of ``448 x 448``. CrackForest uses
    the same function with ``tile=160`` (``320 x 480`` -> 6 tiles).

    Args:
      array: ``[H, W]`` or ``[H, W, C]`` with ``H`` and ``W`` multiples of ``tile``.
      tile: tile side in pixels.

    Returns:
      ``(H // tile) * (W // tile)`` arrays of shape ``[tile, tile(, C)]``, row-major
      (left to right, then top to bottom).

    >>> tiles = tile_image(np.zeros((1344, 1344, 3), np.uint8))
    >>> len(tiles), tiles[0].shape
    (9, (448, 448, 3))
    """
    array = np.asarray(array)
    h, w = array.shape[:2]
    if tile <= 0 or h % tile or w % tile:
        raise ValueError(f"image of {h}x{w} pixels cannot be cut into {tile}x{tile} tiles")
    return [array[r : r + tile, c : c + tile] for r in range(0, h, tile) for c in range(0, w, tile)]


def pair_files(
    image_dir: Path, label_dir: Path, *, image_ext: str, label_ext: str
) -> list[tuple[str, Path, Path]]:
    """Pair ``image_dir/<stem><image_ext>`` with ``label_dir/<stem><label_ext>``.

    Returns ``(stem, image_path, label_path)`` sorted by stem.

    Raises:
      DatasetFileError: a folder is missing, or some files have no partner (all of
        them are named).
    """
    for d in (image_dir, label_dir):
        if not d.is_dir():
            raise DatasetFileError(f"{d}: folder is missing")
    images = {p.name[: -len(image_ext)]: p for p in image_dir.glob(f"*{image_ext}")}
    labels = {p.name[: -len(label_ext)]: p for p in label_dir.glob(f"*{label_ext}")}
    lonely = [str(images[s]) + " (no label)" for s in sorted(images.keys() - labels.keys())]
    lonely += [str(labels[s]) + " (no image)" for s in sorted(labels.keys() - images.keys())]
    if lonely:
        raise DatasetFileError(
            f"{lonely[0].split(' (')[0]}: unpaired files ({len(lonely)}): " + "; ".join(lonely)
        )
    if not images:
        raise DatasetFileError(f"{image_dir}: no *{image_ext} files")
    return [(s, images[s], labels[s]) for s in sorted(images)]


def find_root(base: Path, is_root: Callable[[Path], bool], *, depth: int = 3) -> Path | None:
    """Breadth-first search for the first folder under ``base`` (itself included) that
    ``is_root`` accepts, at most ``depth`` levels down; ``None`` if there is none."""
    level: list[Path] = [Path(base)]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for d in level:
            if not d.is_dir():
                continue
            if is_root(d):
                return d
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir()))
            except OSError:
                continue
        level = nxt
    return None


def split_by_rule(stems: Iterable[str], *, period: int = 5, train: int = 3) -> dict[str, list]:
    """Deterministic interleaved split of sorted stems: the ``i``-th goes to train iff
    ``i % period < train`` (60/40 with the defaults)."""
    out: dict[str, list] = {"train": [], "validation": []}
    for i, s in enumerate(sorted(stems)):
        out["train" if i % period < train else "validation"].append(s)
    return out


def check_reachable(url: str, *, timeout: float = 5.0) -> None:
    """Raise :class:`OSError` quickly when the server of ``url`` cannot be reached.

    Opens (and closes) a TCP connection to the host of ``url``, or to the proxy that
    ``requests`` would use for it (``HTTPS_PROXY`` etc.), with a ``timeout`` in
    seconds. Offline, this fails at once (name resolution) or after ``timeout``,
    where TFDS's own downloader would retry for minutes.
    """
    target = url
    try:
        import requests.utils

        proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    except Exception:  # requests missing or odd settings: probe the host
        proxy = None
    if proxy:
        target = proxy if "://" in proxy else f"http://{proxy}"
    parts = urllib.parse.urlsplit(target)
    host = parts.hostname
    if not host:
        raise OSError(f"no host in {target!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise OSError(f"cannot reach {host}:{port}{' (proxy)' if proxy else ''}: {e}") from e


#: Start of the warning that TFDS logs (absl logger, once per process) when it decodes
#: the first image without OpenCV: ``tensorflow_datasets/core/features/image_feature.py``,
#: ``Image.decode_example_np``. PIL decodes our PNGs correctly, so it says nothing useful.
OPENCV_NOTICE = "OpenCV is not installed. We recommend using OpenCV"


class _DropOpenCVNotice(logging.Filter):
    """Drops exactly TFDS's "OpenCV is not installed ..." record; passes all others."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(OPENCV_NOTICE))


def drop_opencv_notice() -> None:
    """Install (once) a filter on the ``absl`` logger that drops TFDS's OpenCV notice.

    >>> from absl import logging as absl_logging
    >>> drop_opencv_notice(); drop_opencv_notice()
    >>> sum(type(f).__name__ == "_DropOpenCVNotice" for f in absl_logging.get_absl_logger().filters)
    1
    """
    from absl import logging as absl_logging  # a TFDS dependency; sets up the "absl" logger

    logger = absl_logging.get_absl_logger()
    if not any(type(f).__name__ == _DropOpenCVNotice.__name__ for f in logger.filters):
        logger.addFilter(_DropOpenCVNotice())


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide TFDS's progress bars ("Generating splits...", "Shuffling ...") inside the
    ``with`` block and restore the previous setting afterwards, whatever happens.

    >>> from tensorflow_datasets.core.utils import tqdm_utils
    >>> before = tqdm_utils._active
    >>> with quiet_progress():
    ...     tqdm_utils._active
    False
    >>> tqdm_utils._active == before
    True
    """
    from tensorflow_datasets.core.utils import tqdm_utils

    before = bool(getattr(tqdm_utils, "_active", True))  # TFDS has no public getter
    tfds.disable_progress_bar()
    try:
        yield
    finally:
        tfds.display_progress_bar(before)


class DefectBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the file-backed builders: ``array_record`` by default, and a source
    folder taken from ``manual_dir`` or downloaded from :attr:`URL`.

    Subclasses set :attr:`URL`, :attr:`MANUAL_DOWNLOAD_INSTRUCTIONS`, :attr:`LAYOUT`,
    implement :meth:`_is_root` (does this folder hold the dataset?) and, when their
    examples have one size, :meth:`native_size`. The class attributes describe the
    dataset without building (or instantiating) anything; :mod:`dibe_jax.datasets.catalog`
    reads them to check a request before anything runs.
    """

    URL: str = ""
    #: Split names of every config (known before building).
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "validation")
    #: Square side that training resizes to when the examples have no fixed size.
    DEFAULT_IMAGE_SIZE: ClassVar[int | None] = None
    #: One line naming the raw-file layout that ``manual_dir`` must hold.
    LAYOUT: ClassVar[str] = ""

    def __init__(self, *, file_format: str | None = None, **kwargs: Any):
        super().__init__(file_format=file_format or "array_record", **kwargs)
        self._user_manual_dir: str | None = None

    @classmethod
    def native_size(cls, config: tfds.core.BuilderConfig) -> tuple[int, int] | None:
        """``(rows, cols)`` of every example of ``config``, or ``None`` if sizes vary."""
        del config
        return None

    @classmethod
    def class_names(cls, config: tfds.core.BuilderConfig) -> tuple[str, ...] | None:
        """The name of every mask value of ``config``, background (0) first: two names for
        a binary config. The mask feature carries them (:func:`features`); ``None`` (this
        default) means the builder does not say, and training refuses it."""
        del config
        return None

    @property
    def spec(self) -> str:
        """``"name/config"`` of this builder."""
        return f"{self.name}/{self.builder_config.name}"

    # TFDS prints these two with `termcolor` to stdout ("Downloading and preparing
    # dataset Unknown size ..."): they become log records instead.
    def _log_download_bytes(self) -> None:
        log.debug("building %s in %s", self.spec, self.data_dir)

    def _log_download_done(self) -> None:
        log.info("built dataset %s in %s", self.spec, self.data_dir)

    def _download_and_prepare(self, dl_manager, download_config=None):
        # Remember whether the user named a manual_dir: if so, never download.
        self._user_manual_dir = download_config.manual_dir if download_config else None
        return super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)

    def _is_root(self, path: Path) -> bool:
        raise NotImplementedError

    def local_root(
        self, manual_dir: os.PathLike | str | None, download_dir: os.PathLike | str | None = None
    ) -> Path | None:
        """The folder of raw files that a build would read without downloading: under
        ``manual_dir`` if given (``None`` if it has none), else under the default
        manual folder ``<download_dir>/manual`` (``download_dir`` defaults to
        ``<data_dir>/downloads``), else ``None``: the build would download."""
        if not self.URL:
            return None
        if manual_dir is not None:
            return find_root(Path(os.fspath(manual_dir)), self._is_root)
        download_dir = Path(os.fspath(download_dir or self.data_dir_root / "downloads"))
        return find_root(download_dir / "manual", self._is_root)

    def needs_download(
        self, manual_dir: os.PathLike | str | None, download_dir: os.PathLike | str | None = None
    ) -> bool:
        """Would :meth:`download_and_prepare` fetch :attr:`URL` (nothing prepared yet,
        no ``manual_dir``, no filled default manual folder, nothing cached)?"""
        # Like download_and_prepare: an existing variant folder is reused as it is.
        # (Not `is_prepared()`: it logs a warning for every missing folder.)
        if not self.URL or manual_dir is not None or self.data_path.exists():
            return False
        download_dir = Path(os.fspath(download_dir or self.data_dir_root / "downloads"))
        if self.local_root(None, download_dir) is not None:
            return False
        return not self._download_cached(download_dir)

    def _download_cached(self, download_dir: Path) -> bool:
        """Has TFDS already downloaded :attr:`URL` into ``download_dir``? (Its
        ``<file>.INFO`` lists the URL; then no network is needed.)"""
        try:
            infos = list(Path(download_dir).glob("*.INFO"))
        except OSError:
            return False
        for info in infos:
            try:
                urls = json.loads(info.read_text()).get("urls", [])
            except (OSError, ValueError, AttributeError):
                continue
            if self.URL in urls and info.with_suffix("").exists():
                return True
        return False

    def download_error(self, error: BaseException) -> DatasetFileError:
        """The one-line error for a failed download of :attr:`URL` (chain it with
        ``raise ... from error``)."""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if len(reason) > 160:
            reason = reason[:157] + "..."
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        return DatasetFileError(
            f"dataset {self.spec} could not be downloaded from {self.URL} ({reason}); "
            f"pass manual_dir (--manual-dir) with the raw files: {self.LAYOUT}"
        )

    def _source_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        """The folder holding the raw files: ``manual_dir`` (or a folder below it) if
        given, else the default manual folder if filled, else a download of :attr:`URL`."""
        if self._user_manual_dir is not None:
            base = Path(os.fspath(self._user_manual_dir))
            root = find_root(base, self._is_root)
            if root is None:
                raise DatasetFileError(
                    f"{base}: no {self.name} files found in this folder (or up to 3 levels "
                    f"below it).\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
                )
            return root
        download_dir = Path(os.fspath(dl_manager.download_dir))
        root = find_root(download_dir / "manual", self._is_root)
        if root is not None:
            return root
        try:
            if not self._download_cached(download_dir):
                check_reachable(self.URL)  # seconds, not TFDS's minutes of retries
            log.info("downloading %s for dataset %s", self.URL, self.spec)
            extracted = Path(os.fspath(dl_manager.download_and_extract(self.URL)))
        except Exception as e:  # requests, OSError, tfds DownloadError, ...
            raise self.download_error(e) from e
        root = find_root(extracted, self._is_root)
        if root is None:
            raise DatasetFileError(
                f"{extracted}: the download of {self.URL} does not have the expected layout.\n"
                f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        return root
