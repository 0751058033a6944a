"""Benchmark: earthsnap's training step on a GPU against a bare PyTorch loop on tensors already on the GPU.

    .venv/bin/python bench/gpu_training.py [--arch resnet50] [--size 224] [--batch 128] [--images 4096] [--workers 0]

Both loops train the same network with the same optimiser and the precision `train` uses on the GPU (bf16 autocast,
or fp16 with a gradient scaler where bf16 is missing, and channels_last):
1. synthetic (the baseline): one batch of random tensors made on the GPU once, stepped on again and again; nothing is
   read or decoded, so this is what the GPU can do.
2. earthsnap: the training loop of `earthsnap.model.training` over the RecordIO loader of demo photos preprocessed at
   --size px (read, decoded and augmented in --workers processes, 0: `default_workers`, pinned memory, prefetching).
Images/s of each over its second pass (the first warms up cuDNN's autotuning and the loader's workers), the ratio
earthsnap / synthetic (target: at least 0.85 on a 16-core machine with one GPU), and the share of the time the loop
waited for data, as the training report measures it. Results go to bench/results/gpu_training.json.

Without a GPU it says so and measures nothing (exit 0); --smoke runs both loops on the CPU with a small network and
tiny inputs, so the code cannot rot where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from earthsnap.data.records import demo_records, read_classes
from earthsnap.model.hyperparameters import Hyperparameters
from earthsnap.model.inference import InputView
from earthsnap.model.loader import Augment, RecordDataset, default_workers, loader
from earthsnap.model.training import Precision, _optimise, _train_epoch, initial_model, make_optimizer, schedule

HERE = Path(__file__).resolve().parent


def synthetic(model, opt, precision: Precision, dev, batch: int, size: int, classes: int, steps: int) -> float:
    "Images/s of `steps` steps on one batch of random tensors already on `dev` (after as many steps of warm-up)."
    memory = torch.channels_last if precision.channels_last else torch.contiguous_format
    x = torch.rand(batch, 3, size, size, device=dev).contiguous(memory_format=memory)
    y = torch.randint(0, classes, (batch,), device=dev)
    scaler, loss_fn = precision.scaler(dev) if precision.scaled else None, nn.CrossEntropyLoss()
    model.train()
    for _pass in range(2):  # a warm-up pass, then the timed one
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            with precision.autocast(dev):
                out = model(x)
            loss = loss_fn(out.float(), y)
            _optimise(loss, opt, scaler)
            float(loss.detach())  # as the training loop reads its loss back every step
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def earthsnap_loop(model, opt, precision: Precision, dev, hp: Hyperparameters, ds, workers: int) -> tuple[float, float]:
    "Images/s of the training loop's second epoch over `ds`, and the share of it spent waiting for data."
    batches = loader(ds, hp.batch_size, shuffle=True, workers=workers, seed=0)
    steps = math.ceil(len(ds) / hp.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(hp, steps))
    scaler, loss_fn = precision.scaler(dev) if precision.scaled else None, nn.CrossEntropyLoss()
    for epoch in (1, 2):
        t0 = time.perf_counter()
        *_, wait = _train_epoch(model, batches, opt, sched, loss_fn, dev, epoch, hp, steps, False, precision, scaler)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return len(ds) / (time.perf_counter() - t0), wait


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=4096, help="demo photos in the training split, about")
    ap.add_argument("--workers", type=int, default=0, help="loader processes; 0: default_workers()")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on the CPU with a small network and tiny inputs, results not kept (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.arch, args.size, args.batch, args.images, args.workers = "resnet", 32, 16, 48, 1
    elif not torch.cuda.is_available():
        print("no GPU here (torch.cuda.is_available() is False): nothing to measure; --smoke runs this on the CPU")
        return
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    precision = Precision.for_device(dev)
    workers = args.workers or default_workers()
    tmp = Path(tempfile.mkdtemp())
    per_class = max(3, args.images // (4 * 4) * 10 // 8)  # 4 groups x 4 species; the train split is about 80%
    print(f"preprocessing {per_class * 16} demo photos at {args.size} px ...", flush=True)
    records = demo_records(tmp, groups=4, species=4, images=per_class, size=args.size)
    classes, size = read_classes(records)
    hp = Hyperparameters(arch=args.arch, batch_size=args.batch, epochs=2, width=8 if args.smoke else 32)
    ds = RecordDataset(records, "train", InputView(size), augment=Augment(), seed=0)
    print(
        f"{args.arch} at {size} px, batch {args.batch}, {len(ds)} training images; device {dev.type} "
        f"({precision.words()}); loader workers {workers} of {os.cpu_count()} cores",
        flush=True,
    )
    memory = torch.channels_last if precision.channels_last else torch.contiguous_format
    speeds = {}
    for name in ("synthetic", "earthsnap"):
        torch.manual_seed(0)
        model, _ = initial_model(hp, len(classes), size)
        model.to(dev, memory_format=memory)
        opt = make_optimizer(hp, model)
        if name == "synthetic":
            steps = 5 if args.smoke else 50
            speeds[name] = synthetic(model, opt, precision, dev, args.batch, size, len(classes), steps)
        else:
            speeds[name], wait = earthsnap_loop(model, opt, precision, dev, hp, ds, workers)
        print(f"  {name:<9} {speeds[name]:8.1f} img/s", flush=True)
    ratio = speeds["earthsnap"] / speeds["synthetic"]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "arch": args.arch,
        "image_size": size,
        "batch": args.batch,
        "train_images": len(ds),
        "loader_workers": workers,
        "precision": precision.words(),
        "images_per_s": {k: round(v, 1) for k, v in speeds.items()},
        "earthsnap_over_synthetic": round(ratio, 3),
        "data_wait": round(wait, 4),
    }
    results = tmp if args.smoke else HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "gpu_training.json").write_text(json.dumps(result, indent=1))
    print(
        f"\nearthsnap's training step {speeds['earthsnap']:.1f} img/s against {speeds['synthetic']:.1f} img/s on "
        f"tensors already on the device: {ratio:.2f}x (target >= 0.85); waiting for data {wait:.1%} of the epoch"
    )


if __name__ == "__main__":
    main()
