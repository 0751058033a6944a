"""The console in a real browser (Debian's chromium driven by Playwright) against a real `earthsnap console` on
127.0.0.1: an approver reviews the version a run registered beside the one prod serves and approves it (a rejection
without a reason is refused), the stage checks appear as they complete; an operator promotes and rolls back; a viewer
sees no approve button and a forged POST gets 403; a POST without the CSRF token is refused; a run started from the form
shows its live DAG; hostile labels render as text; `../` is refused; failed sign-ins are limited; a console approval
racing the CLI's has one winner. Screenshots of the main pages go to tests/artifacts/console/."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import BIN, ROOT, clean_env, demo_project, free_port, login_token, stop_endpoints, wait_until_serving

SHOTS = ROOT / "tests" / "artifacts" / "console"
PASSWORDS = {
    "ana": "ana approves models",
    "oscar": "oscar operates prod",
    "vic": "vic only looks",
    "adele": "adele administers",
    "rita": "rita forgets passwords",
}
ROLES = {"ana": "approver", "oscar": "operator", "vic": "viewer", "adele": "admin", "rita": "viewer"}
HOSTILE = "<script>window.pwned=1</script><b>x"


def trained(tmp: Path, records: Path, name: str, epochs: int) -> tuple[Path, Path]:
    "A small model trained on `records`: its archive, and its evaluation report's folder."
    from earthsnap.model.evaluation import evaluate
    from earthsnap.model.export import save_model, write_tarball
    from earthsnap.model.hyperparameters import Hyperparameters
    from earthsnap.model.training import train

    model = save_model(
        train(records, Hyperparameters(width=8, epochs=epochs, batch_size=16), progress=False, log=lambda _: None),
        tmp / name,
    )
    evaluate(model, records, tmp / f"{name}-evaluation", progress=False)
    return write_tarball(model, tmp / f"{name}.tar.gz"), tmp / f"{name}-evaluation"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A project with a data-QA run (its dataset has rejected photos), flora/1 live in prod, flora/2 pending approval,
    five users, and `earthsnap console` serving it; everything it started is stopped by pid afterwards."""
    from earthsnap.access.users import UserStore
    from earthsnap.core.config import load_config
    from earthsnap.data.records import demo_records
    from earthsnap.release.deployment import Deployer
    from earthsnap.release.registry import SqliteRegistry

    tmp = tmp_path_factory.mktemp("console")
    project = demo_project(tmp / "p", faults=True)
    (project / "earthsnap.yaml").write_text(
        f"deploy_group: flora\nstage_port: {free_port()}\nprod_port: {free_port()}\n"
        "stage_min_accuracy: 0.0\nstage_p95_ms: 1000\n"
    )
    qa = subprocess.run(
        [str(BIN / "earthsnap"), "run", "--to", "data_qa"],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert qa.returncode == 0, qa.stderr
    records = demo_records(tmp / "records")
    cfg = load_config(project, env={})
    reg = SqliteRegistry(cfg.registry)

    def lineage(ev):
        return {
            "inputs": {"records": str(records), "evaluation": str(ev)},
            "run": "earthsnap-20260101-000000-abcdef",
            "step": "register",
            "parameters": {"note": HOSTILE},
            "dataset": "demo@0123456789ab",
        }

    for name, epochs in (("one", 1), ("two", 3)):
        archive, ev = trained(tmp, records, name, epochs)
        reg.register(
            "flora",
            archive,
            json.loads((ev / "evaluation.json").read_text())["metrics"],
            lineage(ev),
            by="pipeline test",
        )
    reg.approve("flora/1", by="setup")
    # a router as `earthsnap hierarchy router` registers one: its comparison with the flat model in its lineage
    row = {"top5_accuracy": 0.99, "macro_f1": 0.9, "images": 40, "latency_ms_p95": 2.0, "images_per_s_batch32": 900.0}
    reg.register(
        "hierarchy",
        archive,
        {},
        {
            "kind": "router",
            "parent": "summed-flat",
            "flat": "hierarchy-flat/1",
            "choice": {"kept": "summed-flat", "why": f"kept the summed-flat parent: {HOSTILE}"},
            "comparison": {
                "router": {
                    **row,
                    "accuracy": 0.95,
                    "group_accuracy": 0.99,
                    "errors_in_group": 0.8,
                    "latency_ms_p50": 1.6,
                },
                "flat": {
                    **row,
                    "accuracy": 0.96,
                    "group_accuracy": 0.98,
                    "errors_in_group": 0.5,
                    "latency_ms_p50": 0.8,
                },
                "router, trained parent": {
                    **row,
                    "accuracy": 0.9,
                    "group_accuracy": 0.93,
                    "errors_in_group": 0.4,
                    "latency_ms_p50": 1.2,
                },
            },
        },
        by="earthsnap hierarchy router",
    )
    deployer = Deployer.from_config(cfg)
    deployer.run()
    deployer.promote("flora/1", by="setup")
    users = UserStore.from_config(cfg)
    for name, role in ROLES.items():
        users.add(name, role, PASSWORDS[name], by="test")
    port = free_port()
    # where Jupyter servers of this test would record themselves (see the reopen test)
    runtime = tmp / "jupyter-runtime"
    server = subprocess.Popen(
        [str(BIN / "earthsnap"), "console", "--port", str(port)],
        cwd=project,
        env=clean_env(JUPYTER_RUNTIME_DIR=str(runtime)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url + "/health", server, 60, "earthsnap console")
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"project": project, "url": url, "cfg": cfg, "registry": reg, "users": users, "runtime": runtime}
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    stop_endpoints(project)


def signed_in(browser, site, name: str, width: int = 1280):
    "A browser page signed in as `name`."
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(site["url"] + "/console")
    assert "/console/login" in page.url  # not signed in: sent to the sign-in page
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site["url"] + "/console")
    assert page.locator(".who").inner_text().startswith(name)
    return page


def session_of(page, site) -> tuple[requests.Session, str]:
    "A requests session carrying the browser page's cookie, and the page's CSRF token."
    s = requests.Session()
    for c in page.context.cookies():
        s.cookies.set(c["name"], c["value"], domain="127.0.0.1")
    return s, page.locator("input[name=csrf]").first.get_attribute("value")


def test_an_approver_reviews_rejects_without_reason_then_approves_and_watches_stage(browser, site):
    reg = site["registry"]
    page = signed_in(browser, site, "ana")
    page.screenshot(path=SHOTS / "overview.png", full_page=True)
    page.get_by_role("link", name="flora/2").first.click()
    page.wait_for_url("**/console/models/flora/2")
    assert "Beside prod (flora/1)" in page.locator("main").inner_text()
    assert page.locator("table").nth(1).locator("tbody tr").count() >= 2  # per class, beside prod
    assert page.locator("table.confusion").count() == 1
    # shown as text, never run
    assert HOSTILE in page.locator("main").text_content() and page.evaluate("window.pwned") is None
    page.get_by_role("button", name="Reject flora/2").click()
    assert "A rejection needs a reason" in page.locator("[role=alert]").inner_text()
    assert reg.get("flora/2").status == "PendingManualApproval"
    page.get_by_label("Note (optional)").fill("read the per-class table")
    page.get_by_role("button", name="Approve flora/2").click()
    page.wait_for_url("**/console/models/flora/2?done=approved")
    assert reg.get("flora/2").status == "Approved" and reg.history("flora/2")[-1]["by"] == "ana"
    # the stage checks appear as they complete (the fragment refreshes itself); the page ends at "passed"
    page.locator("#version-release .badge.s-passed").wait_for(timeout=120_000)
    text = page.locator("#version-release").inner_text()
    assert (
        "stage" in text and "ping" in text and "accuracy" in text and "malformed payloads" in text and "by ana" in text
    )
    page.screenshot(path=SHOTS / "version.png", full_page=True)
    phone = signed_in(browser, site, "ana", width=390)
    phone.goto(site["url"] + "/console/models/flora/2")
    # nothing sticks out sideways: tables scroll in their box
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=SHOTS / "version-phone.png", full_page=True)


def test_an_operator_promotes_then_rolls_back_with_a_reason(browser, site):
    from earthsnap.release.deployment import Deployer

    deployer = Deployer.from_config(site["cfg"])
    deadline = time.monotonic() + 180
    # approved by the test above
    while not any(d.ref == "flora/2" and d.status == "passed" for d in deployer.history("stage")):
        assert time.monotonic() < deadline, [d for d in deployer.history()]
        time.sleep(0.5)
    page = signed_in(browser, site, "oscar")
    page.goto(site["url"] + "/console/release")
    page.get_by_label("Promote to prod").select_option("flora/2")
    page.get_by_role("button", name="Promote").click()
    page.wait_for_url("**/console/release?done=promoted")
    assert deployer.live().ref == "flora/2" and deployer.live().by == "oscar"
    assert "serves flora/2" in page.locator(".endpoint").nth(1).inner_text()
    page.get_by_role("button", name="Roll back").click()
    assert "needs a reason" in page.locator("[role=alert]").inner_text() and deployer.live().ref == "flora/2"
    page.get_by_label(re.compile("Roll prod back")).fill("flora/2 mislabels ferns in the field")
    page.get_by_role("button", name="Roll back").click()
    page.wait_for_url("**/console/release?done=rolled_back")
    live = deployer.live()
    assert live.ref == "flora/1" and live.by == "oscar" and live.reason == "flora/2 mislabels ferns in the field"
    page.screenshot(path=SHOTS / "release.png", full_page=True)


def test_a_viewer_sees_no_decision_and_a_forged_post_changes_nothing(browser, site):
    reg = site["registry"]
    archive = Path(reg.get("flora/2").artifact)
    mv = reg.register("flora", archive, {}, {}, by="pipeline test")
    page = signed_in(browser, site, "vic")
    page.goto(f"{site['url']}/console/models/flora/{mv.version}")
    assert (
        page.get_by_role("button", name=re.compile("Approve")).count() == 0
        and "waits for an approver" in page.locator("main").inner_text()
    )
    s, csrf = session_of(page, site)
    r = s.post(f"{site['url']}/console/models/flora/{mv.version}/approve", data={"csrf": csrf})
    assert r.status_code == 403 and "vic is 'viewer'; this needs an approver's role" in html.unescape(r.text)
    r = s.post(f"{site['url']}/console/release/rollback", data={"csrf": csrf, "reason": "x"})
    assert r.status_code == 403
    # an approver's POST without the CSRF token (what another site's form would send) is refused too
    ana = signed_in(browser, site, "ana")
    s2, _ = session_of(ana, site)
    r = s2.post(f"{site['url']}/console/models/flora/{mv.version}/approve", data={"reason": "forged"})
    assert r.status_code == 403 and "CSRF token is missing or wrong" in html.unescape(r.text)
    assert reg.get(mv.ref).status == "PendingManualApproval" and len(reg.history(mv.ref)) == 1  # only its registration


def test_a_run_started_from_the_form_shows_its_live_dag(browser, site):
    page = signed_in(browser, site, "oscar")
    page.goto(site["url"] + "/console/runs/new")
    page.get_by_label(re.compile("^image_size")).fill("9999")  # out of range: the browser's own check stops it ...
    page.locator("input[name=to][value=data_qa]").check()
    page.get_by_role("button", name="Start the run").click()
    assert page.evaluate("document.querySelector('#p-image_size').validity.rangeOverflow")
    # ... and the server's, for a client that skips it
    page.evaluate("document.querySelector('form.card').noValidate = true")
    page.get_by_role("button", name="Start the run").click()
    assert (
        "image_size" in page.locator("[role=alert]").inner_text()
        and "9999" in page.locator("[role=alert]").inner_text()
    )
    page.get_by_label(re.compile("^image_size")).fill("64")
    page.get_by_label(re.compile("^min_side")).fill("24")
    page.get_by_role("button", name="Start the run").click()
    page.wait_for_url(re.compile(r".*/console/runs/earthsnap-.*\?done=started"))
    run_id = page.url.split("/console/runs/")[1].split("?")[0]
    # the flash, not the run's state
    assert page.locator("[role=status]").inner_text().endswith("Started. The DAG below follows it live.")
    page.locator("figure.dag svg").wait_for(timeout=60_000)  # the DAG appears once the run has recorded itself
    page.locator("#run-live .summary .badge.s-succeeded").wait_for(timeout=180_000)
    assert (
        "data_qa" in page.locator("figure.dag").inner_text()
        and "oscar" in page.locator("#run-live .summary").inner_text()
    )
    from earthsnap.engine.runs import RunStore

    rec = RunStore(site["cfg"].registry).run(run_id)
    assert rec["started_by"] == "oscar" and rec["parameters"]["min_side"] == 24
    page.locator("details.report summary").first.click()
    frame = page.frame_locator("details.report iframe").first
    frame.locator("body").wait_for()
    page.screenshot(path=SHOTS / "run.png", full_page=True)
    # a step reopened with this run's values: with no lab on the project, the page says where the copy is ...
    page.locator("form[action$='/steps/data_qa/open'] button").click()
    copy = f"scratch/{run_id}-data_qa.ipynb"
    assert (
        copy in page.locator("[role=status]").inner_text()
        and "earthsnap lab" in page.locator("[role=status]").inner_text()
    )
    params = json.loads((site["project"] / copy).read_text())["cells"]
    assert any("min_side = 24" in "".join(c["source"]) for c in params)  # the value this run gave it
    # ... and with one running (its runtime file, as Jupyter writes it), the button leads to the copy in it, without its
    # token
    site["runtime"].mkdir(exist_ok=True)
    lab = {
        "url": "http://127.0.0.1:8899/",
        "token": "lab-secret",
        "pid": os.getpid(),
        "root_dir": str(site["project"]),
        "port": 8899,
    }
    (site["runtime"] / f"jpserver-{os.getpid()}.json").write_text(json.dumps(lab))
    s, csrf = session_of(page, site)
    to_lab = s.post(
        f"{site['url']}/console/runs/{run_id}/steps/data_qa/open", data={"csrf": csrf}, allow_redirects=False
    )
    assert to_lab.status_code == 303 and to_lab.headers["location"] == f"http://127.0.0.1:8899/lab/tree/{copy}", (
        to_lab.headers
    )
    (site["runtime"] / f"jpserver-{os.getpid()}.json").unlink()
    gone = s.post(f"{site['url']}/console/runs/{run_id}/steps/nothing/open", data={"csrf": csrf}, allow_redirects=False)
    assert gone.status_code == 409 and "has no step 'nothing'" in html.unescape(gone.text)
    page.goto(site["url"] + "/console/runs?status=succeeded")
    assert run_id in page.locator("main").inner_text()
    page.screenshot(path=SHOTS / "runs.png", full_page=True)


def test_datasets_hierarchy_and_users_pages(browser, site):
    page = signed_in(browser, site, "adele")
    page.goto(site["url"] + "/console/datasets")
    page.get_by_role("link", name=re.compile("^[0-9a-f]{16}$")).first.click()
    text = page.locator("main").inner_text()
    assert "Rejected photos" in text and "truncated" in text and "not_an_image" in text and "too_many_pixels" in text
    page.locator("ul.thumbs").scroll_into_view_if_needed()
    # a thumbnail drawn
    # polled from here: wait_for_function evaluates its string in the page, which the console's policy forbids
    drawn = "Array.from(document.querySelectorAll('ul.thumbs img')).some(i => i.complete && i.naturalWidth > 0)"
    deadline = time.monotonic() + 30
    while not page.evaluate(drawn):
        assert time.monotonic() < deadline, "no thumbnail was drawn"
        page.wait_for_timeout(100)
    page.screenshot(path=SHOTS / "dataset.png", full_page=True)
    page.goto(site["url"] + "/console/hierarchy")
    text = page.locator("main").inner_text()
    assert "parent" in text and "The newest router, hierarchy/1" in text and "router, trained parent" in text
    assert "kept the summed-flat parent: " + HOSTILE in text and "2.0x" in text  # shown as text, p50 against flat
    page.screenshot(path=SHOTS / "hierarchy.png", full_page=True)
    page.get_by_role("link", name="hierarchy/1").first.click()
    text = page.locator("main").inner_text()
    assert "Router against the flat model" in text and "summed from the flat model" in text and "-0.010" in text
    page.screenshot(path=SHOTS / "router-version.png", full_page=True)
    phone = signed_in(browser, site, "adele", width=390)  # the wide table scrolls in its box, not the page
    phone.goto(site["url"] + "/console/hierarchy")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=SHOTS / "hierarchy-phone.png", full_page=True)
    page.goto(site["url"] + "/console/users")
    page.get_by_label("Name").fill("nina")
    page.locator("form[action='/console/users'] select[name=role]").select_option("approver")
    page.get_by_label(re.compile("^Password")).fill("nina's long password")
    page.get_by_role("button", name="Add").click()
    page.wait_for_url("**/console/users?done=user_added")
    assert site["users"].get("nina").role == "approver"
    page.screenshot(path=SHOTS / "users.png", full_page=True)
    vic = signed_in(browser, site, "vic")
    assert vic.goto(site["url"] + "/console/users").status == 403


def test_paths_outside_the_store_and_unknown_things_are_refused(site):
    _, token = site["users"].new_token("vic", "test")
    s = requests.Session()
    s.headers["authorization"] = f"Bearer {token}"
    from earthsnap.engine.runs import RunStore

    run_id = RunStore(site["cfg"].registry).runs(1)[0]["id"]
    for path in (
        f"/console/runs/{run_id}/steps/..%2F..%2Fregistry/report",
        f"/console/runs/{run_id}/steps/../../registry.db",
        "/console/runs/..%2F..%2Fetc%2Fpasswd",
        "/console/datasets/..%2F..%2F",
        "/console/datasets/demo/..%2F..%2Fregistry.db",
        "/console/datasets/demo/0123456789ab/rejected/99.jpg",
        "/static/../registry.db",
        "/static/..%2Fapi.py",  # the JSON API's source, beside static/
    ):
        r = s.get(site["url"] + path)  # a trailing slash is redirected first, then refused
        assert r.status_code == 404 and "sqlite" not in r.text.lower() and "root:" not in r.text, (
            path,
            r.status_code,
            r.text[:200],
        )
    report = s.get(f"{site['url']}/console/runs/{run_id}/steps/data_qa/report")
    assert report.status_code == 200 and "sandbox" in report.headers["content-security-policy"]


def test_signing_in_with_the_keyboard_alone_gives_a_strict_httponly_session(browser, site):
    page = browser.new_page()
    page.goto(site["url"] + "/console/models")
    page.keyboard.type("vic")  # the name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS["vic"])
    page.keyboard.press("Enter")
    page.wait_for_url(site["url"] + "/console/models")  # back where they were going
    cookie = next(c for c in page.context.cookies() if c["name"] == "earthsnap_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and page.evaluate("document.cookie") == ""
    page.keyboard.press("Tab")  # the first Tab reaches the skip link, then the navigation
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    s = requests.Session()
    r = s.post(
        site["url"] + "/console/login",
        data={"name": "vic", "password": PASSWORDS["vic"], "next": "https://evil.example/"}
        | {"login_token": login_token(s, site["url"])},
        allow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console"  # never sent to another site after signing in


def test_cancel_and_resume_refuse_a_run_that_ended(browser, site):
    from earthsnap.engine.runs import RunStore

    run_id = RunStore(site["cfg"].registry).runs(1, "succeeded")[0]["id"]
    page = signed_in(browser, site, "oscar")
    page.goto(f"{site['url']}/console/runs/{run_id}")
    assert (
        page.get_by_role("button", name="Cancel the run").count() == 0
        and page.get_by_role("button", name="Resume").count() == 0
    )
    s, csrf = session_of(page, site)
    for action, words in (
        ("cancel", "only a running run can be cancelled"),
        ("resume", "only a failed or interrupted run resumes"),
    ):
        r = s.post(f"{site['url']}/console/runs/{run_id}/{action}", data={"csrf": csrf})
        assert r.status_code == 409 and words in html.unescape(r.text)
    assert RunStore(site["cfg"].registry).run(run_id)["status"] == "succeeded"


def test_failed_sign_ins_are_limited(site):
    s = requests.Session()
    for _ in range(5):
        wrong = {"name": "rita", "password": "not it at all", "login_token": login_token(s, site["url"])}
        r = s.post(site["url"] + "/console/login", data=wrong)
        assert r.status_code == 401 and "do not match" in html.unescape(r.text)
    right = {"name": "rita", "password": PASSWORDS["rita"], "login_token": login_token(s, site["url"])}
    r = s.post(site["url"] + "/console/login", data=right, allow_redirects=False)
    assert (
        r.status_code == 429
        and "Too many failed sign-ins" in html.unescape(r.text)
        and "earthsnap_session" not in r.cookies
    )


def test_a_console_approval_racing_the_cli_has_one_winner(browser, site, earthsnap):
    reg = site["registry"]
    mv = reg.register("flora", Path(reg.get("flora/2").artifact), {}, {}, by="pipeline test")
    page = signed_in(browser, site, "ana")
    page.goto(f"{site['url']}/console/models/flora/{mv.version}")  # the page is open ...
    # ... when someone approves in a terminal
    cli = earthsnap("registry", "approve", mv.ref, "--by", "carl", "--no-deploy", cwd=site["project"])
    assert cli.returncode == 0, cli.stderr
    page.get_by_role("button", name=f"Approve {mv.ref}").click()
    assert "already Approved (by carl" in page.locator("[role=alert]").inner_text()
    assert [h["by"] for h in reg.history(mv.ref)] == ["pipeline test", "carl"]
    # both at once: exactly one of them wins
    mv = reg.register("flora", Path(reg.get("flora/2").artifact), {}, {}, by="pipeline test")
    s, csrf = session_of(page, site)
    out = {}
    t = threading.Thread(
        target=lambda: out.update(
            web=s.post(
                f"{site['url']}/console/models/flora/{mv.version}/approve", data={"csrf": csrf}, allow_redirects=False
            ).status_code
        )
    )
    t.start()
    cli = earthsnap("registry", "approve", mv.ref, "--by", "carl", "--no-deploy", cwd=site["project"])
    t.join()
    assert sorted([out["web"] == 303, cli.returncode == 0]) == [False, True], (out, cli.stdout, cli.stderr)
    assert len(reg.history(mv.ref)) == 2 and reg.get(mv.ref).status == "Approved"


def test_pages_and_reports_load_nothing_from_another_host(browser, site):
    """Every request a browser makes while a person goes through the console and opens a step's report goes to the
    console itself: the product works offline, and no page or report leaks a visit to a CDN. The content policies
    hold the pages (no script refused: each works under its policy)."""
    page = signed_in(browser, site, "adele")
    requested, refused = [], []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    from earthsnap.engine.runs import RunStore

    store = RunStore(site["cfg"].registry)
    # the fixture's data-QA run: its steps' reports were rendered as every run renders them
    run = next(r for r in (store.run(x["id"]) for x in store.runs(50)) if r["status"] == "succeeded")
    reports = [f"/console/runs/{run['id']}/steps/{s['name']}/report" for s in run["steps"] if s.get("notebook")]
    assert reports, run
    paths = [
        "/console",
        "/console/runs",
        f"/console/runs/{run['id']}",
        *reports,
        "/console/datasets",
        "/console/models",
        "/console/models/flora/2",
        "/console/release",
        "/console/monitor",
        "/console/review",
        "/console/users",
    ]
    for path in paths:
        assert page.goto(site["url"] + path).status == 200, path
        page.wait_for_load_state("networkidle")
    elsewhere = [u for u in requested if not u.startswith((site["url"], "data:", "about:", "blob:"))]
    assert not elsewhere, elsewhere
    assert not refused, refused
    print(f"\n{len(paths)} pages and reports, {len(requested)} requests, all to {site['url']}")
