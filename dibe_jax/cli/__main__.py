"""``python -m dibe_jax.cli``: the same as the ``dibe-jax`` command."""

import sys

from dibe_jax.cli import main

sys.exit(main())
