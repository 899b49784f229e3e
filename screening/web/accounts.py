"""Web accounts: ``web-users.json``, names and passwords, argon2 hashing.

- Accounts live in ``web-users.json`` next to the database (``mamoru-web-users/1``,
  docs/provisioning.md), written by `mamoru provision apply`, by `mamoru web passwd`
  and by the account pages; it is re-read whenever it changes. A damaged file lets nobody
  in and never re-opens first-run setup (fail closed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from screening.core.files import atomic_write_bytes
from screening.core.model import Language, Role
from screening.web.i18n import page_language

log = logging.getLogger(__name__)

USERS_FORMAT = "mamoru-web-users/1"
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; nobody needs to make us hash megabytes
MAX_NAME_LENGTH = 32
HASH_SLOTS = 2  # concurrent argon2 runs (64 MiB each): a Pi must survive a burst of logins
HASH_SLOT_WAIT_S = 30.0


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
    language: Language | None = None


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
            language = page_language(raw["language"]) if raw.get("language") else None
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
