"""``train_and_evaluate(config, workdir)``: the training loop of the DIBE paper's experiments.

Every ``eval_every`` epochs the whole validation split is evaluated: TP/FP/FN/TN summed over
every image (and device), then IoU, PA (precision), recall, OII and FP/FN computed once, as
the paper reports them (Sec. 4.3.3). Each evaluation is appended to ``workdir/metrics.jsonl``
and TensorBoard; checkpoints go to ``workdir/checkpoints`` (see
:mod:`dibe_jax.train.checkpoints`); plots of IoU, PA and OII against epoch to
``workdir/plots``.

The number of classes comes from the dataset's mask feature
(:func:`dibe_jax.datasets.class_names`): two classes make a binary run (one sigmoid output,
exactly the above); ``C >= 3`` make a multi-class run: the model has ``C`` softmax outputs,
evaluation sums a ``[C, C]`` confusion matrix over the split and reports mIoU, mAcc, pixel
accuracy, per-class IoU / precision / recall / OII and the multi-class OII summary
(:func:`dibe_jax.train.reporting.multiclass_metrics`), and the best checkpoint is the one
of the highest mIoU. ``model.json`` records the classes for ``eval`` and ``predict``.

A run folder describes itself: ``config.json`` is the truth for resume, evaluation and
prediction. ``resume=True`` continues from the newest readable checkpoint with the same
optimiser state, RNG state and data order (an interrupted run ends with the same metrics as
an uninterrupted one); it accepts only changes a resume can honour
(:data:`~dibe_jax.train.checks.RESUMABLE`: more epochs, evaluation and logging options).

Nothing in the workdir is written before the config is validated, the data opened and the
checkpoint restored, and a launch that fails before its first training step removes what it
wrote (a replaced run, with ``overwrite=True``, is put back). SIGINT or SIGTERM during
training saves a checkpoint at the last completed step, data position included, and raises
:class:`Interrupted`.

The pieces live beside this module: :mod:`~dibe_jax.train.state` builds model, optimiser
and steps (:func:`build`), :mod:`~dibe_jax.train.batches` opens the data and yields device
batches (the device path in memory, or the grain loader, imported only when used),
:mod:`~dibe_jax.train.evaluate` computes the dataset-level metrics,
:mod:`~dibe_jax.train.workdir` holds the run folder and the checkpoints' typed resume
metadata (:class:`~dibe_jax.train.workdir.ResumeMeta`), and :mod:`~dibe_jax.train.launch`
what one launch opens (checkpoints, metrics, progress bar, signal handlers).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from dibe_jax.train import checks, compile_cache, reporting
from dibe_jax.train.batches import epoch_size, train_batches
from dibe_jax.train.checkpoints import Checkpoints
from dibe_jax.train.config import Config, ConfigError
from dibe_jax.train.evaluate import evaluate, evaluate_checkpoint
from dibe_jax.train.launch import Launch
from dibe_jax.train.state import Built, build, loss_steps, make_state, validate
from dibe_jax.train.step import replicate
from dibe_jax.train.workdir import ResumeMeta, Workdir, existing_outputs, load_config, resolve

__all__ = [
    "Interrupted",
    "NonFiniteError",
    "build",
    "evaluate_checkpoint",
    "load_config",
    "loss_steps",
    "make_state",
    "resolve",
    "train_and_evaluate",
    "validate",
]

log = logging.getLogger(__name__)

#: With ``nonfinite="raise"``, how often (in steps) the device-side flag is read.
NONFINITE_CHECK_EVERY = 8


class NonFiniteError(FloatingPointError):
    """The loss or a gradient stopped being finite."""


class Interrupted(Exception):  # noqa: N818 - it is the event, not an error
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint.

    Attributes:
      signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
      step, epoch: where the saved checkpoint continues from (``epoch`` is the epoch in
        progress, 0-based, or the number of finished epochs at an epoch end).
      workdir: the run (of a sweep: the sweep's folder, a checkpoint in each member's).
      resume: the command that continues it.
    """

    def __init__(
        self, signum: int, step: int, epoch: int, workdir: Path, resume: str | None = None
    ) -> None:
        self.signum, self.step, self.epoch, self.workdir = signum, step, epoch, workdir
        self.resume = resume or f"dibe-jax train --workdir {workdir} --resume"
        name = signal.Signals(signum).name
        where = workdir / "checkpoints" if resume is None else f"every member's folder in {workdir}"
        super().__init__(
            f"{name}: saved a checkpoint at step {step} (epoch {epoch + 1}) in {where}"
        )


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
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train ``config`` in ``workdir``; return the last evaluation record.

    Compiled programs persist between launches: JAX's persistent compilation cache is
    turned on unless the caller configured it (:func:`~dibe_jax.train.compile_cache.enable`).

    Args:
      config: the run (see :class:`~dibe_jax.train.config.Config`; paper defaults). With
        ``resume``, it must equal the run's ``config.json`` except for the fields a resume
        can honour (:data:`~dibe_jax.train.checks.RESUMABLE`); build it with
        :func:`load_config` and change those.
      workdir: output folder: ``config.json``, ``model.json``, ``metrics.jsonl``,
        ``tensorboard/``, ``checkpoints/``, ``plots/``.
      resume: continue from the newest readable checkpoint in ``workdir``; a workdir with
        no run starts a new one (logged).
      overwrite: replace a previous run's outputs in ``workdir`` (they are removed once the
        new run has taken its first step). Without it (and without ``resume``) a workdir
        that already holds a run is an error, so nothing is lost by accident.
      sources: optional in-memory splits ``{"train": seq, "validation": seq}`` of example
        dicts (``image`` uint8 ``[H, W, C]``, ``mask`` uint8 ``[H, W, 1]``) used instead of
        ``config.data.dataset`` (tests, notebooks).
      class_names: the classes of ``sources``' masks, background (0) first; default a
        binary ``{0, 1}`` mask. Three or more make a multi-class run.

    Raises:
      ConfigError: for an invalid config or a change a resume cannot honour, before
        anything is written or compiled.
      NonFiniteError: if the loss or gradients stop being finite and
        ``config.nonfinite == "raise"`` (the message names the step and the last good
        checkpoint; the bad update is never applied).
      Interrupted: SIGINT or SIGTERM arrived; a checkpoint of the last completed step was
        saved first.
    """
    t_start = time.perf_counter()
    compile_cache.enable()  # unless the user configured (or turned off) JAX's cache
    workdir = Path(workdir)
    # The one check of the config, before resolve() looks the dataset up; resolve() only
    # fills in the default image size, which the check has already taken into account.
    validate(config, in_memory=sources is not None, class_names=class_names)
    existing = existing_outputs(workdir)
    resume = _check_request(config, workdir, existing, resume=resume, overwrite=overwrite)
    if sources is None:
        config = resolve(config)
    built = build(config, sources, class_names=class_names, validated=True)
    built, state, resumed = _restore(built, workdir) if resume else (built, built.state, None)
    start = resumed or ResumeMeta(epoch=0, step=0, pipeline=built.train_pipeline)
    # From here on the workdir changes; before the first step, a failure undoes it.
    wd = Workdir(workdir, writer=jax.process_index() == 0)
    if not resume:
        wd.park(existing)
    wd.track("checkpoints", "tensorboard", "metrics.jsonl", "plots")
    run = Launch(built, wd, start, t_start)
    try:
        run.open(resumed, resume)
        with run.signals:
            for epoch in range(start.epoch, config.epochs):
                state, step, acc = _train_epoch(run, state, epoch, start)
                start = _end_epoch(run, state, epoch, step, acc)
        run.close(failed=False)
    except BaseException:
        run.close(failed=True)
        wd.undo()  # a no-op once a step was taken
        raise
    return run.finish()


def _check_request(
    config: Config, workdir: Path, existing: list[str], *, resume: bool, overwrite: bool
) -> bool:
    """Whether this launch resumes a run; refuses a request that does not fit what
    ``workdir`` holds (a run to resume, a run not to overwrite by accident)."""
    if resume:
        if (workdir / "config.json").is_file():
            stored = load_config(workdir)
            checks.check_resume(stored, config, where=str(workdir / "config.json"))
        elif existing:
            raise ConfigError(
                f"--resume: {workdir} holds {', '.join(existing)} but no "
                "config.json, so it cannot be resumed"
            )
        else:
            log.warning("--resume: %s holds no run yet; starting a new one", workdir)
            return False
    elif existing and not overwrite:
        raise ConfigError(
            f"{workdir} already holds a run ({', '.join(existing)}); pass resume=True "
            "(--resume) to continue it, overwrite=True (--overwrite) to replace it, or "
            "choose another workdir"
        )
    return resume


def _restore(built: Built, workdir: Path) -> tuple[Built, Any, ResumeMeta | None]:
    """``(built, state, meta)`` of the newest readable checkpoint in ``workdir``, ``built``
    on the data path it records; ``(built, built.state, None)`` when there is none yet."""
    config = built.config
    if not (workdir / "checkpoints" / "latest").is_dir():
        return built, built.state, None
    ckpt = Checkpoints(workdir / "checkpoints", keep=config.keep_checkpoints)
    try:
        if ckpt.latest_step() is None:
            return built, built.state, None
        state, meta, step = ckpt.restore(built.state)
    finally:
        ckpt.close()
    resumed = ResumeMeta.from_json(meta, step)
    if resumed.epoch > config.epochs:
        raise ConfigError(
            f"epochs: the run in {workdir} has already trained {resumed.epoch} "
            f"epochs; ask for at least that many"
        )
    built = _recorded_pipeline(built, resumed, workdir)
    return built, replicate(state, built.steps.replicated), resumed


def _recorded_pipeline(built: Built, meta: ResumeMeta, workdir: Path) -> Built:
    """``built`` on the training data path its checkpoint records (runs from before the
    device path record none: grain), so a resumed run continues with the same batches."""
    if meta.pipeline == built.train_pipeline:
        return built
    if meta.pipeline == "grain":
        log.info("resuming %s on the grain loader it was trained with", workdir)
        return dataclasses.replace(built, train_arrays=None, eval_arrays=None)
    raise ConfigError(
        f"data.memory_budget_mb: the run in {workdir} trained on the device data path, but "
        f"its training split does not fit data.memory_budget_mb="
        f"{built.config.data.memory_budget_mb} now; raise it to resume"
    )


def _raise_if_nonfinite(run: Launch, acc: Mapping[str, Any], epoch: int) -> None:
    """With ``nonfinite="raise"``, stop if ``acc["bad"]`` names a non-finite step."""
    bad_step = int(acc["bad"])
    if bad_step >= 0 and run.config.nonfinite == "raise":
        run.ckpt.wait()
        last = run.ckpt.latest_step()
        where = (
            f"the last good checkpoint is step {last} in {run.ckpt.directory / 'latest'}"
            if last is not None
            else "no checkpoint was saved yet"
        )
        run.bar.close()
        raise NonFiniteError(
            f"loss or gradients not finite at step {bad_step} (epoch {epoch}); the update "
            f"was not applied; {where}. Set nonfinite='skip' to drop such updates instead."
        )


def _train_epoch(run: Launch, state, epoch: int, start: ResumeMeta) -> tuple[Any, int, dict]:
    """Train ``epoch`` from ``start`` (its beginning, or where a mid-epoch checkpoint left
    it): ``(state, step, sums)``, the epoch's sums read to the host once, at its end. Saves a
    checkpoint every ``checkpoint_every_steps`` and, on a signal, saves and stops."""
    built, config = run.built, run.config
    size = epoch_size(config, epoch)
    it = train_batches(built, epoch, start.loader)
    # Running sums stay on the device: no host round-trip inside the epoch.
    sums = _new_epoch_sums(start.loss_sum, start.loss_count, start.skipped)
    acc = replicate(sums, built.steps.replicated)
    step, earlier_bad = start.step, None
    for batch in it:
        state, stats = built.steps.train(state, batch, step, size=size)
        acc = _add_step(acc, stats, step)
        step += 1
        run.progress.add(stats["loss"])
        if step == run.first_step + 1:
            run.wd.commit()
        if config.nonfinite == "raise" and step % NONFINITE_CHECK_EVERY == 0:
            # Read the flag of NONFINITE_CHECK_EVERY steps ago: long computed, so reading it
            # never stalls the device; a bad step stops the run within
            # 2 * NONFINITE_CHECK_EVERY steps.
            if earlier_bad is not None:
                _raise_if_nonfinite(run, {"bad": earlier_bad}, epoch)
            earlier_bad = acc["bad"]
        every = config.checkpoint_every_steps
        # (an epoch's last step is saved by _end_epoch)
        periodic = every and step % every == 0 and step % built.steps_per_epoch
        if run.signals.received or periodic:
            meta = ResumeMeta(
                epoch=epoch,
                step=step,
                loader=it.get_state().decode(),
                pipeline=built.train_pipeline,
                loss_sum=float(acc["loss_sum"]),
                loss_count=int(acc["loss_count"]),
                skipped=int(acc["skipped"]),
                seconds=run.seconds(),
            )
            run.ckpt.save(step, state, meta.to_json())
        if run.signals.received:
            run.progress.flush()
            _raise_if_nonfinite(run, acc, epoch)
            run.ckpt.wait()
            raise Interrupted(run.signals.received, step, epoch, run.workdir)
    run.progress.flush()
    return state, step, jax.device_get(acc)


def epoch_end_save(config: Config, epoch: int, *, evaluated: bool) -> bool:
    """Whether epoch ``epoch`` (0-based) ends with a checkpoint: every
    ``checkpoint_every_epochs`` epochs, after an evaluation (the best checkpoint is chosen
    among the evaluated ones) and at the last epoch.

    >>> from dibe_jax.train import Config
    >>> c = Config(epochs=10, eval_every=5, checkpoint_every_epochs=3)
    >>> [e + 1 for e in range(10) if epoch_end_save(c, e, evaluated=(e + 1) % 5 == 0)]
    [3, 5, 6, 9, 10]
    """
    n = epoch + 1
    return n % config.checkpoint_every_epochs == 0 or evaluated or n == config.epochs


def _end_epoch(run: Launch, state, epoch: int, step: int, acc: Mapping[str, Any]) -> ResumeMeta:
    """Log the epoch's training loss, evaluate when due, save the epoch-end checkpoint when
    due (:func:`epoch_end_save`; the best one by IoU, or mIoU); the position the next epoch
    starts from."""
    built, config = run.built, run.config
    skipped = int(acc["skipped"])
    count = int(acc["loss_count"])
    train_loss = float(acc["loss_sum"]) / count if count else float("nan")
    _raise_if_nonfinite(run, acc, epoch)
    run.mlog.scalar("train/loss", train_loss, step)
    seconds = run.seconds()
    iou = None
    if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
        summary = evaluate(built, state, epoch)
        run.record = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": train_loss,
            **summary,
            "skipped_steps": skipped,
            "seconds": round(seconds, 3),
        }
        run.mlog.write(run.record)
        iou = summary["miou" if built.num_outputs > 1 else "iou"]
    run.bar.set_postfix(loss=f"{train_loss:.4f}", **reporting.postfix(run.record))
    meta = ResumeMeta(
        epoch=epoch + 1, step=step, pipeline=built.train_pipeline, seconds=seconds, skipped=skipped
    )
    if epoch_end_save(config, epoch, evaluated=iou is not None) or run.signals.received:
        run.ckpt.save(step, state, meta.to_json(), iou=iou)
    if run.signals.received:
        run.ckpt.wait()
        raise Interrupted(run.signals.received, step, epoch + 1, run.workdir)
    return meta
