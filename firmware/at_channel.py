"""Byte-level framing for a voice modem's serial stream; no I/O, no threads.

A voice modem talks two ways on one wire. In *command state* it prints CR/LF
framed lines (``OK``, ``RING``, ``NMBR = ...``) and, in voice mode, two-byte
DLE event codes (``DLE h``: handset on-hook) that may appear anywhere, even in
the middle of a line. In *receive data state* (after ``CONNECT`` to ``AT+VRX``)
every byte is audio except DLE codes, until ``DLE ETX`` returns the modem to
command state.

:class:`LineSplitter` handles command state and can hand back the bytes it has
not parsed yet at the exact moment a ``CONNECT`` switches the stream to audio;
:class:`VoiceStreamDecoder` handles receive data state and hands back the bytes
that follow ``DLE ETX``. Both take arbitrary chunk boundaries and never raise
on any input: a modem on a flaky USB hub produces garbage, and the reader that
owns these must not die.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from firmware.dle import DLE, ETX, DleEvent, Unshielder

CR = 0x0D
LF = 0x0A

# V.250 basic commands that are the same on every modem, so they are not
# dialect data: the health check and the identification query used by "auto".
ATTENTION = "AT"
IDENTIFY = "ATI3"

# Longest line we keep. Real modem lines are < 100 bytes; anything longer is a
# stream that lost its framing (audio read in command state, line noise).
DEFAULT_MAX_LINE = 1024

_SPECIAL = re.compile(rb"[\r\n\x10]")


# ---- frames -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextLine:
    """One CR/LF-terminated line, without terminator and without DLE pairs."""

    data: bytes

    def text(self) -> str:
        """Decoded for matching; undecodable bytes become U+FFFD, never an error."""
        return self.data.decode("utf-8", errors="replace").strip()


@dataclass(frozen=True, slots=True)
class DleCode:
    """A ``DLE <code>`` pair seen in command state (the code byte only)."""

    code: int

    def event(self) -> DleEvent | None:
        try:
            return DleEvent(chr(self.code))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Overflow:
    """A line longer than the cap was dropped; ``length`` bytes were discarded."""

    length: int


Frame = TextLine | DleCode | Overflow


# ---- command state ----------------------------------------------------------


class LineSplitter:
    """Incremental splitter of command-state bytes into frames.

    Rules (the fuzz test checks them against :func:`reference_frames`):

    * CR and LF both end a line; empty lines are dropped (``\\r\\n`` framing).
    * ``DLE x`` is a :class:`DleCode` wherever it appears; it is not part of the
      line around it, which continues after it. A DLE at the end of a chunk
      pairs with the first byte of the next chunk. A DLE followed by CR or LF
      (no such code exists) is dropped and the CR/LF still ends the line, so
      one stray 0x10 in line noise cannot glue two modem lines together.
    * A line longer than ``max_line`` bytes becomes one :class:`Overflow` when
      its terminator arrives; memory stays bounded meanwhile.

    Parsing is lazy (:meth:`next_frame` parses only up to the next frame) so
    that when a ``CONNECT`` switches the modem to audio, :meth:`take_unparsed`
    returns exactly the bytes that followed it.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._max_line = max_line
        self._inbox = bytearray()
        self._pos = 0
        self._line = bytearray()
        self._overflowed = 0  # bytes seen in the current over-long line, 0 if not over-long
        self._pending_dle = False
        self._after_cr = False  # last consumed byte was CR: a following LF belongs to it

    def feed(self, data: bytes) -> None:
        self._inbox += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None when more bytes are needed."""
        data = self._inbox
        i = self._pos
        n = len(data)
        frame: Frame | None = None
        while i < n and frame is None:
            if self._pending_dle:
                self._pending_dle = False
                if data[i] not in (CR, LF):  # a stray DLE must not swallow a line end
                    frame = DleCode(data[i])
                    i += 1
                    self._after_cr = False
                continue
            byte = data[i]
            if byte == DLE:
                self._pending_dle = True
                i += 1
            elif byte in (CR, LF):
                i += 1
                frame = self._end_line()
                self._after_cr = byte == CR
                continue
            else:
                match = _SPECIAL.search(data, i)
                j = match.start() if match else n
                self._append(bytes(data[i:j]))
                i = j
            self._after_cr = False
        self._consume_to(i)
        return frame

    def frames(self) -> list[Frame]:
        """All complete frames currently available (convenience for tests)."""
        out: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def take_unparsed(self) -> tuple[bytes, bool]:
        """Bytes not parsed yet, and whether the last parsed byte was a CR.

        Called when the stream switches to audio right after ``CONNECT\\r``: the
        caller drops a leading LF (now or from the next chunk) because it is
        the rest of the CONNECT line's framing, not audio.
        """
        rest = bytes(self._inbox[self._pos :])
        after_cr = self._after_cr
        self._inbox.clear()
        self._pos = 0
        self._after_cr = False
        return rest, after_cr

    @property
    def partial(self) -> bytes:
        """The start of a line whose terminator has not arrived (for diagnostics)."""
        return bytes(self._line)

    def _append(self, chunk: bytes) -> None:
        if self._overflowed:
            self._overflowed += len(chunk)
        elif len(self._line) + len(chunk) > self._max_line:
            self._overflowed = len(self._line) + len(chunk)
            self._line.clear()
        else:
            self._line += chunk

    def _end_line(self) -> Frame | None:
        if self._overflowed:
            frame: Frame | None = Overflow(self._overflowed)
            self._overflowed = 0
        elif self._line:
            frame = TextLine(bytes(self._line))
            self._line.clear()
        else:
            frame = None
        return frame

    def _consume_to(self, i: int) -> None:
        if i >= len(self._inbox):
            self._inbox.clear()
            self._pos = 0
        else:
            self._pos = i
            if self._pos > 4096:  # keep the buffer from growing with parsed bytes
                del self._inbox[: self._pos]
                self._pos = 0


_TOKEN = re.compile(rb"\x10[^\r\n]|\x10|[\r\n]|[^\r\n\x10]+", re.DOTALL)


def reference_frames(data: bytes, max_line: int = DEFAULT_MAX_LINE) -> list[Frame]:
    """Non-incremental statement of :class:`LineSplitter`'s rules, for tests."""
    frames: list[Frame] = []
    line = b""
    for token in _TOKEN.findall(data):
        if token[0] == DLE:
            if len(token) == 2:
                frames.append(DleCode(token[1]))
        elif token in (b"\r", b"\n"):
            if len(line) > max_line:
                frames.append(Overflow(len(line)))
            elif line:
                frames.append(TextLine(line))
            line = b""
        else:
            line += token
    return frames


# ---- receive data state -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoiceChunk:
    """What one read in receive data state contained."""

    audio: bytes  # unshielded line-format audio (u8)
    codes: tuple[str, ...]  # DLE event codes, in order, without the final ETX
    rest: bytes | None  # bytes after DLE ETX (command state again), None if still streaming


class VoiceStreamDecoder:
    """Unshields a receive stream until ``DLE ETX``, keeping what follows it.

    :class:`firmware.dle.Unshielder` does the DLE pairing; this class only cuts
    the input after each byte that could be the ETX of a ``DLE ETX`` pair, so
    that when the Unshielder reports the ETX, the remaining bytes are known to
    be command-state text (``\\r\\nOK\\r\\n``).
    """

    def __init__(self, skip_leading_lf: bool = False) -> None:
        self._unshielder = Unshielder()
        self._skip_lf = skip_leading_lf
        self._finished = False

    def feed(self, data: bytes) -> VoiceChunk:
        if self._finished:
            return VoiceChunk(b"", (), data)
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == LF:
                data = data[1:]
        audio = bytearray()
        codes: list[str] = []
        for start, end in self._pieces(data):
            piece_audio, piece_codes = self._unshielder.feed(data[start:end])
            audio += piece_audio
            if DleEvent.END_OF_STREAM.value in piece_codes:
                etx = piece_codes.index(DleEvent.END_OF_STREAM.value)
                codes.extend(piece_codes[:etx])
                self._finished = True
                return VoiceChunk(bytes(audio), tuple(codes), data[end:])
            codes.extend(piece_codes)
        return VoiceChunk(bytes(audio), tuple(codes), None)

    def _pieces(self, data: bytes) -> list[tuple[int, int]]:
        """Cut points just after every ETX byte preceded by DLE (or at a chunk start)."""
        cuts: list[int] = []
        i = data.find(ETX)
        while i >= 0:
            if i == 0 or data[i - 1] == DLE:
                cuts.append(i + 1)
            i = data.find(ETX, i + 1)
        pieces: list[tuple[int, int]] = []
        start = 0
        for cut in cuts:
            pieces.append((start, cut))
            start = cut
        if start < len(data):
            pieces.append((start, len(data)))
        return pieces


class Direction(StrEnum):
    SENT = "sent"
    RECEIVED = "received"


TranscriptEntry = tuple[float, Direction, bytes]  # (time.monotonic(), direction, bytes)


class Transcript:
    """Bounded record of the conversation with the modem, for logs and tests.

    Audio is not recorded (it would push everything else out); commands,
    lines, DLE codes and dropped garbage are.
    """

    def __init__(self, size: int = 2000) -> None:
        self._entries: deque[TranscriptEntry] = deque(maxlen=size)

    def add(self, at: float, direction: Direction, data: bytes) -> None:
        self._entries.append((at, direction, data))  # deque.append is thread-safe

    def entries(self) -> list[TranscriptEntry]:
        return list(self._entries)
