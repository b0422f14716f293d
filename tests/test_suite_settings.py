"""The suite's own settings (tests/conftest.py): strict NumPy semantics and fast-compiling XLA,
with XLA's full optimisations back for tests marked ``optimized``."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest

FAST = os.environ.get("DIBE_JAX_TEST_FAST_COMPILE", "1") != "0"


def test_strict_promotion_raises():
    with pytest.raises(jax.dtypes.TypePromotionError):
        jnp.float32(1) + jnp.int32(1)
    with pytest.raises(ValueError, match="rank"):
        jnp.ones(3) + jnp.ones((2, 3))


@pytest.mark.skipif(not FAST, reason="DIBE_JAX_TEST_FAST_COMPILE=0 keeps XLA's defaults")
def test_tests_compile_without_xla_expensive_optimisations():
    assert jax.config.read("jax_disable_most_optimizations") is True
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"  # inherited by subprocesses


@pytest.mark.optimized
def test_optimized_tests_compile_with_them():
    assert jax.config.read("jax_disable_most_optimizations") is False
