"""One chunk of a sweep's members trained together in one compiled program.

:func:`train_chunk` stacks the members' states along a leading axis ``[K]`` (each restored
from its own latest checkpoint with ``resume``), trains them epoch by epoch with the stacked
step of :func:`~dibe_jax.train.member_steps.stacked_steps` (every member on its own seed's batches),
evaluates them on the same validation batches, and writes each member's run folder as
:func:`~dibe_jax.train.train_and_evaluate` writes one (``config.json``, ``model.json``,
``metrics.jsonl``, checkpoints at the epoch ends that ``checkpoint_every_epochs`` asks for,
``plots/``, ``tensorboard/``). :mod:`dibe_jax.train.sweep` builds the members, checks them
and splits them into chunks.
"""

from __future__ import annotations

import dataclasses
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
from dibe_jax.train.launch import Signals, model_info
from dibe_jax.train.loop import Interrupted, epoch_end_save
from dibe_jax.train.member_steps import stacked_steps
from dibe_jax.train.state import loss_steps, make_state
from dibe_jax.train.step import StepInputs, read_totals, shard_batch, zero_totals
from dibe_jax.train.workdir import existing_outputs

__all__ = ["ChunkTooBig", "MixedPositions", "Run", "train_chunk"]


class Run(Protocol):
    """What a chunk needs of a member (:class:`~dibe_jax.train.sweep.Member` is one)."""

    name: str
    config: Config


class ChunkTooBig(Exception):
    """The members of a chunk do not fit the device's memory together (raised by their first
    step, before anything of the chunk was trained)."""


class MixedPositions(Exception):
    """The members of a chunk continue from checkpoints at different positions (a sweep
    stopped between its chunks, or a member resumed alone), so they cannot step together;
    raised before anything of the chunk was trained.

    Attributes:
      groups: the chunk's members by position, as lists of their indices in the chunk,
        the group of the first member first.
    """

    def __init__(self, groups: list[list[int]]) -> None:
        super().__init__(f"the members continue from {len(groups)} different positions")
        self.groups = groups


def train_chunk(
    runs: Sequence[Run],
    dirs: Sequence[Path],
    built: Any,
    strategy: str,
    *,
    workdir: Path,
    overwrite: bool,
    resume: bool,
) -> list[list[dict[str, Any]]]:
    """Train ``runs`` together from their first (or resumed) epoch to the last.

    Args:
      runs: the chunk's members, all of one program (``built``'s).
      dirs: their run folders, in the same order.
      built: the sweep's :class:`~dibe_jax.train.built.Built` (data on the device path).
      strategy: ``"vmap"``, ``"map"`` or ``"loop"``
        (:func:`~dibe_jax.train.member_steps.stacked_steps`).
      workdir: the sweep's folder (named by :class:`~dibe_jax.train.loop.Interrupted`).
      overwrite: replace a previous run in a member's folder.
      resume: continue every member from its latest checkpoint (all at one position: an
        epoch end, or the batch of an epoch a signal stopped).

    Returns:
      Every member's evaluation records (its ``metrics.jsonl``).

    Raises:
      ChunkTooBig: the first step ran out of device memory.
      MixedPositions: the members' latest checkpoints are not at one position.
      ConfigError: the members have already trained more than every epoch, or continue a
        grain loader.
    """
    from tqdm.auto import tqdm

    first = runs[0].config
    states, inputs, metas, pure = _restore_members(runs, dirs, built, resume=resume)
    start = _start(metas, first.epochs, len(runs))
    step = start.step
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
        with Signals() as signals:
            for epoch in range(start.epoch, first.epochs):
                size = epoch_size(first, epoch)
                resumed = epoch == start.epoch
                begin = start.batch if resumed else 0
                stacked, acc, end = _train_epoch(
                    runs, built, train_many, add, stacked, stacked_inputs, epoch, step, size, bar,
                    begin=begin, sums=start.sums if resumed else None, signals=signals,
                    first_of_chunk=resumed,
                )  # fmt: skip
                step += end - begin
                _raise_if_nonfinite(runs, acc, first)
                seconds = time.perf_counter() - t_start
                if signals.received and end < built.steps_per_epoch:  # save where it stopped
                    position = json.dumps({"in_memory_batch": end})
                    for j, w in enumerate(writers):
                        w.save_position(epoch, step, position, acc, j, seconds, _member(stacked, j))
                    raise _interrupted(signals.received, step, epoch, workdir)
                evaluate = (epoch + 1) % first.eval_every == 0 or epoch + 1 == first.epochs
                summaries = (
                    _evaluate(built, eval_many, stacked, stacked_inputs, size, len(runs))
                    if evaluate
                    else None
                )
                for j, w in enumerate(writers):
                    count = int(acc["loss_count"][j])
                    train_loss = float(acc["loss_sum"][j]) / count if count else float("nan")
                    summary = None if summaries is None else summaries[j]
                    skipped = int(acc["skipped"][j])
                    state = functools.partial(_member, stacked, j)  # sliced only to be saved
                    w.epoch_end(
                        epoch, step, train_loss, skipped, seconds, summary, state,
                        save=bool(signals.received),
                    )  # fmt: skip
                if summaries is not None:
                    bar.set_postfix(**reporting.postfix(summaries[0]))
                if signals.received:
                    raise _interrupted(signals.received, step, epoch + 1, workdir)
        bar.close()
    except BaseException:
        bar.close()
        for w in writers:
            w.close(plots=False)
        raise
    return [w.close() for w in writers]


def _interrupted(signum: int, step: int, epoch: int, workdir: Path) -> Interrupted:
    """The signal that stopped a chunk, after every member saved a checkpoint."""
    return Interrupted(signum, step, epoch, workdir, resume="the same sweep with --resume")


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


@dataclasses.dataclass(frozen=True)
class _Start:
    """Where a chunk continues: ``epoch`` (0-based) at its batch ``batch`` (0 at an epoch
    end), after ``step`` steps, with each member's running sums of that epoch."""

    epoch: int
    step: int
    batch: int
    sums: dict[str, np.ndarray]


def _start(metas, epochs: int, k: int) -> _Start:
    """Where the chunk starts: every member's checkpoint at one position (an epoch end, or
    the same batch of an epoch that a signal interrupted)."""
    positions = [((m or {}).get("epoch", 0), step, (m or {}).get("loader")) for m, step in metas]
    if len(set(positions)) > 1:
        groups: dict[tuple, list[int]] = {}
        for i, position in enumerate(positions):
            groups.setdefault(position, []).append(i)
        raise MixedPositions(list(groups.values()))
    epoch, step, loader = positions[0]
    batch = 0
    if loader is not None:
        try:
            batch = json.loads(loader)["in_memory_batch"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "--resume: the members' checkpoints continue a grain loader; resume them one "
                "by one with `dibe-jax train --resume --workdir MEMBER`"
            ) from None
    if epoch > epochs or (loader is not None and epoch >= epochs):
        raise ConfigError(f"epochs: the members have already trained {epoch} epochs")

    def running(key: str, dtype) -> np.ndarray:
        values = [(m or {}).get(key, 0) if loader is not None else 0 for m, _ in metas]
        return np.asarray(values, dtype).reshape(k)

    sums = {
        "loss_sum": running("loss_sum", np.float32),
        "loss_count": running("loss_count", np.int32),
        "skipped": running("skipped", np.int32),
    }
    return _Start(epoch, step, batch, sums)


def _train_epoch(
    runs, built, train_many, add, stacked, stacked_inputs, epoch, step, size, bar, *,
    begin: int, sums: dict[str, np.ndarray] | None, signals: Signals, first_of_chunk: bool,
):  # fmt: skip
    """Epoch ``epoch`` of every member (each on its own seed's batch order) from its batch
    ``begin`` (``sums``: the members' running sums up to there) until its end or a signal:
    the stacked state, the members' loss sums, counts and skipped steps on the host, and the
    index of the first batch not trained."""
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
    if sums is None:
        sums = {
            "loss_sum": np.zeros((k,), np.float32),
            "loss_count": np.zeros((k,), np.int32),
            "skipped": np.zeros((k,), np.int32),
        }
    acc = {key: jnp.asarray(value) for key, value in sums.items()}
    end = begin
    for i in range(begin, built.steps_per_epoch):
        host = [it.host_batch(i) for it in its]
        batch = {key: np.stack([b[key] for b in host]) for key in ("image", "mask")}
        batch = jax.device_put(batch, batch_sharding)
        try:
            stacked, stats = train_many(stacked, batch, step + i - begin, stacked_inputs, size=size)
            if i == begin and first_of_chunk:
                jax.block_until_ready(stats)
        except Exception as e:  # noqa: BLE001 - only memory exhaustion is handled
            if i == begin and first_of_chunk and _out_of_memory(e):
                raise ChunkTooBig from e
            raise
        acc = add(acc, stats)
        bar.update(1)
        end = i + 1
        if signals.received:
            break
    return stacked, jax.device_get(acc), end


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

    def save_position(self, epoch, step, position, acc, j, seconds, state) -> None:
        """A checkpoint inside epoch ``epoch`` (0-based), at the data ``position``."""
        meta = {
            "epoch": epoch,
            "loader": position,
            "pipeline": "device",
            "step": step,
            "seconds": self.elapsed0 + seconds,
            "skipped": int(acc["skipped"][j]),
            "loss_sum": float(acc["loss_sum"][j]),
            "loss_count": int(acc["loss_count"][j]),
        }
        self.ckpt.save(step, state, meta)

    def epoch_end(
        self, epoch, step, train_loss, skipped, seconds, summary, state, *, save: bool = False
    ) -> None:
        """Record epoch ``epoch`` (0-based); save ``state()`` (the member's state) when the
        config's checkpoint rule asks, or ``save``."""
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
        if save or epoch_end_save(self.member.config, epoch, evaluated=summary is not None):
            self.ckpt.save(step, state(), meta, iou=iou)

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
