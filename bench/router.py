"""Benchmark: a parent/child router against the flat model trained on the same photos, in one run.

    .venv/bin/python bench/router.py [--groups 4] [--species 4] [--images 40] [--epochs 20] [--requests 400]
        [--repeats 5]

`earthsnap.hierarchy.planning.demo_hierarchy` generates a demo set (--groups x --species x --images photos), and trains,
with the default architecture (ResNet, width 32, 64 px) for --epochs epochs, the parent (one class per group),
one child per group (its species) and the flat model (every species); the router is packed from the parent
and the children exactly as `earthsnap hierarchy router` packs it. Both are opened with
`earthsnap.model.router.load_model(path, threads=1)`, the loader the endpoint server uses, on one thread each so the
figures compare the work and not how it spreads over cores.

The router answers an endpoint request with `top(x, top_k)`, which runs the children from the most likely
group down and stops as soon as no other group can place a species in the answer (the answer is the one the
full joint distribution gives). How many children that takes depends on how sure the parent is, so the
models are trained for real (--epochs) and the parent's group accuracy on the test split is reported beside
the figures. Each round measures, on the same test-split JPEGs:

- batch 1, one endpoint request's work (decode, prepare, run, rank), --requests calls each:
  the flat model with top_k=5 (the baseline); the router with top_k=5 and with top_k=1; and the router
  running every child (`ranked(probabilities(x))`, what it did before `top`);
- batch 32, the model work alone on 32 prepared images: the flat model's `probabilities`, the router's
  `top(x, 5)`, and the router's `probabilities` (every child);
- the children run per image, counted by wrapping each child, for top_k=5 and top_k=1.

Reported: medians over --repeats alternating rounds, and each router figure as a ratio of the flat model's
(latency router/flat; throughput router/flat). Results go to bench/results/router.json.
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

from earthsnap.data.records import split_images
from earthsnap.hierarchy.planning import demo_hierarchy
from earthsnap.model.router import RouterModel, load_model

HERE = Path(__file__).resolve().parent


class Counted:
    "A child that counts the images it is run on."

    def __init__(self, m):
        self.m, self.seen = m, 0

    def probabilities(self, x):
        self.seen += len(x)
        return self.m.probabilities(x)

    def __getattr__(self, name):
        return getattr(self.m, name)


def timed(call, images: list[bytes], n: int) -> dict:
    "Sequential one-image calls of `call(jpeg)`: per-call latency and images/s."
    seconds, t0 = [], time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        call(images[i % len(images)])
        seconds.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    q = statistics.quantiles(seconds, n=100)
    return {"images_per_s": n / total, "p50_ms": 1000 * statistics.median(seconds), "p95_ms": 1000 * q[94]}


def batched(call, x: np.ndarray, n: int) -> dict:
    "`call(x)` on a prepared batch until `n` images are done: images/s."
    done, t0 = 0, time.perf_counter()
    while done < n:
        call(x)
        done += len(x)
    return {"images_per_s": done / (time.perf_counter() - t0)}


def children_per_image(router: RouterModel, x: np.ndarray, top_k: int) -> float:
    counted = {g: Counted(c) for g, c in router.children.items() if c is not None}
    RouterModel(router.path, router.parent, counted, router.species_of, router.versions).top(x, top_k)
    return sum(c.seen for c in counted.values()) / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--species", type=int, default=4)
    ap.add_argument("--images", type=int, default=40, help="photos per species")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--requests", type=int, default=400, help="batch-1 calls per measurement per round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "router.json"))
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.groups, args.species, args.images, args.epochs, args.requests, args.repeats = 2, 2, 8, 1, 10, 1
        args.out = str(Path(tempfile.mkdtemp()) / "router.json")

    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"training a {args.groups}-group hierarchy and a flat model "
            f"on {args.groups * args.species * args.images} demo photos, {args.epochs} epochs ..."
        )
        t0 = time.perf_counter()
        h = demo_hierarchy(
            tmp,
            groups=args.groups,
            species=args.species,
            images=args.images,
            epochs=args.epochs,
            width=8 if args.smoke else 32,
            size=32 if args.smoke else 64,
        )
        print(f"trained in {time.perf_counter() - t0:.0f}s")
        flat, router = load_model(h["flat"], threads=1), load_model(h["router"], threads=1)
        assert flat.classes == router.classes, "the router and the flat model must name the same species"
        test = [(label, im) for _, label, _, im in split_images(h["records"], "test")]
    images = [im for _, im in test]
    x = flat.inputs([images[j % len(images)] for j in range(32)])
    every = flat.inputs(images)
    groups_true = [router.group_of[flat.classes[int(label)]] for label, _ in test]
    pg = router.parent.probabilities(every)
    quality = {
        "test_images": len(images),
        "parent_group_accuracy": float(
            np.mean([router.parent.classes[j] == g for j, g in zip(pg.argmax(1), groups_true, strict=True)])
        ),
        "parent_mean_top_probability": float(pg.max(1).mean()),
        "flat_accuracy": float(
            np.mean(
                [
                    flat.classes[int(label)] == flat.classes[j]
                    for (label, _), j in zip(test, flat.probabilities(every).argmax(1), strict=True)
                ]
            )
        ),
        "router_accuracy": float(
            np.mean(
                [
                    flat.classes[int(label)] == router.classes[j]
                    for (label, _), j in zip(test, router.probabilities(every).argmax(1), strict=True)
                ]
            )
        ),
        "children_per_image": {
            "top_k=5": children_per_image(router, every, 5),
            "top_k=1": children_per_image(router, every, 1),
            "every child": float(sum(c is not None for c in router.children.values())),
        },
    }
    print(json.dumps(quality, indent=2))

    one = {
        "flat_top5": lambda im: flat.predict([im], 5),
        "router_top5": lambda im: router.predict([im], 5),
        "router_top1": lambda im: router.predict([im], 1),
        "router_every_child_top5": lambda im: router.ranked(router.probabilities(router.inputs([im]))[0], 5),
    }
    many = {
        "flat": flat.probabilities,
        "router_top5": lambda b: router.top(b, 5),
        "router_every_child": router.probabilities,
    }
    for call in one.values():
        timed(call, images, 2 if args.smoke else 20)  # warm up every session before timing
    rounds = []
    for r in range(args.repeats):
        row = {f"batch1_{k}": timed(call, images, args.requests) for k, call in one.items()}
        row.update({f"batch32_{k}": batched(call, x, args.requests) for k, call in many.items()})
        rounds.append(row)
        print(
            f"round {r + 1}/{args.repeats}: batch 1 p50 flat {row['batch1_flat_top5']['p50_ms']:.2f} "
            f"ms, router top-5 {row['batch1_router_top5']['p50_ms']:.2f} ms, every "
            f"child {row['batch1_router_every_child_top5']['p50_ms']:.2f} ms"
        )

    med = {k: {m: statistics.median(r[k][m] for r in rounds) for m in rounds[0][k]} for k in rounds[0]}
    ratio = {
        **{
            f"batch1_{k}_p50_latency": med[f"batch1_{k}"]["p50_ms"] / med["batch1_flat_top5"]["p50_ms"]
            for k in ("router_top5", "router_top1", "router_every_child_top5")
        },
        **{
            f"batch32_{k}_throughput": med[f"batch32_{k}"]["images_per_s"] / med["batch32_flat"]["images_per_s"]
            for k in ("router_top5", "router_every_child")
        },
    }
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "hierarchy": {
            "groups": args.groups,
            "species_per_group": args.species,
            "photos_per_species": args.images,
            "epochs": args.epochs,
            "models_in_router": 1 + sum(c is not None for c in router.children.values()),
            "architecture": "resnet width 32, 64 px, threads=1",
        },
        "quality": quality,
        "requests_per_round": args.requests,
        "repeats": args.repeats,
        "median": med,
        "ratio_router_over_flat": ratio,
        "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median": med, "ratio_router_over_flat": ratio}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
