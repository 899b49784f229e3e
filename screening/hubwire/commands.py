"""Hub -> unit commands: Ed25519-signed, addressed to one unit, short-lived, used once.

Wire form on ``mamoru/v1/<unit>/commands/in`` (at most 4 KiB)::

    {"v": 1, "keyid": "<sha256 hex of the raw public key>", "payload": "<base64 JSON>", "sig": "<base64>"}

The signature covers ``SIGNING_CONTEXT + payload bytes`` exactly as sent (no re-serialising, so
no canonical-JSON pitfalls; the context keeps a command signature from meaning anything else).
The payload names its unit, an ``id`` that is also the nonce, ``issued`` and ``expires``. A unit
checks, in this order: size, shape, known key, signature, its own unit id, the time window
(lifetime at most ``MAX_LIFETIME``, ``CLOCK_SKEW`` tolerance), and only then the replay guard
(so forged commands cannot fill it). Whoever holds the hub's private key can command units: it
lives on the hub host only (0600); units trust its public key from the signed provisioning bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from screening.core.clock import parse_iso_utc, utc_now
from screening.core.files import atomic_write_text

from .fields import E164, MESSAGE_ID, Fields, WireError, wire_time
from .messages import MAX_BYTES, MAX_CALL_ID, WIRE_VERSION, new_message_id
from .topics import UNIT_ID_PATTERN, Channel

__all__ = [
    "CLOCK_SKEW",
    "Command",
    "CommandAction",
    "CommandRefused",
    "CommandSigner",
    "CommandVerifier",
    "MAX_LIFETIME",
    "RefusalReason",
    "ReplayGuard",
    "SIGNING_CONTEXT",
    "command_keyid",
    "public_key_from_text",
    "public_key_text",
]

log = logging.getLogger(__name__)

SIGNING_CONTEXT = b"mamoru-hub-command/v1\n"
MAX_LIFETIME = timedelta(hours=1)
DEFAULT_LIFETIME = timedelta(minutes=15)
CLOCK_SKEW = timedelta(minutes=2)
REPLAY_CAPACITY = 10_000  # ids remembered until they expire; a full guard refuses rather than forgets
_PUBLIC_PREFIX = "ed25519:"


class CommandAction(StrEnum):
    BLOCK = "block"  # add ``number`` to the unit's block list
    ALLOW = "allow"  # add ``number`` to the unit's allow list
    ACKNOWLEDGE = "acknowledge"  # a relative acknowledged the alert of ``call_id``
    REQUEST_RECORDING = "request_recording"  # upload ``call_id``'s recording on Channel.RECORDINGS
    CHECK_FEEDS = "check_feeds"  # run the feed check now instead of at the next timer


_NEEDS_NUMBER = {CommandAction.BLOCK, CommandAction.ALLOW}
_NEEDS_CALL = {CommandAction.ACKNOWLEDGE, CommandAction.REQUEST_RECORDING}


class RefusalReason(StrEnum):
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_UNIT = "wrong_unit"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"
    GUARD_FULL = "guard_full"

    @property
    def authentic(self) -> bool:
        """Signed by a trusted key (worth an ack); forged or garbled commands are only logged."""
        return self not in {RefusalReason.OVERSIZED, RefusalReason.MALFORMED, RefusalReason.UNKNOWN_KEY,
                            RefusalReason.BAD_SIGNATURE}  # fmt: skip


class CommandRefused(Exception):
    def __init__(self, reason: RefusalReason, detail: str, command_id: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.command_id = command_id


@dataclass(frozen=True, slots=True)
class Command:
    unit: str
    action: CommandAction
    by: str  # who asked, for the unit's log ("family:hanako", "reviewer:sato")
    number: str | None = None
    call_id: int | None = None
    id: str = field(default_factory=new_message_id, kw_only=True)
    issued: datetime = field(default_factory=utc_now, kw_only=True)
    expires: datetime | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.expires is None:
            object.__setattr__(self, "expires", self.issued + DEFAULT_LIFETIME)

    @property
    def valid_until(self) -> datetime:
        assert self.expires is not None  # set in __post_init__
        return self.expires

    def to_payload(self) -> bytes:
        document = {"v": WIRE_VERSION, "id": self.id, "unit": self.unit, "action": self.action.value,
                    "by": self.by, "number": self.number, "call_id": self.call_id,
                    "issued": wire_time(self.issued), "expires": wire_time(self.valid_until)}  # fmt: skip
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_payload(cls, payload: bytes) -> Command:
        try:
            document = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise WireError("command payload: not UTF-8 JSON") from None
        f = Fields(document, "command")
        if f.integer("v", 0, 1000) != WIRE_VERSION:
            raise WireError("command: unsupported wire version")
        command = cls(id=f.text("id", 32, pattern=MESSAGE_ID, empty=False),
                      unit=f.text("unit", 63, pattern=UNIT_ID_PATTERN, empty=False),
                      action=f.enum("action", CommandAction), by=f.text("by", 64, empty=False),
                      number=f.optional_text("number", 16, pattern=E164),
                      call_id=f.optional_integer("call_id", 0, MAX_CALL_ID),
                      issued=f.time("issued"), expires=f.time("expires"))  # fmt: skip
        f.done()
        if (command.action in _NEEDS_NUMBER) != (command.number is not None):
            raise WireError(f"command: {command.action.value} {'needs' if command.action in _NEEDS_NUMBER else 'takes no'} number")
        if (command.action in _NEEDS_CALL) != (command.call_id is not None):
            raise WireError(f"command: {command.action.value} {'needs' if command.action in _NEEDS_CALL else 'takes no'} call_id")
        return command


def command_keyid(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_text(public: Ed25519PublicKey) -> str:
    """``ed25519:<base64 raw key>``: what the provisioning bundle carries to units."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_key_text`; ValueError for anything else."""
    if not text.startswith(_PUBLIC_PREFIX):
        raise ValueError(f"a hub command key starts with {_PUBLIC_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(_PUBLIC_PREFIX):], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError("not a base64 Ed25519 public key (32 bytes)") from None


class CommandSigner:
    """The hub's command key. No I/O in the constructor: ``generate``/``load`` do the file work."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.keyid = command_keyid(self.public)

    @classmethod
    def generate(cls) -> CommandSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> CommandSigner:
        """The key in ``path`` (PKCS#8 PEM), made (0600) on first use."""
        if path.exists():
            if path.stat().st_mode & 0o077:
                log.warning("%s is readable by others: it can command every unit", path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path}: not an Ed25519 private key")
            return cls(key)
        signer = cls.generate()
        pem = signer._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        log.info("hub command key %s written to %s", signer.keyid[:16], path)
        return signer

    def sign(self, command: Command) -> bytes:
        """The envelope bytes to publish on the unit's ``commands/in``."""
        payload = command.to_payload()
        signature = self._private.sign(SIGNING_CONTEXT + payload)
        envelope = {"v": WIRE_VERSION, "keyid": self.keyid, "payload": base64.b64encode(payload).decode("ascii"),
                    "sig": base64.b64encode(signature).decode("ascii")}  # fmt: skip
        data = json.dumps(envelope, separators=(",", ":")).encode("ascii")
        if len(data) > MAX_BYTES[Channel.COMMANDS]:
            raise WireError(f"command envelope of {len(data)} bytes is over the limit")
        return data


@dataclass
class ReplayGuard:
    """Command ids seen and still within their lifetime. Persist it (``save``/``load``) so a
    restart inside a command's lifetime does not reopen the replay window."""

    capacity: int = REPLAY_CAPACITY
    _seen: dict[str, datetime] = field(default_factory=dict)

    def admit(self, command_id: str, expires: datetime, now: datetime) -> bool:
        """True the first time an id is offered while valid; False for a replay."""
        self._seen = {k: v for k, v in self._seen.items() if v + CLOCK_SKEW >= now}
        if command_id in self._seen:
            return False
        if len(self._seen) >= self.capacity:
            raise CommandRefused(RefusalReason.GUARD_FULL, "too many live commands", command_id)
        self._seen[command_id] = expires
        return True

    def to_json(self) -> str:
        return json.dumps({k: wire_time(v) for k, v in sorted(self._seen.items())})

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json(), mode=0o600)

    @classmethod
    def load(cls, path: Path, capacity: int = REPLAY_CAPACITY) -> ReplayGuard:
        """The saved guard; an unreadable file gives an empty guard (logged), since the time window still holds."""
        guard = cls(capacity)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            guard._seen = {str(k): parse_iso_utc(str(v)) for k, v in dict(document).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            log.error("replay guard %s unreadable (%s): starting empty", path, exc)
        return guard


class CommandVerifier:
    """A unit's gate for ``commands/in``: returns the Command or raises CommandRefused."""

    def __init__(self, unit: str, trusted: Iterable[Ed25519PublicKey], guard: ReplayGuard) -> None:
        self.unit = unit
        self._keys = {command_keyid(key): key for key in trusted}
        self.guard = guard

    def verify(self, data: bytes, now: datetime | None = None) -> Command:
        now = now or utc_now()
        if len(data) > MAX_BYTES[Channel.COMMANDS]:
            raise CommandRefused(RefusalReason.OVERSIZED, f"{len(data)} bytes")
        try:
            envelope: Any = json.loads(data.decode("utf-8"))
            f = Fields(envelope, "command envelope")
            if f.integer("v", 0, 1000) != WIRE_VERSION:
                raise WireError("unsupported wire version")
            keyid = f.text("keyid", 64, empty=False)
            payload = base64.b64decode(f.text("payload", 4096, empty=False), validate=True)
            signature = base64.b64decode(f.text("sig", 128, empty=False), validate=True)
            f.done()
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, binascii.Error, WireError) as exc:
            raise CommandRefused(RefusalReason.MALFORMED, str(exc)) from None
        key = self._keys.get(keyid)
        if key is None:
            raise CommandRefused(RefusalReason.UNKNOWN_KEY, f"key {keyid[:16]} is not trusted")
        try:
            key.verify(signature, SIGNING_CONTEXT + payload)
        except InvalidSignature:
            raise CommandRefused(RefusalReason.BAD_SIGNATURE, "signature does not verify") from None
        try:
            command = Command.from_payload(payload)
        except WireError as exc:
            # Signed by the hub but off contract: a hub bug, refused all the same.
            raise CommandRefused(RefusalReason.MALFORMED, str(exc)) from None
        if command.unit != self.unit:
            raise CommandRefused(RefusalReason.WRONG_UNIT, f"addressed to {command.unit}", command.id)
        if command.issued > now + CLOCK_SKEW:
            raise CommandRefused(RefusalReason.NOT_YET_VALID, f"issued {wire_time(command.issued)}", command.id)
        if command.valid_until - command.issued > MAX_LIFETIME:
            raise CommandRefused(RefusalReason.LIFETIME_TOO_LONG, "lifetime over the maximum", command.id)
        if command.valid_until + CLOCK_SKEW < now:
            raise CommandRefused(RefusalReason.EXPIRED, f"expired {wire_time(command.valid_until)}", command.id)
        if not self.guard.admit(command.id, command.valid_until, now):
            raise CommandRefused(RefusalReason.REPLAYED, "already seen", command.id)
        return command
