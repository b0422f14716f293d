r"""Region losses per class on softmax logits (Dice, Tversky, focal Tversky), and the DIBE
losses beyond two classes, one-vs-rest (DIBE_Dis Eq. 18, DIBE_Reg Eq. 20, DIBE Eq. 21).

Every loss has the signature ``loss(logits, labels, *, <hyperparameters>, where=None,
pool_batch=False, axis_name=None) -> jax.Array`` and returns one value per image, shape
``[B]``; the caller takes the batch mean. The pixel-wise softmax losses (cross-entropy,
balanced cross-entropy, focal) are in :mod:`~dibe_jax.losses.cross_entropy`.

Conventions (the binary ones of :mod:`dibe_jax.losses.binary`, extended to C classes):

* ``logits``: float ``[B, *spatial, C]``, ``C >= 2`` classes on the last axis;
  ``p_c = softmax(logits)_c``, computed in at least float32. The predicted class is
  ``argmax_c logits`` (ties go to the lowest index, as in
  :func:`dibe_jax.metrics.confusion_matrix`).
* ``labels``: integer class ids ``[B, *spatial]`` (any integer or bool dtype; values in
  ``[0, C)``, checked when the array is concrete, i.e. outside ``jit``; inside ``jit`` an
  out-of-range id gives an all-zero one-hot row and the pixel counts nowhere), or one-hot /
  soft labels ``[B, *spatial, C]`` of the same shape as ``logits``. ``y_{ic}`` below is the
  one-hot (or soft) label.
* ``where``: optional pixel mask ``[B, *spatial]``; pixels with 0 leave every sum and mean.
  A fully masked image has loss 0.
* Per-class soft counts of one image: ``TP_c = Σ_i p_{ic} y_{ic}``,
  ``FP_c = Σ_i p_{ic} (1 - y_{ic})`` (false alarms: label not c, predicted c),
  ``FN_c = Σ_i (1 - p_{ic}) y_{ic}`` (misses: label c, predicted elsewhere) and
  ``N_c = Σ_i y_{ic}``. **α weights misses and β false alarms**, as in the binary Tversky
  loss.
* Distribution (pixel) terms are means over the image's pixels; region terms use the image's
  own counts. ``pool_batch=True`` sums the counts over the batch (every image then carries the
  pooled loss); ``axis_name`` also sums them over a device axis and implies pooling.
* Macro averages over classes: ``Σ_c k_c π_c L_c / Σ_c k_c π_c`` with class weights ``k_c``
  (``class_weights``, default 1; ``include_background=False`` sets ``k_0 = 0``) and ``π_c``
  the classes taken into account (``classes="present"``: ``N_c > 0`` in the image, or in the
  pooled counts; ``"all"``: every class). No class counted gives 0.

**One-vs-rest DIBE** (beyond the paper): for each class ``c`` the binary loss is applied to
the pair ``(p_c, y_c)`` with ``p_c = softmax(logits)_c`` (not a per-class sigmoid: the model
is trained with one softmax, the same ``p_c`` the metrics' argmax ranks), ``y_c = [label = c]``
and the hard prediction ``ŷ_c = [argmax = c]``. For class c, **α weights its misses** (label
c, predicted elsewhere) and β its false alarms (predicted c, label elsewhere); λ weights the
pixels of class c and 1 - λ the rest. The per-class losses ``L_c`` are averaged with weights
``k_c`` over **all** classes (an absent class still has false alarms to penalise):
``L = Σ_c k_c L_c / Σ_c k_c``. With C = 2 and ``include_background=False`` the result is the
binary loss of the logit difference ``z_1 - z_0`` (up to ties at ``z_1 = z_0``, where argmax
says class 0 and the binary rule ``ŷ = [z >= 0]`` says 1).

Hyperparameters are keyword-only and may be Python numbers (range-checked eagerly) or JAX
arrays (traced: sweeps with ``jax.vmap`` work, one compilation per input shape). The flags
``include_background``, ``classes`` and ``pool_batch`` are static.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax._validate import check_choice
from dibe_jax.losses import _checks, _reduce, _softmax
from dibe_jax.losses._safe import safe_div, safe_pow

__all__ = [
    "dibe_dis_multiclass",
    "dibe_multiclass",
    "dibe_reg_multiclass",
    "dice_multiclass",
    "focal_tversky_multiclass",
    "tversky_multiclass",
]

_REGION_STATIC = ("include_background", "classes", "pool_batch", "axis_name")
_OVR_STATIC = ("include_background", "pool_batch", "axis_name")


# ---------------------------------------------------------------- macro average over classes


def _class_weight_vector(class_weights, include_background: bool, c: int, dtype) -> jax.Array:
    """``k [C]``: ``class_weights`` (default 1), with ``k_0 = 0`` without the background."""
    k = jnp.ones((c,), dtype) if class_weights is None else jnp.asarray(class_weights, dtype)
    if not include_background:
        k = k.at[0].set(0)
    return k


def _macro(per_class: jax.Array, weights: jax.Array) -> jax.Array:
    """``Σ_c w_c L_c / Σ_c w_c`` over the last axis (0 when every weight is 0)."""
    weights = jnp.broadcast_to(weights, per_class.shape)
    return safe_div(jnp.sum(weights * per_class, axis=-1), jnp.sum(weights, axis=-1))


def _region_counts(
    logits, labels, where, *, class_weights, include_background, classes, pool_batch, axis_name
) -> tuple[_softmax.ClassCounts, jax.Array]:
    """Per-class soft counts ``[B, C]`` and the macro weights ``k_c π_c`` ``[B, C]``."""
    logp, y, w = _softmax.prepare(logits, labels, where)
    counts = _softmax.class_counts(logp, y, w, pool_batch=pool_batch, axis_name=axis_name)
    k = _class_weight_vector(class_weights, include_background, logp.shape[-1], logp.dtype)
    weights = jnp.broadcast_to(k, counts.n.shape)
    if classes == "present":
        weights = weights * (counts.n > 0).astype(counts.n.dtype)
    return counts, weights


def _one_minus_tversky(c: _softmax.ClassCounts, alpha, beta, eps) -> jax.Array:
    """``1 - Tv_c = (α·FN_c + β·FP_c) / (TP_c + α·FN_c + β·FP_c + ε)``, without cancellation."""
    errors = alpha * c.fn + beta * c.fp
    return safe_div(errors, c.tp + errors + eps)


# ---------------------------------------------------- jitted implementations: region losses
# Raw arrays and traced hyperparameters in, flags static: one compilation per input shape.


@functools.partial(jax.jit, static_argnames=_REGION_STATIC)
def _dice_mc(
    logits,
    labels,
    where,
    *,
    eps,
    class_weights,
    include_background,
    classes,
    pool_batch,
    axis_name,
):
    c, weights = _region_counts(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )
    errors = c.fp + c.fn
    return _macro(safe_div(errors, 2 * c.tp + errors + eps), weights)


@functools.partial(jax.jit, static_argnames=_REGION_STATIC)
def _tversky_mc(
    logits,
    labels,
    where,
    *,
    alpha,
    beta,
    eps,
    class_weights,
    include_background,
    classes,
    pool_batch,
    axis_name,
):
    c, weights = _region_counts(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )
    return _macro(_one_minus_tversky(c, alpha, beta, eps), weights)


@functools.partial(jax.jit, static_argnames=_REGION_STATIC)
def _focal_tversky_mc(
    logits,
    labels,
    where,
    *,
    alpha,
    beta,
    gamma,
    eps,
    class_weights,
    include_background,
    classes,
    pool_batch,
    axis_name,
):
    c, weights = _region_counts(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )
    return _macro(safe_pow(_one_minus_tversky(c, alpha, beta, eps), 1 / gamma), weights)


# -------------------------------------------------- jitted implementations: one-vs-rest DIBE


def _dibe_dis_pixels(logp, log_q, top, y, *, lam, gamma, alpha, beta) -> jax.Array:
    """Eq. 18 per pixel and class, ``[B, P, C]``, with ``p_c`` softmax and ``ŷ_c = [argmax = c]``.

    The same formula as the binary DIBE_Dis written on ``(log p, log(1 - p), ŷ)`` instead of
    a sigmoid logit; tests check that C = 2 reproduces the binary loss.
    """
    miss_w = (1 + alpha) * safe_pow(-jnp.expm1((1 + alpha) * logp), gamma)
    pos_w = jnp.where(top, jnp.exp(gamma * log_q), miss_w)
    alarm_w = (1 + beta) * safe_pow(-jnp.expm1((1 + beta) * log_q), gamma)
    neg_w = jnp.where(top, alarm_w, jnp.exp(gamma * logp))
    return y * (-lam * pos_w * logp) + (1 - y) * (-(1 - lam) * neg_w * log_q)


def _dibe_dis_term(logp, log_q, top, y, w, k, *, lam, gamma, alpha, beta) -> jax.Array:
    """DIBE_Dis one-vs-rest: per-class pixel means, macro-averaged with ``k``, ``[B]``."""
    per_pixel = _dibe_dis_pixels(logp, log_q, top, y, lam=lam, gamma=gamma, alpha=alpha, beta=beta)
    return _macro(_reduce.pixel_mean(per_pixel, w), k)


def _dibe_reg_term(counts: _softmax.ClassCounts, k, *, alpha, beta, gamma, eps) -> jax.Array:
    """DIBE_Reg one-vs-rest: ``(-log Tv_c)^(1/γ)`` macro-averaged with ``k``, ``[B]``.

    ``-log Tv_c = log1p((α·FN_c + β·FP_c) / (TP_c + ε))``: accurate as ``Tv_c -> 1``.
    """
    neg_log_tv = jnp.log1p(safe_div(alpha * counts.fn + beta * counts.fp, counts.tp + eps))
    return _macro(safe_pow(neg_log_tv, 1 / gamma), k)


@functools.partial(jax.jit, static_argnames=("include_background",))
def _dibe_dis_mc(
    logits, labels, where, *, lam, gamma, alpha, beta, class_weights, include_background
):
    logp, y, w = _softmax.prepare(logits, labels, where)
    log_q, top = _softmax.log1m_softmax(logp)
    k = _class_weight_vector(class_weights, include_background, logp.shape[-1], logp.dtype)
    return _dibe_dis_term(logp, log_q, top, y, w, k, lam=lam, gamma=gamma, alpha=alpha, beta=beta)


@functools.partial(jax.jit, static_argnames=_OVR_STATIC)
def _dibe_reg_mc(
    logits,
    labels,
    where,
    *,
    alpha,
    beta,
    gamma,
    eps,
    class_weights,
    include_background,
    pool_batch,
    axis_name,
):
    logp, y, w = _softmax.prepare(logits, labels, where)
    log_q, _ = _softmax.log1m_softmax(logp)
    k = _class_weight_vector(class_weights, include_background, logp.shape[-1], logp.dtype)
    counts = _softmax.class_counts(
        logp, y, w, pool_batch=pool_batch, axis_name=axis_name, log_q=log_q
    )
    return _dibe_reg_term(counts, k, alpha=alpha, beta=beta, gamma=gamma, eps=eps)


@functools.partial(jax.jit, static_argnames=_OVR_STATIC)
def _dibe_mc(
    logits,
    labels,
    where,
    *,
    theta,
    lam,
    gamma,
    alpha,
    beta,
    eps,
    class_weights,
    include_background,
    pool_batch,
    axis_name,
):
    logp, y, w = _softmax.prepare(logits, labels, where)
    log_q, top = _softmax.log1m_softmax(logp)
    k = _class_weight_vector(class_weights, include_background, logp.shape[-1], logp.dtype)
    dis = _dibe_dis_term(logp, log_q, top, y, w, k, lam=lam, gamma=gamma, alpha=alpha, beta=beta)
    counts = _softmax.class_counts(
        logp, y, w, pool_batch=pool_batch, axis_name=axis_name, log_q=log_q
    )
    reg = _dibe_reg_term(counts, k, alpha=alpha, beta=beta, gamma=gamma, eps=eps)
    return theta * dis + (1 - theta) * reg


# --------------------------------------------------------------------------- public API


def _check_macro_options(
    logits, labels, where, *, class_weights, include_background, pool_batch, classes=None
):
    """Check the inputs and the macro-average options; return the checked class weights."""
    _checks.check_softmax_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    _checks.check_bool("include_background", include_background)
    if classes is not None:
        check_choice("classes", classes, ("present", "all"))
    return _checks.check_class_weights("class_weights", class_weights, jnp.shape(logits)[-1])


def dice_multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    eps: ArrayLike = 1.0,
    include_background: bool = True,
    class_weights: ArrayLike | None = None,
    classes: str = "present",
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Multi-class soft Dice loss: the binary Dice (Eqs. 4-5) per class, macro-averaged.

    .. math:: L = \frac{\sum_c k_c \pi_c L_c}{\sum_c k_c \pi_c}, \quad
              L_c = 1 - \frac{2TP_c + \varepsilon}{2TP_c + FP_c + FN_c + \varepsilon}

    With two classes and ``include_background=False`` it is the binary
    :func:`~dibe_jax.losses.dice` of the logit difference ``z_1 - z_0``.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      eps: ε >= 0, smoothing added to numerator and denominator.
      include_background: if False, class 0 is left out of the macro average (``k_0 = 0``).
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the macro average (default 1).
      classes: ``"present"`` (default): average over the classes with ``N_c > 0`` in the
        image (or in the pooled counts); ``"all"``: over every class.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: sum the per-class counts over the batch before the region term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp  # a perfect prediction
    >>> z = jnp.array([[[9.0, -9.0], [-9.0, 9.0]]])
    >>> float(dice_multiclass(z, jnp.array([[0, 1]]), eps=0.0)[0]) < 1e-3
    True
    """
    class_weights = _check_macro_options(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        classes=classes,
    )
    _checks.check_nonneg("eps", eps)
    return _dice_mc(
        logits,
        labels,
        where,
        eps=eps,
        class_weights=class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def tversky_multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    eps: ArrayLike = 1.0,
    include_background: bool = True,
    class_weights: ArrayLike | None = None,
    classes: str = "present",
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Multi-class Tversky loss (Eqs. 6-7 per class): ``1 - Tv_c``, macro-averaged.

    .. math:: L_c = 1 - \frac{TP_c + \varepsilon}{TP_c + \alpha FN_c + \beta FP_c
              + \varepsilon}

    α = β = 0.5 with ε/2 gives :func:`dice_multiclass` with ε. MONAI's
    ``TverskyLoss(alpha=a, beta=b)`` corresponds to ``alpha=b, beta=a`` here.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      alpha: α >= 0, weight of **misses** of each class c: label c predicted elsewhere,
        soft count ``FN_c = Σ_i (1 - p_ic)·y_ic``.
      beta: β >= 0, weight of **false alarms** of each class c: label not c predicted c,
        soft count ``FP_c = Σ_i p_ic·(1 - y_ic)``.
      eps: ε >= 0, smoothing added to numerator and denominator.
      include_background: if False, class 0 is left out of the macro average (``k_0 = 0``).
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the macro average (default 1).
      classes: ``"present"`` (default): average over the classes with ``N_c > 0`` in the
        image (or in the pooled counts); ``"all"``: over every class.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: sum the per-class counts over the batch before the region term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp  # class 1 missed on one of its two pixels
    >>> z = jnp.array([[[-9.0, 9.0], [9.0, -9.0]]])
    >>> y = jnp.array([[1, 1]])
    >>> round(float(tversky_multiclass(z, y, alpha=1.0, beta=0.0, eps=0.0)[0]), 3)
    0.5
    """
    class_weights = _check_macro_options(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        classes=classes,
    )
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_nonneg("eps", eps)
    return _tversky_mc(
        logits,
        labels,
        where,
        alpha=alpha,
        beta=beta,
        eps=eps,
        class_weights=class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def focal_tversky_multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    gamma: ArrayLike = 0.75,
    eps: ArrayLike = 1.0,
    include_background: bool = True,
    class_weights: ArrayLike | None = None,
    classes: str = "present",
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Multi-class focal Tversky loss (Abraham & Khan, Eq. 8 per class), macro-averaged.

    .. math:: L_c = (1 - Tv_c)^{1/\gamma}

    γ = 1 gives :func:`tversky_multiclass`. Finite value and gradient at ``Tv_c = 1``.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      alpha: α >= 0, weight of **misses** of each class c: label c predicted elsewhere,
        soft count ``FN_c = Σ_i (1 - p_ic)·y_ic``.
      beta: β >= 0, weight of **false alarms** of each class c: label not c predicted c,
        soft count ``FP_c = Σ_i p_ic·(1 - y_ic)``.
      gamma: γ > 0 (default 0.75, the paper's γ_FT); each class contributes
        ``(1 - Tv_c)^(1/γ)``.
      eps: ε >= 0, smoothing added to numerator and denominator.
      include_background: if False, class 0 is left out of the macro average (``k_0 = 0``).
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the macro average (default 1).
      classes: ``"present"`` (default): average over the classes with ``N_c > 0`` in the
        image (or in the pooled counts); ``"all"``: over every class.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: sum the per-class counts over the batch before the region term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[-9.0, 9.0], [9.0, -9.0]]])
    >>> y = jnp.array([[1, 1]])
    >>> loss = focal_tversky_multiclass(z, y, alpha=1.0, beta=0.0, gamma=0.5, eps=0.0)
    >>> round(float(loss[0]), 3)
    0.25
    """
    class_weights = _check_macro_options(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        classes=classes,
    )
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    return _focal_tversky_mc(
        logits,
        labels,
        where,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        eps=eps,
        class_weights=class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def dibe_dis_multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    lam: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    include_background: bool = True,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""DIBE_Dis (Eq. 18) for C classes, one-vs-rest, macro-averaged over classes.

    .. math::
       L_{ic} = \begin{cases}
       -\lambda (1 - p_c)^\gamma \log p_c & y_c = 1, \hat y_c = 1 \\
       -\lambda (1 - p_c^{1+\alpha})^\gamma (1 + \alpha) \log p_c & y_c = 1, \hat y_c = 0 \\
       -(1 - \lambda) p_c^\gamma \log(1 - p_c) & y_c = 0, \hat y_c = 0 \\
       -(1 - \lambda)(1 - (1 - p_c)^{1+\beta})^\gamma (1 + \beta) \log(1 - p_c) & y_c = 0,
          \hat y_c = 1
       \end{cases}, \quad
       L = \frac{\sum_c k_c \frac{1}{N}\sum_i L_{ic}}{\sum_c k_c}

    One-vs-rest (see the module docstring): class c against the rest, with the softmax
    ``p_c``, ``y_c = [label = c]`` and ``ŷ_c = [argmax = c]``; the average runs over **all**
    classes (an absent class still has false alarms).

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      lam: λ in [0, 1], weight of the pixels of class c in its one-vs-rest term; 1 - λ
        weights the other pixels.
      gamma: γ >= 0, focusing exponent.
      alpha: α >= 0, extra weight of the **misses** of class c (label c, argmax elsewhere).
      beta: β >= 0, extra weight of the **false alarms** of class c (argmax c, label
        elsewhere).
      include_background: if False, class 0 is left out of the macro average (``k_0 = 0``).
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the macro average (default 1).
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[[0.0, 2.0], [1.0, -1.0]]]), jnp.array([[1, 1]])
    >>> bool(dibe_dis_multiclass(z, y, alpha=0.9)[0] > dibe_dis_multiclass(z, y)[0])
    True
    """
    class_weights = _check_macro_options(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
    )
    _checks.check_unit("lam", lam)
    _checks.check_nonneg("gamma", gamma)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    return _dibe_dis_mc(
        logits,
        labels,
        where,
        lam=lam,
        gamma=gamma,
        alpha=alpha,
        beta=beta,
        class_weights=class_weights,
        include_background=include_background,
    )


def dibe_reg_multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    gamma: ArrayLike = 1.5,
    eps: ArrayLike = 1.0,
    include_background: bool = True,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""DIBE_Reg (Eq. 20) for C classes, one-vs-rest, macro-averaged over classes.

    .. math:: L_c = (-\log Tv_c)^{1/\gamma}
              = \log\Big(1 + \frac{\alpha FN_c + \beta FP_c}{TP_c + \varepsilon}\Big)^{1/\gamma},
              \quad L = \frac{\sum_c k_c L_c}{\sum_c k_c}

    One-vs-rest (see the module docstring): class c against the rest, with the softmax
    ``p_c`` and ``y_c = [label = c]``; the average runs over **all** classes (an absent class
    still has false alarms).

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      alpha: α >= 0, weight of **misses** of each class c: label c predicted elsewhere,
        soft count ``FN_c = Σ_i (1 - p_ic)·y_ic``.
      beta: β >= 0, weight of **false alarms** of each class c: label not c predicted c,
        soft count ``FP_c = Σ_i p_ic·(1 - y_ic)``.
      gamma: γ > 0 (default 1.5, the paper's γ_DIBE_Reg); each class contributes
        ``(-log Tv_c)^(1/γ)``.
      eps: ε >= 0, smoothing of ``Tv_c``.
      include_background: if False, class 0 is left out of the macro average (``k_0 = 0``).
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the macro average (default 1).
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: sum the per-class counts over the batch before the region term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import math, jax.numpy as jnp  # class 1 missed on one of two pixels; class 0 absent
    >>> z, y = jnp.array([[[-50.0, 50.0], [50.0, -50.0]]]), jnp.array([[1, 1]])
    >>> got = dibe_reg_multiclass(
    ...     z, y, alpha=1.0, beta=0.0, gamma=1.0, eps=0.0, include_background=False
    ... )
    >>> math.isclose(float(got[0]), math.log(2), rel_tol=1e-5)
    True
    """
    class_weights = _check_macro_options(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
    )
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    return _dibe_reg_mc(
        logits,
        labels,
        where,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        eps=eps,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def dibe_multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    theta: ArrayLike = 0.5,
    lam: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    eps: ArrayLike = 1.0,
    include_background: bool = True,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""DIBE (Eq. 21) for C classes: ``θ·DIBE_Dis + (1 - θ)·DIBE_Reg``, both one-vs-rest.

    .. math:: L = \theta\, \frac{\sum_c k_c \frac{1}{N}\sum_i L^{Dis}_{ic}}{\sum_c k_c}
              + (1 - \theta)\, \frac{\sum_c k_c (-\log Tv_c)^{1/\gamma}}{\sum_c k_c}

    One-vs-rest (see the module docstring and :func:`dibe_dis_multiclass`); α and β mean the
    same in both halves. :func:`dibe_jax.losses.dibe` routes here when given
    ``[B, *spatial, C]`` logits with integer labels ``[B, *spatial]``.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      theta: θ in [0, 1], weight of the DIBE_Dis term; 1 - θ weights DIBE_Reg.
      lam: λ in [0, 1], weight of the pixels of class c in its DIBE_Dis term.
      gamma: γ > 0, shared: focusing exponent of DIBE_Dis and ``1/γ`` of DIBE_Reg.
      alpha: α >= 0, weight of **misses** of each class c (label c, predicted elsewhere;
        soft count ``FN_c``), in both halves.
      beta: β >= 0, weight of **false alarms** of each class c (label not c, predicted c;
        soft count ``FP_c``), in both halves.
      eps: ε >= 0, smoothing of ``Tv_c``.
      include_background: if False, class 0 is left out of the macro average (``k_0 = 0``).
      class_weights: optional ``[C]`` weights ``k_c >= 0`` of the macro average (default 1).
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: sum the per-class counts over the batch before the region term (the
        DIBE_Dis term stays per image).
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.zeros((1, 3, 3)), jnp.array([[0, 1, 2]])
    >>> bool(jnp.allclose(dibe_multiclass(z, y, theta=1.0), dibe_dis_multiclass(z, y)))
    True
    """
    class_weights = _check_macro_options(
        logits,
        labels,
        where,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
    )
    _checks.check_unit("theta", theta)
    _checks.check_unit("lam", lam)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_nonneg("eps", eps)
    return _dibe_mc(
        logits,
        labels,
        where,
        theta=theta,
        lam=lam,
        gamma=gamma,
        alpha=alpha,
        beta=beta,
        eps=eps,
        class_weights=class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )
