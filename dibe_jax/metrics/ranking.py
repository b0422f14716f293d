r"""Classification-style metrics of the PF-loss paper for binary maps: G-mean and ROC AUC.

ROC AUC is the probability that a random defect pixel scores higher than a random background
pixel, ties counting one half (the Mann-Whitney statistic):

.. math:: AUC = \frac{1}{N_1 N_0}\sum_{i: y_i = 1}\sum_{j: y_j = 0}
          \Big([s_i > s_j] + \tfrac12 [s_i = s_j]\Big)

:func:`roc_auc` computes it exactly from the scores of one batch (a sort, ``O(N log N)``).
For a whole validation split, :func:`score_histograms` bins the scores of each class into
additive int32 histograms (sum them over batches and devices) and
:func:`roc_auc_from_histograms` computes the AUC once; pixels sharing a bin count as ties, so
the binned AUC is exact when no bin holds a positive and a negative of different scores, and
otherwise off by at most half the mass of such pairs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dibe_jax.metrics.binary import confusion_counts, float_dtype, g_mean, nonzero

__all__ = [
    "ScoreHistogram",
    "g_mean_at",
    "roc_auc",
    "roc_auc_from_histograms",
    "score_histograms",
]


def _check(scores, labels, where) -> None:
    s_shape, l_shape = tuple(jnp.shape(scores)), tuple(jnp.shape(labels))
    if s_shape != l_shape:
        raise ValueError(f"`labels` must have the shape of `scores` {s_shape}, got {l_shape}.")
    if not jnp.issubdtype(jnp.result_type(scores), jnp.floating):
        raise ValueError(f"`scores` must be floating-point, got {jnp.result_type(scores)}.")
    if where is not None and tuple(jnp.shape(where)) != s_shape:
        raise ValueError(f"`where` must have the shape of `scores` {s_shape}.")


def _flat(scores, labels, where):
    s = jnp.reshape(jnp.asarray(scores), (-1,))
    s = s.astype(float_dtype(s.dtype))
    pos = jnp.reshape(nonzero(labels), (-1,))
    valid = jnp.ones(s.shape, bool) if where is None else jnp.reshape(nonzero(where), (-1,))
    return s, pos & valid, ~pos & valid


@jax.jit
def _roc_auc(scores, labels, where, zero_division):
    s, pos, neg = _flat(scores, labels, where)
    neg_sorted = jnp.sort(jnp.where(neg, s, jnp.inf))
    below = jnp.searchsorted(neg_sorted, s, side="left")  # negatives scoring < s
    not_above = jnp.searchsorted(neg_sorted, s, side="right")  # negatives scoring <= s
    n0 = jnp.sum(neg)
    n1 = jnp.sum(pos)
    f = s.dtype  # integer ranks and counts, averaged in float32 (float64 scores: float64)
    per_pos = (below.astype(f) + 0.5 * (not_above - below).astype(f)) / jnp.maximum(n0, 1).astype(f)
    auc = jnp.sum(jnp.where(pos, per_pos, 0.0)) / jnp.maximum(n1, 1).astype(f)
    return jnp.where((n0 > 0) & (n1 > 0), auc, zero_division)


def roc_auc(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    zero_division: float = float("nan"),
) -> jax.Array:
    """Exact ROC AUC of binary scores over every pixel given (ties count one half).

    Each positive pixel's share ``(#negatives below + ½ #negatives tied) / N_0`` is found by
    binary search in the sorted negative scores and the shares are averaged in float32; exact
    up to that rounding. Memory and time ``O(N log N)``: for a whole split, accumulate
    :func:`score_histograms` instead.

    Args:
      scores: float ``[...]``, any monotone score (logits or probabilities); finite.
      labels: same shape, nonzero = positive (defect).
      where: optional mask of the same shape; pixels with 0 are left out.
      zero_division: value when there are no positives or no negatives (AUC undefined).

    Returns:
      A float32 scalar.

    >>> import jax.numpy as jnp  # pairs (pos, neg): (3>1), (3>2), (2=2: ½), (2>1) -> 3.5/4
    >>> float(roc_auc(jnp.array([3.0, 2.0, 2.0, 1.0]), jnp.array([1, 1, 0, 0])))
    0.875
    """
    _check(scores, labels, where)
    return _roc_auc(scores, labels, where, zero_division)


class ScoreHistogram(NamedTuple):
    """Additive score histograms of positive and negative pixels (int32 ``[num_bins]``)."""

    pos: jax.Array
    neg: jax.Array

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:  # type: ignore[override]
        return ScoreHistogram(self.pos + other.pos, self.neg + other.neg)

    def sum(self, axis_name: str | None = None) -> ScoreHistogram:
        """Sum over all leading axes (to ``[num_bins]``), and over a device axis if given."""
        out = ScoreHistogram(
            *(jnp.reshape(h, (-1, h.shape[-1])).sum(0, dtype=jnp.int32) for h in self)
        )
        if axis_name is not None:
            out = ScoreHistogram(*jax.lax.psum(tuple(out), axis_name))
        return out


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _histograms(scores, labels, where, low, high, num_bins):
    s, pos, neg = _flat(scores, labels, where)
    index = jnp.floor((s - low) / (high - low) * num_bins)
    index = jnp.clip(index, 0, num_bins - 1).astype(jnp.int32)
    hist = functools.partial(jnp.bincount, index, length=num_bins)
    return ScoreHistogram(
        pos=hist(weights=pos.astype(jnp.int32)).astype(jnp.int32),
        neg=hist(weights=neg.astype(jnp.int32)).astype(jnp.int32),
    )


def score_histograms(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    num_bins: int = 2048,
    value_range: tuple[float, float] = (-16.0, 16.0),
    where: ArrayLike | None = None,
) -> ScoreHistogram:
    """Histograms of the scores of positive and of negative pixels, for a binned ROC AUC.

    ``num_bins`` equal bins cover ``value_range``; scores outside it fall in the end bins.
    The default suits logits (``|logit| <= 16`` is ``p`` within 1.1e-7 of 0 or 1); pass
    ``value_range=(0, 1)`` for probabilities. The result is additive: ``h1 + h2``.

    Args:
      scores: float ``[...]``, logits or probabilities.
      labels: same shape, nonzero = positive.
      num_bins: a Python int >= 1.
      value_range: ``(low, high)`` with ``low < high``.
      where: optional mask of the same shape; pixels with 0 are left out.

    Returns:
      :class:`ScoreHistogram` of int32 ``[num_bins]`` arrays.

    >>> import jax.numpy as jnp
    >>> h = score_histograms(jnp.array([3.0, 2.0, 2.0, 1.0]), jnp.array([1, 1, 0, 0]),
    ...                      num_bins=4, value_range=(-0.5, 3.5))
    >>> h.pos.tolist(), h.neg.tolist()
    ([0, 0, 1, 1], [0, 1, 1, 0])
    """
    _check(scores, labels, where)
    if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(f"`num_bins` must be a Python int >= 1, got {num_bins!r}.")
    low, high = (float(v) for v in value_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"`value_range` must be finite with low < high, got {value_range}.")
    return _histograms(scores, labels, where, low, high, num_bins)


def roc_auc_from_histograms(hist: ScoreHistogram, *, zero_division: float = float("nan")) -> float:
    r"""ROC AUC from (summed) :class:`ScoreHistogram`, on the host in float64.

    .. math:: AUC = \frac{1}{N_1 N_0}\sum_b h^+_b\Big(\sum_{b' < b} h^-_{b'}
              + \tfrac12 h^-_b\Big)

    Leading axes (per image, per device) are summed first.

    >>> import jax.numpy as jnp
    >>> h = score_histograms(jnp.array([3.0, 2.0, 2.0, 1.0]), jnp.array([1, 1, 0, 0]),
    ...                      num_bins=4, value_range=(-0.5, 3.5))
    >>> roc_auc_from_histograms(h)  # equals the exact AUC: one score per bin
    0.875
    """
    pos, neg = (np.asarray(h, np.float64).reshape(-1, np.shape(h)[-1]).sum(0) for h in hist)
    n1, n0 = pos.sum(), neg.sum()
    if n1 == 0 or n0 == 0:
        return float(zero_division)
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (n1 * n0))


def g_mean_at(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float = 0.0,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""G-mean ``sqrt(TPR · TNR)`` of the hard prediction ``[logit >= threshold]`` (PF paper).

    Sums :func:`~dibe_jax.metrics.confusion_counts` over the batch, then applies
    :func:`~dibe_jax.metrics.g_mean`; for a whole split, accumulate the counts instead.

    >>> import jax.numpy as jnp  # TPR = 1/2, TNR = 1
    >>> round(float(g_mean_at(jnp.array([[2.0, -1.0, -3.0]]), jnp.array([[1, 1, 0]]))), 4)
    0.7071
    """
    c = confusion_counts(logits, labels, where=where, threshold=threshold).sum()
    return g_mean(c.tp, c.fp, c.fn, c.tn)
