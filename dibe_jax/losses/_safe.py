"""Numerically safe building blocks shared by every loss.

Every term of the form ``base ** exponent`` whose base can reach 0 (``(1 - Tv)^(1/γ)``,
``(-log Tv)^(1/γ)``, ``(-log p)^γ_CE``) goes through :func:`safe_pow`, and every ratio of
soft counts goes through :func:`safe_div`, so one fix covers all losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tiny(dtype: jnp.dtype) -> float:
    """Smallest base :func:`safe_pow` differentiates through: ``eps(dtype)**2``.

    For float32 this is about 1.4e-14: ``tiny ** (1/γ - 1)`` stays far below the float32
    range for every γ up to 100, so gradients stay finite at perfect predictions.
    """
    return float(jnp.finfo(dtype).eps) ** 2


def safe_pow(base: jax.Array, exponent: jax.Array | float) -> jax.Array:
    """``base ** exponent`` for ``base >= 0`` with a finite value and gradient everywhere.

    Bases below :func:`tiny` give the limit at 0 (``0`` for ``e > 0``, ``1`` for ``e = 0``)
    through a double ``where``, so the gradient with respect to ``base`` is 0 there instead
    of ``inf`` or ``nan`` (the derivative of ``b^e`` with ``0 < e < 1`` is infinite at
    ``b = 0``), and the gradient with respect to a traced exponent stays finite too.
    """
    t = tiny(base.dtype)
    above = base > t
    limit = jnp.where(jnp.asarray(exponent) == 0, 1.0, 0.0).astype(base.dtype)
    return jnp.where(above, jnp.power(jnp.where(above, base, 1.0), exponent), limit)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` for ``den >= 0``, with ``0 / 0 = 0`` and a finite gradient.

    Denominators below :func:`tiny` are clamped to ``tiny``; the numerators this is used with
    are bounded by their denominators, so a vanishing denominator means an empty region.
    """
    t = tiny(den.dtype)
    return num / jnp.where(den > t, den, t)


def log_sigmoids(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log p, log(1 - p))`` with ``p = sigmoid(logits)``, both computed in log space."""
    _, _, log_p, log_q = sigmoid_parts(logits)
    return log_p, log_q


def sigmoid_parts(logits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(p, 1 - p, log p, log(1 - p))`` from one ``exp`` and one ``log1p`` per element.

    With ``e = exp(-|z|)`` and ``s = log1p(e)``: ``log p = min(z, 0) - s``,
    ``log(1 - p) = min(-z, 0) - s``, ``p = [z >= 0 ? 1 : e] / (1 + e)`` and
    ``1 - p = [z >= 0 ? e : 1] / (1 + e)``; each is accurate to float rounding for any
    logit (no ``1 - p`` cancellation, no ``log(0)``), and sharing ``e`` and ``s`` halves the
    transcendentals of computing them separately.
    """
    nonneg = logits >= 0
    # |z| and min(±z, 0) through one `where` each, so their derivatives at z = 0 agree
    # (jnp.abs has derivative 1 there, jnp.minimum 0.5): d log p / dz = 1 - p exactly.
    a = jnp.where(nonneg, logits, -logits)
    e = jnp.exp(-a)
    s = jnp.log1p(e)
    inv = 1 / (1 + e)
    p = jnp.where(nonneg, 1.0, e) * inv
    q = jnp.where(nonneg, e, 1.0) * inv
    zero = jnp.zeros_like(logits)
    return p, q, jnp.where(nonneg, zero, logits) - s, jnp.where(nonneg, -logits, zero) - s
