"""Sphinx configuration for sklmm's documentation.

Build (from the repository root, after ``python -m pip install -e ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

``-W`` turns every warning into an error, as CI does.  Pages are Markdown
(MyST); the API reference comes from the numpydoc docstrings (autodoc +
numpydoc); ``_ext/sklmm_docs.py`` adds the directives that list the public API
from ``__all__`` and render the benchmark tables from ``benchmarks/results``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(ROOT))  # import sklmm from this checkout even if not installed

import sklmm  # noqa: E402

project = "sklmm"
author = "sklmm developers"
copyright = "sklmm developers"
release = sklmm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sklmm_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# -- MyST (Markdown) ---------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "substitution"]
# GitHub-style anchors for headings down to ###, so links such as
# workflows.md#3-pandas-in-pandas-out work on GitHub and in the built site alike.
myst_heading_anchors = 3
# Optional pages written by other issues: link to them only once they exist, so the
# site builds (with -W) whichever lands first.
HAS_INFERENCE_PAGE = (DOCS / "inference.md").exists()
sklmm_optional_pages = ["inference"]  # dropped from toctrees while missing (see _ext/sklmm_docs.py)
myst_substitutions = {
    "inference_page": "[Inference](inference.md)" if HAS_INFERENCE_PAGE else "the inference page (in progress)",
}

# -- autodoc + numpydoc ------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False  # methods are documented in place (:members:)
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------
html_theme = "furo"
html_title = f"sklmm {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
pygments_style = "sphinx"
pygments_dark_style = "monokai"
