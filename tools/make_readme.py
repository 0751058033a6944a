"""Render README.md from nbs/index.ipynb.

nbdev's own `nbdev_readme` renders through Quarto, a separate binary download that this project avoids;
nbconvert's Markdown exporter, which we already depend on, does the same job for one notebook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "<!-- Generated from nbs/index.ipynb by tools/make_readme.py "
    "(`make export`); edit the notebook, not this file. -->\n\n"
)


def render_readme(root: Path = ROOT) -> str:
    "The README text that nbs/index.ipynb renders to: markdown as is, code cells without nbdev directives."
    nb = nbformat.read(root / "nbs" / "index.ipynb", as_version=4)
    cells = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "code":
            if any(line.strip() in ("#| hide", "#|hide") for line in lines):
                continue
            lines = [line for line in lines if not line.startswith("#|")]
        cell.source = "\n".join(lines).strip("\n")
        cell.outputs = [] if cell.cell_type == "code" else None
        if cell.outputs is None:
            del cell["outputs"]
        if cell.source:
            cells.append(cell)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return HEADER + body.strip() + "\n"


if __name__ == "__main__":
    (ROOT / "README.md").write_text(render_readme(), encoding="utf-8")
    print("wrote README.md", file=sys.stderr)
