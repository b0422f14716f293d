"""Segmentation losses for extreme class imbalance, as pure jit-compiled functions.

Binary losses of the DIBE paper (:mod:`dibe_jax.losses.binary`): every function takes
``(logits, labels, *, hyperparameters, where=None, pool_batch=False, axis_name=None)`` and
returns ``[B]``. Look them up by name with :func:`get` / :func:`names`.

Multi-class losses on softmax logits ``[B, *spatial, C]`` (:mod:`~dibe_jax.losses.multiclass`)
and the losses of the other seed papers: PF-loss (:mod:`~dibe_jax.losses.pf`, one scalar per
batch), the cross dropout focal loss (:mod:`~dibe_jax.losses.cross_dropout`, on ``T`` Monte
Carlo dropout passes), the unified focal loss (:mod:`~dibe_jax.losses.unified_focal`) and the
Lovász losses (:mod:`~dibe_jax.losses.lovasz`).
"""

from dibe_jax.losses._registry import (
    check_hyperparameters,
    describe,
    get,
    hyperparameters,
    names,
    register,
)
from dibe_jax.losses.binary import (
    bce,
    combo,
    dibe,
    dibe_dis,
    dibe_reg,
    dice,
    exp_log,
    focal,
    focal_tversky,
    hybrid_focal,
    tversky,
    wbce,
)
from dibe_jax.losses.cross_dropout import cross_dropout_focal
from dibe_jax.losses.lovasz import lovasz_hinge, lovasz_softmax
from dibe_jax.losses.multiclass import (
    balanced_cross_entropy,
    dibe_dis_multiclass,
    dibe_multiclass,
    dibe_reg_multiclass,
    dice_multiclass,
    focal_tversky_multiclass,
    softmax_cross_entropy,
    softmax_focal,
    tversky_multiclass,
)
from dibe_jax.losses.pf import pf_loss
from dibe_jax.losses.unified_focal import unified_focal

register("bce", bce, "Binary cross-entropy (Eq. 1), mean over pixels.")
register("wbce", wbce, "Weighted BCE (Eq. 2): lam weights the defect class.")
register("focal", focal, "Focal loss (Eq. 3, Lin et al.).")
register("dibe_dis", dibe_dis, "DIBE_Dis (Eq. 18): focal, alpha on misses, beta on false alarms.")
register("dice", dice, "Dice loss (Eqs. 4-5) on soft counts.")
register("tversky", tversky, "Tversky loss (Eqs. 6-7): alpha on misses, beta on false alarms.")
register("focal_tversky", focal_tversky, "Focal Tversky (Eq. 8): (1 - Tv)^(1/gamma).")
register("dibe_reg", dibe_reg, "DIBE_Reg (Eq. 20): (-log Tv)^(1/gamma).")
register("combo", combo, "Combo (Eq. 9): theta * WBCE + (1 - theta) * Dice.")
register("exp_log", exp_log, "Exponential-logarithmic loss (Eqs. 10-11).")
register("hybrid_focal", hybrid_focal, "Hybrid focal (Eq. 12): theta * Focal + (1 - theta) * FT.")
register("dibe", dibe, "DIBE (Eq. 21): theta * DIBE_Dis + (1 - theta) * DIBE_Reg.")
# Multi-class (softmax logits [B, *spatial, C], labels [B, *spatial] or one-hot) and seed papers.
register("softmax_cross_entropy", softmax_cross_entropy, "Softmax CE (CDFL Eq. 1), class weights.")
register("balanced_cross_entropy", balanced_cross_entropy, "Balanced CE (CDFL Eq. 2).")
register("softmax_focal", softmax_focal, "Softmax focal loss (CDFL Eq. 3), per-class alpha.")
register("dice_multiclass", dice_multiclass, "Soft Dice per class, macro-averaged.")
register("tversky_multiclass", tversky_multiclass, "Tversky per class (alpha on misses), macro.")
register("focal_tversky_multiclass", focal_tversky_multiclass, "Focal Tversky per class, macro.")
register("dibe_dis_multiclass", dibe_dis_multiclass, "DIBE_Dis one-vs-rest on softmax, macro.")
register("dibe_reg_multiclass", dibe_reg_multiclass, "DIBE_Reg one-vs-rest on softmax, macro.")
register("dibe_multiclass", dibe_multiclass, "DIBE one-vs-rest on softmax, macro over classes.")
register("pf_loss", pf_loss, "Parameter-free loss (PF Eqs. 9-10, 13): one scalar per batch.")
register(
    "cross_dropout_focal", cross_dropout_focal, "CDFL (Eqs. 4-6): takes [T, B, ..., C] MC logits."
)
register("unified_focal", unified_focal, "Unified focal loss (Yeung 2022), (a)symmetric.")
register("lovasz_hinge", lovasz_hinge, "Binary Lovasz hinge (Jaccard extension), per image.")
register("lovasz_softmax", lovasz_softmax, "Lovasz-softmax (Berman et al.), per image.")

__all__ = [
    "balanced_cross_entropy",
    "bce",
    "check_hyperparameters",
    "combo",
    "cross_dropout_focal",
    "describe",
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
    "lovasz_hinge",
    "lovasz_softmax",
    "names",
    "pf_loss",
    "register",
    "softmax_cross_entropy",
    "softmax_focal",
    "tversky",
    "tversky_multiclass",
    "unified_focal",
    "wbce",
]
