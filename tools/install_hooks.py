"""Keep notebooks clean without thinking about it: include the repository's .gitconfig in this clone's git config, so
git's filter cleans every notebook that is committed and nbdev's merge driver resolves notebook conflicts.

`make install` runs it; it is idempotent. JupyterLab started by `earthsnap lab` (or `make lab`) cleans on save itself
(earthsnap.project.lab.clean_on_save), so nothing is written to ~/.jupyter. nbdev's own `nbdev_install_hooks` is not
used: it writes to the user's ~/.jupyter for every project, fails in a git worktree (.git is a file there), and names
commands that are only on PATH inside an activated environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def main() -> int:
    if git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        print("not a git clone: notebook hooks not installed (notebooks are still cleaned on save by `earthsnap lab`)")
        return 0
    current = git("config", "--local", "--get-all", "include.path").stdout.split()
    if "../.gitconfig" not in current:
        done = git("config", "--local", "--add", "include.path", "../.gitconfig")
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        print("git: notebooks are cleaned on commit and merged by nbdev's driver (.gitattributes, .gitconfig)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
