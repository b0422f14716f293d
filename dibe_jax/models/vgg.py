"""VGG convolutional stages, the encoder of SegNet and FCN.

Simonyan & Zisserman, *Very deep convolutional networks for large-scale image recognition*, ICLR
2015, configurations A/B/D/E (VGG-11/13/16/19). Only the five convolutional stages are built; the
models apply their own pooling between stages (max pooling with indices in SegNet, plain max
pooling in FCN). Convolutions keep their bias even when followed by BatchNorm, as torchvision's
``vgg16_bn`` and SegNet's Caffe model, so the VGG-16 stages hold 14,714,688 parameters without and
14,723,136 with BatchNorm at ``width=64`` (torchvision ``vgg16`` 138,357,544 and ``vgg16_bn``
138,365,992 minus the classifier's 123,642,856).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax._validate import check_choice
from dibe_jax.models.blocks import ConvBN, Dtype, check_positive_int, scaled

__all__ = ["VGG", "VGG_STAGES"]

VGG_STAGES: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nnx.Module):
    """The five convolutional stages of VGG (3x3 convolutions, optional BatchNorm, ReLU).

    ``stage(i, x)`` maps ``[B, H, W, C_{i-1}] -> [B, H, W, C_i]``; no pooling is applied.

    Args:
      in_channels: input channels.
      depth: 11, 13, 16 or 19 (configurations A, B, D, E).
      width: channels of the first stage (64 in the paper); stage ``i`` has
        ``min(512, 64 * 2**i) * width / 64`` channels.
      batch_norm: BatchNorm after every convolution (VGG-BN).
      dtype, param_dtype: computation and parameter dtypes.
      rngs: parameter initialisation keys.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        depth: int = 16,
        width: int = 64,
        batch_norm: bool = True,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("depth", depth, tuple(VGG_STAGES))
        width = check_positive_int(width, "width")
        kw = dict(use_bias=True, batch_norm=batch_norm, dtype=dtype, param_dtype=param_dtype)
        stages, features = [], in_channels
        shapes = []
        for stage_channels in VGG_STAGES[depth]:
            convs, stage_shapes = [], []
            for channels in stage_channels:
                out = scaled(channels, width)
                convs.append(ConvBN(features, out, 3, rngs=rngs, **kw))
                stage_shapes.append((features, out))
                features = out
            stages.append(nnx.List(convs))
            shapes.append(tuple(stage_shapes))
        self.stages = nnx.List(stages)
        self.conv_features = tuple(shapes)
        self.stage_features = tuple(s[-1][1] for s in shapes)

    def stage(self, i: int, x: jax.Array) -> jax.Array:
        """Apply the convolutions of stage ``i`` (0-based)."""
        for conv in self.stages[i]:
            x = conv(x)
        return x

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """Outputs of the five stages, with 2x2 max pooling between them (strides 1 .. 16)."""
        outs = []
        for i in range(len(self.stages)):
            if i:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = self.stage(i, x)
            outs.append(x)
        return outs
