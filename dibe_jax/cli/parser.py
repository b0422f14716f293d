"""The argument parser of ``dibe-jax``: the options every subcommand takes, then one
function per subcommand that adds its parser (in the order ``--help`` lists them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dibe_jax.cli import commands
from dibe_jax.cli.options import add_train_options

_Add = Callable[..., argparse.ArgumentParser]  # adds a subcommand's parser


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that names a flag it does not know before a required one that
    is missing: ``dibe-jax train --bogus`` says ``unrecognized arguments: --bogus``, not
    that ``--workdir`` is required."""

    def parse_known_args(self, args=None, namespace=None):
        required = [a for a in self._actions if a.required and a.option_strings]
        for a in required:
            a.required = False
        try:
            namespace, extras = super().parse_known_args(args, namespace)
        finally:
            for a in required:
                a.required = True
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        missing = [a for a in required if getattr(namespace, a.dest, None) is None]
        if missing:
            names = ", ".join("/".join(a.option_strings) for a in missing)
            self.error(f"the following arguments are required: {names}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    """The ``dibe-jax`` parser; each subcommand sets ``func``, its function of ``commands``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs between launches (default: a persistent XLA "
        "cache in $DIBE_JAX_CACHE_DIR or ~/.cache/dibe_jax/jax)",
    )
    parser = _Parser(
        prog="dibe-jax",
        description="Losses, metrics and experiments of the DIBE paper in JAX.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    _add_train(add)
    _add_eval(add)
    _add_predict(add)
    _add_calibrate(add)
    _add_export(add)
    _add_oii_search(add)
    _add_sweep(add)
    _add_analyze(add)
    _add_losses(add)
    _add_configs(add)
    _add_data(add, common)
    return parser


def _add_train(add: _Add) -> None:
    p = add(
        "train",
        help="train a model with a loss on a dataset",
        description="Train with the paper's setup (SGD 0.01, momentum 0.9, batch 32, 50 epochs, "
        "validation every 5) unless overridden; writes config.json, metrics.jsonl, "
        "tensorboard/, checkpoints/ and plots/ under --workdir. Ctrl-C (SIGINT) or SIGTERM "
        "saves a checkpoint and prints the command that resumes the run.",
    )
    add_train_options(p)
    p.set_defaults(func=commands.cmd_train)


def _add_eval(add: _Add) -> None:
    p = add(
        "eval",
        help="evaluate a run's checkpoint",
        description="Dataset-level IoU, PA, recall and OII of a run's best (or latest) "
        "checkpoint on a split; everything else comes from the run's config.json.",
    )
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="validation", help="default validation")
    p.add_argument("--latest", action="store_true", help="use the latest, not the best")
    p.add_argument(
        "--dataset",
        help="evaluate on another dataset than the run's (same classes and channels): "
        "NAME[/CONFIG], or folder with --manual-dir PATH (your own images and masks)",
    )
    p.add_argument("--data-dir", help="TFDS data_dir of --dataset (or instead of the run's)")
    p.add_argument("--manual-dir", help="raw files of --dataset, or the folder of --dataset folder")
    p.set_defaults(func=commands.cmd_eval)


def _add_predict(add: _Add) -> None:
    p = add(
        "predict",
        help="predict masks for image files",
        description="Write <stem>_mask.png and <stem>_overlay.png (the input's size) for an "
        "image file or every image in a folder, at the scale training saw its images (--scale "
        "native: each image's own resolution); sliding windows of the training size, blended, "
        "for larger images.",
    )
    p.add_argument("--workdir", required=True)
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument(
        "--window", type=int, help="sliding-window size (default: the run's training size)"
    )
    p.add_argument(
        "--overlap", type=float, default=0.25, help="window overlap in [0, 1) (default 0.25)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument(
        "--scale",
        choices=["train", "native"],
        default="train",
        help="train (default): resize each image as training resized its images, predict, "
        "resize the result back; native: every image at its own size",
    )
    p.add_argument("--latest", action="store_true", help="use the latest, not the best")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threshold",
        type=float,
        help="binary runs: predict defect where logit >= T (default: the run's calibrated "
        "threshold, see `dibe-jax calibrate`, else 0)",
    )
    p.set_defaults(func=commands.cmd_predict)


def _add_calibrate(add: _Add) -> None:
    p = add(
        "calibrate",
        help="choose a binary run's logit threshold on validation",
        description="One pass of the best (or latest) checkpoint over a split collects logit "
        "histograms of defect and background pixels; the threshold that brings OII closest "
        "to 0 (or maximises IoU) among 2049 candidates in [-16, 16] (step 1/64) is recorded "
        "in WORKDIR/threshold.json, which eval and predict then use for that checkpoint.",
    )
    p.add_argument("--workdir", required=True)
    p.add_argument(
        "--target",
        default="oii",
        help="oii (default: as many misses as false alarms) or iou (the highest IoU)",
    )
    p.add_argument("--split", default="validation", help="default validation")
    p.add_argument("--latest", action="store_true", help="use the latest, not the best")
    p.set_defaults(func=commands.cmd_calibrate)


def _add_export(add: _Add) -> None:
    p = add(
        "export",
        help="export a run's model as StableHLO and ONNX",
        description="Write OUT/model.stablehlo.bin (jax.export), OUT/model.onnx (jax2onnx; "
        "pip install 'dibe_jax[export]') and OUT/export.json (input layout, normalisation, "
        "size rule, classes, threshold), each file verified against the JAX model. Batch, "
        "height and width are symbolic where the network allows, else fixed to --size.",
    )
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--format", default="all", help="all (default), stablehlo or onnx")
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        metavar="S",
        help="H [W] of a network that needs a fixed size (default: the training size)",
    )
    p.add_argument("--latest", action="store_true", help="use the latest, not the best")
    p.add_argument("--overwrite", action="store_true", help="replace the files in --out")
    p.set_defaults(func=commands.cmd_export)


def _add_oii_search(add: _Add) -> None:
    p = add(
        "oii-search",
        help="OII-guided search of alpha or beta (Appendix C)",
        description="Bisection on a loss hyperparameter until the validation OII falls inside "
        "--interval (raising alpha lowers OII; with a one-vs-rest multi-class loss, each "
        "class's OII); with --grid K also the (K+1)-point grid search, and a Table 6-style "
        "comparison. A binary run is steered on its OII; a multi-class run on the macro OII "
        "(mean per-class OII) or one class's OII (--steer). Each run trains in WORKDIR/runs/.",
    )
    p.add_argument(
        "--param",
        default="alpha",
        choices=["alpha", "beta"],
        help="the searched hyperparameter; the loss must take it (default alpha)",
    )
    p.add_argument(
        "--steer",
        metavar="CLASS|macro",
        help="multi-class datasets: steer on one class's OII (its name or metrics key, e.g. "
        "crack; IoU and PA are then that class's IoU and precision) or on 'macro', the "
        "default (macro_oii, the mean per-class OII; IoU and PA are miou and "
        "macro_precision); binary datasets: leave it out (the foreground's OII)",
    )
    p.add_argument(
        "--interval",
        type=float,
        nargs=2,
        default=[0.15, 0.25],
        metavar=("M0", "M1"),
        help="target OII interval, open (default 0.15 0.25, the paper's on THC448)",
    )
    p.add_argument(
        "--bounds",
        type=float,
        nargs=2,
        default=[0.1, 0.9],
        metavar=("LO", "HI"),
        help="search range of the hyperparameter (default 0.1 0.9); the centre is tried first",
    )
    p.add_argument("--max-runs", type=int, help="stop after this many trainings")
    p.add_argument("--grid", type=int, help="K: also run the grid search on K+1 points")
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="seeds per value (default 3); the search steers on the mean over seeds of the "
        "last 3 evaluations",
    )
    p.add_argument("--alpha", type=float, help="fix alpha while beta is searched")
    p.add_argument(
        "--beta",
        type=float,
        help="fix beta while alpha is searched (default: the other is 1 - the searched value)",
    )
    add_train_options(p, distributed=False)  # one process: see commands.cmd_oii_search
    p.set_defaults(func=commands.cmd_oii_search)


def _add_sweep(add: _Add) -> None:
    p = add(
        "sweep",
        help="train loss hyperparameters, learning rates x seeds in one compiled program",
        description="Train every combination of the --sweep values with every seed as the "
        "members of one compiled program (stacked states; --strategy); each "
        "member is a normal run folder WORKDIR/<value>/seed<k> (eval, predict and train "
        "--resume work on it) and WORKDIR/sweep.json summarises the settings by the mean of "
        "the last 3 evaluations of every seed. Only real-valued loss hyperparameters and the "
        "optimiser's numbers (optim.lr, optim.momentum, optim.grad_clip) may be swept (the "
        "members share one program). Ctrl-C (SIGINT) or SIGTERM saves every member after the "
        "current step; the same command with --resume continues them.",
    )
    add_train_options(p)
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,...",
        help="a field and its values, e.g. loss.alpha=0.3,0.5,0.7 or optim.lr=0.01,0.05 "
        "(repeat the flag for a product of several)",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="the seeds of every value (default 0)"
    )
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "vmap", "map", "loop"],
        help="members as one vmapped program, a lax.map over them, or one call per member of "
        "a program that steps its slot (default: the fastest on this platform, as "
        "benchmarks/sweep.py measured: loop on a CPU, map on a GPU)",
    )
    p.add_argument(
        "--sweep-chunk", type=int, help="at most this many members per program (default all)"
    )
    p.set_defaults(func=commands.cmd_sweep)


def _add_analyze(add: _Add) -> None:
    p = add(
        "analyze",
        help="write Table 1 and Figs. 4, 5, 12, 13, 15 of the paper",
        description="Print Table 1 (OII) and draw Figs. 4, 5, 12, 13 and 15 as PNG files.",
    )
    p.add_argument("--out", default="results/analysis", help="output folder (created)")
    p.set_defaults(func=commands.cmd_analyze)


def _add_losses(add: _Add) -> None:
    p = add(
        "losses",
        help="list the registered losses",
        description="List every registered loss and its hyperparameters.",
    )
    p.set_defaults(func=commands.cmd_losses)


def _add_configs(add: _Add) -> None:
    p = add(
        "configs",
        help="list the shipped configs",
        description="List the shipped configs (dibe_jax/configs: the paper's settings and the "
        "demo) with what each reproduces; start from one with `train --config NAME`.",
    )
    p.set_defaults(func=commands.cmd_configs)


def _add_data(add: _Add, common: argparse.ArgumentParser) -> None:
    data = add("data", help="dataset tools", description="Dataset tools.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = data_sub.add_parser(
        "stats",
        parents=[common],
        help="images per split, sizes and FG:BG ratios",
        description="Images per split, sizes and FG:BG ratios, next to the paper's Table 2.",
    )
    p.add_argument(
        "name",
        help="dataset as NAME[/CONFIG], e.g. crackforest, thc/thc448; or folder (your own "
        "images and masks, with --manual-dir PATH)",
    )
    p.add_argument("--data-dir", help="TFDS data_dir (where built datasets live)")
    p.add_argument(
        "--manual-dir",
        help="folder holding the raw files, for offline builds; for folder: PATH with "
        "train/{images,masks} and val/{images,masks}, or images/ and masks/",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="folder with only images/ and masks/: validation share (default 0.2)",
    )
    p.set_defaults(func=commands.cmd_data_stats)
