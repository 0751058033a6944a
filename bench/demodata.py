"""Benchmark: demo photos generated per second (2,000 photos at 96 px), as a ratio against one process.

    .venv/bin/python bench/demodata.py [--images-total 2000] [--repeats 3] [--smoke]

Both configurations run in this one invocation, alternating, on the same machine; the best of the repeats
of each is reported (the least disturbed run). Results are printed and saved to bench/results/demodata.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from earthsnap.data.demodata import generate_demo_data


def one_run(workers: int, groups: int, species: int, images: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="es-bench-")) / "d"
    t = time.perf_counter()
    generate_demo_data(
        out, groups=groups, species=species, images=images, size=96, seed=0, workers=workers, progress=False
    )
    elapsed = time.perf_counter() - t
    shutil.rmtree(out.parent)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--images-total", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.images_total, args.repeats = 40, 1
    groups, species = 4, 5
    images = args.images_total // (groups * species)
    total = groups * species * images
    cores = os.cpu_count() or 1
    configs = {"1 process (baseline)": 1, f"{cores} processes": cores}
    best = {name: float("inf") for name in configs}
    for _ in range(args.repeats):
        for name, workers in configs.items():
            best[name] = min(best[name], one_run(workers, groups, species, images))
    base = best["1 process (baseline)"]
    rows = [
        {
            "config": name,
            "seconds": round(s, 3),
            "images_per_s": round(total / s, 1),
            "ratio_vs_baseline": round(base / s, 2),
        }
        for name, s in best.items()
    ]
    print(
        f"demo data generation: {total} photos at 96 px, best "
        f"of {args.repeats}, {cores} cores, Python {platform.python_version()}"
    )
    print(f"{'config':<24}{'seconds':>10}{'images/s':>12}{'x baseline':>12}")
    for r in rows:
        print(f"{r['config']:<24}{r['seconds']:>10.2f}{r['images_per_s']:>12.1f}{r['ratio_vs_baseline']:>12.2f}")
    out = Path(tempfile.mkdtemp() if args.smoke else Path(__file__).parent / "results") / "demodata.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"images": total, "size": 96, "cores": cores, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
