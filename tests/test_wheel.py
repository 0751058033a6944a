"""earthsnap as a new team gets it: the wheel built from this checkout, installed into a fresh virtual environment
outside the repository, `earthsnap init` a project, and the project's own `make test` (small demo photos, the
pipeline end to end) registers a model. Nothing here imports the checkout: the project runs the installed wheel.

The fresh environment takes earthsnap from the wheel (`pip install --no-deps`) and its dependencies from the project's
.venv through a .pth line (and their data files through JUPYTER_PATH), so the test does not download torch again; that
every requirement the wheel declares is met there at its pinned version is checked, as `pip check` would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from conftest import ROOT, clean_env


def test_a_team_installs_the_wheel_inits_a_project_and_its_make_test_registers_a_model(tmp_path):
    # the wheel, built from a copy of the sources (the checkout's own build/ and egg-info stay as they are)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "settings.ini", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "earthsnap", src / "earthsnap", ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("earthsnap-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("pipeline/pipeline.py", "pipeline/train.ipynb", "Makefile", "gitignore", "ci.yml"):
        assert f"earthsnap/project_template/{f}" in names, f
    assert "earthsnap/console/templates/base.html" in names

    # a fresh environment outside the repository: earthsnap from the wheel, its dependencies from the project's .venv
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    (site / "earthsnap_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the dependencies' data files (nbconvert's templates) are under the .venv's share/jupyter: Jupyter is told so
    env = clean_env(PATH=f"{venv / 'bin'}:/usr/bin:/bin", JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"))
    where = subprocess.run(
        [
            str(py),
            "-c",
            """
import earthsnap, importlib.metadata as md
from packaging.requirements import Requirement
print(earthsnap.__file__)
unmet = []
for line in md.requires("earthsnap"):
    r = Requirement(line)
    if r.marker and not r.marker.evaluate({"extra": ""}): continue
    try: v = md.version(r.name)
    except md.PackageNotFoundError: v = None
    if v is None or not r.specifier.contains(v, prereleases=True): unmet.append(f"{r} (found {v})")
print("unmet:", unmet)
""",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    # the wheel's, not the checkout's
    assert where.stdout.splitlines()[0].startswith(str(site / "earthsnap")), where.stdout
    assert where.stdout.splitlines()[1] == "unmet: []", where.stdout

    # earthsnap init, as the README of the project says
    project = tmp_path / "sea-birds"
    init = subprocess.run(
        [str(venv / "bin" / "earthsnap"), "init", str(project)], capture_output=True, text=True, env=env, timeout=120
    )
    assert init.returncode == 0 and f"cd {project}" in init.stdout, init.stdout + init.stderr
    assert (project / "pipeline" / "train.ipynb").read_bytes() == (ROOT / "pipeline" / "train.ipynb").read_bytes()
    assert {".gitignore", ".github", "Makefile", "README.md", "earthsnap.yaml", "pipeline"} <= {
        p.name for p in project.iterdir()
    }
    again = subprocess.run(
        [str(venv / "bin" / "earthsnap"), "init", str(project)], capture_output=True, text=True, env=env, timeout=120
    )
    assert again.returncode == 2 and "is not empty" in again.stderr

    # the project's own test command, with the fresh environment as its .venv (so make installs nothing)
    (project / ".venv").symlink_to(venv)
    test = subprocess.run(["make", "test"], cwd=project, capture_output=True, text=True, env=env, timeout=900)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert "species/1" in test.stdout and "Pending" in test.stdout, test.stdout[-2000:]
    # a throwaway store only
    assert (project / ".earthsnap-test" / "registry.db").exists() and not (project / ".earthsnap").exists()
