"""Benchmark: the closed loop, measured. Prod drifts, people review a budget of photos, a retrained model is better on
the new photos and no worse on the old.

    .venv/bin/python bench/loop.py [--shift lighting] [--budget 300] [--served 2000] [--held-out 800]

In a fresh project, with the commands a team types:
1. `earthsnap demo-data` (4 groups x 4 species x 100 photos) and `earthsnap run` (64 px, 2 tuning trials of 2 epochs, up
   to --epochs epochs), `earthsnap registry approve species/1` (stage, its tests) and `earthsnap deploy promote`:
   species/1 live in prod;
2. prod serves --served photos the model never saw, taken in other light (the generator's --shift at its default
   strength), from 8 concurrent clients over HTTP, and captures them;
3. `earthsnap monitor` checks the windows (drift) and queues for review the doubtful photos, at most --budget of them
   (`review_daily_budget`), plus the 2% audit sample;
4. a simulated reviewer labels every queued photo with its true species (what a botanist would);
5. `earthsnap retrain` (--retrain-epochs epochs from the live weights): species/2, pending approval.

Reported: accuracy of species/1 and species/2 on --held-out fresh shifted photos (served to neither, reviewed by no
one), and on the original test split (the target: no drop of more than 1 point), K (the photos labelled), the drift
verdicts, and the wall time of the loop from the first served photo to the candidate. Results go to
bench/results/loop.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def es(project: Path, *args: str, timeout: float = 3600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSNAP_")}
    r = subprocess.run(
        [str(BIN / "earthsnap"), *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout
    )
    if r.returncode != 0:
        raise SystemExit(f"earthsnap {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def send(port: int, body: bytes) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations?top_k=1", data=body, method="POST", headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["predictions"][0]["label"]


def accuracy(model, photos: list[Path]) -> float:
    from earthsnap.monitor.retrain import accuracy_on

    return accuracy_on(model, [p.read_bytes() for p in photos], [p.parent.name for p in photos])


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--shift", default="lighting")
    ap.add_argument(
        "--budget", type=int, default=300, help="K: the most doubtful photos queued for review (plus the audit sample)."
    )
    ap.add_argument("--served", type=int, default=2000, help="Shifted photos prod serves.")
    ap.add_argument("--held-out", type=int, default=800, help="Fresh shifted photos both models are judged on.")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--retrain-epochs", type=int, default=8)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="minutes on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    groups, species, images, size, trials = 4, 4, 100, 64, 2
    if args.smoke:
        groups, species, images, size, trials = 2, 2, 12, 32, 1
        args.budget, args.served, args.held_out, args.epochs, args.retrain_epochs = 10, 60, 20, 3, 2
    project = Path(tempfile.mkdtemp(prefix="earthsnap-loop-"))
    (project / "earthsnap.yaml").write_text(
        f"stage_port: {free_port()}\nprod_port: {free_port()}\nstage_min_accuracy: 0.0\nstage_p95_ms: 1000\n"
        f"review_daily_budget: {args.budget}\nreview_audit_rate: 0.02\n"
        f"drift_window: {max(20, min(500, args.served // 4))}\n"
    )
    shutil_pipeline = Path(__file__).resolve().parent.parent / "pipeline"
    subprocess.run(["cp", "-r", str(shutil_pipeline), str(project / "pipeline")], check=True)
    t0 = time.perf_counter()
    print(
        f"project {project}: demo data {groups}x{species}x{images}, "
        f"{size} px; shift {args.shift}; budget K={args.budget}",
        flush=True,
    )
    es(
        project,
        "demo-data",
        ".earthsnap/demo-data",
        "--groups",
        str(groups),
        "--species",
        str(species),
        "--images",
        str(images),
        "-q",
    )
    es(
        project,
        "run",
        "-p",
        f"image_size={size}",
        "-p",
        f"epochs={args.epochs}",
        "-p",
        f"tune_trials={trials}",
        "-p",
        "tune_epochs=2",
        "-p",
        "tune_parallel=1",
        "-p",
        "min_accuracy=0",
    )
    es(project, "registry", "approve", "species/1", "--by", "bench")
    es(project, "deploy", "promote")
    trained_s = time.perf_counter() - t0
    endpoints = project / ".earthsnap" / "endpoints"
    port = json.loads((endpoints / "prod" / "endpoint.json").read_text())["port"]
    try:
        from earthsnap.data.demodata import generate_demo_data

        per = -(-args.served // (groups * species))
        per_held = -(-args.held_out // (groups * species))
        served = sorted(
            generate_demo_data(
                project / "served",
                groups=groups,
                species=species,
                images=per,
                seed=0,
                first=100_000,
                shift=args.shift,
                progress=False,
            ).root.rglob("*.jpg")
        )[: args.served]
        held = sorted(
            generate_demo_data(
                project / "held-out",
                groups=groups,
                species=species,
                images=per_held,
                seed=0,
                first=900_000,
                shift=args.shift,
                progress=False,
            ).root.rglob("*.jpg")
        )
        truth = {hashlib.sha256(p.read_bytes()).hexdigest(): p.parent.name for p in served}
        loop0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: send(port, p.read_bytes()), served))
        from earthsnap.core.config import load_config
        from earthsnap.release.capture import CaptureStore

        cfg = load_config(project, env={})
        while CaptureStore(cfg.capture, "prod").count() < len(served):
            time.sleep(0.2)
        monitor = es(project, "monitor", "--no-report")
        from earthsnap.monitor.review import ReviewQueue

        q = ReviewQueue(cfg)
        queued = q.items(pending=True)
        # the true species (confirmed when the model was right)
        for item in queued:
            q.decide(item.id, "relabelled", by="botanist", label=truth[item.sha256])
        es(project, "retrain", "-p", f"epochs={args.retrain_epochs}")
        loop_s = time.perf_counter() - loop0
    finally:
        for f in endpoints.glob("*/endpoint.json"):
            try:
                os.kill(json.loads(f.read_text())["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    from earthsnap.model.router import load_model
    from earthsnap.release.registry import open_registry

    reg = open_registry(cfg)
    live, cand = reg.get("species/1"), reg.get("species/2")
    retrain_dir = Path(cand.lineage["parameters"]["source"]).parent
    comparison = json.loads((retrain_dir / "comparison.json").read_text())["comparison"]
    before, after = accuracy(load_model(live.artifact), held), accuracy(load_model(cand.artifact), held)
    orig = comparison["original_test"]
    drifted = sum("DRIFT" in line for line in monitor.splitlines())
    windows = sum(1 for line in monitor.splitlines() if line.startswith("  ") and line.strip()[:1].isdigit())
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "shift": args.shift,
        "served": len(served),
        "K_reviewed": len(queued),
        "budget": args.budget,
        "audit": sum(i.audit for i in queued),
        "drift_windows": windows,
        "drifting_windows": drifted,
        "shifted_held_out": {"photos": len(held), "before": before, "after": after},
        "original_test": orig,
        "reviewed_test": comparison.get("reviewed_test"),
        "seconds": {"first_model": round(trained_s, 1), "loop": round(loop_s, 1)},
        "candidate": cand.ref,
        "status": cand.status,
    }
    results = project if args.smoke else HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "loop.json").write_text(json.dumps(result, indent=2))
    drop = (orig["live"] - orig["candidate"]) * 100
    print(
        "\n"
        f"shift {args.shift}: prod served {len(served)} photos; {drifted} of {windows} "
        f"windows drifted; {len(queued)} photos reviewed (K = {len(queued) - result['audit']} "
        f"doubtful within the budget of {args.budget}, {result['audit']} audit)"
    )
    print(
        f"accuracy on {len(held)} fresh shifted photos: {before:.3f} "
        f"-> {after:.3f} ({(after - before) * 100:+.1f} points)"
    )
    print(
        f"accuracy on the original test split ({orig['photos']} photos): {orig['live']:.3f} -> {orig['candidate']:.3f} "
        f"({-drop:+.1f} points; target: no drop of more than 1)"
    )
    print(
        "loop wall time (first served photo to the candidate pending "
        f"approval): {loop_s:.0f} s; first model {trained_s:.0f} s"
    )


if __name__ == "__main__":
    main()
