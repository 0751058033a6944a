"""earthsnap's image, checked offline: the Dockerfile parses, installs nothing but our pins, and starts the entry point
the tests run; its lock matches settings.ini and installs into a fresh environment of the image's Python with a
clean `pip check`. No image is built here (no Docker daemon, no network to a registry); CI and the release stack
build and push it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from conftest import ROOT
from earthsnap.sagemaker.image import BUILD_FILES, LOCK, read_lock


def dockerfile():
    d = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return d, [(i["instruction"], i["value"]) for i in d.structure]


def lock_image_tool():
    "tools/lock_image.py, as a module (tools/ is not a package)."
    spec = importlib.util.spec_from_file_location("lock_image", ROOT / "tools" / "lock_image.py")
    lock_image = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_image)
    return lock_image


def pins() -> dict[str, str]:
    "The pins the image is resolved from, as tools/lock_image.py reads them from settings.ini."
    lock_image = lock_image_tool()
    out = {}
    for text in lock_image.image_requirements():
        r = Requirement(text)
        out[r.name.lower().replace("_", "-")] = str(r.specifier).removeprefix("==")
    return out


def pip_installs(run: str) -> list[list[str]]:
    "The words of every `pip install` a RUN instruction's shell text runs, to the end of its command."
    return [shlex.split(m) for m in re.findall(r"pip install ([^;&|]*)", run)]


def test_the_dockerfile_parses_and_installs_only_our_pins():
    d, instructions = dockerfile()
    # Docker's official Python image, from ECR Public's mirror of it (no Docker Hub rate limits in CodeBuild)
    assert re.fullmatch(r"public\.ecr\.aws/docker/library/python:3\.11\.\d+-slim-bookworm", d.baseimage), d.baseimage
    assert ("ARG", "VARIANT=cpu") in instructions  # the CPU image unless asked
    runs = [v for k, v in instructions if k == "RUN"]
    for run in runs:  # the shell reads every RUN
        r = subprocess.run(["sh", "-n", "-c", run], capture_output=True, text=True)
        assert r.returncode == 0, (run, r.stderr)
    installs = [words for run in runs for words in pip_installs(run)]
    assert len(installs) == 3, installs  # the GPU lock, the CPU lock, the package
    locks = {}
    for words in installs:
        assert "--no-deps" in words, words  # nothing is resolved at build time: every package is pinned in the lock
        targets = [w for w in words if not w.startswith("-") and w != "https://download.pytorch.org/whl/cpu"]
        assert targets in (
            ["/opt/earthsnap/requirements.lock"],
            ["/opt/earthsnap/requirements-gpu.lock"],
            ["/opt/earthsnap/src"],
        ), f"the Dockerfile installs {targets} besides the locks and the package"
        index = [w for i, w in enumerate(words) if i and words[i - 1] in ("--extra-index-url", "--index-url")]
        locks[targets[0]] = index
    # torch's CPU build comes from PyTorch's CPU index; the CUDA build and everything else from PyPI
    assert locks["/opt/earthsnap/requirements.lock"] == ["https://download.pytorch.org/whl/cpu"]
    assert locks["/opt/earthsnap/requirements-gpu.lock"] == [] and locks["/opt/earthsnap/src"] == []
    # VARIANT picks the lock and nothing else: the package, its entry point and the rest are the same in both
    assert [k for k, v in instructions if "VARIANT" in v and k != "COMMENT"] == ["ARG", "RUN"]
    picking = next(run for run in runs if "VARIANT" in run)
    assert re.search(
        r'"\$VARIANT" = gpu \]; then pip install --no-deps -r /opt/earthsnap/requirements-gpu.lock', picking
    )
    assert "exit 1" in picking  # another VARIANT fails the build rather than build the CPU image under another name
    copied = [v.split() for k, v in instructions if k == "COPY"]
    assert ["docker/requirements.lock", "docker/requirements-gpu.lock", "/opt/earthsnap/"] in copied
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
    # the GPU image's lock is this one with torch's CUDA build of the same version, and only what that adds
    gpu = read_lock(ROOT, "gpu")
    assert gpu["torch"] == "2.13.0"
    assert {n: v for n, v in gpu.items() if n in lock and n != "torch"} == {
        n: v for n, v in lock.items() if n != "torch"
    }
    added = set(gpu) - set(lock)
    assert "triton" in added and "nvidia-cudnn-cu13" in added, added
    assert all(n.startswith(("nvidia-", "cuda-")) or n == "triton" for n in added), added


def test_the_gpu_lock_is_the_closure_of_torchs_cuda_build():
    """The GPU lock resolves for the image's platform from the index's wheel metadata (nothing is downloaded but
    metadata): torch's CUDA build at the lock's version, every package held at its pin, installs exactly the packages
    the GPU lock adds to the CPU one, and a pin it contradicts fails the resolution.
    """
    lock_image = lock_image_tool()
    cpu, gpu = read_lock(ROOT), read_lock(ROOT, "gpu")
    found = lock_image.torch_closure(gpu["torch"], gpu)
    assert {n: gpu.get(n) for n in found} == found  # every package at the lock's version
    assert set(gpu) - set(cpu) <= set(found)  # and no package the CUDA build does not need
    wrong = {**gpu, "nvidia-cudnn-cu13": "9.12.0.46"}  # a version on the index that torch 2.13.0 does not take
    with pytest.raises(subprocess.CalledProcessError):
        lock_image.torch_closure(gpu["torch"], wrong)


def test_every_build_is_for_sagemakers_x86_instances():
    """Each `docker build` that make runs (image, image-push: CI's and the release stack's) builds for linux/amd64,
    whatever the machine: the tag is the content and ECR's repository is immutable, so an arm64 image pushed once
    would hold the tag for good."""
    for target in ("image", "image-push"):
        r = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        text = r.stdout.replace("\\\n", " ")
        builds = [b.split() for b in re.findall(r"docker build ((?:--[\w-]+ \S+ )*)-t ", text)]  # its options
        assert len(builds) == text.count("docker build") == 1, text
        for words in builds:
            assert words[words.index("--platform") + 1] == "linux/amd64", (target, words)
            assert words[:2] == ["--build-arg", "VARIANT=$v"], words


def test_the_entrypoint_is_the_one_the_tests_run():
    d, instructions = dockerfile()
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    assert entry == ["earthsnap-job"]
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["earthsnap-job"] == "earthsnap.sagemaker.job:console"  # what tests/test_sagemaker_job.py starts
    assert "8080" in dict(instructions)["EXPOSE"]


def _imports(module: str, path) -> set[str]:
    "Every module `module`'s source (at `path`) imports, at its top or inside a function, as absolute names."
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}  # a name may be a module of a package
    return out


def job_modules() -> tuple[list[str], list[str]]:
    """The earthsnap modules a job of the image can reach, and the other packages they import: what `earthsnap-job`
    (process, train, serve) and the step notebooks it runs (pipeline/, the monitor's too) import, followed through
    every import statement of the package, those inside functions included (boto3 is imported where a client is
    made).
    """
    roots = ["earthsnap", "earthsnap.sagemaker.job"]
    for nb in sorted((ROOT / "pipeline").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                tree = ast.parse(
                    "\n".join(line for line in "".join(cell["source"]).splitlines() if line[:1] not in "%!")
                )
                roots += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
                roots += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    ours, others, todo = set(), set(), roots
    while todo:
        name = todo.pop()
        top = name.split(".")[0]
        if top != "earthsnap":
            others |= {top} - set(sys.stdlib_module_names)
            continue
        path = ROOT / (name.replace(".", "/") + ".py")
        path = path if path.is_file() else ROOT / name.replace(".", "/") / "__init__.py"
        if name in ours or not path.is_file():
            continue
        ours.add(name)
        todo += _imports(name, path)
    return sorted(ours), sorted(others - {"earthsnap"})


def test_the_modules_a_job_reaches_are_found():
    ours, others = job_modules()
    # the entry point, what it runs (training, serving) and the monitor, with the modules they import in functions
    for name in ("earthsnap.sagemaker.job", "earthsnap.sagemaker.monitoring", "earthsnap.sagemaker.aws"):
        assert name in ours, name
    for name in ("earthsnap.model.training", "earthsnap.release.serving", "earthsnap.model.distributed"):
        assert name in ours, name
    assert {"boto3", "botocore", "s3fs", "torch", "onnxruntime", "papermill", "uvicorn"} <= set(others), others
    assert "sagemaker" not in others and "moto" not in others  # the SDK and the emulator stay out of the image


def test_the_lock_installs_cleanly_in_a_fresh_environment(tmp_path):
    "A fresh virtual environment of the image's Python: the lock and the package, --no-deps, then a clean pip check."
    d, _ = dockerfile()
    version = re.search(r"/python:(\d+\.\d+)", d.baseimage).group(1)
    assert version == lock_image_tool().image_python()  # what the lock was resolved for
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
    # every module a job can reach imports from the lock alone, and boto3 makes its clients: the monitor's job calls
    # SageMaker and EventBridge (a region from AWS_DEFAULT_REGION, as the compiled jobs have it)
    ours, others = job_modules()
    check = (
        "import importlib, sys\n"
        f"for name in {others + ours!r}:\n"
        "    importlib.import_module(name)\n"
        "import boto3\n"
        "for service in ('sagemaker', 'sagemaker-runtime', 'events', 's3'):\n"
        "    assert boto3.client(service).meta.region_name == 'eu-west-1'\n"
        "from earthsnap.sagemaker.aws import aws_client\n"
        "assert aws_client('sagemaker').meta.service_model.service_name == 'sagemaker'\n"
        "print(len(sys.modules))\n"
    )
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-c", check],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "AWS_DEFAULT_REGION": "eu-west-1", "MPLBACKEND": "Agg", "HOME": str(tmp_path)},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
