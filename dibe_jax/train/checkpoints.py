"""Orbax checkpoints of the training state: the last few, and the best by validation IoU.

``workdir/checkpoints/latest/<step>`` keeps the last ``keep`` checkpoints (one per epoch end
and, optionally, every N steps); ``workdir/checkpoints/best/<step>`` keeps the one with the
highest validation IoU. Each holds the NNX state (parameters, BatchNorm statistics,
optimiser state, RNG state) and a JSON ``meta`` item (epoch, step, data-iterator position,
best IoU) so a resumed run continues exactly where the saved one was.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run
killed mid-save leaves no half-written checkpoint behind; a checkpoint that is unreadable
anyway (a corrupted file) is reported and the previous one is used. Checkpoints written
before the learning rate became part of the optimiser state (``optax.inject_hyperparams``)
still restore: their momentum and step are put into the current layout, with the config's
hyperparameters.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from dibe_jax.errors import UserError

__all__ = ["CheckpointError", "CheckpointMismatchError", "Checkpoints"]

log = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """No readable checkpoint where one was expected."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose arrays do not fit the model built from the config."""


def _path_text(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """Readable path (``model/down1/conv/kernel``) -> shape of every array in ``tree``."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for p, x in leaves:
        parts = _path_text(p).split("/")
        if parts and parts[-1] == "value":  # NNX Variable payloads
            parts = parts[:-1]
        if parts and parts[0] in ("0", "1"):  # the (model, optimizer) pair of the train state
            parts[0] = ("model", "optimizer")[int(parts[0])]
        out["/".join(parts)] = tuple(getattr(x, "shape", ()))
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(state):
    """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _from_saveable(restored, like):
    return jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
        restored,
        like,
    )


def _is_legacy(stored: Any, like_state: Any) -> bool:
    """Whether checkpoint metadata ``stored`` holds the optimiser state of dibe_jax 0.1.0
    before the learning rate became part of it: the ``optax.sgd`` chain's state alone, where
    ``like_state`` wraps that chain in ``optax.inject_hyperparams``' state."""
    try:
        old = stored["1"]["opt_state"]
        new = like_state[1]["opt_state"]
    except (KeyError, TypeError, IndexError):
        return False
    return "inner_state" in new and "inner_state" not in old


_OPT = (1, "opt_state")  # where the optimiser state sits in the train state
_INNER = (*_OPT, "inner_state")


def _legacy_view(like_state: Any) -> Any:
    """``like_state`` with the optimiser state as a legacy checkpoint stores it."""
    flat = {}
    for path, value in nnx.to_flat_state(like_state):
        if path[:3] == _INNER:
            flat[_OPT + path[3:]] = value
        elif path[:2] != _OPT:
            flat[path] = value
    return nnx.from_flat_state(flat)


def _from_legacy(restored: Any, like_state: Any) -> Any:
    """A legacy checkpoint's state in the current layout: its model, step and momentum; the
    hyperparameters are the config's (which the legacy run's optimiser held as constants)."""
    flat = {}
    for path, value in nnx.to_flat_state(restored):
        flat[_INNER + path[2:] if path[:2] == _OPT else path] = value
    step = flat[(1, "step")]
    for path, value in nnx.to_flat_state(like_state):
        if path == (*_OPT, "count"):  # the steps taken, as the hyperparameters' own counter
            flat[path] = value.replace(jnp.asarray(step[...], value[...].dtype))
        elif path[:3] == (*_OPT, "hyperparams"):
            flat[path] = value
    return nnx.from_flat_state(flat)


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    # Declared up front so that metadata can be read before restoring (shape checks).
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class Checkpoints:
    """Save and restore ``(state, meta)`` under ``workdir/checkpoints``."""

    def __init__(self, directory: str | Path, *, keep: int = 3, create: bool = True) -> None:
        """``create=False`` opens existing checkpoints only (``eval``, ``predict``): nothing
        is written, and a missing folder is a :class:`CheckpointError`."""
        self.directory = Path(directory).absolute()
        if not create and not (self.directory / "latest").is_dir():
            raise CheckpointError(f"no checkpoints in {self.directory}")
        # Several processes: save synchronously, so that orbax's cross-process steps never run
        # in a background thread beside the training step's collectives (their order would
        # differ between processes, and both would wait for ever).
        sync = jax.process_count() > 1
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, keep), create=create, enable_async_checkpointing=not sync
        )
        self._latest = ocp.CheckpointManager(
            self.directory / "latest", options=options, item_handlers=_handlers()
        )
        best_options = ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=create,
            enable_async_checkpointing=not sync,
            best_fn=lambda m: m["iou"],
            best_mode="max",
            keep_checkpoints_without_metrics=False,
        )
        self._best = ocp.CheckpointManager(
            self.directory / "best", options=best_options, item_handlers=_handlers()
        )

    def _args(self, state, meta):
        return ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state)), meta=ocp.args.JsonSave(meta)
        )

    def save(self, step: int, state, meta: dict[str, Any], *, iou: float | None = None) -> None:
        """Save the latest checkpoint (and the best one when ``iou`` is given)."""
        self._latest.save(step, args=self._args(state, meta), force=True)
        if iou is not None and np.isfinite(iou):
            self._best.save(
                step, args=self._args(state, meta), metrics={"iou": float(iou)}, force=True
            )

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
        errors = []
        for i, step in enumerate(steps):
            legacy = _is_legacy(self._stored_tree(manager, step), like_state)
            like = _legacy_view(like_state) if legacy else like_state
            target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(like))
            if i == 0:
                self._check_shapes(manager, step, target)
            try:
                out = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                    ),
                )
                state = _from_saveable(out["state"], like)
                if legacy:
                    state = _from_legacy(state, like_state)
                return state, dict(out["meta"]), step
            except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
                path = Path(manager.directory) / str(step)
                log.warning(
                    "checkpoint %s is unreadable (%s); trying an older one", path, _first_line(e)
                )
                errors.append(f"{path} ({_first_line(e)})")
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors))

    @staticmethod
    def _stored_tree(manager, step: int) -> Any:
        """The stored state's metadata tree of checkpoint ``step``, None when unreadable."""
        try:
            return manager.item_metadata(step)["state"].tree
        except Exception:  # noqa: BLE001 - unreadable metadata: let restore report it
            return None

    def _check_shapes(self, manager, step: int, target) -> None:
        """:class:`CheckpointMismatchError` naming the first array whose shape differs
        between checkpoint ``step`` and ``target`` (a corrupt checkpoint passes: its
        metadata is unreadable, and restoring reports it as unreadable)."""
        tree = self._stored_tree(manager, step)
        if tree is None:
            return
        stored = _shapes(tree)
        wanted = _shapes(target)
        where = Path(manager.directory) / str(step)
        for key in sorted(set(stored) | set(wanted)):
            if key not in stored or key not in wanted:
                side = "checkpoint" if key not in wanted else "model"
                raise CheckpointMismatchError(
                    f"checkpoint {where} does not match the model built from the config: "
                    f"{key} exists only in the {side}"
                )
            if stored[key] != wanted[key]:
                raise CheckpointMismatchError(
                    f"checkpoint {where} does not match the model built from the config: "
                    f"{key} has shape {stored[key]} in the checkpoint and {wanted[key]} in "
                    "the model (was config.json edited?)"
                )

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
