"""Sphinx configuration for polymsg's documentation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "polymsg"
author = "the polymsg authors"
copyright = "the polymsg authors"

try:
    from importlib.metadata import version as _version

    release = _version("polymsg")
except Exception:  # building from a checkout without polymsg installed
    release = "0+unknown"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "polymsg_docs",
]

exclude_patterns = ["_build"]
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = "alabaster"
html_title = f"polymsg {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Type hints name classes of oslo.config and the standard library that these
# docs do not document; do not warn about each of them.
nitpicky = False
