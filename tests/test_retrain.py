"""The loop closed on real processes, from the terminal: a pipeline run, approval, stage and prod endpoints; prod serves
photos in other light and captures them; `earthsnap monitor` queues the doubtful and audited ones; a reviewer labels
them; `earthsnap retrain` turns them into a new dataset version derived from the live model's and a candidate, trained
from the live weights, that waits for approval with its comparison. Every server is stopped by its pid."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, clean_env, demo_project, free_port, stop_endpoints, wait_until_serving
from earthsnap.data.demodata import generate_demo_data

CONSOLE_TOKEN = "retrain-test-token-0123456789-0123456789"  # at least 32 characters, as the console asks
SMALL = ["-p", "image_size=32", "-p", "epochs=4", "-p", "tune_trials=1", "-p", "tune_epochs=1", "-p", "min_accuracy=0"]


@pytest.fixture
def project(tmp_path):
    project = demo_project(tmp_path / "p", faults=False)
    (project / "earthsnap.yaml").write_text(
        f"stage_port: {free_port()}\nprod_port: {free_port()}\nstage_min_accuracy: 0.0\nstage_p95_ms: 1000\n"
        "drift_window: 20\nreview_audit_rate: 0.3\nreview_min_probability: 0.9\n"
    )
    yield project
    stop_endpoints(project)


def send(port: int, body: bytes) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, method="POST", headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.timeout(900)
def test_reviewed_photos_retrain_the_live_model(project, earthsnap):
    r = earthsnap("run", *SMALL, cwd=project, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for args in (("registry", "approve", "species/1", "--by", "ana"), ("deploy", "promote")):
        r = earthsnap(*args, cwd=project, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    port = json.loads((project / ".earthsnap" / "endpoints" / "prod" / "endpoint.json").read_text())["port"]

    shifted = generate_demo_data(
        project / "traffic", groups=2, species=2, images=15, seed=0, first=5000, shift="lighting", progress=False
    )
    truth = {}
    for p in sorted(shifted.root.rglob("*.jpg")):
        body = p.read_bytes()
        truth[hashlib.sha256(body).hexdigest()] = p.parent.name
        assert send(port, body)["model"] == "species/1"
    from earthsnap.core.config import load_config
    from earthsnap.release.capture import CaptureStore

    cfg = load_config(project, env={})
    for _ in range(300):
        if CaptureStore(cfg.capture, "prod").count() >= len(truth):
            break
        time.sleep(0.1)
    r = earthsnap("monitor", "--no-report", cwd=project)
    assert r.returncode == 0 and "photo(s) queued for people" in r.stdout, r.stdout + r.stderr

    from earthsnap.monitor.review import ReviewQueue

    q = ReviewQueue(cfg)
    pending = q.items(pending=True)
    assert len(pending) >= 10, q.counts()
    q.decide(pending[0].id, "not_in_taxonomy", by="rita", label="Quercus robur")  # one she finds outside the taxonomy
    for item in pending[1:]:  # a reviewer who knows each species
        q.decide(
            item.id,
            "confirmed" if truth[item.sha256] == item.predicted else "relabelled",
            by="rita",
            label=truth[item.sha256],
        )
    r = earthsnap("plan", cwd=project)
    assert (
        r.returncode == 0 and "1 reviewed photo(s) are not in the taxonomy (people said: Quercus robur x1)" in r.stdout
    ), r.stdout + r.stderr
    pending = pending[1:]

    r = earthsnap("retrain", "--if-reviewed", "1000", cwd=project)
    assert r.returncode == 0 and "No retraining due for prod" in r.stdout, r.stdout + r.stderr
    r = earthsnap("retrain", "-p", "epochs=3", cwd=project, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (
        f"{len(pending)} reviewed photo(s) added to demo@" in r.stdout
        and "1 kept apart (not in the taxonomy)" in r.stdout
        and "candidate species/2 (PendingManualApproval) against live species/1" in r.stdout
    ), r.stdout
    assert (
        "the live model's original test split" in r.stdout
        and "reviewed photos held out for test" in r.stdout
        and "next: earthsnap registry approve species/2" in r.stdout
    ), r.stdout

    from earthsnap.data.datasets import DatasetStore
    from earthsnap.release.registry import open_registry

    reg = open_registry(cfg)
    live, cand = reg.get("species/1"), reg.get("species/2")
    new = DatasetStore(cfg.datasets).get(cand.lineage["dataset"])
    assert new.info["parent"] == live.lineage["dataset"].split("@")[1] and new.info["images"] == DatasetStore(
        cfg.datasets
    ).get(live.lineage["dataset"]).info["images"] + len(pending)
    # nothing reaches prod without a person
    assert cand.status == "PendingManualApproval" and reg.get("species/1").status == "Approved"
    assert (
        cand.lineage["parameters"]["init_weights"].endswith("model.safetensors")
        and cand.lineage["parameters"]["dataset_parent"] == live.lineage["dataset"]
    )
    retrain_dir = Path(cand.lineage["parameters"]["source"]).parent
    prov = [json.loads(line) for line in (retrain_dir / "provenance.jsonl").read_text().splitlines()]
    assert (
        len(prov) == len(pending)
        and {p["reviewer"] for p in prov} == {"rita"}
        and {p["model_version"] for p in prov} == {"species/1"}
    )
    apart = [json.loads(line) for line in (retrain_dir / "not_in_taxonomy.jsonl").read_text().splitlines()]
    assert [a["said"] for a in apart] == ["Quercus robur"] and Path(apart[0]["uri"]).exists()
    comparison = json.loads((retrain_dir / "comparison.json").read_text())["comparison"]
    assert comparison["original_test"]["photos"] > 0 and all(
        0 <= comparison["original_test"][k] <= 1 for k in ("live", "candidate")
    )
    served = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10).read())["model"]
    assert served == "species/1"

    # the candidate's page in the console shows where it came from and its comparison
    console_port = free_port()
    console = subprocess.Popen(
        [str(BIN / "earthsnap"), "console", "--port", str(console_port), "--no-deployer"],
        cwd=project,
        env=clean_env(EARTHSNAP_API_TOKEN=CONSOLE_TOKEN),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{console_port}/health", console, 60, "earthsnap console")
        req = urllib.request.Request(
            f"http://127.0.0.1:{console_port}/console/models/species/2",
            headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"},
        )
        page = urllib.request.urlopen(req, timeout=30).read().decode()
        assert (
            "Retrained on reviewed photos" in page
            and "reviewed photos held out for test" in page
            and f"with {len(pending)} photos people labelled" in page
        )
    finally:
        console.send_signal(signal.SIGTERM)
        console.wait(timeout=30)
