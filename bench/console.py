"""Benchmark: the console's pages on a project with a long history, and 32 people reading them at once.

    .venv/bin/python bench/console.py [--runs 1000] [--versions 500] [--datasets 200] [--requests 40] [--clients 32]
        [--seconds 30]

A project is filled with --runs run records (8 steps each, a third of them cache hits, some failed), --versions
model versions (in 5 groups, with metrics and lineage), and --datasets versions of one dataset (each with 60 manifest
rows and a few rejected photos), then `earthsnap console --no-deployer` serves it on 127.0.0.1 as a process of its own.

1. **Server time per page.** Each page is requested --requests times by one client over a keep-alive connection,
   signed in with a viewer's API token (the token is checked on every request, as in use). The time is what the
   server reports in its `Server-Timing` header (the app's time from request to response, not the network), p50 and
   p95 per page. The baseline, measured in the same run, is `/health` (routing, middleware, no page): each page is
   also reported as a ratio of it.
2. **Load.** --clients threads each read the pages in turn for --seconds; every answer that is not 200, and every
   connection error, counts as an error. Reported: requests, errors, requests/s, and client-side p95 latency.
3. **A sign-in storm.** --storm-clients threads send wrong passwords to `POST /console/login` for --seconds, each
   sign-in from a loopback address of its own (127.0.x.y), so that the per-address limit does not stop them and every
   one asks for an argon2 hash. Meanwhile one client asks `/health` every 20 ms; its client-side p95 is compared with
   the same measure taken just before, without the storm (the baseline). Target: p95 under 50 ms during the storm
   (sign-in hashes in worker threads, at most 2 at once, and answers 429 beyond that).

Results go to bench/results/console.json (not with --smoke).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(project: Path, runs: int, versions: int, datasets: int) -> dict:
    "A project with that much history; returns what the pages will be asked about."
    from earthsnap.access.users import UserStore
    from earthsnap.core.config import load_config
    from earthsnap.core.database import connection, transaction
    from earthsnap.data.datasets import DatasetStore
    from earthsnap.engine.runs import RunStore
    from earthsnap.release.registry import SqliteRegistry

    cfg = load_config(project, env={})
    store, now = RunStore(cfg.registry), time.time()
    steps = ("explore_data", "data_qa", "preprocess", "tune", "train", "evaluate", "check_accuracy", "register")
    with connection(store.path) as db, transaction(db):
        for i in range(runs):
            rid, t = f"earthsnap-bench-{i:05d}", now - (runs - i) * 600
            status = "failed" if i % 17 == 0 else "succeeded"
            db.execute(
                "INSERT INTO runs (id, pipeline, status, started_at, ended_at, parameters, code_version, packages, "
                "run_dir, pid, started_by, error) VALUES (?, 'earthsnap', ?, ?, ?, ?, '{}', '{}', ?, NULL, ?, ?)",
                (
                    rid,
                    status,
                    t,
                    t + 300,
                    json.dumps({"epochs": i % 30 + 1}),
                    str(Path(cfg.runs) / rid),
                    f"user{i % 7}",
                    "step train failed" if status == "failed" else None,
                ),
            )
            db.executemany(
                "INSERT INTO steps (run_id, name, status, started_at, ended_at, "
                "attempts, cache_key, outputs) VALUES (?, ?, ?, ?, ?, 1, ?, '{}')",
                [
                    (rid, s, "cached" if (i + k) % 3 == 0 else "succeeded", t + k * 30, t + k * 30 + 20, f"k{i}-{k}")
                    for k, s in enumerate(steps)
                ],
            )
    reg = SqliteRegistry(cfg.registry)
    artifact = project / "model.tar.gz"
    for i in range(versions):
        artifact.write_bytes(f"model {i}".encode())
        reg.register(
            f"group{i % 5}",
            artifact,
            {"accuracy": {"value": 0.8 + (i % 20) / 100}, "macro_f1": {"value": 0.7}},
            {"run": f"earthsnap-bench-{i % max(runs, 1):05d}", "parameters": {"epochs": 10}},
            by="bench",
        )
    ds = DatasetStore(cfg.datasets)
    for v in range(datasets):
        rows = [
            {
                "uri": f"/photos/{c}/{k}.jpg",
                "label": f"species{c}",
                "sha256": hashlib.sha256(f"{v}-{c}-{k}".encode()).hexdigest(),
                "bytes": 1000,
                "width": 96,
                "height": 96,
                "format": "JPEG",
            }
            for c in range(6)
            for k in range(10)
        ]
        rejected = [
            {"uri": f"/photos/bad{k}.jpg", "label": "species0", "reason": "unreadable", "detail": "truncated"}
            for k in range(3)
        ]
        ds.commit("demo", rows, rejected, {"source": "bench"})
    users = UserStore.from_config(cfg)
    users.add("viewer", "viewer", "a viewer's long password", by="bench")
    return {
        "token": users.new_token("viewer", "bench")[1],
        "run": f"earthsnap-bench-{runs - 1:05d}",
        "version": "group0/1",
        "dataset": ds.latest("demo"),
    }


def pages(info: dict) -> dict[str, str]:
    return {
        "health (baseline)": "/health",
        "overview": "/console",
        "runs": "/console/runs",
        "runs, failed only": "/console/runs?status=failed",
        "a run": f"/console/runs/{info['run']}",
        "registry": "/console/models",
        "a version": f"/console/models/{info['version']}",
        "datasets": "/console/datasets",
        "a dataset, with its diff": "/console/datasets/demo",
        "a dataset version": f"/console/datasets/demo/{info['dataset']}",
        "release": "/console/release",
        "hierarchy": "/console/hierarchy",
    }


def server_ms(r: requests.Response) -> float:
    return float(r.headers["server-timing"].split("dur=")[1])


class From(requests.adapters.HTTPAdapter):
    "Requests from the loopback address `source` (any 127.x.y.z reaches a server on 127.0.0.1)."

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *a, **kw):
        super().init_poolmanager(*a, source_address=(self.source, 0), **kw)


def health_p95(url: str, seconds: float) -> float:
    "Client-side p95 (ms) of `GET /health` asked every 20 ms for `seconds`."
    s, ms, stop = requests.Session(), [], time.monotonic() + seconds
    while time.monotonic() < stop:
        t = time.perf_counter()
        assert s.get(url + "/health", timeout=30).status_code == 200
        ms.append((time.perf_counter() - t) * 1000)
        time.sleep(0.02)
    return float(np.percentile(ms, 95))


def sign_in_storm(url: str, clients: int, seconds: float) -> dict:
    "/health's p95 without, then during, `clients` threads sending wrong passwords from addresses of their own."
    baseline = health_p95(url, seconds)
    stop, lock, answers, n = time.monotonic() + seconds, threading.Lock(), {}, [0]

    def storm(k):
        while time.monotonic() < stop:
            with lock:
                n[0] += 1
                i = n[0]
            c = requests.Session()
            c.mount("http://", From(f"127.0.{10 + i // 250}.{i % 250 + 1}"))  # 20 failures per address are allowed
            form = c.get(url + "/console/login", timeout=60).text  # as a browser: the form, its token and cookie
            token = form.split('name="login_token" value="', 1)[1].split('"', 1)[0]
            wrong = {"name": "viewer", "password": f"wrong {i}", "login_token": token}
            status = c.post(url + "/console/login", data=wrong, timeout=60)
            with lock:
                answers[status.status_code] = answers.get(status.status_code, 0) + 1

    threads = [threading.Thread(target=storm, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    during = health_p95(url, seconds)
    for t in threads:
        t.join()
    return {
        "clients": clients,
        "seconds": time.perf_counter() - t0,
        "sign_ins": sum(answers.values()),
        "answers": ", ".join(f"{v} x {k}" for k, v in sorted(answers.items())),
        "baseline_p95_ms": baseline,
        "health_p95_ms": during,
        "ratio": during / baseline if baseline else None,
    }


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=500)
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--storm-clients", type=int, default=8, help="Clients sending wrong passwords at once.")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.runs, args.versions, args.datasets, args.requests, args.clients, args.seconds = 30, 10, 3, 3, 4, 2
        args.storm_clients = 3
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        t0 = time.perf_counter()
        info = fill(project, args.runs, args.versions, args.datasets)
        print(
            f"project: {args.runs} runs, {args.versions} model versions, {args.datasets} "
            f"dataset versions (filled in {time.perf_counter() - t0:.0f}s)"
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSNAP_")}
        server = subprocess.Popen(
            [str(BIN / "earthsnap"), "console", "--port", str(port), "--no-deployer"],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url, headers = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {info['token']}"}
        try:
            for _ in range(300):
                try:
                    requests.get(url + "/health", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            s = requests.Session()
            s.headers.update(headers)
            timing = {}
            for name, path in pages(info).items():
                s.get(url + path, timeout=30)  # warm
                ms = []
                for _ in range(args.requests):
                    r = s.get(url + path, timeout=30)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
                    ms.append(server_ms(r))
                timing[name] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
            base = timing["health (baseline)"]["p95_ms"]
            print(f"\nserver time per page ({args.requests} requests each; Server-Timing):")
            print(f"  {'page':<26} {'p50 ms':>8} {'p95 ms':>8} {'p95 / health':>13}")
            for name, t in timing.items():
                t["p95_vs_health"] = t["p95_ms"] / base if base else None
                print(f"  {name:<26} {t['p50_ms']:>8.1f} {t['p95_ms']:>8.1f} {t['p95_vs_health']:>12.0f}x")
            worst = max((t["p95_ms"], n) for n, t in timing.items())
            print(f"slowest page p95: {worst[0]:.1f} ms ({worst[1]})")

            paths, stop, lock = list(pages(info).values())[1:], time.monotonic() + args.seconds, threading.Lock()
            load = {"requests": 0, "errors": 0, "latency": [], "examples": []}

            def client(k):
                c = requests.Session()
                c.headers.update(headers)
                i = k
                while time.monotonic() < stop:
                    path, i = paths[i % len(paths)], i + 1
                    t = time.perf_counter()
                    try:
                        ok = c.get(url + path, timeout=30).status_code == 200
                    except requests.RequestException as e:
                        ok = False
                        err = str(e)
                    else:
                        err = path
                    with lock:
                        load["requests"] += 1
                        load["latency"].append(time.perf_counter() - t)
                        if not ok:
                            load["errors"] += 1
                            load["examples"] = (load["examples"] + [err])[:5]

            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.perf_counter() - t0
            result = {
                "clients": args.clients,
                "seconds": took,
                "requests": load["requests"],
                "errors": load["errors"],
                "requests_per_s": load["requests"] / took,
                "client_p95_ms": float(np.percentile(load["latency"], 95)) * 1000,
                "error_examples": load["examples"],
            }
            print(
                "\n"
                f"load: {args.clients} clients for {took:.0f}s: {load['requests']} requests, {load['errors']} "
                f"errors, {result['requests_per_s']:.0f} requests/s, client-side p95 {result['client_p95_ms']:.0f} ms"
            )
            storm = sign_in_storm(url, args.storm_clients, args.seconds)
            print(
                "\n"
                f"sign-in storm: {args.storm_clients} clients sent {storm['sign_ins']} wrong passwords in "
                f"{storm['seconds']:.0f}s ({storm['answers']}); /health p95 {storm['health_p95_ms']:.1f} ms against "
                f"{storm['baseline_p95_ms']:.1f} ms without it ({storm['ratio']:.1f}x; target under 50 ms)"
            )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "pages": timing,
        "load": result,
        "sign_in_storm": storm,
    }
    if not args.smoke:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "console.json").write_text(json.dumps(out, indent=1))
    print("written" if not args.smoke else "smoke run: results not kept", "· console load errors =", load["errors"])


if __name__ == "__main__":
    main()
