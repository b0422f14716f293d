"""Training and evaluation: config, data-parallel steps, checkpoints, the loop."""

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
from dibe_jax.train.loop import (
    Interrupted,
    NonFiniteError,
    build,
    evaluate_checkpoint,
    load_config,
    make_state,
    resolve,
    train_and_evaluate,
    validate,
)
from dibe_jax.train.step import make_mesh, make_steps, shard_batch

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
