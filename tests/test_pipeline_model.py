"""The model half of the EarthSnap pipeline as a user runs it: `earthsnap run` through tuning, training,
evaluation and the accuracy gate, on a small demo set with small settings (real trials in real processes,
real ONNX export, real notebooks in real kernels), and its bad inputs."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import nbformat
import pytest

from conftest import BIN, clean_env, demo_project, free_port, run_id_in, steps_of

# Small enough for a test, real in every part: 2 trials of 1 epoch in 2 processes, 2 epochs of training, 32 px.
FAST = [
    "-p",
    "tune_fraction=1.0",
    "-p",
    "tune_trials=2",
    "-p",
    "tune_parallel=2",
    "-p",
    "tune_epochs=1",
    "-p",
    "epochs=2",
    "-p",
    "image_size=32",
    "-p",
    'search_space={"lr": [0.002, 0.01, "log"], "width": [4, 8]}',
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return demo_project(tmp_path_factory.mktemp("template"), faults=False)


@pytest.fixture
def project(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "p")
    return tmp_path / "p"


def statuses(earthsnap, project: Path, run_id: str) -> dict[str, str]:
    return {name: status for name, (status, _) in steps_of(earthsnap, project, run_id).items()}


def failed_run(earthsnap, project: Path, *args: str) -> Path:
    "Run the pipeline with `args`, expect it to fail (exit 1), and return the run's directory."
    r = earthsnap("run", *FAST, *args, cwd=project, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    return project / ".earthsnap" / "runs" / run_id_in(r.stdout + r.stderr)


def error_of(notebook: Path) -> str:
    "The error output a failed step left in its executed notebook."
    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(
        o.get("evalue", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    )


@pytest.mark.timeout(900)  # a whole pipeline, more than once: minutes while the other workers share the cores
def test_tune_train_evaluate_and_the_gate(earthsnap, project):
    # the train split in 2 shards, which every step after preprocessing reads as one split
    sharded = ["-p", "min_accuracy=0", "-p", "train_shards=2"]
    r = earthsnap("run", *FAST, *sharded, cwd=project, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = run_id_in(r.stdout)
    run = project / ".earthsnap" / "runs" / run_id
    st = statuses(earthsnap, project, run_id)
    assert [st[s] for s in ("tune", "train", "evaluate", "accuracy_gate")] == ["succeeded"] * 4 and st[
        "below_threshold"
    ] == "skipped"
    records = run / "preprocess" / "records"
    assert sorted(p.name for p in records.glob("train*.rec")) == [
        "train-00000-of-00002.rec",
        "train-00001-of-00002.rec",
    ]
    # tuning: 2 trials, the best values, the table and the plot
    best = json.loads((run / "tune" / "tuning" / "best.json").read_text())
    assert best["trials"] == 2 and set(best["params"]) == {"lr", "width"} and 0.002 <= best["params"]["lr"] <= 0.01
    assert (
        len(list(csv.DictReader(open(run / "tune" / "tuning" / "trials.csv")))) == 2
        and (run / "tune" / "tuning" / "search.png").exists()
    )
    # training took the tuned values (by reference to the tuning step's output) and wrote the model both ways
    model = run / "train" / "model"
    hp = json.loads((model / "hyperparameters.json").read_text())
    assert (hp["lr"], hp["width"], hp["epochs"]) == (best["params"]["lr"], best["params"]["width"], 2)
    assert {p.name for p in model.iterdir()} == {
        "model.onnx",
        "model.safetensors",
        "classes.json",
        "hyperparameters.json",
        "metrics.json",
        # the drift reference on the validation photos, packed with the model
        "baseline.npz",
    }
    # how long and where it trained: beside the step's outputs, not in them (trained again, the same bytes); and the
    # tuning study's journal, with each trial's time, beside the tuning output
    facts = json.loads((run / "train" / "training.json").read_text())
    assert set(facts) == {"seconds", "device", "data_wait", "checkpoints"}, facts
    assert facts["checkpoints"]["written"] == 2 and not (run / ".checkpoints" / "train").exists()  # one an epoch
    assert (run / "tune" / "study.journal").exists() and not (run / "tune" / "tuning" / "study.journal").exists()
    with tarfile.open(run / "train" / "artifact" / "model.tar.gz") as tf:
        assert sorted(tf.getnames())[0] == "baseline.npz" and len(tf.getnames()) == 6
    # evaluation: the figures in the JsonGet shape, the report as HTML
    ev = json.loads((run / "evaluate" / "evaluation" / "evaluation.json").read_text())
    assert 0 <= ev["metrics"]["accuracy"]["value"] <= 1 and ev["split"] == "test" and ev["images"] > 0
    assert {"top5_accuracy", "macro_f1"} <= set(ev["metrics"]) and len(ev["per_class"]) == 4
    html = (run / "evaluate.html").read_text()
    assert "Confusion matrix" in html and "Misclassified images" in html and "data:image/png;base64" in html
    assert "validation:accuracy=" in (run / "train.html").read_text()  # the metric lines a tuner reads
    # past the gate, the model is registered pending approval, with its metrics and where it came from
    assert st["register"] == "succeeded"
    listed = earthsnap("registry", "list", cwd=project)
    assert "species/1" in listed.stdout and "PendingManualApproval" in listed.stdout and run_id in listed.stdout
    assert f"{ev['metrics']['accuracy']['value']:.3f}" in listed.stdout
    shown = earthsnap("registry", "show", "species/1", cwd=project).stdout
    sha = hashlib.sha256((run / "train" / "artifact" / "model.tar.gz").read_bytes()).hexdigest()
    assert f"sha256    {sha}" in shown and "dataset   demo@" in shown

    # approved, it goes to a real stage endpoint, is tested there on this run's own held-out test images,
    # and (auto_promote) to prod; the endpoints are stopped by their pids
    env = clean_env(
        EARTHSNAP_STAGE_PORT=str(free_port()),
        EARTHSNAP_PROD_PORT=str(free_port()),
        EARTHSNAP_AUTO_PROMOTE="1",
        EARTHSNAP_STAGE_MIN_ACCURACY="0",
        EARTHSNAP_STAGE_P95_MS="1000",
    )
    try:
        released = earthsnap("registry", "approve", "species/1", cwd=project, env=env)
        assert released.returncode == 0, released.stdout + released.stderr
        assert (
            f"on {ev['images']} held-out test images" in released.stdout
            and "✓ agrees with evaluation" in released.stdout
        )
        assert "species/1: live in prod" in released.stdout
        assert "live" in earthsnap("deploy", "status", cwd=project, env=env).stdout
    finally:
        for name in ("stage", "prod"):
            earthsnap("endpoints", "stop", name, cwd=project, env=env)

    # the same run again: every step from the cache
    again = earthsnap("run", *FAST, *sharded, cwd=project, timeout=300)
    assert again.returncode == 0, again.stderr
    st2 = statuses(earthsnap, project, run_id_in(again.stdout))
    assert all(st2[s] == "cached" for s in ("tune", "train", "evaluate"))
    assert "species/1 Approved (this model was registered before)" in again.stdout

    # a threshold the model cannot reach: the data and model steps come from the cache, and the run fails at
    # the gate naming the figure and the threshold
    accuracy = ev["metrics"]["accuracy"]["value"]
    assert accuracy < 1, accuracy  # a model of seconds is not perfect, so a threshold above its accuracy exists
    above = round((accuracy + 1) / 2, 3)
    high = earthsnap("run", *FAST, "-p", f"min_accuracy={above}", "-p", "train_shards=2", cwd=project, timeout=300)
    assert high.returncode == 1
    assert f"Test accuracy {accuracy:.3f} is below the threshold min_accuracy={above}" in high.stdout + high.stderr
    st3 = statuses(earthsnap, project, run_id_in(high.stdout + high.stderr))
    assert st3["evaluate"] == "cached" and st3["below_threshold"] == "failed" and st3["register"] == "skipped"
    # a threshold no accuracy can reach is refused before a run is recorded
    refused = earthsnap("run", *FAST, "-p", "min_accuracy=1.01", cwd=project)
    assert refused.returncode == 2 and "Parameter 'min_accuracy' must be from 0 to 1, got 1.01." in refused.stderr, (
        refused.stderr
    )


def test_a_hyperparameter_outside_its_range_fails_with_its_notebook(earthsnap, project):
    run = failed_run(earthsnap, project, "-p", 'hyperparameters={"lr": 5}')
    assert "Hyperparameter lr=5.0 is outside its range (1e-06 to 1 (log))" in error_of(run / "train.ipynb")
    assert (run / "train.html").exists() and not (run / "train" / "model").exists()
    st = statuses(earthsnap, project, run.name)
    assert st["tune"] == "succeeded" and st["train"] == "failed" and st["evaluate"] == "pending"


def test_a_search_range_outside_the_valid_one_fails_tuning(earthsnap, project):
    run = failed_run(earthsnap, project, "-p", 'search_space={"dropout": [0.5, 1.5]}')
    assert "The search range of dropout (0.5 to 1.5) goes outside its valid range (0 to 0.9)" in error_of(
        run / "tune.ipynb"
    )


def test_an_empty_split_and_a_class_missing_from_train(earthsnap, project):
    run = failed_run(earthsnap, project, "-p", "train_fraction=0.9", "-p", "val_fraction=0")
    assert "The 'tune_val' split" in error_of(run / "tune.ipynb") and "is empty" in error_of(run / "tune.ipynb")
    run = failed_run(
        earthsnap, project, "-p", "train_fraction=0.05", "-p", "val_fraction=0.45", "-p", "test_fraction=0.5"
    )
    assert "split has no image of" in error_of(
        run / "tune.ipynb"
    ) and "A model cannot learn a class it never sees" in error_of(run / "tune.ipynb")


def test_run_up_to_a_step(earthsnap, project):
    r = earthsnap("run", "--to", "preprocess", cwd=project, timeout=300)
    assert r.returncode == 0, r.stderr
    st = statuses(earthsnap, project, run_id_in(r.stdout))
    assert set(st) == {"data_qa", "preprocess"}
    r = earthsnap("run", "--to", "trian", cwd=project)
    assert r.returncode == 2 and "has no step 'trian'. Did you mean 'train'?" in r.stderr


def test_a_nan_loss_stops_training_with_its_notebook(earthsnap, project):
    # weights with a NaN in the classifier, as a broken checkpoint would have (ResNet of width 4, 4 classes)
    script = (
        "from earthsnap.model.networks import build_model\n"
        "from earthsnap.model.hyperparameters import Hyperparameters\nfrom safetensors.torch import save_file\n"
        "s = build_model(Hyperparameters(width=4), 4).state_dict()\ns['8.weight'][0, 0] = float('nan')\n"
        "save_file(s, 'nan.safetensors')"
    )
    subprocess.run([str(BIN / "python"), "-c", script], cwd=project, check=True, env=clean_env())
    r = earthsnap(
        "run",
        *FAST,
        "-p",
        'hyperparameters={"width": 4}',
        "-p",
        f"init_weights={project / 'nan.safetensors'}",
        cwd=project,
        timeout=600,
    )
    assert r.returncode == 1
    run = project / ".earthsnap" / "runs" / run_id_in(r.stdout + r.stderr)
    error = error_of(run / "train.ipynb")
    assert "The training loss became nan at epoch 1, batch 1" in error and "Lower the learning rate" in error
    assert "TrainingError" in r.stderr and (run / "train.html").exists() and not (run / "train" / "model").exists()


def run_processes(mark: str) -> list[tuple[int, str]]:
    """The processes of a run started with RUN_MARK=`mark` in its environment (every process it starts inherits it):
    (pid, command line).
    """
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and f"RUN_MARK={mark}".encode() in (p / "environ").read_bytes():
                found.append((int(p.name), command_of(int(p.name))))
        except OSError:
            pass
    return found


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def killed_when(project: Path, mark: str, what, args: tuple, timeout: float = 300) -> str:
    """Start `earthsnap run` (or `args`), SIGKILL it as soon as a process of the run matches `what`, and return the
    run's id once no process of it is left (at most 30 s later: kernels see their parent gone, and their helpers end
    with them)."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [str(BIN / "earthsnap"), "run", *args],
        cwd=project,
        env=clean_env(RUN_MARK=mark),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not any(what(pid, cmd) for pid, cmd in run_processes(mark)):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
    proc.kill()
    out = proc.communicate(timeout=60)[0]
    deadline = time.monotonic() + 30
    while run_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = run_processes(mark)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)  # tidy up before failing
    assert left == [], f"left running after the run was killed: {left}"
    return run_id_in(out) if "earthsnap-2" in out else sorted((project / ".earthsnap" / "runs").iterdir())[-1].name


@pytest.mark.timeout(900)  # a whole pipeline, more than once: minutes while the other workers share the cores
def test_a_run_killed_with_sigkill_leaves_no_process_and_resumes(earthsnap, project, tmp_path):
    """SIGKILL (the OOM killer, `kill -9`) while tuning's trial processes run, and again while training's loader workers
    run: no process of the run is left (kernels, trial processes, the loader's fork server, its workers, the resource
    tracker), and the run resumes to the end."""
    mark = str(tmp_path)
    # a trial process
    # batches of 8: a split of fewer batches than loader workers is decoded in the kernel, without them
    small_batches = ("-p", 'hyperparameters={"batch_size": 8}')
    run_id = killed_when(project, mark, lambda pid, cmd: "spawn_main" in cmd, ("--to", "train", *FAST, *small_batches))
    assert " interrupted " in earthsnap("runs", "list", cwd=project).stdout

    # the training loader's (trials have their own)
    def training(pid, cmd):
        return "forkserver" in cmd and "ipykernel" in command_of(parent_of(pid))

    killed_when(project, mark, training, ("--resume", run_id))
    resumed = earthsnap("run", "--resume", run_id, cwd=project, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    steps = steps_of(earthsnap, project, run_id)
    assert steps["tune"] == ("succeeded", 2) and steps["train"][0] == "succeeded" and steps["train"][1] >= 2, steps
