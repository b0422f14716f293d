r"""Closed-form gradients of the DIBE paper (Eq. 19 and Appendix B, Eqs. 24-25).

Plain elementwise functions for gradient analysis (Figs. 5 and 13); the test-suite checks
each against ``jax.grad`` of the corresponding loss in :mod:`dibe_jax.losses`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["dibe_dis_miss_grad", "dibe_reg_grad", "focal_tversky_grad"]


def _float(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def dibe_dis_miss_grad(
    p: ArrayLike, *, lam: ArrayLike = 0.25, gamma: ArrayLike = 2.0, alpha: ArrayLike = 0.3
) -> jax.Array:
    r"""Eq. 19: ``∂L_DIBE_Dis / ∂p̂`` on a missed defect pixel (y = 1, ŷ = 0, so p̂ < 0.5).

    .. math::
       \frac{\partial L}{\partial \hat p} = \lambda(1 + \alpha)(1 - \hat p^{1+\alpha})^\gamma
       \Big(\gamma (1 - \hat p^{1+\alpha})^{-1}(1 + \alpha)\hat p^\alpha \log \hat p
       - \frac{1}{\hat p}\Big)

    Negative on (0, 0.5): raising α makes it steeper (Fig. 5), so misses are pushed harder.
    With α = 0 it is the focal-loss gradient.

    Args:
      p: predicted probabilities in (0, 1), any shape.
      lam, gamma, alpha: λ, γ and α of DIBE_Dis (α weights misses).

    Returns:
      The derivative, same shape as ``p``.

    >>> round(float(dibe_dis_miss_grad(0.25, lam=0.25, gamma=0.0, alpha=0.0)), 6)  # -λ/p
    -1.0
    """
    p = _float(p)
    base = 1 - p ** (1 + alpha)
    return (
        lam
        * (1 + alpha)
        * base**gamma
        * (gamma / base * (1 + alpha) * p**alpha * jnp.log(p) - 1 / p)
    )


def focal_tversky_grad(tv: ArrayLike, *, gamma: ArrayLike = 0.75) -> jax.Array:
    r"""Eq. 24: ``∂L_FT / ∂Tv = -(1/γ)(1 - Tv)^(1/γ - 1)``.

    For γ < 1 the magnitude falls to 0 as Tv -> 1: the over-suppression of FT (Fig. 13a).

    >>> float(focal_tversky_grad(0.5, gamma=1.0))
    -1.0
    """
    tv = _float(tv)
    return -(1 / gamma) * (1 - tv) ** (1 / gamma - 1)


def dibe_reg_grad(tv: ArrayLike, *, gamma: ArrayLike = 1.5) -> jax.Array:
    r"""Eq. 25: ``∂L_DIBE_Reg / ∂Tv = -(1 / (γ Tv)) (-log Tv)^(1/γ - 1)``.

    Large near Tv = 0 (small targets) and, for γ > 1, growing again as Tv -> 1 (Fig. 13b).

    >>> float(dibe_reg_grad(0.5, gamma=1.0))
    -2.0
    """
    tv = _float(tv)
    return -1 / (gamma * tv) * (-jnp.log(tv)) ** (1 / gamma - 1)
