"""Sphinx configuration: the Markdown pages in this folder (MyST) and an API reference from the docstrings.

Build (CI does it with warnings as errors):  python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
from snn_initplug.version import __version__

project = "snn-initplug"
author = "snn-initplug developers"
copyright = "2026, snn-initplug developers"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style Args:/Returns:/Example: sections, as in torch.nn.init
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "results/*.md"]  # benchmark tables; the pages quote them

# Docstrings are Google style; type hints come from the signatures and are shown in the description.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False, "undoc-members": False}
# The framework adapters import snnTorch / SpikingJelly only when asked, so nothing needs mocking.

# The pages link to each other as plain Markdown files; headings get anchors for links like page.md#section.

myst_heading_anchors = 3

html_theme = "alabaster"
html_static_path: list = []
