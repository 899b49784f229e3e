"""Issue 12 items 9-12: the web page under attack (DNS rebinding, login floods, huge bodies, slowloris).

All against a real server on loopback (``WebRig``); raw sockets where an HTTP client would tidy up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from test_web_auth import ADMIN, ADMIN_PW, FAMILY, FAMILY_PW, WebRig, csrf_of, login

from screening.web.auth import LoginLimits, Role, install

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[WebRig]:
    web = WebRig(tmp_path, config_extra='[web]\nallowed_hosts = ["mamoru.home.arpa"]\n')
    try:
        yield web
    finally:
        web.close()


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
    response = evil.post("/setup", data={"csrf_token": token, "name": "attacker", "password": "attacker-pass-1",
                                         "password2": "attacker-pass-1", "language": "ja"},
                         cookies=dict(good.cookies))  # fmt: skip
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
