"""The one web test rig: the real web page (uvicorn on 127.0.0.1, port 0) with its accounts middleware,
over a real SQLite store, a real config file and a real ``web-users.json``; and the ways tests get in.

- ``WebRig`` is the server. The ``rig`` fixture (tests/conftest.py) starts one in ``tmp_path`` with the
  config of the ``rig_config`` fixture, which a module overrides to test another unit.
- Accounts are made either straight into the users file (``rig.add_user``: the accounts, hardening and
  security tests) or through the real forms (``make_form_accounts``: the calls and lists pages).
- ``Web`` is a logged-in installer's browser session on a rig (``running_web``: the settings, health,
  statistics and recovery tests).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from blocklist.store import Store
from screening.config import Config, load_config
from screening.core.model import Language, Role
from screening.web.accounts import Account, UserFile, hash_password
from screening.web.app import create_app
from screening.web.context import WebContext
from screening.web.i18n import translate
from screening.web.login_throttle import LoginLimits
from screening.web.server import WebServer, serve_in_thread
from screening.web.sessions import AuthState, install

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

# Accounts written straight into the users file.
ADMIN, ADMIN_PW = "admin", "kanri-pass-2024"
FAMILY, FAMILY_PW = "hanako", "hanako-no-pass"
# Accounts made through the real /setup and /users/add forms: (name, password).
INSTALLER = ("kanrisha", "installer-pass-1")
FAMILY_MEMBER = ("musuko", "family-pass-12")

# ``{data}`` is the rig's data directory, ``{root}`` its tmp directory.
MINIMAL_CONFIG = '[store]\ndb = "{data}/mamoru.db"\n'

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

# The calls and lists pages' unit: the store and recordings where tests/test_web_calls.py's daemon writes.
SITE_CONFIG = '[line]\nhome_region = "JP"\n\n[store]\ndb = "{root}/calls.db"\n\n[recording]\ndir = "{root}/recordings"\n'


class WebRig:
    """A real web server over a real store and users file; ``client()`` gives an httpx client.

    ``config`` is TOML text (``{data}``/``{root}`` filled in, written to ``root/mamoru.toml``), the path
    of a config file already written, or None for the defaults (no file; the database under ``data``).
    """

    def __init__(self, root: Path, config: str | Path | None = MINIMAL_CONFIG, *, config_extra: str = "",
                 limits: LoginLimits | None = None, tls: tuple[Path, Path] | None = None) -> None:  # fmt: skip
        self.root = root
        self.data = root / "data"
        self.config_path: Path | None = root / "mamoru.toml" if isinstance(config, str) else config
        self._config_text = config + config_extra if isinstance(config, str) else None
        self._limits = limits
        self._tls = tls
        self._clients: list[httpx.Client] = []

    def start(self) -> WebRig:
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "recordings").mkdir(exist_ok=True)
        if self._config_text is not None and self.config_path is not None:
            self.config_path.write_text(self._config_text.format(data=self.data, root=self.root), encoding="utf-8")
        if self.config_path is not None:
            cfg = load_config(self.config_path, env={})
        else:
            cfg = load_config(None, env={}, system_path=self.root / "absent")
            cfg = cfg.with_overrides(db=self.data / "mamoru.db")
        self.cfg: Config = cfg
        # its own connection, as ``mamoru web`` runs: never recovers the daemon's open calls
        self.store = Store(cfg.store.db, recover_calls=False)
        self.store.open()
        self.ctx = WebContext.for_config(cfg, self.store, self.config_path)
        self.app = create_app(self.ctx)
        self.auth: AuthState = install(self.app, limits=self._limits)
        self.users = UserFile(self.ctx.users_path)
        self.server: WebServer = serve_in_thread(self.ctx, "127.0.0.1", 0, app=self.app, tls=self._tls)
        return self

    def __enter__(self) -> WebRig:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self.close()

    @property
    def url(self) -> str:
        return self.server.url

    def recordings(self) -> Path:
        return self.cfg.recording.dir

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client closed with the rig."""
        options: dict[str, Any] = {"follow_redirects": False, "timeout": 15.0, **kwargs}
        client = httpx.Client(base_url=self.url, **options)
        self._clients.append(client)
        return client

    def add_user(self, name: str, password: str, role: Role = Role.FAMILY, language: Language | None = None) -> None:
        """Straight into the users file (as ``mamoru web passwd`` does)."""
        self.users.add(Account(name, role, hash_password(password), language))

    def close(self) -> None:
        for client in self._clients:
            client.close()
        assert self.server.stop(timeout=10.0), "server did not stop"
        self.store.close()


# ---- forms and pages -----------------------------------------------------------------------


def csrf_in(page: str) -> str:
    """The CSRF token of the (first) form in a page."""
    match = CSRF_RE.search(page)
    assert match is not None, "no CSRF token in the page"
    return match[1]


def csrf_of(client: httpx.Client, path: str = "/login") -> str:
    """The CSRF token of the form on ``path``, fetched with ``client``."""
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.headers.get("location"))
    return csrf_in(response.text)


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


@contextmanager
def signed_in(rig: WebRig, who: tuple[str, str] = FAMILY_MEMBER) -> Iterator[httpx.Client]:
    """A client logged in through the real login form, landing on /calls; closed on leaving."""
    with rig.client() as client:
        response = login(client, *who, next_url="/calls")
        assert response.status_code == 303 and response.headers["location"] == "/calls", response.text
        yield client


def post(client: httpx.Client, path: str, data: dict[str, str], *, token_from: str = "/account") -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf_of(client, token_from), **data})


def post_form(client: httpx.Client, page_path: str, action: str, data: dict[str, str],
              files: dict[str, Any] | None = None) -> httpx.Response:  # fmt: skip
    """Submit a form the way a browser does: CSRF token from the page the form is on."""
    return client.post(action, data={"csrf_token": csrf_of(client, page_path), **data}, files=files)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """name -> the whole Set-Cookie header of that cookie."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def is_login_redirect(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login")


def ja(key: str, **values: object) -> str:
    return translate(Language.JA, key, **values)


def en(key: str, **values: object) -> str:
    return translate(Language.EN, key, **values)


def items(page: str) -> dict[str, tuple[str, str]]:
    """{item: (severity, message)} as shown on the /health page."""
    found = re.findall(r'<p id="health-(\w+)" data-severity="(\w+)">.*?<span class="message">(.*?)</span></p>', page,
                       re.S)  # fmt: skip
    return {name: (severity, html.unescape(message)) for name, severity, message in found}


# ---- accounts through the real forms -------------------------------------------------------


def set_up_installer(client: httpx.Client) -> str:
    """First run, through the real setup form: the first account is the installer. Returns the CSRF token."""
    name, password = INSTALLER
    response = client.post("/setup", data={"csrf_token": csrf_of(client, "/setup"), "name": name,
                                           "password": password, "password2": password, "language": "ja"})  # fmt: skip
    assert response.status_code == 303, response.text
    return csrf_of(client, "/settings")


def log_in(client: httpx.Client, name: str, password: str) -> str:
    """Through the real login form; returns the logged-in session's CSRF token."""
    response = login(client, name, password, next_url="/")
    assert response.status_code == 303, response.text
    return csrf_of(client, "/settings")


def make_form_accounts(rig: WebRig) -> WebRig:
    """The installer made through /setup, a family member through /users/add."""
    with rig.client() as client:
        set_up_installer(client)
        name, password = FAMILY_MEMBER
        response = post_form(client, "/users", "/users/add", {"name": name, "password": password,
                                                              "role": "family", "language": "ja"})  # fmt: skip
        assert response.status_code == 303, response.text
    return rig


def start_site(root: Path) -> WebRig:
    """A started rig on SITE_CONFIG with the form-made accounts (for a rig beside the ``rig`` fixture's)."""
    return make_form_accounts(WebRig(root, SITE_CONFIG).start())


# ---- a logged-in installer's session -------------------------------------------------------


@dataclass
class Web:
    """The installer's browser session on a rig, after first-run setup: ``client`` is logged in."""

    rig: WebRig
    client: httpx.Client
    token: str = ""

    @property
    def server(self) -> WebServer:
        return self.rig.server

    @property
    def ctx(self) -> WebContext:
        return self.rig.ctx

    @property
    def config_path(self) -> Path | None:
        return self.rig.config_path

    @property
    def data(self) -> Path:
        return self.rig.data

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kwargs)


def installer_session(rig: WebRig) -> Web:
    client = rig.client(timeout=30.0)
    return Web(rig, client, set_up_installer(client))


def new_client(server: WebServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30.0, follow_redirects=False)


def add_family_member(web: Web) -> None:
    name, password = FAMILY_MEMBER
    response = web.post("/users/add", {"name": name, "password": password, "role": "family", "language": "ja"})
    assert response.status_code == 303, response.text


def write_config(root: Path, text: str = CONFIG) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = root / "mamoru.toml"
    path.write_text(text.format(data=data), encoding="utf-8")
    return path


def running_web(root: Path, config_path: Path | None) -> Iterator[Web]:
    """The installer's session on a rig over ``config_path`` (None: the defaults), for a ``yield from``."""
    with WebRig(root, config_path) as rig:
        yield installer_session(rig)


def modem_config(root: Path) -> str:
    """A unit on a modem line (not the demo line, so "ok" really means ok) that transcribes."""
    text = CONFIG.replace('uri = "sim:"', 'uri = "modem:///dev/mamoru-modem"')
    return text.replace("transcribe = false", f'transcribe = true\nmodels_dir = "{root / "models"}"')


def running_modem_web(root: Path) -> Iterator[Web]:
    yield from running_web(root, write_config(root, modem_config(root)))
