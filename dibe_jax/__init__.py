"""dibe_jax: JAX/Flax tools for defect segmentation under extreme class imbalance.

Reimplements Yi, Zhong, Liu et al., *Harmonizing output imbalance for defect
segmentation on extremely-imbalanced photovoltaic module cells images* (DIBE):
its losses (:mod:`dibe_jax.losses`), the Output Imbalance Index and other
metrics (:mod:`dibe_jax.metrics`) and the analytic gradients of its Appendix B
(:mod:`dibe_jax.gradients`). Heavier parts (models, datasets, training) live in
their own subpackages and are imported on demand.
"""

from dibe_jax import gradients, losses, metrics

__all__ = ["gradients", "losses", "metrics"]
__version__ = "0.1.0"
