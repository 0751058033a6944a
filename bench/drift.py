"""Benchmark: how often the drift tests catch each shift the demo generator offers, and how often they cry wolf, by
window size.

    .venv/bin/python bench/drift.py [--windows 40] [--null-windows 100] [--sizes 50,100,200,500]
        [--model DIR --records DIR]

The model is the demo pipeline's architecture (ResNet, width 32, 64 px) trained on the default demo data (4 groups x 4
species x 100 photos) for --epochs epochs, or --model with the records it was trained from; its baseline is what the
training step packs (`earthsnap.model.baseline`: its predictions, confidence and embeddings on the validation split).
Traffic is drawn fresh for every window, as a phone app's users would send it: photos the model never saw (the
generator's photo numbers above 10,000), each of a species drawn at random, rendered and JPEG-encoded by the same code
as the demo data (`earthsnap.data.demodata.render`), answered by the same ONNX model an endpoint runs (decode, resize,
logits and embedding in one call), in worker processes. For each window the three tests of `earthsnap.monitor.drift` run
against the baseline (200 permutations, alpha 0.05 after Holm's correction), exactly as `earthsnap monitor` runs them.

Reported, for windows of each size (the first n photos of each window of the largest size, so the sizes see the same
photos): the share of windows of unshifted photos flagged (false alarms; target <= 5% at 500) and, for each shift at the
generator's default strength (lighting, background, blur) and for unseen species (a quarter of a window's photos of
species outside the taxonomy, the generator's --unseen), the share flagged (detection; target >= 95% at 500), with
which test caught them. Results go to bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from earthsnap.data.demodata import JPEG_QUALITY, SHIFTS, _traits, render
from earthsnap.model.baseline import read_baseline, write_baseline
from earthsnap.monitor.drift import Sample, compare

HERE = Path(__file__).resolve().parent
_model = None


def _init(artifact: str) -> None:
    global _model
    from earthsnap.model.router import load_model

    _model = load_model(artifact, threads=1)


def _answer(job: tuple) -> tuple[list[int], list[float], np.ndarray]:
    "Worker: render photos (g, s, n) of one window chunk, encode them as JPEG, and answer them as an endpoint does."
    groups, species, seed, shift, strength, size, photos = job
    traits = _traits(groups, species, seed, 1)  # each group's species, then one outside the taxonomy
    inputs = []
    for g, s, n in photos:
        buf = io.BytesIO()
        render(
            traits[g][s], np.random.default_rng([seed, g, s, n]), size, "" if shift == "unseen" else shift, strength
        ).save(buf, "JPEG", quality=JPEG_QUALITY)
        inputs.append(_model.view(buf.getvalue()))
    answers, emb = _model.top_and_embeddings(np.stack(inputs), 1)
    index = {c: i for i, c in enumerate(_model.classes)}
    return [index[a[0]["label"]] for a in answers], [a[0]["probability"] for a in answers], emb


def window(pool, args, shift: str, k: int, size: int) -> Sample:
    "Window `k` of `shift`: `size` fresh photos of random species, answered by the model."
    rng = np.random.default_rng([7, SHIFT_IDS[shift], k])
    first = 10_000 + (SHIFT_IDS[shift] * 100_000 + k) * size  # photo numbers no other window and no training photo uses
    # "unseen": a quarter of the photos are of a species outside the taxonomy (the generator's --unseen), the rest as
    # usual
    photos = [
        (
            int(rng.integers(args.groups)),
            args.species if shift == "unseen" and rng.uniform() < UNSEEN_SHARE else int(rng.integers(args.species)),
            first + i,
        )
        for i in range(size)
    ]
    chunks = [photos[i : i + 64] for i in range(0, size, 64)]
    parts = list(pool.map(_answer, [(args.groups, args.species, 0, shift, 1.0, 96, c) for c in chunks]))
    return Sample(sum((p[0] for p in parts), []), sum((p[1] for p in parts), []), np.concatenate([p[2] for p in parts]))


CONDITIONS = (*SHIFTS, "unseen")
SHIFT_IDS = {"": 0, **{s: i + 1 for i, s in enumerate(CONDITIONS)}}
UNSEEN_SHARE = 0.25


def first(s: Sample, n: int) -> Sample:
    return Sample(s.labels[:n], s.confidence[:n], s.embeddings[:n])


def make_model(tmp: Path, args) -> tuple[Path, Path]:
    from earthsnap.data.records import demo_records
    from earthsnap.model.export import save_model, write_tarball
    from earthsnap.model.hyperparameters import Hyperparameters
    from earthsnap.model.training import train

    records = demo_records(tmp, groups=args.groups, species=args.species, images=args.images, size=args.size)
    hp = Hyperparameters(epochs=args.epochs, **({"width": 8} if args.smoke else {}))
    result = train(records, hp, progress=False, log=lambda _: None)
    model_dir = save_model(result, tmp / "model")
    write_baseline(model_dir, records)
    print(
        f"model: validation accuracy {result.metrics['validation:accuracy']:.3f} "
        f"after {result.metrics['epochs_run']} epochs",
        flush=True,
    )
    return write_tarball(model_dir, tmp / "model.tar.gz"), records


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--windows", type=int, default=40, help="Windows of each shift.")
    ap.add_argument("--null-windows", type=int, default=100, help="Windows of unshifted photos.")
    ap.add_argument(
        "--sizes",
        default="50,100,200,500",
        help="Window sizes, comma-separated; the largest is drawn, the others are its first photos.",
    )
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="A model directory or model.tar.gz with its baseline; default: train one.",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    args.groups, args.species, args.images, args.size = 4, 4, 100, 64
    if args.smoke:
        args.windows, args.null_windows, args.sizes, args.permutations, args.epochs = 2, 2, "20,40", 100, 1
        args.groups, args.species, args.images, args.size = 2, 2, 10, 32
    sizes = sorted(int(s) for s in args.sizes.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="earthsnap-bench-"))
    t0 = time.perf_counter()
    if args.model:
        artifact = args.model
    else:
        print(f"training the demo model ({args.epochs} epochs) ...", flush=True)
        artifact, _ = make_model(tmp, args)
    baseline = read_baseline(artifact)
    reference = baseline
    print(
        f"baseline: {len(reference.labels)} {baseline.split} photos, embedding "
        f"width {reference.embeddings.shape[1]}; windows of {sizes}; {args.null_windows} "
        f"unshifted windows, {args.windows} of each shift; {args.workers} workers",
        flush=True,
    )
    flagged = {}  # condition -> size -> [drifted?]; which tests
    caught_by = {}
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(str(artifact),)) as pool:
        for shift in ("", *CONDITIONS):
            name = shift or "none"
            flagged[name] = {n: [] for n in sizes}
            caught_by[name] = {n: {} for n in sizes}
            for k in range(args.null_windows if not shift else args.windows):
                w = window(pool, args, shift, k, sizes[-1])
                for n in sizes:
                    tests = compare(reference, first(w, n), args.alpha, args.permutations, seed=k)
                    flagged[name][n].append(any(t.drifted for t in tests))
                    for t in tests:
                        if t.drifted:
                            caught_by[name][n][t.name] = caught_by[name][n].get(t.name, 0) + 1
            rates = ", ".join(f"{n}: {np.mean(flagged[name][n]):.0%}" for n in sizes)
            print(
                f"{'unshifted (false alarms)' if not shift else shift:<26} "
                f"{rates}   [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
    big = sizes[-1]
    rates = {name: {n: float(np.mean(v)) for n, v in by.items()} for name, by in flagged.items()}
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "baseline": {
            "split": baseline.split,
            "photos": int(len(reference.labels)),
            "accuracy": baseline.summary()["accuracy"],
        },
        "windows": {"null": args.null_windows, "per_shift": args.windows},
        "sizes": sizes,
        "alpha": args.alpha,
        "permutations": args.permutations,
        "flagged_share": rates,
        "caught_by": caught_by,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    results = tmp if args.smoke else HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "drift.json").write_text(json.dumps(result, indent=2))
    print(
        "\n"
        f"windows flagged as drifting (alpha {args.alpha:g}, "
        f"Holm-adjusted, {args.permutations} permutations), by window size:"
    )
    print(f"  {'photos':<26}" + "".join(f"{n:>8}" for n in sizes))
    for name in flagged:
        print(
            f"  {'unshifted (false alarms)' if name == 'none' else name:<26}"
            + "".join(f"{rates[name][n]:>8.0%}" for n in sizes)
        )
    worst = min(rates[s][big] for s in CONDITIONS)
    print(
        f"at {big} photos: false alarms {rates['none'][big]:.1%} "
        f"(target <= 5%), weakest detection {worst:.1%} (target >= 95%)"
    )


if __name__ == "__main__":
    main()
