r"""Lovász losses, Berman, Rannen Triki & Blaschko, *The Lovász-Softmax loss: a tractable
surrogate for the optimization of the intersection-over-union measure*, CVPR 2018.

The Jaccard loss ``Δ_J(M) = |M| / |y ∪ M|`` of a set ``M`` of mispredicted pixels is a
submodular set function; its Lovász extension, evaluated on a vector of pixel errors, is
piecewise linear and tight: at binary (0/1) errors it **equals** the Jaccard loss. It is
computed by sorting the errors in decreasing order ``e_(1) >= e_(2) >= ...``:

.. math:: \bar\Delta_J(e) = \sum_k e_{(k)}\, g_k, \quad
          g_k = \Delta_J(\{(1), \dots, (k)\}) - \Delta_J(\{(1), \dots, (k-1)\})

Both losses return ``[B]`` (one value per image, the paper's ``per_image=True``);
``pool_batch=True`` sorts the whole batch at once (the paper's ``per_image=False``) and every
image carries that value. Masked pixels (``where = 0``) are sorted last with zero error and no
label, so they never change the loss. A sort does not pool across devices: ``axis_name`` is
refused.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dibe_jax._validate import check_choice
from dibe_jax.losses import _checks, _softmax
from dibe_jax.losses._safe import safe_div

__all__ = ["lovasz_grad", "lovasz_hinge", "lovasz_softmax"]


def lovasz_grad(gt_sorted: jax.Array) -> jax.Array:
    r"""``g_k`` of the Lovász extension of the Jaccard loss, along the last axis.

    ``gt_sorted`` holds the labels (0/1) of the pixels in decreasing order of error. With
    ``G = Σ gt``, ``I_k = G - Σ_{j<=k} gt_j`` and ``U_k = G + Σ_{j<=k} (1 - gt_j)``,
    ``J_k = 1 - I_k / U_k`` and ``g = (J_1, J_2 - J_1, ...)``. ``U_k >= 1`` always, so an
    all-background image is fine (``g = (1, 0, ..., 0)``).

    >>> import jax.numpy as jnp
    >>> lovasz_grad(jnp.array([1.0, 0.0, 1.0])).tolist()
    [0.5, 0.16666..., 0.33333...]
    """
    gts = jnp.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - jnp.cumsum(gt_sorted, axis=-1)
    union = gts + jnp.cumsum(1 - gt_sorted, axis=-1)
    jaccard = 1 - safe_div(intersection, union)
    return jnp.concatenate([jaccard[..., :1], jnp.diff(jaccard, axis=-1)], axis=-1)


def _sorted_extension(errors, gt, valid):
    """``Σ_k e_(k) g_k`` along the last axis, invalid entries sorted last with zero error."""
    key = jnp.where(valid, errors, -jnp.inf)
    order = jnp.argsort(-key, axis=-1, stable=True)
    take = functools.partial(jnp.take_along_axis, indices=order, axis=-1)
    e_sorted = take(jnp.where(valid, errors, 0.0))
    g = lovasz_grad(take(jnp.where(valid, gt, 0.0)))
    return jnp.sum(e_sorted * jax.lax.stop_gradient(g), axis=-1)


@functools.partial(jax.jit, static_argnames=("pool_batch",))
def _lovasz_hinge(logits, labels, where, *, pool_batch):
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    b = logits.shape[0]
    z = _checks.flatten(logits, dtype)
    y = _checks.flatten(jnp.asarray(labels), dtype)
    valid = (
        jnp.ones(z.shape, bool) if where is None else _checks.flatten(jnp.asarray(where), dtype) > 0
    )
    if pool_batch:
        z, y, valid = (jnp.reshape(a, (1, -1)) for a in (z, y, valid))
    errors = jax.nn.relu(1 - z * (2 * y - 1))
    loss = _sorted_extension(errors, y, valid)
    return jnp.broadcast_to(loss, (b,))


@functools.partial(jax.jit, static_argnames=("classes", "pool_batch"))
def _lovasz_softmax(logits, labels, where, *, classes, pool_batch):
    logp, y, w = _softmax.prepare(logits, labels, where)  # [B, P, C]
    b = logp.shape[0]
    valid = jnp.ones(logp.shape[:2], bool) if w is None else w > 0
    if pool_batch:
        logp, y, valid = (jnp.reshape(a, (1, -1, *a.shape[2:])) for a in (logp, y, valid))
    p = jnp.exp(logp)
    errors = jnp.swapaxes(jnp.abs(y - p), 1, 2)  # [B, C, P]
    gt = jnp.swapaxes(y, 1, 2)
    per_class = _sorted_extension(errors, gt, valid[:, None, :])  # [B, C]
    if classes == "present":
        weight = (jnp.sum(jnp.where(valid[:, None, :], gt, 0.0), axis=-1) > 0).astype(p.dtype)
    else:
        weight = jnp.ones_like(per_class)
    loss = safe_div(jnp.sum(weight * per_class, axis=-1), jnp.sum(weight, axis=-1))
    return jnp.broadcast_to(loss, (b,))


def _no_device_pool(axis_name) -> None:
    if axis_name is not None:
        raise ValueError(
            "`axis_name` is not supported by the Lovász losses: they sort the pixels, which a "
            "sum over devices cannot do. Gather the logits first, or use per-device losses."
        )


def lovasz_hinge(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Binary Lovász hinge loss: the Lovász extension of the Jaccard loss of the defect class.

    .. math:: L = \bar\Delta_J\big(\max(0, 1 - z_i s_i)\big), \quad s_i = 2y_i - 1

    Pixel errors are the hinge errors of the logits; at logits ``z = ±1`` the errors are 0 or
    2 and the loss is twice the Jaccard loss ``1 - IoU`` of the predicted mask. An image
    without defect pixels gets ``max_i max(0, 1 + z_i)`` (its largest false-alarm error).

    Args:
      logits: float ``[B, *spatial]`` or ``[B, *spatial, 1]`` sigmoid logits.
      labels: ``{0, 1}`` of the same shape.
      where: optional pixel mask of the same shape; pixels with 0 are left out.
      pool_batch: sort all pixels of the batch together (every image carries the result).
      axis_name: not supported (``ValueError``): a sort does not pool across devices.

    Returns:
      ``[B]`` float32 (float64 for float64 logits).

    >>> import jax.numpy as jnp  # IoU = 1/3 at logits ±1: loss 2 · (1 - 1/3)
    >>> z, y = jnp.array([[1.0, 1.0, -1.0, -1.0]]), jnp.array([[1, 0, 1, 0]])
    >>> round(float(lovasz_hinge(z, y)[0]), 4)
    1.3333
    """
    _checks.check_binary_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    _no_device_pool(axis_name)
    return _lovasz_hinge(logits, labels, where, pool_batch=pool_batch)


def lovasz_softmax(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    classes: str = "present",
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Lovász-softmax loss: per class, the Lovász extension of ``1 - IoU_c``, averaged.

    .. math:: L = \frac{1}{|\mathcal C|}\sum_{c \in \mathcal C}
              \bar\Delta_{J_c}\big(|y_{ic} - p_{ic}|\big)

    ``𝒞`` is the classes present in the image's labels (``classes="present"``, the
    default; an image with none, e.g. fully masked, gets 0) or all classes (``"all"``).
    At one-hot probabilities it is the mean over ``𝒞`` of ``1 - IoU_c`` of the argmax.

    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot labels
        ``[B, *spatial, C]``.
      classes: ``"present"`` or ``"all"``.
      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
      pool_batch: sort all pixels of the batch together (every image carries the result).
      axis_name: not supported (``ValueError``): a sort does not pool across devices.

    Returns:
      ``[B]`` float32 (float64 for float64 logits).

    >>> import jax.numpy as jnp  # hard prediction [0, 1, 1] of labels [0, 0, 1]
    >>> z = 50.0 * jnp.array([[[1.0, -1.0], [-1.0, 1.0], [-1.0, 1.0]]])
    >>> round(float(lovasz_softmax(z, jnp.array([[0, 0, 1]]))[0]), 4)  # (1/2 + 1/2) / 2
    0.5
    """
    _checks.check_softmax_inputs(logits, labels, where)
    _checks.check_bool("pool_batch", pool_batch)
    check_choice("classes", classes, ("present", "all"))
    _no_device_pool(axis_name)
    return _lovasz_softmax(logits, labels, where, classes=classes, pool_batch=pool_batch)
