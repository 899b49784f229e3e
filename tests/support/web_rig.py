"""A real web server (uvicorn on 127.0.0.1, port 0) with the accounts middleware over a real database
and ``web-users.json``, and the login-form helpers: the accounts, hardening and security tests' rig."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from blocklist.store import Store
from screening.config import load_config
from screening.web.app import create_app
from screening.core.model import Role
from screening.web.accounts import Account, UserFile, hash_password
from screening.web.login_throttle import LoginLimits
from screening.web.sessions import install
from screening.web.context import WebContext
from screening.web.i18n import UiLanguage, translate
from screening.web.server import WebServer, serve_in_thread

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ADMIN, ADMIN_PW = "admin", "kanri-pass-2024"
FAMILY, FAMILY_PW = "hanako", "hanako-no-pass"


class WebRig:
    """A real server over a real database and users file; ``client()`` gives an httpx client."""

    def __init__(self, tmp: Path, *, config_extra: str = "", limits: LoginLimits | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:  # fmt: skip
        self.data = tmp / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / "mamoru.toml"
        self.config_path.write_text(f'[store]\ndb = "{self.data / "mamoru.db"}"\n{config_extra}', encoding="utf-8")
        cfg = load_config(self.config_path, env={})
        self.store = Store(cfg.store.db)
        self.store.open()
        self.ctx = WebContext.for_config(cfg, self.store, self.config_path)
        self.app = create_app(self.ctx)
        self.auth = install(self.app, limits=limits)
        self.users = UserFile(self.ctx.users_path)
        self.server: WebServer = serve_in_thread(self.ctx, "127.0.0.1", 0, app=self.app, tls=tls)
        self._clients: list[httpx.Client] = []

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=self.url, follow_redirects=False, timeout=15.0, **kwargs)
        self._clients.append(client)
        return client

    def add_user(self, name: str, password: str, role: Role = Role.FAMILY, language: UiLanguage | None = None) -> None:
        self.users.add(Account(name, role, hash_password(password), language))

    def close(self) -> None:
        for client in self._clients:
            client.close()
        assert self.server.stop(timeout=10.0), "server did not stop"
        self.store.close()


def csrf_of(client: httpx.Client, path: str = "/login") -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.headers.get("location"))
    match = CSRF_RE.search(response.text)
    assert match, f"no CSRF field on {path}"
    return match.group(1)


def login(client: httpx.Client, name: str, password: str, next_url: str | None = None) -> httpx.Response:
    data = {"csrf_token": csrf_of(client), "name": name, "password": password}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/login", data=data)


def logged_in(rig: WebRig, name: str, password: str) -> httpx.Client:
    client = rig.client()
    response = login(client, name, password)
    assert response.status_code == 303, response.text
    return client


def post(client: httpx.Client, path: str, data: dict[str, str], *, token_from: str = "/account") -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf_of(client, token_from), **data})


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """name -> the whole Set-Cookie header of that cookie."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def ja(key: str, **values: object) -> str:
    return translate(UiLanguage.JA, key, **values)


def en(key: str, **values: object) -> str:
    return translate(UiLanguage.EN, key, **values)


def is_login_redirect(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login")
