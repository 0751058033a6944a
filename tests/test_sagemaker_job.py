"""The image's entry point, `earthsnap-job`, run as a process the way SageMaker runs the container, on this machine.

SageMaker runs `docker run IMAGE train` for a training job and every tuning trial, and `docker run IMAGE serve` for
an endpoint; the Dockerfile's ENTRYPOINT is `earthsnap-job`, the console script these tests start (tests/test_image.py
checks that they are the same). `/opt/ml` is a temporary folder laid out as SageMaker lays it out (EARTHSNAP_SM_ROOT):
channels from S3 prefixes, hyperparameters as text in input/config/hyperparameters.json, the code bundle the
compiler uploads. Nothing here reaches AWS.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, ROOT, clean_env, free_port
from earthsnap.model.training import METRIC_DEFINITIONS
from earthsnap.sagemaker.compiler import BUNDLE, code_bundle


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from earthsnap.data.records import demo_records

    return demo_records(tmp_path_factory.mktemp("records"), images=10)


def job_root(tmp: Path, records: Path, splits: tuple[str, str], hyperparameters: dict) -> Path:
    "/opt/ml of a training job: the channels the compiler declares, the code bundle, the hyperparameters as text."
    ml = tmp / "ml"
    data = ml / "input" / "data"
    for channel, prefix in (
        ("train", f"{splits[0]}."),
        ("validation", f"{splits[1]}."),
        ("classes", "classes.json"),
        ("summary", "summary.json"),
    ):
        (data / channel).mkdir(parents=True)
        for f in records.glob(prefix + "*"):
            shutil.copy(f, data / channel / f.name)
    (data / "code").mkdir()
    (data / "code" / BUNDLE).write_bytes(code_bundle(ROOT / "pipeline")[0])
    (ml / "input" / "config").mkdir(parents=True)
    (ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return ml


def run_job(ml: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = clean_env(EARTHSNAP_SM_ROOT=str(ml), TRAINING_JOB_NAME="earthsnap-train-test")
    return subprocess.run(
        [str(BIN / "earthsnap-job"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=280
    )


def metrics(log: str) -> dict[str, list[float]]:
    "What SageMaker reads from a job's log with the MetricDefinitions regexes."
    return {m["Name"]: [float(x) for x in re.findall(m["Regex"], log)] for m in METRIC_DEFINITIONS}


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    "A training job run once for this module: its /opt/ml (the model in model/) and the finished process."
    tmp = tmp_path_factory.mktemp("train")
    hp = {
        "earthsnap_notebook": "train.ipynb",
        "earthsnap_param_epochs": "2",
        "earthsnap_param_workers": "1",
        "earthsnap_records": "records",
        "earthsnap_tuned_lr": "0.01",
        "earthsnap_tuned_width": "16",
        "earthsnap_tuning": "tuning",
    }
    ml = job_root(tmp, records, ("train", "val"), hp)
    return ml, run_job(ml, "train", cwd=tmp)


def test_a_training_job_reports_its_metrics_in_its_log(trained):
    ml, r = trained
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    found = metrics(r.stdout + r.stderr)
    # one per epoch, then the kept epoch's again, last: SageMaker's final value (the tuner's objective) is the kept one
    assert all(len(v) == 3 for v in found.values()) and all(0 <= a <= 1 for a in found["validation:accuracy"]), found
    kept = json.loads((ml / "model" / "metrics.json").read_text())
    assert found["validation:accuracy"][-1] == round(kept["validation:accuracy"], 4), (found, kept)
    assert found["validation:accuracy"][-1] == max(found["validation:accuracy"][:2]), found
    assert (ml / "model" / "model.onnx").stat().st_size > 0 and (ml / "output" / "data" / "train.ipynb").exists()


def test_a_tuning_trial_reports_the_objective_and_uses_the_tuners_values(records, trained, tmp_path):
    "A trial as SageMaker's tuner runs one: the tuner's values, and starting weights from the `weights` channel."
    hp = {
        "earthsnap_notebook": "train.ipynb",
        "earthsnap_param_epochs": "1",
        "earthsnap_param_workers": "1",
        "earthsnap_records": "records",
        "earthsnap_search": "lr,width",
        "lr": "0.02",
        "width": "16",
        "earthsnap_channels": "weights",  # the compiler's, when the pipeline is compiled with -p weights=s3://...
    }  # what SageMaker's tuner passes a trial
    ml = job_root(tmp_path, records, ("tune_train", "tune_val"), hp)
    shutil.copytree(trained[0] / "model", ml / "input" / "data" / "weights")  # an earlier model of the same network
    (ml / "checkpoints").mkdir()  # CheckpointConfig: the executed notebook is kept there, by job
    r = run_job(ml, "train", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    objective = metrics(r.stdout + r.stderr)["validation:accuracy"]
    assert len(objective) == 2 and objective[0] == objective[1] and 0 <= objective[0] <= 1, objective  # epoch, kept
    used = json.loads((ml / "model" / "hyperparameters.json").read_text())
    assert (used["lr"], used["width"], used["epochs"]) == (0.02, 16, 1)
    assert f"starting from the weights in {ml / 'input' / 'data' / 'weights'}" in r.stdout, r.stdout[-3000:]
    assert (ml / "checkpoints" / "earthsnap-train-test" / "train.ipynb").exists()


def test_a_failed_job_says_why_where_sagemaker_looks(records, tmp_path):
    hp = {
        "earthsnap_notebook": "train.ipynb",
        "earthsnap_param_epochs": "1",
        "earthsnap_records": "records",
        "earthsnap_param_hyperparameters": '{"widht": 16}',
    }
    ml = job_root(tmp_path, records, ("train", "val"), hp)
    (ml / "checkpoints").mkdir()
    r = run_job(ml, "train", cwd=tmp_path)
    assert r.returncode == 1 and "the step failed: Notebook train.ipynb failed" in r.stderr, r.stderr[-2000:]
    assert (
        "widht"
        in (ml / "output" / "failure").read_text()
        + (ml / "checkpoints" / "earthsnap-train-test" / "train.ipynb").read_text()
    )
    r = run_job(ml, "fit", cwd=tmp_path)
    assert r.returncode == 1 and "it runs one of process, train, serve" in r.stderr


def test_the_image_serves_a_model_as_sagemaker_asks(records, trained):
    """`earthsnap-job serve`: the model the training job left in /opt/ml/model, /ping and /invocations on the port
    SageMaker names, stopped by its pid.
    """
    from earthsnap.data.recordio import MXRecordIO, unpack

    ml, r = trained
    assert r.returncode == 0, r.stderr[-2000:]
    port = free_port()
    env = clean_env(
        EARTHSNAP_SM_ROOT=str(ml),
        SAGEMAKER_BIND_TO_PORT=str(port),
        EARTHSNAP_SERVE_HOST="127.0.0.1",
        EARTHSNAP_MODEL_VERSION="species/7",
    )
    proc = subprocess.Popen(
        [str(BIN / "earthsnap-job"), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ping = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no answer"
                )
                time.sleep(0.2)
        assert ping["model"] == "species/7"
        image = unpack(next(iter(MXRecordIO(records / "test.rec", "r"))))[1]  # a JPEG as preprocessing stored it
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=image,
            headers={"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"},
        )
        answer = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert answer["model"] == "species/7" and len(answer["predictions"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
