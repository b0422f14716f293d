"""Table 5 of the DIBE paper: U-Net with FT, DIBE_Reg, HF and DIBE on datasets of growing
input imbalance (CFD 1:25, MTSDD Crack 1:113, MTSDD Blowhole 1:333, synthetic 1:190 / 1:580 /
1:2200 standing in for THC112 / THC224 / THC448, which are not public).

Command (full: the paper's 50 epochs, batch 32, SGD 0.01 / 0.9, 3 seeds; hours on a GPU)::

    python -m experiments.losses_by_dataset
    python -m experiments.losses_by_dataset --medium --epochs 50 --eval-every 5 \\
        --datasets cfd crack --out results/losses_by_dataset_e50           # 2 CPU cores
    python -m experiments.losses_by_dataset --quick                         # seconds

Runtime: ``--quick`` about 10-30 s on 2 CPU cores; the 50-epoch medium command above (the
paper's epochs at width 8 and 64 / 96 px) took 280-320 s per CFD training and 75-100 s per
Crack training on 2 shared cores, 77 min for 4 losses x 2 datasets x 3 seeds. The same
command with ``--datasets blowhole syn190_64_128_64 syn580_96_128_64 syn2200_128_128_64``
(small synthetic stand-ins for THC112/224/448) took 60-416 s per training. Full mode is a GPU
job (24 cells x 3 seeds).

Expected result (paper, Table 5): DIBE_Reg >= FT and DIBE >= HF in IoU on every dataset, by
0.002-0.013; our medium runs are far shorter and smaller, so expect lower IoU and
differences within the seed spread (see ``EXPERIMENTS.md``).

Writes ``<out>/table5.md`` (ours beside the paper's numbers) and ``<out>/table5.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python experiments/losses_by_dataset.py`: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402

LOSSES = ("focal_tversky", "dibe_reg", "hybrid_focal", "dibe")
LABELS = {"focal_tversky": "FT", "dibe_reg": "DIBE_Reg", "hybrid_focal": "HF", "dibe": "DIBE"}
DATASETS = ("cfd", "blowhole", "crack", "syn190", "syn580", "syn2200")
QUICK_DATASETS = ("cfd",)
QUICK_LOSSES = ("focal_tversky", "dibe_reg")

#: Table 5 of the paper (IoU, U-Net, one run each): dataset -> loss -> IoU.
PAPER_TABLE5 = {
    "THC448": {"focal_tversky": 0.639, "dibe_reg": 0.652, "hybrid_focal": 0.644, "dibe": 0.646},
    "Blowhole": {"focal_tversky": 0.774, "dibe_reg": 0.776, "hybrid_focal": 0.776, "dibe": 0.779},
    "Crack": {"focal_tversky": 0.708, "dibe_reg": 0.717, "hybrid_focal": 0.716, "dibe": 0.723},
    "CFD": {"focal_tversky": 0.501, "dibe_reg": 0.510, "hybrid_focal": 0.497, "dibe": 0.512},
}


def run(
    mode: common.Mode,
    out: str,
    *,
    datasets: Sequence[str] = DATASETS,
    losses: Sequence[str] = LOSSES,
    model: str = "unet",
) -> dict[tuple[str, str], common.CellResult]:
    """Train every (dataset, loss) cell under ``mode``; return the results by cell."""
    results = {}
    for d in datasets:
        for loss in losses:
            results[d, loss] = common.run_cell(common.Cell(d, model, loss), mode, out)
    return results


def _final_iou(result: common.CellResult, seed: int) -> float | None:
    """The last evaluation's IoU of one seed of ``result`` (``None`` if it was not run)."""
    if seed not in result.seeds:
        return None
    records = result.runs[result.seeds.index(seed)]
    return records[-1].get("iou") if records else None


def report(results: dict[tuple[str, str], common.CellResult], mode: common.Mode) -> str:
    """Table 5 in Markdown: IoU (last-3) per dataset and loss beside the paper's, then every
    statistic, then the paper's two claims checked on our numbers."""
    datasets = list(dict.fromkeys(d for d, _ in results))
    losses = list(dict.fromkeys(loss for _, loss in results))
    rows = []
    for d in datasets:
        ds = common.resolve_dataset(d)
        rows.append(
            [
                f"{ds.label} (ours, last-3)",
                *(common.fmt(results[d, loss].last3("iou")) for loss in losses),
            ]
        )
        paper = PAPER_TABLE5.get(ds.paper)
        if paper:
            rows.append([f"{ds.paper} (paper)", *(common.fmt(paper.get(loss)) for loss in losses)])
    compact = common.markdown_table(["dataset", *(LABELS.get(x, x) for x in losses)], rows)

    detail_rows = []
    for (d, loss), r in results.items():
        detail_rows.append(
            [
                common.resolve_dataset(d).label,
                LABELS.get(loss, loss),
                common.fmt(r.last3("iou")),
                common.fmt(r.final("iou")),
                common.fmt(r.best("iou")),
                common.fmt(r.last3("pa")),
                common.fmt(r.last3("oii"), signed=True),
                ",".join(map(str, r.seeds)),
                f"{r.wall_seconds:.0f}",
            ]
        )
    detail = common.markdown_table(
        [
            "dataset",
            "loss",
            "IoU last-3",
            "IoU final",
            "IoU best",
            "PA last-3",
            "OII last-3",
            "seed ids",
            "train s",
        ],
        detail_rows,
    )

    seeds = sorted({s for r in results.values() for s in r.seeds})
    per_seed = common.markdown_table(
        ["dataset", "loss", *(f"seed {s}" for s in seeds)],
        [
            [
                common.resolve_dataset(d).label,
                LABELS.get(loss, loss),
                *(common.fmt(_final_iou(r, s)) for s in seeds),
            ]
            for (d, loss), r in results.items()
        ],
        align="ll" + "r" * len(seeds),
    )

    checks = []
    for d in datasets:
        for ours, base in (("dibe_reg", "focal_tversky"), ("dibe", "hybrid_focal")):
            if (d, ours) in results and (d, base) in results:
                a, b = results[d, ours].last3("iou"), results[d, base].last3("iou")
                diff = a.mean - b.mean
                noise = max(a.std, b.std)
                verdict = ("holds" if diff >= 0 else "contradicted") + (
                    " (within the spread)" if abs(diff) < noise else ""
                )
                shared = [s for s in results[d, ours].seeds if s in results[d, base].seeds]
                wins = sum(
                    _final_iou(results[d, ours], s) >= _final_iou(results[d, base], s)
                    for s in shared
                )
                checks.append(
                    [
                        common.resolve_dataset(d).label,
                        f"{LABELS[ours]} ≥ {LABELS[base]}",
                        f"{diff:+.3f}",
                        f"{noise:.3f}",
                        f"{wins} of {len(shared)}",
                        verdict,
                    ]
                )
    check = (
        common.markdown_table(
            [
                "dataset",
                "claim",
                "IoU difference (last-3)",
                "larger sd",
                "seeds where it holds (final IoU)",
                "verdict",
            ],
            checks,
            align="llrrrl",
        )
        if checks
        else (
            "None checked: each claim needs both of its losses (DIBE_Reg and FT, or DIBE and HF) "
            "in the same run."
        )
    )
    return "\n\n".join(
        [
            common.mode_description(mode, datasets),
            common.stats_legend(),
            "## IoU of U-Net (Table 5)",
            compact,
            "## Every statistic",
            detail,
            "## Final IoU per seed",
            per_seed,
            "## The paper's claims on our numbers",
            check,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser, default_out="losses_by_dataset")
    parser.add_argument(
        "--datasets",
        nargs="+",
        help=f"default {' '.join(DATASETS)} (quick: {' '.join(QUICK_DATASETS)})",
    )
    parser.add_argument(
        "--losses", nargs="+", help=f"default {' '.join(LOSSES)} (quick: {' '.join(QUICK_LOSSES)})"
    )
    parser.add_argument("--model", default="unet")
    args = parser.parse_args(argv)
    common.setup_jax()
    mode = common.mode_from_args(args)
    datasets = args.datasets or (QUICK_DATASETS if mode.quick else DATASETS)
    losses = args.losses or (QUICK_LOSSES if mode.quick else LOSSES)
    t0 = time.perf_counter()
    results = run(mode, args.out, datasets=datasets, losses=losses, model=args.model)
    wall = time.perf_counter() - t0
    body = report(results, mode)
    path = common.write_markdown(
        f"{args.out}/table5.md",
        "Table 5: U-Net, losses by dataset",
        [body, f"Script wall time: {wall:.0f} s."],
    )
    common.write_json(f"{args.out}/table5.json", [r.summary() for r in results.values()])
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
