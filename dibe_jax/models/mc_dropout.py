"""Monte Carlo dropout: ``T`` stochastic forward passes in one call.

Gal & Ghahramani, *Dropout as a Bayesian approximation*, ICML 2016; used by the cross dropout
focal loss (Su, Anderson & Mihaylova, SDF 2022, Eq. 4, ``T = 5``) and by Bayesian SegNet.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["mc_dropout_logits"]


def _as_key(rngs_or_key: Any) -> jax.Array:
    if isinstance(rngs_or_key, nnx.Rngs):
        return rngs_or_key.dropout()  # falls back to the "default" stream
    if isinstance(rngs_or_key, nnx.RngStream):
        return rngs_or_key()
    key = jnp.asarray(rngs_or_key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(
        "rngs_or_key must be an nnx.Rngs, an nnx.RngStream or a PRNG key "
        f"(jax.random.key / jax.random.PRNGKey); got {type(rngs_or_key).__name__} "
        f"with dtype {key.dtype} and shape {key.shape}"
    )


def mc_dropout_logits(
    model: nnx.Module,
    x: jax.Array,
    *,
    num_samples: int,
    rngs_or_key: nnx.Rngs | nnx.RngStream | jax.Array,
    sequential: bool = False,
) -> jax.Array:
    """Logits of ``num_samples`` forward passes with independent dropout masks.

    BatchNorm runs in evaluation mode (running averages, statistics not updated) and dropout is
    active in every pass, whatever mode ``model`` is in; ``model`` itself is not modified (its
    mode, statistics and dropout RNG state stay as they are). Each dropout layer of pass ``t``
    draws its masks from ``fold_in(split(key, T)[t], layer)``, so the result is a deterministic
    function of the key. The passes are batched with ``jax.vmap`` (memory ``T x`` one pass) or,
    with ``sequential=True``, run one after another with ``jax.lax.map`` (memory of one pass).
    Differentiable with respect to the parameters (``nnx.grad`` of a loss built on it works), and
    usable under ``jax.jit`` / ``nnx.jit``.

    Args:
      model: a segmentation model, ``x [B, H, W, C_in] -> [B, H, W, C]``.
      x: ``[B, H, W, C_in]`` input.
      num_samples: ``T``, the number of passes (5 in the CDFL paper).
      rngs_or_key: ``nnx.Rngs`` (its ``dropout`` stream, else ``default``, is advanced once), an
        ``nnx.RngStream`` or a PRNG key.
      sequential: trade speed for memory (see above).

    Returns:
      ``[T, B, H, W, C]`` float32 logits. With ``dropout_rate=0`` all ``T`` passes are identical.

    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> from dibe_jax.models import create
    >>> model = create("unet", in_channels=1, width=4, num_stages=1, dropout_rate=0.5,
    ...                rngs=nnx.Rngs(0))
    >>> mc = nnx.jit(mc_dropout_logits, static_argnames="num_samples")
    >>> mc(model, jnp.ones((2, 16, 16, 1)), num_samples=5, rngs_or_key=jax.random.key(1)).shape
    (5, 2, 16, 16, 1)
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    keys = jax.random.split(_as_key(rngs_or_key), num_samples)
    view = nnx.view(model, use_running_average=True, deterministic=False, raise_if_not_found=False)
    graphdef, rng_state, rest = nnx.split(view, nnx.RngState, ...)
    flat = list(nnx.to_flat_state(rng_state))

    def one_pass(key: jax.Array) -> jax.Array:
        fresh = []
        for i, (path, var) in enumerate(flat):
            if isinstance(var, nnx.RngKey):
                var = var.replace(jax.random.fold_in(key, i))
            elif isinstance(var, nnx.RngCount):
                var = var.replace(jnp.zeros_like(var.get_value()))
            fresh.append((path, var))
        return nnx.merge(graphdef, nnx.from_flat_state(fresh), rest)(x).astype(jnp.float32)

    if sequential:
        return jax.lax.map(one_pass, keys)
    return jax.vmap(one_pass)(keys)
