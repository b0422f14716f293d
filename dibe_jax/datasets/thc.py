"""Tiny Hidden Cracks (THC) of the DIBE paper as a TFDS builder.

The DIBE paper (Sec. 4.1, Fig. 7, Table 2) tiles raw 1344x1344 electroluminescence
images of monocrystalline PV cells into 448x448 pieces (THC448: 981 train / 893
validation pairs, FG:BG 1:2228) and builds THC224 (1053/954, 1:584) and THC112
(1334/1177, 1:191) from them. The public (partial) copy is the KLIVIS/DIBE
repository (github.com/KLIVIS/DIBE, about 2 GB), laid out as::

    THC448/train_dataset_448/<name>.png   THC448/train_label_448/<name>.png
    THC448/val_dataset_448/<name>.png     THC448/val_label_448/<name>.png

(and ``THC224/..._224``, ``THC112/..._112``). Image and label share a file name;
training files are pre-augmented upstream (``N_filp.png``, ``N_Contrast.png``,
``N_Brightness.png``, ``N_Saturation.png``), validation files are ``img_N.png``.

Configs ``thc448`` (default), ``thc224``, ``thc112``. Images are stored as RGB
(``[H, W, 3]``) and every example of ``thcR`` is ``R x R`` (an image of another size
is reported with its file name, so the native size is guaranteed); labels must be
binary (values ``{0, 1}`` or ``{0, 255}``), anything else is reported with the file
name. For raw 1344x1344 images use
:func:`tile_image` (9 tiles of 448x448).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from dibe_jax.datasets._common import (
    DatasetFileError,
    DefectBuilder,
    binarize,
    check_same_size,
    encode_png,
    features,
    pair_files,
    read_image,
    read_mask,
    tile_image,
)

__all__ = ["Thc", "ThcConfig", "tile_image"]


@dataclasses.dataclass(eq=False)
class ThcConfig(tfds.core.BuilderConfig):
    """``resolution``: 448, 224 or 112 (folder suffix); ``mask_threshold``: ``None`` for
    strictly binary labels, or an int ``t`` to take ``label > t`` as crack."""

    resolution: int = 448
    mask_threshold: int | None = None


_PAPER = {448: "981/893, 1:2228", 224: "1053/954, 1:584", 112: "1334/1177, 1:191"}


class Thc(DefectBuilder):
    """THC448/224/112 tiny hidden cracks in PV cells; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: KLIVIS/DIBE layout."}
    BUILDER_CONFIGS = [
        ThcConfig(
            name=f"thc{r}",
            description=f"THC{r}: {r}x{r} tiles (paper, Table 2: {_PAPER[r]}).",
            resolution=r,
        )
        for r in (448, 224, 112)
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "thc448"
    URL = "https://github.com/KLIVIS/DIBE/archive/HEAD.zip"
    LAYOUT = (
        "THC<R>/{train,val}_dataset_<R>/<name>.png and its label "
        "THC<R>/{train,val}_label_<R>/<name>.png (R = 448, 224 or 112)"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the THC folders of github.com/KLIVIS/DIBE in manual_dir, or in a folder up to 3
levels below it. For config thcR (R = 448, 224 or 112):
  THC<R>/train_dataset_<R>/<name>.png   and the label THC<R>/train_label_<R>/<name>.png
  THC<R>/val_dataset_<R>/<name>.png     and the label THC<R>/val_label_<R>/<name>.png
Image and label share the file name; labels are binary PNGs (0/1 or 0/255).
"""

    @classmethod
    def native_size(cls, config: tfds.core.BuilderConfig) -> tuple[int, int]:
        """``(R, R)`` for config ``thcR``."""
        return (config.resolution, config.resolution)

    @classmethod
    def class_names(cls, config: tfds.core.BuilderConfig) -> tuple[str, ...]:
        """Every config: binary, ``("background", "crack")``."""
        del config
        return ("background", "crack")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(
                channels=3,
                classes=self.class_names(self.builder_config),
                size=self.builder_config.resolution,
            ),
            supervised_keys=("image", "mask"),
            homepage="https://github.com/KLIVIS/DIBE",
        )

    def _is_root(self, path: Path) -> bool:
        r = self.builder_config.resolution
        return (path / f"train_dataset_{r}").is_dir() or (path / f"val_dataset_{r}").is_dir()

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        r = self.builder_config.resolution
        root = self._source_root(dl_manager)
        out = {}
        for split, prefix in (("train", "train"), ("validation", "val")):
            out[split] = self._generate_examples(
                pair_files(
                    root / f"{prefix}_dataset_{r}",
                    root / f"{prefix}_label_{r}",
                    image_ext=".png",
                    label_ext=".png",
                ),
                root,
            )
        return out

    def _generate_examples(self, pairs: list[tuple[str, Path, Path]], root: Path):
        threshold = self.builder_config.mask_threshold
        r = self.builder_config.resolution
        for _, image_path, label_path in pairs:
            image = read_image(image_path, mode="RGB")
            if image.shape[:2] != (r, r):
                h, w = image.shape[:2]
                raise DatasetFileError(
                    f"{image_path}: image is {h}x{w}, config {self.builder_config.name} "
                    f"expects {r}x{r} (cut larger images with tile_image)"
                )
            mask = binarize(read_mask(label_path), path=label_path, threshold=threshold)
            check_same_size(image, mask, image_path=image_path, mask_path=label_path)
            name = str(image_path.relative_to(root.parent))
            yield name, {"image": encode_png(image), "mask": encode_png(mask), "file_name": name}
