"""Web accounts, sessions, CSRF protection and login rate limiting; the setup, login, account and users pages.

- Accounts live in ``web-users.json`` next to the database (``mamoru-web-users/1``,
  docs/provisioning.md), written by `mamoru provision apply`, by `mamoru web passwd`
  and by these pages; it is re-read whenever it changes. A damaged file lets nobody
  in and never re-opens first-run setup (fail closed).
- Sessions are server-side (in memory): the cookie holds only a random token. Logging
  in always issues a new token, so a token planted before login is never promoted.
  Anonymous visitors get a separate short-lived pre-session (its own cookie) that
  carries the CSRF token of the login and setup forms.
- :class:`SessionMiddleware` resolves the user, sends everyone to ``/setup`` while no
  account exists, limits request bodies and rejects any unsafe request whose CSRF
  token or Origin does not match, before a page handler runs.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import http.cookies
import json
import logging
import os
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
from anyio import to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from screening.core.files import atomic_write_bytes
from screening.core.model import Role
from screening.web.context import WebContext
from screening.web.i18n import DEFAULT_LANGUAGE, UiLanguage, register, translate
from screening.web.limits import (
    ANONYMOUS_BODY_TIMEOUT_S,
    DRAIN_LIMIT_BYTES,
    MULTIPART,
    USER_BODY_TIMEOUT_S,
    BodyTooLarge,
    ClientGone,
    Sender,
    SpooledBody,
    body_limit,
)
from screening.web.login_throttle import DEVICE_COOKIE, DEVICE_COOKIE_MAX_AGE, Attempt, LoginLimiter, LoginLimits
from screening.web.templating import LANG_COOKIE, render, request_language

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
USERS_FORMAT = "mamoru-web-users/1"
SESSION_COOKIE = "mamoru_session"
PRE_SESSION_COOKIE = "mamoru_pre"  # separate name: a cross-site visit never overwrites a login (SameSite=Strict)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; nobody needs to make us hash megabytes
MAX_NAME_LENGTH = 32
ANONYMOUS_SESSION_S = 2 * 3600.0
MAX_ANONYMOUS_SESSIONS = 5000
MAX_USER_SESSIONS = 500
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
HASH_SLOTS = 2  # concurrent argon2 runs (64 MiB each): a Pi must survive a burst of logins
HASH_SLOT_WAIT_S = 30.0
# Paths that work before the first account exists (everything else redirects to /setup).
FIRST_RUN_PATHS = frozenset({"/setup", "/language"})


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    language: UiLanguage


class LoginRequired(Exception):
    """No valid session: app.py answers with a redirect to the login page."""


# ---- messages --------------------------------------------------------------------

register({
    "ja": {
        "auth.name": "ログイン名",
        "auth.password": "パスワード",
        "auth.password2": "パスワード（確認のため、もう一度）",
        "auth.password_hint": "10文字以上で、ログイン名とは違うものにしてください。",
        "auth.language": "画面の言葉",
        "auth.language.ja": "日本語",
        "auth.language.en": "English（英語）",
        "auth.role": "役割",
        "auth.role.family": "家族",
        "auth.role.installer": "設置担当者",
        "auth.role_hint": "家族：通話の記録と番号リストを見たり、変えたりできます。設置担当者：そのほかに、回線や本体の設定もできます。",
        "auth.login.title": "ログイン",
        "auth.login.intro": "電話の見守り（まもる）の画面です。ログイン名とパスワードを入れてください。",
        "auth.login.submit": "ログインする",
        "auth.login.failed": "ログイン名かパスワードが違います。",
        "auth.login.locked": "何度も間違えたため、しばらくログインできません。{minutes}分ほど待ってから、もう一度お試しください。",
        "auth.login.broken": "ログインの情報が読み込めません。設置担当者にご連絡ください。",
        "auth.login.busy": "ただいま混み合っています。少し待ってから、もう一度お試しください。",
        "auth.setup.title": "はじめての設定",
        "auth.setup.intro": "この画面を守るために、まずログイン名とパスワードを決めてください。この人は設置担当者として、すべての設定を変えられます。",
        "auth.setup.submit": "決める",
        "auth.logged_out": "ログアウトしました。",
        "auth.account.title": "ご自分の設定",
        "auth.account.you": "{name} さん（{role}）としてログインしています。",
        "auth.account.password_title": "パスワードを変える",
        "auth.account.language_title": "画面の言葉を変える",
        "auth.account.language_submit": "この言葉にする",
        "auth.account.users_link": "ログインできる人の管理",
        "auth.current": "今のパスワード",
        "auth.new_password": "新しいパスワード",
        "auth.new_password2": "新しいパスワード（確認のため、もう一度）",
        "auth.password_submit": "パスワードを変える",
        "auth.users.title": "ログインできる人",
        "auth.users.intro": "この画面にログインできる人の一覧です。",
        "auth.users.you": "（あなた）",
        "auth.users.remove": "削除",
        "auth.users.add_title": "人を追加する",
        "auth.users.add_submit": "追加する",
        "auth.users.none_language": "決めていません",
        "auth.error.name_required": "ログイン名を入れてください。",
        "auth.error.name_invalid": "ログイン名は32文字以内で、前後に空白を入れないでください。",
        "auth.error.name_taken": "このログイン名はすでに使われています。",
        "auth.error.too_short": "パスワードは10文字以上にしてください。",
        "auth.error.too_long": "パスワードが長すぎます。",
        "auth.error.same_as_name": "ログイン名と同じパスワードは使えません。",
        "auth.error.mismatch": "2つのパスワードが同じではありません。",
        "auth.error.wrong_current": "今のパスワードが違います。",
        "auth.error.choice": "一覧の中から選んでください。",
        "auth.error.remove_self": "ご自分は削除できません。",
        "auth.error.no_such_user": "その人は見つかりませんでした。",
        "auth.error.file": "ログインの情報を保存できませんでした。もう一度お試しください。",
        "auth.done.password_changed": "パスワードを変えました。ほかの機器では、もう一度ログインしてください。",
        "auth.done.language_saved": "画面の言葉を変えました。",
        "auth.done.user_added": "追加しました。",
        "auth.done.user_removed": "削除しました。その人はすぐにログアウトされます。",
        "auth.too_large": "送られた内容が大きすぎます。",
        "auth.unsupported": "ここでは、この送り方は受け付けていません。",
        "auth.too_slow": "送られるのに時間がかかりすぎました。もう一度お試しください。",
        "auth.redirecting": "移動しています。自動で移らないときは、こちらを押してください。",
    },
    "en": {
        "auth.name": "User name",
        "auth.password": "Password",
        "auth.password2": "Password (again, to check)",
        "auth.password_hint": "At least 10 characters, and not the user name.",
        "auth.language": "Page language",
        "auth.language.ja": "日本語 (Japanese)",
        "auth.language.en": "English",
        "auth.role": "Role",
        "auth.role.family": "Family",
        "auth.role.installer": "Installer",
        "auth.role_hint": "Family: see and change calls and number lists. Installer: also the line and system settings.",
        "auth.login.title": "Log in",
        "auth.login.intro": "This is the mamoru call guard. Please enter your user name and password.",
        "auth.login.submit": "Log in",
        "auth.login.failed": "The user name or the password is wrong.",
        "auth.login.locked": "Too many wrong attempts. Please wait about {minutes} minute(s) and try again.",
        "auth.login.broken": "The login information cannot be read. Please contact the installer.",
        "auth.login.busy": "The unit is busy. Please wait a moment and try again.",
        "auth.setup.title": "First-time setup",
        "auth.setup.intro": "To protect this page, first choose a user name and a password. This person is the "
                            "installer and can change every setting.",
        "auth.setup.submit": "Save",
        "auth.logged_out": "You have logged out.",
        "auth.account.title": "Your account",
        "auth.account.you": "Logged in as {name} ({role}).",
        "auth.account.password_title": "Change the password",
        "auth.account.language_title": "Change the page language",
        "auth.account.language_submit": "Use this language",
        "auth.account.users_link": "Manage who can log in",
        "auth.current": "Current password",
        "auth.new_password": "New password",
        "auth.new_password2": "New password (again, to check)",
        "auth.password_submit": "Change the password",
        "auth.users.title": "Who can log in",
        "auth.users.intro": "Everyone who can log in to this page.",
        "auth.users.you": "(you)",
        "auth.users.remove": "Remove",
        "auth.users.add_title": "Add a person",
        "auth.users.add_submit": "Add",
        "auth.users.none_language": "not set",
        "auth.error.name_required": "Please enter a user name.",
        "auth.error.name_invalid": "A user name has at most 32 characters and no spaces at either end.",
        "auth.error.name_taken": "This user name is already taken.",
        "auth.error.too_short": "The password needs at least 10 characters.",
        "auth.error.too_long": "The password is too long.",
        "auth.error.same_as_name": "The password must not be the user name.",
        "auth.error.mismatch": "The two passwords are not the same.",
        "auth.error.wrong_current": "The current password is wrong.",
        "auth.error.choice": "Please choose one of the options.",
        "auth.error.remove_self": "You cannot remove yourself.",
        "auth.error.no_such_user": "There is no such user.",
        "auth.error.file": "The login information could not be saved. Please try again.",
        "auth.done.password_changed": "Password changed. Other devices need to log in again.",
        "auth.done.language_saved": "Page language changed.",
        "auth.done.user_added": "Added.",
        "auth.done.user_removed": "Removed. That person is logged out at once.",
        "auth.too_large": "What was sent is too large.",
        "auth.unsupported": "This kind of upload is not accepted here.",
        "auth.too_slow": "Sending took too long. Please try again.",
        "auth.redirecting": "Opening the page. If nothing happens, press here.",
    },
})  # fmt: skip


# ---- names and passwords -------------------------------------------------------------


def name_problem(name: str) -> str | None:
    """A message key if ``name`` cannot be a user name."""
    if not name:
        return "auth.error.name_required"
    if (len(name) > MAX_NAME_LENGTH or name != name.strip()
            or any(unicodedata.category(c).startswith("C") for c in name)):  # fmt: skip
        return "auth.error.name_invalid"
    return None


def password_problems(name: str, password: str, password2: str, *, field_name: str = "password",
                      field_name2: str = "password2") -> dict[str, str]:  # fmt: skip
    """Form field -> message key for a new password; empty when it is acceptable."""
    problems: dict[str, str] = {}
    if len(password) < MIN_PASSWORD_LENGTH:
        problems[field_name] = "auth.error.too_short"
    elif len(password) > MAX_PASSWORD_LENGTH:
        problems[field_name] = "auth.error.too_long"
    elif name and password.casefold() == name.casefold():
        problems[field_name] = "auth.error.same_as_name"
    elif password != password2:
        problems[field_name2] = "auth.error.mismatch"
    return problems


_HASHER = PasswordHasher()  # argon2id with the library's parameters, like `mamoru provision`
_hash_slots = threading.BoundedSemaphore(HASH_SLOTS)
_dummy_hash: str | None = None


class HashBusy(Exception):
    """Every argon2 slot stayed busy for HASH_SLOT_WAIT_S."""


@contextlib.contextmanager
def _hash_slot() -> Any:
    if not _hash_slots.acquire(timeout=HASH_SLOT_WAIT_S):
        raise HashBusy
    try:
        yield
    finally:
        _hash_slots.release()


def hash_password(password: str) -> str:
    with _hash_slot():
        return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """argon2 check; with no hash (unknown user) a dummy hash is checked, so both take as long."""
    global _dummy_hash
    with _hash_slot():
        if password_hash is None:
            if _dummy_hash is None:
                _dummy_hash = _HASHER.hash(secrets.token_urlsafe(16))
            password_hash = _dummy_hash
            with contextlib.suppress(VerificationError, InvalidHashError):
                _HASHER.verify(password_hash, password)
            return False
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return False


# ---- the users file -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password_hash: str
    language: UiLanguage | None = None


class UsersFileError(Exception):
    """The users file cannot be read or written; the message names the file and the problem."""


class UserExists(UsersFileError):
    pass


class NoSuchUser(UsersFileError):
    pass


class SetupDone(UsersFileError):
    """First-run setup was asked for, but an account exists (or the file is damaged)."""


def _parse_accounts(document: object, path: Path) -> tuple[Account, ...]:
    if not isinstance(document, dict) or document.get("format") != USERS_FORMAT:
        raise UsersFileError(f"{path}: not a {USERS_FORMAT} file")
    raw_users = document.get("users", [])
    if not isinstance(raw_users, list):
        raise UsersFileError(f"{path}: 'users' is not a list")
    accounts: list[Account] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_users):
        try:
            name, role, password_hash = raw["name"], Role(raw["role"]), raw["password_hash"]
            language = UiLanguage(raw["language"]) if raw.get("language") else None
            if not isinstance(name, str) or not isinstance(password_hash, str) or not name:
                raise TypeError("name and password_hash must be strings")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("web users %s: user %d ignored: %s", path, index, exc or type(exc).__name__)
            continue
        if name.casefold() in seen:
            log.error("web users %s: user %r appears twice; the second is ignored", path, name)
            continue
        seen.add(name.casefold())
        accounts.append(Account(name, role, password_hash, language))
    return tuple(accounts)


class UserFile:
    """``web-users.json``: read when it changed (any writer: provisioning, CLI, these pages), written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._signature: tuple[int, int, int] | None = None
        self._accounts: tuple[Account, ...] = ()
        self._exists = False
        self._broken: str | None = None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._signature, self._accounts, self._exists, self._broken = None, (), False, None
            return
        except OSError as exc:
            self._fail(f"{self.path}: cannot read: {exc.strerror or exc}")
            return
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)  # a rename-into-place changes the inode
        if signature == self._signature:
            return
        self._signature, self._exists = signature, True
        try:
            document = json.loads(self.path.read_bytes())
            self._accounts, self._broken = _parse_accounts(document, self.path), None
        except (OSError, ValueError, UsersFileError) as exc:
            self._fail(str(exc) if isinstance(exc, UsersFileError) else f"{self.path}: {exc}")

    def _fail(self, problem: str) -> None:
        if problem != self._broken:
            log.error("web users file unusable, nobody can log in until it is fixed: %s", problem)
        self._accounts, self._exists, self._broken = (), True, problem

    def accounts(self) -> tuple[Account, ...]:
        with self._lock:
            self._refresh()
            return self._accounts

    @property
    def broken(self) -> str | None:
        """Why the file is unusable, or None."""
        with self._lock:
            self._refresh()
            return self._broken

    def setup_needed(self) -> bool:
        """No account at all; a damaged file does NOT count as empty (it must not re-open setup)."""
        with self._lock:
            self._refresh()
            return not self._accounts and self._broken is None

    def find(self, name: str) -> Account | None:
        wanted = name.casefold()
        return next((a for a in self.accounts() if a.name.casefold() == wanted), None)

    # -- writing --

    def add(self, account: Account, *, first: bool = False) -> None:
        """Add a new account; ``first``: only while there is none (first-run setup)."""

        def change(users: list[dict[str, Any]]) -> None:
            if first and users:
                raise SetupDone(f"{self.path}: an account exists already")
            if any(str(u.get("name", "")).casefold() == account.name.casefold() for u in users):
                raise UserExists(account.name)
            users.append(_account_json(account))

        with self._lock:
            if first and self._broken_now():
                raise SetupDone(f"{self.path}: the file is damaged")
            self._update(change)

    def replace_account(self, name: str, change: Callable[[Account], Account]) -> Account:
        """Rewrite one account (password, role, language); NoSuchUser if it is gone."""
        done: list[Account] = []

        def apply(users: list[dict[str, Any]]) -> None:
            for index, raw in enumerate(users):
                if str(raw.get("name", "")).casefold() == name.casefold():
                    (current,) = _parse_accounts({"format": USERS_FORMAT, "users": [raw]}, self.path) or (None,)
                    if current is None:
                        raise UsersFileError(f"{self.path}: the entry of {name!r} is damaged")
                    new = change(current)
                    users[index] = {**raw, **_account_json(new)}
                    if new.language is None:
                        users[index].pop("language", None)
                    done.append(new)
                    return
            raise NoSuchUser(name)

        self._update(apply)
        return done[0]

    def remove(self, name: str) -> None:
        def apply(users: list[dict[str, Any]]) -> None:
            kept = [u for u in users if str(u.get("name", "")).casefold() != name.casefold()]
            if len(kept) == len(users):
                raise NoSuchUser(name)
            users[:] = kept

        self._update(apply)

    def _broken_now(self) -> bool:
        self._refresh()
        return self._broken is not None

    def _update(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        """Read the file as it is now, change its users, write it back whole (keeps issuer, household ...)."""
        with self._lock:
            try:
                document = json.loads(self.path.read_bytes())
            except FileNotFoundError:
                document = {"format": USERS_FORMAT, "users": []}
            except (OSError, ValueError) as exc:
                raise UsersFileError(f"{self.path}: cannot read: {exc}") from None
            _parse_accounts(document, self.path)  # refuses to rewrite a file it does not understand
            users = list(document.get("users", []))
            change(users)
            document["users"] = users
            write_private_file(self.path, (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode())
            self._signature = None  # re-read on next use, whatever the clock resolution


def _account_json(account: Account) -> dict[str, Any]:
    data: dict[str, Any] = {"name": account.name, "role": account.role.value, "password_hash": account.password_hash}
    if account.language is not None:
        data["language"] = account.language.value
    return data


def write_private_file(path: Path, data: bytes) -> None:
    """Atomic, mode 0600 (password hashes); as root, owned like the file or its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        owner = path.stat()
    except FileNotFoundError:
        owner = path.parent.stat()
    # `mamoru web passwd` run with sudo must leave a file the service user can still read.
    atomic_write_bytes(path, data, mode=0o600, owner_like=owner)


# ---- sessions -------------------------------------------------------------------------


def _stamp(password_hash: str) -> str:
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

    def default_language(self) -> UiLanguage:
        """For accounts without a language of their own: the unit's voice language when the page has it."""
        try:
            return UiLanguage(self.ctx.config().voice.language.value)
        except ValueError:
            return DEFAULT_LANGUAGE

    def user_of(self, session: Session) -> User | None:
        """The session's user as the users file says now; None if removed or the password changed."""
        if session.user is None:
            return None
        account = self.users.find(session.user)
        if account is None or not hmac.compare_digest(_stamp(account.password_hash), session.stamp):
            self.sessions.end(session.token)
            return None
        return User(account.name, account.role, account.language or self.default_language())


def install(app: Any, *, limits: LoginLimits | None = None, clock: Callable[[], float] = time.time) -> AuthState:
    """Give ``app`` (from create_app) its auth state now, e.g. with shorter lock times in a test."""
    state = AuthState(app.state.ctx, limits=limits, clock=clock)
    app.state.auth = state
    return state


def _state(scope: Scope) -> AuthState:
    app_state = scope["app"].state
    if getattr(app_state, "auth", None) is None:
        app_state.auth = AuthState(app_state.ctx)
    return app_state.auth


def auth_state(request: Request) -> AuthState:
    return _state(request.scope)


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


def _cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> str:
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


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.headers.append("set-cookie", _cookie(name, value, secure=request.url.scheme == "https", max_age=max_age))


def _clear_cookie(response: Response, request: Request, name: str) -> None:
    _set_cookie(response, request, name, "", max_age=0)


def _field(form: FormData, name: str, limit: int = 4096) -> str:
    """A text field (a file sent under that name counts as empty)."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _choice(value: str, enum: type[StrEnum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        return None


def flash(request: Request, known: Iterable[str]) -> str | None:
    """The ``done=`` message key if it is one of ``known`` (never echo raw query text)."""
    key = request.query_params.get("done")
    return key if key in set(known) else None


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _begin_attempt(request: Request, name: str) -> Attempt | float:
    """Reserve a password check for this source (or this known browser), or the seconds to wait."""
    limiter = auth_state(request).limiter
    return limiter.begin(limiter.keys(_client(request), name, request.cookies.get(DEVICE_COOKIE)))


def _device_cookie_for(request: Request, response: Response, name: str) -> None:
    """This browser logged in as ``name``: a lock on the name never applies to it (login_throttle.py)."""
    token = auth_state(request).limiter.device_token(name)
    _set_cookie(response, request, DEVICE_COOKIE, token, max_age=DEVICE_COOKIE_MAX_AGE)


def _session_cookie_for(request: Request, response: Response, session: Session) -> None:
    hours = auth_state(request).ctx.config().web.session_hours
    _set_cookie(response, request, SESSION_COOKIE, session.token, max_age=hours * 3600)
    _clear_cookie(response, request, PRE_SESSION_COOKIE)


def _start_session(request: Request, account: Account) -> Session:
    state = auth_state(request)
    old = [request.cookies.get(SESSION_COOKIE), request.cookies.get(PRE_SESSION_COOKIE)]
    return state.sessions.login(account.name, _stamp(account.password_hash), state.ctx.config().web.session_hours,
                                drop=old)  # fmt: skip


# ---- middleware ---------------------------------------------------------------------------


def _host_of(url: str) -> str | None:
    """``scheme://host[:port]`` as ``host:port`` with the default port dropped; None if unparsable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return host if port is None or port == default else f"{host}:{port}"


def _same_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """Origin (else Referer), when sent, must name this server (defence in depth behind the CSRF token)."""
    host = headers.get("host")
    if not host:
        return True
    expected = _host_of(f"{scheme}://{host}")
    origin = headers.get("origin")
    if origin is not None:
        return origin != "null" and _host_of(origin) == expected
    referer = headers.get("referer")
    if referer is not None:
        return _host_of(referer) == expected
    return True


class SessionMiddleware:
    """Resolves the user, sends everyone to /setup before the first account, checks bodies and CSRF."""

    def __init__(self, app: ASGIApp, *, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        state = _state(scope)
        request = Request(scope, receive)
        user, session = self._resolve(state, request)
        new_anonymous: Session | None = None
        if session is None and request.method in ("GET", "HEAD"):
            session = new_anonymous = state.sessions.new_anonymous()
        request_state = scope.setdefault("state", {})
        request_state["user"] = user
        request_state["csrf_token"] = session.csrf if session else ""

        response = self._refuse_or_redirect(state, request, user)
        if response is not None:
            await response(scope, receive, self._with_cookies(send, request, new_anonymous))
            return
        if request.method not in UNSAFE_METHODS:
            await self.app(scope, receive, self._with_cookies(send, request, new_anonymous))
            return
        checked = await self._check_unsafe(request, user, session, receive)
        if isinstance(checked, Response):
            await checked(scope, receive, send)
            return
        try:
            await self.app(scope, checked.replay(receive), self._with_cookies(send, request, new_anonymous))
        finally:
            checked.close()

    def _resolve(self, state: AuthState, request: Request) -> tuple[User | None, Session | None]:
        """(user, session): a valid login first, else the anonymous pre-session."""
        session = state.sessions.get(request.cookies.get(SESSION_COOKIE), anonymous=False)
        if session is not None:
            user = state.user_of(session)
            if user is not None:
                return user, session
        return None, state.sessions.get(request.cookies.get(PRE_SESSION_COOKIE), anonymous=True)

    @staticmethod
    def _refuse_or_redirect(state: AuthState, request: Request, user: User | None) -> Response | None:
        path = request.url.path
        if path not in FIRST_RUN_PATHS and state.users.setup_needed():
            return RedirectResponse("/setup", status_code=303)
        if (user is None and request.method == "GET" and SESSION_COOKIE not in request.cookies
                and request.headers.get("sec-fetch-site") == "cross-site"
                and request.headers.get("sec-fetch-mode") == "navigate"):  # fmt: skip
            # A link from an alert e-mail: SameSite=Strict withholds the login cookie on this first,
            # cross-site request. Reloading from our own page makes it same-site, and the cookie comes.
            return _bounce(request)
        return None

    async def _check_unsafe(self, request: Request, user: User | None, session: Session | None,
                            receive: Receive) -> Response | SpooledBody:  # fmt: skip
        """The CSRF check; the body read (spooled, capped by sender and route) and ready to replay."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        sender = Sender.USER if user is not None else Sender.ANONYMOUS if session is not None else Sender.NOBODY
        limit = body_limit(sender, request.url.path, content_type)
        if limit == 0:
            # Decided from the headers alone: not one byte of the body is read (issue 12.9).
            log.info("web: %s %s refused before its body: %s sender, %s", request.method, request.url.path,
                     sender.value, content_type or "no content type")  # fmt: skip
            key, status = ("error.csrf", 403) if sender is Sender.NOBODY else ("auth.unsupported", 415)
            return _closing(_error(request, key, status))
        declared = request.headers.get("content-length", "")
        # A user's too-large upload is drained for a clean 413 page; an anonymous one is not worth reading.
        if declared.isdigit() and int(declared) > (DRAIN_LIMIT_BYTES if sender is Sender.USER else limit):
            return _closing(_error(request, "auth.too_large", 413))
        body = SpooledBody(self.ctx.users_path.parent)
        try:
            with anyio.fail_after(USER_BODY_TIMEOUT_S if sender is Sender.USER else ANONYMOUS_BODY_TIMEOUT_S):
                await body.read(receive, limit, drain=sender is Sender.USER)
        except TimeoutError:  # a body trickled in to hold the connection
            body.close()
            return _closing(_error(request, "auth.too_slow", 408))
        except BodyTooLarge:
            body.close()
            return _closing(_error(request, "auth.too_large", 413))
        except ClientGone:
            body.close()
            return _error(request, "error.bad_request", 400)
        refused = await self._csrf_refusal(request, session, content_type, body, receive)
        if refused is not None:
            body.close()
            return refused
        return body

    @staticmethod
    async def _csrf_refusal(request: Request, session: Session | None, content_type: str, body: SpooledBody,
                            receive: Receive) -> Response | None:  # fmt: skip
        if not _same_origin(request.headers, request.url.scheme):
            log.warning("web: %s %s refused: Origin/Referer is another site", request.method, request.url.path)
            return _error(request, "error.csrf", 403)
        token = request.headers.get(CSRF_HEADER)
        if token is None and content_type in (MULTIPART, "application/x-www-form-urlencoded"):
            try:
                async with Request(request.scope, body.replay(receive)).form() as form:
                    token = _field(form, CSRF_FIELD, 256)
            except Exception as exc:  # noqa: BLE001 -- any parser failure on hostile input is the client's error
                log.info("web: %s %s: unreadable form: %s", request.method, request.url.path, exc)
                return _error(request, "error.bad_request", 400)
        if session is None or not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            log.info("web: %s %s refused: missing or wrong CSRF token", request.method, request.url.path)
            return _error(request, "error.csrf", 403)
        return None

    @staticmethod
    def _with_cookies(send: Send, request: Request, new_anonymous: Session | None) -> Send:
        if new_anonymous is None:
            return send
        header = _cookie(PRE_SESSION_COOKIE, new_anonymous.token, secure=request.url.scheme == "https")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", header.encode("latin-1"))]
            await send(message)

        return send_with_cookie


def _error(request: Request, key: str, status_code: int) -> Response:
    return render(request, "error.html", {"message": translate(request_language(request), key)},
                  status_code=status_code)  # fmt: skip


def _closing(response: Response) -> Response:
    """A refusal sent before the body was read (or all of it): the connection cannot be reused."""
    response.headers["connection"] = "close"
    return response


def _bounce(request: Request) -> Response:
    target = safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    url = html.escape(target, quote=True)
    text = html.escape(translate(request_language(request), "auth.redirecting"))
    body = (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={url}">'
            f'</head><body><p><a href="{url}">{text}</a></p></body></html>')  # fmt: skip
    return HTMLResponse(body)


# ---- pages ---------------------------------------------------------------------------------

_LANGUAGES = [lang.value for lang in UiLanguage]
_ROLES = [role.value for role in Role]


def _language_switch(request: Request) -> dict[str, str]:
    """The other language, for the switch button on pages seen before login."""
    current = request_language(request)
    other = UiLanguage.EN if current is UiLanguage.JA else UiLanguage.JA
    return {"switch_to": other.value, "here": safe_next(request.url.path)}


async def setup_page(request: Request) -> Response:
    state = auth_state(request)
    if not state.users.setup_needed():
        return RedirectResponse("/login", status_code=303)
    if request.method == "GET":
        return render(request, "setup.html", {"errors": {}, "name": "", "language": request_language(request).value,
                                              **_language_switch(request)})  # fmt: skip
    form = await request.form()
    name = _field(form, "name", 256).strip()
    password, password2 = _field(form, "password"), _field(form, "password2")
    language = _choice(_field(form, "language", 16), UiLanguage)
    errors = password_problems(name, password, password2)
    if problem := name_problem(name):
        errors["name"] = problem
    if language is None:
        errors["language"] = "auth.error.choice"
    if errors:
        return render(request, "setup.html", {"errors": errors, "name": name[:MAX_NAME_LENGTH * 2],
                                              "language": (language or request_language(request)).value,
                                              **_language_switch(request)}, status_code=400)  # fmt: skip
    try:
        password_hash = await to_thread.run_sync(hash_password, password)
    except HashBusy:
        return _error(request, "auth.login.busy", 503)
    account = Account(name, Role.INSTALLER, password_hash, language)
    try:
        await to_thread.run_sync(lambda: state.users.add(account, first=True))
    except SetupDone:
        return RedirectResponse("/login", status_code=303)
    except (UsersFileError, OSError) as exc:
        log.error("web setup: cannot write the users file: %s", exc)
        return _error(request, "auth.error.file", 503)
    log.warning("web: first account %r (installer) created from %s", name, _client(request))
    session = _start_session(request, account)
    response = RedirectResponse("/", status_code=303)
    _session_cookie_for(request, response, session)
    _device_cookie_for(request, response, account.name)
    return response


def _login_form(request: Request, *, status_code: int = 200, notice: str | None = None, bad: bool = True,
                name: str = "", next_url: str = "/", **fill: object) -> Response:  # fmt: skip
    """``notice``: a message key, shown translated (``fill`` fills in its placeholders)."""
    state = auth_state(request)
    if notice is None and state.users.broken:
        notice = "auth.login.broken"
    text = translate(request_language(request), notice, **fill) if notice else None
    values = {"notice": text, "notice_bad": bad, "name": name[:MAX_NAME_LENGTH * 2], "next": next_url,
              **_language_switch(request)}  # fmt: skip
    return render(request, "login.html", values, status_code=status_code)


async def login_page(request: Request) -> Response:
    state = auth_state(request)
    if request.method == "GET":
        next_url = safe_next(request.query_params.get("next"))
        if request.state.user is not None:
            return RedirectResponse(next_url, status_code=303)
        notice = "auth.logged_out" if request.query_params.get("done") == "logged_out" else None
        return _login_form(request, notice=notice, bad=notice is None, next_url=next_url)
    form = await request.form()
    name = _field(form, "name", 256).strip()
    password = _field(form, "password", MAX_PASSWORD_LENGTH + 1)
    next_url = safe_next(_field(form, "next", 2048))
    attempt = _begin_attempt(request, name)
    if not isinstance(attempt, Attempt):
        minutes = max(1, -int(-attempt // 60))
        return _login_form(request, status_code=429, notice="auth.login.locked", name=name, next_url=next_url,
                           minutes=minutes)
    account = state.users.find(name) if name else None
    ok: bool | None = False  # anything but a finished check counts as a failure ...
    try:
        ok = await to_thread.run_sync(verify_password, account.password_hash if account else None, password)
        ok = ok and account is not None and len(password) <= MAX_PASSWORD_LENGTH
    except HashBusy:
        ok = None  # ... except a check that never ran (every hash slot busy)
        return _login_form(request, status_code=503, notice="auth.login.busy", name=name, next_url=next_url)
    finally:
        state.limiter.finish(attempt, ok=ok)
    if not ok or account is None:
        log.warning("web login failed for %r from %s", name[:64], _client(request))
        return _login_form(request, status_code=401, notice="auth.login.failed", name=name, next_url=next_url)
    account = await _rehash_if_needed(state, account, password)
    session = _start_session(request, account)
    log.info("web login: %s (%s) from %s", account.name, account.role.value, _client(request))
    response = RedirectResponse(next_url, status_code=303)
    _session_cookie_for(request, response, session)
    _device_cookie_for(request, response, account.name)
    return response


async def _rehash_if_needed(state: AuthState, account: Account, password: str) -> Account:
    """argon2 parameters changed since this hash was made: store a fresh hash, keep the sessions."""
    if not needs_rehash(account.password_hash):
        return account
    try:
        new_hash = await to_thread.run_sync(hash_password, password)
        updated = await to_thread.run_sync(
            lambda: state.users.replace_account(account.name, lambda a: replace(a, password_hash=new_hash)))
    except (UsersFileError, OSError, HashBusy) as exc:
        log.warning("web login: could not re-hash the password of %s: %s", account.name, exc)
        return account
    state.sessions.restamp(account.name, _stamp(account.password_hash), _stamp(updated.password_hash))
    log.info("web login: password hash of %s upgraded to the current argon2 parameters", account.name)
    return updated


async def logout(request: Request) -> Response:
    state = auth_state(request)
    state.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login?done=logged_out", status_code=303)
    _clear_cookie(response, request, SESSION_COOKIE)
    return response


async def language(request: Request) -> Response:
    """The language switch; for a logged-in user also saved to their account."""
    form = await request.form()
    chosen = _choice(_field(form, "language", 16), UiLanguage)
    target = safe_next(_field(form, "next", 2048), "/login")
    response = RedirectResponse(target, status_code=303)
    if chosen is None:
        return response
    user = request.state.user
    if user is not None and not await _save_language(request, user, chosen):
        return _error(request, "auth.error.file", 503)
    _set_cookie(response, request, LANG_COOKIE, chosen.value, max_age=LANG_COOKIE_MAX_AGE)
    return response


async def _save_language(request: Request, user: User, chosen: UiLanguage) -> bool:
    users = auth_state(request).users
    try:
        await to_thread.run_sync(lambda: users.replace_account(user.name, lambda a: replace(a, language=chosen)))
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot save the language of %s: %s", user.name, exc)
        return False
    return True


_ACCOUNT_DONE = ("auth.done.password_changed", "auth.done.language_saved")


def _account_page(request: Request, user: User, errors: dict[str, str] | None = None,
                  status_code: int = 200) -> Response:  # fmt: skip
    return render(request, "account.html", {"errors": errors or {}, "done": flash(request, _ACCOUNT_DONE),
                                            "languages": _LANGUAGES, "is_installer": user.role is Role.INSTALLER},
                  status_code=status_code)  # fmt: skip


async def account_page(request: Request) -> Response:
    user = require_user(request)
    return _account_page(request, user)


async def account_password(request: Request) -> Response:
    user = require_user(request)
    state = auth_state(request)
    form = await request.form()
    current = _field(form, "current", MAX_PASSWORD_LENGTH + 1)
    password, password2 = _field(form, "password"), _field(form, "password2")
    attempt = _begin_attempt(request, user.name)
    if not isinstance(attempt, Attempt):
        return _account_page(request, user, {"current": "auth.error.wrong_current"}, status_code=429)
    account = state.users.find(user.name)
    ok: bool | None = False
    try:
        ok = await to_thread.run_sync(verify_password, account.password_hash if account else None, current)
        ok = ok and account is not None
    except HashBusy:
        ok = None
        return _error(request, "auth.login.busy", 503)
    finally:
        state.limiter.finish(attempt, ok=ok)
    if not ok or account is None:
        log.warning("web: wrong current password for %s from %s", user.name, _client(request))
        return _account_page(request, user, {"current": "auth.error.wrong_current"}, status_code=400)
    errors = password_problems(user.name, password, password2)
    if errors:
        return _account_page(request, user, errors, status_code=400)
    try:
        new_hash = await to_thread.run_sync(hash_password, password)
        account = await to_thread.run_sync(
            lambda: state.users.replace_account(user.name, lambda a: replace(a, password_hash=new_hash)))
    except HashBusy:
        return _error(request, "auth.login.busy", 503)
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot change the password of %s: %s", user.name, exc)
        return _error(request, "auth.error.file", 503)
    ended = state.sessions.end_user(user.name)
    log.warning("web: %s changed their password; %d session(s) ended", user.name, ended)
    session = _start_session(request, account)  # this browser stays logged in, with a new token
    response = RedirectResponse("/account?done=auth.done.password_changed", status_code=303)
    _session_cookie_for(request, response, session)
    return response


async def account_language(request: Request) -> Response:
    user = require_user(request)
    form = await request.form()
    chosen = _choice(_field(form, "language", 16), UiLanguage)
    if chosen is None:
        return _account_page(request, user, {"language": "auth.error.choice"}, status_code=400)
    if not await _save_language(request, user, chosen):
        return _error(request, "auth.error.file", 503)
    response = RedirectResponse("/account?done=auth.done.language_saved", status_code=303)
    _set_cookie(response, request, LANG_COOKIE, chosen.value, max_age=LANG_COOKIE_MAX_AGE)
    return response


_USERS_DONE = ("auth.done.user_added", "auth.done.user_removed")


def _users_page(request: Request, user: User, *, errors: dict[str, str] | None = None,
                values: dict[str, str] | None = None, status_code: int = 200) -> Response:  # fmt: skip
    accounts = sorted(auth_state(request).users.accounts(), key=lambda a: (a.role is not Role.INSTALLER, a.name))
    return render(request, "users.html", {
        "accounts": accounts, "me": user.name.casefold(), "errors": errors or {},
        "values": values or {"name": "", "role": Role.FAMILY.value, "language": user.language.value},
        "done": flash(request, _USERS_DONE), "roles": _ROLES, "languages": _LANGUAGES,
    }, status_code=status_code)  # fmt: skip


async def users_page(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    return _users_page(request, user)


async def users_add(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    state = auth_state(request)
    form = await request.form()
    name = _field(form, "name", 256).strip()
    password = _field(form, "password")
    role = _choice(_field(form, "role", 16), Role)
    chosen = _choice(_field(form, "language", 16), UiLanguage)
    errors = password_problems(name, password, password, field_name="password")
    if problem := name_problem(name):
        errors["name"] = problem
    elif state.users.find(name) is not None:
        errors["name"] = "auth.error.name_taken"
    if role is None:
        errors["role"] = "auth.error.choice"
    if chosen is None:
        errors["language"] = "auth.error.choice"
    values = {"name": name[:MAX_NAME_LENGTH * 2], "role": role.value if role else "",
              "language": chosen.value if chosen else ""}  # fmt: skip
    if errors:
        return _users_page(request, user, errors=errors, values=values, status_code=400)
    try:
        password_hash = await to_thread.run_sync(hash_password, password)
        await to_thread.run_sync(lambda: state.users.add(Account(name, role, password_hash, chosen)))
    except HashBusy:
        return _error(request, "auth.login.busy", 503)
    except UserExists:
        return _users_page(request, user, errors={"name": "auth.error.name_taken"}, values=values, status_code=400)
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot add user %r: %s", name, exc)
        return _error(request, "auth.error.file", 503)
    log.warning("web: %s added user %r (%s)", user.name, name, role.value)
    return RedirectResponse("/users?done=auth.done.user_added", status_code=303)


async def users_remove(request: Request) -> Response:
    user = require_user(request, Role.INSTALLER)
    state = auth_state(request)
    form = await request.form()
    name = _field(form, "name", 256)
    if name.casefold() == user.name.casefold():
        return _users_page(request, user, errors={"remove": "auth.error.remove_self"}, status_code=400)
    try:
        await to_thread.run_sync(state.users.remove, name)
    except NoSuchUser:
        return _users_page(request, user, errors={"remove": "auth.error.no_such_user"}, status_code=404)
    except (UsersFileError, OSError) as exc:
        log.error("web: cannot remove user %r: %s", name, exc)
        return _error(request, "auth.error.file", 503)
    ended = state.sessions.end_user(name)
    log.warning("web: %s removed user %r; %d session(s) ended", user.name, name, ended)
    return RedirectResponse("/users?done=auth.done.user_removed", status_code=303)


routes: list[Route] = [
    Route("/setup", setup_page, methods=["GET", "POST"]),
    Route("/login", login_page, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/language", language, methods=["POST"]),
    Route("/account", account_page, methods=["GET"]),
    Route("/account/password", account_password, methods=["POST"]),
    Route("/account/language", account_language, methods=["POST"]),
    Route("/users", users_page, methods=["GET"]),
    Route("/users/add", users_add, methods=["POST"]),
    Route("/users/remove", users_remove, methods=["POST"]),
]

