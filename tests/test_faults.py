"""Faults at every write: a small pipeline run, and an approval, are killed with SIGKILL (their whole process group) at
each point where the executor, the registry, the outbox or the deployer writes a record, just before the write and
just after (`earthsnap.core.faults`); the next command (`earthsnap run --resume`, the approval again, or `earthsnap
deploy run`) must end exactly where an uninterrupted one ends, and no traceback may reach the terminal.

How the points are found: an uninterrupted run logs the label of every write point it passes (EARTHSNAP_FAULT_LOG).
How the trials stay affordable: a seed project holds an uninterrupted run up to `evaluate`; each trial copies it, so
that every step comes from the cache except the one whose points it kills (its cache entry is dropped from the copy),
which runs for real. Each point is killed in a fresh copy, then taken up and compared, one trial per point. The photos
and the dataset store sit beside the projects, at one path for all of them, since a cache key holds the paths a step
reads (a copy's own photos would make data QA run again in every trial). The seed is made once per session; the points
are split by step into tests that pytest's workers run side by side (tests/conftest.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import BIN, ROOT, clean_env, free_port, processes_marked, stop_endpoints

sys.path.insert(0, str(ROOT / "bench"))  # bench/ holds scripts, not a package
# the chaos benchmark's own: the endpoint servers a project started (they outlive the command that starts them, by
# design), what an endpoint serves, and what an uninterrupted run gives
from chaos import endpoint_pids, ping  # noqa: E402
from chaos import result_of as run_result  # noqa: E402

SMALL = [
    "-p",
    "image_size=32",
    "-p",
    "epochs=2",
    "-p",
    "tune_trials=1",
    "-p",
    "tune_epochs=1",
    "-p",
    "min_accuracy=0",
    "-p",
    "source=../data",
    "-p",
    "taxonomy=../data/taxonomy.yaml",
]  # relative to a project, which resolves them
NOTEBOOK_STEPS = ("explore_data", "data_qa", "preprocess", "tune", "train", "evaluate")


def earthsnap(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "earthsnap"), *args], cwd=project, env=clean_env(**env), capture_output=True, text=True, timeout=600
    )


def configure(project: Path) -> None:
    "One step at a time (the points come in one order), the shared dataset store, stage endpoints on ports of its own."
    (project / "earthsnap.yaml").write_text(
        f"workers: 1\ndatasets: {project.parent / 'datasets'}\nstage_port: {free_port()}\n"
        f"prod_port: {free_port()}\nstage_min_accuracy: 0.0\nstage_p95_ms: 1000\n"
    )


def copy_project(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("endpoints", "*.lock"))
    configure(dest)
    return dest


def logged(project: Path, *args: str) -> list[str]:
    "Run `earthsnap ARGS` uninterrupted; the labels of the write points it passed, in order."
    log = project / f"points-{uuid.uuid4().hex[:6]}.txt"
    r = earthsnap(project, *args, EARTHSNAP_FAULT_LOG=str(log))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return log.read_text().splitlines()


def scope_of(label: str) -> str:
    "The step a write point belongs to ('' for the run's own records)."
    found = re.search(r"\[([^\]]*)\](#\d+)?$", label)
    return found.group(1) if found else ""


def kill_at(project: Path, label: str, *args: str) -> dict:
    "`earthsnap ARGS` killed at write point `label`: how it ended, what it printed, what of it survived 10 s later."
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [str(BIN / "earthsnap"), *args],
        cwd=project,
        start_new_session=True,
        text=True,
        env=clean_env(EARTHSNAP_FAULT_AT=label, RUN_MARK=tag),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = proc.communicate(timeout=600)
    deadline = time.monotonic() + 10
    while (survivors := processes_marked(tag) - endpoint_pids(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in survivors:  # reported as a failure, then cleaned up
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {
        "killed": proc.returncode == -signal.SIGKILL,
        "exit": proc.returncode,
        "output": output,
        "survivors": sorted(survivors),
    }


def database(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / ".earthsnap" / "registry.db")


def registry_state(project: Path) -> dict:
    "The registry as a person sees it: versions with status, archive and metrics, the events, the deployments."
    with database(project) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = db.execute(
            "SELECT grp, version, status, sha256, metrics FROM model_versions ORDER BY grp, version"
        ).fetchall()
        events = [json.loads(b)["detail"] for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]
        deployments = (
            db.execute("SELECT endpoint, grp, version, action, status FROM deployments ORDER BY id").fetchall()
            if "deployments" in tables
            else []
        )
        handled = (
            db.execute("SELECT COUNT(*) FROM event_deliveries WHERE handled_at IS NOT NULL").fetchone()[0]
            if "event_deliveries" in tables
            else 0
        )
    return {
        "versions": [list(v) for v in versions],  # lists, as the reference read back from JSON has them
        "events": [[e["ModelPackageName"], e["ModelApprovalStatus"]] for e in events],
        "deployments": [list(d) for d in deployments],
        "handled": handled,
    }


def result_of(project: Path) -> dict:
    """What an uninterrupted run gives (bench/chaos.py's comparison: dataset, RecordIO, tuned values, model,
    evaluation) and the registry's state."""
    return {**run_result(project), "registry": registry_state(project)}


def runs_of(project: Path) -> dict[str, str]:
    "Each recorded run's status, by id."
    with database(project) as db:
        return dict(db.execute("SELECT id, status FROM runs"))


def shared_folder(tmp_path_factory) -> Path:
    """A folder all of this session's pytest workers share (the session's base temporary folder); this process's own
    without xdist.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def projects(tmp_path_factory):
    """The seed (an uninterrupted run up to evaluate), the reference (the whole run, then an approval) and their points:
    made once per session, by whichever worker asks first, while the others wait on the lock."""
    root = shared_folder(tmp_path_factory) / "faults"
    root.mkdir(exist_ok=True)
    made = root / "projects.json"
    with open(root / "projects.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            made.write_text(json.dumps(make_projects(root)))
    env = json.loads(made.read_text())
    return {**env, **{k: Path(env[k]) for k in ("root", "seed", "reference")}}


def make_projects(root: Path) -> dict:
    template = root / "template"
    shutil.copytree(ROOT / "pipeline", template / "pipeline")
    r = earthsnap(template, "demo-data", "../data", "--groups", "2", "--species", "2", "--images", "10", "-q")
    assert r.returncode == 0, r.stderr
    seed = copy_project(template, root / "seed")
    steps = logged(seed, "run", *SMALL, "--to", "evaluate", "--to", "explore_data")
    reference = copy_project(seed, root / "reference")
    run = logged(reference, "run", *SMALL)
    approved = copy_project(reference, root / "approved")
    approval = logged(approved, "registry", "approve", "species/1", "--by", "faults")
    assert ping(approved, "stage") == "species/1"
    stop_endpoints(approved)
    points = [p for p in steps if scope_of(p) in NOTEBOOK_STEPS] + [p for p in run if scope_of(p) not in NOTEBOOK_STEPS]
    return {
        "root": str(root),
        "seed": str(seed),
        "reference": str(reference),
        "points": points,
        "result": result_of(reference),
        "approval": approval,
        "approved": registry_state(approved),
    }


def run_trial(env: dict, i: int, label: str) -> list[str]:
    "Kill a run at `label` in a fresh copy of the seed, resume it, compare; what went wrong."
    project = copy_project(env["seed"], env["root"] / f"run-{i}")
    step = scope_of(label)
    if step in NOTEBOOK_STEPS:  # that step runs for real, every other one comes from the cache
        with database(project) as db:
            db.execute("UPDATE steps SET cache_key = NULL WHERE name = ?", (step,))
    before = runs_of(project)
    killed, problems = kill_at(project, label, "run", *SMALL), []
    if not killed["killed"]:
        problems.append(f"not killed (exit {killed['exit']}): the point was not reached")
    if killed["survivors"]:
        problems.append(f"processes survived the kill: {killed['survivors']}")
    calls = []
    # resume the killed run (or start one, if it was killed before it was recorded) until it succeeds
    for _ in range(2):
        new = {i: status for i, status in runs_of(project).items() if i not in before}
        if "succeeded" in new.values():
            break
        calls.append(earthsnap(project, "run", "--resume", *new) if new else earthsnap(project, "run", *SMALL))
    outputs = killed["output"] + "".join(c.stdout + c.stderr for c in calls)
    if "Traceback" in outputs:
        problems.append("a traceback reached the terminal")
    if "succeeded" not in {i: status for i, status in runs_of(project).items() if i not in before}.values():
        problems.append(
            "no run succeeded: " + (f"{calls[-1].stdout[-600:]} {calls[-1].stderr[-600:]}" if calls else "")
        )
    else:
        got, want = result_of(project), env["result"]
        problems += [f"{k} differs: {got[k]!r} != {want[k]!r}" for k in want if got[k] != want[k]]
    if not problems:
        shutil.rmtree(project, ignore_errors=True)
    return problems


def approval_trial(env: dict, i: int, label: str) -> list[str]:
    "Kill an approval at `label` in a fresh copy of the reference, call again, compare; what went wrong."
    project = copy_project(env["reference"], env["root"] / f"approval-{i}")
    problems = []
    try:
        killed = kill_at(project, label, "registry", "approve", "species/1", "--by", "faults")
        if not killed["killed"]:
            problems.append(f"not killed (exit {killed['exit']}): the point was not reached")
        if killed["survivors"]:
            problems.append(f"processes survived the kill: {killed['survivors']}")
        with database(project) as db:
            pending = db.execute("SELECT status FROM model_versions WHERE version = 1").fetchone()[0] != "Approved"
        again = earthsnap(
            project, *(["registry", "approve", "species/1", "--by", "faults"] if pending else ["deploy", "run"])
        )
        if "Traceback" in killed["output"] + again.stdout + again.stderr:
            problems.append("a traceback reached the terminal")
        if again.returncode != 0:
            problems.append(f"the next command failed: {again.stdout[-600:]} {again.stderr[-600:]}")
        if ping(project, "stage") != "species/1":
            problems.append("stage does not serve species/1")
        got = registry_state(project)
        if got != env["approved"]:
            problems.append(f"the registry differs: {got} != {env['approved']}")
        doctor = earthsnap(project, "doctor")
        if doctor.returncode != 0:
            problems.append(f"doctor finds problems: {doctor.stdout[-600:]}")
    finally:
        stop_endpoints(project)
    if not problems:
        shutil.rmtree(project, ignore_errors=True)
    return problems


def trials(points: list[str], trial) -> dict[str, list[str]]:
    "Every point's trial, one after another; the points that went wrong, with what did."
    return {p: problems for i, p in enumerate(points) if (problems := trial(i, p))}


def test_the_points_are_every_write_of_every_step_and_of_the_approval(projects):
    points = projects["points"]
    steps = {scope_of(p) for p in points}
    # every step, the run's own
    assert steps >= {*NOTEBOOK_STEPS, "accuracy_gate", "below_threshold", "register", ""}, steps
    assert any("RunStore.create_run" in p for p in points) and any("RunStore.finish_run" in p for p in points), points
    # the archive and the version it registers
    assert any("registry" in p and "[register]" in p for p in points), points
    for step in NOTEBOOK_STEPS:  # the start, the outputs' rename and the end of each notebook step, before and after
        assert len([p for p in points if scope_of(p) == step]) == 6, [p for p in points if scope_of(p) == step]
    assert all(p.startswith(("before ", "after ")) for p in points) and len(points) == len(set(points))
    approval = projects["approval"]
    assert any("Outbox._claim" in p for p in approval) and any("Outbox._finish" in p for p in approval), approval
    assert any("_DeploymentRecords" in p for p in approval), approval  # the deployer's records
    assert any("Endpoints.start" in p for p in approval), approval  # the stage endpoint's state
    print(f"\n{len(points)} write points of a run, {len(approval)} of an approval")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("step", [*NOTEBOOK_STEPS, ""], ids=[*NOTEBOOK_STEPS, "the-run-and-its-other-steps"])
def test_a_run_killed_at_any_write_resumes_to_the_result_of_an_uninterrupted_run(projects, step):
    """Each step's points in a unit of its own, so that pytest's workers share them ('': the run's own and the other
    steps').
    """
    points = [p for p in projects["points"] if (scope_of(p) == step if step else scope_of(p) not in NOTEBOOK_STEPS)]
    assert points
    failed = trials(points, lambda i, p: run_trial(projects, f"{step or 'run'}-{i}", p))
    print(f"\n{len(points)} write points, each killed once: {len(points) - len(failed)} resumed to the same result")
    assert not failed, json.dumps(failed, indent=1)


@pytest.mark.timeout(900)
def test_an_approval_killed_at_any_write_is_completed_by_the_next_call(projects):
    points = projects["approval"]
    failed = trials(points, lambda i, p: approval_trial(projects, i, p))
    print(
        "\n"
        f"{len(points)} write points of an approval, each killed "
        f"once: {len(points) - len(failed)} completed by the next call"
    )
    assert not failed, json.dumps(failed, indent=1)


def test_a_training_killed_mid_way_goes_on_from_its_checkpoint(projects):
    """`earthsnap run` killed while its training step trains (the run's process group and every process it started,
    its kernel included, as a power cut would): `earthsnap run --resume` takes the training up from the newest
    checkpoint the step left in its run folder, not from the first epoch, and the folder is gone once the step is done.
    """
    project = copy_project(projects["seed"], projects["root"] / f"killed-training-{uuid.uuid4().hex[:6]}")
    longer = ["epochs=8" if a == "epochs=2" else a for a in SMALL]  # the steps before train come from the cache
    tag, runs = uuid.uuid4().hex, project / ".earthsnap" / "runs"
    proc = subprocess.Popen(
        [str(BIN / "earthsnap"), "run", *longer, "--to", "train"],
        cwd=project,
        start_new_session=True,
        env=clean_env(RUN_MARK=tag),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not list(runs.glob("*/.checkpoints/train/*.pt")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its training wrote a checkpoint"
    for pid in processes_marked(tag):
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    (run_dir,) = {p.parents[2] for p in runs.glob("*/.checkpoints/train/*.pt")}
    r = earthsnap(project, "run", "--resume", run_dir.name)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = (run_dir / "train.ipynb").read_text()
    assert "resumed from the checkpoint in" in report and "not from the start" in report, report[-3000:]
    assert "epoch=1 train_loss" not in report  # epoch 1 was done before the kill: not trained again
    assert (run_dir / "train" / "model" / "model.onnx").exists() and not (run_dir / ".checkpoints" / "train").exists()


def test_a_run_trains_in_two_processes_when_asked(projects):
    """`earthsnap run -p processes_per_node=2` trains with two processes (torchrun, gloo on this machine's CPUs): the
    training step's report says so, its training.json records it, and the model is whole. (Here with the seed's cache.)
    """
    project = copy_project(projects["seed"], projects["root"] / f"two-processes-{uuid.uuid4().hex[:6]}")
    r = earthsnap(project, "run", *SMALL, "-p", "processes_per_node=2", "--to", "train")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with database(project) as db:
        (run_dir,) = db.execute("SELECT run_dir FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    run_dir = Path(run_dir)
    assert ", 2 processes" in (run_dir / "train.ipynb").read_text()
    assert json.loads((run_dir / "train" / "training.json").read_text())["processes"] == 2
    assert (run_dir / "train" / "model" / "model.onnx").stat().st_size > 0
