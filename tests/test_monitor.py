"""After release, end to end on real processes: an endpoint server captures what it serves over HTTP, `earthsnap
monitor` runs the report notebook on that traffic and alerts on the shifted windows, `earthsnap alerts` lists them; and
capture stops at its disk budget without failing a request."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, ROOT, clean_env, free_port, wait_until_serving
from earthsnap.core.config import load_config
from earthsnap.data.demodata import generate_demo_data
from earthsnap.monitor.demo import demo_monitor
from earthsnap.release.capture import CaptureStore
from earthsnap.release.endpoints import Endpoints, ping

SHOTS = ROOT / "tests" / "artifacts" / "console"


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(
        f"{url}/invocations?top_k=1", data=body, method="POST", headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.loads(r.read())
        assert len(answer["predictions"]) == 1  # the client gets the top_k it asked for, whatever capture keeps
        return r.status


def photos(out: Path, n_per_species: int, shift: str = "") -> list[bytes]:
    d = generate_demo_data(
        out, groups=2, species=2, images=n_per_species, seed=0, first=2000, progress=False, shift=shift
    )
    found = sorted(d.root.rglob("*.jpg"))
    return [found[i].read_bytes() for i in np.random.default_rng(2).permutation(len(found))]


def serve(url: str, bodies: list[bytes]) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda b: post(url, b), bodies))


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """A project whose prod endpoint (a real server, stopped by pid afterwards) served one window of clean photos and
    two in other light over HTTP, captured them, and `earthsnap monitor` checked them (with its report)."""
    tmp = tmp_path_factory.mktemp("monitor")
    project = tmp / "project"
    # a model with its baseline, on 'prod'; no traffic yet
    demo_monitor(project, window=60, clean_windows=0, shifted_windows=0)
    shutil.copytree(ROOT / "pipeline", project / "pipeline")
    (project / "earthsnap.yaml").write_text(f"drift_window: 60\nstage_port: {free_port()}\nprod_port: {free_port()}\n")
    cfg = load_config(project, env={})
    eps = Endpoints.from_config(cfg)
    prod = eps.start("prod", cfg.prod_port)
    try:
        assert ping(prod.url)[1]["capture"]["state"] == "on"
        assert set(serve(prod.url, photos(tmp / "clean", 15))) == {200}  # one window of 60
        # two windows in other light
        assert set(serve(prod.url, photos(tmp / "shifted", 30, "lighting"))) == {200}
        store = CaptureStore(cfg.capture, "prod")
        for _ in range(600):  # the server counts a row once it is committed: then the store holds it too
            status = ping(prod.url)[1]["capture"]
            if status["rows"] >= 180:
                break
            time.sleep(0.1)
        assert (store.count(), status["rows"], status["dropped"], status["errors"]) == (180, 180, 0, 0), status
        monitor = subprocess.run(
            [str(BIN / "earthsnap"), "monitor"],
            cwd=project,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        yield {"project": project, "cfg": cfg, "monitor": monitor, "prod": prod}
    finally:
        eps.stop("prod")


@pytest.fixture(scope="module")
def console(watched):
    """`earthsnap console` over the watched project, with an operator, an approver and two viewers; stopped by its pid
    afterwards.
    """
    from earthsnap.access.users import UserStore

    users = UserStore.from_config(watched["cfg"])
    for name, role in (("oscar", "operator"), ("vic", "viewer"), ("ana", "approver"), ("val", "viewer")):
        users.add(name, role, f"{name} has a long password", by="test")
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "earthsnap"), "console", "--port", str(port)],
        cwd=watched["project"],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url + "/health", server, 60, "earthsnap console")
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def sign_in(browser, url: str, name: str, to: str, width: int = 1280):
    "A page of `name`, signed in to the console and at `to`."
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{url}/console/login?next={to}")
    page.get_by_label("Name").fill(name)
    page.get_by_label(re.compile("^Password")).fill(f"{name} has a long password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + to)
    return page


def test_a_served_stream_is_captured_monitored_and_alerted(watched, earthsnap):
    project, r = watched["project"], watched["monitor"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 window(s) of prod (species/1) checked, 2 drifting" in r.stdout, r.stdout
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("  ") and line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1-60", "61-120", "121-180"] and [row[-1] == "ok" for row in rows] == [
        True,
        False,
        False,
    ], r.stdout
    report = Path(next(line.split("report: ")[1] for line in r.stdout.splitlines() if line.startswith("report: ")))
    assert report.exists() and report.with_suffix(".ipynb").exists() and "DRIFT" in report.read_text()
    assert "next: earthsnap alerts" in r.stdout

    a = earthsnap("alerts", cwd=project)
    assert a.returncode == 0 and a.stdout.count("drifted:") == 2 and "requests 121-180 (60)" in a.stdout, a.stdout
    again = earthsnap("monitor", "--no-report", cwd=project)
    assert again.returncode == 0 and "No new full window" in again.stdout, again.stdout
    assert earthsnap("alerts", cwd=project).stdout.count("drifted:") == 2  # nothing alerted twice


def test_the_console_shows_capture_windows_and_alerts(console, browser):
    url = console
    for width, name in ((1280, "desktop"), (390, "phone")):
        page = sign_in(browser, url, "oscar", "/console/monitor", width)
        alerts = page.locator(".alert-list li")
        assert alerts.count() == 2 and all(
            "prod serving species/1" in t and "moved in" in t for t in alerts.all_inner_texts()
        )
        rows = page.locator("table.windows tbody tr")
        assert rows.count() == 3 and page.locator("tr.drifted").count() == 2
        assert "180 requests captured in all" in page.inner_text("main")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"monitor-{name}.png"), full_page=True)
        page.close()
    page = sign_in(browser, url, "oscar", "/console/monitor")
    page.get_by_role("button", name="Check now").click()
    page.wait_for_url(re.compile(r".*done=checked"))
    # nothing new, nothing twice
    assert "Checked" in page.inner_text(".flash") and page.locator("table.windows tbody tr").count() == 3
    report = page.locator("a[href*='/reports/']").first.get_attribute("href")
    assert page.request.get(url + report).text().count("DRIFT") >= 1
    page.close()
    viewer = sign_in(browser, url, "vic", "/console/monitor")
    assert (
        viewer.get_by_role("button", name="Check now").count() == 0
        and viewer.locator("table.windows tbody tr").count() == 3
    )
    viewer.close()


def test_reviewers_label_doubtful_photos_in_the_browser(watched, console, browser):
    """An approver reviews the queue the monitor filled: one key confirms, a pick relabels, N marks a photo as not in
    the taxonomy; the estimate follows the audit photos; a viewer sees but cannot decide, and a forged or stale decision
    changes nothing."""
    from earthsnap.monitor.review import ReviewQueue

    cfg, url = watched["cfg"], console
    q = ReviewQueue(cfg)
    assert q.counts()["pending"] > 3, q.counts()  # `earthsnap monitor` queued the doubtful and audited photos
    page = sign_in(browser, url, "ana", "/console/review")
    first = q.next()
    # the photo as prod received it
    assert page.locator("img.review-photo").evaluate("i => i.complete && i.naturalWidth") > 0
    assert page.locator("button.answer").count() == len(first.top)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-desktop.png"), full_page=True)
    with page.expect_navigation():
        page.keyboard.press("1")  # the model's first answer is right
    decided = q.get(first.id)
    assert (decided.decision, decided.label, decided.decided_by) == ("confirmed", first.predicted, "ana")
    second = q.next()
    other = next(label for label in q.classes(second.version) if label != second.predicted)
    page.locator("select[name=label]").select_option(other)
    with page.expect_navigation():
        page.locator("form.pick", has=page.locator("select")).get_by_role("button", name="Save").click()
    assert (q.get(second.id).decision, q.get(second.id).label) == ("relabelled", other)
    third = q.next()
    with page.expect_navigation():
        page.keyboard.press("n")
    assert "Saved" in page.inner_text(".flash")
    assert q.get(third.id).decision == "not_in_taxonomy"
    assert "#%d" % third.id in page.inner_text(".recent") and "ana" in page.inner_text(".recent")
    # deciding again what was decided is refused, and the decision stands
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(
        f"{url}/console/review/{first.id}", form={"csrf": token, "decision": "relabelled", "label": other}
    )
    assert r.status == 409 and "already decided" in r.text() and q.get(first.id).decision == "confirmed"
    # no CSRF token: forged
    r = page.request.post(f"{url}/console/review/{q.next().id}", form={"decision": "confirmed"})
    assert r.status == 403 and q.get(q.next().id).decision is None
    phone = sign_in(browser, url, "ana", "/console/review", width=390)
    phone.screenshot(path=str(SHOTS / "review-phone.png"), full_page=True)
    phone.close()
    page.close()
    viewer = sign_in(browser, url, "val", "/console/review")
    assert viewer.locator("button.answer").count() == 0 and "Reviewers" in viewer.inner_text("main")
    token = (
        viewer.locator("input[name=csrf]").first.get_attribute("value")
        if viewer.locator("input[name=csrf]").count()
        else ""
    )
    pending = q.next()
    r = viewer.request.post(f"{url}/console/review/{pending.id}", form={"csrf": token, "decision": "confirmed"})
    assert r.status == 403 and q.get(pending.id).decision is None
    viewer.close()


def test_monitor_refuses_before_a_kernel_starts(tmp_path, earthsnap):
    (tmp_path / "earthsnap.yaml").write_text("")
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline")
    r = earthsnap("monitor", cwd=tmp_path)
    assert r.returncode != 0 and "There is no endpoint 'prod'" in r.stdout + r.stderr and "Traceback" not in r.stderr, (
        r.stdout + r.stderr
    )
    (tmp_path / ".earthsnap" / "endpoints" / "prod").mkdir(parents=True)
    r = earthsnap("monitor", cwd=tmp_path)
    assert r.returncode != 0 and "Nothing is deployed to endpoint 'prod'" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / ".earthsnap" / "monitor").exists()  # no report was started
    r = earthsnap("monitor", "--window", "1", cwd=tmp_path)
    assert r.returncode != 0 and "at least 2 requests" in r.stdout + r.stderr


def test_capture_stops_at_its_budget_and_every_request_is_still_answered(tmp_path, monkeypatch):
    project = tmp_path / "project"
    demo_monitor(project, window=20, clean_windows=0, shifted_windows=0)
    (project / "earthsnap.yaml").write_text("capture_budget_mb: 0.02\n")  # about 20 KB: a few dozen small photos
    for k, v in clean_env().items():
        monkeypatch.setenv(k, v)
    cfg = load_config(project, env={})
    eps = Endpoints.from_config(cfg)
    prod = eps.start("prod", free_port())
    try:
        assert set(serve(prod.url, photos(tmp_path / "many", 40))) == {200}
        for _ in range(300):
            status = ping(prod.url)[1]["capture"]
            if status["state"] == "stopped":
                break
            time.sleep(0.1)
        assert status["state"] == "stopped" and "budget" in status["message"], status
        assert 0 < status["rows"] < 160 and status["used_bytes"] <= 0.02 * 2**20
        assert set(serve(prod.url, photos(tmp_path / "more", 2))) == {200}  # still answering
    finally:
        eps.stop("prod")
    with sqlite3.connect(Path(cfg.capture) / "images.sqlite") as db:
        photos_kept = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM images").fetchone()[0]
    assert 0 < photos_kept <= 0.02 * 2**20
