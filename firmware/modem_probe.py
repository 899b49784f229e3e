"""``mamoru modem probe`` and ``mamoru line record-calls``: talk to a real modem, write a transcript.

The probe sends each command of ``PROBE_COMMANDS`` on its own (pyserial, one final reply awaited
per command, ``timeout_s`` each), then, when ``ATI3`` names a known chipset, that dialect's own
start-up commands. ``record_calls`` starts a :class:`ModemLine` exactly as ``mamoru run`` does,
never answers, and after the given time turns the line's transcript into the same format.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable

import serial  # type: ignore[import-untyped]

from firmware.at_channel import Direction, TranscriptEntry
from firmware.dialects import FINAL_REPLIES
from firmware.line_transcript import PROBE_COMMANDS, Exchange, LineTranscript, Unsolicited, init_commands, redact_line
from firmware.modem_line import ModemLine

__all__ = ["probe_modem", "record_calls", "transcript_from_entries"]

log = logging.getLogger(__name__)

READ_CHUNK = 256
_ECHO = re.compile(r"^AT", re.IGNORECASE)  # a modem's own lines never start with AT; echoed commands do


def _read_reply(port: serial.Serial, command: str, timeout_s: float) -> tuple[list[str], str]:
    """Lines up to the final result code; the echo of ``command`` is dropped. ("TIMEOUT" if none.)"""
    buffer = b""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunk = port.read(READ_CHUNK)
        if not chunk:
            continue
        buffer += chunk
        while (cut := re.search(rb"\r\n|\r|\n", buffer)) is not None:
            raw, buffer = buffer[: cut.start()], buffer[cut.end() :]
            text = raw.decode("latin-1").strip()
            if not text or text.upper().replace(" ", "") == command.upper().replace(" ", ""):
                continue
            if text in FINAL_REPLIES:
                return lines, text
            lines.append(text)
    return lines, "TIMEOUT"


def probe_modem(device: str, *, recorded_at: str, baudrate: int = 115200, timeout_s: float = 3.0,
                keep_numbers: bool = False) -> LineTranscript:  # fmt: skip
    """Ask the modem everything a dialect needs; raises OSError/serial.SerialException if it cannot open."""
    transcript = LineTranscript(device, recorded_at, redacted=not keep_numbers, tool="probe")
    with serial.Serial(device, baudrate, timeout=0.1, write_timeout=timeout_s) as port:
        def ask(command: str) -> None:
            port.reset_input_buffer()
            port.write(command.encode("ascii") + b"\r")
            lines, final = _read_reply(port, command, timeout_s)
            shown = tuple(lines if keep_numbers else (redact_line(line) for line in lines))
            transcript.exchanges.append(Exchange(command, shown, final))
            log.info("%s -> %s %s", command, " | ".join(shown), final)

        for command in PROBE_COMMANDS:
            ask(command)
        dialect = transcript.dialect()
        if dialect is not None:
            for command in init_commands(dialect):
                ask(command)
            ask("AT+FCLASS=0")
    return transcript


def transcript_from_entries(entries: list[TranscriptEntry], *, device: str, recorded_at: str,
                            started_at: float, keep_numbers: bool) -> LineTranscript:  # fmt: skip
    """ModemLine's (time, direction, bytes) record as exchanges (until ``started_at``) and unsolicited lines.

    A command's SENT entry is stamped after the write returns, so its reply may be recorded first:
    commands and completed replies are paired in order instead of by position. Echoes (lines that
    are AT commands) are dropped; after start-up, final result codes are replies to the idle
    health check, not line traffic.
    """
    transcript = LineTranscript(device, recorded_at, redacted=not keep_numbers, tool="record-calls")
    clean: Callable[[str], str] = (lambda s: s) if keep_numbers else redact_line
    commands: deque[str] = deque()
    replies: deque[tuple[list[str], str]] = deque()
    lines: list[str] = []
    for at, direction, data in entries:
        if direction is Direction.SENT:
            if at <= started_at:
                commands.append(data.decode("latin-1").strip())
        else:
            text = _shown(data)
            if not text or _ECHO.match(text):
                continue
            if at > started_at:
                if text not in FINAL_REPLIES:
                    transcript.unsolicited.append(Unsolicited(at - started_at, clean(text)))
                continue
            if text in FINAL_REPLIES:
                replies.append((lines, text))
                lines = []
            else:
                lines.append(text)
        while commands and replies:
            reply_lines, final = replies.popleft()
            transcript.exchanges.append(Exchange(commands.popleft(), tuple(clean(x) for x in reply_lines), final))
    return transcript


def _shown(data: bytes) -> str:
    if len(data) == 2 and data[0] == 0x10:  # a DLE event
        return f"<DLE>{chr(data[1])}"
    return data.decode("latin-1").strip()


def record_calls(line: ModemLine, *, seconds: float, stop: threading.Event, recorded_at: str,
                 keep_numbers: bool) -> LineTranscript:  # fmt: skip
    """Open ``line`` as ``mamoru run`` would, listen without answering for ``seconds``, return the transcript."""
    line.open()
    started_at = time.monotonic()
    try:
        deadline = started_at + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            event = line.next_event(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
            if event is not None:
                log.info("line event: %r", event if keep_numbers else type(event).__name__)
        entries = line.transcript()
    finally:
        line.close()
    return transcript_from_entries(entries, device=line.port, recorded_at=recorded_at, started_at=started_at,
                                   keep_numbers=keep_numbers)  # fmt: skip
