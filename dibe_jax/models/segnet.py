"""SegNet: Badrinarayanan, Kendall & Cipolla, *SegNet: A deep convolutional encoder-decoder
architecture for image segmentation*, TPAMI 2017.

Encoder: the 13 convolutions of VGG-16 with BatchNorm (:class:`~dibe_jax.models.vgg.VGG`), each of
the five stages followed by 2x2 max pooling that records the argmax positions
(:func:`~dibe_jax.models.ops.max_pool_with_argmax`). Decoder: the mirror image; each stage first
upsamples with the pooling indices of the matching encoder stage
(:func:`~dibe_jax.models.ops.max_unpool`, a sparse map with the values at the recorded maxima),
then applies the encoder stage's convolutions in reverse order with input and output channels
swapped (Conv3x3 + BN + ReLU). The last convolution (``conv1_1_D`` of the Caffe model) maps to
``num_classes`` and has no BatchNorm or ReLU: its output is the logits.

Dropout: the basic SegNet has none (default ``dropout_rate=0.0``). ``dropout_rate > 0`` gives
Bayesian SegNet (Kendall, Badrinarayanan & Cipolla, BMVC 2017, "central encoder-decoder"
variant, rate 0.5 in the paper): dropout after the pooling of encoder stages 3, 4, 5 and after
decoder stages 5, 4, 3, which is what Monte Carlo dropout (:func:`mc_dropout_logits`) samples.

Input sizes: any ``H, W >= 32``. Pooling is in floor mode (a trailing odd row or column is
dropped) and unpooling restores the pre-pooling size, as PyTorch's ``MaxUnpool2d(output_size=)``,
so the paper's 112, 224 and 448 all work.

Parameter count at ``width=64``, 3 input channels, 1 class: 29,443,585; with 11 classes (CamVid)
29,449,355 (arithmetic in ``tests/test_models.py``). The encoder has 14,723,136, of which
14,714,688 are the convolutions the paper counts ("from 134M to 14.7M", Sec. 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax.models import ops
from dibe_jax.models.blocks import (
    ConvBN,
    Dtype,
    canonical_dtype,
    check_positive_int,
    check_rate,
)
from dibe_jax.models.checkpoint import load_backbone
from dibe_jax.models.vgg import VGG

__all__ = ["SegNet"]


class SegNet(nnx.Module):
    """SegNet for ``x [B, H, W, in_channels] -> logits [B, H, W, num_classes]`` (float32).

    Args:
      in_channels: input channels.
      num_classes: output channels.
      width: channels of the first VGG stage (64 in the paper); the others scale with it.
      dropout_rate: Bayesian-SegNet dropout (default 0.0: the basic SegNet).
      dtype: computation dtype; the logits are returned in float32.
      param_dtype: parameter dtype.
      backbone_checkpoint: optional ``.npz`` file or orbax directory for the VGG-16-BN encoder
        (``model.backbone``); see :func:`dibe_jax.models.load_backbone`.
      rngs: ``nnx.Rngs`` for initialisation and dropout.
    """

    model_name = "segnet"
    input_multiple = 1
    min_input_size = 32

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        *,
        width: int = 64,
        dropout_rate: float = 0.0,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        backbone_checkpoint: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.dtype = canonical_dtype(dtype, "dtype")
        param_dtype = canonical_dtype(param_dtype, "param_dtype")
        kw = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.backbone = VGG(in_channels, depth=16, width=width, batch_norm=True, **kw)
        stages = []
        n = len(self.backbone.conv_features)
        for i, convs in enumerate(self.backbone.conv_features):
            decoder = []
            for j, (c_in, c_out) in enumerate(reversed(convs)):
                last = i == 0 and j == len(convs) - 1
                decoder.append(
                    ConvBN(
                        c_out,
                        num_classes if last else c_in,
                        3,
                        use_bias=True,
                        batch_norm=not last,
                        activation=not last,
                        **kw,
                    )
                )
            stages.append(nnx.List(decoder))
        self.decoder = nnx.List(stages)
        self.dropout = nnx.Dropout(check_rate(dropout_rate), rngs=rngs)
        self.dropout_stages = tuple(range(2, n))
        if backbone_checkpoint is not None:
            load_backbone(self.backbone, backbone_checkpoint)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [B, H, W, in_channels]`` -> logits ``[B, H, W, num_classes]`` in float32."""
        ops.check_input(
            x,
            in_channels=self.in_channels,
            multiple=self.input_multiple,
            minimum=self.min_input_size,
            model=self.model_name,
        )
        pooled = []
        for i in range(len(self.decoder)):
            x = self.backbone.stage(i, x)
            size = x.shape[1:3]
            x, indices = ops.max_pool_with_argmax(x)
            pooled.append((indices, size))
            if i in self.dropout_stages:
                x = self.dropout(x)
        for i in reversed(range(len(self.decoder))):
            indices, size = pooled[i]
            x = ops.max_unpool(x, indices, size)
            for conv in self.decoder[i]:
                x = conv(x)
            if i in self.dropout_stages:
                x = self.dropout(x)
        return x.astype(jnp.float32)
