"""Local backbone checkpoints: initialise ``model.backbone`` from a file instead of a download.

No pretrained weights can be fetched by the library. A backbone (the contracting path of U-Net,
the VGG stages of SegNet/FCN, the ResNet of PSPNet/DeepLabv3) can instead be initialised from

* a ``.npz`` file of arrays, or
* an orbax checkpoint directory (``orbax.checkpoint.StandardCheckpointer`` layout),

both holding a flat mapping ``"dotted.path" -> array`` with one entry per parameter and BatchNorm
statistic of the backbone, named as in :func:`backbone_arrays` (e.g.
``stages.0.0.conv1.conv.kernel`` or ``stem.bn.mean``; kernels are ``[kh, kw, in, out]``).
:func:`save_backbone` writes such files. Converting e.g. a torchvision state dict means renaming
its keys and transposing ``[out, in, kh, kw]`` kernels to ``[kh, kw, in, out]``.

Every key must be present with the model's shape; otherwise :func:`load_backbone` raises a
``ValueError`` that names the file and the offending keys.

>>> import tempfile, os
>>> from flax import nnx
>>> from dibe_jax.models import create
>>> config = dict(in_channels=3, width=4, num_stages=1)
>>> trained = create("unet", rngs=nnx.Rngs(0), **config)
>>> path = os.path.join(tempfile.mkdtemp(), "unet_encoder.npz")
>>> save_backbone(trained.backbone, path)
>>> model = create("unet", backbone_checkpoint=path, rngs=nnx.Rngs(1), **config)
>>> sorted(backbone_arrays(model.backbone))[:2]
['units.0.conv1.bn.bias', 'units.0.conv1.bn.mean']
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["backbone_arrays", "load_backbone", "read_checkpoint", "save_backbone"]

_COLLECTIONS = (nnx.Param, nnx.BatchStat)


def _key(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def backbone_arrays(module: nnx.Module) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm statistics of ``module`` as ``{"dotted.path": array}``."""
    state = nnx.state(module, _COLLECTIONS)
    return {_key(path): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(state)}


def save_backbone(module: nnx.Module, path: str | os.PathLike) -> None:
    """Write ``module``'s parameters and statistics to ``path``.

    A path ending in ``.npz`` is written with ``numpy.savez``; any other path is an orbax
    checkpoint directory (it must not exist yet).
    """
    path = os.fspath(path)
    arrays = backbone_arrays(module)
    if path.endswith(".npz"):
        np.savez(path, **arrays)
        return
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(path), arrays)
    checkpointer.wait_until_finished()


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` file or orbax directory into ``{"dotted.path": numpy array}``.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` naming it if it
    cannot be read as either format.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone checkpoint {path!r} does not exist")
    try:
        if os.path.isdir(path):
            import orbax.checkpoint as ocp

            restored = ocp.StandardCheckpointer().restore(os.path.abspath(path))
            if not isinstance(restored, dict):
                raise TypeError(f"expected a flat mapping of arrays, got {type(restored)}")
            return {str(k): np.asarray(v) for k, v in restored.items()}
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as err:  # any reader failure becomes one clear message
        raise ValueError(
            f"cannot read backbone checkpoint {path!r} (expected a .npz file or an orbax "
            f"checkpoint directory of arrays): {type(err).__name__}: {err}"
        ) from err


def load_backbone(module: nnx.Module, path: str | os.PathLike) -> None:
    """Overwrite ``module``'s parameters and BatchNorm statistics, in place, from ``path``.

    Arrays are cast to the dtype of the variable they replace. ``ValueError`` (naming ``path``)
    if keys are missing or unexpected or a shape differs.
    """
    arrays = read_checkpoint(path)
    state = nnx.state(module, _COLLECTIONS)
    flat = list(nnx.to_flat_state(state))
    expected = {_key(p): var for p, var in flat}
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    mismatched = [
        f"{k}: file {arrays[k].shape}, model {tuple(expected[k].get_value().shape)}"
        for k in expected
        if k in arrays and tuple(arrays[k].shape) != tuple(expected[k].get_value().shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_preview(mismatched)}")
    if problems:
        raise ValueError(
            f"backbone checkpoint {os.fspath(path)!r} does not match {type(module).__name__}: "
            + "; ".join(problems)
        )
    for p, var in flat:
        var.set_value(jnp.asarray(arrays[_key(p)], dtype=var.get_value().dtype))
    nnx.update(module, state)


def _preview(items: list[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more
