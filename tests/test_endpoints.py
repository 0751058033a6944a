"""`earthsnap endpoints` as a user runs it: a real server process on 127.0.0.1, started and stopped by the CLI."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from conftest import free_port


def ping(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as r: return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e: return e.code, json.loads(e.read())


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
