"""Benchmark: chaos. The pipeline, a backup, gc and an approval killed with SIGKILL at random moments: no process of
theirs survives, the next call completes, nothing referenced is lost, and the pipeline ends where an uninterrupted run
ends.

    .venv/bin/python bench/chaos.py [--runs 100] [--seed 0] [--parallel 2]
    .venv/bin/python bench/chaos.py --smoke     # one of each (the pipeline killed in its second fifth), for make test

First an uninterrupted run of the pipeline (small settings: 2 groups x 2 species x 10 photos, 32 px, 1 tuning trial,
4 epochs) in a fresh project gives the reference: the dataset version, the RecordIO bytes (.rec, .idx, .lst), the
tuned values (best.json), the model archive's sha256 and the evaluation (evaluation.json but the model's path). Its
backup, gc and approval are timed too. Then, --runs times, in a fresh project each:

1. **pipeline**: `earthsnap run` is started in a session of its own and its whole process group is killed with SIGKILL
   after a delay drawn uniformly from 0 to the reference run's duration; then `earthsnap run --resume RUN` (or a new
   run, when it was killed before it was recorded) until it succeeds. Its result is compared with the reference.
2. **backup**: `earthsnap backup DEST` killed at a random moment of its reference duration; then `earthsnap backup DEST`
   again must complete, and the latest backup must restore into an empty project that `earthsnap doctor` finds healthy.
3. **gc**: garbage planted (a copy of the run's folder that no record names, an hour old, and dataset photos no
   version lists); `earthsnap runs gc --keep-days 0 --keep-last 0` killed at random; `earthsnap doctor` must find the
   project healthy (nothing referenced lost), and the next gc must complete and leave no garbage.
4. **approval**: `earthsnap registry approve species/1` (which deploys to the stage endpoint and tests it) killed at
   random; the next call (`approve` again if the approval was not recorded, else `earthsnap deploy run`) must complete
   with species/1 served on stage.

After each kill, every process that carried this kill's tag in its environment (the command and all it started:
kernels, tuning trials, loader workers and their fork server) must be gone within 10 s, except endpoint servers,
which outlive their starter by design and are stopped by their recorded pid at the end. Counts and the kill moments go
to bench/results/chaos.json; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
TAG = "EARTHSNAP_CHAOS_TAG"
SMALL = ["-p", "image_size=32", "-p", "epochs=4", "-p", "tune_trials=1", "-p", "tune_epochs=1", "-p", "min_accuracy=0"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tag: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSNAP_")}
    if tag:
        env[TAG] = tag
    return env


def es(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "earthsnap"), *args], cwd=project, env=environment(), capture_output=True, text=True, timeout=timeout
    )


def tagged(tag: str) -> set[int]:
    "Every process whose environment carries this tag."
    needle, found = f"{TAG}={tag}".encode() + b"\0", set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if needle in (p / "environ").read_bytes():
                found.add(int(p.name))
        except OSError:
            pass
    return found


def endpoint_pids(project: Path) -> set[int]:
    pids = set()
    for f in (project / ".earthsnap" / "endpoints").glob("*/endpoint.json"):
        try:
            pids.add(json.loads(f.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pass
    return pids


def stop_endpoints(project: Path) -> None:
    for pid in endpoint_pids(project):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def kill_at(project: Path, args: list[str], delay: float) -> dict:
    """Start `earthsnap ARGS` in a session of its own, kill its process group with SIGKILL after `delay` s; what
    survived it.
    """
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [str(BIN / "earthsnap"), *args],
        cwd=project,
        env=environment(tag),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        killed = True
        proc.wait()
    deadline, survivors = time.monotonic() + 10, set()
    while time.monotonic() < deadline:
        survivors = tagged(tag) - endpoint_pids(project)
        if not survivors:
            break
        time.sleep(0.2)
    for pid in survivors:  # reported, then cleaned up so that the next trial starts clean
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"at": round(delay, 2), "killed": killed, "exit": proc.returncode, "survivors": sorted(survivors)}


def fresh_project(root: Path, template: Path, name: str) -> Path:
    project = root / name
    shutil.copytree(template / "pipeline", project / "pipeline")
    shutil.copytree(template / ".earthsnap" / "demo-data", project / ".earthsnap" / "demo-data")
    (project / "earthsnap.yaml").write_text(
        f"stage_port: {free_port()}\nprod_port: {free_port()}\nstage_min_accuracy: 0.0\n"
        "stage_p95_ms: 1000\nworkers: 1\n"
    )
    return project


def latest_run(project: Path) -> tuple[str, str] | None:
    try:
        with sqlite3.connect(project / ".earthsnap" / "registry.db") as c:
            return c.execute("SELECT id, status FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None


def result_of(project: Path) -> dict:
    "What an uninterrupted run must give: dataset version, RecordIO bytes, tuned values, model archive, evaluation."
    with sqlite3.connect(project / ".earthsnap" / "registry.db") as c:
        sha, lineage = c.execute(
            "SELECT sha256, lineage FROM model_versions WHERE grp = 'species' AND version = 1"
        ).fetchone()
        run_id = json.loads(lineage)["run"]
        outputs = {
            name: json.loads(o)
            for name, o in c.execute(
                "SELECT name, outputs FROM steps WHERE run_id = ? AND outputs IS NOT NULL", (run_id,)
            )
        }
    records = Path(outputs["preprocess"]["records"]["path"])
    recordio = hashlib.sha256()
    for f in sorted(records.glob("*")):
        if f.suffix in (".rec", ".idx", ".lst"):
            recordio.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    evaluation = json.loads((Path(outputs["evaluate"]["evaluation"]["path"]) / "evaluation.json").read_text())
    evaluation.pop("model")  # the model's path, which differs from project to project
    return {
        "dataset": json.loads(lineage)["dataset"],
        "recordio": recordio.hexdigest(),
        "tuned": json.loads((Path(outputs["tune"]["tuning"]["path"]) / "best.json").read_text()),
        "model": sha,
        "evaluation": evaluation,
    }


def finish_run(project: Path) -> int:
    "Resume the latest run (or start one, if none was recorded) until it succeeds; how many calls it took."
    for calls in range(1, 4):
        last = latest_run(project)
        if last and last[1] == "succeeded":
            return calls - 1
        r = es(project, "run", "--resume", last[0]) if last else es(project, "run", *SMALL)
        if r.returncode == 0:
            return calls
    raise RuntimeError(f"the run did not complete after 3 calls:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def plant_garbage(project: Path) -> None:
    runs = project / ".earthsnap" / "runs"
    source = next(d for d in runs.iterdir() if d.is_dir() and d.name.startswith("earthsnap-"))
    copy = runs / f"copy-{uuid.uuid4().hex[:6]}"
    shutil.copytree(source, copy)
    objects = next((project / ".earthsnap" / "datasets").glob("*/objects"))
    planted = [copy]
    for _ in range(20):
        data = f"an unlisted photo {uuid.uuid4()}".encode()
        sha = hashlib.sha256(data).hexdigest()
        (objects / sha[:2]).mkdir(exist_ok=True)
        (objects / sha[:2] / f"{sha}.jpg").write_bytes(data)
        planted.append(objects / sha[:2] / f"{sha}.jpg")
    hour_ago = time.time() - 7200
    for p in planted:
        os.utime(p, (hour_ago, hour_ago))


def ping(project: Path, name: str) -> str | None:
    f = project / ".earthsnap" / "endpoints" / name / "endpoint.json"
    try:
        port = json.loads(f.read_text())["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as r:
            return json.loads(r.read()).get("model")
    except (OSError, ValueError, KeyError):
        return None


def status_of(project: Path, ref: str = "species/1") -> str:
    with sqlite3.connect(project / ".earthsnap" / "registry.db") as c:
        return c.execute("SELECT status FROM model_versions WHERE grp || '/' || version = ?", (ref,)).fetchone()[0]


def trial(
    i: int,
    seed: int,
    root: Path,
    template: Path,
    reference: dict,
    durations: dict,
    within: tuple[float, float] = (0.0, 1.0),
) -> dict:
    rng = random.Random(seed * 1000 + i)
    project = fresh_project(root, template, f"trial-{i}")
    out: dict = {"trial": i, "failures": []}

    def check(ok: bool, what: str):
        if not ok:
            out["failures"].append(what)

    try:
        # 1. the pipeline
        out["pipeline"] = kill_at(project, ["run", *SMALL], rng.uniform(*within) * durations["run"])
        out["pipeline"]["calls"] = finish_run(project)
        got = result_of(project)
        out["pipeline"]["differs"] = sorted(k for k in reference if got[k] != reference[k])
        check(not out["pipeline"]["differs"], f"pipeline result differs: {out['pipeline']['differs']}")
        check(not out["pipeline"]["survivors"], "pipeline processes survived")
        # 2. a backup
        dest = root / f"backup-{i}"
        out["backup"] = kill_at(project, ["backup", str(dest)], rng.uniform(0, durations["backup"]))
        r = es(project, "backup", str(dest))
        check(r.returncode == 0, f"the next backup failed: {r.stderr[-500:]}")
        restored = root / f"restored-{i}"
        restored.mkdir()
        r = es(restored, "restore", str(dest))
        check(r.returncode == 0, f"the restore failed: {r.stderr[-500:]}")
        r = es(restored, "doctor")
        check(r.returncode == 0, f"the restored project is not healthy: {r.stdout[-800:]}")
        check(not out["backup"]["survivors"], "backup processes survived")
        # 3. gc
        plant_garbage(project)
        out["gc"] = kill_at(
            project, ["runs", "gc", "--keep-days", "0", "--keep-last", "0"], rng.uniform(0, durations["gc"])
        )
        r = es(project, "doctor")
        check(r.returncode == 0, f"after a killed gc the project is not healthy: {r.stdout[-800:]}")
        r = es(project, "runs", "gc", "--keep-days", "0", "--keep-last", "0")
        check(r.returncode == 0, f"the next gc failed: {r.stderr[-500:]}")
        left = [d.name for d in (project / ".earthsnap" / "runs").iterdir() if d.name.startswith(("copy-", ".trash-"))]
        check(not left, f"garbage left after the next gc: {left}")
        check(not out["gc"]["survivors"], "gc processes survived")
        # 4. an approval, which deploys to stage
        out["approval"] = kill_at(
            project, ["registry", "approve", "species/1", "--by", "chaos"], rng.uniform(0, durations["approval"])
        )
        pending = status_of(project) == "PendingManualApproval"
        r = es(project, *(["registry", "approve", "species/1", "--by", "chaos"] if pending else ["deploy", "run"]))
        check(r.returncode == 0, f"the next call after a killed approval failed: {r.stdout[-800:]} {r.stderr[-800:]}")
        check(ping(project, "stage") == "species/1", "stage does not serve species/1 after the next call")
        check(not out["approval"]["survivors"], "approval processes survived")
        r = es(project, "doctor")
        check(r.returncode == 0, f"after the approval the project is not healthy: {r.stdout[-800:]}")
    except Exception as e:  # noqa: BLE001 - a trial that breaks is a failure to report, not a reason to stop the others
        out["failures"].append(f"{type(e).__name__}: {e}")
    finally:
        stop_endpoints(project)
        if not out["failures"]:
            shutil.rmtree(project, ignore_errors=True)
            shutil.rmtree(root / f"restored-{i}", ignore_errors=True)
            shutil.rmtree(root / f"backup-{i}", ignore_errors=True)
    return out


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument(
        "--runs", type=int, default=100, help="Trials, each killing the pipeline, a backup, gc and an approval once."
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=2, help="Trials at once (each in its own project).")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="one trial on the same small settings, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.runs, args.parallel = 1, 1
    root = Path(tempfile.mkdtemp(prefix="earthsnap-chaos-"))
    template = root / "template"
    shutil.copytree(ROOT / "pipeline", template / "pipeline")
    subprocess.run(
        [
            str(BIN / "earthsnap"),
            "demo-data",
            ".earthsnap/demo-data",
            "--groups",
            "2",
            "--species",
            "2",
            "--images",
            "10",
            "-q",
        ],
        cwd=template,
        env=environment(),
        check=True,
        capture_output=True,
    )
    ref = fresh_project(root, template, "reference")
    durations = {}
    durations["run"] = timed(
        lambda: subprocess.run(
            [str(BIN / "earthsnap"), "run", *SMALL], cwd=ref, env=environment(), check=True, capture_output=True
        )
    )
    reference = result_of(ref)
    durations["backup"] = timed(lambda: es(ref, "backup", str(root / "reference-backup")))
    plant_garbage(ref)
    durations["gc"] = timed(lambda: es(ref, "runs", "gc", "--keep-days", "0", "--keep-last", "0"))
    durations["approval"] = timed(lambda: es(ref, "registry", "approve", "species/1", "--by", "chaos"))
    assert ping(ref, "stage") == "species/1", "the reference approval did not deploy to stage"
    stop_endpoints(ref)
    print("reference durations: " + ", ".join(f"{k} {v:.1f}s" for k, v in durations.items()), flush=True)

    started, trials = time.perf_counter(), []
    with ThreadPoolExecutor(args.parallel) as pool:
        # the smoke run kills the pipeline in its second fifth (tuning or the start of training) and so resumes sooner
        within = (0.2, 0.4) if args.smoke else (0.0, 1.0)
        for t in pool.map(
            lambda i: trial(i, args.seed, root, template, reference, durations, within), range(args.runs)
        ):
            trials.append(t)
            print(
                f"trial {t['trial']:>3}: "
                + ", ".join(
                    f"{k} {'killed' if t[k]['killed'] else 'ended'} at {t[k]['at']}s"
                    for k in ("pipeline", "backup", "gc", "approval")
                    if k in t
                )
                + (f"; FAILED: {'; '.join(t['failures'])}" if t["failures"] else "; ok"),
                flush=True,
            )
    wall = time.perf_counter() - started
    summary = {}
    for k in ("pipeline", "backup", "gc", "approval"):
        done = [t[k] for t in trials if k in t]
        summary[k] = {
            "trials": len(done),
            "killed": sum(d["killed"] for d in done),
            "survivors": sum(len(d["survivors"]) for d in done),
        }
    summary["pipeline"]["same_as_uninterrupted"] = sum(
        1 for t in trials if "pipeline" in t and not t["pipeline"].get("differs", ["?"])
    )
    summary["pipeline"]["resume_calls"] = sum(t["pipeline"].get("calls", 0) for t in trials if "pipeline" in t)
    passed = sum(not t["failures"] for t in trials)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seed": args.seed,
        "runs": args.runs,
        "reference_seconds": {k: round(v, 2) for k, v in durations.items()},
        "summary": summary,
        "passed": passed,
        "wall_seconds": round(wall, 1),
        "trials": trials,
    }
    for k, s in summary.items():
        print(f"{k:>9}: {s}")
    print(f"chaos: {passed} of {args.runs} trials passed in {wall:.0f}s")
    results = root if args.smoke else HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "chaos.json").write_text(json.dumps(result, indent=2))
    if passed == args.runs:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"failed trials' projects kept in {root}")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
