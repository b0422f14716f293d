"""One loss name for binary and multi-class input: route on the shapes of the arguments.

The package's ``dibe``, ``dibe_dis`` and ``dibe_reg`` (:mod:`dibe_jax.losses`) are the binary
losses of :mod:`~dibe_jax.losses.binary`, except that softmax logits with class ids go to the
one-vs-rest losses of :mod:`~dibe_jax.losses.multiclass`. The choice depends on shapes only,
so it is made once, before tracing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from dibe_jax.losses import _checks

LossFn = Callable[..., jax.Array]


def binary_or_one_vs_rest(binary_loss: LossFn, one_vs_rest_loss: LossFn) -> LossFn:
    """``binary_loss``, except for softmax logits with class ids: ``one_vs_rest_loss``.

    The returned loss calls ``one_vs_rest_loss(logits, labels, **kwargs)`` when ``labels``
    has the shape of ``logits`` without its last axis and that axis holds ``C >= 2`` classes
    (:func:`~dibe_jax.losses._checks.is_class_id_input`), and ``binary_loss`` otherwise. It
    has ``binary_loss``'s name, signature and docstring (which should say so); every keyword
    of ``binary_loss`` must be one of ``one_vs_rest_loss``'s.
    """

    @functools.wraps(binary_loss)
    def loss(logits, labels, **kwargs) -> jax.Array:
        if _checks.is_class_id_input(logits, labels):
            return one_vs_rest_loss(logits, labels, **kwargs)
        return binary_loss(logits, labels, **kwargs)

    return loss
