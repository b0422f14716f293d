r"""Parameter-free loss (PF-loss), Du et al., *Parameter-Free Loss for Class-Imbalanced Deep
Learning in Image Classification* (IEEE TNNLS), PF Eqs. 9-10 and 13, applied to pixels.

PF-loss is a mini-batch statistic: every class ``j`` contributes the log of the **arithmetic**
mean of the probability its pixels give to the right class, so each class counts the same
whatever its pixel count. It returns one scalar for the batch (not ``[B]``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax.losses import _checks

__all__ = ["pf_loss"]


def _log_weighted_sum(a: jax.Array, b: jax.Array, axis_name) -> tuple[jax.Array, jax.Array]:
    """``(log Σ_i b_i exp(a_i), Σ_i b_i)`` over axis 0 (and devices), for ``b >= 0``.

    Shifted by the largest ``a_i`` **with** ``b_i > 0`` (a constant for the gradient), so a
    class whose probabilities are all ``exp(-200)`` is summed exactly; an empty class gives
    ``log`` of 0 replaced by 0, with zero gradient.
    """
    valid = b > 0
    m = jnp.max(jnp.where(valid, a, -jnp.inf), axis=0)
    if axis_name is not None:
        m = jax.lax.pmax(m, axis_name)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    s = jnp.sum(b * jnp.exp(jnp.where(valid, a - m[None], -jnp.inf)), axis=0)
    n = jnp.sum(b, axis=0)
    if axis_name is not None:
        s, n = jax.lax.psum((s, n), axis_name)
    return m + jnp.log(jnp.where(s > 0, s, 1.0)), n


@functools.partial(jax.jit, static_argnames=("axis_name",))
def _pf(logits, labels, where, *, axis_name):
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    dtype = _checks.compute_dtype(logits.dtype)
    if labels.shape == logits.shape:  # binary, PF Eq. 13: classes 0 and 1 of a sigmoid
        z = jnp.reshape(logits, (-1,)).astype(dtype)
        y = jnp.reshape(labels, (-1,)).astype(dtype)
        logp = jnp.stack([jax.nn.log_sigmoid(-z), jax.nn.log_sigmoid(z)], axis=-1)
        y = jnp.stack([1 - y, y], axis=-1)
    else:  # softmax over the last axis, PF Eqs. 9-10
        c = logits.shape[-1]
        logp = jax.nn.log_softmax(jnp.reshape(logits, (-1, c)).astype(dtype), axis=-1)
        y = jax.nn.one_hot(jnp.reshape(labels, (-1,)).astype(jnp.int32), c, dtype=dtype)
    if where is not None:
        y = y * jnp.reshape(jnp.asarray(where), (-1, 1)).astype(dtype)
    log_sum, n = _log_weighted_sum(logp, y, axis_name)  # [M]
    present = n > 0
    log_q = jnp.where(present, log_sum - jnp.log(jnp.where(present, n, 1.0)), 0.0)
    return -jnp.mean(log_q)


def pf_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    axis_name: str | None = None,
) -> jax.Array:
    r"""PF-loss, PF Eqs. 9-10 (softmax) and PF Eq. 13 (binary), over every pixel of the batch.

    .. math:: PF = -\frac{1}{M}\sum_{j=1}^{M} \log q_j, \quad
              q_j = \frac{1}{N_j}\sum_{i:\, y_i = j} p_{i,j}

    ``p_{i,j}`` is the probability pixel ``i`` gives to its labelled class ``j`` and ``N_j``
    the number of (unmasked) pixels labelled ``j`` in the batch. ``M`` is the number of
    classes (``C`` for softmax logits, 2 for the binary form). The binary PF Eq. 13,
    ``-log q_1 - log q_0`` with ``q_1`` the mean of ``p`` over defect pixels and ``q_0`` the
    mean of ``1 - p`` over background pixels, drops PF Eq. 9's ``1/M``; the paper's worked
    examples keep it (PF = 0.298 for probabilities 0.4 | 0.8, 0.7, 0.4, in log base 10), and so
    do we: ``pf_loss`` is ``-(log q_0 + log q_1) / 2`` for binary input. A class with no pixel
    in the batch contributes 0 (``q_j = 1``, the paper's rule) and still counts in ``M``.

    The mean ``q_j`` is summed in log space (``logsumexp`` of ``log p``), so a class whose
    pixels all have ``p = e^{-200}`` gives ``log q_j = -200`` rather than ``log 0``.

    Args:
      logits: softmax logits ``[B, *spatial, C]`` (with integer ``labels [B, *spatial]``), or
        binary sigmoid logits of the same shape as ``labels`` (as in the binary losses).
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``; for binary logits ``{0, 1}``
        (or soft values in ``[0, 1]``) of the logits' shape.
      where: optional pixel mask with the shape of ``labels``; pixels with 0 are left out.
      axis_name: also pool the class sums over this device axis (``shard_map``), so every
        device returns the PF-loss of the global batch.

    Returns:
      A scalar, float32 (float64 for float64 logits): one value for the whole batch.

    >>> import math, jax.numpy as jnp
    >>> logit = lambda p: math.log(p / (1 - p))
    >>> z = jnp.array([[logit(0.4), logit(0.2), logit(0.3), logit(0.6)]])  # p of class 1
    >>> y = jnp.array([[1, 0, 0, 0]])  # one minority pixel, three majority ones
    >>> round(float(pf_loss(z, y)) / math.log(10), 3)  # the paper's worked example
    0.298
    """
    shape = tuple(jnp.shape(logits))
    if tuple(jnp.shape(labels)) == shape:
        _checks.check_binary_inputs(logits, labels, where)
    else:
        _checks.check_softmax_inputs(logits, labels, where, dense_labels=False)
    return _pf(logits, labels, where, axis_name=axis_name)
