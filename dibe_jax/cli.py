"""The ``dibe-jax`` command: a thin front door over the library's modules.

Subcommands:
  analyze      Table 1 and the gradient/OII figures of the DIBE paper (PNG files).
  losses       list the registered losses with their hyperparameters.
  data stats   per-split statistics of a dataset next to the paper's Table 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dibe-jax",
        description="Losses, metrics and experiments of the DIBE paper in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
