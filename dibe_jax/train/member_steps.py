"""The programs of a sweep: ``K`` runs whose states are stacked along a leading axis.

:func:`stacked_steps` turns one run's pure steps (:attr:`~dibe_jax.train.step.Steps.pure`:
the train and eval steps with the loss's hyperparameters and the seed as inputs) into steps
of ``K`` members at once, three ways (:data:`STRATEGIES`). Every member steps on its own
state, batch and :class:`~dibe_jax.train.step.StepInputs`, so each is the single run of its
config up to the rounding of the batched program. :mod:`dibe_jax.train.stacked` trains a
sweep's chunk of members with them; ``benchmarks/sweep.py`` times the three against ``K``
separate runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dibe_jax.train.step import PureSteps

__all__ = ["STRATEGIES", "stacked_steps"]

#: How :func:`stacked_steps` runs ``K`` members whose states are stacked.
STRATEGIES = ("vmap", "map", "loop")


@functools.lru_cache(maxsize=16)
def stacked_steps(pure: PureSteps, strategy: str) -> tuple[Callable[..., Any], ...]:
    """The jitted programs of ``K`` runs whose states are stacked along a leading axis.

    ``train_members(states, batches, step, inputs, *, size=None) -> (states, stats)`` (``states``
    donated; ``batches`` ``[K, B, ...]``, one per member; ``inputs`` :class:`StepInputs`
    stacked ``[K]``; ``stats`` ``[K]``), ``evaluate_members(states, batch, totals, inputs, *,
    size=None) -> totals`` (the same ``batch`` for every member, ``totals`` stacked) and
    ``add(acc, stats) -> acc`` (per-member sums of the epoch: ``loss_sum``,
    ``loss_count``, ``skipped``).

    ``strategy``: ``"vmap"`` batches the members (:func:`jax.vmap`: XLA turns their
    convolutions into grouped ones), ``"map"`` runs them one after another inside the
    program (:func:`jax.lax.map`: each member's convolutions in the body of a loop), ``"loop"``
    calls one program per member from the host, each reading member ``j``'s slot of the
    stacked state and writing it back in place (donated): each member's step is the single
    run's program, compiled once for every ``j``. On XLA:CPU, convolutions inside a loop body
    run several times slower than the same convolutions at the top of a program, so
    ``"loop"`` is there the fastest (``benchmarks/results/sweep_cpu_demo.md``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "loop":
        return _member_loop(pure)

    def train_members(states, batches, step, inputs, size=None):
        one = functools.partial(pure.train, size=size)
        if strategy == "vmap":
            return jax.vmap(one, in_axes=(0, 0, None, 0))(states, batches, step, inputs)
        return jax.lax.map(lambda a: one(a[0], a[1], step, a[2]), (states, batches, inputs))

    def evaluate_members(states, batch, totals, inputs, size=None):
        one = functools.partial(pure.evaluate, size=size)
        if strategy == "vmap":
            return jax.vmap(one, in_axes=(0, None, 0, 0))(states, batch, totals, inputs)
        return jax.lax.map(lambda a: one(a[0], batch, a[1], a[2]), (states, totals, inputs))

    return (
        jax.jit(train_members, donate_argnums=0, static_argnames=("size",)),
        jax.jit(evaluate_members, static_argnames=("size",)),
        jax.jit(_add_member_stats, donate_argnums=0),
    )


def _slot(tree: Any, j: jax.Array) -> Any:
    return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, j, keepdims=False), tree)


def _put_slot(tree: Any, new: Any, j: jax.Array) -> Any:
    return jax.tree.map(lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, j, 0), tree, new)


def _member_loop(pure: PureSteps) -> tuple[Callable[..., Any], ...]:
    """:func:`stacked_steps`' ``"loop"``: one jitted program per member call (``j`` traced)."""

    def train_member(states, batches, step, inputs, j, size=None):
        mine = _slot(states, j), _slot(batches, j), step, _slot(inputs, j)
        state, stats = pure.train(*mine, size=size)
        return _put_slot(states, state, j), stats

    def evaluate_member(states, batch, totals, inputs, j, size=None):
        mine = _slot(states, j), batch, _slot(totals, j), _slot(inputs, j)
        new = pure.evaluate(*mine, size=size)
        return _put_slot(totals, new, j)

    train_jit = jax.jit(train_member, donate_argnums=0, static_argnames=("size",))
    evaluate_jit = jax.jit(evaluate_member, donate_argnums=2, static_argnames=("size",))
    stack = jax.jit(lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees))

    def train_members(states, batches, step, inputs, *, size=None):
        stats = []
        for j in range(len(inputs.seed)):
            states, one = train_jit(states, batches, step, inputs, np.int32(j), size=size)
            stats.append(one)
        return states, stack(*stats)

    def evaluate_members(states, batch, totals, inputs, *, size=None):
        for j in range(len(inputs.seed)):
            totals = evaluate_jit(states, batch, totals, inputs, np.int32(j), size=size)
        return totals

    return train_members, evaluate_members, jax.jit(_add_member_stats, donate_argnums=0)


def _add_member_stats(acc, stats):
    """Per-member sums of an epoch: ``loss_sum`` and ``loss_count`` of the finite steps,
    ``skipped`` the others."""
    ok = stats["nonfinite"] == 0
    return {
        "loss_sum": acc["loss_sum"] + jnp.where(ok, stats["loss"], 0.0),
        "loss_count": acc["loss_count"] + ok.astype(jnp.int32),
        "skipped": acc["skipped"] + (~ok).astype(jnp.int32),
    }
