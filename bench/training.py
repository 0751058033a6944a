"""Benchmark: the RecordIO loader against tensors in memory, and the exported ONNX model against torch, in one run.

    .venv/bin/python bench/training.py [--repeats 3] [--epochs 2] [--workers 2]

1. Loader overhead. The default model (ResNet, width 32) trains on the `train` split of the default demo data
   (1,600 photos -> about 1,260 training images at 64 px), the same batches in the same order, fed
   - from tensors decoded once and held in memory (the baseline: no reading, no decoding);
   - from the RecordIO loader, decoding in --workers processes, without augmentation (the same work per
     step as the baseline, plus reading and decoding);
   - from the RecordIO loader with the training augmentation (what `train` does).
   Training throughput in images/s (forward, backward, optimiser step), median over --repeats alternating
   rounds of --epochs epochs. Loader overhead = 1 - loader / memory (target <= 10%).
2. ONNX against torch on the same batch of 64 test images: max abs difference of the logits (target
   <= 1e-4), and the latency of one image, median over 300 calls each (torch eager under no_grad, and ONNX
   Runtime), with the ratio.
3. Checkpoint cost: `train` of the default model for --epochs epochs with a checkpoint folder (one checkpoint
   after every epoch: weights, AdamW's moments, the best epoch's weights) against the same training without,
   alternating over --repeats rounds. Seconds per checkpoint (timed inside `train`) and their share of an epoch
   (target < 2%), and the ratio of the two trainings' medians.
4. Training in processes (distributed data parallel on the CPU, gloo): `train` of the default model for --epochs
   epochs in 2 processes of 1 thread each (torchrun) against 1 process of 2 threads, the same global batch;
   images/s of training as each measures it (from its first batch to its last epoch's validation, launch not
   counted), median over --repeats alternating rounds; target: 2 processes at least 0.8x of 1.
5. Training in processes, correctness: a network without BatchNorm (ConvNeXt-T's LayerNorm, random weights) trained
   with SGD on a global batch of 8 for a head-only epoch and two whole ones (over 20 optimiser steps), in 1 process
   and in 2 of 4 images each; the largest difference of any weight (target <= 1e-5).
Results go to bench/results/training.json.
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
import torch
from torch import nn

from earthsnap.data.records import demo_records, read_classes
from earthsnap.model.export import export_onnx
from earthsnap.model.hyperparameters import Hyperparameters
from earthsnap.model.inference import open_model
from earthsnap.model.loader import Augment, RecordDataset, loader
from earthsnap.model.networks import build_model
from earthsnap.model.training import make_optimizer, train

HERE = Path(__file__).resolve().parent


def train_epochs(model, opt, batches, epochs: int) -> float:
    "Images per second over `epochs` passes of `batches` (a callable giving an iterable of (x, y))."
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in batches():
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
    return n / (time.perf_counter() - t0)


def checkpoint_cost(records: Path, hp: Hyperparameters, epochs: int, repeats: int, workers: int, tmp: Path) -> dict:
    "Section 3: the default training with a checkpoint after every epoch, against the same training without."
    from dataclasses import replace

    hp = replace(hp, epochs=epochs, patience=epochs)
    quiet = dict(progress=False, log=lambda _: None, workers=workers)
    seconds, kept = {"without": [], "with": []}, []
    for r in range(repeats):
        for name in ("without", "with") if r % 2 == 0 else ("with", "without"):
            folder = tmp / f"checkpoints-{r}"
            result = train(records, hp, checkpoints=folder if name == "with" else None, **quiet)
            seconds[name].append(result.metrics["seconds"])
            if name == "with":
                kept.append(result.metrics["checkpoints"])
                size = sum(f.stat().st_size for f in folder.iterdir())
            print(f"  round {r + 1} {name:<8} checkpoints {result.metrics['seconds']:7.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    per = statistics.median(k["seconds"] / k["written"] for k in kept)
    epoch = med["without"] / epochs
    return {
        "epochs": epochs,
        "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "seconds_per_checkpoint": round(per, 4),
        "checkpoint_mib": round(size / len(list(folder.iterdir())) / 2**20, 2),
        "share_of_an_epoch": round(per / epoch, 4),
        "with_over_without": round(med["with"] / med["without"], 3),
    }


def processes_speed(records: Path, hp: Hyperparameters, epochs: int, repeats: int) -> dict:
    "Section 4: 2 processes x 1 thread (torchrun, gloo) against 1 process x 2 threads, the same global batch."
    from dataclasses import replace

    hp = replace(hp, epochs=epochs, patience=epochs)
    speeds, walls = {"1x2": [], "2x1": []}, {"1x2": [], "2x1": []}
    threads = torch.get_num_threads()
    for r in range(repeats):
        for name in ("1x2", "2x1") if r % 2 == 0 else ("2x1", "1x2"):
            torch.set_num_threads(2)
            t0 = time.perf_counter()
            result = train(records, hp, progress=False, log=lambda _: None, processes=1 if name == "1x2" else 2)
            walls[name].append(time.perf_counter() - t0)
            m = result.metrics
            speeds[name].append(m["train_images"] * m["epochs_run"] / m["seconds"])
            print(f"  round {r + 1} {name} {speeds[name][-1]:7.1f} img/s ({walls[name][-1]:.1f} s with the launch)")
    torch.set_num_threads(threads)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    return {
        "epochs": epochs,
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "runs": {k: [round(x, 1) for x in v] for k, v in speeds.items()},
        "wall_seconds": {k: [round(x, 2) for x in v] for k, v in walls.items()},
        "two_over_one": round(med["2x1"] / med["1x2"], 3),
    }


def processes_agree(tmp: Path, smoke: bool) -> dict:
    "Section 5: the weights of 2 processes and of 1 after the same optimiser steps on the same global batches."
    from earthsnap.model.loader import global_batches

    records = demo_records(tmp / "agree", images=9 if smoke else 29, size=32)  # 91 training images: 11 x 8, then 3
    hp = Hyperparameters(
        arch="convnext_tiny", optimizer="sgd", lr=0.01, epochs=3, batch_size=8, dropout=0.0, freeze_epochs=1, patience=3
    )
    one, two = (train(records, hp, progress=False, log=lambda _: None, processes=n) for n in (1, 2))
    pairs = zip(one.model.state_dict().values(), two.model.state_dict().values(), strict=True)
    return {
        "network": hp.arch,
        "optimizer": hp.optimizer,
        "global_batch": hp.batch_size,
        # the optimiser steps to the kept weights, which must be the same epoch's in both
        "steps": one.metrics["best_epoch"] * len(global_batches(one.metrics["train_images"], hp.batch_size, 2)),
        "best_epochs": [one.metrics["best_epoch"], two.metrics["best_epoch"]],
        "max_abs_difference": max(float((a - b).abs().max()) for a, b in pairs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.epochs, args.workers = 1, 1, 1
    tmp = Path(tempfile.mkdtemp())
    shape = (
        dict(groups=2, species=2, images=10, size=32) if args.smoke else dict(groups=4, species=4, images=100, size=64)
    )
    print(
        f"preprocessing demo data ({shape['groups']} groups x {shape['species']} "
        f"species x {shape['images']} photos, {shape['size']} px) ...",
        flush=True,
    )
    records = demo_records(tmp, **shape)
    classes, size = read_classes(records)
    hp = Hyperparameters()
    plain = RecordDataset(records, "train", size)
    augmented = RecordDataset(records, "train", size, augment=Augment())
    xs = torch.stack([plain[i][0] for i in range(len(plain))])
    ys = torch.tensor(plain.labels)
    print(
        f"{len(plain)} training images at {size} px, {len(classes)} classes; torch threads {torch.get_num_threads()}, "
        f"loader workers {args.workers}",
        flush=True,
    )

    def from_memory():
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ys), generator=g)
        return (
            (xs[order[i : i + hp.batch_size]], ys[order[i : i + hp.batch_size]])
            for i in range(0, len(ys), hp.batch_size)
        )

    feeds = {
        "memory": from_memory,
        "recordio": lambda: loader(plain, hp.batch_size, shuffle=True, workers=args.workers, seed=0),
        "recordio+augment": lambda: loader(augmented, hp.batch_size, shuffle=True, workers=args.workers, seed=0),
    }
    speeds = {k: [] for k in feeds}
    for r in range(args.repeats):
        for name, feed in feeds.items() if r % 2 == 0 else reversed(feeds.items()):
            torch.manual_seed(0)
            model = build_model(hp, len(classes))
            opt = make_optimizer(hp, model)
            speeds[name].append(train_epochs(model, opt, feed, args.epochs))
            print(f"  round {r + 1} {name:<17} {speeds[name][-1]:7.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    overhead = {k: 1 - med[k] / med["memory"] for k in ("recordio", "recordio+augment")}

    print("ONNX against torch ...", flush=True)
    torch.manual_seed(0)
    model = build_model(hp, len(classes)).eval()
    export_onnx(model, tmp / "model.onnx", size)
    for f, data in (
        ("classes.json", {"classes": classes, "input_size": size}),
        ("hyperparameters.json", hp.to_dict()),
        ("metrics.json", {}),
    ):
        (tmp / f).write_text(json.dumps(data))
    (tmp / "model.safetensors").write_bytes(b"")
    onnx = open_model(tmp)
    test = RecordDataset(records, "test", size)
    batch = torch.stack([test[i][0] for i in range(min(64, len(test)))])
    with torch.no_grad():
        want = model(batch).numpy()
    diff = float(np.abs(onnx.logits(batch.numpy()) - want).max())
    one = batch[:1]

    def latency(fn, n=20 if args.smoke else 300):
        for _ in range(5 if args.smoke else 20):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    with torch.no_grad():
        torch_ms = latency(lambda: model(one))
    onnx_ms = latency(lambda: onnx.logits(one.numpy()))

    print("checkpoint cost ...", flush=True)
    ckpt = checkpoint_cost(records, hp, args.epochs + 1, args.repeats, args.workers, tmp)
    print("training in processes ...", flush=True)
    ddp = processes_speed(records, hp, args.epochs, args.repeats)
    print("2 processes against 1, their weights ...", flush=True)
    agree = processes_agree(tmp, args.smoke)

    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "train_images": len(plain),
        "image_size": size,
        "epochs_per_round": args.epochs,
        "repeats": args.repeats,
        "loader_workers": args.workers,
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "runs": {k: [round(x, 1) for x in v] for k, v in speeds.items()},
        "loader_overhead": {k: round(v, 4) for k, v in overhead.items()},
        "onnx_max_abs_diff": diff,
        "latency_ms": {"torch": round(torch_ms, 3), "onnx": round(onnx_ms, 3)},
        "onnx_speedup": round(torch_ms / onnx_ms, 2),
        "checkpoints": ckpt,
        "processes": ddp,
        "processes_agree": agree,
    }
    results = tmp if args.smoke else HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "training.json").write_text(json.dumps(result, indent=1))
    print(
        "\n"
        f"training throughput (median of {args.repeats}): memory {med['memory']:.1f} img/s, RecordIO "
        f"loader {med['recordio']:.1f} img/s (overhead {overhead['recordio']:.1%}; target <= 10%), with "
        f"augmentation {med['recordio+augment']:.1f} img/s (overhead {overhead['recordio+augment']:.1%})"
    )
    print(f"ONNX vs torch on {len(batch)} test images: max abs difference {diff:.2e} (target <= 1e-4)")
    print(f"one image: torch {torch_ms:.2f} ms, ONNX Runtime {onnx_ms:.2f} ms ({torch_ms / onnx_ms:.2f}x)")
    print(
        f"checkpoints: {ckpt['seconds_per_checkpoint'] * 1000:.1f} ms each ({ckpt['checkpoint_mib']} MiB), "
        f"{ckpt['share_of_an_epoch']:.2%} of an epoch (target < 2%); training with them / without: "
        f"{ckpt['with_over_without']:.3f}"
    )
    print(
        f"training in processes (median of {args.repeats}): 2 processes x 1 thread {ddp['images_per_s']['2x1']:.1f} "
        f"img/s, 1 process x 2 threads {ddp['images_per_s']['1x2']:.1f} img/s: {ddp['two_over_one']:.2f}x "
        "(target >= 0.8x)"
    )
    print(
        f"2 processes against 1 ({agree['network']}, {agree['optimizer']}, global batch {agree['global_batch']}, "
        f"{agree['steps']} steps, kept epochs {agree['best_epochs']}): weights within "
        f"{agree['max_abs_difference']:.1e} (target <= 1e-5)"
    )


if __name__ == "__main__":
    main()
