"""`earthsnap run` as a user runs it: the EarthSnap pipeline in a fresh project, failures, Ctrl-C, a killed
process, resume, two runs at once, the run records and the DAG. Every run is a real process running real
notebooks in real Jupyter kernels."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from conftest import BIN, clean_env, demo_project, run_id_in, steps_of

# These tests are about the executor, so they run the data half of the pipeline (`--to`); the model half is
# tested in test_pipeline_model.py.
DATA = ("--to", "explore_data", "--to", "preprocess")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    "A project: the pipeline folder and a small demo dataset with the planted faults in its store."
    return demo_project(tmp_path_factory.mktemp("template"), faults=True)


@pytest.fixture
def project(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "p")
    return tmp_path / "p"


def add_cell(notebook: Path, code: str):
    "Put a cell right after the parameters cell of a step notebook (the project's copy)."
    nb = nbformat.read(notebook, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(code))
    nbformat.write(nb, notebook)


def start(project: Path, *args: str, group: bool = False, **env) -> subprocess.Popen:
    """`earthsnap run` as from a terminal: SIGINT at its default (a background job would inherit it ignored); `group`:
    in a process group of its own, as a terminal's foreground job.
    """

    def child():
        if group:
            os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [str(BIN / "earthsnap"), "run", *DATA, *args],
        cwd=project,
        env=clean_env(**env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=child,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def cell_running(notebook: Path, marker: str) -> bool:
    "Whether papermill has recorded the cell whose source holds `marker` as running in the executed `notebook`."
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:
        return False  # not written yet, or being written
    return any(marker in c.source and c.metadata.get("papermill", {}).get("status") == "running" for c in nb.cells)


def test_run_then_cached_rerun(earthsnap, project):
    r = earthsnap("run", *DATA, cwd=project)
    assert r.returncode == 0, r.stderr
    first = run_id_in(r.stdout)
    run_dir = project / ".earthsnap" / "runs" / first
    for step in ("explore_data", "data_qa", "preprocess"):
        assert (run_dir / f"{step}.ipynb").exists() and (run_dir / f"{step}.html").exists()
    assert (run_dir / "preprocess" / "records" / "train.rec").exists() and (
        run_dir / "data_qa" / "dataset" / "qa.json"
    ).exists()
    assert not list((run_dir / ".partial").iterdir())
    again = earthsnap("run", *DATA, cwd=project)
    assert again.returncode == 0 and again.stdout.count(f"cached              from {first}") == 3, again.stdout
    # a changed photo re-runs data QA and what reads it; the exploration reads the photos too
    photo = next((project / ".earthsnap" / "demo-data").rglob("*.jpg"))
    photo.write_bytes(photo.read_bytes() + b"\0")
    changed = earthsnap("run", *DATA, cwd=project)
    assert changed.returncode == 0 and "↺" not in changed.stdout, changed.stdout
    # the digests remembered by file identity (size, times, inode) see a rewrite of the same size and a replacement by
    # rename
    other = next(p for p in (project / ".earthsnap" / "demo-data").rglob("*.jpg") if p != photo)
    for edit in (
        lambda: photo.write_bytes(other.read_bytes()[: photo.stat().st_size].ljust(photo.stat().st_size, b"\0")),
        lambda: (shutil.copyfile(other, project / "swap.jpg"), os.replace(project / "swap.jpg", photo)),
    ):
        edit()
        seen = earthsnap("run", *DATA, cwd=project)
        assert seen.returncode == 0, seen.stderr
        ran = steps_of(earthsnap, project, run_id_in(seen.stdout))
        # what reads the photos ran again
        assert ran["explore_data"][0] == ran["data_qa"][0] == "succeeded", seen.stdout
    # nothing changed: every file read again, every step cached
    forced = earthsnap("run", *DATA, "--rehash", cwd=project)
    assert forced.returncode == 0 and forced.stdout.count("↺") == 3, forced.stdout
    # a changed parameter re-runs the step it reaches, and data QA stays cached
    size = earthsnap("run", *DATA, "-p", "image_size=48", cwd=project)
    assert size.returncode == 0
    assert {s: st for s, (st, _) in steps_of(earthsnap, project, run_id_in(size.stdout)).items()} == {
        "explore_data": "cached",
        "data_qa": "cached",
        "preprocess": "succeeded",
    }
    listed = earthsnap("runs", "list", cwd=project).stdout.splitlines()
    assert len(listed) == 8 and all(" succeeded " in line for line in listed[1:]), listed
    fresh = earthsnap("run", *DATA, "--no-cache", cwd=project)
    assert fresh.returncode == 0 and "↺" not in fresh.stdout


def test_failed_step_keeps_its_notebook_and_resumes(earthsnap, project):
    add_cell(
        project / "pipeline" / "preprocess.ipynb",
        "import os\nif os.path.exists(os.environ['FAIL_FLAG']): raise RuntimeError('disk full')",
    )
    flag = project / "FAIL"
    flag.write_text("")
    r = earthsnap("run", *DATA, cwd=project, env=clean_env(FAIL_FLAG=str(flag)))
    assert r.returncode == 1, r.stderr
    run_id = run_id_in(r.stderr)
    assert (
        "step preprocess failed" in r.stderr
        and "RuntimeError: disk full" in r.stderr
        and f"--resume {run_id}" in r.stderr
    )
    run_dir = project / ".earthsnap" / "runs" / run_id
    assert (
        "disk full" in (run_dir / "preprocess.ipynb").read_text()
        and "disk full" in (run_dir / "preprocess.html").read_text()
    )
    assert not (run_dir / "preprocess").exists()  # nothing half-written where outputs appear
    assert steps_of(earthsnap, project, run_id) == {
        "explore_data": ("succeeded", 1),
        "data_qa": ("succeeded", 1),
        "preprocess": ("failed", 1),
    }
    flag.unlink()
    resumed = earthsnap("run", *DATA, "--resume", run_id, cwd=project, env=clean_env(FAIL_FLAG=str(flag)))
    assert resumed.returncode == 0, resumed.stderr
    assert steps_of(earthsnap, project, run_id) == {
        "explore_data": ("succeeded", 1),
        "data_qa": ("succeeded", 1),
        "preprocess": ("succeeded", 2),
    }
    assert (run_dir / "preprocess" / "records" / "full.rec").exists()
    again = earthsnap("run", *DATA, "--resume", run_id, cwd=project)
    assert again.returncode == 2 and "only a failed or interrupted run resumes" in again.stderr


def test_a_resumed_run_keeps_how_it_was_started(earthsnap, project):
    """A run started with --no-cache and --workers 1, up to preprocess, resumes with them when nothing is said: the
    same steps, nothing from the cache (the first run's preprocess would have been a hit), and says so; another
    --to is refused."""
    add_cell(
        project / "pipeline" / "preprocess.ipynb",
        "import os\nif os.path.exists(os.environ['FAIL_FLAG']): raise RuntimeError('disk full')",
    )
    flag = project / "FAIL"
    # the cache now holds every step
    assert earthsnap("run", *DATA, cwd=project, env=clean_env(FAIL_FLAG=str(flag))).returncode == 0
    flag.write_text("")
    r = earthsnap("run", *DATA, "--no-cache", "--workers", "1", cwd=project, env=clean_env(FAIL_FLAG=str(flag)))
    assert r.returncode == 1 and "cache off" in r.stdout, r.stdout + r.stderr
    run_id = run_id_in(r.stderr)
    flag.unlink()
    refused = earthsnap("run", "--resume", run_id, "--to", "data_qa", cwd=project)
    assert refused.returncode == 2 and "a resume takes the same steps" in refused.stderr, refused.stderr
    # no --to, no --no-cache
    resumed = earthsnap("run", "--resume", run_id, cwd=project, env=clean_env(FAIL_FLAG=str(flag)))
    assert resumed.returncode == 0 and "1 at a time, cache off" in resumed.stdout, resumed.stdout + resumed.stderr
    assert steps_of(earthsnap, project, run_id) == {
        "explore_data": ("succeeded", 1),
        "data_qa": ("succeeded", 1),
        "preprocess": ("succeeded", 2),
    }
    shown = earthsnap("runs", "show", run_id, cwd=project).stdout
    assert "options    cache off, workers 1, up to explore_data, preprocess" in shown, shown


def kernels_marked(mark: str) -> list[int]:
    "The Jupyter kernels whose environment holds RUN_MARK=`mark`: those a run started with it started."
    found = []
    for p in Path("/proc").iterdir():
        try:
            if (
                p.name.isdigit()
                and b"ipykernel" in (p / "cmdline").read_bytes()
                and f"RUN_MARK={mark}".encode() in (p / "environ").read_bytes()
            ):
                found.append(int(p.name))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "kill"])
def test_no_kernel_outlives_an_interrupted_run(project, how, tmp_path):
    """While data QA runs, preprocessing's kernel is started ahead; however the run is stopped, no kernel of it is
    left: Ctrl-C and SIGTERM shut them down before earthsnap exits, and after SIGKILL they see their parent gone."""
    add_cell(project / "pipeline" / "data_qa.ipynb", "import time\ntime.sleep(120)")
    mark = str(tmp_path)  # the run's kernels, the one running and those started ahead, inherit it
    proc = start(project, RUN_MARK=mark)
    runs = project / ".earthsnap" / "runs"
    wait_for(
        lambda: list(runs.glob("*/data_qa.ipynb")) and cell_running(next(runs.glob("*/data_qa.ipynb")), "sleep(120)"),
        proc,
    )
    wait_for(lambda: len(kernels_marked(mark)) >= 2, proc)  # data QA's kernel, and preprocessing's started ahead
    if how == "kill":
        proc.kill()
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while kernels_marked(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
    else:
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "was interrupted" in err, err
    assert kernels_marked(mark) == []


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_interrupted_run_shows_nothing_half_written_and_resumes(earthsnap, project, how):
    add_cell(
        project / "pipeline" / "preprocess.ipynb",
        "import os, time\nos.write(2, b'a warning below Python\\n')\n"
        "time.sleep(float(os.environ.get('STEP_SLEEP', '0')))",
    )
    proc = start(project, STEP_SLEEP="120", group=True)
    runs = project / ".earthsnap" / "runs"
    wait_for(lambda: list(runs.glob("*/.partial/preprocess")), proc)
    run_dir = next(runs.glob("*/.partial/preprocess")).parent.parent
    # the kernel is in the sleeping cell
    wait_for(lambda: cell_running(run_dir / "preprocess.ipynb", "STEP_SLEEP"), proc)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to earthsnap and every kernel of its process group
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "was interrupted" in err and f"--resume {run_dir.name}" in err, err
        # the notebook is kept, where it stopped
        assert "KeyboardInterrupt" in (run_dir / "preprocess.ipynb").read_text()
        # what the kernel printed itself (a C library's warning, ipykernel's log of the Ctrl-C) is in its log, not on
        # the terminal
        log = (run_dir / "preprocess.kernel.log").read_text()
        assert (
            "a warning below Python" in log and "a warning below Python" not in out + err and "IPKernelApp" not in err
        ), (log, err)
    else:
        proc.kill()
        proc.communicate(timeout=60)
    assert not (run_dir / "preprocess").exists()
    listed = earthsnap("runs", "list", cwd=project).stdout
    assert f"{run_dir.name}" in listed and " interrupted " in listed, listed
    resumed = earthsnap("run", *DATA, "--resume", run_dir.name, cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    steps = steps_of(earthsnap, project, run_dir.name)
    assert steps["preprocess"] == ("succeeded", 2) and steps["data_qa"] == ("succeeded", 1)
    assert (run_dir / "preprocess" / "records" / "train.rec").exists()


def test_two_runs_at_once(earthsnap, project):
    """Two terminals start the same pipeline at once: both finish, the records, the cache and the dataset store
    agree.
    """
    procs = [start(project, "--no-cache") for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    ids = [run_id_in(out) for out, _ in results]
    assert ids[0] != ids[1]
    runs_dir = project / ".earthsnap" / "runs"
    digests = [
        hashlib.sha256((runs_dir / i / "preprocess" / "records" / "full.rec").read_bytes()).hexdigest() for i in ids
    ]
    assert digests[0] == digests[1]
    versions = list((project / ".earthsnap" / "datasets" / "demo").iterdir())
    assert sorted(v.name for v in versions if v.name not in ("objects", "LATEST")) == [
        json.loads((runs_dir / ids[0] / "data_qa" / "dataset" / "qa.json").read_text())["dataset"].split("@")[1]
    ]
    for i in ids:
        assert all(status == "succeeded" for status, _ in steps_of(earthsnap, project, i).values())
    third = earthsnap("run", *DATA, cwd=project)
    assert third.returncode == 0 and third.stdout.count("↺") == 3


def test_refused_before_anything_runs(earthsnap, project):
    for args, message in [
        (("-p", "imagesize=96"), "has no parameter 'imagesize'. Did you mean 'image_size'?"),
        (("-p", "image_size=large"), "Parameter 'image_size' is int; 'large' is not"),
        (("-p", "source=no/photos"), "does not exist"),
        (("-p", "image_size=5"), "Parameter 'image_size' must be from 8 to 4096, got 5."),
        (("-p", "small_classes=keep"), "Parameter 'small_classes' must be one of 'drop', 'fail', got 'keep'."),
        # not YAML a taxonomy can be read from
        (("-p", "taxonomy=pipeline/pipeline.py"), "Parameter 'taxonomy' ("),
        (("-p", "source=pipeline/pipeline.py"), "is a file but not a listing"),
        (("--resume", "earthsnap-19990101"), "No run 'earthsnap-19990101'"),
    ]:
        r = earthsnap("run", *DATA, *args, cwd=project)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    nb = nbformat.read(project / "pipeline" / "data_qa.ipynb", as_version=4)
    for c in nb.cells:
        c.metadata.pop("tags", None)
    nbformat.write(nb, project / "pipeline" / "data_qa.ipynb")
    r = earthsnap("run", *DATA, cwd=project)
    assert r.returncode == 2 and "data_qa.ipynb has no cell tagged 'parameters'" in r.stderr, r.stderr
    (project / "pipeline" / "data_qa.ipynb").unlink()
    r = earthsnap("run", *DATA, cwd=project)
    assert r.returncode == 2 and "Step 'data_qa' runs" in r.stderr and "which does not exist" in r.stderr, r.stderr
    assert not (project / ".earthsnap" / "runs").exists()  # nothing ran, nothing was recorded


def test_dag_in_the_terminal_and_as_files(earthsnap, project, tmp_path):
    r = earthsnap("dag", cwd=project)
    assert r.returncode == 0 and "└─▶ preprocess (processing)" in r.stdout and "dataset ← data_qa.dataset" in r.stdout
    for ext in ("svg", "html", "png"):
        out = tmp_path / f"dag.{ext}"
        r = earthsnap("dag", "-o", out, cwd=project)
        assert r.returncode == 0 and out.stat().st_size > 500, r.stderr
    assert "<svg" in (tmp_path / "dag.html").read_text()


def test_run_from_a_notebook_shows_live_progress(project):
    """`earthsnap.run()` in a Jupyter kernel: the step table is displayed and updated in place."""
    import papermill as pm

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import earthsnap\nrecord = earthsnap.run(image_size=40, to=['explore_data', 'preprocess'])\n"
                "print(record['status'])"
            )
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, project / "use.ipynb")
    env = os.environ.copy()
    os.environ.update(clean_env())
    try:
        pm.execute_notebook(
            str(project / "use.ipynb"), str(project / "used.ipynb"), cwd=str(project), progress_bar=False
        )
    finally:
        os.environ.clear()
        os.environ.update(env)
    outputs = nbformat.read(project / "used.ipynb", as_version=4).cells[0].outputs
    assert outputs[-1]["text"].strip() == "succeeded"
    html = [o["data"]["text/html"] for o in outputs if o.get("output_type") in ("display_data", "update_display_data")]
    assert html and "preprocess" in html[0] and "succeeded" in html[-1]


def test_run_on_a_listing_without_taxonomy(earthsnap, project):
    """The pipeline takes any source data QA takes: here a CSV listing of uri,label and no taxonomy."""
    photos = project / ".earthsnap" / "demo-data"
    rows = ["uri,label"] + [
        f"{p.relative_to(photos)},{p.parent.name}" for p in sorted(photos.glob("*/*/*")) if p.is_file()
    ]
    (photos / "listing.csv").write_text("\n".join(rows) + "\n")
    r = earthsnap("run", *DATA, "-p", f"source={photos / 'listing.csv'}", "-p", "taxonomy=", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = project / ".earthsnap" / "runs" / run_id_in(r.stdout)
    assert f"4 labels, {4 * 12 + 9} files in" in (run_dir / "explore_data.html").read_text()
    qa = json.loads((run_dir / "data_qa" / "dataset" / "qa.json").read_text())
    assert qa["accepted"] == 4 * 12 and qa["rejected"] == 9


def test_grayscale_silhouettes_with_a_plain_taxonomy(earthsnap, project):
    """A real grayscale dataset (28x28 silhouettes) and a taxonomy written as the plain mapping run through the pipeline
    with parameters alone; without accept_modes, data QA says which parameter would accept them."""
    from PIL import Image, ImageDraw

    photos = project / "silhouettes"
    for species, shape in (("quercus_robur", "ellipse"), ("betula_pendula", "rectangle")):
        for k in range(12):
            im = Image.new("L", (28, 28), 255)
            getattr(ImageDraw.Draw(im), shape)((4 + k % 5, 4, 22, 20 + k % 6), fill=20 * (k % 4))
            (photos / species).mkdir(parents=True, exist_ok=True)
            im.save(photos / species / f"{k}.png")
    (photos / "taxonomy.yaml").write_text("quercus: [quercus_robur]\nbetula: [betula_pendula]\n")  # no `groups:`
    common = (
        "--to",
        "data_qa",
        "-p",
        f"source={photos}",
        "-p",
        f"taxonomy={photos / 'taxonomy.yaml'}",
        "-p",
        "min_side=16",
        "-p",
        "dataset_name=shapes",
    )
    r = earthsnap("run", *common, cwd=project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "accepted none of the 24 inputs: 24 grayscale" in r.stderr and "accept_modes (add grayscale" in r.stderr, (
        r.stderr
    )
    r = earthsnap("run", *common, "-p", "accept_modes=rgb,grayscale", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    qa = json.loads(
        (project / ".earthsnap" / "runs" / run_id_in(r.stdout) / "data_qa" / "dataset" / "qa.json").read_text()
    )
    assert qa["accepted"] == 24 and qa["classes"] == {"betula_pendula": 12, "quercus_robur": 12}, qa


def test_a_failed_step_reopens_with_its_exact_inputs_and_a_fixed_notebook_resumes(earthsnap, project):
    """`earthsnap runs open RUN STEP` on a failed step: the notebook from pipeline/ with the values the run gave it,
    which runs as the step ran (into a scratch out_dir, not the run); the fix made in pipeline/ is what the resume runs;
    a cached step opens with the inputs of the run it was cached from; a step whose inputs are gone is refused."""
    import papermill as pm

    nb_path = project / "pipeline" / "preprocess.ipynb"
    add_cell(nb_path, "raise RuntimeError('a bug in the step')")
    r = earthsnap("run", *DATA, cwd=project)
    assert r.returncode == 1 and "a bug in the step" in r.stderr
    run_id = run_id_in(r.stderr)
    run_dir = project / ".earthsnap" / "runs" / run_id
    opened = earthsnap("runs", "open", run_id, "preprocess", cwd=project)
    assert opened.returncode == 0, opened.stderr
    copy = project / "scratch" / f"{run_id}-preprocess.ipynb"
    assert f"wrote {copy}" in opened.stdout
    ran = nbformat.read(run_dir / "preprocess.ipynb", as_version=4).metadata.papermill.parameters
    injected = next(
        c.source for c in nbformat.read(copy, as_version=4).cells if "injected-parameters" in c.metadata.get("tags", [])
    )
    # every value the run gave it, input paths included; only out_dir moves to scratch
    values = {}
    exec(injected, {}, values)
    assert values == {**ran, "out_dir": str(project / "scratch" / f"{run_id}-preprocess")}, (values, ran)
    # the data scientist fixes the step in pipeline/ (the copy still holds the bug: it is the notebook as it is now)
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells = [c for c in nb.cells if "a bug in the step" not in c.source]
    nbformat.write(nb, nb_path)
    fixed = earthsnap("runs", "open", run_id, "preprocess", cwd=project)
    assert fixed.returncode == 0
    # works through as the step did
    pm.execute_notebook(str(copy), str(copy.with_name("ran.ipynb")), cwd=str(copy.parent), progress_bar=False)
    assert (copy.with_suffix("") / "records" / "train.rec").exists() and not (run_dir / "preprocess").exists()
    resumed = earthsnap("run", *DATA, "--resume", run_id, cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert steps_of(earthsnap, project, run_id)["preprocess"] == ("succeeded", 2)
    # a cached step opens with the inputs of the run it came from
    again = earthsnap("run", *DATA, cwd=project)
    second = run_id_in(again.stdout)
    assert again.returncode == 0 and again.stdout.count("cached") >= 3
    cached = earthsnap("runs", "open", second, "preprocess", cwd=project)
    assert cached.returncode == 0, cached.stderr
    source = nbformat.read(project / "scratch" / f"{second}-preprocess.ipynb", as_version=4)
    values = {}
    exec(next(c.source for c in source.cells if "injected-parameters" in c.metadata.get("tags", [])), {}, values)
    # the resumed run's
    origin = nbformat.read(run_dir / "preprocess.ipynb", as_version=4).metadata.papermill.parameters
    assert values == {**origin, "out_dir": str(project / "scratch" / f"{second}-preprocess")}
    # an input read from disk and deleted since: refused, with its name
    (project / ".earthsnap" / "demo-data" / "taxonomy.yaml").unlink()
    gone = earthsnap("runs", "open", run_id, "data_qa", cwd=project)
    assert gone.returncode != 0 and "read inputs that are gone since: taxonomy" in gone.stderr, gone.stderr
