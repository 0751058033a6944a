"""Benchmark: few-shot species, a pretrained zoo backbone fine-tuned against the same network from random weights.

    .venv/bin/python bench/transfer.py [--arch resnet18] [--size 64] [--pretrain-epochs 12] [--epochs 15] [--shots 10]
        [--freeze-epochs 0] [--layer-decay 1.0]

1. **Pretraining.** A network of the zoo (--arch) learns 16 demo species (4 groups x 4, seed 1, 60 photos each) at
   --size px from random weights, and its backbone is saved in the zoo's own format (`save_pretrained`): the
   stand-in for ImageNet weights, which cannot be downloaded here.
2. **Few-shot fine-tuning**, as a team adding a new plant group meets it: 16 *other* demo species (seed 2: other
   traits, other photos), about --shots training photos each, a few for validation and about 20 each for test. The
   network is fine-tuned from the checkpoint (earthsnap's training with the checkpoint folder as its start) and,
   as the baseline, trained from random weights for the same epochs: the same network on the same images, so the
   same CPU time (both measured). Reported: the test accuracy of both, the difference in points (target: at least
   15), CPU seconds, and images/s of fine-tuning.
3. **Serving cost.** The fine-tuned model's ONNX latency for one image at --size px (p50 over --calls calls of ONNX
   Runtime, as an endpoint runs it), against earthsnap's default network (resnet, width 32) at the same size, the
   baseline: the ratio (target: at most 1.5 for the smallest backbone the README documents).
4. **Parent/child.** The children of a hierarchy can each fine-tune their own copy of the backbone (what
   `earthsnap hierarchy run -p arch=... -p weights=...` does), or share one frozen backbone with a head each. Both
   are measured on --children groups of 4 other species each (seeds 20, 21, ...; the species of a group share
   traits, as a group's do): each child fine-tuned from the checkpoint, against the checkpoint's backbone frozen
   with a head trained for the same epochs (`freeze_epochs` = epochs). Reported: the children's test accuracy within
   their group, training CPU seconds, and the cost of answering one image with every child in torch (batch 1, one
   thread): a full network per child, against the backbone once and a head per child.

Results go to bench/results/transfer.json (not with --smoke).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from earthsnap.data.dataqa import run_qa
from earthsnap.data.demodata import generate_demo_data
from earthsnap.data.preprocess import PreprocessParams, preprocess
from earthsnap.model.export import save_model
from earthsnap.model.hyperparameters import Hyperparameters
from earthsnap.model.loader import RecordDataset, loader
from earthsnap.model.networks import build_model
from earthsnap.model.training import measure, train

HERE = Path(__file__).resolve().parent


def records(out: Path, groups: int, species: int, images: int, size: int, seed: int, train_share: float) -> Path:
    "Demo species drawn from `seed`, preprocessed at `size` px with `train_share` of each species for training."
    demo = generate_demo_data(out / "photos", groups=groups, species=species, images=images, seed=seed, progress=False)
    run_qa(str(demo.root), "demo", datasets=out / "datasets", out_dir=out / "qa", progress=False)
    val = min(0.15, (1 - train_share) / 4)
    params = PreprocessParams(size=size, train=train_share, val=val, test=1 - train_share - val, tune_fraction=1.0)
    preprocess(out / "qa", out / "records", params, datasets=out / "datasets", progress=False)
    return out / "records"


def timed_train(data: Path, hp: Hyperparameters, start: Path | None = None):
    "Train `hp` on `data` (from `start`, a checkpoint folder, if given): the result, CPU seconds, wall seconds."
    cpu, wall = time.process_time(), time.perf_counter()
    result = train(data, hp, progress=False, log=lambda _: None, init_weights=start)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def test_accuracy(result, data: Path) -> float:
    _, acc = measure(result.model, loader(RecordDataset(data, "test", result.view), 256), torch.device("cpu"))
    return acc


def p50_ms(model_dir: Path, size: int, calls: int) -> float:
    "Median latency of one image through the model directory's ONNX model in ONNX Runtime, in ms."
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # an endpoint worker answers one request on one thread
    session = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(10):
        session.run(["logits"], {"image": x})
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(["logits"], {"image": x})
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def torch_p50_ms(fn, x: torch.Tensor, calls: int) -> float:
    "Median milliseconds of `fn(x)` in torch, without gradients."
    with torch.no_grad():
        for _ in range(5):
            fn(x)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def children_compared(args, checkpoint: Path, ft_hp: Hyperparameters, tmp: Path, photos: int) -> dict:
    "Each child its own fine-tuned backbone, against one frozen backbone shared by all with a head each (see 4.)."
    own, shared, test_images = [], [], []
    cpu = {"own": 0.0, "shared": 0.0}
    for g in range(args.children):
        data = records(tmp / f"child-{g}", 1, 4, photos, args.size, seed=20 + g, train_share=0.3)
        tuned, tuned_cpu, _ = timed_train(data, ft_hp, checkpoint)
        frozen, frozen_cpu, _ = timed_train(
            data, Hyperparameters(**{**ft_hp.to_dict(), "freeze_epochs": args.epochs}), checkpoint
        )
        own.append(test_accuracy(tuned, data))
        shared.append(test_accuracy(frozen, data))
        test_images.append(len(RecordDataset(data, "test", args.size)))
        cpu["own"] += tuned_cpu
        cpu["shared"] += frozen_cpu
    weights = np.array(test_images) / sum(test_images)
    acc = {"own": float(np.dot(own, weights)), "shared": float(np.dot(shared, weights))}
    net = tuned.model.eval()
    torch.set_num_threads(1)
    x = torch.rand(1, 3, args.size, args.size)
    full, backbone = torch_p50_ms(net, x, args.calls), torch_p50_ms(net[:-1], x, args.calls)
    head = torch_p50_ms(net[-1], net[:-1](x).detach(), args.calls)
    cost = {"own": args.children * full, "shared": backbone + args.children * head}
    print(
        f"parent/child, {args.children} children of 4 species: test accuracy within the group, each child's own "
        f"fine-tuned backbone {acc['own']:.3f} ({cpu['own']:.0f} CPU-s), one frozen backbone shared with a head each "
        f"{acc['shared']:.3f} ({cpu['shared']:.0f} CPU-s); every child answering one image: {cost['own']:.2f} ms "
        f"against {cost['shared']:.2f} ms ({cost['own'] / cost['shared']:.1f}x)",
        flush=True,
    )
    return {
        "children": args.children,
        "test_accuracy": {k: round(v, 3) for k, v in acc.items()},
        "per_child": {"own": [round(a, 3) for a in own], "shared": [round(a, 3) for a in shared]},
        "test_photos": sum(test_images),
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "all_children_ms": {k: round(v, 3) for k, v in cost.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--arch", default="resnet18", help="A network of the zoo (earthsnap.model.zoo).")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pretrain-epochs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=15, help="Epochs of fine-tuning, and of the random-weights baseline.")
    ap.add_argument("--shots", type=int, default=10, help="Training photos of each new species (about).")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--freeze-epochs", type=int, default=0, help="Fine-tuning: epochs training the classifier alone.")
    ap.add_argument("--layer-decay", type=float, default=1.0, help="Fine-tuning: layer-wise learning-rate decay.")
    ap.add_argument("--children", type=int, default=4, help="Parent/child: groups of 4 other species, a child each.")
    ap.add_argument("--smoke", action="store_true", help="seconds on tiny inputs, results not kept (make test)")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.pretrain_epochs, args.epochs, args.shots, args.calls, args.children = 32, 1, 1, 4, 20, 2
    groups, species, photos = (2, 2, 12) if args.smoke else (4, 4, 60)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())

    print(f"pretraining {args.arch} on {groups * species} demo species at {args.size} px ...", flush=True)
    pre_data = records(tmp / "pre", groups, species, photos, args.size, seed=1, train_share=0.8)
    pre_hp = Hyperparameters(arch=args.arch, epochs=args.pretrain_epochs, patience=args.pretrain_epochs, batch_size=32)
    pre, pre_cpu, _ = timed_train(pre_data, pre_hp)
    checkpoint = tmp / "checkpoint"
    pre.model[1].body.save_pretrained(checkpoint)
    print(f"  validation accuracy {pre.metrics['validation:accuracy']:.3f} in {pre_cpu:.0f} CPU-s", flush=True)

    per_species = max(8, round(args.shots / 0.3))  # about 30 % of each species' photos train, the rest judge
    few = records(tmp / "few", groups, species, per_species, args.size, seed=2, train_share=0.3)
    ft_hp = Hyperparameters(
        arch=args.arch,
        epochs=args.epochs,
        patience=args.epochs,
        batch_size=16,
        lr=1e-3,
        freeze_epochs=args.freeze_epochs,
        layer_decay=args.layer_decay,
    )
    print(f"fine-tuning on {groups * species} other species, {args.epochs} epochs each way ...", flush=True)
    tuned, tuned_cpu, tuned_wall = timed_train(few, ft_hp, checkpoint)
    plain = {"lr": 3e-3, "freeze_epochs": 0, "layer_decay": 1.0}  # from random weights: nothing to keep
    scratch, scratch_cpu, _ = timed_train(few, Hyperparameters(**{**ft_hp.to_dict(), **plain}))
    n_train = tuned.metrics["train_images"]
    acc = {"pretrained": test_accuracy(tuned, few), "random": test_accuracy(scratch, few)}
    points = 100 * (acc["pretrained"] - acc["random"])
    n_test = len(RecordDataset(few, "test", args.size))
    print(
        f"  {n_train} training photos ({n_train / (groups * species):.1f} a species), {n_test} test photos",
        flush=True,
    )
    print(
        f"  test accuracy: pretrained {acc['pretrained']:.3f} ({tuned_cpu:.0f} CPU-s), random weights "
        f"{acc['random']:.3f} ({scratch_cpu:.0f} CPU-s): {points:+.1f} points above random (target >= 15)",
        flush=True,
    )
    speed = n_train * tuned.metrics["epochs_run"] / tuned_wall

    tuned_dir = save_model(tuned, tmp / "tuned")
    default = build_model(Hyperparameters(), len(tuned.classes))
    default_dir = save_model(type(tuned)(default.eval(), tuned.classes, args.size, Hyperparameters()), tmp / "default")
    lat = {"zoo": p50_ms(tuned_dir, args.size, args.calls), "default": p50_ms(default_dir, args.size, args.calls)}
    ratio = lat["zoo"] / lat["default"]
    print(
        f"ONNX p50 for one {args.size} px image: {args.arch} {lat['zoo']:.2f} ms, earthsnap's resnet "
        f"{lat['default']:.2f} ms (baseline): {ratio:.2f}x; fine-tuning {speed:.0f} images/s",
        flush=True,
    )
    hierarchy = children_compared(args, checkpoint, ft_hp, tmp, per_species)
    if args.smoke:
        return
    out = HERE / "results" / "transfer.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "arch": args.arch,
                "size": args.size,
                "freeze_epochs": args.freeze_epochs,
                "layer_decay": args.layer_decay,
                "species": groups * species,
                "training_photos": n_train,
                "test_photos": n_test,
                "test_accuracy": acc,
                "points_above_random": round(points, 1),
                "cpu_seconds": {"pretrained": round(tuned_cpu, 1), "random": round(scratch_cpu, 1)},
                "fine_tuning_images_per_s": round(speed, 1),
                "onnx_p50_ms": {k: round(v, 3) for k, v in lat.items()},
                "p50_ratio_to_default": round(ratio, 2),
                "parent_child": hierarchy,
                "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
            },
            indent=1,
        )
        + "\n"
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
