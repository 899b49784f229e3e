"""Unit -> hub messages: call summaries, health, fraud reports, status, command acks, recordings.

Every message is one JSON object (UTF-8) with a common head::

    {"v": 1, "kind": "call", "id": "<32 hex>", "unit": "<unit id>", "sent": "2026-12-06T00:41:07.120Z", ...}

``id`` is made once by the unit when it queues the message and kept across retries, so the hub
stores each message once however often QoS 1 redelivers it. ``unit`` must equal the unit in the
topic (the broker's ACL vouches for the topic, not for the body). Decoding is strict: size
limit per channel, no unknown keys, every value typed and bounded (WireError otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from screening.core.clock import utc_now
from screening.core.model import Action, CallOutcome, Category, Verdict

from .fields import E164, FLAG, MESSAGE_ID, Fields, WireError, wire_time
from .topics import UNIT_ID_PATTERN, Channel

__all__ = [
    "AckResult",
    "CallSummary",
    "CommandAck",
    "FraudReport",
    "Health",
    "LineHealth",
    "MAX_BYTES",
    "Message",
    "Recording",
    "Status",
    "WIRE_VERSION",
    "decode_message",
    "encode_message",
    "new_message_id",
]

WIRE_VERSION = 1
# Per channel; a recording is one WAV of at most ~2 minutes at 8 kHz 16-bit, base64-encoded.
MAX_BYTES: dict[Channel, int] = {
    Channel.CALLS: 8 * 1024,
    Channel.HEALTH: 4 * 1024,
    Channel.REPORTS: 8 * 1024,
    Channel.STATUS: 1024,
    Channel.ACKS: 2 * 1024,
    Channel.RECORDINGS: 3 * 1024 * 1024,
    Channel.COMMANDS: 4 * 1024,
}
EXCERPT_CHARS = 280
MAX_CALL_ID = 2**53 - 1  # JSON-safe integer range


def new_message_id() -> str:
    return uuid.uuid4().hex


class LineHealth(StrEnum):
    OK = "ok"
    FAULT = "fault"
    UNKNOWN = "unknown"


class AckResult(StrEnum):
    DONE = "done"
    REFUSED = "refused"  # validly signed but not acceptable now (expired, replayed, unknown call…)
    FAILED = "failed"  # accepted, but doing it failed (e.g. the recording is gone)


@dataclass(frozen=True, slots=True)
class _Head:
    unit: str
    id: str = field(default_factory=new_message_id, kw_only=True)
    sent: datetime = field(default_factory=utc_now, kw_only=True)


@dataclass(frozen=True, slots=True)
class CallSummary(_Head):
    """One finished call as the household chose to share it (``number`` is '' when none was shown)."""

    KIND = "call"
    call_id: int
    started: datetime
    number: str
    category: Category
    action: Action
    outcome: CallOutcome | None = None
    verdict: Verdict | None = None
    flags: tuple[str, ...] = ()
    excerpt: str = ""
    alerted: bool = False


@dataclass(frozen=True, slots=True)
class Health(_Head):
    KIND = "health"
    line: LineHealth
    version: str
    disk_free_mb: int
    uptime_s: int
    speech_model: str | None = None
    feed_version: int | None = None
    faults: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FraudReport(_Head):
    """The family confirmed a call as fraud ("詐欺だった"): evidence for the shared list, never a block by itself."""

    KIND = "report"
    number: str
    call_id: int
    heard: datetime
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Status(_Head):
    """Retained; published as ``online=True`` on connect and registered as the last will with ``False``.

    The hub applies status messages in arrival order, not by ``sent``: the will is composed at
    connect time, so its ``sent`` is older than the "online" published just after."""

    KIND = "status"
    online: bool


@dataclass(frozen=True, slots=True)
class CommandAck(_Head):
    KIND = "ack"
    command: str
    result: AckResult
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Recording(_Head):
    """One call's recording, sent only in answer to a signed ``request_recording`` command."""

    KIND = "recording"
    call_id: int
    command: str
    wav: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.wav).hexdigest()


Message = CallSummary | Health | FraudReport | Status | CommandAck | Recording

CHANNEL_OF: dict[type[Any], Channel] = {
    CallSummary: Channel.CALLS,
    Health: Channel.HEALTH,
    FraudReport: Channel.REPORTS,
    Status: Channel.STATUS,
    CommandAck: Channel.ACKS,
    Recording: Channel.RECORDINGS,
}


def _body(message: Message) -> dict[str, Any]:
    match message:
        case CallSummary():
            return {"call_id": message.call_id, "started": wire_time(message.started), "number": message.number,
                    "category": message.category.value, "action": message.action.value,
                    "outcome": message.outcome.value if message.outcome else None,
                    "verdict": message.verdict.value if message.verdict else None,
                    "flags": list(message.flags), "excerpt": message.excerpt[:EXCERPT_CHARS],
                    "alerted": message.alerted}  # fmt: skip
        case Health():
            return {"line": message.line.value, "version": message.version, "disk_free_mb": message.disk_free_mb,
                    "uptime_s": message.uptime_s, "speech_model": message.speech_model,
                    "feed_version": message.feed_version, "faults": list(message.faults)}  # fmt: skip
        case FraudReport():
            return {"number": message.number, "call_id": message.call_id, "heard": wire_time(message.heard),
                    "phrases": list(message.phrases)}  # fmt: skip
        case Status():
            return {"online": message.online}
        case CommandAck():
            return {"command": message.command, "result": message.result.value, "reason": message.reason}
        case Recording():
            return {"call_id": message.call_id, "command": message.command,
                    "wav": base64.b64encode(message.wav).decode("ascii"), "sha256": message.sha256}  # fmt: skip


def encode_message(message: Message) -> tuple[Channel, bytes]:
    """The channel to publish on and the UTF-8 JSON bytes; WireError if the hub would refuse it."""
    channel = CHANNEL_OF[type(message)]
    document = {"v": WIRE_VERSION, "kind": message.KIND, "id": message.id, "unit": message.unit,
                "sent": wire_time(message.sent), **_body(message)}  # fmt: skip
    payload = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # Round-trip through the decoder: a unit must never queue what the hub will refuse.
    decode_message(channel, payload, unit=message.unit)
    return channel, payload


def decode_message(channel: Channel, payload: bytes, *, unit: str) -> Message:
    """The message on ``mamoru/v1/<unit>/<channel>``; WireError for anything off contract."""
    if channel is Channel.COMMANDS:
        raise WireError("commands are not unit messages (see screening.hubwire.commands)")
    if len(payload) > MAX_BYTES[channel]:
        raise WireError(f"{channel.value}: {len(payload)} bytes, more than {MAX_BYTES[channel]}")
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WireError(f"{channel.value}: not UTF-8 JSON ({exc.__class__.__name__})") from None
    f = Fields(document, channel.value)
    if f.integer("v", 0, 1000) != WIRE_VERSION:
        raise WireError(f"{channel.value}: wire version {document.get('v')} is not {WIRE_VERSION}")
    kind = f.text("kind", 20)
    cls = next(c for c, ch in CHANNEL_OF.items() if ch is channel)
    if kind != cls.KIND:
        raise WireError(f"{channel.value}: kind {kind!r} does not belong on this channel")
    head: dict[str, Any] = {"id": f.text("id", 32, pattern=MESSAGE_ID, empty=False),
                            "unit": f.text("unit", 63, pattern=UNIT_ID_PATTERN, empty=False),
                            "sent": f.time("sent")}  # fmt: skip
    if head["unit"] != unit:
        raise WireError(f"{channel.value}: body names unit {head['unit']!r} but came from {unit!r}")
    message: Message
    if cls is CallSummary:
        message = CallSummary(**head, call_id=f.integer("call_id", 0, MAX_CALL_ID), started=f.time("started"),
                              number=f.text("number", 16, pattern=E164), category=f.enum("category", Category),
                              action=f.enum("action", Action), outcome=f.optional_enum("outcome", CallOutcome),
                              verdict=f.optional_enum("verdict", Verdict), flags=f.texts("flags", 16, 32, pattern=FLAG),
                              excerpt=f.text("excerpt", EXCERPT_CHARS), alerted=f.boolean("alerted"))  # fmt: skip
    elif cls is Health:
        message = Health(**head, line=f.enum("line", LineHealth), version=f.text("version", 40, empty=False),
                         disk_free_mb=f.integer("disk_free_mb", 0, 2**31), uptime_s=f.integer("uptime_s", 0, 2**40),
                         speech_model=f.optional_text("speech_model", 80),
                         feed_version=f.optional_integer("feed_version", 0, MAX_CALL_ID),
                         faults=f.texts("faults", 16, 32, pattern=FLAG))  # fmt: skip
    elif cls is FraudReport:
        message = FraudReport(**head, number=f.text("number", 16, pattern=E164, empty=False),
                              call_id=f.integer("call_id", 0, MAX_CALL_ID), heard=f.time("heard"),
                              phrases=f.texts("phrases", 10, 64))  # fmt: skip
    elif cls is Status:
        message = Status(**head, online=f.boolean("online"))
    elif cls is CommandAck:
        message = CommandAck(**head, command=f.text("command", 32, pattern=MESSAGE_ID, empty=False),
                             result=f.enum("result", AckResult), reason=f.text("reason", 200))  # fmt: skip
    else:
        call_id = f.integer("call_id", 0, MAX_CALL_ID)
        command = f.text("command", 32, pattern=MESSAGE_ID, empty=False)
        encoded = f.text("wav", MAX_BYTES[Channel.RECORDINGS], empty=False)
        digest = f.text("sha256", 64, empty=False)
        try:
            wav = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise WireError("recordings: 'wav' is not base64") from None
        if hashlib.sha256(wav).hexdigest() != digest:
            raise WireError("recordings: 'sha256' does not match the audio")
        message = Recording(**head, call_id=call_id, command=command, wav=wav)
    f.done()
    return message
