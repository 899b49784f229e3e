"""Provisioning bundles: format, issuer keys, signing, verification, applying on a unit.

A bundle is a DSSE envelope (``securesystemslib.dsse``) whose payload is the JSON
of :class:`BundleContent` -- the household's whole ``mamoru.toml``, the feeds it
follows (with their TUF root metadata) and its web users' argon2 password hashes
-- signed with the issuing office's ed25519 key.

A unit trusts the public keys in a directory baked into its image
(``/etc/mamoru/issuer-keys``), never keys named by its config: a bundle replaces
the config, so the config must not decide which bundles are trusted. It refuses
(:class:`BundleRefused`, with a :class:`Refusal` reason) anything not signed by
one of those keys, modified, of the wrong payload type, truncated, expired, made
for another unit, older than the last bundle it applied, or whose config fails
``screening.config`` validation -- which is checked when the bundle is made and
again on the unit, because the unit may run a newer, stricter mamoru.

Time stamps are UTC ``YYYY-MM-DDTHH:MM:SSZ``. A bundle "from the future" is not
refused: a Pi has no RTC and boots with the clock fake-hwclock saved.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey

from screening.config import Config, ConfigError, load_config, parse_config, parse_toml_text
from screening.core.clock import iso_utc, utc_now
from screening.core.files import atomic_write_bytes, staged_file
from screening.core.model import Role

if TYPE_CHECKING:
    from blocklist.store import Store

log = logging.getLogger(__name__)

FORMAT = "mamoru-bundle/1"
PAYLOAD_TYPE = "application/vnd.mamoru.bundle+json"
BUNDLE_SUFFIX = ".mamoru-bundle"
DEFAULT_ISSUER_KEYS_DIR = Path("/etc/mamoru/issuer-keys")
DEVICE_SERIAL_PATH = Path("/proc/device-tree/serial-number")
PRIVATE_KEY_NAME = "issuer.key"
PUBLIC_KEY_NAME = "issuer.pub.json"
STATE_FILE_NAME = "bundle-state.json"
STATE_FORMAT = "mamoru-bundle-state/1"
WEB_USERS_FILE_NAME = "web-users.json"
WEB_USERS_FORMAT = "mamoru-web-users/1"
DEFAULT_VALID_DAYS = 365
# A bundle is a config, a few roots and hashes: kilobytes. Never read a huge file into memory.
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
# Readable at a glance on a printed sheet: no 0/O, 1/l/I.
PASSWORD_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
PASSWORD_LENGTH = 12  # 56**12: about 70 bits
HOUSEHOLD_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SERIAL_PATTERN = re.compile(r"^[0-9a-f]{8,16}$")


class Refusal(StrEnum):
    """Why a unit refused a bundle (stable ids, also printed)."""

    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"  # truncated, or not a bundle at all
    NOT_AN_ENVELOPE = "not_an_envelope"
    WRONG_PAYLOAD_TYPE = "wrong_payload_type"
    UNSIGNED = "unsigned"
    NO_TRUSTED_KEYS = "no_trusted_keys"
    UNKNOWN_SIGNER = "unknown_signer"  # signed, but not by a trusted issuer key
    BAD_SIGNATURE = "bad_signature"  # a trusted key's signature does not match: modified after signing
    BAD_PAYLOAD = "bad_payload"
    UNSUPPORTED_FORMAT = "unsupported_format"
    EXPIRED = "expired"
    WRONG_UNIT = "wrong_unit"
    ROLLBACK = "rollback"
    INVALID_CONFIG = "invalid_config"
    NONE_VALID = "none_valid"  # several candidates, none acceptable
    AMBIGUOUS = "ambiguous"  # several candidates acceptable


class BundleRefused(Exception):
    """A unit will not apply this bundle; the message names the file and the reason."""

    def __init__(self, reason: Refusal, message: str, source: str = "bundle") -> None:
        self.reason = reason
        self.source = source
        self.detail = message
        super().__init__(f"{source}: refused ({reason.value}): {message}")


class BundleError(Exception):
    """An issuer-side problem (key file, config, feed root): nothing was signed or written."""


@dataclass(frozen=True, slots=True)
class WebUser:
    name: str
    role: Role
    password_hash: str  # argon2 (PHC string)


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """A signed number feed to follow; ``root`` is its trusted root.json as an object."""

    name: str
    url: str
    root: Mapping[str, Any]

    def root_bytes(self) -> bytes:
        return json.dumps(self.root, ensure_ascii=False, sort_keys=True, indent=1).encode()


@dataclass(frozen=True, slots=True)
class Household:
    id: str
    label: str


@dataclass(frozen=True, slots=True)
class BundleContent:
    """The signed payload."""

    issuer: str
    issued_at: datetime
    not_after: datetime
    household: Household
    config_toml: str
    feeds: tuple[FeedSpec, ...] = ()
    web_users: tuple[WebUser, ...] = ()
    unit: str | None = None  # the Pi's serial number; None = any unit

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "format": FORMAT,
            "issuer": self.issuer,
            "issued_at": iso_utc(self.issued_at, timespec="seconds"),
            "not_after": iso_utc(self.not_after, timespec="seconds"),
            "household": {"id": self.household.id, "label": self.household.label},
            "config_toml": self.config_toml,
            "feeds": [{"name": f.name, "url": f.url, "root": dict(f.root)} for f in self.feeds],
            "web": {"users": [{"name": u.name, "role": u.role.value, "password_hash": u.password_hash}
                              for u in self.web_users]},
        }  # fmt: skip
        if self.unit is not None:
            payload["unit"] = self.unit
        return payload

    @classmethod
    def from_payload(cls, obj: object) -> BundleContent:
        """Parse a payload object; ValueError names the first field that is wrong."""
        top = _mapping(obj, "payload")
        if top.get("format") != FORMAT:
            raise _FormatMismatch(f"format is {top.get('format')!r}, this unit reads {FORMAT!r}")
        household = _mapping(top.get("household"), "household")
        unit = _text_at(top, "unit") if top.get("unit") is not None else None
        feeds = []
        for i, raw in enumerate(_sequence(top.get("feeds", []), "feeds")):
            item = _mapping(raw, f"feeds[{i}]")
            root = _mapping(item.get("root"), f"feeds[{i}].root")
            feeds.append(FeedSpec(_text_at(item, "name", f"feeds[{i}]"), _text_at(item, "url", f"feeds[{i}]"), root))
        users = []
        web = _mapping(top.get("web", {"users": []}), "web")
        for i, raw in enumerate(_sequence(web.get("users", []), "web.users")):
            item, where = _mapping(raw, f"web.users[{i}]"), f"web.users[{i}]"
            role_text = _text_at(item, "role", where)
            try:
                role = Role(role_text)
            except ValueError:
                raise ValueError(f"{where}.role: must be family or installer (got {role_text!r})") from None
            users.append(WebUser(_text_at(item, "name", where), role, _text_at(item, "password_hash", where)))
        content = cls(
            issuer=_text_at(top, "issuer"),
            issued_at=_time(top.get("issued_at"), "issued_at"),
            not_after=_time(top.get("not_after"), "not_after"),
            household=Household(_text_at(household, "id", "household"), _text_at(household, "label", "household")),
            config_toml=_text_at(top, "config_toml"),
            feeds=tuple(feeds),
            web_users=tuple(users),
            unit=normalise_serial(unit) if unit else None,
        )
        problem = content.problem()
        if problem:
            raise ValueError(problem)
        return content

    def problem(self) -> str | None:
        """What is wrong with the content apart from its config, or None."""
        if not HOUSEHOLD_ID_PATTERN.match(self.household.id):
            return f"household.id {self.household.id!r}: use letters, digits, - and _ (at most 64)"
        if self.unit is not None and not SERIAL_PATTERN.match(self.unit):
            return f"unit {self.unit!r}: a Raspberry Pi serial is 8 to 16 hex digits"
        if self.not_after <= self.issued_at:
            return "not_after is not after issued_at"
        names = [f.name for f in self.feeds]
        if len(set(names)) != len(names):
            return f"feeds: a name is given twice ({', '.join(names)})"
        for feed in self.feeds:
            problem = feed_problem(feed)
            if problem:
                return problem
        user_names = [u.name.casefold() for u in self.web_users]
        if len(set(user_names)) != len(user_names):
            return "web.users: a user name is given twice"
        for user in self.web_users:
            if not password_hash_ok(user.password_hash):
                return f"web user {user.name!r}: password_hash is not an argon2 hash"
        return None


class _FormatMismatch(ValueError):
    pass


# A payload of the wrong shape is bad input like any other refusal cause: ValueError, not TypeError.
def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object (got {type(value).__name__})")  # noqa: TRY004
    return value


def _sequence(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list (got {type(value).__name__})")  # noqa: TRY004
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty string (got {value!r:.60})")
    return value


def _text_at(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    return _text(obj.get(key), f"{where}.{key}" if where else key)


def _time(value: object, where: str) -> datetime:
    text = _text(value, where)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: not an ISO-8601 time (got {text!r})") from None
    if moment.tzinfo is None:
        raise ValueError(f"{where}: needs a time zone, e.g. 2026-04-01T00:00:00Z (got {text!r})")
    return moment.astimezone(UTC)


# ---- passwords and feed roots ------------------------------------------------------------


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random initial web password that survives being read off paper."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def hash_password(password: str) -> str:
    """argon2id with the library's defaults (what the web login verifies with argon2-cffi)."""
    from argon2 import PasswordHasher

    if len(password) < 8:
        raise BundleError("a web password needs at least 8 characters")
    return PasswordHasher().hash(password)


def password_hash_ok(text: str) -> bool:
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    try:
        extract_parameters(text)
    except (InvalidHashError, ValueError):
        return False
    return True


def feed_problem(feed: FeedSpec) -> str | None:
    """None if the feed module would accept this feed: name, URL, self-signed root with consistent snapshots."""
    from blocklist.feeds import FeedError, check_root, normalize_url, validate_name

    try:
        validate_name(feed.name)
        normalize_url(feed.url)
        check_root(feed.root_bytes(), f"feed {feed.name!r}: root metadata")
    except FeedError as exc:
        return str(exc)
    return None


# ---- config -----------------------------------------------------------------------------------


def validate_config_toml(text: str, origin: str) -> Config:
    """The same validation ``load_config`` runs on a file; ConfigError names ``origin``."""
    return parse_config(parse_toml_text(text, origin), source=origin)


# ---- issuer keys ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """A trusted public key and the office it belongs to."""

    issuer: str
    key: SSlibKey
    path: Path

    @property
    def keyid(self) -> str:
        return self.key.keyid


def public_key_document(key: SSlibKey, issuer: str) -> dict[str, Any]:
    return {"issuer": issuer, "keyid": key.keyid, **key.to_dict()}


def generate_issuer_key(directory: Path, issuer: str) -> tuple[Path, Path]:
    """Write ``issuer.key`` (PKCS#8 PEM, 0600) and ``issuer.pub.json``; never overwrite a key."""
    if not issuer.strip():
        raise BundleError("the issuer needs a name, e.g. 'Tokyo MPD Setagaya'")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private, public = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    for path in (private, public):
        if path.exists():
            raise BundleError(f"{path} already exists: a new key would orphan every unit built with the old one")
    signer = CryptoSigner.generate_ed25519()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(signer.private_bytes)
        out.flush()
        os.fsync(out.fileno())
    document = public_key_document(signer.public_key, issuer.strip())
    public.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("issuer key %s for %r written to %s", signer.public_key.keyid[:16], issuer, directory)
    return private, public


def load_signer(path: Path) -> CryptoSigner:
    """The issuer's private key (PEM); BundleError names the file."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the issuer key: {exc.strerror or exc}") from None
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by others (mode %o): it can sign bundles every unit accepts",
                    path, path.stat().st_mode & 0o777)  # fmt: skip
    try:
        signer = CryptoSigner(load_pem_private_key(pem, password=None))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted ed25519 PEM private key ({exc})") from None
    if signer.public_key.keytype != "ed25519":
        raise BundleError(f"{path}: a {signer.public_key.keytype} key; units only trust ed25519 issuer keys")
    return signer


def load_public_key(path: Path) -> IssuerKey:
    """One ``*.pub.json`` written by :func:`generate_issuer_key`; ValueError names the problem."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON key file ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 -- bad input, not a bug
    document = dict(document)
    issuer = str(document.pop("issuer", "") or path.stem)
    document.pop("keyid", None)
    try:
        # The key id is recomputed (TUF's definition), never trusted from the file: it is what signatures name.
        canonical = encode_canonical({k: document[k] for k in ("keytype", "scheme", "keyval")})
        key = SSlibKey.from_dict(hashlib.sha256(str(canonical).encode()).hexdigest(), document)
    except (KeyError, TypeError, ValueError, FormatError) as exc:
        raise ValueError(f"{path}: not a public key ({exc})") from None
    if key.keytype != "ed25519":
        raise ValueError(f"{path}: key type {key.keytype!r}; mamoru issuer keys are ed25519")
    return IssuerKey(issuer, key, path)


def load_trusted_keys(directory: Path) -> list[IssuerKey]:
    """Every ``*.json`` key in ``directory``; a broken file is logged and skipped."""
    keys: list[IssuerKey] = []
    try:
        candidates = sorted(directory.glob("*.json"))
    except OSError as exc:
        log.error("cannot list issuer keys in %s: %s", directory, exc)
        return keys
    for path in candidates:
        try:
            keys.append(load_public_key(path))
        except ValueError as exc:
            log.error("ignoring issuer key file: %s", exc)
    return keys


# ---- signing -------------------------------------------------------------------------------


def sign_payload(payload: Mapping[str, Any], signer: CryptoSigner, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Sign any payload object as a bundle file, without checking it (the unit checks everything)."""
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    envelope = Envelope(body, payload_type, {})
    envelope.sign(signer)
    return (json.dumps(envelope.to_dict(), indent=2) + "\n").encode()


def make_bundle(content: BundleContent, signer: CryptoSigner) -> bytes:
    """Check the content (config validation included), then sign it."""
    problem = content.problem()
    if problem:
        raise BundleError(f"household {content.household.id}: {problem}")
    validate_config_toml(content.config_toml, f"household {content.household.id}: config")  # ConfigError
    return sign_payload(content.to_payload(), signer)


def new_content(
    *, issuer: str, household: Household, config_toml: str, feeds: Sequence[FeedSpec] = (),
    web_users: Sequence[WebUser] = (), unit: str | None = None, valid_days: int = DEFAULT_VALID_DAYS,
    now: datetime | None = None,
) -> BundleContent:  # fmt: skip
    issued = (now or utc_now()).astimezone(UTC).replace(microsecond=0)
    if valid_days < 1:
        raise BundleError("a bundle must be valid for at least one day")
    return BundleContent(issuer, issued, issued + timedelta(days=valid_days), household, config_toml,
                         tuple(feeds), tuple(web_users), normalise_serial(unit) if unit else None)  # fmt: skip


# ---- verification (the unit) -------------------------------------------------------------------


def normalise_serial(text: str) -> str:
    """Serials compare as lower-case hex; /proc/device-tree ends them with NUL."""
    return text.strip().strip("\x00").strip().lower()


def read_unit_serial(path: Path = DEVICE_SERIAL_PATH) -> str | None:
    try:
        return normalise_serial(path.read_bytes().decode("ascii", "replace")) or None
    except OSError as exc:  # not a Pi; only matters for a bundle made for one unit
        log.debug("cannot read the unit's serial number from %s: %s", path, exc)
        return None


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    content: BundleContent
    config: Config
    signer: IssuerKey
    sha256: str  # of the signed payload: what the rollback state remembers
    source: str


def verify_bundle(
    data: bytes, keys: Sequence[IssuerKey], *, now: datetime, unit_serial: str | None, source: str = "bundle"
) -> VerifiedBundle:
    """Every check but rollback; raises BundleRefused naming the reason."""

    def refuse(reason: Refusal, message: str) -> BundleRefused:
        return BundleRefused(reason, message, source)

    if len(data) > MAX_BUNDLE_BYTES:
        raise refuse(Refusal.TOO_LARGE, f"{len(data)} bytes; a bundle is at most {MAX_BUNDLE_BYTES}")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise refuse(Refusal.NOT_JSON, f"not UTF-8 text (byte {exc.start}): not a bundle file") from None
    except json.JSONDecodeError as exc:
        raise refuse(Refusal.NOT_JSON, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno});"
                                       " truncated or damaged copy?") from None  # fmt: skip
    except RecursionError:
        raise refuse(Refusal.NOT_JSON, "JSON nested too deeply: not a bundle file") from None
    if not isinstance(document, dict) or not {"payload", "payloadType", "signatures"} <= set(document):
        raise refuse(Refusal.NOT_AN_ENVELOPE, "not a DSSE envelope (needs payload, payloadType, signatures)")
    if document["payloadType"] != PAYLOAD_TYPE:
        raise refuse(Refusal.WRONG_PAYLOAD_TYPE, f"payload type {document['payloadType']!r}, expected {PAYLOAD_TYPE!r}")
    if not document["signatures"]:
        raise refuse(Refusal.UNSIGNED, "the bundle carries no signature")
    try:
        envelope = Envelope.from_dict(document)
    except Exception as exc:  # noqa: BLE001 -- KeyError, binascii.Error, FormatError ...: all "malformed"
        raise refuse(Refusal.NOT_AN_ENVELOPE, f"malformed envelope ({type(exc).__name__}: {exc})") from None
    signer = _check_signature(envelope, keys, refuse)

    try:
        payload = json.loads(envelope.payload.decode("utf-8"))
        content = BundleContent.from_payload(payload)
    except _FormatMismatch as exc:
        raise refuse(Refusal.UNSUPPORTED_FORMAT, str(exc)) from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise refuse(Refusal.BAD_PAYLOAD, f"signed content is malformed: {exc}") from None
    except RecursionError:
        raise refuse(Refusal.BAD_PAYLOAD, "signed content is nested too deeply") from None
    if now >= content.not_after:
        until, at = iso_utc(content.not_after, timespec="seconds"), iso_utc(now, timespec="seconds")
        raise refuse(Refusal.EXPIRED, f"valid until {until}, it is now {at}; ask the issuer for a new bundle")
    if content.unit is not None:
        if unit_serial is None:
            raise refuse(Refusal.WRONG_UNIT, f"made for unit {content.unit}, and this unit's serial cannot be read")
        if normalise_serial(unit_serial) != content.unit:
            this = normalise_serial(unit_serial)
            raise refuse(Refusal.WRONG_UNIT, f"made for unit {content.unit}, this is unit {this}")
    try:
        config = validate_config_toml(content.config_toml, f"{source}: config")
    except ConfigError as exc:
        raise refuse(Refusal.INVALID_CONFIG, f"its config does not pass validation:\n{exc}") from None
    digest = hashlib.sha256(envelope.payload).hexdigest()
    return VerifiedBundle(content, config, signer, digest, source)


def _check_signature(
    envelope: Envelope, keys: Sequence[IssuerKey], refuse: Callable[[Refusal, str], BundleRefused]
) -> IssuerKey:
    from securesystemslib.exceptions import VerificationError

    if not keys:
        raise refuse(Refusal.NO_TRUSTED_KEYS, "this unit has no trusted issuer keys (see docs/provisioning.md)")
    by_id = {k.keyid: k for k in keys}
    signed_by = [keyid for keyid in envelope.signatures]
    known = [keyid for keyid in signed_by if keyid in by_id]
    if not known:
        shown = ", ".join(k[:16] for k in signed_by)
        trusted = ", ".join(f"{k.keyid[:16]} ({k.issuer})" for k in keys)
        raise refuse(Refusal.UNKNOWN_SIGNER, f"signed by key {shown}, which is not a trusted issuer key"
                                             f" (trusted: {trusted})")  # fmt: skip
    try:
        accepted = envelope.verify([k.key for k in keys], threshold=1)
    except VerificationError:
        raise refuse(Refusal.BAD_SIGNATURE, f"the signature of {by_id[known[0]].issuer!r} does not match the"
                                            " content: it was changed after signing") from None  # fmt: skip
    return by_id[next(iter(accepted))]


# ---- applying (the unit) ---------------------------------------------------------------------


class FeedAction(StrEnum):
    ADDED = "added"
    ALREADY = "already followed"
    FAILED = "failed"
    WOULD_ADD = "would be added"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    bundle: VerifiedBundle
    config_path: Path
    config_changed: bool
    backup_path: Path | None
    web_users_path: Path
    state_path: Path
    feeds: tuple[tuple[str, FeedAction, str], ...] = ()  # (name, outcome, detail)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(outcome is not FeedAction.FAILED for _, outcome, _ in self.feeds)

    def summary(self) -> list[str]:
        c = self.bundle.content
        verb = "would apply" if self.dry_run else "applied"
        issued = iso_utc(c.issued_at, timespec="seconds")
        lines = [f"{verb} bundle for household {c.household.id} ({c.household.label}) from {c.issuer}, issued "
                 + f"{issued}, signed by key {self.bundle.signer.keyid[:16]}"]  # fmt: skip
        if not self.config_changed:
            lines.append(f"  config: {self.config_path} already has this content")
        elif self.dry_run:
            lines.append(f"  config: would write {self.config_path}")
        else:
            kept = f" (previous kept as {self.backup_path.name})" if self.backup_path else ""
            lines.append(f"  config: wrote {self.config_path}{kept}")
        users = ", ".join(f"{u.name} ({u.role.value})" for u in c.web_users) or "none"
        lines.append(f"  web users: {users} -> {self.web_users_path}")
        for name, outcome, detail in self.feeds:
            lines.append(f"  feed {name}: {outcome.value}{': ' + detail if detail else ''}")
        return lines


def state_path_for(config_path: Path) -> Path:
    return config_path.parent / STATE_FILE_NAME


def read_state(path: Path) -> dict[str, Any] | None:
    """The last applied bundle's issued_at and sha256; a damaged file refuses (fails closed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleRefused(Refusal.ROLLBACK, f"cannot read {path}: {exc.strerror or exc}", str(path)) from None
    try:
        state = json.loads(text)
        _time(state["issued_at"], "issued_at")
        _text(state["sha256"], "sha256")
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleRefused(Refusal.ROLLBACK, f"the record of the last applied bundle is damaged ({exc});"
                            f" remove {path} to accept any valid bundle again", str(path)) from None  # fmt: skip
    return state


def check_rollback(bundle: VerifiedBundle, state: Mapping[str, Any] | None) -> None:
    """Refuse anything older than the last applied bundle; the same bundle again is fine."""
    if state is None:
        return
    last = _time(state["issued_at"], "issued_at")
    issued = bundle.content.issued_at
    if issued < last:
        raise BundleRefused(Refusal.ROLLBACK, f"issued {iso_utc(issued, timespec='seconds')}, older than the bundle"
                            f" applied before (issued {iso_utc(last, timespec='seconds')})", bundle.source)  # fmt: skip
    if issued == last and state["sha256"] != bundle.sha256:
        raise BundleRefused(Refusal.ROLLBACK, "a different bundle issued at the same time"
                            f" ({iso_utc(last, timespec='seconds')}) was applied before", bundle.source)  # fmt: skip


def select_bundle(
    candidates: Sequence[Path], keys: Sequence[IssuerKey], *, now: datetime, unit_serial: str | None,
    state: Mapping[str, Any] | None,
) -> VerifiedBundle:  # fmt: skip
    """The one candidate acceptable for this unit (a USB stick may carry a whole office's bundles)."""
    accepted: list[VerifiedBundle] = []
    refusals: list[BundleRefused] = []
    for path in candidates:
        try:
            data = _read_limited(path)
            bundle = verify_bundle(data, keys, now=now, unit_serial=unit_serial, source=str(path))
            check_rollback(bundle, state)
            accepted.append(bundle)
        except BundleRefused as exc:
            log.info("%s", exc)
            refusals.append(exc)
        except Exception as exc:  # noqa: BLE001 -- one bad file on the stick must never stop the good one
            log.warning("%s: unexpected failure while checking it", path, exc_info=True)
            refusals.append(BundleRefused(Refusal.UNREADABLE, f"could not be checked ({type(exc).__name__})",
                                          str(path)))  # fmt: skip
    if len(candidates) == 1:
        if refusals:
            raise refusals[0]
        return accepted[0]
    if not accepted:
        detail = "; ".join(str(r) for r in refusals) or "no bundle files given"
        raise BundleRefused(Refusal.NONE_VALID, detail, f"{len(candidates)} bundles")
    if len(accepted) > 1:
        names = ", ".join(b.source for b in accepted)
        raise BundleRefused(Refusal.AMBIGUOUS, f"{len(accepted)} are valid for this unit ({names}); leave only one",
                            f"{len(candidates)} bundles")  # fmt: skip
    return accepted[0]


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as source:
            data = source.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise BundleRefused(Refusal.UNREADABLE, f"cannot read: {exc.strerror or exc}", str(path)) from None
    return data


@dataclass(slots=True)
class Applier:
    """Applies bundles on a unit. No I/O until :meth:`apply`."""

    issuer_keys_dir: Path = DEFAULT_ISSUER_KEYS_DIR
    config_path: Path = Path("/etc/mamoru/mamoru.toml")
    serial_path: Path = DEVICE_SERIAL_PATH
    db_override: Path | None = None
    first_feed_update: bool = True
    clock: Callable[[], datetime] = utc_now

    def apply(self, candidates: Sequence[Path], *, dry_run: bool = False) -> ApplyResult:
        keys = load_trusted_keys(self.issuer_keys_dir)
        if not keys:
            raise BundleRefused(Refusal.NO_TRUSTED_KEYS, f"no issuer keys in {self.issuer_keys_dir}: this unit"
                                " accepts no bundle", "unit")  # fmt: skip
        state_path = state_path_for(self.config_path)
        bundle = select_bundle(candidates, keys, now=self.clock(), unit_serial=read_unit_serial(self.serial_path),
                               state=read_state(state_path))  # fmt: skip
        config_bytes = bundle.content.config_toml.encode("utf-8")
        changed = _read_or_none(self.config_path) != config_bytes
        config = bundle.config
        db = self.db_override or config.store.db
        web_users_path = Path(db).parent / WEB_USERS_FILE_NAME
        if dry_run:
            feeds = tuple((f.name, FeedAction.WOULD_ADD, f.url) for f in bundle.content.feeds)
            return ApplyResult(bundle, self.config_path, changed, None, web_users_path, state_path, feeds, True)

        backup = self._install_config(config_bytes) if changed else None
        _write_private_json(web_users_path, _web_users_document(bundle))
        feeds = self._add_feeds(bundle, config, Path(db))
        _give_to_directory_owner([Path(db), Path(f"{db}-wal"), Path(f"{db}-shm"), config.feeds.dir])
        result = ApplyResult(bundle, self.config_path, changed, backup, web_users_path, state_path, feeds)
        if result.ok:
            # Recorded only when everything is in: a failed feed can be retried with the same bundle.
            _write_private_json(state_path, self._state(bundle))
        log.info("bundle %s (household %s, issuer %s) applied%s", bundle.source, bundle.content.household.id,
                 bundle.content.issuer, "" if result.ok else " except for a feed")  # fmt: skip
        return result

    def _state(self, bundle: VerifiedBundle) -> dict[str, Any]:
        c = bundle.content
        return {"format": STATE_FORMAT, "issued_at": iso_utc(c.issued_at, timespec="seconds"), "sha256": bundle.sha256,
                "household": c.household.id, "issuer": c.issuer,
                "applied_at": iso_utc(self.clock(), timespec="seconds")}  # fmt: skip

    def _install_config(self, data: bytes) -> Path | None:
        """temp + fsync, validated as a file, then rename; the previous file stays as ``.bak``."""
        path = self.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = path.stat() if path.exists() else None
        mode = previous.st_mode & 0o777 if previous else 0o640
        with staged_file(path, data, mode=mode, owner_like=previous) as temp:
            load_config(temp, env={})  # the exact bytes about to go live, read back as a file
            backup = None
            if previous is not None:
                backup = path.with_name(path.name + ".bak")
                _replace_with_link_or_copy(path, backup)
        return backup

    def _add_feeds(self, bundle: VerifiedBundle, config: Config, db: Path) -> tuple[tuple[str, FeedAction, str], ...]:
        if not bundle.content.feeds:
            return ()
        from blocklist.store import Store

        db.parent.mkdir(parents=True, exist_ok=True)
        outcomes: list[tuple[str, FeedAction, str]] = []
        store = Store(db, recover_calls=False)
        store.open()
        try:
            for feed in bundle.content.feeds:
                outcomes.append(self._add_one_feed(store, config, feed))
        finally:
            store.close()
        return tuple(outcomes)

    def _add_one_feed(self, store: Store, config: Config, feed: FeedSpec) -> tuple[str, FeedAction, str]:
        from blocklist.feeds import add_feed
        from screening.feed_wiring import feed_limits

        known = store.feed(feed.name) is not None
        try:
            # Re-adding the same feed is harmless (the feed module compares URL and root bytes).
            add_feed(store, config.feeds.dir, feed.name, feed.url, feed.root_bytes(),
                     first_update=self.first_feed_update, max_age_days=config.feeds.max_age_days,
                     limits=feed_limits(config))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 -- FeedError, StoreError ...: the rest of the bundle stays applied
            log.error("feed %s from the bundle could not be added: %s", feed.name, exc)
            return (feed.name, FeedAction.FAILED, str(exc))
        row = store.feed(feed.name) or {}
        detail = f"last check failed: {row['error']}" if row.get("error") else f"{row.get('entries', 0)} numbers"
        return (feed.name, FeedAction.ALREADY if known else FeedAction.ADDED, detail)


def _give_to_directory_owner(paths: Sequence[Path]) -> None:
    """Run as root (first boot), the database and feed files must still be the service user's to write."""
    if os.geteuid() != 0:
        return
    for path in paths:
        if not path.exists():
            continue
        owner = path.parent.stat()
        if owner.st_uid == 0:
            continue
        for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
            os.chown(item, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _web_users_document(bundle: VerifiedBundle) -> dict[str, Any]:
    c = bundle.content
    return {
        "format": WEB_USERS_FORMAT,
        "issuer": c.issuer,
        "issued_at": iso_utc(c.issued_at, timespec="seconds"),
        "household": {"id": c.household.id, "label": c.household.label},
        "users": [{"name": u.name, "role": u.role.value, "password_hash": u.password_hash} for u in c.web_users],
    }


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace_with_link_or_copy(path: Path, backup: Path) -> None:
    """Make ``backup`` the current ``path`` content, atomically, keeping its mode and owner."""
    staging = backup.with_name(backup.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    try:
        os.link(path, staging)
    except OSError:  # a file system without hard links (e.g. FAT)
        import shutil

        shutil.copy2(path, staging)
    os.replace(staging, backup)


def _write_private_json(path: Path, document: Mapping[str, Any]) -> None:
    write_private_file(path, (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode())


def write_private_file(path: Path, data: bytes) -> None:
    """Atomic, 0600 (it holds secrets); when root, owned like its directory (the service user reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if _read_or_none(path) == data:
        return
    atomic_write_bytes(path, data, mode=0o600, owner_like=path.parent.stat())


def decode_payload(bundle_file: bytes) -> dict[str, Any]:
    """The payload of a bundle file WITHOUT verifying it: for tools that show or re-sign one."""
    document = json.loads(bundle_file)
    return json.loads(base64.b64decode(document["payload"]))
