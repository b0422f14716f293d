r"""Binary segmentation metrics on hard predictions, and the Output Imbalance Index (OII).

Counts use standard names (docs/conventions.md): with ``ŷ = [logit >= 0]``,
``TP = Σ ŷ·y``, ``FP = Σ ŷ·(1 - y)`` (false alarms), ``FN = Σ (1 - ŷ)·y`` (misses),
``TN = Σ (1 - ŷ)(1 - y)``. Counts are additive: sum them over images, batches and devices,
then compute the metrics once ("micro", what the paper reports every 5 epochs).

Every metric works elementwise (with broadcasting) on arrays of counts. A ratio whose
denominator is 0 takes the value ``zero_division`` (default 1.0: an empty denominator means
there was nothing the metric could count wrong, e.g. IoU of an empty prediction of an empty
mask is 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "Confusion",
    "ConfusionAccumulator",
    "confusion_counts",
    "dice_score",
    "fp_fn_ratio",
    "g_mean",
    "iou",
    "oii",
    "pa",
    "precision",
    "recall",
    "specificity",
    "summarize",
]


class Confusion(NamedTuple):
    """Confusion counts ``tp, fp, fn, tn``: scalars, ``[B]`` per image, or any shape."""

    tp: jax.Array
    fp: jax.Array
    fn: jax.Array
    tn: jax.Array

    def sum(self, axis_name: str | None = None) -> Confusion:
        """Sum every count over all its axes, and over a device axis if ``axis_name``."""
        out = Confusion(*(jnp.sum(c) for c in self))
        if axis_name is not None:
            out = Confusion(*jax.lax.psum(tuple(out), axis_name))
        return out

    def __add__(self, other: Confusion) -> Confusion:  # type: ignore[override]
        return Confusion(*(a + b for a, b in zip(self, other, strict=True)))


def confusion_counts(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    threshold: float = 0.0,
) -> Confusion:
    """Per-image confusion counts of the hard prediction ``ŷ = [logit >= threshold]``.

    Args:
      logits: ``[B, *spatial]`` or ``[B, *spatial, 1]`` (any real dtype).
      labels: same shape, ``{0, 1}`` (bool or numeric; nonzero counts as defect).
      where: optional mask of the same shape; pixels with 0 are not counted.
      threshold: logit threshold (0 is p = 0.5).

    Returns:
      :class:`Confusion` of int32 ``[B]`` arrays.

    >>> import jax.numpy as jnp
    >>> c = confusion_counts(jnp.array([[2.0, -1.0, 0.0, -3.0]]), jnp.array([[1, 1, 0, 0]]))
    >>> [int(v[0]) for v in c]  # tp, fp, fn, tn
    [1, 1, 1, 1]
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.shape != labels.shape:
        raise ValueError(
            f"`labels` must have the shape of `logits` {logits.shape}, got {labels.shape}."
        )
    if logits.ndim < 2:
        raise ValueError(f"`logits` must have rank >= 2 [B, *spatial], got {logits.shape}.")
    if where is not None and jnp.shape(where) != logits.shape:
        raise ValueError(
            f"`where` must have the shape of `logits` {logits.shape}, got {jnp.shape(where)}."
        )
    return _confusion_counts(logits, labels, where, threshold)


@jax.jit
def _confusion_counts(logits, labels, where, threshold) -> Confusion:
    b = logits.shape[0]
    pred = jnp.reshape(logits >= threshold, (b, -1))
    true = jnp.reshape(nonzero(labels), (b, -1))
    valid = jnp.ones_like(pred) if where is None else jnp.reshape(nonzero(where), (b, -1))

    def count(m):
        return jnp.sum(m & valid, axis=1, dtype=jnp.int32)

    return Confusion(
        tp=count(pred & true),
        fp=count(pred & ~true),
        fn=count(~pred & true),
        tn=count(~pred & ~true),
    )


class ConfusionAccumulator:
    """Sums confusion counts over batches on the host, in exact int64.

    >>> import jax.numpy as jnp
    >>> acc = ConfusionAccumulator()
    >>> acc.update(confusion_counts(jnp.array([[1.0, -1.0]]), jnp.array([[1, 1]])))
    >>> acc.update(confusion_counts(jnp.array([[1.0, 1.0]]), jnp.array([[0, 1]])))
    >>> acc.result()
    Confusion(tp=2, fp=1, fn=1, tn=0)
    """

    def __init__(self) -> None:
        self._totals = np.zeros(4, dtype=np.int64)

    def update(self, counts: Confusion) -> None:
        """Add counts of any shape (per image, per batch, already summed)."""
        self._totals += np.array([np.asarray(c, dtype=np.int64).sum() for c in counts])

    def result(self) -> Confusion:
        """The totals as Python ints."""
        return Confusion(*(int(v) for v in self._totals))


def nonzero(x: ArrayLike) -> jax.Array:
    """``x != 0`` as a bool array; a bool ``x`` as it is (no bool/int comparison)."""
    x = jnp.asarray(x)
    return x if x.dtype == jnp.bool_ else x != 0


def float_dtype(*dtypes: jnp.dtype) -> np.dtype:
    """float64 if any of ``dtypes`` is float64, else float32 (ints, bools, bf16, f16, f32).

    Chosen explicitly: under ``jax_numpy_dtype_promotion="strict"`` there is no implicit
    path between ints and floats or between float32 and float64.
    """
    wide = any(np.dtype(d) == np.float64 for d in dtypes)
    return np.dtype(np.float64) if wide else np.dtype(np.float32)


def _as_float(*xs: ArrayLike) -> tuple[jax.Array, ...]:
    arrays = [jnp.asarray(x) for x in xs]
    dtype = float_dtype(*(a.dtype for a in arrays))
    return tuple(a.astype(dtype) for a in arrays)


def _ratio(num: jax.Array, den: jax.Array, zero_division: float) -> jax.Array:
    empty = den == 0
    return jnp.where(empty, zero_division, num / jnp.where(empty, 1, den))


def iou(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, *, zero_division: float = 1.0) -> jax.Array:
    """Intersection over union, Eq. 22: ``TP / (TP + FP + FN)``.

    >>> float(iou(2, 1, 1))
    0.5
    """
    tp, fp, fn = _as_float(tp, fp, fn)
    return _ratio(tp, tp + fp + fn, zero_division)


def precision(tp: ArrayLike, fp: ArrayLike, *, zero_division: float = 1.0) -> jax.Array:
    """Precision ``TP / (TP + FP)``: the paper's "PA" (Eq. 23).

    >>> round(float(precision(2, 1)), 3)
    0.667
    """
    tp, fp = _as_float(tp, fp)
    return _ratio(tp, tp + fp, zero_division)


pa = precision
"""The DIBE paper's name for :func:`precision` (Eq. 23)."""


def recall(tp: ArrayLike, fn: ArrayLike, *, zero_division: float = 1.0) -> jax.Array:
    """Recall (sensitivity) ``TP / (TP + FN)``.

    >>> float(recall(1, 3))
    0.25
    """
    tp, fn = _as_float(tp, fn)
    return _ratio(tp, tp + fn, zero_division)


def dice_score(
    tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, *, zero_division: float = 1.0
) -> jax.Array:
    """Dice (F1) score ``2TP / (2TP + FP + FN)`` on hard counts.

    >>> float(dice_score(2, 1, 1))
    0.6666...
    """
    tp, fp, fn = _as_float(tp, fp, fn)
    return _ratio(2 * tp, 2 * tp + fp + fn, zero_division)


def specificity(tn: ArrayLike, fp: ArrayLike, *, zero_division: float = 1.0) -> jax.Array:
    """Specificity (true-negative rate) ``TN / (TN + FP)``.

    >>> float(specificity(3, 1))
    0.75
    """
    tn, fp = _as_float(tn, fp)
    return _ratio(tn, tn + fp, zero_division)


def g_mean(
    tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, tn: ArrayLike, *, zero_division: float = 1.0
) -> jax.Array:
    """Geometric mean of recall and specificity, ``sqrt(TPR · TNR)`` (PF-loss paper).

    >>> float(g_mean(1, 1, 3, 3))  # sqrt(0.25 * 0.75)
    0.4330...
    """
    return jnp.sqrt(
        recall(tp, fn, zero_division=zero_division)
        * specificity(tn, fp, zero_division=zero_division)
    )


def fp_fn_ratio(fp: ArrayLike, fn: ArrayLike) -> jax.Array:
    """``x = FP / FN`` (Eq. 16): ``inf`` when FN = 0 < FP, and 1 (balanced) when both are 0.

    >>> float(fp_fn_ratio(5, 1)), float(fp_fn_ratio(3, 0)), float(fp_fn_ratio(0, 0))
    (5.0, inf, 1.0)
    """
    fp, fn = _as_float(fp, fn)
    both_zero = (fp == 0) & (fn == 0)
    return jnp.where(both_zero, 1.0, fp / jnp.where(both_zero, 1, fn))


def oii(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> jax.Array:
    r"""Output Imbalance Index, Eqs. 15-17.

    .. math::
       x = FP / FN, \quad k = 1 - IoU / 2, \quad
       OII = k \cdot \operatorname{sign}(FN - FP)\Big(1 - \frac{1}{x + 1/x - 1}\Big)
           = k \cdot \operatorname{sign}(FN - FP)
             \Big(1 - \frac{FP \cdot FN}{FP^2 - FP \cdot FN + FN^2}\Big)

    The division-free right-hand form is used, rewritten as
    ``k·sign(FN - FP)·(FP - FN)² / (FP² - FP·FN + FN²)`` (the same value, without the
    cancellation of ``1 - ...`` when FP ≈ FN), on counts scaled by ``max(FP, FN)`` so large
    counts cannot overflow. OII lies in (-1, 1); OII > 0 means
    under-segmentation (FP < FN, more misses than false alarms), OII < 0 over-segmentation.
    Edge cases: FP = FN = 0 gives 0; FP = 0 < FN gives ``+k``; FN = 0 < FP gives ``-k``.

    Args:
      tp, fp, fn: hard counts (any shape, broadcast together; ints or floats).

    Returns:
      OII with the broadcast shape, float32 (float64 for float64 input).

    >>> round(float(oii(2, 5, 1)), 3), round(float(oii(2, 1, 5)), 3)  # Table 1, rows 4, 7
    (-0.667, 0.667)
    """
    tp, fp, fn = _as_float(tp, fp, fn)
    k = 1 - iou(tp, fp, fn) / 2
    m = jnp.maximum(fp, fn)
    safe_m = jnp.where(m > 0, m, 1)
    a, b = fp / safe_m, fn / safe_m  # in [0, 1], max(a, b) = 1
    # 1 - FP·FN / (FP² - FP·FN + FN²) = (FP - FN)² / (FP² - FP·FN + FN²): no cancellation
    # when FP ≈ FN; the denominator is >= 1/2 after scaling.
    imbalance = (a - b) ** 2 / (a * a - a * b + b * b)
    value = k * jnp.sign(fn - fp) * imbalance
    return jnp.where(m > 0, value, 0.0)


def summarize(counts: Confusion, *, average: str = "dataset") -> dict[str, float]:
    """All metrics of the paper from confusion counts, as Python floats (for logging).

    Args:
      counts: :class:`Confusion` of scalars or per-image arrays.
      average: ``"dataset"`` (default, the paper's): sum the counts, then compute each
        metric once. ``"image"``: compute per image, then take the mean over images.

    Returns:
      ``iou, pa, precision, recall, dice, specificity, g_mean, oii, fp_fn_ratio`` and the
      summed ``tp, fp, fn, tn``.
    """
    if average not in ("dataset", "image"):
        raise ValueError(f"`average` must be 'dataset' or 'image', got {average!r}.")
    arrays = [np.asarray(c, dtype=np.float64) for c in counts]
    totals = [int(a.sum()) for a in arrays]
    if average == "dataset":
        arrays = [np.asarray(t, dtype=np.float64) for t in totals]
    tp, fp, fn, tn = (jnp.asarray(a, dtype=jnp.float32) for a in arrays)
    values = {
        "iou": iou(tp, fp, fn),
        "pa": precision(tp, fp),
        "recall": recall(tp, fn),
        "dice": dice_score(tp, fp, fn),
        "specificity": specificity(tn, fp),
        "g_mean": g_mean(tp, fp, fn, tn),
        "oii": oii(tp, fp, fn),
        "fp_fn_ratio": fp_fn_ratio(fp, fn),
    }
    out = {k: float(np.mean(np.asarray(v))) for k, v in values.items()}
    out["precision"] = out["pa"]
    out.update(tp=totals[0], fp=totals[1], fn=totals[2], tn=totals[3])
    return out
