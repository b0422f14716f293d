"""Sphinx configuration of the dibe_jax documentation (``make docs`` builds it with -W)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

project = "dibe_jax"
author = "dibe_jax authors"
copyright = "2026, dibe_jax authors"  # noqa: A001 (Sphinx's name)
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# MyST: $...$ and $$...$$ maths, ::: fences, automatic anchors for headings (## links).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The docstrings are Google style (Args:, Returns:, Raises:) with reST inside.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: NamedTuple members are documented once
autodoc_member_order = "bysource"
# Types and shapes are in the docstrings' own words ("float [B, *spatial]"); the annotations
# (jax.typing.ArrayLike and friends) would only repeat them as long unions.
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": False}

html_theme = "furo"
html_title = "dibe_jax"
html_static_path = ["_static"]
