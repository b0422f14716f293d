"""Layers shared by the segmentation models: convolution + BatchNorm + ReLU, the U-Net double
convolution, transposed convolutions with PyTorch padding, and argument checks.

Conventions (the same in every model of :mod:`dibe_jax.models`):

* NHWC layout, kernels ``[kh, kw, in, out]``.
* Convolution padding is explicit and symmetric (``dilation * (k - 1) // 2`` per side), as in the
  PyTorch reference implementations, so a stride-2 layer maps ``H`` to ``H / 2`` for even ``H``.
* BatchNorm uses ``momentum=0.9`` and ``epsilon=1e-5`` (PyTorch's ``momentum=0.1``, ``eps=1e-5``).
* Convolution kernels use He (Kaiming) normal initialisation with ``fan_out``, as torchvision's
  ResNet and VGG (``kernel_init="he_normal_fan_out"``, biases 0). ``kernel_init="torch_default"``
  is what an ``nn.Conv2d`` / ``nn.ConvTranspose2d`` gets when nobody initialises it; see
  :func:`conv_initializers` (the default of the U-Net and Attention U-Net, which take either as
  a model option).
* ``dtype`` is the computation dtype (e.g. ``jnp.bfloat16``), ``param_dtype`` the storage dtype
  of the parameters (``float32``); BatchNorm statistics are always computed in float32.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dibe_jax._validate import check_choice

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "KERNEL_INITS",
    "ConvBN",
    "DoubleConv",
    "Dtype",
    "bilinear_kernel_init",
    "conv_initializers",
    "conv_transpose",
    "he_normal",
    "torch_bias_init",
    "torch_kernel_init",
    "variance_scaling",
]

Dtype = Any
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _draw_flat(draw, key: jax.Array, shape: tuple[int, ...], dtype: Dtype, *args) -> jax.Array:
    """``draw(key, shape, dtype, *args)`` drawn as one flat vector and reshaped.

    With JAX's default ``jax_threefry_partitionable=True`` the bits of element ``i`` depend only
    on its flat index, so this equals the direct draw bit for bit; but XLA:CPU compiles the
    random-bit program over a flat vector about 5x faster than over a 4-D kernel shape (about 0.3
    s against 2 s a shape on this project's CPU), which is most of a model's start-up time.
    """
    return draw(key, (math.prod(shape),), dtype, *args).reshape(shape)


def variance_scaling(scale: float, mode: str, distribution: str):
    """``jax.nn.initializers.variance_scaling(scale, mode, distribution)`` for kernels
    ``[..., in, out]`` with the same values, drawn flat (:func:`_draw_flat`).

    ``fan_in = in * receptive``, ``fan_out = out * receptive`` with ``receptive`` the product
    of the leading (spatial) dimensions; ``mode`` is ``"fan_in"`` or ``"fan_out"``,
    ``distribution`` ``"normal"`` (``N(0, scale / fan)``) or ``"uniform"``
    (``U(-sqrt(3 scale / fan), sqrt(3 scale / fan))``).
    """
    check_choice("mode", mode, ("fan_in", "fan_out"))
    check_choice("distribution", distribution, ("normal", "uniform"))

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        shape = tuple(int(d) for d in shape)
        receptive = math.prod(shape[:-2])
        fan = (shape[-2] if mode == "fan_in" else shape[-1]) * receptive
        variance = jnp.array(scale / fan, dtype=dtype)
        if distribution == "normal":
            draw = _draw_flat(jax.random.normal, key, shape, dtype)
        else:
            draw = _draw_flat(jax.random.uniform, key, shape, dtype, -1)
        # the barrier keeps XLA from folding the scale into the draw under jit, so that a
        # jitted initialisation gives the eager values bit for bit
        factor = jnp.sqrt(variance if distribution == "normal" else 3 * variance)
        return jax.lax.optimization_barrier(draw) * factor

    return init


he_normal = variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default ``kaiming_uniform_(w, a=sqrt(5))``: gain sqrt(2 / (1 + a^2)) = sqrt(1/3), bound
# gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std
# 1 / sqrt(3 fan_in); variance_scaling(1/3, "fan_in", "uniform") has that bound exactly.
torch_kernel_init = variance_scaling(1.0 / 3.0, "fan_in", "uniform")
KERNEL_INITS = ("he_normal_fan_out", "torch_default")


def torch_bias_init(fan_in: int):
    """PyTorch's default bias initialiser of a layer with ``fan_in`` inputs per output:
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``nn.Conv2d.reset_parameters``)."""
    bound = 1.0 / float(np.sqrt(fan_in))

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return _draw_flat(jax.random.uniform, key, tuple(shape), dtype, -bound, bound)

    return init


def conv_initializers(kernel_init: str, fan_in: int, *, transposed: bool = False) -> dict[str, Any]:
    """``kernel_init`` / ``bias_init`` keyword arguments of ``nnx.Conv`` for a named scheme.

    Args:
      kernel_init: ``"he_normal_fan_out"`` (every model here but the U-Nets): kernel
        ``N(0, 2 / fan_out)`` with ``fan_out = kh * kw * out`` (torchvision's ResNet/VGG),
        biases 0. ``"torch_default"``: PyTorch's unchanged ``nn.Conv2d`` initialisation,
        kernel ``U(-b, b)`` with ``b = 1 / sqrt(fan_in)`` (std ``1 / sqrt(3 fan_in)``,
        ``kaiming_uniform_(a=sqrt(5))``) and bias ``U(-b, b)``: the default of the U-Net and
        Attention U-Net.
      fan_in: what PyTorch calls the layer's fan-in: ``kh * kw * in`` for a convolution. For a
        transposed convolution PyTorch's weight is ``[in, out, kh, kw]`` and its fan-in is
        ``kh * kw * out`` (dimension 1); pass that, with ``transposed=True``.
      transposed: the layer is an ``nnx.ConvTranspose`` with kernel ``[kh, kw, in, out]``, so
        PyTorch's fan-in is flax's ``fan_out`` axis.

    Returns:
      ``{"kernel_init": ..., "bias_init": ...}``.

    >>> init = conv_initializers("torch_default", 27)
    >>> w = init["kernel_init"](jax.random.key(0), (3, 3, 3, 1000))
    >>> bool(jnp.abs(w).max() <= 1 / 27**0.5), round(float(w.std() * (3 * 27) ** 0.5), 1)
    (True, 1.0)
    """
    check_choice("kernel_init", kernel_init, KERNEL_INITS)
    if kernel_init == "he_normal_fan_out":
        return {"kernel_init": he_normal, "bias_init": nnx.initializers.zeros}
    mode = "fan_out" if transposed else "fan_in"
    kernel = variance_scaling(1.0 / 3.0, mode, "uniform")
    return {"kernel_init": kernel, "bias_init": torch_bias_init(fan_in)}


def canonical_dtype(dtype: Dtype, name: str) -> jnp.dtype:
    """``jnp.dtype(dtype)`` for a floating dtype, ``ValueError`` naming the argument otherwise."""
    try:
        out = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"{name}={dtype!r} is not a dtype") from err
    if not jnp.issubdtype(out, jnp.floating):
        raise ValueError(f"{name} must be a floating dtype; got {out}")
    return out


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is a positive ``int``; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_rate(value: Any, name: str = "dropout_rate") -> float:
    """Return ``value`` as a float in ``[0, 1)``; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")
    return float(value)


def scaled(channels: int, width: int) -> int:
    """Channels of a layer that has ``channels`` at the published width 64, at ``width``."""
    return max(1, channels * width // 64)


class ConvBN(nnx.Module):
    """``Conv(k x k, stride, dilation) -> BatchNorm (optional) -> ReLU (optional)``.

    ``x [B, H, W, in_features] -> [B, ceil(H / strides), ceil(W / strides), out_features]``.
    ``kernel_init`` names the initialisation scheme of :func:`conv_initializers`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        strides: int = 1,
        dilation: int = 1,
        use_bias: bool = False,
        batch_norm: bool = True,
        activation: bool = True,
        kernel_init: str = "he_normal_fan_out",
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        pad = dilation * (kernel_size - 1) // 2
        inits = conv_initializers(kernel_init, kernel_size * kernel_size * in_features)
        self.conv = nnx.Conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=(strides, strides),
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=(dilation, dilation),
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
            **inits,
        )
        self.bn = (
            nnx.BatchNorm(
                out_features,
                momentum=BN_MOMENTUM,
                epsilon=BN_EPSILON,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )
            if batch_norm
            else None
        )
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return jax.nn.relu(x) if self.activation else x


class DoubleConv(nnx.Module):
    """The U-Net unit ``(Conv3x3 -> BN -> ReLU) x 2`` (Ronneberger et al., MICCAI 2015, Fig. 1,
    with BatchNorm as in the common PyTorch implementation).

    ``x [B, H, W, in_features] -> [B, H, W, out_features]``; the first convolution outputs
    ``mid_features`` (default ``out_features``). Convolutions have no bias (BatchNorm follows);
    ``kernel_init`` is a scheme of :func:`conv_initializers`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mid_features: int | None = None,
        *,
        kernel_init: str = "he_normal_fan_out",
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        mid_features = out_features if mid_features is None else mid_features
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ConvBN(in_features, mid_features, 3, **kw)
        self.conv2 = ConvBN(mid_features, out_features, 3, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv2(self.conv1(x))


def bilinear_kernel_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32):
    """Initialiser of a ``[k, k, C, C]`` transposed-convolution kernel to bilinear upsampling.

    Channel ``c`` maps to channel ``c`` only, with the separable tent filter of FCN's
    ``surgery.upsample_filt`` (Long et al., CVPR 2015); ``key`` is unused.
    """
    del key
    k, _, c_in, c_out = shape
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.arange(k)
    filt_1d = 1 - np.abs(og - center) / factor
    filt = np.outer(filt_1d, filt_1d)
    kernel = np.zeros(shape, dtype=np.float32)
    for c in range(min(c_in, c_out)):
        kernel[:, :, c, c] = filt
    return jnp.asarray(kernel, dtype=dtype)


def conv_transpose(
    in_features: int,
    out_features: int,
    kernel_size: int,
    strides: int,
    *,
    use_bias: bool = True,
    kernel_init: Any = he_normal,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.ConvTranspose:
    """Transposed convolution that maps ``H`` to exactly ``H * strides``.

    Equivalent to ``torch.nn.ConvTranspose2d(kernel_size, stride, padding=(k - s) // 2)``: in
    ``lax.conv_transpose`` terms the dilated input is padded by ``k - 1 - (k - s) // 2`` per side.
    The kernel is ``[k, k, in, out]`` and is not flipped, so a PyTorch weight ``w [in, out, k, k]``
    corresponds to ``w.permute(2, 3, 0, 1)[::-1, ::-1]``. Requires ``kernel_size - strides`` even.
    ``kernel_init`` is an initialiser or a scheme name of :func:`conv_initializers` (then the
    bias follows the same scheme, with PyTorch's transposed fan-in ``k * k * out``).
    """
    if (kernel_size - strides) % 2:
        raise ValueError(f"kernel_size - strides must be even; got {kernel_size}, {strides}")
    inits: dict[str, Any] = {"kernel_init": kernel_init}
    if isinstance(kernel_init, str):
        fan_in = kernel_size * kernel_size * out_features
        inits = conv_initializers(kernel_init, fan_in, transposed=True)
    pad = kernel_size - 1 - (kernel_size - strides) // 2
    return nnx.ConvTranspose(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
        **inits,
    )
