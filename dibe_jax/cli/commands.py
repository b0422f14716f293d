"""The subcommands of ``dibe-jax``: one function per subcommand, ``cmd_NAME(args) ->
exit status``; each imports the library's modules it calls when it runs."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from dibe_jax.cli.options import config_from_args, maybe_distributed


def cmd_train(args: argparse.Namespace) -> int:
    from dibe_jax import train
    from dibe_jax.train import reporting

    maybe_distributed(args)
    workdir = Path(args.workdir)
    config = config_from_args(args, workdir)
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


def cmd_eval(args: argparse.Namespace) -> int:
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


def cmd_predict(args: argparse.Namespace) -> int:
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


def cmd_calibrate(args: argparse.Namespace) -> int:
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


def cmd_export(args: argparse.Namespace) -> int:
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


def cmd_oii_search(args: argparse.Namespace) -> int:
    from dibe_jax import tuning
    from dibe_jax.errors import ConfigError
    from dibe_jax.train import Interrupted, runs

    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        raise ConfigError(
            "oii-search: runs in one process (its runs read one another's files); "
            "JAX_COORDINATOR_ADDRESS is set, as for a multi-process launch: unset it"
        )
    workdir = Path(args.workdir)
    plan = tuning.plan_search(
        config_from_args(args),
        param=args.param,
        steer=args.steer,
        interval=args.interval,
        bounds=args.bounds,
        seeds=args.seeds,
        max_runs=args.max_runs,
        grid=args.grid,
        fixed={k: getattr(args, k) for k in ("alpha", "beta") if getattr(args, k) is not None},
    )
    try:
        guided, grid = tuning.run_search(plan, workdir, log=print, overwrite=args.overwrite)
    except Interrupted as e:  # the run saved: the same search, run again, continues it
        e.resume = _again(args)
        raise
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


def cmd_sweep(args: argparse.Namespace) -> int:
    from dibe_jax import train
    from dibe_jax.train import runs, sweep

    if args.seed is not None:
        raise train.ConfigError("--seed: a sweep takes its seeds from --seeds")
    config = config_from_args(args)
    members = sweep.members(config, sweep.parse_sweep(args.sweep), args.seeds)
    workdir = Path(args.workdir)
    print(f"sweep: {len(members)} members ({len(args.seeds)} seed(s) each) in {workdir}")
    try:
        result = sweep.train_members(
            members,
            workdir,
            overwrite=args.overwrite,
            resume=args.resume,
            strategy=args.strategy,
            chunk=args.sweep_chunk,
            log=print,
        )
    except train.Interrupted as e:  # every member saved: the same command continues them
        e.resume = _again(args, "--resume")
        raise
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from dibe_jax import analysis

    paths = analysis.run(args.out)
    print("Table 1 of the DIBE paper, recomputed (ours | paper):\n")
    print(analysis.table1_markdown())
    print("\nWrote:")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
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


def cmd_configs(args: argparse.Namespace) -> int:
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


def cmd_data_stats(args: argparse.Namespace) -> int:
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


def _again(args: argparse.Namespace, *extra: str) -> str:
    """The command as typed, without ``--overwrite`` (it would delete what was saved) or
    ``--resume``, plus ``extra``: what continues an interrupted search or sweep."""
    again = [a for a in args.argv if a not in ("--overwrite", "--resume")]
    return shlex.join(["dibe-jax", *again, *extra])
