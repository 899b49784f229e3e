"""The call and list pages' rig: a real web server on 127.0.0.1 over a real store file (its own
connection, as ``mamoru web`` runs), accounts made through the real setup and users forms, and clients
logged in through the real login form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from blocklist.store import Store
from screening.config import load_config
from screening.web.context import WebContext
from screening.web.server import WebServer, serve_in_thread
from tests.support.web import csrf_of

__all__ = ["FAMILY", "INSTALLER", "Site", "csrf_of", "login", "post_form", "start_site", "write_config"]

INSTALLER = ("kazuko", "installer-pass-1")
FAMILY = ("taro", "family-pass-12")


def write_config(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "mamoru.toml"
    path.write_text(f'[line]\nhome_region = "JP"\n\n[store]\ndb = "{tmp / "calls.db"}"\n\n'
                    f'[recording]\ndir = "{tmp / "recordings"}"\n', encoding="utf-8")  # fmt: skip
    return path


@dataclass
class Site:
    """A real web server on 127.0.0.1 over a real store file, and how to reach it."""

    tmp: Path
    config_path: Path
    store: Store  # the web's own connection
    server: WebServer

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10.0)

    def recordings(self) -> Path:
        return self.tmp / "recordings"

    def stop(self) -> None:
        self.server.stop(timeout=10)
        self.store.close()


def start_site(tmp: Path) -> Site:
    """Server + accounts: the installer made through /setup, a family member through /users/add."""
    config_path = write_config(tmp)
    cfg = load_config(config_path)
    store = Store(tmp / "calls.db", recover_calls=False).open()
    site = Site(tmp, config_path, store, serve_in_thread(WebContext.for_config(cfg, store, config_path),
                                                         "127.0.0.1", 0))  # fmt: skip
    with site.client() as client:
        page = client.get("/setup")
        response = client.post("/setup", data={"csrf_token": csrf_of(page.text), "name": INSTALLER[0],
                                               "password": INSTALLER[1], "password2": INSTALLER[1],
                                               "language": "ja"})  # fmt: skip
        assert response.status_code == 303, response.text
        page = client.get("/users")
        response = client.post("/users/add", data={"csrf_token": csrf_of(page.text), "name": FAMILY[0],
                                                   "password": FAMILY[1], "role": "family",
                                                   "language": "ja"})  # fmt: skip
        assert response.status_code == 303, response.text
    return site


@contextmanager
def login(site: Site, who: tuple[str, str] = FAMILY) -> Iterator[httpx.Client]:
    """A client logged in through the real login form (the one place tests log in)."""
    with site.client() as client:
        page = client.get("/login")
        response = client.post("/login", data={"csrf_token": csrf_of(page.text), "name": who[0],
                                               "password": who[1], "next": "/calls"})  # fmt: skip
        assert response.status_code == 303 and response.headers["location"] == "/calls", response.text
        yield client


def post_form(client: httpx.Client, page_path: str, action: str, data: dict[str, str],
              files: dict | None = None) -> httpx.Response:  # fmt: skip
    """Submit a form the way a browser does: CSRF token from the page the form is on."""
    token = csrf_of(client.get(page_path).text)
    return client.post(action, data={"csrf_token": token, **data}, files=files)
