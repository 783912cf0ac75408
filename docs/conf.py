"""Sphinx configuration of the xlocal documentation site (``tox -e docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

# The checkout's package, unless an installed one comes first (as in .ci/run).
sys.path.append(str(Path(__file__).resolve().parent.parent))

import xlocal  # noqa: E402

project = "xlocal"
author = "The xlocal developers"
copyright = "the xlocal developers; MIT licence"  # noqa: A001
release = xlocal.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]

# README.txt is the manual; it is included by manual.rst, not built on its own.
exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# Inherited docstrings (concurrent.futures.Executor.submit's) are not written in reST.
autodoc_inherit_docstrings = False
nitpicky = False

html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"xlocal {release}"
html_theme_options = {
    "description": "Execution locals: request-scoped state without globals",
    "fixed_sidebar": True,
}
