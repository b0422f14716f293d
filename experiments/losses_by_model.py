"""Tables 3 and 4 of the DIBE paper: losses x networks on one dataset (THC448 in the paper;
synthetic 1:2200 here by default), IoU and PA.

Table 3, distribution losses: CE (``bce``), Focal, DIBE_Dis (α = 0.3 throughout).
Table 4, region and compound losses: Dice, Tversky, FT, DIBE_Reg, Combo, EL (``exp_log``),
HF (``hybrid_focal``), DIBE. Networks: SegNet, U-Net, PSPNet, DeepLabv3. Hyperparameters are
the paper's defaults (Sec. 4.3.2).

Command::

    python -m experiments.losses_by_model                        # full: 44 cells x 3 seeds
    python -m experiments.losses_by_model --dataset syn580 --models unet segnet
    python -m experiments.losses_by_model --quick                # seconds

Runtime: ``--quick`` (U-Net, CE and DIBE_Reg) about 20-40 s on 2 CPU cores; full mode is a
GPU job of 132 trainings of 50 epochs. Run for ``EXPERIMENTS.md`` on 2 CPU cores, reduced
(width 8, 96 px, 30 epochs, 1 seed; 46-145 s per training, 58 min for the 44 cells)::

    python -m experiments.losses_by_model --medium --dataset crack --seeds 1 \\
        --out results/losses_by_model

Expected result (paper): U-Net is the best network for every loss (Table 4); DIBE_Dis is
comparable to Focal (Table 3: 0.585 vs 0.585 on U-Net); DIBE_Reg and DIBE are generally at
least as good as FT and HF (Table 4: U-Net 0.652 vs 0.639, 0.646 vs 0.644).

Writes ``<out>/table3.md``, ``<out>/table4.md`` (IoU and PA last-3, ours beside the paper's
IoU) and ``<out>/tables34.json``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as `python experiments/losses_by_model.py`: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402

DISTRIBUTION = ("bce", "focal", "dibe_dis")
REGION = (
    "dice",
    "tversky",
    "focal_tversky",
    "dibe_reg",
    "combo",
    "exp_log",
    "hybrid_focal",
    "dibe",
)
MODELS = ("segnet", "unet", "pspnet", "deeplabv3")
LABELS = {
    "bce": "CE",
    "focal": "Focal",
    "dibe_dis": "DIBE_Dis",
    "dice": "Dice",
    "tversky": "Tversky",
    "focal_tversky": "FT",
    "dibe_reg": "DIBE_Reg",
    "combo": "Combo",
    "exp_log": "EL",
    "hybrid_focal": "HF",
    "dibe": "DIBE",
}
QUICK = dict(models=("unet",), losses=("bce", "dibe_reg"))

_COLS = ("segnet", "unet", "pspnet", "deeplabv3")
#: Tables 3 and 4 of the paper (IoU on THC448): loss -> model -> IoU.
PAPER_IOU = {
    loss: dict(zip(_COLS, values, strict=True))
    for loss, values in {
        "bce": (0.435, 0.577, 0.372, 0.259),
        "focal": (0.476, 0.585, 0.252, 0.293),
        "dibe_dis": (0.493, 0.585, 0.248, 0.286),
        "dice": (0.615, 0.641, 0.513, 0.554),
        "tversky": (0.607, 0.635, 0.550, 0.554),
        "focal_tversky": (0.607, 0.639, 0.505, 0.539),
        "dibe_reg": (0.617, 0.652, 0.515, 0.565),
        "combo": (0.595, 0.632, 0.545, 0.538),
        "exp_log": (0.593, 0.640, 0.549, 0.553),
        "hybrid_focal": (0.602, 0.644, 0.547, 0.507),
        "dibe": (0.600, 0.646, 0.558, 0.519),
    }.items()
}


def run(
    mode: common.Mode, out: str, *, dataset: str, models: Sequence[str], losses: Sequence[str]
) -> dict[tuple[str, str], common.CellResult]:
    """Train every (model, loss) on ``dataset``; results keyed by ``(loss, model)``."""
    return {
        (loss, model): common.run_cell(common.Cell(dataset, model, loss), mode, out)
        for loss, model in itertools.product(losses, models)
    }


def table(results, losses: Sequence[str], models: Sequence[str]) -> str:
    """IoU and PA (last-3) per loss and model, the paper's IoU beside ours."""
    header = ["loss"]
    for m in models:
        header += [f"{m} IoU", f"{m} PA", f"{m} IoU (paper)"]
    rows = []
    for loss in losses:
        row = [LABELS.get(loss, loss)]
        for m in models:
            r = results[loss, m]
            row += [
                common.fmt(r.last3("iou")),
                common.fmt(r.last3("pa")),
                common.fmt(PAPER_IOU.get(loss, {}).get(m)),
            ]
        rows.append(row)
    best = []
    for loss in losses:
        means = {m: results[loss, m].last3("iou").mean for m in models}
        best.append(f"{LABELS.get(loss, loss)}: {max(means, key=means.get)}")
    return (
        common.markdown_table(header, rows)
        + "\n\nBest network by IoU (last-3): "
        + "; ".join(best)
        + "."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser, default_out="losses_by_model")
    parser.add_argument("--dataset", default="syn2200")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--losses", nargs="+", help="default: every loss of Tables 3 and 4")
    args = parser.parse_args(argv)
    common.setup_jax()
    mode = common.mode_from_args(args)
    models = args.models or (QUICK["models"] if mode.quick else MODELS)
    losses = args.losses or (QUICK["losses"] if mode.quick else DISTRIBUTION + REGION)
    t0 = time.perf_counter()
    results = run(mode, args.out, dataset=args.dataset, models=models, losses=losses)
    wall = time.perf_counter() - t0
    intro = [
        common.mode_description(mode, [args.dataset]),
        f"Dataset: {common.resolve_dataset(args.dataset).label}; the paper's numbers are "
        "THC448. " + common.stats_legend(),
    ]
    paths = []
    for number, family, title in (
        (3, DISTRIBUTION, "distribution-based losses"),
        (4, REGION, "region-based and compound losses"),
    ):
        chosen = [loss for loss in losses if loss in family]
        if chosen:
            paths.append(
                common.write_markdown(
                    Path(args.out) / f"table{number}.md",
                    f"Table {number}: {title} by network",
                    [*intro, table(results, chosen, models), f"Script wall time: {wall:.0f} s."],
                )
            )
    common.write_json(Path(args.out) / "tables34.json", [r.summary() for r in results.values()])
    for p in paths:
        print(p.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
