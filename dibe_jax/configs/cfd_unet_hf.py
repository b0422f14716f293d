"""Table 5 of the DIBE paper, CrackForest, U-Net with hybrid focal (Eq. 12), the baseline."""

from dibe_jax.configs import cfd_unet_dibe
from dibe_jax.train import Config


def get_config() -> Config:
    """CrackForest, U-Net (width 64), hybrid focal: the paper's Table 5 baseline (IoU 0.497).

    As ``cfd_unet_dibe`` with the hybrid focal loss ``theta * Focal + (1 - theta) * FT``
    (theta 0.5, lambda 0.25, gamma 2, gamma_FT 0.75, alpha 0.3, beta 0.7), the baseline
    DIBE replaces.

    Command::

        dibe-jax train --config cfd_unet_hf --manual-dir PATH/crackforest \\
          --workdir runs/cfd_unet_hf

    Expected: the paper reports IoU 0.497. Not yet measured at width 64 here; at width 8,
    64 px, batch 8 (EXPERIMENTS.md, 3 seeds) it gave 0.313 +- 0.054 (last 3 evaluations)
    against DIBE's 0.351 +- 0.029.
    """
    c = cfd_unet_dibe.get_config()
    c.loss.name = "hybrid_focal"
    return c
