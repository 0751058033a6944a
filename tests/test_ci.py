"""The GitHub Actions workflow: it runs the README's test command on every push, and on main, only when AWS is
configured, upserts and starts the SageMaker pipeline with commands the CLI has."""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess

import yaml
from dockerfile_parse import DockerfileParser

from conftest import BIN, ROOT, clean_env

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def readme_test_command() -> str:
    "The test command the README gives a newcomer (the one in its 'run the tests' code block)."
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n((?:(?!```).)*?make test(?:(?!```).)*?)```", text, re.S)
    assert block, "the README shows no test command"
    return next(line.split("#")[0].strip() for line in block.group(1).splitlines() if "make test" in line)


def make_commands(command: str) -> list[str]:
    """The commands `command` (`make TARGET`, as a workflow step runs it) would run here, in order: `make -n` prints
    them.
    """
    target = command.split()
    assert target[0] == "make" and len(target) == 2, command
    r = subprocess.run(["make", "-n", target[1]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.replace("\\\n", " ").splitlines()


def test_workflow_runs_the_readme_test_command_on_every_push():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "push" in on and (on["push"] is None or "branches" not in on["push"]), "every branch"
    test = wf["jobs"]["test"]
    runs = [s["run"] for s in test["steps"] if "run" in s]
    assert runs == [readme_test_command()], runs
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec " + readme_test_command())
    assert test["timeout-minutes"] <= 90
    uses = [s["uses"] for s in test["steps"] if "uses" in s]
    assert all(re.fullmatch(r"[\w-]+/[\w-]+@v\d+", u) for u in uses), uses  # pinned to a major version
    # on every Python earthsnap supports, each with the image's beside it (tests/test_image.py installs the lock with
    # it)
    assert test["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"] and not test["strategy"]["fail-fast"]
    setup = next(s for s in test["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    image_python = re.search(r"python:(\d+\.\d+)", DockerfileParser(path=str(ROOT / "Dockerfile")).baseimage).group(1)
    assert setup["with"]["python-version"].splitlines() == [image_python, "${{ matrix.python }}"]


def test_workflow_upserts_and_starts_sagemaker_only_on_main_with_aws():
    wf = yaml.safe_load(WORKFLOW.read_text())
    job = wf["jobs"]["sagemaker"]
    assert job["needs"] == "test"
    cond = job["if"]
    assert (
        "github.ref == 'refs/heads/main'" in cond
        and "github.event_name == 'push'" in cond
        and "vars.AWS_ROLE_ARN != ''" in cond
    )
    assert job["permissions"]["id-token"] == "write"  # OIDC: no long-lived AWS keys in the repository
    creds = next(s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
    assert creds["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs[0] == "make install" and runs[1] == "make image-push" and runs[2].endswith("earthsnap sagemaker upsert")
    assert "earthsnap sagemaker start" in runs[3]
    push = "\n".join(make_commands(runs[1]))  # the target exists, and pushes the image under its content tag
    assert "earthsnap sagemaker image" in push and "docker push" in push, push
    # both variants, each under its own tag: the GPU one for jobs on GPU instances
    assert "for v in cpu gpu" in push and "docker build --build-arg VARIANT=$v" in push and "echo --gpu" in push, push
    tags = [
        subprocess.run(
            [str(BIN / "earthsnap"), "sagemaker", "image", "--tag", *gpu],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        for gpu in ([], ["--gpu"])
    ]
    assert tags[0].startswith("es-") and tags[1] == tags[0] + "-gpu", tags
    for sub in ("upsert", "start"):  # the commands it calls exist, with the options it passes
        r = subprocess.run(
            [str(BIN / "earthsnap"), "sagemaker", sub, "--help"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0 and (sub != "start" or "--name" in r.stdout), r.stderr
    assert set(job["env"]) == {
        "EARTHSNAP_SAGEMAKER_BUCKET",
        "EARTHSNAP_SAGEMAKER_ROLE",
        "EARTHSNAP_SAGEMAKER_IMAGE_REPOSITORY",
        "EARTHSNAP_SAGEMAKER_REGION",
    }


def test_the_documentation_site_is_published_from_main_only():
    wf = yaml.safe_load(WORKFLOW.read_text())
    keep = next(
        s for s in wf["jobs"]["test"]["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")
    )
    assert keep["with"]["path"] == "_docs/site" and "refs/heads/main" in keep["if"]  # what make test built
    pages = wf["jobs"]["pages"]
    assert pages["needs"] == "test" and "refs/heads/main" in pages["if"] and "push" in pages["if"]
    assert pages["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in pages["steps"]] == ["actions/deploy-pages"]
    # the site it keeps is built by the test step's command: `make test` clears the last one and runs pytest on tests/,
    # where test_notebooks.py executes the library's notebooks and test_docs.py renders the site from them with
    # tools/build_docs.py, which writes _docs/site
    command = next(s["run"] for s in wf["jobs"]["test"]["steps"] if "run" in s)
    commands = make_commands(command)
    cleared = next(i for i, c in enumerate(commands) if c.split() == ["rm", "-rf", "_docs/executed", "_docs/site"])
    assert any(" pytest " in c and " tests " in c for c in commands[cleared + 1 :]), commands
    import test_docs

    assert '"tools" / "build_docs.py"' in inspect.getsource(test_docs.build), "test_docs renders the site"
    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools" / "build_docs.py")
    build_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_docs)
    assert build_docs.OUT / "site" == ROOT / keep["with"]["path"]
