"""The console and its API probed as an attacker would, on a real `earthsnap console` on 127.0.0.1: the routes are
discovered from the app itself, so that a route added later without the same care fails here.

- Every route that serves an executed notebook's HTML (a step's report, a drift report) answers with the sandbox
  policy (`console.pages.REPORT_CSP`): a script in a notebook runs in an opaque origin and cannot act as the console.
- Every number a route takes, in its path or its query, is refused with 422 when SQLite could not hold it, never a 500.
- An endpoint name is a name: `/etc`, `../x` and the like are refused before anything is looked at.
- A body is refused before it is read: without credentials (401), or over the `max_body_mb` limit (413), with or
  without a length; pages, JSON and files carry the headers they should (no-store, the console's content policy).
- Another site cannot post as the browser (login CSRF): Origin and Sec-Fetch-Site are checked on every POST.
- Sign-in and credentials: a storm of wrong passwords cannot stall the server (a bound on concurrent hashes, 429
  beyond it), invented forwarded addresses do not escape the per-address limit, a name locked from one address still
  signs in from another, weak passwords and short bootstrap tokens are refused, wrong bearer tokens are limited per
  address, `bootstrap` is no user's name, and a re-enabled user's old tokens stay revoked.
"""

from __future__ import annotations

import contextlib
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

from conftest import BIN, clean_env, free_port, login_token, wait_until_serving

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
    with serving(project) as url:
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {TOKEN}"
        yield {"url": url, "admin": admin, "project": project, "run": run, "cfg": cfg}


@contextlib.contextmanager
def serving(project: Path, *args: str):
    "`earthsnap console ARGS` on `project`, with the bootstrap token, on a free port: its URL; stopped by its pid."
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "earthsnap"), "console", "--port", str(port), *args],
        cwd=project,
        env=clean_env(EARTHSNAP_API_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url + "/health", server, 60, "earthsnap console")
        yield url
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
    # a form posted from elsewhere without the browser's headers still lacks the form's own token (and its cookie)
    r = requests.post(url + "/console/login", data=signin, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "earthsnap_session" not in r.cookies and "did not come from" in r.text
    r = requests.post(url + "/console/login", data={**signin, "login_token": "guessed"}, allow_redirects=False)
    assert r.status_code == 403 and "earthsnap_session" not in r.cookies
    # the console's own form, from the console's page, signs in
    host, browser = url.removeprefix("http://"), requests.Session()
    same = {"Origin": url, "Sec-Fetch-Site": "same-origin", "Host": host}
    form = {**signin, "login_token": login_token(browser, url)}
    r = browser.post(url + "/console/login", data=form, headers=same, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "earthsnap_session" in r.cookies, r.text[:300]
    print(f"\n{probes + 3} cross-site, tokenless and same-site sign-ins probed")


# --- sign-in and credentials
# A second console, with two users whose passwords were hashed cheaply (argon2 verifies with the parameters a hash
# names, so their sign-ins are quick) and the server's default hasher for unknown names (the slow, real cost). Every
# client is its own loopback address (127.0.0.x): each test's failures count against addresses of its own.

PEOPLE = {"sam": "sam signs in from afar", "ria": "ria was away a while"}


class From(requests.adapters.HTTPAdapter):
    "requests from the local address `source` (any 127.0.0.x reaches a server on 127.0.0.1)."

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *a, **kw):
        super().init_poolmanager(*a, source_address=(self.source, 0), **kw)


def client_at(source: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", From(source))
    return s


@pytest.fixture(scope="module")
def signin(tmp_path_factory):
    from argon2 import PasswordHasher

    from earthsnap.access.users import UserStore
    from earthsnap.core.config import load_config

    project = tmp_path_factory.mktemp("signin")
    users = UserStore(load_config(project, env={}).registry, PasswordHasher(time_cost=1, memory_cost=1024))
    for name, password in PEOPLE.items():
        users.add(name, "viewer", password, by="test")
    with serving(project, "--no-deployer") as url:
        yield {"url": url, "users": users, "project": project}


def sign_in(url: str, source: str, name: str, password: str, **headers) -> requests.Response:
    "Sign in from `source` as a browser does: open the form (its token and cookie), then send it."
    client = client_at(source)
    return client.post(
        url + "/console/login",
        data={"name": name, "password": password, "login_token": login_token(client, url)},
        headers=headers,
        allow_redirects=False,
        timeout=60,
    )


def test_a_storm_of_wrong_passwords_is_refused_beyond_the_hashing_bound(signin):
    """Clients sending wrong passwords at once: those beyond the bound get 429 before any hashing, and /health answers
    all along (argon2 runs in worker threads, not on the event loop)."""
    import threading

    url, statuses, health, probes = signin["url"], [], [], 0
    for _ in range(3):  # unknown names: the default, slow hash; each client a fresh address, 3 tries at most
        barrier = threading.Barrier(12)

        def guess(n, barrier=barrier):
            barrier.wait()
            statuses.append(sign_in(url, f"127.0.1.{n}", f"nobody{n}", "wrong password, sure").status_code)

        def watch(barrier=barrier):
            barrier.wait()
            for _ in range(5):
                health.append(requests.get(url + "/health", timeout=30).status_code)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(11)] + [threading.Thread(target=watch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        probes += 16
        if 429 in statuses:
            break
    assert set(statuses) <= {401, 429} and 429 in statuses, statuses
    assert health and set(health) == {200}, health
    busy = sign_in(url, "127.0.1.200", "nobody", "wrong password, sure")  # alone again: checked, and wrong
    assert busy.status_code == 401
    print(f"\n{probes + 1} probes: {statuses.count(429)} of {len(statuses)} storm sign-ins refused busy, /health 200")


def test_invented_forwarded_addresses_do_not_escape_the_address_limit(signin):
    """From 127.0.0.1, whose X-Forwarded-For uvicorn believed by default: each failure names another address, and
    the address limit still refuses the client."""
    from earthsnap.access.users import FAILURES

    url, n = signin["url"], FAILURES["address"]
    for i in range(n):  # another name each time, so that only the address limit can refuse
        r = sign_in(url, "127.0.0.1", f"who{i}", "wrong password, sure", **{"X-Forwarded-For": f"203.0.113.{i}"})
        assert r.status_code == 401, (i, r.status_code)
    r = sign_in(url, "127.0.0.1", "sam", PEOPLE["sam"], **{"X-Forwarded-For": "198.51.100.7"})
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    print(f"\n{n + 1} probes with invented X-Forwarded-For addresses: the next one refused")


def test_a_name_locked_from_one_address_signs_in_from_another(signin):
    url = signin["url"]
    for _ in range(5):
        assert sign_in(url, "127.0.3.1", "sam", "a guess of a password").status_code == 401
    assert sign_in(url, "127.0.3.1", "sam", PEOPLE["sam"]).status_code == 429  # the guesser's address is refused
    r = sign_in(url, "127.0.3.2", "sam", PEOPLE["sam"])  # sam, elsewhere, with the right password
    assert r.status_code == 303 and "earthsnap_session" in r.cookies
    print("\n7 probes: 5 guesses and the refused right password from one address, the right one from another")


def test_weak_passwords_are_refused(signin):
    admin = client_at("127.0.6.1")  # not 127.0.0.1, whose failures the forwarded-address test spends
    admin.headers["Authorization"] = f"Bearer {TOKEN}"
    refused = []
    for weak in ("1111111111", "aaaaaaaaaa", "qwertyuiop", "1234567890", "password123"):
        r = admin.post(
            signin["url"] + "/console/users", data={"name": "weak", "role": "viewer", "password": weak}, timeout=30
        )
        refused.append((weak, r.status_code))
        assert r.status_code == 422 and "guessed" in r.text, (weak, r.status_code)
    r = subprocess.run(
        [str(BIN / "earthsnap"), "users", "add", "weak", "--role", "viewer", "--password-stdin"],
        cwd=signin["project"],
        env=clean_env(),
        input="1111111111\n",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "guessed" in r.stdout + r.stderr, r.stdout + r.stderr
    print(f"\n{len(refused) + 1} probes: weak passwords refused by the console and the CLI")


def test_bootstrap_is_not_a_user_name(signin):
    admin = client_at("127.0.6.1")  # not 127.0.0.1, whose failures the forwarded-address test spends
    admin.headers["Authorization"] = f"Bearer {TOKEN}"
    r = admin.post(
        signin["url"] + "/console/users",
        data={"name": "bootstrap", "role": "admin", "password": "a long enough password"},
        timeout=30,
    )
    assert r.status_code == 422 and "reserved" in r.text
    print("\n1 probe: the user name bootstrap refused")


def test_a_short_bootstrap_token_is_refused(tmp_path):
    r = subprocess.run(
        [str(BIN / "earthsnap"), "console", "--port", str(free_port()), "--no-deployer"],
        cwd=tmp_path,
        env=clean_env(EARTHSNAP_API_TOKEN="abc"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "needs at least 32" in out and "token_urlsafe" in out, out[-2000:]
    print("\n1 probe: a console started with api_token=abc refuses to start")


def test_wrong_bearer_tokens_are_limited_per_address(signin):
    from earthsnap.access.users import FAILURES

    url, n = signin["url"], FAILURES["address"]
    _, good = signin["users"].new_token("sam")
    guesser = client_at("127.0.4.1")
    for i in range(n):
        r = guesser.get(url + "/runs", headers={"Authorization": f"Bearer es_{i:08x}_guess"}, timeout=30)
        assert r.status_code == 401, (i, r.status_code)
    r = guesser.get(url + "/runs", headers={"Authorization": f"Bearer {good}"}, timeout=30)  # even a right one
    assert r.status_code == 429 and "users token" in r.json()["fix"]
    assert guesser.get(url + "/console", headers={"Authorization": f"Bearer {good}"}, timeout=30).status_code == 429
    assert client_at("127.0.4.2").get(url + "/runs", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    # guesses sent with a body (refused before it is read) count the same: no route escapes the limit
    poster = client_at("127.0.4.3")
    for i in range(n):
        r = poster.post(url + "/runs", json={}, headers={"Authorization": f"Bearer es_{i:08x}_guess"}, timeout=30)
        assert r.status_code == 401, (i, r.status_code)
    r = poster.post(url + "/runs", json={}, headers={"Authorization": f"Bearer {good}"}, timeout=30)
    assert r.status_code == 429 and r.json()["error"] == "too_many_failures", r.text[:200]
    print(f"\n{2 * n + 4} probes: {n} wrong tokens by GET and {n} by POST, then 429 for each address, 200 from another")


def test_a_re_enabled_user_has_no_old_tokens(signin):
    users, url = signin["users"], signin["url"]
    _, old = users.new_token("ria")
    client = client_at("127.0.5.1")
    assert client.get(url + "/runs", headers={"Authorization": f"Bearer {old}"}, timeout=30).status_code == 200
    users.disable("ria")
    users.enable("ria")
    assert client.get(url + "/runs", headers={"Authorization": f"Bearer {old}"}, timeout=30).status_code == 401
    _, new = users.new_token("ria")
    assert client.get(url + "/runs", headers={"Authorization": f"Bearer {new}"}, timeout=30).status_code == 200
    print("\n3 probes: a token before, after re-enabling (refused), and a new one")


# --- the authorization matrix
def _filled(path: str, route) -> str:
    "`path` with each parameter given a value that names nothing (an int for an int parameter)."
    in_path, _ = _int_parameters(route)
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", "99999" if name in in_path else "nobody")
    return path


def test_every_state_changing_route_checks_the_role_and_the_csrf_token(console):
    """Every POST of the console and the API, discovered from the app, tried by nobody, by each role with a token,
    and by each role's session without and with its CSRF token: the role decides, a session needs its token, and a
    route without a check fails here."""
    from fastapi.routing import APIRoute

    from earthsnap.access.auth import CSRF_HEADER, SESSION_COOKIE
    from earthsnap.access.users import PERMISSIONS, ROLES, UserStore

    url, users = console["url"], UserStore.from_config(console["cfg"])
    tokens = {}
    for role in ROLES:
        users.add(f"matrix-{role}", role, f"the {role} of the matrix test signs in here", by="test")
        tokens[role] = users.new_token(f"matrix-{role}", "matrix")[1]
    open_routes = {"/console/login"}  # how one gets a credential
    probes, changing = 0, []
    for full, route in routes(console["project"]):
        if not isinstance(route, APIRoute) or not route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            continue
        needs = [d.call.__name__.removeprefix("need_") for d in route.dependant.dependencies]
        needs = [n for n in needs if n in PERMISSIONS]
        if full in open_routes:
            continue
        assert len(needs) == 1, f"{full} does not check who calls it: {needs}"
        changing.append(full)
        path, allowed = _filled(full, route), PERMISSIONS[needs[0]]
        form = full.startswith("/console")
        body = {"data": {"probe": "1"}} if form else {"json": {}}
        for method in sorted(route.methods):
            r = requests.request(method, url + path, timeout=30, allow_redirects=False, **body)
            probes += 1
            assert r.status_code == 401, (method, path, "nobody", r.status_code)
            for role in ROLES:
                auth = {"Authorization": f"Bearer {tokens[role]}"}
                r = requests.request(method, url + path, headers=auth, timeout=30, allow_redirects=False, **body)
                probes += 1
                if role in allowed:
                    assert r.status_code not in (401, 403, 500), (method, path, role, r.status_code, r.text[:200])
                else:
                    assert r.status_code == 403, (method, path, role, r.status_code, r.text[:200])
                sid, csrf = users.start_session(f"matrix-{role}")
                cookies = {SESSION_COOKIE: sid}
                r = requests.request(method, url + path, cookies=cookies, timeout=30, allow_redirects=False, **body)
                probes += 1
                assert r.status_code == 403, (method, path, role, "session without its CSRF token", r.status_code)
                r = requests.request(
                    method, url + path, cookies=cookies, headers={CSRF_HEADER: csrf}, timeout=30, **body
                )
                probes += 1
                assert r.status_code not in (401, 500) and (r.status_code != 403) == (role in allowed), (
                    method,
                    path,
                    role,
                    "session with its CSRF token",
                    r.status_code,
                )
    assert len(changing) >= 15, changing  # the console's forms and the API's: a change in discovery shows here
    print(f"\n{probes} probes of {len(changing)} state-changing routes x nobody and {len(ROLES)} roles")


HOSTILE = [
    "..%2F..%2Fregistry.db",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "%00",
    "x" * 300,
]


def test_every_path_parameter_of_every_page_takes_hostile_values(console):
    """Every GET route with a parameter in its path, discovered from the app, given a traversal, markup, a NUL and an
    overlong name in each parameter by an admin: never a server error, never a file from outside, never the markup
    unescaped."""
    from fastapi.routing import APIRoute

    url, admin, probes = console["url"], console["admin"], 0
    for full, route in routes(console["project"]):
        if not isinstance(route, APIRoute) or "GET" not in route.methods or not route.param_convertors:
            continue
        in_path, _ = _int_parameters(route)
        for name in route.param_convertors:
            if name in in_path:
                continue  # numbers: test_no_number_in_a_path_or_a_query_gives_a_500
            for value in HOSTILE:
                path = full
                for other in route.param_convertors:
                    path = path.replace("{" + other + "}", value if other == name else "nobody")
                r = admin.get(url + path, timeout=30, allow_redirects=False)
                probes += 1
                assert r.status_code in (303, 307) or 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
                assert "<script>alert(1)" not in r.text and "root:" not in r.text and "SQLite" not in r.text, path
    assert probes >= 50, probes
    print(f"\n{probes} hostile path parameters probed")


def test_malformed_bodies_are_refused_with_why(console):
    """Broken JSON, JSON of the wrong shape, fields of the wrong type, binary garbage and a wrong content type, sent
    by an admin to every route of the API that takes a body: a 4xx that says why, never a server error."""
    url, admin, probes = console["url"], console["admin"], 0
    bodies = [
        (b'{"parameters": ', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"parameters": "epochs=3"}', "application/json"),
        (b'{"reason": {"nested": ["x"]}}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"reason=x", "text/plain"),
    ]
    for path in ("/runs", "/registry/versions/flora/1/approve", "/registry/versions/flora/1/reject"):
        for body, kind in bodies:
            r = admin.post(url + path, data=body, headers={"Content-Type": kind}, timeout=30)
            probes += 1
            assert 400 <= r.status_code < 500 and r.json()["message"], (path, body, r.status_code, r.text[:200])
    print(f"\n{probes} malformed bodies probed")
