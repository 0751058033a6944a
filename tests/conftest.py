"""Shared fixtures: run the installed `earthsnap` command as a separate process, in a clean environment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    "The environment without EARTHSNAP_* settings of the machine running the tests, plus `extra`."
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSNAP_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture
def earthsnap():
    "Run `earthsnap ARGS...` as a process; returns the CompletedProcess (text output)."
    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
        return subprocess.run([str(BIN / "earthsnap"), *map(str, args)], cwd=cwd, env=env or clean_env(),
                              capture_output=True, text=True, timeout=timeout)
    return run
