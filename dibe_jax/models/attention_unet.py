"""Attention U-Net: Oktay et al., *Attention U-Net: Learning where to look for the pancreas*,
MIDL 2018 (arXiv:1804.03999).

A :class:`~dibe_jax.models.unet.UNet` whose skip connections pass through additive attention
gates (Sec. 2, Eqs. 1-2) before being concatenated in the decoder. The gating signal ``g`` is the
coarser decoder feature (before upsampling), as in the paper's Fig. 2 and the authors'
``GridAttentionBlock2D`` (mode ``concatenation``, sub-sample factor 2):

.. math::

    q = \\psi^T \\sigma_1(W_x^T x + W_g^T g + b_g) + b_\\psi, \\qquad
    \\alpha = \\mathrm{up}_2(\\sigma_2(q)), \\qquad \\hat{x} = \\mathrm{BN}(W (\\alpha \\odot x))

with ``W_x`` a 2x2 stride-2 convolution (brings ``x`` to ``g``'s resolution, no bias), ``W_g`` and
``psi`` 1x1 convolutions with bias, ``sigma_1 = ReLU``, ``sigma_2 = sigmoid``, bilinear x2
upsampling of the coefficients and the authors' output transform ``W`` (1x1 convolution with
bias, then BatchNorm). The intermediate width is ``F_int = F_x / 2``.

Everything else (encoder, decoder, upsampling mode, dropout, input sizes: multiples of
``2**num_stages``) is the U-Net's; see :mod:`dibe_jax.models.unet`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dibe_jax.models import ops
from dibe_jax.models.blocks import BN_EPSILON, BN_MOMENTUM, Dtype, conv_initializers
from dibe_jax.models.unet import UNet

__all__ = ["AttentionGate", "AttentionUNet"]


class AttentionGate(nnx.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, Fig. 2).

    ``x [B, H, W, skip_features]``, ``g [B, H/2, W/2, gate_features]`` ->
    ``[B, H, W, skip_features]``. The attention coefficients of the last call are not stored;
    :meth:`coefficients` returns them (``[B, H, W, 1]`` in ``[0, 1]``). ``kernel_init`` is a
    scheme of :func:`~dibe_jax.models.blocks.conv_initializers` (the U-Net's option).
    """

    def __init__(
        self,
        skip_features: int,
        gate_features: int,
        *,
        inter_features: int | None = None,
        align_corners: bool = True,
        kernel_init: str = "torch_default",
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        inter = max(1, skip_features // 2) if inter_features is None else inter_features
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        def init(fan_in: int) -> dict:
            return conv_initializers(kernel_init, fan_in)

        self.theta = nnx.Conv(
            skip_features,
            inter,
            (2, 2),
            strides=(2, 2),
            padding="VALID",
            use_bias=False,
            **init(4 * skip_features),
            **kw,
        )
        self.phi = nnx.Conv(gate_features, inter, (1, 1), **init(gate_features), **kw)
        self.psi = nnx.Conv(inter, 1, (1, 1), **init(inter), **kw)
        self.out = nnx.Conv(skip_features, skip_features, (1, 1), **init(skip_features), **kw)
        self.bn = nnx.BatchNorm(
            skip_features,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.align_corners = align_corners

    def coefficients(self, x: jax.Array, g: jax.Array) -> jax.Array:
        """Attention coefficients ``alpha [B, H, W, 1]`` of skip ``x`` under gating ``g``."""
        theta = self.theta(x)
        phi = self.phi(g)
        if phi.shape[1:3] != theta.shape[1:3]:
            phi = ops.resize_bilinear(phi, theta.shape[1:3], align_corners=self.align_corners)
        q = self.psi(jax.nn.relu(theta + phi.astype(theta.dtype)))
        alpha = jax.nn.sigmoid(q)
        return ops.resize_bilinear(alpha, x.shape[1:3], align_corners=self.align_corners)

    def __call__(self, x: jax.Array, g: jax.Array) -> jax.Array:
        alpha = self.coefficients(x, g)
        return self.bn(self.out(alpha.astype(x.dtype) * x))


class AttentionUNet(UNet):
    """U-Net with attention gates on its skips; the signature is :class:`UNet`'s.

    ``x [B, H, W, in_channels] -> logits [B, H, W, num_classes]`` (float32), ``H`` and ``W``
    multiples of ``2**num_stages``. Parameter count at ``width=64``, 3 input channels, 1 class,
    bilinear upsampling: 18,485,381 (U-Net 17,262,977 plus four gates; arithmetic in
    ``tests/test_models.py``).
    """

    model_name = "attention_unet"

    def _make_gate(self, skip_features: int, gate_features: int, **kw) -> AttentionGate:
        return AttentionGate(skip_features, gate_features, align_corners=self.align_corners, **kw)
