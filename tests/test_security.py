"""The console and its API probed as an attacker would, on a real `earthsnap console` on 127.0.0.1: the routes are
discovered from the app itself, so that a route added later without the same care fails here.

- Every route that serves an executed notebook's HTML (a step's report, a drift report) answers with the sandbox
  policy (`console.pages.REPORT_CSP`): a script in a notebook runs in an opaque origin and cannot act as the console.
- Every number a route takes, in its path or its query, is refused with 422 when SQLite could not hold it, never a 500.
- An endpoint name is a name: `/etc`, `../x` and the like are refused before anything is looked at.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import typing
from pathlib import Path

import nbformat
import pytest
import requests

from conftest import BIN, clean_env, free_port, wait_until_serving

TOKEN = "a-bootstrap-token-of-more-than-32-characters"
HUGE = "9" * 25  # past SQLite's 64-bit integers
PASSWORD = "ana signs in with this"


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """A project with one run whose data_qa step left a report, one drift report, and `earthsnap console` serving it
    with a bootstrap token (an admin's); stopped by its pid at the end."""
    from earthsnap.core.config import load_config
    from earthsnap.engine.runs import RunStore

    project = tmp_path_factory.mktemp("security")
    cfg = load_config(project, env={})
    store = RunStore(cfg.registry)
    run = store.create_run("earthsnap", {}, Path(cfg.runs) / "r1", started_by="test")
    executed = Path(cfg.runs) / "r1" / "data_qa.ipynb"
    executed.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), executed)
    executed.with_suffix(".html").write_text("<script>fetch('/console/users')</script>")
    store.start_step(run, "data_qa", notebook=str(executed))
    store.finish_step(run, "data_qa", "succeeded", outputs={})
    store.finish_run(run, "succeeded")
    from earthsnap.access.users import UserStore

    UserStore.from_config(cfg).add("ana", "approver", PASSWORD, by="test")
    drift = Path(cfg.store) / "monitor" / "prod" / "drift-1" / "monitor.html"
    drift.parent.mkdir(parents=True)
    drift.write_text("<script>fetch('/console/users')</script>")
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "earthsnap"), "console", "--port", str(port)],
        cwd=project,
        env=clean_env(EARTHSNAP_API_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url + "/health", server, 60, "earthsnap console")
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {TOKEN}"
        yield {"url": url, "admin": admin, "project": project, "run": run, "cfg": cfg}
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(30)


def routes(project: Path) -> list[tuple[str, object]]:
    """The app's routes as the server builds them (the console's pages and the JSON API): (full path, route), routers
    included into others flattened (FastAPI keeps those as `_IncludedRouter`s, resolved when first matched)."""
    from earthsnap.console.server import create_app
    from earthsnap.core.config import load_config

    def flat(rs, prefix=""):
        for r in rs:
            if hasattr(r, "original_router"):
                yield from flat(r.original_router.routes, prefix + r.include_context.prefix)
            elif getattr(r, "methods", None):
                yield prefix + r.path, r

    app = create_app(load_config(project, env={"EARTHSNAP_API_TOKEN": TOKEN}), deployer=False)
    found = list(flat(app.routes))
    assert len(found) > 40, [p for p, _ in found]  # the console's pages and the API: a change in FastAPI shows here
    return found


def test_every_report_route_serves_the_notebook_in_the_sandbox(console):
    from earthsnap.console.pages import REPORT_CSP

    examples = {  # a real report behind each route that serves one: a new one must be added here, and be sandboxed
        "/console/runs/{run_id}/steps/{step}/report": f"/console/runs/{console['run']}/steps/data_qa/report",
        "/console/monitor/{endpoint}/reports/{report}": "/console/monitor/prod/reports/drift-1",
    }
    reports = {path for path, r in routes(console["project"]) if "GET" in r.methods and "report" in path}
    assert reports == set(examples), f"a report route this test does not know: {reports - set(examples)}"
    for path in examples.values():
        r = console["admin"].get(console["url"] + path, timeout=30)
        assert r.status_code == 200 and "fetch('/console/users')" in r.text, (path, r.status_code)
        assert r.headers["content-security-policy"] == REPORT_CSP, path
        assert r.headers["x-content-type-options"] == "nosniff", path


def _int_parameters(route) -> tuple[list[str], list[str]]:
    "The names of `route`'s int parameters: in its path, and in its query."
    hints = typing.get_type_hints(route.endpoint, include_extras=True)
    path_names = {p.name for p in route.dependant.path_params}

    def is_int(name):
        t = hints.get(name)
        args = typing.get_args(t)
        base = args[0] if typing.get_origin(t) is typing.Annotated else t
        inner = (
            {a for a in typing.get_args(base)} if typing.get_origin(base) in (typing.Union, type(int | None)) else {}
        )
        return (
            base is int
            or int in inner
            or any(typing.get_origin(a) is typing.Annotated and typing.get_args(a)[0] is int for a in inner)
        )

    names = [n for n in inspect.signature(route.endpoint).parameters if is_int(n)]
    return [n for n in names if n in path_names], [n for n in names if n not in path_names]


def test_no_number_in_a_path_or_a_query_gives_a_500(console):
    """Every route taking an int, sent one SQLite cannot hold: refused (422), or not found, never a server error."""
    from fastapi.routing import APIRoute

    probes = []
    for full, route in routes(console["project"]):
        if not isinstance(route, APIRoute):
            continue
        in_path, in_query = _int_parameters(route)
        if not in_path and not in_query:
            continue
        path = full
        for part in route.param_convertors:
            path = path.replace("{" + part + "}", HUGE if part in in_path else "flora")
        for method in sorted(route.methods - {"HEAD"}):
            query = {n: HUGE for n in in_query}
            r = console["admin"].request(method, console["url"] + path, params=query, timeout=30)
            probes.append((method, full, r.status_code))
            assert r.status_code in (404, 422), (method, path, query, r.status_code, r.text[:300])
    # the version pages and the API's version routes, the runs list, thumbnails and the review queue at least
    assert len(probes) >= 10, probes
    print(f"\n{len(probes)} routes probed with a 25-digit number: {sorted({p[2] for p in probes})}")


@pytest.mark.parametrize("name", ["/etc", "../../..", "..", "prod/../../x", ""])
def test_an_endpoint_name_is_a_name(console, name):
    planted = console["project"].parent / "model.json"  # a model.json outside the store, where a path could lead
    planted.write_text(json.dumps({"version": "planted/1", "artifact": "/nowhere"}))
    r = console["admin"].post(console["url"] + "/console/monitor/check", data={"endpoint": name}, timeout=30)
    assert r.status_code == 409, r.text[:300]
    assert "not a valid endpoint name" in r.text and "planted" not in r.text


def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    "Send `request` as raw bytes to the server at `url`; its status and its whole answer (headers and body)."
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url)
    with socket.create_connection((host.hostname, host.port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while True:
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, flags=re.IGNORECASE)
            if length and len(body) >= int(length.group(1)):
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_a_body_is_refused_before_it_is_read(console):
    """A body announced as 150 MB, of which 10 bytes are sent: refused at once (401 without credentials, 413 with),
    which a server that read it first could not do; a body without a length is cut at the limit."""
    url, probes = console["url"], 0
    big = 150 * 2**20
    for path, auth, expected in (
        ("/runs", "", 401),
        ("/registry/versions/flora/1/approve", "", 401),
        ("/console/users", "", 401),
        ("/runs", f"Authorization: Bearer {TOKEN}\r\n", 413),
        ("/console/login", "", 413),  # the sign-in form needs no credential, but has the limit
    ):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {big}\r\n\r\n"
        )
        status, answer = _raw(url, head.encode() + b'{"a": "b"}')
        probes += 1
        assert status == expected, (path, answer[:300])
    # no length: the limit (1 MiB) and one byte more, in chunks, the body left unfinished: cut at the limit, answered
    chunk = b"x" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16)) + b"1\r\nx\r\n"
    head = f"POST /runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
    status, answer = _raw(url, head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status == 413 and b"max_body_mb" in answer, answer[:300]
    # under the limit, the request goes through to the route (which refuses the parameter: nothing started)
    r = console["admin"].post(url + "/runs", json={"parameters": {"nonsense": 1}}, timeout=30)
    assert r.status_code == 422, r.text[:300]
    print(f"\n{probes + 2} bodies probed")


def test_headers_of_pages_json_and_files(console):
    from earthsnap.console.server import CONSOLE_CSP

    url, admin = console["url"], console["admin"]
    pages = ["/console", "/console/runs", "/console/models", "/console/release", "/console/monitor", "/console/users"]
    for path in pages:
        r = admin.get(url + path, timeout=30)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["cache-control"] == "no-store" and r.headers["content-security-policy"] == CONSOLE_CSP, path
        # no inline script and no event handler attribute, which the policy would block: the page works under it
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", r.text, flags=re.IGNORECASE), path
    r = admin.get(url + "/runs", timeout=30)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    r = requests.get(url + "/static/console.css", timeout=30)
    assert r.status_code == 200 and r.headers.get("cache-control") != "no-store"
    # the API's description is for its callers
    for path in ("/openapi.json", "/docs"):
        assert requests.get(url + path, timeout=30).status_code == 401, path
        assert admin.get(url + path, timeout=30).status_code == 200, path
    print(f"\n{len(pages) + 6} answers' headers probed")


def test_another_site_cannot_post_as_the_browser(console):
    """Login CSRF and its kin: a form on another site posting to the console, sign-in included, is refused with 403
    and changes nothing, whatever it carries; the console's own forms and programs without a browser go through."""
    url, probes = console["url"], 0
    signin = {"name": "ana", "password": PASSWORD, "next": "/console"}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = requests.post(url + "/console/login", data=signin, headers=headers, allow_redirects=False, timeout=30)
        probes += 1
        assert r.status_code == 403 and "earthsnap_session" not in r.cookies, (headers, r.status_code)
        r = console["admin"].post(url + "/runs", json={}, headers=headers, timeout=30)  # a token does not help
        probes += 1
        assert r.status_code == 403 and r.json()["error"] == "cross_site", (headers, r.text[:200])
    host = url.removeprefix("http://")
    same = {"Origin": url, "Sec-Fetch-Site": "same-origin", "Host": host}
    r = requests.post(url + "/console/login", data=signin, headers=same, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "earthsnap_session" in r.cookies, r.text[:300]
    r = requests.post(url + "/console/login", data=signin, allow_redirects=False, timeout=30)  # no browser headers
    assert r.status_code == 303
    print(f"\n{probes + 2} cross-site and same-site posts probed")
