"""Build earthsnap's documentation site (`make docs`) into _docs/site, from:

- the library's notebooks (nbs/), executed at build time as `nbdev_test` executes them (execnb's shell, in the
  notebook's folder, nbdev's skip flags), so the site shows outputs the repository does not store; a cell that fails
  fails the build, which makes this the notebooks' test run in `make test` too;
- the pipeline's step notebooks (pipeline/) with pipeline.py and its DAG, as the guide to the pipeline;
- the CLI reference, generated from the commands' own help (typer's click tree);
- the API reference, from each module's exported symbols (`__all__`) and their docstrings (Sphinx autodoc);
- docs/*.md, the pages written by hand (getting started).

Sphinx with MyST-NB and the PyData theme renders them (docs/conf.py). Quarto, nbdev's own route, cannot be installed
here: its PyPI package downloads the binary from GitHub at build time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PIPELINE, DOCS = ROOT / "nbs", ROOT / "pipeline", ROOT / "docs"
OUT = ROOT / "_docs"
SECTIONS = {  # the library's packages in the order of the layers, outside in (ARCHITECTURE.md)
    "": "earthsnap",
    "cli": "The command line",
    "console": "The console and the HTTP API",
    "project": "The project",
    "access": "Access",
    "sagemaker": "SageMaker",
    "monitor": "After release",
    "hierarchy": "Parent/child models",
    "operations": "Operations",
    "release": "Release",
    "model": "Models",
    "engine": "The engine",
    "data": "Data",
    "core": "Core",
}


# ---------------------------------------------------------------- executing the library's notebooks


def execute(path: str) -> tuple[str, bool, float, object]:
    "Run one notebook as nbdev_test does; returns (path, ok, seconds, the executed notebook or the error text)."
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor

    fn = Path(path)
    os.environ["IN_TEST"] = "1"
    flags = set(get_config().get("tst_flags", "").split())

    def skip(cell):
        if cell.cell_type != "code":
            return True
        if "nbdev_export" + "(" in cell.source:
            return True
        direc = getattr(cell, "directives_", {}) or {}
        if direc.get("eval:", [""])[0].lower() == "false":
            return True
        return bool(flags & direc.keys())

    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    start = time.time()
    shell = CaptureShell(fn)
    try:
        with working_directory(fn.parent):
            shell.run_all(nb, exc_stop=True, preproc=skip)
    except Exception:
        return path, False, time.time() - start, shell.prettytb(fname=fn)
    cells = [
        {
            "cell_type": c.cell_type,
            "id": c.get("id") or f"cell{i}",
            "source": c.source,
            "metadata": dict(c.get("metadata", {})),
            **(
                {"outputs": [dict(o) for o in c.get("outputs", [])], "execution_count": None}
                if c.cell_type == "code"
                else {}
            ),
        }
        for i, c in enumerate(nb.cells)
    ]
    return (
        path,
        True,
        time.time() - start,
        {
            "cells": _plain(cells),
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
    )


def _plain(x):
    "AttrDicts and lists as plain JSON values."
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items() if not k.endswith("_")}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# The notebooks that take longest (seconds on 2 cores, 3 at a time), started first so that the build does not end on
# one of them running alone (longest processing time first); the rest follow in name order.
LONGEST_FIRST = [
    "project/demo.ipynb",
    "model/router.ipynb",
    "engine/notebooks.ipynb",
    "model/tuning.ipynb",  # 53, 38, 33, 33
    "sagemaker/job.ipynb",
    "engine/executor.ipynb",
    "sagemaker/compiler.ipynb",  # 31, 30, 29
    "release/deployment.ipynb",
    "sagemaker/release.ipynb",
    "model/export.ipynb",  # 26, 26, 18
    "monitor/drift.ipynb",
    "release/serving.ipynb",
    "monitor/retrain.ipynb",
]  # 18, 17, 17


def execute_all(paths: list[Path], workers: int) -> dict[Path, dict]:
    """Every notebook executed, `workers` at a time, the longest first; exits with the failures' tracebacks when any
    failed.
    """
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    paths = sorted(paths, key=lambda p: (rank.get(p.relative_to(NBS).as_posix(), len(rank)), p))
    done, failed = {}, []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        import build_docs  # by module, not __main__: IPython's shell in a worker replaces that worker's __main__

        futures = [pool.submit(build_docs.execute, str(p)) for p in paths]
        for i, f in enumerate(as_completed(futures), 1):
            path, ok, secs, result = f.result()
            rel = Path(path).relative_to(ROOT)
            print(f"  [{i:>2}/{len(paths)}] {'ok    ' if ok else 'FAILED'} {rel} ({secs:.1f} s)", flush=True)
            if ok:
                done[Path(path)] = result
            else:
                failed.append((rel, result))
    for rel, tb in failed:
        print(f"\n{rel} failed:\n{tb}", file=sys.stderr)
    if failed:
        sys.exit(f"build_docs: {len(failed)} notebook(s) failed: {', '.join(str(r) for r, _ in failed)}")
    return done


# ---------------------------------------------------------------- the pages


def _title_cell(src: str) -> str | None:
    "nbdev's processor turns a notebook's `# Title` and `> description` into front matter: back to Markdown for MyST."
    import yaml

    if not src.startswith("---\n"):
        return None
    try:
        meta = yaml.safe_load(src.strip().strip("-"))
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict) or "title" not in meta:
        return None
    return f"# {meta['title']}" + (f"\n\n> {meta['description']}" if meta.get("description") else "")


def for_reading(nb: dict) -> dict:
    "A notebook as the site shows it: nbdev's directive lines and the default_exp cell gone, exported cells labelled."
    cells = []
    for c in nb["cells"]:
        src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        if c["cell_type"] in ("raw", "markdown") and (title := _title_cell(src)) is not None:
            cells.append({"cell_type": "markdown", "id": c.get("id", "title"), "metadata": {}, "source": title})
            continue
        lines = src.splitlines()
        directives = [line for line in lines if line.startswith("#|")]
        if any(line.split()[1:2] == ["default_exp"] for line in directives if len(line.split()) > 1) and len(
            lines
        ) == len(directives):
            continue
        if any("hide" in line for line in directives):
            continue
        body = "\n".join(line for line in lines if not line.startswith("#|")).strip("\n")
        if not body and c["cell_type"] == "code" and not c.get("outputs"):
            continue
        meta = dict(c.get("metadata", {}))
        if c["cell_type"] == "code" and any(line.replace(" ", "") == "#|export" for line in directives):
            meta["tags"] = sorted(set(meta.get("tags", [])) | {"exported"})
        cells.append({**c, "source": body, "metadata": meta})
    return {**nb, "cells": cells}


def title_of(nb: dict, fallback: str) -> str:
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(r"^# (.+)$", c["source"] if isinstance(c["source"], str) else "".join(c["source"]), re.M)
            if m:
                return m.group(1).strip()
    return fallback


def write_nb(nb: dict, path: Path):
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.from_dict(nb), path)


def library_pages(executed: dict[Path, dict], src: Path) -> list[str]:
    "The executed notebooks under library/, one toctree per package; returns the library's index entries."
    groups: dict[str, list[str]] = {}
    for path, nb in executed.items():
        rel = path.relative_to(NBS)
        if rel.as_posix() == "index.ipynb":
            continue  # the README's notebook: the site's own front page says it
        # the long walk through earthsnap: a page of its own, beside getting started
        if rel.as_posix() == "guide.ipynb":
            write_nb(for_reading(nb), src / "guide.ipynb")
            continue
        write_nb(for_reading(nb), src / "library" / rel)
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else "", []).append(rel.with_suffix("").as_posix())
    lines = [
        "# The library",
        "",
        "earthsnap is written as notebooks (nbdev): each page below is one module's notebook, its prose, its code",
        "and the examples beneath each function, **executed when this site was built**. The packages are listed",
        "from the outside in, as the layers of `ARCHITECTURE.md`: each imports only those below it.",
        "",
    ]
    for key in SECTIONS:
        if key not in groups:
            continue
        docs = sorted(groups[key], key=lambda d: (not d.endswith("/index"), d))
        lines += [f"## {SECTIONS[key]}", "", "```{toctree}", ":maxdepth: 1", "", *docs, "```", ""]
    (src / "library").mkdir(parents=True, exist_ok=True)
    (src / "library" / "index.md").write_text("\n".join(lines))
    return ["library/index"]


def pipeline_pages(src: Path):
    "The step notebooks as they are in pipeline/ (run by papermill, not here), with pipeline.py and its DAG."
    import nbformat

    out = src / "pipeline"
    out.mkdir(parents=True, exist_ok=True)
    from earthsnap.engine.definition import project_pipeline

    # the steps in the pipeline's order, then the tools
    order = [getattr(s, "notebook", "") for s in project_pipeline(ROOT).steps]
    steps = []
    for p in sorted(
        PIPELINE.glob("*.ipynb"), key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name)
    ):
        nb = nbformat.read(p, as_version=4)
        nb.metadata = {"kernelspec": nb.metadata.get("kernelspec", {})}
        nbformat.write(nb, out / p.name)
        steps.append(p.stem)
    dag = subprocess.run(
        [str(Path(sys.executable).with_name("earthsnap")), "dag", "--output", str(out / "dag.svg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    text = [
        "# The pipeline",
        "",
        "The EarthSnap pipeline is a folder of notebooks, `pipeline/`, and one Python file that wires them,",
        "`pipeline/pipeline.py`. Each step is a notebook with a `parameters` cell; papermill injects the run's values",
        "into it, and the executed copy is the step's report. "
        "`earthsnap init` writes these same files into a new project.",
        "",
    ]
    if dag.returncode:
        sys.exit(f"build_docs: earthsnap dag failed: {dag.stderr.strip()}")
    if (out / "dag.svg").exists():
        text += [
            "```{figure} dag.svg",
            ":alt: The steps of the pipeline and what each reads from the others",
            "",
            "The pipeline's steps, as `earthsnap dag` draws them.",
            "```",
            "",
        ]
    text += [
        "## The steps",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *steps,
        "```",
        "",
        "## `pipeline.py`",
        "",
        "```{literalinclude} pipeline.py",
        ":language: python",
        "```",
        "",
    ]
    shutil.copy(PIPELINE / "pipeline.py", out / "pipeline.py")
    (out / "index.md").write_text("\n".join(text))


def _md(text: str) -> str:
    "Text for a Markdown table cell: pipes escaped, `<placeholders>` shown as text, not read as HTML."
    return (text or "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ").strip()


def cli_page(src: Path):
    "Every command of `earthsnap`, from the click tree typer builds: usage, help, arguments and options."
    import typer.main

    from earthsnap.cli import app

    root = typer.main.get_command(app)
    lines = [
        "# The command line",
        "",
        "Every command of `earthsnap`, generated from the commands' own help when this site was built.",
        "`earthsnap COMMAND --help` prints the same in a terminal.",
        "",
    ]

    def walk(cmd, path: list[str], depth: int):  # typer's own click: duck-typed, not isinstance
        ctx = cmd.context_class(cmd, info_name=" ".join(path))
        if depth:
            lines.extend([f"{'#' * min(depth + 1, 4)} {' '.join(path)}", ""])
            lines.extend([_md(cmd.help or ""), ""])
            # typer writes {out} for OUT
            usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), " ".join(cmd.collect_usage_pieces(ctx)))
            lines.extend(["```text", " ".join(path) + " " + usage, "```", ""])
            params = [p for p in cmd.params if not getattr(p, "hidden", False)]
            if params:
                lines.extend(["| argument or option | help | default |", "| --- | --- | --- |"])
                for p in params:
                    names = (
                        ", ".join(f"`{n}`" for n in (p.opts + p.secondary_opts))
                        if p.param_type_name == "option"
                        else f"`{p.name.upper()}`"
                    )
                    default = (
                        ""
                        if p.default is None or p.default is False or p.default in ((), []) or callable(p.default)
                        else p.default
                    )
                    lines.append(
                        f"| {names} | {_md(getattr(p, 'help', '') or '')} "
                        f"| {_md(str(default)) if default != '' else ''} |"
                    )
                lines.append("")
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + [name], depth + 1)

    walk(root, ["earthsnap"], 0)
    (src / "cli.md").write_text("\n".join(lines))


def api_pages(src: Path):
    "One page per module that exports names, each name with its signature and docstring (autodoc)."
    import earthsnap

    out = src / "api"
    out.mkdir(parents=True, exist_ok=True)
    modules = ["earthsnap"] + sorted(
        m.name
        for m in pkgutil.walk_packages(earthsnap.__path__, "earthsnap.")
        if "project_template" not in m.name and not m.name.endswith("_modidx")
    )
    pages = []
    for name in modules:
        module = importlib.import_module(name)
        if not getattr(module, "__all__", None):
            continue
        doc = (module.__doc__ or "").strip().split("\n\n")[0]
        (out / f"{name}.md").write_text(f"# `{name}`\n\n{doc}\n\n```{{eval-rst}}\n.. automodule:: {name}\n```\n")
        pages.append(name)
    (out / "index.md").write_text(
        "\n".join(
            [
                "# API reference",
                "",
                "Every module's exported names (its `__all__`), with "
                "signatures and docstrings, generated when this site was built.",
                "Each module's page in [the library](../library/index.md) "
                "shows the same code with its prose and examples.",
                "",
                "```{toctree}",
                ":maxdepth: 1",
                "",
                *pages,
                "```",
                "",
            ]
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1, help="notebooks executed at once")
    ap.add_argument("--only", nargs="*", help="execute only these notebooks (paths under nbs/), for a quick look")
    ap.add_argument(
        "--no-execute", action="store_true", help="reuse the notebooks the last build executed (_docs/executed)"
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    started = time.time()
    paths = sorted(NBS.rglob("*.ipynb")) if not args.only else [NBS / p for p in args.only]
    paths = [p for p in paths if ".ipynb_checkpoints" not in p.parts]
    kept = OUT / "executed"
    if args.no_execute:  # the last build's executed notebooks, for working on the site's pages and looks
        import json

        executed = {NBS / p.relative_to(kept): json.loads(p.read_text()) for p in sorted(kept.rglob("*.ipynb"))}
        assert executed, f"nothing executed is kept in {kept}: build once without --no-execute"
    else:
        print(f"build_docs: executing {len(paths)} notebooks of nbs/ ({args.workers} at a time)", flush=True)
        executed = execute_all(paths, args.workers)
        shutil.rmtree(kept, ignore_errors=True)
        for path, nb in executed.items():
            write_nb(nb, kept / path.relative_to(NBS))
    print(f"build_docs: notebooks executed in {time.time() - started:.0f} s; writing the pages", flush=True)
    src = OUT / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for page in DOCS.glob("*.md"):
        shutil.copy(page, src / page.name)
    shutil.copytree(NBS / "images", src / "images", dirs_exist_ok=True)  # the guide's pictures
    library_pages(executed, src)
    pipeline_pages(src)
    cli_page(src)
    api_pages(src)
    site = OUT / "site"
    shutil.rmtree(site, ignore_errors=True)
    from sphinx.cmd.build import build_main

    (OUT / "warnings.log").unlink(missing_ok=True)
    # -W: a warning fails the build (a docstring that docutils misreads leaves a broken link on its API page)
    rc = build_main(
        [
            "-b",
            "html",
            "-q",
            "-W",
            "--keep-going",
            "-j",
            str(args.workers),
            "-c",
            str(DOCS),
            "-w",
            str(OUT / "warnings.log"),
            str(src),
            str(site),
        ]
    )
    if rc:
        print((OUT / "warnings.log").read_text()[-5000:], file=sys.stderr)
        return rc
    warnings = [
        line for line in (OUT / "warnings.log").read_text().splitlines() if "WARNING" in line or "ERROR" in line
    ]
    print(
        f"build_docs: {site}/index.html in {time.time() - started:.0f} "
        f"s ({len(warnings)} Sphinx warnings, in {OUT / 'warnings.log'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
