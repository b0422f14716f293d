"""Static argument checks shared by the losses: shapes, ranks, dtypes and Python numbers.

Only facts known before tracing are checked (shape, rank, dtype, hyperparameters given as
Python numbers); array values are never inspected, so every loss works under ``jax.jit``.
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


def _dtype_of(x: object) -> np.dtype:
    return np.dtype(jnp.result_type(x)) if not hasattr(x, "dtype") else np.dtype(x.dtype)


def check_binary_inputs(logits: object, labels: object, where: object | None) -> None:
    """Check binary-loss inputs: float ``logits [B, *spatial(, 1)]``, same-shape labels/mask.

    Raises:
      ValueError: naming the argument, for a non-float ``logits``, a rank below 2, a
        ``labels`` or ``where`` whose shape differs from ``logits``, or a non-numeric
        ``labels``/``where`` dtype.
    """
    shape = jnp.shape(logits)
    dtype = _dtype_of(logits)
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
        a_dtype = _dtype_of(arg)
        if tuple(a_shape) != tuple(shape):
            raise ValueError(
                f"`{arg_name}` must have the shape of `logits` {tuple(shape)}, "
                f"got {tuple(a_shape)}."
            )
        if not (
            jnp.issubdtype(a_dtype, jnp.floating)
            or jnp.issubdtype(a_dtype, jnp.integer)
            or a_dtype == np.bool_
        ):
            raise ValueError(f"`{arg_name}` must be numeric or bool, got dtype {a_dtype}.")


def compute_dtype(logits_dtype: jnp.dtype) -> jnp.dtype:
    """float32 for bf16/f16/f32 logits, float64 for float64: sums always accumulate >= f32."""
    return jnp.promote_types(logits_dtype, jnp.float32)


def flatten(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``[B, *spatial] -> [B, P]`` in the compute dtype."""
    return jnp.reshape(x, (x.shape[0], -1)).astype(dtype)
