"""The ``dibe-jax`` command: a thin front door over the library's modules.

Subcommands:
  train        train a model with a loss on a dataset (checkpoints, metrics, plots).
  eval         evaluate a run's best (or latest) checkpoint on a split.
  predict      write mask and overlay PNGs for image files with a run's checkpoint.
  calibrate    choose a binary run's logit threshold on validation (OII to 0, or best IoU).
  export       write a run's model as StableHLO (jax.export) and ONNX, with what a consumer needs.
  oii-search   OII-guided bisection of a loss hyperparameter (Appendix C), or a grid; on a
               binary run's OII, or a multi-class run's macro OII or one class's OII.
  analyze      Table 1 and the gradient/OII figures of the DIBE paper (PNG files).
  losses       list the registered losses with their hyperparameters.
  configs      list the shipped configs (the paper's settings, ``--config NAME``).
  data stats   per-split statistics of a dataset next to the paper's Table 2.

A user error (a flag, a config value, a name, a file) prints one line
``dibe-jax: error: ...`` and exits with status 2; anything else is a bug: its traceback is
printed with a line asking to report it, and the status is 1.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import traceback
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
    print("Kinds of loss:")
    for k, v in losses.KINDS.items():
        print(f"  {k:<11} {v}")
    print(
        "A loss trains on a binary dataset (2 classes) if it takes {0, 1} masks, on a "
        "multi-class one if it takes class ids.\n"
    )
    trains = {"binary": "binary", "multiclass": "multi-class"}
    for name in losses.names():
        entry = losses.info(name)
        hyper = ", ".join(f"{k}={v}" for k, v in losses.hyperparameters(name).items())
        options = ", ".join(f"loss.{k}={v}" for k, v in entry.step_options.items())
        print(f"{name:<{width}}  {losses.describe(name)}")
        on = " and ".join(trains[t] for t in entry.tasks)
        print(f"{'':<{width}}    {losses.describe_kind(name, short=True)}; trains on {on} data")
        if hyper:
            print(f"{'':<{width}}    {hyper}")
        if options:
            print(f"{'':<{width}}    training step: {options}")
    return 0


def _configs(args: argparse.Namespace) -> int:
    from dibe_jax import configs

    width = max(map(len, configs.names()))
    for name in configs.names():
        print(f"{name:<{width}}  {configs.describe(name)}")
    print(
        "\nUse one with `dibe-jax train --config NAME` (change a field with "
        "--config.loss.alpha=0.7); its docstring gives the command and the expected result: "
        "python -c 'import dibe_jax.configs.NAME as m; help(m.get_config)'"
    )
    return 0


def _data_stats(args: argparse.Namespace) -> int:
    from dibe_jax import datasets
    from dibe_jax.datasets import stats
    from dibe_jax.errors import ConfigError

    try:
        datasets.check_spec(args.name)
    except ValueError as e:
        raise ConfigError(f"NAME: {e}") from None
    print(
        stats.run(
            args.name,
            data_dir=args.data_dir,
            manual_dir=args.manual_dir,
            val_fraction=args.val_fraction,
        )
    )
    return 0


def _add_train_options(
    p: argparse.ArgumentParser, *, workdir: bool = True, distributed: bool = True
) -> None:
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


def _config_from_args(args: argparse.Namespace, workdir: Path | None = None):
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


def _maybe_distributed(args: argparse.Namespace) -> None:
    if args.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        import jax

        jax.distributed.initialize()


def _train(args: argparse.Namespace) -> int:
    from dibe_jax import train
    from dibe_jax.train import reporting

    _maybe_distributed(args)
    workdir = Path(args.workdir)
    config = _config_from_args(args, workdir)
    record = train.train_and_evaluate(config, workdir, resume=args.resume, overwrite=args.overwrite)
    import jax

    if jax.process_index() == 0:
        print("\n" + reporting.summary_table(reporting.read_metrics(workdir)))
        if "miou" in record:
            print(
                f"\nfinal: mIoU {record['miou']:.4f}  mAcc {record['macc']:.4f}  "
                f"macro OII {record['macro_oii']:+.4f}  ({record['seconds']:.0f} s)"
            )
        else:
            print(
                f"\nfinal: IoU {record['iou']:.4f}  PA {record['pa']:.4f}  "
                f"OII {record['oii']:+.4f}  ({record['seconds']:.0f} s)"
            )
        print(
            f"metrics: {workdir / 'metrics.jsonl'}\nplots: {workdir / 'plots'}\n"
            f"checkpoints: {workdir / 'checkpoints'}\ntensorboard: {workdir / 'tensorboard'}"
        )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from dibe_jax import train
    from dibe_jax.train import reporting

    out = train.evaluate_checkpoint(
        args.workdir,
        split=args.split,
        best=not args.latest,
        dataset=args.dataset,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
    )
    which = "latest" if args.latest else "best"
    on = f" of {args.dataset}" + (f" {args.manual_dir}" if args.manual_dir else "")
    print(
        f"{args.workdir}: {which} checkpoint, step {out['step']} (epoch {out['epoch']}), "
        f"on the {out['split']} split{on if args.dataset else ''}\n"
    )
    print(reporting.eval_table(out))
    if "miou" not in out:  # a binary run with a calibrated threshold: both decisions
        from dibe_jax.train import calibrate

        recorded = calibrate.recorded_threshold(args.workdir, out["step"])
        if recorded.value is None:
            print(f"\nthreshold: {recorded.reason}")
        else:
            both = calibrate.metrics_at_thresholds(
                args.workdir, [0.0, recorded.value], split=args.split, best=not args.latest
            )
            rows = [("logit 0", both["rows"][0]), (f"logit {recorded.value:g}", both["rows"][1])]
            print(f"\nthreshold: {recorded.reason}\n\n{calibrate.rows_table(rows)}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dibe_jax.train.predict import predict

    window = args.window
    report = predict(
        args.workdir,
        args.input,
        args.out,
        best=not args.latest,
        window=window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        scale=args.scale,
        threshold=args.threshold,
    )
    if report.threshold is not None:
        print(f"threshold: {report.threshold}")
    for w in report.written:
        detail = ""
        if w.class_fractions is not None:
            pairs = zip(report.class_names[1:], w.class_fractions[1:], strict=True)
            detail = " (" + ", ".join(f"{n} {f:.5f}" for n, f in pairs) + ")"
        print(f"{w.input}: {w.defect_fraction:.5f} defect{detail} -> {w.mask}")
    print(report.summary())
    return 0 if report.written else 1


def _calibrate(args: argparse.Namespace) -> int:
    from dibe_jax.train import calibrate

    result = calibrate.calibrate(
        args.workdir, target=args.target, split=args.split, best=not args.latest
    )
    c = result.choice
    goal = "OII closest to 0" if c.target == "oii" else "the highest IoU"
    print(
        f"{args.workdir}: checkpoint of step {result.step} (epoch {result.epoch}), "
        f"{result.split} split; threshold for {goal}: logit {c.threshold:g}\n"
    )
    rows = [("logit 0", c.at_zero), (f"logit {c.threshold:g}", c.at_threshold)]
    print(calibrate.rows_table(rows))
    print(f"\nwrote {result.path} (eval and predict use it for this checkpoint)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dibe_jax.train.export import FORMATS, export_run

    formats = FORMATS if args.format == "all" else (args.format,)
    if args.size is not None and len(args.size) > 2:
        from dibe_jax.train import ConfigError

        raise ConfigError(f"--size: expected H or H W, got {len(args.size)} numbers")
    size = None if args.size is None else (args.size * 2)[:2]
    report = export_run(
        args.workdir,
        args.out,
        formats=formats,
        best=not args.latest,
        size=size,
        overwrite=args.overwrite,
    )
    info = report.info
    for kind, path in report.files.items():
        shape = info["shapes"][kind]
        fixed = ", ".join(shape["fixed"]) or "none"
        diff = info["verified"]["max_abs_logit_difference"][kind]
        print(
            f"{kind}: {path}  input {shape['shape']} (fixed: {fixed}); max |logit diff| {diff:.2g}"
        )
        for why in shape["why_fixed"]:
            print(f"  not symbolic: {why}")
    decision = info["decision"]
    rule = decision.get("threshold_source", decision["rule"])
    print(f"decision: {rule}\nwrote {report.out / 'export.json'}")
    return 0


def _oii_search(args: argparse.Namespace) -> int:
    from dibe_jax import tuning
    from dibe_jax.errors import ConfigError
    from dibe_jax.train import runs

    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        raise ConfigError(
            "oii-search: runs in one process (its runs read one another's files); "
            "JAX_COORDINATOR_ADDRESS is set, as for a multi-process launch: unset it"
        )
    workdir = Path(args.workdir)
    plan = tuning.plan_search(
        _config_from_args(args),
        param=args.param,
        steer=args.steer,
        interval=args.interval,
        bounds=args.bounds,
        seeds=args.seeds,
        max_runs=args.max_runs,
        grid=args.grid,
        fixed={k: getattr(args, k) for k in ("alpha", "beta") if getattr(args, k) is not None},
    )
    guided, grid = tuning.run_search(plan, workdir, log=print, overwrite=args.overwrite)
    print(
        f"Each value: {len(plan.seeds)} seed(s) trained; steered on "
        f"{tuning.steered_words(plan.steer)}; OII, IoU and PA are the mean of the last "
        f"{runs.LAST_N} evaluations of every seed (the reporting rule of docs/conventions.md).\n"
    )
    print(guided.table(grid))
    print(
        f"\nwrote {workdir / 'oii_search.json'}"
        + (f" and {workdir / 'grid_search.json'}" if grid else "")
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from dibe_jax import train
    from dibe_jax.train import runs, sweep

    if args.seed is not None:
        raise train.ConfigError("--seed: a sweep takes its seeds from --seeds")
    if args.config and args.resume:
        raise train.ConfigError("--config: not with --resume (each member keeps its config)")
    config = _config_from_args(args)
    members = sweep.members(config, sweep.parse_sweep(args.sweep), args.seeds)
    workdir = Path(args.workdir)
    print(f"sweep: {len(members)} members ({len(args.seeds)} seed(s) each) in {workdir}")
    result = sweep.train_members(
        members,
        workdir,
        overwrite=args.overwrite,
        resume=args.resume,
        strategy=args.strategy,
        chunk=args.sweep_chunk,
        log=print,
    )
    keys = ("miou", "macro_oii") if "miou" in (result.records[0] or [{}])[-1] else ("iou", "oii")
    print(f"\n| setting | seeds | {keys[0]} (last 3) | {keys[1]} (last 3) |\n|---|---|---|---|")
    for name in dict.fromkeys(m.setting for m in result.members):
        r = result.seed_runs(name)
        cells = [runs.fmt(r.last3(k)) for k in keys]
        print(f"| {name} | {len(r.seeds)} | {cells[0]} | {cells[1]} |")
    print(
        f"\nwrote {workdir / 'sweep.json'} ({result.summary['strategy']}, "
        f"{result.summary['wall_seconds']:.0f} s)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs between launches (default: a persistent XLA "
        "cache in $DIBE_JAX_CACHE_DIR or ~/.cache/dibe_jax/jax)",
    )
    parser = argparse.ArgumentParser(
        prog="dibe-jax",
        description="Losses, metrics and experiments of the DIBE paper in JAX.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add(
        "train",
        help="train a model with a loss on a dataset",
        description="Train with the paper's setup (SGD 0.01, momentum 0.9, batch 32, 50 epochs, "
        "validation every 5) unless overridden; writes config.json, metrics.jsonl, "
        "tensorboard/, checkpoints/ and plots/ under --workdir. Ctrl-C (SIGINT) or SIGTERM "
        "saves a checkpoint and prints the command that resumes the run.",
    )
    _add_train_options(p)
    p.set_defaults(func=_train)

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
    p.set_defaults(func=_eval)

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
    p.set_defaults(func=_predict)

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
    p.set_defaults(func=_calibrate)

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
    p.set_defaults(func=_export)

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
    _add_train_options(p, distributed=False)  # one process: see _oii_search
    p.set_defaults(func=_oii_search)

    p = add(
        "sweep",
        help="train loss hyperparameters, learning rates x seeds in one compiled program",
        description="Train every combination of the --sweep values with every seed as the "
        "members of one jitted program (stacked states; --strategy vmap or lax.map); each "
        "member is a normal run folder WORKDIR/<value>/seed<k> (eval, predict and train "
        "--resume work on it) and WORKDIR/sweep.json summarises the settings by the mean of "
        "the last 3 evaluations of every seed. Only real-valued loss hyperparameters and the "
        "optimiser's numbers (optim.lr, optim.momentum, optim.grad_clip) may be swept (the "
        "members share one program).",
    )
    _add_train_options(p)
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
        choices=["auto", "vmap", "map"],
        help="members as one vmapped program or a lax.map over them (default: the faster on "
        "this platform, as benchmarks/sweep.py measured)",
    )
    p.add_argument(
        "--sweep-chunk", type=int, help="at most this many members per program (default all)"
    )
    p.set_defaults(func=_cmd_sweep)

    p = add(
        "analyze",
        help="write Table 1 and Figs. 4, 5, 12, 13, 15 of the paper",
        description="Print Table 1 (OII) and draw Figs. 4, 5, 12, 13 and 15 as PNG files.",
    )
    p.add_argument("--out", default="results/analysis", help="output folder (created)")
    p.set_defaults(func=_analyze)

    p = add(
        "losses",
        help="list the registered losses",
        description="List every registered loss and its hyperparameters.",
    )
    p.set_defaults(func=_losses)

    p = add(
        "configs",
        help="list the shipped configs",
        description="List the shipped configs (dibe_jax/configs: the paper's settings and the "
        "demo) with what each reproduces; start from one with `train --config NAME`.",
    )
    p.set_defaults(func=_configs)

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
    p.set_defaults(func=_data_stats)
    return parser


def _config_dot_flags(argv: Sequence[str]) -> list[str]:
    """``--config.loss.alpha=0.7`` / ``--config.loss.alpha 0.7`` -> ``--set loss.alpha=0.7``
    (the Flax-examples and big_vision spelling of an override)."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            key, eq, value = a[len("--config.") :].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    out.append(a)  # argparse reports it
                    break
                value, i = argv[i + 1], i + 1
            out += ["--set", f"{key}={value}"]
        else:
            out.append(a)
        i += 1
    return out


def _one_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    if len(lines) > 1 and lines[1].startswith("hint: "):  # a short second line that helps
        return f"{lines[0]}\n{lines[1]}"
    return lines[0] if lines else type(e).__name__


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by tests)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("dibe_jax")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("dibe-jax: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dibe-jax`` console script.

    User errors (:class:`dibe_jax.errors.UserError`: bad flags, config values, names, files,
    checkpoints) print one line ``dibe-jax: error: ...`` to stderr and return 2 (``--debug``
    raises them instead); an interrupted training returns 130 (SIGINT) or 143 (SIGTERM)
    after saving; any other exception is a bug: its traceback, a line saying so, status 1.
    """
    argv = _config_dot_flags(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _setup_logging()
    from dibe_jax.errors import UserError
    from dibe_jax.train import compile_cache

    # Entry-point setting: compiled programs persist between launches (unless configured).
    if args.no_compile_cache:
        compile_cache.disable()
    else:
        compile_cache.enable()
    from dibe_jax.train import Interrupted, NonFiniteError

    try:
        return args.func(args)
    except Interrupted as e:
        print(f"dibe-jax: interrupted by {e}", file=sys.stderr)
        print(f"resume with: dibe-jax train --workdir {e.workdir} --resume", file=sys.stderr)
        return 128 + int(e.signum)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("dibe-jax: interrupted", file=sys.stderr)
        return 130
    except NonFiniteError as e:
        if args.debug:
            raise
        print(f"dibe-jax: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except UserError as e:
        if args.debug:
            raise
        print(f"dibe-jax: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (`dibe-jax configs | head`)
        try:  # Python's flush at exit would fail on the closed pipe again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file here (replaced, e.g. by a test)
            pass
        return 141
    except Exception:  # noqa: BLE001 - a bug: shown in full, never as a user's mistake
        if args.debug:
            raise
        traceback.print_exc()
        print(
            "dibe-jax: internal error (a bug): please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
