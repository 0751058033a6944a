"""Sphinx configuration of earthsnap's documentation site, built by `make docs` (tools/build_docs.py).

The sources are generated into _docs/src: the library's notebooks (nbs/) executed at build time, the pipeline's step
notebooks, the CLI reference from the commands' own help and the API reference from the exported symbols. Sphinx
renders them with MyST-NB (notebooks and Markdown) and the PyData theme; search is Sphinx's own, in the browser.
Nothing is fetched from the network: no web fonts, no CDN scripts (Sphinx adds MathJax only to a page with math, and none has any; the browser test checks that no page asks another host for anything).
"""
from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # sphinx-build -c docs: this file stays where it is
ini = configparser.ConfigParser(delimiters=["="])
ini.read(ROOT / "settings.ini")
settings = ini["DEFAULT"]

project = "earthsnap"
author = settings["author"]
copyright = settings["copyright"]
release = version = settings["version"]

extensions = ["myst_nb", "sphinx.ext.autodoc"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
nb_execution_mode = "off"           # the library's notebooks were executed by tools/build_docs.py, as nbdev_test runs them
nb_merge_streams = True
nb_output_stderr = "show"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure", "myst.xref_missing", "ref.python"]  # ref.python: `type` in signatures names three attributes

autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
default_role = "code"               # docstrings are written in Markdown's habit: `name` is code

html_theme = "pydata_sphinx_theme"
html_title = f"earthsnap {release}"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_css_files = ["earthsnap.css"]
html_show_sourcelink = False
html_theme_options = {
    "github_url": settings["git_url"],
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
    "pygments_light_style": "friendly",
    "pygments_dark_style": "monokai",
}
html_context = {"default_mode": "light"}
