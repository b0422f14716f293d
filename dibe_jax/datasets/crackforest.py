"""CrackForest (CFD) as a TFDS builder: 118 road images cut into 708 tiles of 160x160.

Source: Shi et al. 2016, *Automatic road crack detection using random structured
forests*, IEEE T-ITS 17(12); github.com/cuilimeng/CrackForest-dataset
(non-commercial research only; cite Shi et al. 2016 and Cui et al. 2015).

The DIBE paper (Table 2) uses CFD with 360 training / 348 validation images of
160x160 and FG:BG 1:25. Each labelled image ``image/NNN.jpg`` is 320 rows x 480
columns (``groundTruth/NNN.mat`` has the same orientation), so it gives
``tile_image(., 160)`` = 2 x 3 = 6 tiles, numbered row-major (``NNN_t0`` ..
``NNN_t5``). Split by image: 001-060 -> train (360 tiles), 061-118 -> validation
(348 tiles), so no image contributes tiles to both splits.

The crack class is read from ``loadmat(p)['groundTruth'][0, 0]['Segmentation']``
(labels 1-4). Label 2 is crack; labels 3 and 4 are used inconsistently upstream
(sometimes crack-like marks, sometimes other surface features), hence two configs:

* ``crackforest/label2`` (default): ``mask = Segmentation == 2``; native FG:BG about 1:61,
* ``crackforest/label_ge2``: ``mask = Segmentation >= 2``.

The paper's 1:25 is closer to what one gets after resizing with interpolation and
binarizing loosely; :mod:`dibe_jax.data` can reproduce that with
``mask_resize="max"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from scipy.io import loadmat

from dibe_jax.datasets._common import (
    DatasetFileError,
    DefectBuilder,
    check_same_size,
    encode_png,
    features,
    read_image,
    tile_image,
)

__all__ = ["Crackforest", "CrackforestConfig"]

TILE = 160
NUM_LABELLED = 118
LAST_TRAIN = 60


@dataclasses.dataclass(eq=False)
class CrackforestConfig(tfds.core.BuilderConfig):
    """Which ``Segmentation`` labels count as crack: ``== 2`` or ``>= 2``."""

    min_label: int = 2
    max_label: int = 2


class Crackforest(DefectBuilder):
    """CrackForest road cracks, 6 tiles of 160x160 per image; see the module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 160x160 tiles, split by image 60/58."}
    BUILDER_CONFIGS = [
        CrackforestConfig(
            name="label2",
            description="crack = Segmentation == 2 (default).",
            min_label=2,
            max_label=2,
        ),
        CrackforestConfig(
            name="label_ge2",
            description="crack = Segmentation >= 2 (labels 3-4 counted as crack too).",
            min_label=2,
            max_label=4,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "label2"
    URL = "https://github.com/cuilimeng/CrackForest-dataset/archive/HEAD.zip"
    LAYOUT = "image/NNN.jpg and groundTruth/NNN.mat, NNN = 001-118"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put the CrackForest files (github.com/cuilimeng/CrackForest-dataset) in manual_dir,
or in a folder up to 3 levels below it (e.g. manual_dir/crackforest/):
  image/001.jpg ... image/118.jpg        480x320 RGB road images
  groundTruth/001.mat ... groundTruth/118.mat   MATLAB files with groundTruth{1}.Segmentation
"""

    @classmethod
    def native_size(cls, config: tfds.core.BuilderConfig) -> tuple[int, int]:
        """Every config: ``(160, 160)`` tiles."""
        del config
        return (TILE, TILE)

    @classmethod
    def class_names(cls, config: tfds.core.BuilderConfig) -> tuple[str, ...]:
        """Every config: binary, ``("background", "crack")``."""
        del config
        return ("background", "crack")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(channels=3, classes=self.class_names(self.builder_config), size=TILE),
            supervised_keys=("image", "mask"),
            homepage="https://github.com/cuilimeng/CrackForest-dataset",
            citation=(
                "@article{shi2016automatic, title={Automatic road crack detection using "
                "random structured forests}, author={Shi, Yong and Cui, Limeng and Qi, "
                "Zhiquan and Meng, Fan and Chen, Zhensong}, journal={IEEE Transactions on "
                "Intelligent Transportation Systems}, volume={17}, number={12}, "
                "pages={3434--3445}, year={2016}}"
            ),
        )

    def _is_root(self, path: Path) -> bool:
        return (path / "image").is_dir() and (path / "groundTruth").is_dir()

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._source_root(dl_manager)
        mats = {p.stem: p for p in (root / "groundTruth").glob("*.mat")}
        images = {p.stem: p for p in (root / "image").glob("*.jpg")}
        labelled_images = {s for s in images if s.isdigit() and 1 <= int(s) <= NUM_LABELLED}
        lonely = [f"{mats[s]} (no image/{s}.jpg)" for s in sorted(mats.keys() - images.keys())]
        lonely += [
            f"{images[s]} (no groundTruth/{s}.mat)" for s in sorted(labelled_images - mats.keys())
        ]
        if lonely:
            raise DatasetFileError(
                f"{lonely[0].split(' (')[0]}: unpaired files ({len(lonely)}): " + "; ".join(lonely)
            )
        bad = [s for s in mats if not s.isdigit()]
        if bad:
            raise DatasetFileError(f"{mats[bad[0]]}: expected a numeric name like 001.mat")
        stems = sorted(mats, key=int)
        train = [s for s in stems if int(s) <= LAST_TRAIN]
        val = [s for s in stems if int(s) > LAST_TRAIN]
        return {
            "train": self._generate_examples(root, train),
            "validation": self._generate_examples(root, val),
        }

    def _read_segmentation(self, path: Path) -> np.ndarray:
        try:
            seg = loadmat(str(path))["groundTruth"][0, 0]["Segmentation"]
        except Exception as e:  # scipy raises many types for broken files
            raise DatasetFileError(
                f"{path}: unreadable MATLAB file or no groundTruth{{1}}.Segmentation ({e!r})"
            ) from e
        seg = np.asarray(seg)
        if seg.ndim != 2:
            raise DatasetFileError(f"{path}: Segmentation has shape {seg.shape}, expected 2-D")
        values = np.unique(seg)
        if not np.all(np.isin(values, (1, 2, 3, 4))):
            raise DatasetFileError(
                f"{path}: Segmentation has values {values.tolist()[:10]}, expected labels 1-4"
            )
        return seg

    def _generate_examples(self, root: Path, stems: list[str]):
        cfg: CrackforestConfig = self.builder_config
        for stem in stems:
            image_path = root / "image" / f"{stem}.jpg"
            mat_path = root / "groundTruth" / f"{stem}.mat"
            image = read_image(image_path, mode="RGB")
            seg = self._read_segmentation(mat_path)
            check_same_size(image, seg, image_path=image_path, mask_path=mat_path)
            mask = ((seg >= cfg.min_label) & (seg <= cfg.max_label)).astype(np.uint8)
            try:
                pairs = zip(tile_image(image, TILE), tile_image(mask, TILE), strict=True)
            except ValueError as e:
                raise DatasetFileError(f"{image_path}: {e}") from e
            for t, (img_tile, mask_tile) in enumerate(pairs):
                key = f"{stem}_t{t}"
                yield (
                    key,
                    {
                        "image": encode_png(img_tile),
                        "mask": encode_png(mask_tile),
                        "file_name": f"image/{stem}.jpg#t{t}",
                    },
                )
