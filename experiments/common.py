"""Shared runner of the experiment scripts: datasets, modes, seeds, aggregation, Markdown.

A *cell* of a paper table (one dataset, model, loss and loss hyperparameters) is trained once
per seed with :func:`dibe_jax.train.train_and_evaluate`; every evaluation is a line of
``<out>/runs/<cell>/seed<k>/metrics.jsonl``. :class:`CellResult` reads those lines back and
reports, as docs/conventions.md ("Reporting trained results") says:

* **last-3**: mean ± standard deviation of the last 3 evaluations of every seed, pooled
  (3 × seeds values): the number we hold against the paper's single value;
* **final**: mean ± standard deviation over seeds of the last evaluation;
* **best**: mean ± standard deviation over seeds of each seed's best evaluation.

Three modes (:data:`MODES`), chosen with ``--quick`` / ``--medium`` (default: full):

* ``quick``: tiny in-memory synthetic data (32 px, 8 train / 4 validation images, the
  dataset's FG:BG ratio capped at 1:100), width 4 (U-Net with 1 stage), 1 epoch, batch 4,
  one seed. It needs no file and runs end to end in seconds; its numbers mean nothing. Used
  by the tests.
* ``medium``: what fits on 2 CPU cores (see ``EXPERIMENTS.md``): real data at reduced image
  size, width 8, batch 8, fewer epochs, evaluation every 2 epochs.
* ``full``: the paper's setting (Sec. 4.3.3): 50 epochs, batch 32, SGD 0.01 / momentum 0.9,
  evaluation every 5 epochs, the model's default width, 3 seeds.

A finished run (same ``config.json``, last epoch reached) is not trained again, so a script
can be re-run to rebuild its tables and a killed run continues from its last checkpoint.

Data: the real sets are read from ``../shared/data`` next to the checkout (override with
``DIBE_JAX_DATA``) and built as TFDS datasets under ``results/tfds`` (override with
``DIBE_JAX_TFDS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dibe_jax.files import atomic_write_json
from dibe_jax.train import runs
from dibe_jax.train.runs import Stat, fmt, stat

__all__ = [
    "DATASETS",
    "MODES",
    "REPO",
    "Cell",
    "CellResult",
    "Dataset",
    "Mode",
    "Stat",
    "add_common_args",
    "data_root",
    "fmt",
    "make_config",
    "markdown_table",
    "mode_from_args",
    "resolve_dataset",
    "run_cell",
    "setup_jax",
    "sources_for",
    "stat",
    "synthetic_sources",
    "tfds_dir",
    "write_markdown",
]

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The real datasets: ``$DIBE_JAX_DATA`` or ``../shared/data`` next to the checkout."""
    env = os.environ.get("DIBE_JAX_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tfds_dir() -> Path:
    """Where TFDS datasets are built: ``$DIBE_JAX_TFDS`` or ``results/tfds`` (git-ignored)."""
    env = os.environ.get("DIBE_JAX_TFDS")
    return Path(env) if env else REPO / "results" / "tfds"


# --------------------------------------------------------------------------------------------
# Datasets


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset of the paper's tables, as we build it.

    Attributes:
      key: command-line name (``cfd``, ``crack``, ``syn2200``, ``syn2200_128``...).
      label: how our tables name it.
      paper: the paper's row name (Table 2, 5) it stands for.
      spec: TFDS ``name/config`` of :mod:`dibe_jax.datasets`, or ``None`` for a synthetic set
        made here (``synthetic``).
      size: image side in full mode (``None``: keep the stored size).
      ratio: FG:BG ``1:ratio`` (the paper's Table 2 for real sets, the target for synthetic).
      synthetic: ``(size, ratio, n_train, n_validation)`` of a custom synthetic set.
    """

    key: str
    label: str
    paper: str
    spec: str | None
    size: int | None
    ratio: float
    synthetic: tuple[int, float, int, int] | None = None


DATASETS: dict[str, Dataset] = {
    d.key: d
    for d in (
        Dataset("cfd", "CFD (crack = label 2)", "CFD", "crackforest/label2", 160, 25),
        Dataset("blowhole", "MTSDD Blowhole", "Blowhole", "magnetic_tile/blowhole", 224, 333),
        Dataset("crack", "MTSDD Crack", "Crack", "magnetic_tile/crack", 224, 113),
        Dataset(
            "syn190", "synthetic 1:190, 112 px", "THC112", "synthetic_cracks/r190_112", None, 190
        ),
        Dataset(
            "syn580", "synthetic 1:580, 224 px", "THC224", "synthetic_cracks/r580_224", None, 580
        ),
        Dataset(
            "syn2200",
            "synthetic 1:2200, 448 px",
            "THC448",
            "synthetic_cracks/r2200_448",
            None,
            2200,
        ),
    )
}

_CUSTOM = re.compile(r"^syn(\d+)_(\d+)(?:_(\d+)_(\d+))?$")
_PAPER_FOR_RATIO = ((1000, "THC448"), (400, "THC224"), (150, "THC112"), (0, "CFD"))


def resolve_dataset(key: str) -> Dataset:
    """A preset of :data:`DATASETS`, or ``syn<RATIO>_<SIZE>[_<NTRAIN>_<NVAL>]``: a custom
    synthetic crack set (default 384 train / 128 validation images, crack contrast 0.2 as in
    the library's CPU demo set ``r150_96``) built once with
    :class:`dibe_jax.datasets.SyntheticCracks` under :func:`tfds_dir`.

    >>> resolve_dataset("syn2200_128").synthetic
    (128, 2200.0, 384, 128)
    >>> resolve_dataset("cfd").spec
    'crackforest/label2'
    """
    if key in DATASETS:
        return DATASETS[key]
    m = _CUSTOM.match(key)
    if m is None:
        raise ValueError(
            f"unknown dataset {key!r}; known: {', '.join(DATASETS)} or syn<RATIO>_<SIZE>"
            "[_<NTRAIN>_<NVAL>] (a custom synthetic set, e.g. syn2200_128)"
        )
    ratio, size = float(m[1]), int(m[2])
    n_train, n_val = (int(m[3]), int(m[4])) if m[3] else (384, 128)
    paper = next(name for r, name in _PAPER_FOR_RATIO if ratio >= r)
    return Dataset(
        key,
        f"synthetic 1:{ratio:g}, {size} px",
        paper,
        None,
        None,
        ratio,
        (size, ratio, n_train, n_val),
    )


@functools.lru_cache(maxsize=16)
def synthetic_sources(
    size: int, ratio: float, n_train: int, n_val: int, seed: int = 0, contrast: float = 0.2
) -> dict[str, Any]:
    """Tiny in-memory splits ``{"train", "validation"}`` of synthetic cracks (quick mode)."""
    import numpy as np

    from dibe_jax.data import ArraySource
    from dibe_jax.datasets import generate_example

    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        examples = []
        for _ in range(n):
            image, mask = generate_example(rng, size, ratio, contrast=contrast, empty_fraction=0)
            examples.append({"image": image, "mask": mask})
        out[split] = ArraySource(examples, name=f"synthetic_{size}_{ratio:g}_{split}")
    return out


CUSTOM_CONTRAST = 0.2


def _custom_name(size: int, ratio: float, n_train: int, n_val: int) -> str:
    return f"custom_r{ratio:g}_s{size}_n{n_train}_{n_val}_c{CUSTOM_CONTRAST:g}"


@functools.lru_cache(maxsize=8)
def _custom_synthetic(size: int, ratio: float, n_train: int, n_val: int) -> dict[str, Any]:
    from dibe_jax.datasets import SyntheticCracks, SyntheticCracksConfig

    name = _custom_name(size, ratio, n_train, n_val)
    cfg = SyntheticCracksConfig(
        name=name,
        description=f"{size} px, FG:BG 1:{ratio:g}",
        size=size,
        ratio=ratio,
        num_train=n_train,
        num_validation=n_val,
        contrast=CUSTOM_CONTRAST,
    )
    builder = SyntheticCracks(
        config=cfg, data_dir=os.fspath(tfds_dir()), file_format="array_record"
    )
    builder.download_and_prepare()
    ds = builder.as_data_source()
    return {"train": ds["train"], "validation": ds["validation"]}


# --------------------------------------------------------------------------------------------
# Modes


@dataclasses.dataclass(frozen=True)
class Mode:
    """How big the runs are. ``sizes`` maps a dataset key to its image side (else the
    dataset's own ``size``); ``quick`` replaces every dataset by tiny in-memory data."""

    name: str
    epochs: int
    batch_size: int
    eval_every: int
    seeds: int
    width: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    quick: bool = False
    sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    image_size: int | None = None  # one size for every dataset (command line)
    epochs_for: Mapping[str, int] = dataclasses.field(default_factory=dict)
    eval_every_for: Mapping[str, int] = dataclasses.field(default_factory=dict)
    model_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    overrides: tuple[str, ...] = ()

    def epochs_of(self, dataset: str) -> int:
        """Training epochs of ``dataset`` (``epochs_for`` entry, else ``epochs``)."""
        return self.epochs_for.get(dataset, self.epochs)

    def eval_every_of(self, dataset: str) -> int:
        return self.eval_every_for.get(dataset, self.eval_every)


MODES: dict[str, Mode] = {
    # U-Net with 1 stage instead of 4: compiles about 4x faster, which is most of a quick run.
    "quick": Mode(
        "quick",
        epochs=1,
        batch_size=4,
        eval_every=1,
        seeds=1,
        width=4,
        quick=True,
        model_options={"unet": {"num_stages": 1}},
    ),
    # Measured on 2 busy cores (EXPERIMENTS.md): U-Net width 8, batch 8 costs about 14 s per
    # CFD epoch at 64 px and 33 s at 96 px (width 4 is no faster; pixels dominate).
    "medium": Mode(
        "medium",
        epochs=20,
        batch_size=8,
        eval_every=2,
        seeds=3,
        width=8,
        sizes={"cfd": 64, "crack": 96, "blowhole": 96},
        epochs_for={"cfd": 8, "crack": 30, "blowhole": 30},
        eval_every_for={"cfd": 2, "crack": 3, "blowhole": 3},
    ),
    "full": Mode("full", epochs=50, batch_size=32, eval_every=5, seeds=3),
}

QUICK_DATA = dict(size=32, max_ratio=100.0, n_train=8, n_val=4)


def image_size_for(mode: Mode, dataset: Dataset) -> int | None:
    """The image side a mode trains ``dataset`` at (``None``: the stored size)."""
    if mode.quick:
        return None
    if mode.image_size is not None:
        return mode.image_size
    if dataset.key in mode.sizes:
        return mode.sizes[dataset.key]
    return dataset.size


def sources_for(mode: Mode, dataset: Dataset) -> dict[str, Any] | None:
    """In-memory or custom splits to hand to ``train_and_evaluate`` (``None``: the config's
    TFDS dataset is used)."""
    if mode.quick:
        q = QUICK_DATA
        return synthetic_sources(
            q["size"], min(dataset.ratio, q["max_ratio"]), q["n_train"], q["n_val"]
        )
    if dataset.synthetic is not None:
        return _custom_synthetic(*dataset.synthetic)
    return None


# --------------------------------------------------------------------------------------------
# Cells and configs


@dataclasses.dataclass(frozen=True)
class Cell:
    """One table cell: a dataset, a model, a loss and its hyperparameters."""

    dataset: str
    model: str
    loss: str
    params: tuple[tuple[str, float], ...] = ()

    @property
    def slug(self) -> str:
        extra = "".join(f"_{k}{v:g}" for k, v in self.params)
        return f"{self.dataset}/{self.model}/{self.loss}{extra}"

    def with_params(self, **params: float) -> Cell:
        merged = dict(self.params) | {k: round(float(v), 6) for k, v in params.items()}
        return dataclasses.replace(self, params=tuple(sorted(merged.items())))


def make_config(cell: Cell, mode: Mode, seed: int):
    """The :class:`dibe_jax.train.Config` of one seed of ``cell`` under ``mode``."""
    from dibe_jax import train

    dataset = resolve_dataset(cell.dataset)
    values: dict[str, object] = {
        "model.name": cell.model,
        "loss.name": cell.loss,
        "seed": seed,
        "epochs": mode.epochs_of(dataset.key),
        "batch_size": mode.batch_size,
        "eval_every": mode.eval_every_of(dataset.key),
        "optim.lr": mode.lr,
        "optim.momentum": mode.momentum,
        "progress": False,
    }
    values |= {f"loss.{k}": v for k, v in cell.params}
    if mode.width is not None:
        values["model.width"] = mode.width
    values |= {f"model.{k}": v for k, v in mode.model_options.get(cell.model, {}).items()}
    if mode.quick:  # in-memory sources: the name says what they are
        q = QUICK_DATA
        ratio = min(dataset.ratio, q["max_ratio"])
        values["data.dataset"] = (
            f"in-memory generate_example: {q['size']} px, FG:BG 1:{ratio:g}, "
            f"{q['n_train']} train / {q['n_val']} validation, seed 0"
        )
    elif dataset.spec is not None:
        values |= {
            "data.dataset": dataset.spec,
            "data.data_dir": str(tfds_dir()),
            "data.manual_dir": str(data_root()),
        }
    elif dataset.synthetic is not None:  # a custom SyntheticCracks config (sources_for)
        size, ratio, n_train, n_val = dataset.synthetic
        values |= {
            "data.dataset": f"synthetic_cracks/{_custom_name(size, ratio, n_train, n_val)}",
            "data.data_dir": str(tfds_dir()),
        }
    else:
        values["data.dataset"] = f"synthetic_cracks/{dataset.key}"
    size = image_size_for(mode, dataset)
    if size is not None:
        values["data.image_size"] = size
    config = train.override(train.Config(), values)
    return train.apply_overrides(config, mode.overrides)  # the user's --set text


# --------------------------------------------------------------------------------------------
# Statistics


@dataclasses.dataclass
class CellResult(runs.SeedRuns):
    """Every seed's records of one cell (:class:`dibe_jax.train.runs.SeedRuns`) and the cell."""

    cell: Cell | None = None

    def summary(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        return {"cell": self.cell.slug if self.cell else None, **super().summary(keys)}


def run_cell(
    cell: Cell,
    mode: Mode,
    out: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    log: Callable[[str], None] = print,
) -> CellResult:
    """Train ``cell`` once per seed under ``mode`` in ``out/runs/<cell>/seed<k>``
    (:func:`dibe_jax.train.runs.train_seeds`: finished runs are read back, interrupted ones
    resume, a run with another config in the same folder is trained again)."""
    seeds = list(range(mode.seeds)) if seeds is None else list(seeds)
    dataset = resolve_dataset(cell.dataset)
    config = make_config(cell, mode, seeds[0] if seeds else 0)
    result = runs.train_seeds(
        config,
        Path(out) / "runs" / cell.slug,
        seeds,
        sources=sources_for(mode, dataset),
        log=lambda line: log(f"[{mode.name}] {line}"),
    )
    return CellResult(result.runs, result.seeds, result.wall_seconds, cell=cell)


# --------------------------------------------------------------------------------------------
# Command line and Markdown


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> None:
    """``--quick``/``--medium`` and the overrides every script takes."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        "--quick",
        action="store_true",
        help="tiny in-memory synthetic data, width 4, 1 epoch, 1 seed (seconds)",
    )
    g.add_argument(
        "--medium",
        action="store_true",
        help="reduced real-data runs that fit on 2 CPU cores (see EXPERIMENTS.md)",
    )
    parser.add_argument("--epochs", type=int, help="training epochs (full: 50)")
    parser.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (full: 3)")
    parser.add_argument("--width", type=int, help="model width (full: the model's default)")
    parser.add_argument("--batch-size", type=int, help="batch size (full: 32)")
    parser.add_argument("--image-size", type=int, help="image side for every dataset")
    parser.add_argument("--eval-every", type=int, help="epochs between evaluations (full: 5)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any dibe_jax.train.Config override, e.g. optim.lr=0.05",
    )
    parser.add_argument(
        "--out",
        default=f"results/{default_out}",
        help=f"output folder (default results/{default_out})",
    )


def mode_from_args(args: argparse.Namespace) -> Mode:
    """The :data:`MODES` entry chosen on the command line, with its overrides applied."""
    mode = MODES["quick" if args.quick else "medium" if args.medium else "full"]
    changes: dict[str, Any] = {}
    for field in ("epochs", "seeds", "width", "batch_size", "image_size", "eval_every"):
        value = getattr(args, field, None)
        if value is not None:
            changes[field] = value
            if field in ("epochs", "eval_every"):  # one value for every dataset
                changes[f"{field}_for"] = {}
    if args.set:
        changes["overrides"] = tuple(args.set)
    return dataclasses.replace(mode, **changes)


def setup_jax() -> None:
    """Entry-point settings: a persistent XLA compilation cache (seeds of one cell compile
    the same program), unless one is set already (tests set theirs in ``conftest.py``)."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        cache = os.environ.get(
            "JAX_COMPILATION_CACHE_DIR", os.fspath(REPO / "results" / "xla_cache")
        )
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def mode_description(mode: Mode, datasets: Iterable[str] = ()) -> str:
    """One Markdown paragraph saying exactly what was run."""
    datasets = list(datasets)
    sizes = []
    for key in datasets:
        d = resolve_dataset(key)
        size = image_size_for(mode, d)
        sizes.append(f"{d.label}: {'stored size' if size is None else f'{size} px'}")
    if mode.quick:
        q = QUICK_DATA
        data = (
            f"tiny in-memory synthetic stand-ins ({q['size']} px, {q['n_train']} train / "
            f"{q['n_val']} validation images, FG:BG = the dataset's, capped at "
            f"1:{q['max_ratio']:g}); the numbers only show the pipeline runs"
        )
    else:
        data = "; ".join(sizes) if sizes else "see the table"
    width = "model default" if mode.width is None else str(mode.width)
    extra = f", overrides {', '.join(mode.overrides)}" if mode.overrides else ""
    epochs = f"{mode.epochs} epochs, evaluation every {mode.eval_every}"
    per = [
        f"{resolve_dataset(k).label}: {mode.epochs_of(k)} epochs, evaluation every "
        f"{mode.eval_every_of(k)}"
        for k in datasets
        if k in mode.epochs_for or k in mode.eval_every_for
    ]
    if per:
        epochs += f" ({'; '.join(per)})"
    return (
        f"Mode **{mode.name}**: {epochs}; batch {mode.batch_size}, SGD lr {mode.lr:g} "
        f"momentum {mode.momentum:g}, width {width}, U-Net unless stated, "
        f"{mode.seeds} seed(s){extra}. Data: {data}."
    )


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """A Markdown table; ``align`` is one character per column (``l`` or ``r``)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: str | Path, title: str, sections: Iterable[str]) -> Path:
    """Write ``# title`` and the sections, separated by blank lines; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_json(path, data)


def stats_legend() -> str:
    return (
        "Cells: **last-3** = mean ± sd of the last 3 evaluations of every seed (pooled), "
        "the value held against the paper's single number; **final** = mean ± sd over "
        "seeds of the last evaluation; **best** = mean ± sd over seeds of each seed's best "
        "evaluation. PA is precision TP / (TP + FP)."
    )
