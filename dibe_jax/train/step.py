"""Data-parallel train and eval steps: one ``jax.jit`` over a ``Mesh`` with a ``data`` axis.

The batch is sharded along ``data`` (``NamedSharding(mesh, P("data"))``); parameters,
BatchNorm statistics, optimiser state and RNG state are replicated. Under ``jit`` the loss is
the mean over the *global* batch, so gradients and BatchNorm statistics are those of the
global batch, exactly as on one device (XLA inserts the all-reduces). This is what
``jax.pmap`` did; ``pmap`` is now a legacy wrapper over ``jit`` + ``shard_map``, so we build
on ``jit`` and shardings directly.

The model and optimiser live in one NNX state pytree (``nnx.split``), so steps are pure
functions ``state -> state`` that can be donated, checkpointed and restored.

The kind of loss (:func:`dibe_jax.losses.info`) decides what a step computes: one sigmoid
channel with ``{0, 1}`` masks (binary) or ``C`` softmax channels with class ids; ``T``
Monte-Carlo dropout passes for the cross dropout focal loss; the batch's own value for a
batch-scalar loss (PF-loss). Evaluation adds up binary TP/FP/FN/TN, or a ``[C, C]``
confusion matrix, over the whole split: sums over the global batch, so over devices and
processes too.

Batches come in two forms. The grain path sends ``float32`` images, ready for the model.
The in-memory path sends ``uint8`` images (4x fewer bytes to move) and the steps turn them
into the model's input themselves, with the run's :class:`~dibe_jax.data.DevicePreprocess`:
augmentation from the key of ``(seed, step)`` in training, the geometry to the epoch's
``size`` (a static argument: one compilation per size) and ``uint8 -> float32`` in both
steps. The dtype of the images decides, at trace time.

What varies between runs of one model is an input of the compiled steps, not a constant:
the loss's real-valued hyperparameters (a dict of ``float32`` scalars) and the
augmentation seed travel as :class:`StepInputs`, so any number of α values and seeds in one
process compile each step once per input shape (the learning rate lives in the optimiser
state, the parameters' key in the state's RNG streams). :attr:`Steps.pure` holds the same
steps unjitted, with the inputs as an argument, for the programs over stacked runs
(:mod:`dibe_jax.train.member_steps`).

Evaluation counts are exact past ``2**31`` pixels: each count accumulates on the device as
two ``uint32`` words ``[hi, lo]`` (x64 is off), and :func:`read_totals` joins them on the host.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dibe_jax import metrics
from dibe_jax.data.device_augment import DevicePreprocess
from dibe_jax.models.mc_dropout import mc_dropout_logits

__all__ = [
    "StepInputs",
    "Steps",
    "make_mesh",
    "make_steps",
    "read_totals",
    "replicate",
    "shard_batch",
    "split_loss_params",
    "zero_totals",
]

#: The key of the Monte-Carlo dropout passes of the validation loss (fixed: evaluation is
#: deterministic).
EVAL_MC_SEED = 0

#: :func:`make_steps`' latest results by their arguments (at most ``_STEPS_KEPT``): a process
#: that builds the same steps again (a resume, an evaluation of a saved run) gets the same
#: :class:`Steps` back.
_STEPS: OrderedDict[Hashable, Steps] = OrderedDict()
_STEPS_KEPT = 8
#: The jitted steps by every argument of :func:`make_steps` except the values in
#: :class:`StepInputs` (at most ``_STEPS_KEPT``): another run of the same model and loss with
#: other hyperparameter values or another seed gets the same jitted functions, so JAX's
#: in-memory cache serves it instead of a new trace, lowering and compilation.
_JITTED: OrderedDict[Hashable, tuple[Callable[..., Any], ...]] = OrderedDict()

#: Two ``uint32`` words per count: ``hi * 2**32 + lo`` (exact to ``2**64``).
_WORD = 2**32


def make_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(
        np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Place this process's part of the global batch on the mesh, split along ``data``.

    Asynchronous: the copy to the devices runs while the caller goes on. One process:
    ``jax.device_put`` (half the host time of the general call); several: each gives its
    rows (``jax.make_array_from_process_local_data``). Non-numeric entries (file names) are
    left out.
    """
    sharding = NamedSharding(mesh, P("data"))
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    arrays = {k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}
    if jax.process_count() == 1:
        return jax.device_put(arrays, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in arrays.items()}


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


class StepInputs(NamedTuple):
    """What varies between runs of one compiled step: arrays, not constants.

    Attributes:
      loss: the loss's real-valued hyperparameters, ``{name: float32 []}`` (those given as
        Python floats; the others are static: :func:`split_loss_params`).
      seed: the augmentation seed, ``int32 []`` (step ``t`` augments with
        :func:`~dibe_jax.data.device_augment.step_key` ``(seed, t)``).

    Stacked along a leading axis ``[K]``, they are the inputs of ``K`` runs under
    :func:`jax.vmap`.
    """

    loss: dict[str, jax.Array]
    seed: jax.Array


class PureSteps(NamedTuple):
    """The steps unjitted, their :class:`StepInputs` an argument (for :func:`jax.vmap`).

    ``train(state, batch, step, inputs, size) -> (state, stats)`` and
    ``evaluate(state, batch, totals, inputs, size) -> totals``.
    """

    train: Callable[..., Any]
    evaluate: Callable[..., Any]


class Steps(NamedTuple):
    """The jitted steps bound to one run's :class:`StepInputs`, and the shardings they use.

    ``train`` and ``evaluate`` are the run's steps (signatures in :func:`make_steps`);
    ``inputs`` the arrays they pass to the jitted functions ``train_jit(state, batch, step,
    inputs, *, size)`` and ``evaluate_jit(state, batch, totals, inputs, *, size)``, which
    every run of the same model and loss shares; ``pure`` the same steps unjitted.
    """

    train: Callable[..., Any]
    evaluate: Callable[..., Any]
    replicated: NamedSharding
    inputs: StepInputs | None = None
    train_jit: Callable[..., Any] | None = None
    evaluate_jit: Callable[..., Any] | None = None
    pure: PureSteps | None = None


def split_loss_params(params: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """``(traced, static)``: the hyperparameters given as Python or NumPy floats (inputs
    of the compiled step, :class:`StepInputs`) and the rest (ints, flags, names, lists:
    constants of the step, as a loss may use them for shapes or choices).

    >>> split_loss_params({"alpha": 0.3, "gamma": 2, "include_background": True})
    ({'alpha': 0.3}, {'gamma': 2, 'include_background': True})
    """
    traced = {k: float(v) for k, v in params.items() if isinstance(v, float | np.floating)}
    return traced, {k: v for k, v in params.items() if k not in traced}


def step_inputs(loss: dict[str, float], seed: int) -> StepInputs:
    """:class:`StepInputs` of one run (host arrays)."""
    return StepInputs(
        {k: np.asarray(v, np.float32) for k, v in loss.items()}, np.asarray(seed, np.int32)
    )


def _labels(mask: jax.Array, num_classes: int) -> jax.Array:
    if num_classes == 1:
        return mask  # [B, H, W, 1], {0, 1}, like the logits
    return mask[..., 0].astype(jnp.int32)  # class ids [B, H, W] for softmax losses


def mc_forward(model: nnx.Module, x: jax.Array, samples: int) -> jax.Array:
    """``T = samples`` stochastic passes of a model in training mode: ``[T, B, H, W, K]``.

    The batch is stacked ``T`` times (``[B * T, H, W, C_in]``, each image's copies next to
    each other, so a batch sharded over devices stays local) and run once: every copy draws
    its own dropout masks, which is what the CDFL paper's "T dropout times" asks; BatchNorm
    normalises with the statistics of the stacked batch (those of the ``B`` images up to the
    first dropout layer) and updates its running statistics once per step.
    """
    b = x.shape[0]
    z = model(jnp.repeat(x, samples, axis=0))  # [B * T, H, W, K]
    z = jnp.reshape(z, (b, samples, *z.shape[1:]))
    return jnp.swapaxes(z, 0, 1)


def make_steps(
    train_graphdef: nnx.GraphDef,
    eval_graphdef: nnx.GraphDef,
    loss_fn: Callable[..., jax.Array],
    loss_params: dict[str, Any],
    mesh: jax.sharding.Mesh,
    *,
    num_classes: int = 1,
    mc_samples: int | None = None,
    batch_loss: bool = False,
    skip_nonfinite: bool = True,
    preprocess: DevicePreprocess | None = None,
) -> Steps:
    """Build the train and eval steps for a ``(model, optimizer)`` NNX state.

    ``train(state, batch, step=None, *, size=None) -> (state, stats)``: one SGD update on
    the global batch (``state`` is donated); ``stats`` holds the loss and ``nonfinite``
    (0 or 1). If the loss or any gradient is not finite the update is not applied (the state
    is returned unchanged) and ``stats["nonfinite"]`` is 1; the caller decides whether to
    stop (``Config.nonfinite = "raise"``) or go on (``"skip"``). No host round-trip happens
    here. A ``uint8`` batch is prepared by ``preprocess.train(step, ..., size)`` first: it
    needs ``step`` (the global step number, traced) and takes the epoch's ``size`` (static;
    None keeps the stored size); a ``float32`` batch ignores both.

    ``evaluate(state, batch, totals, *, size=None) -> totals``: adds the batch's
    dataset-level confusion counts (binary TP/FP/FN/TN, or the ``[C, C]`` matrix ``cm``) and
    loss sum (padding rows with ``valid = False`` excluded) to ``totals``
    (:func:`zero_totals`; :func:`read_totals` reads them); a ``uint8`` batch goes through
    ``preprocess.evaluate`` first.

    The loss's float hyperparameters and ``preprocess.seed`` are :class:`StepInputs` of the
    jitted functions, not constants: arguments that differ only in those values share
    ``train_jit`` and ``evaluate_jit``, so a search over α and seeds compiles each step
    once per input shape; equal arguments give the same :class:`Steps` back.

    Args:
      train_graphdef, eval_graphdef: the model and optimiser in train / eval mode.
      loss_fn: ``loss_fn(logits, labels, **loss_params)``: ``[B]``, or a scalar with
        ``batch_loss``.
      loss_params: the loss's hyperparameters (no step options).
      mesh: the device mesh (axis ``data``).
      num_classes: model outputs: 1 (binary: sigmoid logits ``[B, H, W, 1]`` with the
        ``{0, 1}`` mask ``[B, H, W, 1]``) or ``C >= 3`` (softmax logits ``[B, H, W, C]`` with
        class ids ``[B, H, W]``).
      mc_samples: ``T`` for a Monte-Carlo dropout loss (cross dropout focal): the train step
        gives it ``[T, B, H, W, C]`` from :func:`mc_forward`, and the validation loss uses
        ``T`` passes of the eval-mode model with dropout on and a fixed key
        (:func:`~dibe_jax.models.mc_dropout.mc_dropout_logits`).
      batch_loss: the loss returns one scalar for the batch (PF-loss): it is the training
        objective as it is, and evaluation passes the padding rows as ``where = 0`` and
        weights each batch by its images.
      skip_nonfinite: drop non-finite updates (see above).
      preprocess: what the steps do to ``uint8`` batches (default: no augmentation, only
        ``uint8 -> float32``).
    """
    preprocess = DevicePreprocess() if preprocess is None else preprocess
    options = (num_classes, mc_samples, batch_loss, skip_nonfinite, preprocess)
    key = _steps_key(train_graphdef, eval_graphdef, loss_fn, loss_params, mesh, options)
    if key is not None and key in _STEPS:
        _STEPS.move_to_end(key)
        return _STEPS[key]
    traced, static = split_loss_params(dict(loss_params))
    replicated = NamedSharding(mesh, P())
    # Everything but the inputs' values: runs that differ only in those share the programs.
    shared = dataclasses.replace(preprocess, seed=0)
    options = (num_classes, mc_samples, batch_loss, skip_nonfinite, shared)
    jit_key = _steps_key(
        train_graphdef, eval_graphdef, loss_fn, static, sorted(traced), mesh, options
    )
    if jit_key is not None and jit_key in _JITTED:
        _JITTED.move_to_end(jit_key)
        train_jit, evaluate_jit, pure = _JITTED[jit_key]
    else:
        pure = _pure_steps(
            train_graphdef,
            eval_graphdef,
            loss_fn,
            static,
            num_classes=num_classes,
            mc_samples=mc_samples,
            batch_loss=batch_loss,
            skip_nonfinite=skip_nonfinite,
            preprocess=shared,
        )
        train_jit = jax.jit(
            pure.train,
            donate_argnums=0,
            static_argnames=("size",),
            out_shardings=(replicated, replicated),
        )
        evaluate_jit = jax.jit(pure.evaluate, static_argnames=("size",), out_shardings=replicated)
        if jit_key is not None:
            _JITTED[jit_key] = (train_jit, evaluate_jit, pure)
            while len(_JITTED) > _STEPS_KEPT:
                _JITTED.popitem(last=False)
    inputs = replicate(step_inputs(traced, preprocess.seed), replicated)

    def train(state, batch, step=None, *, size=None):
        return train_jit(state, batch, step, inputs, size=size)

    def evaluate(state, batch, totals, *, size=None):
        return evaluate_jit(state, batch, totals, inputs, size=size)

    steps = Steps(train, evaluate, replicated, inputs, train_jit, evaluate_jit, pure)
    if key is not None:
        _STEPS[key] = steps
        while len(_STEPS) > _STEPS_KEPT:
            _STEPS.popitem(last=False)
    return steps


def _pure_steps(
    train_graphdef: nnx.GraphDef,
    eval_graphdef: nnx.GraphDef,
    loss_fn: Callable[..., jax.Array],
    static_params: dict[str, Any],
    *,
    num_classes: int,
    mc_samples: int | None,
    batch_loss: bool,
    skip_nonfinite: bool,
    preprocess: DevicePreprocess,
) -> PureSteps:
    """The train and eval steps as pure functions of ``(..., inputs, size)``."""

    def prepared(batch, step, inputs, size, train: bool):
        """The batch the model takes: ``uint8`` images prepared on the device."""
        if batch["image"].dtype != jnp.uint8:
            return batch
        if train:
            if step is None:
                raise ValueError("a uint8 training batch needs the step number (its key)")
            image, mask = preprocess.train(
                step, batch["image"], batch["mask"], size, seed=inputs.seed
            )
        else:
            image, mask = preprocess.evaluate(batch["image"], batch["mask"], size)
        return {**batch, "image": image, "mask": mask}

    def loss_value(logits, mask, inputs, where=None):
        extra = {} if where is None else {"where": where}
        labels = _labels(mask, num_classes)
        return loss_fn(logits, labels, **static_params, **inputs.loss, **extra)

    def forward_train(m, x):
        return m(x) if mc_samples is None else mc_forward(m, x, mc_samples)

    def train_step(state, batch, step, inputs, size=None):
        batch = prepared(batch, step, inputs, size, train=True)
        model, optimizer = nnx.merge(train_graphdef, state)

        def objective(m):
            value = loss_value(forward_train(m, batch["image"]), batch["mask"], inputs)
            return value if batch_loss else jnp.mean(value)

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

    def eval_loss_sum(model, image, logits, mask, valid, inputs):
        """Sum over the valid images of the loss (a batch loss: its value times their count)."""
        labels = _labels(mask, num_classes)
        pixels = jnp.broadcast_to(
            jnp.reshape(valid, (-1,) + (1,) * (labels.ndim - 1)), labels.shape
        )
        if mc_samples is not None:
            key = jax.random.key(EVAL_MC_SEED)
            logits = mc_dropout_logits(model, image, num_samples=mc_samples, rngs_or_key=key)
        n_valid = jnp.sum(valid.astype(jnp.int32))
        if batch_loss:
            return loss_value(logits, mask, inputs, where=pixels) * n_valid.astype(jnp.float32)
        if num_classes == 1:  # binary: as it always was, padding rows dropped afterwards
            per_image = loss_value(logits, mask, inputs)
        else:
            per_image = loss_value(logits, mask, inputs, where=pixels)
        return jnp.sum(jnp.where(valid, per_image, 0.0))

    def eval_step(state, batch, totals, inputs, size=None):
        batch = prepared(batch, None, inputs, size, train=False)
        model, _ = nnx.merge(eval_graphdef, state)
        logits = model(batch["image"])
        valid = batch["valid"]
        mask = batch["mask"]
        _check_batch_pixels(logits.shape)
        if num_classes == 1:
            where = jnp.broadcast_to(valid[:, None, None, None], logits.shape[:3] + (1,))
            counts = metrics.confusion_counts(logits, mask, where=where).sum()
            out = {k: _add_count(totals[k], getattr(counts, k)) for k in _BINARY_COUNTS}
        else:
            labels = _labels(mask, num_classes)
            where = jnp.broadcast_to(valid[:, None, None], labels.shape)
            cm = metrics.confusion_matrix(logits, labels, num_classes, where=where)
            out = {"cm": _add_count(totals["cm"], jnp.sum(cm, axis=0))}
        loss_sum = eval_loss_sum(model, batch["image"], logits, mask, valid, inputs)
        return {
            **out,
            "loss": totals["loss"] + loss_sum,
            "images": totals["images"] + jnp.sum(valid.astype(jnp.int32)),
        }

    return PureSteps(train_step, eval_step)


_BINARY_COUNTS = ("tp", "fp", "fn", "tn")


def _check_batch_pixels(shape: tuple[int, ...]) -> None:
    """A batch's own counts are int32: refuse a batch of ``2**31`` pixels or more (static)."""
    if math.prod(shape[:3]) >= 2**31:
        raise ValueError(
            f"an evaluation batch of {shape[0]} images of {shape[1]}x{shape[2]} holds 2**31 "
            "pixels or more, past its int32 counts; use a smaller batch"
        )


def _add_count(total: jax.Array, count: jax.Array) -> jax.Array:
    """``total`` (``uint32 [2, ...]``: ``[hi, lo]``) plus ``count`` (``int32 [...]``, >= 0),
    with the carry of the low word into the high one."""
    c = count.astype(jnp.uint32)
    lo = total[1] + c
    hi = total[0] + (lo < c).astype(jnp.uint32)
    return jnp.stack([hi, lo])


def read_totals(totals: dict[str, Any]) -> dict[str, Any]:
    """:func:`make_steps`' evaluation ``totals`` on the host: counts as Python ints (binary
    ``tp``, ``fp``, ``fn``, ``tn``) or an ``int64 [C, C]`` matrix ``cm``, ``loss`` a float
    (the sum over images) and ``images`` an int.

    >>> t = zero_totals()
    >>> t["tp"] = np.array([1, 5], np.uint32)  # hi, lo
    >>> read_totals(t)["tp"] == 2**32 + 5
    True
    """
    totals = jax.device_get(totals)
    out: dict[str, Any] = {"loss": float(totals["loss"]), "images": int(totals["images"])}
    for k in (*_BINARY_COUNTS, "cm"):
        if k in totals:
            words = np.asarray(totals[k]).astype(np.int64)
            joined = words[0] * _WORD + words[1]
            out[k] = joined if joined.ndim else int(joined)
    return out


def _frozen(value: Any) -> Hashable:
    """``value`` with lists, tuples and dicts made hashable (``TypeError`` if it cannot be)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_frozen(v) for v in value))
    hash(value)  # arrays and other unhashable values: TypeError
    return (type(value).__name__, value)


def _steps_key(*args: Any) -> Hashable | None:
    """The :data:`_STEPS` key of :func:`make_steps`' arguments; None (not kept) if one of
    them is not hashable. Values keep their type (``1`` and ``1.0`` are different keys)."""
    try:
        key = _frozen(list(args))
        hash(key)
    except TypeError:
        return None
    return key


def zero_totals(num_classes: int = 1) -> dict[str, jax.Array]:
    """Empty accumulator for :func:`make_steps`' ``evaluate``: binary counts
    (``num_classes = 1``) or a ``[C, C]`` confusion matrix ``cm``, each count two ``uint32``
    words ``[hi, lo]`` (``[2]`` or ``[2, C, C]``; :func:`read_totals` joins them), the loss
    sum (``float32``) and the number of images (``int32``)."""
    z = jnp.zeros((), jnp.int32)
    loss = jnp.zeros((), jnp.float32)
    if num_classes == 1:
        count = jnp.zeros((2,), jnp.uint32)
        return {"tp": count, "fp": count, "fn": count, "tn": count, "loss": loss, "images": z}
    cm = jnp.zeros((2, num_classes, num_classes), jnp.uint32)
    return {"cm": cm, "loss": loss, "images": z}
