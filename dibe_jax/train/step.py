"""Data-parallel train and eval steps: one ``jax.jit`` over a ``Mesh`` with a ``data`` axis.

The batch is sharded along ``data`` (``NamedSharding(mesh, P("data"))``); parameters,
BatchNorm statistics, optimiser state and RNG state are replicated. Under ``jit`` the loss is
the mean over the *global* batch, so gradients and BatchNorm statistics are those of the
global batch, exactly as on one device (XLA inserts the all-reduces). This is what
``jax.pmap`` did; ``pmap`` is now a legacy wrapper over ``jit`` + ``shard_map``, so we build
on ``jit`` and shardings directly.

The model and optimiser live in one NNX state pytree (``nnx.split``), so steps are pure
functions ``state -> state`` that can be donated, checkpointed and restored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dibe_jax import metrics

__all__ = ["Steps", "make_mesh", "make_steps", "replicate", "shard_batch"]


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(
        np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Place this process's part of the global batch on the mesh, split along ``data``."""
    sharding = NamedSharding(mesh, P("data"))
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in batch.items()
        if np.asarray(v).dtype.kind in "biuf"
    }


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def replicate(tree: Any, sharding: NamedSharding) -> Any:
    """Place ``tree`` (the same values on every process) replicated over ``sharding``'s mesh.

    One process: ``jax.device_put``. Several: each process gives its (identical) copy as its
    local data, since ``device_put`` cannot address other processes' devices; typed PRNG
    keys travel as their key data.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if _is_key(x):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)


class Steps(NamedTuple):
    """The jitted steps and the shardings they use."""

    train: Callable[..., Any]
    evaluate: Callable[..., Any]
    replicated: NamedSharding


def _labels(mask: jax.Array, num_classes: int) -> jax.Array:
    if num_classes == 1:
        return mask  # [B, H, W, 1], {0, 1}, like the logits
    return mask[..., 0].astype(jnp.int32)  # class ids [B, H, W] for softmax losses


def make_steps(
    train_graphdef: nnx.GraphDef,
    eval_graphdef: nnx.GraphDef,
    loss_fn: Callable[..., jax.Array],
    loss_params: dict[str, Any],
    mesh: jax.sharding.Mesh,
    *,
    num_classes: int = 1,
    skip_nonfinite: bool = True,
) -> Steps:
    """Build the train and eval steps for a ``(model, optimizer)`` NNX state.

    ``train(state, batch) -> (state, stats)``: one SGD update on the global batch
    (``state`` is donated); ``stats`` holds the loss and ``nonfinite`` (0 or 1).
    If the loss or any gradient is not finite the update is not applied (the state is
    returned unchanged) and ``stats["nonfinite"]`` is 1; the caller decides whether to stop
    (``Config.nonfinite = "raise"``) or go on (``"skip"``). No host round-trip happens here.

    ``evaluate(state, batch, totals) -> totals``: adds the batch's dataset-level confusion
    counts and loss sum (padding rows with ``valid = False`` excluded) to ``totals``.
    """
    replicated = NamedSharding(mesh, P())
    loss_params = dict(loss_params)

    def per_image_loss(logits, mask):
        return loss_fn(logits, _labels(mask, num_classes), **loss_params)

    def train_step(state, batch):
        model, optimizer = nnx.merge(train_graphdef, state)

        def objective(m):
            logits = m(batch["image"])
            return jnp.mean(per_image_loss(logits, batch["mask"]))

        loss, grads = nnx.value_and_grad(objective)(model)
        finite = jnp.isfinite(loss)
        for g in jax.tree.leaves(grads):
            finite &= jnp.all(jnp.isfinite(g))
        optimizer.update(model, grads)
        new_state = nnx.state((model, optimizer))
        if skip_nonfinite:
            new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
        stats = {"loss": loss, "nonfinite": (~finite).astype(jnp.int32)}
        return new_state, stats

    def eval_step(state, batch, totals):
        model, _ = nnx.merge(eval_graphdef, state)
        logits = model(batch["image"])
        valid = batch["valid"]
        where = jnp.broadcast_to(valid[:, None, None, None], logits.shape[:3] + (1,))
        mask = batch["mask"]
        if num_classes == 1:
            counts = metrics.confusion_counts(logits, mask, where=where).sum()
        else:
            raise ValueError("evaluation of multi-class models is not supported yet")
        per_image = per_image_loss(logits, mask)
        loss_sum = jnp.sum(jnp.where(valid, per_image, 0.0))
        return {
            "tp": totals["tp"] + counts.tp,
            "fp": totals["fp"] + counts.fp,
            "fn": totals["fn"] + counts.fn,
            "tn": totals["tn"] + counts.tn,
            "loss": totals["loss"] + loss_sum,
            "images": totals["images"] + jnp.sum(valid.astype(jnp.int32)),
        }

    train = jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated))
    evaluate = jax.jit(eval_step, out_shardings=replicated)
    return Steps(train, evaluate, replicated)


def zero_totals() -> dict[str, jax.Array]:
    """Empty accumulator for :func:`make_steps`' ``evaluate``."""
    z = jnp.zeros((), jnp.int32)
    return {"tp": z, "fp": z, "fn": z, "tn": z, "loss": jnp.zeros(()), "images": z}
