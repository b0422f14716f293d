"""Table 6 of the DIBE paper: OII-guided search of alpha, DIBE_Dis on SegNet, THC448."""

from dibe_jax.train import Config


def get_config() -> Config:
    """THC448, SegNet, DIBE_Dis: the base run of the paper's Table 6 OII-guided search.

    The training of each searched value: THC448 (``thc/thc448``, 448x448 EL images of
    photovoltaic cells, FG:BG 1:2228), SegNet (width 64), DIBE_Dis (Eq. 18: lambda 0.25,
    gamma 2; alpha on misses, beta on false alarms, set by the search), 50 epochs, batch
    32, SGD lr 0.01 momentum 0.9. The search starts at alpha = beta = 0.5, the centre of
    [0.1, 0.9], and bisects until the validation OII lies in (0.15, 0.25) (Appendix C);
    ``--grid 4`` also runs the 5-point grid it is compared with.

    Command (THC448 is not redistributed: the folder of its KLIVIS/DIBE copy)::

        dibe-jax oii-search --config thc448_segnet_dibe_dis_search \\
          --manual-dir PATH/THC --param alpha --interval 0.15 0.25 --bounds 0.1 0.9 \\
          --grid 4 --seeds 1 --workdir runs/table6_segnet_dibe_dis

    Expected (paper, Table 6 and Sec. 4.5): alpha 0.5 gives IoU 0.442, PA 0.713, OII
    0.294; OII above the interval raises alpha to 0.7: IoU 0.477, PA 0.709, OII 0.162,
    inside, after 2 trainings; the grid needs 5 and selects alpha 0.1 (IoU 0.481, PA 0.823).
    """
    c = Config()
    c.data.dataset = "thc/thc448"
    c.model.name = "segnet"
    c.model.options = {"width": 64}
    c.loss.name = "dibe_dis"
    c.epochs = 50
    c.batch_size = 32
    c.eval_every = 5
    return c
