"""`earthsnap endpoints` as a user runs it: a real server process on 127.0.0.1, started and stopped by the CLI; and
`earthsnap doctor` after it: an endpoint stopped on purpose is healthy, one whose server died is reported."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import free_port


def ping(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_start_list_logs_stop(earthsnap, tmp_path):
    port = free_port()
    r = earthsnap("endpoints", "start", "stage", "--port", str(port), cwd=tmp_path)
    try:
        assert r.returncode == 0, r.stderr
        assert f"stage running at http://127.0.0.1:{port}" in r.stdout and "serving no model yet" in r.stdout
        status, answer = ping(port)  # the server outlived the command that started it
        assert status == 503 and answer["error"] == "model_not_loaded"
        listed = earthsnap("endpoints", "list", cwd=tmp_path).stdout
        assert "stage" in listed and "running" in listed and f"127.0.0.1:{port}" in listed
        again = earthsnap("endpoints", "start", "stage", "--port", str(free_port()), cwd=tmp_path)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        stopped = earthsnap("endpoints", "stop", "stage", cwd=tmp_path)
    assert stopped.returncode == 0 and "stage stopped" in stopped.stdout
    assert "stopped" in earthsnap("endpoints", "list", cwd=tmp_path).stdout
    logs = earthsnap("endpoints", "logs", "stage", cwd=tmp_path).stdout
    assert "Uvicorn running on" in logs and "GET /ping" in logs and "Finished server process" in logs
    try:
        ping(port)
        raise AssertionError("still listening after stop")
    except OSError:
        pass
    doctor = earthsnap("doctor", cwd=tmp_path)  # stopped on purpose: nothing to report
    assert doctor.returncode == 0 and doctor.stdout.strip().endswith("healthy"), doctor.stdout + doctor.stderr
    assert "✓ endpoints   1 checked" in doctor.stdout, doctor.stdout


def test_doctor_reports_an_endpoint_that_died_until_it_is_stopped(earthsnap, tmp_path):
    port = free_port()
    r = earthsnap("endpoints", "start", "stage", "--port", str(port), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pid = json.loads((tmp_path / ".earthsnap" / "endpoints" / "stage" / "endpoint.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)  # died unasked (the OOM killer, a reboot)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():  # until init has reaped it
        assert time.monotonic() < deadline, f"process {pid} outlived SIGKILL"
        time.sleep(0.05)
    doctor = earthsnap("doctor", cwd=tmp_path)
    assert doctor.returncode == 1 and "✗ endpoints   1 checked" in doctor.stdout, doctor.stdout + doctor.stderr
    assert f"endpoint 'stage' (127.0.0.1:{port}) is recorded with process {pid}, which is gone" in doctor.stdout
    assert "earthsnap endpoints stop stage" in doctor.stdout, doctor.stdout
    stopped = earthsnap("endpoints", "stop", "stage", cwd=tmp_path)  # it is to stay down: that is recorded
    assert stopped.returncode == 0 and "stage stopped" in stopped.stdout, stopped.stderr
    doctor = earthsnap("doctor", cwd=tmp_path)
    assert doctor.returncode == 0 and doctor.stdout.strip().endswith("healthy"), doctor.stdout + doctor.stderr
