"""Step-for-step parity of a dibe_jax U-Net training with the same training in PyTorch.

The JAX side is the library's own training step: a :class:`dibe_jax.train.Config` (fields set
directly), :func:`dibe_jax.train.make_state` (model, ``optax.sgd`` with momentum, BatchNorm
statistics) and :func:`dibe_jax.train.make_steps` (one jitted step, the loss of
:func:`dibe_jax.losses.get`). The PyTorch side is ``benchmarks.models.torch_unet`` (same
architecture, module names mirroring the JAX tree), ``torch.optim.SGD(lr, momentum)`` and the
loss of ``benchmarks.torch_losses``. Both start from the same weights (JAX's, copied) and see
the same batches, float32, without augmentation.

Parameter mapping (JAX path ``a/b/.../leaf`` ↔ PyTorch ``state_dict`` key ``a.b....leaf'``):

==========================================  ==========================  =========================
JAX (NHWC model)                            PyTorch (NCHW model)        layout
==========================================  ==========================  =========================
``.../conv/kernel`` ``[kh, kw, in, out]``   ``.../conv.weight``         ``w.transpose(3, 2, 0, 1)``
                                            ``[out, in, kh, kw]``       (OIHW)
``head/kernel``, ``head/bias``              ``head.weight``, ``.bias``  as above; bias ``[C]``
``ups/j/kernel`` ``[k, k, in, out]``        ``ups.j.weight``            spatially flipped, then
(transposed U-Net only)                     ``[in, out, k, k]``         ``transpose(2, 3, 0, 1)``
``.../bn/scale``, ``.../bn/bias``           ``.../bn.weight``, ``.bias``  ``[C]``
``.../bn/mean``, ``.../bn/var``             ``running_mean``,           ``[C]``
(``nnx.BatchStat``)                         ``running_var``
==========================================  ==========================  =========================

where ``...`` is ``backbone/units/i/conv{1,2}`` (encoder unit ``i``) or
``decoder/j/conv{1,2}`` (decoder unit ``j``, deepest first). ``num_batches_tracked`` has no JAX
counterpart (unused with a fixed momentum).

Conventions that agree: convolution padding ``1`` per side (3x3), 2x2 max pooling, bilinear x2
upsampling with ``align_corners=True``, ``concat([skip, up])``, BatchNorm ``eps = 1e-5`` and
``running = 0.9·running + 0.1·batch`` (flax ``momentum=0.9`` = torch ``momentum=0.1``), batch
statistics normalised with the biased variance, SGD ``m = g + μ·m``, ``w -= lr·m`` (optax's
trace = torch's ``dampening=0, nesterov=False``), the loss as the batch mean of per-image
losses. The one that differs: torch's ``running_var`` averages the *unbiased* batch variance
(``n / (n - 1)`` times flax's, ``n = B·H·W`` of that layer). It does not touch training (batch
statistics are used there), only evaluation; the PyTorch reference is run twice, with
``nn.BatchNorm2d`` and with ``bn_running_var="biased"`` (flax's convention), and the report
gives both.

Reported (:func:`run_parity`): per step, the loss of both, their relative difference and the
float32 "floor" (the largest difference of the PyTorch reference from itself started one ulp
away); after the last step, ``‖a - b‖∞ / ‖b‖∞`` of all parameters together (and its floor),
the worst single tensor's ``max|a - b| / max|b|``, the same for the BatchNorm running
statistics and for the eval-mode logits on a held-out batch; and, on the first batch, each
block's forward output and each parameter's gradient (:func:`compare_blocks`). Targets: losses
within 1e-4 at every step, parameters within 1e-3 after 20 steps.

``--init-study`` instead trains U-Net (width 16, batch 32, SGD 0.01/0.9, DIBE, augmentation)
on CFD 160x160 tiles with both initialisations (:func:`dibe_jax.models.blocks.conv_initializers`)
through :func:`dibe_jax.train.train_and_evaluate`, and ``--torch-cfd`` the same setting with
the PyTorch U-Net on the batches of :func:`dibe_jax.data.make_loader`.

Commands (PyTorch: ``pip install torch==2.13.0``, a benchmark-only dependency)::

    python experiments/parity_torch.py                       # 5 min on 2 shared CPU cores
    python -m experiments.parity_torch --width 4 --size 32 --batch 4 --num-stages 3 \\
        --kernel-init torch_default --no-blocks               # 2 min
    python -m experiments.parity_torch --init-study --seeds 0 --epochs 4 --eval-every 2
    python -m experiments.parity_torch --torch-cfd --seeds 0 --epochs 4 --eval-every 2

Expected result (``EXPERIMENTS.md``, "Parity with PyTorch"): block outputs within ~5e-6 and the
first step's loss within ~1e-7; then JAX and PyTorch drift apart exactly as much as PyTorch
drifts from itself when its initial weights move by one ulp (the "floor" columns). In the
small setting BCE stays within 2e-5 per step and 2.3e-4 in the parameters after 20 steps (the
targets 1e-4 / 1e-3); DIBE's per-pixel case split (Eq. 18) makes both it and the floor jump
when a logit rounds to the other side of 0. At width 16, 64², batch 8 the training amplifies
float32 rounding to 1e-2 within 4 steps in both frameworks. Against ``nn.BatchNorm2d`` the
running variances differ by the predicted ``n / (n - 1)`` factor.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dibe_jax import losses, train

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("dibe", "bce")
BN_MOMENTUM = 0.9  # flax convention: running = 0.9 * running + 0.1 * batch


# ------------------------------------------------------------------------------ configuration


def make_config(
    *,
    loss: str = "dibe",
    width: int = 16,
    num_stages: int = 4,
    kernel_init: str = "he_normal_fan_out",
    upsampling: str = "bilinear",
    lr: float = 0.01,
    momentum: float = 0.9,
    seed: int = 0,
) -> train.Config:
    """The :class:`~dibe_jax.train.Config` of a parity run (fields set directly)."""
    config = train.Config()
    config.model.name = "unet"
    config.model.options["width"] = width
    config.model.options["num_stages"] = num_stages
    config.model.options["kernel_init"] = kernel_init
    config.model.options["upsampling"] = upsampling
    config.loss.name = loss
    config.optim.lr = lr
    config.optim.momentum = momentum
    config.seed = seed
    config.dtype = "float32"
    return config


def make_batches(
    n: int, *, batch: int = 8, size: int = 64, ratio: float = 25.0, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``n`` batches of synthetic cracks (:func:`dibe_jax.datasets.generate_example`), no
    augmentation: ``image`` float32 ``[batch, size, size, 3]`` in ``[0, 1]`` (``uint8 / 255``,
    as the input pipeline), ``mask`` uint8 ``[batch, size, size, 1]``."""
    from dibe_jax.data import augment
    from dibe_jax.datasets import generate_example

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pairs = [generate_example(rng, size, ratio, empty_fraction=0.0) for _ in range(batch)]
        image = np.stack([augment.to_float(im) for im, _ in pairs]).astype(np.float32)
        mask = np.stack([m for _, m in pairs]).astype(np.uint8)
        out.append({"image": image, "mask": mask})
    return out


# ------------------------------------------------------------------------- parameter mapping

_LEAF = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}


def torch_key(path: Sequence[Any]) -> str:
    """PyTorch ``state_dict`` key of the JAX variable at ``path``.

    >>> torch_key(("backbone", "units", 0, "conv1", "bn", "var"))
    'backbone.units.0.conv1.bn.running_var'
    >>> torch_key(("head", "kernel"))
    'head.weight'
    """
    *modules, leaf = (str(p) for p in path)
    if leaf not in _LEAF:
        raise KeyError(f"no PyTorch counterpart for {'/'.join(map(str, path))}")
    return ".".join([*modules, _LEAF[leaf]])


def to_torch_layout(path: Sequence[Any], value: np.ndarray) -> np.ndarray:
    """A JAX array at ``path`` in PyTorch's layout (see the module docstring's table)."""
    value = np.asarray(value)
    if str(path[-1]) != "kernel":
        return value
    if str(path[0]) == "ups":  # ConvTranspose: [k, k, in, out] unflipped -> [in, out, k, k]
        return np.ascontiguousarray(value[::-1, ::-1].transpose(2, 3, 0, 1))
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))


def to_jax_layout(path: Sequence[Any], value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_torch_layout`."""
    value = np.asarray(value)
    if str(path[-1]) != "kernel":
        return value
    if str(path[0]) == "ups":
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1)[::-1, ::-1])
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0))


def jax_variables(model: nnx.Module) -> dict[tuple, np.ndarray]:
    """``{path: float32 copy}`` of the parameters and BatchNorm statistics of ``model``."""
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    return {
        tuple(path): np.array(v.get_value(), dtype=np.float32, copy=True)
        for path, v in nnx.to_flat_state(state)
    }


def is_batch_stat(path: Sequence[Any]) -> bool:
    return str(path[-1]) in ("mean", "var")


def copy_to_torch(model: nnx.Module, torch_model) -> list[tuple[str, str, tuple[int, ...]]]:
    """Load the parameters and BatchNorm statistics of JAX ``model`` into ``torch_model``.

    Every PyTorch tensor except ``num_batches_tracked`` must be matched by exactly one JAX
    variable of the same shape (after the layout change), else ``ValueError``.

    Returns:
      The mapping used: ``(jax path, torch key, torch shape)`` per tensor.
    """
    import torch

    sd = torch_model.state_dict()
    mapping, seen = [], set()
    for path, value in jax_variables(model).items():
        key = torch_key(path)
        if key not in sd:
            raise ValueError(f"{'/'.join(map(str, path))} -> {key}: no such PyTorch tensor")
        converted = to_torch_layout(path, value)
        if tuple(sd[key].shape) != converted.shape:
            raise ValueError(
                f"{key}: PyTorch shape {tuple(sd[key].shape)}, JAX gives {converted.shape}"
            )
        sd[key] = torch.from_numpy(converted.copy())
        seen.add(key)
        mapping.append(("/".join(map(str, path)), key, converted.shape))
    missing = [k for k in sd if k not in seen and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"PyTorch tensors without a JAX counterpart: {missing}")
    torch_model.load_state_dict(sd)
    return mapping


def torch_variables(torch_model, paths: Sequence[tuple]) -> dict[tuple, np.ndarray]:
    """The PyTorch tensors of ``paths`` (JAX paths), in JAX layout."""
    sd = torch_model.state_dict()
    return {
        p: to_jax_layout(p, sd[torch_key(p)].detach().cpu().numpy().astype(np.float32))
        for p in paths
    }


# ------------------------------------------------------------------------------- comparisons


def rel_diff(a: Any, b: Any) -> float:
    """``max|a - b| / max|b|`` (``max|a - b|`` when ``b`` is all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    err = float(np.max(np.abs(a - b))) if b.size else 0.0
    return err / scale if scale > 0 else err


def worst(diffs: dict[Any, float]) -> tuple[float, str]:
    """Largest value of ``diffs`` and its key (as a ``/``-joined path)."""
    if not diffs:
        return 0.0, ""
    key = max(diffs, key=diffs.get)
    name = "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
    return diffs[key], name


def _to_torch(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def _to_nhwc(t) -> np.ndarray:
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


def torch_loss_fn(name: str) -> Callable:
    """The PyTorch port (``benchmarks.torch_losses``) of :func:`dibe_jax.losses.get` ``(name)``:
    ``(logits [B, 1, H, W], labels [B, 1, H, W]) -> [B]`` with the paper's defaults."""
    from benchmarks import torch_losses

    return torch_losses.LOSSES[name]


def check_torch_loss(
    name: str, *, batch: int = 4, size: int = 32, seed: int = 0
) -> dict[str, float]:
    """Relative difference of the PyTorch port of loss ``name`` and :mod:`dibe_jax.losses` on
    random float32 logits (``N(0, 3²)``, a few at ±20) and masks (about 5 % defect, one empty
    image): ``{"value": ..., "grad": ...}`` (gradient with respect to the logits of the
    batch-mean loss)."""

    rng = np.random.default_rng(seed)
    z = (3 * rng.standard_normal((batch, size, size, 1))).astype(np.float32)
    z.reshape(-1)[::97] = 20.0
    z.reshape(-1)[1::101] = -20.0
    y = (rng.random((batch, size, size, 1)) < 0.05).astype(np.float32)
    y[-1] = 0.0
    jax_fn = losses.get(name)
    value_j = np.asarray(jax_fn(jnp.asarray(z), jnp.asarray(y)))
    grad_j = np.asarray(jax.grad(lambda t: jnp.mean(jax_fn(t, jnp.asarray(y))))(jnp.asarray(z)))
    zt = _to_torch(z).requires_grad_(True)
    value_t = torch_loss_fn(name)(zt, _to_torch(y))
    value_t.mean().backward()
    return {
        "value": rel_diff(value_j, value_t.detach().numpy()),
        "grad": rel_diff(grad_j, _to_nhwc(zt.grad)),
    }


def check_init_statistics(
    width: int = 16, num_stages: int = 4, seed: int = 0, *, compare_he: bool = True
) -> dict[str, float]:
    """How PyTorch's own default initialisation compares with ``kernel_init="torch_default"``.

    Returns the largest, over convolution kernels and biases of at least 64 values, of
    ``|std_jax / std_torch - 1|`` (``"std"``) and ``|max|w|_jax / max|w|_torch - 1|``
    (``"bound"``); with ``compare_he``, also ``"he_over_torch"``: the median over kernels of
    ``std`` of the default ``he_normal_fan_out`` over PyTorch's.
    """
    import torch

    from benchmarks.models import torch_unet
    from dibe_jax import models

    torch.manual_seed(seed)
    sd = torch_unet(width, num_stages=num_stages).state_dict()
    inits = ("torch_default", "he_normal_fan_out") if compare_he else ("torch_default",)
    built = {
        k: jax_variables(
            models.create(
                "unet",
                in_channels=3,
                width=width,
                num_stages=num_stages,
                kernel_init=k,
                rngs=nnx.Rngs(seed),
            )
        )
        for k in inits
    }
    out = {"std": 0.0, "bound": 0.0}
    ratios = []
    for path, value in built["torch_default"].items():
        is_conv_bias = str(path[-1]) == "bias" and "bn" not in map(str, path)
        if not (str(path[-1]) == "kernel" or is_conv_bias) or value.size < 64:
            continue
        ref = sd[torch_key(path)].numpy()
        out["std"] = max(out["std"], abs(float(value.std() / ref.std()) - 1))
        out["bound"] = max(out["bound"], abs(float(np.abs(value).max() / np.abs(ref).max()) - 1))
        if compare_he and str(path[-1]) == "kernel":
            ratios.append(float(built["he_normal_fan_out"][path].std() / ref.std()))
    if compare_he:
        out["he_over_torch"] = float(np.median(ratios))
    return out


# ------------------------------------------------------------------------------ the two runs


def _jax_setup(config: train.Config):
    train_gd, eval_gd, state = train.make_state(config, in_channels=3)
    mesh = train.make_mesh()
    steps = train.make_steps(
        train_gd, eval_gd, losses.get(config.loss.name), config.loss.params, mesh
    )
    state = jax.device_put(state, steps.replicated)
    return train_gd, eval_gd, state, steps, mesh


def _model_of(graphdef, state) -> nnx.Module:
    model, _ = nnx.merge(graphdef, state)
    return model


def train_torch(
    torch_model, batches: Sequence[dict], loss: str, *, lr: float = 0.01, momentum: float = 0.9
) -> list[float]:
    """SGD with momentum on ``batches`` (``torch.optim.SGD``, dampening 0, no Nesterov); the
    loss of each step, computed before its update, as :func:`dibe_jax.train.make_steps`."""
    import torch

    loss_fn = torch_loss_fn(loss)
    opt = torch.optim.SGD(torch_model.parameters(), lr=lr, momentum=momentum)
    torch_model.train()
    out = []
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        value = loss_fn(torch_model(_to_torch(batch["image"])), _to_torch(batch["mask"])).mean()
        value.backward()
        opt.step()
        out.append(float(value.detach()))
    return out


def jax_block_outputs(model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
    """The output of every block of U-Net ``model`` on ``x [B, H, W, C]``: encoder units
    ``backbone/units/i``, decoder units ``decoder/j`` (deepest first) and ``head``; the same
    sequence of calls as :meth:`dibe_jax.models.UNet.__call__` (no attention gates)."""
    from dibe_jax.models import ops

    outs: dict[str, jax.Array] = {}
    feats = model.backbone(x)
    for i, f in enumerate(feats):
        outs[f"backbone/units/{i}"] = f
    y = feats[-1]
    for j, i in enumerate(reversed(range(len(feats) - 1))):
        skip = feats[i]
        if model.ups[j] is not None:
            y = model.ups[j](y)
        else:
            y = ops.resize_bilinear(y, skip.shape[1:3], align_corners=model.align_corners)
        y = model.decoder[j](jnp.concatenate([skip, y.astype(skip.dtype)], axis=-1))
        outs[f"decoder/{j}"] = y
    outs["head"] = model.head(y)
    return outs


def compare_blocks(
    model: nnx.Module, torch_model, batch: dict[str, np.ndarray], loss: str
) -> dict[str, dict[str, float]]:
    """Layer-by-layer comparison of a JAX U-Net and its PyTorch copy on one batch (train mode,
    on copies: neither model is changed).

    Returns ``{"forward": {block: rel diff}, "grad": {jax path: rel diff}}``: the output of
    every block (:func:`jax_block_outputs`) against PyTorch forward hooks, and the gradient of
    every parameter for the batch-mean loss (``nnx.grad`` against ``backward()``).
    """
    import torch  # noqa: F401  (the reference must be importable)

    x = jnp.asarray(batch["image"])
    mask = jnp.asarray(batch["mask"])
    fn = losses.get(loss)
    model = nnx.clone(model)
    model.train()
    outs = nnx.jit(jax_block_outputs)(nnx.clone(model), x)
    grads = nnx.jit(nnx.grad(lambda m, x, y: jnp.mean(fn(m(x), y))))(model, x, mask)

    tm = copy.deepcopy(torch_model).train()
    captured: dict[str, Any] = {}
    hooks = []
    for name in outs:
        module = tm.get_submodule(name.replace("/", "."))
        hooks.append(
            module.register_forward_hook(
                lambda _m, _i, o, name=name: captured.__setitem__(name, o.detach())
            )
        )
    logits_t = tm(_to_torch(batch["image"]))
    for h in hooks:
        h.remove()
    forward = {k: rel_diff(v, _to_nhwc(captured[k])) for k, v in outs.items()}
    tm.zero_grad(set_to_none=True)
    torch_loss_fn(loss)(logits_t, _to_torch(batch["mask"])).mean().backward()
    params = dict(tm.named_parameters())
    grad = {}
    for path, g in nnx.to_flat_state(grads):
        t = params[torch_key(path)].grad.numpy()
        grad["/".join(map(str, path))] = rel_diff(np.asarray(g.get_value()), to_jax_layout(path, t))
    return {"forward": forward, "grad": grad}


def corrected_running_var(
    path: Sequence[Any],
    flax_var: np.ndarray,
    *,
    steps: int,
    batch: int,
    size: int,
    num_stages: int,
) -> np.ndarray:
    """What ``nn.BatchNorm2d`` holds after ``steps`` updates, given flax's running variance.

    With ``m = 0.9``, both start at 1 and ``r_k = m r_{k-1} + (1 - m) c v_k`` with ``c = 1``
    (flax) or ``c = n / (n - 1)`` (torch, ``n = batch · h · w`` values per channel of that
    layer), so ``r_torch - m^k = n / (n - 1) · (r_flax - m^k)``. ``h = size / 2^level`` with
    ``level = i`` for encoder unit ``i`` and ``num_stages - 1 - j`` for decoder unit ``j``.
    """
    names = [str(p) for p in path]
    level = int(names[2]) if names[0] == "backbone" else num_stages - 1 - int(names[1])
    side = size // 2**level
    n = batch * side * side
    decay = BN_MOMENTUM**steps
    return decay + n / (n - 1) * (np.asarray(flax_var, np.float64) - decay)


def global_rel_diff(a: dict[Any, np.ndarray], b: dict[Any, np.ndarray]) -> float:
    """``max|a - b| / max|b|`` over all tensors together (the whole vector's relative
    difference in the infinity norm); small tensors cannot dominate it."""
    err = max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in b)
    scale = max(float(np.max(np.abs(b[k]))) for k in b)
    return err / scale if scale > 0 else err


def perturbed_copy(torch_model, seed: int = 0):
    """A deep copy of ``torch_model`` with every float32 parameter moved by one ulp in a random
    direction (``np.nextafter``): a reference whose only difference is float32 rounding."""
    import torch

    rng = np.random.default_rng(seed)
    tm = copy.deepcopy(torch_model)
    with torch.no_grad():
        for param in tm.parameters():
            w = param.numpy()
            direction = np.where(rng.random(w.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
            param.copy_(torch.from_numpy(np.nextafter(w, direction)))
    return tm


def run_parity(
    *,
    loss: str = "dibe",
    width: int = 16,
    size: int = 64,
    batch: int = 8,
    steps: int = 20,
    num_stages: int = 4,
    kernel_init: str = "he_normal_fan_out",
    upsampling: str = "bilinear",
    seed: int = 0,
    blocks: bool = True,
    floor_runs: int = 3,
) -> dict[str, Any]:
    """Train the same U-Net for ``steps`` SGD steps in JAX (the library's step) and PyTorch.

    PyTorch copies of the JAX model train on the same batches: ``"biased"`` (the reference:
    ``bn_running_var="biased"``, flax's convention), ``"unbiased"`` (``nn.BatchNorm2d``) and
    ``floor_runs`` copies of the reference with every parameter moved by one ulp in random
    directions (:func:`perturbed_copy`): the float32 noise floor of the comparison (the
    largest difference any of them reaches from the reference).

    Returns a JSON-able report:

    * ``losses``: ``[steps]`` pairs ``(jax, torch)``; ``loss_rel``: their relative differences;
      ``loss_rel_floor``: per step, the largest of the same between the reference and the
      perturbed copies.
    * ``params``: ``‖a - b‖∞ / ‖b‖∞`` over all parameters together after the last step;
      ``params_floor``: the largest of the same for the perturbed copies;
      ``params_per_tensor``: ``(largest per-tensor max|a - b| / max|b|, tensor)``, which a
      near-zero tensor (a BatchNorm offset of 1e-4) can dominate.
    * ``bn_mean``, ``bn_var``, ``logits``: ``(largest per-tensor relative difference, tensor)``
      of the running statistics and of the eval-mode logits on a held-out batch, against the
      reference; ``bn_var_torch_default`` and ``logits_torch_default``: against
      ``nn.BatchNorm2d``; ``bn_var_corrected``: flax's running variance put through
      :func:`corrected_running_var`, against ``nn.BatchNorm2d``; ``logits_floor``: the
      largest for the eval logits of the perturbed copies against the reference.
    * ``same_training``: both non-perturbed PyTorch copies trained identically (losses and
      parameters bit for bit); ``mapping``: number of tensors copied; ``settings``.
    * with ``blocks``: ``forward`` and ``grad`` of :func:`compare_blocks` on the first batch.
    """
    from benchmarks.models import torch_unet

    config = make_config(
        loss=loss,
        width=width,
        num_stages=num_stages,
        kernel_init=kernel_init,
        upsampling=upsampling,
        seed=seed,
    )
    data = make_batches(steps + 1, batch=batch, size=size, seed=seed)
    train_batches, held_out = data[:steps], data[steps]
    train_gd, eval_gd, state, jsteps, mesh = _jax_setup(config)
    model0 = _model_of(train_gd, state)

    arch = dict(num_stages=num_stages, upsampling=upsampling)
    torch_models = {}
    for bn in ("biased", "unbiased"):
        tm = torch_unet(width, **arch, bn_running_var=bn)
        mapping = copy_to_torch(model0, tm)
        torch_models[bn] = tm
    floors = [f"perturbed{k}" for k in range(floor_runs)]
    for k, name in enumerate(floors):
        torch_models[name] = perturbed_copy(torch_models["biased"], seed + k)
    report: dict[str, Any] = {
        "settings": dict(
            loss=loss,
            width=width,
            size=size,
            batch=batch,
            steps=steps,
            num_stages=num_stages,
            kernel_init=kernel_init,
            upsampling=upsampling,
            seed=seed,
        ),
        "mapping": len(mapping),
    }
    if blocks:
        report.update(compare_blocks(model0, torch_models["biased"], train_batches[0], loss))
    del model0

    losses_j = []
    t0 = time.perf_counter()
    for b in train_batches:
        state, stats = jsteps.train(state, train.shard_batch(b, mesh))
        if int(stats["nonfinite"]):
            raise FloatingPointError(f"JAX step {len(losses_j)} was not finite")
        losses_j.append(float(stats["loss"]))
    report["jax_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    losses_t = {name: train_torch(tm, train_batches, loss) for name, tm in torch_models.items()}
    report["torch_seconds"] = round((time.perf_counter() - t0) / len(torch_models), 2)
    report["losses"] = list(zip(losses_j, losses_t["biased"], strict=True))
    report["loss_rel"] = [abs(a - b) / abs(b) for a, b in report["losses"]]
    ref_losses = np.asarray(losses_t["biased"])
    report["loss_rel_floor"] = [
        float(v)
        for v in np.max(
            [np.abs(np.asarray(losses_t[n]) - ref_losses) / np.abs(ref_losses) for n in floors]
            or [np.zeros_like(ref_losses)],
            axis=0,
        )
    ]

    model = _model_of(train_gd, state)
    ours = jax_variables(model)
    theirs = {name: torch_variables(tm, list(ours)) for name, tm in torch_models.items()}
    params = [p for p in ours if not is_batch_stat(p)]
    report["same_training"] = losses_t["biased"] == losses_t["unbiased"] and all(
        np.array_equal(theirs["biased"][p], theirs["unbiased"][p]) for p in params
    )
    ref = {p: theirs["biased"][p] for p in params}
    report["params"] = global_rel_diff({p: ours[p] for p in params}, ref)
    report["params_floor"] = max(
        [global_rel_diff({p: theirs[n][p] for p in params}, ref) for n in floors], default=0.0
    )
    diffs = {p: rel_diff(v, theirs["biased"][p]) for p, v in ours.items()}
    report["params_per_tensor"] = worst({p: diffs[p] for p in params})
    report["bn_mean"] = worst({p: d for p, d in diffs.items() if str(p[-1]) == "mean"})
    report["bn_var"] = worst({p: d for p, d in diffs.items() if str(p[-1]) == "var"})
    variances = [p for p in ours if str(p[-1]) == "var"]
    report["bn_var_torch_default"] = worst(
        {p: rel_diff(ours[p], theirs["unbiased"][p]) for p in variances}
    )
    report["bn_var_corrected"] = worst(
        {
            p: rel_diff(
                corrected_running_var(
                    p, ours[p], steps=steps, batch=batch, size=size, num_stages=num_stages
                ),
                theirs["unbiased"][p],
            )
            for p in variances
        }
    )

    eval_model = _model_of(eval_gd, state)
    logits_j = np.asarray(nnx.jit(lambda m, x: m(x))(eval_model, jnp.asarray(held_out["image"])))
    import torch

    with torch.no_grad():
        logits_t = {
            name: _to_nhwc(tm.eval()(_to_torch(held_out["image"])))
            for name, tm in torch_models.items()
        }
    report["logits"] = (rel_diff(logits_j, logits_t["biased"]), "eval logits")
    report["logits_torch_default"] = (rel_diff(logits_j, logits_t["unbiased"]), "eval logits")
    report["logits_floor"] = max(
        [rel_diff(logits_t[n], logits_t["biased"]) for n in floors], default=0.0
    )
    return report


# ----------------------------------------------------------------------------------- reports


def format_report(report: dict[str, Any]) -> str:
    """Markdown: the per-step loss table and the after-training differences."""
    s = report["settings"]
    lines = [
        f"### {s['loss']}: U-Net width {s['width']}, {s['num_stages']} stages, {s['size']}² "
        f"images, batch {s['batch']}, {s['steps']} steps, init {s['kernel_init']}, "
        f"{s['upsampling']}",
        "",
        f"{report['mapping']} tensors mapped; JAX {report['jax_seconds']} s (compilation "
        f"included), PyTorch {report['torch_seconds']} s for the steps. Floor: the largest "
        "difference of the PyTorch reference from itself with every initial weight moved by "
        "one ulp (three random directions).",
        "",
        "| step | loss JAX | loss PyTorch | relative difference | floor |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows = zip(report["losses"], report["loss_rel"], report["loss_rel_floor"], strict=True)
    for k, ((a, b), r, f) in enumerate(rows):
        lines.append(f"| {k + 1} | {a:.7f} | {b:.7f} | {r:.1e} | {f:.1e} |")
    lines += [
        "",
        "| after the last step | largest relative difference | worst tensor |",
        "|---|---:|---|",
        f"| parameters, ‖a − b‖∞ / ‖b‖∞ over all | {report['params']:.1e} | |",
        f"| … floor (PyTorch vs PyTorch one ulp off) | {report['params_floor']:.1e} | |",
    ]
    rows = [
        ("parameters, worst single tensor", "params_per_tensor"),
        ("BatchNorm running mean", "bn_mean"),
        ("BatchNorm running var (flax convention)", "bn_var"),
        ("eval-mode logits (flax convention)", "logits"),
        ("BatchNorm running var vs `nn.BatchNorm2d`", "bn_var_torch_default"),
        ("… with the n/(n-1) correction", "bn_var_corrected"),
        ("eval-mode logits vs `nn.BatchNorm2d`", "logits_torch_default"),
    ]
    for label, key in rows:
        value, where = report[key]
        lines.append(f"| {label} | {value:.1e} | `{where}` |")
        if key == "logits":
            lines.append(f"| … floor | {report['logits_floor']:.1e} | |")
    lines.append(f"\nBoth PyTorch references trained identically: {report['same_training']}.")
    if "forward" in report:
        fw, fw_where = worst(report["forward"])
        gr, gr_where = worst(report["grad"])
        lines.append(
            f"First batch, train mode: largest block-output difference {fw:.1e} (`{fw_where}`), "
            f"largest gradient difference {gr:.1e} (`{gr_where}`)."
        )
    return "\n".join(lines)


def passes(report: dict[str, Any], *, loss_tol: float = 1e-4, param_tol: float = 1e-3) -> bool:
    """The targets: every step's loss within ``loss_tol``, parameters (all together) within
    ``param_tol``."""
    return max(report["loss_rel"]) <= loss_tol and report["params"] <= param_tol


# ------------------------------------------------------------------------------ CFD studies


CFD_LOSSES = ("dibe", "focal_tversky")


def _cfd_run_name(loss: str, stem: str) -> str:
    # DIBE runs keep their first names, so studies written before the loss option read back
    return stem if loss == "dibe" else f"{loss}_{stem}"


def cfd_config(
    *,
    kernel_init: str,
    seed: int,
    loss: str = "dibe",
    epochs: int,
    eval_every: int,
    tfds_dir: str | None = None,
    manual_dir: str | None = None,
) -> train.Config:
    """U-Net width 16 on CFD 160x160 tiles, batch 32, SGD 0.01/0.9, ``loss`` (DIBE or FT with
    the paper's hyperparameters), augmentation on."""
    from experiments import common

    config = train.Config()
    config.model.name = "unet"
    config.model.options["width"] = 16
    config.model.options["kernel_init"] = kernel_init
    config.loss.name = loss
    config.data.dataset = "crackforest/label2"
    config.data.data_dir = tfds_dir or os.fspath(common.tfds_dir())
    config.data.manual_dir = manual_dir or os.fspath(common.data_root() / "crackforest")
    config.data.image_size = 160
    config.batch_size = 32
    config.epochs = epochs
    config.eval_every = eval_every
    config.seed = seed
    config.progress = False
    return config


def _read_metrics(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def init_study(
    *,
    seeds: Sequence[int],
    epochs: int,
    eval_every: int,
    out: Path,
    inits: Sequence[str] = ("he_normal_fan_out", "torch_default"),
    loss: str = "dibe",
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Train :func:`cfd_config` for each init and seed (seeds outer, so a cut-short study
    still has both inits of the first seed); ``{init: {seed: evaluation records}}``. A
    finished run (its ``metrics.jsonl`` reaches ``epochs``) is read back, not retrained."""
    results: dict[str, dict[int, list[dict[str, Any]]]] = {k: {} for k in inits}
    for seed in seeds:
        for init in inits:
            workdir = out / _cfd_run_name(loss, f"{init}_seed{seed}")
            records = _read_metrics(workdir)
            if not records or records[-1]["epoch"] < epochs:
                config = cfd_config(
                    kernel_init=init, seed=seed, loss=loss, epochs=epochs, eval_every=eval_every
                )
                t0 = time.perf_counter()
                train.train_and_evaluate(config, workdir, overwrite=True)
                records = _read_metrics(workdir)
                print(f"{loss} {init} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            results[init][seed] = records
    return results


def torch_cfd(
    *,
    seed: int,
    epochs: int,
    eval_every: int,
    out: Path,
    kernel_init: str = "torch_default",
    loss: str = "dibe",
) -> list[dict[str, Any]]:
    """The :func:`cfd_config` training with the PyTorch U-Net: initial weights copied from the
    JAX model of the same seed and ``kernel_init``, the batches of
    :func:`dibe_jax.data.make_loader` with the training loop's seeds and augmentation (so the
    same images in the same order), ``torch.optim.SGD``, ``benchmarks.torch_losses.dibe``,
    evaluation with :mod:`dibe_jax.metrics` on the whole validation split. Records go to
    ``<out>/metrics.jsonl``, one per evaluation, with the keys of the JAX loop's; a finished
    run is read back, not retrained."""
    import torch

    from benchmarks.models import torch_unet
    from dibe_jax import datasets, metrics
    from dibe_jax.data import augment, pipeline

    records = _read_metrics(out)
    if records and records[-1]["epoch"] >= epochs:
        return records
    config = cfd_config(
        kernel_init=kernel_init, seed=seed, loss=loss, epochs=epochs, eval_every=eval_every
    )
    builder = datasets.prepare(
        config.data.dataset, data_dir=config.data.data_dir, manual_dir=config.data.manual_dir
    )
    source = builder.as_data_source()
    train_src, eval_src = source[config.data.train_split], source[config.data.eval_split]
    train_gd, _, state = train.make_state(config, in_channels=3)
    tm = torch_unet(16)
    copy_to_torch(_model_of(train_gd, state), tm)
    del state
    loss_fn = torch_loss_fn(loss)
    opt = torch.optim.SGD(tm.parameters(), lr=config.optim.lr, momentum=config.optim.momentum)
    kwargs = dict(
        batch_size=config.batch_size,
        image_size=config.data.image_size,
        seed=config.seed,
        augment=augment.AugmentConfig(),
    )
    out.mkdir(parents=True, exist_ok=True)
    log = out / "metrics.jsonl"
    log.write_text("")
    t0, step, records = time.perf_counter(), 0, []
    for epoch in range(epochs):
        tm.train()
        total, count = 0.0, 0
        for b in pipeline.make_loader(train_src, train=True, epoch=epoch, **kwargs):
            opt.zero_grad(set_to_none=True)
            value = loss_fn(tm(_to_torch(b["image"])), _to_torch(b["mask"])).mean()
            value.backward()
            opt.step()
            total, count, step = total + float(value.detach()), count + 1, step + 1
        if (epoch + 1) % eval_every and epoch + 1 != epochs:
            continue
        tm.eval()
        counts = metrics.Confusion(0, 0, 0, 0)
        with torch.no_grad():
            for b in pipeline.make_loader(eval_src, train=False, epoch=epoch, **kwargs):
                logits = _to_nhwc(tm(_to_torch(b["image"])))
                c = metrics.confusion_counts(jnp.asarray(logits), jnp.asarray(b["mask"])).sum()
                counts = metrics.Confusion(
                    *(int(a) + int(v) for a, v in zip(counts, c, strict=True))
                )
        record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": total / max(count, 1),
            **metrics.summarize(counts),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        record = {
            k: (float(v) if isinstance(v, np.floating | jax.Array) else v)
            for k, v in record.items()
        }
        records.append(record)
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"torch epoch {epoch + 1}: iou {record['iou']:.4f}", flush=True)
    return records


def study_markdown(results: dict[str, dict[int, list[dict[str, Any]]]]) -> str:
    """One row per (init, seed): IoU at each evaluation, the last one's precision and OII,
    and the wall time of the run."""
    epochs = sorted({r["epoch"] for runs in results.values() for rs in runs.values() for r in rs})
    head = "| init | seed | " + " | ".join(f"IoU e{e}" for e in epochs)
    lines = [
        head + " | PA (last) | OII (last) | wall s |",
        "|---|---:|" + "---:|" * (len(epochs) + 3),
    ]
    for init, runs in results.items():
        for seed, rs in sorted(runs.items()):
            if not rs:
                continue
            by_epoch = {r["epoch"]: r for r in rs}
            cells = [f"{by_epoch[e]['iou']:.4f}" if e in by_epoch else "–" for e in epochs]
            last = rs[-1]
            lines.append(
                f"| {init} | {seed} | "
                + " | ".join(cells)
                + f" | {last.get('precision', last.get('pa', float('nan'))):.4f} | "
                f"{last['oii']:+.3f} | {last.get('seconds', float('nan')):.0f} |"
            )
    return "\n".join(lines)


def cfd_summary(out: Path) -> str:
    """Every finished CFD run under ``out`` (``init_study/`` and ``torch_cfd/``), grouped by
    (loss, framework, init): per seed the IoU of every evaluation, and over seeds the reported
    statistic (the last :data:`~dibe_jax.train.runs.LAST_N` evaluations of every seed, pooled:
    here all of them when a run has fewer) of IoU and OII, and the final IoU. A run that has not
    reached its group's last epoch (still training) is left out."""
    from dibe_jax.train import runs

    groups: dict[tuple[str, str, str], dict[int, list[dict[str, Any]]]] = {}
    for workdir in sorted((out / "init_study").glob("*seed*")):
        loss, stem = ("dibe", workdir.name)
        for name in CFD_LOSSES[1:]:
            if workdir.name.startswith(name + "_"):
                loss, stem = name, workdir.name[len(name) + 1 :]
        init, seed = stem.rsplit("_seed", 1)
        if records := _read_metrics(workdir):
            groups.setdefault((loss, "JAX (dibe_jax)", init), {})[int(seed)] = records
    for workdir in sorted((out / "torch_cfd").glob("*seed*")):
        loss = next((n for n in CFD_LOSSES[1:] if workdir.name.startswith(n + "_")), "dibe")
        seed = int(workdir.name.rsplit("seed", 1)[1])
        if records := _read_metrics(workdir):
            groups.setdefault((loss, "PyTorch", "torch_default"), {})[seed] = records
    lines = [
        "| loss | framework | init | seeds | IoU per seed (each evaluation) | IoU, last "
        f"{runs.LAST_N} over seeds | final IoU over seeds | OII, last {runs.LAST_N} |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for (loss, framework, init), by_seed in sorted(groups.items()):
        last = max(rs[-1]["epoch"] for rs in by_seed.values())  # runs still going are left out
        seeds = sorted(s for s, rs in by_seed.items() if rs[-1]["epoch"] == last)
        result = runs.SeedRuns([by_seed[s] for s in seeds], seeds)
        per_seed = "; ".join(
            f"{s}: " + " / ".join(f"{r['iou']:.3f}" for r in by_seed[s]) for s in seeds
        )
        lines.append(
            f"| {loss} | {framework} | {init} | {', '.join(map(str, seeds))} | {per_seed} | "
            f"{runs.fmt(result.last3('iou'))} | {runs.fmt(result.final('iou'))} | "
            f"{runs.fmt(result.last3('oii'), signed=True)} |"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- main


def _deterministic_torch() -> None:
    # Entry-point setting: deterministic PyTorch kernels and one thread, so every run of the
    # reference gives the same numbers (the comparison does not depend on it).
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def main(argv: Sequence[str] | None = None) -> int:
    if str(REPO) not in sys.path:  # `python experiments/parity_torch.py` from the repo root
        sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num-stages", type=int, default=4)
    parser.add_argument(
        "--kernel-init", default="he_normal_fan_out", choices=["he_normal_fan_out", "torch_default"]
    )
    parser.add_argument("--upsampling", default="bilinear", choices=["bilinear", "transposed"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-blocks", action="store_true", help="skip the layer-by-layer check")
    parser.add_argument(
        "--init-study",
        action="store_true",
        help="CFD: both initialisations through train_and_evaluate",
    )
    parser.add_argument(
        "--torch-cfd", action="store_true", help="CFD: the same training with the PyTorch U-Net"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--inits",
        nargs="+",
        default=["he_normal_fan_out", "torch_default"],
        choices=["he_normal_fan_out", "torch_default"],
    )
    parser.add_argument(
        "--summary", action="store_true", help="CFD: tabulate the finished runs, train nothing"
    )
    parser.add_argument(
        "--cfd-loss", default="dibe", choices=list(CFD_LOSSES), help="loss of the CFD studies"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "parity_torch")
    args = parser.parse_args(argv)
    _deterministic_torch()

    if args.summary:
        text = cfd_summary(args.out)
        (args.out / "cfd_summary.md").write_text(text + "\n")
        print(text)
        return 0
    if args.init_study or args.torch_cfd:
        results: dict[str, dict[int, list[dict[str, Any]]]] = {}
        if args.init_study:
            results = init_study(
                seeds=args.seeds,
                epochs=args.epochs,
                inits=args.inits,
                eval_every=args.eval_every,
                out=args.out / "init_study",
                loss=args.cfd_loss,
            )
        if args.torch_cfd:
            results["pytorch (torch_default)"] = {
                seed: torch_cfd(
                    seed=seed,
                    epochs=args.epochs,
                    eval_every=args.eval_every,
                    out=args.out / "torch_cfd" / _cfd_run_name(args.cfd_loss, f"seed{seed}"),
                    loss=args.cfd_loss,
                )
                for seed in args.seeds
            }
        text = study_markdown(results)
        name = _cfd_run_name(args.cfd_loss, "init_study") + ".md"
        (args.out / name).write_text(text + "\n")
        print(text)
        return 0

    ok = True
    sections = []
    for name in args.losses:
        check = check_torch_loss(name)
        report = run_parity(
            loss=name,
            width=args.width,
            size=args.size,
            batch=args.batch,
            steps=args.steps,
            num_stages=args.num_stages,
            kernel_init=args.kernel_init,
            upsampling=args.upsampling,
            seed=args.seed,
            blocks=not args.no_blocks,
        )
        text = (
            f"{format_report(report)}\n\nPyTorch port of `{name}` against dibe_jax on random "
            f"logits: value {check['value']:.1e}, gradient {check['grad']:.1e}."
        )
        print(text + "\n", flush=True)
        sections.append(text)
        ok &= passes(report)
    init = check_init_statistics(args.width, args.num_stages)
    text = (
        f'`kernel_init="torch_default"` against PyTorch\'s own initialisation: std within '
        f"{init['std']:.1%}, largest |w| within {init['bound']:.1%}; he_normal_fan_out std / "
        f"PyTorch std (median over kernels) {init['he_over_torch']:.2f}."
    )
    print(text)
    sections.append(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.md").write_text("\n\n".join(sections) + "\n")
    print("targets reached" if ok else "targets NOT reached")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
