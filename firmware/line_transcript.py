"""Transcripts of a real modem, for bug reports and for the virtual modem to replay as a dialect test.

One JSON format (``mamoru-line-transcript/1``) for both tools that write one:

- ``mamoru modem probe`` -- ``exchanges``: each command sent and the modem's reply lines and final
  result (identification ATI0-ATI11, ``+FCLASS=?``, ``+VSM=?``, ``+VLS=?``, caller-ID format
  commands, then the matching dialect's own init commands, so mamoru's start-up replays too);
- ``mamoru line record-calls`` -- the same ``exchanges`` of its start-up, plus ``unsolicited``: what
  the modem printed by itself afterwards (RING, caller-ID blocks, DLE events), each with its offset
  in seconds from the end of start-up.

Redaction (unless the user keeps numbers): caller-ID values (``NMBR``/``NAME``/``DDN_NMBR``/``MESG``)
and any run of 7 or more digits become ``X`` digits of the same length (the length is what a parser
bug may depend on), serial-number lines lose their value. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from firmware.dialects import DIALECTS, ModemDialect, dialect_for_ati3

__all__ = ["FORMAT_ID", "Exchange", "LineTranscript", "TranscriptError", "Unsolicited", "redact_line"]

FORMAT_ID = "mamoru-line-transcript/1"
MAX_TRANSCRIPT_BYTES = 4 * 1024 * 1024

_CID_VALUE = re.compile(r"^(\s*(?:NMBR|NAME|DDN_NMBR|MESG)\s*=\s*)(.*)$", re.IGNORECASE)
_LONG_DIGITS = re.compile(r"\d{7,}")
_SERIAL = re.compile(r"^(.*?(?:serial(?:\s*(?:number|no\.?))?|s/n|imei)\s*[:=#]?\s*)(\S.*)$", re.IGNORECASE)


class TranscriptError(ValueError):
    """A transcript file that cannot be used; the message says why."""


def _mask(text: str) -> str:
    return re.sub(r"[0-9A-Za-z]", "X", text)


def redact_line(line: str) -> str:
    """A modem line with caller-ID values, long digit runs and serial numbers masked."""
    match = _CID_VALUE.match(line)
    if match:
        value = match.group(2)
        keep = value.strip().upper() in ("P", "O", "C", "S", "")  # reason codes carry no one's number
        return match.group(1) + (value if keep else _mask(value))
    match = _SERIAL.match(line)
    if match:
        return match.group(1) + _mask(match.group(2))
    return _LONG_DIGITS.sub(lambda m: "X" * len(m.group(0)), line)


@dataclass(frozen=True, slots=True)
class Exchange:
    command: str
    lines: tuple[str, ...]
    final: str  # OK, ERROR, ... or TIMEOUT


@dataclass(frozen=True, slots=True)
class Unsolicited:
    at_s: float  # seconds after start-up ended
    text: str  # one line, or a DLE event written as "<DLE>X"


@dataclass(slots=True)
class LineTranscript:
    device: str
    recorded_at: str  # ISO-8601 UTC with Z
    exchanges: list[Exchange] = field(default_factory=list)
    unsolicited: list[Unsolicited] = field(default_factory=list)
    redacted: bool = True
    tool: str = "probe"

    def reply_to(self, command: str) -> Exchange | None:
        """The first recorded exchange for ``command`` (spaces and case ignored), if any."""
        wanted = _normalise(command)
        return next((e for e in self.exchanges if _normalise(e.command) == wanted), None)

    def identification(self) -> str:
        reply = self.reply_to("ATI3")
        return " ".join(reply.lines).strip() if reply is not None else ""

    def dialect(self) -> ModemDialect | None:
        return dialect_for_ati3(self.identification())

    def missing_for(self, dialect: ModemDialect) -> list[str]:
        """Commands mamoru's start-up sends with this dialect that the transcript has no OK for."""
        wanted = ["ATZ", "ATE0", "ATI3", *dialect.init_commands, dialect.voice_mode, dialect.voice_format,
                  dialect.silence_detection]  # fmt: skip
        return [c for c in wanted if (r := self.reply_to(c)) is None or r.final != "OK"]

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT_ID, "tool": self.tool, "device": self.device, "recorded_at": self.recorded_at,
            "redacted": self.redacted,
            "dialect": d.key if (d := self.dialect()) is not None else None,
            "exchanges": [{"command": e.command, "lines": list(e.lines), "final": e.final} for e in self.exchanges],
            "unsolicited": [{"at_s": round(u.at_s, 3), "text": u.text} for u in self.unsolicited],
        }, ensure_ascii=False, indent=1) + "\n"  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> LineTranscript:
        if len(text) > MAX_TRANSCRIPT_BYTES:
            raise TranscriptError(f"transcript larger than {MAX_TRANSCRIPT_BYTES} bytes")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TranscriptError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_ID:
            raise TranscriptError(f"not a {FORMAT_ID} transcript")
        try:
            exchanges = [Exchange(str(e["command"]), tuple(str(x) for x in e["lines"]), str(e["final"]))
                         for e in doc.get("exchanges", [])]  # fmt: skip
            unsolicited = [Unsolicited(float(u["at_s"]), str(u["text"])) for u in doc.get("unsolicited", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise TranscriptError(f"malformed entry: {exc!r}") from None
        return cls(str(doc.get("device", "")), str(doc.get("recorded_at", "")), exchanges, unsolicited,
                   bool(doc.get("redacted", True)), str(doc.get("tool", "probe")))  # fmt: skip


def _normalise(command: str) -> str:
    return re.sub(r"\s+", "", command).upper()


# What `mamoru modem probe` asks, in order. Voice-class queries need +FCLASS=8 first.
PROBE_COMMANDS: tuple[str, ...] = (
    "ATZ", "ATE0", "ATV1",
    *(f"ATI{n}" for n in range(12)),
    "AT+FCLASS=?", "AT+FCLASS=8", "AT+VSM=?", "AT+VLS=?", "AT+VSD=?",
    "AT+VCID=?", "AT#CID=?", "AT+VRID=?", "AT+FCLASS=0",
)


def init_commands(dialect: ModemDialect) -> list[str]:
    """The dialect's own start-up, as ModemLine sends it (replayed to prove mamoru starts on it)."""
    return [*dialect.init_commands, dialect.voice_mode, dialect.voice_format, dialect.silence_detection]


def known_dialects() -> str:
    return ", ".join(sorted(DIALECTS))
