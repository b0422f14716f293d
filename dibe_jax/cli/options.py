"""The training options several subcommands share (train, oii-search, sweep) and the
flags -> config plumbing: a run's config from ``--config``, ``--set`` and the flags."""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path


def add_train_options(
    p: argparse.ArgumentParser, *, workdir: bool = True, distributed: bool = True
) -> None:
    """Adds the options of a training (dataset, model, loss, schedule, config) to ``p``."""
    names = ", ".join(_dataset_names())
    p.add_argument(
        "--dataset",
        help=f"NAME[/CONFIG] of {names}; e.g. crackforest (CFD 160x160 tiles), "
        "magnetic_tile/crack (images of varying size, trained at 224x224 unless --image-size), "
        "magnetic_tile/all (6 classes), synthetic_cracks/r150_96 (default, generated, no files "
        "needed), synthetic_cracks/multi_96 (3 classes, generated); or folder: your own "
        "images and masks in --manual-dir PATH (PATH/train/{images,masks} and "
        "PATH/val/{images,masks}, or PATH/images and PATH/masks)",
    )
    p.add_argument("--data-dir", help="TFDS data_dir (where built datasets live)")
    p.add_argument(
        "--manual-dir",
        help="folder with the raw files (offline builds); for --dataset folder, your folder",
    )
    p.add_argument("--model", help="unet (default), segnet, pspnet, deeplabv3, fcn, ...")
    p.add_argument(
        "--loss",
        help="a loss of `dibe-jax losses` of the dataset's kind: binary for 2 classes, "
        "multi-class for more (default dibe, which does both)",
    )
    p.add_argument("--epochs", type=int, help="default 50 (the paper); with --resume: extend")
    p.add_argument("--batch-size", type=int, help="global batch, default 32")
    p.add_argument(
        "--image-size",
        type=int,
        help="train/eval image size (default: the dataset's own, or its stated default)",
    )
    p.add_argument("--eval-every", type=int, help="evaluate every N epochs (default 5)")
    p.add_argument("--seed", type=int, help="default 0")
    if workdir:
        p.add_argument("--workdir", required=True, help="output folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir from its config.json and last checkpoint "
        "(other flags: only --epochs, --eval-every and progress/logging options may change)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --workdir")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, typed: loss.alpha=0.7, model.width=16, optim.lr=0.05 "
        "(also written --config.loss.alpha=0.7)",
    )
    p.add_argument(
        "--config",
        metavar="NAME|PATH",
        help="a config to start from: a shipped one by name (`dibe-jax configs` lists them, "
        "e.g. cfd_unet_dibe), a .py file with get_config() or a run's config.json",
    )
    if distributed:
        p.add_argument(
            "--distributed",
            action="store_true",
            help="call jax.distributed.initialize() (multi-host GPU, TPU pods)",
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _dataset_names() -> tuple[str, ...]:
    from dibe_jax import datasets

    return datasets.names()


_FLAG_FIELDS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "manual_dir": "data.manual_dir",
    "model": "model.name",
    "loss": "loss.name",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "image_size": "data.image_size",
    "eval_every": "eval_every",
    "seed": "seed",
}


def _apply_flags(config, args: argparse.Namespace) -> None:
    from dibe_jax import train

    values = {
        key: getattr(args, a) for a, key in _FLAG_FIELDS.items() if getattr(args, a) is not None
    }
    train.override(config, values)
    train.apply_overrides(config, args.set)
    if args.no_progress:
        config.progress = False


def config_from_args(args: argparse.Namespace, workdir: Path | None = None):
    """The run's config: ``workdir/config.json`` when resuming it, else ``--config`` (a
    shipped name or a file) or the defaults; then the flags, typed. Checked completely
    once, by whatever runs it (``train_and_evaluate``, the search's plan)."""
    from dibe_jax import configs, train

    if args.resume and workdir is not None and (workdir / "config.json").is_file():
        if args.config:
            raise train.ConfigError(
                "--config: not with --resume, which continues the run's own config.json "
                "(give the changes a resume allows as flags: --epochs, --eval-every)"
            )
        config = copy.deepcopy(train.load_config(workdir))
    elif args.config:
        config = configs.load(args.config)
    else:
        config = train.Config()
    _apply_flags(config, args)
    return config


def maybe_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize()`` for ``--distributed`` or a multi-process launch."""
    if args.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        import jax

        jax.distributed.initialize()
