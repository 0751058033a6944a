"""Copy pipeline/ (its step notebooks and pipeline.py) into the package's project template, which `earthsnap init`
writes into a new project: the wheel must carry them, and they must stay the files of this repository's pipeline/.
`make export` runs it; `tools/check_sources.py` (run by `make test`) fails when the two differ."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "pipeline"
TEMPLATE = ROOT / "earthsnap" / "project_template" / "pipeline"


def pipeline_files(d: Path) -> dict[str, Path]:
    """The files of a pipeline folder that a project needs: its notebooks and Python files (no caches, checkpoints or
    the template's __init__.py, which is nbdev's: see nbs/project/scaffold.ipynb)."""
    return {
        p.name: p
        for p in sorted(d.glob("*"))
        if p.is_file() and p.suffix in (".ipynb", ".py") and p.name != "__init__.py"
    }


def sync() -> list[str]:
    TEMPLATE.mkdir(parents=True, exist_ok=True)
    want, have = pipeline_files(SOURCE), pipeline_files(TEMPLATE)
    changed = []
    for name in sorted(set(have) - set(want)):
        have[name].unlink()
        changed.append(f"removed {name}")
    for name, src in want.items():
        if name not in have or have[name].read_bytes() != src.read_bytes():
            shutil.copyfile(src, TEMPLATE / name)
            changed.append(f"copied {name}")
    return changed


if __name__ == "__main__":
    for line in sync():
        print(f"project template: {line}")
    sys.exit(0)
