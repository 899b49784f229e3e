"""The web page served for real on 127.0.0.1 over a real store, and a logged-in client for it: the
settings, health and recovery tests' rig."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blocklist.store import Store
from screening.config import load_config
from screening.web.context import WebContext
from screening.web.i18n import UiLanguage, translate
from screening.web.server import WebServer, serve_in_thread

JA = UiLanguage.JA
INSTALLER = ("kanrisha", "installer-pass-1")
FAMILY = ("musuko", "family-pass-12")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

CONFIG = """\
# mamoru test unit for the settings pages
[line]
uri = "sim:"
home_region = "JP"

[rules]
# what happens to a caller who hides the number
withheld = "request_number"   # 非通知: ask them to call again with the number shown

[store]
db = "{data}/mamoru.db"

[voice]
language = "ja"
transcribe = false

[recording]
dir = "{data}/recordings"
keep_days = 90

[feeds]
dir = "{data}/feeds"
update_minutes = 0
"""


# ---- a running web page --------------------------------------------------------------------


def csrf_of(html: str) -> str:
    """The CSRF token of the (first) form in a page."""
    match = CSRF.search(html)
    assert match is not None, "no CSRF token in the page"
    return match[1]


@dataclass
class Web:
    """One household's web page, served for real; ``client`` is a logged-in browser-like session."""

    server: WebServer
    ctx: WebContext
    config_path: Path | None
    data: Path
    client: httpx.Client
    token: str = ""

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kwargs)


def new_client(server: WebServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30.0, follow_redirects=False)


def set_up_installer(client: httpx.Client) -> str:
    """First run, through the real setup form: the first account is the installer. Returns the CSRF token."""
    token = csrf_of(client.get("/setup").text)
    name, password = INSTALLER
    response = client.post("/setup", data={"csrf_token": token, "name": name, "password": password,
                                           "password2": password, "language": "ja"})  # fmt: skip
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/settings").text)


def log_in(client: httpx.Client, name: str, password: str) -> str:
    """Through the real login form; returns the logged-in session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"csrf_token": token, "name": name, "password": password, "next": "/"})
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/settings").text)


def add_family_member(web: Web) -> None:
    name, password = FAMILY
    response = web.post("/users/add", {"name": name, "password": password, "role": "family", "language": "ja"})
    assert response.status_code == 303, response.text


def write_config(root: Path, text: str = CONFIG) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = root / "mamoru.toml"
    path.write_text(text.format(data=data), encoding="utf-8")
    return path


def running_web(root: Path, config_path: Path | None) -> Iterator[Web]:
    cfg = load_config(config_path) if config_path else load_config(None, env={}, system_path=root / "absent")
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    cfg = cfg.with_overrides(db=data / "mamoru.db")
    store = Store(cfg.store.db, recover_calls=False)
    store.open()
    ctx = WebContext.for_config(cfg, store, config_path)
    server = serve_in_thread(ctx, "127.0.0.1", 0)
    client = new_client(server)
    try:
        web = Web(server, ctx, config_path, data, client)
        web.token = set_up_installer(client)
        yield web
    finally:
        client.close()
        server.stop()
        store.close()


def ja(key: str, **values: object) -> str:
    return translate(JA, key, **values)


def items(page: str) -> dict[str, tuple[str, str]]:
    """{item: (severity, message)} as shown on the /health page."""
    found = re.findall(r'<p id="health-(\w+)" data-severity="(\w+)">.*?<span class="message">(.*?)</span></p>', page,
                       re.S)  # fmt: skip
    return {name: (severity, html.unescape(message)) for name, severity, message in found}


def running_modem_web(root: Path) -> Iterator[Web]:
    """The page of a unit on a modem line (not the demo line, so "ok" really means ok) that transcribes."""
    text = CONFIG.replace('uri = "sim:"', 'uri = "modem:///dev/mamoru-modem"')
    text = text.replace("transcribe = false", f'transcribe = true\nmodels_dir = "{root / "models"}"')
    yield from running_web(root, write_config(root, text))
