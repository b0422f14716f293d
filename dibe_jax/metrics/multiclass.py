r"""Multi-class segmentation metrics from an additive confusion matrix, with OII per class.

``cm[t, p]`` counts the pixels of true class ``t`` predicted as class ``p`` (rows: labels,
columns: predictions). One-vs-rest counts of class ``c``, in the standard names of
:mod:`dibe_jax.metrics.binary`:

.. math:: TP_c = cm_{cc}, \quad FP_c = \sum_{t} cm_{tc} - TP_c \ \text{(false alarms)}, \quad
          FN_c = \sum_{p} cm_{cp} - TP_c \ \text{(misses)}, \quad
          TN_c = \sum cm - TP_c - FP_c - FN_c

Matrices are int32 and additive: sum them over images, batches and devices, then compute the
metrics once (the DIBE paper's dataset-level "micro" counts, per class).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dibe_jax.metrics.binary import Confusion, dice_score, iou, nonzero, oii, precision, recall

__all__ = [
    "ConfusionMatrixAccumulator",
    "class_counts",
    "confusion_matrix",
    "mean_accuracy",
    "mean_iou",
    "multiclass_summary",
    "per_class_metrics",
]


def _is_concrete(x: object) -> bool:
    if isinstance(x, jax.core.Tracer):
        return False
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def confusion_matrix(
    logits_or_preds: ArrayLike,
    labels: ArrayLike,
    num_classes: int,
    *,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Per-image confusion matrices ``[B, C, C]`` (int32; rows true class, columns predicted).

    The prediction is read from ``logits_or_preds`` by its shape and dtype:

    * float ``[B, *spatial, C]`` (one more axis than ``labels``): ``argmax`` over the last axis
      (ties to the lowest index, as the multi-class losses);
    * integer or bool ``[B, *spatial]``: predicted class ids;
    * float ``[B, *spatial]``: binary sigmoid logits, predicted 1 iff ``logit >= 0`` (the
      binary convention; needs ``num_classes == 2``).

    Pixels with ``where = 0``, and (under ``jit``) pixels whose label or prediction is outside
    ``[0, C)``, are not counted; concrete labels outside ``[0, C)`` raise ``ValueError``. Sum
    over axis 0 for the batch: ``confusion_matrix(...).sum(0)``.

    Args:
      logits_or_preds: see above.
      labels: integer class ids ``[B, *spatial]``.
      num_classes: ``C``, a Python int >= 2.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are not counted.

    Returns:
      ``[B, C, C]`` int32.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [0.0, 5.0, 0.0]]])
    >>> confusion_matrix(z, jnp.array([[0, 1, 2, 2]]), 3)[0].tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"`num_classes` must be a Python int >= 2, got {num_classes!r}.")
    x_shape, l_shape = tuple(jnp.shape(logits_or_preds)), tuple(jnp.shape(labels))
    x_dtype = jnp.result_type(logits_or_preds)
    l_dtype = jnp.result_type(labels)
    if not (jnp.issubdtype(l_dtype, jnp.integer) or l_dtype == jnp.bool_):
        raise ValueError(f"`labels` must hold integer class ids, got dtype {l_dtype}.")
    if len(l_shape) < 1:
        raise ValueError(f"`labels` must have shape [B, *spatial], got {l_shape}.")
    if x_shape == (*l_shape, num_classes) and jnp.issubdtype(x_dtype, jnp.floating):
        mode = "argmax"
    elif x_shape == l_shape and jnp.issubdtype(x_dtype, jnp.floating):
        if num_classes != 2:
            raise ValueError(
                "`logits_or_preds` of the shape of `labels` with a float dtype are binary "
                f"logits, which need num_classes=2, got {num_classes}."
            )
        mode = "binary"
    elif x_shape == l_shape:
        mode = "ids"
    else:
        raise ValueError(
            f"`logits_or_preds` must have shape {(*l_shape, num_classes)} (logits) or "
            f"{l_shape} (class ids or binary logits) for `labels` of shape {l_shape}, "
            f"got {x_shape}."
        )
    if where is not None and tuple(jnp.shape(where)) != l_shape:
        raise ValueError(f"`where` must have shape {l_shape}, got {tuple(jnp.shape(where))}.")
    if _is_concrete(labels) and int(np.prod(l_shape)) > 0:
        arr = labels if isinstance(labels, jax.Array) else np.asarray(labels)
        with jax.ensure_compile_time_eval():  # concrete even when closed over inside a trace
            lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"`labels` must hold class ids in [0, {num_classes}), got values in "
                f"[{lo}, {hi}]; drop unlabelled pixels with `where`."
            )
    return _confusion_matrix(logits_or_preds, labels, where, num_classes, mode)


@functools.partial(jax.jit, static_argnames=("num_classes", "mode"))
def _confusion_matrix(x, labels, where, num_classes, mode):
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    b, c = labels.shape[0], num_classes
    if mode == "argmax":
        pred = jnp.argmax(x, axis=-1)
    elif mode == "binary":
        pred = (x >= 0).astype(jnp.int32)
    else:
        pred = x
    pred = jnp.reshape(pred, (b, -1)).astype(jnp.int32)
    true = jnp.reshape(labels, (b, -1)).astype(jnp.int32)
    valid = (true >= 0) & (true < c) & (pred >= 0) & (pred < c)
    if where is not None:
        valid = valid & jnp.reshape(nonzero(where), (b, -1))
    index = jnp.arange(b, dtype=jnp.int32)[:, None] * (c * c) + true * c + pred
    index = jnp.where(valid, index, b * c * c)  # a dump bin, dropped below
    counts = jnp.bincount(jnp.reshape(index, (-1,)), length=b * c * c + 1)[:-1]
    return jnp.reshape(counts, (b, c, c)).astype(jnp.int32)


def class_counts(cm: ArrayLike) -> Confusion:
    """One-vs-rest counts of every class from confusion matrices ``[..., C, C]``.

    Returns:
      :class:`~dibe_jax.metrics.Confusion` whose fields are ``[..., C]`` arrays.

    >>> import jax.numpy as jnp
    >>> c = class_counts(jnp.array([[5, 1], [2, 3]]))
    >>> c.tp.tolist(), c.fp.tolist(), c.fn.tolist(), c.tn.tolist()
    ([5, 3], [2, 1], [1, 2], [3, 5])
    """
    cm = jnp.asarray(cm)
    tp = jnp.diagonal(cm, axis1=-2, axis2=-1)
    fp = jnp.sum(cm, axis=-2) - tp
    fn = jnp.sum(cm, axis=-1) - tp
    tn = jnp.sum(cm, axis=(-2, -1))[..., None] - tp - fp - fn
    return Confusion(tp=tp, fp=fp, fn=fn, tn=tn)


def per_class_metrics(cm: ArrayLike) -> dict[str, jax.Array]:
    r"""IoU, precision, recall, Dice and OII of every class (one-vs-rest), each ``[..., C]``.

    .. math:: IoU_c = \frac{TP_c}{TP_c + FP_c + FN_c}, \
              precision_c = \frac{TP_c}{TP_c + FP_c}, \
              recall_c = \frac{TP_c}{TP_c + FN_c}, \
              OII_c = OII(TP_c, FP_c, FN_c) \ \text{(Eqs. 15-17)}

    ``OII_c > 0``: class c is under-segmented (more misses than false alarms). Empty
    denominators give 1 (:mod:`dibe_jax.metrics.binary`'s ``zero_division``); also returns
    ``support`` (label pixels ``TP_c + FN_c``) and ``occurs`` (``TP_c + FP_c + FN_c > 0``).

    >>> import jax.numpy as jnp
    >>> m = per_class_metrics(jnp.array([[5, 1], [2, 3]]))
    >>> [round(v, 3) for v in m["iou"].tolist()], [round(v, 3) for v in m["oii"].tolist()]
    ([0.625, 0.5], [-0.229, 0.25])
    """
    return _per_class_metrics(jnp.asarray(cm))


@jax.jit
def _per_class_metrics(cm: jax.Array) -> dict[str, jax.Array]:
    c = class_counts(cm)
    return {
        "iou": iou(c.tp, c.fp, c.fn),
        "precision": precision(c.tp, c.fp),
        "recall": recall(c.tp, c.fn),
        "dice": dice_score(c.tp, c.fp, c.fn),
        "oii": oii(c.tp, c.fp, c.fn),
        "support": c.tp + c.fn,
        "occurs": (c.tp + c.fp + c.fn) > 0,
    }


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(values.dtype)
    n = jnp.sum(mask, axis=-1)
    return jnp.where(n > 0, jnp.sum(values * mask, axis=-1) / jnp.where(n > 0, n, 1), jnp.nan)


def _class_mask(shape, include_background: bool) -> jax.Array:
    keep = jnp.ones(shape[-1:], bool)
    return keep if include_background else keep.at[0].set(False)


def mean_iou(cm: ArrayLike, *, include_background: bool = True) -> jax.Array:
    r"""mIoU, CDFL Eq. 7: the mean of ``IoU_c`` over the classes that occur.

    .. math:: mIoU = \frac{1}{|\mathcal C|}\sum_{c \in \mathcal C}
              \frac{p_{cc}}{\sum_j p_{cj} + \sum_j p_{jc} - p_{cc}}

    Eq. 7 divides by all ``k + 1`` classes; a class absent from both labels and predictions
    has ``0/0`` and is left out of ``𝒞`` (the usual ``nanmean``). NaN if no class occurs.

    >>> import jax.numpy as jnp
    >>> round(float(mean_iou(jnp.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]]))), 4)  # (5/8 + 1/2)/2
    0.5625
    """
    return _mean_iou(jnp.asarray(cm), include_background)


@functools.partial(jax.jit, static_argnums=1)
def _mean_iou(cm: jax.Array, include_background: bool) -> jax.Array:
    m = _per_class_metrics(cm)
    return _masked_mean(m["iou"], m["occurs"] & _class_mask(m["iou"].shape, include_background))


def mean_accuracy(cm: ArrayLike, *, include_background: bool = True) -> jax.Array:
    r"""mAcc, CDFL Eq. 8: the mean per-class accuracy (recall) over classes with labels.

    .. math:: mAcc = \frac{1}{|\mathcal C|}\sum_{c \in \mathcal C}
              \frac{p_{cc}}{\sum_j p_{cj}}, \quad \mathcal C = \{c : \textstyle\sum_j p_{cj} > 0\}

    >>> import jax.numpy as jnp
    >>> round(float(mean_accuracy(jnp.array([[5, 1], [2, 3]]))), 4)  # (5/6 + 3/5) / 2
    0.7167
    """
    return _mean_accuracy(jnp.asarray(cm), include_background)


@functools.partial(jax.jit, static_argnums=1)
def _mean_accuracy(cm: jax.Array, include_background: bool) -> jax.Array:
    m = _per_class_metrics(cm)
    keep = (m["support"] > 0) & _class_mask(m["iou"].shape, include_background)
    return _masked_mean(m["recall"], keep)


def multiclass_summary(
    cm: ArrayLike, *, include_background: bool = True, class_names: list[str] | None = None
) -> dict[str, object]:
    r"""Every multi-class metric from one confusion matrix ``[C, C]`` (or ``[B, C, C]``, summed).

    Per class (lists of Python floats, in class order): ``iou``, ``precision``, ``recall``,
    ``dice``, ``oii``, ``support``. Macro values (means over the classes that occur, NaN-free
    when at least one does): ``miou`` (Eq. 7), ``macc`` (Eq. 8), ``macro_precision``,
    ``macro_recall``, ``macro_dice`` and ``macro_oii``, the mean per-class OII, positive when
    classes are on average under-segmented; ``mean_abs_oii`` measures the imbalance whatever
    its sign. And ``pixel_accuracy = Σ_c TP_c / Σ cm``.

    A "micro" OII (counts summed over classes) would be 0 by construction: every
    misclassified pixel is a false alarm of one class and a miss of another, so
    ``Σ_c FP_c = Σ_c FN_c``. Hence the macro form.

    Args:
      cm: confusion matrix ``[C, C]`` or ``[..., C, C]`` (summed over the leading axes).
      include_background: if False, class 0 is left out of the macro values (the per-class
        lists keep it).
      class_names: optional names; adds ``per_class`` mapping each name to its metrics.

    >>> import jax.numpy as jnp
    >>> s = multiclass_summary(jnp.array([[5, 1], [2, 3]]))
    >>> round(s["miou"], 4), round(s["macc"], 4), round(s["pixel_accuracy"], 4)
    (0.5625, 0.7167, 0.7273)
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"`cm` must have shape [..., C, C], got {cm.shape}.")
    cm = cm.reshape(-1, cm.shape[-1], cm.shape[-1]).sum(0)
    m = {k: np.asarray(v) for k, v in per_class_metrics(jnp.asarray(cm, jnp.float32)).items()}
    keep = m["occurs"].copy()
    if not include_background:
        keep[0] = False
    labelled = keep & (m["support"] > 0)

    def mean(v, mask):
        return float(np.mean(v[mask])) if mask.any() else float("nan")

    out: dict[str, object] = {
        "miou": mean(m["iou"], keep),
        "macc": mean(m["recall"], labelled),
        "macro_precision": mean(m["precision"], keep),
        "macro_recall": mean(m["recall"], labelled),
        "macro_dice": mean(m["dice"], keep),
        "macro_oii": mean(m["oii"], keep),
        "mean_abs_oii": mean(np.abs(m["oii"]), keep),
        "pixel_accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan"),
    }
    for k in ("iou", "precision", "recall", "dice", "oii"):
        out[k] = [float(v) for v in m[k]]
    out["support"] = [int(v) for v in cm.sum(1)]
    if class_names is not None:
        if len(class_names) != cm.shape[0]:
            raise ValueError(f"`class_names` must have {cm.shape[0]} names.")
        out["per_class"] = {
            name: {k: out[k][i] for k in ("iou", "precision", "recall", "dice", "oii")}
            for i, name in enumerate(class_names)
        }
    return out


class ConfusionMatrixAccumulator:
    """Sums confusion matrices over batches on the host, in exact int64.

    >>> import jax.numpy as jnp
    >>> acc = ConfusionMatrixAccumulator(2)
    >>> acc.update(confusion_matrix(jnp.array([[0, 1]]), jnp.array([[0, 0]]), 2))
    >>> acc.update(confusion_matrix(jnp.array([[1, 1]]), jnp.array([[1, 0]]), 2))
    >>> acc.result().tolist()
    [[1, 2], [0, 1]]
    """

    def __init__(self, num_classes: int) -> None:
        self._total = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, cm: ArrayLike) -> None:
        """Add a matrix ``[C, C]`` or a stack ``[..., C, C]``."""
        cm = np.asarray(cm, dtype=np.int64)
        self._total += cm.reshape(-1, *self._total.shape).sum(0)

    def result(self) -> np.ndarray:
        """The summed ``[C, C]`` int64 matrix."""
        return self._total.copy()
