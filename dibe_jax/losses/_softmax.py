r"""What every softmax loss computes first: log-probabilities, targets and soft counts.

Shared by :mod:`~dibe_jax.losses.cross_entropy`, :mod:`~dibe_jax.losses.multiclass`,
:mod:`~dibe_jax.losses.cross_dropout`, :mod:`~dibe_jax.losses.unified_focal` and
:mod:`~dibe_jax.losses.lovasz`. Everything runs inside ``jit`` on arrays already checked by
:func:`dibe_jax.losses._checks.check_softmax_inputs`.

Conventions: ``p_c = softmax(logits)_c`` is computed as ``exp(log_softmax)`` in at least
float32; the predicted class is ``argmax_c logits`` (ties go to the lowest index, as in
:func:`dibe_jax.metrics.confusion_matrix`); ``y_{ic}`` is the one-hot (or soft) label.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dibe_jax.losses import _checks, _reduce


def prepare(
    logits: jax.Array, labels: jax.Array, where: jax.Array | None, *, leading: int = 0
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """``[*lead, B, *spatial, C]`` logits to ``(log p [*lead, B, P, C], y [B, P, C], w [B, P])``.

    ``leading`` extra leading axes are kept (1 for the Monte Carlo axis of the cross dropout
    focal loss). Integer ``labels [B, *spatial]`` become one-hot rows (an out-of-range id under
    ``jit`` gives an all-zero row: the pixel counts nowhere); ``[B, *spatial, C]`` labels are
    used as they are. Everything is in the compute dtype (float32 for bf16/f16 logits).
    """
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    lead, b, c = logits.shape[:leading], logits.shape[leading], logits.shape[-1]
    z = jnp.reshape(logits, (*lead, b, -1, c)).astype(dtype)
    logp = jax.nn.log_softmax(z, axis=-1)
    labels = jnp.asarray(labels)
    if labels.ndim == logits.ndim - 1 - leading:  # class ids
        y = jax.nn.one_hot(jnp.reshape(labels, (b, -1)).astype(jnp.int32), c, dtype=dtype)
    else:
        y = jnp.reshape(labels, (b, -1, c)).astype(dtype)
    w = None if where is None else jnp.reshape(jnp.asarray(where), (b, -1)).astype(dtype)
    return logp, y, w


def log1m_softmax(logp: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""``log(1 - p_c)`` for every class from log-probabilities ``[..., C]``, without cancellation.

    For every class but the most probable one ``p_c <= 1/2`` and ``log1p(-p_c)`` is accurate;
    for the most probable one ``1 - p_c = Σ_{k≠c} p_k`` is summed in log space. So
    ``log(1 - p_c)`` stays finite and exact even where ``p_c`` rounds to 1 (logits 100 apart).

    Returns:
      ``(log(1 - p), top)``: same shape as ``logp``, and the bool one-hot of the argmax
      (lowest index on ties), which is the predicted class.

    >>> import jax, jax.numpy as jnp
    >>> l1m, top = log1m_softmax(jax.nn.log_softmax(jnp.array([0.0, 100.0])))
    >>> [round(float(v), 2) for v in l1m], top.tolist()
    ([-0.0, -100.0], [False, True])
    """
    c = logp.shape[-1]
    top = jax.nn.one_hot(jnp.argmax(logp, axis=-1), c, dtype=jnp.bool_)
    rest = jax.nn.logsumexp(logp, axis=-1, where=~top, keepdims=True)
    others = jnp.log1p(-jnp.exp(jnp.where(top, -1.0, logp)))
    return jnp.where(top, rest, others), top


class ClassCounts(NamedTuple):
    """Per-class soft counts ``[B, C]`` of each image (or pooled and broadcast).

    Field order as :class:`dibe_jax.metrics.Confusion` ``(tp, fp, fn, tn)``; ``n`` replaces
    ``tn``.
    """

    tp: jax.Array  # Σ_i p_ic y_ic
    fp: jax.Array  # false alarms: label not c, predicted c, Σ_i p_ic (1 - y_ic); weighted by β
    fn: jax.Array  # misses: label c, predicted elsewhere, Σ_i (1 - p_ic) y_ic; weighted by α
    n: jax.Array  # label mass N_c = Σ_i y_ic


def class_counts(
    logp: jax.Array,
    y: jax.Array,
    w: jax.Array | None,
    *,
    pool_batch: bool,
    axis_name: str | None,
    log_q: jax.Array | None = None,
) -> ClassCounts:
    """Soft counts from :func:`prepare`'s output; pooled as :func:`_reduce.pool` says.

    ``1 - p`` is ``exp(log_q)`` when the caller has ``log_q = log(1 - p)``, else ``1 - p``.
    The subtraction loses at most one float32 ulp of 1 per pixel where ``p`` rounds to 1,
    which a sum of counts does not notice (unlike ``log(1 - p)``, see :func:`log1m_softmax`).
    """
    p = jnp.exp(logp)
    q = 1 - p if log_q is None else jnp.exp(log_q)
    pos = y if w is None else y * w[..., None]
    neg = (1 - y) if w is None else (1 - y) * w[..., None]
    counts = ClassCounts(
        tp=jnp.sum(p * pos, axis=1),
        fp=jnp.sum(p * neg, axis=1),
        fn=jnp.sum(q * pos, axis=1),
        n=jnp.sum(pos, axis=1),
    )
    return ClassCounts(
        *(_reduce.pool(v, pool_batch=pool_batch, axis_name=axis_name) for v in counts)
    )
