"""Static argument checks shared by the losses: shapes, ranks, dtypes and Python numbers.

Only facts known before tracing are checked (shape, rank, dtype, hyperparameters given as
Python numbers, Python flags and choices), plus the class ids of concrete integer labels
(:func:`check_label_values`, which skips tracers); traced values are never inspected, so every
loss works under ``jax.jit``. Every check raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_python_number(value: object) -> bool:
    """True for Python or NumPy scalars (checked eagerly); False for JAX arrays and tracers."""
    return isinstance(value, numbers.Real | np.number) and not isinstance(value, bool)


def check_range(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise ``ValueError`` if a concrete hyperparameter lies outside ``[low, high]``.

    ``low_open=True`` makes the lower bound strict (``value > low``). Arrays and tracers are
    not checked: their values are unknown before tracing.
    """
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number, got the bool {value!r}.")
    if not is_python_number(value):
        if isinstance(value, str | bytes) or value is None:
            raise ValueError(f"`{name}` must be a number, got {value!r}.")
        return
    v = float(value)  # type: ignore[arg-type]
    if not np.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {v}.")
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and v > high
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}]"
        if low is not None and high is None:
            expected = f"> {low:g}" if low_open else f">= {low:g}"
        elif low is None:
            expected = f"<= {high:g}"
        else:
            expected = f"in {lo}, {hi}"
        raise ValueError(f"`{name}` must be {expected}, got {v:g}.")


def check_unit(name: str, value: object) -> None:
    """λ, θ and other convex weights: ``[0, 1]``."""
    check_range(name, value, low=0.0, high=1.0)


def check_nonneg(name: str, value: object) -> None:
    """α, β, ε and exponents that may be 0: ``>= 0``."""
    check_range(name, value, low=0.0)


def check_positive(name: str, value: object) -> None:
    """γ where it divides (``1/γ``): ``> 0``."""
    check_range(name, value, low=0.0, low_open=True)


def dtype_of(x: object) -> np.dtype:
    """The NumPy dtype of an array, a scalar or a nested sequence."""
    return np.dtype(jnp.result_type(x)) if not hasattr(x, "dtype") else np.dtype(x.dtype)


def is_numeric(dtype: np.dtype) -> bool:
    """True for floating-point, integer and bool dtypes."""
    return bool(
        jnp.issubdtype(dtype, jnp.floating)
        or jnp.issubdtype(dtype, jnp.integer)
        or dtype == np.bool_
    )


def check_bool(name: str, value: object) -> None:
    """Flags (``pool_batch``, ``include_background``, ...) must be Python bools: they are static."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a Python bool, got {value!r}.")


# ------------------------------------------------------------------- binary (sigmoid) inputs


def check_binary_inputs(logits: object, labels: object, where: object | None) -> None:
    """Check binary-loss inputs: float ``logits [B, *spatial(, 1)]``, same-shape labels/mask.

    Raises:
      ValueError: naming the argument, for a non-float ``logits``, a rank below 2, a
        ``labels`` or ``where`` whose shape differs from ``logits``, or a non-numeric
        ``labels``/``where`` dtype.
    """
    shape = jnp.shape(logits)
    dtype = dtype_of(logits)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`logits` must be a floating-point array (float32, bfloat16, float16, float64), "
            f"got dtype {dtype}. Losses take logits, not probabilities or class ids."
        )
    if len(shape) < 2:
        raise ValueError(
            f"`logits` must have shape [B, *spatial] or [B, *spatial, 1] (rank >= 2), "
            f"got shape {tuple(shape)}."
        )
    for arg_name, arg in (("labels", labels), ("where", where)):
        if arg is None and arg_name == "where":
            continue
        if arg is None:
            raise ValueError("`labels` must be an array, got None.")
        a_shape = jnp.shape(arg)
        a_dtype = dtype_of(arg)
        if tuple(a_shape) != tuple(shape):
            raise ValueError(
                f"`{arg_name}` must have the shape of `logits` {tuple(shape)}, "
                f"got {tuple(a_shape)}."
            )
        if not is_numeric(a_dtype):
            raise ValueError(f"`{arg_name}` must be numeric or bool, got dtype {a_dtype}.")


def is_class_id_input(logits: object, labels: object) -> bool:
    """True when ``labels`` look like class ids for softmax ``logits``.

    That is ``labels.shape == logits.shape[:-1]`` with at least 2 classes on the last axis of
    ``logits``; binary losses take labels of the logits' own shape instead.
    """
    shape, l_shape = tuple(jnp.shape(logits)), tuple(jnp.shape(labels))
    return len(shape) >= 2 and shape[-1] >= 2 and l_shape == shape[:-1]


# ------------------------------------------------------------------ softmax (C-class) inputs


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
        if arr.size == 0 or not is_numeric(arr.dtype):
            return
        lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"`{name}` must hold class ids in [0, {num_classes}) for {num_classes} classes, "
            f"got values in [{lo}, {hi}]. Drop unlabelled pixels with `where` instead."
        )


def check_softmax_inputs(
    logits: object,
    labels: object,
    where: object | None,
    *,
    name: str = "logits",
    leading: int = 0,
    dense_labels: bool = True,
) -> None:
    """Check the inputs of a softmax loss.

    ``logits`` is float ``[*lead, B, *spatial, C]`` with ``leading`` extra leading axes (1 for
    the Monte Carlo axis of the cross dropout focal loss), ``C >= 2``; ``labels`` is
    ``[B, *spatial]`` (integer/bool class ids, checked to lie in ``[0, C)`` when concrete) or,
    if ``dense_labels``, one-hot / soft labels ``[B, *spatial, C]``; ``where`` is
    ``[B, *spatial]``.

    Raises:
      ValueError: naming the argument, for a non-float ``logits``, a wrong rank, fewer than
        2 classes, a ``labels``/``where`` shape or dtype that does not fit, or (for concrete
        labels) class ids outside ``[0, C)``.
    """
    shape = tuple(jnp.shape(logits))
    dtype = dtype_of(logits)
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
    l_shape, l_dtype = tuple(jnp.shape(labels)), dtype_of(labels)
    class_ids = l_shape == core[:-1]
    if class_ids:
        if not (jnp.issubdtype(l_dtype, jnp.integer) or l_dtype == np.bool_):
            raise ValueError(
                f"`labels` of shape {l_shape} must hold integer class ids, got dtype {l_dtype}; "
                f"pass one-hot or soft labels with the shape of `{name}` instead."
            )
    elif dense_labels and l_shape == core:
        if not is_numeric(l_dtype):
            raise ValueError(f"`labels` must be numeric or bool, got dtype {l_dtype}.")
        check_dense_labels(labels, name, shape)
    else:
        dense = f" or {core} (one-hot / soft labels)" if dense_labels else ""
        raise ValueError(
            f"`labels` must have shape {core[:-1]} (class ids){dense} for `{name}` of shape "
            f"{shape}, got {l_shape}."
        )
    if where is not None:
        w_shape, w_dtype = tuple(jnp.shape(where)), dtype_of(where)
        if w_shape != core[:-1]:
            raise ValueError(
                f"`where` must have shape {core[:-1]} (one value per pixel), got {w_shape}."
            )
        if not is_numeric(w_dtype):
            raise ValueError(f"`where` must be numeric or bool, got dtype {w_dtype}.")
    if class_ids:
        check_label_values(labels, c)


def check_dense_labels(labels: object, name: str, shape: tuple[int, ...]) -> None:
    """``ValueError`` unless concrete ``labels`` of the logits' shape are one-hot or soft labels:
    values in ``[0, 1]`` summing to 1 over the class axis (to 1e-3).

    This is how a binary mask with one logit per pixel (``[B, H, W]`` logits and labels) is
    told from one-hot labels of ``[B, P, C]`` logits, which have the same shapes: its "rows"
    do not sum to 1. Tracers are not inspected (as :func:`check_label_values`).
    """
    if isinstance(labels, jax.core.Tracer):
        return
    if isinstance(labels, jax.Array) and (not labels.is_fully_addressable or labels.size == 0):
        return
    if not isinstance(labels, jax.Array) and np.size(labels) == 0:
        return
    with jax.ensure_compile_time_eval():  # concrete even when closed over inside a trace
        y = jnp.asarray(labels).astype(jnp.float32)
        sums = jnp.sum(y, axis=-1)
        lo, hi = float(jnp.min(sums)), float(jnp.max(sums))
        ok = float(jnp.min(y)) >= 0 and float(jnp.max(y)) <= 1 and lo >= 0.999 and hi <= 1.001
    if not ok:
        raise ValueError(
            f"`labels` of the shape of `{name}` {shape} are read as one-hot or soft labels "
            f"over its last axis ({shape[-1]} classes) and must lie in [0, 1] and sum to 1 "
            f"there, got sums in [{lo:g}, {hi:g}]. Softmax losses take `{name}` "
            "[B, *spatial, C] with class ids [B, *spatial] or one-hot labels [B, *spatial, C]; "
            "for a binary mask with one logit per pixel use a binary loss (bce, dice, dibe, "
            "unified_focal_binary, ...)."
        )


def check_class_weights(
    name: str, value: object, num_classes: int, *, allow_scalar: bool = False
) -> object:
    """``None``, or a ``[C]`` vector of weights ``>= 0`` (checked when concrete).

    With ``allow_scalar``, one number (range-checked like any hyperparameter) stands for the
    same weight on every class. Lists and tuples become a float64 NumPy array.
    """
    if value is None:
        return None
    if isinstance(value, list | tuple):
        value = np.asarray(value, dtype=np.float64)
    if allow_scalar and jnp.ndim(value) == 0:
        check_nonneg(name, value)
        return value
    if tuple(jnp.shape(value)) != (num_classes,):
        one = " (or one number for all)" if allow_scalar else ""
        raise ValueError(
            f"`{name}` must have shape ({num_classes},), one weight per class{one}, "
            f"got {tuple(jnp.shape(value))}."
        )
    if isinstance(value, np.ndarray) and not (np.all(np.isfinite(value)) and np.all(value >= 0)):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value}.")
    return value


# ------------------------------------------------------------------------ compute helpers


def compute_dtype(logits_dtype: jnp.dtype) -> jnp.dtype:
    """float32 for bf16/f16/f32 logits, float64 for float64: sums always accumulate >= f32.

    Chosen explicitly rather than by ``jnp.promote_types``, which has no float64/float32 path
    under ``jax_numpy_dtype_promotion="strict"``.
    """
    return np.dtype(np.float64) if np.dtype(logits_dtype) == np.float64 else np.dtype(np.float32)


def flatten(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``[B, *spatial] -> [B, P]`` in the compute dtype."""
    return jnp.reshape(x, (x.shape[0], -1)).astype(dtype)
