"""Write docker/requirements.lock and docker/requirements-gpu.lock: the pinned closures of earthsnap's two images.

The image installs the project's runtime requirements (settings.ini `requirements`), s3fs (jobs read and write
S3 through fsspec), boto3 (the monitor's job calls SageMaker and EventBridge) and the model zoo
(`zoo_requirements`: a job fine-tunes a zoo backbone from weights in S3, offline), every package at one version,
with --no-deps: so the build resolves nothing and the image is the same wherever it is built. Run it
(`make image-lock`) after changing a pin in settings.ini; `make test` fails while the locks and the pins disagree
(tests/test_image.py).

The GPU image (`docker build --build-arg VARIANT=gpu`, for ml.g* and ml.p* instances) is the CPU one with torch's
CUDA build: the same lock, except torch (PyPI's wheel of the same version, which is PyTorch's default CUDA build)
and what that wheel requires (NVIDIA's CUDA libraries, triton). Those are resolved from the index's wheel metadata
for the image's platform (Linux x86_64, the Dockerfile's Python), with every other package held at the CPU lock's
version, so nothing is downloaded but metadata. pip's configured extra indexes and find-links (this machine keeps
torch's CPU build there) are left out, so that the CUDA build is the one found.
"""

from __future__ import annotations

import configparser
import json
import re
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "docker" / "requirements.lock"
GPU_LOCK = ROOT / "docker" / "requirements-gpu.lock"
EXTRA = ("s3fs", "boto3")  # from the sagemaker extra: what a job needs to reach S3 (fsspec) and AWS (the monitor)
INDEX = "https://pypi.org/simple"  # where torch's CUDA build of a version is the plain one
GLIBC = 36  # Debian bookworm's glibc 2.36, the image's (Dockerfile FROM): manylinux_2_36 and older wheels install


def image_requirements() -> list[str]:
    "The requirements the image is resolved from: the runtime pins, EXTRA from the sagemaker extra, the zoo extra."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    sagemaker = [r for r in d["sagemaker_requirements"].split() if r.split("==")[0] in EXTRA]
    return d["requirements"].split() + sagemaker + d["zoo_requirements"].split()


def image_python() -> str:
    "The image's Python, major.minor, from the Dockerfile's FROM."
    return re.search(r"^FROM (?:--\S+ )*(?:\S+/)?python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)


def resolve(requirements: list[str], *pip_args: str) -> dict[str, str]:
    "What pip would install for `requirements` (with `pip_args`), name -> version, from its dry run's report."
    with tempfile.TemporaryDirectory() as tmp:
        reqs, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        reqs.write_text("\n".join(requirements) + "\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
            + ["--report", str(report), "-r", str(reqs), *pip_args],
            check=True,
        )
        found = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] for i in found}


def gpu_args(target: str) -> list[str]:
    "pip's arguments that resolve for the image's platform from INDEX alone, wheels only, into `target` (not written)."
    cafile = ssl.get_default_verify_paths().cafile  # the system's, as pip.conf gives it here
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(GLIBC, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    return (
        ["--isolated", "--index-url", INDEX, "--only-binary=:all:", "--target", target]
        + (["--cert", cafile] if cafile and Path(cafile).exists() else [])
        + ["--python-version", image_python(), "--implementation", "cp"]
        + [a for p in platforms for a in ("--platform", p)]
    )


def torch_closure(version: str, held: dict[str, str]) -> dict[str, str]:
    "What torch's CUDA build at `version` installs for the image, every package in `held` at its version there."
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "constraints.txt").write_text("".join(f"{n}=={v}\n" for n, v in held.items() if n != "torch"))
        return resolve([f"torch=={version}"], *gpu_args(tmp), "-c", str(Path(tmp) / "constraints.txt"))


def gpu_pins(cpu: dict[str, str]) -> dict[str, str]:
    "The GPU lock from the CPU one: torch's CUDA build of the same version and its requirements; the rest as `cpu`."
    found = torch_closure(cpu["torch"].split("+")[0], cpu)
    moved = {n: v for n, v in found.items() if n in cpu and n != "torch" and cpu[n] != v}
    assert not moved, f"torch's CUDA build moved pins of the CPU lock: {moved}"
    return {n: v for n, v in cpu.items() if n != "torch"} | found


def write_lock(path: Path, pins: dict[str, str], how: str) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"# The pinned closure of earthsnap's {how} (tools/lock_image.py from settings.ini; do not edit by hand).\n"
        f"# Resolved with Python {image_python()}, the image's (Dockerfile FROM).\n"
        + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))
    )
    print(f"wrote {path.relative_to(ROOT)}: {len(pins)} packages")


def read_pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def main() -> None:
    "Both locks; with --gpu, only the GPU one, from the CPU lock as it is."
    cpu = read_pins(LOCK) if "--gpu" in sys.argv[1:] else resolve(image_requirements())
    if "--gpu" not in sys.argv[1:]:
        write_lock(LOCK, cpu, "image")
    write_lock(GPU_LOCK, gpu_pins(cpu), "GPU image (the CPU one's, torch's CUDA build)")


if __name__ == "__main__":
    main()
