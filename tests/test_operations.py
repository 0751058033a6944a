"""`earthsnap doctor` as an operator runs it, on a project whose data half ran for real, with faults planted the ways
they happen: an output edited by hand, another deleted, a run whose process was killed, a deployer killed while it
held an event. It finds each, `--fix` mends what it says it mends, and the exit code says whether anything is left."""
from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys

from conftest import BIN, clean_env, demo_project, run_id_in

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
    with open(records / "train.rec", "r+b") as f: f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 1]))  # one byte changed
    shutil.rmtree(run_dir / "data_qa" / "dataset")                                                                    # an output deleted
    db = project / ".earthsnap" / "registry.db"
    gone = subprocess.Popen([sys.executable, "-c", "pass"]); gone.wait()   # the id of a process that has ended
    with sqlite3.connect(db) as c:
        c.execute("UPDATE runs SET status = 'running', pid = ? WHERE id = ?", (gone.pid, run_id))   # as a SIGKILLed run leaves it
    archive = tmp_path / "model.tar.gz"; archive.write_bytes(b"a model")
    script = (f"from earthsnap.release.registry import SqliteRegistry\nr = SqliteRegistry({str(db)!r})\nr.register('flora', {str(archive)!r})\n"
              "r.approve('flora/1')")
    assert subprocess.run([str(BIN / "python"), "-c", script], cwd=project, env=clean_env()).returncode == 0
    with sqlite3.connect(db) as c:   # a deployer that died holding the approval
        event = c.execute("SELECT id FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
        c.execute("INSERT INTO event_deliveries (event_id, consumer, claimed_at, claimed_by, attempts) VALUES (?, 'deployer', strftime('%s','now'), ?, 1)",
                  (event, f"{socket.gethostname()}:{gone.pid}:x"))

    found = earthsnap("doctor", cwd=project)
    out = found.stdout
    assert found.returncode == 1, out + found.stderr
    for words in (f"the output records of step preprocess of run {run_id} has changed since the run wrote it",
                  f"the output dataset of step data_qa of run {run_id} is missing",
                  f"run {run_id} is recorded as running, but its process is gone", f"event {event} is claimed by", "0 fixed, 4 left to a person"):
        assert words in out, (words, out)

    fixed = earthsnap("doctor", "--fix", cwd=project)
    assert fixed.returncode == 1 and "2 fixed, 2 left to a person" in fixed.stdout, fixed.stdout   # the artefacts are left to a person
    assert "done: Released: the next `earthsnap deploy run` takes it up." in fixed.stdout and f"earthsnap run --resume {run_id}" in fixed.stdout
    listed = earthsnap("runs", "list", cwd=project).stdout
    assert run_id in listed and " interrupted " in listed, listed
    with sqlite3.connect(db) as c:   # released: the next `earthsnap deploy run` may claim it
        assert c.execute("SELECT claimed_at, handled_at FROM event_deliveries WHERE event_id = ?", (event,)).fetchone() == (None, None)
    left = earthsnap("doctor", cwd=project)
    assert left.returncode == 1 and "0 fixed, 2 left to a person" in left.stdout and "[claims]" not in left.stdout, left.stdout
