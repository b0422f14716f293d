"""Segmentation models in Flax NNX, NHWC, returning float32 logits ``[B, H, W, num_classes]``.

Build one by name with :func:`create` (``names()`` lists them): U-Net, SegNet, PSPNet, DeepLabv3,
FCN-8s and Attention U-Net, each configurable (``width``, ``depth``, ``dtype``, dropout ...).
:func:`mc_dropout_logits` runs ``T`` Monte Carlo dropout passes in one call, and
:func:`load_backbone` / :func:`save_backbone` initialise a backbone from a local file.
"""

from dibe_jax.models.attention_unet import AttentionGate, AttentionUNet
from dibe_jax.models.checkpoint import backbone_arrays, load_backbone, save_backbone
from dibe_jax.models.deeplabv3 import ASPP, DeepLabV3
from dibe_jax.models.fcn import FCN
from dibe_jax.models.mc_dropout import mc_dropout_logits
from dibe_jax.models.ops import adaptive_avg_pool, max_pool_with_argmax, max_unpool, resize_bilinear
from dibe_jax.models.pspnet import PSPNet
from dibe_jax.models.registry import (
    config_keys,
    count_params,
    create,
    input_size_rule,
    model_class,
    names,
    options_key,
)
from dibe_jax.models.resnet import ResNet
from dibe_jax.models.segnet import SegNet
from dibe_jax.models.unet import UNet
from dibe_jax.models.vgg import VGG

__all__ = [
    "ASPP",
    "FCN",
    "VGG",
    "AttentionGate",
    "AttentionUNet",
    "DeepLabV3",
    "PSPNet",
    "ResNet",
    "SegNet",
    "UNet",
    "adaptive_avg_pool",
    "backbone_arrays",
    "config_keys",
    "count_params",
    "create",
    "input_size_rule",
    "load_backbone",
    "max_pool_with_argmax",
    "model_class",
    "max_unpool",
    "mc_dropout_logits",
    "options_key",
    "names",
    "resize_bilinear",
    "save_backbone",
]
