r"""The binary losses of the DIBE paper (Yi, Zhong, Liu et al.), Eqs. 1-12, 18, 20 and 21.

Every loss has the signature ``loss(logits, labels, *, <hyperparameters>, where=None,
pool_batch=False, axis_name=None) -> jax.Array`` and returns one value per image, shape
``[B]``; the caller takes the batch mean.

Conventions (binding; docs/conventions.md gives the reasoning):

* ``logits``: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)`` and the
  predicted label is ``ŷ = 1`` iff ``logit >= 0``. ``labels``: same shape, values {0, 1}, any
  numeric or bool dtype. Everything is computed in log space and in at least float32.
* Soft counts of one image: ``TP = Σ p·y``, ``FP = Σ p·(1 - y)`` (false alarms) and
  ``FN = Σ (1 - p)·y`` (misses), in the order of :class:`dibe_jax.metrics.Confusion`.
* **α weights misses** (label 1 predicted 0) and **β weights false alarms** (label 0
  predicted 1), in both the distribution loss DIBE_Dis (Eq. 18) and the Tversky coefficient
  ``Tv = (TP + ε) / (TP + α·FN + β·FP + ε)`` (Eq. 7). The paper calls the first region "FP";
  its Table 6 and Fig. 10 (raising α lowers OII) only make sense if it is the misses. Our
  ``tversky(alpha=a, beta=b)`` equals MONAI's ``TverskyLoss(alpha=b, beta=a)``.
* Distribution (pixel) losses are means over the image's pixels (the ``θ/(wh)·Σ`` of
  Eqs. 9-12, 21); region losses use the image's own soft counts.
* ``where`` (same shape as ``labels``, bool or {0, 1}): pixels with ``where = 0`` are dropped
  from every sum and mean; a fully masked image has loss 0.
* ``pool_batch=True`` sums the soft counts over the batch before the region term (every image
  then carries the pooled region loss); ``axis_name`` additionally sums them across the
  devices of a ``shard_map``/``pmap`` axis and implies ``pool_batch``. Off by default.

Hyperparameters are keyword-only and may be Python numbers (range-checked eagerly) or JAX
arrays (traced: a sweep over α with ``jax.vmap`` works). Defaults are the paper's
(Sec. 4.3.2): λ = 0.25, θ = 0.5, (α, β) = (0.3, 0.7), γ_Focal = γ_DIBE_Dis = γ_DIBE = 2,
γ_FT = 0.75, γ_DIBE_Reg = 1.5, γ_CE = γ_Dc = 1, ε = 1.

This module takes sigmoid logits only. The package's ``dibe``, ``dibe_dis`` and ``dibe_reg``
(:mod:`dibe_jax.losses`) also take softmax logits ``[B, *spatial, C]`` with class ids
``[B, *spatial]`` and route them to the one-vs-rest losses of
:mod:`~dibe_jax.losses.multiclass` (see :func:`~dibe_jax.losses._routing.binary_or_one_vs_rest`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax.losses import _checks, _reduce
from dibe_jax.losses._safe import log_sigmoids, safe_div, safe_pow, sigmoid_parts

__all__ = [
    "bce",
    "combo",
    "dibe",
    "dibe_dis",
    "dibe_reg",
    "dice",
    "exp_log",
    "focal",
    "focal_tversky",
    "hybrid_focal",
    "tversky",
    "wbce",
]


# --------------------------------------------------------------------------- shared pieces


class SoftCounts(NamedTuple):
    """Soft confusion counts per image (or pooled), each ``[B]``.

    Field order as :class:`dibe_jax.metrics.Confusion` ``(tp, fp, fn, tn)``, without ``tn``.
    """

    tp: jax.Array  # Σ p·y
    fp: jax.Array  # false alarms: label 0, Σ p·(1 - y); weighted by β
    fn: jax.Array  # misses: label 1, Σ (1 - p)·y; weighted by α


def _prepare(logits, labels, where):
    """Flatten to ``[B, P]`` in the compute dtype (inside jit)."""
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    z = _checks.flatten(logits, dtype)
    y = _checks.flatten(jnp.asarray(labels), dtype)
    w = None if where is None else _checks.flatten(jnp.asarray(where), dtype)
    return z, y, w


def _soft_counts(z, y, w, *, pool_batch: bool, axis_name: str | None) -> SoftCounts:
    # One sigmoid and three sums per image: FN = Σy - TP and FP = Σp - TP are the same
    # counts as Σ(1-p)·y and Σp·(1-y), with exact gradients (-y·p(1-p), (1-y)·p(1-p)) and a
    # rounding error below ~1e-7·Σy in float32; a fifth of the cost of the direct sums.
    p = jax.nn.sigmoid(z)
    pos = y if w is None else y * w
    tp = jnp.sum(p * pos, axis=1)
    total_p = jnp.sum(p if w is None else p * w, axis=1)
    total_y = jnp.sum(pos, axis=1)
    counts = SoftCounts(tp=tp, fp=jnp.maximum(total_p - tp, 0.0), fn=jnp.maximum(total_y - tp, 0.0))
    return SoftCounts(
        *(_reduce.pool(c, pool_batch=pool_batch, axis_name=axis_name) for c in counts)
    )


def _one_minus_tversky(c: SoftCounts, alpha, beta, eps) -> jax.Array:
    """``1 - Tv = (α·FN + β·FP) / (TP + α·FN + β·FP + ε)``, without cancellation."""
    errors = alpha * c.fn + beta * c.fp
    return safe_div(errors, c.tp + errors + eps)


def _neg_log_tversky(c: SoftCounts, alpha, beta, eps) -> jax.Array:
    """``-log Tv = log1p((α·FN + β·FP) / (TP + ε))``: accurate as ``Tv -> 1``."""
    return jnp.log1p(safe_div(alpha * c.fn + beta * c.fp, c.tp + eps))


def _wbce_pixels(z, y, lam):
    log_p, log_q = log_sigmoids(z)
    return -(lam * y * log_p + (1 - lam) * (1 - y) * log_q)


def _focal_pixels(z, y, lam, gamma):
    log_p, log_q = log_sigmoids(z)
    pos = -lam * jnp.exp(gamma * log_q) * log_p  # -λ (1-p)^γ log p
    neg = -(1 - lam) * jnp.exp(gamma * log_p) * log_q  # -(1-λ) p^γ log(1-p)
    return y * pos + (1 - y) * neg


def _dibe_dis_pixels(z, y, *, lam, gamma, alpha, beta):
    p, q, log_p, log_q = sigmoid_parts(z)
    pos = y > 0
    # Per pixel, the log-probability of the true class and the four cases of Eq. 18:
    #   y = 1, ŷ = 1: (1-p)^γ                 y = 1, ŷ = 0 (miss):  (1+α)(1 - p^(1+α))^γ
    #   y = 0, ŷ = 0: p^γ                     y = 0, ŷ = 1 (alarm): (1+β)(1 - (1-p)^(1+β))^γ
    # Selecting the base before one shared power keeps it to five transcendentals a pixel.
    log_true = jnp.where(pos, log_p, log_q)
    one_plus = jnp.where(pos, 1 + alpha, 1 + beta)
    wrong = pos != (z >= 0)  # a miss or a false alarm
    base = jnp.where(wrong, -jnp.expm1(one_plus * log_true), jnp.where(pos, q, p))
    weight = jnp.where(wrong, one_plus, 1.0) * safe_pow(base, gamma)
    return -jnp.where(pos, lam, 1 - lam) * weight * log_true


def _exp_log_ce_pixels(z, y, lam, gamma_ce):
    # -log p = softplus(-z) >= 0, -log(1-p) = softplus(z) >= 0
    pos = lam * safe_pow(jax.nn.softplus(-z), gamma_ce)
    neg = (1 - lam) * safe_pow(jax.nn.softplus(z), gamma_ce)
    return y * pos + (1 - y) * neg


def _dice_loss(c: SoftCounts, eps) -> jax.Array:
    """``1 - Dc = (FP + FN) / (2·TP + FP + FN + ε)`` (Eqs. 4-5)."""
    errors = c.fp + c.fn
    return safe_div(errors, 2 * c.tp + errors + eps)


# ------------------------------------------------------------------ jitted implementations
# Raw arrays in, hyperparameters keyword-only and traced (one compilation per input shape);
# only ``pool_batch`` and ``axis_name`` are static. The pixel losses take no pooling options.

_jit_counts = functools.partial(jax.jit, static_argnames=("pool_batch", "axis_name"))


@jax.jit
def _bce(logits, labels, where):
    z, y, w = _prepare(logits, labels, where)
    return 2 * _reduce.pixel_mean(_wbce_pixels(z, y, 0.5), w)


@jax.jit
def _wbce(logits, labels, where, *, lam):
    z, y, w = _prepare(logits, labels, where)
    return _reduce.pixel_mean(_wbce_pixels(z, y, lam), w)


@jax.jit
def _focal(logits, labels, where, *, lam, gamma):
    z, y, w = _prepare(logits, labels, where)
    return _reduce.pixel_mean(_focal_pixels(z, y, lam, gamma), w)


@jax.jit
def _dibe_dis(logits, labels, where, *, lam, gamma, alpha, beta):
    z, y, w = _prepare(logits, labels, where)
    per_pixel = _dibe_dis_pixels(z, y, lam=lam, gamma=gamma, alpha=alpha, beta=beta)
    return _reduce.pixel_mean(per_pixel, w)


@_jit_counts
def _dice(logits, labels, where, *, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    return _dice_loss(_soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name), eps)


@_jit_counts
def _tversky(logits, labels, where, *, alpha, beta, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    return _one_minus_tversky(c, alpha, beta, eps)


@_jit_counts
def _focal_tversky(logits, labels, where, *, alpha, beta, gamma, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    return safe_pow(_one_minus_tversky(c, alpha, beta, eps), 1 / gamma)


@_jit_counts
def _dibe_reg(logits, labels, where, *, alpha, beta, gamma, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    return safe_pow(_neg_log_tversky(c, alpha, beta, eps), 1 / gamma)


@_jit_counts
def _combo(logits, labels, where, *, theta, lam, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    dist = _reduce.pixel_mean(_wbce_pixels(z, y, lam), w)
    return theta * dist + (1 - theta) * _dice_loss(c, eps)


@_jit_counts
def _exp_log(logits, labels, where, *, theta, lam, gamma_ce, gamma_dc, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    dist = _reduce.pixel_mean(_exp_log_ce_pixels(z, y, lam, gamma_ce), w)
    neg_log_dc = jnp.log1p(safe_div(c.fp + c.fn, 2 * c.tp + eps))  # -log Dc, Eq. 10
    return theta * dist + (1 - theta) * safe_pow(neg_log_dc, gamma_dc)


@_jit_counts
def _hybrid_focal(
    logits,
    labels,
    where,
    *,
    theta,
    lam,
    gamma,
    alpha,
    beta,
    gamma_ft,
    eps,
    pool_batch,
    axis_name,
):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    dist = _reduce.pixel_mean(_focal_pixels(z, y, lam, gamma), w)
    region = safe_pow(_one_minus_tversky(c, alpha, beta, eps), 1 / gamma_ft)
    return theta * dist + (1 - theta) * region


@_jit_counts
def _dibe(logits, labels, where, *, theta, lam, gamma, alpha, beta, eps, pool_batch, axis_name):
    z, y, w = _prepare(logits, labels, where)
    c = _soft_counts(z, y, w, pool_batch=pool_batch, axis_name=axis_name)
    per_pixel = _dibe_dis_pixels(z, y, lam=lam, gamma=gamma, alpha=alpha, beta=beta)
    dist = _reduce.pixel_mean(per_pixel, w)
    region = safe_pow(_neg_log_tversky(c, alpha, beta, eps), 1 / gamma)
    return theta * dist + (1 - theta) * region


# --------------------------------------------------------------------------- public API
# Each loss checks its arguments (static facts only), then calls its jitted twin above.


def bce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Binary cross-entropy, Eq. 1, averaged over each image's pixels.

    .. math:: L = -\frac{1}{wh}\sum_i \big[y_i \log p_i + (1 - y_i)\log(1 - p_i)\big]

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> float(bce(jnp.zeros((1, 4)), jnp.array([[1, 0, 0, 0]]))[0])  # log 2
    0.6931...
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    return _bce(logits, labels, where)


def wbce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    lam: ArrayLike = 0.25,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Weighted binary cross-entropy, Eq. 2 (Pihur et al.), mean over pixels.

    .. math:: L = -\frac{1}{wh}\sum_i \big[\lambda y_i \log p_i
              + (1 - \lambda)(1 - y_i)\log(1 - p_i)\big]

    ``wbce(lam=0.5)`` is half of :func:`bce`.

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      lam: λ in [0, 1], weight of the defect pixels (y = 1); 1 - λ weights the background.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> float(wbce(jnp.zeros((1, 2)), jnp.array([[1, 0]]), lam=0.25)[0])  # log(2) / 2
    0.3465...
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("lam", lam)
    _checks.check_bool("pool_batch", pool_batch)
    return _wbce(logits, labels, where, lam=lam)


def focal(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    lam: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Focal loss, Eq. 3 (Lin et al.), mean over pixels.

    .. math:: L_i = -\lambda (1 - p_i)^\gamma \log p_i \ (y_i = 1), \quad
              -(1 - \lambda) p_i^\gamma \log(1 - p_i) \ (y_i = 0)

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      lam: λ in [0, 1], weight of the defect pixels (y = 1); 1 - λ weights the background.
      gamma: γ >= 0, focusing exponent; γ = 0 gives :func:`wbce`.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> float(focal(jnp.zeros((1, 2)), jnp.array([[1, 0]]), lam=0.5, gamma=2.0)[0])
    0.0866...
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("lam", lam)
    _checks.check_nonneg("gamma", gamma)
    _checks.check_bool("pool_batch", pool_batch)
    return _focal(logits, labels, where, lam=lam, gamma=gamma)


def dibe_dis(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    lam: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""DIBE_Dis, the distribution-based DIBE loss, Eq. 18, mean over pixels.

    Focal loss whose hard pixels are split by the predicted label ``ŷ = [logit >= 0]``:

    .. math::
       L_i = \begin{cases}
       -\lambda (1 - p)^\gamma \log p & y = 1, \hat y = 1 \\
       -\lambda (1 - p^{1+\alpha})^\gamma (1 + \alpha) \log p & y = 1, \hat y = 0
          \ \text{(miss)} \\
       -(1 - \lambda) p^\gamma \log(1 - p) & y = 0, \hat y = 0 \\
       -(1 - \lambda)(1 - (1 - p)^{1+\beta})^\gamma (1 + \beta) \log(1 - p) & y = 0,
          \hat y = 1 \ \text{(false alarm)}
       \end{cases}

    The third case reads ``p̂^γ`` (the paper's ``p^γ`` is a typo). With α = β = 0 this is
    :func:`focal`; raising α raises the loss and gradient of misses (Eq. 19, Fig. 5), which
    lowers FN and hence OII.

    Called as ``dibe_jax.losses.dibe_dis``, it also takes softmax logits ``[B, *spatial, C]``
    with integer labels ``[B, *spatial]`` and then computes
    :func:`~dibe_jax.losses.multiclass.dibe_dis_multiclass` (one-vs-rest, macro-averaged over
    classes) with the same keywords.

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      lam: λ in [0, 1], weight of the defect pixels (y = 1); 1 - λ weights the background.
      gamma: γ >= 0, focusing exponent.
      alpha: α >= 0, extra weight of **misses**: label 1 predicted 0 (y = 1, ŷ = 0; the
        region the paper calls "FP").
      beta: β >= 0, extra weight of **false alarms**: label 0 predicted 1 (y = 0, ŷ = 1).
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[-1.0, 1.0]]), jnp.array([[1, 0]])  # one miss, one false alarm
    >>> bool(dibe_dis(z, y, alpha=0.7)[0] > dibe_dis(z, y, alpha=0.3)[0])
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("lam", lam)
    _checks.check_nonneg("gamma", gamma)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_bool("pool_batch", pool_batch)
    return _dibe_dis(logits, labels, where, lam=lam, gamma=gamma, alpha=alpha, beta=beta)


def dice(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Dice loss, Eqs. 4-5, on the image's soft counts.

    .. math:: L = 1 - \frac{2TP + \varepsilon}{2TP + FP + FN + \varepsilon}
              = \frac{FP + FN}{2TP + FP + FN + \varepsilon}

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      eps: ε >= 0, smoothing added to numerator and denominator.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the loss.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> float(dice(jnp.array([[100.0, -100.0]]), jnp.array([[1, 0]]), eps=0.0)[0])
    0.0
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _dice(logits, labels, where, eps=eps, pool_batch=pool_batch, axis_name=axis_name)


def tversky(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Tversky loss, Eqs. 6-7 (Salehi et al.), with α on misses and β on false alarms.

    .. math:: L = 1 - Tv, \quad Tv = \frac{TP + \varepsilon}
              {TP + \alpha FN + \beta FP + \varepsilon}

    With α = β = 0.5 and ε/2 it equals :func:`dice` with ε. MONAI's
    ``TverskyLoss(alpha=a, beta=b)`` is ``tversky(alpha=b, beta=a)``.

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      alpha: α >= 0, weight of **misses**: label 1 predicted 0, soft count
        ``FN = Σ (1 - p)·y`` (the paper's "FP").
      beta: β >= 0, weight of **false alarms**: label 0 predicted 1, soft count
        ``FP = Σ p·(1 - y)``.
      eps: ε >= 0, smoothing added to numerator and denominator.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the loss.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[-100.0, 100.0]]), jnp.array([[1, 1]])  # one hit, one miss
    >>> float(tversky(z, y, alpha=1.0, beta=0.0, eps=0.0)[0])  # 1 - 1 / (1 + 1)
    0.5
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _tversky(
        logits,
        labels,
        where,
        alpha=alpha,
        beta=beta,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def focal_tversky(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    gamma: ArrayLike = 0.75,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Focal Tversky loss, Eq. 8 (Abraham & Khan): ``(1 - Tv)^(1/γ)``; γ = 1 is Tversky.

    .. math:: L = (1 - Tv)^{1/\gamma}

    Finite with a finite gradient at ``Tv = 1`` for every γ (see ``_safe.safe_pow``).

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      alpha: α >= 0, weight of **misses**: label 1 predicted 0, soft count
        ``FN = Σ (1 - p)·y`` (the paper's "FP").
      beta: β >= 0, weight of **false alarms**: label 0 predicted 1, soft count
        ``FP = Σ p·(1 - y)``.
      gamma: γ > 0 (default 0.75, the paper's γ_FT); the loss is ``(1 - Tv)^(1/γ)``.
      eps: ε >= 0, smoothing of ``Tv``.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the loss.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[-100.0, 100.0]]), jnp.array([[1, 1]])
    >>> float(focal_tversky(z, y, alpha=1.0, beta=0.0, gamma=0.5, eps=0.0)[0])  # 0.5 ** 2
    0.25
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _focal_tversky(
        logits,
        labels,
        where,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def dibe_reg(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    gamma: ArrayLike = 1.5,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""DIBE_Reg, the region-based DIBE loss, Eq. 20: ``(-log Tv)^(1/γ)``.

    .. math:: L = (-\log Tv)^{1/\gamma}, \quad
              -\log Tv = \log\Big(1 + \frac{\alpha FN + \beta FP}{TP + \varepsilon}\Big)

    The right-hand form is used: it stays accurate as ``Tv -> 1``. Its derivative in Tv is
    Eq. 25 (:func:`dibe_jax.gradients.dibe_reg_grad`); finite at ``Tv = 1`` although the
    exact derivative is infinite there for γ > 1.

    Called as ``dibe_jax.losses.dibe_reg``, it also takes softmax logits ``[B, *spatial, C]``
    with integer labels ``[B, *spatial]`` and then computes
    :func:`~dibe_jax.losses.multiclass.dibe_reg_multiclass` (one-vs-rest, macro-averaged over
    classes) with the same keywords.

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      alpha: α >= 0, weight of **misses**: label 1 predicted 0, soft count
        ``FN = Σ (1 - p)·y`` (the paper's "FP").
      beta: β >= 0, weight of **false alarms**: label 0 predicted 1, soft count
        ``FP = Σ p·(1 - y)``.
      gamma: γ > 0 (default 1.5, the paper's γ_DIBE_Reg used alone); the loss is
        ``(-log Tv)^(1/γ)``.
      eps: ε >= 0, smoothing of ``Tv``.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the loss.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import math, jax.numpy as jnp
    >>> z, y = jnp.array([[-100.0, 100.0]]), jnp.array([[1, 1]])  # Tv = 1/2 at α=1, β=0, ε=0
    >>> loss = dibe_reg(z, y, alpha=1.0, beta=0.0, gamma=1.0, eps=0.0)
    >>> math.isclose(float(loss[0]), math.log(2), rel_tol=1e-6)
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _dibe_reg(
        logits,
        labels,
        where,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def combo(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    theta: ArrayLike = 0.5,
    lam: ArrayLike = 0.25,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Combo loss, Eq. 9 (Taghanaki et al.): ``θ·mean(WBCE) + (1 - θ)·Dice``.

    .. math:: L = \frac{\theta}{wh}\sum_i L_{WBCE,i} + (1 - \theta) L_{Dice}

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      theta: θ in [0, 1], weight of the WBCE (distribution) term; 1 - θ weights Dice.
      lam: λ in [0, 1], WBCE weight of the defect pixels (y = 1).
      eps: ε >= 0, Dice smoothing.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the Dice term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.zeros((1, 4)), jnp.array([[1, 0, 0, 0]])
    >>> bool(jnp.allclose(combo(z, y, theta=1.0), wbce(z, y)))
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("theta", theta)
    _checks.check_unit("lam", lam)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _combo(
        logits,
        labels,
        where,
        theta=theta,
        lam=lam,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def exp_log(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    theta: ArrayLike = 0.5,
    lam: ArrayLike = 0.25,
    gamma_ce: ArrayLike = 1.0,
    gamma_dc: ArrayLike = 1.0,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Exponential-logarithmic loss, Eqs. 10-11 (Wong et al.).

    .. math:: L = \frac{\theta}{wh}\sum_i L^{EL}_{CE,i} + (1 - \theta)(-\log D_c)^{\gamma_{Dc}},
       \quad L^{EL}_{CE,i} = \lambda(-\log p_i)^{\gamma_{CE}} \ (y_i = 1), \
       (1 - \lambda)(-\log(1 - p_i))^{\gamma_{CE}} \ (y_i = 0)

    With γ_CE = γ_Dc = 1 (the defaults) it is ``θ·WBCE + (1 - θ)·(-log Dc)``.

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      theta: θ in [0, 1], weight of the distribution term; 1 - θ weights ``(-log Dc)^γ_Dc``.
      lam: λ in [0, 1], weight of the defect pixels (y = 1) in the distribution term.
      gamma_ce: γ_CE > 0, exponent of ``-log p`` (Eq. 11).
      gamma_dc: γ_Dc > 0, exponent of ``-log Dc`` (Eq. 10).
      eps: ε >= 0, Dice smoothing.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the Dice term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.zeros((1, 4)), jnp.array([[1, 0, 0, 0]])
    >>> bool(jnp.allclose(exp_log(z, y, theta=1.0), wbce(z, y)))
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("theta", theta)
    _checks.check_unit("lam", lam)
    _checks.check_positive("gamma_ce", gamma_ce)
    _checks.check_positive("gamma_dc", gamma_dc)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _exp_log(
        logits,
        labels,
        where,
        theta=theta,
        lam=lam,
        gamma_ce=gamma_ce,
        gamma_dc=gamma_dc,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def hybrid_focal(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    theta: ArrayLike = 0.5,
    lam: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    gamma_ft: ArrayLike = 0.75,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Hybrid focal loss, Eq. 12 (Yeung et al.): ``θ·mean(Focal) + (1 - θ)·FT``.

    .. math:: L = \frac{\theta}{wh}\sum_i L_{Focal,i} + (1 - \theta)(1 - Tv)^{1/\gamma_{FT}}

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      theta: θ in [0, 1], weight of the focal term; 1 - θ weights focal Tversky.
      lam: λ in [0, 1], focal weight of the defect pixels (y = 1).
      gamma: γ >= 0, focal exponent.
      alpha: α >= 0, Tversky weight of **misses**: label 1 predicted 0, soft count
        ``FN = Σ (1 - p)·y`` (the paper's "FP").
      beta: β >= 0, Tversky weight of **false alarms**: label 0 predicted 1, soft count
        ``FP = Σ p·(1 - y)``.
      gamma_ft: γ_FT > 0, focal Tversky exponent: ``(1 - Tv)^(1/γ_FT)``.
      eps: ε >= 0, smoothing of ``Tv``.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the focal Tversky term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.zeros((1, 4)), jnp.array([[1, 0, 0, 0]])
    >>> bool(jnp.allclose(hybrid_focal(z, y, theta=0.0), focal_tversky(z, y)))
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("theta", theta)
    _checks.check_unit("lam", lam)
    _checks.check_nonneg("gamma", gamma)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma_ft", gamma_ft)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _hybrid_focal(
        logits,
        labels,
        where,
        theta=theta,
        lam=lam,
        gamma=gamma,
        alpha=alpha,
        beta=beta,
        gamma_ft=gamma_ft,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def dibe(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    theta: ArrayLike = 0.5,
    lam: ArrayLike = 0.25,
    gamma: ArrayLike = 2.0,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    eps: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""DIBE loss, Eq. 21: ``θ·mean(DIBE_Dis) + (1 - θ)·DIBE_Reg`` with shared λ, γ, α, β.

    .. math:: L = \frac{\theta}{wh}\sum_i L_{DIBE_{Dis},i} + (1 - \theta)(-\log Tv)^{1/\gamma}

    α weighs misses and β false alarms in both halves (Eq. 18 and Eq. 7).

    Called as ``dibe_jax.losses.dibe``, it also takes softmax logits ``[B, *spatial, C]``
    with integer labels ``[B, *spatial]`` and then computes
    :func:`~dibe_jax.losses.multiclass.dibe_multiclass` (one-vs-rest, macro-averaged over
    classes) with the same keywords.

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]``; ``p = sigmoid(logits)``.
      labels: ``{0, 1}`` of the same shape, any numeric or bool dtype.
      theta: θ in [0, 1], weight of DIBE_Dis; 1 - θ weights DIBE_Reg (θ = 0.3 is suggested
        for extreme imbalance).
      lam: λ in [0, 1], weight of the defect pixels (y = 1) in DIBE_Dis.
      gamma: γ > 0, shared: focusing exponent of DIBE_Dis and ``1/γ`` of DIBE_Reg.
      alpha: α >= 0, weight of **misses** in both halves: label 1 predicted 0, soft count
        ``FN = Σ (1 - p)·y`` (the paper's "FP").
      beta: β >= 0, weight of **false alarms** in both halves: label 0 predicted 1, soft
        count ``FP = Σ p·(1 - y)``.
      eps: ε >= 0, smoothing of ``Tv``.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sum the soft counts over the batch before the DIBE_Reg term (DIBE_Dis
        stays per image).
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.zeros((1, 4)), jnp.array([[1, 0, 0, 0]])
    >>> bool(jnp.allclose(dibe(z, y, theta=1.0), dibe_dis(z, y)))
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_unit("theta", theta)
    _checks.check_unit("lam", lam)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_nonneg("eps", eps)
    _checks.check_bool("pool_batch", pool_batch)
    return _dibe(
        logits,
        labels,
        where,
        theta=theta,
        lam=lam,
        gamma=gamma,
        alpha=alpha,
        beta=beta,
        eps=eps,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )
