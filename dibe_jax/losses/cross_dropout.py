r"""Cross dropout focal loss (CDFL), Su, Anderson & Mihaylova, CDFL Eqs. 4-6.

The network is run ``T`` times with Monte Carlo dropout
(:func:`dibe_jax.models.mc_dropout.mc_dropout_logits`); the spread of the ``T`` softmax
probabilities replaces the focal factor ``1 - p`` as the easy/hard indicator.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax.losses import _checks, _reduce, _softmax
from dibe_jax.losses._safe import safe_pow

__all__ = ["cross_dropout_focal"]


@functools.partial(jax.jit, static_argnames=("stop_gradient_u",))
def _cdfl(mc_logits, labels, where, *, omega, gamma, class_weights, stop_gradient_u):
    logp, y, w = _softmax.prepare(mc_logits, labels, where, leading=1)  # [T, B, P, C]
    t = logp.shape[0]
    k = jnp.broadcast_to(jnp.asarray(class_weights, logp.dtype), (1, 1, logp.shape[-1]))
    if jnp.ndim(labels) == jnp.ndim(mc_logits) - 2:  # class ids: only the true class matters
        logp = jnp.sum(y[None] * logp, axis=-1, keepdims=True)  # log p_t(true class), [T, B, P, 1]
        k = jnp.sum(y * k, axis=-1, keepdims=True)
        y = jnp.sum(y, axis=-1, keepdims=True)  # 1, or 0 for an out-of-range id under jit
    log_mean = jax.nn.logsumexp(logp, axis=0) - jnp.log(t)  # log p̄_c, [B, P, C]
    p = jnp.exp(logp)
    # CDFL Eq. 4, two-pass variance
    u = jnp.mean(jnp.square(p - jnp.mean(p, axis=0, keepdims=True)), axis=0)
    if stop_gradient_u:
        u = jax.lax.stop_gradient(u)
    ce = -y * log_mean
    per_pixel = jnp.sum(ce + omega * k * safe_pow(u, gamma) * ce, axis=-1)
    return _reduce.pixel_mean(per_pixel, w)


def cross_dropout_focal(
    mc_logits: ArrayLike,
    labels: ArrayLike,
    *,
    omega: ArrayLike = 0.01,
    gamma: ArrayLike = 2.0,
    class_weights: ArrayLike = 0.75,
    stop_gradient_u: bool = False,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Cross dropout focal loss, CDFL Eq. 6: ``CE + ω·DF`` on ``T`` Monte Carlo dropout passes.

    .. math::
       \bar p_{ic} = \frac{1}{T}\sum_t p^{(t)}_{ic}, \quad
       u_{ic} = \frac{1}{T}\sum_t \big(p^{(t)}_{ic}\big)^2 - \bar p_{ic}^{\,2}
           \ \text{(CDFL Eq. 4)}

       L = \frac{1}{N}\sum_i \sum_c y_{ic}\Big(-\log \bar p_{ic}
           - \omega\, k_c\, u_{ic}^{\gamma} \log \bar p_{ic}\Big)
           \quad \text{(CDFL Eqs. 5-6)}

    ``p^(t) = softmax(mc_logits[t])``. For one-hot labels ``u`` is the variance over the T
    passes of the probability of the true class and ``p̄`` its mean: the CE is taken on the
    mean probability, and DF (CDFL Eq. 5) uses ``log p̄`` for the paper's ``log ŷ``. Both
    terms are means over pixels (CDFL Eq. 6 writes the CE as a sum; the mean keeps the
    paper's ω = 0.01 balance independent of the image size). ``u`` is computed as the mean
    squared deviation (two passes, no cancellation) and lies in ``[0, 1/4]``, so ``u^γ`` is
    small and ω·DF a gentle correction. With T identical passes ``u = 0`` and the loss is the
    softmax CE.

    **Class weights.** ``k_c`` is the paper's ``α``: CDFL Eq. 3 defines ``α_c`` as "the
    weight of the c-th category label" and CDFL Eq. 5 weights pixel ``i`` by ``α_i``, the
    weight of its class. The paper sets α = 0.75 ("the same choice as in" Lin et al.) for
    every class, so the default is one number, which then only rescales ω (ω·α = 0.0075); a
    ``[C]`` vector gives each class its own weight. It weights the DF term only, not the CE.

    **Gradient through u.** The paper is silent. By default (``stop_gradient_u=False``) the
    gradient flows through ``u`` as in a literal autodiff of CDFL Eq. 6, the way the focal
    factor ``(1 - p)^γ`` is differentiated in the focal loss; DF then also pulls the T passes
    together (a consistency term). ``stop_gradient_u=True`` treats ``u^γ`` as a constant
    per-pixel weight: DF becomes a re-weighted CE on ``p̄``.

    Args:
      mc_logits: float ``[T, B, *spatial, C]``, the logits of T dropout passes (T = 5 in the
        paper), e.g. from :func:`dibe_jax.models.mc_dropout.mc_dropout_logits`.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
      omega: ω >= 0, weight of DF against the CE (0.01 in the paper).
      gamma: γ >= 0, exponent of ``u`` (2 in the paper).
      class_weights: ``k_c >= 0``, the paper's α: weight of the DF term of the pixels
        labelled ``c``; one number for every class (0.75 in the paper) or ``[C]``.
      stop_gradient_u: if True, no gradient flows through ``u`` (see above); static.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: accepted for a uniform signature; a pixel mean needs no pooling.
      axis_name: accepted for a uniform signature; changes nothing.

    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.

    >>> import jax.numpy as jnp
    >>> from dibe_jax.losses import softmax_cross_entropy
    >>> z, y = jnp.array([[[0.5, -1.0, 2.0]]]), jnp.array([[2]])
    >>> same = jnp.stack([z] * 5)  # five identical passes: u = 0, CDFL = CE
    >>> bool(jnp.allclose(cross_dropout_focal(same, y), softmax_cross_entropy(z, y)))
    True
    """
    _checks.check_softmax_inputs(mc_logits, labels, where, name="mc_logits", leading=1)
    _checks.check_bool("pool_batch", pool_batch)
    _checks.check_bool("stop_gradient_u", stop_gradient_u)
    _checks.check_nonneg("omega", omega)
    _checks.check_nonneg("gamma", gamma)
    if class_weights is None:
        raise ValueError("`class_weights` must be a number or a [C] vector, got None.")
    class_weights = _checks.check_class_weights(
        "class_weights", class_weights, jnp.shape(mc_logits)[-1], allow_scalar=True
    )
    return _cdfl(
        mc_logits,
        labels,
        where,
        omega=omega,
        gamma=gamma,
        class_weights=class_weights,
        stop_gradient_u=stop_gradient_u,
    )
