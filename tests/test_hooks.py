"""Notebooks stay clean without thinking about it: in a git clone set up as `make install` sets it up, a notebook
committed with outputs is stored without them (git's filter runs `earthsnap clean --stdin`) while the working copy
keeps them, and two branches that change the same cell merge through nbdev's driver into a notebook that still opens."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, clean_env


def notebook(source: str, outputs: list | None = None) -> str:
    cell = {
        "cell_type": "code",
        "id": "c1",
        "source": source,
        "execution_count": 1 if outputs else None,
        "outputs": outputs or [],
        "metadata": {"tags": ["parameters"]},
    }
    nb = {
        "cells": [cell],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(nb, sort_keys=True, indent=1) + "\n"


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env=clean_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"),
    )
    return r


def test_a_commit_stores_notebooks_clean_and_a_conflict_merges_into_a_notebook(tmp_path):
    repo = tmp_path / "clone"
    (repo / "tools").mkdir(parents=True)
    for name in (".gitattributes", ".gitconfig", "settings.ini", "tools/install_hooks.py"):
        shutil.copy(ROOT / name, repo / name)
    # the environment make install creates, where the filter's command lives
    (repo / ".venv").symlink_to(ROOT / ".venv")
    assert git(repo, "init", "-q", "-b", "main").returncode == 0
    hooks = subprocess.run([sys.executable, "tools/install_hooks.py"], cwd=repo, capture_output=True, text=True)
    assert hooks.returncode == 0 and "cleaned on commit" in hooks.stdout, hooks.stdout + hooks.stderr
    again = subprocess.run([sys.executable, "tools/install_hooks.py"], cwd=repo, capture_output=True, text=True)
    assert again.stdout == "" and git(repo, "config", "--local", "--get-all", "include.path").stdout.split() == [
        "../.gitconfig"
    ]

    worked = notebook("lr = 0.1", [{"output_type": "stream", "name": "stdout", "text": "0.1\n"}])
    (repo / "step.ipynb").write_text(worked)
    git(repo, "add", "-A")
    assert git(repo, "commit", "-qm", "a step").returncode == 0
    stored = json.loads(git(repo, "show", "HEAD:step.ipynb").stdout)
    assert stored["cells"][0]["outputs"] == [] and stored["cells"][0]["execution_count"] is None
    assert stored["cells"][0]["metadata"] == {"tags": ["parameters"]}  # papermill's tag survives
    assert (repo / "step.ipynb").read_text() == worked  # the working copy keeps what the author saw
    assert git(repo, "status", "--porcelain").stdout == ""  # and git does not call it changed

    # two branches change the same cell: nbdev's merge driver leaves a notebook that opens, the conflict inside the cell
    git(repo, "checkout", "-qb", "other")
    (repo / "step.ipynb").write_text(notebook("lr = 0.3"))
    git(repo, "commit", "-qam", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "step.ipynb").write_text(notebook("lr = 0.2"))
    git(repo, "commit", "-qam", "main")
    merged = git(repo, "merge", "other")
    assert merged.returncode != 0  # a real conflict, left for a person
    nb = json.loads((repo / "step.ipynb").read_text())  # still JSON: the notebook opens in JupyterLab
    source = "".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"])
    assert "lr = 0.2" in source and "lr = 0.3" in source and "<<<<<<<" in source, source
