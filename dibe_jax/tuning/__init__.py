"""OII-guided hyperparameter search (Appendix C of the DIBE paper) and its grid baseline.

* :mod:`~dibe_jax.tuning.search`: the searches as pure functions of a
  ``train_fn(value) -> metrics`` callback (bisection on OII, the grid, their results); they
  know nothing about models, data or JAX.
* :mod:`~dibe_jax.tuning.training`: the searches on real trainings, as ``dibe-jax
  oii-search`` runs them: which loss hyperparameter and direction, the other one's rule,
  the request checked before anything trains, one multi-seed training per value.
"""

from dibe_jax.tuning.search import SearchError, SearchResult, grid_search, oii_search
from dibe_jax.tuning.training import SearchPlan, plan_search, run_search, steered_words

__all__ = [
    "SearchError",
    "SearchPlan",
    "SearchResult",
    "grid_search",
    "oii_search",
    "plan_search",
    "run_search",
    "steered_words",
]
