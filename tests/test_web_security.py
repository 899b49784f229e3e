"""Security of the whole web app, route by route: login required, roles, CSRF, redirects, traversal, hostile bodies.

The routes are taken from the app itself (``app.routes``), so a page added later is
covered without touching this file. Raw requests go over a plain socket where an
HTTP client would tidy the path (``..``) or the body up.
"""

from __future__ import annotations

import re
import socket
import sqlite3
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.routing import Route

from screening.core.model import CallerID, Role
from screening.web.sessions import PRE_SESSION_COOKIE, SESSION_COOKIE
from tests.support.web import (
    ADMIN,
    ADMIN_PW,
    CSRF_RE,
    FAMILY,
    FAMILY_PW,
    MINIMAL_CONFIG,
    WebRig,
    csrf_of,
    is_login_redirect,
    ja,
    logged_in,
    login,
    set_cookies,
)

pytestmark = pytest.mark.timeout(180)

SECRET = "SECRET-MARKER-7f3a"  # in the config and next to the database: must never come back
PUBLIC_PATHS = {"/login", "/setup"}
# Installer-only pages of the agreed URL map (those that exist in the app are checked).
INSTALLER_PATHS = {"/users", "/users/add", "/users/remove", "/settings/system", "/settings/provision"}


@pytest.fixture
def rig_config() -> str:
    return MINIMAL_CONFIG + f'# {SECRET}\n[recording]\ndir = "{{data}}/recordings"\n'


@pytest.fixture(autouse=True)
def secret_and_accounts(rig: WebRig) -> None:
    """A secret next to the database, and an installer and a family member in the users file."""
    (rig.data / "secret.txt").write_text(SECRET)
    rig.add_user(ADMIN, ADMIN_PW, Role.INSTALLER)
    rig.add_user(FAMILY, FAMILY_PW, Role.FAMILY)


def concrete(path: str) -> str:
    """A real URL for a route path: ``{id:int}`` -> 1, any other parameter -> a plain word."""
    return re.sub(r"\{(\w+)(?::(\w+))?\}", lambda m: "1" if m.group(2) == "int" else "warning", path)


def app_routes(rig: WebRig, method: str) -> list[str]:
    paths = []
    for route in rig.app.routes:
        if isinstance(route, Route) and route.methods and method in route.methods:
            paths.append(concrete(route.path))
    assert paths, f"no {method} routes?"
    return sorted(set(paths))


def raw(rig: WebRig, method: str, target: str, *, headers: dict[str, str] | None = None,
        body: bytes = b"", content_length: int | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request exactly as written (no path clean-up), over a fresh connection."""
    parts = urlsplit(rig.url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), found, content


def cookie_header(client: httpx.Client) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


# ---- login required, roles ---------------------------------------------------------------------


def test_every_get_page_needs_a_login(rig: WebRig) -> None:
    client = rig.client()
    for path in app_routes(rig, "GET"):
        if path in PUBLIC_PATHS:
            continue
        response = client.get(path)
        assert is_login_redirect(response), (path, response.status_code)
        assert SECRET not in response.text


def test_every_post_needs_a_login_even_with_a_valid_csrf_token(rig: WebRig) -> None:
    client = rig.client()
    token = csrf_of(client)  # an anonymous visitor's own, valid token
    before = (rig.ctx.users_path.read_bytes(), rig.config_path.read_bytes())
    for path in app_routes(rig, "POST"):
        if path in PUBLIC_PATHS | {"/logout", "/language"}:
            continue
        response = client.post(path, data={"csrf_token": token, "name": ADMIN, "kind": "block",
                                           "number": "0312345678", "label": "fraud"})  # fmt: skip
        assert is_login_redirect(response) or response.status_code == 403, (path, response.status_code)
    assert (rig.ctx.users_path.read_bytes(), rig.config_path.read_bytes()) == before


def test_family_gets_403_on_installer_pages(rig: WebRig) -> None:
    family = logged_in(rig, FAMILY, FAMILY_PW)
    installer = logged_in(rig, ADMIN, ADMIN_PW)
    present = [p for p in app_routes(rig, "GET") + app_routes(rig, "POST") if p in INSTALLER_PATHS]
    assert {"/users", "/users/add", "/users/remove"} <= set(present)
    token = csrf_of(family, "/account")
    for path in present:
        methods = [m for r in rig.app.routes if isinstance(r, Route) and r.path == path for m in r.methods or ()]
        if "GET" in methods:
            response = family.get(path)
            assert response.status_code == 403 and ja("error.forbidden") in response.text, path
            assert installer.get(path).status_code == 200, path
        if "POST" in methods:
            assert family.post(path, data={"csrf_token": token, "name": ADMIN}).status_code == 403, path
    assert {a.name for a in rig.users.accounts()} == {ADMIN, FAMILY}


# ---- CSRF -----------------------------------------------------------------------------------------


def test_login_form_csrf(rig: WebRig) -> None:
    client = rig.client()
    token = csrf_of(client)
    form = {"name": FAMILY, "password": FAMILY_PW}
    other = csrf_of(rig.client())  # a real token, of another visitor
    for data, headers in (
        (form, {}),  # missing
        ({**form, "csrf_token": ""}, {}),
        ({**form, "csrf_token": token[:-2] + "xx"}, {}),  # wrong
        ({**form, "csrf_token": other}, {}),  # someone else's
        ({**form, "csrf_token": "日本語のトークン"}, {}),  # not even ASCII
        ({**form, "csrf_token": token}, {"Origin": "http://evil.example"}),  # right token, foreign page
        ({**form, "csrf_token": token}, {"Origin": "null"}),
        ({**form, "csrf_token": token}, {"Referer": "http://evil.example/phish"}),
        ({**form, "csrf_token": token}, {"Origin": f"{rig.url.replace('127.0.0.1', 'localhost')}"}),
    ):
        response = client.post("/login", data=data, headers=headers)
        assert response.status_code == 403, (data.get("csrf_token"), headers)
        assert ja("error.csrf") in response.text and SESSION_COOKIE not in set_cookies(response)
    same_site = client.post("/login", data={**form, "csrf_token": token},
                            headers={"Origin": rig.url, "Referer": rig.url + "/login"})  # fmt: skip
    assert same_site.status_code == 303


def test_logged_in_forms_need_the_session_token(rig: WebRig) -> None:
    family = logged_in(rig, FAMILY, FAMILY_PW)
    anonymous_token = csrf_of(rig.client())
    for path in app_routes(rig, "POST"):
        for data in ({"language": "en"}, {"language": "en", "csrf_token": anonymous_token}):
            response = family.post(path, data=data)
            assert response.status_code == 403, (path, data)
    assert rig.users.find(FAMILY).language is None
    header = family.post("/account/language", data={"language": "en"},
                         headers={"X-CSRF-Token": csrf_of(family, "/account")})  # fmt: skip
    assert header.status_code == 303 and rig.users.find(FAMILY).language is not None


def test_no_get_route_changes_state(rig: WebRig) -> None:
    admin = logged_in(rig, ADMIN, ADMIN_PW)
    before = (rig.ctx.users_path.read_bytes(), rig.config_path.read_bytes(), rig.store.count_calls(),
              rig.store.count_own_entries(_kind("block")), rig.store.count_own_entries(_kind("allow")))  # fmt: skip
    for path in app_routes(rig, "GET"):
        query = {"name": FAMILY, "language": "en", "kind": "block", "number": "0312345678", "label": "fraud"}
        response = admin.get(path, params=query)
        assert response.status_code < 500, (path, response.status_code)
    after = (rig.ctx.users_path.read_bytes(), rig.config_path.read_bytes(), rig.store.count_calls(),
             rig.store.count_own_entries(_kind("block")), rig.store.count_own_entries(_kind("allow")))  # fmt: skip
    assert after == before


def _kind(value: str):
    from screening.core.model import ListKind

    return ListKind(value)


# ---- redirects ------------------------------------------------------------------------------------

HOSTILE_NEXT = ["//evil.example/", "https://evil.example/", "/\\evil.example", "\\\\evil.example", "http:/evil.example",
                "javascript:alert(1)", "evil.example", "/\t/evil.example", "/\r\nSet-Cookie: x=y", "///evil.example"]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_no_open_redirect_after_login(rig: WebRig, target: str) -> None:
    client = rig.client()
    response = login(client, FAMILY, FAMILY_PW, next_url=target)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    again = client.get("/login", params={"next": target})  # already logged in: straight on
    assert (again.status_code, again.headers["location"]) == (303, "/")
    switch = client.post("/language", data={"csrf_token": csrf_of(client, "/account"), "language": "ja",
                                            "next": target})  # fmt: skip
    location = switch.headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")) and not urlsplit(location).netloc


def test_cross_site_link_is_reloaded_same_site_never_elsewhere(rig: WebRig) -> None:
    """SameSite=Strict withholds the cookie on a link from an alert e-mail: the page reloads itself."""
    fetch = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    status, _, body = raw(rig, "GET", "/calls/7?x=1", headers=fetch)
    assert status == 200 and b'http-equiv="refresh" content="0; url=/calls/7?x=1"' in body
    status, _, body = raw(rig, "GET", "//evil.example/x", headers=fetch)
    assert status == 200 and b"url=/\"" in body and b"evil" not in body
    family = logged_in(rig, FAMILY, FAMILY_PW)
    status, headers, _ = raw(rig, "GET", "/account", headers={**fetch, **cookie_header(family)})
    assert status == 200 and "refresh" not in headers  # with the cookie it is just the page


# ---- traversal ------------------------------------------------------------------------------------

TRAVERSAL = [
    "/static/../mamoru.toml", "/static/..%2fmamoru.toml", "/static/..%2F..%2Fmamoru.toml",
    "/static/%2e%2e/%2e%2e/mamoru.toml", "/static/%2e%2e%2f%2e%2e%2fmamoru.toml", "/static/..%5c..%5cmamoru.toml",
    "/static/%c0%ae%c0%ae/mamoru.toml", "/static//etc/passwd", "/static/..%2f..%2fdata%2fsecret.txt",
    "/static/%252e%252e/mamoru.toml", "/static/../../data/web-users.json",
    "/calls/..%2f..%2fmamoru.toml/recording", "/calls/..%2F..%2F..%2Fetc%2Fpasswd/recording",
    "/calls/%2e%2e/%2e%2e/mamoru.toml/recording", "/calls/1/recording/../../../mamoru.toml",
    "/calls/1/../../data/secret.txt", "/calls/-1/recording", "/calls/1e3/recording", "/calls/0x1/recording",
    "/settings/announcements/..%2f..%2fmamoru.toml.wav", "/settings/announcements/../../mamoru.toml",
]  # fmt: skip


def test_no_path_from_the_request_reaches_a_file_outside(rig: WebRig) -> None:
    admin = logged_in(rig, ADMIN, ADMIN_PW)
    assert raw(rig, "GET", "/static/style.css")[0] == 200  # the real thing works
    for target in TRAVERSAL:
        status, _, body = raw(rig, "GET", target, headers=cookie_header(admin))
        assert status in (303, 400, 404, 405), (target, status)
        assert SECRET.encode() not in body and b"password_hash" not in body and b"root:" not in body, target


def test_recording_link_in_the_database_cannot_leave_the_recordings_dir(rig: WebRig) -> None:
    """Recordings are served by call id; a poisoned row or a symlink must not serve another file."""
    if "/calls/{id:int}/recording" not in {getattr(r, "path", "") for r in rig.app.routes}:
        pytest.fail("the recording route /calls/{id:int}/recording is not there yet")
    admin = logged_in(rig, ADMIN, ADMIN_PW)
    recordings = rig.ctx.config().recording.dir
    (recordings / "outside.wav").symlink_to(rig.data / "secret.txt")
    linked = rig.store.begin_call("line", CallerID(raw_number="0312345678"))
    rig.store.set_recording(linked, "outside.wav", 18)
    poisoned = rig.store.begin_call("line", CallerID(raw_number="0312345679"))
    with sqlite3.connect(rig.store.path) as db:  # what set_recording refuses, written behind its back
        db.execute("UPDATE calls SET recording = ?, recording_bytes = 18 WHERE id = ?", ("../secret.txt", poisoned))
    for call_id in (linked, poisoned, 999999):
        response = admin.get(f"/calls/{call_id}/recording")
        assert response.status_code == 404, (call_id, response.status_code)
        assert SECRET not in response.text


# ---- hostile bodies ----------------------------------------------------------------------------------


def _form_headers(client: httpx.Client, content_type: str) -> dict[str, str]:
    return {**cookie_header(client), "Content-Type": content_type}


def test_oversized_bodies_get_413(rig: WebRig) -> None:
    client = rig.client()
    token = csrf_of(client)
    huge_form = client.post("/login", data={"csrf_token": token, "name": "x" * (1024 * 1024), "password": "y"})
    assert huge_form.status_code == 413 and ja("auth.too_large") in huge_form.text
    upload = client.post("/login", data={"csrf_token": token},
                         files={"file": ("big.wav", b"\0" * (20 * 1024 * 1024 + 10), "audio/wav")})  # fmt: skip
    assert upload.status_code == 415 and ja("auth.unsupported") in upload.text  # no uploads before login
    # a body announced as 2 GB is refused before it is read
    status, _, _ = raw(rig, "POST", "/login", headers=_form_headers(client, "application/x-www-form-urlencoded"),
                       body=b"csrf_token=x", content_length=2 * 1024**3)  # fmt: skip
    assert status == 413
    # and the server is fine afterwards
    assert login(rig.client(), FAMILY, FAMILY_PW).status_code == 303


def test_broken_and_odd_bodies_get_4xx(rig: WebRig) -> None:
    client = rig.client()
    token = csrf_of(client)
    urlencoded = _form_headers(client, "application/x-www-form-urlencoded")
    cases = [
        (urlencoded, b"csrf_token=" + token.encode() + b"&name=\xff\xfe\xfd&password=\xc3\x28"),  # invalid UTF-8
        (urlencoded, b"csrf_token=" + token.encode() + b"&name=%ff%fe&password=%c3%28"),
        (urlencoded, b"&&&===&csrf_token"),
        (urlencoded, "&".join(f"f{i}=v" for i in range(5000)).encode()),  # too many fields
        (_form_headers(client, "multipart/form-data"), b"--x\r\nno boundary given\r\n"),
        (_form_headers(client, "multipart/form-data; boundary=abc"), b"--abc\r\nContent-Disposition: form-data\r\n"),
        (_form_headers(client, "multipart/form-data; boundary=abc"),
         b"--abc\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n" + token.encode() +
         b"\r\n--abc\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n\xff\xfe\r\n--abc--\r\n"),
        (_form_headers(client, "application/json"), b'{"csrf_token": "' + token.encode() + b'"}'),
        (_form_headers(client, "text/plain"), b"\x00\x01\x02"),
    ]  # fmt: skip
    for headers, body in cases:
        status, _, content = raw(rig, "POST", "/login", headers=headers, body=body)
        assert 400 <= status < 500, (body[:60], status)
        assert b"Traceback" not in content
    for target in ("/login?next=%ff%fe", "/login?next=%00", "/calls?q=%ff&page=-1&verdict=%00", "/calls?page=x"):
        status, _, content = raw(rig, "GET", target, headers=cookie_header(logged_in(rig, FAMILY, FAMILY_PW)))
        assert status < 500 and b"Traceback" not in content, (target, status)


def test_every_post_route_survives_empty_and_garbled_forms(rig: WebRig) -> None:
    """Whatever a handler expects, a form that lacks it or is not UTF-8 is the sender's mistake: never 500."""
    admin = logged_in(rig, ADMIN, ADMIN_PW)
    for path in app_routes(rig, "POST"):
        if path in ("/logout", "/users/remove"):
            continue  # would end the test's own session / remove a user: covered elsewhere
        token = csrf_of(admin, "/account")
        bodies = [
            ({"csrf_token": token}, None),
            ({"csrf_token": token, "kind": "\ufffe", "name": "\x00", "number": "０３" * 500, "expires": "9999-99-99",
              "value": "..", "label": "x", "language": "xx", "withheld": "nonsense"}, None),
            ({"csrf_token": token, "kind": "block", "format": "csv"}, {"file": ("x.csv", b"\xff\xfe\x00garbage", "text/csv")}),
        ]  # fmt: skip
        for data, files in bodies:
            try:
                response = admin.post(path, data=data, files=files)
            except httpx.HTTPError as exc:
                pytest.fail(f"{path}: {exc!r}")
            assert response.status_code < 500, (path, response.status_code, response.text[:300])
            assert "Traceback" not in response.text
    assert admin.get("/account").status_code == 200  # still logged in, server still fine


def test_security_headers_and_no_script(rig: WebRig) -> None:
    client = rig.client()
    response = client.get("/login")
    csp = response.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in response.text.lower()
    assert PRE_SESSION_COOKIE in set_cookies(response)
    assert CSRF_RE.search(response.text)
