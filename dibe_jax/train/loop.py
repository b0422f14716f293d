"""``train_and_evaluate(config, workdir)``: the training loop of the DIBE paper's experiments.

Every ``eval_every`` epochs the whole validation split is evaluated: TP/FP/FN/TN summed over
every image (and device), then IoU, PA (precision), recall, OII and FP/FN computed once, as
the paper reports them (Sec. 4.3.3). Each evaluation is appended to ``workdir/metrics.jsonl``
and TensorBoard; checkpoints go to ``workdir/checkpoints`` (see
:mod:`dibe_jax.train.checkpoints`); plots of IoU, PA and OII against epoch to
``workdir/plots``. ``resume=True`` continues from the newest readable checkpoint with the
same optimiser state, RNG state and data order, so an interrupted run ends with the same
metrics as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dibe_jax import losses, metrics, models
from dibe_jax.data import pipeline
from dibe_jax.data.augment import AugmentConfig
from dibe_jax.train import reporting
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.config import Config
from dibe_jax.train.step import make_mesh, make_steps, shard_batch, zero_totals

__all__ = [
    "NonFiniteError",
    "build",
    "evaluate_checkpoint",
    "load_config",
    "make_state",
    "train_and_evaluate",
    "validate",
]

log = logging.getLogger(__name__)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteError(FloatingPointError):
    """The loss or a gradient stopped being finite."""


def validate(config: Config) -> None:
    """Check names, hyperparameters and sizes before anything is built or compiled."""
    if config.model.name not in models.names():
        raise ValueError(
            f"unknown model {config.model.name!r}; known models: {', '.join(models.names())}"
        )
    unknown = set(config.model.options) - set(models.config_keys(config.model.name)) - {"dtype"}
    if unknown:
        raise ValueError(
            f"model {config.model.name!r} takes no option {sorted(unknown)}; it takes: "
            f"{', '.join(models.config_keys(config.model.name))}"
        )
    losses.get(config.loss.name)  # ValueError listing the names
    losses.check_hyperparameters(config.loss.name, config.loss.params)
    n = jax.device_count()
    if config.batch_size <= 0 or config.batch_size % n:
        raise ValueError(
            f"batch_size {config.batch_size} must be a positive multiple of the device count {n}"
        )
    if config.batch_size % jax.process_count():
        raise ValueError(f"batch_size {config.batch_size} must divide among "
                         f"{jax.process_count()} processes")  # fmt: skip
    if config.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {config.dtype!r}")
    if config.nonfinite not in ("raise", "skip"):
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {config.nonfinite!r}")
    if config.optim.schedule not in ("constant", "cosine", "step"):
        raise ValueError(f"optim.schedule must be constant, cosine or step, "
                         f"got {config.optim.schedule!r}")  # fmt: skip
    if config.epochs < 1 or config.eval_every < 1:
        raise ValueError("epochs and eval_every must be >= 1")
    name = config.data.dataset.split("/")[0]
    if name not in _dataset_names():
        raise ValueError(f"unknown dataset {config.data.dataset!r}; known: "
                         f"{', '.join(_dataset_names())}")  # fmt: skip


def _dataset_names() -> list[str]:
    import dibe_jax.datasets  # noqa: F401  (registers the builders)

    return ["crackforest", "magnetic_tile", "synthetic_cracks", "thc"]


def _sources(config: Config, sources: Mapping[str, Sequence] | None):
    if sources is not None:
        return sources[config.data.train_split], sources[config.data.eval_split]
    from dibe_jax import datasets

    builder = datasets.prepare(
        config.data.dataset, data_dir=config.data.data_dir, manual_dir=config.data.manual_dir
    )
    ds = builder.as_data_source()
    return ds[config.data.train_split], ds[config.data.eval_split]


def _optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    o = config.optim
    total = max(1, config.epochs * steps_per_epoch)
    if o.schedule == "cosine":
        lr = optax.cosine_decay_schedule(o.lr, total)
    elif o.schedule == "step":
        lr = optax.piecewise_constant_schedule(
            o.lr, {e * steps_per_epoch: 0.1 for e in o.step_epochs}
        )
    else:
        lr = o.lr
    tx = optax.sgd(lr, momentum=o.momentum)
    if o.grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
    return tx


@dataclasses.dataclass
class Built:
    """A model, its optimiser state and the jitted steps, ready to train or evaluate."""

    config: Config
    state: Any
    steps: Any
    mesh: Any
    train_source: Sequence
    eval_source: Sequence
    steps_per_epoch: int
    local_batch: int
    train_graphdef: Any
    eval_graphdef: Any


def make_state(config: Config, in_channels: int, steps_per_epoch: int = 1):
    """``(train_graphdef, eval_graphdef, state)`` of a fresh model and its SGD optimiser.

    ``state`` holds parameters, BatchNorm statistics, optimiser and RNG state; the two
    graph definitions differ only in train/eval mode (BatchNorm, dropout).
    """
    options = dict(config.model.options)
    options.setdefault("dtype", _DTYPES[config.dtype])
    rngs = nnx.Rngs(params=config.seed, dropout=config.seed + 1)
    model = models.create(config.model.name, in_channels=in_channels, num_classes=1,
                          rngs=rngs, **options)  # fmt: skip
    optimizer = nnx.Optimizer(model, _optimizer(config, steps_per_epoch), wrt=nnx.Param)
    model.eval()
    eval_graphdef, _ = nnx.split((model, optimizer))
    model.train()
    train_graphdef, state = nnx.split((model, optimizer))
    return train_graphdef, eval_graphdef, state


def build(config: Config, sources: Mapping[str, Sequence] | None = None) -> Built:
    """Validate ``config``, open the data and build model, optimiser, state and steps."""
    validate(config)
    train_src, eval_src = _sources(config, sources)
    if len(train_src) == 0 or len(eval_src) == 0:
        raise ValueError("the train and evaluation splits must not be empty")
    in_channels = int(np.asarray(train_src[0]["image"]).shape[-1])
    local_batch = config.batch_size // jax.process_count()
    steps_per_epoch = len(train_src) // jax.process_count() // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_src)} "
                         "training examples")  # fmt: skip
    train_graphdef, eval_graphdef, state = make_state(config, in_channels, steps_per_epoch)
    mesh = make_mesh()
    steps = make_steps(
        train_graphdef, eval_graphdef, losses.get(config.loss.name), config.loss.params, mesh,
        skip_nonfinite=True,
    )  # fmt: skip
    state = jax.device_put(state, steps.replicated)
    return Built(config, state, steps, mesh, train_src, eval_src, steps_per_epoch, local_batch,
                 train_graphdef, eval_graphdef)  # fmt: skip


def _loader_kwargs(config: Config, local_batch: int) -> dict[str, Any]:
    return dict(
        batch_size=local_batch,
        image_size=config.data.image_size,
        seed=config.seed,
        worker_count=config.data.worker_count,
        augment=AugmentConfig() if config.data.augment else AugmentConfig(
            hflip=0.0, vflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0
        ),
    )  # fmt: skip


def evaluate(built: Built, state, epoch: int) -> dict[str, Any]:
    """Dataset-level metrics of ``state`` on the evaluation split."""
    kwargs = _loader_kwargs(built.config, built.local_batch)
    kwargs["image_size"] = pipeline.size_at(built.config.data.image_size, epoch)
    loader = pipeline.make_loader(built.eval_source, train=False, epoch=epoch, **kwargs)
    totals = jax.device_put(zero_totals(), built.steps.replicated)
    for batch in loader:
        batch = shard_batch(pipeline.pad_batch(batch, built.local_batch), built.mesh)
        totals = built.steps.evaluate(state, batch, totals)
    totals = jax.device_get(totals)
    counts = metrics.Confusion(*(int(totals[k]) for k in ("tp", "fp", "fn", "tn")))
    summary = metrics.summarize(counts)
    summary["val_loss"] = float(totals["loss"]) / max(1, int(totals["images"]))
    return summary


def _new_epoch_sums(loss_sum: float, loss_count: int, skipped: int) -> dict[str, jax.Array]:
    return {
        "loss_sum": jnp.asarray(loss_sum, jnp.float32),
        "loss_count": jnp.asarray(loss_count, jnp.int32),
        "skipped": jnp.asarray(skipped, jnp.int32),
        "bad": jnp.asarray(-1, jnp.int32),  # first step whose update was not finite
    }


@jax.jit
def _add_step(acc: dict[str, jax.Array], stats: dict[str, jax.Array], step) -> dict:
    """Fold one step's stats into the epoch sums (one small jitted call per step)."""
    ok = stats["nonfinite"] == 0
    return {
        "loss_sum": acc["loss_sum"] + jnp.where(ok, stats["loss"], 0.0),
        "loss_count": acc["loss_count"] + ok.astype(jnp.int32),
        "skipped": acc["skipped"] + (~ok).astype(jnp.int32),
        "bad": jnp.where(~ok & (acc["bad"] < 0), step, acc["bad"]),
    }


def train_and_evaluate(
    config: Config,
    workdir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    sources: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """Train ``config`` in ``workdir``; return the last evaluation record.

    Args:
      config: the run (see :class:`~dibe_jax.train.config.Config`; paper defaults).
      workdir: output folder: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
        ``checkpoints/``, ``plots/``.
      resume: continue from the newest readable checkpoint in ``workdir``.
      overwrite: delete a previous run's outputs in ``workdir`` first. Without it (and
        without ``resume``) a workdir that already holds a run is an error, so nothing
        is lost by accident.
      sources: optional in-memory splits ``{"train": seq, "validation": seq}`` of example
        dicts (``image`` uint8 ``[H, W, C]``, ``mask`` uint8 ``[H, W, 1]``) used instead of
        ``config.data.dataset`` (tests, notebooks).

    Raises:
      ValueError: for an invalid config, before anything is compiled.
      NonFiniteError: if the loss or gradients stop being finite and
        ``config.nonfinite == "raise"`` (the message names the step and the last good
        checkpoint; the bad update is never applied).
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    writer = jax.process_index() == 0
    outputs = ("checkpoints", "metrics.jsonl", "tensorboard", "plots", "model.json")
    existing = [n for n in outputs if (workdir / n).exists()]
    if existing and not resume:
        if not overwrite:
            raise ValueError(
                f"{workdir} already holds a run ({', '.join(existing)}); pass resume=True "
                "(--resume) to continue it, overwrite=True (--overwrite) to replace it, or "
                "choose another workdir"
            )
        validate(config)
        if writer:
            for n in existing:
                p = workdir / n
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json() + "\n")
    built = build(config, sources)
    state = built.state
    if writer:
        sample = np.asarray(built.train_source[0]["image"])
        final_size = pipeline.size_at(config.data.image_size, config.epochs - 1)
        info = {"in_channels": int(sample.shape[-1]), "image_size": final_size or list(
            sample.shape[:2])}  # fmt: skip
        (workdir / "model.json").write_text(json.dumps(info) + "\n")
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
    mlog = reporting.MetricsLog(workdir, enabled=writer)
    start_epoch, skip_batches, step, elapsed0 = 0, None, 0, 0.0
    skipped = 0  # updates dropped for non-finite loss or gradients
    loss_sum0, loss_count0 = 0.0, 0
    if resume and ckpt.latest_step() is not None:
        state, meta, step = ckpt.restore(state)
        if step != ckpt.latest_step():
            ckpt.discard_after(step)
        state = jax.device_put(state, built.steps.replicated)
        start_epoch, skip_batches = meta["epoch"], meta.get("loader")
        elapsed0 = meta.get("seconds", 0.0)
        loss_sum0, loss_count0 = meta.get("loss_sum", 0.0), meta.get("loss_count", 0)
        skipped = int(meta.get("skipped", 0))
        mlog.truncate_after(step)
        log.info("resumed from step %d (epoch %d)", step, start_epoch)
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", ckpt.directory)

    from tqdm.auto import tqdm

    bar = tqdm(total=config.epochs * built.steps_per_epoch, initial=step, unit="step",
               disable=not (config.progress and writer), dynamic_ncols=True)  # fmt: skip
    record: dict[str, Any] = {}
    kwargs = _loader_kwargs(config, built.local_batch)
    for epoch in range(start_epoch, config.epochs):
        loader = pipeline.make_loader(built.train_source, train=True, epoch=epoch, **kwargs)
        it = iter(loader)
        if skip_batches is not None:
            it.set_state(skip_batches.encode())
            skip_batches = None
        # Running sums stay on the device: no host round-trip inside the epoch.
        acc = _new_epoch_sums(loss_sum0, loss_count0, skipped)
        loss_sum0, loss_count0 = 0.0, 0
        for batch in it:
            state, stats = built.steps.train(state, shard_batch(batch, built.mesh))
            acc = _add_step(acc, stats, step)
            step += 1
            bar.update(1)
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                ckpt.save(step, state, {
                    "epoch": epoch, "loader": it.get_state().decode(), "step": step,
                    "loss_sum": float(acc["loss_sum"]), "loss_count": int(acc["loss_count"]),
                    "skipped": int(acc["skipped"]),
                    "seconds": elapsed0 + time.perf_counter() - t_start,
                })  # fmt: skip
        acc = jax.device_get(acc)  # once per epoch
        skipped = int(acc["skipped"])
        count = int(acc["loss_count"])
        train_loss = float(acc["loss_sum"]) / count if count else float("nan")
        bad_step = int(acc["bad"])
        if bad_step >= 0 and config.nonfinite == "raise":
            ckpt.wait()
            last = ckpt.latest_step()
            where = (f"the last good checkpoint is step {last} in {ckpt.directory / 'latest'}"
                     if last is not None else "no checkpoint was saved yet")  # fmt: skip
            bar.close()
            raise NonFiniteError(
                f"loss or gradients not finite at step {bad_step} (epoch {epoch}); the update "
                f"was not applied; {where}. Set nonfinite='skip' to drop such updates instead."
            )
        mlog.scalar("train/loss", train_loss, step)
        bar.set_postfix(loss=f"{train_loss:.4f}", **(
            {"iou": f"{record['iou']:.3f}", "oii": f"{record['oii']:+.3f}"} if record else {}
        ))  # fmt: skip
        seconds = elapsed0 + time.perf_counter() - t_start
        iou = None
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            summary = evaluate(built, state, epoch)
            record = {"epoch": epoch + 1, "step": step, "train_loss": train_loss, **summary,
                      "skipped_steps": skipped, "seconds": round(seconds, 3)}  # fmt: skip
            mlog.write(record)
            iou = summary["iou"]
            bar.set_postfix(loss=f"{train_loss:.4f}", iou=f"{iou:.3f}", oii=f"{record['oii']:+.3f}")
        meta = {"epoch": epoch + 1, "loader": None, "step": step, "seconds": seconds,
                "skipped": skipped}
        ckpt.save(step, state, meta, iou=iou)
    bar.close()
    ckpt.wait()
    ckpt.close()
    records = mlog.read() if writer else []
    if writer and records:
        reporting.plot_history(records, workdir / "plots")
    mlog.close()
    if records:
        record = records[-1]
    return record


def load_config(workdir: str | Path) -> Config:
    """The :class:`Config` a run in ``workdir`` was started with (``config.json``)."""
    from dibe_jax.train.config import from_dict

    path = Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a valid dibe_jax config: {e}") from e


def evaluate_checkpoint(
    workdir: str | Path,
    *,
    split: str = "validation",
    best: bool = True,
    sources: Mapping[str, Sequence] | None = None,
) -> dict[str, Any]:
    """Evaluate the best (or latest) checkpoint of a finished run on ``split``."""
    workdir = Path(workdir)
    config = load_config(workdir)
    config.data.eval_split = split
    built = build(config, sources)
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
    try:
        state, meta, step = ckpt.restore(built.state, best=best)
    except CheckpointError:
        if not best:
            raise
        state, meta, step = ckpt.restore(built.state, best=False)
    state = jax.device_put(state, built.steps.replicated)
    out = evaluate(built, state, max(0, meta["epoch"] - 1))
    ckpt.close()
    return {"split": split, "step": step, "epoch": meta["epoch"], **out}
