"""Table 6's OII-guided search of alpha on data at hand: Tversky on U-Net, CrackForest."""

from dibe_jax.configs import cfd_unet_dibe
from dibe_jax.train import Config


def get_config() -> Config:
    """CrackForest, U-Net (width 64), Tversky: the Table 6 search (Tversky, U-Net) on CFD.

    The paper searches alpha of the Tversky loss (Eqs. 6-7) on THC448 with U-Net (its
    second worked example: OII 0.000 at alpha 0.5, 0.022 at 0.3, 0.228 at 0.2, PA up from
    0.782 to 0.840). THC448 is not public in full, so this is the same search on
    CrackForest, otherwise as ``cfd_unet_dibe`` (50 epochs, batch 32, SGD lr 0.01).

    Command (3 seeds per value, the reporting statistic: the mean of the last 3 evaluations)::

        dibe-jax oii-search --config cfd_unet_tversky_search \\
          --manual-dir PATH/crackforest --param alpha --interval 0.15 0.25 \\
          --bounds 0.1 0.9 --grid 4 --workdir runs/table6_cfd_unet_tversky

    Expected: the direction of Fig. 10 and Table 6, raising alpha lowers OII; on CFD at
    64 px, width 8, Tversky's OII went from +0.97 at alpha 0.1 to -0.82 at 0.9 by epoch 50
    (EXPERIMENTS.md, 1 seed). The number of trainings the search needs, against the
    grid's 5, is the Table 6 comparison; not yet measured at width 64.
    """
    c = cfd_unet_dibe.get_config()
    c.loss.name = "tversky"
    return c
