"""One chunk of a sweep's members trained together in one compiled program.

:func:`train_chunk` stacks the members' states along a leading axis ``[K]`` (each restored
from its own latest checkpoint with ``resume``), trains them epoch by epoch with the stacked
step of :func:`~dibe_jax.train.step.stacked_steps` (every member on its own seed's batches),
evaluates them on the same validation batches, and writes each member's run folder as
:func:`~dibe_jax.train.train_and_evaluate` writes one (``config.json``, ``model.json``,
``metrics.jsonl``, checkpoints at the epoch ends that ``checkpoint_every_epochs`` asks for,
``plots/``, ``tensorboard/``). :mod:`dibe_jax.train.sweep` builds the members, checks them
and splits them into chunks.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dibe_jax.data import in_memory
from dibe_jax.files import atomic_write_text
from dibe_jax.train import reporting
from dibe_jax.train.batches import epoch_size
from dibe_jax.train.checkpoints import Checkpoints
from dibe_jax.train.config import Config, ConfigError
from dibe_jax.train.evaluate import summarize
from dibe_jax.train.launch import model_info
from dibe_jax.train.loop import epoch_end_save
from dibe_jax.train.state import loss_steps, make_state
from dibe_jax.train.step import StepInputs, read_totals, shard_batch, stacked_steps, zero_totals
from dibe_jax.train.workdir import existing_outputs

__all__ = ["ChunkTooBig", "Run", "train_chunk"]


class Run(Protocol):
    """What a chunk needs of a member (:class:`~dibe_jax.train.sweep.Member` is one)."""

    name: str
    config: Config


class ChunkTooBig(Exception):
    """The members of a chunk do not fit the device's memory together (raised by their first
    step, before anything of the chunk was trained)."""


def train_chunk(
    runs: Sequence[Run],
    dirs: Sequence[Path],
    built: Any,
    strategy: str,
    *,
    overwrite: bool,
    resume: bool,
) -> list[list[dict[str, Any]]]:
    """Train ``runs`` together from their first (or resumed) epoch to the last.

    Args:
      runs: the chunk's members, all of one program (``built``'s).
      dirs: their run folders, in the same order.
      built: the sweep's :class:`~dibe_jax.train.built.Built` (data on the device path).
      strategy: ``"vmap"`` or ``"map"`` (:func:`~dibe_jax.train.step.stacked_steps`).
      overwrite: replace a previous run in a member's folder.
      resume: continue every member from its latest checkpoint (all at one epoch end).

    Returns:
      Every member's evaluation records (its ``metrics.jsonl``).

    Raises:
      ChunkTooBig: the first step ran out of device memory.
      ConfigError: the members' checkpoints are not at one epoch end, or they have already
        trained every epoch.
    """
    from tqdm.auto import tqdm

    first = runs[0].config
    states, inputs, metas, pure = _restore_members(runs, dirs, built, resume=resume)
    start_epoch, step = _start(metas, first.epochs)
    train_many, eval_many, add = stacked_steps(pure, strategy)
    replicated = built.steps.replicated
    stacked = jax.device_put(_stack(states), replicated)
    stacked_inputs = jax.device_put(StepInputs(*_stack_inputs(inputs)), replicated)
    del states
    writers = _open_members(runs, dirs, built, metas, overwrite=overwrite, resume=resume)
    bar = tqdm(
        total=first.epochs * built.steps_per_epoch,
        initial=step,
        unit="step",
        disable=not first.progress,
        dynamic_ncols=True,
        desc=f"{len(runs)} members",
    )
    t_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, first.epochs):
            size = epoch_size(first, epoch)
            stacked, acc = _train_epoch(
                runs, built, train_many, add, stacked, stacked_inputs, epoch, step, size, bar,
                first_of_chunk=epoch == start_epoch,
            )  # fmt: skip
            step += built.steps_per_epoch
            _raise_if_nonfinite(runs, acc, first)
            evaluate = (epoch + 1) % first.eval_every == 0 or epoch + 1 == first.epochs
            summaries = (
                _evaluate(built, eval_many, stacked, stacked_inputs, size, len(runs))
                if evaluate
                else None
            )
            seconds = time.perf_counter() - t_start
            for j, w in enumerate(writers):
                count = int(acc["loss_count"][j])
                train_loss = float(acc["loss_sum"][j]) / count if count else float("nan")
                summary = None if summaries is None else summaries[j]
                skipped = int(acc["skipped"][j])
                w.epoch_end(epoch, step, train_loss, skipped, seconds, summary, _member(stacked, j))
            if summaries is not None:
                bar.set_postfix(**reporting.postfix(summaries[0]))
        bar.close()
    except BaseException:
        bar.close()
        for w in writers:
            w.close(plots=False)
        raise
    return [w.close() for w in writers]


def _restore_members(runs, dirs, built, *, resume: bool):
    """Each member's state (its own seed's parameters, or its latest checkpoint with
    ``resume``), step inputs and ``(resume metadata, step)``; the pure steps they share."""
    states, inputs, metas = [], [], []
    pure = None
    for m, d in zip(runs, dirs, strict=True):
        tg, eg, state = make_state(
            m.config, _in_channels(built), built.steps_per_epoch, num_classes=built.num_outputs
        )
        steps = loss_steps(m.config, tg, eg, built.mesh, num_classes=built.num_outputs)
        if tg != built.train_graphdef or eg != built.eval_graphdef:
            raise ConfigError(f"{m.name}: its model or optimiser differs from the sweep's")
        pure = steps.pure
        meta, step = None, 0
        if resume and (d / "checkpoints" / "latest").is_dir():
            ckpt = Checkpoints(d / "checkpoints", keep=m.config.keep_checkpoints)
            if ckpt.latest_step() is not None:
                state, meta, step = ckpt.restore(state)
            ckpt.close()
        states.append(state)
        inputs.append(steps.inputs)
        metas.append((meta, step))
    return states, inputs, metas, pure


def _start(metas, epochs: int) -> tuple[int, int]:
    """The epoch and step the chunk starts from: every member's checkpoint at one epoch end."""
    done = {(meta or {}).get("epoch", 0) for meta, _ in metas}
    loaders = {(meta or {}).get("loader") for meta, _ in metas}
    if len(done) > 1 or loaders != {None}:
        raise ConfigError(
            "--resume: the members' latest checkpoints are not at one epoch end; resume them "
            "one by one with `dibe-jax train --resume --workdir MEMBER`"
        )
    start_epoch = done.pop()
    if start_epoch > epochs:
        raise ConfigError(f"epochs: the members have already trained {start_epoch} epochs")
    return start_epoch, metas[0][1]


def _train_epoch(
    runs, built, train_many, add, stacked, stacked_inputs, epoch, step, size, bar, *,
    first_of_chunk: bool,
):  # fmt: skip
    """One epoch of every member (each on its own seed's batch order); returns the stacked
    state and the members' loss sums, counts and skipped steps, on the host."""
    k = len(runs)
    batch_sharding = NamedSharding(built.mesh, P(None, "data"))
    its = [
        in_memory.Batches(
            built.train_arrays,
            batch_size=built.local_batch,
            train=True,
            seed=m.config.seed,
            epoch=epoch,
        )
        for m in runs
    ]
    acc = {
        "loss_sum": jnp.zeros((k,), jnp.float32),
        "loss_count": jnp.zeros((k,), jnp.int32),
        "skipped": jnp.zeros((k,), jnp.int32),
    }
    for i in range(built.steps_per_epoch):
        host = [it.host_batch(i) for it in its]
        batch = {key: np.stack([b[key] for b in host]) for key in ("image", "mask")}
        batch = jax.device_put(batch, batch_sharding)
        try:
            stacked, stats = train_many(stacked, batch, step + i, stacked_inputs, size=size)
            if i == 0 and first_of_chunk:
                jax.block_until_ready(stats)
        except Exception as e:  # noqa: BLE001 - only memory exhaustion is handled
            if i == 0 and first_of_chunk and _out_of_memory(e):
                raise ChunkTooBig from e
            raise
        acc = add(acc, stats)
        bar.update(1)
    return stacked, jax.device_get(acc)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda x: x[k], tree)


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _stack_inputs(inputs: Sequence[StepInputs]) -> tuple[dict[str, jax.Array], jax.Array]:
    loss = {key: jnp.stack([i.loss[key] for i in inputs]) for key in inputs[0].loss}
    return loss, jnp.stack([i.seed for i in inputs])


def _in_channels(built: Any) -> int:
    return int(built.train_arrays.images.shape[-1])


def _raise_if_nonfinite(runs: Sequence[Run], acc: dict[str, np.ndarray], config: Config) -> None:
    from dibe_jax.train.loop import NonFiniteError

    if config.nonfinite != "raise":
        return
    for m, skipped in zip(runs, acc["skipped"], strict=True):
        if int(skipped):
            raise NonFiniteError(
                f"{m.name}: loss or gradients not finite in {int(skipped)} step(s); those "
                "updates were not applied. Set nonfinite='skip' to drop such updates instead."
            )


def _evaluate(built, eval_many, stacked, inputs, size, k: int) -> list[dict[str, Any]]:
    """Every member's evaluation summary (the same batches for all)."""

    totals = jax.device_put(_stack([zero_totals(built.num_outputs)] * k), built.steps.replicated)
    put = functools.partial(shard_batch, mesh=built.mesh)
    for batch in in_memory.Batches(
        built.eval_arrays, batch_size=built.local_batch, train=False, put=put
    ):
        totals = eval_many(stacked, batch, totals, inputs, size=size)
    host = jax.device_get(totals)
    return [summarize(read_totals(_member(host, j)), built) for j in range(k)]


class _MemberWriter:
    """A member's run folder, written as ``train_and_evaluate`` writes one."""

    def __init__(self, member: Run, run_dir: Path, built: Any, meta, start_step: int) -> None:
        self.member, self.dir, self.built = member, run_dir, built
        config = member.config
        self.elapsed0 = (meta or {}).get("seconds", 0.0)
        self.ckpt = Checkpoints(run_dir / "checkpoints", keep=config.keep_checkpoints)
        self.mlog = reporting.MetricsLog(run_dir)
        self.mlog.truncate_after(start_step)

    def epoch_end(self, epoch, step, train_loss, skipped, seconds, summary, state) -> None:
        seconds = self.elapsed0 + seconds
        self.mlog.scalar("train/loss", train_loss, step)
        iou = None
        if summary is not None:
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": train_loss,
                **summary,
                "skipped_steps": skipped,
                "seconds": round(seconds, 3),
            }
            self.mlog.write(record)
            iou = summary["miou" if self.built.num_outputs > 1 else "iou"]
        meta = {
            "epoch": epoch + 1,
            "loader": None,
            "pipeline": "device",
            "step": step,
            "seconds": seconds,
            "skipped": skipped,
        }
        if epoch_end_save(self.member.config, epoch, evaluated=summary is not None):
            self.ckpt.save(step, state, meta, iou=iou)

    def close(self, *, plots: bool = True) -> list[dict[str, Any]]:
        try:
            self.ckpt.wait()
        finally:
            self.ckpt.close()
        records = self.mlog.read()
        self.mlog.close()
        if plots and records:
            reporting.plot_history(records, self.dir / "plots")
        return records


def _open_members(runs, dirs, built, metas, *, overwrite: bool, resume: bool):
    """Write each member's ``config.json`` and ``model.json`` (replacing a previous run with
    ``overwrite``) and open its checkpoints and metrics log."""
    writers = []
    info = json.dumps(model_info(built)) + "\n"  # the same model for every member
    for m, d, (meta, step) in zip(runs, dirs, metas, strict=True):
        if overwrite and not (resume and meta is not None):
            for name in existing_outputs(d):
                path = d / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "config.json", m.config.to_json() + "\n")
        atomic_write_text(d / "model.json", info)
        writers.append(_MemberWriter(m, d, built, meta, step))
    return writers
