"""Training and evaluation: config, data-parallel steps, checkpoints, the loop."""

from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.config import (
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    apply_overrides,
    from_dict,
)
from dibe_jax.train.loop import (
    NonFiniteError,
    build,
    evaluate_checkpoint,
    load_config,
    make_state,
    train_and_evaluate,
    validate,
)
from dibe_jax.train.step import make_mesh, make_steps, shard_batch

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "NonFiniteError",
    "OptimConfig",
    "apply_overrides",
    "build",
    "evaluate_checkpoint",
    "from_dict",
    "load_config",
    "make_mesh",
    "make_state",
    "make_steps",
    "shard_batch",
    "train_and_evaluate",
    "validate",
]
