"""Shared fixtures: run the installed `earthsnap` command as a separate process, in a clean environment, in a small
project.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    "The environment without EARTHSNAP_* settings of the machine running the tests, plus `extra`."
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSNAP_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.fixture
def earthsnap():
    "Run `earthsnap ARGS...` as a process; returns the CompletedProcess (text output)."

    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
        return subprocess.run(
            [str(BIN / "earthsnap"), *map(str, args)],
            cwd=cwd,
            env=env or clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def demo_project(path: Path, faults: bool, images: int = 12) -> Path:
    "A project at `path`: the pipeline folder and a small demo dataset (2 groups x 2 species x `images`) in its store."
    shutil.copytree(ROOT / "pipeline", path / "pipeline")
    r = subprocess.run(
        [
            str(BIN / "earthsnap"),
            "demo-data",
            ".earthsnap/demo-data",
            "--groups",
            "2",
            "--species",
            "2",
            "--images",
            str(images),
            *(["--faults"] if faults else []),
            "-q",
        ],
        cwd=path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return path


def run_id_in(text: str) -> str:
    "The run id an `earthsnap run` printed."
    return next(w.rstrip(":.,") for w in text.split() if w.startswith("earthsnap-2"))


def steps_of(earthsnap, project: Path, run_id: str) -> dict[str, tuple[str, int]]:
    """Each step of a run, as `earthsnap runs show` lists it: (status, attempts); a step that never started has 0
    attempts.
    """
    r = earthsnap("runs", "show", run_id, cwd=project)
    assert r.returncode == 0, r.stderr
    rows = [
        line.split() for line in r.stdout.splitlines() if line[:4] in ("  ✓ ", "  ✗ ", "  ↺ ", "  · ", "  – ", "  ▶ ")
    ]
    return {row[1]: (row[2], int(row[4]) if len(row) > 4 else 0) for row in rows}


def processes_marked(mark: str) -> set[int]:
    """The processes whose environment holds RUN_MARK=`mark`: those a test started with it, and every process they
    started.
    """
    needle = f"RUN_MARK={mark}".encode() + b"\0"
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            environ = (p / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            found.add(int(p.name))
    return found


def _running(pid: int) -> bool:
    "Whether process `pid` exists and has not ended (a zombie waiting for its parent has)."
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_endpoints(project: Path, grace: float = 30) -> None:
    """Stop every endpoint server of `project` by its pid, and wait until they have ended (SIGTERM, then SIGKILL after
    `grace` seconds). Servers are found by the endpoint folder they serve (`--dir .earthsnap/endpoints/NAME` on their
    command line), so one a deployer killed half-way started but never recorded is stopped too, a server whose
    endpoint.json was rewritten by a stop is not looked for, and a recorded pid taken since by another process is left
    alone."""
    folders = {str(project / ".earthsnap" / "endpoints"), str((project / ".earthsnap" / "endpoints").resolve())}
    servers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if int(cmdline.parent.name) != os.getpid() and any(a.startswith(f"{f}/") for a in args for f in folders):
            servers.append(int(cmdline.parent.name))
    for pid in servers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while any(map(_running, servers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in filter(_running, servers):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def port_is_free(port: int) -> bool:
    "Whether a server could listen on `port` of 127.0.0.1 now (as servers do, with SO_REUSEADDR)."
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_PORTS = itertools.count(os.getpid())  # where in its block a worker starts: not where the last session's did


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, from a block of this pytest worker's own below the kernel's
    ephemeral range. A port from bind(0) is free again once that socket closes: another worker's bind(0), or any
    client socket, can take it before the server it was meant for starts (a stage endpoint of the fault trials once
    found another test's server on its port)."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    if low < 18000:  # an unusual range: the kernel's choice, as before
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 8
    size = (low - 10000) // 8
    for _ in range(size):
        port = 10000 + worker * size + next(_PORTS) % size
        if port_is_free(port):
            return port
    raise RuntimeError(f"no free port in 127.0.0.1:{10000 + worker * size}-{10000 + (worker + 1) * size}")


@pytest.fixture(scope="module")
def moto_url():
    "Start the moto emulator on 127.0.0.1; stop it by its pid at the end."
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not start in 60 s"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def wait_until_serving(url: str, proc: subprocess.Popen, seconds: float, what: str = "the server", get=None) -> None:
    """Poll `url` until it answers 200 (`get`: requests.get, or a session's); fail when `proc` exits (with what it
    printed, if piped) or after `seconds`.
    """
    import requests

    get = get or requests.get
    deadline = time.monotonic() + seconds
    while True:
        try:
            if get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.stdout.read() if proc.stdout else ''}")
        assert time.monotonic() < deadline, f"{what} did not answer {url} in {seconds} s"
        time.sleep(0.2)


# The browser tests drive Debian's chromium (Playwright's own browser builds cannot be downloaded here).
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    "A headless chromium for the tests of one module, driven by Playwright."
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def next_steps(stdout: str) -> list[list[str]]:
    """The commands a command printed as its next steps (`next: earthsnap ...`
    lines), each as the argv after `earthsnap`.
    """
    import shlex

    steps = [shlex.split(line[len("next: ") :]) for line in stdout.splitlines() if line.startswith("next: ")]
    assert all(s[0] == "earthsnap" for s in steps), steps
    return [s[1:] for s in steps]


# ---------------------------------------------------------------- how `make test` spreads the tests over its workers
# Each file is a unit of work that runs in order on one worker (its module fixtures are set up once), except the files
# in SPLIT, whose every test is a unit of its own: the library's notebooks, the benchmarks' smoke runs and the
# fault-injection tests. The longest units are handed out first, so that no worker is left with a long one while the
# others have finished (longest processing time first); the site's tests come last, since they wait for every notebook
# to have run. The figures are each unit's CPU seconds in a `make test` on 2 cores.
FAULTS = "tests/test_faults.py::test_a_run_killed_at_any_write_resumes_to_the_result_of_an_uninterrupted_run"
NOTEBOOK = "tests/test_notebooks.py::test_notebook"
LONGEST_FIRST = [
    f"{FAULTS}[tune]",  # 45 s, after the seed run the faults tests share (50 s, made once)
    "tests/test_run.py",  # 130 s
    f"{NOTEBOOK}[sagemaker/job.ipynb]",  # 110 s: a spot interruption, and a job on two instances
    "tests/test_pipeline_model.py",  # 110 s
    f"{NOTEBOOK}[demo.ipynb]",  # 35 s
    "tests/test_hierarchy.py",  # 85 s
    f"{FAULTS}[train]",  # 50 s
    "tests/test_faults.py::test_a_training_killed_mid_way_goes_on_from_its_checkpoint",  # 40 s
    "tests/test_faults.py::test_a_run_trains_in_two_processes_when_asked",  # 30 s
    "tests/test_sagemaker.py",  # 75 s
    "tests/test_sagemaker_monitor.py",  # 65 s
    f"{NOTEBOOK}[model/distributed.ipynb]",  # 45 s
    f"{NOTEBOOK}[model/training.ipynb]",  # 35 s
    f"{NOTEBOOK}[model/router.ipynb]",  # 25 s
    "tests/test_cli.py",  # 45 s
    "tests/test_bench.py::test_benchmark_smoke[chaos.py]",  # 45 s
    "tests/test_faults.py::test_an_approval_killed_at_any_write_is_completed_by_the_next_call",  # 40 s
    "tests/test_retrain.py",  # 40 s
    "tests/test_bench.py::test_benchmark_smoke[loop.py]",  # 40 s
    f"{NOTEBOOK}[model/tuning.ipynb]",  # 20 s
    f"{NOTEBOOK}[engine/notebooks.ipynb]",  # 20 s
    f"{NOTEBOOK}[engine/executor.ipynb]",  # 20 s
    f"{NOTEBOOK}[sagemaker/compiler.ipynb]",  # 20 s
    "tests/test_image.py",  # 35 s
    "tests/test_check_sources.py",  # 35 s
    f"{FAULTS}[the-run-and-its-other-steps]",  # 30 s
    "tests/test_console.py",  # 30 s
    "tests/test_storage_s3.py",  # 30 s
    f"{NOTEBOOK}[release/deployment.ipynb]",  # 17 s
    f"{NOTEBOOK}[sagemaker/release.ipynb]",  # 17 s
    "tests/test_operations.py",  # 25 s
    "tests/test_bench.py::test_benchmark_smoke[executor.py]",  # 25 s
    "tests/test_wheel.py",  # 25 s
    f"{FAULTS}[data_qa]",  # 20 s
    "tests/test_sagemaker_job.py",  # 20 s
    "tests/test_monitor.py",  # 20 s
    f"{FAULTS}[explore_data]",  # 20 s
    f"{FAULTS}[evaluate]",  # 20 s
    "pipeline/operate.ipynb",  # 20 s
    f"{FAULTS}[preprocess]",  # 15 s
]
LAST = ["tests/test_docs.py"]  # renders the site from this run's notebooks, once they have all run
SPLIT = ("tests/test_notebooks.py", "tests/test_bench.py", "tests/test_faults.py")  # each test a unit of its own
# what `make test-fast` leaves out (-m "not slow"): the long units but the notebooks, the benchmarks, the faults
SLOW = {u for u in LONGEST_FIRST if not u.startswith(NOTEBOOK)} | {"tests/test_bench.py", "tests/test_faults.py", *LAST}


def unit_of(nodeid: str) -> str:
    "The unit of work a test belongs to: its file, or for the files in SPLIT, the test itself."
    path = nodeid.split("::")[0]
    return nodeid if path in SPLIT else path


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of over a few seconds, left out by `make test-fast`")
    config.earthsnap_run = uuid.uuid4().hex


def run_of(config) -> str:
    "This pytest run's id, the same in every xdist worker: what tells this run's files from an earlier one's."
    return getattr(config, "workerinput", {}).get("testrunuid") or config.earthsnap_run


def pytest_collection_modifyitems(config, items):
    rank = {u: i for i, u in enumerate(LONGEST_FIRST)} | {u: len(LONGEST_FIRST) + 1 + i for i, u in enumerate(LAST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(unit_of(item.nodeid), len(LONGEST_FIRST)), order[id(item)]))
    for item in items:
        unit = unit_of(item.nodeid)
        if unit in SLOW or unit.split("::")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


def pytest_xdist_make_scheduler(config, log):
    "`--dist loadfile` (what make test asks for) with the units above, in the order of the collection (longest first)."
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False
    return ByUnit(config, log)


def login_token(session, url: str) -> str:
    """Open the console's sign-in form at `url` in `session` (a requests session: it keeps the form's cookie) and
    return the form's token, which a sign-in must send back."""
    import re

    r = session.get(url + "/console/login", timeout=30)
    assert r.status_code == 200, r.status_code
    return re.search(r'name="login_token" value="([^"]+)"', r.text).group(1)
