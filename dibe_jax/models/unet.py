"""U-Net: Ronneberger, Fischer & Brox, *U-Net: Convolutional networks for biomedical image
segmentation*, MICCAI 2015.

The layout follows the paper's Fig. 1 with the two changes that the DIBE paper and the common
PyTorch implementation (milesial/Pytorch-UNet) make: "same" padding (the output has the input's
size) and BatchNorm after every convolution. Upsampling is configurable:

* ``upsampling="bilinear"`` (default; the DIBE paper's U-Net "applying linear interpolation in the
  process of upsampling"): bilinear x2 with ``align_corners=True``, no learned up-convolution. As in
  milesial's implementation, the bottleneck and every decoder unit output half the channels of the
  transposed version (``factor = 2``) so that the concatenation still doubles the width:
  bottleneck ``16w -> 8w``; decoder unit ``i`` is ``DoubleConv(2 c_i -> c_i / 2, mid c_i)``
  (``c_i = w 2^i``) and the last one ``DoubleConv(2w -> w, mid w)``.
* ``upsampling="transposed"`` (the original paper): a 2x2 stride-2 "up-convolution" that halves
  the channels, then ``DoubleConv(2 c_i -> c_i)``.

Dropout: the original places dropout "at the end of the contracting path" (its Caffe model: rate
0.5 on the outputs of the two deepest encoder units). ``dropout_rate`` enables exactly that;
the default 0.0 is the DIBE paper's (milesial's) U-Net, which has none.

Initialisation: ``kernel_init="torch_default"`` (default) is what a PyTorch U-Net gets when nobody
initialises it by hand, the DIBE paper's setting (``nn.Conv2d``'s ``kaiming_uniform_(a=sqrt(5))``:
kernel and bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, kernel std ``1/sqrt(3 fan_in)``);
``kernel_init="he_normal_fan_out"`` draws kernels from ``N(0, 2 / fan_out)`` with zero biases
(torchvision's ResNet/VGG; the default before 2026-11-30), about ``sqrt(6)`` times larger for
``fan_in = fan_out``. With BatchNorm after every convolution the output does not depend on a
kernel's scale but its effective learning rate does (``lr / ||w||^2``), so the two train
differently at the same learning rate: on CrackForest at the paper's lr 0.01 the PyTorch scheme
learns faster (``experiments/parity_torch.py --init-study``, EXPERIMENTS.md). BatchNorm scales
start at 1 and offsets at 0 in both.

Input sizes: ``H`` and ``W`` must be multiples of ``2**num_stages`` (16 by default: 112, 224 and
448 are all accepted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax._validate import check_choice
from dibe_jax.models import ops
from dibe_jax.models.blocks import (
    KERNEL_INITS,
    DoubleConv,
    Dtype,
    canonical_dtype,
    check_positive_int,
    check_rate,
    conv_initializers,
    conv_transpose,
)
from dibe_jax.models.checkpoint import load_backbone

__all__ = ["UNet", "UNetEncoder"]


class UNetEncoder(nnx.Module):
    """The contracting path: ``DoubleConv`` units separated by 2x2 max pooling.

    ``x [B, H, W, C] -> [x_0, ..., x_n]`` with ``x_i [B, H / 2^i, W / 2^i, features[i]]``.
    Dropout (if ``dropout_rate > 0``) is applied to the outputs of the last two units, before
    they are pooled or used as skip connections (Ronneberger et al., Sec. 3).
    """

    def __init__(
        self,
        in_channels: int,
        features: tuple[int, ...],
        *,
        dropout_rate: float = 0.0,
        kernel_init: str = "torch_default",
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inputs = (in_channels, *features[:-1])
        self.units = nnx.List(
            [DoubleConv(c_in, c_out, **kw) for c_in, c_out in zip(inputs, features, strict=True)]
        )
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.features = features

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        outs = []
        for i, unit in enumerate(self.units):
            if i:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = unit(x)
            if i >= len(self.units) - 2:
                x = self.dropout(x)
            outs.append(x)
        return outs


class UNet(nnx.Module):
    """U-Net for ``x [B, H, W, in_channels] -> logits [B, H, W, num_classes]`` (float32).

    Args:
      in_channels: input channels.
      num_classes: output channels (1 for the binary defect masks of the DIBE paper).
      width: channels of the first unit (64 in the paper); unit ``i`` has ``width * 2**i``.
      num_stages: number of 2x2 poolings (4 in the paper). Inputs must be multiples of
        ``2**num_stages``.
      upsampling: ``"bilinear"`` (default, DIBE / milesial) or ``"transposed"`` (original).
      align_corners: bilinear upsampling convention (``True``, as milesial).
      dropout_rate: dropout at the end of the contracting path (default 0.0: none).
      kernel_init: ``"torch_default"`` (default: PyTorch's default ``nn.Conv2d``
        initialisation, biases included, as the paper's PyTorch U-Net) or
        ``"he_normal_fan_out"`` (He normal on fan-out, zero biases); see
        :func:`~dibe_jax.models.blocks.conv_initializers`. BatchNorm starts at scale 1, offset 0.
      dtype: computation dtype (e.g. ``jnp.bfloat16``); the logits are returned in float32.
      param_dtype: parameter dtype.
      backbone_checkpoint: optional ``.npz`` file or orbax directory with the weights of the
        contracting path (``model.backbone``); see :func:`dibe_jax.models.load_backbone`.
      rngs: ``nnx.Rngs`` for initialisation and dropout.

    Parameter count at ``width=64``, 3 input channels, 1 class: 17,262,977 (bilinear) and
    31,037,633 (transposed); the arithmetic is in ``tests/test_models.py``. The original (one input
    channel, two classes, convolution biases, no BatchNorm) has 31,030,658; the difference is the
    third input channel (+1,152), one class (-65) and BN replacing the biases (+5,888).
    """

    model_name = "unet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        *,
        width: int = 64,
        num_stages: int = 4,
        upsampling: str = "bilinear",
        align_corners: bool = True,
        dropout_rate: float = 0.0,
        kernel_init: str = "torch_default",
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        backbone_checkpoint: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        width = check_positive_int(width, "width")
        n = check_positive_int(num_stages, "num_stages")
        self.upsampling = check_choice("upsampling", upsampling, ("bilinear", "transposed"))
        self.align_corners = bool(align_corners)
        self.dtype = canonical_dtype(dtype, "dtype")
        param_dtype = canonical_dtype(param_dtype, "param_dtype")
        self.input_multiple = 2**n
        self.kernel_init = check_choice("kernel_init", kernel_init, KERNEL_INITS)
        kw = dict(kernel_init=kernel_init, dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)

        factor = 2 if upsampling == "bilinear" else 1
        features = tuple(width * 2**i for i in range(n)) + (width * 2**n // factor,)
        self.backbone = UNetEncoder(
            in_channels, features, dropout_rate=check_rate(dropout_rate), **kw
        )
        ups, gates, units = [], [], []
        deep = features[-1]
        for i in reversed(range(n)):
            skip = features[i]
            if upsampling == "transposed":
                ups.append(conv_transpose(deep, deep // 2, 2, 2, **kw))
                up_features = deep // 2
                out, mid = skip, None
            else:
                ups.append(None)
                up_features = deep
                out = skip // 2 if i else skip
                mid = (skip + up_features) // 2
            gates.append(self._make_gate(skip, deep, **kw))
            units.append(DoubleConv(skip + up_features, out, mid, **kw))
            deep = out
        self.ups = nnx.List(ups)
        self.gates = nnx.List(gates)
        self.decoder = nnx.List(units)
        self.head = nnx.Conv(
            deep,
            num_classes,
            (1, 1),
            param_dtype=param_dtype,
            dtype=self.dtype,
            rngs=rngs,
            **conv_initializers(kernel_init, deep),
        )
        if backbone_checkpoint is not None:
            load_backbone(self.backbone, backbone_checkpoint)

    def _make_gate(self, skip_features: int, gate_features: int, **kw) -> nnx.Module | None:
        """Hook for :class:`~dibe_jax.models.attention_unet.AttentionUNet` (no gate here);
        ``kw`` holds ``kernel_init``, ``dtype``, ``param_dtype`` and ``rngs``."""
        del skip_features, gate_features, kw
        return None

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [B, H, W, in_channels]`` -> logits ``[B, H, W, num_classes]`` in float32."""
        ops.check_input(
            x,
            in_channels=self.in_channels,
            multiple=self.input_multiple,
            model=type(self).model_name,
        )
        feats = self.backbone(x)
        y = feats[-1]
        for j, i in enumerate(reversed(range(len(feats) - 1))):
            skip = feats[i]
            if self.gates[j] is not None:
                skip = self.gates[j](skip, y)
            if self.ups[j] is not None:
                y = self.ups[j](y)
            else:
                y = ops.resize_bilinear(y, skip.shape[1:3], align_corners=self.align_corners)
            y = self.decoder[j](jnp.concatenate([skip, y.astype(skip.dtype)], axis=-1))
        return self.head(y).astype(jnp.float32)
