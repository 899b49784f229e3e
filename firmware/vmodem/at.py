"""The AT command line as the emulated modem reads it (V.250 framing) and its result codes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from firmware.dialects import (
    ModemDialect,
)
from firmware.dle import DTMF_DIGITS

DIAL_MODIFIERS = frozenset("TPW,!@-()")  # tone/pulse/wait/pause/flash and separators: not digits

CR, LF, BS, CAN = 0x0D, 0x0A, 0x08, 0x18
ABORT_RX = ord("!")

OK = "OK"
ERROR = "ERROR"
CONNECT = "CONNECT"
RING = "RING"
NO_CARRIER = "NO CARRIER"
BUSY = "BUSY"
NO_ANSWER = "NO ANSWER"
NO_DIALTONE = "NO DIALTONE"
_DEFERRED = "<final reply later>"  # a handler's result when the final reply comes from a timer
NUMERIC_CODES = {OK: "0", CONNECT: "1", RING: "2", NO_CARRIER: "3", ERROR: "4",
                 "NO DIALTONE": "6", "BUSY": "7", "NO ANSWER": "8"}
FCLASS_VALUES = ("0", "1", "8")
VOICE_CLASS = "8"


class _CommandError(Exception):
    """A command the emulated modem rejects with ERROR."""


@dataclass(frozen=True, slots=True)
class AtCommand:
    """One command out of an AT command line: ``E1``, ``+VLS=1``, ``S0?``, ``+FCLASS=?``."""

    name: str  # "E", "&F", "S", "+FCLASS", "#CID", "D"
    op: str  # "" (action/basic), "=", "?", "=?"
    arg: str  # digits for basic commands, the raw text after '=' for extended ones


_EXT_NAME = re.compile(r"[+#][A-Z][A-Z0-9!%\-./:_]*")
_S_REGISTER = re.compile(r"S(\d{1,3})(=(\d{0,3})|\?)?")
_DIGITS = re.compile(r"\d*")


def _normalise_body(body: str) -> str:
    """Upper-case and drop spaces outside double quotes (V.250 5.2.1)."""
    out: list[str] = []
    quoted = False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if quoted or ch == '"':
            out.append(ch)
        elif ch != " ":
            out.append(ch.upper())
    return "".join(out)


def _find_unquoted(text: str, char: str, start: int) -> int:
    quoted = False
    for i in range(start, len(text)):
        if text[i] == '"':
            quoted = not quoted
        elif text[i] == char and not quoted:
            return i
    return len(text)


def parse_at_body(body: str) -> list[AtCommand]:
    """Split what follows ``AT`` into commands; raises ``ValueError`` on malformed text."""
    text = _normalise_body(body)
    cmds: list[AtCommand] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ";":
            i += 1
        elif ch in "+#":
            i = _parse_extended(text, i, cmds)
        elif ch == "&":
            if i + 1 >= n or not text[i + 1].isalpha():
                raise ValueError(f"bad & command at {i}")
            digits = _DIGITS.match(text, i + 2).group()  # type: ignore[union-attr]
            cmds.append(AtCommand("&" + text[i + 1], "", digits))
            i += 2 + len(digits)
        elif ch == "S":
            m = _S_REGISTER.match(text, i)
            if not m:
                raise ValueError(f"bad S-register command at {i}")
            op = "" if m.group(2) is None else ("?" if m.group(2) == "?" else "=")
            cmds.append(AtCommand("S", op, f"{m.group(1)},{m.group(3) or ''}"))
            i = m.end()
        elif ch in "AD":
            cmds.append(AtCommand(ch, "", text[i + 1 :]))  # A and D take the rest of the line
            break
        elif ch.isalpha():
            digits = _DIGITS.match(text, i + 1).group()  # type: ignore[union-attr]
            cmds.append(AtCommand(ch, "", digits))
            i += 1 + len(digits)
        else:
            raise ValueError(f"unexpected {ch!r} at {i}")
    return cmds


def _parse_extended(text: str, i: int, cmds: list[AtCommand]) -> int:
    m = _EXT_NAME.match(text, i)
    if not m:
        raise ValueError(f"bad extended command at {i}")
    name, i = m.group(), m.end()
    if text.startswith("=?", i):
        op, arg, i = "=?", "", i + 2
    elif text.startswith("?", i):
        op, arg, i = "?", "", i + 1
    elif text.startswith("=", i):
        end = _find_unquoted(text, ";", i + 1)
        op, arg, i = "=", text[i + 1 : end], end
    else:
        op, arg = "", ""
    if i < len(text) and text[i] != ";":
        raise ValueError(f"junk after {name} at {i}")
    cmds.append(AtCommand(name, op, arg))
    return i


def format_cid_block(lines: Sequence[str]) -> bytes:
    """Frame caller-ID lines as both dialects print them: ``\\r\\nKEY = VALUE\\r\\n`` each."""
    return b"".join(b"\r\n" + line.encode("utf-8", "replace") + b"\r\n" for line in lines)


def _int_arg(value: str, low: int = 0, high: int = 255) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise _CommandError(f"bad numeric argument {value!r}")
    return int(value)


def _dialect_vsm_args(dialect: ModemDialect) -> tuple[str, ...]:
    """The ``+VSM`` arguments the dialect's own voice_format command uses."""
    _, _, args = dialect.voice_format.partition("=")
    return tuple(a.strip() for a in args.split(","))


def _parse_dial_string(arg: str) -> tuple[str, bool]:
    """The digits of a D command's dial string and whether it ended in ';' (V.250 6.3.1).

    Tone/pulse/wait/pause modifiers and separators are skipped; stored-number
    and other modifiers are not emulated and give ERROR.
    """
    return_after_dial = arg.endswith(";")
    body = arg[:-1] if return_after_dial else arg
    digits: list[str] = []
    for ch in body:
        if ch in DTMF_DIGITS:
            digits.append(ch)
        elif ch not in DIAL_MODIFIERS:
            raise _CommandError(f"dial modifier {ch!r} not emulated")
    if not digits:
        raise _CommandError("empty dial string")
    return "".join(digits), return_after_dial

