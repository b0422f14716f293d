"""Predict defect masks for image files with a trained run, at the scale it was trained at.

**Scale** (``scale="train"``, the default): a model sees objects at the scale training
showed them, so each image is first resized as training resized its images, predicted, and
its logits resized back (bilinear) to the image's own size. What training did is recorded in
``workdir/model.json`` (``native_size``, the size all training images had, ``null`` when they
differed, and ``image_size``, the size training used; :func:`training_resize`):

* images of varying size resized to ``image_size`` (magnetic_tile at 224, a folder of
  mixed sizes): every image is resized to ``image_size`` (the aspect ratio changes as it did in
  training);
* images of one size ``native_size`` trained at another ``image_size``: every image is scaled
  by ``image_size / native_size`` per axis (a 480 x 320 image of a run that trained 160 x 160
  tiles at 96 x 96 is predicted at 288 x 192);
* trained at the native size: nothing is resized.

On magnetic-tile Crack (U-Net width 8 trained at 96 px, 50 epochs) this takes ``predict``'s
pooled IoU on the 22 validation images from 0.145 at native resolution to 0.407, within 0.03
of ``eval``'s 0.428 (``experiments/predict_scale.py``). ``scale="native"`` runs every image
at its own size (the behaviour of older versions), which is right only when training did not
resize.

At the chosen scale the models are fully convolutional, so each image is processed by
:func:`~dibe_jax.train.sliding_window.predict_logits`: run whole when it is no larger than
the window (by default the run's training size, ``workdir/model.json`` ``image_size``), else
cut into overlapping windows whose logits are blended with a Gaussian importance map
(:mod:`dibe_jax.train.sliding_window`).

Preprocessing is the training pipeline's: :func:`~dibe_jax.datasets._common.read_image`
decodes, :func:`~dibe_jax.data.augment.to_float` maps ``uint8`` to ``[0, 1]``.

:func:`predict` writes ``<stem>_mask.png`` (0 / 255, the input's ``H x W``) and
``<stem>_overlay.png`` (defects in red over the image) for each readable input, each PNG
written atomically (a temporary file in ``out`` then ``os.replace``;
:mod:`dibe_jax.train.overlays`), and returns a :class:`PredictReport` of what was written
and what was skipped (unreadable files).

A multi-class run (``model.json`` names its classes) predicts ``argmax_c`` of the blended
softmax logits: ``<stem>_mask.png`` holds the class ids (``uint8``, 0 = background, as the
dataset's masks), and ``<stem>_overlay.png`` colours each defect class over the image, with a
legend naming the classes in a band below it
(:func:`~dibe_jax.train.overlays.class_overlay`).

This module also exports ``predict_logits``, ``blend_weights`` and ``window_starts`` of
:mod:`~dibe_jax.train.sliding_window` and ``class_overlay`` and ``PALETTE`` of
:mod:`~dibe_jax.train.overlays`, so one import serves a script that predicts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from PIL import Image

from dibe_jax import models
from dibe_jax.data import augment
from dibe_jax.data.images import read_image
from dibe_jax.errors import DatasetFileError, RunNotFoundError, UserError
from dibe_jax.train import checks
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.overlays import PALETTE, _overlay, _save_png_atomic, class_overlay
from dibe_jax.train.sliding_window import (
    Window,
    _as_pair,
    _check_batch_size,
    _check_overlap,
    blend_weights,
    predict_logits,
    window_starts,
)
from dibe_jax.train.state import make_state
from dibe_jax.train.workdir import load_config

__all__ = [
    "PALETTE",
    "SCALES",
    "LoadedRun",
    "PredictReport",
    "Written",
    "blend_weights",
    "class_overlay",
    "load_forward",
    "predict",
    "predict_logits",
    "resize_logits",
    "training_resize",
    "window_starts",
]

#: ``predict(scale=...)``: ``"train"`` resizes as training did, ``"native"`` never resizes.
SCALES = ("train", "native")

log = logging.getLogger(__name__)

_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff")


# --------------------------------------------------------------------------------------------
# Files: a run's checkpoint over a file or a folder of images


@dataclasses.dataclass(frozen=True)
class Written:
    """One input and what :func:`predict` wrote for it.

    Attributes:
      input: the image file.
      mask: ``<stem>_mask.png``, ``uint8 [H, W]`` in ``{0, 255}``.
      overlay: ``<stem>_overlay.png``, ``uint8 [H, W, 3]``: defects in red over the image.
      defect_fraction: fraction of pixels predicted defect (any class but the background).
      class_fractions: a multi-class run's fraction of pixels of each class (``None`` for
        a binary run).
    """

    input: Path
    mask: Path
    overlay: Path
    defect_fraction: float
    class_fractions: tuple[float, ...] | None = None


@dataclasses.dataclass
class PredictReport:
    """What :func:`predict` wrote to ``out`` and which inputs it skipped, with the reason."""

    out: Path
    written: list[Written] = dataclasses.field(default_factory=list)
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    class_names: tuple[str, ...] | None = None  # a multi-class run's classes
    threshold: str | None = None  # a binary run's logit threshold, and where it comes from

    def summary(self) -> str:
        """One paragraph for people: ``wrote N masks to OUT; skipped K files: a.png (...)``.

        >>> r = PredictReport(Path("out"), skipped=[(Path("in/a.png"), "truncated")])
        >>> r.summary()
        'wrote 0 masks to out; skipped 1 file: a.png (truncated).'
        """
        n, k = len(self.written), len(self.skipped)
        text = f"wrote {n} mask{'' if n == 1 else 's'} to {self.out}"
        if not k:
            return text + "; skipped no file."
        items = ", ".join(f"{p.name} ({reason})" for p, reason in self.skipped)
        return text + f"; skipped {k} file{'' if k == 1 else 's'}: {items}."


def _list_inputs(inputs: Path) -> list[Path]:
    if inputs.is_dir():
        files = sorted(
            p
            for p in inputs.iterdir()
            if p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise UserError(
                f"inputs: folder {inputs} holds no image files ({', '.join(_SUFFIXES)})"
            )
        return files
    return [inputs]


def _check_arguments(inputs: Path, out: Path, window, overlap, batch_size) -> list[Path]:
    """Refuse bad arguments before anything is loaded; return the input files."""
    if not inputs.exists():
        raise UserError(f"inputs: {inputs} does not exist")
    folder = inputs if inputs.is_dir() else inputs.parent
    if out.resolve() == folder.resolve():
        raise UserError(
            f"out: {out} is the folder of the inputs; choose another folder so masks and "
            "overlays are not mixed with (and read back as) inputs"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"out: {out} exists and is not a folder")
    if window is not None:
        _as_pair(window)
    _check_overlap(overlap)
    _check_batch_size(batch_size)
    return _list_inputs(inputs)


def _check_threshold(workdir: Path, threshold: float | None) -> None:
    """Refuse a threshold that is not a finite number, or one for a multi-class run."""
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise UserError(f"threshold: expected a number, got {threshold!r}")
    if not np.isfinite(threshold):
        raise UserError(f"threshold: expected a finite logit, got {threshold}")
    info = workdir / "model.json"
    if info.is_file() and int(json.loads(info.read_text()).get("num_classes", 1)) > 1:
        raise UserError(
            "threshold: a multi-class run predicts the argmax of its logits; a logit "
            "threshold applies to binary runs only"
        )


def _threshold_for(workdir: Path, step: int | None, threshold: float | None):
    """``(t, words)``: the given threshold, else the run's calibrated one, else 0."""
    from dibe_jax.train.calibrate import recorded_threshold

    if threshold is not None:
        return float(threshold), f"logit {float(threshold):g} (given)"
    recorded = recorded_threshold(workdir, step)
    return (recorded.value or 0.0), recorded.reason


class LoadedRun(NamedTuple):
    """A run's checkpoint ready for :func:`~dibe_jax.train.sliding_window.predict_logits`
    (see :func:`load_forward`).

    Attributes:
      forward: jitted ``x float32 [N, h, w, C] -> logits float32 [N, h, w, K]`` in eval
        mode (BatchNorm running statistics, no dropout); ``K = 1`` for a binary run.
      in_channels: ``C`` the run was trained on (1: grayscale, 3: RGB).
      image_size: ``(rows, cols)`` of the last training epoch (``model.json``).
      multiple, minimum: :func:`dibe_jax.models.input_size_rule` of the run's model.
      class_names: a multi-class run's classes (``K`` of them, background first); ``None``
        for a binary run.
      resize: how training resized its images (:func:`training_resize`).
      step: the restored checkpoint's step.
      model: the eval-mode model itself (for :mod:`dibe_jax.train.export`).
    """

    forward: Callable[[Any], jax.Array]
    in_channels: int
    image_size: tuple[int, int]
    multiple: int
    minimum: int
    class_names: tuple[str, ...] | None = None
    resize: tuple[str, Any] = ("none", None)
    step: int | None = None
    model: nnx.Module | None = None


def training_resize(config: Any, info: dict[str, Any]) -> tuple[str, Any]:
    """How a run's training resized its images, from its ``model.json`` (``info``) and config.

    Returns:
      ``("none", None)``: trained at the native size; ``("fixed", (rows, cols))``: images
      of varying size, each resized to ``(rows, cols)``; ``("factor", (fr, fc))``: images of
      one size scaled by ``fr`` x ``fc``. Runs whose ``model.json`` predates ``native_size``
      are read from their config: no ``data.image_size`` means native; otherwise the
      dataset's native size (:func:`dibe_jax.datasets.native_image_size`) decides, and a
      dataset that cannot say gives ``"none"``.

    >>> training_resize(None, {"image_size": [96, 96], "native_size": None})
    ('fixed', (96, 96))
    >>> training_resize(None, {"image_size": [96, 96], "native_size": [160, 160]})
    ('factor', (0.6, 0.6))
    >>> training_resize(None, {"image_size": [160, 160], "native_size": [160, 160]})
    ('none', None)
    """
    size = _as_pair(info["image_size"], "model.json image_size")
    if "native_size" in info:
        native = info["native_size"]
    elif config is None or config.data.image_size is None:
        return ("none", None)
    else:
        try:
            from dibe_jax import datasets

            native = datasets.native_image_size(
                config.data.dataset, manual_dir=config.data.manual_dir
            )
        except (ValueError, OSError):  # the dataset cannot be looked up here: keep native
            log.warning("predict: cannot tell how training resized its images; scale native")
            return ("none", None)
    if native is None:
        return ("fixed", size)
    native = _as_pair(native, "model.json native_size")
    if native == size:
        return ("none", None)
    return ("factor", (size[0] / native[0], size[1] / native[1]))


def resize_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``float32 [h, w, K]`` logits to ``size = (rows, cols)`` (PIL, per
    channel; the image's own resampling filter).

    >>> z = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    >>> resize_logits(z, (6, 8)).shape, resize_logits(z, (3, 4)) is z
    ((6, 8, 1), True)
    """
    rows, cols = size
    if logits.shape[:2] == (rows, cols):
        return logits
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(logits[..., k], np.float32)).resize(
                (cols, rows), Image.BILINEAR
            )
        )
        for k in range(logits.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def _scaled_size(resize: tuple[str, Any], h: int, w: int) -> tuple[int, int]:
    kind, value = resize
    if kind == "fixed":
        return value
    if kind == "factor":
        return max(1, round(h * value[0])), max(1, round(w * value[1]))
    return h, w


def load_forward(workdir: str | Path, *, best: bool = True) -> LoadedRun:
    """Load the best (``best=True``; the latest if there is none) or latest checkpoint.

    The model options come from the run's ``config.json`` (``model.options`` and ``dtype``,
    as :func:`~dibe_jax.train.loop.make_state` builds it).

    Raises:
      RunNotFoundError: ``workdir`` lacks ``config.json`` or ``model.json``.
      CheckpointError: no readable checkpoint.
    """
    workdir = Path(workdir)
    config = load_config(workdir)
    info_path = workdir / "model.json"
    if not info_path.exists():
        raise RunNotFoundError(f"{info_path} not found: was {workdir} written by dibe-jax train?")
    info = json.loads(info_path.read_text())
    channels = int(info["in_channels"])
    options = checks.model_options(config)  # as make_state builds the model
    multiple, minimum = models.input_size_rule(config.model.name, in_channels=channels, **options)
    num_classes = int(info.get("num_classes", 1))
    class_names = tuple(info["class_names"]) if num_classes > 1 else None
    _, eval_graphdef, state = make_state(config, channels, num_classes=num_classes)
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints, create=False)
    try:
        try:
            state, _, step = ckpt.restore(state, best=best)
        except CheckpointError as e:
            if not best or type(e) is not CheckpointError:  # a mismatch is not "no best"
                raise
            state, _, step = ckpt.restore(state, best=False)
    finally:
        ckpt.close()
    model, _ = nnx.merge(eval_graphdef, state)  # eval mode: BatchNorm statistics, no dropout
    graphdef, params = nnx.split(model)

    @jax.jit
    def apply(params, x):
        return nnx.merge(graphdef, params)(x)

    forward = functools.partial(apply, params)
    return LoadedRun(
        forward,
        channels,
        _as_pair(info["image_size"], "model.json image_size"),
        multiple,
        minimum,
        class_names,
        training_resize(config, info),
        int(step),
        model,
    )


def predict(
    workdir: str | Path,
    inputs: str | Path,
    out: str | Path,
    *,
    best: bool = True,
    window: Window | None = None,
    overlap: float = 0.25,
    batch_size: int = 8,
    progress: bool = True,
    scale: str = "train",
    threshold: float | None = None,
) -> PredictReport:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` under ``out`` for each input image.

    Each image is resized as training resized its images (``scale="train"``; see the module
    docstring), predicted (:func:`~dibe_jax.train.sliding_window.predict_logits`: whole when
    it fits the window, else blended overlapping windows), and its logits resized back to the
    image's size; for a multi-class run ``ŷ = argmax_c`` logits, written as class ids with a
    colour overlay and its legend (:func:`~dibe_jax.train.overlays.class_overlay`). Masks and
    overlays always have the input's size. A binary run's pixels are ``ŷ = 1 iff logit ≥ t``,
    with ``t`` the run's calibrated threshold (``threshold.json``, :mod:`dibe_jax.train.calibrate`)
    when it was calibrated for this checkpoint, else 0.

    Args:
      workdir: a training run (``config.json``, ``model.json``, ``checkpoints/``).
      inputs: an image file, or a folder whose image files (``.png``, ``.jpg``, ``.jpeg``,
        ``.bmp``, ``.tif``, ``.tiff``; not recursive) are all predicted.
      out: output folder (created); must not be the folder of the inputs.
      best: use the best checkpoint by validation IoU (the latest if there is none);
        ``False``: the latest.
      window: window ``S`` or ``(rows, cols)``; default the run's training size
        (``model.json`` ``image_size``). Rounded up to the network's size multiple.
      overlap: fraction shared by neighbouring windows, in ``[0, 1)``.
      batch_size: windows per forward call.
      progress: show a progress bar over the files.
      scale: ``"train"`` (default): the training scale; ``"native"``: every image at its own
        size, never resized.
      threshold: a binary run's logit threshold ``t``, instead of the calibrated one (or 0).

    Returns:
      A :class:`PredictReport`: the written masks (input, mask, overlay, defect fraction) and
      the skipped inputs with the reason (unreadable or truncated images, duplicate stems).

    Raises:
      ValueError: ``inputs`` does not exist or is a folder without images, ``out`` is the
        inputs' folder or a file, or ``window`` / ``overlap`` / ``batch_size`` is out of
        range; the message names the argument. Nothing is loaded or written before.
      FileNotFoundError: ``workdir`` is not a training run.
    """
    workdir, inputs, out = Path(workdir), Path(inputs), Path(out)
    if scale not in SCALES:
        raise UserError(f"scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    files = _check_arguments(inputs, out, window, overlap, batch_size)
    _check_threshold(workdir, threshold)
    run = load_forward(workdir, best=best)
    resize = run.resize if scale == "train" else ("none", None)
    if resize[0] != "none":
        how = "to" if resize[0] == "fixed" else "by"
        log.info(
            "predict: resizing each image %s %s as training did (--scale native: no resize)",
            how,
            "x".join(f"{v:g}" for v in resize[1]),
        )
    window = _as_pair(window) if window is not None else run.image_size
    out.mkdir(parents=True, exist_ok=True)
    report = PredictReport(out, class_names=run.class_names)
    cut = 0.0
    if run.class_names is None:
        cut, report.threshold = _threshold_for(workdir, run.step, threshold)
    stems: dict[str, Path] = {}

    from tqdm.auto import tqdm

    for path in tqdm(files, desc="predict", unit="image", disable=not progress, dynamic_ncols=True):
        if path.stem in stems:
            reason = f"same output name as {stems[path.stem].name}"
            log.warning("skipping %s: %s", path, reason)
            report.skipped.append((path, reason))
            continue
        try:
            image = read_image(path, mode="RGB" if run.in_channels == 3 else "L")
        except DatasetFileError as e:
            reason = str(e).removeprefix(f"{path}: ")
            log.warning("skipping %s: %s", path, reason)
            report.skipped.append((path, reason))
            continue
        stems[path.stem] = path
        seen = image
        scaled = _scaled_size(resize, *image.shape[:2])
        if scaled != image.shape[:2]:  # as the training pipeline resizes (bilinear, uint8)
            seen = augment.resize(image, np.zeros((*image.shape[:2], 1), np.uint8), scaled)[0]
        logits = predict_logits(
            run.forward,
            augment.to_float(seen),
            multiple=run.multiple,
            window=window,
            overlap=overlap,
            batch_size=batch_size,
            minimum=run.minimum,
        )
        logits = resize_logits(logits, image.shape[:2])
        mask_path = out / f"{path.stem}_mask.png"
        overlay_path = out / f"{path.stem}_overlay.png"
        if run.class_names is None:
            mask = (logits[..., 0] >= cut).astype(np.uint8)
            _save_png_atomic(mask * np.uint8(255), mask_path)
            _save_png_atomic(_overlay(image, mask), overlay_path)
            report.written.append(Written(path, mask_path, overlay_path, float(mask.mean())))
            continue
        ids = np.argmax(logits, axis=-1).astype(np.uint8)  # ties: the lowest class id
        _save_png_atomic(ids, mask_path)
        _save_png_atomic(class_overlay(image, ids, run.class_names), overlay_path)
        fractions = np.bincount(ids.ravel(), minlength=len(run.class_names)) / ids.size
        report.written.append(
            Written(
                path,
                mask_path,
                overlay_path,
                float(1.0 - fractions[0]),
                tuple(float(f) for f in fractions),
            )
        )
    return report
