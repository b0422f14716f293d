"""The main job of ``make demo``: a CPU-sized U-Net with DIBE on the synthetic crack set."""

from dibe_jax.train import Config


def get_config() -> Config:
    """The demo: U-Net (width 8), DIBE, synthetic cracks 96x96 (FG:BG 1:150), 12 epochs.

    The embedded ``synthetic_cracks/r150_96`` set (384 train / 128 validation images,
    generated on first use, no files needed), batch 16, evaluation every 2 epochs, the
    paper's SGD (lr 0.01, momentum 0.9) and augmentation; the settings of ``make demo``.

    Command (about 2.5 minutes on 2 CPU cores)::

        dibe-jax train --config demo --data-dir results/tfds --workdir results/demo

    Expected: validation IoU about 0.93, PA about 0.997, OII about +0.5 at epoch 12 (IoU
    0.28 / 0.46 / 0.87 / 0.88 / 0.94 / 0.93 at epochs 2-12 on the project's machine; other
    CPUs pick other XLA kernels, so the last digits differ).
    """
    c = Config()
    c.data.dataset = "synthetic_cracks/r150_96"
    c.model.name = "unet"
    c.model.options = {"width": 8}
    c.loss.name = "dibe"
    c.epochs = 12
    c.batch_size = 16
    c.eval_every = 2
    return c
