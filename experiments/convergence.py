"""Fig. 11 of the DIBE paper: validation IoU per epoch of U-Net under FT and DIBE_Reg on the
most imbalanced data (THC448, 1:2228, in the paper; synthetic cracks here).

Command (full: synthetic 1:2200 at 448 px, 50 epochs, batch 32, 3 seeds; a GPU job)::

    python -m experiments.convergence
    python -m experiments.convergence --medium --seeds 3   # synthetic 1:580, 96 px, 15 epochs
    python -m experiments.convergence --quick              # seconds

Every run is evaluated after every epoch (``--eval-every`` to change it).

Runtime: ``--quick`` about 5-30 s; ``--medium`` (2 losses, 15 epochs of 128 images of
96 px) takes 85-125 s per training on 2 CPU cores, about 10 min for the 3 seeds.

Expected result (paper, Sec. 4.6): FT's IoU "remains almost zero up to the twentieth epoch"
while DIBE_Reg "achieves a convincing IoU at the sixth epoch": DIBE_Reg converges earlier.

Writes ``<out>/fig11_<dataset>.png`` (IoU and OII against epoch, mean ± sd over seeds),
``<out>/fig11.md`` (the curves as a table, and the first epoch each loss reaches a given IoU)
and ``<out>/fig11.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

if __package__ in (None, ""):  # run as `python experiments/convergence.py`: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402

LOSSES = ("focal_tversky", "dibe_reg")
LABELS = {"focal_tversky": "FT", "dibe_reg": "DIBE_Reg"}
DEFAULT_DATASET = {"full": "syn2200", "medium": "syn580_96_128_64", "quick": "syn2200"}
MEDIUM_EPOCHS = 15
THRESHOLDS = (0.05, 0.1, 0.2)


def run(
    mode: common.Mode,
    out: str,
    *,
    dataset: str,
    losses: Sequence[str] = LOSSES,
    model: str = "unet",
) -> dict[str, common.CellResult]:
    """Train ``model`` with every loss on ``dataset``; results by loss."""
    return {loss: common.run_cell(common.Cell(dataset, model, loss), mode, out) for loss in losses}


def first_epoch(result: common.CellResult, threshold: float, key: str = "iou") -> int | None:
    """First evaluated epoch where the mean over seeds of ``key`` reaches ``threshold``."""
    epochs, stats = result.curve(key)
    return next((e for e, s in zip(epochs, stats, strict=True) if s.mean >= threshold), None)


def convergence_verdict(dibe_reg: common.CellResult, ft: common.CellResult) -> str:
    """Whether DIBE_Reg reaches each IoU threshold (that either loss reaches) before FT."""
    firsts = {t: (first_epoch(dibe_reg, t), first_epoch(ft, t)) for t in THRESHOLDS}
    reached = {t: v for t, v in firsts.items() if v != (None, None)}
    if not reached:
        return (
            f"Neither loss reaches IoU ≥ {min(THRESHOLDS):g}: no conclusion on convergence speed."
        )
    earlier = [d is not None and (f is None or d < f) for d, f in reached.values()]
    later = [f is not None and (d is None or f < d) for d, f in reached.values()]
    where = ", ".join(f"IoU ≥ {t:g}" for t in reached)
    if all(earlier):
        return (
            f"DIBE_Reg reaches {where} before FT: the paper's claim (DIBE_Reg converges "
            "earlier) holds here."
        )
    if any(later):
        return f"FT reaches {where} no later than DIBE_Reg: the paper's claim is contradicted."
    return "Mixed or tied: no clear earlier convergence of either loss."


def plot(results: dict[str, common.CellResult], title: str, path: Path) -> Path:
    """IoU and OII against epoch, one line per loss with a ± sd band over seeds."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for loss, r in results.items():
        for ax, key in zip(axes, ("iou", "oii"), strict=True):
            epochs, stats = r.curve(key)
            mean = [s.mean for s in stats]
            ax.plot(epochs, mean, marker="o", ms=3, label=LABELS.get(loss, loss))
            ax.fill_between(
                epochs, [s.mean - s.std for s in stats], [s.mean + s.std for s in stats], alpha=0.2
            )
    axes[0].set(xlabel="epoch", ylabel="validation IoU", ylim=(0, 1), title=title)
    axes[1].set(xlabel="epoch", ylabel="validation OII", ylim=(-1, 1), title="OII")
    axes[1].axhline(0, color="k", lw=0.6)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def report(results: dict[str, common.CellResult], mode: common.Mode, dataset: str) -> str:
    losses = list(results)
    epochs = sorted({e for r in results.values() for e in r.curve("iou")[0]})
    rows = []
    for e in epochs:
        row: list[str] = [str(e)]
        for loss in losses:
            ep, stats = results[loss].curve("iou")
            row.append(common.fmt(stats[ep.index(e)]) if e in ep else "–")
        rows.append(row)
    curve = common.markdown_table(["epoch", *(f"IoU {LABELS.get(x, x)}" for x in losses)], rows)
    reach = common.markdown_table(
        [
            "loss",
            *(f"first epoch IoU ≥ {t:g}" for t in THRESHOLDS),
            "IoU last-3",
            "IoU best",
            "OII last-3",
            "seed ids",
            "train s",
        ],
        [
            [
                LABELS.get(loss, loss),
                *(str(first_epoch(r, t) or "never") for t in THRESHOLDS),
                common.fmt(r.last3("iou")),
                common.fmt(r.best("iou")),
                common.fmt(r.last3("oii"), signed=True),
                ",".join(map(str, r.seeds)),
                f"{r.wall_seconds:.0f}",
            ]
            for loss, r in results.items()
        ],
    )
    verdict = ""
    if set(LOSSES) <= set(results):
        ft, dr = results["focal_tversky"], results["dibe_reg"]
        verdict = convergence_verdict(dr, ft)
    return "\n\n".join(
        [
            common.mode_description(mode, [dataset]),
            f"Dataset: {common.resolve_dataset(dataset).label} (stands for the paper's "
            f"{common.resolve_dataset(dataset).paper}); U-Net; IoU mean ± sd over seeds.",
            "## First epoch reaching an IoU (mean over seeds)",
            reach,
            verdict,
            "## IoU per epoch",
            curve,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser, default_out="convergence")
    parser.add_argument(
        "--dataset",
        help="default: syn2200 (full), syn580_96_128_64 "
        "(medium); any key of experiments.common.resolve_dataset",
    )
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    parser.add_argument("--model", default="unet")
    args = parser.parse_args(argv)
    common.setup_jax()
    mode = common.mode_from_args(args)
    if args.eval_every is None:
        mode = dataclasses.replace(mode, eval_every=1, eval_every_for={})
    if args.medium and args.epochs is None:
        mode = dataclasses.replace(mode, epochs=MEDIUM_EPOCHS, epochs_for={})
    dataset = args.dataset or DEFAULT_DATASET[mode.name]
    t0 = time.perf_counter()
    results = run(mode, args.out, dataset=dataset, losses=args.losses, model=args.model)
    wall = time.perf_counter() - t0
    png = plot(
        results,
        f"{args.model}, {common.resolve_dataset(dataset).label}",
        Path(args.out) / f"fig11_{dataset}.png",
    )
    body = report(results, mode, dataset)
    path = common.write_markdown(
        Path(args.out) / "fig11.md",
        "Fig. 11: convergence of FT and DIBE_Reg",
        [body, f"Figure: `{png.name}`. Script wall time: {wall:.0f} s."],
    )
    common.write_json(Path(args.out) / "fig11.json", [r.summary() for r in results.values()])
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
