"""The `earthsnap` command, run as a user runs it: a separate process, its exit status, its output, its files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from PIL import Image

import earthsnap as earthsnap_pkg
from conftest import BIN, ROOT, clean_env, next_steps


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_version_and_help(earthsnap):
    r = earthsnap("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"earthsnap {earthsnap_pkg.__version__}"
    r = earthsnap("--help")
    assert r.returncode == 0
    listed = set(re.findall(r"^│ (\S+)\s{2,}", r.stdout, re.M))  # the first column of the commands box
    for command in (
        "demo",
        "demo-data",
        "qa",
        "preprocess",
        "run",
        "dag",
        "api",
        "runs",
        "registry",
        "endpoints",
        "deploy",
        "hierarchy",
        "sagemaker",
        "config",
    ):
        assert command in listed, (command, listed)
    assert "plan" not in listed  # kept as a short spelling of `earthsnap hierarchy plan`, not listed twice


def test_the_command_starts_light():
    """`earthsnap` loads its command groups, not the libraries behind them: each command imports what it uses when it
    runs, so `earthsnap --help`, a refusal or a cached run start without papermill, torch, ONNX Runtime or the SDK."""
    heavy = (
        "papermill",
        "nbconvert",
        "torch",
        "onnxruntime",
        "numpy",
        "PIL",
        "sagemaker",
        "boto3",
        "fastapi",
        "fsspec",
        "matplotlib",
        "optuna",
    )
    probe = (
        "import sys, earthsnap.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))"
    )
    r = subprocess.run([sys.executable, "-c", probe, *heavy], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def test_demo_data_with_faults(earthsnap, tmp_path):
    out = tmp_path / "photos"
    r = earthsnap(
        "demo-data", out, "--groups", "2", "--species", "3", "--images", "5", "--size", "64", "--faults", "-q"
    )
    assert r.returncode == 0, r.stderr
    assert "wrote 30 photos of 6 species in 2 groups" in r.stdout
    taxonomy = yaml.safe_load((out / "taxonomy.yaml").read_text())["groups"]
    assert len(taxonomy) == 2 and all(len(s) == 3 for s in taxonomy.values())
    for group, species in taxonomy.items():
        for s in species:
            photos = sorted((out / group / s).glob("[0-4].jpg"))
            assert len(photos) == 5
            with Image.open(photos[0]) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 64))
    faults = json.loads((out / "faults.json").read_text())
    assert sorted(f["fault"] for f in faults) == sorted(
        [
            "truncated_jpeg",
            "empty_file",
            "not_an_image",
            "tiny_image",
            "duplicate",
            "decompression_bomb",
            "cmyk_jpeg",
            "grayscale",
            "alpha_png",
        ]
    )
    for f in faults:
        group, species, _ = f["path"].split("/")
        assert species in taxonomy[group] and (out / f["path"]).is_file()


def test_same_seed_same_bytes(earthsnap, tmp_path):
    args = ("--groups", "2", "--species", "2", "--images", "4", "--faults", "-q")
    assert earthsnap("demo-data", tmp_path / "a", *args, "--workers", "1").returncode == 0
    assert earthsnap("demo-data", tmp_path / "b", *args, "--workers", "2").returncode == 0
    assert earthsnap("demo-data", tmp_path / "c", *args, "--seed", "7").returncode == 0
    a, b, c = (tree_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert len(a) == len(c)
    # another seed draws other photos: the only contents the two share are the seed-independent bad files
    faults = {f["fault"]: f["path"] for f in json.loads((tmp_path / "c" / "faults.json").read_text())}
    fixed = {c[faults[k]] for k in ("empty_file", "not_an_image", "decompression_bomb")}
    assert set(a.values()) & set(c.values()) == fixed


def test_bad_options_are_refused_before_any_work(earthsnap, tmp_path):
    out = tmp_path / "never"
    for args, message in [
        (("--images", "0"), "images must be a whole number from 1"),
        (("--size", "4000"), "size must be a whole number from 16 to 1024"),
        (("--groups", "-1"), "groups must be"),
        (("--images", "2", "--faults"), "at least 3 images"),
    ]:
        r = earthsnap("demo-data", out, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and "how to fix" in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()
    r = earthsnap("demo-data", out, "--imagez", "3")
    assert r.returncode == 2 and "No such option" in r.stderr and not out.exists()


def test_refuses_a_directory_it_did_not_make(earthsnap, tmp_path):
    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "wedding.jpg").write_bytes(b"irreplaceable")
    r = earthsnap("demo-data", mine, "--images", "3", "-q")
    assert r.returncode == 2 and "not an earthsnap demo dataset" in r.stderr
    assert tree_digest(mine) == {"wedding.jpg": hashlib.sha256(b"irreplaceable").hexdigest()}


def _start_generation(out: Path) -> subprocess.Popen:
    # a terminal's Ctrl-C reaches a process whose SIGINT handler is the default; a process started from a
    # background job inherits SIGINT ignored, so restore the default as a shell in a terminal would
    proc = subprocess.Popen(
        [str(BIN / "earthsnap"), "demo-data", str(out), "--images", "3000", "--workers", "1", "-q"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(f".{out.name}.tmp-*/*/*/*.jpg")):  # wait until photos are being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


def test_ctrl_c_leaves_no_half_dataset(tmp_path):
    out = tmp_path / "d"
    proc = _start_generation(out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert sorted(tmp_path.iterdir()) == []  # neither the dataset nor its temporary directory


def test_killed_run_is_tidied_by_the_next(earthsnap, tmp_path):
    out = tmp_path / "d"
    proc = _start_generation(out)
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [f".d.tmp-{proc.pid}"]
    r = earthsnap("demo-data", out, "--groups", "1", "--species", "1", "--images", "3", "-q")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_config_init_and_show(earthsnap, tmp_path):
    assert earthsnap("config", "init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "earthsnap.yaml").exists()
    r = earthsnap("config", "init", cwd=tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr
    (tmp_path / "earthsnap.yaml").write_text("store: elsewhere\n")
    (tmp_path / "sub").mkdir()
    r = earthsnap("config", "show", cwd=tmp_path / "sub", env=clean_env(EARTHSNAP_PROD_PORT="9999"))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.startswith("  ")}
    assert rows["store"][1] == str((tmp_path / "elsewhere").resolve())
    assert rows["prod_port"][1:] == ["9999", "EARTHSNAP_PROD_PORT"]
    (tmp_path / "earthsnap.yaml").write_text("prod_prot: 1\n")
    r = earthsnap("config", "show", cwd=tmp_path)
    assert r.returncode == 2 and "Unknown setting 'prod_prot'" in r.stderr and "Did you mean 'prod_port'" in r.stderr


# a model of a few seconds on 96 photos (what `make demo` reaches on the default data is in the README)
QUICK = [
    "-p",
    "tune_fraction=1.0",
    "-p",
    "tune_trials=2",
    "-p",
    "tune_parallel=1",
    "-p",
    "tune_epochs=1",
    "-p",
    "epochs=2",
    "-p",
    "image_size=32",
    "-p",
    'search_space={"width": [4, 8]}',
    "-p",
    "min_accuracy=0",
]


def test_demo_runs_end_to_end(earthsnap, tmp_path):
    """`earthsnap demo` in a fresh project: demo data, the step notebooks run by papermill, results listed."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline")
    # an approval of species/1 is recorded, not deployed
    (tmp_path / "earthsnap.yaml").write_text("deploy_group: flora\n")
    r = earthsnap("demo", "--images", "6", "-q", *QUICK, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    results = r.stdout.split("Results:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    # the next steps it prints run as printed
    steps = next_steps(r.stdout)
    assert steps[0] == ["registry", "approve", "species/1"] and steps[1][:2] == ["runs", "show"], steps
    for step in steps:
        done = earthsnap(*step, cwd=tmp_path)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    assert "species/1  Approved" in earthsnap("registry", "show", "species/1", cwd=tmp_path).stdout
    # it ends with the console: the command, the address, and a demo approver whose printed password signs in
    assert "  earthsnap console\n  http://127.0.0.1:8090/console\n" in r.stdout
    from earthsnap.access.users import UserStore
    from earthsnap.core.config import load_config

    password = r.stdout.split("user demo-approver, password ", 1)[1].split()[0]
    assert UserStore.from_config(load_config(tmp_path, env={})).sign_in("demo-approver", password).role == "approver"
    listed = dict(line.strip().rsplit(None, 1)[::-1] for line in results)
    paths = {Path(p) for p in listed}
    assert tmp_path / ".earthsnap" / "demo-data" in paths
    for p in paths:
        assert p.exists(), p
    # "<step> report": each notebook step's executed report
    data_report = next(Path(p) for p, label in listed.items() if label == "explore_data report")
    html = data_report.read_text()
    assert "image/png" in html  # the charts made it into the report
    assert f"16 labels, {16 * 6 + 9} files in {tmp_path / '.earthsnap' / 'demo-data'}" in html  # the data it was given
    assert "images accepted, 9 rejected" in r.stdout and "dataset demo@" in r.stdout
    assert "model: best epoch" in r.stdout and "passes the gate" in r.stdout
    for label in ("data_qa report", "tune report", "model", "model archive", "evaluate report", "rejected list"):
        assert label in listed.values()
    # every report the demo made loads nothing from another host: it reads as well offline
    from earthsnap.engine.notebooks import external_references

    reports = list((tmp_path / ".earthsnap").rglob("*.html"))
    assert len(reports) >= 6, reports
    assert {str(h): external_references(h.read_text()) for h in reports} == {str(h): [] for h in reports}
    again = earthsnap("demo", "--images", "6", "-q", *QUICK, cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout and again.stdout.count("cached") == 6, again.stdout
    assert "without encryption" not in r.stderr + again.stderr  # kernels talk over IPC, not plain TCP


def test_library_from_a_plain_script(tmp_path):
    """A user's script without an `if __name__ == "__main__"` guard can draw demo data with worker processes."""
    script = tmp_path / "make_data.py"
    script.write_text(
        "from earthsnap.data.demodata import generate_demo_data\n"
        f"d = generate_demo_data({str(tmp_path / 'd')!r}, groups=2, species=2, images=30, workers=2, progress=False)\n"
        "print(d.images)\n"
    )
    r = subprocess.run([str(BIN / "python"), str(script)], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "120", r.stderr
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 120


def test_qa_step_from_the_cli(earthsnap, tmp_path):
    """`earthsnap qa` runs the data QA notebook: faults rejected, a dataset version made, then unchanged."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline")
    photos = tmp_path / "photos"
    assert (
        earthsnap("demo-data", photos, "--groups", "2", "--species", "2", "--images", "5", "--faults", "-q").returncode
        == 0
    )
    # paths as typed, relative
    r = earthsnap("qa", "photos", "--name", "flora", "--taxonomy", "photos/taxonomy.yaml", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "(new version; parent none)" in r.stdout and "accepted 20 images in 4 classes; rejected 9" in r.stdout
    report = Path(next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("report:")))
    assert report.exists() and "truncated" in report.read_text()
    rejected = [
        json.loads(line)
        for line in Path(next(found.split()[1] for found in r.stdout.splitlines() if found.startswith("rejected:")))
        .read_text()
        .splitlines()
    ]
    assert len(rejected) == 9
    again = earthsnap("qa", photos, "--name", "flora", "--taxonomy", photos / "taxonomy.yaml", "-q", cwd=tmp_path)
    assert again.returncode == 0 and "unchanged: nothing written" in again.stdout


def test_qa_refuses_bad_input_before_running(earthsnap, tmp_path):
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline")
    for args, message in [
        (("missing-dir", "--name", "x"), "does not exist"),
        ((".", "--name", "Bad Name"), "not a valid dataset name"),
        ((".", "--name", "x", "--small-classes", "keep"), "small_classes must be one of ('drop', 'fail'), not 'keep'"),
        ((".", "--name", "x", "--accept-modes", "rgb,sepia"), "Unknown colour mode"),
        (("pipeline", "--name", "x"), "holds no input files"),
        ((".", "--name", "x", "--taxonomy", "nope.yaml"), "does not exist"),
    ]:
        r = earthsnap("qa", *args, "-q", cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / ".earthsnap" / "runs").exists()  # nothing ran


def test_preprocess_step_from_the_cli(earthsnap, tmp_path):
    """`earthsnap preprocess` turns the dataset QA made into RecordIO splits that read back."""
    from earthsnap.data.recordio import MXIndexedRecordIO, unpack_img

    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline")
    photos = tmp_path / "photos"
    assert earthsnap("demo-data", photos, "--groups", "2", "--species", "2", "--images", "20", "-q").returncode == 0
    assert earthsnap("qa", photos, "--name", "flora", "-q", cwd=tmp_path).returncode == 0
    # OUT relative to where it is typed
    r = earthsnap("preprocess", "flora", "rec", "--size", "40", "--center-crop", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 classes; train" in r.stdout and "full 80" in r.stdout
    full = MXIndexedRecordIO(tmp_path / "rec" / "records" / "full.idx", tmp_path / "rec" / "records" / "full.rec", "r")
    assert len(full) == 80
    header, img = unpack_img(full.read_idx(full.keys[0]))
    assert img.shape == (40, 40, 3) and header.id == full.keys[0]
    for args, message in [
        (("flora", "--train", "0.9"), "must each be in [0, 1] and sum to 1"),
        (("fauna",), "No dataset named 'fauna'"),
        (("flora@0123456789abcdef",), "has no version"),
        (("flora", "--size", "4"), "size must be"),
    ]:
        bad = earthsnap("preprocess", *args, "-q", cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
    assert len(list((tmp_path / ".earthsnap" / "runs").glob("preprocess-*"))) == 1  # the refused ones never ran
