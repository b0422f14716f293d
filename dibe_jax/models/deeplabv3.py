"""DeepLabv3: Chen, Papandreou, Schroff & Adam, *Rethinking atrous convolution for semantic image
segmentation*, arXiv:1706.05587, 2017.

A ResNet-50/101 with atrous convolutions (:class:`~dibe_jax.models.resnet.ResNet`) keeps the
features at output stride 16 (default; the paper's training setting) or 8. Atrous spatial pyramid
pooling (Sec. 3.3): a 1x1 convolution, three 3x3 convolutions with rates (6, 12, 18) at output
stride 16, doubled to (12, 24, 36) at output stride 8, and image-level features (global average
pooling -> 1x1 convolution -> bilinear upsampling), each with ``4 * width`` = 256 channels,
BatchNorm and ReLU; the five branches are concatenated and fused by a 1x1 convolution (256, BN,
ReLU) "before the final 1x1 convolution which generates the final logits", which are upsampled
bilinearly to the input size.

Dropout: 0.1 after the fusion, default (the official TensorFlow implementation's
``keep_prob=0.9``; the paper does not state it). Multi-grid rates in block 4 and the auxiliary head
are not implemented; the torchvision head's extra 3x3 convolution is not used (not in the paper).

Input sizes: multiples of ``output_stride`` (16 by default: 112, 224, 448 are accepted).

Parameter count at ``width=64``, ResNet-50, 3 input channels, 21 classes: 39,048,533 --
torchvision's ``deeplabv3_resnet50`` (42,004,074) less its auxiliary FCN head (2,365,205) and its
extra 3x3 head convolution (590,336); ResNet-101: 58,040,661 (arithmetic in
``tests/test_models.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax._validate import check_choice
from dibe_jax.models import ops
from dibe_jax.models.blocks import (
    ConvBN,
    Dtype,
    canonical_dtype,
    check_positive_int,
    check_rate,
    he_normal,
)
from dibe_jax.models.checkpoint import load_backbone
from dibe_jax.models.resnet import ResNet

__all__ = ["ASPP", "DeepLabV3"]


class ASPP(nnx.Module):
    """Atrous spatial pyramid pooling (DeepLabv3, Sec. 3.3, Fig. 5).

    ``x [B, h, w, in_features] -> [B, h, w, features]``: branches 1x1, 3x3 at each ``rate``, and
    image pooling, concatenated and fused by a 1x1 convolution, all Conv + BN + ReLU.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        rates: Sequence[int],
        *,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        branches = [ConvBN(in_features, features, 1, **kw)]
        branches += [ConvBN(in_features, features, 3, dilation=r, **kw) for r in rates]
        self.branches = nnx.List(branches)
        self.image_pool = ConvBN(in_features, features, 1, **kw)
        self.project = ConvBN(features * (len(branches) + 1), features, 1, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(jnp.mean(x, axis=(1, 2), keepdims=True))
        outs.append(jnp.broadcast_to(pooled, (*x.shape[:3], pooled.shape[-1])))
        return self.project(jnp.concatenate(outs, axis=-1))


class DeepLabV3(nnx.Module):
    """DeepLabv3 for ``x [B, H, W, in_channels] -> logits [B, H, W, num_classes]`` (float32).

    Args:
      in_channels: input channels.
      num_classes: output channels.
      depth: ResNet depth, 10/18/34/50/101/152 (50 or 101 in the paper).
      width: channels of the ResNet stem (64); ASPP has ``4 * width`` channels.
      output_stride: 16 (default) or 8.
      atrous_rates: ASPP rates; default (6, 12, 18) at stride 16 and (12, 24, 36) at stride 8.
      dropout_rate: dropout after the ASPP fusion (0.1).
      align_corners: bilinear convention of the final upsampling (False, as torchvision).
      dtype: computation dtype; the logits are returned in float32.
      param_dtype: parameter dtype.
      backbone_checkpoint: optional ``.npz`` file or orbax directory for the ResNet
        (``model.backbone``); see :func:`dibe_jax.models.load_backbone`.
      rngs: ``nnx.Rngs`` for initialisation and dropout.
    """

    model_name = "deeplabv3"

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        *,
        depth: int = 50,
        width: int = 64,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        dropout_rate: float = 0.1,
        align_corners: bool = False,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        backbone_checkpoint: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.input_multiple = check_choice("output_stride", output_stride, (8, 16))
        if atrous_rates is None:
            atrous_rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.atrous_rates = tuple(check_positive_int(r, "atrous_rates") for r in atrous_rates)
        width = check_positive_int(width, "width")
        self.align_corners = bool(align_corners)
        self.dtype = canonical_dtype(dtype, "dtype")
        param_dtype = canonical_dtype(param_dtype, "param_dtype")
        kw = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.backbone = ResNet(
            in_channels, depth=depth, width=width, output_stride=output_stride, **kw
        )
        head = 4 * width
        self.aspp = ASPP(self.backbone.out_features, head, self.atrous_rates, **kw)
        self.dropout = nnx.Dropout(check_rate(dropout_rate), rngs=rngs)
        self.classifier = nnx.Conv(head, num_classes, (1, 1), kernel_init=he_normal, **kw)
        if backbone_checkpoint is not None:
            load_backbone(self.backbone, backbone_checkpoint)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [B, H, W, in_channels]`` -> logits ``[B, H, W, num_classes]`` in float32."""
        ops.check_input(
            x, in_channels=self.in_channels, multiple=self.input_multiple, model=self.model_name
        )
        size = x.shape[1:3]
        y = self.classifier(self.dropout(self.aspp(self.backbone(x))))
        return ops.resize_bilinear(y, size, align_corners=self.align_corners).astype(jnp.float32)
