"""Segmentation losses for extreme class imbalance, as pure jit-compiled functions.

Every loss takes ``(logits, labels, *, hyperparameters, where=None, pool_batch=False,
axis_name=None)`` and returns ``[B]`` (PF-loss: one scalar per batch). Look them up by name
with :func:`get` / :func:`names`; :func:`info` says each one's kind (binary, multi-class,
Monte-Carlo dropout, batch scalar), the labels it takes and the datasets it trains on.
Losses refuse input of the wrong kind rather than guess (a binary ``[B, H, W]`` mask given to
a softmax loss is an error saying what was expected).

* :mod:`~dibe_jax.losses.binary`: the DIBE paper's losses on sigmoid logits (Eqs. 1-12, 18,
  20, 21). ``dibe``, ``dibe_dis`` and ``dibe_reg`` here also take softmax logits with class
  ids and then compute the one-vs-rest losses (:mod:`~dibe_jax.losses._routing`).
* :mod:`~dibe_jax.losses.cross_entropy`: softmax cross-entropy, balanced cross-entropy and
  softmax focal (CDFL Eqs. 1-3).
* :mod:`~dibe_jax.losses.multiclass`: Dice, Tversky and focal Tversky per class, and DIBE
  one-vs-rest, macro-averaged over classes.
* The other seed papers: PF-loss (:mod:`~dibe_jax.losses.pf`), the cross dropout focal loss
  (:mod:`~dibe_jax.losses.cross_dropout`, on ``T`` Monte Carlo dropout passes), the unified
  focal loss (:mod:`~dibe_jax.losses.unified_focal`; its binary form is
  ``unified_focal_binary``) and the Lovász losses
  (:mod:`~dibe_jax.losses.lovasz`).

Private helpers: ``_checks`` (static argument checks), ``_safe`` (safe power, division and
log-sigmoids), ``_reduce`` (pixel means, batch/device pooling), ``_softmax`` (log-softmax,
targets and per-class soft counts), ``_routing`` and ``_registry``.
"""

from dibe_jax.losses import binary
from dibe_jax.losses._registry import (
    KINDS,
    LABELS,
    check_hyperparameters,
    describe,
    describe_kind,
    get,
    hyperparameters,
    info,
    names,
    register,
    step_options,
)
from dibe_jax.losses._routing import binary_or_one_vs_rest
from dibe_jax.losses.binary import (
    bce,
    combo,
    dice,
    exp_log,
    focal,
    focal_tversky,
    hybrid_focal,
    tversky,
    wbce,
)
from dibe_jax.losses.cross_dropout import cross_dropout_focal
from dibe_jax.losses.cross_entropy import (
    balanced_cross_entropy,
    softmax_cross_entropy,
    softmax_focal,
)
from dibe_jax.losses.lovasz import lovasz_hinge, lovasz_softmax
from dibe_jax.losses.multiclass import (
    dibe_dis_multiclass,
    dibe_multiclass,
    dibe_reg_multiclass,
    dice_multiclass,
    focal_tversky_multiclass,
    tversky_multiclass,
)
from dibe_jax.losses.pf import pf_loss
from dibe_jax.losses.unified_focal import unified_focal, unified_focal_binary

# The binary DIBE losses also take softmax logits [B, *spatial, C] with class ids [B, *spatial]:
# those go to the one-vs-rest losses, with the same keywords.
dibe = binary_or_one_vs_rest(binary.dibe, dibe_multiclass)
dibe_dis = binary_or_one_vs_rest(binary.dibe_dis, dibe_dis_multiclass)
dibe_reg = binary_or_one_vs_rest(binary.dibe_reg, dibe_reg_multiclass)

# Kinds and labels of the registry (see _registry): what the trainer builds for each loss.
_BIN = {"kinds": ("binary",), "labels": ("binary",)}
_MC = {"kinds": ("multiclass",), "labels": ("class_ids", "one_hot")}
_BOTH = {"kinds": ("binary", "multiclass"), "labels": ("binary", "class_ids")}

register("bce", bce, "Binary cross-entropy (Eq. 1), mean over pixels.", **_BIN)
register("wbce", wbce, "Weighted BCE (Eq. 2): lam weights the defect class.", **_BIN)
register("focal", focal, "Focal loss (Eq. 3, Lin et al.).", **_BIN)
register(
    "dibe_dis",
    dibe_dis,
    "DIBE_Dis (Eq. 18): focal, alpha on misses, beta on false alarms; one-vs-rest on softmax.",
    **_BOTH,
)
register("dice", dice, "Dice loss (Eqs. 4-5) on soft counts.", **_BIN)
register(
    "tversky", tversky, "Tversky loss (Eqs. 6-7): alpha on misses, beta on false alarms.", **_BIN
)
register("focal_tversky", focal_tversky, "Focal Tversky (Eq. 8): (1 - Tv)^(1/gamma).", **_BIN)
register(
    "dibe_reg", dibe_reg, "DIBE_Reg (Eq. 20): (-log Tv)^(1/gamma); one-vs-rest on softmax.", **_BOTH
)
register("combo", combo, "Combo (Eq. 9): theta * WBCE + (1 - theta) * Dice.", **_BIN)
register("exp_log", exp_log, "Exponential-logarithmic loss (Eqs. 10-11).", **_BIN)
register(
    "hybrid_focal", hybrid_focal, "Hybrid focal (Eq. 12): theta * Focal + (1 - theta) * FT.", **_BIN
)
register(
    "dibe",
    dibe,
    "DIBE (Eq. 21): theta * DIBE_Dis + (1 - theta) * DIBE_Reg; one-vs-rest on softmax.",
    **_BOTH,
)
# Multi-class (softmax logits [B, *spatial, C], labels [B, *spatial] or one-hot) and seed papers.
register(
    "softmax_cross_entropy",
    softmax_cross_entropy,
    "Softmax CE (CDFL Eq. 1), class weights.",
    **_MC,
)
register("balanced_cross_entropy", balanced_cross_entropy, "Balanced CE (CDFL Eq. 2).", **_MC)
register(
    "softmax_focal", softmax_focal, "Softmax focal (CDFL Eq. 3), per-class class_weights.", **_MC
)
register("dice_multiclass", dice_multiclass, "Soft Dice per class, macro-averaged.", **_MC)
register(
    "tversky_multiclass",
    tversky_multiclass,
    "Tversky per class (alpha on misses), macro.",
    **_MC,
)
register(
    "focal_tversky_multiclass",
    focal_tversky_multiclass,
    "Focal Tversky per class, macro.",
    **_MC,
)
register(
    "dibe_dis_multiclass",
    dibe_dis_multiclass,
    "DIBE_Dis one-vs-rest on softmax, macro.",
    **_MC,
)
register(
    "dibe_reg_multiclass",
    dibe_reg_multiclass,
    "DIBE_Reg one-vs-rest on softmax, macro.",
    **_MC,
)
register(
    "dibe_multiclass",
    dibe_multiclass,
    "DIBE one-vs-rest on softmax, macro over classes.",
    **_MC,
)
register(
    "pf_loss",
    pf_loss,
    "Parameter-free loss (PF Eqs. 9-10, 13): one scalar per batch.",
    kinds=("batch",),
    labels=("binary", "class_ids"),
)
register(
    "cross_dropout_focal",
    cross_dropout_focal,
    "Cross dropout focal (CDFL Eqs. 4-6) on [T, B, ..., C] MC logits; class_weights on DF.",
    kinds=("mc_dropout",),
    labels=("class_ids", "one_hot"),
    step_options={"mc_samples": 5},  # CDFL: T = 5 dropout passes in every training step
)
register(
    "unified_focal",
    unified_focal,
    "Unified focal loss (Yeung 2022; MR Eqs. 6-12), (a)symmetric, softmax.",
    **_MC,
)
register(
    "unified_focal_binary",
    unified_focal_binary,
    "Unified focal loss on sigmoid logits (two classes [0, z]).",
    **_BIN,
)
register(
    "lovasz_hinge", lovasz_hinge, "Binary Lovász hinge (Berman et al. 2018), per image.", **_BIN
)
register("lovasz_softmax", lovasz_softmax, "Lovász-softmax (Berman et al. 2018), per image.", **_MC)

__all__ = [
    "KINDS",
    "LABELS",
    "balanced_cross_entropy",
    "bce",
    "check_hyperparameters",
    "combo",
    "cross_dropout_focal",
    "describe",
    "describe_kind",
    "dibe",
    "dibe_dis",
    "dibe_dis_multiclass",
    "dibe_multiclass",
    "dibe_reg",
    "dibe_reg_multiclass",
    "dice",
    "dice_multiclass",
    "exp_log",
    "focal",
    "focal_tversky",
    "focal_tversky_multiclass",
    "get",
    "hybrid_focal",
    "hyperparameters",
    "info",
    "lovasz_hinge",
    "lovasz_softmax",
    "names",
    "pf_loss",
    "register",
    "softmax_cross_entropy",
    "softmax_focal",
    "step_options",
    "tversky",
    "tversky_multiclass",
    "unified_focal",
    "unified_focal_binary",
    "wbce",
]
