"""Benchmark: RecordIO preprocessing and data QA (images/s, peak memory), against baselines measured in the same run.

    .venv/bin/python bench/preprocess.py [--images 5000] [--scale 10] [--repeats 5] [--photo-size 96] [--smoke]

Preprocessing, on the same demo photos (96 px in, 64 px out on the shorter side, JPEG quality 90):
  - earthsnap's preprocessing on every core (2 here: 2 workers, the main process writing);
  - the same with the train split written in 16 shards (`train_shards`: each record to the emptiest shard);
  - (a) the same code in one process;
  - (b) the codec limit: a plain loop on as many processes that reads each stored photo, decodes it, resizes it and
    encodes it again at the same settings, with the fastest codec earthsnap installs (libjpeg-turbo through
    simplejpeg, at the reduced scale Pillow's draft would pick; Pillow's resize), and writes nothing;
  - (c) MXNet 1.9.1's own tools/im2rec.py with --num-thread 2, in a separate virtual environment
    (bench/.mxnet-venv: mxnet 1.9.1, numpy 1.23.5, opencv-python-headless 4.8.1.78), created on first use, since
    MXNet cannot share our environment. MXNet then reads every record earthsnap wrote (full mode only).
earthsnap writes six outputs (train, val, test, full and the two tuning subsets: each image about 2.3 times) and
frames each record, the codec loop nothing and im2rec one output: the comparisons are conservative.

Data QA, on the same photos as files:
  - earthsnap's data QA into an empty dataset store, on every core; and again into the store that holds them (a
    re-check: what a run after a few changed photos costs);
  - (d) open + verify: a plain loop on as many processes that opens each photo with Pillow and calls verify();
  - (e) the floor of what data QA must do: read each photo, hash it, decode it at 1/8 scale (the least that finds
    a truncated JPEG, which verify() lets through) and write it to a new file (temporary name, then rename).

Each measured run is a fresh process started after a sync (no earlier run's writes are flushed during it), the
configurations alternate, and ratios compare medians over --repeats (this
2-core VM is noisy). Peak memory (max RSS) is measured for earthsnap's preprocessing at --images and at --scale times
as many, for the main process and the largest worker: flat memory means these stay the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
# what preprocess imports when called: each timer starts with its modules imported
import numpy, simplejpeg, tqdm.auto, earthsnap.data.recordio
t = time.perf_counter()
params = PreprocessParams(size=64, quality=90, train_shards=int(sys.argv[4]))
s = preprocess(sys.argv[1], sys.argv[2], params, workers=int(sys.argv[3]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "images": s["images"]["full"],
                  "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

# A plain loop over a list of files on N forked processes; LOOP is the body for one file's bytes.
RUN_LOOP = """
import hashlib, io, json, os, sys, time
from multiprocessing import get_context
import numpy as np, simplejpeg
from PIL import Image
SIZE, QUALITY = 64, 90
OUT = sys.argv[3] if len(sys.argv) > 3 else None

def codec(path):  # decode, resize, encode; nothing written
    with open(path, "rb") as f: data = f.read()
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    s = 1
    if min(w, h) >= 2 * SIZE:
        want = (max(SIZE, w * SIZE // min(w, h)), max(SIZE, h * SIZE // min(w, h)))
        s = next(x for x in (8, 4, 2, 1) if min(w // want[0], h // want[1]) >= x)
    px = simplejpeg.decode_jpeg(data, "RGBX", min_width=-(-w // s), min_height=-(-h // s), min_factor=s)
    im = Image.frombuffer("RGBX", (px.shape[1], px.shape[0]), px, "raw", "RGBX", 0, 1)
    scale = SIZE / min(im.size)
    size = (max(SIZE, round(im.size[0] * scale)), max(SIZE, round(im.size[1] * scale)))
    im = im.resize(size, Image.BILINEAR, reducing_gap=3.0)
    simplejpeg.encode_jpeg(np.asarray(im), QUALITY, "RGBX", "420", fastdct=False)

def verify(path):  # open and verify
    with Image.open(path) as im: im.verify()

def store(path):  # read, hash, decode at 1/8 scale, write to a new file
    with open(path, "rb") as f: data = f.read()
    sha = hashlib.sha256(data).hexdigest()
    im = Image.open(io.BytesIO(data)); im.draft(im.mode, (1, 1)); im.load()
    folder = os.path.join(OUT, sha[:2]); os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, sha + ".jpg"); tmp = f"{folder}/.{sha}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f: f.write(data)
    os.replace(tmp, target)

def loop(job):
    fn, paths = job
    for p in paths: globals()[fn](p)
    return len(paths)

if __name__ == "__main__":
    paths, n = json.load(open(sys.argv[1])), int(sys.argv[2])
    fn = os.environ["LOOP"]
    t = time.perf_counter()
    with get_context("fork").Pool(n) as pool: done = sum(pool.map(loop, [(fn, paths[i::n]) for i in range(n)]))
    print(json.dumps({"seconds": time.perf_counter() - t, "images": done}))
"""

RUN_QA = """
import json, sys, time
from earthsnap.data.dataqa import run_qa
import tqdm.auto  # as above
t = time.perf_counter()
r = run_qa(sys.argv[1], "bench", datasets=sys.argv[2], workers=int(sys.argv[3]), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "images": len(r.accepted) + len(r.rejected)}))
"""

MXNET_READ = """
import json, sys
import mxnet as mx
out = {}
for split in ("train", "val", "test", "full"):
    r = mx.recordio.MXIndexedRecordIO(f"{sys.argv[1]}/{split}.idx", f"{sys.argv[1]}/{split}.rec", "r")
    rows = []
    for key in r.keys:
        header, img = mx.recordio.unpack_img(r.read_idx(key))
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) == 64, img.shape
        rows.append([int(key), float(header.label), int(header.id)])
    out[split] = rows
print(json.dumps(out))
"""


def mxnet_python() -> Path:
    py = MXNET_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {MXNET_VENV} with {' '.join(MXNET_PINS)} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MXNET_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *MXNET_PINS], check=True)
    return py


def make_dataset(root: Path, images: int, size: int = 96) -> str:
    from earthsnap.data.dataqa import run_qa
    from earthsnap.data.demodata import generate_demo_data

    groups, species = 5, 5
    photos = generate_demo_data(
        root / "photos", groups=groups, species=species, images=images // (groups * species), size=size, progress=False
    ).root
    return run_qa(photos, "bench", datasets=root / "datasets", progress=False).dataset.root


def _json(cmd: list[str], env: dict | None = None) -> dict:
    os.sync()  # the previous run's writes reach the disk now, not while this one is measured
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_earthsnap(dataset: str, out: Path, workers: int, shards: int = 1) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return _json([sys.executable, "-c", RUN_EARTHSNAP, dataset, str(out), str(workers), str(shards)])


def run_loop(kind: str, files: Path, workers: int, out: Path | None = None) -> dict:
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    return _json(
        [sys.executable, "-c", RUN_LOOP, str(files), str(workers)] + ([str(out)] if out else []),
        env={**os.environ, "LOOP": kind},
    )


def run_qa(photos: Path, datasets: Path, workers: int, fresh: bool) -> dict:
    if fresh:
        shutil.rmtree(datasets, ignore_errors=True)
    return _json([sys.executable, "-c", RUN_QA, str(photos), str(datasets), str(workers)])


def run_im2rec(photos: Path, work: Path) -> dict:
    py = mxnet_python()
    im2rec = subprocess.run(
        [str(py), "-c", "import mxnet, os; print(os.path.join(os.path.dirname(mxnet.__file__), 'tools', 'im2rec.py'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    prefix = work / "im2rec"
    subprocess.run(
        [str(py), im2rec, "--list", "--recursive", str(prefix), str(photos)], check=True, capture_output=True
    )
    os.sync()
    t = time.perf_counter()
    subprocess.run(
        [str(py), im2rec, "--resize", "64", "--quality", "90", "--num-thread", "2", str(prefix), str(photos)],
        check=True,
        capture_output=True,
    )
    return {"seconds": time.perf_counter() - t, "images": sum(1 for _ in open(f"{prefix}.lst"))}


def mxnet_reads(out: Path) -> str:
    "Read earthsnap's output with MXNet and compare with earthsnap's own reader: a line that says what matched."
    from earthsnap.data.recordio import MXIndexedRecordIO, unpack

    theirs = json.loads(
        subprocess.run(
            [str(mxnet_python()), "-c", MXNET_READ, str(out)], capture_output=True, text=True, check=True
        ).stdout
    )
    for split, rows in theirs.items():
        r = MXIndexedRecordIO(out / f"{split}.idx", out / f"{split}.rec", "r")
        ours = [[k, float(unpack(r.read_idx(k))[0].label), int(unpack(r.read_idx(k))[0].id)] for k in r.keys]
        if ours != rows:
            raise SystemExit(f"MXNet reads {split} differently from earthsnap: {rows[:3]} vs {ours[:3]}")
    return (
        "MXNet 1.9.1 read every record of "
        + ", ".join(f"{s} ({len(v)})" for s, v in theirs.items())
        + ": same keys, labels and ids as earthsnap's reader; every image decodes (OpenCV) with its shorter side 64"
    )


def table(title: str, runs: dict[str, list[dict]], ours: str) -> list[dict]:
    rate = {k: [r["images"] / r["seconds"] for r in v] for k, v in runs.items()}
    median = {k: statistics.median(v) for k, v in rate.items()}
    return [
        {
            "table": title,
            "config": k,
            "images": runs[k][0]["images"],
            "median_images_per_s": round(median[k], 1),
            "best_images_per_s": round(max(rate[k]), 1),
            "all_images_per_s": [round(x, 1) for x in rate[k]],
            "earthsnap_x": round(median[ours] / median[k], 2),
        }
        for k in runs
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--photo-size", type=int, default=96, help="the demo photos' size in pixels (preprocessing always writes 64 px)"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.images, args.scale, args.repeats = 50, 2, 1
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="es-bench-") as tmp:
        tmp = Path(tmp)
        print(f"drawing {args.images} photos and running data QA ...", file=sys.stderr)
        dataset = make_dataset(tmp / "n", args.images, args.photo_size)
        photos = tmp / "n" / "photos"
        from earthsnap.data.preprocess import open_dataset

        version = open_dataset(dataset)
        stored = tmp / "stored.json"
        stored.write_text(json.dumps([version.object_uri(r) for r in version.rows()]))
        sources = tmp / "sources.json"
        sources.write_text(json.dumps(sorted(str(p) for p in photos.rglob("*.jpg"))))
        ours_p, ours_q = f"earthsnap, {cores} processes", f"earthsnap data QA, {cores} processes"
        pre: dict[str, list[dict]] = {}
        qa: dict[str, list[dict]] = {}
        for i in range(args.repeats):
            print(f"round {i + 1} of {args.repeats} ...", file=sys.stderr)
            for name, fn in [
                (ours_p, lambda: run_earthsnap(dataset, tmp / "out-p", cores)),
                (
                    f"earthsnap, train in 16 shards, {cores} processes",
                    lambda: run_earthsnap(dataset, tmp / "s", cores, 16),
                ),
                ("(a) earthsnap, 1 process", lambda: run_earthsnap(dataset, tmp / "out-1", 1)),
                (f"(b) codec limit, {cores} processes", lambda: run_loop("codec", stored, cores)),
                ("(c) im2rec, --num-thread 2", lambda: run_im2rec(photos, tmp)),
            ]:
                # MXNet's im2rec needs its own venv (a download): the full run only
                if args.smoke and name.startswith("(c)"):
                    continue
                pre.setdefault(name, []).append(fn())
            for name, fn in [
                (ours_q, lambda: run_qa(photos, tmp / "qa-datasets", cores, fresh=True)),
                (
                    f"earthsnap data QA again (photos stored), {cores} processes",
                    lambda: run_qa(photos, tmp / "qa-datasets", cores, fresh=False),
                ),
                (f"(d) open + verify, {cores} processes", lambda: run_loop("verify", sources, cores)),
                (
                    f"(e) read, hash, decode 1/8, write a file, {cores} processes",
                    lambda: run_loop("store", sources, cores, tmp / "floor"),
                ),
            ]:
                qa.setdefault(name, []).append(fn())
        rows = table("preprocessing", pre, ours_p) + table("data QA", qa, ours_q)
        mxnet = None if args.smoke else mxnet_reads(tmp / "out-p")
        print(f"drawing {args.images * args.scale} photos and running data QA for the memory run ...", file=sys.stderr)
        big = make_dataset(tmp / "big", args.images * args.scale, args.photo_size)
        mem = {
            n: run_earthsnap(d, tmp / f"mem-{n}", cores)
            for n, d in ((args.images, dataset), (args.images * args.scale, big))
        }
    print(
        f"{args.images} demo photos, {args.photo_size} px; {args.repeats} "
        f"alternating runs each; {cores} cores; Python {platform.python_version()}"
    )
    for title in ("preprocessing", "data QA"):
        heading = title + (f" ({args.photo_size} px -> 64 px, quality 90)" if title == "preprocessing" else "")
        print(f"\n{heading:<62}{'median img/s':>14}{'best img/s':>12}{'earthsnap is':>14}")
        for r in rows:
            if r["table"] == title:
                print(
                    f"{r['config']:<62}{r['median_images_per_s']:>14.1f}{r['best_images_per_s']:>12.1f}"
                    f"{r['earthsnap_x']:>13.2f}x"
                )
    if mxnet:
        print(f"\n{mxnet}")
    print(f"\npeak memory of preprocessing (max RSS, MB)   {'main process':>14}{'largest worker':>16}")
    for n, m in mem.items():
        print(f"{n:>8} images{'':<30}{m['rss_main_mb']:>14.0f}{m['rss_worker_mb']:>16.0f}")
    out = Path(tempfile.mkdtemp() if args.smoke else HERE / "results") / (
        "preprocess.json" if args.photo_size == 96 else f"preprocess-{args.photo_size}px.json"
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"rows": rows, "mxnet_read": mxnet, "memory": {str(k): v for k, v in mem.items()}, "cores": cores}, indent=2
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
