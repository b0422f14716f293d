r"""Multi-class segmentation losses on softmax logits, and one-vs-rest DIBE beyond two classes.

Every loss has the signature ``loss(logits, labels, *, <hyperparameters>, where=None,
pool_batch=False, axis_name=None) -> jax.Array`` and returns one value per image, shape
``[B]``; the caller takes the batch mean.

Conventions (the binary ones of :mod:`dibe_jax.losses.binary`, extended to C classes):

* ``logits``: float ``[B, *spatial, C]``, ``C >= 2`` classes on the last axis;
  ``p_c = softmax(logits)_c`` is computed as ``exp(log_softmax)`` in at least float32.
  The predicted class is ``argmax_c logits`` (ties go to the lowest index, as in
  :func:`dibe_jax.metrics.confusion_matrix`).
* ``labels``: integer class ids ``[B, *spatial]`` (any integer or bool dtype; values in
  ``[0, C)``, checked when the array is concrete, i.e. outside ``jit``; inside ``jit`` an
  out-of-range id gives an all-zero one-hot row and the pixel counts nowhere), or one-hot /
  soft labels ``[B, *spatial, C]`` of the same shape as ``logits``. ``y_{ic}`` below is the
  one-hot (or soft) label.
* ``where``: optional pixel mask ``[B, *spatial]``; pixels with 0 leave every sum and mean.
  A fully masked image has loss 0.
* Per-class soft counts of one image: ``TP_c = Σ_i p_{ic} y_{ic}``,
  ``FN_c = Σ_i (1 - p_{ic}) y_{ic}`` (misses) and ``FP_c = Σ_i p_{ic} (1 - y_{ic})`` (false
  alarms), ``N_c = Σ_i y_{ic}``. **α weights misses and β false alarms**, as in the binary
  Tversky loss (SPEC.md). ``log(1 - p_c)``, where a loss needs it, is computed without
  cancellation (:func:`log1m_softmax`).
* Distribution (pixel) losses are means over the image's pixels; region losses use the image's
  own counts. ``pool_batch=True`` sums the counts over the batch (every image then carries the
  pooled loss); ``axis_name`` also sums them over a device axis and implies pooling. Both are
  accepted, and ignored, by the pure pixel losses so every loss has the same signature.
* Macro averages over classes: ``Σ_c k_c π_c L_c / Σ_c k_c π_c`` with class weights ``k_c``
  (``class_weights``, default 1; ``include_background=False`` sets ``k_0 = 0``) and ``π_c``
  the classes taken into account (``classes="present"``: ``N_c > 0`` in the image, or in the
  pooled counts; ``"all"``: every class). No class counted gives 0.

Hyperparameters are keyword-only and may be Python numbers (range-checked eagerly) or JAX
arrays (traced: sweeps with ``jax.vmap`` work, one compilation per input shape).
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dibe_jax.losses import _checks
from dibe_jax.losses._safe import safe_div, safe_pow

__all__ = [
    "balanced_cross_entropy",
    "dibe_dis_multiclass",
    "dibe_multiclass",
    "dibe_reg_multiclass",
    "dice_multiclass",
    "focal_tversky_multiclass",
    "log1m_softmax",
    "softmax_cross_entropy",
    "softmax_focal",
    "tversky_multiclass",
]

_STATIC = ("pool_batch", "axis_name", "include_background", "classes")


def _jit(fn):
    """``jax.jit`` with the static arguments among :data:`_STATIC` that ``fn`` takes."""
    names = inspect.signature(fn).parameters
    return jax.jit(fn, static_argnames=[n for n in _STATIC if n in names])


# ------------------------------------------------------------------------- static checks


def _is_numeric(dtype: np.dtype) -> bool:
    return bool(
        jnp.issubdtype(dtype, jnp.floating)
        or jnp.issubdtype(dtype, jnp.integer)
        or dtype == np.bool_
    )


def check_label_values(labels: object, num_classes: int, name: str = "labels") -> None:
    """``ValueError`` if concrete integer ``labels`` hold a value outside ``[0, num_classes)``.

    Only NumPy arrays, Python sequences and concrete (fully addressable, not traced) JAX arrays
    are inspected; tracers are left alone, so nothing here runs inside ``jit``.
    """
    if isinstance(labels, jax.core.Tracer):
        return
    if isinstance(labels, jax.Array):
        if not labels.is_fully_addressable or labels.size == 0:
            return
        with jax.ensure_compile_time_eval():  # concrete even when closed over inside a trace
            lo, hi = int(jnp.min(labels)), int(jnp.max(labels))
    else:
        arr = np.asarray(labels)
        if arr.size == 0 or not _is_numeric(arr.dtype):
            return
        lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"`{name}` must hold class ids in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{lo}, {hi}]. Drop unlabelled pixels with `where` instead."
        )


def check_inputs(
    logits: object,
    labels: object,
    where: object | None,
    *,
    name: str = "logits",
    leading: int = 0,
    dense_labels: bool = True,
) -> bool:
    """Check multi-class inputs; return True for integer class ids, False for one-hot labels.

    ``logits`` is float ``[*lead, B, *spatial, C]`` with ``leading`` extra leading axes (1 for
    the Monte Carlo axis of the cross dropout focal loss), ``C >= 2``; ``labels`` is
    ``[B, *spatial]`` (integer/bool ids) or, if ``dense_labels``, ``[B, *spatial, C]``;
    ``where`` is ``[B, *spatial]``.

    Raises:
      ValueError: naming the argument, for a non-float ``logits``, a wrong rank, fewer than
        2 classes, a ``labels``/``where`` shape or dtype that does not fit, or (for concrete
        labels) class ids outside ``[0, C)``.
    """
    shape = tuple(jnp.shape(logits))
    dtype = _checks._dtype_of(logits)
    lead = "T, " * leading
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be a floating-point array, got dtype {dtype}. Losses take logits, "
            "not probabilities or class ids."
        )
    if len(shape) < 2 + leading:
        raise ValueError(
            f"`{name}` must have shape [{lead}B, *spatial, C] (rank >= {2 + leading}), "
            f"got shape {shape}."
        )
    core = shape[leading:]
    c = core[-1]
    if c < 2:
        raise ValueError(
            f"`{name}` must have at least 2 classes on its last axis, got shape {shape}; "
            "use the binary losses for one sigmoid channel."
        )
    if labels is None:
        raise ValueError("`labels` must be an array, got None.")
    l_shape, l_dtype = tuple(jnp.shape(labels)), _checks._dtype_of(labels)
    if l_shape == core[:-1]:
        ids = True
        if not (jnp.issubdtype(l_dtype, jnp.integer) or l_dtype == np.bool_):
            raise ValueError(
                f"`labels` of shape {l_shape} must hold integer class ids, got dtype {l_dtype}; "
                f"pass one-hot or soft labels with the shape of `{name}` instead."
            )
    elif dense_labels and l_shape == core:
        ids = False
        if not _is_numeric(l_dtype):
            raise ValueError(f"`labels` must be numeric or bool, got dtype {l_dtype}.")
    else:
        dense = f" or {core} (one-hot / soft labels)" if dense_labels else ""
        raise ValueError(
            f"`labels` must have shape {core[:-1]} (class ids){dense} for `{name}` of shape "
            f"{shape}, got {l_shape}."
        )
    if where is not None:
        w_shape, w_dtype = tuple(jnp.shape(where)), _checks._dtype_of(where)
        if w_shape != core[:-1]:
            raise ValueError(
                f"`where` must have shape {core[:-1]} (one value per pixel), got {w_shape}."
            )
        if not _is_numeric(w_dtype):
            raise ValueError(f"`where` must be numeric or bool, got dtype {w_dtype}.")
    if ids:
        check_label_values(labels, c)
    return ids


def check_class_weights(name: str, value: object, num_classes: int) -> object:
    """``None``, or a ``[C]`` vector of non-negative weights (checked when concrete)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = np.asarray(value, dtype=np.float64)
    if tuple(jnp.shape(value)) != (num_classes,):
        raise ValueError(
            f"`{name}` must have shape ({num_classes},), one weight per class, "
            f"got {tuple(jnp.shape(value))}."
        )
    if isinstance(value, np.ndarray) and not (np.all(np.isfinite(value)) and np.all(value >= 0)):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value}.")
    return value


def check_pool(pool_batch: object) -> None:
    if not isinstance(pool_batch, bool):
        raise ValueError(f"`pool_batch` must be a Python bool, got {pool_batch!r}.")


def check_choice(name: str, value: object, choices: tuple) -> None:
    if not isinstance(value, type(choices[0])) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


# --------------------------------------------------------------------------- shared pieces


def log1m_softmax(logp: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""``log(1 - p_c)`` for every class from log-probabilities ``[..., C]``, without cancellation.

    For every class but the most probable one ``p_c <= 1/2`` and ``log1p(-p_c)`` is accurate;
    for the most probable one ``1 - p_c = Σ_{k≠c} p_k`` is summed in log space. So
    ``log(1 - p_c)`` stays finite and exact even where ``p_c`` rounds to 1 (logits 100 apart).

    Returns:
      ``(log(1 - p), top)``: same shape as ``logp``, and the bool one-hot of the argmax
      (lowest index on ties), which is the predicted class.

    >>> import jax, jax.numpy as jnp
    >>> l1m, top = log1m_softmax(jax.nn.log_softmax(jnp.array([0.0, 100.0])))
    >>> [round(float(v), 2) for v in l1m], top.tolist()
    ([-0.0, -100.0], [False, True])
    """
    c = logp.shape[-1]
    top = jax.nn.one_hot(jnp.argmax(logp, axis=-1), c, dtype=jnp.bool_)
    rest = jax.nn.logsumexp(logp, axis=-1, where=~top, keepdims=True)
    others = jnp.log1p(-jnp.exp(jnp.where(top, -1.0, logp)))
    return jnp.where(top, rest, others), top


def _prepare(logits, labels, where, leading: int = 0):
    """``[*lead, B, *spatial, C] -> log p [*lead, B, P, C]``, targets ``[B, P, C]``, mask."""
    logits = jnp.asarray(logits)
    dtype = _checks.compute_dtype(logits.dtype)
    lead, b, c = logits.shape[:leading], logits.shape[leading], logits.shape[-1]
    z = jnp.reshape(logits, (*lead, b, -1, c)).astype(dtype)
    logp = jax.nn.log_softmax(z, axis=-1)
    labels = jnp.asarray(labels)
    if labels.ndim == logits.ndim - 1 - leading:  # class ids
        y = jax.nn.one_hot(jnp.reshape(labels, (b, -1)).astype(jnp.int32), c, dtype=dtype)
    else:
        y = jnp.reshape(labels, (b, -1, c)).astype(dtype)
    w = None if where is None else jnp.reshape(jnp.asarray(where), (b, -1)).astype(dtype)
    return logp, y, w


def _pixel_mean(per_pixel: jax.Array, w) -> jax.Array:
    """Mean over the pixel axis 1 of ``[B, P]`` or ``[B, P, C]``, over unmasked pixels."""
    if w is None:
        return jnp.mean(per_pixel, axis=1)
    if per_pixel.ndim == 3:
        w = w[..., None]
    return safe_div(jnp.sum(per_pixel * w, axis=1), jnp.sum(w, axis=1))


def _pool(x: jax.Array, pool_batch: bool, axis_name) -> jax.Array:
    """Sum ``[B, ...]`` over the batch (and devices), broadcast back to ``[B, ...]``."""
    if not (pool_batch or axis_name is not None):
        return x
    s = jnp.sum(x, axis=0)
    if axis_name is not None:
        s = jax.lax.psum(s, axis_name)
    return jnp.broadcast_to(s, x.shape)


class ClassCounts(NamedTuple):
    """Per-class soft counts ``[B, C]`` (per image, or pooled and broadcast)."""

    tp: jax.Array
    fn: jax.Array  # misses: label c, predicted elsewhere; weighted by α
    fp: jax.Array  # false alarms: label not c, predicted c; weighted by β
    n: jax.Array  # label mass N_c


def _class_counts(logp, y, w, pool_batch: bool, axis_name, log_q=None) -> ClassCounts:
    """Soft counts; ``1 - p`` is ``exp(log_q)`` when the caller has it, else ``1 - p``.

    The subtraction loses at most one float32 ulp of 1 per pixel where ``p`` rounds to 1,
    which a sum of counts does not notice (unlike ``log(1 - p)``, see :func:`log1m_softmax`).
    """
    p = jnp.exp(logp)
    q = 1 - p if log_q is None else jnp.exp(log_q)
    pos = y if w is None else y * w[..., None]
    neg = (1 - y) if w is None else (1 - y) * w[..., None]
    counts = ClassCounts(
        tp=jnp.sum(p * pos, axis=1),
        fn=jnp.sum(q * pos, axis=1),
        fp=jnp.sum(p * neg, axis=1),
        n=jnp.sum(pos, axis=1),
    )
    return ClassCounts(*(_pool(v, pool_batch, axis_name) for v in counts))


def _class_mask(class_weights, include_background: bool, c: int, dtype) -> jax.Array:
    k = jnp.ones((c,), dtype) if class_weights is None else jnp.asarray(class_weights, dtype)
    if not include_background:
        k = k.at[0].set(0)
    return k


def _macro(per_class: jax.Array, k: jax.Array, present=None) -> jax.Array:
    """``Σ_c k_c π_c L_c / Σ_c k_c π_c`` over the last axis (0 when nothing is counted)."""
    weight = jnp.broadcast_to(k, per_class.shape)
    if present is not None:
        weight = weight * present
    return safe_div(jnp.sum(weight * per_class, axis=-1), jnp.sum(weight, axis=-1))


def _presence(counts: ClassCounts, classes: str) -> jax.Array | None:
    return (counts.n > 0).astype(counts.n.dtype) if classes == "present" else None


def _weighted_ce(logp, y, class_weights) -> jax.Array:
    """``-Σ_c k_c y_c log p_c`` per pixel, ``[B, P]``."""
    ce = -y * logp
    if class_weights is not None:
        ce = ce * jnp.asarray(class_weights, logp.dtype)
    return jnp.sum(ce, axis=-1)


# ------------------------------------------------------------------ jitted implementations


@_jit
def _softmax_ce(logits, labels, where, class_weights, pool_batch=False, axis_name=None):
    logp, y, w = _prepare(logits, labels, where)
    return _pixel_mean(_weighted_ce(logp, y, class_weights), w)


@_jit
def _balanced_ce(logits, labels, where, pool_batch=True, axis_name=None):
    logp, y, w = _prepare(logits, labels, where)
    n_c = _pool(jnp.sum(y if w is None else y * w[..., None], axis=1), pool_batch, axis_name)
    n = jnp.sum(n_c, axis=-1, keepdims=True)
    weights = jax.lax.stop_gradient(safe_div(n - n_c, n))  # [B, C]: (N - N_c) / N
    return _pixel_mean(jnp.sum(-y * logp * weights[:, None, :], axis=-1), w)


@_jit
def _softmax_focal(logits, labels, where, alpha, gamma, pool_batch=False, axis_name=None):
    logp, y, w = _prepare(logits, labels, where)
    if jnp.ndim(labels) == jnp.ndim(logits) - 1:  # class ids: only the labelled class's 1 - p
        log_q = jax.nn.logsumexp(logp, axis=-1, where=y == 0, keepdims=True)  # log Σ_{k≠y} p_k
    else:  # soft labels: every class's log(1 - p_c)
        log_q, _ = log1m_softmax(logp)
    per = -y * jnp.exp(gamma * log_q) * logp  # -y_c (1 - p_c)^γ log p_c
    if alpha is not None:
        per = per * jnp.asarray(alpha, logp.dtype)
    return _pixel_mean(jnp.sum(per, axis=-1), w)


def _region(
    logits,
    labels,
    where,
    class_weights,
    include_background,
    classes,
    pool_batch,
    axis_name,
    per_class_fn,
):
    logp, y, w = _prepare(logits, labels, where)
    c = _class_counts(logp, y, w, pool_batch, axis_name)
    k = _class_mask(class_weights, include_background, logp.shape[-1], logp.dtype)
    return _macro(per_class_fn(c), k, _presence(c, classes))


def _one_minus_tversky(c: ClassCounts, alpha, beta, eps) -> jax.Array:
    errors = alpha * c.fn + beta * c.fp
    return safe_div(errors, c.tp + errors + eps)


@_jit
def _dice_mc(
    logits,
    labels,
    where,
    eps,
    class_weights,
    include_background=True,
    classes="present",
    pool_batch=False,
    axis_name=None,
):
    def per_class(c):
        errors = c.fp + c.fn
        return safe_div(errors, 2 * c.tp + errors + eps)

    return _region(
        logits,
        labels,
        where,
        class_weights,
        include_background,
        classes,
        pool_batch,
        axis_name,
        per_class,
    )


@_jit
def _tversky_mc(
    logits,
    labels,
    where,
    alpha,
    beta,
    eps,
    class_weights,
    include_background=True,
    classes="present",
    pool_batch=False,
    axis_name=None,
):
    return _region(
        logits,
        labels,
        where,
        class_weights,
        include_background,
        classes,
        pool_batch,
        axis_name,
        lambda c: _one_minus_tversky(c, alpha, beta, eps),
    )


@_jit
def _focal_tversky_mc(
    logits,
    labels,
    where,
    alpha,
    beta,
    gamma,
    eps,
    class_weights,
    include_background=True,
    classes="present",
    pool_batch=False,
    axis_name=None,
):
    return _region(
        logits,
        labels,
        where,
        class_weights,
        include_background,
        classes,
        pool_batch,
        axis_name,
        lambda c: safe_pow(_one_minus_tversky(c, alpha, beta, eps), 1 / gamma),
    )


# One-vs-rest DIBE: the binary Eq. 18 / Eq. 20 applied to each class against the rest.


def _dibe_dis_ovr(logp, log_q, top, y, lam, gamma, alpha, beta):
    """Eq. 18 per pixel and class, ``[B, P, C]``, with ``p_c`` softmax and ``ŷ_c = [argmax = c]``.

    The same formula as ``binary._dibe_dis_pixels`` written on ``(log p, log(1 - p), ŷ)``
    instead of a sigmoid logit; tests check that C = 2 reproduces the binary loss.
    """
    miss_w = (1 + alpha) * safe_pow(-jnp.expm1((1 + alpha) * logp), gamma)
    pos_w = jnp.where(top, jnp.exp(gamma * log_q), miss_w)
    alarm_w = (1 + beta) * safe_pow(-jnp.expm1((1 + beta) * log_q), gamma)
    neg_w = jnp.where(top, alarm_w, jnp.exp(gamma * logp))
    return y * (-lam * pos_w * logp) + (1 - y) * (-(1 - lam) * neg_w * log_q)


def _ovr_terms(
    logits,
    labels,
    where,
    lam,
    gamma,
    alpha,
    beta,
    eps,
    class_weights,
    include_background,
    pool_batch,
    axis_name,
    want_dis,
    want_reg,
):
    logp, y, w = _prepare(logits, labels, where)
    log_q, top = log1m_softmax(logp)
    k = _class_mask(class_weights, include_background, logp.shape[-1], logp.dtype)
    dis = reg = None
    if want_dis:
        dis = _macro(_pixel_mean(_dibe_dis_ovr(logp, log_q, top, y, lam, gamma, alpha, beta), w), k)
    if want_reg:
        c = _class_counts(logp, y, w, pool_batch, axis_name, log_q=log_q)
        neg_log_tv = jnp.log1p(safe_div(alpha * c.fn + beta * c.fp, c.tp + eps))
        reg = _macro(safe_pow(neg_log_tv, 1 / gamma), k)
    return dis, reg


@_jit
def _dibe_dis_mc(
    logits,
    labels,
    where,
    lam,
    gamma,
    alpha,
    beta,
    class_weights,
    include_background=True,
    pool_batch=False,
    axis_name=None,
):
    return _ovr_terms(
        logits,
        labels,
        where,
        lam,
        gamma,
        alpha,
        beta,
        0.0,
        class_weights,
        include_background,
        pool_batch,
        axis_name,
        True,
        False,
    )[0]


@_jit
def _dibe_reg_mc(
    logits,
    labels,
    where,
    alpha,
    beta,
    gamma,
    eps,
    class_weights,
    include_background=True,
    pool_batch=False,
    axis_name=None,
):
    return _ovr_terms(
        logits,
        labels,
        where,
        0.0,
        gamma,
        alpha,
        beta,
        eps,
        class_weights,
        include_background,
        pool_batch,
        axis_name,
        False,
        True,
    )[1]


@_jit
def _dibe_mc(
    logits,
    labels,
    where,
    theta,
    lam,
    gamma,
    alpha,
    beta,
    eps,
    class_weights,
    include_background=True,
    pool_batch=False,
    axis_name=None,
):
    dis, reg = _ovr_terms(
        logits,
        labels,
        where,
        lam,
        gamma,
        alpha,
        beta,
        eps,
        class_weights,
        include_background,
        pool_batch,
        axis_name,
        True,
        True,
    )
    return theta * dis + (1 - theta) * reg


# --------------------------------------------------------------------------- public API

_OVR_NOTE = r"""
    One-vs-rest (beyond the paper): for each class ``c`` the binary loss is applied to the pair
    ``(p_c, y_c)`` with ``p_c = softmax(logits)_c`` (not a per-class sigmoid: the model is
    trained with one softmax, the same ``p_c`` the metrics' argmax ranks), ``y_c = [label = c]``
    and the hard prediction ``ŷ_c = [argmax = c]``. Then for class c, **α weights its misses**
    (label c, predicted elsewhere) and β its false alarms (predicted c, label elsewhere); λ
    weights the pixels of class c and 1 - λ the rest. The per-class losses ``L_c`` are averaged
    with weights ``k_c`` over **all** classes (an absent class still has false alarms to
    penalise): ``L = Σ_c k_c L_c / Σ_c k_c``. With C = 2 and ``include_background=False`` the
    result is the binary loss of the logit difference ``z_1 - z_0`` (up to ties at
    ``z_1 = z_0``, where argmax says class 0 and the binary rule ``ŷ = [z >= 0]`` says 1).
"""

_COMMON = """
    Args:
      logits: float ``[B, *spatial, C]``, ``C >= 2``; ``p = softmax(logits)``.
      labels: integer class ids ``[B, *spatial]`` in ``[0, C)``, or one-hot / soft labels
        ``[B, *spatial, C]``.
{hyper}      where: optional pixel mask ``[B, *spatial]``; pixels with 0 are left out.
{pool}
    Returns:
      ``[B]`` float32 (float64 for float64 logits): one loss per image.
"""
_POOL_IGNORED = (
    "      pool_batch, axis_name: accepted for a uniform signature; a pixel mean needs no\n"
    "        pooling, so they change nothing.\n"
)
_POOL_COUNTS = (
    "      pool_batch: sum the per-class counts over the batch before the region term.\n"
    "      axis_name: also sum them over this device axis (``shard_map``); implies pooling.\n"
)
_CLASS_ARGS = (
    "      class_weights: optional ``[C]`` non-negative weights ``k_c`` of the macro average.\n"
    "      include_background: if False, class 0 is left out of the macro average.\n"
)
_PRESENT = (
    '      classes: ``"present"`` (default): average over classes with ``N_c > 0`` in the\n'
    '        image (or pooled counts); ``"all"``: over every class.\n'
)


def _doc(hyper: str, pool: str = _POOL_COUNTS):
    def deco(fn):
        text = _COMMON.replace("{hyper}", hyper).replace("{pool}", pool)
        fn.__doc__ = fn.__doc__.replace("    {ovr}\n", _OVR_NOTE).rstrip() + "\n" + text
        return fn

    return deco


def _region_checks(logits, labels, where, class_weights, include_background, classes, pool_batch):
    check_inputs(logits, labels, where)
    check_pool(pool_batch)
    check_choice("include_background", include_background, (True, False))
    if classes is not None:
        check_choice("classes", classes, ("present", "all"))
    return check_class_weights("class_weights", class_weights, jnp.shape(logits)[-1])


@_doc("      class_weights: optional ``[C]`` weights ``k_c >= 0`` (default 1).\n", _POOL_IGNORED)
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy (CDFL Eq. 1), optionally class-weighted, mean over pixels.

    .. math:: L = \frac{1}{N}\sum_i \Big(-\sum_c k_c\, y_{ic} \log p_{ic}\Big)

    ``N`` counts the (unmasked) pixels, so class weights scale the loss rather than
    renormalise it (PyTorch's ``reduction="mean"`` divides by ``Σ_i k_{y_i}`` instead).

    >>> import jax.numpy as jnp
    >>> float(softmax_cross_entropy(jnp.zeros((1, 2, 4)), jnp.array([[0, 3]]))[0])  # log 4
    1.3862...
    """
    check_inputs(logits, labels, where)
    check_pool(pool_batch)
    class_weights = check_class_weights("class_weights", class_weights, jnp.shape(logits)[-1])
    return _softmax_ce(logits, labels, where, class_weights)


@_doc(
    "",
    "      pool_batch: default True (CDFL: ``N`` and ``N_c`` count the training batch); False\n"
    "        computes the weights from each image's own pixels.\n"
    "      axis_name: also count over this device axis; implies pooling.\n",
)
def balanced_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    pool_batch: bool = True,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Balanced cross-entropy, CDFL Eq. 2: class weights ``w_c = (N - N_c) / N`` from the labels.

    .. math:: L = \frac{1}{N}\sum_i \Big(-\sum_c w_c\, y_{ic} \log p_{ic}\Big), \quad
              w_c = \frac{N - N_c}{N}

    ``N`` is the number of (unmasked) pixels and ``N_c`` those labelled ``c``, counted over the
    batch (``pool_batch=True``, the default here: the paper's counts are the batch's) or per
    image. The weights are constants (no gradient). A batch holding one class only has
    ``w = 0`` for it, hence loss 0; with two classes ``w_c`` is the other class's share.

    >>> import jax.numpy as jnp  # 3 pixels of class 0, 1 of class 1: w = (1/4, 3/4)
    >>> z, y = jnp.zeros((1, 4, 2)), jnp.array([[0, 0, 0, 1]])
    >>> round(float(balanced_cross_entropy(z, y)[0]), 4)  # (3·¼ + ¾) · log 2 / 4
    0.2599
    """
    check_inputs(logits, labels, where)
    check_pool(pool_batch)
    return _balanced_ce(logits, labels, where, pool_batch=pool_batch, axis_name=axis_name)


@_doc(
    "      alpha: optional per-class weights ``α_c >= 0``, ``[C]`` (or one number for all).\n"
    "      gamma: γ >= 0, focusing exponent; γ = 0 gives :func:`softmax_cross_entropy`.\n",
    _POOL_IGNORED,
)
def softmax_focal(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
    pool_batch: bool = False,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Softmax focal loss, CDFL Eq. 3 (Lin et al. for C classes), mean over pixels.

    .. math:: L = \frac{1}{N}\sum_i \Big(-\sum_c \alpha_c\, y_{ic} (1 - p_{ic})^\gamma
              \log p_{ic}\Big)

    ``(1 - p)^γ = exp(γ log(1 - p))`` with ``log(1 - p_y) = log Σ_{k≠y} p_k`` summed in log
    space (:func:`log1m_softmax` for soft labels): finite value and gradient for every γ >= 0
    and logits in [-100, 100], exact where ``p_y`` rounds to 1.

    >>> import jax.numpy as jnp  # p = 1/2 for the true class: (1/2)^2 log 2
    >>> round(float(softmax_focal(jnp.zeros((1, 1, 2)), jnp.array([[1]]))[0]), 4)
    0.1733
    """
    check_inputs(logits, labels, where)
    check_pool(pool_batch)
    _checks.check_nonneg("gamma", gamma)
    if alpha is not None and jnp.ndim(alpha) == 0:
        _checks.check_nonneg("alpha", alpha)
    else:
        alpha = check_class_weights("alpha", alpha, jnp.shape(logits)[-1])
    return _softmax_focal(logits, labels, where, alpha, gamma)


@_doc("      eps: ε >= 0, smoothing.\n" + _CLASS_ARGS + _PRESENT)
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

    With two classes and ``include_background=False`` it is the binary :func:`~dibe_jax.
    losses.dice` of the logit difference ``z_1 - z_0``.

    >>> import jax.numpy as jnp  # a perfect prediction
    >>> z = jnp.array([[[9.0, -9.0], [-9.0, 9.0]]])
    >>> float(dice_multiclass(z, jnp.array([[0, 1]]), eps=0.0)[0]) < 1e-3
    True
    """
    class_weights = _region_checks(
        logits, labels, where, class_weights, include_background, classes, pool_batch
    )
    _checks.check_nonneg("eps", eps)
    return _dice_mc(
        logits,
        labels,
        where,
        eps,
        class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


_TV_ARGS = (
    "      alpha: α >= 0, weight of **misses** ``FN_c`` (label c, predicted elsewhere).\n"
    "      beta: β >= 0, weight of **false alarms** ``FP_c`` (label not c, predicted c).\n"
)


@_doc(_TV_ARGS + "      eps: ε >= 0, smoothing.\n" + _CLASS_ARGS + _PRESENT)
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
    r"""Multi-class Tversky loss: ``1 - Tv_c`` per class (α on misses), macro-averaged.

    .. math:: L_c = 1 - \frac{TP_c + \varepsilon}{TP_c + \alpha FN_c + \beta FP_c
              + \varepsilon}

    α = β = 0.5 with ε/2 gives :func:`dice_multiclass` with ε. MONAI's
    ``TverskyLoss(alpha=a, beta=b)`` corresponds to ``alpha=b, beta=a`` here.

    >>> import jax.numpy as jnp  # class 1 missed on one of its two pixels
    >>> z = jnp.array([[[-9.0, 9.0], [9.0, -9.0]]])
    >>> y = jnp.array([[1, 1]])
    >>> round(float(tversky_multiclass(z, y, alpha=1.0, beta=0.0, eps=0.0)[0]), 3)
    0.5
    """
    class_weights = _region_checks(
        logits, labels, where, class_weights, include_background, classes, pool_batch
    )
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_nonneg("eps", eps)
    return _tversky_mc(
        logits,
        labels,
        where,
        alpha,
        beta,
        eps,
        class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


@_doc(
    _TV_ARGS + "      gamma: γ > 0; each class contributes ``(1 - Tv_c)^(1/γ)``.\n"
    "      eps: ε >= 0, smoothing.\n" + _CLASS_ARGS + _PRESENT
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
    r"""Multi-class focal Tversky loss (Abraham & Khan, DIBE Eq. 8 per class), macro-averaged.

    .. math:: L_c = (1 - Tv_c)^{1/\gamma}

    γ = 1 gives :func:`tversky_multiclass`. Finite value and gradient at ``Tv_c = 1``.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[-9.0, 9.0], [9.0, -9.0]]])
    >>> y = jnp.array([[1, 1]])
    >>> round(float(focal_tversky_multiclass(z, y, alpha=1.0, beta=0.0, gamma=0.5,
    ...                                      eps=0.0)[0]), 3)
    0.25
    """
    class_weights = _region_checks(
        logits, labels, where, class_weights, include_background, classes, pool_batch
    )
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    return _focal_tversky_mc(
        logits,
        labels,
        where,
        alpha,
        beta,
        gamma,
        eps,
        class_weights,
        include_background=include_background,
        classes=classes,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def _ovr_checks(logits, labels, where, class_weights, include_background, pool_batch):
    return _region_checks(
        logits, labels, where, class_weights, include_background, None, pool_batch
    )


@_doc(
    "      lam: λ in [0, 1], weight of the pixels of class c in its one-vs-rest term.\n"
    "      gamma: γ >= 0, focusing exponent.\n" + _TV_ARGS + _CLASS_ARGS,
    _POOL_IGNORED,
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
    {ovr}
    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[[0.0, 2.0], [1.0, -1.0]]]), jnp.array([[1, 1]])
    >>> bool(dibe_dis_multiclass(z, y, alpha=0.9)[0] > dibe_dis_multiclass(z, y)[0])
    True
    """
    class_weights = _ovr_checks(
        logits, labels, where, class_weights, include_background, pool_batch
    )
    _checks.check_unit("lam", lam)
    _checks.check_nonneg("gamma", gamma)
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    return _dibe_dis_mc(
        logits,
        labels,
        where,
        lam,
        gamma,
        alpha,
        beta,
        class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


@_doc(
    _TV_ARGS + "      gamma: γ > 0; each class contributes ``(-log Tv_c)^(1/γ)``.\n"
    "      eps: ε >= 0, smoothing.\n" + _CLASS_ARGS
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
    {ovr}
    >>> import math, jax.numpy as jnp  # class 1 missed on one of two pixels; class 0 absent
    >>> z, y = jnp.array([[[-50.0, 50.0], [50.0, -50.0]]]), jnp.array([[1, 1]])
    >>> got = dibe_reg_multiclass(z, y, alpha=1.0, beta=0.0, gamma=1.0, eps=0.0,
    ...                           include_background=False)
    >>> math.isclose(float(got[0]), math.log(2), rel_tol=1e-5)
    True
    """
    class_weights = _ovr_checks(
        logits, labels, where, class_weights, include_background, pool_batch
    )
    _checks.check_nonneg("alpha", alpha)
    _checks.check_nonneg("beta", beta)
    _checks.check_positive("gamma", gamma)
    _checks.check_nonneg("eps", eps)
    return _dibe_reg_mc(
        logits,
        labels,
        where,
        alpha,
        beta,
        gamma,
        eps,
        class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


@_doc(
    "      theta: θ in [0, 1], weight of the DIBE_Dis term.\n"
    "      lam: λ in [0, 1], weight of the pixels of class c in DIBE_Dis.\n"
    "      gamma: γ > 0, shared: focusing exponent of DIBE_Dis and ``1/γ`` of DIBE_Reg.\n"
    + _TV_ARGS
    + "      eps: ε >= 0, Tversky smoothing.\n"
    + _CLASS_ARGS,
    "      pool_batch: sum the per-class counts over the batch before the region term.\n"
    "      axis_name: also sum them over this device axis; implies pooling.\n",
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
    {ovr}
    :func:`dibe_jax.losses.dibe` dispatches here when given ``[B, *spatial, C]`` logits with
    integer labels ``[B, *spatial]`` (default ``include_background`` and ``class_weights``).

    >>> import jax.numpy as jnp
    >>> z, y = jnp.zeros((1, 3, 3)), jnp.array([[0, 1, 2]])
    >>> bool(jnp.allclose(dibe_multiclass(z, y, theta=1.0), dibe_dis_multiclass(z, y)))
    True
    """
    class_weights = _ovr_checks(
        logits, labels, where, class_weights, include_background, pool_batch
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
        theta,
        lam,
        gamma,
        alpha,
        beta,
        eps,
        class_weights,
        include_background=include_background,
        pool_batch=pool_batch,
        axis_name=axis_name,
    )


def is_multiclass_call(logits: object, labels: object) -> bool:
    """True when ``labels`` are class ids for softmax ``logits``: ``labels.shape ==
    logits.shape[:-1]`` with at least 2 classes. Used by the binary wrappers to dispatch."""
    shape, l_shape = tuple(jnp.shape(logits)), tuple(jnp.shape(labels))
    return len(shape) >= 2 and shape[-1] >= 2 and l_shape == shape[:-1]
