"""Figs. 10 and 14 of the DIBE paper: validation OII against epoch for α ∈ {0.1, 0.3, 0.5,
0.7, 0.9}, one curve per α, per loss, per (model, dataset).

Fig. 10 (``--figure 10``, default): DIBE_Dis and Tversky on THC448 (here synthetic 1:2200)
with SegNet and U-Net. Fig. 14 (``--figure 14``): Tversky and DIBE_Reg with U-Net on THC112,
THC224, THC448 (synthetic 1:190, 1:580, 1:2200). ``--models``, ``--datasets``, ``--losses``,
``--alphas`` override the preset. α weighs misses (docs/conventions.md); β = 1 - α unless ``--beta``
fixes it (the paper starts its searches at α = β = 0.5 and its defaults (0.3, 0.7) sum to 1).

Command::

    python -m experiments.oii_curves                      # Fig. 10, full (GPU job)
    python -m experiments.oii_curves --figure 14          # Fig. 14, full
    python -m experiments.oii_curves --medium --epochs 50 --eval-every 5 --models unet \\
        --datasets cfd --losses tversky dibe_dis --seeds 1 \\
        --out results/oii_curves_e50                      # what EXPERIMENTS.md ran on CPU
    python -m experiments.oii_curves --figure 14 --medium --datasets syn580_96_128_64 \\
        --alphas 0.1 0.5 0.9 --seeds 1 --epochs 15 --eval-every 1 \\
        --out results/oii_curves_fig14                    # Fig. 14 as run on CPU
    python -m experiments.oii_curves --quick              # seconds

Runtime: ``--quick`` about 5-40 s on 2 CPU cores (2 runs); the medium command above ran
10 trainings of 50 epochs in 52 min on 2 shared cores, the Fig. 14 one 6 trainings of 15
epochs in 9.4 min; full Fig. 10 is 20 cells x 3 seeds of 50 epochs.

Expected result (paper, Sec. 4.5): "As α increases from 0.1 to 0.9, the OII curves of
DIBE_Dis Loss are distributed from top to bottom", the same for Tversky; DIBE_Dis curves stay
essentially above 0. So OII should fall as α rises (negative rank correlation).

Writes ``<out>/fig<N>_<model>_<dataset>.png`` (one panel per loss), ``<out>/fig<N>.md`` (OII,
IoU, PA last-3 per α and the rank correlation of OII with α) and ``<out>/fig<N>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

if __package__ in (None, ""):  # run as `python experiments/oii_curves.py`: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402

ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9)
LABELS = {"dibe_dis": "DIBE_Dis", "tversky": "Tversky", "dibe_reg": "DIBE_Reg"}
PRESETS = {
    "10": dict(models=("segnet", "unet"), datasets=("syn2200",), losses=("dibe_dis", "tversky")),
    "14": dict(
        models=("unet",), datasets=("syn190", "syn580", "syn2200"), losses=("tversky", "dibe_reg")
    ),
}
#: |OII| above this for every α: the models still predict (almost) nothing or everything, so
#: the order of the curves says little about the balance the paper describes.
SATURATED = 0.9
QUICK = dict(models=("unet",), datasets=("syn2200",), losses=("dibe_reg",), alphas=(0.3, 0.7))


def alpha_cell(
    dataset: str, model: str, loss: str, alpha: float, beta: float | None = None
) -> common.Cell:
    """The cell of one α, with the library's β rule (:func:`dibe_jax.train.runs.
    with_hyperparameter`: β = 1 - α when the loss takes β, unless ``beta`` fixes it)."""
    from dibe_jax.train import Config, runs

    base = Config()
    base.loss.name = loss
    fixed = None if beta is None else {"beta": beta}
    config = runs.with_hyperparameter(base, "alpha", alpha, fixed=fixed)
    return common.Cell(dataset, model, loss).with_params(**config.loss.params)


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's τ-a rank correlation (NaN for fewer than two pairs).

    >>> kendall_tau([0.1, 0.3, 0.5], [0.4, 0.2, -0.1])
    -1.0
    """
    pairs = list(itertools.combinations(range(len(xs)), 2))
    if not pairs:
        return float("nan")
    s = sum(_sign(xs[i] - xs[j]) * _sign(ys[i] - ys[j]) for i, j in pairs)
    return s / len(pairs)


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def run(
    mode: common.Mode,
    out: str,
    *,
    models: Sequence[str],
    datasets: Sequence[str],
    losses: Sequence[str],
    alphas: Sequence[float],
    beta: float | None = None,
) -> dict[tuple[str, str, str, float], common.CellResult]:
    """Train every (model, dataset, loss, α); results keyed by that tuple."""
    results = {}
    for model, dataset, loss, alpha in itertools.product(models, datasets, losses, alphas):
        cell = alpha_cell(dataset, model, loss, alpha, beta)
        results[model, dataset, loss, alpha] = common.run_cell(cell, mode, out)
    return results


def plot(
    results, model: str, dataset: str, losses: Sequence[str], alphas: Sequence[float], path: Path
) -> Path:
    """One panel per loss: OII against epoch, a line per α (mean over seeds)."""
    fig = Figure(figsize=(5 * len(losses), 3.8), layout="constrained")
    axes = fig.subplots(1, len(losses), squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"]
    for ax, loss in zip(axes, losses, strict=True):
        for i, alpha in enumerate(alphas):
            epochs, stats = results[model, dataset, loss, alpha].curve("oii")
            ax.plot(
                epochs,
                [s.mean for s in stats],
                marker="o",
                ms=3,
                color=cmap(i / max(1, len(alphas) - 1)),
                label=f"α = {alpha:g}",
            )
        ax.axhline(0, color="k", lw=0.6)
        ax.set(
            xlabel="epoch",
            ylabel="validation OII",
            ylim=(-1, 1),
            title=f"{LABELS.get(loss, loss)}, {model}, {common.resolve_dataset(dataset).label}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def report(results, mode: common.Mode, *, models, datasets, losses, alphas, beta) -> str:
    sections = [
        common.mode_description(mode, datasets),
        f"β = {'1 - α' if beta is None else beta}. " + common.stats_legend(),
    ]
    checks = []
    for model, dataset in itertools.product(models, datasets):
        rows = []
        for loss, alpha in itertools.product(losses, alphas):
            r = results[model, dataset, loss, alpha]
            rows.append(
                [
                    LABELS.get(loss, loss),
                    f"{alpha:g}",
                    common.fmt(r.last3("oii"), signed=True),
                    common.fmt(r.final("oii"), signed=True),
                    common.fmt(r.last3("iou")),
                    common.fmt(r.last3("pa")),
                    common.fmt(r.last3("recall")),
                    f"{r.wall_seconds:.0f}",
                ]
            )
        for loss in losses:
            oiis = [results[model, dataset, loss, a].last3("oii").mean for a in alphas]
            tau = kendall_tau(list(alphas), oiis)
            drops = all(b <= a for a, b in zip(oiis, oiis[1:], strict=False))
            claim = "holds" if tau < 0 else "contradicted"
            if all(abs(o) > SATURATED for o in oiis):
                claim += f" (saturated: every OII beyond ±{SATURATED:g})"
            checks.append(
                [
                    model,
                    common.resolve_dataset(dataset).label,
                    LABELS.get(loss, loss),
                    f"{tau:+.2f}",
                    "yes" if drops else "no",
                    claim,
                ]
            )
        sections += [
            f"## {model}, {common.resolve_dataset(dataset).label}",
            common.markdown_table(
                [
                    "loss",
                    "α",
                    "OII last-3",
                    "OII final",
                    "IoU last-3",
                    "PA last-3",
                    "recall last-3",
                    "train s",
                ],
                rows,
            ),
        ]
    sections += [
        "## Does raising α lower OII? (last-3 OII against α)",
        common.markdown_table(
            [
                "model",
                "dataset",
                "loss",
                "Kendall τ(α, OII)",
                "OII falls at every step of α",
                "claim",
            ],
            checks,
            align="lllrll",
        ),
    ]
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser, default_out="oii_curves")
    parser.add_argument("--figure", choices=sorted(PRESETS), default="10")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--losses", nargs="+")
    parser.add_argument("--alphas", nargs="+", type=float)
    parser.add_argument("--beta", type=float, help="fixed β (default: β = 1 - α)")
    args = parser.parse_args(argv)
    common.setup_jax()
    mode = common.mode_from_args(args)
    preset = dict(PRESETS[args.figure], alphas=ALPHAS) if not mode.quick else QUICK
    models = args.models or preset["models"]
    datasets = args.datasets or preset["datasets"]
    losses = args.losses or preset["losses"]
    alphas = args.alphas or preset["alphas"]
    t0 = time.perf_counter()
    results = run(
        mode,
        args.out,
        models=models,
        datasets=datasets,
        losses=losses,
        alphas=alphas,
        beta=args.beta,
    )
    wall = time.perf_counter() - t0
    pngs = [
        plot(results, m, d, losses, alphas, Path(args.out) / f"fig{args.figure}_{m}_{d}.png")
        for m, d in itertools.product(models, datasets)
    ]
    body = report(
        results,
        mode,
        models=models,
        datasets=datasets,
        losses=losses,
        alphas=alphas,
        beta=args.beta,
    )
    path = common.write_markdown(
        Path(args.out) / f"fig{args.figure}.md",
        f"Fig. {args.figure}: OII against epoch by α",
        [
            body,
            "Figures: "
            + ", ".join(f"`{p.name}`" for p in pngs)
            + f". Script wall time: {wall:.0f} s.",
        ],
    )
    common.write_json(
        Path(args.out) / f"fig{args.figure}.json", [r.summary() for r in results.values()]
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
