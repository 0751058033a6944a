"""The documentation site as a reader meets it, in a real browser (Debian's chromium driven by Playwright) against a
real HTTP server on 127.0.0.1: every page reachable from the front page loads with no console error, asks no other
host for anything (nothing may download at run time), and links only to pages and anchors that exist; a search for
"RecordIO" finds the RecordIO page; the library's examples show the outputs they had when the site was built.

The site is rendered from the notebooks tests/test_notebooks.py executed in this same pytest run, once every one of them
has run (on other workers, meanwhile): one execution of each notebook serves its test and its page. Run without those
tests, this module builds the site itself when it is missing (`make docs`). Screenshots go to tests/artifacts/docs/."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import deque
from urllib.parse import urldefrag, urlparse

import pytest
import requests

from conftest import ROOT, free_port, run_of, wait_until_serving

SITE = ROOT / "_docs" / "site"
SHOTS = ROOT / "tests" / "artifacts" / "docs"


pytestmark = pytest.mark.timeout(1500)  # the site waits for every notebook of this run to have executed


def wait_for_notebooks(names: list[str], run: str, timeout: float = 1200) -> None:
    "Wait until each notebook in `names` has a result from this pytest run; fail, naming them, if any failed."
    import test_notebooks

    deadline = time.monotonic() + timeout
    while True:
        results = {}
        for name in names:
            try:
                results[name] = json.loads(test_notebooks.result_of(name).read_text())
            except (OSError, ValueError):
                continue
        done = {n: r for n, r in results.items() if r.get("run") == run}
        if len(done) == len(names):
            break
        assert time.monotonic() < deadline, f"{len(names) - len(done)} notebooks have not run yet"
        time.sleep(1)
    failed = sorted(n for n, r in done.items() if not r["ok"])
    assert not failed, f"the site needs every notebook executed; these failed (see their tests): {failed}"


def build(*args: str) -> None:
    built = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_docs.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    print(built.stdout)  # which notebook took how long, shown when a test of this module fails
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]


@pytest.fixture(scope="module")
def site(request):
    executing = [
        i.callspec.params["name"] for i in request.session.items if i.nodeid.startswith("tests/test_notebooks.py")
    ]
    if executing:  # this run executes the library's notebooks: the pages are rendered from those executions
        wait_for_notebooks(executing, run_of(request.config))
        build("--no-execute")
    elif not (SITE / "index.html").exists():
        build()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(SITE)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url + "/index.html", server, 30, "the static server")
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield url
    server.terminate()
    server.wait(timeout=10)


def test_every_page_loads_cleanly_and_every_internal_link_resolves(browser, site):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, elsewhere, missing = [], [], []
    here = {"url": ""}
    page.on("console", lambda m: m.type == "error" and errors.append(f"{here['url']}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"{here['url']}: {e}"))
    page.on(
        "request",
        lambda r: (
            urlparse(r.url).scheme in ("http", "https")
            and urlparse(r.url).netloc != urlparse(site).netloc
            and elsewhere.append(f"{here['url']} asked {r.url}")
        ),
    )
    page.on(
        "response",
        lambda r: r.url.startswith(site) and r.status >= 400 and missing.append(f"{here['url']}: {r.status} {r.url}"),
    )
    ids: dict[str, set[str]] = {}
    anchors: list[tuple[str, str, str]] = []  # (from page, to page, fragment)
    queue, seen = deque([site + "/index.html"]), {site + "/index.html"}
    while queue:
        url = queue.popleft()
        here["url"] = url
        response = page.goto(url)
        assert response is not None and response.status == 200, f"{url}: {response.status if response else 'no answer'}"
        ids[url] = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
        for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
            target, fragment = urldefrag(href)
            if not target.startswith(site):
                continue
            if fragment:
                anchors.append((url, target, fragment))
            if target.endswith(".html") and target not in seen:
                seen.add(target)
                queue.append(target)
            elif not target.endswith(".html") and target not in seen:
                seen.add(target)
                if requests.get(target, timeout=10).status_code != 200:
                    missing.append(f"{url} links {target}")
    assert len(ids) > 100, f"only {len(ids)} pages reached from the front page"
    assert not missing, "\n".join(missing[:20])
    assert not errors, "\n".join(errors[:20])
    assert not elsewhere, "\n".join(elsewhere[:20])
    broken = [f"{src} -> {dst}#{frag}" for src, dst, frag in anchors if dst in ids and frag not in ids[dst]]
    assert not broken, "\n".join(broken[:20])
    for name in ("library/index", "library/data/recordio", "pipeline/index", "cli", "api/earthsnap.data.recordio"):
        assert f"{site}/{name}.html" in ids, f"{name} is not reachable from the front page"


def test_search_finds_the_recordio_page(browser, site):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site + "/index.html")
    page.keyboard.press("Control+k")  # the theme's search dialog, as a reader opens it
    box = page.locator("form.bd-search input[name=q]:visible").first
    box.fill("RecordIO")
    box.press("Enter")
    page.wait_for_url("**/search.html?q=RecordIO*")
    results = page.locator("#search-results ul.search li a")
    results.first.wait_for(timeout=30_000)
    hrefs = results.evaluate_all("els => els.map(a => a.href)")
    assert any("library/data/recordio.html" in h for h in hrefs), hrefs[:20]
    page.screenshot(path=SHOTS / "search.png", full_page=False)


def test_the_library_pages_show_their_examples_outputs(browser, site):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site + "/guide.html")
    # the demo photos' contact sheet, drawn when the site was built
    assert page.locator(".cell_output img").count() >= 1
    page.screenshot(path=SHOTS / "guide.png", full_page=False)
    page.goto(site + "/library/data/recordio.html")
    assert page.locator("h1").first.inner_text().strip().lower().startswith("recordio")
    assert page.locator("div.cell_output").count() >= 1, "the RecordIO page shows no executed output"
    assert "#| export" not in page.locator("main").inner_text()  # nbdev's directives are not shown to a reader
    page.screenshot(path=SHOTS / "recordio.png", full_page=False)
    page.goto(site + "/cli.html")
    assert (
        "earthsnap runs open" in page.locator("main").inner_text()
        and "earthsnap init" in page.locator("main").inner_text()
    )
    page.goto(site + "/api/earthsnap.engine.reopen.html")
    assert "open_step" in page.locator("main").inner_text()
