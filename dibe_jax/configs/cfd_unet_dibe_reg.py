"""Table 5 of the DIBE paper, CrackForest, U-Net with DIBE_Reg (Eq. 20)."""

from dibe_jax.configs import cfd_unet_dibe
from dibe_jax.train import Config


def get_config() -> Config:
    """CrackForest, U-Net (width 64), DIBE_Reg: the paper's Table 5 setting (paper IoU 0.510).

    As ``cfd_unet_dibe`` with the DIBE_Reg loss alone: ``(-log Tv)^(1/gamma)`` with gamma
    1.5, alpha 0.3 on misses, beta 0.7 on false alarms (the paper's defaults).

    Command::

        dibe-jax train --config cfd_unet_dibe_reg --manual-dir PATH/crackforest \\
          --workdir runs/cfd_unet_dibe_reg

    Expected: the paper reports IoU 0.510. Not yet measured at width 64 here; at width 8,
    64 px, batch 8 (EXPERIMENTS.md, 3 seeds) DIBE_Reg gave 0.322 +- 0.100 (last 3
    evaluations) against focal Tversky's 0.274 +- 0.116, above it on every seed.
    """
    c = cfd_unet_dibe.get_config()
    c.loss.name = "dibe_reg"
    return c
