"""The unit's side of the hub wire contract: topics, message kinds and signed commands.

Topics live under ``mamoru/v1/<unit>/``; the broker's ACL lets a unit publish and subscribe only
under its own id. Messages are UTF-8 JSON objects carrying ``v`` (contract version), ``unit``,
``id`` (unique per message: QoS 1 is at-least-once, the hub drops a repeated id) and ``sent_at``
(UTC with ``Z``).

Hub → unit commands are an envelope ``{"payload": <base64 JSON>, "sig": <base64 Ed25519>}``: the
signature covers ``COMMAND_DOMAIN + payload bytes`` so a signature made for anything else never
verifies here. The payload names the unit, the command kind, its arguments, a random nonce, and
when it was issued and expires. A unit accepts a command only when all of these hold; everything
else is logged and ignored (never answered in detail: the sender may be an attacker).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from screening.core.clock import iso_utc

WIRE_VERSION = 1
TOPIC_ROOT = "mamoru/v1"
COMMAND_DOMAIN = b"mamoru-hub-command-v1\n"
MAX_COMMAND_BYTES = 8 * 1024  # a command is a few hundred bytes; anything bigger is refused unread
MAX_COMMAND_LIFETIME = timedelta(hours=1)  # a command valid longer than this is refused (replay window)
CLOCK_SKEW = timedelta(minutes=5)  # a Pi without RTC may run a little behind the hub
UNIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # no MQTT wildcards or separators
NONCE = re.compile(r"^[0-9a-f]{32,64}$")


class Channel(StrEnum):
    """The last topic level of what a unit publishes (``mamoru/v1/<unit>/<channel>``)."""

    STATUS = "status"  # retained {"online": bool}; the last will says offline
    CALLS = "calls"  # one call summary (or a fraud update of a call)
    HEALTH = "health"
    REPORTS = "reports"  # a family-confirmed fraud report
    RECORDINGS = "recordings"  # a recording uploaded on request
    RESULTS = "results"  # what the unit did with an accepted command
    COMMANDS = "commands"  # hub → unit (the only topic a unit subscribes to)


class CommandKind(StrEnum):
    BLOCK = "block"
    ALLOW = "allow"
    ACK_ALERT = "ack_alert"
    REQUEST_RECORDING = "request_recording"
    CHECK_FEEDS = "check_feeds"


class Role(StrEnum):
    """Who on the hub asked: only a household's family may ask for its recordings."""

    FAMILY = "family"
    POLICE = "police"
    REVIEWER = "reviewer"


def topic(unit: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{unit}/{channel.value}"


def valid_unit_id(text: str) -> bool:
    return bool(UNIT_ID.match(text))


def message(unit: str, message_id: str, sent_at: datetime, body: dict[str, Any]) -> bytes:
    """The JSON bytes of one unit → hub message."""
    document = {"v": WIRE_VERSION, "unit": unit, "id": message_id, "sent_at": iso_utc(sent_at), **body}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Command:
    """A command whose signature, unit, lifetime and shape were checked (the nonce is checked by the
    caller, which owns the replay store)."""

    kind: CommandKind
    unit: str
    nonce: str
    issued_at: datetime
    expires_at: datetime
    role: Role
    household: str | None
    args: dict[str, Any] = field(default_factory=dict)


class CommandRefused(ValueError):
    """Why a command was ignored (for the log only)."""


def sign_command(key: Ed25519PrivateKey, payload: dict[str, Any]) -> bytes:
    """The hub's side, here so the unit's tests and the hub build commands one way."""
    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    signature = key.sign(COMMAND_DOMAIN + raw)
    return json.dumps({"payload": base64.b64encode(raw).decode(), "sig": base64.b64encode(signature).decode()}).encode()


def command_payload(unit: str, kind: CommandKind, args: dict[str, Any], *, nonce: str, issued_at: datetime,
                    lifetime: timedelta, role: Role = Role.FAMILY, household: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"v": WIRE_VERSION, "unit": unit, "kind": kind.value, "args": args, "nonce": nonce,
            "issued_at": iso_utc(issued_at), "expires_at": iso_utc(issued_at + lifetime),
            "by": {"role": role.value, "household": household}}  # fmt: skip


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise ValueError(f"not a 32-byte Ed25519 public key in hex: {exc}") from None


def verify_command(data: bytes, key: Ed25519PublicKey, unit: str, now: datetime) -> Command:
    """The checked command, or :class:`CommandRefused` saying why."""
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandRefused(f"oversized ({len(data)} bytes)")
    try:
        envelope = json.loads(data)
        raw = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["sig"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise CommandRefused("malformed envelope") from None
    try:
        key.verify(signature, COMMAND_DOMAIN + raw)
    except InvalidSignature:
        raise CommandRefused("bad signature") from None
    try:
        payload = json.loads(raw)
        command = _command_from(payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandRefused(f"malformed payload: {exc}") from None
    if command.unit != unit:
        raise CommandRefused(f"for unit {command.unit!r}, not this one")
    if command.expires_at - command.issued_at > MAX_COMMAND_LIFETIME:
        raise CommandRefused("lifetime too long")
    if command.issued_at - CLOCK_SKEW > now:
        raise CommandRefused("issued in the future")
    if command.expires_at <= now:
        raise CommandRefused("expired")
    return command


def _command_from(payload: Any) -> Command:
    if not isinstance(payload, dict) or payload.get("v") != WIRE_VERSION:
        raise ValueError("unknown version")
    args = payload["args"]
    by = payload["by"]
    if not isinstance(args, dict) or not isinstance(by, dict):
        raise ValueError("args and by must be objects")
    nonce = str(payload["nonce"])
    if not NONCE.match(nonce):
        raise ValueError("bad nonce")
    household = by.get("household")
    return Command(kind=CommandKind(payload["kind"]), unit=str(payload["unit"]), nonce=nonce,
                   issued_at=_utc(payload["issued_at"]), expires_at=_utc(payload["expires_at"]),
                   role=Role(by["role"]), household=str(household) if household is not None else None,
                   args=args)  # fmt: skip


def _utc(text: object) -> datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError("times are UTC with Z")
    return datetime.fromisoformat(text[:-1] + "+00:00")
