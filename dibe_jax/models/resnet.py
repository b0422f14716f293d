"""ResNet backbone with atrous (dilated) convolutions, for PSPNet and DeepLabv3.

He et al., *Deep residual learning for image recognition*, CVPR 2016, in the torchvision layout
("ResNet v1.5": the stride of a bottleneck sits on its 3x3 convolution). The classification head
(global pool + fully connected layer) is dropped. ``output_stride`` 16 or 8 replaces the stride of
the last one or two stages by dilation (Chen et al., *Rethinking atrous convolution*, 2017, Sec.
3.1; torchvision's ``replace_stride_with_dilation``), so the feature map stays at ``H / 16`` or
``H / 8`` while the receptive field grows as in the original network.

Parameter counts at ``width=64`` (backbone only, no ``fc``): ResNet-18 11,176,512; ResNet-34
21,284,672; ResNet-50 23,508,032; ResNet-101 42,500,160 (torchvision's published totals
11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 minus the ``fc`` layer ``512 * 1000 + 1000`` or
``2048 * 1000 + 1000``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax._validate import check_choice
from dibe_jax.models.blocks import ConvBN, Dtype, check_positive_int

__all__ = ["RESNET_DEPTHS", "BasicBlock", "Bottleneck", "ResNet"]


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet-10/18/34.

    ``x [B, H, W, in_features] -> [B, H / strides, W / strides, features]``. Unlike torchvision,
    dilation > 1 is allowed (both convolutions are dilated), so small depths can serve as dilated
    backbones in tests.
    """

    expansion = 1

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        strides: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        first = dilation if first_dilation is None else first_dilation
        self.conv1 = ConvBN(in_features, features, 3, strides=strides, dilation=first, **kw)
        self.conv2 = ConvBN(features, features, 3, dilation=dilation, activation=False, **kw)
        out = features * self.expansion
        self.downsample = (
            ConvBN(in_features, out, 1, strides=strides, activation=False, **kw)
            if strides != 1 or in_features != out
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.downsample is None else self.downsample(x)
        return jax.nn.relu(self.conv2(self.conv1(x)) + shortcut)


class Bottleneck(nnx.Module):
    """``1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels)`` with a shortcut; ResNet-50/101/152.

    ``x [B, H, W, in_features] -> [B, H / strides, W / strides, 4 * features]``.
    """

    expansion = 4

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        strides: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        mid_dilation = dilation if first_dilation is None else first_dilation
        out = features * self.expansion
        self.conv1 = ConvBN(in_features, features, 1, **kw)
        self.conv2 = ConvBN(features, features, 3, strides=strides, dilation=mid_dilation, **kw)
        self.conv3 = ConvBN(features, out, 1, activation=False, **kw)
        self.downsample = (
            ConvBN(in_features, out, 1, strides=strides, activation=False, **kw)
            if strides != 1 or in_features != out
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x if self.downsample is None else self.downsample(x)
        return jax.nn.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


RESNET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nnx.Module):
    """Dilated ResNet feature extractor.

    ``x [B, H, W, in_channels] -> [B, H / output_stride, W / output_stride, out_features]`` with
    ``out_features = 8 * width * expansion`` (2048 for ResNet-50/101 at ``width=64``, 512 for
    ResNet-18/34). ``H`` and ``W`` must be multiples of ``output_stride``.

    Args:
      in_channels: input channels.
      depth: 10, 18, 34 (basic blocks) or 50, 101, 152 (bottlenecks); 10 is ``(1, 1, 1, 1)``.
      width: channels of the stem and of the first stage (64 in the paper).
      output_stride: 32 (plain ResNet), 16 (last stage dilated by 2) or 8 (stages 3 and 4
        dilated by 2 and 4).
      dtype, param_dtype: computation and parameter dtypes.
      rngs: parameter initialisation keys.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        depth: int = 50,
        width: int = 64,
        output_stride: int = 32,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("depth", depth, tuple(RESNET_DEPTHS))
        check_choice("output_stride", output_stride, (8, 16, 32))
        width = check_positive_int(width, "width")
        block, counts = RESNET_DEPTHS[depth]
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.depth = depth
        self.output_stride = output_stride
        self.stem = ConvBN(in_channels, width, 7, strides=2, **kw)
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
        in_features, dilation = width, 1
        stages = []
        for i, count in enumerate(counts):
            strides = 1 if i == 0 else 2
            previous_dilation = dilation
            if i > 0 and dilate[output_stride][i - 1]:
                dilation *= strides
                strides = 1
            features = width * 2**i
            blocks = [
                block(
                    in_features,
                    features,
                    strides=strides,
                    dilation=dilation,
                    first_dilation=previous_dilation,
                    **kw,
                )
            ]
            in_features = features * block.expansion
            blocks += [
                block(in_features, features, dilation=dilation, **kw) for _ in range(1, count)
            ]
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.out_features = in_features
        self.stage_features = tuple(width * 2**i * block.expansion for i in range(4))

    def features(self, x: jax.Array) -> list[jax.Array]:
        """The outputs of the four stages (strides 4, 8, 16, 32 before dilation)."""
        x = self.stem(x)
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        outs = []
        for stage in self.stages:
            for blk in stage:
                x = blk(x)
            outs.append(x)
        return outs

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.features(x)[-1]
