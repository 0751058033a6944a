"""`earthsnap lab` as a user starts it: a real JupyterLab process on 127.0.0.1, rooted at the project, whose HTTP API
offers this environment's python as the kernel and starts one; `earthsnap runs open` then prints the reopened step's
address in that lab. The lab is stopped by its process id; a stop signal to `earthsnap lab` alone (a process manager's
SIGTERM, a closed terminal's SIGHUP) stops JupyterLab and its kernels with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import BIN, ROOT, clean_env, free_port, port_is_free, processes_marked, wait_until_serving


def as_from_a_terminal() -> None:
    "SIGHUP's default action in the started process, as a terminal gives it: a suite run under nohup hands it ignored."
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_lab_serves_the_project_with_its_environment_as_the_kernel(tmp_path):
    project = tmp_path / "p"
    shutil.copytree(ROOT / "pipeline", project / "pipeline")
    port = free_port()
    # its runtime file, where running_labs finds it; a newcomer's Jupyter settings and configuration: none yet
    env = clean_env(
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
    )
    lab = subprocess.Popen(
        [str(BIN / "earthsnap"), "lab", "--port", str(port)],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "lab.log", "w"),
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        first = lab.stdout.readline()
        assert first.startswith(f"JupyterLab on {project}: http://127.0.0.1:{port}/lab?token="), first
        token = first.rsplit("token=", 1)[1].strip()
        api = requests.Session()
        api.headers["authorization"] = f"token {token}"
        wait_until_serving(f"http://127.0.0.1:{port}/api/status", lab, 90, "JupyterLab", get=api.get)
        # the token is required
        assert requests.get(f"http://127.0.0.1:{port}/api/status", timeout=5).status_code == 403
        specs = api.get(f"http://127.0.0.1:{port}/api/kernelspecs", timeout=10).json()
        python = specs["kernelspecs"][specs["default"]]["spec"]
        assert specs["default"] == "python3" and python["language"] == "python"
        assert (
            python["argv"][0] in ("python", sys.executable)
            or Path(python["argv"][0]).resolve() == Path(sys.executable).resolve()
        ), python
        # offline: the lab's first page does not ask to fetch Jupyter's news (the setting says never), the server
        # fetches no news feed and looks for no newer JupyterLab
        settings = api.get(
            f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification", timeout=10
        ).json()
        assert settings["schema"]["properties"]["fetchNews"]["default"] == "false", settings["schema"]
        assert settings["schema"]["properties"]["checkForUpdates"]["default"] is False
        assert settings["settings"] == {}, settings  # the defaults are what the page uses
        assert api.get(f"http://127.0.0.1:{port}/lab/api/news", timeout=10).json() == {"news": []}
        assert api.get(f"http://127.0.0.1:{port}/lab/api/update", timeout=10).json() == {"notification": None}
        page = api.get(f"http://127.0.0.1:{port}/lab", timeout=10).text
        page_config = page.split('<script id="jupyter-config-data" type="application/json">')[1].split("</script>")[0]
        assert json.loads(page_config)["news"] == {"disabled": True}
        kernel = api.post(f"http://127.0.0.1:{port}/api/kernels", json={"name": "python3"}, timeout=60)
        assert kernel.status_code == 201, kernel.text
        assert api.delete(f"http://127.0.0.1:{port}/api/kernels/{kernel.json()['id']}", timeout=30).status_code == 204
        # a notebook saved in the lab is written clean: no outputs or counts, papermill's parameters tag kept
        cell = {
            "cell_type": "code",
            "id": "c1",
            "source": "lr = 0.1",
            "execution_count": 4,
            "metadata": {"tags": ["parameters"], "scrolled": True},
            "outputs": [
                {"output_type": "execute_result", "execution_count": 4, "data": {"text/plain": "0.1"}, "metadata": {}}
            ],
        }
        content = {
            "cells": [cell],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        saved = api.put(
            f"http://127.0.0.1:{port}/api/contents/pipeline/saved.ipynb",
            json={"type": "notebook", "content": content},
            timeout=30,
        )
        assert saved.status_code in (200, 201), saved.text
        on_disk = json.loads((project / "pipeline" / "saved.ipynb").read_text())["cells"][0]
        assert (
            on_disk["outputs"] == []
            and on_disk["execution_count"] is None
            and on_disk["metadata"] == {"tags": ["parameters"]}
        ), on_disk
        tree = api.get(f"http://127.0.0.1:{port}/api/contents/pipeline", timeout=10).json()
        assert "pipeline.py" in {c["name"] for c in tree["content"]}  # rooted at the project
        # a lab of this project is found from its runtime file: runs open prints the address in it
        code = (
            "import sys; from earthsnap.core.config import load_config; from earthsnap.project.lab import lab_url; "
            "print(lab_url(load_config(), 'scratch/x.ipynb'))"
        )
        found = subprocess.run(
            [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=60
        )
        assert found.stdout.strip() == f"http://127.0.0.1:{port}/lab/tree/scratch/x.ipynb?token={token}", (
            found.stdout + found.stderr
        )
        assert lab.poll() is None, "the lab stopped by itself"
    finally:
        try:
            os.killpg(lab.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        lab.wait(timeout=30)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_to_earthsnap_lab_stops_jupyterlab_and_its_kernels(tmp_path, stop):
    project = tmp_path / "p"
    project.mkdir()
    port = free_port()
    mark = f"lab-{stop.name}-{os.getpid()}-{port}"  # every process of the lab's tree inherits it
    env = clean_env(JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), RUN_MARK=mark)
    lab = subprocess.Popen(
        [str(BIN / "earthsnap"), "lab", "--port", str(port)],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "lab.log", "w"),
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        token = lab.stdout.readline().rsplit("token=", 1)[1].strip()
        api = requests.Session()
        api.headers["authorization"] = f"token {token}"
        wait_until_serving(f"http://127.0.0.1:{port}/api/status", lab, 90, "JupyterLab", get=api.get)
        kernel = api.post(f"http://127.0.0.1:{port}/api/kernels", json={"name": "python3"}, timeout=60)
        assert kernel.status_code == 201, kernel.text
        running = processes_marked(mark)
        assert len(running) >= 3, running  # earthsnap lab, JupyterLab and the kernel
        os.kill(lab.pid, stop)  # earthsnap lab only, as a process manager or a closing terminal signals it
        assert lab.wait(timeout=120) == 0, (tmp_path / "lab.log").read_text()[-3000:]
        assert processes_marked(mark) == set(), (tmp_path / "lab.log").read_text()[-3000:]
        assert port_is_free(port)
    finally:
        for pid in processes_marked(mark):  # what survived, so that it does not outlive the test
            os.kill(pid, signal.SIGKILL)
        if lab.poll() is None:
            lab.kill()
            lab.wait(timeout=30)
