"""Predict defect masks for image files with a trained run's checkpoint.

For each input image: resize to the run's training size, run the model in eval mode, take
``ŷ = [logit >= 0]``, resize the mask back to the image's own size (nearest neighbour), and
write ``<stem>_mask.png`` (0 / 255) and ``<stem>_overlay.png`` (defects in red over the image).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from PIL import Image

from dibe_jax.data import augment
from dibe_jax.datasets._common import read_image
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.loop import load_config, make_state

__all__ = ["predict"]

_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path} holds no image files ({', '.join(sorted(_SUFFIXES))})")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return [path]


def predict(workdir: str | Path, inputs: str | Path, out: str | Path, *, best: bool = True):
    """Write mask and overlay PNGs for ``inputs`` (a file or a folder) under ``out``.

    Returns:
      ``[(input, mask_path, overlay_path, defect_fraction)]``.
    """
    workdir, out = Path(workdir), Path(out)
    config = load_config(workdir)
    info_path = workdir / "model.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found: was {workdir} written by dibe-jax train?")
    info = json.loads(info_path.read_text())
    channels, size = int(info["in_channels"]), info["image_size"]
    _, eval_graphdef, state = make_state(config, channels)
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
    try:
        state, _, _ = ckpt.restore(state, best=best)
    except CheckpointError:
        state, _, _ = ckpt.restore(state, best=False)
    ckpt.close()
    model, _ = nnx.merge(eval_graphdef, state)
    forward = jax.jit(lambda x: model(x))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in _inputs(Path(inputs)):
        image = read_image(path, mode="RGB" if channels == 3 else "L")
        h, w = image.shape[:2]
        x, _ = augment.resize(image, np.zeros((h, w, 1), np.uint8), size)
        logits = np.asarray(forward(augment.to_float(x)[None]))[0]
        mask = (logits[..., :1] >= 0).astype(np.uint8)
        mask = augment.resize_mask(mask, (h, w))[..., 0]
        mask_path = out / f"{path.stem}_mask.png"
        Image.fromarray(mask * 255).save(mask_path)
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image.copy()
        rgb[mask > 0] = (0.4 * rgb[mask > 0] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
        overlay_path = out / f"{path.stem}_overlay.png"
        Image.fromarray(rgb).save(overlay_path)
        results.append((path, mask_path, overlay_path, float(mask.mean())))
    return results
