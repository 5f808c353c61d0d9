"""Sphinx configuration: the guide (the Markdown pages of docs/) and the API reference rendered from docstrings.

``make docs`` builds it into ``docs/_build/html`` with warnings as errors.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the checkout's packages, as the tests import them

project = "wage-jax"
author = "The wage-jax authors"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # links to a page's sections (page.md#a-section) resolve
suppress_warnings = ["myst.xref_missing"]  # links to files outside docs/ (the README, sources) stay plain links
autodoc_default_options = {"members": True, "member-order": "bysource", "imported-members": True}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: a dataclass's or NamedTuple's members are documented once
autodoc_typehints_format = "fully-qualified"  # WAGEConfig has one canonical target, wage_spec.config.WAGEConfig
# Annotations as written (the modules use postponed evaluation): jax.typing.ArrayLike, not its 8-type union.
autodoc_type_aliases = {name: name for name in ("jax.Array", "jax.typing.ArrayLike", "ArrayLike", "DTypeLike",
                                                "jax.typing.DTypeLike", "torch.Tensor")}
html_theme = "alabaster"
html_title = "wage-jax"
