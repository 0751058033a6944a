"""Benchmark: a parent/child router against the flat model trained on the same photos, in one run.

    .venv/bin/python bench/router.py [--groups 4] [--species 4] [--images 40] [--requests 400] [--repeats 5]

`earthsnap.planning.demo_hierarchy` generates a demo set (--groups x --species x --images photos), and trains,
with the default architecture (ResNet, width 32, 64 px) for one epoch, the parent (one class per group), one
child per group (its species) and the flat model (every species); the router is packed from the parent and
the children exactly as `earthsnap hierarchy router` packs it. Latency does not depend on the weights, so
one epoch is enough. Both are opened with `earthsnap.router.load_model(path, threads=1)`, the loader the
endpoint server uses, on one thread each so the figures compare the work and not how it spreads over cores.

Each round measures, on the same test-split JPEGs, for the flat model (the baseline) and then the router:

- batch 1: `model.predict([jpeg], top_k=5)` in a loop, --requests calls: decode, prepare, run, top-5, the
  work one endpoint request asks for; p50/p95 latency and images/s;
- batch 32: `model.probabilities(x)` on 32 prepared images: the model work alone, images/s.

Reported: the median over --repeats alternating rounds, and the router as a ratio of the flat model
(latency router/flat; throughput router/flat). The router runs the parent and every child on each image (the
joint probability needs them all), so the expected cost is about 1 + groups models' work against one, less
the decoding it shares. Results go to bench/results/router.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from earthsnap.inference import model_input
from earthsnap.planning import demo_hierarchy
from earthsnap.records import split_images
from earthsnap.router import load_model

HERE = Path(__file__).resolve().parent


def batch1(model, images: list[bytes], n: int) -> dict:
    "Sequential one-image predictions: per-call latency and images/s."
    seconds, t0 = [], time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        out = model.predict([images[i % len(images)]], 5)
        seconds.append(time.perf_counter() - s)
        assert len(out[0]) == min(5, len(model.classes))
    total = time.perf_counter() - t0
    q = statistics.quantiles(seconds, n=100)
    return {"images_per_s": n / total, "p50_ms": 1000 * statistics.median(seconds), "p95_ms": 1000 * q[94]}


def batched(model, images: list[bytes], n: int, batch: int = 32) -> dict:
    "The model work alone on prepared batches of `batch` images: images/s."
    x = np.stack([model_input(images[j % len(images)], model.input_size) for j in range(batch)])
    done, t0 = 0, time.perf_counter()
    while done < n:
        probs = model.probabilities(x)
        assert probs.shape == (batch, len(model.classes))
        done += batch
    return {"images_per_s": done / (time.perf_counter() - t0)}


def median_of(rounds: list[dict], key: str) -> dict:
    return {k: statistics.median(r[key][k] for r in rounds) for k in rounds[0][key]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--species", type=int, default=4)
    ap.add_argument("--images", type=int, default=40, help="photos per species")
    ap.add_argument("--requests", type=int, default=400, help="batch-1 calls per model per round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "router.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        print(f"training a {args.groups}-group hierarchy and a flat model on {args.groups * args.species * args.images} demo photos ...")
        h = demo_hierarchy(tmp, groups=args.groups, species=args.species, images=args.images, epochs=1, width=32, size=64)
        flat, router = load_model(h["flat"], threads=1), load_model(h["router"], threads=1)
        assert flat.classes == router.classes, "the router and the flat model must name the same species"
        images = [im for *_, im in split_images(h["records"], "test")]
        models = {"flat": flat, "router": router}
        for m in models.values():                     # warm up both sessions before timing
            batch1(m, images, 20)
        rounds = []
        for r in range(args.repeats):
            row = {}
            for name, m in models.items():
                row[f"{name}_batch1"] = batch1(m, images, args.requests)
                row[f"{name}_batch32"] = batched(m, images, args.requests)
            rounds.append(row)
            print(f"round {r + 1}/{args.repeats}: batch 1 p50 flat {row['flat_batch1']['p50_ms']:.2f} ms, "
                  f"router {row['router_batch1']['p50_ms']:.2f} ms")

    med = {k: median_of(rounds, k) for k in rounds[0]}
    ratio = {
        "batch1_p50_latency": med["router_batch1"]["p50_ms"] / med["flat_batch1"]["p50_ms"],
        "batch1_p95_latency": med["router_batch1"]["p95_ms"] / med["flat_batch1"]["p95_ms"],
        "batch1_throughput": med["router_batch1"]["images_per_s"] / med["flat_batch1"]["images_per_s"],
        "batch32_throughput": med["router_batch32"]["images_per_s"] / med["flat_batch32"]["images_per_s"],
    }
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "hierarchy": {"groups": args.groups, "species_per_group": args.species, "photos_per_species": args.images,
                      "models_in_router": 1 + sum(c is not None for c in router.children.values()),
                      "architecture": "resnet width 32, 64 px, threads=1"},
        "requests_per_round": args.requests, "repeats": args.repeats, "test_images": len(images),
        "median": med, "ratio_router_over_flat": ratio, "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median": med, "ratio_router_over_flat": ratio}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
