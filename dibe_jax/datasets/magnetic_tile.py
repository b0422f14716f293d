"""Magnetic Tile Surface Defect dataset (MTSDD) as a TFDS builder.

Source: Huang, Qiu, Yuan 2020, *Surface defect saliency of magnetic tile*, The
Visual Computer 36(1); github.com/abin24/Magnetic-tile-defect-datasets. (the
authors ask for a citation). Layout: ``MT_<Class>/Imgs/<stem>.jpg`` (grayscale)
with mask ``<stem>.png``; 1,344 pairs: Blowhole 115, Break 85, Crack 57, Fray 32,
Uneven 103, Free 952 (Free masks are empty). Images keep their own size (about
103-632 x 222-403 pixels).

Masks are anti-aliased (values 0..255) and are binarized at ``> 127``.

Configs: one per class (``blowhole``, ``break``, ``crack``, ``fray``, ``uneven``,
``free``: binary masks ``{0, 1}``), and ``all`` (multi-class: background 0,
Blowhole 1, Break 2, Crack 3, Fray 4, Uneven 5; Free images contribute
background only).

Split: deterministic and about 60/40 by file, per class: sorted stems, the ``i``-th
goes to train iff ``i % 5 < 3``. The DIBE paper (Table 2) used Blowhole 101/70
(FG:BG 1:333) and Crack 46/31 (1:113) after its own cropping; this builder keeps
the originals, so it has Blowhole 69/46 and Crack 35/22, with native ratios of
about 1:660 and 1:270.

Image size for training: the examples have many sizes (Crack alone has 49), so a
batch cannot be stacked without resizing. :func:`dibe_jax.datasets.default_image_size`
gives **224** (square, :attr:`MagneticTile.DEFAULT_IMAGE_SIZE`), used when the user
names no size. Why 224: resizing the raw anti-aliased masks to 224x224 (bilinear, any
value > 0 is defect) gives FG:BG 1:337 (Blowhole) and 1:109 (Crack), close to the
paper's Table 2 (1:333, 1:113), so this is most likely the paper's own preprocessing;
and 224 = 7 x 32 is a multiple of every model's total stride (FCN 32; U-Net and
DeepLabv3 16), so no padding is needed. (This builder binarizes at > 127 first; its masks
resized to 224x224 with
``dibe_jax.data.augment.resize(..., mask_resize="max")`` have 1:455 and 1:181.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
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
    split_by_rule,
)

__all__ = ["CLASSES", "MagneticTile", "MagneticTileConfig"]

#: Defect classes in the order of their ids in the ``all`` config (id = index + 1).
CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
MASK_THRESHOLD = 127


@dataclasses.dataclass(eq=False)
class MagneticTileConfig(tfds.core.BuilderConfig):
    """``classes``: folders ``MT_<Class>`` to read; ``multiclass``: class ids vs {0, 1}."""

    classes: tuple[str, ...] = ("Crack",)
    multiclass: bool = False


def _single(cls: str) -> MagneticTileConfig:
    return MagneticTileConfig(
        name=cls.lower(),
        description=f"MT_{cls} only, binary mask (defect = 1).",
        classes=(cls,),
    )


class MagneticTile(DefectBuilder):
    """MTSDD magnetic-tile defects at their native size; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: native sizes, 60/40 interleaved split."}
    BUILDER_CONFIGS = [
        *(_single(c) for c in CLASSES),
        _single("Free"),
        MagneticTileConfig(
            name="all",
            description="All six folders; mask = class id (0 background, 1..5 = "
            + ", ".join(CLASSES)
            + ").",
            classes=(*CLASSES, "Free"),
            multiclass=True,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "crack"
    URL = "https://github.com/abin24/Magnetic-tile-defect-datasets./archive/HEAD.zip"
    LAYOUT = (
        "MT_<Class>/Imgs/<stem>.jpg and its mask <stem>.png "
        "(Class = Blowhole, Break, Crack, Fray, Uneven, Free)"
    )
    #: Native sizes vary (about 103-632 x 222-403): training resizes to 224 x 224 by
    #: default (see the module docstring for why).
    DEFAULT_IMAGE_SIZE = 224
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the MTSDD folders (github.com/abin24/Magnetic-tile-defect-datasets.) in manual_dir,
or in a folder up to 3 levels below it (e.g. manual_dir/magnetic_tile/):
  MT_Blowhole/Imgs/<stem>.jpg and MT_Blowhole/Imgs/<stem>.png (mask), same for
  MT_Break, MT_Crack, MT_Fray, MT_Uneven, MT_Free (only the classes of the config are read).
"""

    @classmethod
    def class_names(cls, config: tfds.core.BuilderConfig) -> tuple[str, ...]:
        """``all``: ``("background", "blowhole", "break", "crack", "fray", "uneven")`` (the
        mask's class ids); a one-class config: ``("background", "<class>")``."""
        if config.multiclass:
            return ("background", *(c.lower() for c in CLASSES))
        return ("background", config.classes[0].lower())

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(channels=1, classes=self.class_names(self.builder_config)),
            supervised_keys=("image", "mask"),
            homepage="https://github.com/abin24/Magnetic-tile-defect-datasets.",
            citation=(
                "@article{huang2020surface, title={Surface defect saliency of magnetic "
                "tile}, author={Huang, Yibin and Qiu, Congying and Yuan, Kui}, "
                "journal={The Visual Computer}, volume={36}, number={1}, pages={85--96}, "
                "year={2020}}"
            ),
        )

    def _is_root(self, path: Path) -> bool:
        return any(p.is_dir() for p in path.glob("MT_*/Imgs"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg: MagneticTileConfig = self.builder_config
        root = self._source_root(dl_manager)
        splits: dict[str, list] = {"train": [], "validation": []}
        for cls in cfg.classes:
            folder = root / f"MT_{cls}" / "Imgs"
            if not folder.is_dir():
                raise DatasetFileError(
                    f"{folder}: folder is missing (config {cfg.name!r} reads MT_{cls})"
                )
            found = pair_files(folder, folder, image_ext=".jpg", label_ext=".png")
            pairs = {s: (i, m) for s, i, m in found}
            for split, stems in split_by_rule(pairs).items():
                splits[split] += [(cls, s, *pairs[s]) for s in stems]
        if not splits["validation"]:
            raise DatasetFileError(
                f"{root}: too few files for a train/validation split ({len(splits['train'])})"
            )
        return {k: self._generate_examples(v) for k, v in splits.items()}

    def _generate_examples(self, items: list[tuple[str, str, Path, Path]]):
        cfg: MagneticTileConfig = self.builder_config
        for cls, stem, image_path, mask_path in items:
            image = read_image(image_path, mode="L")
            mask = binarize(read_mask(mask_path), path=mask_path, threshold=MASK_THRESHOLD)
            check_same_size(image, mask, image_path=image_path, mask_path=mask_path)
            if cfg.multiclass:
                label = CLASSES.index(cls) + 1 if cls in CLASSES else 0
                mask = (mask * label).astype(np.uint8)
            name = f"MT_{cls}/Imgs/{stem}.jpg"
            yield (
                name,
                {
                    "image": encode_png(image),
                    "mask": encode_png(mask),
                    "file_name": name,
                },
            )
