"""How learnable is the demo data? Train a small CNN on it and report held-out species and group accuracy.

    .venv/bin/python bench/demodata_learnability.py [--images 100] [--epochs 12] [--size 64] [--smoke]

Not a speed benchmark: it checks the claim that the demo photos are neither trivial (chance accuracy at the
start, so no single cue gives the answer away) nor hopeless (a small CNN learns them in minutes on 2 CPU
cores), and that groups are easier to tell apart than sibling species. The training code here is a probe;
the library's own models and training come with the pipeline's training step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from earthsnap.data.demodata import generate_demo_data


def load(root: Path, taxonomy: dict, size: int):
    species = [s for g in taxonomy for s in taxonomy[g]]
    group_of = np.array([gi for gi, g in enumerate(taxonomy) for _ in taxonomy[g]])
    xs, ys = [], []
    for si, s in enumerate(species):
        g = next(g for g in taxonomy if s in taxonomy[g])
        for p in sorted((root / g / s).glob("*.jpg")):
            xs.append(np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) / 255)
            ys.append(si)
    return torch.tensor(np.stack(xs)).permute(0, 3, 1, 2), torch.tensor(ys), group_of


def cnn(classes: int) -> nn.Module:
    def block(i, o):
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(),
            nn.Conv2d(o, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 32),
        block(32, 64),
        block(64, 128),
        block(128, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128, classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--images", type=int, default=100, help="photos per species (4 groups x 4 species)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--size", type=int, default=64, help="input size the photos are resized to")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.images, args.epochs, args.size = 3, 1, 16
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = generate_demo_data(Path(tempfile.mkdtemp()) / "d", images=args.images, progress=False)
    x, y, group_of = load(data.root, data.taxonomy, args.size)
    order = rng.permutation(len(y))
    train, test = order[: int(0.8 * len(y))], order[int(0.8 * len(y)) :]
    model = cnn(int(y.max()) + 1)
    steps = args.epochs * ((len(train) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    t0 = time.perf_counter()
    print(f"{len(train)} training and {len(test)} held-out photos, {int(y.max()) + 1} species, {args.size} px")
    for epoch in range(1, args.epochs + 1):
        model.train()
        shuffled = rng.permutation(train)
        for b in range(0, len(shuffled), 64):
            idx = shuffled[b : b + 64]
            xb = x[idx].clone()
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(3)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x[test[b : b + 256]]).argmax(1) for b in range(0, len(test), 256)]).numpy()
        truth = y[test].numpy()
        print(
            f"epoch {epoch:>2}  species accuracy {np.mean(pred == truth):.3f}  "
            f"group accuracy {np.mean(group_of[pred] == group_of[truth]):.3f}  {time.perf_counter() - t0:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
