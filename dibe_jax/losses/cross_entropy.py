r"""Pixel-wise softmax losses of the CDFL paper (Su, Anderson & Mihaylova): cross-entropy
(CDFL Eq. 1), balanced cross-entropy (CDFL Eq. 2) and the softmax focal loss (CDFL Eq. 3).

Every loss has the signature ``loss(logits, labels, *, <hyperparameters>, where=None,
pool_batch=False, axis_name=None) -> jax.Array`` and returns one value per image, shape
``[B]``: the mean over the image's (unmasked) pixels. The caller takes the batch mean.

* ``logits``: float ``[B, *spatial, C]``, ``C >= 2``; ``p_c = softmax(logits)_c``.
* ``labels``: integer class ids ``[B, *spatial]`` in ``[0, C)`` (checked when concrete, i.e.
  outside ``jit``), or one-hot / soft labels ``[B, *spatial, C]``.
* ``where``: optional pixel mask ``[B, *spatial]``; pixels with 0 leave every sum and mean,
  and a fully masked image has loss 0.

Hyperparameters are keyword-only and may be Python numbers (range-checked eagerly) or JAX
arrays (traced: one compilation per input shape).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax.losses import _checks, _reduce, _softmax
from dibe_jax.losses._safe import safe_div

__all__ = ["balanced_cross_entropy", "softmax_cross_entropy", "softmax_focal"]


# ------------------------------------------------------------------ jitted implementations


@jax.jit
def _softmax_ce(logits, labels, where, *, class_weights):
    logp, y, w = _softmax.prepare(logits, labels, where)
    ce = -y * logp  # [B, P, C]: -y_c log p_c
    if class_weights is not None:
        ce = ce * jnp.asarray(class_weights, logp.dtype)[None, None, :]
    return _reduce.pixel_mean(jnp.sum(ce, axis=-1), w)


@functools.partial(jax.jit, static_argnames=("pool_batch", "axis_name"))
def _balanced_ce(logits, labels, where, *, pool_batch, axis_name):
    logp, y, w = _softmax.prepare(logits, labels, where)
    n_c = jnp.sum(y if w is None else y * w[..., None], axis=1)  # [B, C]
    n_c = _reduce.pool(n_c, pool_batch=pool_batch, axis_name=axis_name)
    n = jnp.sum(n_c, axis=-1, keepdims=True)
    weights = jax.lax.stop_gradient(safe_div(n - n_c, n))  # [B, C]: (N - N_c) / N
    return _reduce.pixel_mean(jnp.sum(-y * logp * weights[:, None, :], axis=-1), w)


@jax.jit
def _softmax_focal(logits, labels, where, *, class_weights, gamma):
    logp, y, w = _softmax.prepare(logits, labels, where)
    if jnp.ndim(labels) == jnp.ndim(logits) - 1:  # class ids: only the labelled class's 1 - p
        log_q = jax.nn.logsumexp(logp, axis=-1, where=y == 0, keepdims=True)  # log Σ_{k≠y} p_k
    else:  # soft labels: every class's log(1 - p_c)
        log_q, _ = _softmax.log1m_softmax(logp)
    per = -y * jnp.exp(gamma * log_q) * logp  # -y_c (1 - p_c)^γ log p_c
    if class_weights is not None:
        per = per * jnp.asarray(class_weights, logp.dtype)[None, None, :]
    return _reduce.pixel_mean(jnp.sum(per, axis=-1), w)


# --------------------------------------------------------------------------- public API


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy, CDFL Eq. 1, optionally class-weighted, mean over pixels.

    .. math:: L = \frac{1}{N}\sum_i \Big(-\sum_c k_c\, y_{ic} \log p_{ic}\Big)

    ``N`` counts the (unmasked) pixels, so class weights scale the loss rather than
    renormalise it (PyTorch's ``reduction="mean"`` divides by ``Σ_i k_{y_i}`` instead).

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the pixels labelled ``c``
        (default: 1 for every class).
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> float(softmax_cross_entropy(jnp.zeros((1, 2, 4)), jnp.array([[0, 3]]))[0])  # log 4
    1.3862...
    """
    _checks.check_softmax_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    c = jnp.shape(logits)[-1]
    class_weights = _checks.check_class_weights("class_weights", class_weights, c)
    return _softmax_ce(logits, labels, where, class_weights=class_weights)


def balanced_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    pool_batch: bool = True,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Balanced cross-entropy, CDFL Eq. 2: class weights ``w_c = (N - N_c) / N`` from the labels.

    .. math:: L = \frac{1}{N}\sum_i \Big(-\sum_c w_c\, y_{ic} \log p_{ic}\Big), \quad
              w_c = \frac{N - N_c}{N}

    ``N`` is the number of (unmasked) pixels and ``N_c`` those labelled ``c``, counted over the
    batch (``pool_batch=True``, the default here: the paper's counts are the batch's) or per
    image. The weights are constants (no gradient). A batch holding one class only has
    ``w = 0`` for it, hence loss 0; with two classes ``w_c`` is the other class's share.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: default True (CDFL: ``N`` and ``N_c`` count the training batch); False
        computes the weights from each image's own pixels.
      axis_name: also count over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp  # 3 pixels of class 0, 1 of class 1: w = (1/4, 3/4)
    >>> z, y = jnp.zeros((1, 4, 2)), jnp.array([[0, 0, 0, 1]])
    >>> round(float(balanced_cross_entropy(z, y)[0]), 4)  # (3·¼ + ¾) · log 2 / 4
    0.2599
    """
    _checks.check_softmax_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    return _balanced_ce(logits, labels, where, pool_batch=pool_batch, axis_name=axis_name)


def softmax_focal(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Softmax focal loss, CDFL Eq. 3 (Lin et al. for C classes), mean over pixels.

    .. math:: L = \frac{1}{N}\sum_i \Big(-\sum_c k_c\, y_{ic} (1 - p_{ic})^\gamma
              \log p_{ic}\Big)

    ``k_c`` is the paper's per-class weight ``α_c``. ``(1 - p)^γ = exp(γ log(1 - p))`` with
    ``log(1 - p_y) = log Σ_{k≠y} p_k`` summed in log space
    (:func:`~dibe_jax.losses._softmax.log1m_softmax` for soft labels): finite value and
    gradient for every γ >= 0 and logits in [-100, 100], exact where ``p_y`` rounds to 1.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      class_weights: optional weights ``k_c >= 0`` (CDFL Eq. 3's ``α_c``) of the pixels
        labelled ``c``: ``[C]``, or one number for every class (default: 1).
      gamma: γ >= 0, focusing exponent of ``(1 - p)``; γ = 0 gives
        :func:`softmax_cross_entropy`.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp  # p = 1/2 for the true class: (1/2)^2 log 2
    >>> round(float(softmax_focal(jnp.zeros((1, 1, 2)), jnp.array([[1]]))[0]), 4)
    0.1733
    """
    _checks.check_softmax_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    _checks.check_nonneg("gamma", gamma)
    class_weights = _checks.check_class_weights(
        "class_weights", class_weights, jnp.shape(logits)[-1], allow_scalar=True
    )
    return _softmax_focal(logits, labels, where, class_weights=class_weights, gamma=gamma)
