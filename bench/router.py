"""Benchmark: parent/child routers against the flat model trained on the same photos, in one run: accuracy and speed.

    .venv/bin/python bench/router.py [--groups 4] [--species 4] [--images 40] [--epochs 20] [--requests 400]
        [--repeats 5] [--width 32] [--child-width 0] [--from-flat]

`earthsnap.hierarchy.planning.demo_hierarchy` generates a demo set (--groups x --species x --images photos) whose
groups are planted (`alike`: a group's species share its colours), and trains, with the default architecture
(ResNet, width 32 or --width, 64 px) for --epochs epochs, the parent (one class per group, on every photo), one
child per group and the flat model; two routers are packed as `earthsnap hierarchy router` packs them, one with the
trained parent and one whose parent is the flat model summed within each group. `--child-width` gives the parent
and the children a width of their own (smaller networks, less work per child); `--from-flat` starts them from the
flat model's weights, each child keeping the flat classifier's rows of its species (`earthsnap hierarchy run
--from-flat`).

Accuracy, on the test split, for two taxonomies:

- groups from the data: what `earthsnap.hierarchy.suggest` proposes from the flat model alone (its adjusted Rand
  index against the planted groups is reported; when it finds them, that hierarchy is the planted one);
- a hand-made taxonomy that cuts across the planted groups (group j takes the j-th species of every group).

For each: top-1, top-5, group accuracy and the share of mistakes inside the right group of the flat model and both
routers, and the router `build_router` keeps (the more accurate on the validation split) against the flat model. For
the groups from the data, also the top-1 of the router whose parent trained on a quarter of each group's photos
(`--parent-per-group`) instead of every one: what the sample costs. And the flat model trained as the parts were, so
that what the hierarchy changes is told apart from what the training changes: at --child-width, and, with
--from-flat, for twice --epochs from random weights (as many epochs as the parts have had, the flat model's
counted).

Speed, for the groups from the data: both are opened with `earthsnap.model.router.load_model(path, threads=1)`, the
loader the endpoint server uses, on one thread each so the figures compare the work and not how it spreads over
cores. The router answers an endpoint request with `top(x, top_k)`, which runs the children from the most likely
group down and stops as soon as no other group can place a species in the answer. Each round measures, on the same
test-split JPEGs: batch 1, one endpoint request's work (decode, prepare, run, rank), --requests calls each (the flat
model with top_k=5, the baseline; the router with top_k=5 and 1; the summed-flat router with top_k=5; the router
running every child); batch 32, the model work alone on 32 prepared images; and the children run per image.

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
from earthsnap.data.taxonomy import load_taxonomy
from earthsnap.hierarchy.datasets import PARENT
from earthsnap.hierarchy.planning import demo_hierarchy
from earthsnap.hierarchy.suggest import adjusted_rand_index, class_signals, suggest_groups
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


def across(taxonomy: dict[str, list[str]]) -> dict[str, list[str]]:
    "A hand-made taxonomy that cuts across the planted groups: group j takes the j-th species of every group."
    groups = list(taxonomy.values())
    return {f"mixed-{j + 1}": [g[j] for g in groups] for j in range(min(map(len, groups)))}


def accuracy_of(h: dict) -> dict:
    """On the test split: top-1, top-5, group accuracy and mistakes inside the right group of the flat model and both
    routers; and the router build_router would keep (the more accurate on the validation split)."""
    group_of = {c: g for g, sp in load_taxonomy(h["taxonomy"]).items() for c in sp}
    models = {k: load_model(h[k], threads=1) for k in ("flat", "router", "summed")}
    out, val = {}, {}
    for split in ("val", "test"):
        rows = list(split_images(h["records"], split))
        x = models["flat"].inputs([im for *_, im in rows])
        names = models["flat"].classes
        truth = np.array([label for _, label, _, _ in rows])
        for k, m in models.items():
            p = m.probabilities(x)
            top1 = p.argmax(1)
            if split == "val":
                val[k] = float((top1 == truth).mean())
                continue
            wrong = top1 != truth
            inside = np.array([group_of[names[a]] == group_of[names[b]] for a, b in zip(top1, truth, strict=True)])
            out[k] = {
                "top1": float((~wrong).mean()),
                "top5": float((np.argsort(-p, 1)[:, :5] == truth[:, None]).any(1).mean()),
                "group_accuracy": float(inside.mean()),
                "errors_in_group": float(inside[wrong].mean()) if wrong.any() else 1.0,
            }
    kept = "summed" if val["summed"] > val["router"] else "router"
    return {"test": out, "val_top1": val, "kept": kept, "kept_minus_flat_top1": out[kept]["top1"] - out["flat"]["top1"]}


def sampled_router(h: dict, per_group: int, size: dict) -> Path:
    """The router of hierarchy `h` with its parent trained on `per_group` photos of each group (`--parent-per-group`)
    instead of every photo: what the sample costs."""
    from earthsnap.data.dataqa import run_qa
    from earthsnap.data.datasets import DatasetStore
    from earthsnap.hierarchy.datasets import hierarchy_data, listing_uri, write_listing
    from earthsnap.hierarchy.planning import train_demo_model
    from earthsnap.model.router import pack_router

    out = Path(h["flat"]).parent.parent
    version = DatasetStore(out / "datasets").get("demo")
    sample = hierarchy_data(version, load_taxonomy(h["taxonomy"]), parent_per_group=per_group)[PARENT]
    listing = write_listing(sample, version, listing_uri(str(out / "listings"), version, "parent-sample"))
    d = out / "parent-sample"
    run_qa(listing, "demo-parent-sample", datasets=out / "datasets", out_dir=d / "qa", progress=False)
    width, start = size["child_width"] or size["width"], Path(h["flat"]) if size["from_flat"] else None
    parent = train_demo_model(d / "qa", d, out / "datasets", size["size"], width, size["epochs"], start)
    router = load_model(h["router"])
    kids = {g: c.path for g, c in router.children.items() if c is not None}
    return pack_router(parent, kids, router.species_of, {}, out / "router-sampled")


def flat_at(h: dict, width: int, epochs: int, size: dict) -> Path:
    """The flat model of hierarchy `h` trained again at `width` for `epochs`: whether the parts' width, or the epochs
    the parts that start from the flat model add to its own, change the accuracy rather than the hierarchy."""
    from earthsnap.hierarchy.planning import train_demo_model

    out = Path(h["flat"]).parent.parent
    d = out / f"flat-width-{width}-epochs-{epochs}"
    return train_demo_model(out / "flat" / "qa", d, out / "datasets", size["size"], width, epochs)


def test_top1(router_dir: Path, h: dict) -> float:
    "Top-1 accuracy of a router on the test split of the flat model's records."
    m = load_model(router_dir, threads=1)
    rows = list(split_images(h["records"], "test"))
    p = m.probabilities(m.inputs([im for *_, im in rows]))
    return float((p.argmax(1) == np.array([label for _, label, _, _ in rows])).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--species", type=int, default=4)
    ap.add_argument("--images", type=int, default=40, help="photos per species")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--requests", type=int, default=400, help="batch-1 calls per measurement per round")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=32, help="the flat model's width (ResNet)")
    ap.add_argument("--child-width", type=int, default=0, help="the parent's and children's width; 0: the flat's")
    ap.add_argument(
        "--from-flat", action="store_true", help="the parent and children start from the flat model's weights"
    )
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
        size = dict(
            groups=args.groups,
            species=args.species,
            images=args.images,
            epochs=args.epochs,
            width=8 if args.smoke else args.width,
            size=32 if args.smoke else 64,
            alike=True,
            child_width=args.child_width,
            from_flat=args.from_flat,
        )
        print(
            f"training {args.groups}-group hierarchies and their flat model on "
            f"{args.groups * args.species * args.images} demo photos with planted groups, {args.epochs} epochs ..."
        )
        t0 = time.perf_counter()
        planted = demo_hierarchy(Path(tmp) / "planted", **size)
        planted_taxonomy = load_taxonomy(planted["taxonomy"])
        # groups from the data: what `earthsnap hierarchy suggest` proposes from the flat model alone
        s = suggest_groups(class_signals(load_model(planted["flat"], threads=1), planted["records"]))
        truth = {c: g for g, sp in planted_taxonomy.items() for c in sp}
        classes = sorted(truth)
        ari = adjusted_rand_index(
            [truth[c] for c in classes], [g for c in classes for g, sp in s.groups.items() if c in sp]
        )
        same = sorted(map(sorted, s.groups.values())) == sorted(map(sorted, planted_taxonomy.values()))
        found = planted if same else demo_hierarchy(Path(tmp) / "found", **size, taxonomy=s.groups)
        crossed = demo_hierarchy(Path(tmp) / "across", **size, taxonomy=across(planted_taxonomy))
        per_group = max(2, args.species * args.images // 4)  # a quarter of each group's photos
        sampled = test_top1(sampled_router(found, per_group, size), found)
        narrow = size["child_width"] not in (0, size["width"])
        again = {}  # the flat model trained as the parts were: at their width, or for their epochs and the flat's
        if narrow:
            again["flat_at_child_width_top1"] = test_top1(flat_at(found, size["child_width"], args.epochs, size), found)
        if args.from_flat:
            again["flat_twice_the_epochs_top1"] = test_top1(flat_at(found, size["width"], 2 * args.epochs, size), found)
        print(f"trained in {time.perf_counter() - t0:.0f}s")
        quality = {
            "groups_from_the_data": {
                "groups": s.groups,
                "chosen_by": s.chosen_by,
                "adjusted_rand_index_with_planted": ari,
                **accuracy_of(found),
                "sampled_parent": {"per_group": per_group, "router_top1": sampled},
                **again,
            },
            "hand_made_across_planted": {"groups": across(planted_taxonomy), **accuracy_of(crossed)},
        }
        print(json.dumps(quality, indent=2))
        flat, router = load_model(found["flat"], threads=1), load_model(found["router"], threads=1)
        summed = load_model(found["summed"], threads=1)
        assert flat.classes == router.classes == summed.classes, (
            "the routers and the flat model must name the same species"
        )
        images = [im for *_, im in split_images(found["records"], "test")]
    x = flat.inputs([images[j % len(images)] for j in range(32)])
    quality["children_per_image"] = {
        "top_k=5": children_per_image(router, flat.inputs(images), 5),
        "top_k=1": children_per_image(router, flat.inputs(images), 1),
        "every child": float(sum(c is not None for c in router.children.values())),
    }

    one = {
        "flat_top5": lambda im: flat.predict([im], 5),
        "router_top5": lambda im: router.predict([im], 5),
        "router_top1": lambda im: router.predict([im], 1),
        "summed_flat_router_top5": lambda im: summed.predict([im], 5),
        "router_every_child_top5": lambda im: router.ranked(router.probabilities(router.inputs([im]))[0], 5),
    }
    many = {
        "flat": flat.probabilities,
        "router_top5": lambda b: router.top(b, 5),
        "summed_flat_router_top5": lambda b: summed.top(b, 5),
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
            for k in ("router_top5", "router_top1", "summed_flat_router_top5", "router_every_child_top5")
        },
        **{
            f"batch32_{k}_throughput": med[f"batch32_{k}"]["images_per_s"] / med["batch32_flat"]["images_per_s"]
            for k in ("router_top5", "summed_flat_router_top5", "router_every_child")
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
            "architecture": f"resnet width {size['width']}, {size['size']} px, threads=1",
            "parent_and_children": f"width {size['child_width'] or size['width']}"
            + (", starting from the flat model's weights" if size["from_flat"] else ", from random weights"),
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
