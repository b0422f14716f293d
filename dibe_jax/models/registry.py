"""Model registry: build any segmentation model by name with a validated configuration."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np
from flax import nnx

from dibe_jax.models.attention_unet import AttentionUNet
from dibe_jax.models.deeplabv3 import DeepLabV3
from dibe_jax.models.fcn import FCN
from dibe_jax.models.pspnet import PSPNet
from dibe_jax.models.segnet import SegNet
from dibe_jax.models.unet import UNet

__all__ = ["config_keys", "count_params", "create", "input_size_rule", "names", "options_key"]

_MODELS: dict[str, type[nnx.Module]] = {
    "unet": UNet,
    "segnet": SegNet,
    "pspnet": PSPNet,
    "deeplabv3": DeepLabV3,
    "fcn": FCN,
    "attention_unet": AttentionUNet,
}
_FIXED = ("self", "in_channels", "num_classes", "rngs")


def names() -> tuple[str, ...]:
    """Names accepted by :func:`create`, in a fixed order.

    >>> names()
    ('unet', 'segnet', 'pspnet', 'deeplabv3', 'fcn', 'attention_unet')
    """
    return tuple(_MODELS)


def model_class(name: str) -> type[nnx.Module]:
    """The module class registered as ``name`` (its ``__init__`` signature lists the options)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(_MODELS)}")
    return _MODELS[name]


def config_keys(name: str) -> tuple[str, ...]:
    """The configuration keys that :func:`create` accepts for model ``name``.

    >>> config_keys("unet")
    ('width', 'num_stages', 'upsampling', 'align_corners', 'dropout_rate', 'kernel_init', \
'dtype', 'param_dtype', 'backbone_checkpoint')
    """
    params = inspect.signature(model_class(name).__init__).parameters
    return tuple(k for k in params if k not in _FIXED)


def create(
    name: str,
    *,
    in_channels: int,
    num_classes: int = 1,
    rngs: nnx.Rngs,
    **config: Any,
) -> nnx.Module:
    """Build segmentation model ``name``: ``x [B, H, W, in_channels] -> [B, H, W, num_classes]``.

    The returned module starts in training mode (BatchNorm uses batch statistics, dropout is
    active); call ``model.eval()`` for inference and ``model.train()`` to switch back. Logits are
    float32 whatever the computation ``dtype``.

    ========================  ===============================  ==============================
    name                      paper                            accepted ``H``, ``W``
    ========================  ===============================  ==============================
    ``unet``                  Ronneberger et al. 2015          multiples of ``2**num_stages``
    ``segnet``                Badrinarayanan et al. 2017       any size >= 32
    ``pspnet``                Zhao et al. 2017                 multiples of ``output_stride``
    ``deeplabv3``             Chen et al. 2017                 multiples of ``output_stride``
    ``fcn``                   Long et al. 2015 (FCN-8s)        multiples of 32
    ``attention_unet``        Oktay et al. 2018                multiples of ``2**num_stages``
    ========================  ===============================  ==============================

    Args:
      name: one of :func:`names`.
      in_channels: input channels ``C`` of ``x [B, H, W, C]``.
      num_classes: output channels (1 for binary defect masks).
      rngs: ``nnx.Rngs`` for parameter initialisation and dropout.
      **config: model-specific keyword arguments, listed by :func:`config_keys` (e.g. ``width``,
        ``depth``, ``dropout_rate``, ``dtype``, ``param_dtype``, ``backbone_checkpoint``).

    Raises:
      ValueError: unknown ``name`` (the message lists the models), unknown configuration key (the
        message names it and lists the accepted ones) or invalid value.

    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = create("unet", in_channels=3, width=4, num_stages=1, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 16, 16, 3))).shape
    (2, 16, 16, 1)
    """
    cls = model_class(name)
    allowed = config_keys(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"accepted keys: {', '.join(allowed)}"
        )
    return cls(in_channels, num_classes, rngs=rngs, **config)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` entries; BatchNorm statistics excluded).

    Works on abstract models from ``nnx.eval_shape``, so full-size models need not be built:

    >>> from flax import nnx
    >>> count_params(nnx.eval_shape(lambda: create("fcn", in_channels=3, num_classes=21,
    ...                                             rngs=nnx.Rngs(0))))
    134489759
    """
    leaves = [v.get_value() for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    return int(sum(int(np.prod(leaf.shape)) for leaf in leaves))


def input_size_rule(name: str, *, in_channels: int = 3, **config: Any) -> tuple[int, int]:
    """``(multiple, minimum)``: the sizes model ``name`` accepts for ``H`` and ``W``.

    Both must be multiples of ``multiple`` (the network's total stride) and at least
    ``minimum``. The model is built abstractly (``nnx.eval_shape``), so nothing is
    allocated and nothing compiles; ``config`` is checked as in :func:`create`.

    >>> input_size_rule("unet", num_stages=3), input_size_rule("segnet"), input_size_rule("fcn")
    ((8, 8), (1, 32), (32, 32))
    """
    key = options_key(config)  # equal options keep their answer: even an abstract model is slow
    if key is None:
        return _size_rule(name, in_channels, config)
    return _kept_size_rule(name, in_channels, key)


def options_key(config: dict[str, Any]) -> tuple[tuple[str, type, Any], ...] | None:
    """Model options as a hashable key: sorted ``(name, type, value)`` triples (the type keeps
    ``8`` and ``8.0`` apart), or None if a value cannot be hashed. ``dict`` of the triples
    without their types gives the options back.

    >>> options_key({"width": 8, "num_stages": 2})
    (('num_stages', <class 'int'>, 2), ('width', <class 'int'>, 8))
    >>> options_key({"rates": [6, 12]}) is None
    True
    """
    try:
        key = tuple(sorted((k, type(v), v) for k, v in config.items()))
        hash(key)
    except TypeError:
        return None
    return key


@functools.lru_cache(maxsize=64, typed=True)
def _kept_size_rule(name: str, in_channels: int, config: tuple[tuple[str, type, Any], ...]):
    return _size_rule(name, in_channels, {k: v for k, _, v in config})


def _size_rule(name: str, in_channels: int, config: dict[str, Any]) -> tuple[int, int]:
    model = nnx.eval_shape(
        lambda: create(name, in_channels=in_channels, rngs=nnx.Rngs(0), **config)
    )
    multiple = int(getattr(model, "input_multiple", 1))
    minimum = int(getattr(model, "min_input_size", None) or multiple)
    return multiple, minimum
