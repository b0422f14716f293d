"""Training and evaluation: config, data-parallel steps, checkpoints, the loop.

Importing this package needs neither grain, TFDS nor tensorboardX: the grain loader is
imported when a split goes through it, TFDS when a named dataset is opened, tensorboardX
when a run writes its TensorBoard events.
"""

from dibe_jax.train.checkpoints import CheckpointError, CheckpointMismatchError, Checkpoints
from dibe_jax.train.checks import RESUMABLE, check_resume
from dibe_jax.train.config import (
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    apply_overrides,
    check_types,
    diff,
    from_dict,
    load,
    override,
)
from dibe_jax.train.evaluate import evaluate_checkpoint
from dibe_jax.train.loop import Interrupted, NonFiniteError, resolve, train_and_evaluate
from dibe_jax.train.state import build, make_state, validate
from dibe_jax.train.step import make_mesh, make_steps, shard_batch
from dibe_jax.train.workdir import load_config

__all__ = [
    "RESUMABLE",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpoints",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "Interrupted",
    "ModelConfig",
    "NonFiniteError",
    "OptimConfig",
    "apply_overrides",
    "build",
    "check_resume",
    "check_types",
    "diff",
    "evaluate_checkpoint",
    "from_dict",
    "load",
    "load_config",
    "make_mesh",
    "make_state",
    "make_steps",
    "override",
    "resolve",
    "shard_batch",
    "train_and_evaluate",
    "validate",
]
