"""One launch of a run's training: what it opens, shows and catches.

:class:`Launch` writes the run's ``config.json`` and ``model.json``, opens its checkpoints
(:mod:`dibe_jax.train.checkpoints`) and metrics log (:mod:`dibe_jax.train.reporting`) and
closes them; :class:`Progress` is its tqdm bar over completed steps; :class:`Signals` turns
SIGINT / SIGTERM into a request to save and stop after the current step.
"""

from __future__ import annotations

import collections
import json
import logging
import signal
import threading
import time
from typing import Any

import jax
import numpy as np

from dibe_jax.data.epochs import size_at
from dibe_jax.train import reporting
from dibe_jax.train.checkpoints import Checkpoints
from dibe_jax.train.state import Built
from dibe_jax.train.workdir import ResumeMeta, Workdir

__all__ = ["Launch", "Progress", "Signals", "model_info"]

log = logging.getLogger(__name__)


class Signals:
    """Catch SIGINT / SIGTERM while training: the loop saves and stops at the next step.

    A second signal of the same kind stops at once (the default behaviour). Outside the
    main thread (where Python cannot install handlers) nothing is caught.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is not None:  # second signal: give up waiting
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "%s received: saving a checkpoint after this step (again to stop now)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Progress:
    """A tqdm bar over *completed* steps: a step counts when its loss is ready on the device.

    Dispatch may run ahead of the device; at most ``ahead`` steps are left in flight, so the
    bar never stalls at an epoch end and the host never waits more than that.
    """

    def __init__(self, bar, ahead: int = 2) -> None:
        self.bar, self.ahead = bar, ahead
        self._pending: collections.deque = collections.deque()

    def add(self, loss: jax.Array) -> None:
        self._pending.append(loss)
        while self._pending and (len(self._pending) > self.ahead or self._pending[0].is_ready()):
            self._pending.popleft().block_until_ready()
            self.bar.update(1)

    def flush(self) -> None:
        while self._pending:
            self._pending.popleft().block_until_ready()
            self.bar.update(1)


class Launch:
    """One launch of a run's training: its folder, checkpoints, metrics log, progress bar,
    signal handlers and clock, from the position ``start`` (step 0 for a new run)."""

    def __init__(self, built: Built, wd: Workdir, start: ResumeMeta, t_start: float) -> None:
        self.built, self.config, self.wd, self.workdir = built, built.config, wd, wd.path
        self.first_step, self.elapsed0, self.t_start = start.step, start.seconds, t_start
        self.signals = Signals()
        self.record: dict[str, Any] = {}  # the last evaluation
        self.ckpt: Checkpoints | None = None
        self.mlog: reporting.MetricsLog | None = None
        self.bar = self.progress = None

    def seconds(self) -> float:
        """Training time of the run so far, over all its launches."""
        return self.elapsed0 + time.perf_counter() - self.t_start

    def open(self, resumed: ResumeMeta | None, resume: bool) -> None:
        """Write ``config.json`` and ``model.json``, open the checkpoints and the metrics
        log where ``resumed`` continues (newer ones are dropped), start the progress bar."""
        config, step = self.config, self.first_step
        self.wd.write("config.json", config.to_json() + "\n")
        self.wd.write("model.json", json.dumps(model_info(self.built)) + "\n")
        self.ckpt = Checkpoints(self.workdir / "checkpoints", keep=config.keep_checkpoints)
        self.mlog = reporting.MetricsLog(self.workdir, enabled=self.wd.writer)
        if resumed is not None:
            latest = self.ckpt.latest_step()
            if latest is not None and step != latest:
                self.ckpt.discard_after(step)
            log.info(
                "resuming %s from step %d (epoch %d of %d%s)",
                self.workdir,
                step,
                resumed.epoch + (1 if resumed.mid_epoch else 0),
                config.epochs,
                ", mid-epoch" if resumed.mid_epoch else " done",
            )
        elif resume:
            log.info("resuming %s: no checkpoint yet, starting from step 0", self.workdir)
        self.mlog.truncate_after(step)

        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=config.epochs * self.built.steps_per_epoch,
            initial=step,
            unit="step",
            disable=not (config.progress and self.wd.writer),
            dynamic_ncols=True,
        )
        self.progress = Progress(self.bar)

    def close(self, *, failed: bool) -> None:
        """Close bar, checkpoints and metrics log; after a failure, keep its first error."""
        if self.bar is not None:
            self.bar.close()
        if not failed:
            self.ckpt.wait()
            return
        for closer in (self.ckpt, self.mlog):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001, S110 - already failing; keep the first error
                    pass

    def finish(self) -> dict[str, Any]:
        """Close the checkpoints, plot the metrics; the last evaluation record."""
        self.ckpt.close()
        records = self.mlog.read() if self.wd.writer else []
        if self.wd.writer and records:
            reporting.plot_history(records, self.workdir / "plots")
        self.mlog.close()
        return records[-1] if records else self.record


def model_info(built: Built) -> dict[str, Any]:
    """What ``model.json`` records: input channels, outputs, the final image size, the data's
    native size and (for a multi-class run) the class names."""
    sample = np.asarray(built.train_source[0]["image"])
    final_size = size_at(built.config.data.image_size, built.config.epochs - 1)
    info = {
        "in_channels": int(sample.shape[-1]) if sample.ndim == 3 else 1,
        "num_classes": built.num_outputs,
        "image_size": final_size or list(sample.shape[:2]),
        # the size all training images had (None: they differed): predict's training scale
        "native_size": list(built.native_size) if built.native_size is not None else None,
    }
    if built.num_outputs > 1:  # a binary run's model.json stays as it always was
        info["class_names"] = list(built.classes)
    return info
