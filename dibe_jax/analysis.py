"""Gradient and OII analysis of the DIBE paper: Table 1 and Figs. 4, 5, 12, 13 and 15.

Each ``fig*`` function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
global state), computed from the library's own :mod:`~dibe_jax.metrics`,
:mod:`~dibe_jax.gradients` and :mod:`~dibe_jax.losses`; :func:`run` writes them all as PNG
files. Used by ``dibe-jax analyze`` and ``notebooks/gradient_analysis.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from dibe_jax import gradients, losses, metrics

__all__ = [
    "TABLE_1",
    "fig4_oii_vs_x",
    "fig5_dibe_dis_gradient",
    "fig12_region_losses",
    "fig13_region_gradients",
    "fig15_tv_vs_tp",
    "run",
    "table1",
    "table1_markdown",
]

# Table 1 of the paper: (TP, FP, FN) and the printed FP/FN, IoU, PA, OII.
TABLE_1: list[tuple[tuple[float, float, float], float, float, float, float]] = [
    ((2, 0.5, 0.5), 1, 0.667, 0.800, 0.000),
    ((2, 1, 1), 1, 0.500, 0.667, 0.000),
    ((2, 3, 3), 1, 0.250, 0.400, 0.000),
    ((2, 5, 1), 5, 0.250, 0.286, -0.667),
    ((2, 4, 2), 2, 0.250, 0.333, -0.292),
    ((2, 2, 4), 0.5, 0.250, 0.500, 0.292),
    ((2, 1, 5), 0.2, 0.250, 0.667, 0.667),
    ((2, 1, 2), 0.5, 0.400, 0.667, 0.267),
    ((2, 1, 0.5), 2, 0.571, 0.667, -0.238),
    ((2, 1, 0.2), 5, 0.625, 0.667, -0.524),
]


def table1() -> list[dict[str, float]]:
    """Recompute Table 1 (FP/FN, IoU, PA, OII) from its TP:FP:FN rows."""
    tp, fp, fn = (np.array(c, np.float32) for c in zip(*[r[0] for r in TABLE_1], strict=True))
    cols = {
        "x": metrics.fp_fn_ratio(fp, fn),
        "iou": metrics.iou(tp, fp, fn),
        "pa": metrics.pa(tp, fp),
        "oii": metrics.oii(tp, fp, fn),
    }
    return [
        {"tp": float(tp[i]), "fp": float(fp[i]), "fn": float(fn[i]),
         **{k: float(v[i]) for k, v in cols.items()}}
        for i in range(len(TABLE_1))
    ]  # fmt: skip


def table1_markdown() -> str:
    """Table 1 as Markdown, ours next to the paper's values."""
    head = (
        "| No. | TP:FP:FN | FP/FN | IoU | PA | OII | paper IoU | paper PA | paper OII |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for i, (r, paper) in enumerate(zip(table1(), TABLE_1, strict=True), start=1):
        ratio = f"{r['tp']:g}:{r['fp']:g}:{r['fn']:g}"
        rows.append(
            f"| {i} | {ratio} | {r['x']:.3g} | {r['iou']:.3f} | {r['pa']:.3f} | "
            f"{r['oii'] + 0.0:.3f} | {paper[2]:.3f} | {paper[3]:.3f} | {paper[4]:.3f} |"
        )
    return "\n".join([head, *rows])


def _figure(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.2 * ncols, 3.8), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig, axes


def fig4_oii_vs_x() -> Figure:
    """Fig. 4: OII against x = FP/FN as k -> 1 (IoU -> 0), with the raw ratio for contrast."""
    x = np.logspace(-2, 2, 401)
    curve = metrics.oii(np.zeros_like(x), x, np.ones_like(x))  # TP = 0: k = 1
    fig, (ax,) = _figure()
    ax.semilogx(x, curve, label="OII (k → 1)")
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(1, color="k", lw=0.6, ls=":")
    ax.set(xlabel="x = FP / FN", ylabel="OII", ylim=(-1.05, 1.05), title="Fig. 4: OII vs x")
    ax.legend()
    return fig


def fig5_dibe_dis_gradient(
    alphas: tuple[float, ...] = (0.0, 0.3, 0.7), lam: float = 0.25, gamma: float = 2.0
) -> Figure:
    """Fig. 5: Eq. 19, ∂L_DIBE_Dis/∂p̂ on missed defect pixels, for several α."""
    p = np.linspace(0.01, 0.5, 300)
    fig, (ax,) = _figure()
    for a in alphas:
        g = gradients.dibe_dis_miss_grad(p, lam=lam, gamma=gamma, alpha=a)
        ax.plot(p, g, label=f"α = {a:g}" + (" (focal)" if a == 0 else ""))
    ax.set(
        xlabel="p̂ (y = 1, ŷ = 0)", ylabel="∂L / ∂p̂", ylim=(-6, 0.2),
        title=f"Fig. 5: DIBE_Dis gradient on misses (λ = {lam:g}, γ = {gamma:g})",
    )  # fmt: skip
    ax.legend()
    return fig


def _region_loss_of_tv(name: str, tv: np.ndarray, gamma: float) -> np.ndarray:
    """A region loss as a function of Tv, through the library's own loss.

    One image of two pixels with hard predictions: a hit (TP = 1) and a miss whose weight α
    is chosen so that ``Tv = 1 / (1 + α)``, i.e. ``α = 1/Tv - 1`` (β = 0, ε = 0).
    """
    z = jnp.array([[100.0, -100.0]])
    y = jnp.array([[1.0, 1.0]])
    fn = losses.get(name)
    alpha = jnp.asarray(1 / tv - 1, jnp.float32)
    out = jax.vmap(lambda a: fn(z, y, alpha=a, beta=0.0, gamma=gamma, eps=0.0)[0])(alpha)
    return np.asarray(out)


def fig12_region_losses(gammas: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)) -> Figure:
    """Fig. 12: (a) FT loss ``(1 - Tv)^(1/γ)`` and (b) DIBE_Reg ``(-log Tv)^(1/γ)`` vs Tv."""
    tv = np.linspace(0.01, 1.0, 300)
    fig, (a, b) = _figure(2)
    for g in gammas:
        a.plot(tv, _region_loss_of_tv("focal_tversky", tv, g), label=f"γ = {g:g}")
        b.plot(tv, _region_loss_of_tv("dibe_reg", tv, g), label=f"γ = {g:g}")
    a.set(xlabel="Tv", ylabel="loss", title="Fig. 12a: FT loss", ylim=(0, 1.05))
    b.set(xlabel="Tv", ylabel="loss", title="Fig. 12b: DIBE_Reg loss", ylim=(0, 3))
    a.legend()
    b.legend()
    return fig


def fig13_region_gradients(gammas: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)) -> Figure:
    """Fig. 13: (a) Eq. 24 ``∂L_FT/∂Tv`` and (b) Eq. 25 ``∂L_DIBE_Reg/∂Tv`` vs Tv."""
    tv = np.linspace(0.01, 0.995, 300)
    fig, (a, b) = _figure(2)
    for g in gammas:
        a.plot(tv, gradients.focal_tversky_grad(tv, gamma=g), label=f"γ = {g:g}")
        b.plot(tv, gradients.dibe_reg_grad(tv, gamma=g), label=f"γ = {g:g}")
    a.set(xlabel="Tv", ylabel="∂L/∂Tv", title="Fig. 13a: FT gradient (Eq. 24)", ylim=(-5, 0.1))
    b.set(xlabel="Tv", ylabel="∂L/∂Tv", title="Fig. 13b: DIBE_Reg gradient (Eq. 25)",
          ylim=(-20, 0.1))  # fmt: skip
    a.legend()
    b.legend()
    return fig


def fig15_tv_vs_tp(tps: tuple[float, ...] = (1.0, 10.0, 100.0)) -> Figure:
    """Fig. 15: Tv against the error count FP + FN for TP = 1, 10, 100 (α = β = 0.5, ε = 0).

    Smaller TP (stronger input imbalance) keeps Tv near 0 for longer as errors shrink during
    training: ``Tv = TP / (TP + (FP + FN) / 2)``.
    """
    errors = np.linspace(0, 1000, 501)
    fig, (ax,) = _figure()
    for tp in tps:
        tv = tp / (tp + 0.5 * errors)  # Eq. 7 with α = β = 0.5, ε = 0
        ax.plot(errors, tv, label=f"TP = {tp:g}")
    ax.set(xlabel="FP + FN", ylabel="Tv", title="Fig. 15: Tv vs errors for several TP",
           ylim=(0, 1.02))  # fmt: skip
    ax.legend()
    return fig


FIGURES = {
    "fig4_oii_vs_x.png": fig4_oii_vs_x,
    "fig5_dibe_dis_gradient.png": fig5_dibe_dis_gradient,
    "fig12_region_losses.png": fig12_region_losses,
    "fig13_region_gradients.png": fig13_region_gradients,
    "fig15_tv_vs_tp.png": fig15_tv_vs_tp,
}


def run(out: str | Path) -> list[Path]:
    """Write Table 1 (``table1.md``) and every figure as PNG under ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "table1.md"]
    written[0].write_text(table1_markdown() + "\n")
    for filename, make in FIGURES.items():
        path = out / filename
        make().savefig(path, dpi=110)
        written.append(path)
    return written
