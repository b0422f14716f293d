"""Orbax checkpoints of the training state: the last few, and the best by validation IoU.

``workdir/checkpoints/latest/<step>`` keeps the last ``keep`` checkpoints (one per epoch end
and, optionally, every N steps); ``workdir/checkpoints/best/<step>`` keeps the one with the
highest validation IoU. Each holds the NNX state (parameters, BatchNorm statistics,
optimiser state, RNG state) and a JSON ``meta`` item (epoch, step, data-iterator position,
best IoU) so a resumed run continues exactly where the saved one was.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run
killed mid-save leaves no half-written checkpoint behind; a checkpoint that is unreadable
anyway (a corrupted file) is reported and the previous one is used.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpoints"]

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No readable checkpoint where one was expected."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(state):
    """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _from_saveable(restored, like):
    return jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t)
        else r,
        restored, like,
    )  # fmt: skip


class Checkpoints:
    """Save and restore ``(state, meta)`` under ``workdir/checkpoints``."""

    def __init__(self, directory: str | Path, *, keep: int = 3) -> None:
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True)
        self._latest = ocp.CheckpointManager(self.directory / "latest", options=options)
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m["iou"], best_mode="max",
            keep_checkpoints_without_metrics=False,
        )  # fmt: skip
        self._best = ocp.CheckpointManager(self.directory / "best", options=best_options)

    def _args(self, state, meta):
        return ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state)), meta=ocp.args.JsonSave(meta)
        )

    def save(self, step: int, state, meta: dict[str, Any], *, iou: float | None = None) -> None:
        """Save the latest checkpoint (and the best one when ``iou`` is given)."""
        self._latest.save(step, args=self._args(state, meta), force=True)
        if iou is not None and np.isfinite(iou):
            self._best.save(step, args=self._args(state, meta), metrics={"iou": float(iou)},
                            force=True)  # fmt: skip

    def wait(self) -> None:
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        return self._best.best_step()

    def restore(self, like_state, *, best: bool = False) -> tuple[Any, dict[str, Any], int]:
        """Restore the newest readable checkpoint: ``(state, meta, step)``.

        Unreadable checkpoints are reported (logged as warnings) and skipped, newest first.

        Raises:
          CheckpointError: when there is no checkpoint, or none is readable.
        """
        manager = self._best if best else self._latest
        steps = sorted(manager.all_steps(), reverse=True)
        if best and manager.best_step() is not None:
            steps = [manager.best_step()]
        if not steps:
            raise CheckpointError(f"no checkpoint in {manager.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(like_state))
        errors = []
        for step in steps:
            try:
                out = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                    ),
                )
                return _from_saveable(out["state"], like_state), dict(out["meta"]), step
            except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
                path = Path(manager.directory) / str(step)
                log.warning("checkpoint %s is unreadable (%s: %s); trying an older one",
                            path, type(e).__name__, e)  # fmt: skip
                errors.append(f"{path}: {type(e).__name__}: {e}")
        raise CheckpointError("no readable checkpoint:\n" + "\n".join(errors))

    def discard_after(self, step: int) -> None:
        """Delete checkpoints newer than ``step`` (after falling back past a broken one)."""
        for manager in (self._latest, self._best):
            for s in manager.all_steps():
                if s > step:
                    shutil.rmtree(Path(manager.directory) / str(s), ignore_errors=True)
            manager.reload()

    def close(self) -> None:
        self._latest.close()
        self._best.close()
