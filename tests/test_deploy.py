"""The release path from the command line: `earthsnap registry approve` hands the approval to the deployer, which
starts a real stage endpoint on 127.0.0.1, tests it over HTTP with the model's held-out test images, and (on
`earthsnap deploy promote`, or by itself with auto_promote) deploys it to prod; a broken archive fails on stage
while prod keeps serving; `earthsnap deploy rollback`; and a deployer killed half-way is taken up exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, clean_env, free_port, stop_endpoints


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path, dict]:
    "A small trained model archive, the records it came from, and its evaluation figures."
    from earthsnap.data.records import demo_records
    from earthsnap.model.evaluation import evaluate
    from earthsnap.model.export import save_model, write_tarball
    from earthsnap.model.hyperparameters import Hyperparameters
    from earthsnap.model.training import train

    tmp = tmp_path_factory.mktemp("model")
    records = demo_records(tmp)
    trained = save_model(
        train(records, Hyperparameters(width=8, epochs=2, batch_size=16), progress=False, log=lambda _: None), tmp / "m"
    )
    metrics = evaluate(trained, records, tmp / "evaluation", progress=False)["metrics"]
    return write_tarball(trained, tmp / "model.tar.gz"), records, metrics


@pytest.fixture
def project(tmp_path, model):
    """A project whose registry holds the model as flora/1, pending approval; its endpoints are stopped afterwards by
    pid.
    """
    (tmp_path / "earthsnap.yaml").write_text(
        f"deploy_group: flora\nstage_port: {free_port()}\nprod_port: {free_port()}\n"
        "stage_min_accuracy: 0.0\nstage_p95_ms: 1000\n"
    )
    register(tmp_path, model[0], model)
    yield tmp_path
    stop_endpoints(tmp_path)  # a server a deployer killed half way started but never recorded too


def register(project: Path, archive: Path, model) -> str:
    from earthsnap.release.registry import SqliteRegistry

    reg = SqliteRegistry(project / ".earthsnap" / "registry.db")
    return reg.register("flora", archive, model[2], {"inputs": {"records": str(model[1])}}, by="test").ref


def serving(project: Path, name: str) -> str:
    port = json.loads((project / ".earthsnap" / "endpoints" / name / "endpoint.json").read_text())["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as r:
        return json.loads(r.read())["model"]


def test_approve_stage_promote_break_rollback(earthsnap, project, model, tmp_path):
    r = earthsnap("registry", "approve", "flora/1", "--by", "ana", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in (
        "flora/1 approved.",
        "flora/1: deploying to stage",
        "✓ ping",
        "✓ accuracy",
        "✓ agrees with evaluation",
        "✓ latency p95",
        "✓ malformed payloads",
        "flora/1: stage tests passed",
        "earthsnap deploy promote flora/1",
    ):
        assert line in r.stdout, (line, r.stdout)
    assert serving(project, "stage") == "flora/1" and not (project / ".earthsnap" / "endpoints" / "prod").exists()

    r = earthsnap("deploy", "promote", cwd=project)
    assert r.returncode == 0 and "flora/1: live in prod" in r.stdout, r.stdout + r.stderr
    assert serving(project, "prod") == "flora/1"

    # a broken archive: approved, fails on stage (exit 1, saying why), and prod keeps serving flora/1
    (tmp_path / "broken.tar.gz").write_bytes(b"this is not a model")
    register(project, tmp_path / "broken.tar.gz", model)
    r = earthsnap("registry", "approve", "flora/2", cwd=project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        "flora/2 approved." in r.stdout
        and "cannot load flora/2" in r.stdout
        and "prod is untouched and serves flora/1" in r.stdout
    )
    assert serving(project, "prod") == "flora/1" and serving(project, "stage") == "flora/1"
    r = earthsnap("deploy", "promote", "flora/2", cwd=project)
    assert r.returncode == 2 and "flora/2 did not pass the stage tests" in r.stderr

    # the good model again as flora/3, promoted by itself with auto_promote; then rolled back to flora/1
    register(project, model[0], model)
    r = earthsnap("registry", "approve", "flora/3", cwd=project, env=clean_env(EARTHSNAP_AUTO_PROMOTE="true"))
    assert r.returncode == 0 and "flora/3: live in prod" in r.stdout, r.stdout + r.stderr
    assert serving(project, "prod") == "flora/3"
    r = earthsnap("deploy", "rollback", "--reason", "complaints", cwd=project)
    assert r.returncode == 0 and "flora/1: live in prod" in r.stdout, r.stdout + r.stderr
    assert serving(project, "prod") == "flora/1"
    r = earthsnap("deploy", "rollback", cwd=project)
    assert r.returncode == 2 and "no earlier version" in r.stderr

    status = earthsnap("deploy", "status", cwd=project).stdout
    rows = [line.split()[:5] for line in status.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [
        ["6", "prod", "flora/1", "rollback", "live"],
        ["5", "prod", "flora/3", "promote", "rolled_back"],
        ["4", "stage", "flora/3", "deploy", "passed"],
        ["3", "stage", "flora/2", "deploy", "failed"],
        ["2", "prod", "flora/1", "promote", "replaced"],
        ["1", "stage", "flora/1", "deploy", "passed"],
    ], status
    assert "complaints" in status and "cannot load flora/2" in status and "serving flora/1" in status


def test_a_deployer_killed_half_way_is_taken_up_once(earthsnap, project):
    db = project / ".earthsnap" / "registry.db"
    proc = subprocess.Popen(
        [str(BIN / "earthsnap"), "registry", "approve", "flora/1"],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it as soon as its deployment has begun
        try:
            with sqlite3.connect(db) as c:
                row = c.execute("SELECT status FROM deployments").fetchone()
        except sqlite3.OperationalError:
            row = None  # the table is not there yet
        if row:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert row == ("in_progress",), row
    r = earthsnap("deploy", "run", cwd=project)
    assert r.returncode == 0 and "flora/1: stage tests passed" in r.stdout, r.stdout + r.stderr
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT endpoint, status, reason FROM deployments").fetchall()
        delivered = c.execute(
            "SELECT attempts, handled_at IS NOT NULL FROM event_deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.consumer = 'deployer' AND e.body LIKE '%\"Approved\"%'"
        ).fetchall()
    assert rows == [("stage", "passed", "6 stage tests passed")], rows
    assert delivered == [(2, 1)]  # delivered twice, deployed once
    again = earthsnap("deploy", "run", cwd=project)
    assert again.returncode == 0 and "Nothing to deploy" in again.stdout


def test_an_approval_left_for_later_is_deployed_by_deploy_run(earthsnap, project):
    r = earthsnap("registry", "approve", "flora/1", "--no-deploy", cwd=project)
    assert r.returncode == 0 and "earthsnap deploy run" in r.stdout and "deploying" not in r.stdout, r.stdout
    assert "No deployments yet" in earthsnap("deploy", "status", cwd=project).stdout
    r = earthsnap("deploy", "run", cwd=project)
    assert r.returncode == 0 and "flora/1: stage tests passed" in r.stdout, r.stdout + r.stderr
    assert serving(project, "stage") == "flora/1"
