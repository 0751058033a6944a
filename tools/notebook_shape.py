"""Whether the library's notebooks read as nbdev's own do: the habits `make check` keeps (tools/check_sources.py calls
`problems`), and a report of them per notebook.

    .venv/bin/python tools/notebook_shape.py [PATH ...]      # a line per notebook, then the totals; exit 1 on a problem

The habits:
- an exported cell holds at most 60 lines: a longer class is split method by method with fastcore's `@patch`, each
  method with its prose and its test, as nbdev's own nbs/api/02_maker.ipynb does;
- a markdown cell says why, or is a heading: it does not repeat the docstring of the exported cell below it;
- the summary under a notebook's title (the module's docstring) is one sentence;
- a docstring's first paragraph is at most 200 characters: parameters are documented beside them (docments);
- most exported cells have a test or an example right beneath them (markdown between is fine), not in a block at the
  end: the share is reported, and must be at least MIN_TESTED over all the notebooks given.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60
MAX_DOC = 200
MIN_TESTED = 0.5


@dataclass
class Shape:
    "What one notebook looks like: its exported cells, those with a test beneath, and what breaks a habit."

    path: Path
    exported: int = 0
    tested: int = 0
    problems: list[str] = field(default_factory=list)


def _is_export(cell: dict) -> bool:
    return cell["cell_type"] == "code" and any(
        line.replace(" ", "").startswith(("#|export", "#|exporti")) for line in _src(cell).splitlines()[:3]
    )


def _src(cell: dict) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _words(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def _definitions(src: str) -> list[ast.AST]:
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def _repeats(markdown: str, docstring: str) -> bool:
    "Whether a markdown cell says no more than the docstring: the same words, give or take a name in backticks."
    md = _words(re.sub(r"^`[^`]+`:?\s*", "", markdown.strip()))  # `name`: <the docstring>
    doc = _words(docstring)
    return (
        bool(md) and bool(doc) and (md in doc or doc in md) and min(len(md), len(doc)) >= 0.7 * max(len(md), len(doc))
    )


def _summary(cells: list[dict]) -> str | None:
    for cell in cells:
        if cell["cell_type"] == "markdown" and (m := re.search(r"^> (.+)$", _src(cell), re.M)):
            return m.group(1)
    return None


def shape(path: Path) -> Shape:
    "The shape of the notebook at `path`."
    cells = json.loads(path.read_text())["cells"]
    out = Shape(path)
    summary = _summary(cells)
    if summary and re.search(r"[.!?] +[A-Z`]", summary.replace("e.g. ", "").replace("i.e. ", "")):
        out.problems.append(f"its summary is more than one sentence: {summary[:80]}...")
    for i, cell in enumerate(cells):
        if not _is_export(cell):
            continue
        out.exported += 1
        src = _src(cell)
        lines = len(src.splitlines())
        names = [d.name for d in _definitions(src)] or ["(no definition)"]
        where = f"cell {i} ({', '.join(names[:3])})"
        if lines > MAX_LINES:
            out.problems.append(f"{where}: {lines} lines (at most {MAX_LINES}; split it with @patch)")
        below = next((c for c in cells[i + 1 :] if c["cell_type"] != "markdown"), None)
        if below is not None and not _is_export(below):
            out.tested += 1
        above = cells[i - 1] if i else None
        for d in _definitions(src):
            doc = ast.get_docstring(d) or ""
            if above is not None and above["cell_type"] == "markdown" and _repeats(_src(above), doc):
                out.problems.append(f"{where}: the markdown above repeats the docstring of {d.name}")
            first = doc.split("\n\n")[0]
            if len(first) > MAX_DOC:
                out.problems.append(
                    f"{where}: {d.name}'s docstring opens with {len(first)} characters (document "
                    f"its parameters beside them)"
                )
    return out


def notebooks(paths: list[str]) -> list[Path]:
    "The library's notebooks under `paths` (default: all of nbs/), without checkpoints."
    roots = [Path(p) for p in paths] or [ROOT / "nbs"]
    found = [p for r in roots for p in ([r] if r.suffix == ".ipynb" else sorted(r.rglob("*.ipynb")))]
    return [p for p in found if ".ipynb_checkpoints" not in p.parts]


def problems(paths: list[str] | None = None) -> list[str]:
    "Every broken habit in the notebooks under `paths`, and the share of tested exported cells if it is too low."
    shapes = [shape(p) for p in notebooks(paths or [])]
    found = [
        f"{s.path.relative_to(ROOT) if s.path.is_relative_to(ROOT) else s.path}: {p}"
        for s in shapes
        for p in s.problems
    ]
    exported, tested = sum(s.exported for s in shapes), sum(s.tested for s in shapes)
    if exported and tested / exported < MIN_TESTED:
        found.append(
            f"{tested} of {exported} exported cells have a test beneath them ({tested / exported:.0%}; at least "
            f"{MIN_TESTED:.0%})"
        )
    return found


def main(argv: list[str]) -> int:
    shapes = [shape(p) for p in notebooks(argv)]
    for s in shapes:
        rel = s.path.relative_to(ROOT) if s.path.is_relative_to(ROOT) else s.path
        print(f"{str(rel):<42} {s.tested:>3}/{s.exported:<3} tested  {len(s.problems)} problem(s)")
        for p in s.problems:
            print(f"    {p}")
    exported, tested = sum(s.exported for s in shapes), sum(s.tested for s in shapes)
    found = problems(argv)
    print(
        f"{tested} of {exported} exported cells have a test beneath them ({tested / max(exported, 1):.0%}); "
        f"{len(found)} problem(s)"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
