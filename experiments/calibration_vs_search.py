"""Threshold calibration against the OII-guided α search, at equal training budget.

Two ways to balance misses and false alarms of one (model, loss, dataset):

* **Calibration**: train once per seed at α = β = 0.5, then choose the logit threshold on the
  validation split (:func:`dibe_jax.train.calibrate.calibrate`, one pass; target OII = 0,
  and, as a second row, the highest IoU). One training per seed.
* **OII guidance** (Appendix C, :func:`dibe_jax.tuning.oii_search`): bisection of α from 0.5
  on [0.1, 0.9] until the validation OII lies in (0.15, 0.25), retraining each time (β = 1 -
  α). Up to ``--max-runs`` trainings per seed.

Every training has the same budget (epochs, batch, width, image size); the table gives the
trainings each method needs. Both methods tune on the validation split and are reported
on it (as Table 6 of the paper does).

Statistics: the α runs report the reporting statistic (:class:`dibe_jax.train.runs.SeedRuns`,
mean ± sd over seeds of the last 3 evaluations) and the final evaluation. A threshold is
calibrated for one checkpoint, the final one of each seed, so the calibration rows hold the
**final** evaluation at the calibrated threshold (mean ± sd over seeds); compare them with
the "final" columns.

Command::

    python -m experiments.calibration_vs_search --quick          # seconds: the suite's check
    python -m experiments.calibration_vs_search --medium --datasets cfd --seeds 3
    python -m experiments.calibration_vs_search                  # full: CFD and MTSDD Crack

Runtime: ``--quick`` about 1-2 min on 2 busy CPU cores; ``--medium`` on CFD (U-Net width 8,
64 px, 8 epochs, 3 seeds): up to 9 trainings of about 2 min plus 3 calibrations; full: GPU.

Expected result: calibration reaches OII near 0 with one training per seed; whether it
matches the searched α's IoU depends on how far OII is from the target at α = 0.5 (see
EXPERIMENTS.md for what was measured).

Writes ``<out>/calibration_vs_search.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dibe_jax import tuning
from dibe_jax.train import runs

if __package__ in (None, ""):  # run as a file: find `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402
from experiments.oii_curves import alpha_cell  # noqa: E402

DATASETS = ("cfd", "crack")
QUICK = dict(datasets=("cfd",), max_runs=2, bounds=(0.3, 0.7))


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def calibrated(result: runs.SeedRuns, folder: Path, sources, target: str) -> dict[str, Any]:
    """Calibrate every seed's final checkpoint; mean ± sd over seeds at logit 0 and at the
    threshold, and the thresholds."""
    from dibe_jax.train import calibrate

    at_zero, at_t, values = [], [], []
    for seed in result.seeds:
        c = calibrate.calibrate(
            folder / f"seed{seed}", target=target, best=False, sources=sources
        ).choice
        at_zero.append(c.at_zero)
        at_t.append(c.at_threshold)
        values.append(c.threshold)
    out: dict[str, Any] = {"thresholds": values}
    for name, rows in (("zero", at_zero), ("threshold", at_t)):
        for key in ("iou", "pa", "oii"):
            out[f"{name}_{key}"] = _mean_sd([r[key] for r in rows])
    return out


def compare(mode: common.Mode, out: str, dataset: str, *, model: str, loss: str, max_runs: int,
            bounds=(0.1, 0.9), interval=(0.15, 0.25)) -> dict[str, Any]:  # fmt: skip
    """Basic run, calibrations and OII-guided search of one dataset."""
    sources = common.sources_for(mode, common.resolve_dataset(dataset))
    results: dict[float, runs.SeedRuns] = {}

    def train_fn(alpha: float) -> dict[str, float]:
        results[alpha] = common.run_cell(alpha_cell(dataset, model, loss, alpha), mode, out)
        return runs.search_metrics(results[alpha])

    centre = round((bounds[0] + bounds[1]) / 2, 6)
    search = tuning.oii_search(
        train_fn, interval=interval, bounds=bounds, resolution=0.1, max_runs=max_runs
    )
    basic = results[centre]
    folder = Path(out) / "runs" / alpha_cell(dataset, model, loss, centre).slug
    cal = {t: calibrated(basic, folder, sources, t) for t in ("oii", "iou")}
    chosen = results[search.value]
    return {
        "dataset": dataset,
        "model": model,
        "loss": loss,
        "basic": basic.summary(),
        "calibration": cal,
        "search": search.to_dict(),
        "search_chosen": chosen.summary(),
        "search_alpha": search.value,
        "search_runs": search.runs_needed,
    }


def _cell(stat) -> str:
    mean, sd = stat[0], stat[1]
    return "–" if mean is None else f"{mean:.3f} ± {sd:.3f}"


def report(found: list[dict[str, Any]], mode: common.Mode) -> str:
    rows = []
    for f in found:
        label = common.resolve_dataset(f["dataset"]).label
        b, s = f["basic"], f["search_chosen"]
        for name, summary, n in (
            ("α = 0.5, logit 0", b, 1),
            (f"OII guidance (α = {f['search_alpha']:g})", s, f["search_runs"]),
        ):
            rows.append(
                [label, name, str(n), "0"]
                + [_cell(summary[f"{k}_final"]) for k in ("iou", "pa", "oii")]
                + [_cell(summary[f"{k}_last3"]) for k in ("iou", "pa", "oii")]
            )
        for target, c in f["calibration"].items():
            t = ", ".join(f"{v:g}" for v in c["thresholds"])
            rows.append(
                [label, f"α = 0.5, calibrated for {target.upper()}", "1", t]
                + [_cell(c[f"threshold_{k}"]) for k in ("iou", "pa", "oii")]
                + ["–", "–", "–"]
            )
    headers = ["dataset", "method", "trainings/seed", "threshold", "IoU final", "PA final",
               "OII final", "IoU last-3", "PA last-3", "OII last-3"]  # fmt: skip
    return "\n\n".join(
        [
            common.mode_description(mode, [f["dataset"] for f in found]),
            f"Model {found[0]['model']}, loss {found[0]['loss']} (β = 1 - α). Values: mean ± "
            "sd over seeds; final = the last evaluation (calibration: the final checkpoint "
            "at its threshold); last-3 = the reporting statistic. Thresholds are per seed.",
            common.markdown_table(headers, rows),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_common_args(parser, default_out="calibration_vs_search")
    parser.add_argument("--datasets", nargs="+", help=f"default {' '.join(DATASETS)}")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--loss", default="dibe_dis", help="a loss taking α (default dibe_dis)")
    parser.add_argument("--max-runs", type=int, default=3, help="trainings of the search")
    args = parser.parse_args(argv)
    common.setup_jax()
    mode = common.mode_from_args(args)
    datasets = args.datasets or (QUICK["datasets"] if mode.quick else DATASETS)
    max_runs = QUICK["max_runs"] if mode.quick else args.max_runs
    bounds = QUICK["bounds"] if mode.quick else (0.1, 0.9)
    t0 = time.perf_counter()
    found = [
        compare(
            mode, args.out, d, model=args.model, loss=args.loss, max_runs=max_runs, bounds=bounds
        )  # fmt: skip
        for d in datasets
    ]
    wall = time.perf_counter() - t0
    path = common.write_markdown(
        Path(args.out) / "calibration_vs_search.md",
        "Threshold calibration against OII-guided α search",
        [report(found, mode), f"Script wall time: {wall:.0f} s."],
    )
    common.write_json(Path(args.out) / "calibration_vs_search.json", found)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
