"""Sphinx configuration of the elektronn documentation (Markdown pages through MyST).

Build with ``pip install -e ".[docs]"`` and ``sphinx-build -W -b html docs docs/_build/html``.
The API reference is generated from the docstrings (NumPy style) by autodoc; nothing is
written into the source tree.
"""

import os
import sys

# Importing elektronn configures PyTensor (float32, compile dir) and nothing else;
# no graph is compiled by autodoc.  A checkout that is not installed still builds its docs.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
os.environ.setdefault("MPLBACKEND", "Agg")  # introspection picks a backend on import

import elektronn  # noqa: E402

project = "elektronn"
author = "the elektronn developers"
copyright = "2015-2016 the ELEKTRONN authors; the elektronn port, its developers"  # noqa: A001
release = elektronn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 3  # "page.md#a-heading" links

# autodoc: document what each module lists in ``__all__``, in source order, with signatures;
# autosummary only makes the overview tables on the API page (no stub files are generated).
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
# Methods without a docstring of their own (the PyTensor Op interface: make_node, perform, ...)
# are left out instead of repeating PyTensor's generic docstrings.
autodoc_inherit_docstrings = False
autodoc_class_signature = "mixed"
autosummary_generate = False

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"elektronn {release}"
html_theme_options = {
    "description": "2-D/3-D CNNs for (bio)medical image volumes on PyTensor 3",
    "fixed_sidebar": True,
    "page_width": "1240px",
    "sidebar_width": "230px",
}
