"""Web sessions and the helpers every page uses: who is logged in, cookies, form fields, error pages.

Sessions are server-side (in memory): the cookie holds only a random token. Logging in
always issues a new token, so a token planted before login is never promoted. Anonymous
visitors get a separate short-lived pre-session (its own cookie) that carries the CSRF
token of the login and setup forms.
"""

from __future__ import annotations

import hmac
import http.cookies
import logging
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

from anyio import to_thread
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from screening.core.model import Language, Role
from screening.web.accounts import Account, UserFile, UsersFileError
from screening.web.context import WebContext
from screening.web.i18n import DEFAULT_LANGUAGE, PAGE_LANGUAGES, translate
from screening.web.login_throttle import (
    DEVICE_COOKIE,
    DEVICE_COOKIE_MAX_AGE,
    Attempt,
    LoginLimiter,
    LoginLimits,
)
from screening.web.templating import render, request_language

log = logging.getLogger(__name__)

SESSION_COOKIE = "mamoru_session"
PRE_SESSION_COOKIE = "mamoru_pre"  # separate name: a cross-site visit never overwrites a login (SameSite=Strict)
ANONYMOUS_SESSION_S = 2 * 3600.0
MAX_ANONYMOUS_SESSIONS = 5000
MAX_USER_SESSIONS = 500
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    language: Language


class LoginRequired(Exception):
    """No valid session: app.py answers with a redirect to the login page."""


# ---- sessions -------------------------------------------------------------------------


def session_stamp(password_hash: str) -> str:
    """Ties a session to the password it was opened with: a new password ends the session."""
    return hmac.new(b"mamoru-session", password_hash.encode(), "sha256").hexdigest()


@dataclass(slots=True)
class Session:
    token: str
    csrf: str
    expires: float
    user: str | None = None  # None: an anonymous pre-session (login and setup forms)
    stamp: str = ""


class SessionStore:
    """Sessions in memory; a restart logs everybody out, which is fine for a home appliance."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._users: OrderedDict[str, Session] = OrderedDict()
        self._anonymous: OrderedDict[str, Session] = OrderedDict()

    def get(self, token: str | None, *, anonymous: bool) -> Session | None:
        if not token:
            return None
        table = self._anonymous if anonymous else self._users
        with self._lock:
            session = table.get(token)
            if session is None:
                return None
            if session.expires <= self._clock():
                del table[token]
                return None
            return session

    def new_anonymous(self) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock() + ANONYMOUS_SESSION_S)
        with self._lock:
            self._anonymous[session.token] = session
            while len(self._anonymous) > MAX_ANONYMOUS_SESSIONS:
                self._anonymous.popitem(last=False)  # oldest first: a flood only costs other visitors a reload
        return session

    def login(self, user: str, stamp: str, hours: int, *, drop: Iterable[str | None] = ()) -> Session:
        """Always a brand-new token; the tokens in ``drop`` (the browser's old ones) stop working."""
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock() + hours * 3600.0,
                          user, stamp)  # fmt: skip
        with self._lock:
            for token in drop:
                if token:
                    self._users.pop(token, None)
                    self._anonymous.pop(token, None)
            self._users[session.token] = session
            while len(self._users) > MAX_USER_SESSIONS:
                self._users.popitem(last=False)
        return session

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._users.pop(token, None)
                self._anonymous.pop(token, None)

    def end_user(self, name: str) -> int:
        """Log ``name`` out everywhere; how many sessions ended."""
        wanted = name.casefold()
        with self._lock:
            tokens = [t for t, s in self._users.items() if s.user is not None and s.user.casefold() == wanted]
            for token in tokens:
                del self._users[token]
        return len(tokens)

    def restamp(self, name: str, old: str, new: str) -> None:
        """The same password was re-hashed with new parameters: its sessions stay valid."""
        wanted = name.casefold()
        with self._lock:
            for session in self._users.values():
                if session.user is not None and session.user.casefold() == wanted and session.stamp == old:
                    session.stamp = new


# ---- per-app state -------------------------------------------------------------------------


class AuthState:
    """Everything auth keeps for one app: accounts, sessions, the login limiter."""

    def __init__(self, ctx: WebContext, *, limits: LoginLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.ctx = ctx
        self.users = UserFile(ctx.users_path)
        self.sessions = SessionStore(clock)
        # Lock times must not jump with the wall clock (a Pi sets its clock by NTP after boot).
        self.limiter = LoginLimiter(limits or LoginLimits(), time.monotonic if clock is time.time else clock)

    def default_language(self) -> Language:
        """For accounts without a language of their own: the unit's voice language when the page has it."""
        language = self.ctx.config().voice.language
        return language if language in PAGE_LANGUAGES else DEFAULT_LANGUAGE

    def user_of(self, session: Session) -> User | None:
        """The session's user as the users file says now; None if removed or the password changed."""
        if session.user is None:
            return None
        account = self.users.find(session.user)
        if account is None or not hmac.compare_digest(session_stamp(account.password_hash), session.stamp):
            self.sessions.end(session.token)
            return None
        return User(account.name, account.role, account.language or self.default_language())


def install(app: Any, *, limits: LoginLimits | None = None, clock: Callable[[], float] = time.time) -> AuthState:
    """Give ``app`` (from create_app) its auth state now, e.g. with shorter lock times in a test."""
    state = AuthState(app.state.ctx, limits=limits, clock=clock)
    app.state.auth = state
    return state


def state_of(scope: Scope) -> AuthState:
    app_state = scope["app"].state
    if getattr(app_state, "auth", None) is None:
        app_state.auth = AuthState(app_state.ctx)
    return app_state.auth


def auth_state(request: Request) -> AuthState:
    return state_of(request.scope)


# ---- helpers for pages -------------------------------------------------------------------


def require_user(request: Request, role: Role = Role.FAMILY) -> User:
    """The logged-in user; LoginRequired without one, 403 if their role is not enough."""
    user = getattr(request.state, "user", None)
    if user is None:
        raise LoginRequired
    if not user.role.covers(role):
        raise HTTPException(status_code=403)
    return user


def safe_next(value: str | None, default: str = "/") -> str:
    """Only a path on this server: never another host (``//evil``, ``/\\evil``, ``http:``)."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(unicodedata.category(c).startswith("C") for c in value):  # browsers read \ as /
        return default
    try:
        parts = urlsplit(value)
    except ValueError:
        return default
    if parts.scheme or parts.netloc:
        return default
    return value


def login_url(request: Request) -> str:
    """``/login?next=<this page>`` for a page view; a form post goes to the start page after login."""
    if request.method not in ("GET", "HEAD") or request.url.path in ("/", "/login"):
        return "/login"
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if safe_next(target, "") == "":
        return "/login"
    return "/login?next=" + quote(target, safe="")


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None = None) -> str:
    cookie: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    if max_age is not None:
        morsel["max-age"] = max_age
    if secure:
        morsel["secure"] = True
    return morsel.OutputString()


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    header = cookie_header(name, value, secure=request.url.scheme == "https", max_age=max_age)
    response.headers.append("set-cookie", header)


def clear_cookie(response: Response, request: Request, name: str) -> None:
    set_cookie(response, request, name, "", max_age=0)


def form_field(form: FormData, name: str, limit: int = 4096) -> str:
    """A text field (a file sent under that name counts as empty)."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def choice(value: str, enum: type[StrEnum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        return None


def flash(request: Request, known: Iterable[str]) -> str | None:
    """The ``done=`` message key if it is one of ``known`` (never echo raw query text)."""
    key = request.query_params.get("done")
    return key if key in set(known) else None


def client_host(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def begin_attempt(request: Request, name: str) -> Attempt | float:
    """Reserve a password check for this source (or this known browser), or the seconds to wait."""
    limiter = auth_state(request).limiter
    return limiter.begin(limiter.keys(client_host(request), name, request.cookies.get(DEVICE_COOKIE)))


def set_device_cookie(request: Request, response: Response, name: str) -> None:
    """This browser logged in as ``name``: a lock on the name never applies to it (login_throttle.py)."""
    token = auth_state(request).limiter.device_token(name)
    set_cookie(response, request, DEVICE_COOKIE, token, max_age=DEVICE_COOKIE_MAX_AGE)


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    hours = auth_state(request).ctx.config().web.session_hours
    set_cookie(response, request, SESSION_COOKIE, session.token, max_age=hours * 3600)
    clear_cookie(response, request, PRE_SESSION_COOKIE)


def start_session(request: Request, account: Account) -> Session:
    state = auth_state(request)
    old = [request.cookies.get(SESSION_COOKIE), request.cookies.get(PRE_SESSION_COOKIE)]
    return state.sessions.login(account.name, session_stamp(account.password_hash),
                                state.ctx.config().web.session_hours, drop=old)  # fmt: skip


def error_page(request: Request, key: str, status_code: int) -> Response:
    return render(request, "error.html", {"message": translate(request_language(request), key)},
                  status_code=status_code)  # fmt: skip


async def save_language(request: Request, user: User, chosen: Language) -> bool:
    users = auth_state(request).users
    try:
        await to_thread.run_sync(lambda: users.replace_account(user.name, lambda a: replace(a, language=chosen)))
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot save the language of %s: %s", user.name, exc)
        return False
    return True
