r"""A decision threshold chosen on validation, from one pass of logit histograms.

The default prediction is ``ŷ = 1 iff logit ≥ 0`` (p ≥ 0.5). Moving the threshold
``t`` trades misses (FN) against false alarms (FP) without retraining: raising ``t`` lowers
FP and raises FN, so the OII (Eqs. 15-17; > 0 when FP < FN) rises with ``t``.

Every candidate threshold comes from one pass over the split:

1. :func:`logit_histograms` bins each pixel's logit by the fixed, sorted ``edges``
   (:func:`threshold_edges`), positives and negatives separately: bin ``i`` holds the logits
   ``z`` with ``edges[i-1] ≤ z < edges[i]`` (bin 0 everything below ``edges[0]``, the last
   bin everything from ``edges[-1]`` up). The histograms are int32 and additive: sum them
   over batches and devices on the device.
2. :func:`counts_at_edges` turns them into the confusion counts of every threshold
   ``t = edges[j]`` with cumulative sums:

   .. math::
       FN_j = \sum_{i \le j} h^+_i,\quad TP_j = P - FN_j,\quad
       TN_j = \sum_{i \le j} h^-_i,\quad FP_j = N - TN_j

   exactly the counts of ``ŷ = [z ≥ edges[j]]`` (no approximation: a bin never straddles
   a candidate).
3. :func:`choose_threshold` picks ``edges[j]`` with the smallest ``|OII|`` (``target="oii"``)
   or the largest IoU (``target="iou"``), ties broken towards logit 0 (the smallest change of
   the default rule). Logit 0 is always an edge, so the chosen threshold is never worse on the
   split than the default.

Pure JAX (the histograms) and NumPy (the small cumulative sums); metrics from
:mod:`dibe_jax.metrics.binary`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dibe_jax.metrics.binary import Confusion, float_dtype, iou, nonzero, oii, summarize
from dibe_jax.metrics.ranking import ScoreHistogram

__all__ = [
    "TARGETS",
    "ThresholdChoice",
    "choose_threshold",
    "counts_at_edges",
    "logit_histograms",
    "threshold_edges",
]

#: What :func:`choose_threshold` optimises: ``"oii"`` (|OII| smallest: as many misses as false
#: alarms) or ``"iou"`` (IoU largest).
TARGETS = ("oii", "iou")


def threshold_edges(
    value_range: tuple[float, float] = (-16.0, 16.0), step: float = 1 / 64
) -> np.ndarray:
    """The candidate thresholds: ``float32 [E]``, ``k · step`` for every integer ``k`` with
    ``low ≤ k·step ≤ high``; 0 is always one of them.

    The default step 1/64 is a power of two, so every edge is exact in float32 (and in the
    JSON that records a chosen threshold): 2049 edges over ``[-16, 16]``, where a logit
    of ±16 is a probability within 1.2e-7 of 0 or 1.

    >>> e = threshold_edges((-1.0, 1.0), 0.25)
    >>> e.tolist(), e.dtype
    ([-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0], dtype('float32'))
    """
    low, high = (float(v) for v in value_range)
    if not (low < 0 < high):
        raise ValueError(f"value_range must contain 0 inside it, got {value_range!r}")
    if not step > 0:
        raise ValueError(f"step must be positive, got {step!r}")
    k = np.arange(int(np.ceil(low / step)), int(np.floor(high / step)) + 1)
    edges = (k * step).astype(np.float32)
    if edges.size > 1_000_000:
        raise ValueError(f"{edges.size} thresholds: choose a larger step or a smaller range")
    return edges


@jax.jit
def _histograms(logits, labels, where, edges):
    s = jnp.reshape(logits, (-1,))
    s = s.astype(float_dtype(s.dtype))
    pos = jnp.reshape(nonzero(labels), (-1,))
    valid = jnp.reshape(nonzero(where), (-1,))
    index = jnp.searchsorted(edges.astype(s.dtype), s, side="right")  # edges <= s
    bins = edges.shape[0] + 1
    hist = functools.partial(jnp.bincount, index, length=bins)
    return ScoreHistogram(
        pos=hist(weights=(pos & valid).astype(jnp.int32)).astype(jnp.int32),
        neg=hist(weights=(~pos & valid).astype(jnp.int32)).astype(jnp.int32),
    )


def logit_histograms(
    logits: ArrayLike,
    labels: ArrayLike,
    edges: ArrayLike,
    *,
    where: ArrayLike | None = None,
) -> ScoreHistogram:
    """Histograms of the logits of defect (positive) and background (negative) pixels.

    Args:
      logits: ``[B, H, W, 1]`` (or any shape) binary logits.
      labels: same shape, nonzero = defect.
      edges: sorted ``float32 [E]`` thresholds (:func:`threshold_edges`).
      where: optional mask of the same shape; pixels with 0 are left out (padding).

    Returns:
      :class:`~dibe_jax.metrics.ScoreHistogram` of int32 ``[E + 1]``: bin ``i`` counts the
      logits ``z`` with ``edges[i-1] ≤ z < edges[i]`` (bin 0: ``z < edges[0]``; bin ``E``:
      ``z ≥ edges[-1]``). Additive over batches and devices.

    >>> import jax.numpy as jnp
    >>> h = logit_histograms(jnp.array([-2.0, 0.0, 0.3, 5.0]), jnp.array([0, 1, 0, 1]),
    ...                      jnp.array([-1.0, 0.0, 1.0]))
    >>> h.pos.tolist(), h.neg.tolist()
    ([0, 0, 1, 1], [1, 0, 1, 0])
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(
            f"`labels` must have the shape of `logits` {logits.shape}, got {labels.shape}."
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"`logits` must be floating-point, got {logits.dtype}.")
    edges = jnp.asarray(edges)
    if edges.ndim != 1 or edges.shape[0] < 1:
        raise ValueError(f"`edges` must be a non-empty 1-D array, got shape {edges.shape}.")
    if where is None:
        where = jnp.ones(logits.shape, bool)
    elif jnp.shape(where) != logits.shape:
        raise ValueError(f"`where` must have the shape of `logits` {logits.shape}.")
    return _histograms(logits, labels, where, edges)


def counts_at_edges(hist: ScoreHistogram) -> Confusion:
    """Confusion counts of ``ŷ = [logit ≥ edges[j]]`` for every edge ``j``, by cumulative sums.

    Args:
      hist: :func:`logit_histograms` summed over the split (``[E + 1]`` bins).

    Returns:
      :class:`~dibe_jax.metrics.Confusion` of NumPy int64 ``[E]`` arrays (``tp, fp, fn, tn``).

    >>> c = counts_at_edges(ScoreHistogram(np.array([0, 0, 1, 1]), np.array([1, 0, 1, 0])))
    >>> [v.tolist() for v in c]  # thresholds -1, 0, 1
    [[2, 2, 1], [1, 1, 0], [0, 0, 1], [1, 1, 2]]
    """
    pos = np.asarray(hist.pos, np.int64)
    neg = np.asarray(hist.neg, np.int64)
    if pos.ndim != 1 or pos.shape != neg.shape or pos.size < 2:
        raise ValueError(f"histograms must be equal 1-D arrays of >= 2 bins, got {pos.shape}")
    fn = np.cumsum(pos)[:-1]  # positives below edges[j]
    tn = np.cumsum(neg)[:-1]
    return Confusion(tp=pos.sum() - fn, fp=neg.sum() - tn, fn=fn, tn=tn)


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """The threshold :func:`choose_threshold` picked, and the split's metrics at logit 0 and
    at the threshold (:func:`~dibe_jax.metrics.summarize`: iou, pa, recall, oii, counts...)."""

    threshold: float
    target: str
    at_zero: dict[str, float]
    at_threshold: dict[str, float]


def choose_threshold(
    hist: ScoreHistogram, edges: ArrayLike, *, target: str = "oii"
) -> ThresholdChoice:
    """The edge that brings OII closest to 0 (``target="oii"``) or maximises IoU (``"iou"``).

    Ties (equal |OII| or IoU, e.g. thresholds no pixel lies between) go to the edge closest
    to logit 0. Since 0 is an edge, the chosen threshold's |OII| (or IoU) on the split is
    never worse than the default's.

    Args:
      hist: :func:`logit_histograms` summed over the split, binned by ``edges``.
      edges: the ``[E]`` edges of ``hist``, containing 0.
      target: one of :data:`TARGETS`.

    Returns:
      :class:`ThresholdChoice`.

    >>> edges = np.array([-1.0, 0.0, 1.0], np.float32)  # at 0: FN = 2, FP = 0; at -1: 1 and 1
    >>> h = ScoreHistogram(np.array([1, 1, 1, 1]), np.array([5, 1, 0, 0]))
    >>> c = choose_threshold(h, edges)
    >>> c.threshold, c.at_zero["oii"] > 0, c.at_threshold["oii"]
    (-1.0, True, 0.0)
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    edges = np.asarray(edges, np.float32)
    if edges.ndim != 1 or np.asarray(hist.pos).shape != (edges.size + 1,):
        raise ValueError(
            f"histograms of {np.asarray(hist.pos).shape} bins do not match {edges.shape} edges"
        )
    zero = np.flatnonzero(edges == 0)
    if zero.size != 1 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be strictly increasing and contain 0")
    counts = counts_at_edges(hist)
    tp, fp, fn = (np.asarray(c, np.float32) for c in counts[:3])  # float32: the metrics'
    if target == "oii":
        score = -np.abs(np.asarray(oii(tp, fp, fn), np.float64))
    else:
        score = np.asarray(iou(tp, fp, fn), np.float64)
    best = np.flatnonzero(score == score.max())
    j = int(best[np.argmin(np.abs(edges[best]))])
    at = lambda i: summarize(Confusion(*(int(c[i]) for c in counts)))  # noqa: E731
    return ThresholdChoice(float(edges[j]), target, at(int(zero[0])), at(j))
