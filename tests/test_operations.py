"""`earthsnap doctor` as an operator runs it, on a project whose data half ran for real, with faults planted the ways
they happen: an output edited by hand, another deleted, a run whose process was killed, a deployer killed while it
held an event. It finds each, `--fix` mends what it says it mends, and the exit code says whether anything is left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, ROOT, clean_env, demo_project, free_port, run_id_in, steps_of, stop_endpoints

DATA = ("--to", "preprocess")


def test_doctor_finds_each_planted_fault_and_fix_mends_what_it_says(earthsnap, tmp_path):
    project = demo_project(tmp_path / "p", faults=False)
    r = earthsnap("run", *DATA, cwd=project)
    assert r.returncode == 0, r.stderr
    run_id = run_id_in(r.stdout)
    healthy = earthsnap("doctor", cwd=project)
    assert healthy.returncode == 0 and healthy.stdout.strip().endswith("healthy"), healthy.stdout + healthy.stderr

    run_dir = project / ".earthsnap" / "runs" / run_id
    records = run_dir / "preprocess" / "records"
    # one byte changed
    with open(records / "train.rec", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    # an output deleted
    shutil.rmtree(run_dir / "data_qa" / "dataset")
    db = project / ".earthsnap" / "registry.db"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # the id of a process that has ended
    with sqlite3.connect(db) as c:
        # as a SIGKILLed run leaves it
        c.execute("UPDATE runs SET status = 'running', pid = ? WHERE id = ?", (gone.pid, run_id))
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"a model")
    script = (
        f"from earthsnap.release.registry import SqliteRegistry\nr = SqliteRegistry({str(db)!r})\n"
        f"r.register('flora', {str(archive)!r})\nr.approve('flora/1')"
    )
    assert subprocess.run([str(BIN / "python"), "-c", script], cwd=project, env=clean_env()).returncode == 0
    with sqlite3.connect(db) as c:  # a deployer that died holding the approval
        event = c.execute("SELECT id FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
        c.execute(
            "INSERT INTO event_deliveries (event_id, consumer, claimed_at, "
            "claimed_by, attempts) VALUES (?, 'deployer', strftime('%s','now'), ?, 1)",
            (event, f"{socket.gethostname()}:{gone.pid}:x"),
        )

    found = earthsnap("doctor", cwd=project)
    out = found.stdout
    assert found.returncode == 1, out + found.stderr
    for words in (
        f"the output records of step preprocess of run {run_id} has changed since the run wrote it",
        f"the output dataset of step data_qa of run {run_id} is missing",
        f"run {run_id} is recorded as running, but its process is gone",
        f"event {event} is claimed by",
        "0 fixed, 4 left to a person",
    ):
        assert words in out, (words, out)

    fixed = earthsnap("doctor", "--fix", cwd=project)
    # the artefacts are left to a person
    assert fixed.returncode == 1 and "2 fixed, 2 left to a person" in fixed.stdout, fixed.stdout
    assert (
        "done: Released: the next `earthsnap deploy run` takes it up." in fixed.stdout
        and f"earthsnap run --resume {run_id}" in fixed.stdout
    )
    listed = earthsnap("runs", "list", cwd=project).stdout
    assert run_id in listed and " interrupted " in listed, listed
    with sqlite3.connect(db) as c:  # released: the next `earthsnap deploy run` may claim it
        assert c.execute(
            "SELECT claimed_at, handled_at FROM event_deliveries WHERE event_id = ?", (event,)
        ).fetchone() == (None, None)
    left = earthsnap("doctor", cwd=project)
    assert left.returncode == 1 and "0 fixed, 2 left to a person" in left.stdout and "[claims]" not in left.stdout, (
        left.stdout
    )


SMALL = ["-p", "image_size=32", "-p", "epochs=4", "-p", "tune_trials=1", "-p", "tune_epochs=1", "-p", "min_accuracy=0"]


def _step(db: Path, name: str) -> tuple | None:
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT run_id, status FROM steps WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:
        return None  # not created yet


@pytest.mark.timeout(900)
def test_a_backup_taken_while_a_run_trains_restores_elsewhere_resumes_and_serves(earthsnap, tmp_path):
    """`earthsnap backup` while a run trains; the run is then killed with its machine, as it were. Restored into another
    folder, the project is healthy, the run resumes from where the backup saw it, its model is approved and served;
    gc keeps everything the model needs."""
    project = demo_project(tmp_path / "p", faults=False)
    db = project / ".earthsnap" / "registry.db"
    run = subprocess.Popen(
        [str(BIN / "earthsnap"), "run", *SMALL],
        cwd=project,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while (_step(db, "train") or (None, ""))[1] != "running":
            assert run.poll() is None and time.monotonic() < deadline, (
                run.stdout.read().decode()[-3000:] if run.poll() is not None else "train never started"
            )
            time.sleep(0.1)
        run_id = _step(db, "train")[0]
        dest = tmp_path / "backups"
        r = earthsnap("backup", dest, cwd=project)  # under load: the run trains meanwhile
        assert r.returncode == 0 and "databases through SQLite's online backup: registry.db" in r.stdout, (
            r.stdout + r.stderr
        )
        assert run.poll() is None  # the backup did not disturb the run
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)

    other = tmp_path / "elsewhere"
    shutil.copytree(ROOT / "pipeline", other / "pipeline")
    stage, prod = free_port(), free_port()
    (other / "earthsnap.yaml").write_text(
        f"stage_port: {stage}\nprod_port: {prod}\nstage_min_accuracy: 0.0\nstage_p95_ms: 1000\n"
    )
    r = earthsnap("restore", dest, cwd=other)
    assert (
        r.returncode == 0 and f"run {run_id} was running when the backup was taken: marked interrupted" in r.stdout
    ), r.stdout + r.stderr
    again = earthsnap("restore", dest, cwd=other)
    assert again.returncode != 0 and "has records already" in again.stderr, again.stdout + again.stderr
    # every record's artefact is there with its sha256, nothing points to the old folder
    doctor = earthsnap("doctor", cwd=other)
    assert doctor.returncode == 0 and doctor.stdout.strip().endswith("healthy"), doctor.stdout + doctor.stderr
    with sqlite3.connect(other / ".earthsnap" / "registry.db") as c:
        dump = "\n".join(c.iterdump())
    assert str(project) + "/" not in dump and str(other) + "/" in dump

    r = earthsnap("run", "--resume", run_id, cwd=other, timeout=600)
    assert r.returncode == 0 and "species/1" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    steps = steps_of(earthsnap, other, run_id)
    assert (
        steps["data_qa"] == ("succeeded", 1)
        and steps["preprocess"] == ("succeeded", 1)
        and steps["train"][0] == "succeeded"
    ), steps
    try:
        r = earthsnap("registry", "approve", "species/1", "--by", "ana", cwd=other)
        assert r.returncode == 0 and "stage tests passed" in r.stdout, r.stdout + r.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{stage}/ping", timeout=10) as answer:
            assert json.loads(answer.read())["model"] == "species/1"
        # gc keeps what the model and the endpoint need; the project stays healthy
        gc = earthsnap("runs", "gc", "--keep-days", "0", "--keep-last", "0", cwd=other)
        assert gc.returncode == 0 and f"kept  run {run_id}: it made species/1" in gc.stdout, gc.stdout + gc.stderr
        doctor = earthsnap("doctor", cwd=other)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    finally:
        stop_endpoints(other)
