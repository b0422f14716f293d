"""CrackForest (CFD) as in-memory ``uint8`` arrays, read with PIL, SciPy and NumPy only.

The GPU machine has no TFDS, so ``dibe_jax.datasets.crackforest`` cannot build the set there;
this reader gives the same tiles from the same files: each labelled image ``image/NNN.jpg``
(320 x 480 RGB) and ``groundTruth/NNN.mat`` (``Segmentation``, crack = label 2: the builder's
default ``crackforest/label2`` config) cut row-major into 2 x 3 tiles of 160 x 160; images
001-060 give the 360 training tiles, 061-118 the 348 validation tiles
(``tests/test_benchmarks.py`` checks this against the builder's own functions).

The files may not be committed (CFD is for non-commercial research only): copy them into
the git-ignored ``bench_data/crackforest`` (``make bench-data``) and carry that folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TILE = 160
LAST_TRAIN = 60  # images 001-060 -> train, 061-118 -> validation
NUM_LABELLED = 118
CRACK = 2

#: Where :func:`find_root` looks, in order (relative to the repository root).
ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (ROOT / "bench_data" / "crackforest", ROOT.parent / "shared" / "data" / "crackforest")


def find_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The CFD folder (``image/`` and ``groundTruth/``): ``data_dir`` if given, else
    ``$DIBE_JAX_DATA/crackforest``, ``bench_data/crackforest`` or ``../shared/data/crackforest``;
    None if none holds the files."""
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        env = os.environ.get("DIBE_JAX_DATA")
        candidates = ([Path(env) / "crackforest"] if env else []) + list(CANDIDATES)
    for path in candidates:
        if (path / "image").is_dir() and (path / "groundTruth").is_dir():
            return path
    return None


def tiles(array: np.ndarray, tile: int = TILE) -> np.ndarray:
    """``[H, W, C] -> [(H / tile) (W / tile), tile, tile, C]``, row-major (left to right,
    then top to bottom), as ``dibe_jax.datasets._common.tile_image``."""
    h, w, c = array.shape
    if h % tile or w % tile:
        raise ValueError(f"image of {h}x{w} pixels cannot be cut into {tile}x{tile} tiles")
    t = array.reshape(h // tile, tile, w // tile, tile, c).transpose(0, 2, 1, 3, 4)
    return t.reshape(-1, tile, tile, c)


def read_pair(root: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ``uint8 [320, 480, 3]`` and crack mask ``uint8 [320, 480, 1]`` in ``{0, 1}``."""
    from PIL import Image
    from scipy.io import loadmat

    with Image.open(root / "image" / f"{stem}.jpg") as im:
        image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    seg = np.asarray(
        loadmat(str(root / "groundTruth" / f"{stem}.mat"))["groundTruth"][0, 0]["Segmentation"]
    )
    if seg.shape != image.shape[:2]:
        raise ValueError(f"{root}/groundTruth/{stem}.mat: {seg.shape} != image {image.shape}")
    return image, (seg == CRACK).astype(np.uint8)[..., None]


def load(
    root: str | os.PathLike, *, images_per_split: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, masks), "validation": (images, masks)}``: ``uint8``
    ``[N, 160, 160, 3]`` and ``[N, 160, 160, 1]`` (N = 360 and 348 for the full set;
    ``images_per_split`` reads only the first images of each split, 6 tiles each)."""
    root = Path(root)
    stems = sorted(
        (p.stem for p in (root / "groundTruth").glob("*.mat") if p.stem.isdigit()), key=int
    )
    stems = [s for s in stems if int(s) <= NUM_LABELLED]
    if not stems:
        raise FileNotFoundError(f"{root}: no groundTruth/NNN.mat files")
    out: dict[str, tuple[list, list]] = {"train": ([], []), "validation": ([], [])}
    for stem in stems:
        split = "train" if int(stem) <= LAST_TRAIN else "validation"
        if images_per_split is not None and len(out[split][0]) >= images_per_split:
            continue
        image, mask = read_pair(root, stem)
        out[split][0].append(tiles(image))
        out[split][1].append(tiles(mask))
    return {k: (np.concatenate(i), np.concatenate(m)) for k, (i, m) in out.items() if i}
