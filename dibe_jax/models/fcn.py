"""FCN: Long, Shelhamer & Darrell, *Fully convolutional networks for semantic segmentation*,
CVPR 2015 (and the TPAMI 2017 version), VGG-16 variants FCN-32s / FCN-16s / FCN-8s.

The VGG-16 convolutional stages (:class:`~dibe_jax.models.vgg.VGG`, 2x2 max pooling after each)
are followed by ``fc6`` (7x7 convolution, ``64 * width`` = 4096 channels) and ``fc7`` (1x1, 4096),
each with ReLU and dropout, and a 1x1 ``score_fr`` classifier at stride 32. FCN-8s (default)
fuses the scores with 1x1 classifiers on ``pool4`` and ``pool3``: ``upscore2`` (4x4 transposed
convolution, stride 2) + ``score_pool4`` -> ``upscore_pool4`` (x2) + ``score_pool3`` ->
``upscore8`` (16x16, stride 8). FCN-16s stops after ``pool4`` (``upscore16``: 32x32 stride 16),
FCN-32s upsamples ``score_fr`` directly (``upscore``: 64x64 stride 32). Transposed convolutions
have no bias and are initialised to bilinear interpolation, as in the paper (which then keeps the
last one fixed; here all are learned). ``score_pool3``/``score_pool4`` start at zero, as the paper,
so the fusion starts from the coarser prediction; ``score_fr`` is He-initialised (the paper zeroes
it too, which would make the network output, and Monte Carlo dropout, constant at step 0).

Deviations: the original pads ``conv1_1`` by 100 pixels, uses an unpadded ``fc6`` and crops the
fused maps ("crop layers"); here every convolution is padded (``fc6`` by 3) so no cropping is
needed, which requires ``H`` and ``W`` to be multiples of 32 (224 and 448, not 112: pad 112 to 128).
The "at-once" variant's fixed scaling of ``pool3``/``pool4`` (1e-4 / 1e-2) is not applied.

Dropout: ``dropout_rate=0.5`` after ``fc6`` and ``fc7`` (the original's, default) -- the cross
dropout focal loss paper (Su et al., SDF 2022) uses this FCN for its ``T`` Monte Carlo passes.
BatchNorm: none by default (the original VGG-16); ``batch_norm=True`` adds it after every VGG
convolution and after ``fc6``/``fc7``, which helps training from scratch.

Parameter count at ``width=64``, 3 input channels, 21 classes: 134,489,759 (the paper's "134M",
Table 1); the arithmetic is in ``tests/test_models.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax._validate import check_choice
from dibe_jax.models import ops
from dibe_jax.models.blocks import (
    ConvBN,
    Dtype,
    bilinear_kernel_init,
    canonical_dtype,
    check_positive_int,
    check_rate,
    conv_transpose,
    he_normal,
)
from dibe_jax.models.checkpoint import load_backbone
from dibe_jax.models.vgg import VGG

__all__ = ["FCN"]


class FCN(nnx.Module):
    """FCN-8s/16s/32s for ``x [B, H, W, in_channels] -> logits [B, H, W, num_classes]`` (float32).

    Args:
      in_channels: input channels.
      num_classes: output channels.
      variant: ``"8s"`` (default), ``"16s"`` or ``"32s"``.
      width: channels of the first VGG stage (64); ``fc6``/``fc7`` have ``64 * width``.
      batch_norm: BatchNorm after the VGG convolutions and ``fc6``/``fc7`` (default False).
      dropout_rate: dropout after ``fc6`` and ``fc7`` (default 0.5, the original's).
      dtype: computation dtype; the logits are returned in float32.
      param_dtype: parameter dtype.
      backbone_checkpoint: optional ``.npz`` file or orbax directory for the VGG stages
        (``model.backbone``; ``fc6``/``fc7`` are not part of it); see
        :func:`dibe_jax.models.load_backbone`.
      rngs: ``nnx.Rngs`` for initialisation and dropout.
    """

    model_name = "fcn"
    input_multiple = 32

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        *,
        variant: str = "8s",
        width: int = 64,
        batch_norm: bool = False,
        dropout_rate: float = 0.5,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        backbone_checkpoint: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.num_classes = c = check_positive_int(num_classes, "num_classes")
        self.variant = check_choice("variant", variant, ("8s", "16s", "32s"))
        width = check_positive_int(width, "width")
        self.dtype = canonical_dtype(dtype, "dtype")
        param_dtype = canonical_dtype(param_dtype, "param_dtype")
        kw = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.backbone = VGG(in_channels, depth=16, width=width, batch_norm=batch_norm, **kw)
        f3, f4, f5 = self.backbone.stage_features[2:]
        fc = 64 * width
        self.fc6 = ConvBN(f5, fc, 7, use_bias=True, batch_norm=batch_norm, **kw)
        self.fc7 = ConvBN(fc, fc, 1, use_bias=True, batch_norm=batch_norm, **kw)
        self.dropout = nnx.Dropout(check_rate(dropout_rate), rngs=rngs)

        def score(features: int) -> nnx.Conv:
            return nnx.Conv(features, c, (1, 1), kernel_init=nnx.initializers.zeros, **kw)

        def up(kernel: int, stride: int) -> nnx.ConvTranspose:
            return conv_transpose(
                c, c, kernel, stride, use_bias=False, kernel_init=bilinear_kernel_init, **kw
            )

        self.score_fr = nnx.Conv(fc, c, (1, 1), kernel_init=he_normal, **kw)
        if self.variant == "32s":
            self.upscore = up(64, 32)
        elif self.variant == "16s":
            self.upscore2, self.score_pool4, self.upscore = up(4, 2), score(f4), up(32, 16)
        else:
            self.upscore2, self.score_pool4 = up(4, 2), score(f4)
            self.upscore_pool4, self.score_pool3, self.upscore = up(4, 2), score(f3), up(16, 8)
        if backbone_checkpoint is not None:
            load_backbone(self.backbone, backbone_checkpoint)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [B, H, W, in_channels]`` -> logits ``[B, H, W, num_classes]`` in float32."""
        ops.check_input(
            x, in_channels=self.in_channels, multiple=self.input_multiple, model=self.model_name
        )
        pools = []
        for i in range(len(self.backbone.stages)):
            x = nnx.max_pool(self.backbone.stage(i, x), (2, 2), strides=(2, 2))
            pools.append(x)
        x = self.dropout(self.fc6(x))
        x = self.dropout(self.fc7(x))
        score = self.score_fr(x)
        if self.variant != "32s":
            score = self.upscore2(score) + self.score_pool4(pools[3])
        if self.variant == "8s":
            score = self.upscore_pool4(score) + self.score_pool3(pools[2])
        return self.upscore(score).astype(jnp.float32)
