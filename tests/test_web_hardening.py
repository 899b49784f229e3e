"""Issue 12 items 9-12: the web page under attack (DNS rebinding, login floods, huge bodies, slowloris).

All against a real server on loopback (``WebRig``); raw sockets where an HTTP client would tidy up.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from screening.web.login_throttle import LoginLimits
from screening.web.sessions import install
from tests.support.web import ADMIN, ADMIN_PW, FAMILY, FAMILY_PW, MINIMAL_CONFIG, WebRig, csrf_of, login

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def rig_config() -> str:
    return MINIMAL_CONFIG + '[web]\nallowed_hosts = ["mamoru.home.arpa"]\n'


def _client_from(rig: WebRig, address: str, **kwargs: object) -> httpx.Client:
    """Connections from another loopback address (127.0.0.0/8 is all ours): another source."""
    return rig.client(transport=httpx.HTTPTransport(local_address=address), **kwargs)


# ---- item 11: DNS rebinding ---------------------------------------------------------------------


def test_first_run_setup_from_a_rebound_name_is_refused(rig: WebRig) -> None:
    evil = rig.client(headers={"Host": "attacker.example", "Origin": "http://attacker.example"})
    page = evil.get("/setup")
    assert page.status_code == 421 and "まもる" in page.text
    # even with a CSRF token and pre-session from a real visit, the rebound name gets nothing
    good = rig.client()
    token = csrf_of(good, "/setup")
    evil.cookies.update(good.cookies)
    response = evil.post("/setup", data={"csrf_token": token, "name": "attacker", "password": "attacker-pass-1",
                                         "password2": "attacker-pass-1", "language": "ja"})  # fmt: skip
    assert response.status_code == 421
    assert rig.users.setup_needed(), "the rebound name created an account"


@pytest.mark.parametrize("host", ["attacker.example", "mamoru.local.attacker.example", "127.0.0.1.nip.io",
                                  "[::1", "a@127.0.0.1", ""])  # fmt: skip
def test_unknown_or_malformed_host_is_refused(rig: WebRig, host: str) -> None:
    parts = urlsplit(rig.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET /login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.split(b" ", 2)[1] in (b"421", b"400"), (host, reply[:200])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "mamoru.local", f"{socket.gethostname()}.local",
                                  "MAMORU.HOME.ARPA", "mamoru.local."])  # fmt: skip
def test_the_units_own_names_open_the_page(rig: WebRig, host: str) -> None:
    port = urlsplit(rig.url).port
    response = rig.client(headers={"Host": f"{host}:{port}"}).get("/setup")
    assert response.status_code == 200, host


def test_an_ip_host_must_be_the_address_the_connection_arrived_on(tmp_path: Path) -> None:
    from screening.config import load_config
    from screening.web.hostcheck import host_allowed

    config = tmp_path / "mamoru.toml"
    config.write_text('[web]\nallowed_hosts = ["10.0.0.9"]\n[alerts]\nweb_base_url = "https://mamoru.example.jp/"\n')
    cfg = load_config(config, env={})
    assert host_allowed("192.168.1.20", cfg, local_address="192.168.1.20")
    assert host_allowed("fe80::1", cfg, local_address="fe80::1%eth0")
    assert not host_allowed("192.168.1.21", cfg, local_address="192.168.1.20")
    assert host_allowed("10.0.0.9", cfg, local_address="192.168.1.20")  # configured
    assert host_allowed("mamoru.example.jp", cfg, local_address="192.168.1.20")  # where alerts link to
    assert not host_allowed("example.jp", cfg, local_address="192.168.1.20")


# ---- item 12: the login limiter ---------------------------------------------------------------------


def _ready_login(client: httpx.Client, name: str, password: str) -> tuple[httpx.Client, dict[str, str]]:
    return client, {"csrf_token": csrf_of(client), "name": name, "password": password}


def test_parallel_wrong_passwords_are_counted_before_they_are_checked(users_rig: WebRig) -> None:
    install(users_rig.app, limits=LoginLimits(max_failures=5, lock_s=60.0))
    # 30 browsers of one attacker (the per-source connection cap is 32), each with its own token, fire at once
    prepared = [_ready_login(users_rig.client(), ADMIN, f"guess-{n:04d}-wrong") for n in range(30)]
    barrier = threading.Barrier(len(prepared), timeout=30)

    def fire(item: tuple[httpx.Client, dict[str, str]]) -> int:
        client, data = item
        barrier.wait()
        return client.post("/login", data=data).status_code

    with ThreadPoolExecutor(len(prepared)) as pool:
        codes = list(pool.map(fire, prepared, timeout=120))
    assert codes.count(401) <= 5, f"{codes.count(401)} wrong passwords were checked, the limit is 5"
    assert codes.count(401) + codes.count(429) == 30, codes


def test_a_guessing_source_cannot_lock_the_owner_out(users_rig: WebRig) -> None:
    install(users_rig.app, limits=LoginLimits(max_failures=5, lock_s=900.0))
    attacker = _client_from(users_rig, "127.0.0.2")
    codes = [login(attacker, ADMIN, f"guess-{n}-wrong-pw").status_code for n in range(12)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}  # the attacker locked itself ...
    owner = _client_from(users_rig, "127.0.0.3")
    assert login(owner, ADMIN, ADMIN_PW).status_code == 303  # ... not the installer elsewhere


def test_a_name_guessed_from_many_sources_still_opens_for_the_owners_browser(users_rig: WebRig) -> None:
    install(users_rig.app, limits=LoginLimits(max_failures=3, lock_s=900.0, name_max_failures=6))
    owner = _client_from(users_rig, "127.0.0.9")
    assert login(owner, ADMIN, ADMIN_PW).status_code == 303  # the owner's phone, known from before
    owner.post("/logout", data={"csrf_token": csrf_of(owner, "/account")})
    for n in range(6):  # a botnet: two guesses from each of three sources
        assert login(_client_from(users_rig, f"127.0.1.{n // 2}"), ADMIN, f"guess-{n}-wrong").status_code == 401
    # the name is now locked for browsers never seen with it, even with the right password ...
    assert login(_client_from(users_rig, "127.0.2.1"), ADMIN, ADMIN_PW).status_code == 429
    # ... but not for the owner's browser
    assert login(owner, ADMIN, ADMIN_PW).status_code == 303
    # and other names are untouched
    assert login(_client_from(users_rig, "127.0.2.2"), FAMILY, FAMILY_PW).status_code == 303


# ---- item 9: bodies ---------------------------------------------------------------------------------------


def _chunked_post(rig: WebRig, path: str, headers: dict[str, str], chunks: int, chunk: bytes,
                  content_type: str = "multipart/form-data; boundary=xyz") -> bytes:  # fmt: skip
    """Send a chunked POST chunk by chunk, stopping as soon as the server has answered; the reply."""
    parts = urlsplit(rig.url)
    head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Type: {content_type}",
            "Transfer-Encoding: chunked", *[f"{k}: {v}" for k, v in headers.items()]]  # fmt: skip
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        sock.settimeout(0.0)
        reply = b""
        for _ in range(chunks):
            try:
                reply += sock.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionError:
                break
            if reply:
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BlockingIOError, ConnectionError):
                break
            time.sleep(0.002)
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in reply and (more := sock.recv(65536)):
                reply += more
        except (TimeoutError, ConnectionError):
            pass
    return reply


def test_a_post_without_any_session_is_refused_before_its_body_is_read(users_rig: WebRig) -> None:
    # 64 KiB chunks, at most 320 of them (20 MiB): the answer must come long before the end
    reply = _chunked_post(users_rig, "/login", {}, chunks=320, chunk=b"x" * 65536)
    assert reply.startswith(b"HTTP/1.1 403"), reply[:120]


def test_an_anonymous_body_is_capped_small(users_rig: WebRig) -> None:
    browser = users_rig.client()
    csrf_of(browser)  # the pre-session of the login form
    cookies = {"Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items())}
    for content_type in ("multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded"):
        reply = _chunked_post(users_rig, "/login", cookies, chunks=320, chunk=b"x" * 65536, content_type=content_type)
        assert reply.split(b" ", 2)[1] in (b"413", b"415"), (content_type, reply[:120])
    assert login(users_rig.client(), FAMILY, FAMILY_PW).status_code == 303  # and the page still works


def test_upload_caps_follow_the_pages_file_caps() -> None:
    from deploy.provisioning.bundle import MAX_BUNDLE_BYTES
    from screening.web import limits, pages_lists, recordings

    def cap(path: str) -> int:
        return limits.body_limit(limits.Sender.USER, path, limits.MULTIPART)

    assert cap("/lists/import") == pages_lists.MAX_IMPORT_BYTES + limits.MULTIPART_OVERHEAD_BYTES
    assert cap("/settings/announcements/warning") == recordings.MAX_RECORDING_BYTES + limits.MULTIPART_OVERHEAD_BYTES
    assert cap("/settings/provision") == MAX_BUNDLE_BYTES + limits.MULTIPART_OVERHEAD_BYTES
    assert cap("/lists/add") == limits.FORM_BODY_BYTES  # no upload there
    assert limits.body_limit(limits.Sender.ANONYMOUS, "/lists/import", limits.MULTIPART) == 0


def test_a_logged_in_upload_is_spooled_to_the_data_directory(users_rig: WebRig) -> None:
    admin = users_rig.client()
    assert login(admin, ADMIN, ADMIN_PW).status_code == 303
    token = csrf_of(admin, "/lists")
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # an unnamed spool file shows up as an open descriptor into the data dir
        import os

        while not stop.is_set():
            for fd in os.listdir("/proc/self/fd"):
                try:
                    target = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(str(users_rig.data)) and "mamoru.db" not in target:
                    seen.append(target)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        csv = b"number,note\n" + b"".join(b"0312345%03d,x\n" % (n % 1000) for n in range(200_000))
        response = admin.post("/lists/import", data={"csrf_token": token, "kind": "block"},
                              files={"file": ("big.csv", csv, "text/csv")})  # fmt: skip
        assert response.status_code < 500
    finally:
        stop.set()
        watcher.join(5)
    assert seen, "a multi-megabyte upload was held in memory, not spooled next to the database"


# ---- item 10: slowloris and connection floods ----------------------------------------------------------


def _server_closed(sock: socket.socket) -> bool:
    """Without waiting: has the server closed this connection?"""
    previous = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.settimeout(previous)


def test_idle_connections_from_one_source_are_capped(users_rig: WebRig) -> None:
    from screening.web.connections import ConnectionLimits

    limits = ConnectionLimits()
    parts = urlsplit(users_rig.url)
    flood = []
    try:
        for _ in range(limits.max_per_source + 100):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.connect((parts.hostname, parts.port))
            flood.append(sock)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            open_ = sum(not _server_closed(s) for s in flood)
            if open_ <= limits.max_per_source:
                break
            time.sleep(0.1)
        assert open_ <= limits.max_per_source, f"{open_} idle connections of one source held open"
        # another source is served while the flood lasts
        assert login(_client_from(users_rig, "127.0.0.3"), FAMILY, FAMILY_PW).status_code == 303
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.slow
def test_a_request_head_trickled_byte_by_byte_is_cut_off(users_rig: WebRig) -> None:
    from screening.web.connections import ConnectionLimits

    timeout = ConnectionLimits().header_timeout_s
    parts = urlsplit(users_rig.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET /login HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < timeout + 5:
            try:
                sock.sendall(b"X-a: b\r\n")  # never the blank line that ends the head
            except ConnectionError:
                closed = True
                break
            if _server_closed(sock):
                closed = True
                break
            time.sleep(0.5)
        assert closed, f"a head trickled for {timeout + 5:.0f} s kept its connection"
        assert time.monotonic() - started >= timeout - 1  # and not before its time


def test_a_flood_spread_over_many_sources_does_not_starve_a_browser(users_rig: WebRig) -> None:
    from screening.web.connections import ConnectionLimits

    limits = ConnectionLimits()
    parts = urlsplit(users_rig.url)
    flood = []
    per_source = limits.max_per_source - 2
    try:
        for n in range(limits.max_connections // per_source + 3):  # more than the server takes in all
            for _ in range(per_source):
                sock = socket.socket()
                sock.bind((f"127.0.3.{n + 1}", 0))
                sock.connect((parts.hostname, parts.port))
                sock.sendall(b"GET / HTTP/1.1\r\n")  # and never more
                flood.append(sock)
        time.sleep(0.5)
        for _ in range(5):  # each time a browser comes, it is served
            assert login(_client_from(users_rig, "127.0.0.3"), FAMILY, FAMILY_PW).status_code == 303
        assert sum(not _server_closed(s) for s in flood) <= limits.max_connections
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.slow
def test_an_anonymous_body_sent_slowly_is_cut_off(users_rig: WebRig) -> None:
    from screening.web.limits import ANONYMOUS_BODY_TIMEOUT_S

    browser = users_rig.client()
    csrf_of(browser)
    parts = urlsplit(users_rig.url)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    with socket.create_connection((parts.hostname, parts.port), timeout=ANONYMOUS_BODY_TIMEOUT_S + 10) as sock:
        sock.sendall(f"POST /login HTTP/1.1\r\nHost: {parts.netloc}\r\nCookie: {cookie}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nname=".encode())
        started = time.monotonic()
        reply = sock.recv(65536)  # and never the rest of the body
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert ANONYMOUS_BODY_TIMEOUT_S - 1 <= time.monotonic() - started <= ANONYMOUS_BODY_TIMEOUT_S + 5


@pytest.mark.parametrize(("address", "source"), [
    ("192.0.2.7", "192.0.2.7"), ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
])  # fmt: skip
def test_a_source_is_an_ipv4_address_or_an_ipv6_64(address: str, source: str) -> None:
    from screening.web.login_throttle import source_of

    assert source_of(address) == source
