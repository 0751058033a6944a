"""Every benchmark in bench/ runs in its --smoke mode (seconds, tiny inputs, results not kept), so none can break
unnoticed. `make bench` runs them in full; their figures are ratios against a baseline measured in the same run, never
asserted here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, clean_env

BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
# what each prints once it has measured everything it compares (the figures themselves are not checked)
DONE = {
    "demodata.py": "x baseline",
    "demodata_learnability.py": "epoch  1  species accuracy",
    "executor.py": "fully cached re-run",
    "training.py": "2 processes against 1 (",
    "endpoint.py": "endpoint throughput =",
    "preprocess.py": "peak memory",
    "router.py": "written",
    "console.py": "console load errors =",
    "drift.py": "weakest detection",
    "loop.py": "loop wall time",
    "chaos.py": "trials passed in",
    "transfer.py": "points above random",
    "gpu_training.py": "on tensors already on the device",
}


def test_every_benchmark_is_listed():
    assert set(BENCHES) == set(DONE), "a new benchmark needs its --smoke mode and its line here"


# The chaos smoke runs the pipeline twice (~110 s alone on 2 cores): 2-3 times that while the other workers share the
# cores. The limits only catch a hang: the subprocess's comes first, so its output is in the failure.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("bench", BENCHES)
def test_benchmark_smoke(bench, tmp_path):
    results = ROOT / "bench" / "results"
    before = {p: p.stat().st_mtime_ns for p in results.glob("*")} if results.exists() else {}
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / bench), "--smoke"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert DONE[bench] in r.stdout, r.stdout[-3000:]
    after = {p: p.stat().st_mtime_ns for p in results.glob("*")} if results.exists() else {}
    assert after == before, "a smoke run must not overwrite the full run's results"
