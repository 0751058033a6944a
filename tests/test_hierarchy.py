"""Parent/child models and the HTTP trigger, end to end from the command line, in one small project: data QA started
through `earthsnap api` (a real server on 127.0.0.1, bearer token), followed to its end over HTTP; `earthsnap plan`;
`earthsnap hierarchy run` training the parent, the children and the flat model by their own pipeline runs; approval;
`earthsnap hierarchy router` (the comparison report); the router deployed to a real stage endpoint, tested there like
any model, promoted, and answering with group, species and joint probability."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, clean_env, demo_project, free_port, next_steps, stop_endpoints

TOKEN = "test-token-0123-of-more-than-32-characters"
SMALL = [
    "-p",
    "image_size=32",
    "-p",
    "epochs=3",
    "-p",
    'hyperparameters={"width": 8}',
    "-p",
    "tune_trials=1",
    "-p",
    "tune_epochs=1",
    "-p",
    "tune_parallel=1",
    "-p",
    "train_fraction=0.6",
    "-p",
    "val_fraction=0.2",
    "-p",
    "test_fraction=0.2",
    "-p",
    "min_accuracy=0",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    "A project with 2 groups x 2 species x 20 demo photos; its endpoints are stopped by pid afterwards."
    p = demo_project(tmp_path_factory.mktemp("hierarchy"), faults=False, images=20)
    (p / "earthsnap.yaml").write_text(
        f"deploy_group: hierarchy\nstage_port: {free_port()}\nprod_port: {free_port()}\n"
        "stage_min_accuracy: 0.0\nstage_p95_ms: 10000\n"
    )
    yield p
    stop_endpoints(p)


def call(url: str, method: str, path: str, body: dict | None = None, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(
        url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_api_starts_a_run_and_follows_it(project):
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "earthsnap"), "api", "--port", str(port)],
        cwd=project,
        env=clean_env(EARTHSNAP_API_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                call(url, "GET", "/health")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.1)
        # refused before anything runs: no token, wrong token, unknown parameter, mistyped value, unknown step, missing
        # path
        assert call(url, "POST", "/runs", {"to": ["data_qa"]}, token=None)[0] == 401
        assert call(url, "POST", "/runs", {"to": ["data_qa"]}, token="nope")[0] == 401
        status, body = call(url, "POST", "/runs", {"parameters": {"image_sise": 32}})
        assert status == 422 and "has no parameter 'image_sise'" in body["message"] and "image_size" in body["message"]
        status, body = call(url, "POST", "/runs", {"parameters": {"min_side": "big"}})
        assert status == 422 and "'min_side' is int" in body["message"]
        # the message `earthsnap run -p image_size=5` gives
        status, body = call(url, "POST", "/runs", {"parameters": {"image_size": 5}})
        assert status == 422 and "Parameter 'image_size' must be from 8 to 4096, got 5." in body["message"], body
        # not a taxonomy: refused before a run exists
        (project / "plain.yaml").write_text("acantha: [acantha_striata]\nbetula: [nope: [x]]\n")
        status, body = call(url, "POST", "/runs", {"parameters": {"taxonomy": "plain.yaml"}, "to": ["data_qa"]})
        assert status == 422 and "Parameter 'taxonomy'" in body["message"] and "cannot be used" in body["message"], body
        status, body = call(url, "POST", "/runs", {"to": ["data_qq"]})
        assert status == 422 and "no step 'data_qq'" in body["message"]
        status, body = call(url, "POST", "/runs", {"parameters": {"source": "nowhere/photos"}, "to": ["data_qa"]})
        assert status == 422 and "does not exist" in body["message"]
        assert call(url, "POST", "/runs", {"parameters": [1, 2]})[0] == 422
        assert call(url, "GET", "/runs/earthsnap-20260101-000000-abcdef")[0] == 404
        assert not (project / ".earthsnap" / "runs").exists() or not any((project / ".earthsnap" / "runs").iterdir())
        # a run: 202 at once, then followed until it ends
        status, body = call(url, "POST", "/runs", {"parameters": {"min_side": 32}, "to": ["data_qa"]})
        assert status == 202 and body["status"] == "starting", body
        run_id, deadline = body["id"], time.monotonic() + 240
        while True:
            status, run = call(url, "GET", f"/runs/{run_id}")
            assert status == 200 and run["status"] in ("starting", "running", "succeeded"), run
            if run["status"] == "succeeded":
                break
            assert time.monotonic() < deadline, run
            time.sleep(1)
        assert [(s["name"], s["status"]) for s in run["steps"]] == [("data_qa", "succeeded")] and run["parameters"][
            "min_side"
        ] == 32
        assert run_id in [r["id"] for r in call(url, "GET", "/runs")[1]["runs"]]
        assert (project / ".earthsnap" / "runs" / f"{run_id}.log").read_text().count("data_qa") >= 1
        # a finished run can be neither cancelled nor resumed; an unknown one is 404
        assert (
            call(url, "POST", f"/runs/{run_id}/cancel")[0] == 409
            and call(url, "POST", f"/runs/{run_id}/resume")[0] == 409
        )
        assert call(url, "POST", "/runs/earthsnap-20260101-000000-abcdef/cancel")[0] == 404
        assert call(url, "POST", "/runs/earthsnap-20260101-000000-abcdef/resume", token="nope")[0] == 401
        cancel_and_resume(url, project)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def follow(url: str, run_id: str, until, seconds: float = 240) -> dict:
    "GET the run until `until(run)` holds."
    deadline = time.monotonic() + seconds
    while True:
        status, run = call(url, "GET", f"/runs/{run_id}")
        assert status == 200, run
        if until(run):
            return run
        assert time.monotonic() < deadline and run["status"] not in ("succeeded", "failed"), run
        time.sleep(0.5)


def cancel_and_resume(url: str, project: Path):
    """A run cancelled in its tuning step ends interrupted with its notebook kept; resumed, it keeps the steps that
    succeeded and runs the tuning again; cancelled again, it is interrupted again."""
    long_tuning = {"tune_trials": 500, "tune_epochs": 5, "tune_parallel": 1, "image_size": 32}
    status, body = call(url, "POST", "/runs", {"parameters": long_tuning, "to": ["tune"]})
    assert status == 202, body
    run_id = body["id"]

    def tuning(run):
        return run["status"] == "running" and any(
            s["name"] == "tune" and s["status"] == "running" for s in run["steps"]
        )

    follow(url, run_id, tuning)
    time.sleep(2)  # well inside the step
    status, body = call(url, "POST", f"/runs/{run_id}/cancel")
    assert status == 202 and body["status"] == "interrupting", body
    run = follow(url, run_id, lambda r: r["status"] == "interrupted", 120)
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["preprocess"]["status"] in ("succeeded", "cached") and steps["tune"]["status"] != "succeeded", steps
    # the notebook is kept where it stopped, and says so
    kept = json.loads((Path(run["run_dir"]) / "tune.ipynb").read_text())
    assert kept["metadata"]["earthsnap"]["stopped"]["what"] == "was interrupted", kept["metadata"]
    assert "earthsnap stopped this step:** it was interrupted" in "".join(kept["cells"][0]["source"])
    status, body = call(url, "POST", f"/runs/{run_id}/cancel")
    assert status == 409 and "only a running run" in body["message"] and "resume" in body["fix"], body
    status, body = call(url, "POST", f"/runs/{run_id}/resume")
    assert status == 202 and body["status"] == "resuming", body
    assert call(url, "POST", f"/runs/{run_id}/resume")[0] == 409  # once is enough
    run = follow(url, run_id, lambda r: tuning(r) and {s["name"]: s for s in r["steps"]}["tune"]["attempts"] == 2)
    again = {s["name"]: s for s in run["steps"]}
    assert (
        again["preprocess"]["attempts"] == steps["preprocess"]["attempts"] and run["parameters"]["tune_trials"] == 500
    )
    # the resume runs the steps the run was started for
    assert set(again) == set(steps) and run["options"]["to"] == ["tune"], run
    assert call(url, "POST", f"/runs/{run_id}/cancel")[0] == 202
    follow(url, run_id, lambda r: r["status"] == "interrupted", 120)


def earthsnap(project: Path, *args: str, ok: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [str(BIN / "earthsnap"), *args], cwd=project, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    if ok:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.timeout(900)  # five models trained (150 CPU-seconds): minutes while the other workers share the cores
def test_hierarchy_plan_train_router_release(project):
    earthsnap(project, "run", "--to", "data_qa")
    plan = earthsnap(project, "plan", "--parent-per-group", "30").stdout
    print(plan)
    assert plan.count(" train ") == 4 and "4 of 4 models to train" in plan
    trained = earthsnap(project, "hierarchy", "run", "--parent-per-group", "30", *SMALL)
    print(trained.stdout[-2500:])
    assert "training 4 model(s), 2 at a time" in trained.stdout
    refs = {
        m: next(w for w in trained.stdout.split() if w.startswith(f"hierarchy-{m}/"))
        for m in ("parent", "acantha", "betula", "flat")
    }
    assert "[acantha]" in trained.stdout and "[betula]" in trained.stdout  # each child's own run, side by side
    again = earthsnap(project, "plan", "--parent-per-group", "30").stdout
    assert again.count(" keep ") == 4 and "0 of 4 models to train" in again
    # groups from the data, read from the flat model just trained: settings that cannot work are refused first
    bad = earthsnap(project, "hierarchy", "suggest", "--groups", "9", ok=False)
    assert bad.returncode == 2 and "groups must be from 2 to 3" in bad.stderr, bad.stderr
    assert not (project / ".earthsnap" / "hierarchy" / "suggestions").exists()
    taxonomy = project / ".earthsnap" / "demo-data" / "taxonomy.yaml"
    s = earthsnap(project, "hierarchy", "suggest", "--taxonomy", str(taxonomy))
    print(s.stdout)
    assert "of the flat model's mistakes stay inside the right group" in s.stdout
    proposal = Path(next(ln.split("proposal: ")[1] for ln in s.stdout.splitlines() if ln.startswith("proposal: ")))
    assert proposal.is_file() and (proposal.parent / "suggest_groups.html").is_file()
    # its next step, the plan of a hierarchy on the proposed groups, runs as printed
    assert next_steps(s.stdout)[-1] == ["plan", "--taxonomy", str(proposal)]
    assert "models to train" in earthsnap(project, *next_steps(s.stdout)[-1]).stdout
    # the router wants approved parts
    r = earthsnap(project, "hierarchy", "router", ok=False)
    assert r.returncode == 2 and f"parent: approve {refs['parent']}" in r.stderr
    # what `hierarchy run` says to do next runs as printed: approve every part in one command, then pack the router
    steps = next_steps(trained.stdout)
    assert (
        steps[0][:2] == ["registry", "approve"]
        and set(steps[0][2:]) == set(refs.values())
        and steps[1][:2] == ["hierarchy", "router"]
    ), steps
    earthsnap(project, *steps[0])
    r = earthsnap(project, *steps[1])
    print(r.stdout)
    assert "hierarchy/1 registered, PendingManualApproval" in r.stdout and "router" in r.stdout and "flat" in r.stdout
    report = Path(next(line.split("report: ")[1] for line in r.stdout.splitlines() if "report: " in line))
    comparison = json.loads((report.parent / "comparison" / "comparison.json").read_text())
    # the flat model is approved too, so a summed-flat router was packed beside the trained parent's: the one more
    # accurate on the validation photos is registered, and the report shows the three side by side
    kept, other = ("summed-flat", "trained") if "kept the summed-flat" in r.stdout else ("trained", "summed-flat")
    assert f"kept the {kept} parent: validation accuracy" in r.stdout and comparison["choice"] in r.stdout
    assert set(comparison["models"]) == {"router", "flat", f"router, {other} parent"} and report.exists()
    assert all(
        row["images_per_s_batch32"] > 0 and 0 <= row["errors_in_group"] <= 1 for row in comparison["models"].values()
    )
    assert comparison["models"]["router"]["images"] == comparison["models"]["flat"]["images"] > 0
    # released like any model: approve (the router's next step, as printed) -> stage, tested there -> promote -> prod
    # answers
    assert next_steps(r.stdout) == [["registry", "approve", "hierarchy/1"]]
    r = earthsnap(project, *next_steps(r.stdout)[0])
    print(r.stdout)
    assert "hierarchy/1: stage tests passed" in r.stdout, r.stdout
    earthsnap(project, "deploy", "promote")
    prod = json.loads((project / ".earthsnap" / "endpoints" / "prod" / "endpoint.json").read_text())
    photo = next((project / ".earthsnap" / "demo-data").glob("acantha/*/1.jpg"))
    req = urllib.request.Request(
        f"http://127.0.0.1:{prod['port']}/invocations?top_k=4",
        data=photo.read_bytes(),
        headers={"content-type": "image/jpeg"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
    assert answer["model"] == "hierarchy/1" and len(answer["predictions"]) == 4
    p = answer["predictions"][0]
    assert {"label", "probability", "group", "group_probability", "species_probability"} <= set(p)
    assert abs(p["group_probability"] * p["species_probability"] - p["probability"]) < 1e-5
    assert abs(sum(x["probability"] for x in answer["predictions"]) - 1) < 1e-4
    # --from-flat: the parent and the flat model run by name, the flat model first, the parent from what it registers
    bad = earthsnap(project, "hierarchy", "run", "--from-flat", "--child-param", "weights=imagenet", ok=False)
    assert bad.returncode == 2 and "--from-flat starts the parent and the children" in bad.stderr, bad.stderr
    bad = earthsnap(project, "hierarchy", "run", "--model", "parent", "--from-flat", "-p", "init_weights=x", ok=False)
    assert bad.returncode == 2 and f"from {refs['flat']}, which this run keeps" in bad.stderr, bad.stderr
    started = earthsnap(project, "hierarchy", "run", "--model", "parent", "--model", "flat", "--from-flat", *SMALL)
    print(started.stdout[-2500:])
    flat_first = started.stdout.index("training 1 model(s), 1 at a time: flat")
    assert started.stdout.index(f"the parent and the children start from {refs['flat']}") > flat_first  # its cached run
    assert "training 1 model(s), 1 at a time: parent" in started.stdout[flat_first + 1 :]
    runs = sorted((project / ".earthsnap" / "runs").glob("*-parent*"), key=lambda d: d.stat().st_mtime)
    trained_log = "".join(p.read_text() for p in runs[-1].rglob("train*.ipynb"))
    assert "the classifier of the starting weights knew 4 classes: 0 of these 2 keep their rows" in trained_log
