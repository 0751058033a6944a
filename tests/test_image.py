"""earthsnap's image, checked offline: the Dockerfile parses, installs nothing but our pins, and starts the entry point
the tests run; its lock matches settings.ini and installs into a fresh environment of the image's Python with a
clean `pip check`. No image is built here (no Docker daemon, no network to a registry); CI and the release stack
build and push it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import entry_points

from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from conftest import ROOT
from earthsnap.sagemaker.image import BUILD_FILES, LOCK, read_lock


def dockerfile():
    d = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return d, [(i["instruction"], i["value"]) for i in d.structure]


def pins() -> dict[str, str]:
    "The pins the image is resolved from, as tools/lock_image.py reads them from settings.ini."
    spec = importlib.util.spec_from_file_location("lock_image", ROOT / "tools" / "lock_image.py")
    lock_image = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_image)
    out = {}
    for text in lock_image.image_requirements():
        r = Requirement(text)
        out[r.name.lower().replace("_", "-")] = str(r.specifier).removeprefix("==")
    return out


def test_the_dockerfile_parses_and_installs_only_our_pins():
    d, instructions = dockerfile()
    assert d.baseimage.startswith("python:3.11.") and d.baseimage.endswith("-slim-bookworm"), d.baseimage
    installs = [shlex.split(v) for k, v in instructions if k == "RUN" for v in [v] if "pip install" in v]
    assert installs, instructions
    for args in installs:
        for cmd in " ".join(args).split("&&"):
            words = cmd.split()
            if "install" not in words:
                continue
            assert "--no-deps" in words, cmd  # nothing is resolved at build time: every package is pinned in the lock
            targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
            extra = [w for w in words if w.startswith("--extra-index-url") or w.startswith("--index-url")]
            named = [
                t
                for t in targets
                if t
                not in (
                    "/opt/earthsnap/requirements.lock",
                    "/opt/earthsnap/src",
                    "https://download.pytorch.org/whl/cpu",
                )
            ]
            assert not named, f"the Dockerfile installs {named} besides the lock and the package"
            assert all("download.pytorch.org/whl/cpu" in cmd for _ in extra)
    copied = [v.split() for k, v in instructions if k == "COPY"]
    assert ["docker/requirements.lock", "/opt/earthsnap/requirements.lock"] in copied
    # what the tag hashes is what the build copies
    for name in BUILD_FILES[2:]:
        assert any(name in c for c in copied), name


def test_the_lock_is_the_pins_and_exact():
    lock = read_lock(ROOT)
    for name, version in pins().items():
        assert name in lock, f"{name} is pinned in settings.ini but not in {LOCK}: run make image-lock"
        assert lock[name].split("+")[0] == version, (
            f"{name}: settings.ini pins {version}, {LOCK} has {lock[name]}: run make image-lock"
        )
    assert lock["torch"] == "2.13.0+cpu"  # the CPU build, from PyTorch's index
    # the image holds what jobs and endpoints run
    assert "sagemaker" not in lock and "moto" not in lock and "pytest" not in lock


def test_the_entrypoint_is_the_one_the_tests_run():
    d, instructions = dockerfile()
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entry == ["earthsnap-job"]
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["earthsnap-job"] == "earthsnap.sagemaker.job:console"  # what tests/test_sagemaker_job.py starts
    assert "8080" in dict(instructions)["EXPOSE"]


def test_the_lock_installs_cleanly_in_a_fresh_environment(tmp_path):
    "A fresh virtual environment of the image's Python: the lock and the package, --no-deps, then a clean pip check."
    d, _ = dockerfile()
    version = re.match(r"python:(\d+\.\d+)", d.baseimage).group(1)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = sys._base_executable if here == version else shutil.which(f"python{version}")
    assert python, f"the image has Python {version}: install it beside this Python {here} (CI's setup-python step does)"
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    # (installs with --no-compile: no .pyc needed to check)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "-r", str(ROOT / LOCK)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    r = subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "--no-build-isolation", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [str(venv / "bin" / "earthsnap-job"), "fit"],
        capture_output=True,
        text=True,
        env={"EARTHSNAP_SM_ROOT": str(tmp_path / "ml")},
    )
    # the entry point starts with only the lock
    assert r.returncode == 1 and "it runs one of process, train, serve" in r.stderr, r.stderr
    # a job builds networks of the zoo from the lock alone (their weights come from a channel, offline)
    zoo = "from earthsnap.model.backbones import zoo_network as z; [z(n, 3, 224) for n in ('resnet18', 'mobilenet_v2')]"
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", zoo], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1"}
    )
    assert r.returncode == 0, r.stderr[-2000:]
