"""Segmentation losses for extreme class imbalance, as pure jit-compiled functions.

Binary losses of the DIBE paper (:mod:`dibe_jax.losses.binary`): every function takes
``(logits, labels, *, hyperparameters, where=None, pool_batch=False, axis_name=None)`` and
returns ``[B]``. Look them up by name with :func:`get` / :func:`names`.
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

__all__ = [
    "bce",
    "check_hyperparameters",
    "combo",
    "describe",
    "dibe",
    "dibe_dis",
    "dibe_reg",
    "dice",
    "exp_log",
    "focal",
    "focal_tversky",
    "get",
    "hybrid_focal",
    "hyperparameters",
    "names",
    "register",
    "tversky",
    "wbce",
]
