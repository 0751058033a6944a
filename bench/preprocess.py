"""Benchmark: RecordIO preprocessing throughput (images/s) and peak memory, against baselines measured in the same run.

    .venv/bin/python bench/preprocess.py [--images 5000] [--scale 10] [--repeats 2]

On the same demo photos (96 px in, 64 px out on the shorter side, JPEG quality 90):
  - earthsnap's preprocessing on every core (2 here);
  - baseline (a): the same code in one process;
  - baseline (b): MXNet 1.9.1's own tools/im2rec.py with --num-thread 2, in a separate virtual environment
    (bench/.mxnet-venv: mxnet 1.9.1, numpy 1.23.5, opencv-python-headless 4.8.1.78), created on first use,
    since MXNet cannot share our environment.
earthsnap writes six outputs (train, val, test, full and the two tuning subsets: each image about 2.3
times), im2rec one: the comparison is conservative. Each measured run is a fresh process, the three
configurations alternate, and the ratios compare medians over --repeats (this 2-core VM is noisy: the same
run varies by 20% or more, so one run, or the best of two, can mislead). Peak memory (max RSS) is measured for earthsnap at --images and at --scale times as
many, for the main process and for the largest worker: flat memory means these stay the same.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MXNET_VENV = HERE / ".mxnet-venv"
MXNET_PINS = ["mxnet==1.9.1", "numpy==1.23.5", "opencv-python-headless==4.8.1.78"]

RUN_EARTHSNAP = """
import json, resource, sys, time
from earthsnap.data.preprocess import PreprocessParams, preprocess
t = time.perf_counter()
s = preprocess(sys.argv[1], sys.argv[2], PreprocessParams(size=64, quality=90), workers=int(sys.argv[3]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "images": s["images"]["full"],
                  "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def mxnet_python() -> Path:
    py = MXNET_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {MXNET_VENV} with {' '.join(MXNET_PINS)} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MXNET_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *MXNET_PINS], check=True)
    return py


def make_dataset(root: Path, images: int) -> str:
    from earthsnap.data.dataqa import run_qa
    from earthsnap.data.demodata import generate_demo_data
    groups, species = 5, 5
    photos = generate_demo_data(root / "photos", groups=groups, species=species, images=images // (groups * species), progress=False).root
    return run_qa(photos, "bench", datasets=root / "datasets", progress=False).dataset.root


def run_earthsnap(dataset: str, out: Path, workers: int) -> dict:
    r = subprocess.run([sys.executable, "-c", RUN_EARTHSNAP, dataset, str(out), str(workers)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_im2rec(photos: Path, work: Path) -> dict:
    py = mxnet_python()
    im2rec = subprocess.run([str(py), "-c", "import mxnet, os; print(os.path.join(os.path.dirname(mxnet.__file__), 'tools', 'im2rec.py'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    prefix = work / "im2rec"
    subprocess.run([str(py), im2rec, "--list", "--recursive", str(prefix), str(photos)], check=True, capture_output=True)
    t = time.perf_counter()
    subprocess.run([str(py), im2rec, "--resize", "64", "--quality", "90", "--num-thread", "2", str(prefix), str(photos)],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - t
    images = sum(1 for _ in open(f"{prefix}.lst"))
    return {"seconds": seconds, "images": images}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)")
    args = ap.parse_args()
    if args.smoke: args.images, args.scale, args.repeats = 50, 2, 1
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="es-bench-") as tmp:
        tmp = Path(tmp)
        print(f"drawing {args.images} photos and running data QA ...", file=sys.stderr)
        dataset = make_dataset(tmp / "n", args.images)
        runs: dict[str, list[dict]] = {}
        for i in range(args.repeats):
            for name, fn in [(f"earthsnap, {cores} processes", lambda: run_earthsnap(dataset, tmp / f"out-{i}-p", cores)),
                             ("(a) earthsnap, 1 process", lambda: run_earthsnap(dataset, tmp / f"out-{i}-1", 1)),
                             ("(b) im2rec, --num-thread 2", lambda: run_im2rec(tmp / "n" / "photos", tmp))]:
                if args.smoke and name.startswith("(b)"): continue  # MXNet's im2rec needs its own venv (a download): the full run only
                runs.setdefault(name, []).append(fn())
        rate = {k: [r["images"] / r["seconds"] for r in v] for k, v in runs.items()}
        median = {k: statistics.median(v) for k, v in rate.items()}
        ours = median[f"earthsnap, {cores} processes"]
        rows = [{"config": k, "images": runs[k][0]["images"], "median_images_per_s": round(median[k], 1),
                 "best_images_per_s": round(max(rate[k]), 1), "all_images_per_s": [round(x, 1) for x in rate[k]],
                 "earthsnap_x": round(ours / median[k], 2)} for k in runs]
        print(f"drawing {args.images * args.scale} photos and running data QA for the memory run ...", file=sys.stderr)
        big = make_dataset(tmp / "big", args.images * args.scale)
        mem = {n: run_earthsnap(d, tmp / f"mem-{n}", cores) for n, d in ((args.images, dataset), (args.images * args.scale, big))}
    print(f"RecordIO preprocessing, 96 px -> 64 px, quality 90; {args.repeats} alternating runs each; {cores} cores; Python {platform.python_version()}")
    print(f"{'config':<30}{'images':>8}{'median img/s':>14}{'best img/s':>12}{'earthsnap is':>14}")
    for r in rows:
        print(f"{r['config']:<30}{r['images']:>8}{r['median_images_per_s']:>14.1f}{r['best_images_per_s']:>12.1f}{r['earthsnap_x']:>13.2f}x")
    print(f"\npeak memory (max RSS, MB)   {'main process':>14}{'largest worker':>16}")
    for n, m in mem.items():
        print(f"{n:>8} images{'':<14}{m['rss_main_mb']:>14.0f}{m['rss_worker_mb']:>16.0f}")
    out = Path(tempfile.mkdtemp() if args.smoke else HERE / "results") / "preprocess.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "memory": {str(k): v for k, v in mem.items()}, "cores": cores}, indent=2) + "\n")


if __name__ == "__main__":
    main()
