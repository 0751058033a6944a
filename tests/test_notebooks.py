"""The library's notebooks, each executed as `nbdev_test` executes it (its cells are its tests), each a test of its own
so that pytest's workers share them with the other tests (tests/conftest.py hands out the longest first). An executed
notebook is kept in _docs/executed/, from which tests/test_docs.py renders the documentation site: one execution
serves both the tests and the site.

The notebooks run in one process per pytest worker, as tools/build_docs.py runs them (`build_docs.execute`, execnb's
shell in the notebook's folder, nbdev's skip flags), started once and reused."""

from __future__ import annotations

import json
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, run_of

sys.path.insert(0, str(ROOT / "tools"))
import build_docs  # noqa: E402  (tools/ is not a package)

NBS = ROOT / "nbs"
NOTEBOOKS = sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
EXECUTED = build_docs.OUT / "executed"
RESULTS = EXECUTED / ".results"  # one JSON per notebook executed: {"run": the pytest run, "ok": ..., "seconds": ...}


def result_of(name: str) -> Path:
    return RESULTS / f"{name}.json"


def _default_sigint():
    "A notebook sees Ctrl-C as a terminal gives it: a process under pytest-xdist inherits it ignored."
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def notebook_runner():
    "One process that executes notebooks for this pytest worker, one after another, as the docs build's processes do."
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_default_sigint) as pool:
        yield pool


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook(name, notebook_runner, request):
    _, ok, seconds, result = notebook_runner.submit(build_docs.execute, str(NBS / name)).result()
    if ok:
        build_docs.write_nb(result, EXECUTED / name)
    result_of(name).parent.mkdir(parents=True, exist_ok=True)
    result_of(name).write_text(json.dumps({"run": run_of(request.config), "ok": ok, "seconds": round(seconds, 1)}))
    assert ok, f"{name} failed:\n{result}"
