"""Benchmark: a local endpoint under N concurrent clients against raw ONNX Runtime in one process, and with capture on
against off, in one run.

    .venv/bin/python bench/endpoint.py [--clients 32] [--requests 2000] [--repeats 3] [--model DIR_OR_TARBALL]

The model is the default architecture (ResNet, width 32, 64 px, 16 classes) trained for one epoch on a demo
set (throughput does not depend on the weights), or --model. The images are JPEGs of its test split, sent
round-robin. Each round measures, on the same images and the same model:

- raw ONNX Runtime: `OnnxModel.predict([jpeg], top_k=5)` in a loop in this process: decode, prepare, run,
  top-5; the same work an endpoint does for one request, with nothing of HTTP (the baseline);
- raw ONNX Runtime in batches of --clients images (`OnnxModel.probabilities` on a stacked batch, decoding
  included): the most this model gives on this machine, reported as a ceiling, not the target's baseline;
- the endpoint: a real server process (`earthsnap.release.endpoints`, uvicorn + Starlette + ONNX Runtime) on
  127.0.0.1, and --clients concurrent clients, each on its own keep-alive connection (asyncio, in this
  process), sending --requests requests in all as `image/jpeg` POSTs to /invocations.

- the same endpoint with capture on (`earthsnap.release.capture`, every request kept: a row with its embedding,
  and the image by its sha256): a second server process, loaded in turn with the first. Every request body is a
  different file (the round's JPEG with 16 bytes of its own after the image's end, which decoders ignore), so each
  captured request also writes its image, as fresh traffic does.

The endpoint runs requests that arrive together as one batch (see `earthsnap.release.serving`); the target compares it
with one-at-a-time calls, which is the work a request asks for, and the ceiling shows what is left. Reported:
requests/s, p50/p95/p99 latency per request (per batch for the ceiling), errors (anything but a 200 with 5 predictions),
median over --repeats alternating rounds, and throughput as a ratio of raw ONNX Runtime's (target >= 70%, with 0 errors
at 32 clients), and capture on as a ratio of capture off (target >= 95%, 0 errors, every request captured). Results go
to bench/results/endpoint.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from earthsnap.data.records import demo_records, split_images
from earthsnap.model.inference import open_model
from earthsnap.release.capture import CaptureStore
from earthsnap.release.endpoints import Endpoints, ping

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(tmp: Path, small: bool = False) -> tuple[Path, list[bytes]]:
    """The default architecture, one epoch on a 16-class demo set at 64 px (`small`: a narrow net on 6 classes at 32 px;
    the benchmark asks for the top 5), as model.tar.gz; and its test JPEGs.
    """
    from earthsnap.model.export import save_model, write_tarball
    from earthsnap.model.hyperparameters import Hyperparameters
    from earthsnap.model.training import train

    records = demo_records(
        tmp, groups=2 if small else 4, species=3 if small else 4, images=10 if small else 40, size=32 if small else 64
    )
    hp = Hyperparameters(epochs=1, width=8) if small else Hyperparameters(epochs=1)
    trained = save_model(train(records, hp, progress=False, log=lambda _: None), tmp / "model")
    return write_tarball(trained, tmp / "model.tar.gz"), [im for *_, im in split_images(records, "test")]


def raw_ort(model, images: list[bytes], n: int) -> dict:
    "Sequential in-process predictions: requests/s and per-request latency."
    seconds, t0 = [], time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        out = model.predict([images[i % len(images)]], 5)
        seconds.append(time.perf_counter() - s)
        assert len(out[0]) == 5
    return summary(n, time.perf_counter() - t0, seconds, 0)


def raw_ort_batched(model, images: list[bytes], n: int, batch: int) -> dict:
    "In-process predictions in batches of `batch` (decoding included): requests/s."
    seconds, t0, done = [], time.perf_counter(), 0
    while done < n:
        s = time.perf_counter()
        x = model.inputs([images[(done + j) % len(images)] for j in range(batch)])
        model.probabilities(x)
        seconds.append(time.perf_counter() - s)
        done += batch
    return summary(done, time.perf_counter() - t0, seconds, 0)


async def client(port: int, images: list[bytes], todo: list[int], seconds: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while todo:
            i = todo.pop()
            body = images[i % len(images)]  # a round's own bodies: one per request
            head = (
                f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            s = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            data = await reader.readexactly(length)
            seconds.append(time.perf_counter() - s)
            if b" 200 " not in status_line or len(json.loads(data)["predictions"]) != 5:
                errors.append(f"{status_line.decode().strip()} {data[:100]!r}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        writer.close()


async def load(port: int, images: list[bytes], n: int, clients: int) -> dict:
    todo, seconds, errors = list(range(n)), [], []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, images, todo, seconds, errors) for _ in range(clients)))
    return summary(len(seconds), time.perf_counter() - t0, seconds, len(errors) + len(todo), errors[:3])


def summary(n: int, elapsed: float, seconds: list[float], errors: int, examples: list[str] = ()) -> dict:
    ms = np.array(seconds) * 1000
    return {
        "requests": n,
        "requests_per_s": n / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
        **({"error_examples": list(examples)} if examples else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--model", type=Path, default=None, help="A model directory or model.tar.gz; default: train a small one."
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.clients, args.requests, args.repeats = 2, 20, 1
    tmp = Path(tempfile.mkdtemp(prefix="earthsnap-bench-"))
    if args.model:
        artifact, images = (
            args.model,
            [im for *_, im in split_images(demo_records(tmp, groups=4, species=4, images=40, size=64), "test")],
        )
    else:
        print("training a model for the benchmark (1 epoch) ...", flush=True)
        artifact, images = make_model(tmp, small=args.smoke)
    model = open_model(artifact)
    print(
        f"model {artifact}: {len(model.classes)} classes, {model.input_size} px; {len(images)} test images; "
        f"{args.clients} clients, {args.requests} requests a round, {args.repeats} rounds; {os.cpu_count()} cores",
        flush=True,
    )
    eps, capturing = Endpoints(tmp / "endpoints"), Endpoints(tmp / "endpoints", capture=tmp / "capture")
    ep, cap = eps.start("bench", free_port()), capturing.start("captured", free_port())

    def bodies(round_: int, n: int) -> list[bytes]:  # every request a different file, the same for both endpoints
        return [images[i % len(images)] + struct.pack("<QQ", round_, i) for i in range(n)]

    try:
        eps.deploy("bench", artifact, "bench/1")
        capturing.deploy("captured", artifact, "bench/1")
        warm = 10 if args.smoke else 200
        # warm-up, not counted
        for port in (ep.port, cap.port):
            asyncio.run(load(port, bodies(0, warm), warm, args.clients))
        raw_ort(model, images, warm)
        rounds = {"raw_ort": [], "endpoint": [], "raw_ort_batched": [], "endpoint_capture": []}
        for r in range(args.repeats):
            rounds["raw_ort"].append(raw_ort(model, images, args.requests))
            rounds["raw_ort_batched"].append(raw_ort_batched(model, images, args.requests, args.clients))
            sent = bodies(r + 1, args.requests)
            order = [("endpoint", ep.port), ("endpoint_capture", cap.port)]
            # alternating, so neither always runs on a warmer machine
            for name, port in order if r % 2 == 0 else order[::-1]:
                rounds[name].append(asyncio.run(load(port, sent, args.requests, args.clients)))
            print(
                f"round {r + 1}: raw ORT {rounds['raw_ort'][-1]['requests_per_s']:.0f} req/s, "
                f"endpoint {rounds['endpoint'][-1]['requests_per_s']:.0f} req/s, with "
                f"capture {rounds['endpoint_capture'][-1]['requests_per_s']:.0f} req/s, "
                f"errors {rounds['endpoint'][-1]['errors']} + {rounds['endpoint_capture'][-1]['errors']}",
                flush=True,
            )
        store = CaptureStore(tmp / "capture", "captured")
        want = warm + args.requests * args.repeats
        deadline = time.monotonic() + 60
        while store.count() < want and time.monotonic() < deadline:
            time.sleep(0.1)
        capture_status = ping(cap.url)[1]["capture"]
        captured = {
            "rows": store.count(),
            "expected": want,
            "dropped": capture_status["dropped"],
            "errors": capture_status["errors"],
            "disk_mb": round(store.used_bytes() / 2**20, 2),
        }
    finally:
        eps.stop("bench")
        capturing.stop("captured")
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")}
        for k, v in rounds.items()
    }
    errors = sum(r["errors"] for r in rounds["endpoint"])
    capture_errors = sum(r["errors"] for r in rounds["endpoint_capture"])
    capture_ratio = med["endpoint_capture"]["requests_per_s"] / med["endpoint"]["requests_per_s"]
    ratio = med["endpoint"]["requests_per_s"] / med["raw_ort"]["requests_per_s"]
    ceiling = med["endpoint"]["requests_per_s"] / med["raw_ort_batched"]["requests_per_s"]
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "clients": args.clients,
        "requests_per_round": args.requests,
        "repeats": args.repeats,
        "model": {"classes": len(model.classes), "input_size": model.input_size},
        "median": med,
        "rounds": rounds,
        "endpoint_errors": errors,
        "throughput_ratio": round(ratio, 4),
        "capture": {**captured, "endpoint_errors": capture_errors, "throughput_ratio": round(capture_ratio, 4)},
        "ratio_to_batched_ceiling": round(ceiling, 4),
    }
    results = tmp if args.smoke else HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "endpoint.json").write_text(json.dumps(result, indent=2))
    e, r = med["endpoint"], med["raw_ort"]
    print(
        "\n"
        f"raw ONNX Runtime (1 process, sequential): {r['requests_per_s']:.0f} req/s, "
        f"p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
    )
    print(
        f"endpoint ({args.clients} concurrent clients):       {e['requests_per_s']:.0f} req/s, "
        f"p50 {e['p50_ms']:.2f} ms, p95 {e['p95_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms, errors {errors}"
    )
    print(
        f"raw ONNX Runtime, batches of {args.clients} (ceiling): {med['raw_ort_batched']['requests_per_s']:.0f} req/s"
    )
    c = med["endpoint_capture"]
    print(
        f"endpoint with capture on:               {c['requests_per_s']:.0f} req/s, p50 {c['p50_ms']:.2f} ms, "
        f"p95 {c['p95_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms, errors {capture_errors}; captured {captured['rows']} "
        f"of {captured['expected']} requests ({captured['dropped']} dropped, {captured['disk_mb']} MiB)"
    )
    print(f"capture on = {capture_ratio:.1%} of capture off (target >= 95%, 0 errors)")
    print(
        f"endpoint throughput = {ratio:.1%} of raw ONNX Runtime (target "
        f">= 70%, 0 errors); {ceiling:.1%} of the batched ceiling"
    )


if __name__ == "__main__":
    main()
