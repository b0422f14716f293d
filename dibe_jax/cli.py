"""The ``dibe-jax`` command: a thin front door over the library's modules.

Subcommands:
  train        train a model with a loss on a dataset (checkpoints, metrics, plots).
  eval         evaluate a run's best (or latest) checkpoint on a split.
  predict      write mask and overlay PNGs for image files with a run's checkpoint.
  oii-search   OII-guided bisection of a loss hyperparameter (Appendix C), or a grid.
  analyze      Table 1 and the gradient/OII figures of the DIBE paper (PNG files).
  losses       list the registered losses with their hyperparameters.
  data stats   per-split statistics of a dataset next to the paper's Table 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _analyze(args: argparse.Namespace) -> int:
    from dibe_jax import analysis

    paths = analysis.run(args.out)
    print("Table 1 of the DIBE paper, recomputed (ours | paper):\n")
    print(analysis.table1_markdown())
    print("\nWrote:")
    for p in paths:
        print(f"  {p}")
    return 0


def _losses(args: argparse.Namespace) -> int:
    from dibe_jax import losses

    width = max(map(len, losses.names()))
    for name in losses.names():
        hyper = ", ".join(f"{k}={v}" for k, v in losses.hyperparameters(name).items())
        print(f"{name:<{width}}  {losses.describe(name)}")
        if hyper:
            print(f"{'':<{width}}    {hyper}")
    return 0


def _data_stats(args: argparse.Namespace) -> int:
    from dibe_jax.datasets import stats

    print(stats.run(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir))
    return 0


def _add_train_options(p: argparse.ArgumentParser, *, workdir: bool = True) -> None:
    p.add_argument("--dataset", help="NAME[/CONFIG], e.g. crackforest, magnetic_tile/crack, "
                   "synthetic_cracks/r150_96 (default)")  # fmt: skip
    p.add_argument("--data-dir", help="TFDS data_dir (where built datasets live)")
    p.add_argument("--manual-dir", help="folder with the raw files (offline builds)")
    p.add_argument("--model", help="unet (default), segnet, pspnet, deeplabv3, fcn, ...")
    p.add_argument("--loss", help="any name of `dibe-jax losses` (default dibe)")
    p.add_argument("--epochs", type=int, help="default 50 (the paper)")
    p.add_argument("--batch-size", type=int, help="global batch, default 32")
    p.add_argument("--image-size", type=int, help="train/eval image size (default: native)")
    p.add_argument("--eval-every", type=int, help="evaluate every N epochs (default 5)")
    p.add_argument("--seed", type=int, help="default 0")
    if workdir:
        p.add_argument("--workdir", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --workdir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field: loss.alpha=0.7, model.width=16")  # fmt: skip
    p.add_argument("--config", help="a config.json to start from (e.g. another run's)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host GPU, TPU pods)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config_from_args(args: argparse.Namespace):
    from dibe_jax import train

    if args.config:
        config = train.from_dict(json.loads(Path(args.config).read_text()))
    else:
        config = train.Config()
    fields = {
        "dataset": "data.dataset", "data_dir": "data.data_dir", "manual_dir": "data.manual_dir",
        "model": "model.name", "loss": "loss.name", "epochs": "epochs",
        "batch_size": "batch_size", "image_size": "data.image_size",
        "eval_every": "eval_every", "seed": "seed",
    }  # fmt: skip
    overrides = [f"{key}={getattr(args, a)!r}" for a, key in fields.items()
                 if getattr(args, a) is not None]  # fmt: skip
    train.apply_overrides(config, overrides)
    train.apply_overrides(config, args.set)
    if args.no_progress:
        config.progress = False
    return config


def _maybe_distributed(args: argparse.Namespace) -> None:
    if args.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        import jax

        jax.distributed.initialize()


def _train(args: argparse.Namespace) -> int:
    from dibe_jax import train
    from dibe_jax.train import reporting

    _maybe_distributed(args)
    config = _config_from_args(args)
    train.validate(config)
    record = train.train_and_evaluate(config, args.workdir, resume=args.resume,
                                      overwrite=args.overwrite)  # fmt: skip
    import jax

    if jax.process_index() == 0:
        records = reporting.MetricsLog(args.workdir, enabled=False)
        records.path = Path(args.workdir) / "metrics.jsonl"
        print("\n" + reporting.summary_table(records.read()))
        print(f"\nfinal: IoU {record['iou']:.4f}  PA {record['pa']:.4f}  "
              f"OII {record['oii']:+.4f}  ({record['seconds']:.0f} s)")  # fmt: skip
        w = Path(args.workdir)
        print(f"metrics: {w / 'metrics.jsonl'}\nplots: {w / 'plots'}\n"
              f"checkpoints: {w / 'checkpoints'}\ntensorboard: {w / 'tensorboard'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from dibe_jax import train

    out = train.evaluate_checkpoint(args.workdir, split=args.split, best=not args.latest)
    keys = ("iou", "pa", "recall", "oii", "fp_fn_ratio", "val_loss", "tp", "fp", "fn", "tn")
    print(f"{args.workdir} step {out['step']} (epoch {out['epoch']}) on {out['split']}:")
    for k in keys:
        print(f"  {k:12s} {out[k]}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dibe_jax.train.predict import predict

    for src, mask, overlay, frac in predict(args.workdir, args.input, args.out):
        print(f"{src}: {frac:.5f} defect -> {mask}, {overlay}")
    return 0


def _oii_search(args: argparse.Namespace) -> int:
    from dibe_jax import train, tuning

    base = _config_from_args(args)
    train.validate(base)
    workdir = Path(args.workdir)
    direction = -1 if args.param == "alpha" else 1

    def run(value: float) -> dict:
        import copy

        config = copy.deepcopy(base)
        config.loss.params[args.param] = value
        if args.tie_beta and args.param == "alpha":
            config.loss.params["beta"] = round(1 - value, 6)
        train.validate(config)
        record = train.train_and_evaluate(config, workdir / "runs" / f"{args.param}={value:g}",
                                          resume=args.resume, overwrite=args.overwrite)
        return {k: record[k] for k in ("iou", "pa", "oii", "recall", "seconds")}

    kwargs = dict(interval=tuple(args.interval), bounds=tuple(args.bounds),
                  direction=direction, parameter=args.param)  # fmt: skip
    if args.max_runs:
        kwargs["max_runs"] = args.max_runs
    if args.grid:
        kwargs["grid"] = args.grid
    guided = tuning.oii_search(run, **kwargs)
    out = {"oii_guidance": guided.to_dict()}
    grid = None
    if args.grid:
        grid = tuning.grid_search(run, bounds=tuple(args.bounds), points=args.grid + 1,
                                  parameter=args.param)  # fmt: skip
        out["grid_search"] = grid.to_dict()
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "oii_search.json.tmp"
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, workdir / "oii_search.json")
    print(guided.table(grid))
    print(f"\nwrote {workdir / 'oii_search.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dibe-jax",
        description="Losses, metrics and experiments of the DIBE paper in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model with a loss on a dataset",
        description="Train with the paper's setup (SGD 0.01, momentum 0.9, batch 32, 50 epochs, "
        "validation every 5) unless overridden; writes config.json, metrics.jsonl, "
        "tensorboard/, checkpoints/ and plots/ under --workdir.",
    )
    _add_train_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint",
                       description="Dataset-level IoU, PA, recall and OII of a run's best "
                       "(or latest) checkpoint on a split.")  # fmt: skip
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--latest", action="store_true", help="use the latest, not the best")
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="predict masks for image files",
                       description="Write <stem>_mask.png and <stem>_overlay.png for an image "
                       "file or every image in a folder.")  # fmt: skip
    p.add_argument("--workdir", required=True)
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "oii-search",
        help="OII-guided search of alpha or beta (Appendix C)",
        description="Bisection on a loss hyperparameter until the validation OII falls inside "
        "--interval (raising alpha lowers OII); with --grid K also the (K+1)-point grid "
        "search, and a Table 6-style comparison. Each run trains in WORKDIR/runs/.",
    )
    p.add_argument("--param", default="alpha", choices=["alpha", "beta"])
    p.add_argument("--interval", type=float, nargs=2, default=[0.15, 0.25], metavar=("M0", "M1"))
    p.add_argument("--bounds", type=float, nargs=2, default=[0.1, 0.9], metavar=("LO", "HI"))
    p.add_argument("--max-runs", type=int, help="stop after this many trainings")
    p.add_argument("--grid", type=int, help="K: also run the grid search on K+1 points")
    p.add_argument("--tie-beta", action="store_true", help="set beta = 1 - alpha in each run")
    _add_train_options(p)
    p.set_defaults(func=_oii_search)

    p = sub.add_parser(
        "analyze",
        help="write Table 1 and Figs. 4, 5, 12, 13, 15 of the paper",
        description="Print Table 1 (OII) and draw Figs. 4, 5, 12, 13 and 15 as PNG files.",
    )
    p.add_argument("--out", default="results/analysis", help="output folder (created)")
    p.set_defaults(func=_analyze)

    p = sub.add_parser(
        "losses",
        help="list the registered losses",
        description="List every registered loss and its hyperparameters.",
    )
    p.set_defaults(func=_losses)

    data = sub.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = data_sub.add_parser(
        "stats",
        help="images per split, sizes and FG:BG ratios",
        description="Images per split, sizes and FG:BG ratios, next to the paper's Table 2.",
    )
    p.add_argument("name", help="dataset as NAME[/CONFIG], e.g. crackforest, thc/thc448")
    p.add_argument("--data-dir", help="TFDS data_dir (where built datasets live)")
    p.add_argument("--manual-dir", help="folder holding the raw files, for offline builds")
    p.set_defaults(func=_data_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dibe-jax`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
