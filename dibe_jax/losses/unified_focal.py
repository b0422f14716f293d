r"""Unified focal loss, Yeung, Sala, Schönlieb & Rundo, *Unified Focal loss: Generalising Dice
and cross entropy-based losses to handle class imbalanced medical image segmentation*,
Computerized Medical Imaging and Graphics 95 (2022) 102026.

The MR paper of our seeds (Cui et al., MR Eqs. 6-12) quotes it with garbled formulas; this module
follows Yeung et al. and their public reference code (``mlyg/unified-focal-loss``,
``loss_functions.py``), and says below where the two differ and which we take.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax.losses import _checks, _reduce, _softmax
from dibe_jax.losses._safe import safe_div, safe_pow

__all__ = ["unified_focal", "unified_focal_binary"]


@functools.partial(jax.jit, static_argnames=("binary", "asymmetric", "pool_batch", "axis_name"))
def _unified_focal(
    logits, labels, where, *, weight, delta, gamma, eps, binary, asymmetric, pool_batch, axis_name
):
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if binary:  # sigmoid logits: softmax of [0, z] is [1 - σ(z), σ(z)]
        dtype = _checks.compute_dtype(logits.dtype)
        z, y = logits.astype(dtype), labels.astype(dtype)
        logits = jnp.stack([jnp.zeros_like(z), z], axis=-1)
        labels = jnp.stack([1 - y, y], axis=-1)
    logp, y, w = _softmax.prepare(logits, labels, where)
    log_q, _ = _softmax.log1m_softmax(logp)
    rare = jnp.arange(logp.shape[-1]) > 0  # class 0 is the background, the rest are "rare"
    # focal part: δ on rare classes, 1 - δ on the background; (1 - p)^γ suppresses
    class_w = jnp.where(rare, delta, 1 - delta)[None, None, :]
    suppress = jnp.exp(gamma * log_q)
    if asymmetric:
        suppress = jnp.where(rare[None, None, :], 1.0, suppress)
    per_pixel = jnp.sum(class_w * suppress * (-y * logp), axis=-1)
    focal = _reduce.pixel_mean(per_pixel, w)
    # focal Tversky part: 1 - mTI_c, δ on misses, 1 - δ on false alarms; ^(1 - γ) enhances
    c = _softmax.class_counts(logp, y, w, pool_batch=pool_batch, axis_name=axis_name, log_q=log_q)
    errors = delta * c.fn + (1 - delta) * c.fp
    one_minus = safe_div(errors, c.tp + errors + eps)
    enhance = safe_pow(one_minus, 1 - gamma)
    if asymmetric:
        enhance = jnp.where(rare[None, :], enhance, one_minus)
    tversky = jnp.mean(enhance, axis=-1)
    return weight * focal + (1 - weight) * tversky


def unified_focal(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike = 0.5,
    delta: ArrayLike = 0.6,
    gamma: ArrayLike = 0.5,
    asymmetric: bool = True,
    eps: ArrayLike = 1e-6,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Unified focal loss (Yeung et al. 2022), asymmetric (default) or symmetric.

    Class 0 is the background; every other class is "rare". Integer class ids and their
    one-hot labels give the same value, as in every multi-class loss; the binary form on
    sigmoid logits is :func:`unified_focal_binary`. With ``p_c`` the softmax probability,
    the per-image soft counts ``TP_c``, ``FP_c``, ``FN_c`` of
    :mod:`dibe_jax.losses.multiclass` and ``N`` the pixels of the image:

    .. math::
       L = \lambda\, L_F + (1 - \lambda)\, L_{FT}, \qquad
       mTI_c = \frac{TP_c + \varepsilon}{TP_c + \delta FN_c + (1 - \delta) FP_c + \varepsilon}

       L_F = \frac{1}{N}\sum_i \Big[-(1 - \delta)\, y_{i0} (1 - p_{i0})^{\gamma} \log p_{i0}
             - \delta \sum_{c \ge 1} y_{ic}\, s_{ic} \log p_{ic}\Big]

       L_{FT} = \frac{1}{C}\Big[e_0 + \sum_{c \ge 1} (1 - mTI_c)^{1 - \gamma}\Big]

    Asymmetric (Yeung's L_aF, L_aFT): ``s = 1`` (no suppression of the rare classes) and
    ``e_0 = 1 - mTI_0`` (no enhancement of the background). Symmetric (L_sF, L_sFT):
    ``s = (1 - p)^γ`` and ``e_0 = (1 - mTI_0)^{1-γ}``. ``λ`` is ``weight``.

    Special cases (tested): with ``gamma=0, delta=0.5``, ``weight=1`` gives **half** the
    softmax cross-entropy (δ = 0.5 weights both classes by 1/2) and ``weight=0`` gives the
    Dice loss averaged over all C classes with smoothing ``2ε``, in both forms: Yeung's
    "CE and Dice are recovered".

    Where the sources differ (we follow the paper for λ and the code otherwise):

    * **λ placement.** Yeung's Eqs. and the MR paper ("DSC and CE are retrieved by setting λ
      to 0 and 1") put λ on the focal (CE) term; the reference code's ``weight`` multiplies
      the focal Tversky term. Here ``weight`` = λ on the focal term (same at the default 0.5).
    * **Mean vs sum over classes.** Yeung writes ``L_FT = Σ_c (...)``; the code averages over
      classes (``K.mean``), as we do, so the scale does not grow with C. Both take the mean
      over pixels of the per-pixel class sum in ``L_F``.
    * **γ convention.** Yeung's modified losses (MR Eqs. 6-7) read ``δ(1 - p_t)^{1-γ}·CE``
      and ``Σ(1 - mTI)^γ``, under which γ = 0 would not give CE; the asymmetric forms
      (MR Eqs. 10-11) and the code use ``(1 - p)^γ`` to suppress and ``(1 - mTI)^{1-γ}`` to
      enhance, which is what makes the special cases hold. We use the latter, γ in [0, 1]
      (the original focal Tversky exponent ``1/γ_FT`` is ``1 - γ`` here).
    * **δ in mTI.** The code puts δ on false negatives (misses), "δ > 0.5 penalises FN
      more"; Yeung's mTI (and the MR Eq. 8) put δ next to ``Σ p_{0i} g_{1i}``, the false
      positives. We follow the code: δ weights misses, matching α in
      :func:`~dibe_jax.losses.tversky`.
    * The MR paper writes the asymmetric focal term with ``log(p_{t,r})`` for every class
      and λ as τ or δ (MR Eqs. 9, 12); these are typos. The code clips ``p`` to
      ``[1e-7, 1 - 1e-7]``; we work in log space instead, and the smoothing ε (1e-6 in the
      code) is a keyword.

    Args:
      logits: softmax logits ``[B, *spatial, C]``, ``C >= 2``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]`` (whose classes sum to 1).
      weight: λ in [0, 1], weight of the focal (CE) term; 1 - λ weights focal Tversky.
      delta: δ in [0, 1]: weight of the rare classes in L_F, and in mTI the weight of
        **misses** ``FN_c`` (label c, predicted elsewhere; like α of
        :func:`~dibe_jax.losses.tversky`), 1 - δ that of false alarms ``FP_c``.
      gamma: γ in [0, 1]: suppression ``(1 - p)^γ`` and enhancement ``(1 - mTI)^{1-γ}``.
      asymmetric: asymmetric (default, Yeung's recommendation) or symmetric form; static.
      eps: ε >= 0, smoothing of mTI.
      where: optional pixel mask with the shape of ``labels``; pixels with 0 are left out.
      pool_batch: sum the per-class counts over the batch before the focal Tversky term.
      axis_name: also sum them over this device axis (``shard_map``); implies pooling.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax, jax.numpy as jnp
    >>> z, y = jnp.array([[[2.0, -1.0], [0.5, 1.0], [-3.0, 0.0]]]), jnp.array([[0, 1, 0]])
    >>> ids, onehot = unified_focal(z, y), unified_focal(z, jax.nn.one_hot(y, 2))
    >>> bool(jnp.allclose(ids, onehot)), bool(unified_focal(z, y, asymmetric=False)[0] != ids[0])
    (True, True)
    """
    _checks.check_softmax_inputs(logits, labels, where)
    return _checked(
        logits,
        labels,
        where,
        weight=weight,
        delta=delta,
        gamma=gamma,
        eps=eps,
        binary=False,
        asymmetric=asymmetric,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def unified_focal_binary(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike = 0.5,
    delta: ArrayLike = 0.6,
    gamma: ArrayLike = 0.5,
    asymmetric: bool = True,
    eps: ArrayLike = 1e-6,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Unified focal loss on binary sigmoid logits: :func:`unified_focal` of the two-class
    logits ``[0, z]`` (softmax of ``[0, z]`` is ``[1 - σ(z), σ(z)]``), class 1 the defect.

    Same formula, hyperparameters and sources as :func:`unified_focal`, with background
    (class 0, ``1 - p``) and defect (class 1, ``p = σ(z)``).

    Args:
      logits: binary sigmoid logits ``[B, *spatial]`` or ``[B, *spatial, 1]``.
      labels: ``{0, 1}`` (or soft values in ``[0, 1]``) of the logits' shape.
      weight, delta, gamma, asymmetric, eps, where, pool_batch, axis_name: as in
        :func:`unified_focal`.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[2.0, -1.0, 0.5, -3.0]]), jnp.array([[1, 0, 1, 0]])
    >>> two = jnp.stack([jnp.zeros_like(z), z], axis=-1)  # the same as two-class logits
    >>> bool(jnp.allclose(unified_focal_binary(z, y), unified_focal(two, y)))
    True
    """
    _checks.check_binary_inputs(logits, labels, where)
    return _checked(
        logits,
        labels,
        where,
        weight=weight,
        delta=delta,
        gamma=gamma,
        eps=eps,
        binary=True,
        asymmetric=asymmetric,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def _checked(logits, labels, where, *, weight, delta, gamma, eps, asymmetric, pool_batch, **kw):
    """Check the hyperparameters of both forms, then run the jitted loss."""
    _checks.check_bool("pool_batch", pool_batch)
    _checks.check_bool("asymmetric", asymmetric)
    _checks.check_unit("weight", weight)
    _checks.check_unit("delta", delta)
    _checks.check_unit("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    return _unified_focal(
        logits,
        labels,
        where,
        weight=weight,
        delta=delta,
        gamma=gamma,
        eps=eps,
        asymmetric=asymmetric,
        pool_batch=pool_batch,
        **kw,
    )
