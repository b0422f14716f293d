"""Gradient and OII analysis of the DIBE paper: Table 1 and Figs. 4, 5, 12, 13 and 15.

Each ``fig*`` function returns a :class:`matplotlib.figure.Figure` built without pyplot (no
global state), computed from the library's own :mod:`~dibe_jax.metrics`,
:mod:`~dibe_jax.gradients` and :mod:`~dibe_jax.losses`; :func:`run` writes the paper's figures
as PNG files. Used by ``dibe-jax analyze`` and ``notebooks/gradient_analysis.ipynb``.

Besides the paper's figures:

* :func:`gradient_checks` / :func:`fig_gradient_checks` / :func:`max_differences`: the closed
  forms of Eqs. 19, 24 and 25 (:mod:`~dibe_jax.gradients`) against ``jax.grad`` of the
  losses themselves;
* :func:`fig_oii_map`: OII (Eqs. 15-17) over the (FP, FN) plane with Table 1's rows marked;
* :func:`fig_training_curves` and :func:`fig_mask_overlays`: validation curves of several
  runs (``metrics.jsonl`` records) and their predicted masks, coloured by TP / false alarm /
  miss. They take plain records and arrays, so this module still imports no training code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from dibe_jax import gradients, losses, metrics

__all__ = [
    "TABLE_1",
    "GradientCheck",
    "fig4_oii_vs_x",
    "fig5_dibe_dis_gradient",
    "fig12_region_losses",
    "fig13_region_gradients",
    "fig15_tv_vs_tp",
    "fig_gradient_checks",
    "fig_mask_overlays",
    "fig_oii_map",
    "fig_training_curves",
    "gradient_checks",
    "max_differences",
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
        {
            "tp": float(tp[i]),
            "fp": float(fp[i]),
            "fn": float(fn[i]),
            **{k: float(v[i]) for k, v in cols.items()},
        }
        for i in range(len(TABLE_1))
    ]


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
        xlabel="p̂ (y = 1, ŷ = 0)",
        ylabel="∂L / ∂p̂",
        ylim=(-6, 0.2),
        title=f"Fig. 5: DIBE_Dis gradient on misses (λ = {lam:g}, γ = {gamma:g})",
    )
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
    b.set(
        xlabel="Tv", ylabel="∂L/∂Tv", title="Fig. 13b: DIBE_Reg gradient (Eq. 25)", ylim=(-20, 0.1)
    )
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
    ax.set(
        xlabel="FP + FN", ylabel="Tv", title="Fig. 15: Tv vs errors for several TP", ylim=(0, 1.02)
    )
    ax.legend()
    return fig


# ------------------------------------------------------------- closed forms vs autodiff


class GradientCheck(NamedTuple):
    """One curve of a closed-form gradient and ``jax.grad`` of the loss, on the same grid."""

    equation: str  # "19", "24" or "25"
    label: str  # e.g. "α = 0.3" or "γ = 0.75"
    x: np.ndarray  # p̂ (Eq. 19) or Tv (Eqs. 24, 25)
    closed: np.ndarray
    autodiff: np.ndarray


def _dibe_dis_autodiff(p: np.ndarray, *, lam: float, gamma: float, alpha: float, beta: float):
    """``∂L/∂p̂`` by ``jax.grad`` of :func:`dibe_jax.losses.dibe_dis` on one defect pixel.

    The pixel's logit is ``log p̂ - log(1 - p̂)``, so autodiff goes through the loss's own
    sigmoid; ``p̂ < 0.5`` puts it in the miss case ``y = 1, ŷ = 0`` of Eq. 18.
    """
    y = jnp.ones((1, 1), jnp.float32)

    def loss_of_p(q):
        z = (jnp.log(q) - jnp.log1p(-q)).reshape(1, 1)
        return losses.dibe_dis(z, y, lam=lam, gamma=gamma, alpha=alpha, beta=beta)[0]

    return np.asarray(jax.vmap(jax.grad(loss_of_p))(jnp.asarray(p, jnp.float32)))


def _region_autodiff(name: str, tv: np.ndarray, gamma: float) -> np.ndarray:
    """``∂L/∂Tv`` by ``jax.grad`` of a region loss, through the two-pixel image of
    :func:`_region_loss_of_tv` (``α = 1/Tv - 1``, so the loss depends on Tv alone)."""
    z = jnp.array([[100.0, -100.0]])
    y = jnp.array([[1.0, 1.0]])
    fn = losses.get(name)

    def loss_of_tv(t):
        return fn(z, y, alpha=1 / t - 1, beta=0.0, gamma=gamma, eps=0.0)[0]

    return np.asarray(jax.vmap(jax.grad(loss_of_tv))(jnp.asarray(tv, jnp.float32)))


def gradient_checks(
    *,
    alphas: Sequence[float] = (0.0, 0.3, 0.7),
    lam: float = 0.25,
    gamma: float = 2.0,
    beta: float = 0.7,
    gammas_ft: Sequence[float] = (0.5, 0.75, 1.0, 2.0),
    gammas_reg: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    n: int = 200,
) -> list[GradientCheck]:
    """Eqs. 19, 24 and 25 (:mod:`~dibe_jax.gradients`) next to ``jax.grad`` of the losses.

    * Eq. 19, ``∂L_DIBE_Dis/∂p̂`` on missed defect pixels, for each α in ``alphas`` (λ, γ,
      β as given; β does not enter this case), over ``p̂ ∈ [0.01, 0.49]``;
    * Eq. 24, ``∂L_FT/∂Tv`` for each γ in ``gammas_ft``, and Eq. 25, ``∂L_DIBE_Reg/∂Tv``
      for each γ in ``gammas_reg``, over ``Tv ∈ [0.02, 0.98]``.

    All in float32, ``n`` points per curve.

    >>> diffs = max_differences(gradient_checks(n=20))
    >>> all(rel < 1e-4 for _, rel in diffs.values())
    True
    """
    p = np.linspace(0.01, 0.49, n, dtype=np.float32)
    tv = np.linspace(0.02, 0.98, n, dtype=np.float32)
    out = []
    for a in alphas:
        closed = np.asarray(gradients.dibe_dis_miss_grad(p, lam=lam, gamma=gamma, alpha=a))
        auto = _dibe_dis_autodiff(p, lam=lam, gamma=gamma, alpha=a, beta=beta)
        out.append(GradientCheck("19", f"α = {a:g}", p, closed, auto))
    for g in gammas_ft:
        closed = np.asarray(gradients.focal_tversky_grad(tv, gamma=g))
        out.append(
            GradientCheck("24", f"γ = {g:g}", tv, closed, _region_autodiff("focal_tversky", tv, g))
        )
    for g in gammas_reg:
        closed = np.asarray(gradients.dibe_reg_grad(tv, gamma=g))
        out.append(
            GradientCheck("25", f"γ = {g:g}", tv, closed, _region_autodiff("dibe_reg", tv, g))
        )
    return out


def max_differences(checks: Sequence[GradientCheck]) -> dict[str, tuple[float, float]]:
    """Per equation: ``(max |closed - autodiff|, max |closed - autodiff| / |closed|)``."""
    out: dict[str, tuple[float, float]] = {}
    for c in checks:
        diff = np.abs(c.closed.astype(np.float64) - c.autodiff)
        rel = diff / np.maximum(np.abs(c.closed.astype(np.float64)), np.finfo(np.float32).tiny)
        prev = out.get(c.equation, (0.0, 0.0))
        out[c.equation] = (max(prev[0], float(diff.max())), max(prev[1], float(rel.max())))
    return out


_EQUATIONS = {
    "19": ("Eq. 19: DIBE_Dis on misses", "p̂ (y = 1, ŷ = 0)", "∂L / ∂p̂"),
    "24": ("Eq. 24: focal Tversky", "Tv", "∂L / ∂Tv"),
    "25": ("Eq. 25: DIBE_Reg", "Tv", "∂L / ∂Tv"),
}


def fig_gradient_checks(checks: Sequence[GradientCheck]) -> Figure:
    """Closed forms (lines) and ``jax.grad`` (circles) per equation, and their relative
    difference underneath (log scale; points where both agree exactly are not drawn)."""
    equations = [e for e in _EQUATIONS if any(c.equation == e for c in checks)]
    fig = Figure(figsize=(4.6 * len(equations), 5.6), layout="constrained")
    grid = fig.add_gridspec(2, len(equations), height_ratios=(2.2, 1))
    for j, eq in enumerate(equations):
        top = fig.add_subplot(grid[0, j])
        bottom = fig.add_subplot(grid[1, j], sharex=top)
        title, xlabel, ylabel = _EQUATIONS[eq]
        lows = []
        for i, c in enumerate(cc for cc in checks if cc.equation == eq):
            color = f"C{i}"
            top.plot(c.x, c.closed, color=color, lw=1.4, label=c.label)
            every = max(1, len(c.x) // 14)
            top.plot(c.x[::every], c.autodiff[::every], "o", color=color, ms=3.5, mfc="none")
            rel = np.abs(c.closed.astype(np.float64) - c.autodiff) / np.maximum(
                np.abs(c.closed.astype(np.float64)), np.finfo(np.float32).tiny
            )
            bottom.semilogy(c.x, rel, ".", color=color, ms=2.5)  # exact zeros: not drawn
            lows.append(np.percentile(c.closed, 2))
        top.plot([], [], "o", color="0.3", mfc="none", ms=3.5, label="jax.grad")
        top.set(title=title, ylabel=ylabel, ylim=(max(min(lows), -25.0) * 1.05, 0.3))
        top.legend(fontsize=8)
        top.grid(alpha=0.3)
        bottom.axhline(np.finfo(np.float32).eps, color="k", lw=0.6, ls=":")
        bottom.set(xlabel=xlabel, ylabel="|Δ| / |closed|", ylim=(1e-10, 1e-3))
        bottom.grid(alpha=0.3)
    fig.suptitle("closed form (lines) vs jax.grad of the loss (circles); dotted line: float32 eps")
    return fig


# ------------------------------------------------------------------------- OII map


def fig_oii_map(
    *,
    tp: float = 2.0,
    fp_max: float = 6.0,
    fn_max: float = 6.0,
    rows: Sequence[tuple[tuple[float, float, float], float, float, float, float]] = TABLE_1,
    n: int = 241,
) -> Figure:
    """OII (Eqs. 15-17, :func:`dibe_jax.metrics.oii`) over the (FP, FN) plane at fixed TP.

    Table 1's rows with this TP are marked and numbered. Along any ray from the origin
    ``x = FP/FN`` is constant; moving out along it lowers IoU, so ``k = 1 - IoU/2`` and
    ``|OII|`` grow towards their Fig. 4 limit. OII = 0 on the diagonal FP = FN.
    """
    fp = np.linspace(0.0, fp_max, n, dtype=np.float32)
    fn = np.linspace(0.0, fn_max, n, dtype=np.float32)
    FP, FN = np.meshgrid(fp, fn)
    values = np.asarray(metrics.oii(np.full_like(FP, tp), FP, FN))
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(
        FP, FN, values, cmap="RdBu_r", vmin=-1, vmax=1, shading="auto", rasterized=True
    )
    levels = [-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]
    cs = ax.contour(FP, FN, values, levels=levels, colors="k", linewidths=0.6)
    ax.clabel(cs, fmt="%+.2f", fontsize=7)
    cbar = fig.colorbar(mesh, ax=ax)
    cbar.set_label("OII   (> 0: FN > FP, under-segmentation)")
    for i, ((t, f_p, f_n), *_rest) in enumerate(rows, start=1):
        if t != tp or f_p > fp_max or f_n > fn_max:
            continue
        ax.plot(f_p, f_n, "o", ms=7, mfc="gold", mec="k")
        ax.annotate(
            str(i),
            (f_p, f_n),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=9,
            fontweight="bold",
        )
    ax.set(
        xlabel="FP (false alarms)",
        ylabel="FN (misses)",
        aspect="equal",
        title=f"OII at TP = {tp:g}; dots: Table 1 rows (numbered)",
    )
    return fig


# --------------------------------------------------------------------- trained runs


def fig_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    keys: Sequence[str] = ("iou", "oii"),
    title: str | None = None,
) -> Figure:
    """Validation metrics against epoch, one line per run, one panel per key.

    Args:
      histories: run label -> its evaluation records (``metrics.jsonl``, e.g. from
        :func:`dibe_jax.train.reporting.read_metrics`), each with ``epoch`` and ``keys``.
      keys: record keys to plot; ``"oii"`` gets the range (-1, 1) and a zero line,
        the others [0, 1].
      title: figure title.
    """
    names = {"iou": "IoU", "oii": "OII", "pa": "PA (precision)", "recall": "recall"}
    fig, axes = _figure(len(keys))
    for ax, key in zip(axes, keys, strict=True):
        for label, records in histories.items():
            epochs = [r["epoch"] for r in records]
            ax.plot(epochs, [r.get(key) for r in records], marker="o", ms=3.5, label=label)
        if key == "oii":
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylim(-1.02, 1.02)
        else:
            ax.set_ylim(0, 1)
        ax.set(
            xlabel="epoch", ylabel=names.get(key, key), title=f"validation {names.get(key, key)}"
        )
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# Colours of the overlays: hits, false alarms (FP) and misses (FN).
_TP_RGB, _FP_RGB, _FN_RGB = (0.1, 0.85, 0.1), (1.0, 0.15, 0.1), (0.15, 0.45, 1.0)


def _dim_gray(image: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` in [0, 1] -> its gray level as dim RGB ``[H, W, 3]`` (colours stand out)."""
    gray = np.asarray(image, np.float32).mean(axis=-1, keepdims=True)
    return np.repeat(0.2 + 0.6 * gray, 3, axis=-1)


def _overlay(image: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``image`` (``[H, W, C]`` in [0, 1]) in dim gray with TP green, FP red and FN blue."""
    out = _dim_gray(image)
    y, p = np.asarray(mask, bool), np.asarray(pred, bool)
    for region, colour in ((y & p, _TP_RGB), (~y & p, _FP_RGB), (y & ~p, _FN_RGB)):
        out[region] = colour
    return np.clip(out, 0, 1)


def fig_mask_overlays(
    images: np.ndarray,
    masks: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    title: str | None = None,
) -> Figure:
    """Predicted masks over images: one row per image, the label then one column per run.

    The image is drawn in dim gray, the label in yellow; in the predictions green = hit (TP),
    red = false alarm (FP), blue = miss (FN). Each prediction's panel is titled with that
    image's IoU and OII (:mod:`dibe_jax.metrics`).

    Args:
      images: ``[N, H, W, C]`` floats in [0, 1].
      masks: ``[N, H, W]`` or ``[N, H, W, 1]`` labels {0, 1}.
      predictions: run label -> ``[N, H, W]`` (or ``[..., 1]``) predicted labels {0, 1}.
      title: figure title.
    """
    images = np.asarray(images, np.float32)
    masks = np.asarray(masks).reshape(images.shape[:3]).astype(bool)
    preds = {
        k: np.asarray(v).reshape(images.shape[:3]).astype(bool) for k, v in predictions.items()
    }
    n, ncols = len(images), 1 + len(preds)
    fig = Figure(figsize=(2.3 * ncols, 2.4 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        label_view = _dim_gray(images[i])
        label_view[masks[i]] = (1.0, 1.0, 0.2)
        axes[i, 0].imshow(np.clip(label_view, 0, 1), interpolation="nearest")
        axes[i, 0].set_title(
            f"label ({int(masks[i].sum())} px)" if i == 0 else f"{int(masks[i].sum())} px",
            fontsize=8,
        )
        for j, (label, pred) in enumerate(preds.items(), start=1):
            y, p = masks[i], pred[i]
            tp, fp, fn = (float(np.sum(y & p)), float(np.sum(~y & p)), float(np.sum(y & ~p)))
            iou, oii = float(metrics.iou(tp, fp, fn)), float(metrics.oii(tp, fp, fn))
            axes[i, j].imshow(_overlay(images[i], y, p), interpolation="nearest")
            head = f"{label}\n" if i == 0 else ""
            axes[i, j].set_title(f"{head}IoU {iou:.2f}  OII {oii:+.2f}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        (title + "\n" if title else "")
        + "green: hit (TP)   red: false alarm (FP)   blue: miss (FN)",
        fontsize=9,
    )
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
