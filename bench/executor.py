"""Benchmark: the local executor's cost per step, a chain of steps, a cached re-run, and parallel steps, against
baselines measured in the same run.

    .venv/bin/python bench/executor.py [--repeats 5] [--chain 10] [--fanout 20] [--smoke]

1. Per-step overhead, on a trivial step notebook (a parameters cell and one cell that writes its output):
   - the same code called as a Python function;
   - a bare `papermill.execute_notebook` call (papermill's own kernel manager, no progress bar);
   - a one-step pipeline through the executor with the cache off (so the step really runs): the wall time of
     the whole `run_pipeline` call, run record, cache key, HTML rendering and atomic output included.
   Overhead per step = executor - papermill (medians over --repeats, alternating; target <= 0.5 s).
   Then a linear chain of --chain trivial steps (each reads the one before; cache off, the default workers) against
   --chain bare papermill calls in this process: kernels started ahead and HTML rendered off the step's path make
   the chain cheaper than the calls (target: at most 0.5x).
2. A fully cached re-run of the EarthSnap pipeline (pipeline/pipeline.py) on the default demo data (1,600 photos;
   --smoke: 32 photos and a model of seconds): the `run_pipeline` call in-process, and the `earthsnap run` command as a
   fresh process, after a first run that fills the cache (target <= 0.5 s as a new process).
3. A fan-out of --fanout independent trivial steps, cache off, on 1 worker and on 2 (target >= 1.9x). One worker
   keeps one kernel alive (none is started ahead); more keep up to 2 x workers - 1, the running ones included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill as pm

from earthsnap.core.config import load_config
from earthsnap.data.demodata import generate_demo_data
from earthsnap.engine.definition import NotebookStep, Parameter, Pipeline, load_pipeline
from earthsnap.engine.executor import run_pipeline

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PARAMS = 'n = 1\nout_dir = ""'
BODY = (
    "from pathlib import Path\n"
    "out = Path(out_dir) / 'result'; out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'value.txt').write_text(str(n * 2))"
)


def write_link(path: Path):
    "A trivial step that reads the output of the step before it (a path) and writes its own."
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell('previous = ""\nout_dir = ""', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(BODY.replace("str(n * 2)", "previous")),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path)


def trivial_step(n: int, out_dir: str):
    "The code of the trivial notebook, as a Python function."
    out = Path(out_dir) / "result"
    out.mkdir(parents=True, exist_ok=True)
    (out / "value.txt").write_text(str(n * 2))


def write_notebook(path: Path):
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(BODY)]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chain", type=int, default=10)
    ap.add_argument("--fanout", type=int, default=20)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="seconds on tiny inputs, results not kept: checks the benchmark still runs (make test)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.chain, args.fanout = 1, 2, 2
    # smoke: a small demo set and a model of seconds, so the first run that fills the cache is short
    quick = (
        {
            "image_size": 32,
            "epochs": 1,
            "tune_trials": 1,
            "tune_epochs": 1,
            "tune_parallel": 1,
            "tune_fraction": 1.0,
            "search_space": '{"width": [4, 8]}',
            "min_accuracy": 0.0,
        }
        if args.smoke
        else {}
    )
    demo_shape = dict(groups=2, species=2, images=8) if args.smoke else {}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        steps_dir = project / "steps"
        steps_dir.mkdir()
        write_notebook(steps_dir / "trivial.ipynb")
        cfg = load_config(project, env={})
        n = Parameter("n", int, 1)
        one = Pipeline(
            "one",
            [n],
            [NotebookStep("trivial", notebook="trivial.ipynb", inputs={"n": n}, output_names=("result",))],
            pipeline_dir=steps_dir,
        )

        # 1. per-step overhead, alternating so that drift on this noisy VM hits every configuration alike
        print("1. per-step cost of a trivial notebook step", file=sys.stderr)
        times = {"python function": [], "papermill.execute_notebook": [], "earthsnap executor (cache off)": []}
        for i in range(args.repeats):
            times["python function"].append(timed(lambda i=i: trivial_step(i, str(project / f"fn-{i}"))))
            times["papermill.execute_notebook"].append(
                timed(
                    lambda i=i: pm.execute_notebook(
                        str(steps_dir / "trivial.ipynb"),
                        str(project / f"pm-{i}.ipynb"),
                        parameters={"n": i, "out_dir": str(project / f"pm-{i}")},
                        progress_bar=False,
                        cwd=str(steps_dir),
                    )
                )
            )
            times["earthsnap executor (cache off)"].append(
                timed(lambda i=i: run_pipeline(one, {"n": i}, config=cfg, cache=False))
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        overhead = med["earthsnap executor (cache off)"] - med["papermill.execute_notebook"]

        print(f"1b. a chain of {args.chain} steps against {args.chain} bare papermill calls", file=sys.stderr)
        write_link(steps_dir / "link.ipynb")
        first_link = Parameter("first", str, "start")
        links = []
        for k in range(args.chain):
            links.append(
                NotebookStep(
                    f"c{k:02d}",
                    notebook="link.ipynb",
                    inputs={"previous": links[-1].outputs["result"] if links else first_link},
                    output_names=("result",),
                )
            )
        chain = Pipeline("chain", [first_link], links, pipeline_dir=steps_dir)
        chain_times = {"papermill.execute_notebook x N": [], "earthsnap executor, chain of N": []}
        for i in range(args.repeats):
            t = time.perf_counter()
            for k in range(args.chain):
                pm.execute_notebook(
                    str(steps_dir / "link.ipynb"),
                    str(project / f"pc-{i}-{k}.ipynb"),
                    parameters={
                        "previous": str(project / f"pc-{i}-{k - 1}" / "result") if k else "start",
                        "out_dir": str(project / f"pc-{i}-{k}"),
                    },
                    progress_bar=False,
                    cwd=str(steps_dir),
                )
            chain_times["papermill.execute_notebook x N"].append(time.perf_counter() - t)
            chain_times["earthsnap executor, chain of N"].append(
                timed(lambda i=i: run_pipeline(chain, {"first": f"start-{i}"}, config=cfg, cache=False))
            )
        chain_med = {k: statistics.median(v) for k, v in chain_times.items()}
        chain_ratio = chain_med["earthsnap executor, chain of N"] / chain_med["papermill.execute_notebook x N"]

        # 2. a fully cached re-run of the EarthSnap pipeline on the default demo data
        print("2. drawing the demo data and running the EarthSnap pipeline once to fill the cache", file=sys.stderr)
        es = project / "earthsnap-project"
        shutil.copytree(ROOT / "pipeline", es / "pipeline", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        es_cfg = load_config(es, env={})
        generate_demo_data(es / ".earthsnap" / "demo-data", faults=True, progress=False, **demo_shape)
        pipeline = load_pipeline(es / "pipeline" / "pipeline.py")
        notebook_steps = sum(isinstance(s, NotebookStep) for s in pipeline.steps)  # what a fully cached run reuses
        first = timed(lambda: run_pipeline(pipeline, quick, config=es_cfg))
        cached = [timed(lambda: run_pipeline(pipeline, quick, config=es_cfg)) for _ in range(args.repeats)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHSNAP_")}
        cli = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = subprocess.run(
                [str(Path(sys.executable).parent / "earthsnap"), "run", *(f"-p{k}={v}" for k, v in quick.items())],
                cwd=es,
                env=env,
                capture_output=True,
                text=True,
            )
            cli.append(time.perf_counter() - t)
            assert r.returncode == 0 and r.stdout.count("↺") == notebook_steps, r.stdout + r.stderr

        # 3. fan-out: independent steps on 1 and on 2 workers
        print(f"3. a fan-out of {args.fanout} independent steps on 1 and 2 workers", file=sys.stderr)
        fan = Pipeline(
            "fan",
            [n],
            [
                NotebookStep(f"s{k:02d}", notebook="trivial.ipynb", inputs={"n": n}, output_names=("result",))
                for k in range(args.fanout)
            ],
            pipeline_dir=steps_dir,
        )
        fan_runs = {1: [], 2: []}
        for _ in range(max(1, args.repeats // 2)):  # alternating, as above
            for w in (1, 2):
                fan_runs[w].append(timed(lambda w=w: run_pipeline(fan, config=cfg, workers=w, cache=False)))
        fan_times = {w: statistics.median(v) for w, v in fan_runs.items()}

    speedup = fan_times[1] / fan_times[2]
    print(f"\nlocal executor, {os.cpu_count()} cores, Python {platform.python_version()}; medians of {args.repeats}")
    print(f"{'one trivial step':<36}{'median s':>10}{'all runs':>40}")
    for k, v in times.items():
        print(f"{k:<36}{med[k]:>10.3f}{'  ' + ' '.join(f'{x:.3f}' for x in v):>40}")
    print(
        f"executor overhead per step beyond papermill: {overhead:+.3f} s (target <= 0.5 s); "
        f"papermill is {med['papermill.execute_notebook'] / med['python function']:.0f}x a function call"
    )
    print(f"\nchain of {args.chain} trivial steps (each reads the one before), default workers")
    for k, v in chain_times.items():
        print(f"{k:<36}{chain_med[k]:>10.3f}{'  ' + ' '.join(f'{x:.3f}' for x in v):>40}")
    print(
        f"the chain costs {chain_ratio:.2f}x the bare papermill calls (target <= 0.5x): "
        f"{chain_med['earthsnap executor, chain of N'] / args.chain:.3f} s a step"
    )
    print(
        "\n"
        f"EarthSnap pipeline, default demo data: first run {first:.1f} s; fully cached "
        f"re-run {statistics.median(cached):.2f} s in-process, "
        f"{statistics.median(cli):.2f} s as `earthsnap run` (a new process; target <= 0.5 s)"
    )
    print(
        f"\nfan-out of {args.fanout} trivial steps: 1 worker {fan_times[1]:.1f} s, 2 workers {fan_times[2]:.1f} s: "
        f"{speedup:.2f}x (target >= 1.9x)"
    )
    out = Path(tempfile.mkdtemp() if args.smoke else HERE / "results") / "executor.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "per_step_s": {
                    k: {"median": round(med[k], 4), "all": [round(x, 4) for x in v]} for k, v in times.items()
                },
                "overhead_s": round(overhead, 3),
                "chain": {
                    "steps": args.chain,
                    **{k: round(v, 3) for k, v in chain_med.items()},
                    "ratio": round(chain_ratio, 3),
                },
                "pipeline_first_run_s": round(first, 2),
                "cached_rerun_s": {
                    "in_process": round(statistics.median(cached), 3),
                    "cli": round(statistics.median(cli), 3),
                },
                "fanout": {
                    "steps": args.fanout,
                    "workers_1_s": round(fan_times[1], 2),
                    "workers_2_s": round(fan_times[2], 2),
                    "speedup": round(speedup, 2),
                },
                "cores": os.cpu_count(),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
