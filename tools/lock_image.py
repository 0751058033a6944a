"""Write docker/requirements.lock: the pinned closure of what earthsnap's image installs.

The image installs the project's runtime requirements (settings.ini `requirements`), s3fs (jobs read and write
S3 through fsspec) and the model zoo (`zoo_requirements`: a job fine-tunes a zoo backbone from weights in S3, offline),
every package at one version, with --no-deps: so the build resolves nothing and the image is
the same wherever it is built. Run it (`make image-lock`) after changing a pin in settings.ini; `make test` fails
while the lock and the pins disagree (tests/test_image.py).
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "docker" / "requirements.lock"
EXTRA = ("s3fs",)  # from the sagemaker extra: what a job needs to reach S3


def image_requirements() -> list[str]:
    "The requirements the image is resolved from: the runtime pins, EXTRA from the sagemaker extra, the zoo extra."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    sagemaker = [r for r in d["sagemaker_requirements"].split() if r.split("==")[0] in EXTRA]
    return d["requirements"].split() + sagemaker + d["zoo_requirements"].split()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reqs, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        reqs.write_text("\n".join(image_requirements()) + "\n")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "-r",
                str(reqs),
            ],
            check=True,
        )
        found = json.loads(report.read_text())["install"]
    pins = sorted((i["metadata"]["name"].lower().replace("_", "-"), i["metadata"]["version"]) for i in found)
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text(
        "# The pinned closure of earthsnap's image (tools/lock_image.py from settings.ini; do not edit by hand).\n"
        f"# Resolved with Python {sys.version_info.major}.{sys.version_info.minor}, the image's (Dockerfile FROM).\n"
        + "".join(f"{n}=={v}\n" for n, v in pins)
    )
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(pins)} packages")


if __name__ == "__main__":
    main()
