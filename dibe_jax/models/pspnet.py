"""PSPNet: Zhao, Shi, Qi, Wang & Jia, *Pyramid scene parsing network*, CVPR 2017.

A dilated ResNet (:class:`~dibe_jax.models.resnet.ResNet`, output stride 8) gives features ``F``
with ``C`` channels (2048 for ResNet-50). The pyramid pooling module (Sec. 3.2, Fig. 3) average
pools ``F`` into ``1x1, 2x2, 3x3, 6x6`` bins (:func:`~dibe_jax.models.ops.adaptive_avg_pool`),
reduces each level to ``C / 4`` channels with a 1x1 convolution + BN + ReLU, upsamples the levels
bilinearly to ``F``'s size and concatenates them with ``F``. A 3x3 convolution (``8 * width`` =
512 channels) + BN + ReLU, dropout and a 1x1 classifier give logits at stride 8, upsampled
bilinearly to the input size (``align_corners=True``, as the authors' PyTorch code, semseg).

Dropout: 0.1 before the classifier, channel-wise (``Dropout2d``, the authors' code), default.

Deviations: the authors' ResNet uses a "deep stem" (three 3x3 convolutions) and training uses an
auxiliary loss on stage 3; here the stem is torchvision's 7x7 convolution (so torchvision ResNet
weights convert directly) and there is no auxiliary head.

Input sizes: multiples of ``output_stride`` (8): 112, 224, 448 are accepted.

Parameter count at ``width=64``, ResNet-50, 3 input channels, 21 classes: 46,592,597; with 1
class 46,582,337 (arithmetic in ``tests/test_models.py``).
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

__all__ = ["PSPNet"]


class PSPNet(nnx.Module):
    """PSPNet for ``x [B, H, W, in_channels] -> logits [B, H, W, num_classes]`` (float32).

    Args:
      in_channels: input channels.
      num_classes: output channels.
      depth: ResNet depth, 10/18/34/50/101/152 (50 in the paper's main results).
      width: channels of the ResNet stem (64); the head has ``8 * width`` channels.
      output_stride: 8 (paper) or 16.
      bins: pyramid levels (1, 2, 3, 6).
      dropout_rate: channel dropout before the classifier (0.1).
      align_corners: bilinear convention for the pyramid and the final upsampling (True).
      dtype: computation dtype; the logits are returned in float32.
      param_dtype: parameter dtype.
      backbone_checkpoint: optional ``.npz`` file or orbax directory for the ResNet
        (``model.backbone``); see :func:`dibe_jax.models.load_backbone`.
      rngs: ``nnx.Rngs`` for initialisation and dropout.
    """

    model_name = "pspnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        *,
        depth: int = 50,
        width: int = 64,
        output_stride: int = 8,
        bins: Sequence[int] = (1, 2, 3, 6),
        dropout_rate: float = 0.1,
        align_corners: bool = True,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        backbone_checkpoint: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.input_multiple = check_choice("output_stride", output_stride, (8, 16))
        self.bins = tuple(check_positive_int(b, "bins") for b in bins)
        if not self.bins:
            raise ValueError("bins must not be empty")
        width = check_positive_int(width, "width")
        self.align_corners = bool(align_corners)
        self.dtype = canonical_dtype(dtype, "dtype")
        param_dtype = canonical_dtype(param_dtype, "param_dtype")
        kw = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.backbone = ResNet(
            in_channels, depth=depth, width=width, output_stride=output_stride, **kw
        )
        features = self.backbone.out_features
        reduced = max(1, features // len(self.bins))
        self.pyramid = nnx.List([ConvBN(features, reduced, 1, **kw) for _ in self.bins])
        head = 8 * width
        self.bottleneck = ConvBN(features + reduced * len(self.bins), head, 3, **kw)
        self.dropout = nnx.Dropout(check_rate(dropout_rate), broadcast_dims=(1, 2), rngs=rngs)
        self.classifier = nnx.Conv(head, num_classes, (1, 1), kernel_init=he_normal, **kw)
        if backbone_checkpoint is not None:
            load_backbone(self.backbone, backbone_checkpoint)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [B, H, W, in_channels]`` -> logits ``[B, H, W, num_classes]`` in float32."""
        ops.check_input(
            x, in_channels=self.in_channels, multiple=self.input_multiple, model=self.model_name
        )
        size = x.shape[1:3]
        f = self.backbone(x)
        levels = [f]
        for b, conv in zip(self.bins, self.pyramid, strict=True):
            level = conv(ops.adaptive_avg_pool(f, b))
            levels.append(
                ops.resize_bilinear(level, f.shape[1:3], align_corners=self.align_corners)
            )
        y = self.dropout(self.bottleneck(jnp.concatenate(levels, axis=-1)))
        y = self.classifier(y)
        return ops.resize_bilinear(y, size, align_corners=self.align_corners).astype(jnp.float32)
