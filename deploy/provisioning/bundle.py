"""Provisioning bundles: format, signing, verification.

A bundle is a DSSE envelope (``securesystemslib.dsse``) whose payload is the JSON
of :class:`BundleContent` -- the household's whole ``mamoru.toml``, the feeds it
follows (with their TUF root metadata) and its web users' argon2 password hashes
-- signed with the issuing office's ed25519 key.

A unit trusts the public keys in a directory baked into its image
(``/etc/mamoru/issuer-keys``, read by ``keys``), never keys named by its config: a
bundle replaces the config, so the config must not decide which bundles are trusted.
It refuses (:class:`BundleRefused`, with a :class:`Refusal` reason) anything not signed by
one of those keys, modified, of the wrong payload type, truncated, expired, made
for another unit, older than the last bundle it applied (checked by ``apply``), or whose
config fails ``screening.config`` validation -- which is checked when the bundle is made and
again on the unit, because the unit may run a newer, stricter mamoru.

Issuer key files are in ``keys``, applying a bundle on the unit in ``apply``.

Time stamps are UTC ``YYYY-MM-DDTHH:MM:SSZ``. A bundle "from the future" is not
refused: a Pi has no RTC and boots with the clock fake-hwclock saved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from screening.config import Config, ConfigError, parse_config, parse_toml_text
from screening.core.clock import iso_utc, utc_now
from screening.core.files import atomic_write_bytes
from screening.core.model import Role

log = logging.getLogger(__name__)

FORMAT = "mamoru-bundle/1"
PAYLOAD_TYPE = "application/vnd.mamoru.bundle+json"
BUNDLE_SUFFIX = ".mamoru-bundle"
DEVICE_SERIAL_PATH = Path("/proc/device-tree/serial-number")
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
class HubCredentials:
    """The unit's own broker password and the broker's CA (the rest of ``[hub]`` is in the config).

    Optional and additive: a bundle without ``hub`` reads as before, and a unit that predates it
    ignores the key. The password is per unit (its user name is ``[hub] unit_id``): a stolen one
    lets a thief speak only as that unit, under its own topics (the broker's ACL).
    """

    password: str
    ca_pem: str | None = None

    def problem(self) -> str | None:
        if not 12 <= len(self.password) <= 256 or not self.password.isprintable() or self.password != self.password.strip():
            return "hub.password: 12 to 256 printable characters, no surrounding spaces"
        if self.ca_pem is not None:
            from cryptography import x509

            try:
                x509.load_pem_x509_certificates(self.ca_pem.encode())
            except ValueError:
                return "hub.ca_pem: not a PEM certificate"
        return None


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
    hub: HubCredentials | None = None  # written to [hub] credentials_file / ca_file by apply

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
        if self.hub is not None:
            payload["hub"] = {"password": self.hub.password, "ca_pem": self.hub.ca_pem}
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
        hub = None
        if top.get("hub") is not None:
            raw_hub = _mapping(top["hub"], "hub")
            hub = HubCredentials(_text_at(raw_hub, "password", "hub"),
                                 _text_at(raw_hub, "ca_pem", "hub") if raw_hub.get("ca_pem") is not None else None)  # fmt: skip
        content = cls(
            issuer=_text_at(top, "issuer"),
            issued_at=parse_time(top.get("issued_at"), "issued_at"),
            not_after=parse_time(top.get("not_after"), "not_after"),
            household=Household(_text_at(household, "id", "household"), _text_at(household, "label", "household")),
            config_toml=_text_at(top, "config_toml"),
            feeds=tuple(feeds),
            web_users=tuple(users),
            unit=normalise_serial(unit) if unit else None,
            hub=hub,
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
        return self.hub.problem() if self.hub is not None else None


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


def parse_text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a non-empty string (got {value!r:.60})")
    return value


def _text_at(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    return parse_text(obj.get(key), f"{where}.{key}" if where else key)


def parse_time(value: object, where: str) -> datetime:
    text = parse_text(value, where)
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


# ---- trusted issuer keys (here because verification names them; their files: keys.py) ---------


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """A trusted public key and the office it belongs to."""

    issuer: str
    key: SSlibKey
    path: Path

    @property
    def keyid(self) -> str:
        return self.key.keyid


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
    config = validate_config_toml(content.config_toml, f"household {content.household.id}: config")  # ConfigError
    problem = hub_problem(content, config)
    if problem:
        raise BundleError(f"household {content.household.id}: {problem}")
    return sign_payload(content.to_payload(), signer)


def hub_problem(content: BundleContent, config: Config) -> str | None:
    """Hub credentials need a place in the config to go to (checked by the issuer and by the unit)."""
    if content.hub is None:
        return None
    if config.hub.credentials_file is None:
        return "the bundle carries hub credentials but the config's [hub] credentials_file is empty"
    if content.hub.ca_pem is not None and config.hub.ca_file is None:
        return "the bundle carries the hub's CA but the config's [hub] ca_file is empty"
    return None


def new_content(
    *, issuer: str, household: Household, config_toml: str, feeds: Sequence[FeedSpec] = (),
    web_users: Sequence[WebUser] = (), unit: str | None = None, valid_days: int = DEFAULT_VALID_DAYS,
    now: datetime | None = None, hub: HubCredentials | None = None,
) -> BundleContent:  # fmt: skip
    issued = (now or utc_now()).astimezone(UTC).replace(microsecond=0)
    if valid_days < 1:
        raise BundleError("a bundle must be valid for at least one day")
    return BundleContent(issuer, issued, issued + timedelta(days=valid_days), household, config_toml,
                         tuple(feeds), tuple(web_users), normalise_serial(unit) if unit else None, hub)  # fmt: skip


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
    problem = hub_problem(content, config)
    if problem:
        raise refuse(Refusal.INVALID_CONFIG, problem)
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


# ---- files --------------------------------------------------------------------------------------


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def write_private_file(path: Path, data: bytes) -> None:
    """Atomic, 0600 (it holds secrets); when root, owned like its directory (the service user reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_or_none(path) == data:
        return
    atomic_write_bytes(path, data, mode=0o600, owner_like=path.parent.stat())


def decode_payload(bundle_file: bytes) -> dict[str, Any]:
    """The payload of a bundle file WITHOUT verifying it: for tools that show or re-sign one."""
    document = json.loads(bundle_file)
    return json.loads(base64.b64decode(document["payload"]))
